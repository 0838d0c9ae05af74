"""Layers through gradcli's API against the same forward + backward written by hand in NumPy.

One run, interleaved round by round, min of each (seconds) and the ratio gradcli / NumPy:

    layer norm       x (4096, 1024)                  target ratio <= 1.2
    attention        Q, K, V (8, 256, 64)            target ratio <= 1.2
    conv2d           sum(relu(conv2d(x, w, padding=1))), x (16, 32, 32, 32),
                     w (64, 32, 3, 3), against a hand-written im2col   target <= 1.5
    start-up         gradcli eval 'x*y' x=2 y=3 against python -c "import numpy"
                                                     target ratio <= 1.3

Both sides compute the output and the gradient of every input (gradcli.grad), in float64.
Each hand-written backward is also compared with gradcli's, so the two do the same work.

    python benchmarks/layers.py [--repeat N] [--only layernorm,attention,conv,startup]
"""
from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time

import numpy as np

import _bench


# ------------------------------------------------------------------ layer norm

LAYERNORM = ("sum((x - mean(x, -1, keepdims=true)) / "
             "sqrt(var(x, -1, keepdims=true, correction=0) + 1e-5) * t)")


def layernorm_numpy(x, t):
    mu = x.mean(-1, keepdims=True)
    xc = x - mu
    rstd = 1 / np.sqrt((xc * xc).mean(-1, keepdims=True) + 1e-5)
    xhat = xc * rstd
    value = np.sum(xhat * t)
    dx = rstd * (t - t.mean(-1, keepdims=True) - xhat * (t * xhat).mean(-1, keepdims=True))
    return value, {"x": dx, "t": xhat}


# ------------------------------------------------------------------ attention

ATTENTION = "sum(softmax(Q @ transpose(K, (0, 2, 1)) / 8) @ V * T)"


def attention_numpy(Q, K, V, T):
    S = Q @ K.transpose(0, 2, 1) / 8
    S = np.exp(S - S.max(-1, keepdims=True))
    A = S / S.sum(-1, keepdims=True)
    O = A @ V
    value = np.sum(O * T)
    dV = A.transpose(0, 2, 1) @ T
    dA = T @ V.transpose(0, 2, 1)
    dS = A * (dA - np.sum(dA * A, -1, keepdims=True)) / 8
    return value, {"Q": dS @ K, "K": dS.transpose(0, 2, 1) @ Q, "V": dV, "T": O}


# ------------------------------------------------------------------ conv2d

CONV = "sum(relu(conv2d(x, w, padding=1)))"


def conv_numpy(x, w):
    """im2col by stride tricks and tensordot (BLAS), and its adjoint by hand: the windows'
    gradient summed back tap by tap (col2im)."""
    N, C, H, W = x.shape
    O, _, kh, kw = w.shape
    xp = np.pad(x, [(0, 0), (0, 0), (1, 1), (1, 1)])
    s = xp.strides
    cols = np.lib.stride_tricks.as_strided(xp, (N, C, kh, kw, H, W), s + s[2:])
    out = np.tensordot(cols, w, axes=([1, 2, 3], [1, 2, 3]))        # (N, H, W, O)
    value = np.sum(np.maximum(out, 0))
    g = (out > 0).astype(x.dtype)
    dw = np.tensordot(g, cols, axes=([0, 1, 2], [0, 4, 5]))          # (O, C, kh, kw)
    dcols = np.tensordot(g, w, axes=([3], [0]))                      # (N, H, W, C, kh, kw)
    dxp = np.zeros_like(xp)
    for p in range(kh):
        for q in range(kw):
            dxp[:, :, p:p + H, q:q + W] += dcols[..., p, q].transpose(0, 3, 1, 2)
    return value, {"x": dxp[:, :, 1:-1, 1:-1], "w": dw}


# ------------------------------------------------------------------ running

def compare(name, program, hand, values, repeat, target):
    import gradcli

    r = gradcli.grad(program, **values)       # warm: parse cache, first-touch memory
    v, grads = hand(**values)
    assert math.isclose(float(r.value), float(v), rel_tol=1e-9, abs_tol=1e-6), (name, r.value, v)
    for k, g in grads.items():
        np.testing.assert_allclose(r.gradients[k], g, rtol=1e-7, atol=1e-9, err_msg=f"{name} d{k}")
    t_api, t_np = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        gradcli.grad(program, **values)
        t_api.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        hand(**values)
        t_np.append(time.perf_counter() - t0)
    a, b = min(t_api), min(t_np)
    return (name, a, b, a / b, target)


def startup(repeat):
    """As a user runs it: byte-code cached (a development tree may set
    PYTHONDONTWRITEBYTECODE; the cache goes to a temporary folder, not into the tree)."""
    import os
    import tempfile

    gc = _bench.default_gradcli() + ["eval", "--format", "json", "x*y", "x=2", "y=3"]
    floor = [sys.executable, "-c", "import numpy"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = tempfile.mkdtemp(prefix="gradcli-pyc-")
    _bench.timed_run(gc, env=env)  # writes the byte code once
    t_gc, t_np = [], []
    for _ in range(repeat):
        t_gc.append(_bench.timed_run(gc, env=env)[0])
        t_np.append(_bench.timed_run(floor, env=env)[0])
    a, b = min(t_gc), min(t_np)
    return ("start-up (eval x*y)", a, b, a / b, 1.3)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, metavar="N")
    ap.add_argument("--only", default="layernorm,attention,conv,startup")
    args = ap.parse_args()
    only = set(args.only.split(","))
    rng = np.random.default_rng(0)
    rows = []
    if "layernorm" in only:
        rows.append(compare("layer norm (4096, 1024)", LAYERNORM, layernorm_numpy,
                            {"x": rng.normal(size=(4096, 1024)),
                             "t": rng.normal(size=(4096, 1024))}, args.repeat, 1.2))
    if "attention" in only:
        qkv = {n: rng.normal(size=(8, 256, 64)) for n in "QKVT"}
        rows.append(compare("attention (8, 256, 64)", ATTENTION, attention_numpy, qkv,
                            args.repeat, 1.2))
    if "conv" in only:
        rows.append(compare("conv2d+relu x (16,32,32,32) w (64,32,3,3)", CONV, conv_numpy,
                            {"x": rng.normal(size=(16, 32, 32, 32)),
                             "w": rng.normal(size=(64, 32, 3, 3)) * 0.1}, args.repeat, 1.5))
    if "startup" in only:
        rows.append(startup(max(args.repeat * 2, 10)))
    print(f"{'case':44} {'gradcli':>10} {'numpy':>10} {'ratio':>7} {'target':>7}")
    for name, a, b, ratio, target in rows:
        mark = "ok" if ratio <= target else "OVER"
        print(f"{name:44} {a * 1e3:8.1f}ms {b * 1e3:8.1f}ms {ratio:6.2f}x {target:6.1f}x  {mark}")


if __name__ == "__main__":
    main()
