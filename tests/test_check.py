"""``gradcli check``: reverse mode against finite differences, kinks, blame, --fast, --eps-sweep.

Most tests run gradcli in process through Click's ``CliRunner`` (fast); a few run the installed
console script as a real subprocess, for the exit codes and the stdout/stderr split.

What is checked:

- correct built-in programs pass with every method (central, forward, complex, richardson),
  in float64 and float32, with the analytic side equal to ``gradcli.grad`` and the numeric side
  within the tolerance the report states; Richardson's error estimate; the complex step's
  accuracy;
- the JSON / CSV shapes of SPEC, one result per element (per (output, input) pair with
  ``--jacobian``), exit codes 0 / 1 / 2;
- kinks (relu, abs, max ties): never a ``fail``; a one-sided mismatch is a ``kink`` whose record
  names the op's node and brackets the analytic value; ``--strict`` exits 1;
- blame: one buggy custom gate among correct built-ins (each of the five bugs of
  examples/buggy_gates.py) fails the check and exactly that node is blamed;
- ``--fast`` random projections, ``--seed`` determinism, ``--eps-sweep``, ``--wrt``, ``--eps``,
  ``--atol``, ``--rtol``.
"""
from __future__ import annotations

import csv
import io
import json
import math
import re

import numpy as np
import pytest

import gradcli
from conftest import BUGGY, GATES, cli, run


METHODS = ["central", "forward", "complex", "richardson"]
SPEC_TOP = {"ok", "method", "eps", "max_abs_err", "max_rel_err", "results"}
SPEC_RESULT = {"wrt", "index", "analytic", "numeric", "abs_err", "rel_err", "status"}
# keys a result may carry beyond SPEC's (SPEC may be extended, not broken)
EXTRA_RESULT = {"output_index", "error_estimate", "kink", "grade"}
KINK_NOTE = "note: some elements are at kinks"


def check_json(*args, code=0):
    """``gradcli check --format json ARGS``: the parsed report; asserts the exit code."""
    r = cli("check", "--format", "json", *args)
    assert r.exception is None, repr(r.exception)
    assert r.code == code, f"exit {r.code}\nstdout:\n{r.out}\nstderr:\n{r.err}"
    assert "Traceback" not in r.err
    return json.loads(r.out), r


def _binding_values(bindings):
    out = {}
    for b in bindings:
        name, value = b.split("=", 1)
        out[name] = np.array(json.loads(value), dtype=np.float64)
    return out


W32 = "W=[[0.5,-1.2],[0.3,0.8],[-0.7,0.1]]"
# (program, bindings): correct built-in programs, none of them at a kink
PROGRAMS = [
    ("(x+y)*max(y,z)", ["x=1", "y=2", "z=0"]),                          # worked example
    ("(x+y)*z", ["x=1", "y=3", "z=-3"]),                                # worked example
    ("x**2 + 2*x + 1", ["x=[2,3]"]),                                    # worked example
    ("a = x * y; b = a - y; f = exp(b) * a", ["x=0.5", "y=2"]),          # worked example
    ("sum(tanh(W @ x + b))", [W32, "x=[0.5,-1]", "b=[0.1,0.2,0.3]"]),
    ("-sum(t * log(softmax(W @ x)))", [W32, "x=[1,2]", "t=[0,0,1]"]),    # cross-entropy
    ("sum(exp(A * v) + c)", ["A=[[1,2,3],[0.5,0.1,-0.3]]", "v=[0.1,-0.2,0.3]", "c=2"]),
    ("sum((X + b) ** 2 * w)", ["X=[[1,2,3],[4,5,6]]", "b=[[0.5],[-1]]", "w=[1,-2,3]"]),
    ("x[0] * x[2] + sum(W[1, :]) + sum(x[1:] * x[:-1])", ["x=[1,2,3]", W32]),
    ("logsumexp(v) + mean(sigmoid(v) * softplus(v))", ["v=[0.3,-1.2,2.0]"]),
]
IDS = ["worked1", "worked2", "worked3", "worked4", "tanh-layer", "xent", "broadcast",
       "broadcast2", "indexing", "nn-ops"]


def _expr_args(program, bindings):
    return ["--", program, *bindings]


# ---------------------------------------------------------------- built-ins pass

@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("program,bindings", PROGRAMS, ids=IDS)
def test_builtin_programs_pass_for_every_method(program, bindings, method):
    d, r = check_json("--method", method, *_expr_args(program, bindings))
    assert d["ok"] is True and d["method"] == method
    assert r.err == ""  # no warnings, no kink note
    grads = gradcli.grad(program, **_binding_values(bindings)).gradients
    assert {res["wrt"] for res in d["results"]} == set(grads)
    atol, rtol = d["atol"], d["rtol"]
    for res in d["results"]:
        assert res["status"] == "ok", res
        expected = float(np.asarray(grads[res["wrt"]])[tuple(res["index"])])
        # the analytic side is gradcli's own reverse pass, bit for bit
        assert res["analytic"] == pytest.approx(expected, rel=1e-12, abs=1e-15)
        # the numeric side agrees within the tolerance the report states
        assert abs(res["analytic"] - res["numeric"]) <= atol + rtol * abs(res["numeric"])
        assert res["abs_err"] == pytest.approx(abs(res["analytic"] - res["numeric"]),
                                               rel=1e-9, abs=1e-300)
    errs = [res["abs_err"] for res in d["results"] + d.get("projections", [])]
    assert d["max_abs_err"] == pytest.approx(max(errs))


def test_default_tolerances_per_method():
    for method, (atol, rtol) in {"central": (1e-6, 1e-5), "forward": (1e-5, 1e-4),
                                 "complex": (1e-6, 1e-5), "richardson": (1e-6, 1e-5)}.items():
        d, _ = check_json("--method", method, "x*y", "x=2", "y=3")
        assert (d["atol"], d["rtol"]) == (atol, rtol)
        assert d["dtype"] == "float64"


@pytest.mark.parametrize("program,bindings", [PROGRAMS[0], PROGRAMS[4], PROGRAMS[5],
                                              PROGRAMS[6], PROGRAMS[8]],
                         ids=["worked1", "tanh-layer", "xent", "broadcast", "indexing"])
def test_float32_passes_with_looser_defaults(program, bindings):
    d, _ = check_json("--dtype", "float32", *_expr_args(program, bindings))
    assert d["ok"] is True
    assert d["dtype"] == "float32"
    assert (d["atol"], d["rtol"]) == (1e-4, 1e-3)
    grads = gradcli.grad(program, dtype="float32", **_binding_values(bindings)).gradients
    for res in d["results"]:
        assert res["status"] == "ok"
        expected = float(np.asarray(grads[res["wrt"]])[tuple(res["index"])])
        assert res["analytic"] == pytest.approx(expected, rel=1e-6, abs=1e-7)
        assert abs(res["analytic"] - res["numeric"]) <= 1e-4 + 1e-3 * abs(res["numeric"])
    # float32 rounding shows: not as close as float64, but well inside the tolerance
    assert d["max_abs_err"] < 1e-4


SMOOTH = ("sum(sin(x) * exp(x))", ["x=[0.3,1.1,-0.7,2.0]"])


def test_richardson_has_error_estimates_and_beats_forward_differences():
    rich, _ = check_json("--method", "richardson", SMOOTH[0], *SMOOTH[1])
    fwd, _ = check_json("--method", "forward", SMOOTH[0], *SMOOTH[1])
    assert rich["ok"] and fwd["ok"]
    assert len(rich["results"]) == 4
    for res in rich["results"]:
        est = res["error_estimate"]
        assert isinstance(est, float) and math.isfinite(est)
        # |D(h/2) - D(h)| / 3: the error of the plain central difference at h/2, so a
        # (conservative) bound on the extrapolated value's error
        assert res["abs_err"] <= est < 1e-5 * max(1.0, abs(res["analytic"]))
    for res in fwd["results"]:
        assert "error_estimate" not in res
    # O(h^4) against O(h): orders of magnitude apart on a smooth function
    assert rich["max_abs_err"] < fwd["max_abs_err"] / 100
    assert fwd["max_abs_err"] > 1e-10  # forward differences really are the rough ones


def test_complex_step_is_accurate_to_rounding():
    d, _ = check_json("--method", "complex", SMOOTH[0], *SMOOTH[1])
    assert d["ok"] and d["eps"] == pytest.approx(1e-20)
    assert d["max_abs_err"] <= 1e-14
    assert d["max_rel_err"] <= 1e-14
    d2, _ = check_json("--method", "complex", *_expr_args(*PROGRAMS[5]))  # cross-entropy
    assert d2["max_abs_err"] <= 1e-14


# ---------------------------------------------------------------- JSON / CSV shapes

def test_json_shape_is_specs():
    d, _ = check_json("sum(tanh(W @ x + b))", W32, "x=[0.5,-1]", "b=[0.1,0.2,0.3]")
    assert SPEC_TOP <= set(d)
    assert isinstance(d["ok"], bool) and d["method"] == "central"
    assert isinstance(d["eps"], float) and d["eps"] > 0
    assert isinstance(d["max_abs_err"], float) and isinstance(d["max_rel_err"], float)
    # one result per element of every input: W 3x2, x 2, b 3
    per_input = {}
    for res in d["results"]:
        assert SPEC_RESULT <= set(res) and set(res) - SPEC_RESULT <= EXTRA_RESULT, res
        assert isinstance(res["index"], list) and all(isinstance(i, int) for i in res["index"])
        assert res["status"] in ("ok", "fail", "kink")
        for k in ("analytic", "numeric", "abs_err", "rel_err"):
            assert isinstance(res[k], float)
        per_input.setdefault(res["wrt"], []).append(tuple(res["index"]))
    assert per_input == {"W": [(i, j) for i in range(3) for j in range(2)],
                         "x": [(0,), (1,)], "b": [(0,), (1,), (2,)]}


def test_scalar_inputs_have_empty_index():
    d, _ = check_json("(x+y)*z", "x=1", "y=3", "z=-3")
    assert [(res["wrt"], res["index"]) for res in d["results"]] == \
        [("x", []), ("y", []), ("z", [])]
    assert [res["analytic"] for res in d["results"]] == [-3.0, -3.0, 4.0]


def test_jacobian_has_a_result_per_output_input_pair():
    d, _ = check_json("--jacobian", "A @ x", "A=[[1,2],[3,4],[5,6]]", "x=[1,2]")
    assert d["ok"] is True
    assert len(d["results"]) == 3 * 6 + 3 * 2
    pairs = {(res["wrt"], tuple(res["output_index"]), tuple(res["index"]))
             for res in d["results"]}
    assert len(pairs) == len(d["results"])
    assert {(o, i) for w, o, i in pairs if w == "x"} == \
        {((k,), (j,)) for k in range(3) for j in range(2)}
    A = np.array([[1, 2], [3, 4], [5, 6]], dtype=float)
    for res in d["results"]:
        (k,) = res["output_index"]
        if res["wrt"] == "x":
            assert res["analytic"] == A[k, res["index"][0]]          # d(Ax)_k/dx_j = A_kj
        else:
            i, j = res["index"]
            assert res["analytic"] == (float([1, 2][j]) if i == k else 0.0)
        assert res["numeric"] == pytest.approx(res["analytic"], abs=1e-8)


@pytest.mark.parametrize("method", METHODS)
def test_jacobian_softmax_every_method(method):
    d, _ = check_json("--jacobian", "--method", method, "softmax(x)", "x=[0.5,-1,2]")
    assert d["ok"] is True and len(d["results"]) == 9
    x = np.array([0.5, -1, 2])
    s = np.exp(x - x.max()) / np.exp(x - x.max()).sum()
    J = np.diag(s) - np.outer(s, s)
    for res in d["results"]:
        assert res["analytic"] == pytest.approx(J[res["output_index"][0], res["index"][0]],
                                                abs=1e-12)


def test_jacobian_of_scalar_output_is_the_gradient():
    d, _ = check_json("--jacobian", "sum(x * x)", "x=[1,2]")
    assert [res["analytic"] for res in d["results"]] == [2.0, 4.0]
    assert all("output_index" not in res for res in d["results"])


def test_csv_header_and_a_row_per_element():
    r = cli("check", "--format", "csv", "sum(tanh(W @ x + b))", W32, "x=[0.5,-1]",
            "b=[0.1,0.2,0.3]")
    assert r.code == 0 and r.exception is None
    rows = list(csv.reader(io.StringIO(r.out)))
    assert rows[0] == ["wrt", "index", "analytic", "numeric", "abs_err", "rel_err", "status"]
    assert len(rows) == 1 + 6 + 2 + 3
    assert [row[0] for row in rows[1:]] == ["W"] * 6 + ["x"] * 2 + ["b"] * 3
    assert rows[1][1] == "0,0" and rows[7][1] == "0"
    for row in rows[1:]:
        assert row[-1] == "ok"
        a, n = float(row[2]), float(row[3])
        assert abs(a - n) <= 1e-6 + 1e-5 * abs(n)
    assert "\x1b[" not in r.out


def test_csv_jacobian_has_output_index_column():
    r = cli("check", "--format", "csv", "--jacobian", "x * 2", "x=[1,2]")
    rows = list(csv.reader(io.StringIO(r.out)))
    assert rows[0] == ["wrt", "output_index", "index", "analytic", "numeric", "abs_err",
                       "rel_err", "status"]
    assert len(rows) == 1 + 4


def test_table_output_passes_and_fails():
    r = cli("check", "(x+y)*max(y,z)", "x=1", "y=2", "z=0")
    assert r.code == 0 and "PASS: 3 of 3 elements agree" in r.out
    r = cli("check", "--ops", BUGGY, "sum(TanhGate(x) * c)", "x=[0.3,-0.2]", "c=[1,2]")
    assert r.code == 1
    assert "FAIL" in r.out and "blame: node" in r.out and "TanhGate" in r.out


def test_exit_codes_throughrunner():
    assert cli("check", "x*y", "x=2", "y=3").code == 0
    assert cli("check", "--ops", BUGGY, "sum(TanhGate(x))", "x=[0.5,1]").code == 1
    for args in (["x*y", "x=2"],                       # unbound variable
                 ["x*", "x=2"],                        # parse error
                 ["--wrt", "q", "x*y", "x=2", "y=3"],  # unknown --wrt
                 ["--eps", "0", "x*2", "x=2"],         # bad --eps
                 ["--method", "nope", "x*2", "x=2"],   # bad --method
                 ["x @ y", "x=[1,2]", "y=[1,2,3]"],    # shape mismatch
                 []):                                  # no EXPR, no --ops
        r = cli("check", *args)
        assert r.code == 2, (args, r)
        assert r.exception is None
        assert "Traceback" not in r.err
        assert r.out == ""
        assert "internal error" not in r.err


def test_exit_codes_through_real_subprocess(gradcli_exe, tmp_path):
    p = run(gradcli_exe, "check", "--format", "json", "x*y", "x=2", "y=3", cwd=tmp_path)
    assert p.returncode == 0 and json.loads(p.stdout)["ok"] is True and p.stderr == ""
    p = run(gradcli_exe, "check", "--format", "json", "--ops", BUGGY,
            "sum(MultiplyGate(a, b) * c)", "a=[1,2]", "b=[3,-1]", "c=[0.5,2]", cwd=tmp_path)
    assert p.returncode == 1
    d = json.loads(p.stdout)
    assert d["ok"] is False and [b["op"] for b in d["blame"]] == ["MultiplyGate"]
    p = run(gradcli_exe, "check", "x*y", "x=2", cwd=tmp_path)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr.startswith("error: ") and "Traceback" not in p.stderr and "y" in p.stderr
    # a kink alone: exit 0, the note on stderr, stdout clean JSON
    p = run(gradcli_exe, "check", "--format", "json", "sum(relu(x) * w)", "x=[0,1]",
            "w=[2,3]", cwd=tmp_path)
    assert p.returncode == 0 and KINK_NOTE in p.stderr
    assert json.loads(p.stdout)["kinks"] == 1


# ---------------------------------------------------------------- kinks

KINK_PROGRAMS = [("relu(x)", ["x=0"]), ("abs(x)", ["x=0"]), ("max(x, y)", ["x=1", "y=1"]),
                 ("min(x, y)", ["x=-2", "y=-2"]), ("max(v)", ["v=[1,3,3]"]),
                 ("max(v) * 2 + v[0]", ["v=[2,2,1]"]), ("sum(relu(x) * w)", ["x=[0,1]", "w=[2,3]"]),
                 ("sum(abs(v) * w)", ["v=[0,-1]", "w=[2,3]"])]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("program,bindings", KINK_PROGRAMS,
                         ids=[p for p, _ in KINK_PROGRAMS])
def test_a_kink_never_counts_as_a_fail(program, bindings, method):
    d, r = check_json("--method", method, program, *bindings)
    assert d["ok"] is True
    statuses = [res["status"] for res in d["results"]]
    assert "fail" not in statuses
    assert d["kinks"] == statuses.count("kink")
    assert (KINK_NOTE in r.err) == (d["kinks"] > 0)
    assert d["blame"] == []
    # the analytic side follows SPEC's conventions, whatever the numeric side saw
    grads = gradcli.grad(program, **_binding_values(bindings)).gradients
    for res in d["results"]:
        assert res["analytic"] == float(np.asarray(grads[res["wrt"]])[tuple(res["index"])])
        if res["status"] == "kink":
            k = res["kink"]
            lo, hi = sorted((k["left_slope"], k["right_slope"]))
            assert k["analytic_inside"] is True
            assert lo - 1e-6 <= res["analytic"] <= hi + 1e-6


def test_spec_conventions_at_kinks():
    """relu'(0) = 0, abs'(0) = 0, ties of max/min split evenly."""
    for program, bindings, expected in [
            ("relu(x)", ["x=0"], [0.0]), ("abs(x)", ["x=0"], [0.0]),
            ("max(x, y)", ["x=1", "y=1"], [0.5, 0.5]), ("max(v)", ["v=[1,3,3]"], [0, .5, .5]),
            ("min(v)", ["v=[1,1,1,4]"], [1 / 3, 1 / 3, 1 / 3, 0])]:
        d, _ = check_json(program, *bindings)
        assert [res["analytic"] for res in d["results"]] == pytest.approx(expected)


def test_abs_at_zero_central_differences_happen_to_agree():
    # |x| is symmetric about 0: the central difference is 0, which is abs'(0) by convention,
    # so central differences see no mismatch and report ok; forward differences see the
    # right slope 1 and report a kink. Either way it is not a failure.
    d, r = check_json("abs(x)", "x=0")
    assert d["results"][0]["status"] == "ok" and d["results"][0]["numeric"] == 0.0
    d, r = check_json("--method", "forward", "abs(x)", "x=0")
    res = d["results"][0]
    assert res["status"] == "kink"
    assert res["kink"]["left_slope"] == pytest.approx(-1) and \
        res["kink"]["right_slope"] == pytest.approx(1)
    assert KINK_NOTE in r.err


def _node_ids(program, bindings, op, ops_file=None):
    args = ["eval", "--format", "json"] + (["--ops", ops_file] if ops_file else [])
    r = cli(*args, program, *bindings)
    assert r.code == 0, r
    return [n["id"] for n in json.loads(r.out)["nodes"] if n["op"] == op]


def test_one_sided_kink_is_reported_with_its_node_and_slopes():
    program, bindings = "sum(relu(x) * w)", ["x=[0,1]", "w=[2,3]"]
    d, r = check_json(program, *bindings)
    assert d["ok"] is True and d["kinks"] == 1
    by = {(res["wrt"], tuple(res["index"])): res for res in d["results"]}
    k0 = by[("x", (0,))]
    assert k0["status"] == "kink"
    assert k0["analytic"] == 0.0                      # relu'(0) = 0
    assert k0["numeric"] == pytest.approx(1.0, abs=1e-6)  # the mean of 0 and 2
    kink = k0["kink"]
    (relu_id,) = _node_ids(program, bindings, "relu")
    assert kink["nodes"] == [{"id": relu_id, "op": "relu", "label": "relu(x)"}]
    assert kink["left_slope"] == pytest.approx(0.0, abs=1e-6)
    assert kink["right_slope"] == pytest.approx(2.0, abs=1e-6)
    assert kink["analytic_inside"] is True
    assert kink["left_slope"] - 1e-9 <= k0["analytic"] <= kink["right_slope"] + 1e-9
    for key in (("x", (1,)), ("w", (0,)), ("w", (1,))):
        assert by[key]["status"] == "ok" and "kink" not in by[key]
    # exit 0, with a note on stderr (not on stdout)
    assert KINK_NOTE in r.err and "note" not in r.out
    # kinks do not count in the max errors
    assert d["max_abs_err"] < 1e-6
    # the table says it too
    t = cli("check", program, *bindings)
    assert t.code == 0
    assert "kink at x[0]" in t.out and "relu(x)" in t.out and "lies inside" in t.out


def test_strict_makes_kinks_exit_1():
    d, r = check_json("--strict", "sum(relu(x) * w)", "x=[0,1]", "w=[2,3]", code=1)
    assert d["ok"] is False and d["kinks"] == 1
    assert all(res["status"] != "fail" for res in d["results"])
    t = cli("check", "--strict", "sum(relu(x) * w)", "x=[0,1]", "w=[2,3]")
    assert t.code == 1 and "--strict" in t.out
    # --strict without kinks still passes
    assert cli("check", "--strict", "sum(relu(x) * w)", "x=[0.5,1]", "w=[2,3]").code == 0


def test_kinks_in_jacobian_mode():
    d, r = check_json("--jacobian", "relu(x) * w", "x=[0,1]", "w=[2,3]")
    assert d["ok"] is True
    kinks = [res for res in d["results"] if res["status"] == "kink"]
    assert [(k["wrt"], k["output_index"], k["index"]) for k in kinks] == [("x", [0], [0])]
    assert kinks[0]["kink"]["right_slope"] == pytest.approx(2.0, abs=1e-6)


# ---------------------------------------------------------------- blame

W3 = "W=[[0.5,-1.2],[0.3,0.8],[-0.7,0.1]]"
# (buggy gate, expression using it among correct built-ins and correct gates, bindings)
BLAME_CASES = [
    ("TanhGate", "sum(TanhGate(W @ x))", [W3, "x=[0.5,-1]"]),
    ("TanhGate", "sum(exp(TanhGate(W @ x + b)) * c)",
     [W3, "x=[0.5,-1]", "b=[0.1,0.2,0.3]", "c=[1,-2,0.5]"]),
    ("MultiplyGate", "sum(MultiplyGate(a, b) * c)", ["a=[1,2]", "b=[3,-1]", "c=[0.5,2]"]),
    ("MultiplyGate", "sum(exp(SubtractGate(MultiplyGate(a, b), c)) * d)",
     ["a=[0.5,-1.2]", "b=[0.3,0.8]", "c=[0.7,-0.4]", "d=[1,2]"]),
    # an upstream of ones would hide the missing chain rule; c is not all ones
    ("SigmoidGate", "sum(SigmoidGate(x) * c)", ["x=[0.5,-1.2,0.3]", "c=[0.7,-0.4,2]"]),
    ("SigmoidGate", "sum(LogGate(exp(SigmoidGate(W @ x))) * c)",
     [W3, "x=[0.5,-1]", "c=[0.7,-0.4,2]"]),
    ("MatMulGate", "sum(tanh(MatMulGate(W, X)) * C)",
     [W3, "X=[[0.2,-0.4],[0.9,0.1]]", "C=[[1,2],[3,4],[5,6]]"]),
    ("AddBiasGate", "sum(sigmoid(AddBiasGate(X, b)) * C)",
     ["X=[[0.2,-0.4,0.3],[0.9,0.1,-1]]", "b=[0.1,-0.2,0.3]", "C=[[1,2,-1],[3,4,0.5]]"]),
    ("AddBiasGate", "sum(AddBiasGate(X @ V, b) ** 2)",
     ["X=[[0.2,-0.4],[0.9,0.1],[0.3,0.3]]", "V=[[1,0.5,-1],[0.2,0.3,0.4]]", "b=[0.1,-0.2,0.3]"]),
]


@pytest.mark.parametrize("gate,program,bindings", BLAME_CASES,
                         ids=[f"{g}-{i}" for i, (g, _, _) in enumerate(BLAME_CASES)])
def test_blame_names_exactly_the_buggy_gate(gate, program, bindings):
    d, r = check_json("--ops", BUGGY, program, *bindings, code=1)
    assert d["ok"] is False
    assert any(res["status"] == "fail" for res in d["results"])
    (gate_id,) = _node_ids(program, bindings, gate, BUGGY)
    assert len(d["blame"]) == 1, d["blame"]  # no correct node up- or downstream is blamed
    b = d["blame"][0]
    assert b["node"] == gate_id
    assert b["op"] == gate
    assert b["label"].startswith(gate + "(")
    assert b["max_rel_err"] > 1e-2
    assert any(i["status"] == "fail" for i in b["inputs"])
    # the same expression with the correct gates passes, with nobody blamed
    d2, r2 = check_json("--ops", GATES, program, *bindings)
    assert d2["ok"] is True and d2["blame"] == []
    assert all(res["status"] == "ok" for res in d2["results"])


def test_blame_names_the_wrong_argument():
    # MatMulGate's bug is in W's gradient only; AddBiasGate's in b's only
    d, _ = check_json("--ops", BUGGY, *BLAME_CASES[6][1:2], *BLAME_CASES[6][2], code=1)
    assert {i["input"]: i["status"] for i in d["blame"][0]["inputs"]} == \
        {"W": "fail", "x": "ok"}
    d, _ = check_json("--ops", BUGGY, BLAME_CASES[7][1], *BLAME_CASES[7][2], code=1)
    assert {i["input"]: i["status"] for i in d["blame"][0]["inputs"]} == \
        {"x": "ok", "b": "fail"}
    # only b's elements fail in the whole check, too
    assert {res["wrt"] for res in d["results"] if res["status"] == "fail"} == {"b"}


@pytest.mark.parametrize("method", ["central", "forward", "complex", "richardson"])
@pytest.mark.parametrize("fast", [False, True])
def test_no_blind_spot_for_a_backward_that_ignores_its_upstream(method, fast):
    # sum(SigmoidGate(x)) sends ones upstream: dz = 1, so forgetting "* dz" leaves every
    # element right; the gate's own check with a random upstream still fails it, in every mode
    args = ["--method", method] + (["--fast"] if fast else [])
    d, r = check_json(*args, "--ops", BUGGY, "sum(SigmoidGate(MultiplyGate(x, y)))",
                      "x=[0.5,-1.2]", "y=[1.5,0.7]", code=1)
    assert d["ok"] is False
    local = {rec["op"]: rec for rec in d["local"]}
    assert local["SigmoidGate"]["status"] == "fail"
    assert local["SigmoidGate"]["upstream_was_ones"] is True
    # the buggy MultiplyGate swaps its gradients, which the elements show
    r = cli("check", *args, "--ops", BUGGY, "sum(SigmoidGate(x * y))", "x=[0.5,-1.2]",
            "y=[1.5,0.7]")
    assert r.code == 1, r.out
    assert "agreed only because the gate received ones" in r.out
    assert "node 3 SigmoidGate(x * y)" in r.out
    # --jacobian (one-hot upstreams) catches it in the elements too, and blames the gate
    d, _ = check_json("--ops", BUGGY, "--jacobian", "SigmoidGate(x)", "x=[0.5,-1.2]", code=1)
    assert [b["op"] for b in d["blame"]] == ["SigmoidGate"]


def test_the_correct_gates_pass_their_own_checks():
    d, r = check_json("--ops", GATES, "sum(SigmoidGate(MultiplyGate(x, y)))", "x=[0.5,-1.2]",
                      "y=[1.5,0.7]")
    assert d["ok"] and [rec["status"] for rec in d["local"]] == ["ok", "ok"]
    assert "2 nodes checked on their own with a random upstream agree" in \
        cli("check", "--ops", GATES, "sum(SigmoidGate(MultiplyGate(x, y)))", "x=[0.5,-1.2]",
            "y=[1.5,0.7]").out


def test_local_checks_every_builtin_node_too():
    import gradcli.gradcheck as gc
    from gradcli.parse import parse

    r = gc.check(parse("sum(tanh(W @ x))"), {"W": np.ones((2, 2)), "x": np.ones(2)},
                 local=True)
    assert r.ok and sorted(rec["op"] for rec in r.local) == ["matmul", "sum", "tanh"]
    assert all(rec["status"] == "ok" for rec in r.local)
    t = cli("check", "--local", "sum(tanh(W @ x))", "W=[[1,2],[3,4]]", "x=[0.1,-0.2]")
    assert t.code == 0 and "3 nodes checked on their own with a random upstream agree" in t.out
    # without --local, a program of built-ins has no per-node checks
    assert gc.check(parse("sum(tanh(W @ x))"), {"W": np.ones((2, 2)), "x": np.ones(2)}).local \
        == []


def test_blame_is_empty_when_the_step_is_to_blame():
    # a huge step fails a correct program, but no node's own backward is wrong
    d, r = check_json("--eps", "0.5", "sum(exp(x))", "x=[1,2]", code=1)
    assert d["blame"] == []
    t = cli("check", "--eps", "0.5", "sum(exp(x))", "x=[1,2]")
    assert "no node's backward is wrong on its own" in t.out


def test_full_check_with_blame_is_byte_identical_for_a_seed():
    args = ["check", "--format", "json", "--seed", "7", "--ops", BUGGY,
            "sum(exp(SubtractGate(MultiplyGate(a, b), c)) * TanhGate(d))",
            "a=[0.5,-1.2]", "b=[0.3,0.8]", "c=[0.7,-0.4]", "d=[1,2]"]
    r1, r2 = cli(*args), cli(*args)
    assert r1.code == r2.code == 1
    assert r1.out == r2.out
    d = json.loads(r1.out)
    assert sorted(b["op"] for b in d["blame"]) == ["MultiplyGate", "TanhGate"]


# ---------------------------------------------------------------- --fast

def test_fast_passes_on_correct_programs():
    for program, bindings in (PROGRAMS[4], PROGRAMS[5], PROGRAMS[6], SMOOTH):
        d, _ = check_json("--fast", *_expr_args(program, bindings))
        assert d["ok"] is True and d["fast"] is True
        inputs = set(_binding_values(bindings))
        assert {p["wrt"] for p in d["projections"]} == inputs
        assert len(d["projections"]) == 4 * len(inputs)   # --projections defaults to 4
        assert all(p["status"] == "ok" for p in d["projections"])
    d, _ = check_json("--fast", "--projections", "7", "sum(tanh(x))", "x=[0.1,0.2]")
    assert len(d["projections"]) == 7


def test_fast_jacobian_passes():
    d, _ = check_json("--fast", "--jacobian", "softmax(W @ x)", W32, "x=[1,2]")
    assert d["ok"] is True and len(d["projections"]) == 8


def test_fast_catches_a_wrong_gradient_and_names_the_input():
    # The false-negative bound (README, "--fast", and the table's own text): a wrong gradient
    # with error vector d passes one projection at tolerance t with probability at most
    # 0.8 t / |d|, so all k projections (default 4) with at most (0.8 t / |d|)^k -- about
    # 4e-5 for an error ten times the tolerance; here |d| ~ 1 against t ~ 1e-6: ~1e-22.
    program = "sum(exp(MultiplyGate(a, b) * c))"
    bindings = ["a=[0.5,-1.2]", "b=[0.3,0.8]", "c=[0.7,-0.4]"]
    d, _ = check_json("--fast", "--ops", BUGGY, program, *bindings, code=1)
    assert d["ok"] is False
    failed = {p["wrt"] for p in d["projections"] if p["status"] == "fail"}
    assert failed == {"a", "b"}  # c's gradient does not go through the buggy gate
    t = cli("check", "--fast", "--ops", BUGGY, program, *bindings)
    assert t.code == 1
    assert "projections failed for: a, b" in t.out
    csv_out = cli("check", "--fast", "--format", "csv", "--ops", BUGGY, program, *bindings)
    rows = list(csv.reader(io.StringIO(csv_out.out)))
    assert rows[0] == ["wrt", "projection", "analytic", "numeric", "abs_err", "rel_err",
                       "status"]
    assert len(rows) == 1 + 12 and {row[0] for row in rows[1:] if row[-1] == "fail"} == \
        {"a", "b"}


def test_fast_does_not_wrongly_exonerate_every_node():
    program = "sum(exp(MultiplyGate(a, b) * c))"
    bindings = ["a=[0.5,-1.2]", "b=[0.3,0.8]", "c=[0.7,-0.4]"]
    t = cli("check", "--fast", "--ops", BUGGY, program, *bindings)
    assert t.code == 1
    d, _ = check_json("--fast", "--ops", BUGGY, program, *bindings, code=1)
    assert all(b["op"] == "MultiplyGate" for b in d["blame"])
    assert "no node's backward is wrong on its own" not in t.out


def test_fast_seed_is_repeatable_and_different_seeds_differ():
    args = ["check", "--fast", "--format", "json", "sum(tanh(W @ x + b))", W32, "x=[0.5,-1]",
            "b=[0.1,0.2,0.3]"]
    a1, a2 = cli(*args, "--seed", "3"), cli(*args, "--seed", "3")
    assert a1.code == 0 and a1.out == a2.out
    b = cli(*args, "--seed", "4")
    pa = [p["analytic"] for p in json.loads(a1.out)["projections"]]
    pb = [p["analytic"] for p in json.loads(b.out)["projections"]]
    assert len(pa) == len(pb) and all(x != y for x, y in zip(pa, pb))
    # the default seed is fixed too
    assert cli(*args).out == cli(*args).out


# ---------------------------------------------------------------- --eps-sweep

def test_eps_sweep_error_is_smallest_in_the_middle():
    d, _ = check_json("--eps-sweep", SMOOTH[0], *SMOOTH[1])
    sweep = d["sweep"]
    eps = [row["eps"] for row in sweep]
    assert len(sweep) >= 8
    assert eps == sorted(eps, reverse=True) and eps[0] >= 1e-2 and eps[-1] <= 1e-10
    errs = [row["max_abs_err"] for row in sweep]
    best = int(np.argmin(errs))
    assert 0 < best < len(sweep) - 1
    assert 1e-7 <= eps[best] <= 1e-4  # around eps^(1/3) of float64 for central differences
    # truncation at large steps, rounding at tiny ones: both much worse than the best
    assert errs[0] > 1e3 * errs[best] and errs[-1] > 1e3 * errs[best]
    # from the largest step down to the best, the error falls (truncation ~ h^2)
    assert errs[0] > errs[1] > errs[2] > errs[3]
    for row in sweep:
        assert set(row) == {"eps", "max_abs_err", "max_rel_err"}
    t = cli("check", "--eps-sweep", SMOOTH[0], *SMOOTH[1])
    assert t.code == 0 and "smallest error" in t.out
    assert len([line for line in t.out.splitlines() if line.strip().startswith("1e-")]) == \
        len(sweep)


def test_eps_sweep_absent_without_the_flag():
    d, _ = check_json(SMOOTH[0], *SMOOTH[1])
    assert "sweep" not in d


# ---------------------------------------------------------------- --wrt, --eps, --atol, --rtol

def test_wrt_limits_the_inputs():
    program, bindings = PROGRAMS[4]
    d, _ = check_json("--wrt", "x,b", program, *bindings)
    assert {res["wrt"] for res in d["results"]} == {"x", "b"}
    assert len(d["results"]) == 2 + 3
    d, _ = check_json("--wrt", "W", program, *bindings)
    assert [tuple(res["index"]) for res in d["results"]] == \
        [(i, j) for i in range(3) for j in range(2)]
    # a named intermediate value
    d, _ = check_json("--wrt", "a", "a = x*y; f = a*a", "x=2", "y=3")
    assert [(res["wrt"], res["analytic"]) for res in d["results"]] == [("a", 12.0)]
    d, _ = check_json("--fast", "--wrt", "x", program, *bindings)
    assert {p["wrt"] for p in d["projections"]} == {"x"}


def test_wrt_unknown_name_is_an_error():
    r = cli("check", "--wrt", "q", "x*y", "x=2", "y=3")
    assert r.code == 2 and "q" in r.err and r.out == ""


def test_eps_atol_rtol_change_the_verdict():
    prog = ["sum(exp(x))", "x=[1,2]"]
    d, _ = check_json(*prog)
    assert d["ok"] is True
    # a huge step: central differences' truncation error (~ h^2/6 * exp) fails the check
    d, _ = check_json("--eps", "0.5", *prog, code=1)
    assert d["eps"] == 0.5
    assert all(res["status"] == "fail" for res in d["results"])
    err = d["max_abs_err"]
    assert err > 0.1
    # a loose atol accepts the same numbers
    d2, _ = check_json("--eps", "0.5", "--atol", str(2 * err), *prog)
    assert d2["ok"] is True and d2["atol"] == 2 * err
    # ... and so does a loose rtol (the relative error is about h^2/6: 4% at x=1 where
    # h = 0.5, 15% at x=2 where the step is relative, h = 0.5 * 2)
    d3, _ = check_json("--eps", "0.5", "--rtol", "0.3", *prog)
    assert d3["ok"] is True and d3["rtol"] == 0.3
    # a step that is merely large passes the default tolerance no longer, but loosely yes
    d4, _ = check_json("--eps", "1e-2", *prog, code=1)
    d5, _ = check_json("--eps", "1e-2", "--rtol", "1e-3", *prog)
    assert d5["ok"] is True and d4["max_rel_err"] < 1e-3


def test_zero_tolerances_allow_only_the_rounding_floor():
    # rounding (about eps |f| / h) is inherent to a difference and always allowed ...
    d, _ = check_json("--atol", "0", "--rtol", "0", SMOOTH[0], *SMOOTH[1])
    assert d["max_abs_err"] < 1e-8
    # ... truncation is not: a large step's error fails at zero tolerance
    d, _ = check_json("--atol", "0", "--rtol", "0", "--eps", "1e-3", SMOOTH[0], *SMOOTH[1],
                      code=1)
    assert 1e-8 < d["max_abs_err"] < 1e-4  # the step's error, not a wrong gradient


def test_forward_method_uses_its_own_default_eps():
    d, _ = check_json("--method", "forward", "sum(x*x)", "x=[1,2]")
    assert d["eps"] == pytest.approx(np.finfo(float).eps ** 0.5)
    d, _ = check_json("--method", "central", "sum(x*x)", "x=[1,2]")
    assert d["eps"] == pytest.approx(np.finfo(float).eps ** (1 / 3))


# ---------------------------------------------------------------- nan

def test_a_point_where_the_output_is_not_finite_cannot_be_checked():
    # sqrt outside its domain is nan; 1/0 is inf: no difference quotient means anything
    # there, so the check refuses the point (bad input), after the engine's warning
    r = cli("check", "--format", "json", "sqrt(x)", "x=-2")
    assert r.code == 2 and r.out == "", r
    assert "outside its domain" in r.err and "is nan at this point" in r.err
    assert "internal error" not in r.err and "RuntimeWarning" not in r.err
    r = cli("check", "1/x", "x=0")
    assert r.code == 2 and "is inf at this point" in r.err, r


def test_sqrt_at_zero_is_a_kink_not_a_fail():
    d, r = check_json("sum(sqrt(x) * w)", "x=[0,1]", "w=[1,2]")
    by = {(res["wrt"], tuple(res["index"])): res for res in d["results"]}
    assert by[("x", (0,))]["status"] == "kink"
    assert by[("x", (0,))]["analytic"] == "inf"
    assert KINK_NOTE in r.err


def test_failing_summary_is_not_excellent():
    d, _ = check_json("--ops", BUGGY, "sum(TanhGate(x))", "x=[0.5,1.5]", code=1)
    assert {res["status"] for res in d["results"]} == {"fail"}
    assert d["grade"] == "wrong" and d["max_abs_err"] > 0.1


def test_python_api_check():
    rep = gradcli.check("sum(tanh(W @ x + b))", W=np.array([[0.5, -1.2], [0.3, 0.8]]),
                        x=np.array([0.5, -1.0]), b=0.1)
    assert rep.ok and rep.blame == [] and [ic.name for ic in rep.inputs] == ["W", "x", "b"]
    assert rep.max_rel_err < 1e-7
    ops = gradcli.load_ops(BUGGY)
    rep = gradcli.check("sum(TanhGate(x) * c)", x=np.array([0.3, -0.2]), c=np.array([1., 2.]),
                        ops=ops)
    assert not rep.ok and [b["op"] for b in rep.blame] == ["TanhGate"]


# ---------------------------------------------------------------- hostile input (issue 12)

def _statuses_and_grades_agree(d):
    for res in d["results"]:
        if res["status"] == "ok":
            assert res["grade"] in ("excellent", "fine"), res
        elif res["status"] == "fail":
            assert res["grade"] in ("suspicious", "wrong"), res
        else:
            assert res["grade"] == "-", res
    fails = any(res["status"] == "fail" for res in d["results"])
    assert d["ok"] is (not fails and all(p["status"] != "fail"
                                         for p in d.get("projections", [])))
    assert d["grade"] in (("suspicious", "wrong") if not d["ok"] else ("excellent", "fine"))


@pytest.mark.parametrize("layout", ["fortran", "transposed-view", "strided", "read-only"])
def test_every_layout_checks_the_same(tmp_path, layout):
    rng = np.random.default_rng(3)
    W, x = rng.normal(size=(4, 5)), rng.normal(size=5)
    if layout == "fortran":
        Wl = np.asfortranarray(W)
    elif layout == "transposed-view":
        Wl = np.ascontiguousarray(W.T).T
    elif layout == "strided":
        Wl = np.repeat(W, 2, axis=1)[:, ::2]
    else:
        Wl = W.copy()
        Wl.flags.writeable = False
    assert np.array_equal(Wl, W)
    base = gradcli.check("sum(tanh(W @ x))", W=W, x=x)
    r = gradcli.check("sum(tanh(W @ x))", W=Wl, x=x)
    assert base.ok and r.ok
    for a, b in zip(base.inputs, r.inputs):
        np.testing.assert_allclose(a.numeric, b.numeric, rtol=1e-9, atol=1e-12)


def test_a_fortran_order_npy_file_checks_the_same(tmp_path):
    rng = np.random.default_rng(4)
    W, x = rng.normal(size=(5, 3)), rng.normal(size=5)
    np.save(tmp_path / "WT.npy", W.T)         # W.T is W's buffer in Fortran order
    np.save(tmp_path / "x.npy", x)
    d, _ = check_json("sum(tanh(W @ x))", f"W=@{tmp_path / 'WT.npy'}",
                      f"x=@{tmp_path / 'x.npy'}")
    assert d["ok"] and d["blame"] == []
    assert all(abs(res["numeric"]) > 1e-6 for res in d["results"] if res["wrt"] == "W")
    # a relu at 0 in such an array is a kink, not a fail
    R = np.array([[0.0, 1.0], [2.0, -1.0]])
    np.save(tmp_path / "R.npy", np.asfortranarray(R))
    d, _ = check_json("sum(relu(R))", f"R=@{tmp_path / 'R.npy'}")
    assert [res["status"] for res in d["results"]] == ["kink", "ok", "ok", "ok"]


@pytest.mark.parametrize("program,binding", [
    ("sin(x)", "x=100000"), ("sin(x)", "x=10000"), ("cos(x) * x", "x=-31415.9"),
    ("softmax(x)[0]", "x=[3000,3001,3002]"), ("sum(softmax(x) * c)", "x=[3000,3001,3002]"),
    ("logsumexp(x)", "x=[10000,10001,10002]"), ("exp(x / 1000)", "x=5000"),
])
def test_steps_keep_truncation_bounded_at_any_scale(program, binding):
    extra = ["c=[1,-2,0.5]"] if "c)" in program else []
    d, _ = check_json(program, binding, *extra)
    assert d["ok"] and d["blame"] == []
    _statuses_and_grades_agree(d)
    # the analytic gradient against the numeric one the ladder settled on
    for res in d["results"]:
        assert res["abs_err"] <= 1e-6 + 1e-5 * abs(res["numeric"])


@pytest.mark.parametrize("program,binding,kind", [
    ("1/x", "x=1e-8", None),                     # the step shrinks below the pole's distance
    ("tan(x)", "x=1.5707963267948966", "pole"),  # closer to the pole than any float step
    ("asin(x)", "x=1", "edge"),                  # x + h leaves the domain
    ("acos(x) * 2", "x=-1", "edge"),
])
def test_poles_and_domain_edges_are_not_blamed(program, binding, kind):
    d, r = check_json(program, binding)
    assert d["ok"] is True and d["blame"] == []
    _statuses_and_grades_agree(d)
    statuses = [res["status"] for res in d["results"]]
    if kind is None:
        assert statuses == ["ok"]
    else:
        assert statuses == ["kink"]
        t = cli("check", program, binding)
        assert t.code == 0 and f"{'pole' if kind == 'pole' else 'domain edge'} at x" in t.out
        assert "not a wrong backward" in t.out or "domain" in t.out
        assert cli("check", "--strict", program, binding).code == 1


@pytest.mark.parametrize("bindings", [["x=0", "y=0"], ["x=-2", "y=2"], ["x=0", "y=2"],
                                      ["x=-8", "y=0.5"]])
def test_grade_status_and_verdict_always_agree(bindings):
    r = cli("check", "--format", "json", "x**y", *bindings)
    assert r.code in (0, 1, 2)
    if r.code == 2:  # the output itself is not finite: refused as bad input
        return
    d = json.loads(r.out)
    _statuses_and_grades_agree(d)
    t = cli("check", "x**y", *bindings)
    verdict = t.out.strip().splitlines()[-1]
    assert verdict.startswith("PASS" if d["ok"] else "FAIL")
    assert ("wrong" in verdict or "suspicious" in verdict) is (not d["ok"])


def test_a_passing_element_is_never_graded_worse_than_fine():
    # a correct gradient of ~1e-6 at 60x60: its relative error is large on CS231n's scale but
    # within the pass rule (atol): graded on the rule's scale
    rng = np.random.default_rng(0)
    W = rng.normal(size=(60, 60)) * 3
    x = rng.normal(size=60) * 3
    r = gradcli.check("sum(tanh(W @ x))", W=W, x=x)
    g = np.concatenate([ic.grades().ravel() for ic in r.inputs])
    st = np.concatenate([ic.status.ravel() for ic in r.inputs])
    assert r.ok and set(g[st == "ok"]) <= {"excellent", "fine"}
    assert r.grade in ("excellent", "fine")


def test_blame_names_only_the_wrong_op_beside_a_transposed_product():
    rng = np.random.default_rng(1)
    lib = gradcli.load_ops(BUGGY)
    r = gradcli.check("sum(TanhGate(transpose(W) * y))", W=rng.normal(size=(3, 4)),
                      y=rng.normal(size=3), ops=lib)
    assert not r.ok
    assert [b["op"] for b in r.blame] == ["TanhGate"]


def test_strict_message_says_why_it_fails():
    t = cli("check", "--strict", "relu(x) + y", "x=0", "y=1")
    assert t.code == 1
    last = t.out.strip().splitlines()[-1]
    assert last.startswith("FAIL: 1 of 2 elements at a kink, which --strict does not accept")
    assert "the other 1 agrees" in last


def test_eps_sweep_marks_the_row_with_the_smallest_error():
    t = cli("check", "--eps-sweep", "sum(exp(x) * sin(x))", "x=[0.3,1.7,-2.2]")
    lines = [ln for ln in t.out.splitlines() if re.match(r"^1e-\d\d ", ln)]
    rows = [(ln.split()[2], "smallest" in ln) for ln in lines]
    errs = [float(e) for e, _ in rows]
    marked = [k for k, (_, m) in enumerate(rows) if m]
    assert len(marked) == 1 and errs[marked[0]] == min(errs)


def test_the_report_counts_are_the_real_ones(tmp_path):
    # 60 of 100 elements wrong: the table lists 50 failures and says what is left out
    f = tmp_path / "half.py"
    f.write_text(
        "import numpy as np\n"
        "class HalfGate:\n"
        "    def forward(self, x):\n"
        "        self.x = x\n"
        "        return x * x\n"
        "    def backward(self, dz):\n"
        "        g = 2 * self.x * dz\n"
        "        g.reshape(-1)[:60] *= 3\n"
        "        return [g]\n")
    x = ",".join(str(1 + k / 10) for k in range(100))
    t = cli("check", "--ops", str(f), "sum(HalfGate(x))", f"x=[{x}]")
    assert t.code == 1
    assert "60 failed" in t.out and "40 ok" in t.out
    assert "… 10 more failed, 40 more ok (--all lists every element)" in t.out
    assert "FAIL: 60 of 100 elements disagree" in t.out


def test_bad_eps_is_bad_input():
    for eps in ("1e-320", "0", "-1", "nan", "2"):
        r = cli("check", "--eps", eps, "x*2", "x=1")
        assert r.code == 2 and r.err.startswith("error: "), (eps, r)


def test_gradcheck_and_localcheck_do_not_import_each_other():
    import ast
    from pathlib import Path

    root = Path(gradcli.__file__).parent
    for mod, other in (("gradcheck", "localcheck"), ("localcheck", "gradcheck")):
        tree = ast.parse((root / f"{mod}.py").read_text())
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                names.add(node.module or "")
                names.update(a.name for a in node.names)
        assert other not in names or mod == "gradcheck" and other == "localcheck" and \
            "blame" in (root / "gradcheck.py").read_text(), (mod, names)
    tree = ast.parse((root / "localcheck.py").read_text())
    assert not any(isinstance(n, ast.ImportFrom) and n.module == "gradcheck"
                   for n in ast.walk(tree))


# ---------------------------------------------------------------- no blind spot: state

STATEFUL = '''
import numpy as np

class UsedUp:
    """backward pops what forward saved: a second call has nothing left"""
    def forward(self, x):
        self.saved = [np.cos(x)]
        return np.sin(x)
    def backward(self, dz):
        c = self.saved.pop() if self.saved else np.zeros_like(dz)
        return [c * dz]

class WritesUpstream:
    def forward(self, x):
        self.c = np.cos(x)
        return np.sin(x)
    def backward(self, dz):
        dz = np.asarray(dz)
        dz.flags.writeable = True if dz.base is None or dz.base.flags.writeable else False
        try:
            dz *= self.c
            return [dz]
        except ValueError:
            return [dz * self.c]

class Remembers:
    """forward keeps a running count across calls (a class attribute)"""
    calls = 0
    def forward(self, x):
        type(self).calls += 1
        self.x = x
        return x * type(self).calls
    def backward(self, dz):
        return [dz * type(self).calls]
'''


@pytest.mark.parametrize("op,words", [
    ("UsedUp", "another answer when called a second time"),
    ("WritesUpstream", "writes into its upstream gradient"),
    ("Remembers", "depends on state from a previous call"),
])
def test_state_bugs_of_a_gate_fail_the_check_with_their_own_message(tmp_path, op, words):
    f = tmp_path / "stateful.py"
    f.write_text(STATEFUL)
    t = cli("check", "--ops", str(f), f"sum({op}(x) * c)", "x=[0.3,-0.4]", "c=[1.5,2]")
    assert t.code == 1, t.out + t.err
    assert words in t.out
