"""Grouped differences for every ``--method``: central, forward, the complex step and
Richardson extrapolation perturb structurally independent elements together
(gradcli/sparsity.py), with the same numbers as one element at a time, the same guard
against a pattern found too sparse, and no wrong element hidden.

What is checked: for each method, grouped against ``--one-at-a-time`` on a matrix-vector
product, a broadcast elementwise program and a Jacobian (the same numeric values, and for
Richardson the same error estimates); the evaluations counted per colour (two, one, one,
six); a custom gate wrong at one element of a 200 x 200 input found at exactly the wrong
elements by every method, the gate blamed; a pattern that is too sparse falls back to one
element at a time for the complex step and Richardson too; the table says what one at a
time would have cost.
"""
from __future__ import annotations

import textwrap

import numpy as np
import pytest

import gradcli
from gradcli import engine, gradcheck, sparsity
from gradcli.parse import parse
from conftest import cli

METHODS = ("central", "forward", "complex", "richardson")
PER_COLOUR = {"central": 2, "forward": 1, "complex": 1, "richardson": 6}
R = np.random.default_rng(7)
W = R.standard_normal((12, 9)) / 3
X = R.standard_normal(9)
B = R.standard_normal(12)

ONE_WRONG = """
import numpy as np

class TanhOneWrong:
    \"\"\"tanh(x); the backward has a sign error at element 7 only.\"\"\"
    def forward(self, x):
        self.t = np.tanh(x)
        return self.t

    def backward(self, dz):
        g = np.array((1 - self.t ** 2) * dz)
        g.reshape(-1)[7] *= -1
        return [g]
"""


@pytest.fixture(scope="module")
def one_wrong(tmp_path_factory):
    path = tmp_path_factory.mktemp("ops") / "one_wrong.py"
    path.write_text(textwrap.dedent(ONE_WRONG))
    return gradcli.load_ops(str(path))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("program, jacobian", [
    ("sum(tanh(W @ x + b))", False),
    ("sum(exp(sin(W) * 0.5) * b[:, None])", False),
    ("tanh(W @ x + b)", True),
])
def test_grouped_equals_one_at_a_time(method, program, jacobian):
    vals = dict(W=W, x=X, b=B)
    g = gradcli.check(program, method=method, jacobian=jacobian, **vals)
    one = gradcli.check(program, method=method, jacobian=jacobian, grouped=False, **vals)
    assert g.ok and one.ok
    assert g.grouped_evals > 0 and one.grouped_evals == 0
    # W's colours: every evaluation of a colour costs what one element costs
    assert g.grouped_evals % PER_COLOUR[method] == 0
    tol = {"forward": 1e-6, "central": 1e-8}.get(method, 1e-10)
    for a, c in zip(g.inputs, one.inputs):
        assert a.name == c.name and a.numeric.shape == c.numeric.shape
        np.testing.assert_allclose(a.numeric, c.numeric, rtol=tol, atol=tol)
        np.testing.assert_allclose(a.analytic, c.analytic)
        assert (a.err_est is None) == (c.err_est is None) == (method != "richardson")
        if method == "richardson":
            assert a.err_est.shape == a.numeric.shape
            # the estimate bounds the real error of the numeric value
            assert np.all(np.abs(a.numeric - a.analytic) <= a.err_est + 1e-9)
            np.testing.assert_allclose(a.err_est, c.err_est, rtol=0.5, atol=1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_the_groups_cost_per_colour_what_one_element_costs(method):
    # sum(tanh(W @ x)): W's elements of one column reach one row each: 9 colours
    g = parse("sum(tanh(W @ x))")
    ref = engine.evaluate(g, {"W": W, "x": X})
    src = g.variables["W"]
    x0 = np.array(W)
    num, est, evals = sparsity.grouped(ref, src, x0, method,
                                       gradcheck.default_eps(method), False)
    assert evals == 9 * PER_COLOUR[method]
    want = (1 - np.tanh(W @ X) ** 2)[:, None] * X[None, :]
    np.testing.assert_allclose(num, want, rtol=1e-4 if method == "forward" else 1e-8,
                               atol=1e-8)
    assert (est is None) == (method != "richardson")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("program, wrong", [
    # through a product: the gate's element 7 is row 7 of W @ x + b, so all of W's row 7,
    # every x and b[7] are wrong, nothing else
    ("sum(TanhOneWrong(W @ x + b))", {"W": set(range(7 * 200, 8 * 200)), "x": set(range(200)),
                                       "b": {7}}),
    # elementwise on W itself: the whole of W in one colour, only W[0, 7] wrong
    ("sum(TanhOneWrong(W) * b)", {"W": {7}, "b": set()}),
])
def test_a_gate_wrong_at_one_element_of_a_200_by_200_input_is_found_by_every_method(
        one_wrong, method, program, wrong):
    rng = np.random.default_rng(3)
    n = 200
    vals = dict(W=rng.standard_normal((n, n)) / np.sqrt(n), x=rng.standard_normal(n),
                b=rng.standard_normal(n))
    # row 7 of W away from zero and unsaturated, so every wrong element is wrong by far
    # more than any method's tolerance (forward's included)
    vals["W"][7] = 0.05 + np.abs(vals["W"][7])
    vals["b"][7] = 0.3 - vals["W"][7] @ vals["x"]
    vals = {k: v for k, v in vals.items() if k in program}
    r = gradcli.check(program, method=method, ops=one_wrong, **vals)
    assert not r.ok and r.grouped_evals > 0
    # grouping made at most a few hundred evaluations for 40,000 elements of W
    assert r.grouped_evals <= PER_COLOUR[method] * (2 * n + 2)
    failed = {ic.name: set(map(int, np.flatnonzero(ic.status.ravel() == "fail")))
              for ic in r.inputs}
    assert failed == wrong
    assert not any((ic.status == "kink").any() for ic in r.inputs)
    assert [b["op"] for b in r.blame] == ["TanhOneWrong"]


@pytest.mark.parametrize("method", ["complex", "richardson"])
def test_a_too_sparse_pattern_falls_back_for_every_method(monkeypatch, method):
    g = parse("sum(tanh(W @ x))")
    ref = engine.evaluate(g, {"W": W, "x": X})
    src = g.variables["x"]

    def fake_pattern(ref, source, target, rng):  # claims x[k] reaches row k % 12 only
        n = int(np.size(ref.values[target]))
        m = int(np.size(ref.values[source]))
        return sparsity._Pat.from_pairs(np.arange(m) % n, np.arange(m), n)
    monkeypatch.setattr(sparsity, "pattern", fake_pattern)
    monkeypatch.setattr(sparsity, "_MIN_SAVING", 0)
    monkeypatch.setattr(sparsity, "linear_head", lambda *a, **k: None)
    assert sparsity.grouped(ref, src, np.array(X), method, gradcheck.default_eps(method),
                            False) is None
    monkeypatch.undo()
    r = gradcheck.check(g, {"W": W, "x": X}, method=method)
    assert r.ok


@pytest.mark.parametrize("method, words", [("central", "two"), ("forward", "one"),
                                           ("complex", "one"), ("richardson", "six")])
def test_the_table_says_what_one_at_a_time_would_cost(method, words):
    res = cli("check", "--method", method, "sum(tanh(W @ x))",
              "W=[[1,2,3,4,5],[2,1,0,1,2],[0.5,0.5,0.5,0.5,0.5],[1,-1,1,-1,1]]",
              "x=[0.1,-0.2,0.1,0,0.3]")
    assert res.code == 0, res.err
    assert f"evaluations where one at a time takes {words} per element" in res.out


def test_second_order_checks_group_with_every_method():
    for method in METHODS:
        # the gradient cos(W) * b[:, None] moves with W elementwise: a diagonal Hessian
        r = gradcli.check("sum(sin(W) * b[:, None])", W=W, b=B, order=2, method=method)
        assert r.ok, method
        assert r.grouped_evals > 0, method
