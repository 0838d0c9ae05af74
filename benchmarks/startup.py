"""Start-up time of the gradcli command, as a ratio to starting Python and importing NumPy.

Measures whole processes, wall clock, interleaved round by round:

    floor   python -c "import numpy"
    target  gradcli eval --format json 'x*y' x=2 y=3        (target: ratio <= 1.5)
    info    python -c pass
    info    gradcli --help

and prints min and median (ms) of each and its ratio to the floor (min/min, median/median).
``python`` is the interpreter running this script (``sys.executable``), and ``gradcli`` is
the one next to it (else ``python -m gradcli``; ``--gradcli CMD`` to choose).

A development virtualenv has an editable install (an import finder that site loads at every
start) and, with PYTHONDONTWRITEBYTECODE=1, possibly stale .pyc files; neither is what a user
gets.  ``--fresh-venv`` measures the user's case: it copies the source tree to a temporary
folder, makes a clean virtualenv, ``pip install``s gradcli into it (not editable; pip uses
the package index this machine is configured with), byte-compiles its site-packages, and
measures that venv's ``gradcli`` against that venv's ``python -c "import numpy"``.  The venv
is deleted afterwards unless ``--keep-venv``.

Run:
    python benchmarks/startup.py                  # the dev venv's gradcli (~10 s)
    python benchmarks/startup.py --fresh-venv     # a clean non-editable install (~30 s)
    python benchmarks/startup.py --fresh-venv --rev HEAD   # the last commit, not the work tree
    python benchmarks/startup.py --repeat 50 --gradcli "python -m gradcli"
    python benchmarks/startup.py --fresh-venv --blas-threads 1   # steadier on a busy machine
"""
from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import _bench

EXPECTED = {"output": "f", "value": 6.0}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=30, metavar="N",
                    help="rounds; each round runs every command once (default 30)")
    ap.add_argument("--gradcli", metavar="CMD",
                    help="the gradcli command (default: the gradcli next to sys.executable, "
                         "else python -m gradcli); ignored with --fresh-venv")
    ap.add_argument("--fresh-venv", action="store_true",
                    help="measure a clean, non-editable, byte-compiled install in a temporary "
                         "virtualenv instead of the current environment")
    ap.add_argument("--keep-venv", action="store_true",
                    help="with --fresh-venv: keep the temporary virtualenv and print its path")
    ap.add_argument("--source", default=str(_bench.REPO), metavar="DIR",
                    help="with --fresh-venv: the gradcli source tree to install "
                         "(default: this repository's work tree)")
    ap.add_argument("--rev", metavar="REV",
                    help="with --fresh-venv: install this git revision of --source (e.g. "
                         "HEAD) instead of its work tree, untouched by uncommitted edits")
    ap.add_argument("--blas-threads", type=int, metavar="N",
                    help="set OPENBLAS_NUM_THREADS/OMP_NUM_THREADS=N for every command (default: "
                         "leave the environment alone). NumPy's import starts the BLAS thread "
                         "pool; on a busy machine that alone can cost ~50 ms, which inflates "
                         "the floor and flatters the ratio")
    args = ap.parse_args()
    if args.blas_threads is not None:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.blas_threads)

    print(f"python {sys.version.split()[0]} ({sys.executable}); "
          f"PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r}; "
          f"{os.cpu_count()} cpus; load average {load_average()}"
          + (f"; BLAS threads {args.blas_threads}" if args.blas_threads is not None else ""))
    tmp = None
    try:
        if args.fresh_venv:
            tmp = Path(tempfile.mkdtemp(prefix="gradcli-startup-"))
            python, gradcli = make_fresh_venv(Path(args.source), tmp, args.rev)
        else:
            python = sys.executable
            gradcli = _bench.gradcli_cmd(args.gradcli)
            describe_dev_install(python, gradcli)
        measure(python, gradcli, max(1, args.repeat))
    finally:
        if tmp is not None:
            if args.keep_venv:
                print(f"kept the virtualenv: {tmp / 'venv'}")
            else:
                shutil.rmtree(tmp, ignore_errors=True)


def load_average():
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def measure(python, gradcli, repeat):
    floor = _bench.Series('python -c "import numpy"', floor=True)
    target = _bench.Series("gradcli eval --format json 'x*y' x=2 y=3")
    bare = _bench.Series("python -c pass", info=True)
    helps = _bench.Series("gradcli --help", info=True)
    cmds = {
        floor: [python, "-c", "import numpy"],
        target: gradcli + ["eval", "--format", "json", "x*y", "x=2", "y=3"],
        bare: [python, "-c", "pass"],
        helps: gradcli + ["--help"],
    }
    print(f"gradcli: {_bench.show_cmd(gradcli, 200)}")
    print(f"python:  {python}")

    # Warm-up (file cache) and a check that every command works and says the right thing.
    for s, cmd in cmds.items():
        _, proc = _bench.timed_run(cmd, stdout=subprocess.PIPE)
        if s is target:
            try:
                out = json.loads(proc.stdout)
            except ValueError:
                _bench.fail(f"gradcli eval printed no JSON: {proc.stdout[:200]!r}")
            if out.get("output") != EXPECTED["output"] or out.get("value") != EXPECTED["value"]:
                _bench.fail(f"gradcli eval printed {out!r}, expected value 6.0")

    order = list(cmds)
    for _, round_order in _bench.rotations(order, repeat):
        for s in round_order:
            dt, _ = _bench.timed_run(cmds[s])
            s.add(dt)

    _bench.report(f"start-up, whole process, wall clock ({repeat} interleaved rounds)",
                  [floor, target, bare, helps], floor)
    ratio = target.median / floor.median
    print(f"\ngradcli eval: {target.median * 1e3:.1f} ms median "
          f"({target.min * 1e3:.1f} ms min) vs the floor {floor.median * 1e3:.1f} ms median "
          f"({floor.min * 1e3:.1f} ms min); over the floor: "
          f"+{(target.median - floor.median) * 1e3:.1f} ms median")
    _bench.verdict("gradcli eval / import numpy", 1.5, ratio, target.min / floor.min)
    print(f"load average after the run: {load_average()} (other work on the machine slows "
          f"NumPy's import most, so the ratio looks better on a busy machine)")


# ------------------------------------------------------------------ the dev environment

def describe_dev_install(python, gradcli):
    """Say when the measured install is not what a user gets (editable, stale bytecode)."""
    probe = ("import os, sys, gradcli, sysconfig; print(os.path.dirname(gradcli.__file__)); "
             "print(sysconfig.get_paths()['purelib'])")
    proc = subprocess.run([python, "-c", probe], capture_output=True, text=True)
    if proc.returncode != 0:
        print("note: gradcli is not importable from this python; cannot inspect the install")
        return
    pkg_dir, purelib = proc.stdout.split("\n")[:2]
    editable = sorted(p.name for p in Path(purelib).glob("__editable__*gradcli*"))
    if editable or not Path(pkg_dir).is_relative_to(purelib):
        print(f"note: gradcli is an editable install ({pkg_dir}); site loads its import "
              f"finder at every start. --fresh-venv gives the figure a user gets.")
    stale, total = stale_bytecode(Path(pkg_dir))
    if stale:
        dont = os.environ.get("PYTHONDONTWRITEBYTECODE")
        print(f"note: {len(stale)} of {total} gradcli modules have no up-to-date .pyc "
              f"(e.g. {stale[0]})" + (", and PYTHONDONTWRITEBYTECODE is set, so they are "
                                      "compiled again at every start" if dont else ""))


def stale_bytecode(pkg_dir):
    """(modules whose cached .pyc is missing or out of date, number of modules)."""
    stale, total = [], 0
    for src in sorted(pkg_dir.rglob("*.py")):
        total += 1
        pyc = Path(importlib.util.cache_from_source(str(src)))
        try:
            head = pyc.read_bytes()[:16]
        except OSError:
            stale.append(str(src.relative_to(pkg_dir)))
            continue
        flags, mtime, size = struct.unpack("<III", head[4:16])
        st = src.stat()
        if head[:4] != importlib.util.MAGIC_NUMBER or (
                flags == 0 and (mtime != int(st.st_mtime) & 0xFFFFFFFF
                                or size != st.st_size & 0xFFFFFFFF)):
            stale.append(str(src.relative_to(pkg_dir)))
    return stale, total


# ------------------------------------------------------------------ --fresh-venv

IGNORE = shutil.ignore_patterns(".git", ".venv", "venv", ".venv*", "build", "dist", "*.egg-info",
                                "__pycache__", ".pytest_cache", ".hypothesis", "benchmarks",
                                "tests", ".ci")


def make_fresh_venv(source, tmp, rev=None):
    """Copy ``source``, make a clean venv, pip install the copy, byte-compile. -> (python, cmd)."""
    copy = tmp / "src"
    if rev:
        proc = subprocess.run(["git", "-C", str(source), "rev-parse", "--verify",
                               f"{rev}^{{commit}}"], capture_output=True, text=True)
        if proc.returncode != 0:
            _bench.fail(f"{rev}: not a revision of {source}: {proc.stderr.strip()}")
        commit = proc.stdout.strip()
        archive = subprocess.run(["git", "-C", str(source), "archive", "--format=tar", commit],
                                 capture_output=True)
        if archive.returncode != 0:
            _bench.fail(f"git archive {commit} failed: {archive.stderr.decode().strip()}")
        copy.mkdir()
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(copy)
        print(f"installing {rev} = {commit[:12]} of {source}")
    else:
        if not (source / "pyproject.toml").is_file():
            _bench.fail(f"{source} has no pyproject.toml")
        # pip builds in the tree it is given: copy, so nothing lands in the work tree
        shutil.copytree(source, copy, ignore=IGNORE)
        print(f"installing the work tree of {source}")
    if not (copy / "pyproject.toml").is_file():
        _bench.fail(f"no pyproject.toml in {source}" + (f" at {rev}" if rev else ""))
    venv = tmp / "venv"
    print(f"making a clean virtualenv in {venv} ...", flush=True)
    step([sys.executable, "-m", "venv", str(venv)], "python -m venv")
    python = str(venv / "bin" / "python")
    print("pip install (not editable) ...", flush=True)
    step([python, "-m", "pip", "install", "--quiet", "--no-input", str(copy)], "pip install")
    purelib = subprocess.run([python, "-c", "import sysconfig; "
                              "print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    print("byte-compiling site-packages ...", flush=True)
    step([python, "-m", "compileall", "-q", "-j", "0", purelib], "compileall")
    versions = subprocess.run(
        [python, "-c", "import numpy, click, rich, importlib.metadata as m; "
                       "print('numpy', numpy.__version__, '| click', m.version('click'), "
                       "'| rich', m.version('rich'), '| gradcli', m.version('gradcli'))"],
        capture_output=True, text=True).stdout.strip()
    print(f"fresh venv: {versions}")
    gradcli = venv / "bin" / "gradcli"
    if not gradcli.is_file():
        _bench.fail(f"pip install made no {gradcli}")
    return python, [str(gradcli)]


def step(cmd, what):
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        _bench.fail(f"{what} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


if __name__ == "__main__":
    main()
