"""Every built-in op in a batch: batched forward and batched VJPs, no loop over points.

For each public op of ``gradcli.ops.BUILTINS`` the table :data:`CASES` holds programs that use
it, with sample bindings: some vary from point to point (a leading batch axis), some are fixed
(the same at every point).  Each case is run through the batch kernel in two chunks and
compared, point by point, with ``gradcli.grad`` at that point (the per-point engine).  While
the second chunk runs, the op's own per-point VJPs and forward are counted: a built-in op
must not run once per point (the kernel checks its batched rule against the per-point VJPs
at two points of the *first* chunk only).
"""
from __future__ import annotations

import numpy as np
import pytest

import gradcli
from gradcli import batching
from gradcli import ops as oplib

B = 6  # points per chunk (two chunks)

# name -> shape; a name in CAPS starting with A is a well-conditioned square matrix (det,
# inv, solve); every other value is drawn from (0.2, 0.9) (inside every op's domain).
SHAPES = {
    "s": (), "t": (), "v": (3,), "w": (3,), "u": (6,), "M": (2, 3), "N": (2, 3),
    "P": (3, 2), "Q": (3, 3), "T": (2, 2, 3), "A": (3, 3), "A2": (2, 3, 3), "b": (3,),
    "Bm": (3, 2), "x1": (2, 2, 7), "w1": (3, 2, 3), "b1": (3,), "x2": (2, 2, 5, 6),
    "w2": (3, 2, 2, 3), "b2": (3,), "y1": (2, 3, 3), "y2": (2, 3, 2, 3), "y2s": (2, 3, 3, 2),
    "z1": (2, 3, 4), "w1g": (4, 1, 3), "w2g": (4, 1, 2, 3), "b4": (4,), "wt1": (2, 3, 3),
    "wt1g": (2, 2, 3), "wt2": (2, 3, 2, 3),
}

E1 = ["exp", "log", "sqrt", "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh",
      "tanh", "sigmoid", "relu", "softplus", "abs", "log1p", "expm1", "log2", "log10", "exp2",
      "square", "reciprocal", "erf", "sign", "floor", "ceil", "round", "silu", "mish",
      "relu6", "step"]
E2 = ["add", "sub", "mul", "div", "pow", "atan2"]
SYMBOL = {"add": "+", "sub": "-", "mul": "*", "div": "/"}

#: (op name, arity) -> [(program, varying names), ...]; the other names are fixed.
CASES = {}


def case(key, program, varying):
    CASES.setdefault(key, []).append((program, tuple(varying.split())))


for _n in E1:
    case((_n, 1), f"sum({_n}(M * 3 - 1.2) * N)" if _n in ("sign", "floor", "ceil", "round",
                                                          "relu", "abs", "step", "relu6")
         else f"sum({_n}(M) * N)", "M")
for _n in E2:
    expr = f"(M {SYMBOL[_n]} w)" if _n in SYMBOL else f"{_n}(M, w)"
    case((_n, 2), f"sum({expr} * N)", "M")
    expr = f"(s {SYMBOL[_n]} M)" if _n in SYMBOL else f"{_n}(s, M)"
    case((_n, 2), f"sum({expr})", "s M")
for _n, _s in (("lt", "<"), ("le", "<="), ("gt", ">"), ("ge", ">="), ("eq", "=="),
               ("ne", "!=")):
    case((_n, 2), f"sum((M {_s} w) * M + (v {_s} 0.5) * v)", "M v")
case(("neg", 1), "sum(-M * N)", "M")
case(("max", 2), "sum(max(M, w) * N)", "M")
case(("min", 2), "sum(min(s, M))", "s M")
case(("clip", 3), "sum(clip(M, 0.4, w) * N)", "M w")
case(("where", 3), "sum(where(M > 0.5, M * s, N))", "M s")
case(("leaky_relu", 1), "sum(leaky_relu(M - 0.5, negative_slope=0.2) * N)", "M")
case(("elu", 1), "sum(elu(M - 0.5, alpha=2) * N)", "M")
case(("hardtanh", 1), "sum(hardtanh(M * 3 - 1.5, min_val=-0.5, max_val=1) * N)", "M")
case(("gelu", 1), "sum(gelu(M) * N) + sum(gelu(v, approximate=\"tanh\"))", "M v")

for _n in ("sum", "mean", "prod", "norm"):
    case((_n, 1), f"{_n}(M) * s", "M s")
    case((_n, 1), f"sum({_n}(T, axis=(0, 2)) * v[:2])" if _n != "norm" else
         "sum(norm(T, axis=(0, 2)) * v[:2])", "T")
    if _n != "norm":
        case((_n, 1), f"sum({_n}(M, 1, true) * N)", "M")
    else:
        case((_n, 1), "sum(norm(M, axis=1, keepdims=true) * N)", "M")
for _n in ("max", "min"):
    case((_n, 1), f"{_n}(M) * s", "M s")
    case((_n, 1), f"sum({_n}(T, axis=-1) * P[:2, :2])", "T")
    case((_n, 1), f"sum({_n}(M, axis=0, keepdims=true) * N)", "M")
for _n in ("var", "std"):
    case((_n, 1), f"{_n}(M) * s", "M s")
    case((_n, 1), f"sum({_n}(M, 1, correction=0) * v[:2])", "M")
    case((_n, 1), f"sum({_n}(T, axis=(0, 2), keepdims=true) * M[:, :2])", "T")

case(("sum_to", 1), "sum(sum_to(M, (1, 3)) * w)", "M")
case(("broadcast_to", 1), "sum(broadcast_to(v, (2, 3)) * M)", "v")
case(("reshape", 1), "sum(reshape(M, (3, 2)) * P)", "M")
case(("reshape", 1), "sum(reshape(T, (-1,)) * s)", "T s")
case(("flip", 1), "sum(flip(M, 1) * N)", "M")
case(("flip", 1), "sum(flip(T, (0, 2)) * T)", "T")
case(("cumsum", 1), "sum(cumsum(M, 1) * N)", "M")
case(("cumsum", 1), "sum(cumsum(T, -3) * T)", "T")
case(("cumprod", 1), "sum(cumprod(M, 1) * N)", "M")
case(("cumprod", 1), "sum(cumprod(M * [[1, 0, 1], [1, 1, 1]], 0) * N)", "M")
case(("flatten", 1), "sum(flatten(T, 1) * u)", "T")
case(("flatten", 1), "sum(flatten(T) * s)", "T s")
case(("squeeze", 1), "sum(squeeze(M[:, None, :], 1) * N)", "M")
case(("squeeze", 1), "sum(squeeze(M[None]) * N)", "M")
case(("unsqueeze", 1), "sum(unsqueeze(v, 0) * M)", "v")
case(("transpose", 1), "sum(transpose(M) * P)", "M")
case(("transpose", 1), "sum(transpose(T, (2, 0, 1)) @ v[:2])", "T")
case(("concat", None), "sum(concat(v, w, v, axis=0) * concat(w, v, w))", "v")
case(("concat", None), "sum(concat(M, N, axis=1) * concat(N, M, axis=-1))", "M N")
case(("stack", None), "sum(stack(v, w, axis=1) * P)", "v")
case(("stack", None), "sum(stack(M, N) * s)", "M N s")
case(("diag", 1), "sum(diag(v) * Q)", "v")
case(("diag", 1), "sum(diag(v, 1) * diag(w, 1))", "v")
case(("diag", 1), "sum(diag(Q) * w) + sum(diag(M, -1)) * s + sum(diag(P, 1))", "Q M P s")
case(("tril", 1), "sum(tril(Q) * Q)", "Q")
case(("triu", 1), "sum(triu(M, 1) * N)", "M")

case(("matmul", 2), "sum(M @ P)", "M")
case(("matmul", 2), "sum(M @ v)", "v")
case(("matmul", 2), "sum(M @ v) + sum(w @ P) + v @ w", "M v w")
case(("matmul", 2), "sum(T @ P)", "T")
case(("matmul", 2), "sum(T @ transpose(T, (0, 2, 1)) * s)", "T s")
case(("matmul", 2), "sum(T @ v)", "T v")
case(("dot", 2), "dot(v, w) * s", "v s")
case(("dot", 2), "dot(v, w)", "v w")
case(("outer", 2), "sum(outer(v, w) * Q)", "v")
case(("outer", 2), "sum(outer(v, u) * s)", "v u s")
case(("einsum", None), "sum(einsum(\"ij,j->i\", M, v))", "M")
case(("einsum", None), "sum(einsum(\"ij,j->i\", M, v) * w[:2])", "v")
case(("einsum", None), "sum(einsum(\"ij,jk->ik\", M, P) * s)", "M P s")
case(("einsum", None), "einsum(\"ij,jk,k->\", M, Q, w)", "M w")
case(("einsum", None), "sum(einsum(\"...j,jk->...k\", T, P))", "T")
case(("einsum", None), "sum(einsum(\"ij->j\", M) * w)", "M")
case(("einsum", None), "sum(einsum(\"ij,kl\", M, N))", "N")
case(("einsum", None), "sum(einsum(\"i,j->ji\", v, u) * s)", "v s")
case(("einsum", None), "sum(einsum(\"ij,j->ji\", M, w) * P)", "M")
case(("einsum", None), "sum(einsum(\"ij,ij->ji\", M, N) * P)", "M N")
case(("einsum", None), "sum(einsum(\"ii->i\", Q) * w)", "Q")          # diagonals
case(("einsum", None), "einsum(\"ii\", Q) * s", "Q s")
case(("einsum", None), "sum(einsum(\"ij,jj->i\", M, Q))", "M Q")
case(("einsum", None), "sum(einsum(\"ii,j->ij\", Q, w))", "Q")
case(("trace", 1), "trace(Q) * s", "Q s")
case(("trace", 1), "trace(M) + trace(P)", "M P")
case(("det", 1), "det(A) * s", "A s")
case(("det", 1), "sum(det(A2))", "A2")
case(("det", 1), "det(stack(v, 2 * v, w)) + det(A)", "v w")   # singular at every point
case(("inv", 1), "sum(inv(A) * Q)", "A")
case(("inv", 1), "sum(inv(A2))", "A2")
case(("adjugate", 1), "sum(adjugate(A) * Q)", "A")
case(("adjugate", 1), "sum(adjugate(A2)) * s", "A2 s")
case(("adjugate", 1), "sum(adjugate(A[:2, :2]) * Q[:2, :2])", "A Q")
case(("solve", 2), "sum(solve(A, b))", "A")
case(("solve", 2), "sum(solve(A, b))", "b")
case(("solve", 2), "sum(solve(A, b) * w) + sum(solve(A, Bm))", "A b Bm")
case(("solve", 2), "sum(solve(A, Bm))", "Bm")
case(("solve", 2), "sum(solve(A2, b))", "A2 b")
for _n in ("softmax", "log_softmax"):
    case((_n, 1), f"sum({_n}(M) * N)", "M")
    case((_n, 1), f"sum({_n}(T, axis=1) * T)", "T")
    case((_n, 1), f"sum({_n}(s) * t)", "s")
case(("logsumexp", 1), "sum(logsumexp(M) * v[:2])", "M")
case(("logsumexp", 1), "sum(logsumexp(T, axis=(0, 2), keepdims=true) * M[:, :2])", "T")
case(("logsumexp", 1), "logsumexp(s)", "s")

case(("conv1d", 3), "sum(conv1d(x1, w1, b1) * z1[:, :, :1])", "x1")
case(("conv1d", 3), "sum(conv1d(x1, w1, b1, stride=2, padding=1))", "w1 b1")
case(("conv1d", 3), "sum(conv1d(x1, w1, b1, padding=1) ** 2)", "x1 w1 b1")
case(("conv1d", 2), "sum(conv1d(x1, w1) ** 2)", "x1")
case(("conv1d", 2), "sum(conv1d(x1, w1, stride=3) ** 2)", "w1")
case(("conv1d", 2), "sum(conv1d(x1, w1, stride=2, padding=2) ** 2)", "x1 w1")
case(("conv2d", 3), "sum(conv2d(x2, w2, b2) ** 2)", "x2")
case(("conv2d", 3), "sum(conv2d(x2, w2, b2, stride=(2, 1), padding=(1, 0)) ** 2)", "w2 b2")
case(("conv2d", 3), "sum(conv2d(x2, w2, b2, padding=1) ** 2)", "x2 w2 b2")
case(("conv2d", 2), "sum(conv2d(x2, w2) ** 2)", "w2")
case(("conv2d", 2), "sum(conv2d(x2, w2, stride=2, padding=(0, 1)) ** 2)", "x2 w2")
if "groups" in oplib.conv1d.params:  # dilation and groups (ops.py)
    case(("conv1d", 3), "sum(conv1d(x1, w1g, b4, dilation=2, groups=2) ** 2)", "x1")
    case(("conv1d", 3), "sum(conv1d(x1, w1g, b4, stride=2, dilation=2, groups=2) ** 2)",
         "x1 w1g b4")
    case(("conv1d", 2), "sum(conv1d(x1, w1g, padding=1, groups=2) ** 2)", "w1g")
    case(("conv2d", 3), "sum(conv2d(x2, w2g, b4, dilation=(2, 1), groups=2) ** 2)", "x2 w2g")
    case(("conv2d", 2), "sum(conv2d(x2, w2g, stride=2, groups=2) ** 2)", "w2g")
    case(("conv_transpose1d", 3), "sum(conv_transpose1d(x1, wt1, b1) ** 2)", "x1")
    case(("conv_transpose1d", 3), "sum(conv_transpose1d(x1, wt1g, b4, stride=2, padding=1, "
         "output_padding=1, groups=2) ** 2)", "x1 wt1g b4")
    case(("conv_transpose1d", 2), "sum(conv_transpose1d(x1, wt1, dilation=2) ** 2)", "wt1")
    case(("conv_transpose2d", 3), "sum(conv_transpose2d(x2, wt2, b1, stride=(2, 1)) ** 2)",
         "x2 b1")
    case(("conv_transpose2d", 2), "sum(conv_transpose2d(x2, wt2, padding=1) ** 2)", "x2 wt2")


def _value(name, shape, rng, rows=None):
    size = shape if rows is None else (rows,) + shape
    a = rng.uniform(0.2, 0.9, size)
    if name.startswith("A"):
        a = a + 3 * np.eye(shape[-1])
    return a


def bindings(program, varying, seed=0):
    graph = gradcli.compile(program)
    rng = np.random.default_rng(seed)
    pts = {n: _value(n, SHAPES[n], rng, 4 * B) for n in varying}
    fixed = {n: _value(n, SHAPES[n], rng) for n in graph.variables if n not in varying}
    return graph, pts, fixed


def per_point(program, pts, fixed):
    n = len(next(iter(pts.values())))
    values, grads = [], []
    for b in range(n):
        binds = dict(fixed)
        binds.update({k: v[b] for k, v in pts.items()})
        r = gradcli.grad(program, binds, wrt=list(pts))
        values.append(np.asarray(r.value))
        grads.append(r.gradients)
    return np.array(values), {k: np.array([g[k] for g in grads]) for k in pts}


def _key(op):
    return (op.name, op.arity)


PUBLIC = [op for op in oplib.BUILTINS if op.public]


class Counter:
    """Counts the calls of an op's forward and VJPs (wrapped for the test's duration)."""

    def __init__(self, op, monkeypatch):
        self.calls = {"forward": 0, "vjp": 0}
        fwd, vjps = op.forward, op.vjps
        counter = self

        def forward(*args):
            counter.calls["forward"] += 1
            return fwd(*args)

        class Vjps:
            def __getitem__(self, k):
                inner = vjps[k]

                def vjp(*args):
                    counter.calls["vjp"] += 1
                    return inner(*args)
                return vjp

        monkeypatch.setattr(op, "forward", forward)
        if vjps is not None:
            monkeypatch.setattr(op, "vjps", Vjps())

    def reset(self):
        for k in self.calls:
            self.calls[k] = 0


def test_every_public_op_has_cases():
    missing = sorted({f"{op.name}/{op.arity}" for op in PUBLIC if _key(op) not in CASES})
    assert not missing, f"add batch cases for {missing}"


ALL = [(op, program, varying) for op in PUBLIC for program, varying in CASES.get(_key(op), ())]


@pytest.mark.parametrize("op, program, varying", ALL,
                         ids=[f"{op.name}/{op.arity}:{p}[{' '.join(v)}]" for op, p, v in ALL])
def test_batched_op_equals_per_point_grad_without_a_loop(op, program, varying, monkeypatch):
    """Chunks of B, B and 2B points: the values and gradients of every point equal
    gradcli.grad's at that point, nothing ran point by point, and the op's forward and VJPs
    are called as often for 2B points as for B (a loop over points would call them B times
    more)."""
    graph, pts, fixed = bindings(program, varying)
    assert any(node.op is op for node in graph.nodes), f"{program} does not use {op}"
    value, grads = per_point(program, pts, fixed)
    kernel = batching.Kernel(graph, list(pts), fixed)
    parts = [kernel({k: v[:B] for k, v in pts.items()})]
    counter = Counter(op, monkeypatch)
    parts.append(kernel({k: v[B:2 * B] for k, v in pts.items()}))
    calls = dict(counter.calls)
    counter.reset()
    parts.append(kernel({k: v[2 * B:] for k, v in pts.items()}))
    assert counter.calls == calls, f"calls grow with the points: {calls} -> {counter.calls}"
    for name, res in (("f", None),) + tuple((f"d_{k}", k) for k in pts):
        got = np.concatenate([p[name] for p in parts])
        want = value if res is None else grads[res]
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12,
                                   err_msg=f"{name} of {program}")
    assert not kernel.fallbacks, f"ran point by point: {kernel.fallbacks}"
    if op.partials is None:  # the op's batched rule is the one taken (not a fallback)
        chosen = {kernel._fns.get(("vjp", i), "no gradient needed") for i in kernel.steps
                  if graph.nodes[i].op is op}
        assert chosen <= {"rule", "no gradient needed"}, chosen


def test_every_non_elementwise_op_has_a_batched_rule():
    missing = sorted(f"{op.name}/{op.arity}" for op in PUBLIC
                     if op.partials is None and op not in batching._BATCHED_VJPS)
    assert not missing


def test_the_counter_sees_a_loop_over_points(monkeypatch):
    """The check above can fail: with solve's batched rule and forward taken away, the
    kernel loops over the points, and the calls grow with them."""
    monkeypatch.delitem(batching._BATCHED_VJPS, oplib.solve)
    monkeypatch.delitem(batching._BATCHED_FORWARDS, oplib.solve)
    monkeypatch.setattr(batching.Kernel, "_candidates", lambda self, node: [])
    graph, pts, fixed = bindings("sum(solve(A, b))", ("A",))
    kernel = batching.Kernel(graph, list(pts), fixed)
    kernel({k: v[:B] for k, v in pts.items()})
    counter = Counter(oplib.solve, monkeypatch)
    kernel({k: v[B:2 * B] for k, v in pts.items()})
    calls = dict(counter.calls)
    assert calls["vjp"] == B and calls["forward"] >= B
    counter.reset()
    kernel({k: v[2 * B:] for k, v in pts.items()})
    assert counter.calls == {k: 2 * n for k, n in calls.items()}
    assert "solve" in kernel.fallbacks


FIRSTS = {}
for _op, _program, _varying in ALL:
    if _op.partials is None:
        FIRSTS.setdefault(_op, []).append((_program, _varying))
SINGLE = [(op, p, v) for op, cases in FIRSTS.items() for p, v in cases[:2]]


@pytest.mark.parametrize("op, program, varying", SINGLE,
                         ids=[f"{op.name}/{op.arity}:{p}" for op, p, v in SINGLE])
def test_float32_batches_stay_float32_and_batched(op, program, varying):
    graph, pts, fixed = bindings(program, varying)
    wide = batching.Kernel(graph, list(pts), fixed)(pts)
    kernel = batching.Kernel(graph, list(pts), fixed, dtype="float32")
    narrow = kernel(pts)
    assert not kernel.fallbacks
    for name in wide:
        assert narrow[name].dtype == np.float32, name
        np.testing.assert_allclose(narrow[name], wide[name], rtol=2e-3, atol=1e-3)


@pytest.mark.parametrize("op, program, varying", SINGLE,
                         ids=[f"{op.name}/{op.arity}:{p}" for op, p, v in SINGLE])
def test_an_empty_chunk_gives_empty_columns_of_the_points_shapes(op, program, varying):
    graph, pts, fixed = bindings(program, varying)
    kernel = batching.Kernel(graph, list(pts), fixed)
    full = kernel({k: v[:3] for k, v in pts.items()})
    empty = kernel({k: v[:0] for k, v in pts.items()})
    assert list(empty) == list(full)
    for name in full:
        assert empty[name].shape == (0,) + full[name].shape[1:], name
        assert empty[name].dtype == full[name].dtype


def test_an_empty_batch_from_the_library_call():
    res = gradcli.batch("sum(solve(A, b)) * s", {"A": np.zeros((0, 3, 3)), "s": np.zeros(0)},
                        fixed={"b": [1.0, 2.0, 3.0]})
    assert res.value.shape == (0,) and res["d_A"].shape == (0, 3, 3)
