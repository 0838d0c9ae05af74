"""``gradcli check --taylor``: the remainder of a first-order Taylor expansion falls as h^2.

What is checked: correct programs (built-in ops, custom gates, non-scalar outputs, large
inputs) converge at a fitted rate near 2 and pass; a wrong gradient (each buggy gate, a
backward that ignores its upstream gradient) converges at rate 1 and fails with exit 1; a
kink crossed by the steps is a kink; a function linear along v passes at rounding level;
the remainders in the JSON fall as the rate says; the table and CSV; options that do not go
with --taylor are bad input.
"""
from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest

import gradcli
from gradcli import gradcheck
from gradcli.parse import parse
from conftest import BUGGY, GATES, cli

R = np.random.default_rng(11)


def taylor(program, ops=None, **values):
    g = parse(program, gradcli.load_ops(ops) if ops else None)
    return gradcheck.check(g, values, taylor=True)


@pytest.mark.parametrize("program,values", [
    ("sum(tanh(W @ x + b))", dict(W=R.normal(size=(5, 4)), x=R.normal(size=4),
                                  b=R.normal(size=5))),
    ("sin(x) * exp(y)", dict(x=100000.0, y=0.3)),
    ("logsumexp(v) + sum(softmax(v) * c)", dict(v=[3000.0, 3001, 3002], c=[1.0, -1, 2])),
    ("tanh(W @ x)", dict(W=R.normal(size=(3, 3)), x=R.normal(size=3))),   # non-scalar output
])
def test_correct_programs_converge_at_rate_two(program, values):
    r = taylor(program, **values)
    assert r.ok
    for t in r.taylor:
        assert t["status"] == "ok"
        assert t["rate"] != t["rate"] or 1.8 <= t["rate"] <= 3.2, t


def test_correct_gates_pass_and_each_buggy_gate_fails_at_rate_one():
    x = [0.3, -0.7, 1.1]
    assert taylor("sum(TanhGate(x) * c)", GATES, x=x, c=[1.0, 2, 3]).ok
    for gate in ("TanhGate", "SigmoidGate"):
        r = taylor(f"sum({gate}(x) * c)", BUGGY, x=x, c=[1.0, 2, 3])
        assert not r.ok
        rates = [t["rate"] for t in r.taylor if t["wrt"] == "x"]
        assert rates and abs(rates[0] - 1) < 0.1


def test_a_backward_ignoring_its_upstream_fails_even_below_a_sum():
    # the non-scalar output is weighted by a random u: the gate receives u, not ones
    r = taylor("SigmoidGate(x)", BUGGY, x=[0.3, -0.7, 1.1])
    assert not r.ok and r.taylor[0]["rate"] < 1.5


def test_remainders_fall_as_the_rate_says():
    r = taylor("sum(exp(x) * sin(x))", x=[0.4, -1.2])
    t, = r.taylor
    k = t["fitted"]
    h, rem = np.array(t["h"])[k], np.array(t["remainder"])[k]
    ratio = rem[:-1] / rem[1:]
    np.testing.assert_allclose(ratio, (h[:-1] / h[1:]) ** 2, rtol=0.05)
    # the first-order remainder falls as h
    r0 = np.array(t["remainder_first"])[k]
    np.testing.assert_allclose(r0[:-1] / r0[1:], h[:-1] / h[1:], rtol=0.05)


def test_linear_functions_pass_at_rounding_level():
    r = taylor("sum(W @ x)", W=R.normal(size=(3, 3)), x=R.normal(size=3))
    assert r.ok and all("rounding" in t["why"] or t["rate"] >= 1.8 for t in r.taylor)


def test_a_kink_in_the_steps_is_a_kink():
    r = taylor("sum(relu(x) * c)", x=[0.0, 1.0], c=[1.0, 2.0])
    assert r.ok and r.taylor[0]["status"] == "kink"
    assert cli("check", "--taylor", "--strict", "sum(relu(x))", "x=[0,1]").code == 1


def test_cli_table_json_csv_and_exit_codes():
    t = cli("check", "--taylor", "sum(tanh(W @ x))", "W=[[1,2],[3,4]]", "x=[0.1,-0.2]")
    assert t.code == 0 and "Taylor test" in t.out and "rate 2.0" in t.out
    assert "PASS: 2 of 2 inputs converge at rate 2" in t.out
    bad = cli("check", "--taylor", "--ops", BUGGY, "sum(TanhGate(x) * c)", "x=[0.3,-0.7]",
              "c=[1,2]")
    assert bad.code == 1 and "FAIL" in bad.out and "not h^2" in bad.out
    d = json.loads(cli("check", "--taylor", "--format", "json", "sin(x)", "x=2").out)
    assert d["ok"] and d["taylor"][0]["wrt"] == "x" and 1.8 <= d["taylor"][0]["rate"] <= 2.2
    rows = list(csv.DictReader(io.StringIO(cli("check", "--taylor", "--format", "csv",
                                                "sin(x)", "x=2").out)))
    assert rows and set(rows[0]) == {"wrt", "direction", "h", "remainder_first", "remainder",
                                     "rate", "status"}
    for extra in (["--fast"], ["--eps-sweep"], ["--jacobian"]):
        r = cli("check", "--taylor", *extra, "sin(x) * y", "x=2", "y=[1,2]")
        assert r.code == 2 and r.err.startswith("error: ")
