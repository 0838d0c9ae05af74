"""Pictures: `gradcli dot` (DOT and Mermaid), --render through the real Graphviz, check in colour.

Every DOT text a test makes is also handed to the real ``dot -Tsvg``, which must accept it.
Edge labels and gradient annotations are compared with the values and gradients the library
computes (and those with hand-derived numbers), never with numbers copied from the output.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gradcli
from gradcli.render import dot as core
from gradcli.render import mermaid
from gradcli.render import text as fmt

from conftest import BUGGY, bad, cli, run

ROOT = Path(__file__).resolve().parent.parent
DOT = shutil.which("dot")
WORKED = "a = x + y\nb = max(y, z)\nf = a * b"
XYZ = dict(x=1, y=2, z=0)
GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("GRADCLI_UPDATE_GOLDEN") == "1"


def graphviz_ok(text, fmt_="svg"):
    """The real dot accepts ``text``; returns what it made."""
    assert DOT, "Graphviz's dot must be installed for the picture tests (.ci/run installs it)"
    done = subprocess.run([DOT, f"-T{fmt_}"], input=text.encode("utf-8"), capture_output=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    assert not done.stderr.strip(), done.stderr.decode()   # no warnings either
    return done.stdout.decode("utf-8")


NODE = re.compile(r"^  (\w+) \[shape=(\w+), label=<(.*?)>(?=,|\])(.*)\];$")
EDGE = re.compile(r"^  (\w+) -> (\w+)(?: \[(.*)\])?;$")


def parse_dot(text):
    """(nodes {id: (shape, label, rest)}, edges [(a, b, label, backward)]) of our DOT."""
    nodes, edges = {}, []
    for line in text.splitlines():
        m = NODE.match(line)
        if m:
            nodes[m[1]] = (m[2], m[3], m[4])
            continue
        m = EDGE.match(line)
        if m:
            attrs = m[3] or ""
            lab = re.search(r'label="((?:[^"\\]|\\.)*)"', attrs)
            edges.append((m[1], m[2], lab[1] if lab else None, "dir=back" in attrs))
    return nodes, edges


def golden(name, got):
    path = GOLDEN / f"{name}.txt"
    if UPDATE:
        path.write_text(got, encoding="utf-8")
    assert path.exists(), f"run GRADCLI_UPDATE_GOLDEN=1 pytest {__file__}"
    assert got == path.read_text(encoding="utf-8")


# ---------------------------------------------------------------- the DOT text

def test_values_on_forward_edges_and_shapes():
    res = gradcli.evaluate(WORKED, **XYZ)
    text = gradcli.dot(WORKED, **XYZ)
    graphviz_ok(text)
    nodes, edges = parse_dot(text)
    g = res.graph
    for name in ("x", "y", "z"):
        assert nodes[f"n{g.names[name]}"][0] == "ellipse"
    for name in ("a", "b", "f"):
        shape, label, _ = nodes[f"n{g.names[name]}"]
        assert shape == "box"
        op = g.nodes[g.names[name]].op.name
        assert label.startswith(f"<B>{op}</B>") and f"{name} = " in label
    # every forward edge carries its source's value, every graph edge is drawn once
    want = sorted((f"n{j}", f"n{i}") for i in res.order for j in g.nodes[i].inputs)
    assert sorted((a, b) for a, b, _, back in edges if not back) == want
    for a, b, label, back in edges:
        assert float(label) == pytest.approx(float(res.values[int(a[1:])]))
    # the output: a double border and its value
    out = nodes[f"n{g.output}"]
    assert "peripheries=2" in out[2] and "<B>f = 6</B>" in out[1]


def test_same_program_same_bytes():
    a = gradcli.dot(WORKED, grad=True, **XYZ)
    b = gradcli.dot(gradcli.compile(WORKED), grad=True, **XYZ)
    r1, r2 = cli("dot", "--grad", WORKED, "x=1", "y=2", "z=0"), \
        cli("dot", "--grad", WORKED, "z=0", "y=2", "x=1")
    assert a == b == r1.out == r2.out


def test_grad_backward_edges_carry_the_gradients():
    res = gradcli.grad(WORKED, **XYZ)
    text = gradcli.dot(WORKED, grad=True, **XYZ)
    graphviz_ok(text)
    nodes, edges = parse_dot(text)
    g = res.graph
    back = {(a, b): float(lab) for a, b, lab, is_back in edges if is_back}
    # d f / d a = b = 2, d f / d b = a = 3; y gets 2 via a and 3 via b
    ya, yb = (f"n{g.names['y']}", f"n{g.names['a']}"), (f"n{g.names['y']}", f"n{g.names['b']}")
    assert back[ya] == 2 and back[yb] == 3
    assert back[(f"n{g.names['a']}", f"n{g.names['f']}")] == 2
    assert back[(f"n{g.names['b']}", f"n{g.names['f']}")] == 3
    # each input annotated with its total gradient, the fan-out sum spelled out
    y = nodes[f"n{g.names['y']}"][1]
    assert "∂f/∂y = 2 (via a) + 3 (via b) = 5" in y
    for name, want in (("x", 2), ("z", 0)):
        assert f"∂f/∂{name} = {fmt.num(want)}<" in nodes[f"n{g.names[name]}"][1]
        assert float(res.gradients[name]) == want
    # backward edges dashed, in another colour
    for line in text.splitlines():
        if "dir=back" in line:
            assert "style=dashed" in line and core.BACK in line


def test_arrays_shape_and_preview():
    W = np.arange(12.0).reshape(3, 4)
    text = gradcli.dot("sum(tanh(W @ x))", W=W, x=[1, 2, 3, 4], grad=True)
    graphviz_ok(text)
    _, edges = parse_dot(text)
    labels = [lab for *_, lab, back in edges if not back]
    assert "3×4 [0, 1, 2, …, 11]" in labels        # shape and a short preview
    assert "[1, 2, 3, 4]" in labels                # small arrays in full


def test_constants_folded_into_their_consumer():
    text = gradcli.dot("y = x * 2 + 1", x=3)
    nodes, edges = parse_dot(text)
    assert len(nodes) == 3                         # x, x * 2, the output: no constant boxes
    assert any("x * 2" in label for _, label, _ in nodes.values())
    named = gradcli.dot("c = 2\ny = x * c", x=3)
    assert len(parse_dot(named)[0]) == 3           # a named constant is drawn: it has a name


def test_no_bindings_draws_the_structure():
    r = cli("dot", "x * y + sin(x)")
    assert r.code == 0, r.err
    nodes, edges = parse_dot(r.out)
    assert len(nodes) == 5 and all(lab is None for *_, lab, _ in edges)
    graphviz_ok(r.out)
    bad(cli("dot", "--grad", "x * y"), "unbound")


def test_collapse_one_box_per_statement():
    prog = "h = tanh(W @ x + b)\nloss = sum(h * h)"
    kw = dict(W=[[1, 2], [3, 4]], x=[1, -1], b=[0.5, 0])
    text = gradcli.dot(prog, collapse=True, grad=True, **kw)
    graphviz_ok(text)
    nodes, edges = parse_dot(text)
    boxes = [i for i, (shape, _, _) in nodes.items() if shape == "box"]
    assert len(boxes) == 2
    res = gradcli.grad(prog, **kw)
    g = res.graph
    # the statement h receives W, x and b; what it sends back to W is dloss/dW
    h = f"s{g.names['h']}"
    into_h = {a for a, b, _, back in edges if b == h and not back}
    assert into_h == {f"n{g.names[v]}" for v in ("W", "x", "b")}
    back_w = [lab for a, b, lab, back in edges if back and a == f"n{g.names['W']}"]
    assert back_w == [fmt.array(res.gradients["W"], small=core.PREVIEW)]


def chain(n):
    return "\n".join(["a0 = y"] + [f"a{i} = a{i - 1} * 1.5 + y" for i in range(1, n + 1)])


def test_past_max_nodes_collapses_and_says_so():
    prog = chain(30)
    r = cli("dot", prog, "y=0.5", "--max-nodes", "40")
    assert r.code == 0
    assert "drawn as one box per statement" in r.err and "--max-nodes 40" in r.err
    nodes, _ = parse_dot(r.out)
    drawn = [i for i in nodes if "_" not in i]   # not counting y drawn again beside each use
    assert len(drawn) <= 40 and len(nodes) > len(drawn)
    graphviz_ok(r.out)
    r = cli("dot", prog, "y=0.5", "--max-nodes", "10")
    assert "farthest from the output are drawn as one box" in r.err
    nodes, edges = parse_dot(r.out)
    assert "more" in nodes and nodes["more"][0] == "note"
    statements = [i for i in nodes if i.startswith("s")]
    assert len(statements) == 9
    graphviz_ok(r.out)
    r = cli("dot", prog, "y=0.5", "--max-nodes", "0")
    assert r.err == "" and len([i for i in parse_dot(r.out)[0] if "_" not in i]) == 1 + 2 * 30


def test_a_value_feeding_many_boxes_is_drawn_again():
    prog = chain(12)
    text = gradcli.dot(prog, y=0.5, collapse=True)
    nodes, edges = parse_dot(text)
    copies = [i for i in nodes if i.startswith("n0_")]
    assert len(copies) == 12 - 1 and all("style=dashed" in nodes[c][2] for c in copies)
    # each copy feeds exactly one box, with the value of y
    for c in copies:
        assert [lab for a, b, lab, _ in edges if a == c] == ["0.5"]


# ---------------------------------------------------------------- escaping

def test_escaping_dot_strings_and_html_labels():
    assert core.quoted('say "hi" \\ back\nline') == '"say \\"hi\\" \\\\ back\\nline"'
    assert core.html('a < b && c > "d"') == "a &lt; b &amp;&amp; c &gt; &quot;d&quot;"
    pic = core.Picture('t "quoted" \\ <x>')
    hostile = ['a "q" \\n <b> & θ', "nan", "-inf", "x" * 300]
    pic.boxes = [core.Box(f"n{k}", "box", [(s, "bold"), (s, "grad")], tooltip=s)
                 for k, s in enumerate(hostile)]
    pic.edges = [("n0", "n1", 'label "with" \\ quotes <>', False),
                 ("n1", "n2", "inf", True)]
    svg = graphviz_ok(core.to_dot(pic))
    assert "a &quot;q&quot; \\n &lt;b&gt; &amp; θ" in svg or 'a "q" \\n &lt;b&gt; &amp; θ' in svg
    assert "label &quot;with&quot; \\ quotes &lt;&gt;" in svg or \
        'label "with" \\ quotes &lt;&gt;' in svg


def test_unicode_nan_inf_and_long_names():
    long = "w" + "_very_long_name" * 8
    prog = f"θ = {long} * 2\nf = log(θ - 1) + 1 / (θ - 2) + sqrt(-θ)"
    r = cli("dot", "--grad", prog, f"{long}=1")
    assert r.code == 0, r.err
    svg = graphviz_ok(r.out)
    assert "θ" in svg
    assert "nan" in r.out and "inf" in r.out
    nodes, _ = parse_dot(r.out)
    for _, label, _ in nodes.values():
        for part in re.sub(r"<[^>]+>", "\n", label).split("\n"):
            assert len(part) <= core.LONG      # clipped; the whole name is in a tooltip
    assert f'tooltip="{long}' in r.out or long in r.out.split("tooltip=")[1]


# ---------------------------------------------------------------- Mermaid

MNODE = re.compile(r'^  (\w+)(\(\["|\["|\[\["|>")(.*?)("\]\)|"\]|"\]\])$')
MEDGE = re.compile(r'^  (\w+) (-->|-\.->)(?:\|"([^"]*)"\|)? (\w+)$')


def test_mermaid_same_content_as_dot():
    text = gradcli.dot(WORKED, grad=True, format="mermaid", **XYZ)
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    nodes, edges, styled = {}, [], None
    for line in lines[1:]:
        if line.startswith("  %%") or line.startswith("  classDef") or \
                line.startswith("  class "):
            continue
        if line.startswith("  linkStyle "):
            styled = [int(k) for k in line.split()[1].split(",")]
            continue
        m = MNODE.match(line)
        if m:
            assert '"' not in m[3]             # quotes inside labels are entity codes
            nodes[m[1]] = m[3]
            continue
        m = MEDGE.match(line)
        assert m, f"not a Mermaid node or edge: {line!r}"
        edges.append((m[1], m[2], m[3], m[4]))
    dnodes, dedges = parse_dot(gradcli.dot(WORKED, grad=True, **XYZ))
    assert set(nodes) == set(dnodes)
    for a, arrow, lab, b in edges:
        assert a in nodes and b in nodes
    # the same edges: forward ones as they are, backward ones drawn from the consumer
    got = sorted((a, b, lab, False) if arrow == "-->" else (b, a, lab, True)
                 for a, arrow, lab, b in edges)
    assert got == sorted(dedges)
    assert styled == [k for k, e in enumerate(edges) if e[1] == "-.->"]
    assert "∂f/∂y = 2 (via a) + 3 (via b) = 5" in nodes["n1"]
    assert "class n5 output" in text or f"class n{gradcli.compile(WORKED).output} output" in text


def test_mermaid_escapes():
    assert mermaid.text('a "b" <c> #1 | &') == "a #34;b#34; #60;c#62; #35;1 #124; #38;"


# ---------------------------------------------------------------- check in colour

def test_check_picture_marks_the_failing_node_red():
    ops = gradcli.load_ops(BUGGY)
    report = gradcli.check("sum(MultiplyGate(a, b)) + c", a=[2, 1], b=[3, 1], c=1, ops=ops)
    assert not report.ok
    text = core.check(report)
    graphviz_ok(text)
    nodes, _ = parse_dot(text)
    blamed = {b["node"] for b in report.blame}
    for nid, (_, label, rest) in nodes.items():
        filled = f'fillcolor="{core.FAIL}"' in rest
        assert filled == (int(nid[1:]) in blamed), nid
        if filled:
            assert "tooltip=" in rest and "disagrees with finite differences" in rest
    m = mermaid.check(report)
    assert "classDef fail" in m and f"class n{min(blamed)} fail" in m


def test_check_picture_marks_kinks_orange():
    report = gradcli.check("relu(x) * y", x=0.0, y=2.0)
    assert report.ok and report.kinked
    nodes, _ = parse_dot(core.check(report))
    relu = report.graph.names.get("f")  # the output is not the kink: relu(x) is
    orange = [i for i, (_, _, rest) in nodes.items() if core.KINK in rest]
    assert len(orange) == 1 and "relu" in nodes[orange[0]][1] and f"n{relu}" not in orange


# ---------------------------------------------------------------- --render and -o

def test_render_svg_file(tmp_path):
    out = tmp_path / "g.svg"
    r = cli("dot", "--grad", WORKED, "x=1", "y=2", "z=0", "-o", out)
    assert r.code == 0 and r.out == "", r.err
    svg = out.read_text(encoding="utf-8")
    assert svg.lstrip().startswith("<?xml") and "</svg>" in svg
    assert "∂f/∂y = 2 (via a) + 3 (via b) = 5" in svg
    assert (out.stat().st_mode & 0o777) == (0o666 & ~_umask())
    r = cli("dot", WORKED, "x=1", "y=2", "z=0", "--render", "png", "-o", tmp_path / "g.png")
    assert r.code == 0 and (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = cli("dot", WORKED, "--render", "svg")
    assert r.code == 0 and "</svg>" in r.out
    r = cli("dot", WORKED, "x=1", "y=2", "z=0", "-o", tmp_path / "g.mmd")
    assert (tmp_path / "g.mmd").read_text().startswith("flowchart LR")
    bad(cli("dot", WORKED, "--render", "png", "-o", tmp_path / "g.svg"), "asks for svg")
    bad(cli("dot", WORKED, "--format", "mermaid", "--render", "svg"), "mermaid")


def _umask():
    m = os.umask(0)
    os.umask(m)
    return m


def test_missing_graphviz_message(tmp_path, gradcli_exe):
    """A PATH without dot: exit 2, how to install it, and that plain DOT needs nothing."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    env = {"PATH": str(bindir)}
    exe = gradcli_exe if os.path.isabs(gradcli_exe[0]) else [sys.executable, "-m", "gradcli"]
    r = run(exe, "dot", "x*y", "x=1", "y=2", "-o", str(tmp_path / "g.svg"), env=env)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("error: ") and len(r.stderr.splitlines()) == 1
    for words in ("apt install graphviz", "brew install graphviz", "plain DOT output needs "
                  "nothing"):
        assert words in r.stderr
    assert not (tmp_path / "g.svg").exists()
    r = run(exe, "dot", "x*y", "x=1", "y=2", env=env)   # plain DOT: fine without Graphviz
    assert r.returncode == 0 and r.stdout.startswith("// gradcli")


def test_failed_render_leaves_no_partial_file(tmp_path, gradcli_exe):
    """A dot that writes half a picture and fails: no file, an old one untouched."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "dot"
    fake.write_text("#!/bin/sh\ncat > /dev/null\nprintf '<svg partial'\n"
                    "echo 'Error: syntax error in line 1' >&2\nexit 1\n")
    fake.chmod(0o755)
    out = tmp_path / "g.svg"
    out.write_text("old picture")
    exe = gradcli_exe if os.path.isabs(gradcli_exe[0]) else [sys.executable, "-m", "gradcli"]
    r = run(exe, "dot", "x*y", "x=1", "y=2", "-o", str(out),
            env={"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"})
    assert r.returncode == 2, r.stderr
    assert "Graphviz's dot failed" in r.stderr and "syntax error" in r.stderr
    assert out.read_text() == "old picture"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin", "g.svg"]   # no temp file


def test_write_atomic_cleans_up_on_failure(tmp_path, monkeypatch):
    from gradcli import graphviz

    target = tmp_path / "x.dot"

    def boom(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(graphviz.RenderError, match="No space left"):
        graphviz.write_atomic(str(target), "digraph {}")
    assert list(tmp_path.iterdir()) == []


def test_help_lists_dot():
    r = cli("--help")
    assert " dot " in r.out
    r = cli("dot", "--help")
    assert "--grad" in r.out and "--max-nodes" in r.out and "--collapse" in r.out
    assert f"[default: {core.MAX_NODES}]" in " ".join(r.out.split())


# ---------------------------------------------------------------- the Python API

def test_repr_svg_and_api():
    res = gradcli.grad(WORKED, **XYZ)
    svg = core.repr_svg(res)
    assert svg is not None and "<svg" in svg and "∂f/∂y" in svg
    assert "<svg" in core.repr_svg(gradcli.evaluate(WORKED, **XYZ))
    text = gradcli.dot(WORKED, {"x": 1, "y": 2}, z=0)
    assert text == gradcli.dot(WORKED, **XYZ)


def test_json_nodes_carry_their_text():
    r = cli("grad", "--format", "json", WORKED, "x=1", "y=2", "z=0")
    nodes = json.loads(r.out)["nodes"]
    g = gradcli.compile(WORKED)
    assert [n["text"] for n in nodes] == [g.source(n["id"]) for n in nodes]
    assert {n["name"]: n["text"] for n in nodes if n["name"]}["b"] == "max(y, z)"


# ---------------------------------------------------------------- golden pictures

GOLDEN_CASES = {
    "dot_worked_grad": ["dot", "--grad", "(x+y)*max(y,z)", "x=1", "y=2", "z=0"],
    "dot_matrix_collapsed": ["dot", "--grad", "--collapse", "y = W @ x + b\nf = sum(y * y)",
                             "W=[[1,2],[3,4]]", "x=[1,-1]", "b=[0.5,0]"],
    "mermaid_worked_grad": ["dot", "--grad", "--format", "mermaid", "(x+y)*max(y,z)", "x=1",
                            "y=2", "z=0"],
    "mermaid_structure": ["dot", "--format", "mermaid", "a = x * 2\nf = a + sin(a)"],
}


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_golden_pictures(name):
    args = GOLDEN_CASES[name]
    r = cli(*args)
    assert r.code == 0, r.err
    golden(name, f"$ gradcli {shlex.join(args)}\n{r.err}{r.out}")
    if "mermaid" not in name:
        graphviz_ok(r.out)


def test_golden_check_picture():
    ops = gradcli.load_ops(BUGGY)
    report = gradcli.check("sum(MultiplyGate(a, b)) + c", a=[2, 1], b=[3, 1], c=1, ops=ops)
    golden("dot_check_blamed", core.check(report))
    golden("mermaid_check_blamed", mermaid.check(report))


def test_check_picture_with_values_and_collapsed():
    """A report that keeps its evaluation (``report.ref``) gets values on the edges."""
    ops = gradcli.load_ops(BUGGY)
    prog = "h = MultiplyGate(a, b)\nf = sum(h) + c"
    kw = dict(a=[2, 1], b=[3, 1], c=1)
    report = gradcli.check(prog, ops=ops, **kw)
    if getattr(report, "ref", None) is None:
        report.ref = gradcli.evaluate(prog, ops=ops, **kw)
    text = core.check(report)
    _, edges = parse_dot(text)
    assert "[2, 1]" in [lab for *_, lab, _ in edges]
    collapsed = core.check(report, collapse=True)
    graphviz_ok(collapsed)
    nodes, _ = parse_dot(collapsed)
    h = f"s{report.graph.names['h']}"
    assert f'fillcolor="{core.FAIL}"' in nodes[h][2]
    assert f'fillcolor="{core.FAIL}"' not in nodes[f"s{report.graph.names['f']}"][2]


def test_dot_text_files_and_a_slow_graphviz(tmp_path, monkeypatch):
    from gradcli import graphviz

    r = cli("dot", "x*y", "x=1", "y=2", "-o", tmp_path / "g.gv")
    assert r.code == 0 and (tmp_path / "g.gv").read_text() == cli("dot", "x*y", "x=1",
                                                                    "y=2").out
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "dot").write_text(f"#!/bin/sh\nexec {shutil.which('sleep')} 5\n")
    (bindir / "dot").chmod(0o755)
    monkeypatch.setenv("PATH", str(bindir))
    with pytest.raises(graphviz.RenderError, match="took more than 0.5 s"):
        graphviz.run("digraph {}", "svg", timeout=0.5)
