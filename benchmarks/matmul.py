"""gradcli.grad on a dense layer, against the same forward and backward written in NumPy.

    gradcli.grad("sum(tanh(W @ X + b))", W=W, X=X, b=b)
        W 1000x1000, X 1000x256, b 1000x1, float64, fixed seed

against the floor, the hand-written passes:

    Z = W @ X + b; T = tanh(Z); s = T.sum()
    dZ = 1 - T*T; dW = dZ @ X.T; dX = W.T @ dZ; db = dZ.sum(1, keepdims=True)

Both run in this process, interleaved (the order alternates round by round) after a
warm-up, with the BLAS thread count pinned before NumPy loads (``--threads``, default 1:
the same for both, since they share the process).  Prints min and median (ms) and the ratio
gradcli / hand (target <= 1.2), and, for information, gradcli.evaluate against the
hand-written forward alone.  Checks that gradcli's value and gradients agree with the hand-
written ones (numpy.allclose) and says so.

Run:
    python benchmarks/matmul.py                  # ~15 s (100 rounds)
    python benchmarks/matmul.py --repeat 300 --threads 2
"""
from __future__ import annotations

import argparse
import os
import sys

THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
               "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
EXPR = "sum(tanh(W @ X + b))"


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=100, metavar="N",
                    help="interleaved rounds (default 100)")
    ap.add_argument("--threads", type=int, default=1, metavar="N",
                    help="BLAS threads for both (default 1; set before NumPy loads)")
    ap.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    ap.add_argument("--n", type=int, default=1000, help="rows of W and X (default 1000)")
    ap.add_argument("--batch", type=int, default=256, help="columns of X (default 256)")
    return ap.parse_args()


ARGS = parse_args()
if "numpy" in sys.modules:  # cannot happen when run as a script; say so if it does
    print("warning: NumPy was loaded before the thread count was set", file=sys.stderr)
for _var in THREAD_VARS:
    os.environ[_var] = str(ARGS.threads)

import numpy as np  # noqa: E402

import _bench  # noqa: E402


def hand_forward(W, X, b):
    Z = W @ X + b
    T = np.tanh(Z)
    return T.sum(), T


def hand_grad(W, X, b):
    Z = W @ X + b
    T = np.tanh(Z)
    s = T.sum()
    dZ = 1 - T * T
    dW = dZ @ X.T
    dX = W.T @ dZ
    db = dZ.sum(1, keepdims=True)
    return s, dW, dX, db


def blas_threads():
    """The thread count the loaded OpenBLAS reports, if it can be asked (else None)."""
    import ctypes

    try:
        with open("/proc/self/maps") as f:
            libs = {line.split()[-1] for line in f if "openblas" in line.lower()}
    except OSError:
        return None
    for lib in libs:
        try:
            cdll = ctypes.CDLL(lib)
        except OSError:
            continue
        for sym in ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_",
                    "openblas_get_num_threads"):
            fn = getattr(cdll, sym, None)
            if fn is not None:
                fn.restype = ctypes.c_int
                return fn()
    return None


def blas_name():
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version')}"
    except Exception:
        return "unknown BLAS"


def main():
    import gradcli

    repeat = max(1, ARGS.repeat)
    rng = np.random.default_rng(ARGS.seed)
    n, m = ARGS.n, ARGS.batch
    W = rng.standard_normal((n, n)) / np.sqrt(n)
    X = rng.standard_normal((n, m))
    b = rng.standard_normal((n, 1)) * 0.1

    threads = blas_threads()
    print(f"numpy {np.__version__} ({blas_name()}); BLAS threads: asked {ARGS.threads}, "
          f"reported {threads if threads is not None else 'unknown'}; "
          f"{os.cpu_count()} cpus; python {sys.version.split()[0]}; gradcli "
          f"{gradcli.__version__} ({os.path.dirname(gradcli.__file__)})")
    print(f"{EXPR} with W {W.shape}, X {X.shape}, b {b.shape}, float64, seed {ARGS.seed}")

    def run_gradcli():
        return gradcli.grad(EXPR, W=W, X=X, b=b)

    def run_gradcli_fwd():
        return gradcli.evaluate(EXPR, W=W, X=X, b=b)

    # Warm-up (and the program is parsed here once; gradcli keeps parsed programs).
    for _ in range(2):
        run_gradcli(), hand_grad(W, X, b), run_gradcli_fwd(), hand_forward(W, X, b)

    hand = _bench.Series("hand-written NumPy forward + backward", floor=True)
    ours = _bench.Series("gradcli.grad")
    hand_f = _bench.Series("hand-written NumPy forward", info=True)
    ours_f = _bench.Series("gradcli.evaluate", info=True)
    pairs = [(ours, run_gradcli, hand, lambda: hand_grad(W, X, b)),
             (ours_f, run_gradcli_fwd, hand_f, lambda: hand_forward(W, X, b))]
    paired = []
    for r in range(repeat):
        for a, fa, h, fh in pairs:
            if r % 2:
                th, _ = _bench.timed(fh)
                ta, _ = _bench.timed(fa)
            else:
                ta, _ = _bench.timed(fa)
                th, _ = _bench.timed(fh)
            a.add(ta)
            h.add(th)
            if a is ours:
                paired.append(ta / th)

    _bench.report(f"forward + backward ({repeat} interleaved rounds, alternating order)",
                  [hand, ours], hand)
    _bench.report("forward only", [hand_f, ours_f], hand_f)
    paired.sort()
    print(f"\nper-round ratio gradcli.grad / hand: median {paired[len(paired) // 2]:.2f}, "
          f"min {paired[0]:.2f}, max {paired[-1]:.2f}")
    _bench.verdict("gradcli.grad / hand-written", 1.2, ours.median / hand.median,
                   ours.min / hand.min)

    # Do they compute the same thing?
    res = run_gradcli()
    s, dW, dX, db = hand_grad(W, X, b)
    ok = np.allclose(res.value, s)
    print(f"\nvalue: gradcli {float(res.value)!r}, hand {float(s)!r}: "
          + ("agree" if ok else "DISAGREE"))
    for name, want in (("W", dW), ("X", dX), ("b", db)):
        got = res.gradients.get(name)
        same = got is not None and got.shape == want.shape and np.allclose(got, want)
        ok &= same
        err = float(np.max(np.abs(got - want))) if same else float("nan")
        print(f"d/d{name} {want.shape}: " + (f"allclose (max abs difference {err:.1e})"
                                            if same else "DISAGREE"))
    print("gradient check: " + ("ok" if ok else "FAILED"))


if __name__ == "__main__":
    main()
