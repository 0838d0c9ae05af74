"""Shared test helpers: finite differences, gradcli in process (CliRunner) and as a process."""
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np
import pytest
from click.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent


_TERMINAL_ENV = ("COLUMNS", "LINES")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """(pytest-xdist, in the controller) A worker is told the terminal variables of the run."""
    node.workerinput["gradcli_terminal_env"] = {k: os.environ.get(k) for k in _TERMINAL_ENV}


def pytest_configure(config):
    """In a pytest-xdist worker: COLUMNS and LINES as in the run that started it (a worker
    finds COLUMNS=80 LINES=24 set, which would narrow every table gradcli prints there and in
    the processes it starts).

    With PYTHONDONTWRITEBYTECODE set, nothing caches gradcli's bytecode, so every gradcli the
    tests start as a process (hundreds) compiles the package again, ops.py and all: about a
    tenth of a second each.  Compile it once here, before the workers start."""
    worker = getattr(config, "workerinput", None)
    if worker is not None:
        for k, v in worker.get("gradcli_terminal_env", {}).items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    elif sys.flags.dont_write_bytecode:
        compile_package("gradcli")


def compile_package(name):
    """Byte-compile a package's modules where a fresh pyc is missing: checked-hash pycs, which
    Python validates against the source's hash at every import, so one stays right however
    the source changes (and is not used once it has)."""
    import importlib.util
    import py_compile

    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return
    for top in spec.submodule_search_locations:
        for src in Path(top).rglob("*.py"):
            try:
                data = src.read_bytes()
                pyc = Path(importlib.util.cache_from_source(str(src)))
                if pyc.exists() and _fresh(pyc.read_bytes()[:16], data, src.stat()):
                    continue
                py_compile.compile(str(src), str(pyc), doraise=True, quiet=2,
                                   invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)
            except (OSError, py_compile.PyCompileError):
                continue  # a read-only install or a file mid-edit: Python compiles it itself


def _fresh(head, data, st):
    import importlib.util

    if len(head) < 16 or head[:4] != importlib.util.MAGIC_NUMBER:
        return False
    flags = int.from_bytes(head[4:8], "little")
    if flags & 1:  # hash-based: fresh if it is checked against the source and matches it
        return flags & 2 and head[8:16] == importlib.util.source_hash(data)
    return (int.from_bytes(head[8:12], "little") == int(st.st_mtime) & 0xFFFFFFFF
            and int.from_bytes(head[12:16], "little") == st.st_size & 0xFFFFFFFF)


def pytest_ignore_collect(collection_path, config):
    """Modules of PyTorch tests (marked torch) import torch as they load: without torch they
    are left uncollected, not skipped; CI installs torch and runs them with -m torch."""
    if "torch" in collection_path.name and collection_path.suffix == ".py":
        import importlib.util

        return importlib.util.find_spec("torch") is None or None
    return None
GATES = str(ROOT / "examples" / "gates.py")
BUGGY = str(ROOT / "examples" / "buggy_gates.py")


def numeric_grad(f, x, eps=1e-6):
    """Central differences of a scalar function f at array x (float64), element by element."""
    x = np.array(x, dtype=np.float64)
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + eps
        fp = float(np.sum(f(x)))
        x[idx] = old - eps
        fm = float(np.sum(f(x)))
        x[idx] = old
        g[idx] = (fp - fm) / (2 * eps)
    return g


@pytest.fixture(scope="session")
def gradcli_exe():
    """The installed console script (a real subprocess), else ``python -m gradcli``."""
    exe = shutil.which("gradcli", path=os.path.dirname(sys.executable)) or shutil.which("gradcli")
    return [exe] if exe else [sys.executable, "-m", "gradcli"]


def run(cmd, *args, input=None, cwd=None, env=None):
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run(list(cmd) + list(args), input=input, capture_output=True, text=True,
                          cwd=cwd, env=full_env, timeout=120)


class Out(NamedTuple):
    """What one in-process run of the command gave."""

    code: int
    out: str
    err: str
    exception: Optional[BaseException] = None


def runner():
    try:  # Click < 8.2 mixes stderr into stdout unless told not to
        return CliRunner(mix_stderr=False)
    except TypeError:
        return CliRunner()


def cli(*args, input=None, env=None):
    """gradcli in process, through CliRunner."""
    from gradcli.cli import main

    r = runner().invoke(main, [str(a) for a in args], input=input, env=env)
    exc = r.exception if not isinstance(r.exception, SystemExit) else None
    return Out(r.exit_code, r.stdout, r.stderr, exc)


def bad(r, *fragments):
    """Exit 2, one clear ``error:`` message on stderr, nothing on stdout, no traceback."""
    assert r.code == 2, f"exit {r.code}\nstdout:\n{r.out}\nstderr:\n{r.err}"
    assert r.exception is None, repr(r.exception)
    assert "Traceback" not in r.err and "Traceback" not in r.out
    assert r.out == ""
    lines = r.err.splitlines()
    assert lines and lines[0].startswith("error: "), r.err
    assert sum(line.startswith("error") for line in lines) == 1, r.err
    assert "internal error" not in r.err, r.err
    for f in fragments:
        assert f in r.err, f"{f!r} not in stderr:\n{r.err}"
    return r.err
