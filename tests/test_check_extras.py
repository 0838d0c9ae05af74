"""The checker's follow-ups: ops files that misbehave when loaded or when the check re-runs
them (issue 17), non-finite numbers in the JSON report, ``check --html`` and ``--render``
(issues 19, 13), the Python API's options, ``check --order 2`` (issue 16).

Items about processes and streams run the installed console script in a subprocess."""
from __future__ import annotations

import json
import os
import subprocess
import textwrap

import numpy as np
import pytest

import gradcli
from conftest import bad, cli, run


def ops_file(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def clean_exit_2(p, *fragments):
    """A subprocess: exit 2, one ``error:`` line, no traceback, nothing on stdout."""
    assert p.returncode == 2, (p.returncode, p.stdout[:500], p.stderr[-2000:])
    assert p.stdout == "" and "Traceback" not in p.stderr
    lines = p.stderr.splitlines()
    assert lines and lines[0].startswith("error: "), p.stderr
    assert sum(line.startswith("error") for line in lines) == 1, p.stderr
    assert "internal error" not in p.stderr
    for f in fragments:
        assert f in p.stderr, (f, p.stderr)


# ---------------------------------------------------------------- loading an ops file

def test_ops_from_a_device_or_a_fifo_end_promptly_with_a_clear_error(tmp_path, gradcli_exe):
    fifo = tmp_path / "ops_fifo.py"
    os.mkfifo(fifo)  # no writer: an open() without care would block for ever
    for path, words in (("/dev/zero", "character device"), (str(fifo), "FIFO")):
        for args in (["check", "--ops", path], ["check", "--ops", path, "x*2", "x=1"]):
            try:
                p = subprocess.run(gradcli_exe + args, capture_output=True, text=True,
                                   timeout=30)
            except subprocess.TimeoutExpired:
                pytest.fail(f"gradcli {' '.join(args)} did not end within 30 s")
            clean_exit_2(p, f"--ops {path}", words, "not a regular file")


LOUD = """
    print("hello from the ops file")

    class Twice:
        print("hello from the class body")
        def forward(self, x):
            return x * 2
        def backward(self, dz):
            return [2 * dz]
    """


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_what_an_ops_file_prints_at_import_goes_to_stderr(tmp_path, gradcli_exe, fmt):
    f = ops_file(tmp_path, "loud.py", LOUD)
    p = run(gradcli_exe, "check", "--ops", f, "--format", fmt, "sum(Twice(x))", "x=[1,2]")
    assert p.returncode == 0, p.stderr
    assert "hello" not in p.stdout
    assert "hello from the ops file" in p.stderr and "hello from the class body" in p.stderr
    if fmt == "json":
        doc = json.loads(p.stdout)
        assert doc["ok"] is True
        assert [r["analytic"] for r in doc["results"]] == [2.0, 2.0]
    else:
        assert p.stdout.splitlines()[0].startswith("wrt,")


@pytest.mark.parametrize("body, words", [
    ("import sys\nsys.exit(0)\n", "loading it raised SystemExit: 0 (line 2)"),
    ("raise SystemExit(3)\n", "loading it raised SystemExit: 3 (line 1)"),
    ("class Boom(BaseException):\n    pass\nraise Boom('at import')\n",
     "loading it raised Boom: at import (line 3)"),
    ("raise GeneratorExit()\n", "loading it raised GeneratorExit (line 1)"),
])
def test_an_ops_file_that_exits_or_raises_base_exception_at_import(tmp_path, gradcli_exe,
                                                                     body, words):
    f = ops_file(tmp_path, "quits.py", body)
    for args in (["check", "--ops", f], ["check", "--ops", f, "x*2", "x=1"]):
        clean_exit_2(run(gradcli_exe, *args), "ops file quits.py", words)
        bad(cli(*args), "ops file quits.py", words)


# ---------------------------------------------------------------- ops the check re-runs

# Each op below passes the engine's own forward (and backward), then misbehaves when the
# check runs it again on a perturbed input (a step of the finite differences: in the plans
# of the whole expression, in the node's own check, in the self-check of the ops file).
SECOND_CALL = """
    import numpy as np

    class Boom(BaseException):
        pass

    def perturbed(x, seen):
        x = np.asarray(x, dtype=float)
        for s in seen:
            if s.shape == x.shape and not np.array_equal(s, x) and np.allclose(s, x, rtol=1e-4,
                                                                               atol=0):
                return True
        seen.append(x.copy())
        return False

    class SecondForward:
        seen = []
        def forward(self, x):
            if perturbed(x, self.seen):
                raise Boom("nope")
            return x * 2
        def backward(self, g):
            return [2 * g]

    class ExitsLater:
        seen = []
        def forward(self, x):
            if perturbed(x, self.seen):
                raise SystemExit(0)
            return x * 2
        def backward(self, g):
            return [2 * g]

    class SecondBackward:
        def forward(self, x):
            self.n = 0
            return x * 2
        def backward(self, g):
            self.n += 1
            if self.n > 1:
                raise Boom("twice")
            return [2 * g]
    """


@pytest.mark.parametrize("op, words", [("SecondForward", "forward raised Boom: nope"),
                                       ("ExitsLater", "forward raised SystemExit: 0")])
def test_an_op_raising_base_exception_in_the_checks_own_runs_is_an_error_naming_it(
        tmp_path, gradcli_exe, op, words):
    f = ops_file(tmp_path, "later.py", SECOND_CALL)
    for expr in (f"{op}(x)", f"sum(tanh({op}(x)))"):
        for method in ("central", "richardson"):
            args = ["check", "--ops", f, "--method", method, expr, "x=[1,2]"]
            bad(cli(*args), f"op {op} (later.py)", words)
        clean_exit_2(run(gradcli_exe, "check", "--ops", f, expr, "x=[1,2]"),
                     f"op {op} (later.py)", words)
    # the self-check names the op and goes on with the others
    err = bad(cli("check", "--ops", f), f"op {op}", words)
    assert "(the other 1 checked: all agree)" in err  # SecondBackward


def test_a_backward_raising_base_exception_when_called_again_stops_nothing(tmp_path):
    # a backward that refuses a second call (as PyTorch's does) is not wrong, and what it
    # raises there, a BaseException, must not escape the state check that calls it twice
    f = ops_file(tmp_path, "later.py", SECOND_CALL)
    r = cli("check", "--ops", f, "--format", "json", "sum(SecondBackward(x) * y)", "x=[1,2]",
            "y=[3,-4]")
    assert r.code == 0 and r.exception is None, (r.code, r.out, r.err, r.exception)
    doc = json.loads(r.out)
    assert [d["analytic"] for d in doc["results"]] == [6.0, -8.0, 2.0, 4.0]
    assert doc["local"][0]["op"] == "SecondBackward" and doc["local"][0]["status"] == "ok"


SCRIBBLER = """
    import numpy as np

    class Scribbler:
        '''2*x, but it writes into every array it is given, and prints.'''
        def forward(self, x):
            out = x * 2.0
            x.flags.writeable = True
            x[...] = 1e6
            print("PRINTED by Scribbler")
            return out
        def backward(self, g):
            r = 2.0 * np.array(g)
            g.flags.writeable = True
            g[...] = 0
            return [r]

    class Clean:
        def forward(self, x):
            print("clean forward")
            return x * 2.0
        def backward(self, g):
            print("clean backward")
            return [2.0 * g]
    """


def test_a_gate_writing_into_its_arrays_cannot_change_what_the_check_shows(tmp_path):
    f = ops_file(tmp_path, "scribble.py", SCRIBBLER)
    x, y = np.array([0.3, -0.2, 0.5]), np.array([0.7, 0.4, -1.0])
    expr = "sum(tanh(Scribbler(x) * y))"
    for one_at_a_time in (False, True):
        for method in ("central", "richardson"):
            r = gradcli.check(expr, x=x.copy(), y=y.copy(), ops=gradcli.load_ops(f),
                              method=method, grouped=not one_at_a_time)
            # the gradient is right (only the write into dz, which the local check sees,
            # fails the check): the numbers are those of 2*x, never of 1e6
            sech2 = 1 / np.cosh(2 * x * y) ** 2
            by = {i.name: i for i in r.inputs}
            np.testing.assert_allclose(np.ravel(by["x"].analytic), 2 * y * sech2, rtol=1e-9)
            np.testing.assert_allclose(np.ravel(by["y"].analytic), 2 * x * sech2, rtol=1e-9)
            np.testing.assert_allclose(np.ravel(by["x"].numeric), 2 * y * sech2, rtol=1e-6)
            np.testing.assert_allclose(np.ravel(by["y"].numeric), 2 * x * sech2, rtol=1e-6)
            assert all(s == "ok" for i in r.inputs for s in np.ravel(i.status))
            assert any("writes into its upstream gradient" in p
                       for rec in r.local for p in rec["problems"])


def test_what_an_op_prints_while_the_check_runs_it_goes_to_stderr(tmp_path, gradcli_exe):
    f = ops_file(tmp_path, "scribble.py", SCRIBBLER)
    for fmt in ("json", "csv"):
        p = run(gradcli_exe, "check", "--ops", f, "--format", fmt, "--local",
                "sum(tanh(Clean(x) * y))", "x=[1,-2]", "y=[3,4]")
        assert p.returncode == 0, p.stderr
        assert "clean forward" not in p.stdout and "clean backward" not in p.stdout
        assert "clean forward" in p.stderr and "clean backward" in p.stderr
        if fmt == "json":
            assert json.loads(p.stdout)["ok"] is True
    p = run(gradcli_exe, "check", "--ops", f, "--format", "json", "--taylor",
            "sum(tanh(Clean(x) * y))", "x=[1,-2]", "y=[3,4]")
    assert p.returncode == 0, p.stderr
    assert "clean forward" not in p.stdout and json.loads(p.stdout)["ok"] is True
    # the self-check of the file, too
    p = run(gradcli_exe, "check", "--ops", f, "--format", "json")
    assert "PRINTED" not in p.stdout and "clean forward" not in p.stdout
    assert "clean forward" in p.stderr


# ---------------------------------------------------------------- nan and inf in the JSON

NONFINITE = ("nan", "inf", "-inf")


def _refuse_constant(name):
    raise AssertionError(f"the JSON holds the non-standard constant {name}")


def strict_json(text):
    """JSON as standard parsers read it: NaN / Infinity tokens are an error."""
    return json.loads(text, parse_constant=_refuse_constant)


def test_the_reported_program_of_issue_3_gives_valid_json():
    r = cli("check", "--format", "json", "--", "tanh(diag(b - z) ^ y ^ cos(b)) + cosh((-1)) "
            "< 1e-3", "y=[[2,0],[1,3]]", "z=[[2,0],[1,3]]", "b=0.25")
    assert r.exception is None and r.code == 1, (r.code, r.out, r.err, r.exception)
    doc = strict_json(r.out)
    assert doc["ok"] is False
    assert doc["max_abs_err"] == "inf" and doc["max_rel_err"] == "inf"
    assert any(b["max_abs_err"] == "inf" for b in doc["blame"])
    assert "nan" in {d["analytic"] for d in doc["results"]}


def _poison(obj, cycle):
    """Every float in the records replaced by nan, inf or -inf in turn (arrays too)."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            obj[k] = _poison(v, cycle)
        return obj
    if isinstance(obj, list):
        return [_poison(v, cycle) for v in obj]
    if isinstance(obj, np.ndarray) and obj.dtype.kind == "f":
        flat = np.array([next(cycle) for _ in range(obj.size)]).reshape(obj.shape)
        return flat.astype(obj.dtype)
    if isinstance(obj, (float, np.floating)):
        return float(next(cycle))
    return obj


def _floats_in(doc, path=()):
    """(path, value) of every number that is not an int or bool, and of every string."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _floats_in(v, path + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _floats_in(v, path + (i,))
    elif isinstance(doc, float) or (isinstance(doc, str) and doc in NONFINITE):
        yield path, doc


def _reports():
    """One real report of every kind the JSON renders, each with its own records."""
    import conftest
    from gradcli import localcheck

    buggy = gradcli.load_ops(conftest.BUGGY)
    x, y = [0.5, -1.2], [1.5, 0.7]
    yield "blame+local", gradcli.check("sum(SigmoidGate(x * y) + relu(x))", x=x, y=y,
                                       ops=buggy, local=True)
    yield "fast", gradcli.check("sum(tanh(x) * y)", x=x, y=y, fast=True)
    yield "sweep", gradcli.check("sum(tanh(x) * y)", x=x, y=y, sweep=True)
    yield "taylor", gradcli.check("sum(tanh(x) * y)", x=x, y=y, taylor=True)
    yield "jacobian", gradcli.check("tanh(x) * y", x=x, y=y, jacobian=True,
                                    method="richardson")
    yield "kink", gradcli.check("sum(relu(x))", x=[0.0, 1.0])
    yield "ops", localcheck.check_ops(gradcli.load_ops(conftest.GATES))


def test_every_float_of_every_report_kind_is_json_even_when_nan_or_inf():
    import itertools

    from gradcli.render import checkreport

    for kind, report in _reports():
        clean = strict_json(checkreport.json_text(report))
        cycle = itertools.cycle([np.nan, np.inf, -np.inf])
        errs = itertools.cycle([np.inf, np.nan])
        for attr in ("eps", "atol", "rtol"):
            setattr(report, attr, float(next(cycle)))
        for attr in ("blame", "local", "sweep", "projections", "taylor", "ops", "second"):
            value = getattr(report, attr, None)
            if value:
                setattr(report, attr, _poison(value, cycle))
        for ic in report.inputs:
            for attr in ("analytic", "numeric", "abs_err", "rel_err", "err_est"):
                if getattr(ic, attr, None) is not None:  # an error is never -inf
                    c = cycle if attr in ("analytic", "numeric") else errs
                    setattr(ic, attr, _poison(getattr(ic, attr), c))
            ic.kinks = {k: _poison(v, cycle) for k, v in ic.kinks.items()}
        doc = strict_json(checkreport.json_text(report))  # raised before the fix
        # every number the clean report had at a place is now one of the strings SPEC gives
        before = dict(_floats_in(clean))
        after = dict(_floats_in(doc))
        assert before, kind
        # (the summary's maxima come from the per-element results, which a Taylor test and
        # the self-check of an ops file do not have)
        derived = () if report.inputs else (("max_abs_err",), ("max_rel_err",))
        for path in before:
            if path not in derived:
                assert after.get(path) in NONFINITE, (kind, path, before[path], after.get(path))
        for top in ("eps", "atol", "rtol") + ("max_abs_err", "max_rel_err") * bool(derived == ()):
            assert doc[top] in NONFINITE, (kind, top, doc[top])


# ---------------------------------------------------------------- check --html, --render

def _page_data(page):
    import re

    m = re.search(r'<script type="application/json" id="gradcli-data">(.*?)</script>', page,
                  re.S)
    assert m, "no data block"
    return json.loads(m.group(1))


BLIND = ["sum(SigmoidGate(x * y))", "x=[0.5,-1.2]", "y=[1.5,0.7]"]


def test_check_html_writes_the_page_with_the_failing_node_marked(tmp_path):
    import conftest

    page = tmp_path / "page.html"
    r = cli("check", "--ops", conftest.BUGGY, "--html", page, *BLIND)
    assert r.code == 1 and r.exception is None, (r.code, r.out, r.err)
    assert "FAIL" in r.out  # the report is printed as without --html
    text = page.read_text(encoding="utf-8")
    d = _page_data(text)
    fails = {k: v for k, v in d["check"].items() if v["status"] == "fail"}
    # node 3 is SigmoidGate(x * y): the blame text is the local check's
    assert list(fails) == ["3"], d["check"]
    assert "SigmoidGate" in fails["3"]["text"]
    assert "#f4a6a6" in text  # Graphviz filled it red (dot's colour for a failing node)
    assert any(n.startswith("FAIL") for n in d["notes"])
    assert sorted(os.listdir(tmp_path)) == ["page.html"]  # written atomically


def test_check_html_of_a_kink_in_a_real_process(tmp_path, gradcli_exe):
    page = tmp_path / "kink.html"
    p = run(gradcli_exe, "check", "--format", "json", "--html", str(page), "relu(x)*y",
            "x=0", "y=2")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["kinks"] == 1  # stdout is only the report
    d = _page_data(page.read_text(encoding="utf-8"))
    assert d["check"]["1"]["status"] == "kink"
    assert "one-sided slopes 0 (left) and 2 (right)" in d["check"]["1"]["text"]


def test_check_render_draws_the_checked_graph_with_graphviz(tmp_path, gradcli_exe):
    import conftest
    import xml.etree.ElementTree as ET

    svg = tmp_path / "check.svg"
    p = run(gradcli_exe, "check", "--ops", conftest.BUGGY, "--render", str(svg), *BLIND)
    assert p.returncode == 1, p.stderr
    text = svg.read_text(encoding="utf-8")
    root = ET.fromstring(text)  # real SVG, as Graphviz writes it
    assert root.tag.endswith("svg")
    assert "Generated by graphviz" in text and "SigmoidGate" in text
    assert 'fill="#f4a6a6"' in text
    # the other formats follow from the extension; .dot is the text itself
    for name, magic in (("check.png", b"\x89PNG"), ("check.pdf", b"%PDF")):
        r = cli("check", "--ops", conftest.BUGGY, "--render", tmp_path / name, *BLIND)
        assert r.code == 1, r.err
        assert (tmp_path / name).read_bytes().startswith(magic)
    r = cli("check", "--render", tmp_path / "check.dot", "relu(x)*y", "x=0", "y=2")
    assert r.code == 0, r.err
    dot = (tmp_path / "check.dot").read_text()
    assert "digraph gradcli {" in dot and "#f8c471" in dot  # the kink orange


def test_check_html_and_render_are_usage_errors_where_they_do_not_apply(tmp_path):
    import conftest

    for flag, name in (("--html", "p.html"), ("--render", "p.svg")):
        r = cli("check", "--ops", conftest.GATES, flag, tmp_path / name)
        assert r.code == 2 and flag in r.err and "EXPR" in r.err, (r.code, r.err)
    r = cli("check", "--render", tmp_path / "p.txt", "x*2", "x=1")
    assert r.code == 2 and ".svg" in r.err, r.err
    assert not (tmp_path / "p.txt").exists()


# ---------------------------------------------------------------- the Python API

def test_the_api_takes_every_option_of_the_checker():
    import inspect

    from gradcli import gradcheck

    api = inspect.signature(gradcli.check).parameters
    core = inspect.signature(gradcheck.check).parameters
    missing = [n for n in core if n not in ("graph", "bindings") and n not in api]
    assert not missing, missing
    for n in core:
        if n in api and n not in ("graph", "bindings"):
            assert api[n].default == core[n].default, n


def test_the_api_passes_the_options_on():
    W = np.arange(12.0).reshape(4, 3) / 10 - 0.5
    b = dict(W=W, x=[0.5, -1.0, 0.25])
    prog = "sum(tanh(W @ x))"
    plain = gradcli.check(prog, b)
    assert plain.ok and plain.local == [] and plain.taylor is None
    assert plain.grouped_evals > 0  # W's columns perturbed together
    for kw in ({"grouped": False}, {"one_at_a_time": True}):
        r = gradcli.check(prog, b, **kw)
        assert r.ok and r.grouped_evals == 0, kw
        for p, q in zip(plain.inputs, r.inputs):
            np.testing.assert_allclose(p.numeric, q.numeric, rtol=1e-7, atol=1e-9)
    with pytest.raises(TypeError):
        gradcli.check(prog, b, grouped=False, one_at_a_time=False)
    local = gradcli.check(prog, b, local=True)
    assert sorted(rec["op"] for rec in local.local) == ["matmul", "sum", "tanh"]
    assert all(rec["status"] == "ok" for rec in local.local)
    taylor = gradcli.check(prog, b, taylor=True)
    assert taylor.ok and {t["wrt"] for t in taylor.taylor} == {"W", "x"}
    assert all(abs(t["rate"] - 2) < 0.2 for t in taylor.taylor)


# ---------------------------------------------------------------- check --order 2

def _hessian_of(report, names, shapes):
    """The Hessian assembled from the report's blocks: (analytic, numeric), rows by the
    gradient's element (``of``), columns by the input's (``wrt``), names in order."""
    sizes = {n: int(np.prod(shapes[n])) for n in names}
    off = dict(zip(names, np.cumsum([0] + [sizes[n] for n in names])))
    n = sum(sizes.values())
    a, m = np.full((n, n), np.nan), np.full((n, n), np.nan)
    for ic in report.inputs:
        r0, c0 = off[ic.of], off[ic.name]
        a[r0:r0 + sizes[ic.of], c0:c0 + sizes[ic.name]] = np.reshape(
            ic.analytic, (sizes[ic.of], sizes[ic.name]))
        m[r0:r0 + sizes[ic.of], c0:c0 + sizes[ic.name]] = np.reshape(
            ic.numeric, (sizes[ic.of], sizes[ic.name]))
    return a, m


@pytest.mark.parametrize("prog, point, want", [
    ("x**2*y", {"x": 1.5, "y": -0.5}, [[2 * -0.5, 2 * 1.5], [2 * 1.5, 0.0]]),
    ("(1 - x)**2 + 100*(y - x**2)**2", {"x": 1.0, "y": 1.0}, [[802, -400], [-400, 200]]),
])
def test_order_2_against_hand_derived_hessians(prog, point, want):
    r = gradcli.check(prog, point, order=2)
    assert r.ok and r.order == 2
    a, m = _hessian_of(r, ["x", "y"], {"x": (), "y": ()})
    np.testing.assert_allclose(a, want, rtol=1e-12, atol=1e-12)  # the second reverse pass
    np.testing.assert_allclose(m, want, rtol=1e-6, atol=1e-6)    # differences of grad


def test_order_2_of_a_layer_matches_the_hessian_and_differences_of_grad():
    W = np.array([[1.0, 2.0, -0.5], [0.5, -1.0, 0.3]])
    x = np.array([0.3, -0.8, 0.1])
    prog = "sum(tanh(W @ x)) * x[0]"
    r = gradcli.check(prog, W=W, x=x, order=2)
    assert r.ok, r.inputs
    a, m = _hessian_of(r, ["W", "x"], {"W": W.shape, "x": x.shape})
    H = gradcli.hessian(prog, W=W, x=x).matrix  # the differentiator's own Hessian
    np.testing.assert_allclose(a, H, rtol=1e-10, atol=1e-12)

    def grad_at(Wv, xv):  # finite differences of gradcli.grad, by hand, column by column
        g = gradcli.grad(prog, W=Wv, x=xv).gradients
        return np.concatenate([g["W"].ravel(), g["x"]])
    flat = np.concatenate([W.ravel(), x])
    h = 1e-5
    cols = []
    for k in range(flat.size):
        e = np.zeros_like(flat)
        e[k] = h
        p, q = flat + e, flat - e
        cols.append((grad_at(p[:6].reshape(2, 3), p[6:]) - grad_at(q[:6].reshape(2, 3),
                                                                   q[6:])) / (2 * h))
    np.testing.assert_allclose(m, np.array(cols).T, rtol=1e-6, atol=1e-8)


@pytest.fixture
def wrong_step(monkeypatch):
    """``step`` (relu's derivative) with a wrong backward: slope 1 where it is 0.  Only a
    second-order check runs it: ``step`` appears in relu's gradient, not in the program."""
    from gradcli import ops as oplib

    op = oplib.CALLABLE[("step", 1)]
    monkeypatch.setattr(op, "partials", (lambda y, x: np.ones_like(x),))
    return op


def test_order_2_finds_a_wrong_rule_first_order_cannot_see_and_blames_it(wrong_step):
    args = ["sum(relu(x) * x)", "x=[0.7,-1.3]"]
    first = cli("check", *args)
    assert first.code == 0, first.out
    r = cli("check", "--order", "2", *args)
    assert r.code == 1 and r.exception is None, (r.code, r.out, r.err)
    assert "d/dx of df/dx: shape (2,), 4 second derivatives: 2 ok, 2 failed" in r.out
    assert "blame: node 2 step(x) (in df/dx): backward disagrees with finite differences" \
        in r.out
    assert "FAIL: 2 of 4 second derivatives disagree" in r.out
    doc = strict_json(cli("check", "--order", "2", "--format", "json", *args).out)
    assert doc["order"] == 2 and doc["ok"] is False
    bad_rows = [d for d in doc["results"] if d["status"] == "fail"]
    # d/dx_j of (relu(x_i) + x_i step(x_i)): the wrong slope of step adds x_i on the diagonal
    assert [(d["of"], d["output_index"], d["index"]) for d in bad_rows] == [
        ("x", [0], [0]), ("x", [1], [1])]
    assert [d["analytic"] - d["numeric"] for d in bad_rows] == pytest.approx([0.7, -1.3])
    assert [b["op"] for b in doc["blame"]] == ["step"]


def test_order_2_in_every_output_format_and_a_real_process(gradcli_exe):
    import csv
    import io

    p = run(gradcli_exe, "check", "--order", "2", "--format", "csv", "x**2*y", "x=1.5",
            "y=-0.5")
    assert p.returncode == 0, p.stderr
    rows = list(csv.DictReader(io.StringIO(p.stdout)))
    assert list(rows[0]) == ["wrt", "of", "output_index", "index", "analytic", "numeric",
                             "abs_err", "rel_err", "status"]
    got = {(d["of"], d["wrt"]): float(d["analytic"]) for d in rows}
    assert got == {("x", "x"): -1.0, ("x", "y"): 3.0, ("y", "x"): 3.0, ("y", "y"): 0.0}
    p = run(gradcli_exe, "check", "--order", "2", "x**2*y", "x=1.5", "y=-0.5")
    assert p.returncode == 0 and p.stderr == "", p.stderr
    assert "checking the second derivatives of f = x**2*y" in p.stdout
    assert "PASS: 4 of 4 second derivatives agree" in p.stdout


@pytest.mark.parametrize("args, words", [
    (["--order", "2", "--fast", "x*y", "x=1", "y=2"], "--fast"),
    (["--order", "2", "--taylor", "x*y", "x=1", "y=2"], "--taylor"),
    (["--order", "2", "--wrt", "a", "a = x*y; sin(a)*a", "x=0.4", "y=1.5"],
     "a is a value the program computes"),
    (["--order", "2", "--ops", "GATES", "sum(SigmoidGate(x))", "x=[1,2]"],
     "SigmoidGate is a custom op"),
    (["--order", "3", "x*y", "x=1", "y=2"], "--order"),
    (["--order", "2", "--html", "p.html", "x*y", "x=1", "y=2"], "--order 2"),
    (["--order", "2", "--ops", "GATES"], "--order"),
])
def test_order_2_refuses_what_it_cannot_check(args, words, tmp_path):
    import conftest

    args = [conftest.GATES if a == "GATES" else str(tmp_path / a) if a == "p.html" else a
            for a in args]
    r = cli("check", *args)
    assert r.code == 2 and r.exception is None, (r.code, r.out, r.err)
    assert words in r.err and "Traceback" not in r.err
    assert not (tmp_path / "p.html").exists()


# ---------------------------------------------------------------- check --batch FILE

def _batch_rows(text):
    import csv
    import io

    return list(csv.DictReader(io.StringIO(text)))


def test_check_batch_checks_every_point_as_a_single_check_would(tmp_path):
    rng = np.random.default_rng(3)
    x, y = rng.uniform(-2, 2, 300), rng.uniform(-2, 2, 300)
    x[7] = 0.0  # relu's kink at one point
    f = tmp_path / "pts.npz"
    np.savez(f, x=x, y=y)
    prog = "relu(x)*y + tanh(x*y) * w"
    r = cli("check", "--batch", f, prog, "w=[1.5,-0.5]")
    assert r.code == 0 and r.exception is None, (r.code, r.out[-500:], r.err)
    rows = _batch_rows(r.out)
    assert [int(d["point"]) for d in rows] == list(range(300))
    assert {d["status"] for i, d in enumerate(rows) if i != 7} == {"ok"}
    at_kink = gradcli.check(prog, x=x[7], y=y[7], w=[1.5, -0.5])
    assert rows[7]["status"] == "kink" and rows[7]["ok"] == "true"
    assert int(rows[7]["kinks"]) == at_kink.count("kink") > 0
    assert "PASS: 299 of 300 points agree, 1 at a kink" in r.err
    # the screen's errors are those of a check of the point on its own, at this tolerance
    for b in (0, 150, 299):
        one = gradcli.check(prog, x=x[b], y=y[b], w=[1.5, -0.5])
        assert one.ok
        assert float(rows[b]["max_abs_err"]) <= one.atol + one.rtol * 10


def test_check_batch_finds_a_wrong_rule_at_every_point_and_blames_it(monkeypatch, tmp_path):
    from gradcli import gradcheck
    from gradcli import ops as oplib

    tanh = oplib.CALLABLE[("tanh", 1)]
    monkeypatch.setattr(tanh, "partials", (lambda y, x: 1 - y,))  # should be 1 - y**2
    monkeypatch.setattr(gradcheck, "BATCH_EXAMINED", 3)
    rng = np.random.default_rng(1)
    f = tmp_path / "pts.csv"
    xs = rng.uniform(0.5, 2, 8)
    f.write_text("x\n" + "\n".join(repr(float(v)) for v in xs) + "\n")
    r = cli("check", "--batch", f, "--format", "json", "tanh(x) * 2")
    assert r.code == 1 and r.exception is None, (r.code, r.out, r.err)
    recs = [strict_json(line) for line in r.out.splitlines()]
    assert [d["point"] for d in recs] == list(range(8))
    assert all(d["status"] == "fail" and not d["ok"] for d in recs)
    # the first three are checked in full and blamed; the others as the screen found them
    assert [d["blame"] for d in recs[:3]] == [["node 1 tanh(x)"]] * 3
    assert all(d["blame"] == [] for d in recs[3:])
    want = np.abs(2 * ((1 - np.tanh(xs)) - (1 - np.tanh(xs) ** 2)))
    np.testing.assert_allclose([d["max_abs_err"] for d in recs], want, rtol=1e-4)
    assert "FAIL: 8 of 8 points disagree (3 of them checked in full" in r.err


def test_check_batch_from_stdin_in_a_real_process_and_with_custom_ops(gradcli_exe):
    import conftest

    p = run(gradcli_exe, "check", "--batch", "-", "x*y + sin(x)", input="x,y\n1,2\n0.5,-1\n")
    assert p.returncode == 0, p.stderr
    rows = _batch_rows(p.stdout)
    assert [d["status"] for d in rows] == ["ok", "ok"]
    assert p.stderr.strip() == "PASS: 2 of 2 points agree"
    # a gate that ignores its upstream gradient: every point checked in full, blamed
    p = run(gradcli_exe, "check", "--batch", "-", "--ops", conftest.BUGGY,
            "sum(SigmoidGate(x * y))", input="x,y\n0.5,1.5\n-1.2,0.7\n")
    assert p.returncode == 1, p.stderr
    rows = _batch_rows(p.stdout)
    assert all(d["blame"] == "node 3 SigmoidGate(x * y)" for d in rows), rows
    assert "FAIL: 2 of 2 points disagree" in p.stderr


def test_check_batch_bad_input(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("x,y\n")
    bad(cli("check", "--batch", empty, "x*y"), "no points to check")
    one = tmp_path / "one.csv"
    one.write_text("x\n1\n")
    bad(cli("check", "--batch", one, "x*y"), "unbound variable: y")
    for flag in (["--fast"], ["--taylor"], ["--order", "2"], ["--jacobian"],
                 ["--method", "forward"]):
        r = cli("check", "--batch", one, *flag, "x*y", "y=2")
        assert r.code == 2 and flag[0] in r.err and r.out == "", (flag, r.err)
    r = cli("check", "--batch", one, "--format", "table", "x*y", "y=2")
    assert r.code == 2 and "--format" in r.err


def test_check_format_dot_and_mermaid_mark_the_failing_node(tmp_path):
    """check --format dot|mermaid: the graph, the node whose backward failed filled red."""
    import subprocess
    import sys

    from click.testing import CliRunner

    from gradcli.cli import main

    from conftest import BUGGY, GATES

    args = ["check", "--ops", BUGGY,
            "sum(sigmoid(MatMulGate(W, x)))", "W=[[1,2],[3,4]]", "x=[[0.5,1],[-1,0]]"]
    r = CliRunner().invoke(main, [*args[:1], "--format", "dot", *args[1:]])
    assert r.exit_code == 1  # the check fails: a wrong backward
    dot = r.stdout
    red = [line for line in dot.splitlines() if "fillcolor" in line]
    assert len(red) == 1 and "MatMulGate" in red[0]
    p = subprocess.run(["dot", "-Tsvg"], input=dot, capture_output=True, text=True)
    assert p.returncode == 0 and "<svg" in p.stdout
    m = CliRunner().invoke(main, [*args[:1], "--format", "mermaid", *args[1:]])
    assert m.exit_code == 1 and m.stdout.startswith("flowchart LR")
    bad = CliRunner().invoke(main, ["check", "--ops", GATES,
                                    "--format", "dot"])
    assert bad.exit_code == 2 and "--format dot" in bad.stderr


def test_order_two_of_a_program_linear_in_a_vector_input():
    # d f / d y = sin(x) does not depend on y: the block d/dy of df/dy is zero rows of y's
    # shape (it was an internal error for a vector y)
    res = cli("check", "--order", "2", "--format", "json", "sum(sin(x)*y)", "x=[1,2]",
              "y=[3,4]")
    assert res.code == 0, res.err
    doc = json.loads(res.out)
    yy = [r for r in doc["results"] if r["of"] == "y" and r["wrt"] == "y"]
    assert len(yy) == 4 and all(r["analytic"] == 0 and r["numeric"] == 0 for r in yy)
    xy = {(tuple(r["output_index"]), tuple(r["index"])): r["analytic"]
          for r in doc["results"] if r["of"] == "y" and r["wrt"] == "x"}
    np.testing.assert_allclose([xy[((0,), (0,))], xy[((1,), (1,))], xy[((0,), (1,))]],
                               [np.cos(1), np.cos(2), 0], atol=1e-12)
