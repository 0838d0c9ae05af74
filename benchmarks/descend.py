"""gradcli.descend per step, against the same SGD loop written by hand in NumPy.

Two problems, each timed as one run of S steps (the time per step is the run's time / S):

    seed   mean((w*x + b - y)**2)   seed 003's 4 points, w, b scalars        (target <= 3x)
    lsq    mean((X @ w - y)**2)     X 1000x100, w 100, y 1000, fixed seed   (target <= 2x)

The floor is the loop a person writes for it, with the same update and the loss recorded
at every step, as descend does:

    seed:  r = w*x + b - y; L = mean(r**2); gw = mean(2*r*x); gb = mean(2*r)
           w = w - lr*gw; b = b - lr*gb
    lsq:   r = X @ w - y; L = mean(r**2); g = X.T @ (2/n * r); w = w - lr*g

Both run in this process, interleaved (the order alternates round by round) after a
warm-up, with the BLAS thread count pinned (``--threads``, default 1) before NumPy loads.
descend's time includes compiling its step once (parsing is cached).  Prints min and median
per step and the ratios; checks that descend's parameters agree with the hand loop's.

Run:
    python benchmarks/descend.py                 # ~20 s
    python benchmarks/descend.py --repeat 5 --steps 500
"""
from __future__ import annotations

import argparse
import os
import sys
import time

THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
               "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=15, metavar="N",
                    help="interleaved rounds (default 15)")
    ap.add_argument("--steps", type=int, default=2000, metavar="S",
                    help="steps per run (default 2000; lsq uses S / 4)")
    ap.add_argument("--threads", type=int, default=1, metavar="N",
                    help="BLAS threads for both (default 1; set before NumPy loads)")
    return ap.parse_args()


ARGS = parse_args()
for _var in THREAD_VARS:
    os.environ[_var] = str(ARGS.threads)

import numpy as np  # noqa: E402

import _bench  # noqa: E402

sys.path.insert(0, str(_bench.REPO))
import gradcli  # noqa: E402


def seed_hand(steps, lr=0.01):
    x = np.array([1.0, 2.0, 3.0, 4.0])
    y = np.array([2.0, 3.0, 4.0, 5.0])
    w = np.array(0.0)
    b = np.array(0.0)
    losses = []
    for _ in range(steps):
        r = w * x + b - y
        losses.append(float(np.mean(r ** 2)))
        gw = np.mean(2 * r * x)
        gb = np.mean(2 * r)
        w = w - lr * gw
        b = b - lr * gb
    return {"w": w, "b": b}


def seed_gradcli(steps, lr=0.01):
    r = gradcli.descend("mean((w*x + b - y)**2)", params="w,b", w=0.0, b=0.0,
                        x=[1.0, 2.0, 3.0, 4.0], y=[2.0, 3.0, 4.0, 5.0], lr=lr, steps=steps)
    return r.params


def lsq_data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((1000, 100))
    y = X @ rng.standard_normal(100) + 0.1 * rng.standard_normal(1000)
    return X, y


def lsq_hand(steps, X, y, lr=0.01):
    n = X.shape[0]
    w = np.zeros(X.shape[1])
    losses = []
    for _ in range(steps):
        r = X @ w - y
        losses.append(float(np.mean(r ** 2)))
        g = X.T @ (2 / n * r)
        w = w - lr * g
    return {"w": w}


def lsq_gradcli(steps, X, y, lr=0.01):
    return gradcli.descend("mean((X @ w - y)**2)", params="w", w=np.zeros(X.shape[1]),
                           X=X, y=y, lr=lr, steps=steps).params


def timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def bench(title, hand, ours, args, steps, target):
    hand(10, *args)  # warm-up (and the parse cache)
    ours(10, *args)
    h = _bench.Series(f"hand-written NumPy loop, {steps} steps", floor=True)
    g = _bench.Series(f"gradcli.descend, {steps} steps")
    ref = hand(steps, *args)
    agree = True
    for _, order in _bench.rotations([(h, hand), (g, ours)], ARGS.repeat):
        for series, fn in order:
            dt, params = timed(fn, steps, *args)
            series.add(dt / steps)
            if series is g:
                agree &= all(np.allclose(params[n], v, rtol=1e-10, atol=1e-12)
                             for n, v in ref.items())
    _bench.report(title + " (per step)", [h, g], h, unit="ms")
    print(f"  descend's parameters agree with the hand loop's: {'yes' if agree else 'NO'}")
    return _bench.verdict(f"{title} gradcli / hand", target, g.median / h.median,
                          g.min / h.min, unit="x")


def main():
    ok = bench("seed 003, 4 points", seed_hand, seed_gradcli, (), ARGS.steps, 3)
    X, y = lsq_data()
    ok &= bench("least squares 1000x100", lsq_hand, lsq_gradcli, (X, y),
                max(1, ARGS.steps // 4), 2)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
