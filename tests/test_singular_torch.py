"""det's gradient at singular and near-singular matrices, and inv's refusal, against PyTorch.

Marked ``torch`` (CI: ``python -m pytest -m torch``; uncollected without torch).  Near a
singular matrix gradcli's det gradient equals torch.linalg.det's backward; *at* an exactly
singular matrix torch 2.13 returns zeros (its LU-based rule gives up there), while gradcli
returns the cofactor matrix, the limit of torch's own gradients from nearby matrices (det is
a polynomial, so that limit is its derivative).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import gradcli

pytestmark = pytest.mark.torch

SINGULAR = [[[1.0, 2.0], [2.0, 4.0]],
            [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]],
            [[2.0, 0, 1, 3], [1, 1, 0, 2], [3, 1, 1, 5], [0, 1, 4, 1]]]


def _torch_det_grad(a):
    t = torch.tensor(a, dtype=torch.float64, requires_grad=True)
    torch.linalg.det(t).backward()
    return t.grad.numpy()


@pytest.mark.parametrize("a", SINGULAR)
@pytest.mark.parametrize("eps", [1e-3, 1e-7, 1e-10])
def test_near_singular_det_gradient_equals_torch(a, eps):
    a = np.array(a)
    b = a.copy()
    b[-1, -1] += eps
    np.testing.assert_allclose(gradcli.grad("det(A)", A=b).gradients["A"], _torch_det_grad(b),
                               rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("a", SINGULAR)
def test_at_a_singular_matrix_gradcli_gives_the_limit_of_torchs_gradient(a):
    a = np.array(a)
    got = gradcli.grad("det(A)", A=a).gradients["A"]
    b = a.copy()
    b[-1, -1] += 1e-10
    np.testing.assert_allclose(got, _torch_det_grad(b), rtol=1e-6, atol=1e-8)
    assert np.abs(got).max() > 0.5  # not torch's zeros at the singular point itself


def test_adjugate_equals_det_times_inv_in_torch():
    a = np.random.default_rng(2).normal(size=(2, 4, 4))
    t = torch.tensor(a)
    want = (torch.linalg.det(t)[..., None, None] * torch.linalg.inv(t)).numpy()
    np.testing.assert_allclose(gradcli.evaluate("adjugate(A)", A=a).value, want, atol=1e-12)


def test_inv_of_a_singular_matrix_is_refused_by_both():
    a = SINGULAR[0]
    with pytest.raises(RuntimeError, match="singular"):
        torch.linalg.inv(torch.tensor(a))
    with pytest.raises(gradcli.errors.EvalError, match="singular"):
        gradcli.evaluate("inv(A)", A=a)
