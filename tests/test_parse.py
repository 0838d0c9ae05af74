"""The language: precedence, statements, names, literals, indexing, errors, deep programs."""
import math

import numpy as np
import pytest

import gradcli
from gradcli.errors import GradcliError, ParseError
from gradcli.parse import parse


def value(text, **b):
    return gradcli.evaluate(text, b).value


@pytest.mark.parametrize("text, expected", [
    ("-2**2", -4.0),              # ** binds tighter than a unary minus on its left
    ("2**-1", 0.5),               # a unary minus in the exponent is allowed
    ("2**3**2", 512.0),           # right-associative
    ("2^3^2", 512.0),             # ^ is **
    ("(2**3)**2", 64.0),
    ("8 / 4 / 2", 1.0),           # left-associative
    ("8 - 4 - 2", 2.0),
    ("1 + 2 * 3", 7.0),
    ("(1 + 2) * 3", 9.0),
    ("-3 * -2", 6.0),
    ("--3", 3.0),
    ("+-+3", -3.0),
    ("2 * -3 ** 2", -18.0),
    (".5 + 1e-3 + 2.5e1 + 1.", 26.501),
    ("pi", math.pi),
    ("e", math.e),
    ("-e**2", -math.e ** 2),
])
def test_precedence_and_numbers(text, expected):
    assert value(text) == pytest.approx(expected, rel=1e-15)


def test_precedence_with_variables():
    # -x**2 is -(x**2) and x**y**z is x**(y**z)
    assert value("-x**2", x=3) == pytest.approx(-9)
    assert value("x**y**z", x=2, y=3, z=2) == pytest.approx(512)
    assert value("x / y / z", x=8, y=4, z=2) == pytest.approx(1)
    assert value("x - y + z", x=1, y=2, z=3) == pytest.approx(2)
    # @ has the precedence of * and /, left to right
    W = np.array([[1.0, 2.0], [3.0, 4.0]])
    v = np.array([1.0, -1.0])
    np.testing.assert_allclose(value("2 * W @ v", W=W, v=v), (2 * W) @ v)
    np.testing.assert_allclose(value("W @ v * 2", W=W, v=v), (W @ v) * 2)


def test_statements_newlines_semicolons_and_comments():
    text = """
    # a comment line
    a = x + 1   # trailing comment

    b = a * y; c = b - 1
    c
    """
    assert value(text, x=1, y=3) == pytest.approx(5)
    g = parse("a = x * y; f = a + 1")
    assert g.output_name == "f"
    assert g.nodes[g.output].name == "f"


def test_newlines_inside_brackets_continue_the_statement():
    text = "f = max(x,\n        y) + sum([1,\n 2])\n"
    assert value(text, x=1, y=2) == pytest.approx(5)
    assert value("f = x + \\\n y", x=1, y=2) == pytest.approx(3)


def test_output_names():
    assert parse("(x+y)*z").output_name == "f"
    assert parse("f * 2").output_name == "out"      # f is taken by a variable
    assert parse("a = x; a").output_name == "a"
    assert parse("x").output_name == "f"
    assert parse("g = x * 2\n").output_name == "g"


def test_names_unicode_and_underscores():
    assert value("θ * x + sin(θ)", θ=0.5, x=2) == pytest.approx(1 + math.sin(0.5))
    assert value("x_1 * x2 + b_", x_1=2, x2=3, b_=1) == pytest.approx(7)


def test_a_name_may_be_assigned_again_each_time_a_new_node():
    assert value("a = x; b = a * 2; c = b + 1; c", x=3) == pytest.approx(7)
    g = parse("a = x * 2; a = a * 3; a = a + 1")
    assert value("a = x * 2; a = a * 3; a = a + 1", x=1) == pytest.approx(7)
    assert [g.nodes[g.names[n]].name for n in ("a", "a#2", "a#3")] == ["a#3", "a#2", "a#3"]
    assert g.nodes[g.names["a#2"]].op.name == "mul" and g.names["a"] == g.names["a#3"]
    assert g.output == g.names["a"] and g.output_name == "a"


def test_an_input_assigned_again_stays_the_input_variable():
    g = parse("h = tanh(h) * w\nh = tanh(h) * w")
    assert g.variables == {"h": 0, "w": 2}
    assert g.nodes[0].name == "h" and g.nodes[g.names["h"]].name == "h#3"
    assert value("h = tanh(h) * w\nh = tanh(h) * w", h=0.5, w=2) == pytest.approx(
        math.tanh(math.tanh(0.5) * 2) * 2)


def test_a_constant_name_may_be_assigned_with_a_warning():
    g = parse("a = e * x\ne = a + 1\nf = e * pi")
    assert value("a = e * x\ne = a + 1\nf = e * pi", x=2) == pytest.approx(
        (math.e * 2 + 1) * math.pi)
    assert len(g.warnings) == 1 and "line 2" in g.warnings[0] and "constant e" in g.warnings[0]
    assert parse("y = x * 2").warnings == []


def test_variables_in_order_of_first_appearance():
    assert list(parse("z * (y + x) + y").variables) == ["z", "y", "x"]


def test_array_literals():
    np.testing.assert_array_equal(value("[1, -2, 3]"), [1, -2, 3])
    np.testing.assert_array_equal(value("[[1, 0], [0, 1]]"), np.eye(2))
    np.testing.assert_array_equal(value("[x, 2 * x]", x=3), [3, 6])
    g = parse("[1, -2, 3]")
    assert [n.op.name for n in g.nodes] == ["const"]  # a literal of numbers is one constant


@pytest.mark.parametrize("text, expected", [
    ("x[0]", 10), ("x[-1]", 13), ("x[1:]", [11, 12, 13]), ("x[:-1]", [10, 11, 12]),
    ("x[::2]", [10, 12]), ("x[1:3]", [11, 12]), ("x[-2:]", [12, 13]), ("x[:]", [10, 11, 12, 13]),
])
def test_indexing_and_slicing_vectors(text, expected):
    np.testing.assert_array_equal(value(text, x=np.array([10.0, 11, 12, 13])), expected)


def test_indexing_matrices():
    W = np.arange(12.0).reshape(3, 4)
    assert value("W[1, 2]", W=W) == 6
    np.testing.assert_array_equal(value("W[1]", W=W), W[1])
    np.testing.assert_array_equal(value("W[:, 0]", W=W), W[:, 0])
    np.testing.assert_array_equal(value("W[1:, -1]", W=W), W[1:, -1])
    np.testing.assert_array_equal(value("W[0][1]", W=W), W[0][1])


def test_sum_and_mean_take_an_integer_axis():
    T = np.arange(24.0).reshape(2, 3, 4)
    np.testing.assert_allclose(value("sum(T, 2)", T=T), T.sum(2))
    np.testing.assert_allclose(value("sum(T, -1)", T=T), T.sum(-1))
    np.testing.assert_allclose(value("mean(T, 0)", T=T), T.mean(0))


def test_max_min_by_argument_count():
    v = np.array([3.0, 1.0, 2.0])
    assert value("max(v)", v=v) == 3
    assert value("min(v)", v=v) == 1
    np.testing.assert_array_equal(value("max(v, 2)", v=v), [3, 2, 2])
    np.testing.assert_array_equal(value("min(v, 2)", v=v), [2, 1, 2])


def test_the_graph_is_in_topological_order_and_spans_point_at_the_text():
    g = parse("a = x + y\nb = max(y, z)\nf = a * b")
    for node in g.nodes:
        assert all(j < node.id for j in node.inputs)
    assert [g.source(i) for i in range(len(g.nodes))] == [
        "x", "y", "x + y", "z", "max(y, z)", "a * b"]
    assert g.label(2) == "a" and g.label(4) == "b"


def test_parse_is_cached():
    assert parse("x * y + 1") is parse("x * y + 1")


# ------------------------------------------------------------------ errors

def error(text):
    with pytest.raises(GradcliError) as e:
        parse(text)
    return e.value


@pytest.mark.parametrize("text, line, column, words", [
    ("(x+", 1, 4, "unexpected end of the program"),
    ("x +* y", 1, 4, "unexpected '*'"),
    ("x y", 1, 3, "unexpected name 'y'"),
    ("a = 1\nb = (a +\n", 2, 9, "unexpected end"),
    ("x $ 2", 1, 3, "unexpected character '$'"),
    ("sin(x", 1, 6, "expected"),
    ("W[x]", 1, 3, "whole-number constants"),
    ("foo(x)", 1, 1, "unknown op 'foo'"),
    ("tanhh(x)", 1, 1, "did you mean tanh"),
    ("tanh(x, y)", 1, 1, "tanh takes 1 argument, got 2"),
    ("max(x, y, z)", 1, 1, "max takes 1 or 2 arguments, got 3"),
    ("sum(x, y)", 1, 8, "the axis of sum must be a constant"),
    ("sum(x, 1.5)", 1, 8, "the axis of sum must be a whole number"),
    ("[[1, 2], [3]]", 1, 1, "ragged array"),
    ("[]", 1, 1, "at least one item"),
    ("None = 3", 1, 1, "cannot assign to None"),
    ("x + 1; y = 2", 1, 1, "only the last statement can be a bare expression"),
    ("(x;y)", 1, 3, "unexpected ';'"),
])
def test_parse_errors_have_line_column_and_caret(text, line, column, words):
    e = error(text)
    assert isinstance(e, ParseError)
    assert (e.line, e.column) == (line, column)
    message = str(e)
    assert words in message
    assert message.startswith(f"line {line}, column {column}: ")
    # the offending line, then a caret under the offending column (both indented by 2)
    shown, caret = message.splitlines()[-2:]
    assert shown == "  " + text.splitlines()[line - 1]
    assert caret == " " * (column + 1) + "^"


@pytest.mark.parametrize("text", ["", "   ", "# only a comment\n", ";;\n;"])
def test_empty_program(text):
    assert "empty" in str(error(text))


def test_long_lines_are_cut_around_the_caret():
    text = "x + " * 60 + "* y"
    message = str(error(text))
    shown, caret = message.splitlines()[-2:]
    assert len(shown) < 90
    assert shown[caret.index("^")] == "*"


# ------------------------------------------------------------------ no recursion limits

def test_deep_parentheses_and_chains_parse_without_recursion():
    n = 20000
    assert value("(" * n + "x" + ")" * n, x=2) == 2
    assert value("-" * n + "x", x=2) == 2          # an even number of minus signs
    assert value("x" + "**x" * n, x=1) == 1
    r = gradcli.grad("sin(" * 5000 + "x" + ")" * 5000, x=0.5)
    assert np.isfinite(r.gradients["x"])


def test_a_100000_node_program():
    n = 25000
    lines = ["a_0 = y"] + [f"a_{i} = a_{i - 1} * 1.00001 + y * 0.00001" for i in range(1, n + 1)]
    g = parse("\n".join(lines))
    assert len(g.nodes) > 100000
    r = gradcli.grad(g, y=2.0)
    # a_n = y (c^n + d (c^n - 1)/(c - 1)) with c = 1.00001, d = 0.00001: linear in y
    c, d = 1.00001, 0.00001
    slope = c ** n + d * (c ** n - 1) / (c - 1)
    assert r.value == pytest.approx(2 * slope, rel=1e-9)
    assert r.gradients["y"] == pytest.approx(slope, rel=1e-9)


def test_build_parser_writes_the_same_file_every_time():
    """tools/build_parser.py is deterministic (IGNORE sorted, states renumbered), and what
    it writes is what is checked in."""
    pytest.importorskip("lark")
    import importlib.util
    import pathlib
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parent.parent
    code = ("import importlib.util, sys; s = importlib.util.spec_from_file_location('b', "
            f"{str(root / 'tools' / 'build_parser.py')!r}); m = importlib.util.module_from_spec(s);"
            " s.loader.exec_module(m); sys.stdout.write(m.generate())")
    # separate processes: set and dict orders (hash seeds) differ between them
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"},
                           check=True).stdout for seed in ("1", "2")}
    assert len(runs) == 1
    assert runs.pop() == (root / "gradcli" / "_tables.py").read_text(encoding="utf-8")
