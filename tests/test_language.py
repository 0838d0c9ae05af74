"""The language features of issue 15: comparisons, true/false, keyword arguments, tuple and
string constants, indexing with steps, None and ..., reassignment and constant names; with
their error messages (and carets), and random programs of the new ops against finite
differences."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings, strategies as st

import gradcli
from gradcli import ops as oplib
from gradcli.cli import main
from gradcli.errors import ParseError


def value(program, **b):
    return gradcli.evaluate(program, **b).value


def parse_error(program):
    with pytest.raises(ParseError) as e:
        gradcli.compile(program)
    return e.value


def top(program):
    g = gradcli.compile(program)
    return g.nodes[g.output]


# ------------------------------------------------------------------ comparisons

@pytest.mark.parametrize("program, op", [
    ("x + 1 > y * 2", "gt"), ("x < y", "lt"), ("x <= y", "le"), ("x >= y", "ge"),
    ("x == y", "eq"), ("x != y", "ne"), ("-x ** 2 < y - 1", "lt"), ("x @ y == 3", "eq"),
])
def test_comparisons_bind_loosest(program, op):
    assert top(program).op.name == op


@pytest.mark.parametrize("program, x, y, want", [
    ("x + 1 > y * 2", 2.0, 1.0, 1.0), ("x + 1 > y * 2", 1.0, 1.0, 0.0),
    ("x <= y", 1.0, 1.0, 1.0), ("x < y", 1.0, 1.0, 0.0), ("x == y", 2.0, 2.0, 1.0),
    ("x != y", 2.0, 2.0, 0.0), ("x >= y", 3.0, 2.0, 1.0),
    ("(x > 0) * x + (x <= 0) * y", -1.0, 5.0, 5.0),
])
def test_comparison_values(program, x, y, want):
    assert float(value(program, x=x, y=y)) == want


def test_comparisons_pass_no_gradient_and_work_on_arrays():
    r = gradcli.grad("sum((u <= w) * (u - w) ** 2)", u=[1.0, 3.0, 2.0], w=[2.0, 1.0, 2.0])
    np.testing.assert_allclose(r.gradients["u"], [-2.0, 0.0, 0.0])
    np.testing.assert_allclose(r.gradients["w"], [2.0, 0.0, 0.0])
    np.testing.assert_array_equal(value("x > 0", x=[-1.0, 0.0, 2.0]), [0, 0, 1])


@pytest.mark.parametrize("program, column", [("a < b < c", 7), ("a == b != c", 8),
                                             ("x = a >= b <= c", 12)])
def test_comparisons_do_not_chain(program, column):
    e = parse_error(program)
    assert "comparisons do not chain" in str(e) and e.column == column
    assert str(e).splitlines()[-1] == " " * (column + 1) + "^"


# ------------------------------------------------------------------ true, false, keywords

def test_true_and_false_are_one_and_zero():
    assert float(value("x * true + false", x=3)) == 3.0
    assert float(value("[true, false, 2]")[1]) == 0.0


def test_keywords_and_positional_give_the_same_node():
    a = top("sum(x, 1, true)")
    b = top("sum(x, axis=1, keepdims=true)")
    c = top("sum(x, keepdims=true, axis=1)")
    assert a.op is b.op is c.op and a.params == b.params == c.params == (1, True)


def test_defaults_are_filled_in_declared_order():
    assert top("var(x)").params == (None, 1, False)
    assert top("var(x, 0, correction=0)").params == (0, 0, False)
    assert top("leaky_relu(x)").params == (0.01,)
    assert top('gelu(x, approximate="tanh")').params == ("tanh",)
    assert top("conv2d(x, w)").params == (1, 0, 1, 1)
    assert top("conv2d(x, w, b, stride=(2, 1))").params == ((2, 1), 0, 1, 1)
    assert top("conv2d(x, w, groups=2)").params == (1, 0, 1, 2)
    assert top('einsum("ij,j->i", W, x)').params == ("ij,j->i",)
    assert top("max(x, axis=(0, 1))").params == ((0, 1), False)


@pytest.mark.parametrize("program, column, words", [
    ("sum(x, keepdim=true)", 8, "sum has no keyword keepdim; did you mean keepdims? "
                                "(its keywords: axis, keepdims)"),
    ("var(x, corection=0)", 8, "did you mean correction?"),
    ("sum(x, axis=1, axis=2)", 16, "sum's axis is given twice"),
    ("sum(x, 1, axis=2)", 11, "sum's axis is given twice"),
    ("sum(x, axis=1, 2)", 16, "a positional argument cannot follow a keyword argument"),
    ("tanh(x, axis=1)", 9, "tanh takes no keyword arguments"),
    ("sum(x, axis=y)", 13, "the axis of sum must be a constant"),
    ("sum(x, axis=0.5)", 13, "the axis of sum must be a whole number"),
    ("sum(x, keepdims=2)", 17, "the keepdims of sum must be true or false"),
    ("reshape(x, 2.5)", 12, "the shape of reshape must be a tuple of whole numbers"),
    ("cumsum(x)", 1, "cumsum needs its axis: cumsum(x, axis)"),
    ("gelu(x, approximate=1)", 21, "must be a string such as \"none\""),
    ('gelu(x, approximate="exact")', 21, 'must be "none" or "tanh", not "exact"'),
    ("max(x, y, axis=1)", 11, "max with 2 arguments takes no keyword arguments"),
    ("concat(a, b, 1)", 14, "concat's axis is a keyword: concat(a, b, axis=1)"),
])
def test_keyword_errors_name_the_keywords_with_a_caret(program, column, words):
    e = parse_error(program)
    assert words in str(e)
    assert e.column == column
    assert str(e).splitlines()[-1] == " " * (column + 1) + "^"


def test_max_and_min_with_two_positional_arguments_are_elementwise():
    assert top("max(x, 1)").op is oplib.maximum
    np.testing.assert_array_equal(value("max(x, 1)", x=[0.0, 3.0]), [1, 3])
    np.testing.assert_array_equal(value("max(x, axis=1)", x=[[0.0, 3.0], [5, 1]]), [3, 5])


# ------------------------------------------------------------------ tuples and strings

def test_tuple_constants():
    X = np.arange(24.0).reshape(2, 3, 4)
    np.testing.assert_array_equal(value("sum(X, axis=(0, 2))", X=X), X.sum(axis=(0, 2)))
    assert value("reshape(X, (4, -1))", X=X).shape == (4, 6)
    assert value("reshape(X, (24,))", X=X).shape == (24,)
    assert value("reshape(X[0, 0, 0], ())", X=X).shape == ()
    assert value("transpose(X, (2, 0, 1))", X=X).shape == (4, 2, 3)


@pytest.mark.parametrize("program, words", [
    ("(1, 2) + x", "a tuple is not a value"),
    ("sum((x, 1))", "a tuple holds constants only"),
    ("sum((0, 1))", "a tuple is not a value"),
    ("reshape(x, (y, 2))", "a tuple holds constants only"),
    ('"ij" * x', "a string is not a value"),
    ('[x, "a"]', "a string is not a value"),
    ("x + None", "None is not a value"),
    ('einsum("ij,j->i", W)', "einsum subscripts 'ij,j->i' name 2 operands, got 1"),
    ('einsum("ij,j->k", W, x)', "the output letter 'k' is in no operand"),
    ('einsum("i1,j", W, x)', "a term has the character '1'"),
    ('einsum("i->ii", W)', "repeat"),
])
def test_constants_out_of_place_are_clear_errors(program, words):
    assert words in str(parse_error(program))


def test_einsum_operand_that_does_not_match_is_named():
    with pytest.raises(gradcli.errors.EvalError) as e:
        gradcli.evaluate('einsum("ij,jk->ik", A, B)', A=np.ones((2, 3)), B=np.ones(3))
    assert "operand 2 has shape (3,)" in str(e.value) and "'jk' name 2" in str(e.value)


def test_strings_with_either_quote():
    W, x = np.arange(6.0).reshape(2, 3), np.ones(3)
    np.testing.assert_array_equal(value("einsum('ij,j->i', W, x)", W=W, x=x), W @ x)
    np.testing.assert_array_equal(value('einsum("ij,j", W, x)', W=W, x=x), W @ x)


# ------------------------------------------------------------------ indexing

@pytest.mark.parametrize("text, key", [
    ("X[::2]", np.s_[::2]), ("X[1::2, ::-1]", np.s_[1::2, ::-1]), ("X[:, None]", np.s_[:, None]),
    ("X[None]", np.s_[None]), ("X[..., 1]", np.s_[..., 1]), ("X[0, ..., -1]", np.s_[0, ..., -1]),
    ("X[:, None, ::3]", np.s_[:, None, ::3]), ("X[-2:, 1]", np.s_[-2:, 1]),
])
def test_indexing_with_steps_none_and_ellipsis(text, key):
    X = np.arange(60.0).reshape(4, 5, 3)
    np.testing.assert_array_equal(value(text, X=X), X[key])
    r = gradcli.grad(f"sum({text} * {text})", X=X)
    want = np.zeros_like(X)
    np.add.at(want, key, 2 * X[key]) if None not in np.atleast_1d(key) else None
    if None not in (key if isinstance(key, tuple) else (key,)):
        np.testing.assert_allclose(r.gradients["X"], want)


def test_pairwise_differences_by_new_axes():
    X = np.array([[0.0, 1.0], [2.0, 0.0], [1.0, 1.0]])
    r = gradcli.grad("sum((X[:, None, :] - X[None, :, :]) ** 2)", X=X)
    d = X[:, None, :] - X[None, :, :]
    assert float(r.value) == pytest.approx(float(np.sum(d ** 2)))
    np.testing.assert_allclose(r.gradients["X"], 4 * (3 * X - X.sum(0)))


def test_ellipsis_twice_is_an_error():
    assert "'...' at most once" in str(parse_error("X[..., 0, ...]"))


# ------------------------------------------------------------------ reassignment

def _cli(*args):
    try:
        runner = CliRunner(mix_stderr=False)
    except TypeError:
        runner = CliRunner()
    return runner.invoke(main, list(args), env={"NO_COLOR": "1"})


def test_reassignment_reads_the_value_before_it():
    assert float(value("a = x * 2\na = sin(a) * y + a\na = a + 1", x=0.5, y=3)) == \
        pytest.approx(math.sin(1) * 3 + 1 + 1)


def test_versions_are_told_apart_in_json():
    r = _cli("grad", "--format", "json", "a = x * 2; a = a * a; f = a + 1", "x=3")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    names = [n["name"] for n in data["nodes"] if n["name"]]
    assert names == ["x", "a", "a#2", "f"]
    assert data["gradients"] == {"x": 24.0}  # d/dx (2x)^2 = 8x


def test_output_a_means_the_newest_a():
    r = gradcli.evaluate("a = x * 2; a = a * a; f = a + 1", x=3, output="a")
    assert float(r.value) == 36.0


def test_an_input_reassigned_keeps_its_gradient_name():
    r = gradcli.grad("h = tanh(h * w)\nh = tanh(h * w)", h=0.5, w=2.0)
    h1 = math.tanh(1.0)
    dh = (1 - math.tanh(2 * h1) ** 2) * 2 * (1 - h1 ** 2) * 2
    assert float(r.gradients["h"]) == pytest.approx(dh)


def test_assigning_a_constant_name_warns():
    g = gradcli.compile("e = c3 - d3; f = e * 2")
    assert g.warnings and "constant e" in g.warnings[0]
    assert float(value("e = c3 - d3; f = e * 2", c3=5, d3=1)) == 8.0
    assert float(value("a = e")) == pytest.approx(math.e)  # before: still the constant
    assert "cannot assign to None" in str(parse_error("None = x"))


# ------------------------------------------------------------------ gradcli ops

def test_ops_lists_the_pytorch_equivalent():
    r = _cli("ops", "--format", "json")
    assert r.exit_code == 0
    rows = {row["call"].split("(")[0]: row for row in json.loads(r.stdout)["ops"]}
    assert rows["softmax"]["torch"] == "torch.softmax(x, dim=-1)"
    assert "keepdims=false" in rows["sum"]["call"]
    assert rows["conv2d"]["call"] == \
        "conv2d(x, w[, b], stride=1, padding=0, dilation=1, groups=1)"
    names = {row["name"] for row in json.loads(r.stdout)["ops"]}
    spec = ("exp log sqrt sin cos tan asin acos atan sinh cosh tanh sigmoid relu softplus abs "
            "log1p expm1 log2 log10 exp2 square reciprocal erf sign floor ceil round gelu silu "
            "mish leaky_relu elu relu6 hardtanh max min pow atan2 clip where sum mean prod var "
            "std norm cumsum cumprod reshape flatten squeeze unsqueeze transpose concat stack "
            "diag tril triu matmul dot outer einsum trace det inv solve softmax log_softmax "
            "logsumexp conv1d conv2d").split()
    assert set(spec) <= names


# ------------------------------------------------------------------ random programs

_SHAPE = (3, 4)
_UNARY = ["gelu({})", 'gelu({}, approximate="tanh")', "leaky_relu({}, negative_slope=0.2)",
          "elu({}, alpha=0.7)", "silu({})", "mish({})", "softmax({}, axis=0)",
          "log_softmax({}, 1)", "({} - mean({}, 1, keepdims=true))", "cumsum({}, 1)",
          "cumprod({} * 0.5 + 1, axis=0)", "flip({}, 0)", "where({} > 0.3, {}, 0.5 * {})",
          "clip({}, -1, 1)", "transpose(transpose({}))", "reshape(reshape({}, (12,)), (3, 4))",
          "tril({})", "triu({}, 1)", "({} * y)", "concat({}, {}, axis=0)[1:4]",
          "stack({}, {}, axis=2)[:, :, 1]", "squeeze(unsqueeze({}, 0))", "erf({})",
          "einsum('ij,j->ij', {}, y)", "({} / (1 + {} ** 2))", "square({})", "expm1({} * 0.3)",
          "(log1p({} ** 2) + hardtanh({}, min_val=-0.5, max_val=0.5))",
          "(({} < 0) * {})", "logsumexp({}, axis=1, keepdims=true) * {}",
          "max({}, axis=1, keepdims=true) + {}", "norm({}, axis=0) * {}",
          "std({}, 0, keepdims=true) * {}"]
_REDUCE = ["sum({})", "var({}, correction=0)", "logsumexp({}, axis=(0, 1))", "norm({})",
           "mean({} * W)", "prod({} * 0.3 + 1)", "sum(sum({}, axis=0) ** 2)",
           "sum(softmax({}) * W)"]


@st.composite
def programs(draw):
    text = "X"
    for _ in range(draw(st.integers(1, 3))):
        t = draw(st.sampled_from(_UNARY))
        text = t.replace("{}", text) if t.count("{}") == 1 else t.format(*[text] * t.count("{}"))
    r = draw(st.sampled_from(_REDUCE))
    return r.format(text)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs(), st.integers(0, 2 ** 31 - 1))
def test_random_programs_of_the_new_ops_match_finite_differences(program, seed):
    rng = np.random.default_rng(seed)
    b = {"X": rng.uniform(-1.5, 1.5, _SHAPE), "y": rng.uniform(0.5, 1.5, 4),
         "W": rng.uniform(-1, 1, _SHAPE)}
    b = {k: v for k, v in b.items() if k in program.replace("X", "X ")}
    r = gradcli.check(program, **b)
    assert r.ok, program


# ---------------------------------------------------------------- names, digits, nesting (issue 17)

def test_names_follow_pythons_rule_nfkc():
    assert gradcli.compile("𝑥 + x").variables == {"x": 0}  # one name, as in Python
    assert value("𝑥 + x", x=2) == pytest.approx(4.0)
    decomposed, composed = "e\u0301", "\u00e9"
    assert gradcli.compile(f"{decomposed} * 2").variables == {composed: 0}
    assert value(f"{decomposed} * 2", **{composed: 3}) == pytest.approx(6.0)
    assert value(f"{composed} * 2", **{decomposed: 3}) == pytest.approx(6.0)
    assert value("नमस्ते * 2", नमस्ते=1.5) == pytest.approx(3.0)  # vowel signs are marks
    assert value("𝐬𝐢𝐧(x)", x=0.5) == pytest.approx(math.sin(0.5))  # an op's name too
    g = gradcli.grad("𝑦 = x * x; 𝑦 + y", x=3.0)
    assert g.gradients["x"] == pytest.approx(12.0)


def test_a_character_python_refuses_in_a_name_is_a_parse_error():
    for program, column in (("x² + 1", 2), ("² + 1", 1), ("a = 1; y½", 9)):
        e = parse_error(program)
        assert e.column == column, (program, str(e))
        assert "invalid character" in str(e) and "in a name" in str(e)
        assert str(e).splitlines()[-1] == "  " + " " * (column - 1) + "^"


def test_only_ascii_digits_are_numbers():
    e = parse_error("٣ + x")
    assert (e.line, e.column) == (1, 1) and "unexpected character '٣'" in str(e)
    assert str(e).splitlines()[-1] == "  ^"
    e = parse_error("x + ١٢")
    assert e.column == 5
    assert value("1e3 + x", x=1) == pytest.approx(1001.0)
    assert value("x٣ * 2", x٣=2) == pytest.approx(4.0)  # a digit after the first letter, as Python
    with pytest.raises(ParseError):
        gradcli.compile("x[٣]")
    with pytest.raises(ParseError):
        gradcli.compile("1e٣")


def test_nested_list_literals_stop_at_max_depth():
    from gradcli.values import MAX_DEPTH, too_deep

    deep = "[" * MAX_DEPTH + "1" + "]" * MAX_DEPTH
    assert np.ndim(value(deep)) == MAX_DEPTH
    assert np.ndim(value("[" * MAX_DEPTH + "x" + "]" * MAX_DEPTH, x=1)) == MAX_DEPTH
    for depth, inner in ((MAX_DEPTH + 1, "1"), (65, "1"), (MAX_DEPTH + 1, "x"), (200, "x * 2")):
        program = "[" * depth + inner + "]" * depth
        e = parse_error(program)
        assert too_deep("a list literal") in str(e)
        assert e.column == depth - MAX_DEPTH  # the first bracket one too many
