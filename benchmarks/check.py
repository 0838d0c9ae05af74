"""Benchmark: `gradcli check` against torch.autograd.gradcheck and the textbook loop.

Whole process against whole process, float64, on ``sum(tanh(W @ x + b))`` with W n x n, x and
b of length n (a fixed seed; the arrays are saved as .npy files the three programs load):

- ``gradcli check --format json 'sum(tanh(W @ x + b))' W=@W.npy x=@x.npy b=@b.npy``
  (default method: central differences over every element of every input);
- ``torch.autograd.gradcheck`` on the same function, run by a Python that has torch (a separate
  virtualenv: torch is never a gradcli dependency; ``--torch-python``, or skipped when none);
- the textbook loop (the floor): a plain NumPy script that perturbs one element at a time with
  central differences and compares with the hand-derived gradient.

For n = 60 (3,720 inputs) the target is gradcli at least 6x faster than torch gradcheck; for
n = 200 (40,400 inputs) at least 3x faster than torch and at most 1.5x the textbook loop.  It
also times ``gradcli check --fast`` at n = 200 against a trivial ``gradcli eval`` (target
within 1.5x).  Runs are interleaved and repeated; min and median are shown side by side.

    python benchmarks/check.py [--sizes 60,200] [--repeat 5] [--torch-python PATH]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

import _bench

PROGRAM = "sum(tanh(W @ x + b))"

TEXTBOOK = r"""
import sys, numpy as np
d = sys.argv[1]
W, x, b = (np.load(f"{d}/{n}.npy") for n in "Wxb")
f = lambda: np.sum(np.tanh(W @ x + b))
t = np.tanh(W @ x + b)
dz = 1 - t * t                      # the gradient by hand
analytic = [np.outer(dz, x), W.T @ dz, dz]
h = 1e-6
ok = True
for a, g in zip((W, x, b), analytic):
    flat, num = a.reshape(-1), np.empty(a.size)
    for k in range(a.size):
        o = flat[k]
        flat[k] = o + h; fp = f()
        flat[k] = o - h; fm = f()
        flat[k] = o
        num[k] = (fp - fm) / (2 * h)
    ok &= np.allclose(num.reshape(a.shape), g, rtol=1e-5, atol=1e-6)
sys.exit(0 if ok else 1)
"""

TORCH = r"""
import sys, numpy as np, torch
d = sys.argv[1]
W, x, b = (torch.tensor(np.load(f"{d}/{n}.npy"), dtype=torch.float64, requires_grad=True)
           for n in "Wxb")
ok = torch.autograd.gradcheck(lambda W, x, b: torch.tanh(W @ x + b).sum(), (W, x, b))
sys.exit(0 if ok else 1)
"""


def find_torch_python(given):
    if given:
        return given
    for cand in (os.environ.get("TORCH_PYTHON"), "/work/torchvenv/bin/python",
                 str(_bench.REPO / "benchmarks" / ".venv-torch" / "bin" / "python")):
        if cand and Path(cand).is_file():
            return cand
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="60,200", help="n for W n x n (comma-separated)")
    ap.add_argument("--repeat", type=int, default=0,
                    help="rounds per size (default: 7 for n <= 100, else 3)")
    ap.add_argument("--gradcli", default=None, help="the gradcli command to run")
    ap.add_argument("--torch-python", default=None,
                    help="a Python with torch (default: $TORCH_PYTHON or a known venv)")
    args = ap.parse_args()
    gradcli = _bench.gradcli_cmd(args.gradcli)
    torch_py = find_torch_python(args.torch_python)
    print(f"gradcli: {_bench.show_cmd(gradcli)}; NumPy {np.__version__}")
    if torch_py:
        import subprocess

        v = subprocess.run([torch_py, "-c", "import torch; print(torch.__version__)"],
                           capture_output=True, text=True).stdout.strip()
        print(f"torch: {torch_py} (torch {v})")
    else:
        print("torch: not found (pass --torch-python): comparing with the textbook loop only")
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    ok = True
    with tempfile.TemporaryDirectory() as d:
        for n in [int(s) for s in args.sizes.split(",")]:
            rng = np.random.default_rng(n)
            for name, shape in (("W", (n, n)), ("x", (n,)), ("b", (n,))):
                np.save(f"{d}/{name}.npy", rng.standard_normal(shape) / np.sqrt(n))
            rounds = args.repeat or (7 if n <= 100 else 3)
            runs = {
                "textbook loop": [sys.executable, "-c", TEXTBOOK, d],
                "gradcli check": gradcli + ["check", "--format", "json", PROGRAM,
                                            f"W=@{d}/W.npy", f"x=@{d}/x.npy", f"b=@{d}/b.npy"],
            }
            if torch_py:
                runs["torch gradcheck"] = [torch_py, "-c", TORCH, d]
            series = {k: _bench.Series(k) for k in runs}
            for _, order in _bench.rotations(list(runs), rounds):
                for k in order:
                    series[k].add(_bench.timed_run(runs[k], env=env)[0])
            floor = series["textbook loop"]
            inputs = n * n + 2 * n
            _bench.report(f"n = {n}: W {n}x{n}, {inputs:,} inputs, {rounds} rounds (seconds)",
                          series.values(), floor, unit="s")
            g = series["gradcli check"]
            if torch_py:
                t = series["torch gradcheck"]
                target = 6 if n <= 100 else 3
                speedup = t.median / g.median
                print(f"torch gradcheck / gradcli check: {t.min / g.min:.2f}x on the min, "
                      f"{speedup:.2f}x on the median")
                print(f"target: at least {target}x faster than torch gradcheck: "
                      f"{'met' if speedup >= target else 'NOT MET'} on the median")
                ok &= speedup >= target
            if n > 100:
                ok &= _bench.verdict(f"gradcli check / textbook loop at n={n}", 1.5,
                                     g.median / floor.median, g.min / floor.min)
        # --fast at the largest size against a trivial eval's start-up
        fast = gradcli + ["check", "--fast", "--format", "json", PROGRAM,
                          f"W=@{d}/W.npy", f"x=@{d}/x.npy", f"b=@{d}/b.npy"]
        trivial = gradcli + ["eval", "--format", "json", "x*y", "x=2", "y=3"]
        s_fast, s_triv = _bench.Series("check --fast"), _bench.Series("trivial eval")
        for _, order in _bench.rotations([(s_fast, fast), (s_triv, trivial)], 15):
            for s, cmd in order:
                s.add(_bench.timed_run(cmd, env=env)[0])
        _bench.report(f"--fast at n = {n} against a trivial eval (ms)", [s_triv, s_fast],
                      s_triv)
        ok &= _bench.verdict("check --fast / trivial eval", 1.5,
                             s_fast.median / s_triv.median, s_fast.min / s_triv.min)
    print("\nall targets met" if ok else "\nsome targets NOT met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
