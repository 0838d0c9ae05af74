"""The commands ``eval``, ``grad`` and ``ops`` end to end.

Most tests run twice, through the ``gc`` fixture: once in process with Click's ``CliRunner``
(``gradcli.cli.main``) and once as a real subprocess of the installed console script, run from
a temporary directory (so it imports the installed package and stdout/stderr are pipes).
Both give a :class:`Out` (exit code, stdout, stderr, exception), so one test checks both.

What is checked: the worked examples against the exact JSON/CSV shapes of SPEC, every option,
every value syntax, that every class of bad input exits 2 with one ``error:`` message on
stderr (a caret under the right column for errors in the program) and never a traceback,
plain output when piped or with NO_COLOR, and deep and big programs.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import Out, bad, cli, run

ANSI = re.compile(r"\x1b\[")
NOTE_ONES = ("note: f has shape (2,), not a scalar: the reverse pass starts from ones, so "
             "these are the gradients of sum(f)")


@pytest.fixture
def sub(gradcli_exe, tmp_path):
    """gradcli as a real subprocess of the installed script, cwd a temporary directory."""

    def call(*args, input=None, env=None, cwd=None):
        p = run(gradcli_exe, *[str(a) for a in args], input=input, cwd=cwd or tmp_path,
                env=env)
        return Out(p.returncode, p.stdout, p.stderr)

    return call


@pytest.fixture(params=["runner", "process"])
def gc(request, sub, tmp_path, monkeypatch):
    """Both ways to run gradcli; the working directory is tmp_path either way."""
    monkeypatch.chdir(tmp_path)
    if request.param == "runner":
        return lambda *args, input=None, env=None: cli(*args, input=input, env=env)
    return sub


@pytest.fixture
def rc(tmp_path, monkeypatch):
    """gradcli in process only (the many small cases), working directory tmp_path."""
    monkeypatch.chdir(tmp_path)
    return lambda *args, input=None, env=None: cli(*args, input=input, env=env)


def ok(r):
    assert r.code == 0, f"exit {r.code}\nstdout:\n{r.out}\nstderr:\n{r.err}"
    assert r.exception is None
    assert "Traceback" not in r.err
    return r


def js(r):
    ok(r)
    return json.loads(r.out)


def usage_error(r, *fragments):
    """A usage error in gradcli's style: exit 2, one 'error:' line then a 'hint:' line."""
    assert r.code == 2, f"exit {r.code}\nstdout:\n{r.out}\nstderr:\n{r.err}"
    assert r.exception is None
    assert "Traceback" not in r.err
    assert r.out == ""
    lines = r.err.splitlines()
    assert lines[0].startswith("error: "), r.err
    assert sum(line.startswith("error") for line in lines) == 1, r.err
    assert lines[1].startswith("hint: "), r.err
    for f in fragments:
        assert f in r.err, f"{f!r} not in stderr:\n{r.err}"


def caret_at(err, source_line, line, column):
    """The message says 'line L, column C', shows the line and a caret under column C."""
    lines = err.splitlines()
    assert f"line {line}, column {column}:" in lines[0], err
    assert len(lines) == 3, err
    assert lines[1] == "  " + source_line, err
    assert lines[2].rstrip() == " " * (2 + column - 1) + "^", err


# ====================================================================== worked examples

EX1 = ["(x+y)*max(y,z)", "x=1", "y=2", "z=0"]

EX1_NODES = [
    {"id": 0, "name": "x", "op": "var", "inputs": [], "value": 1.0, "shape": [], "text": "x"},
    {"id": 1, "name": "y", "op": "var", "inputs": [], "value": 2.0, "shape": [], "text": "y"},
    {"id": 2, "name": None, "op": "add", "inputs": [0, 1],
     "value": 3.0, "shape": [], "text": "x+y"},
    {"id": 3, "name": "z", "op": "var", "inputs": [], "value": 0.0, "shape": [], "text": "z"},
    {"id": 4, "name": None, "op": "max", "inputs": [1, 3],
     "value": 2.0, "shape": [], "text": "max(y,z)"},
    {"id": 5, "name": "f", "op": "mul", "inputs": [2, 4],
     "value": 6.0, "shape": [], "text": "(x+y)*max(y,z)"},
]
EX1_GRADS = {0: 2.0, 1: 5.0, 2: 2.0, 3: 0.0, 4: 3.0, 5: 1.0}


def test_eval_worked_example_json(gc):
    r = gc("eval", "--format", "json", *EX1)
    assert json.loads(ok(r).out) == {"output": "f", "value": 6.0, "shape": [],
                                     "nodes": EX1_NODES}
    assert r.err == ""


def test_grad_worked_example_json(gc):
    r = gc("grad", "--format", "json", *EX1)
    nodes = [dict(n, grad=EX1_GRADS[n["id"]]) for n in EX1_NODES]
    assert json.loads(ok(r).out) == {"output": "f", "value": 6.0, "shape": [], "nodes": nodes,
                                     "gradients": {"x": 2.0, "y": 5.0, "z": 0.0}}
    assert r.err == ""


def test_worked_example_tables(gc):
    out = ok(gc("eval", *EX1)).out
    assert out.splitlines()[-1] == "f = 6"
    out = ok(gc("grad", *EX1)).out
    rows = {line.split()[0]: line.split(None, 2)[2] for line in out.splitlines()
            if line.split() and line.split()[0] in ("x", "y", "z")}
    assert rows == {"x": "2", "y": "2 (via x+y) + 3 (via max(y,z)) = 5", "z": "0"}


def test_grad_second_example_json(rc):
    d = js(rc("grad", "--format", "json", "(x+y)*z", "x=1", "y=3", "z=-3"))
    assert d["output"] == "f" and d["value"] == -12.0 and d["shape"] == []
    assert d["gradients"] == {"x": -3.0, "y": -3.0, "z": 4.0}
    assert [(n["op"], n["inputs"], n["value"], n["grad"]) for n in d["nodes"]] == [
        ("var", [], 1.0, -3.0), ("var", [], 3.0, -3.0), ("add", [0, 1], 4.0, -3.0),
        ("var", [], -3.0, 4.0), ("mul", [2, 3], -12.0, 1.0)]


def test_eval_second_example_csv(rc):
    r = ok(rc("eval", "--format", "csv", "(x+y)*z", "x=1", "y=3", "z=-3"))
    assert r.out == ("id,name,op,inputs,shape,value\n"
                     "0,x,var,,,1.0\n"
                     "1,y,var,,,3.0\n"
                     "2,,add,0 1,,4.0\n"
                     "3,z,var,,,-3.0\n"
                     "4,f,mul,2 3,,-12.0\n")


def test_grad_second_example_csv(gc):
    r = ok(gc("grad", "--format", "csv", "(x+y)*z", "x=1", "y=3", "z=-3"))
    assert r.out == ("variable,index,value,gradient\n"
                     "f,,-12.0,1.0\n"          # the output: its value, its seed d f/d f
                     "x,,1.0,-3.0\n"
                     "y,,3.0,-3.0\n"
                     "z,,-3.0,4.0\n")
    assert r.err == ""  # a scalar output: no note


def test_vector_example_json_notes_ones(gc):
    r = gc("grad", "--format", "json", "x**2 + 2*x + 1", "x=[2,3]")
    d = js(r)
    assert r.err.strip() == NOTE_ONES
    assert d["value"] == [9.0, 16.0] and d["shape"] == [2]
    assert d["gradients"] == {"x": [6.0, 8.0]}
    assert set(d) == {"output", "value", "shape", "nodes", "gradients"}
    for n in d["nodes"]:
        assert set(n) == {"id", "name", "op", "inputs", "value", "shape", "grad", "text"}
    out = d["nodes"][-1]
    assert out["name"] == "f" and out["grad"] == [1.0, 1.0]
    x = d["nodes"][0]
    assert (x["name"], x["shape"], x["value"], x["grad"]) == ("x", [2], [2.0, 3.0], [6.0, 8.0])


def test_vector_example_csv_notes_ones(gc):
    r = ok(gc("grad", "--format", "csv", "x**2 + 2*x + 1", "x=[2,3]"))
    assert r.out == ("variable,index,value,gradient\nf,0,9.0,1.0\nf,1,16.0,1.0\n"
                     "x,0,2.0,6.0\nx,1,3.0,8.0\n")
    assert r.err.strip() == NOTE_ONES


def test_vector_example_table_says_ones(rc):
    r = ok(rc("grad", "x**2 + 2*x + 1", "x=[2,3]"))
    assert r.out.splitlines()[-1] == NOTE_ONES


def test_eval_csv_arrays_and_shapes(rc):
    r = ok(rc("eval", "--format", "csv", "x*y", "x=[[1,2]]", "y=2"))
    assert r.out == ('id,name,op,inputs,shape,value\n'
                     '0,x,var,,1x2,"[[1.0, 2.0]]"\n'
                     '1,y,var,,,2.0\n'
                     '2,f,mul,0 1,1x2,"[[2.0, 4.0]]"\n')


def test_grad_csv_matrix_index(rc):
    r = ok(rc("grad", "--format", "csv", "sum(x*y)", "x=[[1,2]]", "y=2"))
    assert r.out == ('variable,index,value,gradient\n'
                     'f,,6.0,1.0\n'
                     'x,"0,0",1.0,2.0\n'
                     'x,"0,1",2.0,2.0\n'
                     'y,,2.0,3.0\n')


def test_nodes_in_topological_order(rc):
    prog = "a = x * y; b = a - y; c = exp(b) * a; f = sum([a, b, c]) + max(x, c)"
    d = js(rc("grad", "--format", "json", prog, "x=0.5", "y=2"))
    ids = [n["id"] for n in d["nodes"]]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    seen = set()
    for n in d["nodes"]:
        assert set(n["inputs"]) <= seen, n
        seen.add(n["id"])
    assert d["nodes"][-1]["name"] == d["output"] == "f"
    named = {n["name"]: n for n in d["nodes"] if n["name"]}
    assert {"a", "b", "c", "x", "y", "f"} <= set(named)
    a, b = 1.0, -1.0
    c = np.exp(b) * a
    assert d["value"] == pytest.approx(a + b + c + max(0.5, c))


def test_python_m_gradcli(tmp_path):
    p = run([sys.executable, "-m", "gradcli"], "grad", "--format", "json", *EX1, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["gradients"] == {"x": 2.0, "y": 5.0, "z": 0.0}
    p = run([sys.executable, "-m", "gradcli"], "--help", cwd=tmp_path)
    assert p.returncode == 0 and "Usage: gradcli" in p.stdout


def test_version(rc):
    r = ok(rc("--version"))
    assert r.out.startswith("gradcli, version ")


# ---------------------------------------------------------------------- ops

SPEC_OPS = ("exp log sqrt sin cos tan asin acos atan sinh cosh tanh sigmoid relu softplus abs "
            "add sub mul div pow max min sum mean matmul dot transpose softmax logsumexp").split()


def test_ops_json(rc):
    d = js(rc("ops", "--format", "json"))
    rows = d["ops"]
    assert {r["name"] for r in rows} >= set(SPEC_OPS)
    for r in rows:
        assert {"name", "call", "arity", "derivative", "kinks", "domain"} <= set(r)
        # an elementwise op's local derivative (d/dx = ...), or what each input gets from
        # the upstream gradient g (x gets ...)
        assert r["derivative"].startswith("d/d") or " gets " in r["derivative"], r
    by_call = {r["call"]: r for r in rows}
    assert by_call["relu(x)"]["kinks"] and by_call["log(x)"]["domain"]
    assert by_call["max(a, b)"]["arity"] == 2
    assert by_call["max(x, axis=None, keepdims=false)"]["arity"] == 1


def test_ops_csv_and_table(rc):
    r = ok(rc("ops", "--format", "csv"))
    lines = r.out.splitlines()
    assert lines[0] == "name,call,arity,torch,derivative,kinks,domain"
    assert {line.split(",")[0] for line in lines[1:]} >= set(SPEC_OPS)
    r = ok(rc("ops"))
    header = r.out.splitlines()[0].split()
    assert header[:4] == ["op", "call", "PyTorch", "derivative"]
    for op in SPEC_OPS:
        assert re.search(rf"^{op}\s", r.out, re.M), op


# ====================================================================== options

def test_program_from_file(rc, tmp_path):
    (tmp_path / "prog.gc").write_text("# a comment\na = x * y\nf = a + 1   # the output\n")
    d = js(rc("eval", "--format", "json", "-f", "prog.gc", "x=2", "y=3"))
    assert d["value"] == 7.0 and d["output"] == "f"
    d = js(rc("grad", "--format", "json", "--file", str(tmp_path / "prog.gc"), "x=2", "y=3"))
    assert d["gradients"] == {"x": 3.0, "y": 2.0}


def test_program_from_stdin(gc):
    d = js(gc("grad", "--format", "json", "-f", "-", "x=4", input="a = x * 2\nf = a * a\n"))
    assert d["value"] == 64.0 and d["gradients"] == {"x": 32.0}
    d = js(gc("eval", "--format", "json", "-", "x=4", input="x * 2\n"))
    assert d["value"] == 8.0


def test_file_program_takes_no_expr(rc, tmp_path):
    (tmp_path / "p.gc").write_text("x * 2\n")
    bad(rc("eval", "-f", "p.gc", "x*y", "x=1"), "expected NAME=VALUE", "'x*y'", "-f")


def test_values_file_json_and_override(rc, tmp_path):
    (tmp_path / "v.json").write_text(json.dumps({"x": [1, 2], "y": 3, "t": "nan"}))
    d = js(rc("eval", "--format", "json", "--values", "v.json", "x*y + 0*t"))
    assert d["value"] == ["nan", "nan"]
    d = js(rc("eval", "--format", "json", "--values", "v.json", "x*y", "y=10", "t=1"))
    assert d["value"] == [10.0, 20.0]


def test_values_file_npz(rc, tmp_path):
    np.savez(tmp_path / "v.npz", W=np.array([[1.0, 2.0], [3.0, 4.0]]), x=np.array([1.0, -1.0]))
    d = js(rc("grad", "--format", "json", "--values", "v.npz", "sum(W @ x)"))
    assert d["value"] == -2.0
    assert d["gradients"] == {"W": [[1.0, -1.0], [1.0, -1.0]], "x": [4.0, 6.0]}
    d = js(rc("eval", "--format", "json", "--values", "v.npz", "sum(W @ x)", "x=[1,1]"))
    assert d["value"] == 10.0


def test_values_file_errors(rc, tmp_path):
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "broken.json").write_text('{"x": [1, 2}')
    np.savez(tmp_path / "obj.npz", x=np.array([1, "a", None], dtype=object))
    bad(rc("eval", "--values", "missing.json", "x"), "missing.json")
    bad(rc("eval", "--values", "list.json", "x"), "list.json", "JSON object")
    bad(rc("eval", "--values", "broken.json", "x"), "broken.json", "line 1")
    bad(rc("eval", "--values", "obj.npz", "x"), "obj.npz")


def test_wrt_chooses_variables(rc):
    d = js(rc("grad", "--format", "json", "--wrt", "y", *EX1))
    assert d["gradients"] == {"y": 5.0}
    d = js(rc("grad", "--format", "json", "--wrt", "z,x", *EX1))
    assert d["gradients"] == {"z": 0.0, "x": 2.0}


def test_wrt_named_intermediate(rc):
    # a = x*y = 6 fans out into a*a: df/da = 2a = 12, the upstream arriving at a
    d = js(rc("grad", "--format", "json", "--wrt", "a", "a = x*y; f = a*a", "x=2", "y=3"))
    assert d["gradients"] == {"a": 12.0}
    assert [n["grad"] for n in d["nodes"] if n["name"] == "a"] == [12.0]
    out = ok(rc("grad", "--wrt", "a,x", "a = x*y; f = a*a", "x=2", "y=3")).out
    assert re.search(r"^a\s+scalar\s+.*= 12$", out, re.M), out
    assert re.search(r"^x\s+scalar\s+36$", out, re.M), out


def test_wrt_unknown_name(rc):
    err = bad(rc("grad", "--wrt", "q", "a = x*y; f = a*2", "x=1", "y=2"), "q")
    assert "--wrt" in err
    usage_error(rc("grad", "--wrt", ",", "x*y", "x=1", "y=2"), "--wrt")


def test_upstream_weights_the_gradient(rc, tmp_path):
    r = rc("grad", "--format", "json", "--upstream", "[1,10]", "x**2", "x=[2,3]")
    d = js(r)
    assert d["gradients"] == {"x": [4.0, 60.0]}
    assert d["nodes"][-1]["grad"] == [1.0, 10.0]
    assert "note" not in r.err  # not from ones
    d = js(rc("grad", "--format", "json", "--upstream", "2", "x*x", "x=3"))
    assert d["gradients"] == {"x": 12.0}
    np.save(tmp_path / "u.npy", np.array([0.5, -1.0]))
    d = js(rc("grad", "--format", "json", "--upstream", "@u.npy", "x**2", "x=[2,3]"))
    assert d["gradients"] == {"x": [2.0, -6.0]}


def test_upstream_wrong_shape_or_value(rc):
    bad(rc("grad", "--upstream", "[1,2,3]", "x**2", "x=[2,3]"), "--upstream", "(3,)", "(2,)")
    bad(rc("grad", "--upstream", "[1,2]", "x*y", "x=1", "y=2"), "--upstream", "(2,)")
    bad(rc("grad", "--upstream", "abc", "x*y", "x=1", "y=2"), "--upstream", "'abc'")


def test_upstream_scalar_shown_in_table(rc):
    out = ok(rc("grad", "--upstream", "2", "x*x", "x=3")).out
    first = out.splitlines()[2]
    assert first.split()[:4] == ["1", "f", "9", "2"], out


def test_local_gradient_text_has_single_parentheses(rc):
    out = ok(rc("grad", "tanh(x + y)", "x=1", "y=2")).out
    assert "∂/∂(x + y) = 1 - tanh(x + y)^2 = " in out, out


def test_output_option(rc):
    d = js(rc("eval", "--format", "json", "--output", "a", "a = x*y; f = a+1", "x=2", "y=3"))
    assert d["output"] == "a" and d["value"] == 6.0
    assert [n["name"] for n in d["nodes"]] == ["x", "y", "a"]
    d = js(rc("grad", "--format", "json", "--output", "a", "a = x*y; f = a+1", "x=2", "y=3"))
    assert d["gradients"] == {"x": 3.0, "y": 2.0}
    bad(rc("eval", "--output", "q", "a = x*y; f = a+1", "x=2", "y=3"), "--output", "q")


def test_dtype_float32(rc):
    args = ["sum(sin(x) * y) + x**3", "x=0.3", "y=[1, 2.5]"]
    r32 = rc("grad", "--format", "json", "--dtype", "float32", *args)
    r64 = rc("grad", "--format", "json", *args)
    d32, d64 = js(r32), js(r64)
    assert d32["nodes"][0]["value"] == float(np.float32(0.3)) != 0.3
    assert d64["nodes"][0]["value"] == 0.3
    assert d32["value"] == pytest.approx(d64["value"], rel=1e-6)
    for k in d64["gradients"]:
        assert np.allclose(d32["gradients"][k], d64["gradients"][k], rtol=1e-6, atol=1e-7)
    assert d64["gradients"]["x"] == pytest.approx(3.5 * np.cos(0.3) + 3 * 0.3**2)
    d = js(rc("eval", "--format", "json", "--dtype", "float32", "x/3", "x=1"))
    assert d["value"] == float(np.float32(1) / np.float32(3))


def test_debug_shows_tracebackrunner():
    r = cli("eval", "--debug", "x +* y", "x=1", "y=2")
    from gradcli.errors import GradcliError
    assert isinstance(r.exception, GradcliError)
    assert r.code != 0
    assert "column 4" in str(r.exception)
    r = cli("eval", "--debug", "x", "x=[1,")
    assert isinstance(r.exception, GradcliError)
    r = cli("eval", "--debug", "x", "x=1")
    assert r.code == 0 and r.exception is None


def test_debug_shows_traceback_process(sub):
    r = sub("eval", "--debug", "x +* y", "x=1", "y=2")
    assert r.code != 0
    assert "Traceback (most recent call last)" in r.err
    assert "ParseError" in r.err
    r = sub("eval", "x +* y", "x=1", "y=2")
    assert r.code == 2 and "Traceback" not in r.err


def test_expr_starting_with_minus(gc):
    d = js(gc("grad", "--format", "json", "--", "-x**2", "x=3"))
    assert d["value"] == -9.0 and d["gradients"] == {"x": -6.0}
    d = js(gc("eval", "--format", "json", "--", "-x + 1", "x=3"))
    assert d["value"] == -2.0


# ---------------------------------------------------------------------- bindings

@pytest.mark.parametrize("text, value", [
    ("1", 1.0), ("-3", -3.0), ("2.5e-3", 0.0025), ("nan", "nan"), ("inf", "inf"),
    ("-inf", "-inf"), ("[1,2,3]", [1.0, 2.0, 3.0]), ("[[1,2],[3,4]]", [[1.0, 2.0], [3.0, 4.0]]),
    ("[nan, inf, -inf, 1]", ["nan", "inf", "-inf", 1.0]), ("[[1.5]]", [[1.5]]),
])
def test_binding_values(rc, text, value):
    d = js(rc("eval", "--format", "json", "x", f"x={text}"))
    assert d["value"] == value
    assert d["nodes"][0]["value"] == value
    assert d["shape"] == list(np.shape(np.array(value, dtype=object)))


def test_nonfinite_values_in_json(rc):
    r = rc("grad", "--format", "json", "x * y", "x=inf", "y=[0, 1, -1]")
    d = js(r)
    assert d["value"] == ["nan", "inf", "-inf"]
    assert d["gradients"] == {"x": 0.0, "y": ["inf", "inf", "inf"]}
    json.loads(r.out, parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))


def test_binding_files(gc, tmp_path):
    np.save(tmp_path / "W.npy", np.array([[1.0, 2.0], [3.0, 4.0]]))
    (tmp_path / "d.csv").write_text("1,2\n3,4\n")
    (tmp_path / "v.json").write_text("[0.5, -1]")
    (tmp_path / "x.txt").write_text("1 2\n3 4\n")
    (tmp_path / "s.txt").write_text("7\n")
    d = js(gc("grad", "--format", "json", "sum(W @ v) + sum(C * T) + s",
              "W=@W.npy", "C=@d.csv", "v=@v.json", "T=@x.txt", "s=@s.txt"))
    assert d["value"] == -1.5 - 2.5 + 30.0 + 7.0
    assert d["gradients"]["W"] == [[0.5, -1.0], [0.5, -1.0]]
    assert d["gradients"]["C"] == [[1.0, 2.0], [3.0, 4.0]]
    assert d["gradients"]["v"] == [4.0, 6.0]
    assert d["gradients"]["s"] == 1.0
    shapes = {n["name"]: n["shape"] for n in d["nodes"] if n["op"] == "var"}
    assert shapes == {"W": [2, 2], "C": [2, 2], "v": [2], "T": [2, 2], "s": []}


def test_pickled_npy_is_refused(gc, tmp_path):
    np.save(tmp_path / "obj.npy", np.array([1, "a", None], dtype=object), allow_pickle=True)
    err = bad(gc("eval", "x", "x=@obj.npy"), "obj.npy")
    assert "pickle" in err.lower()


# ====================================================================== bad input

# (args, fragments the message must contain, (source line, line, column) for a caret or None)
BAD = {
    "parse-error": (["eval", "x +* y", "x=1", "y=2"], ["unexpected '*'"], ("x +* y", 1, 4)),
    "parse-error-line-2": (["grad", "a = x\nb = a +* 2", "x=1"], ["unexpected '*'"],
                           ("b = a +* 2", 2, 8)),
    "parse-error-unicode": (["eval", "θ +* 2", "θ=1"], ["unexpected '*'"], ("θ +* 2", 1, 4)),
    "parse-error-end": (["eval", "x +", "x=1"], ["end of the program"], ("x +", 1, 4)),
    "parse-error-char": (["eval", "x $ y", "x=1", "y=1"], ["'$'"], ("x $ y", 1, 3)),
    "parse-error-paren": (["eval", "x)", "x=1"], ["unexpected ')'"], ("x)", 1, 2)),
    "unknown-op": (["grad", "tanhh(x)", "x=1"], ["unknown op 'tanhh'", "did you mean tanh?"],
                   ("tanhh(x)", 1, 1)),
    "unknown-op-later": (["grad", "a = x\nb = 2 * sigmod(a)", "x=1"],
                         ["unknown op 'sigmod'", "did you mean sigmoid?"],
                         ("b = 2 * sigmod(a)", 2, 9)),
    "unbound-all": (["eval", "x*y*z"], ["unbound", "x, y, z"], None),
    "unbound-some": (["grad", "x*y*z", "y=1"], ["unbound", "x", "z"], None),
    "shape-add": (["eval", "x+y", "x=[1,2]", "y=[1,2,3]"], ["(2,)", "(3,)"], ("x+y", 1, 1)),
    "shape-matmul": (["grad", "W @ x", "W=[[1,2],[3,4]]", "x=[1,2,3]"],
                     ["matmul", "(2, 2)", "(3,)"], ("W @ x", 1, 1)),
    "shape-dot": (["grad", "dot(a, b)", "a=[1,2]", "b=[1,2,3]"], ["dot", "(2,)", "(3,)"],
                  ("dot(a, b)", 1, 1)),
    "ragged-binding": (["eval", "x", "x=[[1,2],[3]]"], ["ragged", "x"], None),
    "ragged-binding-mixed": (["eval", "x", "x=[[1,2],3]"], ["ragged", "x"], None),
    "ragged-literal": (["eval", "sum([[1,2],[3]])"], ["ragged"], ("sum([[1,2],[3]])", 1, 5)),
    "missing-npy": (["eval", "x", "x=@nope.npy"], ["nope.npy", "no such file"], None),
    "missing-program": (["eval", "-f", "nope.gc"], ["nope.gc", "no such file"], None),
    "bad-value": (["eval", "x", "x=abc"], ["x", "'abc'"], None),
    "bad-list": (["eval", "x", "x=[1,"], ["x"], None),
    "bad-list-item": (["eval", "x", 'x=[1,"a"]'], ["x", '"a"'], None),
    "upstream-shape": (["grad", "--upstream", "[1,2,3]", "x*2", "x=[1,2]"],
                       ["--upstream", "(3,)", "(2,)"], None),
    "wrt-unknown": (["grad", "--wrt", "w", "x*y", "x=1", "y=2"], ["--wrt", "w"], None),
    "empty": (["eval", ""], ["empty"], None),
    "empty-comment": (["grad", "# nothing here\n\n"], ["empty"], None),
    "empty-separators": (["eval", " ; ;"], ["empty"], None),
    "arity-tanh": (["grad", "tanh(x, y)", "x=1", "y=2"], ["tanh takes 1 argument, got 2"],
                   ("tanh(x, y)", 1, 1)),
    "arity-sum": (["eval", "2 * sum(x, 0, true, 1)", "x=[1]"],
                  ["sum takes 1 or 2 or 3 arguments, got 4"], ("2 * sum(x, 0, true, 1)", 1, 5)),
    "arity-none": (["eval", "sin()"], ["sin takes 1 argument, got 0"], ("sin()", 1, 1)),
    "index-range": (["eval", "x[5]", "x=[1,2]"], ["index 5", "size 2"], ("x[5]", 1, 1)),
    "index-too-many": (["eval", "x[0, 0]", "x=[1,2]"], ["x[0, 0]"], ("x[0, 0]", 1, 1)),
    "axis-range": (["eval", "sum(x, 3)", "x=[1,2]"], ["axis 3"], ("sum(x, 3)", 1, 1)),
    "axis-range-negative": (["eval", "mean(x, -2)", "x=[1,2]"], ["axis -2"],
                            ("mean(x, -2)", 1, 1)),
    "axis-not-integer": (["eval", "sum(x, 0.5)", "x=[1,2]"], ["axis", "whole number"],
                         ("sum(x, 0.5)", 1, 8)),
    "axis-variable": (["eval", "sum(x, a)", "x=[1,2]", "a=0"], ["axis", "constant"],
                      ("sum(x, a)", 1, 8)),
    "no-equals": (["eval", "x*y", "x=1", "y"], ["expected NAME=VALUE", "'y'"], None),
    "bad-name": (["eval", "x", "1x=3"], ["'1x'"], None),
    "bare-statement": (["eval", "x + 1; y = x", "x=1"], ["only the last statement"],
                       ("x + 1; y = x", 1, 1)),
}


def _check_bad(r, case):
    args, fragments, where = BAD[case]
    err = bad(r, *fragments)
    if where:
        caret_at(err, *where)
    else:
        assert len(err.splitlines()) == 1, err


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_input_exits_2(rc, case):
    _check_bad(rc(*BAD[case][0]), case)


# one of each kind again as a real process: exit status 2 and stderr as a shell sees them
BAD_IN_PROCESS = ["parse-error-line-2", "unknown-op", "unbound-all", "shape-matmul",
                  "ragged-binding", "missing-npy", "empty", "arity-tanh", "axis-not-integer",
                  "no-equals", "bare-statement"]


@pytest.mark.parametrize("case", BAD_IN_PROCESS)
def test_bad_input_exits_2_in_process(sub, case):
    _check_bad(sub(*BAD[case][0]), case)


def test_unreadable_files(rc, tmp_path):
    (tmp_path / "junk.npy").write_bytes(b"this is not numpy")
    (tmp_path / "bad.csv").write_text("1,2\n3\n")
    (tmp_path / "latin1.gc").write_bytes(b"x * \xff\n")
    (tmp_path / "dir").mkdir()
    bad(rc("eval", "x", "x=@junk.npy"), "junk.npy")
    bad(rc("eval", "x", "x=@bad.csv"), "bad.csv")
    bad(rc("eval", "-f", "latin1.gc", "x=1"), "latin1.gc")
    bad(rc("eval", "-f", "dir", "x=1"), "dir")


def test_bad_format_and_dtype_are_usage_errors(gc):
    usage_error(gc("eval", "--format", "xml", "x", "x=1"), "--format", "'xml'")
    usage_error(gc("grad", "--format", "yaml", "x", "x=1"), "--format")
    usage_error(gc("ops", "--format", "html"), "--format", "'html'")
    usage_error(gc("grad", "--dtype", "float16", "x", "x=1"), "--dtype", "'float16'")


def test_missing_expr_is_usage_error(rc):
    usage_error(rc("eval"), "EXPR")
    usage_error(rc("frobnicate"), "frobnicate")


def test_non_integer_index_message(rc):
    err = bad(rc("eval", "x[1.5]", "x=[1,2]"))
    assert "whole-number" in err or "'1.5'" in err, err


def test_unclosed_paren_lists_all_continuations(rc):
    err = bad(rc("eval", "(x", "x=1"), "')'")
    assert "an operator" in err or "'*'" in err, err


# ---------------------------------------------------------------------- warnings

def test_log_of_negative_warns_and_gives_nan(gc):
    r = gc("eval", "--format", "json", "log(-1)")
    d = js(r)
    assert d["value"] == "nan"
    assert r.err.startswith("warning: ") and "log(-1)" in r.err and "node 1" in r.err
    r = ok(gc("eval", "log(x)", "x=[-1,1]"))
    assert r.err.splitlines() == ["warning: node 1 log(x) (log) outside its domain (x > 0) "
                                  "gives nan in 1 of 2 elements"]
    assert r.out.splitlines()[-1] == "f = [nan, 0]"
    r = gc("grad", "--format", "json", "log(x)", "x=-1")
    assert js(r)["gradients"] == {"x": -1.0}
    assert "log(x)" in r.err


def test_unused_binding_warns(rc):
    r = rc("eval", "--format", "json", "x*y", "x=1", "y=2", "z=3")
    assert js(r)["value"] == 2.0
    assert r.err.splitlines() == ["warning: binding z is not used: the program does not use it"]
    r = ok(rc("grad", "x", "x=1", "pi=3"))
    assert "warning: binding pi is not used" in r.err


# ====================================================================== plain output

TABLE_COMMANDS = [["grad", *EX1], ["ops"], ["grad", "x +* y", "x=1", "y=2"]]


@pytest.mark.parametrize("args", TABLE_COMMANDS, ids=lambda a: a[0] + ":" + a[1][:8]
                         if len(a) > 1 else a[0])
def test_piped_output_is_plain(sub, args):
    for env in (None, {"NO_COLOR": "1"}):
        r = sub(*args, env=env)
        assert r.code in (0, 2)
        assert not ANSI.search(r.out) and not ANSI.search(r.err), repr(r.out[:200])


def test_no_color_inrunner():
    r = cli("grad", *EX1, env={"NO_COLOR": "1"})
    assert r.code == 0 and not ANSI.search(r.out)


def _on_a_terminal(gradcli_exe, tmp_path, env):
    """stdout of ``gradcli eval EX1`` written to a pseudo-terminal."""
    pty = pytest.importorskip("pty")
    master, slave = pty.openpty()
    full = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    full.update(TERM="xterm-256color", COLUMNS="200", **env)
    try:
        p = subprocess.Popen(gradcli_exe + ["eval", *EX1], stdout=slave,
                             stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                             cwd=tmp_path, env=full)
    finally:
        os.close(slave)
    chunks = []
    while True:  # read as it writes (a full pty buffer would block it); EIO once it exits
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert p.wait(timeout=60) == 0
    return b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_terminal_is_coloured_unless_no_color(gradcli_exe, tmp_path):
    assert ANSI.search(_on_a_terminal(gradcli_exe, tmp_path, {}))
    plain = _on_a_terminal(gradcli_exe, tmp_path, {"NO_COLOR": "1"})
    assert not ANSI.search(plain)
    assert "f = 6" in plain


# ====================================================================== deep and big programs

def test_deeply_nested_parentheses(gc):
    expr = "(" * 20000 + "x" + ")" * 20000
    d = js(gc("grad", "--format", "json", expr, "x=3"))
    assert d["value"] == 3.0 and d["gradients"] == {"x": 1.0}


def test_long_negation_chain():
    # Five times Python's recursion limit deep, so a recursive walk anywhere (parse, passes,
    # the JSON of the nodes) would fail.  Not deeper: every node's text is its whole
    # subexpression, so the JSON grows as the square of the depth (600 MB at 20,000).
    depth = 5000
    assert depth >= 5 * sys.getrecursionlimit()
    expr = "-(" * depth + "x" + ")" * depth
    r = cli("grad", "--format", "json", "--", expr, "x=3")
    d = js(r)
    assert d["value"] == 3.0 and d["gradients"] == {"x": 1.0}
    assert len(d["nodes"]) == depth + 1
    r = cli("eval", "--format", "json", "--", "-" + expr, "x=3")
    assert js(r)["value"] == -3.0


def test_deep_sin_chain(rc, tmp_path):
    depth = 5000
    (tmp_path / "sin.gc").write_text("sin(" * depth + "x" + ")" * depth + "\n")
    d = js(rc("grad", "--format", "json", "-f", "sin.gc", "x=0.5"))
    v, g = 0.5, 1.0
    for _ in range(depth):
        g *= np.cos(v)
        v = np.sin(v)
    assert d["value"] == pytest.approx(v, rel=1e-12)
    assert d["gradients"]["x"] == pytest.approx(g, rel=1e-9)


def test_big_program_through_the_cli(sub, tmp_path):
    """25,000 statements (125,001 nodes) from a file: value and gradient in closed form."""
    n = 25000
    lines = ["a_0 = y"] + [f"a_{i} = a_{i - 1} * 1.00001 + y * 0.00001" for i in range(1, n + 1)]
    (tmp_path / "big.gc").write_text("\n".join(lines) + "\n")
    r = sub("grad", "--format", "json", "-f", "big.gc", "y=2")
    d = js(r)
    assert d["output"] == f"a_{n}" and len(d["nodes"]) > 100_000
    # a_i = r a_{i-1} + (r - 1) y with a_0 = y  =>  a_n = y (2 r^n - 1)
    rate = 1.00001
    slope = 2 * rate ** n - 1
    assert d["gradients"]["y"] == pytest.approx(slope, rel=1e-9)
    assert d["value"] == pytest.approx(2 * slope, rel=1e-9)
    a = 2.0
    for _ in range(n):
        a = a * rate + 2.0 * 0.00001
    assert d["value"] == pytest.approx(a, rel=1e-12)


# ====================================================================== shell and help

def test_missing_expr_when_only_bindings_are_given(gc):
    r = gc("grad", "x=3")
    usage_error(r, "missing EXPR: 'x=3' is a NAME=VALUE binding")
    assert "hint: the program comes first, then its bindings: gradcli grad EXPR x=3" in r.err
    usage_error(gc("eval", "W=[[1,2]]", "x=1"), "missing EXPR")


def test_a_program_that_assigns_is_still_a_program(rc):
    r = ok(rc("eval", "--format", "json", "a = x + 1", "x=2"))
    assert json.loads(r.out)["value"] == 3.0


def test_expr_with_leading_minus_gets_the_double_dash_hint(gc):
    r = gc("grad", "-x**2", "x=3")
    usage_error(r, "no such option '-x'")
    assert "hint: an EXPR that begins with - goes after --: gradcli grad -- '-x**2' x=3" \
        in r.err


def test_misspelt_option_gets_a_suggestion(rc):
    r = rc("grad", "--frmat", "csv", "x", "x=1")
    usage_error(r, "no such option '--frmat'")
    assert "hint: did you mean --format" in r.err


@pytest.mark.parametrize("command", ["eval", "grad"])
def test_help_has_real_examples(rc, command):
    r = ok(rc(command, "--help"))
    assert "Examples:" in r.out and "--batch" in r.out and "--sweep" in r.out
    examples = [line.strip() for line in r.out.split("Examples:")[1].splitlines()
                if line.strip().startswith("gradcli ")]
    assert len(examples) >= 3
    for line in examples:  # each one runs (files it names are made here)
        import shlex

        words = shlex.split(line.split("  #")[0])
        assert words[0] == "gradcli" and words[1] == command


def test_help_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "W.npy", np.array([[1.0, 2.0], [3.0, 4.0]]))
    (tmp_path / "points.csv").write_text("x,y\n1,2\n")
    (tmp_path / "rows.csv").write_text("x,y,z\n1,2,0\n")
    import shlex

    for command in ("eval", "grad"):
        text = cli(command, "--help").out.split("Examples:")[1]
        for line in text.splitlines():
            line = line.strip()
            if not line.startswith("gradcli "):
                continue
            words = shlex.split(line.split("  #")[0].split(" > ")[0])
            r = cli(*words[1:])
            assert r.code == 0, (line, r.err)


def test_shell_completion_scripts(gradcli_exe, tmp_path):
    for shell, marker in (("bash", "complete -o nosort -F"), ("zsh", "#compdef gradcli"),
                          ("fish", "complete --no-files --command gradcli")):
        p = run(gradcli_exe, env={"_GRADCLI_COMPLETE": f"{shell}_source"}, cwd=tmp_path)
        assert p.returncode == 0 and marker in p.stdout, (shell, p.stdout[:300], p.stderr)
    p = run(gradcli_exe, env={"_GRADCLI_COMPLETE": "bash_complete", "COMP_WORDS": "gradcli gr",
                              "COMP_CWORD": "1"}, cwd=tmp_path)
    assert p.stdout.split() == ["plain,grad"]
    p = run(gradcli_exe, env={"_GRADCLI_COMPLETE": "bash_complete",
                              "COMP_WORDS": "gradcli grad --sw", "COMP_CWORD": "2"},
            cwd=tmp_path)
    assert p.stdout.split() == ["plain,--sweep"]
    p = run(gradcli_exe, env={"_GRADCLI_COMPLETE": "bash_complete",
                              "COMP_WORDS": "gradcli grad --batch ro", "COMP_CWORD": "3"},
            cwd=tmp_path)
    assert p.stdout.split() == ["file,ro"]  # the shell lists the files
