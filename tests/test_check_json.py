"""``check --format json`` and ``csv`` written column by column, and ``--results problems``.

What is checked: the fast writer gives the same JSON document as building a dict per
element and ``json.dumps`` (GRADCLI_NO_ORJSON=1 takes that path) for every kind of report:
kinks with their records, nan and inf, a Jacobian, --order 2, Richardson's estimates, empty
inputs, --fast, --taylor; the CSV is the same text as a csv.writer row per record; the
grades written are those of fdiff.grades for any error and status;
a 40,000-element report has a record per element in C order; ``--results problems`` keeps
every failing and kink record whole, counts the others in "omitted" and says so on stderr,
for JSON and CSV, and is refused where it means nothing.
"""
from __future__ import annotations

import csv
import io
import json
import textwrap

import numpy as np
import pytest

import gradcli
from gradcli import fdiff
from gradcli.render import checkreport
from conftest import BUGGY, cli, run

CASES = [
    ("sum(tanh(W @ x + b))", dict(W=[[1, 2], [3, 4], [5, 6]], x=[0.1, 0.2], b=0.5), {}),
    ("sum(relu(x) * w)", dict(x=[0, 1, -1], w=[2, 3, 4]), {}),
    ("sqrt(x) * y", dict(x=0, y=2), {}),                                 # inf analytic
    ("tanh(W @ x)", dict(W=[[1, 2], [3, 4]], x=[1, 2]), dict(jacobian=True)),
    ("sum(sin(x)*y)", dict(x=[1, 2], y=[3, 4]), dict(order=2)),
    ("sum(relu(x) * x)", dict(x=[0.0, 1.0]), dict(order=2)),
    ("sum(tanh(W @ x))", dict(W=[[1, 2], [3, 4]], x=[1, 2]), dict(method="richardson")),
    ("sum(tanh(W @ x))", dict(W=[[1, 2], [3, 4]], x=[1, 2]), dict(fast=True)),
    ("sum(tanh(W @ x))", dict(W=[[1, 2], [3, 4]], x=[1, 2]), dict(taylor=True)),
    ("sum(log(x))", dict(x=[1e-300, 2]), {}),
    ("x * sum(y)", dict(x=2, y=np.zeros((0, 3))), {}),
    ("sum(W * 1e20) + sum(x ** 2)", dict(W=np.ones((2, 3, 2)), x=[1e-30, -3.5e12]), {}),
]



@pytest.mark.parametrize("program, values, options", CASES)
def test_the_fast_writer_writes_the_same_document(program, values, options, monkeypatch):
    r = gradcli.check(program, **values, **options)
    for results in ("all", "problems"):
        fast = checkreport.json_text(r, results=results)
        monkeypatch.setenv("GRADCLI_NO_ORJSON", "1")
        slow = checkreport.json_text(r, results=results)
        monkeypatch.delenv("GRADCLI_NO_ORJSON")

        def strict(text):
            return json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
        assert strict(fast) == strict(slow)
        assert list(strict(fast)) == list(strict(slow))  # the keys in the same order


def csv_by_records(report, problems):
    """The CSV as a csv.writer row per record of checkreport.rows (what as_csv wrote)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    cols = ["wrt", "index", "analytic", "numeric", "abs_err", "rel_err", "status"]
    if report.jacobian or report.order == 2:
        cols.insert(1, "output_index")
    if report.order == 2:
        cols.insert(1, "of")
    w.writerow(cols)
    for d in checkreport.rows(report, problems):
        w.writerow([",".join(map(str, d[c])) if isinstance(d.get(c), list) else d.get(c)
                    for c in cols])
    return buf.getvalue()


@pytest.mark.parametrize("program, values, options",
                         [c for c in CASES if not {"fast", "taylor"} & set(c[2])])
def test_the_csv_written_by_columns_is_the_same_text(program, values, options):
    r = gradcli.check(program, **values, **options)
    for problems in (False, True):
        got = checkreport.as_csv(r, results="problems" if problems else "all")
        assert got == csv_by_records(r, problems)


def test_the_grades_written_are_fdiffs_for_any_error_and_status():
    rng = np.random.default_rng(0)
    rel = np.concatenate([10.0 ** rng.uniform(-12, 2, 300), [0, 1e-7, 1e-4, 1e-2, np.inf,
                                                             np.nan, 1e-7 * (1 - 1e-16)]])
    status = rng.choice(np.array(["ok", "fail", "kink"], dtype=object), rel.size)
    ic = fdiff.InputCheck("v", rel.shape, np.zeros(rel.size), np.zeros(rel.size), 1e-6, 1e-5)
    ic.rel_err = rel
    ic.status = status
    r = gradcli.check("sum(v)", v=np.zeros(rel.size))
    r.inputs = [ic]
    doc = json.loads(checkreport.json_text(r))
    assert [d["grade"] for d in doc["results"]] == fdiff.grades(rel, status).tolist()
    assert [d["status"] for d in doc["results"]] == status.tolist()


def test_a_big_report_has_a_record_per_element_in_c_order():
    rng = np.random.default_rng(1)
    W, x = rng.standard_normal((200, 200)), rng.standard_normal(200)
    r = gradcli.check("sum(W @ x)", W=W, x=x)
    doc = json.loads(checkreport.json_text(r))
    res = doc["results"]
    assert len(res) == 200 * 200 + 200
    assert res[0]["index"] == [0, 0] and res[201]["index"] == [1, 1]
    assert res[40000]["wrt"] == "x" and res[40000]["index"] == [0]
    got = np.array([d["analytic"] for d in res[:40000]]).reshape(200, 200)
    np.testing.assert_allclose(got, np.broadcast_to(x, (200, 200)), rtol=1e-12)
    assert {d["status"] for d in res} == {"ok"}


GATE = """
import numpy as np

class OffAt:
    def forward(self, x):
        return 2 * x
    def backward(self, dz):
        g = 2 * np.array(dz)
        g.reshape(-1)[3] = 5
        return [g]
"""


def test_results_problems_keeps_every_failing_and_kink_record(tmp_path):
    path = tmp_path / "off.py"
    path.write_text(textwrap.dedent(GATE))
    args = ["check", "--ops", str(path), "--format", "json", "sum(OffAt(x) * relu(y))",
            "x=[1,2,3,4,5]", "y=[0,1,1,1,1]"]
    full = cli(*args)
    some = cli(*args, "--results", "problems")
    assert full.code == some.code == 1
    f, s = json.loads(full.out), json.loads(some.out)
    problems = [d for d in f["results"] if d["status"] != "ok"]
    assert problems and s["results"] == problems            # the same records, whole
    assert {(d["wrt"], d["status"]) for d in problems} >= {("x", "fail"), ("y", "kink")}
    assert s["omitted"] == {"status": "ok", "count": len(f["results"]) - len(problems),
                            "by_input": {"x": 4, "y": 4}}
    assert "omitted" not in f
    assert {k: v for k, v in s.items() if k not in ("results", "omitted")} == \
        {k: v for k, v in f.items() if k != "results"}
    assert "8 passing elements have no record" in some.err
    rows = list(csv.DictReader(io.StringIO(cli(*args[:4], "csv", *args[5:], "--results",
                                               "problems").out)))
    assert [(r["wrt"], r["index"], r["status"]) for r in rows] == [
        (d["wrt"], ",".join(map(str, d["index"])), d["status"]) for d in problems]


def test_results_problems_of_a_passing_check_is_an_empty_list():
    res = cli("check", "--format", "json", "--results", "problems", "sum(x**2)", "x=[1,2]")
    assert res.code == 0
    d = json.loads(res.out)
    assert d["ok"] is True and d["results"] == [] and d["omitted"]["count"] == 2


@pytest.mark.parametrize("extra", [["--results", "problems"],
                                   ["--format", "dot", "--results", "problems"]])
def test_results_problems_is_for_json_and_csv(extra):
    res = cli("check", *extra, "sum(x**2)", "x=[1,2]")
    assert res.code == 2 and res.err.startswith("error: ") and "--results" in res.err
    res = cli("check", "--ops", BUGGY, "--results", "problems")
    assert res.code == 2 and "--results" in res.err


def test_a_real_process_writes_strict_json(gradcli_exe):
    p = run(gradcli_exe, "check", "--format", "json", "sqrt(x) * y + sum(log(v))", "x=0",
            "y=2", "v=[1e-300,2]")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout, parse_constant=lambda c: pytest.fail(c))
    assert d["results"][0]["analytic"] == "inf" and d["results"][0]["status"] == "kink"
    assert p.stdout.endswith("}\n")
