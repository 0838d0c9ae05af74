"""conv1d/conv2d with dilation and groups, and conv_transpose1d/2d, without PyTorch.

Forwards against direct loops written here (the definition, index by index), the
transposed convolution as the adjoint of the convolution, gradients against central
differences, the checker's batched forward against one point at a time, the clear errors,
and derivatives that `gradcli diff` prints and `gradcli eval` reads back.  The PyTorch
comparisons are in test_conv_torch.py.
"""
from __future__ import annotations

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest

import gradcli
from gradcli import ops as oplib
from conftest import cli, numeric_grad

RNG = np.random.default_rng(7)


def direct_conv(x, w, stride=1, padding=0, dilation=1, groups=1):
    """The definition, by loops: out[n, o, i...] = sum over c, k of w[o, c, k...] *
    xpad[n, g * C/G + c, i * stride + k * dilation]."""
    d = x.ndim - 2
    st, pd, dl = ((v,) * d if np.isscalar(v) else v for v in (stride, padding, dilation))
    xp = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in pd])
    n, c = x.shape[:2]
    o, cg = w.shape[:2]
    kern = w.shape[2:]
    out_sp = tuple((xp.shape[2 + i] - dl[i] * (kern[i] - 1) - 1) // st[i] + 1 for i in range(d))
    out = np.zeros((n, o) + out_sp)
    og = o // groups
    for b, oc in itertools.product(range(n), range(o)):
        grp = oc // og
        for pos in itertools.product(*map(range, out_sp)):
            total = 0.0
            for ci, ks in itertools.product(range(cg), itertools.product(*map(range, kern))):
                idx = tuple(p * s + k * a for p, s, k, a in zip(pos, st, ks, dl))
                total += w[(oc, ci) + ks] * xp[(b, grp * cg + ci) + idx]
            out[(b, oc) + pos] = total
    return out


def direct_conv_transpose(x, w, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """The definition, by loops: each input element scatters w's taps onto the output."""
    d = x.ndim - 2
    st, pd, op, dl = ((v,) * d if np.isscalar(v) else v
                      for v in (stride, padding, output_padding, dilation))
    n, cin = x.shape[:2]
    cg = cin // groups
    og = w.shape[1]
    kern = w.shape[2:]
    size = tuple((x.shape[2 + i] - 1) * st[i] - 2 * pd[i] + dl[i] * (kern[i] - 1) + op[i] + 1
                 for i in range(d))
    out = np.zeros((n, og * groups) + size)
    for b, ci in itertools.product(range(n), range(cin)):
        grp = ci // cg
        for pos in itertools.product(*(range(m) for m in x.shape[2:])):
            for oc, ks in itertools.product(range(og), itertools.product(*map(range, kern))):
                idx = tuple(p * s + k * a - q for p, s, k, a, q in zip(pos, st, ks, dl, pd))
                if all(0 <= j < m for j, m in zip(idx, size)):
                    out[(b, grp * og + oc) + idx] += x[(b, ci) + pos] * w[(ci, oc) + ks]
    return out


CONV_CASES = [
    # (d, x shape, w shape, stride, padding, dilation, groups)
    (1, (2, 4, 11), (6, 2, 3), 1, 0, 2, 2),
    (1, (1, 3, 9), (3, 1, 2), 2, 1, 3, 3),
    (1, (2, 2, 7), (4, 2, 3), 3, 2, 1, 1),
    (2, (2, 4, 7, 6), (4, 2, 3, 2), (2, 1), (1, 0), (2, 1), 2),
    (2, (1, 6, 6, 6), (6, 1, 2, 2), 1, 1, 2, 6),   # depthwise
    (2, (1, 2, 5, 5), (2, 2, 3, 3), 2, 1, 1, 1),
]


def _conv_text(d, stride, padding, dilation, groups, bias=False):
    return (f"conv{d}d(x, w{', b' if bias else ''}, stride={stride}, padding={padding}, "
            f"dilation={dilation}, groups={groups})").replace(" ", "")


@pytest.mark.parametrize("d, xs, ws, stride, padding, dilation, groups", CONV_CASES)
def test_forward_is_the_definition(d, xs, ws, stride, padding, dilation, groups):
    x, w = RNG.normal(size=xs), RNG.normal(size=ws)
    got = gradcli.evaluate(_conv_text(d, stride, padding, dilation, groups), x=x, w=w).value
    want = direct_conv(x, w, stride, padding, dilation, groups)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_groups_are_separate_convolutions_side_by_side():
    x, w = RNG.normal(size=(2, 6, 9)), RNG.normal(size=(4, 3, 3))
    whole = gradcli.evaluate("conv1d(x, w, groups=2)", x=x, w=w).value
    parts = [gradcli.evaluate("conv1d(x, w)", x=x[:, 3 * k:3 * k + 3], w=w[2 * k:2 * k + 2]).value
             for k in range(2)]
    np.testing.assert_allclose(whole, np.concatenate(parts, axis=1), rtol=1e-12)


def test_dilation_hand_value():
    # taps 2 apart: out[i] = x[i] * 1 + x[i + 2] * 10
    got = gradcli.evaluate("conv1d(x, w, dilation=2)", x=[[[1, 2, 3, 4, 5]]],
                           w=[[[1, 10]]]).value
    np.testing.assert_array_equal(got, [[[31, 42, 53]]])


CONVT_CASES = [
    # (d, x shape, w shape, stride, padding, output_padding, groups, dilation)
    (1, (2, 4, 5), (4, 3, 3), 2, 1, 1, 2, 1),
    (1, (1, 3, 4), (3, 1, 2), 3, 0, 2, 3, 2),
    (1, (2, 2, 4), (2, 3, 3), 1, 0, 0, 1, 1),
    (2, (1, 4, 3, 4), (4, 2, 2, 3), (2, 1), (0, 1), (1, 0), 2, (1, 2)),
    (2, (2, 2, 3, 3), (2, 2, 3, 3), 2, 1, 0, 1, 1),
]


@pytest.mark.parametrize("d, xs, ws, stride, padding, out_pad, groups, dilation", CONVT_CASES)
def test_conv_transpose_is_the_definition_and_the_adjoint(d, xs, ws, stride, padding, out_pad,
                                                         groups, dilation):
    x, w = RNG.normal(size=xs), RNG.normal(size=ws)
    text = (f"conv_transpose{d}d(x, w, stride={stride}, padding={padding}, "
            f"output_padding={out_pad}, groups={groups}, dilation={dilation})")
    y = gradcli.evaluate(text, x=x, w=w).value
    np.testing.assert_allclose(y, direct_conv_transpose(x, w, stride, padding, out_pad, groups,
                                                        dilation), rtol=1e-12, atol=1e-12)
    # <conv(z, w), x> = <z, conv_transpose(x, w)> for z of y's shape: the adjoint
    z = RNG.normal(size=y.shape)
    cz = gradcli.evaluate(f"conv{d}d(z, w, stride={stride}, padding={padding}, "
                          f"dilation={dilation}, groups={groups})", z=z, w=w).value
    assert cz.shape == x.shape
    np.testing.assert_allclose(np.sum(cz * x), np.sum(z * y), rtol=1e-11)


def _fd(expr, bindings):
    r = gradcli.grad(expr, bindings)
    for name, v in bindings.items():
        def f(u, name=name):
            return gradcli.evaluate(expr, {**bindings, name: u}).value
        np.testing.assert_allclose(r.gradients[name], numeric_grad(f, v, 1e-6), rtol=1e-6,
                                   atol=1e-8, err_msg=f"{expr}: d/d{name}")


@pytest.mark.parametrize("case", CONV_CASES[:4])
def test_conv_gradients_against_central_differences(case):
    d, xs, ws, stride, padding, dilation, groups = case
    x, w, b = RNG.normal(size=xs), RNG.normal(size=ws), RNG.normal(size=ws[0])
    text = _conv_text(d, stride, padding, dilation, groups, bias=True)
    out = gradcli.evaluate(text, x=x, w=w, b=b).value
    c = RNG.normal(size=out.shape)
    _fd(f"sum({text} * c)", dict(x=x, w=w, b=b, c=c))


@pytest.mark.parametrize("case", CONVT_CASES[:4])
def test_conv_transpose_gradients_against_central_differences(case):
    d, xs, ws, stride, padding, out_pad, groups, dilation = case
    x, w = RNG.normal(size=xs), RNG.normal(size=ws)
    b = RNG.normal(size=ws[1] * groups)
    text = (f"conv_transpose{d}d(x, w, b, stride={stride}, padding={padding}, "
            f"output_padding={out_pad}, groups={groups}, dilation={dilation})")
    out = gradcli.evaluate(text, x=x, w=w, b=b).value
    _fd(f"sum({text} * c)", dict(x=x, w=w, b=b, c=RNG.normal(size=out.shape)))


def test_second_derivatives_through_conv_and_its_transpose():
    # the gradient rules are convolutions, so the Hessian-vector product is exact: compare
    # it with central differences of the gradient along v
    x, w = RNG.normal(size=(1, 4, 7)), RNG.normal(size=(2, 2, 3))
    prog = "sum(tanh(conv1d(x, w, stride=2, padding=1, dilation=2, groups=2)))"
    v = {"x": RNG.normal(size=x.shape), "w": RNG.normal(size=w.shape)}
    h = gradcli.hessian(prog, dict(x=x, w=w), vector=v)
    eps = 1e-5
    plus = gradcli.grad(prog, x=x + eps * v["x"], w=w + eps * v["w"]).gradients
    minus = gradcli.grad(prog, x=x - eps * v["x"], w=w - eps * v["w"]).gradients
    for n in ("x", "w"):
        np.testing.assert_allclose(h.product[n], (plus[n] - minus[n]) / (2 * eps), rtol=1e-6,
                                   atol=1e-8)


@pytest.mark.parametrize("program", [
    "sum(conv1d(x, w, b, stride=2, padding=1, dilation=2, groups=2)**2)",
    "sum(conv_transpose1d(x, w, stride=2, output_padding=1, groups=2) * x2)",
])
def test_check_passes(program):
    b = {"x": RNG.normal(size=(2, 4, 6)), "w": RNG.normal(size=(4, 2, 3)),
         "b": RNG.normal(size=4)}
    b["x2"] = RNG.normal(size=(2, 4, 14))  # conv_transpose1d's output: (6 - 1) * 2 + 3 + 1
    args = [f"{k}={json.dumps(np.asarray(v).tolist())}" for k, v in b.items()
            if k in gradcli.compile(program).variables]
    r = cli("check", program, *args)
    assert r.code == 0, r.out + r.err
    assert "fail" not in r.out


@pytest.mark.parametrize("op_name, arity", [("conv1d", 3), ("conv2d", 2),
                                            ("conv_transpose1d", 2), ("conv_transpose2d", 3)])
def test_batched_forward_is_the_forward_point_by_point(op_name, arity):
    op = oplib.CALLABLE[(op_name, arity)]
    d = 1 if "1d" in op_name else 2
    sp = (5,) if d == 1 else (4, 5)
    k = (2,) if d == 1 else (2, 2)
    transposed = "transpose" in op_name
    x = RNG.normal(size=(3, 2, 4) + sp)                       # a batch of 3 points
    w = RNG.normal(size=(3,) + ((4, 3) if transposed else (6, 2)) + k)
    b = RNG.normal(size=(3, 6))
    params = (2, 1, 1, 2, 1) if transposed else (2, 1, 2, 2)
    for flags in itertools.product((True, False), repeat=arity):
        if not any(flags):
            continue
        xs = [v if f else v[0] for v, f in zip((x, w, b), flags)]
        run = op.batch(op.forward, flags, [np.ndim(v) - f for v, f in zip(xs, flags)], params)
        got = run(*xs)
        want = np.stack([op.forward(*[v[i] if f else v for v, f in zip(xs, flags)], *params)
                         for i in range(3)])
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=str(flags))


def test_complex_step_forward_gives_the_derivative():
    op = oplib.CALLABLE[("conv2d", 2)]
    x, w = RNG.normal(size=(1, 2, 4, 4)), RNG.normal(size=(2, 1, 2, 2))
    dx = RNG.normal(size=x.shape)
    h = 1e-20
    out = op.cforward(x + 1j * h * dx, w, 1, 0, 2, 2)
    want = op.forward(dx, w, 1, 0, 2, 2)  # linear in x
    np.testing.assert_allclose(out.imag / h, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("program, shapes, words", [
    ("conv2d(x, w, groups=2)", [(1, 3, 5, 5), (2, 1, 3, 3)],
     "x has 3 channels (shape (1, 3, 5, 5)), not divisible by groups=2"),
    ("conv1d(x, w, groups=2)", [(1, 4, 5), (3, 2, 3)],
     "w has 3 out channels (shape (3, 2, 3)), not divisible by groups=2"),
    ("conv1d(x, w, groups=2)", [(1, 4, 5), (2, 1, 3)],
     "x has 4 channels (shape (1, 4, 5)) but w expects 1 per group, times groups=2 makes 2 "
     "(shape (2, 1, 3))"),
    ("conv1d(x, w, dilation=3)", [(1, 1, 6), (1, 1, 3)],
     "the kernel (3,) (w shape (1, 1, 3)) dilated by (3,) spans (7,), is larger than the "
     "(padded) input's spatial size (6,) (x shape (1, 1, 6), padding (0,))"),
    ("conv2d(x, w, padding=1)", [(1, 1, 2, 2), (1, 1, 5, 3)],
     "the kernel (5, 3) (w shape (1, 1, 5, 3)) is larger than the (padded) input's spatial "
     "size (4, 4)"),
    ("conv1d(x, w, dilation=0)", [(1, 1, 6), (1, 1, 3)], "dilation must be >= 1"),
    ("conv1d(x, w, dilation=(1, 2))", [(1, 1, 6), (1, 1, 3)],
     "conv1d's dilation takes one number or 1 of them"),
    ("conv1d(x, w, groups=0)", [(1, 1, 6), (1, 1, 3)], "groups must be a whole number >= 1"),
    ("conv_transpose1d(x, w, stride=2, output_padding=2)", [(1, 2, 4), (2, 1, 3)],
     "output_padding (2,) must be smaller than the stride (2,) or the dilation (1,)"),
    ("conv_transpose1d(x, w)", [(1, 2, 4), (3, 1, 3)],
     "x has 2 channels (shape (1, 2, 4)) but w (shape (3, 1, 3)) takes 3"),
    ("conv_transpose1d(x, w, padding=3)", [(1, 1, 2), (1, 1, 2)],
     "the output would have spatial size (-3,)"),
])
def test_bad_shapes_are_one_clear_error(program, shapes, words):
    args = [f"{n}={json.dumps(RNG.normal(size=s).tolist())}" for n, s in zip("xw", shapes)]
    r = cli("eval", program, *args)
    assert r.code == 2
    assert r.err.startswith("error: ") and words in r.err, r.err
    assert "Traceback" not in r.err
    # the same from a real process
    p = subprocess.run([sys.executable, "-m", "gradcli", "eval", program, *args],
                       capture_output=True, text=True)
    assert p.returncode == 2 and words in p.stderr and "Traceback" not in p.stderr


def test_diff_prints_conv_gradients_as_conv_transpose_and_conv():
    r = cli("diff", "sum(conv1d(x, w))", "x=[[[1,2,3,4]]]", "w=[[[1,2]]]")
    assert r.code == 0 and r.err == "", r.err
    assert r.out.splitlines()[:3] == [
        "t1 = [[[1, 1, 1]]]",
        "d/dx = conv_transpose1d(t1, w)",
        "d/dw = transpose(conv1d(transpose(x, axes=(1, 0, 2)), t1), axes=(1, 0, 2))"]
    # and gradcli eval reads each back to grad's numbers (hand: dx = [1, 3, 3, 2], dw = [6, 9])
    d = gradcli.diff("sum(conv1d(x, w))", dict(x=[[[1, 2, 3, 4]]], w=[[[1, 2]]]))
    for name, want in (("x", [[[1, 3, 3, 2]]]), ("w", [[[6, 9]]])):
        got = gradcli.evaluate(d.text[name], x=[[[1, 2, 3, 4]]], w=[[[1, 2]]]).value
        np.testing.assert_allclose(got, want)


@pytest.mark.parametrize("program, bindings", [
    ("sum(tanh(conv1d(x, w, dilation=2, groups=2)))",
     ["x=[[[0.1,0.5,-0.3,0.2,0.9],[0.3,-0.2,0.4,0.1,-0.5]]]", "w=[[[0.5,-0.2]],[[0.3,0.7]]]"]),
    ("sum(sin(conv_transpose1d(x, w, stride=2, output_padding=1)))",
     ["x=[[[0.1,0.5,-0.3]]]", "w=[[[0.5,-0.2]]]"]),
])
def test_second_derivatives_pass_check_order_2(program, bindings):
    r = cli("check", "--order", "2", program, *bindings)
    assert r.code == 0, r.out + r.err
    assert "PASS" in r.out


@pytest.mark.parametrize("k, dilation", [(3, 1), (2, 1), (4, 1), (2, 3), (3, 2)])
def test_padding_same_keeps_the_size_with_the_odd_zero_at_the_end(k, dilation):
    x, w = RNG.normal(size=(2, 2, 7)), RNG.normal(size=(3, 2, k))
    got = gradcli.evaluate(f'conv1d(x, w, padding="same", dilation={dilation})', x=x, w=w).value
    total = dilation * (k - 1)
    xp = np.pad(x, [(0, 0), (0, 0), (total // 2, total - total // 2)])  # PyTorch's split
    np.testing.assert_allclose(got, direct_conv(xp, w, dilation=dilation), rtol=1e-12)
    assert got.shape == (2, 3, 7)
    valid = gradcli.evaluate('conv1d(x, w, padding="valid")', x=x, w=w).value
    np.testing.assert_allclose(valid, direct_conv(x, w), rtol=1e-12)
    _fd(f'sum(conv1d(x, w, padding="same", dilation={dilation}) * c)',
        dict(x=x, w=w, c=RNG.normal(size=got.shape)))


@pytest.mark.parametrize("program, words", [
    ('conv1d(x, w, stride=2, padding="same")', 'padding="same" needs stride 1, got stride (2,)'),
    ('conv1d(x, w, padding="full")', 'a whole number, a tuple of them, "same" or "valid", '
                                     'not "full"'),
])
def test_padding_strings_are_checked(program, words):
    r = cli("eval", program, "x=[[[1,2,3,4]]]", "w=[[[1,2]]]")
    assert r.code == 2 and words in r.err, r.err
