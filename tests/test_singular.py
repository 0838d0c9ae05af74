"""det, adjugate, inv and solve at singular and near-singular matrices (no PyTorch).

det's gradient is the cofactor matrix transpose(adjugate(A)): det(A) * transpose(inv(A))
where A is invertible and its (finite) limit where it is not.  Checked against cofactors
computed by hand (minors), central differences (det is a polynomial: smooth everywhere),
the second derivatives of a 2 x 2 determinant, and the checker.  inv and solve at a
singular matrix are one clear error, never a traceback.  PyTorch: test_singular_torch.py.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import gradcli
from conftest import cli, numeric_grad


def cofactors(a):
    """C[i, j] = (-1)^(i + j) det(a without row i and column j): the definition."""
    a = np.asarray(a, dtype=float)
    n = a.shape[0]
    c = np.empty_like(a)
    for i in range(n):
        for j in range(n):
            minor = np.delete(np.delete(a, i, 0), j, 1)
            c[i, j] = (-1) ** (i + j) * (np.linalg.det(minor) if n > 1 else 1.0)
    return c


SINGULAR = {
    "2x2 rank 1": [[1.0, 2.0], [2.0, 4.0]],
    "3x3 rank 2": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]],
    "3x3 rank 1": [[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [-1.0, -2.0, -3.0]],
    "zero 3x3": [[0.0] * 3] * 3,
    "4x4 rank 3": [[2.0, 0, 1, 3], [1, 1, 0, 2], [3, 1, 1, 5], [0, 1, 4, 1]],
}


@pytest.mark.parametrize("name", SINGULAR)
def test_det_gradient_at_singular_matrices_is_the_cofactor_matrix(name):
    a = np.array(SINGULAR[name])
    r = gradcli.grad("det(A)", A=a)
    assert np.all(np.isfinite(r.gradients["A"]))
    np.testing.assert_allclose(r.gradients["A"], cofactors(a), atol=1e-12)
    num = numeric_grad(lambda v: gradcli.evaluate("det(A)", A=v).value, a, 1e-6)
    np.testing.assert_allclose(r.gradients["A"], num, atol=1e-8)


def test_the_cli_prints_the_cofactors_of_the_singular_example():
    r = cli("grad", "--format", "json", "det(A)", "A=[[1,2],[2,4]]")
    assert r.code == 0, r.err
    np.testing.assert_allclose(json.loads(r.out)["gradients"]["A"], [[4, -2], [-2, 1]])
    p = subprocess.run([sys.executable, "-m", "gradcli", "grad", "det(A)", "A=[[1,2],[2,4]]"],
                       capture_output=True, text=True)
    assert p.returncode == 0 and "Singular" not in p.stderr, p.stderr


@pytest.mark.parametrize("eps", [1e-4, 1e-8, 1e-12])
def test_near_singular_matrices_keep_full_accuracy(eps):
    a = np.array(SINGULAR["3x3 rank 2"])
    a[2, 2] += eps
    got = gradcli.grad("det(A)", A=a).gradients["A"]
    # the cofactors by minors are exact to rounding (2 x 2 determinants of small integers)
    np.testing.assert_allclose(got, cofactors(a), rtol=1e-10, atol=1e-10)


def test_a_stack_with_one_singular_matrix():
    t = np.array([SINGULAR["2x2 rank 1"], [[2.0, 1.0], [0.5, 3.0]]])
    c = np.array([1.5, -0.5])
    g = gradcli.grad("sum(det(T) * c)", T=t, c=c).gradients
    np.testing.assert_allclose(g["T"], c[:, None, None] * np.array([cofactors(m) for m in t]),
                               atol=1e-12)
    np.testing.assert_allclose(g["c"], np.linalg.det(t), atol=1e-12)


def test_adjugate_is_det_times_inv_and_finite_where_inv_is_not():
    rng = np.random.default_rng(3)
    for n in (1, 2, 3, 5):
        a = rng.normal(size=(n, n))
        got = gradcli.evaluate("adjugate(A)", A=a).value
        np.testing.assert_allclose(got, np.linalg.det(a) * np.linalg.inv(a), atol=1e-12)
    for name, a in SINGULAR.items():
        got = gradcli.evaluate("adjugate(A)", A=a).value
        np.testing.assert_allclose(got, cofactors(a).T, atol=1e-12, err_msg=name)
    np.testing.assert_array_equal(gradcli.evaluate("adjugate(A)", A=[[5.0]]).value, [[1.0]])


def test_adjugate_gradient_against_central_differences():
    rng = np.random.default_rng(4)
    for shape in [(3, 3), (2, 4, 4), (2, 2)]:
        a, c = rng.normal(size=shape), rng.normal(size=shape)
        r = gradcli.grad("sum(adjugate(A) * C)", A=a, C=c).gradients["A"]
        num = numeric_grad(lambda v: gradcli.evaluate("sum(adjugate(A) * C)", A=v, C=c).value,
                           a, 1e-6)
        np.testing.assert_allclose(r, num, rtol=1e-6, atol=1e-8)


def test_second_derivatives_of_a_singular_2x2_determinant():
    # det = a d - b c: d2/da dd = 1, d2/db dc = -1, everything else 0, at any point
    h = gradcli.hessian("det(A)", A=[[1.0, 2.0], [2.0, 4.0]])
    want = np.zeros((4, 4))
    want[0, 3] = want[3, 0] = 1
    want[1, 2] = want[2, 1] = -1
    np.testing.assert_allclose(h.matrix, want, atol=1e-12)


def test_check_passes_at_a_singular_matrix():
    r = cli("check", "det(A) * sum(A)", "A=[[1,2,3],[4,5,6],[7,8,9]]")
    assert r.code == 0, r.out + r.err


@pytest.mark.parametrize("cmd, program, binding", [
    ("eval", "sum(inv(A))", "A=[[1,2],[2,4]]"),
    ("grad", "sum(inv(A))", "A=[[1,2],[2,4]]"),
    ("eval", "sum(solve(A, x))", "A=[[1,2],[2,4]]"),
    ("eval", "sum(inv(T))", "T=[[[1,0],[0,1]],[[0,0],[0,0]]]"),
])
def test_inv_and_solve_at_a_singular_matrix_are_one_clear_error(cmd, program, binding):
    extra = ["x=[1,1]"] if "solve" in program else []
    r = cli(cmd, program, binding, *extra)
    assert r.code == 2
    lines = r.err.strip().splitlines()
    assert lines[0].startswith("error: ") and "singular" in lines[0]
    want = "a matrix of the stack is singular (shape (2, 2, 2))" if "T=" in binding else \
        "the matrix is singular (shape (2, 2))"
    assert want in lines[0], lines[0]
    p = subprocess.run([sys.executable, "-m", "gradcli", cmd, program, binding, *extra],
                       capture_output=True, text=True)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "singular" in p.stderr


def _levi_civita():
    e = np.zeros((3, 3, 3))
    for (i, j, k), s in {(0, 1, 2): 1, (1, 2, 0): 1, (2, 0, 1): 1, (0, 2, 1): -1,
                         (2, 1, 0): -1, (1, 0, 2): -1}.items():
        e[i, j, k] = s
    return e


@pytest.mark.parametrize("name", ["3x3 rank 2", "3x3 rank 1", "zero 3x3"])
def test_second_derivatives_of_a_singular_3x3_determinant(name):
    # det = sum eps_ikm eps_jln A_ij A_kl A_mn / 6, so d2 det / dA_ij dA_kl =
    # sum_mn eps_ikm eps_jln A_mn: finite (linear in A) at singular matrices too
    a = np.array(SINGULAR[name])
    e = _levi_civita()
    want = np.einsum("ikm,jln,mn->ijkl", e, e, a).reshape(9, 9)
    h = gradcli.hessian("det(A)", A=a)
    np.testing.assert_allclose(h.matrix, want, atol=1e-12)


def test_adjugate_gradient_at_singular_matrices_against_central_differences():
    rng = np.random.default_rng(6)
    for name in ("3x3 rank 2", "3x3 rank 1", "4x4 rank 3"):
        a = np.array(SINGULAR[name])
        c = rng.normal(size=a.shape)
        r = gradcli.grad("sum(adjugate(A) * C)", A=a, C=c).gradients["A"]
        assert np.all(np.isfinite(r))
        num = numeric_grad(lambda v: gradcli.evaluate("sum(adjugate(A) * C)", A=v, C=c).value,
                           a, 1e-6)
        np.testing.assert_allclose(r, num, rtol=1e-6, atol=1e-7, err_msg=name)
