"""gradcli hessian: second derivatives by differentiating the symbolic backward pass.

Checked against Hessians derived by hand and against central differences of `grad` (the
engine's numbers, computed independently of the symbolic graph).
"""
import json

import numpy as np
import pytest

import gradcli
from gradcli import engine, symbolic
from conftest import bad, cli


def fd_hessian(program, bindings, wrt, h=1e-5):
    """Central differences of grad: column k is (g(x + h e_k) - g(x - h e_k)) / 2h."""
    base = {k: np.array(v, dtype=np.float64) for k, v in bindings.items()}
    sizes = [base[n].size for n in wrt]
    n = sum(sizes)
    cols = []
    for k in range(n):
        which = int(np.searchsorted(np.cumsum(sizes), k, side="right"))
        off = k - sum(sizes[:which])
        pair = []
        for sign in (1, -1):
            b = {name: v.copy() for name, v in base.items()}
            b[wrt[which]].reshape(-1)[off] += sign * h
            g = gradcli.grad(program, b, wrt=wrt).gradients
            pair.append(np.concatenate([np.reshape(g[w], -1) for w in wrt]))
        cols.append((pair[0] - pair[1]) / (2 * h))
    return np.array(cols).T


def test_x2y_by_hand():
    h = gradcli.hessian("x**2*y", x=1.0, y=2.0)
    # d2/dx2 = 2y, d2/dxdy = 2x, d2/dy2 = 0
    np.testing.assert_allclose(h.matrix, [[4.0, 2.0], [2.0, 0.0]], rtol=1e-12)
    assert h.asymmetry == 0.0


def test_rosenbrock_at_its_minimum():
    h = gradcli.hessian("(1 - x)**2 + 100*(y - x**2)**2", x=1.0, y=1.0)
    np.testing.assert_allclose(h.matrix, [[802.0, -400.0], [-400.0, 200.0]], rtol=1e-12)


def test_sum_tanh_Wx_by_hand():
    rng = np.random.default_rng(3)
    W, x = rng.normal(size=(3, 2)), rng.normal(size=2)
    h = gradcli.hessian("sum(tanh(W @ x))", W=W, x=x)
    u = W @ x
    t = np.tanh(u)
    d1, d2 = 1 - t**2, -2 * t * (1 - t**2)  # tanh' and tanh''
    n = W.size + x.size
    want = np.zeros((n, n))
    # f = sum_i tanh(u_i), u_i = sum_j W_ij x_j
    for i in range(3):
        for j in range(2):
            a = i * 2 + j
            for k in range(3):
                for l in range(2):  # noqa: E741
                    if i == k:
                        want[a, k * 2 + l] = d2[i] * x[j] * x[l]
            for l in range(2):  # noqa: E741  d2f / dW_ij dx_l
                v = d2[i] * x[j] * W[i, l] + d1[i] * (j == l)
                want[a, W.size + l] = want[W.size + l, a] = v
    for j in range(2):
        for l in range(2):  # noqa: E741
            want[W.size + j, W.size + l] = np.sum(d2 * W[:, j] * W[:, l])
    np.testing.assert_allclose(h.matrix, want, rtol=1e-10, atol=1e-14)
    assert [v[0] for v in h.variables] == ["W", "x"]


@pytest.mark.parametrize("program, bindings", [
    ("sum(softmax(x)*y) + norm(x)**3", dict(x=[0.3, -0.2, 0.9], y=[1.0, 2.0, -1.0])),
    ("logsumexp(W @ x) + sum(sigmoid(x)*x)", dict(W=[[1.0, 0.5], [-0.3, 2.0]], x=[0.4, -0.7])),
    ("a = sin(a)*y + a\na = sin(a)*y + a\na", dict(a=0.7, y=0.3)),
    ("x / (1 + y**2) + exp(x*y) - sqrt(x)", dict(x=0.8, y=-0.6)),
    ("det(S) + sum(inv(S))", dict(S=[[2.0, 0.3], [0.1, 1.5]])),
    ("sum(prod(M, 1)) + var(M) + mean(M**3)", dict(M=[[0.5, 0.7, 1.2], [0.3, -0.4, 0.9]])),
    ("sum(gelu(x)*x) + sum(softplus(x)**2) + sum(cumsum(x, 0)**2)", dict(x=[0.3, -1.1, 0.6])),
    ("sum(x[1:]*x[:-1]) + x @ x", dict(x=[0.3, -1.1, 0.6, 2.0])),
])
def test_against_finite_differences_of_grad(program, bindings):
    wrt = list(gradcli.compile(program).variables)
    h = gradcli.hessian(program, bindings)
    fd = fd_hessian(program, bindings, wrt)
    np.testing.assert_allclose(h.matrix, fd, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h.matrix, h.matrix.T, rtol=1e-10, atol=1e-12)


def test_diag_and_vector_agree_with_the_matrix():
    rng = np.random.default_rng(0)
    b = dict(W=rng.normal(size=(4, 3)), x=rng.normal(size=3))
    prog = "sum(tanh(W @ x)**2) + sum(x**4)"
    full = gradcli.hessian(prog, b).matrix
    np.testing.assert_allclose(gradcli.hessian(prog, b, diag=True).diagonal, np.diag(full),
                               rtol=1e-12)
    v = rng.normal(size=full.shape[0])
    hv = gradcli.hessian(prog, b, vector=v).product
    got = np.concatenate([hv["W"].reshape(-1), hv["x"]])
    np.testing.assert_allclose(got, full @ v, rtol=1e-10, atol=1e-12)
    assert hv["W"].shape == (4, 3)
    # by name, and for a subset of the variables
    hx = gradcli.hessian(prog, b, wrt="x", vector={"x": v[-3:]}).product["x"]
    xx = gradcli.hessian(prog, b, wrt="x").matrix
    np.testing.assert_allclose(hx, xx @ v[-3:], rtol=1e-10)


def test_hvp_on_10000_inputs_matches_the_formula():
    rng = np.random.default_rng(1)
    x = rng.normal(size=10_000)
    v = rng.normal(size=10_000)
    hv = gradcli.hessian("sum(sin(x)*x) + sum(x)**2", x=x, vector=v).product["x"]
    # d2/dx2 of sin(x)*x is 2cos(x) - x sin(x) on the diagonal; sum(x)^2 adds 2 everywhere
    want = (2 * np.cos(x) - x * np.sin(x)) * v + 2 * v.sum()
    np.testing.assert_allclose(hv, want, rtol=1e-9, atol=1e-9)


def test_intermediate_wrt_matches_grad_of_grad():
    h = gradcli.hessian("a = x*y\nsin(a)*a", x=0.4, y=1.5, wrt="a")
    a = 0.6
    np.testing.assert_allclose(h.matrix, [[2 * np.cos(a) - a * np.sin(a)]], rtol=1e-12)


def test_gradient_graph_for_the_checker():
    """The gradient as a Graph: evaluates to grad, and its own gradient is H's row."""
    prog, b = "sum(tanh(W @ x))*x[0]", dict(W=[[1.0, 2.0], [0.5, -1.0]], x=[0.3, -0.8])
    graph = gradcli.compile(prog)
    graphs = symbolic.gradient_graph(graph, None, b)
    ref = gradcli.grad(prog, b).gradients
    H = gradcli.hessian(prog, b).matrix
    for name, g in graphs.items():
        np.testing.assert_allclose(engine.evaluate(g, b).value, ref[name], rtol=1e-12)
    gx = graphs["x"]  # d/dx as a program; its Jacobian rows are H's x rows
    for k in range(2):
        row = engine.differentiate(gx, b, upstream=np.eye(2)[k]).gradients
        got = np.concatenate([row["W"].reshape(-1), row["x"]])
        np.testing.assert_allclose(got, H[4 + k], rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- the command

def test_table():
    r = cli("hessian", "(1-x)**2 + 100*(y-x**2)**2", "x=1", "y=1")
    assert r.code == 0, r.err
    assert r.out == ("f = 0\n"
                     "       x      y\n"
                     "───────────────\n"
                     "x    802   -400\n"
                     "y   -400    200\n"
                     "symmetric: max |H - H^T| = 0\n")


def test_json_as_spec():
    r = cli("hessian", "--format", "json", "x**2*y + sum(v**2)", "x=1", "y=2", "v=[1,2]")
    obj = json.loads(r.out)
    assert obj["output"] == "f" and obj["value"] == 7.0
    assert obj["variables"] == [{"name": "x", "shape": []}, {"name": "y", "shape": []},
                                {"name": "v", "shape": [2]}]
    np.testing.assert_allclose(obj["hessian"], [[4, 2, 0, 0], [2, 0, 0, 0], [0, 0, 2, 0],
                                                [0, 0, 0, 2]])


def test_json_wrt_order():
    obj = json.loads(cli("hessian", "--format", "json", "--wrt", "y,x", "x**2*y", "x=1",
                         "y=2").out)
    assert [v["name"] for v in obj["variables"]] == ["y", "x"]
    assert obj["hessian"] == [[0.0, 2.0], [2.0, 4.0]]


def test_diag_and_vector_commands():
    r = cli("hessian", "--diag", "--format", "json", "sum(x**3)", "x=[1,2,3]")
    assert json.loads(r.out)["diagonal"] == [6.0, 12.0, 18.0]
    r = cli("hessian", "--vector", "[1,0,1]", "--format", "json", "sum(x**3)", "x=[1,2,3]")
    assert json.loads(r.out)["product"] == {"x": [6.0, 0.0, 18.0]}
    r = cli("hessian", "--vector", "[1,0,1]", "sum(x**3)", "x=[1,2,3]")
    assert r.code == 0 and "[6, 0, 18]" in r.out


def test_big_hessians_are_summarised():
    r = cli("hessian", "sum(x**3)", "x=" + json.dumps(list(range(20))))
    assert r.code == 0, r.err
    assert "20×20" in r.out and "--format json" in r.out


@pytest.mark.parametrize("args, words", [
    (["sum(x)*x", "x=[1,2]"], ["scalar"]),
    (["x*y"], ["bindings"]),
    (["--vector", "[1,2,3]", "x*y", "x=1", "y=2"], ["--vector", "3"]),
    (["--wrt", "q", "x*y", "x=1", "y=2"], ["q"]),
])
def test_bad_input(args, words):
    r = cli("hessian", *args)
    bad(r)
    for w in words:
        assert w in r.err


def test_diag_and_vector_together_is_a_usage_error():
    r = cli("hessian", "--diag", "--vector", "1", "x**2", "x=1")
    assert r.code == 2 and r.out == ""


def _diff_programs():
    from test_diff import B, PROGRAMS

    return [(p, B) for p in PROGRAMS]


@pytest.mark.parametrize("program, B", _diff_programs(), ids=lambda v: v if isinstance(v, str)
                         else "")
def test_every_op_hvp_against_directional_differences_of_grad(program, B):
    """H v (second order through every op's rule) against (g(x + h v) - g(x - h v)) / 2h."""
    graph = gradcli.compile(program)
    b = {k: np.array(B[k], dtype=np.float64) for k in graph.variables}
    rng = np.random.default_rng(7)
    v = {k: rng.uniform(-1, 1, size=np.shape(x)) for k, x in b.items()}
    hv = gradcli.hessian(program, b, vector=v).product
    h = 1e-5
    gp = gradcli.grad(program, {k: x + h * v[k] for k, x in b.items()}).gradients
    gm = gradcli.grad(program, {k: x - h * v[k] for k, x in b.items()}).gradients
    for k in b:
        np.testing.assert_allclose(hv[k], (gp[k] - gm[k]) / (2 * h), rtol=1e-5, atol=1e-6,
                                   err_msg=k)
