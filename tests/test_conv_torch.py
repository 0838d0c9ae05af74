"""conv1d/conv2d (stride, padding, dilation, groups) and conv_transpose1d/2d against PyTorch.

Marked ``torch``: CI runs it with ``python -m pytest -m torch`` where torch is installed
(/work/torchvenv here); without torch the module is left uncollected (tests/conftest.py).
Values and every gradient (x, w, b) equal torch.autograd's to 1e-10, over a grid of
settings; gradcli's forward refuses what PyTorch refuses.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gradcli

pytestmark = [pytest.mark.torch,
              pytest.mark.filterwarnings("ignore:Using padding='same'")]  # torch's own note

RNG = np.random.default_rng(11)


def _torch_grads(fn, values, c):
    ts = [torch.tensor(v, requires_grad=True) for v in values]
    out = fn(*ts)
    (out * torch.tensor(c)).sum().backward()
    return out.detach().numpy(), [t.grad.numpy() for t in ts]


CONV = [(d, s, p, a, g) for d in (1, 2) for s, p, a, g in
        itertools.product((1, 2, 3), (0, 2), (1, 2), (1, 2, 4))]


@pytest.mark.parametrize("d, stride, padding, dilation, groups", CONV)
def test_conv_equals_torch(d, stride, padding, dilation, groups):
    sp, k = ((10,), (3,)) if d == 1 else ((8, 7), (3, 2))
    x, w = RNG.normal(size=(2, 4) + sp), RNG.normal(size=(8, 4 // groups) + k)
    b = RNG.normal(size=8)
    fn = getattr(F, f"conv{d}d")
    ref, _ = _torch_grads(lambda *t: fn(*t, stride, padding, dilation, groups), (x, w, b),
                          0.0)
    c = RNG.normal(size=ref.shape)
    ref, grads = _torch_grads(lambda *t: fn(*t, stride, padding, dilation, groups),
                              (x, w, b), c)
    text = f"conv{d}d(x, w, b, {stride}, {padding}, {dilation}, {groups})"
    r = gradcli.grad(f"sum({text} * c)", x=x, w=w, b=b, c=c)
    np.testing.assert_allclose(gradcli.evaluate(text, x=x, w=w, b=b).value, ref, atol=1e-10)
    for name, want in zip("xwb", grads):
        np.testing.assert_allclose(r.gradients[name], want, rtol=1e-10, atol=1e-10,
                                   err_msg=f"{text}: d/d{name}")


@pytest.mark.parametrize("d, padding, dilation, groups, k", [
    (d, p, a, g, k) for d in (1, 2) for p in ("same", "valid") for a in (1, 2, 3)
    for g in (1, 2) for k in (2, 3, 4) if a * (k - 1) < 8])  # the dilated kernel fits
def test_padding_same_and_valid_equal_torch(d, padding, dilation, groups, k):
    sp, kk = ((11,), (k,)) if d == 1 else ((9, 8), (k, 2))
    x, w = RNG.normal(size=(2, 4) + sp), RNG.normal(size=(4, 4 // groups) + kk)
    b = RNG.normal(size=4)
    fn = getattr(F, f"conv{d}d")
    ref, _ = _torch_grads(lambda *t: fn(*t, 1, padding, dilation, groups), (x, w, b), 0.0)
    c = RNG.normal(size=ref.shape)
    ref, grads = _torch_grads(lambda *t: fn(*t, 1, padding, dilation, groups), (x, w, b), c)
    text = f'conv{d}d(x, w, b, padding="{padding}", dilation={dilation}, groups={groups})'
    np.testing.assert_allclose(gradcli.evaluate(text, x=x, w=w, b=b).value, ref, atol=1e-10)
    r = gradcli.grad(f"sum({text} * c)", x=x, w=w, b=b, c=c)
    for name, want in zip("xwb", grads):
        np.testing.assert_allclose(r.gradients[name], want, rtol=1e-10, atol=1e-10,
                                   err_msg=f"{text}: d/d{name}")


CONVT = [(d, s, p, o, g, a) for d in (1, 2) for s, p, o, g, a in
         itertools.product((1, 2, 3), (0, 1), (0, 1, 2), (1, 2), (1, 3)) if o < max(s, a)]


@pytest.mark.parametrize("d, stride, padding, out_pad, groups, dilation", CONVT)
def test_conv_transpose_equals_torch(d, stride, padding, out_pad, groups, dilation):
    sp, k = ((5,), (3,)) if d == 1 else ((4, 3), (2, 3))
    x, w = RNG.normal(size=(2, 4) + sp), RNG.normal(size=(4, 6 // groups) + k)
    b = RNG.normal(size=6)
    fn = getattr(F, f"conv_transpose{d}d")

    def call(*t):
        return fn(*t, stride, padding, out_pad, groups, dilation)
    ref, _ = _torch_grads(call, (x, w, b), 0.0)
    c = RNG.normal(size=ref.shape)
    ref, grads = _torch_grads(call, (x, w, b), c)
    text = (f"conv_transpose{d}d(x, w, b, stride={stride}, padding={padding}, "
            f"output_padding={out_pad}, groups={groups}, dilation={dilation})")
    np.testing.assert_allclose(gradcli.evaluate(text, x=x, w=w, b=b).value, ref, atol=1e-10)
    r = gradcli.grad(f"sum({text} * c)", x=x, w=w, b=b, c=c)
    for name, want in zip("xwb", grads):
        np.testing.assert_allclose(r.gradients[name], want, rtol=1e-10, atol=1e-10,
                                   err_msg=f"{text}: d/d{name}")


@pytest.mark.parametrize("text, xs, ws", [
    ("conv1d(x, w, groups=2)", (1, 3, 6), (2, 1, 2)),           # channels not divisible
    ("conv1d(x, w, groups=2)", (1, 4, 6), (3, 2, 2)),           # out channels not divisible
    ("conv1d(x, w, dilation=3)", (1, 1, 6), (1, 1, 3)),         # dilated kernel too large
    ("conv2d(x, w, padding=1)", (1, 1, 2, 2), (1, 1, 5, 3)),    # kernel larger than padded
    ("conv_transpose1d(x, w, stride=2, output_padding=2)", (1, 2, 4), (2, 1, 3)),
])
def test_what_torch_refuses_gradcli_refuses(text, xs, ws):
    x, w = RNG.normal(size=xs), RNG.normal(size=ws)
    kw = dict(part.split("=") for part in text[text.index("w") + 3:-1].split(", ") if part)
    fn = getattr(F, text[:text.index("(")])
    with pytest.raises(RuntimeError):
        fn(torch.tensor(x), torch.tensor(w), **{k: int(v) for k, v in kw.items()})
    with pytest.raises(gradcli.errors.EvalError):
        gradcli.evaluate(text, x=x, w=w)


def test_diff_text_of_a_grouped_dilated_conv_evaluates_to_torch_gradients():
    x, w = RNG.normal(size=(2, 4, 6, 5)), RNG.normal(size=(4, 2, 2, 3))
    prog = "sum(tanh(conv2d(x, w, stride=(2, 1), padding=1, dilation=(1, 2), groups=2)))"
    d = gradcli.diff(prog, x=x, w=w)
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    torch.tanh(F.conv2d(xt, wt, None, (2, 1), 1, (1, 2), 2)).sum().backward()
    for name, t in (("x", xt), ("w", wt)):
        got = gradcli.evaluate(d.text[name], x=x, w=w).value
        np.testing.assert_allclose(got, t.grad.numpy(), rtol=1e-10, atol=1e-10)
