"""einsum with a letter repeated in one operand (a diagonal) against torch.einsum.

Marked ``torch`` (CI: ``python -m pytest -m torch``; uncollected without torch): values and
gradients of every operand equal torch.autograd's.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import gradcli

pytestmark = pytest.mark.torch


@pytest.mark.parametrize("subscripts, shapes", [
    ("ii->i", [(4, 4)]), ("ii", [(4, 4)]), ("ii->", [(3, 3)]), ("iij->j", [(3, 3, 2)]),
    ("jii->ij", [(2, 3, 3)]), ("ij,jj->i", [(2, 3), (3, 3)]), ("ii,i", [(3, 3), (3,)]),
    ("...ii->...i", [(2, 3, 3)]), ("iji->j", [(3, 2, 3)]), ("iijj->ij", [(2, 2, 3, 3)]),
    ("bii,bi->b", [(2, 3, 3), (2, 3)]),
])
def test_repeated_letters_equal_torch(subscripts, shapes):
    rng = np.random.default_rng(len(subscripts))
    xs = [rng.normal(size=s) for s in shapes]
    names = "ABCD"[:len(xs)]
    ts = [torch.tensor(x, requires_grad=True) for x in xs]
    out = torch.einsum(subscripts, *ts)
    c = rng.normal(size=tuple(out.shape))
    (out * torch.tensor(c)).sum().backward()
    prog = f'sum(einsum("{subscripts}", {", ".join(names)}) * c)'
    b = dict(zip(names, xs), c=c)
    r = gradcli.grad(prog, b)
    np.testing.assert_allclose(r.value, float((out * torch.tensor(c)).sum()), rtol=1e-12)
    for n, t in zip(names, ts):
        np.testing.assert_allclose(r.gradients[n], t.grad.numpy(), rtol=1e-12, atol=1e-12)
