"""gradcli show without a browser: the walk's data, the page's self-containment, the command.

The browser tests (tests/test_show.py) drive the page itself; these check what the page is
made of, quickly: the steps carry the engine's numbers, the SVG is the real Graphviz drawing
marked for the script, nothing in the page reaches for the network.
"""
import json
import os
import re

import numpy as np
import pytest

import gradcli
from gradcli import engine
from gradcli.parse import parse
from gradcli.render import html

from conftest import BUGGY, bad, cli, run

SEED = ("(x+y)*max(y,z)", {"x": 1.0, "y": 2.0, "z": 0.0})


def traced(expr, **b):
    return engine.differentiate(parse(expr), b, trace=True)


def data_of(page):
    m = re.search(r'<script type="application/json" id="gradcli-data">(.*?)</script>', page,
                  re.S)
    assert m, "no data block"
    return json.loads(m.group(1))


# ---------------------------------------------------------------- the walk

def test_seed_walk_is_forward_in_topological_order_then_reverse():
    res = traced(*SEED[:1], **SEED[1])
    d = html.page_data(res)
    kinds = [s["k"] for s in d["steps"]]
    nf = kinds.count("fwd")
    assert kinds == ["start"] + ["fwd"] * nf + ["turn"] + ["bwd"] * (len(kinds) - nf - 3) + \
        ["end"]
    fwd_nodes = [s["n"] for s in d["steps"] if s["k"] == "fwd"]
    assert fwd_nodes == sorted(fwd_nodes) == [i for i in res.order]  # no constants here
    bwd_nodes = [s["n"] for s in d["steps"] if s["k"] == "bwd"]
    assert bwd_nodes == [i for i in reversed(res.order) if res.grads[i] is not None]
    texts = {s["n"]: s["t"] for s in d["steps"] if s["k"] == "fwd"}
    assert texts[2] == "x+y = 1 + 2 = 3."
    assert texts[4] == "max(y,z) = max(2, 0) = 2."
    assert texts[5] == "f = (x+y)*max(y,z) = 3 * 2 = 6."


def test_seed_backward_steps_spell_upstream_local_downstream():
    res = traced(*SEED[:1], **SEED[1])
    steps = {s["n"]: s for s in html.page_data(res)["steps"] if s["k"] == "bwd"}
    assert steps[5]["t"].splitlines() == [
        "f: upstream 1 (start) arrives.",
        "  ∂/∂(x+y) = max(y,z) = 2",
        "      → x+y: 1 × 2 = 2",
        "  ∂/∂max(y,z) = x+y = 3",
        "      → max(y,z): 1 × 3 = 3"]
    assert steps[5]["b"] == [[5, 2], [5, 4]]
    assert "→ y: 3 × 1 = 3" in steps[4]["t"] and "→ z: 3 × 0 = 0" in steps[4]["t"]
    # the fan-out sum at y grows as its parts arrive: 3 from max first, then 2 from x+y
    assert [1, "3"] in steps[4]["g"]
    assert [1, "3 (via max(y,z)) + 2 (via x+y) = 5"] in steps[2]["g"]
    assert steps[1]["t"] == ("y: all its gradient has arrived: 3 (via max(y,z)) + 2 (via x+y)"
                             " = 5, so ∂f/∂y = 5.")


@pytest.mark.parametrize("expr,b", [
    ("(x+y)*max(y,z)", {"x": 1, "y": 2, "z": 0}),
    ("(x+y)*z", {"x": 1, "y": 3, "z": -3}),
    ("x**2+2*x+1", {"x": [2.0, 3.0]}),
    ("a = W @ x + b\nf = sum(tanh(a) * a)", {"W": [[1, -2], [0.5, 3]], "x": [0.3, -1],
                                             "b": [0.1, 0.2]}),
])
def test_node_data_equal_grad_json(expr, b):
    args = [f"{k}={json.dumps(v)}" for k, v in b.items()]
    r = cli("grad", "--format", "json", expr, *args)
    assert r.code == 0, r.err
    want = json.loads(r.out)
    d = data_of(gradcli.show(expr, b))
    got = {n["id"]: n for n in d["nodes"]}
    for node in want["nodes"]:
        n = got[node["id"]]
        np.testing.assert_allclose(np.asarray(n["V"]["a"], float), np.asarray(node["value"]),
                                   rtol=1e-15)
        if node["grad"] is None:
            assert n["G"] is None
        else:
            np.testing.assert_allclose(np.asarray(n["G"]["a"], float),
                                       np.asarray(node["grad"]), rtol=1e-15)
    end = d["steps"][-1]["t"]
    for name, g in want["gradients"].items():
        assert f"∂{want['output']}/∂{name} = " in end


def test_constants_are_no_steps_but_appear_with_their_consumer():
    res = traced("x**2+2*x+1", x=np.array([2.0, 3.0]))
    d = html.page_data(res)
    consts = [i for i in res.order if res.graph.nodes[i].op.name == "const"]
    fwd = [s for s in d["steps"] if s["k"] == "fwd"]
    assert consts and not any(s["n"] in consts for s in fwd)
    shown = {j for s in fwd for j in s["v"]}
    assert shown == set(res.order)
    x_step = next(s for s in d["steps"] if s["k"] == "bwd" and s["n"] == 0)
    assert x_step["t"] == ("x: all its gradient has arrived: [2, 2] (via 2*x) + [4, 6] "
                           "(via x**2) = [6, 8], so ∂f/∂x = [6, 8].")


def test_output_seeded_with_ones_says_so():
    page = gradcli.show("x**2+2*x+1", x=[2.0, 3.0])
    d = data_of(page)
    assert any("starts from ones" in n for n in d["notes"])
    turn = next(s for s in d["steps"] if s["k"] == "turn")
    assert "ones of shape (2,)" in turn["t"]


def test_the_same_value_twice_into_one_op_names_the_argument():
    d = html.page_data(traced("x*x", x=3.0))
    x = next(s for s in d["steps"] if s["k"] == "bwd" and s["n"] == 0)
    assert x["t"] == ("x: all its gradient has arrived: 3 (via f, argument 1) + 3 (via f, "
                      "argument 2) = 6, so ∂f/∂x = 6.")


def test_a_big_fan_out_is_summarised():
    terms = " + ".join(f"sin(x*{k})" for k in range(1, 20))
    res = traced(terms, x=0.5)
    d = html.page_data(res)
    x = next(s for s in d["steps"] if s["k"] == "bwd" and s["n"] == 0)
    assert "… (13 more)" in x["t"]
    total = float(x["t"].rsplit("= ", 1)[1].rstrip("."))
    assert total == pytest.approx(float(res.gradients["x"]), rel=1e-5)


def test_big_arrays_embed_a_corner_not_everything():
    W = np.arange(200 * 300, dtype=float).reshape(200, 300)
    d = data_of(gradcli.show("sum(W * 2)", W=W))
    w = next(n for n in d["nodes"] if n["label"] == "W")
    assert w["V"]["corner"] == [64, 64] and len(w["V"]["a"]) == 64
    assert w["V"]["a"][1][2] == W[1, 2]


def test_rules_and_explain_lines_in_the_node_data():
    d = data_of(gradcli.show(*SEED))
    nodes = {n["id"]: n for n in d["nodes"]}
    assert nodes[5]["rule"] == ["∂f/∂(x+y) = max(y,z)", "∂f/∂max(y,z) = x+y"]
    assert any("because y > z" in line for line in nodes[4]["explain"])
    assert nodes[1]["explain"][0].endswith("= 2·1 + 3·1 = 5")
    assert nodes[0]["rule"] == []


# ---------------------------------------------------------------- the picture

def test_svg_is_graphviz_s_and_marked_for_the_script():
    page = gradcli.show(*SEED)
    assert "<!-- Generated by graphviz" not in page  # the SVG element only, inline
    svg = page[page.index("<svg"):page.index("</svg>")]
    d = data_of(page)
    boxes = re.findall(r'class="node" data-b="(\d+)"', svg)
    assert sorted(map(int, boxes)) == list(range(6))
    by_id = {n["id"]: n["box"] for n in d["nodes"]}
    assert len(set(by_id.values())) == 6
    keys = re.findall(r'class="edge" data-k="([fb]):(\d+):(\d+)"', svg)
    assert sum(k == "f" for k, _, _ in keys) == 6
    assert sum(k == "b" for k, _, _ in keys) == 6
    # a step lights the backward edges it sends along
    for kind, a, b in keys:
        assert int(a) != int(b)
    # the output's value line and the gradient lines are hidden until the walk gets there
    assert re.search(r'<text class="v"[^>]*>f = 6</text>', svg)
    assert len(re.findall(r'<text class="g"', svg)) == 6


def test_collapsed_picture_maps_every_node_to_its_statement_box():
    prog = "a = x*y + sin(x)\nb = a*a - y\nf = b + a"
    d = data_of(gradcli.show(prog, x=0.5, y=2.0, collapse=True))
    nodes = {n["id"]: n for n in d["nodes"]}
    res = traced(prog, x=0.5, y=2.0)
    a, b, f = (res.graph.names[n] for n in "abf")
    a_box = nodes[a]["box"]
    inner = [i for i in res.order if res.graph.nodes[i].inputs and i < a]
    assert inner and all(nodes[i]["box"] == a_box for i in inner)
    assert len({nodes[i]["box"] for i in (a, b, f)}) == 3


def test_a_thousand_node_program_collapses_as_dot_does():
    prog = thousand_nodes()
    res = engine.differentiate(parse(prog), {"x": 0.3, "y": 0.7}, trace=True)
    assert len(res.order) >= 1000
    p = gradcli.show(prog, x=0.3, y=0.7)
    d = data_of(p)
    assert any("--max-nodes" in n for n in d["notes"])
    assert len(d["steps"]) > 1000
    assert p.count('class="node" data-b=') <= 151


def thousand_nodes(n=201):
    """A 1,000-node program: a chain of 201 statements of 5 nodes (constants included)."""
    lines = ["a0 = x * y"]
    for k in range(1, n):
        lines.append(f"a{k} = sin(a{k - 1}) * 0.9 + 0.1")
    return "\n".join(lines)


# ---------------------------------------------------------------- self-contained

def test_page_needs_no_network():
    page = gradcli.show(*SEED)
    assert "<script src" not in page and "<link" not in page and "@import" not in page
    assert "url(" not in page
    # the only addresses are the SVG namespaces (names, never fetched)
    assert set(re.findall(r'https?://[^\s"\'<>)]+', page)) <= {
        "http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")


def test_hostile_names_cannot_break_out_of_the_page():
    prog = 'f = x * 2  # </script><script>alert(1)</script> <!--'
    page = gradcli.show(prog, x=1)
    assert page.count("</script>") == 2  # the data block's and the script's own
    assert "<script>alert" not in page
    d = data_of(page)
    assert "</script>" in d["steps"][0]["t"]  # the text itself is intact


def test_placeholders_in_the_program_stay_text():
    page = gradcli.show("f = x * 2  # %JS% %DATA% %CSS%\ng = f + 1", x=1)
    assert page.count('"use strict"') == 1  # the script once, not again in the heading
    assert page.count('id="gradcli-data"') == 1
    data_of(page)
    assert "%JS% %DATA% %CSS%" in page  # in the heading, as written


def test_nan_and_inf_survive_as_text():
    page = gradcli.show("log(x) * y", x=0.0, y=np.nan)
    d = data_of(page)  # strict JSON: no NaN tokens
    vals = {n["label"]: n["V"]["a"] for n in d["nodes"]}
    assert vals["y"] == "nan" and vals["log(x)"] == "-inf"


def test_repr_html_is_a_sandboxed_iframe():
    page = gradcli.show("x*y", x=2, y=3)
    frame = page._repr_html_()
    assert frame.startswith("<iframe srcdoc=") and 'sandbox="allow-scripts"' in frame
    assert "<script>" not in frame  # escaped inside srcdoc
    import html as _h

    inner = _h.unescape(frame.split('srcdoc="', 1)[1].split('" style=', 1)[0])
    assert inner == str(page)


def test_page_needs_a_trace():
    res = engine.differentiate(parse("x*y"), {"x": 1, "y": 2})
    with pytest.raises(ValueError, match="trace=True"):
        html.page(res)


# ---------------------------------------------------------------- the check page

def test_check_page_marks_a_kink_orange_with_its_slopes():
    g = parse("relu(x)*y")
    b = {"x": 0.0, "y": 2.0}
    report = gradcli.check(g, b)
    page = html.check_page(report, b)
    d = data_of(page)
    assert d["check"]["1"]["status"] == "kink"
    assert "one-sided slopes 0 (left) and 2 (right)" in d["check"]["1"]["text"]
    assert '<g id="node' in page and "#f8c471" in page  # Graphviz filled it (dot's colour)
    assert any(n.startswith("PASS") for n in d["notes"])


def test_check_page_marks_a_failing_custom_op_red_with_the_blame():
    ops = gradcli.load_ops(BUGGY)
    g = gradcli.compile("MultiplyGate(x, y) + x", ops)
    b = {"x": 3.0, "y": 2.0}
    report = gradcli.check(g, b)
    assert not report.ok
    d = data_of(html.check_page(report, b))
    fails = {k: v for k, v in d["check"].items() if v["status"] == "fail"}
    assert list(fails) == ["2"] and "disagrees with finite differences" in fails["2"]["text"]
    assert any(n.startswith("FAIL") for n in d["notes"])


# ---------------------------------------------------------------- the command

def test_cli_writes_the_page_atomically(tmp_path):
    out = tmp_path / "page.html"
    r = cli("show", "(x+y)*max(y,z)", "x=1", "y=2", "z=0", "-o", out)
    assert r.code == 0, r.err
    assert r.out == "" and r.err == ""
    text = out.read_text(encoding="utf-8")
    assert data_of(text)["output"] == "f"
    assert os.listdir(tmp_path) == ["page.html"]


def test_cli_without_o_writes_stdout_and_notes_go_to_stderr():
    r = cli("show", "x**2+2*x+1", "x=[2,3]")
    assert r.code == 0
    assert r.out.startswith("<!DOCTYPE html>")
    assert "starts from ones" in r.err


def test_cli_options_reach_the_page():
    r = cli("show", "a = x*y\nf = a + y", "x=2", "y=3", "--wrt", "x", "--title", "Lesson 1")
    assert r.code == 0, r.err
    d = data_of(r.out)
    assert "<title>Lesson 1 · gradcli show</title>" in r.out
    assert d["steps"][-1]["t"] == "Reverse pass done: ∂f/∂x = 3."
    r = cli("show", "x*y", "x=[1,2]", "y=[3,4]", "--upstream", "[1,-1]")
    assert "∂f/∂x = [3, -4]" in data_of(r.out)["steps"][-1]["t"]


@pytest.mark.parametrize("args,frag", [
    (["x+", "x=1"], "line 1, column 3"),
    (["x*y", "x=1"], "unbound variable: y"),
    (["x*y", "x=1", "y=[1,2", ], "y"),
    (["x", "x=1", "--wrt", "q"], "--wrt q"),
])
def test_cli_bad_input_is_one_error_line(args, frag):
    bad(cli("show", *args), frag)


def test_cli_unwritable_output_is_an_error_and_leaves_nothing(tmp_path):
    target = tmp_path / "no" / "page.html"
    bad(cli("show", "x*y", "x=1", "y=2", "-o", target), "cannot write")
    assert not (tmp_path / "no").exists()


def test_cli_as_a_real_process(tmp_path, gradcli_exe):
    out = tmp_path / "p.html"
    r = run(gradcli_exe, "show", "(x+y)*z", "x=1", "y=3", "z=-3", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert data_of(out.read_text(encoding="utf-8"))["steps"][-1]["t"] == \
        "Reverse pass done: ∂f/∂x = -3, ∂f/∂y = -3, ∂f/∂z = 4."
    r = run(gradcli_exe, "show", "--help")
    assert r.returncode == 0 and "#step=9" in r.stdout
    r = run(gradcli_exe, "--help")
    assert "show" in r.stdout


def test_the_picture_is_dot_grad_s():
    """Same boxes and edges as `gradcli dot --grad` (the page only shortens fan-out totals)."""
    r = cli("dot", "--grad", "(x+y)*max(y,z)", "x=1", "y=2", "z=0")
    assert r.code == 0, r.err
    boxes = re.findall(r"^\s+(n\d+) \[", r.out, re.M)
    edges = re.findall(r"^\s+(n\d+) -> (n\d+)", r.out, re.M)
    page = gradcli.show(*SEED)
    svg = page[page.index("<svg"):]
    titles = re.findall(r'class="node" data-b="\d+">\s*<title>([^<]*)</title>', svg)
    assert sorted(titles) == sorted(boxes)
    drawn = re.findall(r'class="edge" data-k="[fb]:\d+:\d+">\s*<title>([^<]*)</title>', svg)
    assert sorted(t.replace("&#45;&gt;", "->") for t in drawn) == \
        sorted(f"{a}->{b}" for a, b in edges)
    assert "∂f/∂y = 2 (via x+y) + 3 (via max(y,z)) = 5" in r.out
    assert "∂f/∂y = 5<" in svg


def test_the_command_gives_what_the_api_gives():
    r = cli("show", "(x+y)*z", "x=1", "y=3", "z=-3")
    assert r.code == 0, r.err
    assert r.out == str(gradcli.show("(x+y)*z", x=1, y=3, z=-3))
