"""Symbolic derivatives: gradcli diff and hessian, whole processes, and SymPy side by side.

Measured in one run, interleaved round by round, each against a floor of the same run:

    floor   python -c "import numpy"
    info    gradcli eval 'x*y' x=2 y=3                       (gradcli's start-up)
    target  gradcli diff -f chain1000.txt                     (1,000 statements a = sin(a)*y + a;
                                                               target: < 1 s, printed <= 20x)
    info    gradcli eval -f chain1000.txt a=0.5 y=0.3         (the forward pass alone)
    target  gradcli hessian 'HESS' x=@x100.npy                (100 inputs; target < 1 s)
    target  gradcli hessian --vector @v.npy 'HVP' x=@x.npy    (10,000 inputs; target < 1 s)

then the 16-statement chain side by side with SymPy (diff, and diff + cse): seconds and
characters of the printed derivatives.  SymPy is never a dependency of gradcli: install it
apart, e.g. ``pip install --target /tmp/sympy sympy``, and pass ``--sympy /tmp/sympy``
(SymPy runs in its own process, with a time limit; ``--sympy-n 12`` is quicker).

Run:
    python benchmarks/diff.py --sympy /tmp/sympy           # ~1-2 minutes (SymPy's diff of 16)
    python benchmarks/diff.py --rounds 3 --sympy-n 0       # gradcli only (~15 s)
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _bench

HESS = "sum(sin(x)*cumsum(x, 0)) + sum(x)**2 + logsumexp(x)"
HVP = "sum(sin(x)*x) + sum(x)**2 + logsumexp(x) + sum(tanh(x)*cumsum(x, 0))"


def chain(n, distinct=False):
    if distinct:
        return "\n".join(f"a{k + 1} = sin(a{k})*y + a{k}" for k in range(n)) + "\n"
    return "\n".join(["a = sin(a)*y + a"] * n) + "\n"


SYMPY_SCRIPT = r'''
import sys, time
import sympy as sp
n = int(sys.argv[1])
a, y = sp.symbols("a y")
f = a
for _ in range(n):
    f = sp.sin(f)*y + f
t0 = time.perf_counter()
da, dy = sp.diff(f, a), sp.diff(f, y)
chars = len(str(da)) + len(str(dy))
t1 = time.perf_counter()
print("diff", f"{t1 - t0:.3f}", chars, flush=True)
reps, exprs = sp.cse([da, dy])
t2 = time.perf_counter()
cse_chars = sum(len(str(k)) + 3 + len(str(v)) + 1 for k, v in reps) + \
    sum(len(str(e)) + 1 for e in exprs)
print("cse", f"{t2 - t0:.3f}", cse_chars, flush=True)
'''


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--gradcli", default=None, help="the gradcli command (default: beside "
                    "this python)")
    ap.add_argument("--sympy", default=None, help="a folder holding sympy (PYTHONPATH)")
    ap.add_argument("--sympy-n", type=int, default=16,
                    help="statements of the chain for SymPy (0: skip SymPy)")
    ap.add_argument("--sympy-timeout", type=float, default=300)
    args = ap.parse_args()
    gradcli = _bench.gradcli_cmd(args.gradcli)
    import numpy as np

    tmp = Path(tempfile.mkdtemp(prefix="gradcli-bench-diff-"))
    prog = tmp / "chain1000.txt"
    prog.write_text(chain(1000))
    rng = np.random.default_rng(0)
    np.save(tmp / "x100.npy", rng.normal(size=100))
    np.save(tmp / "x.npy", rng.normal(size=10_000))
    np.save(tmp / "v.npy", rng.normal(size=10_000))

    floor = _bench.Series('python -c "import numpy"', floor=True)
    diff = _bench.Series("gradcli diff -f chain1000.txt")
    evals = _bench.Series("gradcli eval -f chain1000.txt a=.5 y=.3", info=True)
    start = _bench.Series("gradcli eval x*y x=2 y=3 (start-up)", info=True)
    hess = _bench.Series("gradcli hessian (100 inputs)")
    hvp = _bench.Series("gradcli hessian --vector (10,000 inputs)")
    runs = [
        (floor, [sys.executable, "-c", "import numpy"]),
        (diff, gradcli + ["diff", "-f", str(prog)]),
        (evals, gradcli + ["eval", "-f", str(prog), "a=0.5", "y=0.3"]),
        (start, gradcli + ["eval", "x*y", "x=2", "y=3"]),
        (hess, gradcli + ["hessian", "--format", "json", HESS, f"x=@{tmp / 'x100.npy'}"]),
        (hvp, gradcli + ["hessian", "--format", "json", "--vector", f"@{tmp / 'v.npy'}", HVP,
                         f"x=@{tmp / 'x.npy'}"]),
    ]
    for _, order in _bench.rotations(runs, args.rounds):
        for series, cmd in order:
            dt, _ = _bench.timed_run(cmd)
            series.add(dt)
    _bench.report("Whole processes (wall clock, interleaved)",
                  [floor, start, diff, evals, hess, hvp], floor)
    print("\nbeyond gradcli's own start-up (median - start-up median): "
          + ", ".join(f"{s.label.split(' (')[0].replace('gradcli ', '')}: "
                      f"{s.median - start.median:.2f} s" for s in (diff, evals, hess, hvp)))
    out = subprocess.run(gradcli + ["diff", "-f", str(prog)], capture_output=True, text=True,
                         check=True).stdout
    ratio = len(out) / len(prog.read_text())
    print(f"\nprinted derivative of the 1,000-statement chain: {len(out):,} characters, "
          f"{ratio:.1f}x the program's {len(prog.read_text()):,}")
    _bench.verdict("diff of 1,000 statements", 1.0, diff.median, diff.min, "<", " s")
    _bench.verdict("printed size", 20, ratio, op="<=", unit="x")
    _bench.verdict("hessian of 100 inputs", 1.0, hess.median, hess.min, "<", " s")
    _bench.verdict("hessian --vector on 10,000 inputs", 1.0, hvp.median, hvp.min, "<", " s")

    n = args.sympy_n
    if n:
        print(f"\nThe {n}-statement chain a = sin(a)*y + a, both derivatives (d/da, d/dy)")
        sys.path.insert(0, str(_bench.REPO))
        import gradcli as g

        text = chain(n)
        times = []
        for _ in range(max(args.rounds, 3)):
            t0 = time.perf_counter()
            d = g.diff(text + " " * len(times))  # a new text each time: no parse cache
            printed = d.program.text({k: d.label(k) for k in d.names})
            times.append(time.perf_counter() - t0)
        print(f"  {'':<28} {'seconds':>10} {'characters':>12}")
        print(f"  {'gradcli diff (in process)':<28} {min(times):>10.4f} {len(printed):>12,}")
        if args.sympy is None:
            print("  (SymPy: pass --sympy FOLDER with sympy installed there)")
        else:
            env = dict(os.environ, PYTHONPATH=args.sympy)
            try:
                p = subprocess.run([sys.executable, "-c", SYMPY_SCRIPT, str(n)], env=env,
                                   capture_output=True, text=True, timeout=args.sympy_timeout)
                out, note = p.stdout, "" if p.returncode == 0 else \
                    f"SymPy failed: {p.stderr.strip().splitlines()[-1:]}"
            except subprocess.TimeoutExpired as e:
                out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
                note = f"(stopped after {args.sympy_timeout:g} s)"
            rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line}
            for key, label in (("diff", "sympy diff"), ("cse", "sympy diff + cse")):
                if key in rows:
                    t, chars = float(rows[key][0]), int(rows[key][1])
                    print(f"  {label:<28} {t:>10.3f} {chars:>12,}   ({t / min(times):,.0f}x "
                          f"the time, {chars / len(printed):,.1f}x the characters)")
                else:
                    print(f"  {label:<28} {'-':>10} {'-':>12}   {note}")


if __name__ == "__main__":
    main()
