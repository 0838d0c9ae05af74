"""Gradients of every built-in op: central differences, hand-derived values, conventions.

The first part is driven by the op registry (``gradcli.ops.CALLABLE`` and ``INFIX``): every
elementwise op is picked up automatically (with a sampling domain from ``UNARY_DOMAINS`` /
``BINARY_DOMAINS`` when the default one does not fit), every other op has hand-written cases,
and ``test_every_public_op_is_exercised`` fails when an op of the registry has no case, so an
op cannot be added without a gradient test.
"""
from __future__ import annotations

import math
import re
from typing import NamedTuple

import numpy as np
import pytest

import gradcli
from gradcli import ops as oplib
from gradcli.errors import GradcliError
from conftest import numeric_grad

EPS = 1e-6
RTOL = 1e-6
ATOL = 1e-8


# ====================================================================== helpers


class Case(NamedTuple):
    id: str
    expr: str
    bindings: dict
    covers: tuple  # ("call", name, nargs) | ("infix", name) | ("syntax", "index"|"array")


def _result_shape(expr, bindings):
    return np.shape(gradcli.evaluate(expr, **bindings).value)


def _away(rng, shape, lo=0.1, hi=1.5):
    """Values with lo <= |x| <= hi and random sign: away from the kinks at 0."""
    return rng.uniform(lo, hi, shape) * rng.choice([-1.0, 1.0], shape)


def _distinct(rng, shape, spacing=0.25):
    """Values whose extremes are unique (no ties within ``spacing``)."""
    n = int(np.prod(shape, dtype=int))
    v = (rng.permutation(n) - n / 2) * spacing + rng.uniform(-0.05, 0.05, n)
    return v.reshape(shape) if shape else float(v[0])


def _weights(rng, shape):
    """A fixed random weight array, so the gradient is not that of a plain sum."""
    return rng.uniform(0.5, 1.5, shape) * rng.choice([-1.0, 1.0], shape)


def _fd_check(expr, bindings, rtol=RTOL, atol=ATOL):
    """gradcli.grad's gradient of every binding against central differences of evaluate."""
    r = gradcli.grad(expr, **bindings)
    ref = gradcli.evaluate(expr, **bindings).value
    np.testing.assert_allclose(r.value, ref, rtol=1e-12, atol=0)
    assert np.ndim(r.value) == 0, f"{expr}: the checked output should be a scalar"
    scale = max(1.0, float(np.max(np.abs(ref))))
    assert set(r.gradients) == set(bindings), (expr, set(r.gradients))
    for name, value in bindings.items():
        g = r.gradients[name]
        assert isinstance(g, np.ndarray), (expr, name, type(g))
        assert g.shape == np.shape(value), \
            f"{expr}: gradient of {name} has shape {g.shape}, want {np.shape(value)}"
        assert g.dtype == np.float64, (expr, name, g.dtype)

        def f(v, name=name):
            return gradcli.evaluate(expr, **{**bindings, name: v}).value

        num = numeric_grad(f, value, EPS)
        np.testing.assert_allclose(g, num, rtol=rtol, atol=atol * scale,
                                   err_msg=f"{expr}: d/d{name}")


# ====================================================================== the cases

RNG = np.random.default_rng(20240611)

#: Where to sample one-input elementwise ops (default: |x| in [0.1, 1.5], either sign).
UNARY_DOMAINS = {
    "log": lambda rng, s: rng.uniform(0.2, 2.0, s),
    "sqrt": lambda rng, s: rng.uniform(0.2, 2.0, s),
    "asin": lambda rng, s: rng.uniform(-0.9, 0.9, s),
    "acos": lambda rng, s: rng.uniform(-0.9, 0.9, s),
    "tan": lambda rng, s: _away(rng, s, 0.1, 1.2),
    "log1p": lambda rng, s: rng.uniform(-0.8, 2.0, s),
    "log2": lambda rng, s: rng.uniform(0.2, 2.0, s),
    "log10": lambda rng, s: rng.uniform(0.2, 2.0, s),
    "reciprocal": lambda rng, s: _away(rng, s, 0.3, 1.5),
    # away from the jumps (whole numbers, and halves for round)
    "floor": lambda rng, s: rng.integers(-3, 3, s) + rng.uniform(0.1, 0.9, s),
    "ceil": lambda rng, s: rng.integers(-3, 3, s) + rng.uniform(0.1, 0.9, s),
    "round": lambda rng, s: rng.integers(-3, 3, s) + rng.uniform(0.05, 0.45, s),
    "relu6": lambda rng, s: rng.choice([-1.0, 1.0], s) * rng.uniform(0.1, 1.5, s) + 3 *
    rng.integers(0, 3, s),
}


def _positive_base(rng, sa, sb):
    return rng.uniform(0.5, 2.0, sa), rng.uniform(-1.5, 2.0, sb)


def _no_ties(rng, sa, sb):
    while True:
        a, b = _away(rng, sa, 0.0, 2.0), _away(rng, sb, 0.0, 2.0)
        if np.min(np.abs(np.subtract(a, b))) > 0.05:
            return a, b


def _nonzero_divisor(rng, sa, sb):
    return _away(rng, sa), _away(rng, sb, 0.5, 2.0)


#: Where to sample two-input elementwise ops, by op name (default: both _away).
BINARY_DOMAINS = {"pow": _positive_base, "max": _no_ties, "min": _no_ties,
                  "div": _nonzero_divisor, **{c: _no_ties for c in
                                             ("lt", "le", "gt", "ge", "eq", "ne")},
                  "atan2": _nonzero_divisor}

UNARY_SHAPES = [(), (5,), (3, 4)]
BINARY_SHAPES = [((), ()), ((5,), (5,)), ((3, 4), (3, 4)),
                 ((), (3, 4)), ((3, 4), ()),           # scalar with matrix
                 ((3, 1), (1, 4)), ((1, 4), (3, 1)),   # both broadcast
                 ((4,), (3, 4)), ((3, 4), (4,)),       # a row with a matrix
                 ((2, 1, 4), (3, 1))]                  # rank 3 with rank 2


def _sname(shape):
    return "x".join(map(str, shape)) or "scalar"


def _weighted(inner, rng, bindings):
    """``sum(inner * C)`` with C random of inner's shape, added to bindings."""
    C = _weights(rng, _result_shape(inner, bindings))
    return f"sum(({inner}) * C)", {**bindings, "C": C}


def _elementwise_cases():
    rng = RNG
    cases = []
    unary = [(("call", name, 1), f"{name}(a)", op) for (name, n), op in oplib.CALLABLE.items()
             if op.elementwise and op.arity == 1 and n == 1]
    unary = [(k, f"({t}) * a" if op.name in ("sign", "step", "floor", "ceil", "round") else t, op)
             for k, t, op in unary]
    unary += [(("infix", k), "-a", op) for k, op in oplib.INFIX.items()
              if op.elementwise and op.arity == 1]
    for key, text, op in unary:
        sample = UNARY_DOMAINS.get(op.name, _away)
        for shape in UNARY_SHAPES:
            expr, b = _weighted(text, rng, {"a": sample(rng, shape)})
            cases.append(Case(f"{'/'.join(map(str, key))}-{_sname(shape)}", expr, b, (key,)))

    binary = [(("call", name, 2), f"{name}(a, b)", op) for (name, n), op in oplib.CALLABLE.items()
              if op.elementwise and op.arity == 2 and n == 2]
    binary += [(("infix", k), f"a {op.symbol} b", op) for k, op in oplib.INFIX.items()
               if op.elementwise and op.arity == 2]
    # a comparison's value is 1 or 0 and it passes no gradient: weight it by a smooth term
    binary = [(k, f"({t}) * (a * b + a)" if op.name in ("lt", "le", "gt", "ge", "eq", "ne")
               else t, op) for k, t, op in binary]
    for key, text, op in binary:
        sample = BINARY_DOMAINS.get(op.name, lambda rng, sa, sb: (_away(rng, sa), _away(rng, sb)))
        for sa, sb in BINARY_SHAPES:
            a, b = sample(rng, sa, sb)
            expr, bind = _weighted(text, rng, {"a": a, "b": b})
            cases.append(Case(f"{'/'.join(map(str, key))}-{_sname(sa)}-{_sname(sb)}",
                              expr, bind, (key,)))
    # a negative base with whole-number exponents (constants), and ^ as **
    for text in ("a ** 2", "a ** 3", "a ** -1", "a ^ 2", "pow(a, 3)"):
        expr, bind = _weighted(text, rng, {"a": _away(rng, (5,), 0.3, 1.5)})
        key = ("call", "pow", 2) if text.startswith("pow") else ("infix", "pow")
        cases.append(Case(f"pow-const-{text}", expr, bind, (key,)))
    return cases


def _reduction_cases():
    rng = RNG
    cases = []
    for name in ("sum", "mean", "prod", "var", "std", "norm", "logsumexp"):
        key = ("call", name, 1)
        for shape in [(5,), (3, 4), (2, 3, 4)] + ([()] if name not in ("var", "std") else []):
            expr, b = _weighted(f"{name}(a)", rng, {"a": _away(rng, shape)})
            cases.append(Case(f"{name}-all-{_sname(shape)}", expr, b, (key,)))
        ax = "axis=" if name == "norm" else ""
        for shape, axes in [((5,), (0, -1)), ((3, 4), (0, 1, -1, (0, 1))),
                            ((2, 3, 4), (0, 2, -2, (0, 2), (1, -1)))]:
            for axis in axes:
                for keep in (False, True):
                    kd = ", keepdims=true" if keep else ""
                    ax = "axis=" if keep or name == "norm" else ""
                    text = f"{name}(a, {ax}{axis}{kd})".replace(", )", ")")
                    expr, b = _weighted(text, rng, {"a": _away(rng, shape)})
                    cases.append(Case(f"{name}-axis{axis}{'-keep' * keep}-{_sname(shape)}",
                                      expr, b, (key,)))
    for name in ("var", "std"):
        for c in (0, 1, 2):
            expr, b = _weighted(f"{name}(a, 1, correction={c})", rng,
                                {"a": _away(rng, (3, 5))})
            cases.append(Case(f"{name}-correction{c}", expr, b, (("call", name, 1),)))
        expr, b = _weighted(f"{name}(a, axis=(0, 2), correction=0, keepdims=true)", rng,
                            {"a": _away(rng, (2, 3, 4))})
        cases.append(Case(f"{name}-all-keywords", expr, b, (("call", name, 1),)))
    for name in ("max", "min"):
        for shape in [(), (5,), (3, 4), (2, 3, 4)]:
            cases.append(Case(f"{name}-all-{_sname(shape)}", f"{name}(a) * c",
                              {"a": _distinct(rng, shape), "c": 1.3}, (("call", name, 1),)))
        for shape, axis in [((3, 4), 1), ((3, 4), 0), ((2, 3, 4), (0, 2)), ((2, 3, 4), -1)]:
            for keep in ("", ", keepdims=true"):
                expr, b = _weighted(f"{name}(a, axis={axis}{keep})", rng,
                                    {"a": _distinct(rng, shape)})
                cases.append(Case(f"{name}-axis{axis}{keep[2:6]}-{_sname(shape)}", expr, b,
                                  (("call", name, 1),)))
        # the extreme reached through a computation, and mixed with elementwise max/min
        cases.append(Case(f"{name}-all-of-expr", f"{name}(tanh(a) * 2 + a) * c",
                          {"a": _distinct(rng, (6,), 0.3), "c": 0.7}, (("call", name, 1),)))
    for name in ("cumsum", "cumprod", "flip"):
        for shape, axis in [((5,), 0), ((3, 4), 1), ((3, 4), -2), ((2, 3, 4), 1)]:
            for form in (f"{axis}", f"axis={axis}"):
                expr, b = _weighted(f"{name}(a, {form})", rng, {"a": _away(rng, shape, 0.5)})
                cases.append(Case(f"{name}-{form}-{_sname(shape)}", expr, b,
                                  (("call", name, 1),)))
    expr, b = _weighted("flip(a, (0, 1))", rng, {"a": _away(rng, (3, 4))})
    cases.append(Case("flip-tuple", expr, b, (("call", "flip", 1),)))
    for shape in [(3,), (2, 3)]:  # through zeros: PyTorch's values
        a = _away(rng, shape)
        a[..., 1] = 0
        expr, b = _weighted("cumprod(a, -1)", rng, {"a": a})
        cases.append(Case(f"cumprod-zero-{_sname(shape)}", expr, b, (("call", "cumprod", 1),)))
    return cases


def _elementwise_param_cases():
    """The elementwise ops that take static params, and the three-input ones."""
    rng = RNG
    cases = []
    texts = {"leaky_relu": ["leaky_relu(a)", "leaky_relu(a, 0.2)",
                            "leaky_relu(a, negative_slope=0.3)"],
             "elu": ["elu(a)", "elu(a, 0.5)", "elu(a, alpha=2)"],
             "hardtanh": ["hardtanh(a)", "hardtanh(a, -0.5, 0.5)",
                          "hardtanh(a, min_val=-0.7, max_val=0.6)"],
             "gelu": ["gelu(a)", 'gelu(a, approximate="tanh")', "gelu(a, approximate='none')",
                      "gelu(a * 4)"]}
    for name, forms in texts.items():
        for text in forms:
            for shape in [(), (7,), (2, 3)]:
                a = _away(rng, shape, 0.05, 1.5)
                if name == "hardtanh":  # away from the corners
                    a = np.where(np.abs(np.abs(a) - 0.5) < 0.05, a * 1.3, a)
                    a = np.where(np.abs(np.abs(a) - 0.6) < 0.05, a * 1.3, a)
                    a = np.where(np.abs(np.abs(a) - 0.7) < 0.05, a * 1.3, a)
                    a = np.where(np.abs(np.abs(a) - 1.0) < 0.05, a * 1.2, a)
                expr, b = _weighted(text, rng, {"a": a})
                cases.append(Case(f"{text}-{_sname(shape)}", expr, b, (("call", name, 1),)))
    for name in ("silu", "mish"):  # at large inputs too
        expr, b = _weighted(f"{name}(a * 10)", rng, {"a": _away(rng, (6,))})
        cases.append(Case(f"{name}-large", expr, b, (("call", name, 1),)))
    for sc, sa, sb in [((), (), ()), ((5,), (5,), (5,)), ((3, 1), (1, 4), ()),
                       ((4,), (3, 4), (3, 1))]:
        c = _away(rng, sc)
        a, b_ = _away(rng, sa), _away(rng, sb)
        expr, b = _weighted("where(c > 0, a, b)", rng, {"c": c, "a": a, "b": b_})
        cases.append(Case(f"where-{_sname(sc)}-{_sname(sa)}-{_sname(sb)}", expr, b,
                          (("call", "where", 3),)))
    for name in ("clip", "clamp"):
        for sx, sl, sh in [((), (), ()), ((6,), (), ()), ((3, 4), (4,), (3, 1)), ((5,), (5,), (5,))]:
            x = rng.uniform(-2, 2, sx)
            lo, hi = rng.uniform(-1.5, -0.3, sl), rng.uniform(0.3, 1.5, sh)
            x = np.where(np.abs(x - np.broadcast_to(lo, np.broadcast_shapes(sx, sl))[...] if sl
                                else x - lo) < 0.05, x + 0.1, x) if sx else x
            expr, b = _weighted(f"{name}(x, lo, hi)", rng, {"x": x, "lo": lo, "hi": hi})
            cases.append(Case(f"{name}-{_sname(sx)}-{_sname(sl)}-{_sname(sh)}", expr, b,
                              (("call", name, 3),)))
        expr, b = _weighted(f"{name}(x, -0.5, 0.5)", rng, {"x": rng.uniform(-2, 2, 7)})
        cases.append(Case(f"{name}-numbers", expr, b, (("call", name, 3),)))
    return cases


MATMUL_SHAPES = [((3, 4), (4, 5)),     # matrix-matrix
                 ((3, 4), (4,)),       # matrix-vector
                 ((4,), (4, 5)),       # vector-matrix
                 ((4,), (4,)),         # vector-vector
                 ((2, 3, 4), (4, 5)),  # batched
                 ((2, 3, 4), (2, 4, 5)),
                 ((1, 3, 4), (2, 4, 5)),
                 ((3, 4), (2, 4, 5)),
                 ((2, 3, 4), (4,)),
                 ((4,), (2, 4, 5))]


def _linalg_cases():
    rng = RNG
    cases = []
    for sa, sb in MATMUL_SHAPES:
        expr, b = _weighted("A @ B", rng, {"A": rng.normal(size=sa), "B": rng.normal(size=sb)})
        cases.append(Case(f"matmul-{_sname(sa)}-{_sname(sb)}", expr, b, (("infix", "matmul"),)))
    expr, b = _weighted("tanh(W @ x + b)", rng, {"W": rng.normal(size=(3, 4)),
                                                  "x": rng.normal(size=4),
                                                  "b": rng.normal(size=3)})
    cases.append(Case("matmul-layer", expr, b, (("infix", "matmul"),)))
    for n in (1, 5):
        cases.append(Case(f"dot-{n}", "dot(a, b) * c",
                          {"a": rng.normal(size=n), "b": rng.normal(size=n), "c": 1.9},
                          (("call", "dot", 2),)))
    cases.append(Case("dot-fanout", "dot(a, a) * c", {"a": rng.normal(size=4), "c": 0.6},
                      (("call", "dot", 2),)))
    for shape in [(), (5,), (3, 4), (2, 3, 4)]:
        expr, b = _weighted("transpose(a)", rng, {"a": rng.normal(size=shape)})
        cases.append(Case(f"transpose-{_sname(shape)}", expr, b, (("call", "transpose", 1),)))
    expr, b = _weighted("transpose(W) @ W", rng, {"W": rng.normal(size=(3, 4))})
    cases.append(Case("transpose-gram", expr, b,
                      (("call", "transpose", 1), ("infix", "matmul"))))
    return cases


def _nn_cases():
    rng = RNG
    cases = []
    for name in ("softmax", "log_softmax", "logsumexp"):
        for shape in [(), (5,), (3, 4), (2, 3, 4)]:
            expr, b = _weighted(f"{name}(a)", rng, {"a": rng.normal(size=shape) * 2})
            cases.append(Case(f"{name}-{_sname(shape)}", expr, b, (("call", name, 1),)))
        for shape, axis in [((3, 4), 0), ((2, 3, 4), 1), ((2, 3, 4), -2)]:
            for form in (f"{axis}", f"axis={axis}"):
                expr, b = _weighted(f"{name}(a, {form})", rng, {"a": rng.normal(size=shape)})
                cases.append(Case(f"{name}-{form}-{_sname(shape)}", expr, b,
                                  (("call", name, 1),)))
        expr, b = _weighted(f"{name}(a * 30)", rng, {"a": rng.normal(size=5)})
        cases.append(Case(f"{name}-large", expr, b, (("call", name, 1),)))
        expr, b = _weighted(f"{name}(a * 30 + 1000, 0)", rng, {"a": rng.normal(size=(2, 3))})
        cases.append(Case(f"{name}-large-columns", expr, b, (("call", name, 1),)))
    expr, b = _weighted("logsumexp(a, axis=(0, 2), keepdims=true)", rng,
                        {"a": rng.normal(size=(2, 3, 4))})
    cases.append(Case("logsumexp-keywords", expr, b, (("call", "logsumexp", 1),)))
    for d, xs, ws in [(1, (2, 3, 9), (4, 3, 3)), (2, (2, 3, 6, 5), (4, 3, 3, 2))]:
        name = f"conv{d}d"
        x, w, bias = rng.normal(size=xs), rng.normal(size=ws), rng.normal(size=ws[0])
        for extra in ("", ", stride=2", ", padding=1", ", stride=2, padding=2",
                      ", stride=(1, 2), padding=(1, 0)" if d == 2 else ", stride=3"):
            expr, b = _weighted(f"{name}(x, w{extra})", rng, {"x": x, "w": w})
            cases.append(Case(f"{name}{extra}", expr, b, (("call", name, 2),)))
            expr, b = _weighted(f"{name}(x, w, b{extra})", rng, {"x": x, "w": w, "b": bias})
            cases.append(Case(f"{name}-bias{extra}", expr, b, (("call", name, 3),)))
        expr, b = _weighted(f"{name}(x, w, b, 2, 1)", rng, {"x": x, "w": w, "b": bias})
        cases.append(Case(f"{name}-positional", expr, b, (("call", name, 3),)))
        # dilation and groups (x has 4 channels: groups 2 and 4, w (out, C / groups, ...))
        x4 = rng.normal(size=xs[:1] + (4,) + xs[2:])
        for extra, wshape in [(", dilation=2", (4, 4) + ws[2:]),
                              (", groups=2", (6, 2) + ws[2:]),
                              (", stride=2, padding=1, dilation=2, groups=4", (4, 1) + ws[2:]),
                              (', padding="same", dilation=2', (4, 4) + ws[2:]),
                              (', padding="valid", groups=2', (2, 2) + ws[2:]),
                              (", 1, 1, 2, 2", (2, 2) + ws[2:])]:  # positional after b
            wg = rng.normal(size=wshape)
            if "=" in extra:
                expr, b = _weighted(f"{name}(x, w{extra})", rng, {"x": x4, "w": wg})
                cases.append(Case(f"{name}{extra}", expr, b, (("call", name, 2),)))
            expr, b = _weighted(f"{name}(x, w, b{extra})", rng,
                                {"x": x4, "w": wg, "b": rng.normal(size=wshape[0])})
            cases.append(Case(f"{name}-bias{extra}", expr, b, (("call", name, 3),)))
        # the transposed convolution: w is (C, out / groups, ...)
        name = f"conv_transpose{d}d"
        small = xs[:2] + tuple(max(2, n // 2) for n in xs[2:])
        xt = rng.normal(size=small[:1] + (4,) + small[2:])
        for extra, wshape in [("", (4, 3) + ws[2:]), (", stride=2", (4, 2) + ws[2:]),
                              (", stride=2, padding=1, output_padding=1", (4, 2) + ws[2:]),
                              (", groups=2, dilation=2", (4, 3) + ws[2:]),
                              (", stride=3, padding=1, output_padding=1, groups=4, "
                               "dilation=2", (4, 1) + ws[2:]),
                              (", 2, 0, 1", (4, 2) + ws[2:])]:
            wt = rng.normal(size=wshape)
            groups = 4 if "groups=4" in extra else 2 if "groups=2" in extra else 1
            if "=" in extra or not extra:
                expr, b = _weighted(f"{name}(x, w{extra})", rng, {"x": xt, "w": wt})
                cases.append(Case(f"{name}{extra}", expr, b, (("call", name, 2),)))
            expr, b = _weighted(f"{name}(x, w, b{extra})", rng,
                                {"x": xt, "w": wt, "b": rng.normal(size=wshape[1] * groups)})
            cases.append(Case(f"{name}-bias{extra}", expr, b, (("call", name, 3),)))
    return cases


def _shape_cases():
    rng = RNG
    cases = []
    x, W, T = rng.normal(size=6), rng.normal(size=(3, 4)), rng.normal(size=(2, 3, 4))
    forms = [("reshape", "reshape(W, (2, 6))", {"W": W}), ("reshape", "reshape(T, (4, -1))", {"T": T}),
             ("reshape", "reshape(x, shape=(3, 2, 1))", {"x": x}),
             ("reshape", "reshape(T[0, 0, 0], (1, 1))", {"T": T}),
             ("flatten", "flatten(T)", {"T": T}), ("flatten", "flatten(T, 1)", {"T": T}),
             ("flatten", "flatten(T, start_dim=0, end_dim=1)", {"T": T}),
             ("squeeze", "squeeze(reshape(W, (3, 1, 4, 1)))", {"W": W}),
             ("squeeze", "squeeze(reshape(W, (3, 1, 4, 1)), 1)", {"W": W}),
             ("squeeze", "squeeze(reshape(W, (3, 1, 4, 1)), axis=(1, 3))", {"W": W}),
             ("unsqueeze", "unsqueeze(W, 0)", {"W": W}),
             ("unsqueeze", "unsqueeze(W, axis=-1) * T[0, 0]", {"W": W, "T": T}),
             ("transpose", "transpose(T, (1, 2, 0))", {"T": T}),
             ("transpose", "transpose(T, axes=(0, 2, 1)) @ W", {"T": T, "W": W}),
             ("concat", "concat(W, T[0], axis=0)", {"W": W, "T": T}),
             ("concat", "concat(W, T[1], W * 2, axis=1)", {"W": W, "T": T}),
             ("concat", "concat(x, x[1:3])", {"x": x}), ("cat", "cat(x, x)", {"x": x}),
             ("stack", "stack(W, T[0], T[1])", {"W": W, "T": T}),
             ("stack", "stack(W, T[1], axis=2)", {"W": W, "T": T}),
             ("stack", "stack(W, W * 3, axis=-1)", {"W": W}),
             ("diag", "diag(x)", {"x": x}), ("diag", "diag(W[:, :3])", {"W": W}),
             ("diag", "diag(W)", {"W": W}), ("diag", "diag(x, 1)", {"x": x}),
             ("diag", "diag(W, diagonal=-1)", {"W": W}),
             ("tril", "tril(W)", {"W": W}), ("tril", "tril(T, diagonal=1)", {"T": T}),
             ("triu", "triu(W)", {"W": W}), ("triu", "triu(T, -1)", {"T": T}),
             ("triu", "triu(W, diagonal=2)", {"W": W}),
             ("broadcast_to", "broadcast_to(x, (2, 6))", {"x": x}),
             ("sum_to", "sum_to(T, (3, 1))", {"T": T})]
    for name, text, b in forms:
        op = oplib.CALLABLE.get((name, 1)) or oplib.CALLABLE.get((name, 2))
        expr, bind = _weighted(text, rng, b)
        cases.append(Case(f"{name}-{text}", expr, bind, (("call", name, op.arity),)))
    return cases


def _einsum_linalg_cases():
    rng = RNG
    cases = []
    A, B, v, u = rng.normal(size=(3, 4)), rng.normal(size=(4, 5)), rng.normal(size=4), \
        rng.normal(size=3)
    T = rng.normal(size=(2, 3, 4))
    for sub, names in [("ij,jk->ik", "AB"), ("ij,j->i", "Av"), ("ij->ji", "A"), ("ij->", "A"),
                       ("ij->j", "A"), ("i,j->ij", "uv"), ("ij,ij->i", "AA"),
                       ("bij,jk->bik", "TB"), ("...j,jk->...k", "TB"), ("ij,jk", "AB"),
                       ("bij,j,ik->bk", "Tvq"),
                       # a letter repeated in one operand: a diagonal (PyTorch allows it)
                       ("ii->i", "R"), ("ii", "R"), ("ii->", "R"), ("iij->j", "U"),
                       ("jii->ij", "W"), ("ij,jj->i", "AR"), ("ii,i", "Rv"),
                       ("...ii->...i", "W"), ("iji->j", "Y")]:
        vals = {"A": A, "B": B, "v": v, "u": u, "T": T, "q": rng.normal(size=(3, 6)),
                "R": rng.normal(size=(4, 4)), "U": rng.normal(size=(3, 3, 2)),
                "W": rng.normal(size=(2, 3, 3)), "Y": rng.normal(size=(3, 2, 3))}
        ops = ", ".join(names)
        b = {n: vals[n] for n in dict.fromkeys(names)}
        expr, bind = _weighted(f'einsum("{sub}", {ops})', rng, b)
        cases.append(Case(f"einsum-{sub}-{names}", expr, bind, (("call", "einsum", None),)))
    cases.append(Case("outer", "sum(outer(u, v) * A)", {"u": u, "v": v, "A": A},
                      (("call", "outer", 2),)))
    M = rng.normal(size=(3, 3)) + 3 * np.eye(3)
    S = rng.normal(size=(2, 3, 3)) + 3 * np.eye(3)
    for name, text, b in [("trace", "trace(M) * c", {"M": M, "c": 1.3}),
                          ("trace", "trace(A) * c", {"A": A, "c": 0.7}),
                          ("det", "det(M) * c", {"M": M, "c": 0.3}),
                          ("det", "det(S)", {"S": S}),
                          ("inv", "inv(M)", {"M": M}), ("inv", "inv(S)", {"S": S}),
                          ("solve", "solve(M, u)", {"M": M, "u": u}),
                          ("solve", "solve(M, A)", {"M": M, "A": A}),
                          ("solve", "solve(S, A)", {"S": S, "A": A}),
                          ("solve", "solve(S, S[0])", {"S": S}),
                          # singular matrices: det's gradient is the cofactor matrix
                          ("det", "det(P) * c", {"P": [[1.0, 2.0], [2.0, 4.0]], "c": 0.7}),
                          ("det", "det(R)", {"R": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0],
                                                   [7.0, 8.0, 9.0]]}),
                          ("det", "det(Z)", {"Z": np.zeros((3, 3))}),
                          ("adjugate", "adjugate(M)", {"M": M}),
                          ("adjugate", "adjugate(S)", {"S": S}),
                          ("adjugate", "adjugate(P)", {"P": [[1.0, 2.0], [2.0, 4.0]]}),
                          ("adjugate", "adjugate(Q)", {"Q": [[0.7]]})]:
        op = oplib.CALLABLE[(name, 1)] if (name, 1) in oplib.CALLABLE else \
            oplib.CALLABLE[(name, 2)]
        expr, bind = _weighted(text, rng, b)
        cases.append(Case(f"{name}-{text}", expr, bind, (("call", name, op.arity),)))
    return cases


def _structure_cases():
    rng = RNG
    x, W, T = rng.normal(size=5), rng.normal(size=(3, 4)), rng.normal(size=(2, 3, 4))
    cases = []
    for text in ["x[1]", "x[-1]", "W[1, -1]", "x[1:]", "x[:-1]", "x[1:4]", "W[:, 0]",
                 "x[::2]", "x[::-1]", "W[1]", "W[-1, 1:]", "W[::2, 1:3]", "T[1, :, ::2]",
                 "T[-1]", "x[0] * x[0] + x[1] * x[0]", "W[:, 0] @ W[:, 1:]"]:
        expr, b = _weighted(text, rng, {n: v for n, v in (("x", x), ("W", W), ("T", T))
                                        if re.search(rf"\b{n}\b", text)})
        cases.append(Case(f"index-{text}", expr, b, (("syntax", "index"),)))
    s = {n: float(v) for n, v in zip("abcdxy", rng.normal(size=6))}
    u, v = rng.normal(size=3), rng.normal(size=3)
    for text, b in [("[x, y]", {"x": s["x"], "y": s["y"]}),
                    ("[[a, b], [c, d]]", {k: s[k] for k in "abcd"}),
                    ("[x, 2, y]", {"x": s["x"], "y": s["y"]}),
                    ("[x, x * y]", {"x": s["x"], "y": s["y"]}),
                    ("[[a, 2], [b, a]]", {"a": s["a"], "b": s["b"]}),
                    ("[u, v]", {"u": u, "v": v}),
                    ("[u, v, [1, 2, 3]]", {"u": u, "v": v}),
                    ("[[x, y], [y, 1]] @ [x, 3]", {"x": s["x"], "y": s["y"]})]:
        expr, bind = _weighted(text, rng, b)
        cases.append(Case(f"array-{text}", expr, bind, (("syntax", "array"),)))
    return cases


def _composite_cases():
    rng = RNG
    return [
        Case("worked-example", "a = x + y\nb = max(y, z)\nf = a * b",
             {"x": 1.0, "y": 2.0, "z": 0.5}, (("infix", "add"), ("call", "max", 2))),
        Case("fanout", "a = x * y; f = a * a + a", {"x": 0.7, "y": -1.3},
             (("infix", "mul"), ("infix", "add"))),
        Case("mlp", "h = relu(W1 @ x + b1); o = W2 @ h; f = logsumexp(o) - o[1]",
             {"W1": rng.normal(size=(4, 3)), "x": rng.normal(size=3),
              "b1": np.array([0.5, 0.6, 0.7, 0.8]), "W2": rng.normal(size=(2, 4))},
             (("call", "relu", 1), ("call", "logsumexp", 1))),
        Case("mse", "mean((W @ X - Y) ** 2)",
             {"W": rng.normal(size=(2, 3)), "X": rng.normal(size=(3, 5)),
              "Y": rng.normal(size=(2, 5))}, (("call", "mean", 1),)),
    ]


CASES = (_elementwise_cases() + _elementwise_param_cases() + _reduction_cases()
         + _linalg_cases() + _nn_cases() + _shape_cases() + _einsum_linalg_cases()
         + _structure_cases() + _composite_cases())


def _params(cases):
    return [pytest.param(c, id=c.id) for c in cases]


# ====================================================================== registry coverage

def _required_keys():
    """One key per way to call an op: (call, name, the op's arity), and the infix ones."""
    keys = {("call", name, op.arity) for (name, _), op in oplib.CALLABLE.items()}
    keys |= {("infix", k) for k in oplib.INFIX}
    keys |= {("syntax", "index"), ("syntax", "array")}
    return keys


def _call_op(name, arity):
    for (n, _), op in oplib.CALLABLE.items():
        if n == name and op.arity == arity:
            return op
    raise KeyError((name, arity))


def _exercises(expr, key):
    """Whether program ``expr`` really applies the op ``key`` names, with that syntax."""
    nodes = gradcli.compile(expr).nodes
    kind = key[0]
    if kind == "call":
        _, name, arity = key
        op = _call_op(name, arity)
        return (re.search(rf"(?<![\w]){re.escape(name)}\s*\(", expr) is not None
                and any(nd.op is op for nd in nodes))
    if kind == "infix":
        op = oplib.INFIX[key[1]]
        symbols = {"**", "^"} if op is oplib.pow else {op.symbol}
        return any(s in expr for s in symbols) and any(nd.op is op for nd in nodes)
    op = {"index": oplib.index, "array": oplib.stack}[key[1]]
    return any(nd.op is op for nd in nodes)


def test_every_public_op_is_exercised():
    covered = {k for c in CASES for k in c.covers}
    missing = _required_keys() - covered
    assert not missing, f"ops of the registry without a gradient test case: {sorted(missing, key=str)}"


def test_every_keyword_of_every_op_is_exercised():
    missing = []
    for op in oplib.BUILTINS:
        if not op.public or op.symbol is not None:
            continue
        for p in op.signature:
            if p.positional and p.required:
                continue
            if not any(re.search(rf"(?<![\w]){op.name}\(.*\b{p.name}=", c.expr)
                       for c in CASES):
                missing.append(f"{op.name}({p.name}=)")
    assert not missing, f"keywords without a gradient case: {missing}"


def test_every_public_op_is_reachable_from_the_language():
    reachable = set(map(id, oplib.CALLABLE.values())) | set(map(id, oplib.INFIX.values()))
    unreachable = [op.name for op in oplib.BUILTINS if op.public and id(op) not in reachable]
    assert not unreachable, f"public ops neither callable nor infix: {unreachable}"


@pytest.mark.parametrize("case", _params(CASES))
def test_case_exercises_the_ops_it_claims(case):
    for key in case.covers:
        assert _exercises(case.expr, key), f"{case.expr!r} does not exercise {key}"


def test_case_ids_are_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))


# ====================================================================== finite differences

@pytest.mark.parametrize("case", _params(CASES))
def test_vjp_matches_central_differences(case):
    _fd_check(case.expr, case.bindings)


@pytest.mark.parametrize("case", _params(CASES))
def test_float32_matches_float64(case):
    r64 = gradcli.grad(case.expr, **case.bindings)
    r32 = gradcli.grad(case.expr, dtype="float32", **case.bindings)
    assert r32.value.dtype == np.float32
    scale = max(1.0, float(np.max(np.abs(r64.value))))
    np.testing.assert_allclose(r32.value, r64.value, rtol=1e-4, atol=1e-5 * scale)
    for name, g64 in r64.gradients.items():
        g32 = r32.gradients[name]
        assert g32.dtype == np.float32, (case.expr, name, g32.dtype)
        assert g32.shape == g64.shape
        gscale = max(1.0, float(np.max(np.abs(g64))))
        np.testing.assert_allclose(g32, g64, rtol=1e-4, atol=1e-5 * gscale,
                                   err_msg=f"{case.expr}: d/d{name}")


# ====================================================================== hand-derived values

def _g(r, name):
    return r.gradients[name]


def test_worked_example_max():
    r = gradcli.grad("(x+y)*max(y,z)", x=1, y=2, z=0)
    assert float(r.value) == pytest.approx(6.0)
    assert float(_g(r, "x")) == pytest.approx(2.0)
    assert float(_g(r, "y")) == pytest.approx(5.0)
    assert float(_g(r, "z")) == pytest.approx(0.0, abs=1e-15)


def test_worked_example_statements():
    r = gradcli.grad("a = x + y\nb = max(y, z)\nf = a * b", x=1, y=2, z=0)
    assert float(r.value) == pytest.approx(6.0)
    assert [float(_g(r, n)) for n in "xyz"] == pytest.approx([2.0, 5.0, 0.0])


def test_worked_example_mul():
    r = gradcli.grad("(x+y)*z", x=1, y=3, z=-3)
    assert float(r.value) == pytest.approx(-12.0)
    assert [float(_g(r, n)) for n in "xyz"] == pytest.approx([-3.0, -3.0, 4.0])


def test_polynomial_vector():
    r = gradcli.grad("x**2 + 2*x + 1", x=[2, 3])
    np.testing.assert_allclose(r.value, [9.0, 16.0], rtol=1e-12)
    np.testing.assert_allclose(_g(r, "x"), [6.0, 8.0], rtol=1e-12)


def test_negated_square():
    r = gradcli.grad("-x**2", x=3)  # -(x**2)
    assert float(r.value) == pytest.approx(-9.0)
    assert float(_g(r, "x")) == pytest.approx(-6.0)


@pytest.mark.parametrize("expr, x, value, slope", [
    ("sigmoid(x)", 0.0, 0.5, 0.25),
    ("tanh(x)", 0.0, 0.0, 1.0),
    ("exp(x)", 0.0, 1.0, 1.0),
    ("log(x)", 2.0, math.log(2), 0.5),
    ("sqrt(x)", 4.0, 2.0, 0.25),
    ("x ** 3", 2.0, 8.0, 12.0),
    ("1 / x", 2.0, 0.5, -0.25),
    ("sin(x)", 0.0, 0.0, 1.0),
    ("cos(x)", 0.0, 1.0, 0.0),
    ("tan(x)", 0.0, 0.0, 1.0),
    ("asin(x)", 0.0, 0.0, 1.0),
    ("acos(x)", 0.0, math.pi / 2, -1.0),
    ("atan(x)", 1.0, math.pi / 4, 0.5),
    ("sinh(x)", 0.0, 0.0, 1.0),
    ("cosh(x)", 0.0, 1.0, 0.0),
    ("softplus(x)", 0.0, math.log(2), 0.5),
    ("relu(x)", 2.0, 2.0, 1.0),
    ("relu(x)", -2.0, 0.0, 0.0),
    ("abs(x)", -2.0, 2.0, -1.0),
    ("pow(x, 2)", -3.0, 9.0, -6.0),
    ("2 ** x", 3.0, 8.0, 8 * math.log(2)),
    ("x ** x", 1.0, 1.0, 1.0),
    ("pi * x", 1.0, math.pi, math.pi),
    ("e ** x", 1.0, math.e, math.e),
])
def test_scalar_derivatives_by_hand(expr, x, value, slope):
    r = gradcli.grad(expr, x=x)
    assert float(r.value) == pytest.approx(value, rel=1e-12, abs=1e-15)
    assert float(_g(r, "x")) == pytest.approx(slope, rel=1e-12, abs=1e-15)


def test_softmax_weighted_sum_by_hand():
    # s = softmax([0, log 3]) = [1/4, 3/4]; d/dx sum(s * w) = s * (w - s.w), w = [1, 0]
    r = gradcli.grad("sum(softmax(x) * w)", x=[0.0, math.log(3)], w=[1.0, 0.0])
    assert float(r.value) == pytest.approx(0.25)
    np.testing.assert_allclose(_g(r, "x"), [3 / 16, -3 / 16], rtol=1e-12)
    np.testing.assert_allclose(_g(r, "w"), [0.25, 0.75], rtol=1e-12)


def test_logsumexp_by_hand():
    r = gradcli.grad("logsumexp(x)", x=[0.0, math.log(3)])
    assert float(r.value) == pytest.approx(math.log(4))
    np.testing.assert_allclose(_g(r, "x"), [0.25, 0.75], rtol=1e-12)


def test_mean_of_matrix_is_one_sixth_everywhere():
    r = gradcli.grad("mean(W)", W=np.arange(6.0).reshape(2, 3))
    assert float(r.value) == pytest.approx(2.5)
    np.testing.assert_allclose(_g(r, "W"), np.full((2, 3), 1 / 6), rtol=1e-12)


def test_mean_along_an_axis_by_hand():
    r = gradcli.grad("sum(mean(W, 0) * [1, 2, 3])", W=np.ones((2, 3)))
    np.testing.assert_allclose(_g(r, "W"), [[0.5, 1.0, 1.5], [0.5, 1.0, 1.5]], rtol=1e-12)


def test_fan_out_by_hand():
    # a = x y = 6; f = a^2 + a = 42; df/da = 2a + 1 = 13
    r = gradcli.grad("a = x*y; f = a*a + a", x=2, y=3)
    assert float(r.value) == pytest.approx(42.0)
    assert float(_g(r, "x")) == pytest.approx(39.0)
    assert float(_g(r, "y")) == pytest.approx(26.0)


def test_same_variable_twice():
    r = gradcli.grad("x * x + x", x=3)
    assert float(_g(r, "x")) == pytest.approx(7.0)


def test_matrix_vector_by_hand():
    W, x = np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([5.0, 6.0])
    r = gradcli.grad("sum(W @ x)", W=W, x=x)
    assert float(r.value) == pytest.approx(17 + 39)
    np.testing.assert_allclose(_g(r, "W"), [[5.0, 6.0], [5.0, 6.0]], rtol=1e-12)
    np.testing.assert_allclose(_g(r, "x"), [4.0, 6.0], rtol=1e-12)


def test_broadcast_gradient_is_summed_back():
    # d/db sum((W + b) * C) for b of shape (3,) added to every row: the column sums of C
    C = np.arange(6.0).reshape(2, 3)
    r = gradcli.grad("sum((W + b) * C)", W=np.zeros((2, 3)), b=np.zeros(3), C=C)
    np.testing.assert_allclose(_g(r, "b"), [3.0, 5.0, 7.0], rtol=1e-12)
    r = gradcli.grad("sum((W * s) * C)", W=np.ones((2, 3)), s=2.0, C=C)
    assert _g(r, "s").shape == ()
    assert float(_g(r, "s")) == pytest.approx(15.0)


def test_index_and_array_by_hand():
    r = gradcli.grad("x[0] * x[2] + x[-1]", x=[2.0, 5.0, 3.0, 7.0])
    np.testing.assert_allclose(_g(r, "x"), [3.0, 0.0, 2.0, 1.0], rtol=1e-12)
    r = gradcli.grad("sum([[a, b], [b, 1]] @ [1, 2])", a=0.5, b=4.0)
    # [[a, b], [b, 1]] @ [1, 2] = [a + 2b, b + 2]
    assert float(r.value) == pytest.approx(0.5 + 8 + 6)
    assert float(_g(r, "a")) == pytest.approx(1.0)
    assert float(_g(r, "b")) == pytest.approx(3.0)


# ====================================================================== conventions

@pytest.mark.parametrize("expr, x, slope", [
    ("relu(x)", 0.0, 0.0),
    ("abs(x)", 0.0, 0.0),
    ("max(x, x)", 1.5, 1.0),
    ("min(x, x)", 1.5, 1.0),
    ("max(x, 0)", 0.0, 0.5),
    ("min(x, 0)", 0.0, 0.5),
    ("max(0, x)", 0.0, 0.5),
    ("x ** 2", 0.0, 0.0),
    ("x ** 1", 0.0, 1.0),
    ("x ** 0", 0.0, 0.0),
    ("x ** 0", 2.0, 0.0),
])
def test_kink_conventions(expr, x, slope):
    r = gradcli.grad(expr, x=x)
    g = float(_g(r, "x"))
    assert not math.isnan(g)
    assert g == pytest.approx(slope, abs=1e-15)


@pytest.mark.parametrize("expr", ["sqrt(x)", "x ** 0.5"])
def test_sqrt_slope_at_zero_is_inf(expr):
    r = gradcli.grad(expr, x=0.0)
    assert float(r.value) == 0.0
    assert float(_g(r, "x")) == math.inf


def test_kinks_in_vectors():
    r = gradcli.grad("relu(x)", x=[-1.0, 0.0, 2.0])
    np.testing.assert_array_equal(_g(r, "x"), [0.0, 0.0, 1.0])
    r = gradcli.grad("abs(x)", x=[-2.0, 0.0, 3.0])
    np.testing.assert_array_equal(_g(r, "x"), [-1.0, 0.0, 1.0])
    r = gradcli.grad("sqrt(x)", x=[0.0, 4.0])
    np.testing.assert_allclose(_g(r, "x"), [math.inf, 0.25])


def test_elementwise_max_min_ties_split_evenly():
    r = gradcli.grad("max(x, y)", x=2.0, y=2.0)
    assert [float(_g(r, "x")), float(_g(r, "y"))] == pytest.approx([0.5, 0.5])
    r = gradcli.grad("min(x, y)", x=2.0, y=2.0)
    assert [float(_g(r, "x")), float(_g(r, "y"))] == pytest.approx([0.5, 0.5])
    r = gradcli.grad("max(x, 0)", x=[-1.0, 0.0, 1.0])
    np.testing.assert_allclose(_g(r, "x"), [0.0, 0.5, 1.0])
    # a broadcast scalar collects its share from every element
    r = gradcli.grad("min(x, y)", x=[1.0, 1.0, 3.0], y=1.0)
    np.testing.assert_allclose(_g(r, "x"), [0.5, 0.5, 0.0])
    assert float(_g(r, "y")) == pytest.approx(2.0)


@pytest.mark.parametrize("expr, x, want", [
    ("max(x)", [1.0, 3.0, 3.0], [0.0, 0.5, 0.5]),
    ("min(x)", [2.0, 1.0, 1.0], [0.0, 0.5, 0.5]),
    ("max(x)", [2.0, 2.0, 2.0], [1 / 3, 1 / 3, 1 / 3]),
    ("min(x)", [[1.0, 3.0], [1.0, 0.0]], [[0.0, 0.0], [0.0, 1.0]]),
    ("max(x)", [[1.0, 3.0], [3.0, 0.0]], [[0.0, 0.5], [0.5, 0.0]]),
    ("max(x)", [1.0, 3.0, 2.0], [0.0, 1.0, 0.0]),
])
def test_reduction_ties_split_evenly(expr, x, want):
    r = gradcli.grad(expr, x=x)
    assert float(r.value) == pytest.approx(float(np.max(x) if "max" in expr else np.min(x)))
    np.testing.assert_allclose(_g(r, "x"), want, rtol=1e-12)


@pytest.mark.parametrize("expr", ["a ** b", "pow(a, b)"])
@pytest.mark.parametrize("a, b, value, da, db", [
    (0.0, 0.0, 1.0, 0.0, 0.0),           # d/da 0^0 = 0 and d/db 0^0 = 0
    (0.0, 2.0, 0.0, 0.0, 0.0),           # d/db at a = 0, b > 0 is 0
    (0.0, 1.0, 0.0, 1.0, 0.0),
    (0.0, 0.5, 0.0, math.inf, 0.0),
    (2.0, 0.0, 1.0, 0.0, math.log(2)),
    (2.0, 3.0, 8.0, 12.0, 8 * math.log(2)),
    (-2.0, 2.0, 4.0, -4.0, math.nan),    # log of a negative base: nan, as PyTorch
    (0.0, -1.0, math.inf, -math.inf, -math.inf),
])
def test_pow_conventions(expr, a, b, value, da, db):
    r = gradcli.grad(expr, a=a, b=b)
    np.testing.assert_allclose(r.value, value, rtol=1e-12)
    np.testing.assert_allclose(_g(r, "a"), da, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(_g(r, "b"), db, rtol=1e-12, atol=1e-15)


def test_pow_conventions_elementwise():
    r = gradcli.grad("a ** b", a=[0.0, 0.0, 0.0, 3.0], b=[0.0, 1.0, 2.0, 0.0])
    np.testing.assert_allclose(r.value, [1.0, 0.0, 0.0, 1.0])
    np.testing.assert_allclose(_g(r, "a"), [0.0, 1.0, 0.0, 0.0], atol=1e-15)
    np.testing.assert_allclose(_g(r, "b"), [0.0, 0.0, 0.0, math.log(3)], atol=1e-15)


# ====================================================================== stability

def test_logsumexp_large_equal():
    r = gradcli.grad("logsumexp(x)", x=[1000.0, 1000.0])
    assert float(r.value) == pytest.approx(1000 + math.log(2), rel=1e-15)
    np.testing.assert_allclose(_g(r, "x"), [0.5, 0.5], rtol=1e-12)
    r = gradcli.grad("logsumexp(x)", x=[-1000.0, -1000.0])
    assert float(r.value) == pytest.approx(-1000 + math.log(2), rel=1e-15)
    np.testing.assert_allclose(_g(r, "x"), [0.5, 0.5], rtol=1e-12)


LARGE_ROWS = np.array([[1000.0, 1000.0, 1000.0], [-1000.0, 0.0, 1000.0]])


def test_logsumexp_rows_large_value():
    v = gradcli.evaluate("logsumexp(X)", X=LARGE_ROWS).value
    assert v.shape == (2,)
    np.testing.assert_allclose(v, [1000 + math.log(3), 1000.0], rtol=1e-15)
    s = gradcli.evaluate("softmax(X)", X=LARGE_ROWS).value
    np.testing.assert_allclose(s, [[1 / 3] * 3, [0.0, 0.0, 1.0]], rtol=1e-12, atol=1e-300)


def test_logsumexp_rows_large_gradient():
    r = gradcli.grad("sum(logsumexp(X))", X=LARGE_ROWS)
    np.testing.assert_allclose(_g(r, "X"), [[1 / 3] * 3, [0.0, 0.0, 1.0]], atol=1e-15)


def test_softmax_rows_gradient_by_hand():
    # rows [0, log 3] and [log 3, 0]: s = [1/4, 3/4] and [3/4, 1/4]; weights w = [1, 0]
    X = np.array([[0.0, math.log(3)], [math.log(3), 0.0]])
    r = gradcli.grad("sum(softmax(X) * [[1, 0], [1, 0]])", X=X)
    np.testing.assert_allclose(_g(r, "X"), [[3 / 16, -3 / 16], [3 / 16, -3 / 16]],
                               rtol=1e-12)


def test_softmax_large_inputs():
    x = [1000.0, 1001.0, 999.0]
    v = gradcli.evaluate("softmax(x)", x=x).value
    assert np.all(np.isfinite(v))
    assert float(np.sum(v)) == pytest.approx(1.0, rel=1e-12)
    want = np.exp(np.array(x) - 1001.0)
    np.testing.assert_allclose(v, want / want.sum(), rtol=1e-12)
    w = np.array([1.0, -2.0, 0.5])
    r = gradcli.grad("sum(softmax(x) * w)", x=x, w=w)
    s = want / want.sum()
    assert np.all(np.isfinite(_g(r, "x")))
    np.testing.assert_allclose(_g(r, "x"), s * (w - s @ w), rtol=1e-10, atol=1e-15)


@pytest.mark.parametrize("x, value", [(-1000.0, 0.0), (1000.0, 1.0), (-40.0, math.exp(-40))])
def test_sigmoid_saturates_without_nan(x, value):
    r = gradcli.grad("sigmoid(x)", x=x)
    assert not r.warnings or all("nan" not in w for w in r.warnings)
    assert float(r.value) == pytest.approx(value, rel=1e-12, abs=0)
    g = float(_g(r, "x"))
    assert math.isfinite(g)
    assert g == pytest.approx(value * (1 - value), rel=1e-12, abs=1e-300)


@pytest.mark.parametrize("x, value, slope", [(1000.0, 1000.0, 1.0), (-1000.0, 0.0, 0.0),
                                             (50.0, 50.0, 1.0)])
def test_softplus_extremes(x, value, slope):
    r = gradcli.grad("softplus(x)", x=x)
    assert float(r.value) == pytest.approx(value, rel=1e-12, abs=1e-300)
    assert float(_g(r, "x")) == pytest.approx(slope, rel=1e-12, abs=1e-300)


def test_logsumexp_of_all_minus_inf_is_minus_inf():
    v = gradcli.evaluate("logsumexp(x)", x=[-np.inf, -np.inf]).value
    assert float(v) == -np.inf


def test_logsumexp_row_of_minus_inf_is_minus_inf():
    X = np.array([[-np.inf, -np.inf], [0.0, 0.0]])
    v = gradcli.evaluate("logsumexp(X)", X=X).value
    assert not np.any(np.isnan(v))
    assert v[0] == -np.inf
    assert v[1] == pytest.approx(math.log(2))


def test_logsumexp_with_plus_inf_is_plus_inf():
    # as torch.logsumexp and scipy.special.logsumexp
    assert float(gradcli.evaluate("logsumexp(x)", x=[np.inf, 1.0]).value) == np.inf


def test_logsumexp_with_some_minus_inf():
    r = gradcli.grad("logsumexp(x)", x=[-np.inf, 0.0, 0.0])
    assert float(r.value) == pytest.approx(math.log(2))
    np.testing.assert_allclose(_g(r, "x"), [0.0, 0.5, 0.5], rtol=1e-12)


def test_logsumexp_minus_inf_row_leaves_other_rows_gradient():
    X = np.array([[-np.inf, -np.inf], [0.0, 0.0]])
    r = gradcli.grad("sum(logsumexp(X))", X=X)
    np.testing.assert_allclose(_g(r, "X")[1], [0.5, 0.5], rtol=1e-12)


# ====================================================================== dtype

DTYPE_PROGRAMS = [
    ("sum(tanh(W @ x + b))", ("W", (3, 4)), ("x", (4,)), ("b", (3,))),
    ("sum(softmax(W @ x) * c) + logsumexp(x)", ("W", (3, 4)), ("x", (4,)), ("c", (3,))),
    ("mean(sigmoid(x) * exp(-x) + softplus(x) / 3) + max(x) - min(x)", ("x", (2, 5))),
    ("sum(sqrt(x * x + 1) ** 1.5) + dot(x[0], x[1])", ("x", (2, 5))),
]


@pytest.mark.parametrize("program", DTYPE_PROGRAMS, ids=[p[0] for p in DTYPE_PROGRAMS])
def test_float32(program):
    expr, *specs = program
    rng = np.random.default_rng(7)
    b = {n: rng.normal(size=s) for n, s in specs}
    r64 = gradcli.grad(expr, **b)
    r32 = gradcli.grad(expr, dtype="float32", **b)
    assert r64.value.dtype == np.float64
    assert r32.value.dtype == np.float32
    np.testing.assert_allclose(r32.value, r64.value, rtol=1e-5)
    assert set(r32.gradients) == set(b)
    for n in b:
        assert r32.gradients[n].dtype == np.float32
        assert r64.gradients[n].dtype == np.float64
        np.testing.assert_allclose(r32.gradients[n], r64.gradients[n], rtol=1e-5, atol=1e-6)
    ev = gradcli.evaluate(expr, dtype="float32", **b)
    assert ev.value.dtype == np.float32


# ====================================================================== non-scalar outputs

def test_nonscalar_output_gradient_is_that_of_the_sum():
    x = np.random.default_rng(3).normal(size=(2, 3))
    r = gradcli.grad("tanh(x)", x=x)
    rs = gradcli.grad("sum(tanh(x))", x=x)
    assert r.value.shape == (2, 3)
    np.testing.assert_allclose(r.value, np.tanh(x), rtol=1e-12)
    np.testing.assert_allclose(r.gradients["x"], rs.gradients["x"], rtol=1e-12)
    np.testing.assert_allclose(r.gradients["x"], 1 - np.tanh(x) ** 2, rtol=1e-12)


def test_upstream_weights_the_output():
    rng = np.random.default_rng(4)
    x, u = rng.normal(size=(2, 3)), rng.normal(size=(2, 3))
    r = gradcli.grad("tanh(x)", x=x, upstream=u)
    rs = gradcli.grad("sum(tanh(x) * u)", x=x, u=u)
    np.testing.assert_allclose(r.gradients["x"], rs.gradients["x"], rtol=1e-12)
    r = gradcli.grad("tanh(x)", x=x, upstream=u.tolist())
    np.testing.assert_allclose(r.gradients["x"], rs.gradients["x"], rtol=1e-12)
    # a scalar output with upstream 3: three times the gradient
    r = gradcli.grad("sum(x * x)", x=x, upstream=3.0)
    np.testing.assert_allclose(r.gradients["x"], 6 * x, rtol=1e-12)


def test_upstream_of_the_wrong_shape_is_an_error():
    with pytest.raises(GradcliError):
        gradcli.grad("tanh(x)", x=np.zeros((2, 3)), upstream=np.ones((3, 2)))


def test_wrt_chooses_the_variables():
    r = gradcli.grad("x * y + z", x=2.0, y=3.0, z=1.0, wrt=["x"])
    assert set(r.gradients) == {"x"}
    assert float(r.gradients["x"]) == pytest.approx(3.0)
    r = gradcli.grad("x * y + z", x=2.0, y=3.0, z=1.0, wrt="y,z")
    assert set(r.gradients) == {"y", "z"}
    assert float(r.gradients["y"]) == pytest.approx(2.0)
    assert float(r.gradients["z"]) == pytest.approx(1.0)
    r = gradcli.grad("x * y + z", x=2.0, y=3.0, z=1.0)
    assert set(r.gradients) == {"x", "y", "z"}


# ====================================================================== independence

@pytest.mark.parametrize("expr, shapes", [
    ("x + y", {"x": (3,), "y": (3,)}),
    ("x - y", {"x": (3,), "y": (3,)}),
    ("x + y", {"x": (2, 3), "y": ()}),
    ("x + y + x", {"x": (3,), "y": (3,)}),
    ("sum(x) + sum(y)", {"x": (3,), "y": (2, 2)}),
    ("x", {"x": (3,)}),
    ("[x, y]", {"x": (), "y": ()}),
    ("x[0] + y", {"x": (3,), "y": ()}),
    ("mean(x) + max(y)", {"x": (3,), "y": (3,)}),
    ("dot(x, y)", {"x": (3,), "y": (3,)}),
])
def test_gradients_are_independent_writeable_arrays(expr, shapes):
    rng = np.random.default_rng(5)
    b = {n: rng.normal(size=s) for n, s in shapes.items()}
    before = {n: v.copy() for n, v in b.items()}
    r = gradcli.grad(expr, **b)
    value = r.value.copy()
    grads = r.gradients
    snap = {n: g.copy() for n, g in grads.items()}
    for n, g in grads.items():
        assert isinstance(g, np.ndarray) and g.flags.writeable, (expr, n)
        for m, other in grads.items():
            if m != n:
                assert not np.shares_memory(g, other), (expr, n, m)
        for m, v in b.items():
            assert not np.shares_memory(g, v), (expr, n, "binding", m)
    for n in grads:
        grads[n][...] = 123.0
        for m in grads:
            if m != n:
                np.testing.assert_array_equal(grads[m], snap[m])
        grads[n][...] = snap[n]
    for n, g in grads.items():
        g[...] = -7.0
    np.testing.assert_array_equal(r.value, value)
    for n in b:
        np.testing.assert_array_equal(b[n], before[n])
    # nothing cached by the parser or the engine was changed
    again = gradcli.grad(expr, **b)
    for n, g in snap.items():
        np.testing.assert_array_equal(again.gradients[n], g)


# ====================================================================== what check needs

def _first_case_per_key():
    seen, out = set(), []
    for c in CASES:
        for k in c.covers:
            if k not in seen:
                seen.add(k)
                out.append(c)
                break
    return out


CHECK_CASES = _first_case_per_key()


@pytest.mark.parametrize("case", _params(CHECK_CASES))
@pytest.mark.parametrize("how", ["central", "complex", "fast"])
def test_check_passes_on_every_op(case, how):
    """gradcli check (its plans, batched forwards, complex-step forwards) on every op."""
    kw = {"fast": True} if how == "fast" else {"method": how}
    r = gradcli.check(case.expr, **case.bindings, **kw)
    assert r.ok, (case.expr, how)


def _op_nodes():
    """(case, node) for the first node of every op in the cases, with its input values."""
    seen, out = set(), []
    for c in CASES:
        ev = gradcli.evaluate(c.expr, **c.bindings)
        for i in ev.order:
            node = ev.graph.nodes[i]
            if node.inputs and id(node.op) not in seen:
                seen.add(id(node.op))
                out.append(pytest.param(c, i, id=f"{node.op.name}/{node.op.arity}-{c.id}"))
    return out


@pytest.mark.parametrize("case, i", _op_nodes())
def test_batched_forward_matches_one_at_a_time(case, i):
    """op.batch: each input in turn (then all) carries a leading axis of 3 copies."""
    ev = gradcli.evaluate(case.expr, **case.bindings)
    node = ev.graph.nodes[i]
    op = node.op
    xs = [ev.values[j] for j in node.inputs]
    ndims = tuple(np.ndim(x) for x in xs)
    rng = np.random.default_rng(i)
    patterns = [tuple(k == m for k in range(len(xs))) for m in range(len(xs))]
    patterns.append(tuple(True for _ in xs))
    for flags in patterns:
        fn = op.batch(op.forward, flags, ndims, node.params) if op.batch else None
        if fn is None:
            continue
        stacks = [np.stack([x + 1e-3 * rng.normal(size=np.shape(x)) * (b + 1)
                            for b in range(3)]) if f else x for x, f in zip(xs, flags)]
        got = fn(*stacks)
        for b in range(3):
            want = op.forward(*[s[b] if f else s for s, f in zip(stacks, flags)], *node.params)
            np.testing.assert_allclose(got[b], want, rtol=1e-12, atol=1e-12,
                                       err_msg=f"{op.name} flags={flags}")


@pytest.mark.parametrize("case, i", _op_nodes())
def test_complex_step_forward_matches_the_forward_and_its_derivative(case, i):
    """op.cforward at x + ih v: the real part is the forward, imag / h the directional
    derivative (compared with central differences of the forward)."""
    ev = gradcli.evaluate(case.expr, **case.bindings)
    node = ev.graph.nodes[i]
    op = node.op
    xs = [np.asarray(ev.values[j], dtype=np.float64) for j in node.inputs]
    rng = np.random.default_rng(i)
    # no step along an input that gets no gradient (where's condition: 0 stays 0)
    vs = [rng.normal(size=np.shape(x)) * (k >= len(op.formulas) or op.formulas[k] != "0")
          for k, x in enumerate(xs)]
    h = 1e-20
    c = op.cforward(*[x + 1j * h * v for x, v in zip(xs, vs)], *node.params)
    f0 = op.forward(*xs, *node.params)
    np.testing.assert_allclose(np.real(c), f0, rtol=1e-12, atol=1e-12)
    e = 1e-6
    fd = (op.forward(*[x + e * v for x, v in zip(xs, vs)], *node.params)
          - op.forward(*[x - e * v for x, v in zip(xs, vs)], *node.params)) / (2 * e)
    np.testing.assert_allclose(np.imag(c) / h, fd, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case, i", _op_nodes())
def test_kink_side_runs_on_the_inputs(case, i):
    ev = gradcli.evaluate(case.expr, **case.bindings)
    node = ev.graph.nodes[i]
    if node.op.kink_side is None:
        return
    xs = [ev.values[j] for j in node.inputs]
    side = np.asarray(node.op.kink_side(*xs, *node.params))
    assert np.array_equal(side, np.asarray(node.op.kink_side(*xs, *node.params)))


# ====================================================================== more conventions

@pytest.mark.parametrize("expr, x, slope", [
    ("leaky_relu(x)", 0.0, 0.01),
    ("leaky_relu(x, negative_slope=0.2)", 0.0, 0.2),
    ("leaky_relu(x, 0.2)", -1.0, 0.2),
    ("elu(x)", 0.0, 1.0),
    ("elu(x, alpha=0.5)", 0.0, 0.5),
    ("elu(x, alpha=0.5)", -1.0, 0.5 * math.exp(-1)),
    ("relu6(x)", 0.0, 0.0), ("relu6(x)", 6.0, 0.0), ("relu6(x)", 3.0, 1.0),
    ("hardtanh(x)", -1.0, 0.0), ("hardtanh(x)", 1.0, 0.0), ("hardtanh(x)", 0.5, 1.0),
    ("hardtanh(x, min_val=-2, max_val=3)", 3.0, 0.0),
    ("hardtanh(x, min_val=-2, max_val=3)", 2.5, 1.0),
    ("sign(x)", 0.0, 0.0), ("floor(x)", 1.0, 0.0), ("ceil(x)", 1.0, 0.0),
    ("round(x)", 0.5, 0.0), ("step(x)", 0.0, 0.0),
    ("norm(x)", 0.0, 0.0),
    ("clip(x, -1, 1)", -1.0, 1.0), ("clip(x, -1, 1)", 1.0, 1.0), ("clip(x, -1, 1)", 2.0, 0.0),
    ("clamp(x, 0, 2)", 0.0, 1.0),
    ("(x < 1) + (x <= 1) + (x > 1) + (x >= 1) + (x == 1) + (x != 1)", 1.0, 0.0),
    ("where(x > 0, x * 3, x * 5)", 0.0, 5.0),
    ("where(x > 0, x * 3, x * 5)", 0.5, 3.0),
])
def test_more_kink_conventions(expr, x, slope):
    g = float(gradcli.grad(expr, x=x).gradients["x"])
    assert g == pytest.approx(slope, abs=1e-15)


def test_norm_at_zero_is_zero_elementwise():
    r = gradcli.grad("norm(x)", x=[0.0, 0.0, 0.0])
    np.testing.assert_array_equal(r.gradients["x"], [0.0, 0.0, 0.0])
    r = gradcli.grad("sum(norm(x, axis=1))", x=[[0.0, 0.0], [3.0, 4.0]])
    np.testing.assert_allclose(r.gradients["x"], [[0, 0], [0.6, 0.8]])


def test_clip_sends_the_gradient_to_the_active_bound():
    r = gradcli.grad("sum(clip(x, lo, hi))", x=[-2.0, -1.0, 0.0, 1.0, 2.0], lo=-1.0, hi=1.0)
    np.testing.assert_array_equal(r.gradients["x"], [0, 1, 1, 1, 0])
    assert float(r.gradients["lo"]) == 1.0 and float(r.gradients["hi"]) == 1.0
    r = gradcli.grad("clip(x, lo, hi)", x=0.5, lo=1.0, hi=0.0)  # lo > hi: hi, as PyTorch
    assert float(r.value) == 0.0 and float(r.gradients["hi"]) == 1.0
    assert float(r.gradients["x"]) == 0.0 and float(r.gradients["lo"]) == 0.0


def test_where_passes_nothing_to_the_condition_and_broadcasts():
    r = gradcli.grad("sum(where(c, a, b))", c=[1.0, 0.0, 2.0], a=5.0, b=[1.0, 2.0, 3.0])
    np.testing.assert_array_equal(r.gradients["c"], [0, 0, 0])
    assert float(r.gradients["a"]) == 2.0
    np.testing.assert_array_equal(r.gradients["b"], [0, 1, 0])


@pytest.mark.parametrize("x, grad", [
    ([2.0, 3.0, 4.0], [12.0, 8.0, 6.0]),
    ([2.0, 0.0, 4.0], [0.0, 8.0, 0.0]),    # one zero: the product of the others there
    ([0.0, 0.0, 4.0], [0.0, 0.0, 0.0]),    # two zeros: 0 everywhere
])
def test_prod_with_zeros_gives_pytorch_values(x, grad):
    r = gradcli.grad("prod(x)", x=x)
    np.testing.assert_allclose(r.gradients["x"], grad)


def test_prod_along_an_axis_with_zeros():
    r = gradcli.grad("sum(prod(x, 1))", x=[[2.0, 0.0, 4.0], [1.0, 2.0, 3.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(r.gradients["x"], [[0, 8, 0], [6, 3, 2], [0, 0, 0]])


def test_cumprod_with_zeros_gives_exact_values():
    x = np.array([2.0, 0.0, 3.0, 4.0])
    r = gradcli.grad("sum(cumprod(x, 0))", x=x)
    # out = [2, 0, 0, 0]: d/dx0 = 1, d/dx1 = 2 + 2*3 + 2*3*4 = 32, d/dx2 = d/dx3 = 0
    np.testing.assert_allclose(r.gradients["x"], [1.0, 32.0, 0.0, 0.0])


@pytest.mark.parametrize("expr, x, want", [
    ("max(x, axis=1)", [[1.0, 3.0, 3.0], [5.0, 1.0, 0.0]], [[0, 0.5, 0.5], [1, 0, 0]]),
    ("min(x, axis=0)", [[1.0, 3.0], [1.0, 0.0]], [[0.5, 0], [0.5, 1]]),
    ("max(x, axis=(0, 1))", [[2.0, 2.0], [1.0, 2.0]], [[1 / 3, 1 / 3], [0, 1 / 3]]),
    ("max(x, axis=1, keepdims=true)", [[4.0, 4.0]], [[0.5, 0.5]]),
])
def test_reductions_along_an_axis_split_ties_evenly(expr, x, want):
    np.testing.assert_allclose(gradcli.grad(expr, x=x).gradients["x"], want, rtol=1e-12)


def test_var_and_std_use_correction_one_by_default():
    x = np.array([[1.0, 2.0, 4.0], [0.0, 3.0, 3.0]])
    r = gradcli.evaluate("var(x)", x=x)
    assert float(r.value) == pytest.approx(np.var(x, ddof=1))
    r = gradcli.evaluate("std(x, 1, correction=0, keepdims=true)", x=x)
    np.testing.assert_allclose(r.value, np.std(x, axis=1, keepdims=True))


# ====================================================================== stability, values

@pytest.mark.parametrize("axis", [0, 1, -1])
def test_softmax_family_is_stable_along_any_axis(axis):
    X = np.array([[1000.0, -1000.0], [1000.0, 1000.0]])
    for name in ("softmax", "log_softmax", "logsumexp"):
        r = gradcli.grad(f"sum({name}(X, axis={axis}) * W)", X=X,
                         W=np.array([[1.0, 2.0], [3.0, 4.0]]))
        assert np.all(np.isfinite(r.value)), name
        assert np.all(np.isfinite(r.gradients["X"])), name
    r = gradcli.evaluate("logsumexp(X, axis=0)", X=X)
    np.testing.assert_allclose(r.value, [1000 + math.log(2), 1000.0])
    r = gradcli.evaluate("log_softmax(X, 1)", X=X)
    np.testing.assert_allclose(r.value, [[0.0, -2000.0], [-math.log(2), -math.log(2)]])


@pytest.mark.parametrize("x", [-6.0, -3.0, -2.9, -1.0, -1e-3, 0.0, 0.3, 2.5, 3.0, 3.1, 5.0, 27.0])
def test_erf_and_gelu_to_double_precision(x):
    assert float(gradcli.evaluate("erf(x)", x=x).value) == pytest.approx(math.erf(x),
                                                                           rel=1e-13, abs=1e-300)
    phi = 0.5 * (1 + math.erf(x / math.sqrt(2)))
    assert float(gradcli.evaluate("gelu(x)", x=x).value) == pytest.approx(x * phi, rel=1e-13,
                                                                            abs=1e-300)
    t = 0.5 * x * (1 + math.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    assert float(gradcli.evaluate('gelu(x, approximate="tanh")', x=x).value) == \
        pytest.approx(t, rel=1e-13, abs=1e-300)


def test_conv2d_matches_a_direct_loop():
    rng = np.random.default_rng(5)
    x, w, b = rng.normal(size=(2, 3, 7, 6)), rng.normal(size=(4, 3, 3, 2)), rng.normal(size=4)
    got = gradcli.evaluate("conv2d(x, w, b, stride=(2, 1), padding=1)", x=x, w=w, b=b).value
    xp = np.pad(x, [(0, 0), (0, 0), (1, 1), (1, 1)])
    H, W = (7 + 2 - 3) // 2 + 1, (6 + 2 - 2) // 1 + 1
    want = np.zeros((2, 4, H, W))
    for i in range(H):
        for j in range(W):
            patch = xp[:, :, 2 * i:2 * i + 3, j:j + 2]
            want[:, :, i, j] = np.einsum("ncpq,ocpq->no", patch, w) + b
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_conv1d_matches_numpy_correlate():
    rng = np.random.default_rng(6)
    x, w = rng.normal(size=(1, 1, 9)), rng.normal(size=(1, 1, 4))
    got = gradcli.evaluate("conv1d(x, w)", x=x, w=w).value
    np.testing.assert_allclose(got[0, 0], np.correlate(x[0, 0], w[0, 0], "valid"), rtol=1e-12)


@pytest.mark.parametrize("expr, shapes, words", [
    ("conv2d(x, w)", [(1, 3, 5, 5), (2, 2, 3, 3)], "x has 3 channels"),
    ("conv2d(x, w)", [(3, 5, 5), (2, 3, 3, 3)], "x must be (N, C, H, W)"),
    ("conv2d(x, w, b)", [(1, 3, 5, 5), (2, 3, 3, 3), (3,)], "bias must have shape (2,)"),
    ("conv1d(x, w)", [(1, 1, 2), (1, 1, 3)], "larger than"),
    ('einsum("ij,jk->ik", a, b)', [(2, 3), (4, 5)], "subscript 'j' is 3 long in operand 1"),
    ('einsum("ij,j->i", a, b)', [(2, 3), (3, 1)], "operand 2 has shape (3, 1)"),
    ('einsum("ii->i", a)', [(2, 3)], "operand 1 repeats subscript 'i' over axes of lengths 2 "
                                     "and 3 (shape (2, 3))"),
    ("sum(x, 2)", [(3, 4)], "axis 2 is out of range for shape (3, 4)"),
    ("softmax(x, axis=-3)", [(3, 4)], "axis -3 is out of range for shape (3, 4)"),
    ("reshape(x, (5, -1))", [(3, 4)], "cannot reshape shape (3, 4)"),
    ("reshape(x, (-1, -1))", [(3, 4)], "at most one -1"),
    ("transpose(x, (0, 0))", [(3, 4)], "not a permutation"),
    ("det(x)", [(3, 4)], "square matrix"),
    ("solve(a, b)", [(3, 3), (4,)], "b's length must be 3"),
    ("concat(a, b, axis=1)", [(3, 4), (2, 4)], "item 2 has shape (2, 4)"),
    ("stack(a, b)", [(3, 4), (2, 4)], "item 2 has shape (2, 4)"),
    ("x[5]", [(3,)], "does not fit shape (3,)"),
])
def test_bad_shapes_are_clear_errors_with_a_caret(expr, shapes, words):
    names = "xwb" if expr.startswith("conv") or expr[0] == "x" or expr.startswith(
        ("sum", "softmax", "reshape", "transpose", "det")) else "ab"
    rng = np.random.default_rng(0)
    b = {n: rng.normal(size=s) for n, s in zip(names, shapes)}
    with pytest.raises(gradcli.errors.EvalError) as e:
        gradcli.evaluate(expr, **b)
    assert words in str(e.value)
    assert str(e.value).splitlines()[-1].strip() == "^"


# ====================================================================== printing ops back

@pytest.mark.parametrize("program", [
    "sum(x, axis=1, keepdims=true)", "mean(x, axis=(0, 1))", "var(x, axis=0, correction=0)",
    "leaky_relu(x, negative_slope=0.2)", 'gelu(x, approximate="tanh")', "max(x, axis=1)",
    'einsum("ij,j->i", x, y)', "reshape(x, (2, -1))", "transpose(x, axes=(1, 0))",
    "x[:, None]", "x[1:, ::2]", "x[..., 0]", "concat(x, y, axis=1)", "cumsum(x, 0)",
    "conv2d(x, y, stride=2, padding=1)", "conv1d(x, y, dilation=2, groups=3)",
    "conv_transpose2d(x, y, stride=2, output_padding=1, groups=2, dilation=(1, 2))",
    "conv_transpose1d(x, y, x, stride=2, padding=1)", 'einsum("ii->i", x)', "adjugate(x)", "x < y", "where(x, y, x)", "softmax(x)",
    "clip(x, y, x)", "-x", "x @ y", "tril(x, diagonal=-1)", "unsqueeze(x, 0)",
])
def test_every_op_prints_back_to_the_same_program(program):
    g = gradcli.compile(program)
    node = g.nodes[g.output]
    text = node.op.text([g.source(j) for j in node.inputs], node.params)
    again = gradcli.compile(text)
    n2 = again.nodes[again.output]
    assert n2.op is node.op and n2.params == node.params and text.replace(" ", "") == \
        program.replace(" ", "")


# ====================================================================== rules are programs

class _Box:
    """A traced value: NumPy refuses it (so a rule that calls NumPy on a value fails), its
    arithmetic goes through the library's ops, and its shape is static."""

    __array_ufunc__ = None

    def __init__(self, v):
        self.v = np.asarray(v)

    shape = property(lambda self: self.v.shape)
    ndim = property(lambda self: self.v.ndim)
    size = property(lambda self: self.v.size)

    def __array__(self, *a, **k):
        raise TypeError("a gradient rule called NumPy on a value")

    __add__ = lambda s, o: oplib.add(s, o)
    __radd__ = lambda s, o: oplib.add(o, s)
    __sub__ = lambda s, o: oplib.sub(s, o)
    __rsub__ = lambda s, o: oplib.sub(o, s)
    __mul__ = lambda s, o: oplib.mul(s, o)
    __rmul__ = lambda s, o: oplib.mul(o, s)
    __truediv__ = lambda s, o: oplib.div(s, o)
    __rtruediv__ = lambda s, o: oplib.div(o, s)
    __pow__ = lambda s, o: oplib.pow(s, o)
    __rpow__ = lambda s, o: oplib.pow(o, s)
    __matmul__ = lambda s, o: oplib.matmul(s, o)
    __rmatmul__ = lambda s, o: oplib.matmul(o, s)
    __neg__ = lambda s: oplib.neg(s)


def _unbox(a):
    return a.v if isinstance(a, _Box) else a


def _trace(op, args):
    _trace.ops.add(op.name)
    n = len(args) - len(op.params) if op.arity is None else op.arity
    ins = [np.asarray(_unbox(a)) for a in args[:n]]
    return _Box(op.forward(*ins, *args[n:]))


def _rule_nodes():
    seen, out = set(), []
    for c in CASES:
        g = gradcli.compile(c.expr)
        for node in g.nodes:
            if node.inputs and id(node.op) not in seen:
                seen.add(id(node.op))
                out.append(pytest.param(c, node.id, id=f"{node.op.name}/{node.op.arity}"))
    return out


@pytest.mark.parametrize("case, i", _rule_nodes())
def test_every_gradient_rule_is_a_program_of_library_ops(case, i, monkeypatch):
    """Run each op's partials/VJPs on traced values: only library ops and arithmetic, and
    the same numbers as the untraced rule."""
    ev = gradcli.evaluate(case.expr, **case.bindings)
    node = ev.graph.nodes[i]
    op = node.op
    xs = [ev.values[j] for j in node.inputs]
    y = ev.values[i]
    g = np.random.default_rng(i).normal(size=np.shape(y))
    rules = op.partials if op.partials is not None else [op.vjps[k] for k in range(len(xs))]
    plain = [r if isinstance(r, int) else (r(y, *xs) if op.partials is not None
                                           else r(g, y, *xs, *node.params)) for r in rules]
    _trace.ops = set()
    monkeypatch.setattr(oplib, "tracer", _trace)
    for k, r in enumerate(rules):
        if isinstance(r, int):
            continue
        boxed = [_Box(x) for x in xs]
        got = r(_Box(y), *boxed) if op.partials is not None else \
            r(_Box(g), _Box(y), *boxed, *node.params)
        np.testing.assert_allclose(np.broadcast_to(_unbox(got), np.shape(plain[k])), plain[k],
                                   rtol=1e-12, atol=1e-12, err_msg=f"{op.name} input {k}")


@pytest.mark.parametrize("op", [op for op in oplib.BUILTINS if op.broadcast_vjps is not None],
                         ids=lambda op: op.name)
def test_every_broadcast_rule_is_sum_to_of_g_times_the_partial(op, monkeypatch):
    """An op's cheaper rule for a broadcast input (the engine's reverse pass uses it) gives
    the same numbers as the rule users see, sum_to(g * partial), and is a program of
    library ops (the tracer can follow it)."""
    rng = np.random.default_rng(3)
    full, small = (4, 3), {0: (3,), 1: (4, 1)}
    assert len(op.broadcast_vjps) == op.arity
    for k, rule in enumerate(op.broadcast_vjps):
        if rule is None:
            continue
        for shape in small.values():
            shapes = [full] * op.arity
            shapes[k] = shape
            xs = [rng.uniform(0.5, 2.0, s) for s in shapes]
            y = op.forward(*xs)
            g = rng.normal(size=np.shape(y))
            p = op.partials[k]
            want = oplib.sum_to(g * (p if isinstance(p, int) else p(y, *xs)), shape)
            got = rule(g, y, *xs)
            assert np.shape(got) == shape
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
            _trace.ops = set()
            monkeypatch.setattr(oplib, "tracer", _trace)
            boxed = rule(_Box(g), _Box(y), *[_Box(x) for x in xs])
            monkeypatch.setattr(oplib, "tracer", None)
            np.testing.assert_allclose(_unbox(boxed), want, rtol=1e-12, atol=1e-12)
            assert _trace.ops, "the rule called no library op"


@pytest.mark.parametrize("program, value", [
    ('einsum("ii->i", A)', [1.0, 5.0]), ('einsum("ii", A)', 6.0), ('einsum("ii->", A)', 6.0),
    ('einsum("ij,jj->i", A, A)', [1 * 1 + 2 * 5, 4 * 1 + 5 * 5]),
])
def test_einsum_with_a_repeated_letter_takes_the_diagonal(program, value):
    # as torch.einsum and np.einsum: A = [[1, 2], [4, 5]]
    got = gradcli.evaluate(program, A=[[1.0, 2.0], [4.0, 5.0]]).value
    np.testing.assert_allclose(got, value)


def test_einsum_output_may_not_repeat_a_letter():
    with pytest.raises(gradcli.errors.ParseError) as e:
        gradcli.compile('einsum("i->ii", a)')
    assert "the output repeats a letter ('ii')" in str(e.value)
