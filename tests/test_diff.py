"""gradcli diff: derivatives printed as programs that evaluate to exactly what grad gives.

The guarantee under test: every printed derivative, given back to gradcli (the library's
evaluate, or `gradcli eval` in a real process) with the same bindings, equals `grad` to
1e-9 relative: for every op, at random points, at kinks (ties of max/min, relu and abs at
0, clip at its bounds) and over random programs (hypothesis).
"""
import importlib.util
import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import gradcli
from gradcli import symbolic
from conftest import GATES, bad, cli, run

RTOL, ATOL = 1e-9, 1e-12


def roundtrip(program, bindings, wrt=None):
    """Each printed derivative evaluated by gradcli against grad; returns the texts."""
    d = gradcli.diff(program, bindings, wrt=wrt)
    ref = gradcli.grad(program, bindings, wrt=wrt)
    assert list(d.text) == list(ref.gradients)
    for name, text in d.text.items():
        got = gradcli.evaluate(text, bindings).value
        want = ref.gradients[name]
        assert got.shape == want.shape, (name, text)
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL,
                                   err_msg=f"d/d{name}: {text}")
        np.testing.assert_allclose(d.values[name], want, rtol=RTOL, atol=ATOL)
    return d.text


# ---------------------------------------------------------------- what people read

@pytest.mark.parametrize("program, expected", [
    ("x**2 + 2*x + 1", "d/dx = 2*x + 2\n"),
    ("sin(x)*y", "d/dx = y*cos(x)\nd/dy = sin(x)\n"),
    ("x*x*x + 3*x - x", "d/dx = 3*x*x + 2\n"),
    ("x/y", "d/dx = 1/y\nd/dy = -x/y/y\n"),
    ("relu(x) + abs(y)", "d/dx = step(x)\nd/dy = sign(y)\n"),
    ("tanh(x)", "d/dx = 1 - tanh(x)**2\n"),
    ("where(x > 0, x*y, y)", "d/dx = (x > 0)*y\nd/dy = where(x > 0, 0, 1) + x*(x > 0)\n"),
    ("max(x, y)", "t1 = 0.5*(x == y)\nd/dx = (x > y) + t1\nd/dy = (y > x) + t1\n"),
])
def test_printed_forms(program, expected):
    r = cli("diff", program)
    assert r.code == 0, r.err
    assert r.out == expected


def test_tensor_derivatives_have_their_variables_shapes():
    b = dict(W=[[1.0, 2.0], [3.0, -4.0]], x=[0.5, -1.0], b=0.1)
    d = gradcli.diff("sum(tanh(W @ x + b))", b)
    assert d.text == {"W": "t1 = 1 - tanh(W @ x + b)**2\nouter(t1, x)",
                      "x": "t1 = 1 - tanh(W @ x + b)**2\ntranspose(W) @ t1",
                      "b": "t1 = 1 - tanh(W @ x + b)**2\nsum(t1)"}
    assert d.values["W"].shape == (2, 2) and d.values["x"].shape == (2,)
    roundtrip("sum(tanh(W @ x + b))", b)


def test_shared_values_are_named_once_and_the_program_names_reused():
    d = gradcli.diff("a = sin(a)*y + a\na = sin(a)*y + a\na")
    r = cli("diff", "a = sin(a)*y + a\na = sin(a)*y + a\na")
    assert r.out.splitlines()[0] == "a_2 = sin(a)*y + a"  # the program's value, its name
    assert r.out.count("sin(a)*y + a") == 1
    assert d.text["a"].startswith("a_2 = sin(a)*y + a\n")
    roundtrip("a = sin(a)*y + a\na = sin(a)*y + a\na", dict(a=0.7, y=-0.3))


def test_values_are_shown_with_bindings():
    r = cli("diff", "x**2*y", "x=3", "y=2")
    assert r.code == 0
    assert r.out == "d/dx = 2*x*y\nd/dy = x**2\n\nat the bindings:\n  d/dx = 12\n  d/dy = 9\n"


# ---------------------------------------------------------------- every op

B = {"x": [0.31, 0.62, 0.47], "y": [0.55, 0.25, 0.71], "M": [[0.3, 0.8, 0.5], [0.6, 0.2, 0.4]],
     "S": [[1.4, 0.3, 0.5], [0.2, 1.7, 0.6], [0.7, 0.1, 1.3]],
     "T": [[[0.3, 0.2, 0.7], [0.5, 0.4, 0.6]], [[0.8, 0.1, 0.9], [0.2, 0.3, 0.5]]]}

UNARY = ["exp", "log", "sqrt", "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh",
         "tanh", "sigmoid", "relu", "softplus", "abs", "log1p", "expm1", "log2", "log10",
         "exp2", "square", "reciprocal", "erf", "sign", "floor", "ceil", "round", "gelu",
         "silu", "mish", "leaky_relu", "elu", "relu6", "hardtanh", "step"]

PROGRAMS = [f"sum({u}(x)*y)" for u in UNARY] + [
    'sum(gelu(x, approximate="tanh")*y)', "sum(leaky_relu(x, negative_slope=0.2)*y)",
    "sum(max(x, y)*y)", "sum(min(x, y)*x)", "sum(atan2(x, y))", "sum(clip(x, 0.3, 0.6)*y)",
    "sum(where(x > 0.5, x*y, y))", "sum(pow(x, y))", "sum(x**3 - 2**x)",
    "sum(sum(M, 0)*x)", "sum(mean(M, axis=0, keepdims=true)*M)", "max(M)",
    "sum(min(M, axis=1))", "prod(x)", "var(x) + std(M)", "norm(M) + sum(norm(M, axis=1))",
    "sum(cumsum(M, 1)*M)", "sum(cumprod(x, 0))", "sum(reshape(M, (-1,))*reshape(M, (6,)))",
    "sum(flatten(M)**2)", "sum(squeeze(unsqueeze(x, 0), 0)*x)", "sum(transpose(M)@M)",
    "sum(transpose(T, (1, 0, 2))*T)", "sum(concat(x, y)**2)", "sum(stack(x, y, axis=1)**2)",
    "sum(diag(x)@S) + sum(diag(S)*x)", "sum(tril(S)*S) + sum(triu(S)**2)",
    "sum(M @ transpose(M)) + x@x + sum(T @ x)", "dot(x, y)*dot(x, x)",
    "sum(outer(x, y)**2)", 'sum(einsum("ij,j->i", S, x)**2)', "trace(S@S)", "det(S)",
    "sum(inv(S))", "sum(solve(S, x))", "sum(softmax(M)*M)",
    "sum(log_softmax(M, axis=0)*M)", "logsumexp(x) + sum(logsumexp(M, axis=0))",
    "x[0]*x[1] + sum(M[:, 0]) + sum(x[1:]**2) + sum(M[None, ...])",
    "sum([x[0], y[1]]*x[:2])", "sum(flip(x, 0)*x)", "sum(x*M + y)",
    "sum((x < y)*x + (x >= 0.5)*y)", "sum(x*x) / sum(y)",
]


@pytest.mark.parametrize("program", PROGRAMS)
def test_every_op_round_trips(program):
    """Printed in the language, it evaluates to grad; printed as a NumPy module, too."""
    import types

    graph = gradcli.compile(program)
    b = {k: np.array(B[k]) for k in graph.variables}
    roundtrip(program, b)
    d = gradcli.diff(graph, b)
    source = d.program.python(list(graph.variables), d.output_name)
    mod = types.ModuleType("grad_f")
    exec(compile(source, "grad_f.py", "exec"), mod.__dict__)
    got = mod.gradient(*b.values())
    got = got if isinstance(got, tuple) else (got,)
    ref = gradcli.grad(graph, b).gradients
    assert len(got) == len(ref)
    for g, name in zip(got, ref):
        assert np.shape(g) == ref[name].shape
        np.testing.assert_allclose(g, ref[name], rtol=RTOL, atol=ATOL, err_msg=name)
    assert d.program.latex("f").startswith("\\begin{aligned}\n")


# ---------------------------------------------------------------- kinks, as grad has them

@pytest.mark.parametrize("program, bindings", [
    ("relu(x)*y", dict(x=0.0, y=2.0)),
    ("abs(x)*y", dict(x=0.0, y=2.0)),
    ("max(x, y)*x", dict(x=1.0, y=1.0)),
    ("min(x, y)*y", dict(x=-1.0, y=-1.0)),
    ("max(x)", dict(x=[1.0, 3.0, 3.0])),
    ("sum(min(M, axis=1))", dict(M=[[1.0, 1.0], [2.0, 0.5]])),
    ("sum(clip(x, 0, 1)*x)", dict(x=[0.0, 1.0, 0.5, 2.0])),
    ("leaky_relu(x) + elu(x) + relu6(x) + hardtanh(x)", dict(x=0.0)),
    ("relu6(x) + hardtanh(y)", dict(x=6.0, y=1.0)),
    ("prod(x)", dict(x=[0.0, 2.0, 3.0])),
    ("prod(x)", dict(x=[0.0, 0.0, 3.0])),
    ("norm(x)", dict(x=[0.0, 0.0])),
    ("x**2*abs(x) + x**0", dict(x=0.0)),
    ("sum(where(x >= y, x, y)*x)", dict(x=[1.0, 2.0], y=[1.0, 3.0])),
])
def test_kinks_round_trip(program, bindings):
    roundtrip(program, bindings)


# ---------------------------------------------------------------- random programs

VALUES = st.one_of(st.sampled_from([-1.0, -0.5, 0.0, 0.5, 1.0, 2.0]),
                   st.floats(-2, 2, allow_nan=False).map(lambda v: round(v, 3)))
NAMES = ["x", "y", "z"]
UNARY_H = ["sin", "cos", "tanh", "sigmoid", "relu", "abs", "softplus", "square", "atan",
           "leaky_relu", "sign", "elu"]


def _expr(leaves):
    def extend(children):
        unary = st.tuples(st.sampled_from(UNARY_H), children).map(lambda t: f"{t[0]}({t[1]})")
        binary = st.tuples(children, st.sampled_from(["+", "-", "*"]), children).map(
            lambda t: f"({t[0]} {t[1]} {t[2]})")
        call2 = st.tuples(st.sampled_from(["max", "min"]), children, children).map(
            lambda t: f"{t[0]}({t[1]}, {t[2]})")
        power = st.tuples(children, st.sampled_from(["2", "3"])).map(
            lambda t: f"({t[0]})**{t[1]}")
        quotient = st.tuples(children, children).map(lambda t: f"{t[0]} / (1 + {t[1]}**2)")
        choose = st.tuples(children, st.sampled_from(["<", ">", ">=", "=="]), children,
                           children, children).map(
            lambda t: f"where({t[0]} {t[1]} {t[2]}, {t[3]}, {t[4]})")
        return st.one_of(unary, binary, call2, power, quotient, choose)
    return st.recursive(leaves, extend, max_leaves=8)


@st.composite
def programs(draw):
    leaves = st.one_of(st.sampled_from(NAMES), st.sampled_from(["2", "0.5", "1"]))
    lines = []
    names = list(NAMES)
    for _ in range(draw(st.integers(0, 2))):
        target = draw(st.sampled_from(["a", "x", "b"]))  # x = ... reassigns an input
        lines.append(f"{target} = {draw(_expr(st.sampled_from(names)))}")
        names.append(target)
    lines.append(draw(_expr(leaves)))
    return "\n".join(lines)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program=programs(), x=VALUES, y=VALUES, z=VALUES)
def test_random_scalar_programs_round_trip(program, x, y, z):
    try:
        graph = gradcli.compile(program)
    except gradcli.GradcliError:
        assume(False)
    bindings = {k: v for k, v in dict(x=x, y=y, z=z).items() if k in graph.variables}
    assume(bindings)
    ref = gradcli.grad(program, bindings)
    assume(all(np.isfinite(g).all() for g in ref.gradients.values()))
    roundtrip(program, bindings)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program=st.sampled_from([
    "sum(max(x, y)*x)", "max(x)*min(y)", "sum(relu(x - y)*abs(y))", "sum(softmax(x)*y)",
    "sum(clip(x, -0.5, 0.5)*y) + max(x*y)", "norm(x - y) + prod(y)", "x @ y + sum(x**2*y)"]),
    x=st.lists(VALUES, min_size=3, max_size=3), y=st.lists(VALUES, min_size=3, max_size=3))
def test_random_vector_points_round_trip(program, x, y):
    bindings = dict(x=x, y=y)
    ref = gradcli.grad(program, bindings)
    assume(all(np.isfinite(g).all() for g in ref.gradients.values()))
    roundtrip(program, bindings)


# ---------------------------------------------------------------- the command

def test_json_is_spec_shaped_and_each_text_evaluates():
    r = cli("diff", "--format", "json", "sum(tanh(W @ x))", "W=[[1,2],[3,4]]", "x=[1,-1]")
    assert r.code == 0, r.err
    obj = json.loads(r.out)
    assert obj["output"] == "f"
    assert set(obj["derivatives"]) == {"W", "x"}
    ref = gradcli.grad("sum(tanh(W @ x))", W=[[1, 2], [3, 4]], x=[1, -1])
    for name, text in obj["derivatives"].items():
        np.testing.assert_allclose(obj["values"][name], ref.gradients[name], rtol=RTOL)
        got = gradcli.evaluate(text, W=[[1, 2], [3, 4]], x=[1, -1]).value
        np.testing.assert_allclose(got, ref.gradients[name], rtol=RTOL)
    assert math.isclose(obj["value"], float(ref.value))


def test_json_without_bindings_has_no_values():
    obj = json.loads(cli("diff", "--format", "json", "x*y").out)
    assert obj == {"output": "f", "derivatives": {"x": "y", "y": "x"}}


def test_printed_derivative_through_real_processes(gradcli_exe):
    """diff's JSON, then `gradcli eval` of each derivative, equals `gradcli grad`."""
    prog = "a = max(x, y)*x\nrelu(a - 1) + abs(y)*a"
    binds = ["x=1", "y=1"]  # a tie of max, and relu exactly at its kink (a - 1 = 0)
    d = run(gradcli_exe, "diff", "--format", "json", prog, *binds)
    assert d.returncode == 0, d.stderr
    g = json.loads(run(gradcli_exe, "grad", "--format", "json", prog, *binds).stdout)
    for name, text in json.loads(d.stdout)["derivatives"].items():
        e = run(gradcli_exe, "eval", "--format", "json", text, *binds)
        assert e.returncode == 0, (text, e.stderr)
        assert math.isclose(json.loads(e.stdout)["value"], g["gradients"][name],
                            rel_tol=RTOL, abs_tol=ATOL)


def test_latex():
    r = cli("diff", "--format", "latex", "x**2 + 2*x + 1")
    assert r.out == ("\\begin{aligned}\n\\frac{\\partial f}{\\partial x} &= 2 x + 2\n"
                     "\\end{aligned}\n")
    r = cli("diff", "--format", "latex", "sqrt(x)/y + tanh(x)")
    assert r.code == 0
    assert "\\sqrt{x}" in r.out and "\\frac{" in r.out and "\\tanh" in r.out


@pytest.mark.parametrize("program, bindings", [
    ("x*y + sin(x) + relu(x)", dict(x=0.0, y=2.0)),
    ("sum(tanh(W @ x + b))", dict(W=[[1.0, 2.0], [3.0, -4.0]], x=[0.5, -1.0], b=0.1)),
    ("max(x)*sum(softmax(x)*x)", dict(x=[1.0, 3.0, 3.0])),
    ("y*x", dict(x=2.0, y=3.0)),
])
def test_python_module_imports_and_matches_grad(tmp_path, program, bindings):
    r = cli("diff", "--format", "python", program,
            *[f"{k}={json.dumps(v)}" for k, v in bindings.items()])
    assert r.code == 0, r.err
    path = tmp_path / "grad_f.py"
    path.write_text(r.out)
    spec = importlib.util.spec_from_file_location("grad_f", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    imports = [line for line in r.out.splitlines() if line.startswith(("import", "from"))]
    assert imports[-1] == "import numpy as np"  # NumPy only: it runs where gradcli is not
    assert set(imports) <= {"import numpy as np", "import math"}
    ref = gradcli.grad(program, bindings)
    got = mod.gradient(*[bindings[v] for v in gradcli.compile(program).variables])
    got = got if isinstance(got, tuple) else (got,)
    for g, name in zip(got, ref.gradients):
        np.testing.assert_allclose(g, ref.gradients[name], rtol=RTOL, atol=ATOL)
        assert np.shape(g) == ref.gradients[name].shape


def test_order_n():
    r = cli("diff", "--order", "2", "sin(x)*x")
    assert r.out == "d2/dx2 = 2*cos(x) - x*sin(x)\n"
    r = cli("diff", "--order", "3", "sin(x)*x")
    assert r.out == "d3/dx3 = -3*sin(x) - x*cos(x)\n"
    # the second derivative against central differences of grad
    d2 = gradcli.diff("x**3*y + exp(x*y)", x=0.7, y=-0.4, order=2)
    h = 1e-5
    fd = {v: (gradcli.grad("x**3*y + exp(x*y)", **dict(dict(x=0.7, y=-0.4), **{v: p + h}))
              .gradients[v] - gradcli.grad("x**3*y + exp(x*y)",
                                           **dict(dict(x=0.7, y=-0.4), **{v: p - h}))
              .gradients[v]) / (2 * h) for v, p in dict(x=0.7, y=-0.4).items()}
    for v in ("x", "y"):
        np.testing.assert_allclose(d2.values[v], fd[v], rtol=1e-7)
        got = gradcli.evaluate(d2.text[v], x=0.7, y=-0.4).value
        np.testing.assert_allclose(got, d2.values[v], rtol=RTOL)


def test_wrt_chooses_and_orders_and_takes_named_values():
    r = cli("diff", "--wrt", "y,a", "a = x*y\nsin(a) + y")
    assert r.code == 0, r.err
    assert r.out == "d/dy = x*cos(x*y) + 1\nd/da = cos(x*y)\n"
    roundtrip("a = x*y\nsin(a) + y", dict(x=0.3, y=2.0), wrt=["y", "a"])


def test_no_exponential_swell():
    """A 200-statement chain a = sin(a)*y + a: the derivative is about the program's size."""
    program = "\n".join(["a = sin(a)*y + a"] * 200)
    d = gradcli.diff(program)
    assert max(len(t) for t in d.text.values()) <= 20 * len(program)
    roundtrip(program, dict(a=0.4, y=0.2))


# ---------------------------------------------------------------- bad input

def test_order_must_be_one_or_more():
    r = cli("diff", "--order", "0", "x")
    assert r.code == 2 and "--order" in r.err and r.out == ""


def test_custom_ops_exit_2_naming_the_op():
    r = cli("diff", "--ops", GATES, "MultiplyGate(x, y)")
    bad(r, "MultiplyGate")
    assert "MultiplyGate" in r.err and "custom op" in r.err


def test_shapes_without_bindings_are_a_clear_error():
    r = cli("diff", "W @ x")
    bad(r)
    assert "scalar" in r.err and "bindings" in r.err


@pytest.mark.parametrize("args, words", [
    (["--wrt", "q", "x*y"], ["q"]),
    (["--order", "2", "sum(x)", "x=[1,2]"], ["scalar"]),
    (["x + ", "x=1"], []),
    (["x*y", "x=1"], ["unbound", "y"]),
])
def test_bad_input(args, words):
    r = cli("diff", *args)
    bad(r)
    for w in words:
        assert w in r.err


def test_a_rule_that_computes_with_numpy_is_named():
    """A gradient rule written with NumPy calls on its arguments cannot be traced: the error
    names the op (for the op library's author), and is a clean exit 2 on the command line."""
    from gradcli import ops
    from gradcli.graph import Graph, Node

    op = ops.Op("npcos", np.cos, arity=1, partials=(lambda out, x: -np.sin(x),))
    graph = Graph("npcos(x)", [Node(0, ops.VAR, name="x", end=1),
                               Node(1, op, (0,), end=8)], {"x": 0, "f": 1}, 1, "f")
    with pytest.raises(symbolic.NotTraceable, match="npcos"):
        gradcli.diff(graph)
    assert gradcli.grad(graph, x=0.5).gradients["x"] == pytest.approx(-np.sin(0.5))


def test_a_variable_the_output_does_not_need_has_derivative_zero_of_its_shape():
    r = cli("diff", "--output", "a", "--wrt", "y,x", "a = x*2; b = a*y; b", "x=1", "y=[1,2]")
    assert r.code == 0
    assert r.out.splitlines()[:2] == ["d/dy = [0, 0]", "d/dx = 2"]
    assert "a does not depend on y" in r.err
    roundtrip("a = x*2; b = a*y; b", dict(x=1.0, y=[1.0, 2.0]), wrt=["y", "x"])
