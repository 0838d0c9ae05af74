"""Batched ops: ``gradcli.batch`` at 10,000 points against hand-written NumPy, in one run.

For each program, four ways to get the value and the gradient at every point:

    floor    NumPy by hand: the forward and the gradient written out, vectorised
    target   gradcli.batch: the batch kernel (every op batched, its VJP on the stack)
    info     the same kernel with this op forced point by point (the loop an op without a
             batched rule gets; solve, einsum, outer, diag, trace and conv with a varying
             kernel ran so before they had batched rules)
    info     a Python loop of gradcli.grad, one call per point
The two loops are timed on the first ``--loop`` points and scaled to N (they are linear in
the points).  Last, a custom op (a gate, which runs point by point by design): the kernel's
loop now against the engine's per-point calls it made before.

Each round runs them interleaved (``--repeat`` rounds; min and median reported, and their
ratios to the floor measured in the same run).  Every result is checked against the floor.

Run:
    python benchmarks/batch_ops.py                 # 10,000 points (~1 min)
    python benchmarks/batch_ops.py --points 2000 --repeat 2 --loop 200
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys

import numpy as np

import _bench

sys.path.insert(0, str(_bench.REPO))

import gradcli  # noqa: E402
from gradcli import batching  # noqa: E402
from gradcli import ops as oplib  # noqa: E402


def solve_A(n, rng):
    A = rng.standard_normal((n, 8, 8)) + 8 * np.eye(8)
    b = rng.standard_normal(8)

    def hand():
        x = np.linalg.solve(A, b)                         # (B, 8): b broadcast
        gb = np.linalg.solve(np.swapaxes(A, 1, 2), np.ones(8))
        return x.sum(axis=1), {"A": -gb[:, :, None] * x[:, None, :]}
    return "sum(solve(A, b))", {"A": A}, {"b": b}, hand, oplib.solve


def solve_b(n, rng):
    A = rng.standard_normal((8, 8)) + 8 * np.eye(8)
    b = rng.standard_normal((n, 8))

    def hand():
        x = np.linalg.solve(A, b.T).T
        gb = np.linalg.solve(A.T, np.ones(8))
        return x.sum(axis=1), {"b": np.tile(gb, (n, 1))}
    return "sum(solve(A, b))", {"b": b}, {"A": A}, hand, oplib.solve


def einsum_W(n, rng):
    W = rng.standard_normal((n, 16, 16))
    x = rng.standard_normal(16)

    def hand():
        y = np.einsum("bij,j->bi", W, x)
        return (y ** 2).sum(axis=1), {"W": 2 * y[:, :, None] * x}
    return 'sum(einsum("ij,j->i", W, x) ** 2)', {"W": W}, {"x": x}, hand, oplib.einsum


def einsum_x(n, rng):
    W = rng.standard_normal((16, 16))
    x = rng.standard_normal((n, 16))

    def hand():
        y = x @ W.T
        return (y ** 2).sum(axis=1), {"x": (2 * y) @ W}
    return 'sum(einsum("ij,j->i", W, x) ** 2)', {"x": x}, {"W": W}, hand, oplib.einsum


def conv_x(n, rng):
    x = rng.standard_normal((n, 1, 4, 32))
    w = rng.standard_normal((8, 4, 3))

    def hand():
        cols = np.lib.stride_tricks.sliding_window_view(x[:, 0], 3, axis=-1)  # (B,4,30,3)
        y = np.einsum("bclk,ock->bol", cols, w, optimize=True)
        g = 2 * y
        dcols = np.einsum("bol,ock->bclk", g, w, optimize=True)
        dx = np.zeros((n, 4, 32))
        for k in range(3):
            dx[:, :, k:k + 30] += dcols[..., k]
        return (y ** 2).sum(axis=(1, 2)), {"x": dx[:, None]}
    return "sum(conv1d(x, w) ** 2)", {"x": x}, {"w": w}, hand, oplib.conv1d_nobias


def conv_w(n, rng):
    x = rng.standard_normal((1, 4, 32))
    w = rng.standard_normal((n, 8, 4, 3))

    def hand():
        cols = np.lib.stride_tricks.sliding_window_view(x[0], 3, axis=-1)     # (4,30,3)
        y = np.einsum("clk,bock->bol", cols, w, optimize=True)
        return (y ** 2).sum(axis=(1, 2)), {"w": np.einsum("bol,clk->bock", 2 * y, cols,
                                                          optimize=True)}
    return "sum(conv1d(x, w) ** 2)", {"w": w}, {"x": x}, hand, oplib.conv1d_nobias


WORKLOADS = [("solve, A varies", solve_A), ("solve, b varies", solve_b),
             ("einsum, W varies", einsum_W), ("einsum, x varies", einsum_x),
             ("conv1d, x varies", conv_x), ("conv1d, w varies", conv_w)]


@contextlib.contextmanager
def looped(op):
    """The kernel with ``op`` forced point by point (no batched forward, no batched VJP)."""
    saved = (batching._BATCHED_VJPS.pop(op, None), batching._BATCHED_FORWARDS.pop(op, None),
             op.batch)
    cands = batching.Kernel._candidates
    batching.Kernel._candidates = lambda self, node: [] if node.op is op else cands(self,
                                                                                    node)
    op.batch = None
    try:
        yield
    finally:
        rule, fwd, op.batch = saved
        if rule is not None:
            batching._BATCHED_VJPS[op] = rule
        if fwd is not None:
            batching._BATCHED_FORWARDS[op] = fwd
        batching.Kernel._candidates = cands


def per_point(program, pts, fixed, m):
    graph = gradcli.compile(program)
    for b in range(m):
        binds = dict(fixed)
        binds.update({k: v[b] for k, v in pts.items()})
        gradcli.grad(graph, binds, wrt=list(pts))


def check(res, want):
    value, grads = want
    np.testing.assert_allclose(res.value, value, rtol=1e-8, atol=1e-10)
    for k, g in grads.items():
        np.testing.assert_allclose(res.gradients[k], g, rtol=1e-8, atol=1e-10)


def _engine_forward_all(graph, node, xs, flags, B, dtype):
    """The custom-op loop as it was: the engine's gate_forward at each point, then a stack."""
    from gradcli import engine

    insts, outs = [], []
    for b in range(B):
        inst, out = engine.gate_forward(graph, node, [x[b] if f else x
                                                      for x, f in zip(xs, flags)], dtype)
        insts.append(inst)
        outs.append(out)
    return insts, np.stack(outs)


def _engine_backward_all(graph, node, insts, g, xs, flags, ks, B):
    from gradcli import engine

    per = [engine.gate_backward(graph, node, insts[b], g[b],
                                [x[b] if f else x for x, f in zip(xs, flags)])
           for b in range(B)]
    return {k: np.stack([p[k] for p in per]) for k in ks}


@contextlib.contextmanager
def engine_gate_loop():
    saved = batching._gate_forward_all, batching._gate_backward_all
    batching._gate_forward_all, batching._gate_backward_all = (_engine_forward_all,
                                                               _engine_backward_all)
    try:
        yield
    finally:
        batching._gate_forward_all, batching._gate_backward_all = saved


def gates(n, repeat):
    """A custom op: still a loop over points (gates keep state), the loop made cheaper."""
    ops = gradcli.load_ops(str(_bench.REPO / "examples" / "gates.py"))
    program = "MultiplyGate(x, y) + x"
    rng = np.random.default_rng(1)
    pts = {"x": rng.standard_normal(n), "y": rng.standard_normal(n)}
    graph = gradcli.compile(program, ops)
    res = gradcli.batch(graph, pts)
    with engine_gate_loop():
        old = gradcli.batch(graph, pts)
    for k in res:
        np.testing.assert_array_equal(res[k], old[k])
    np.testing.assert_allclose(res["d_x"], pts["y"] + 1)
    now = _bench.Series("gradcli.batch (the loop now)", floor=True)
    before = _bench.Series("engine calls per point (before)")

    def run_before():
        with engine_gate_loop():
            gradcli.batch(graph, pts)

    items = [(now, lambda: gradcli.batch(graph, pts)), (before, run_before)]
    for _, order in _bench.rotations(items, repeat):
        for series, fn in order:
            series.add(_bench.timed(fn)[0])
    _bench.report(f"custom op, {n:,} points: {program}", [now, before], now)
    return before.median / now.median


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--loop", type=int, default=1000,
                    help="points of the two loops (scaled to --points)")
    args = ap.parse_args()
    n = args.points
    print(f"{n:,} points per batch; {args.repeat} rounds, interleaved; ratios to NumPy by "
          f"hand (the floor)")
    rng = np.random.default_rng(0)
    summary = []
    for title, make in WORKLOADS:
        program, pts, fixed, hand, op = make(n, rng)
        check(gradcli.batch(program, pts, fixed=fixed), hand())
        with looped(op):
            res = gradcli.batch(program, pts, fixed=fixed)
            check(res, hand())
        floor = _bench.Series("NumPy by hand", floor=True)
        kern = _bench.Series("gradcli.batch")
        m = min(n, args.loop)
        scale = n / m
        loop_op = _bench.Series(f"batch, {op.name} looped (x{scale:.3g})", info=True)
        loop_all = _bench.Series(f"gradcli.grad loop (x{scale:.3g})", info=True)
        few = {k: v[:m] for k, v in pts.items()}

        def run_loop_op():
            with looped(op):
                gradcli.batch(program, few, fixed=fixed)

        items = [(floor, hand), (kern, lambda: gradcli.batch(program, pts, fixed=fixed)),
                 (loop_op, run_loop_op),
                 (loop_all, lambda: per_point(program, pts, fixed, m))]
        for _, order in _bench.rotations(items, args.repeat):
            for series, fn in order:
                dt, _ = _bench.timed(fn)
                series.add(dt * scale if series in (loop_op, loop_all) else dt)
        _bench.report(f"{title}: {program}", [floor, kern, loop_op, loop_all], floor)
        summary.append((title, kern.median / floor.median, loop_op.median / kern.median,
                        loop_all.median / kern.median))
    gate_ratio = gates(n, args.repeat)
    print("\nsummary (medians):  batch / NumPy   op looped / batch   grad loop / batch")
    for title, a, b, c in summary:
        print(f"  {title:<20} {a:10.2f}x {b:15.1f}x {c:17.0f}x")
    print(f"  custom op loop: before / now {gate_ratio:.2f}x")


if __name__ == "__main__":
    os.environ.setdefault("NO_COLOR", "1")
    main()
