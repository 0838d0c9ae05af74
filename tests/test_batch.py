"""The chunk kernel and batch I/O (gradcli.batching), in process.

The kernel is checked against the per-point engine: random programs (hypothesis) over
scalar and array variables, fixed bindings and --wrt of fixed values and named statements,
each point's value and gradients equal to ``gradcli.grad`` at that point.  The readers are
checked on the files users have (headers, Windows line ends, a byte-order mark, quotes,
blank lines, bad cells named by line and column) and the writers by reading back what they
wrote (CSV, JSON Lines, .npz), with and without orjson.
"""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gradcli
from gradcli import batching
from gradcli.errors import BindingError, GradcliError

B = 7


def per_point(program, points, fixed=None, wrt=None, output=None):
    """Value and gradients at each point, one gradcli.grad call per point (the reference)."""
    n = len(next(iter(points.values())))
    values, grads = [], []
    for b in range(n):
        binds = dict(fixed or {})
        binds.update({k: v[b] for k, v in points.items()})
        r = gradcli.grad(program, binds, wrt=wrt or list(points), output=output)
        values.append(r.value)
        grads.append(r.gradients)
    return np.array(values), {k: np.array([g[k] for g in grads]) for k in grads[0]}


def assert_same(program, points, fixed=None, wrt=None, output=None):
    variables = gradcli.compile(program).variables
    points = {k: v for k, v in points.items() if k in variables}
    if not points:
        return None
    fixed = {k: v for k, v in (fixed or {}).items() if k in variables}
    res = gradcli.batch(program, points, fixed=fixed, wrt=wrt, output=output)
    value, grads = per_point(program, points, fixed, wrt, output)
    np.testing.assert_allclose(res.value, value, rtol=1e-12, atol=1e-12)
    assert list(res.gradients) == list(grads)
    for k in grads:
        np.testing.assert_allclose(res.gradients[k], grads[k], rtol=1e-12, atol=1e-12,
                                   err_msg=f"d/d{k} of {program}")
        assert res.gradients[k].shape == (len(value),) + np.shape(grads[k][0])
    return res


# ---------------------------------------------------------------- the kernel

def test_worked_example_over_points():
    x = np.array([1.0, 3.0, -2.0])
    y = np.array([2.0, -1.0, 0.5])
    z = np.array([0.0, 2.0, 0.5])
    res = gradcli.batch("(x+y)*max(y,z)", x=x, y=y, z=z)
    assert list(res) == ["f", "d_x", "d_y", "d_z"]
    np.testing.assert_allclose(res["f"], (x + y) * np.maximum(y, z))
    # by hand: d/dx = max(y,z); d/dy = max(y,z) + (x+y)[y>z] (+half at a tie); d/dz
    np.testing.assert_allclose(res["d_x"], [2.0, 2.0, 0.5])
    np.testing.assert_allclose(res["d_y"], [2 + 3, 2 + 0, 0.5 + 0.5 * -1.5])
    np.testing.assert_allclose(res["d_z"], [0.0, 2.0, 0.5 * -1.5])


@pytest.mark.parametrize("program", [
    "(x+y)*max(y,z) + sin(x)*y",
    "exp(x) / (1 + y**2) - tanh(z) * relu(x - y) + abs(z) ** 1.5",
    "a = x * y; b = sigmoid(a) + a; b * z - min(x, z)",
    "[x, y, z][1] * x",
    "sum([x, y, z] * [1, 2, 3]) + max([x, y, z]) * mean([x, y])",
    "log(x*x + 1) + sqrt(y*y + 1) / z**2",
])
def test_scalar_programs_match_the_engine(program):
    rng = np.random.default_rng(3)
    pts = {k: rng.uniform(0.5, 2.0, B) * rng.choice([-1, 1], B) for k in "xyz"}
    assert_same(program, pts)


@pytest.mark.parametrize("program, wrt", [
    ("sum(tanh(W @ v + s))", None),
    ("sum(tanh(W @ v + s))", ["v", "s", "W"]),        # W fixed: a gradient per point
    ("softmax(v)[0] * logsumexp(v) + dot(v, v)", None),
    ("max(v) + min(v * s) + mean(v, 0)", None),
    ("sum(transpose(M) @ v) + sum(M * s)", ["M", "v", "s"]),
    ("h = W @ v; sum(h * h) + s", ["h", "v"]),         # a named statement in --wrt
    ("sum(v[1:] * v[:-1]) + v[0] * s", None),
    ("sum(v * W[0]) * s + sum(W)", None),              # a fixed value mixed in
])
def test_array_programs_match_the_engine(program, wrt):
    rng = np.random.default_rng(5)
    pts = {"v": rng.standard_normal((B, 2)), "s": rng.standard_normal(B)}
    fixed = {"W": rng.standard_normal((3, 2))}
    if "M" in program:
        pts["M"] = rng.standard_normal((B, 2, 2))
        fixed = {}
    assert_same(program, pts, fixed, wrt)


LIBRARY = [
    "sum(var(v)) + std(v)", "prod(v) * s", "sum(cumsum(v, 0))", "sum(reshape(M, (4,)) * s)",
    "sum(concat(v, v) * s)", "sum(flatten(M)) * s", "sum(einsum('ij,j->i', M, v))",
    "norm(v) * s", "sum(log_softmax(v)) * s", "sum(gelu(v))", "sum(clip(v, -0.5, 0.5)) * s",
    "sum(where(v, v * s, v))", "sum(sum(M, axis=1, keepdims=true) * v)",
    "sum(mean(M, axis=(0, 1)) * s)", "sum(max(M, axis=0))", "sum(softmax(M, axis=0)) * s",
    "sum(transpose(M, (1, 0)) @ v)", "sum(squeeze(unsqueeze(v, 0), 0)) * s",
    "sum(tril(M)) * s + trace(M)", "det(M) * s", "sum(outer(v, v)) * s", "sum(diag(v)) * s",
    "logsumexp(v, axis=0) * s", "sum(stack(v, v, axis=1)) * s", "sum(softmax(s))",
    "sum(inv(M + 3 * [[1, 0], [0, 1]]))", "sum(solve(M + 3 * [[1, 0], [0, 1]], v))",
    "sum(leaky_relu(v * s))", "sum(v[None, :] * s)", "sum(M[..., 0]) * s",
    "sum(conv1d(reshape(v, (1, 1, 2)), [[[1.0, 2.0]]])) * s",
]


@pytest.mark.parametrize("program", LIBRARY)
def test_library_ops_match_the_engine(program):
    """Ops with batched VJPs (checked against the per-point ones once per node) and ops that
    fall back to a loop over points: the same results either way, over two chunks."""
    rng = np.random.default_rng(11)
    pts = {"v": rng.standard_normal((B, 2)), "s": rng.standard_normal(B),
           "M": rng.standard_normal((B, 2, 2))}
    assert_same(program, pts)
    graph = gradcli.compile(program)
    pts = {k: v for k, v in pts.items() if k in graph.variables}
    kernel = batching.Kernel(graph, list(pts))
    first = kernel({k: v[:4] for k, v in pts.items()})
    second = kernel({k: v[4:] for k, v in pts.items()})   # the choice made on the first
    whole = gradcli.batch(program, pts)
    for name in whole:
        np.testing.assert_allclose(np.concatenate([first[name], second[name]]), whole[name],
                                   rtol=1e-12, atol=1e-12)


def test_no_built_in_op_loops_over_points():
    """Every op of LIBRARY runs batched (tests/test_batch_ops.py checks each op alone)."""
    rng = np.random.default_rng(2)
    program = " + ".join(LIBRARY)
    graph = gradcli.compile(program)
    kernel = batching.Kernel(graph, ["v", "s", "M"])
    kernel({"v": rng.standard_normal((5, 2)), "s": rng.standard_normal(5),
            "M": rng.standard_normal((5, 2, 2))})
    assert kernel.fallbacks == set()


def test_fixed_bindings_stay_fixed_and_only_columns_get_gradients():
    res = gradcli.batch("x * w + w", x=np.arange(4.0), fixed={"w": 3})
    assert list(res) == ["f", "d_x"]
    np.testing.assert_allclose(res["f"], np.arange(4.0) * 3 + 3)
    np.testing.assert_allclose(res["d_x"], [3, 3, 3, 3])
    res = gradcli.batch("x * w + w", x=np.arange(4.0), fixed={"w": 3}, wrt="x,w")
    np.testing.assert_allclose(res["d_w"], np.arange(4.0) + 1)


def test_eval_only_and_output_option():
    res = gradcli.batch("a = x * 2; a + 1", x=np.arange(3.0), grad=False, output="a")
    assert list(res) == ["a"]
    np.testing.assert_allclose(res["a"], [0, 2, 4])


def test_nan_and_warnings_are_counted_in_rows():
    res = gradcli.batch("log(x)", x=np.array([1.0, -1.0, 2.0, -3.0]))
    assert np.isnan(res.value[[1, 3]]).all()
    assert any("in 2 of 4 rows" in w for w in res.warnings), res.warnings


def test_non_scalar_output_starts_from_ones():
    res = gradcli.batch("v * s", v=np.ones((3, 2)), s=np.array([1.0, 2.0, 3.0]))
    np.testing.assert_allclose(res["d_s"], [2, 2, 2])
    np.testing.assert_allclose(res["d_v"], [[1, 1], [2, 2], [3, 3]])


def test_upstream_weights_each_point():
    res = gradcli.batch("v * s", v=np.ones((2, 2)), s=np.array([1.0, 2.0]),
                        upstream=np.array([1.0, 10.0]))
    np.testing.assert_allclose(res["d_s"], [11, 11])


def test_kernel_errors_are_gradcli_errors():
    with pytest.raises(BindingError, match="unbound variable.*y"):
        gradcli.batch("x * y", x=np.ones(3))
    with pytest.raises(BindingError, match="bound twice"):
        gradcli.batch("x * y", x=np.ones(3), y=np.ones(3), fixed={"y": 1})
    with pytest.raises(BindingError, match="has 2 points"):
        gradcli.batch("x * y", x=np.ones(3), y=np.ones(2))
    with pytest.raises(GradcliError, match="do not broadcast|shapes"):
        gradcli.batch("v + w", v=np.ones((3, 2)), fixed={"w": np.ones(3)})
    with pytest.raises(BindingError, match="--wrt q"):
        gradcli.batch("x", x=np.ones(3), wrt="q")


def test_custom_ops_run_point_by_point_and_match(tmp_path):
    from conftest import GATES

    ops = gradcli.load_ops(GATES)
    graph = gradcli.compile("MultiplyGate(x, y) + x", ops)
    pts = {"x": np.arange(1.0, 5.0), "y": np.arange(4.0) - 1}
    res = gradcli.batch(graph, pts)
    np.testing.assert_allclose(res.value, pts["x"] * pts["y"] + pts["x"])
    np.testing.assert_allclose(res["d_x"], pts["y"] + 1)
    np.testing.assert_allclose(res["d_y"], pts["x"])


# random programs: the kernel against the engine, point by point

SCALARS = ["x", "y", "z"]
UNARY = ["sin", "cos", "tanh", "exp", "sigmoid", "relu", "abs", "atan", "softplus"]
BINARY = ["+", "-", "*", "max", "min"]


@st.composite
def scalar_programs(draw, depth=3):
    if depth == 0 or draw(st.integers(0, 3)) == 0:
        return draw(st.sampled_from(SCALARS + ["1.5", "w"]))
    kind = draw(st.integers(0, 2))
    if kind == 0:
        return f"{draw(st.sampled_from(UNARY))}({draw(scalar_programs(depth - 1))})"
    a, b = draw(scalar_programs(depth - 1)), draw(scalar_programs(depth - 1))
    op = draw(st.sampled_from(BINARY))
    return f"{op}({a}, {b})" if op.isalpha() else f"({a} {op} {b})"


@st.composite
def vector_programs(draw, depth=2):
    if depth == 0 or draw(st.integers(0, 2)) == 0:
        return draw(st.sampled_from(["v", "u", "W @ v", "v * x", "[x, y]"]))
    kind = draw(st.integers(0, 2))
    a = draw(vector_programs(depth - 1))
    if kind == 0:
        return f"{draw(st.sampled_from(UNARY))}({a})"
    if kind == 1:
        return f"softmax({a})"
    return f"({a} {draw(st.sampled_from(['+', '*', '-']))} {draw(vector_programs(depth - 1))})"


REDUCE = ["sum({})", "mean({})", "max({})", "min({})", "logsumexp({})", "({})[1]",
          "dot({}, u)"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scalar_programs(), st.integers(0, 2**31 - 1))
def test_random_scalar_programs(program, seed):
    rng = np.random.default_rng(seed)
    pts = {k: rng.standard_normal(5) for k in SCALARS}
    if not set(SCALARS) & set(gradcli.compile(program).variables):
        return
    assert_same(program, pts, {"w": 0.7})


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(vector_programs(), st.sampled_from(REDUCE), scalar_programs(depth=1),
       st.integers(0, 2**31 - 1))
def test_random_array_programs(vec, reduce, scalar, seed):
    rng = np.random.default_rng(seed)
    program = f"{reduce.format(vec)} * {scalar}"
    pts = {"v": rng.standard_normal((4, 2)), "x": rng.standard_normal(4),
           "y": rng.standard_normal(4), "z": rng.standard_normal(4)}
    fixed = {"W": rng.standard_normal((2, 2)), "u": rng.standard_normal(2), "w": 0.3}
    assert_same(program, pts, fixed)


# ---------------------------------------------------------------- readers

def write(tmp_path, name, data):
    p = tmp_path / name
    (p.write_bytes if isinstance(data, bytes) else p.write_text)(data)
    return str(p)


def chunks(path, chunk_size=3, names=None, **kw):
    pts = batching.open_points(path, names, chunk_size, **kw)
    try:
        return pts.names, list(pts)
    finally:
        pts.close()


def test_csv_header_and_chunks(tmp_path):
    rows = "".join(f"{i},{i * 2.5},{-i}\n" for i in range(8))
    names, got = chunks(write(tmp_path, "p.csv", "x,y,z\n" + rows))
    assert names == ["x", "y", "z"]
    assert [len(c["x"]) for c, _ in got] == [3, 3, 2]
    np.testing.assert_array_equal(np.concatenate([c["y"] for c, _ in got]),
                                  np.arange(8) * 2.5)
    assert got[1][1].tolist() == [5, 6, 7]  # line numbers (the header is line 1)


@pytest.mark.parametrize("text", [
    "x,y\r\n1,2\r\n3,4\r\n",             # Windows line ends
    "\ufeffx,y\n1,2\n3,4",               # a byte-order mark, no final new line
    '"x","y"\n"1",2\n3,"4"\n',           # quoted
    "x , y\n1, 2\n\n3 ,4\n\n",           # spaces, blank lines
    "x,y\n1,2\n3,4\n",
])
def test_csv_dialects(tmp_path, text):
    names, got = chunks(write(tmp_path, "p.csv", text.encode("utf-8")), chunk_size=10)
    assert names == ["x", "y"]
    c = got[0][0]
    assert c["x"].tolist() == [1, 3] and c["y"].tolist() == [2, 4]


def test_csv_nonfinite_and_exponents(tmp_path):
    _, got = chunks(write(tmp_path, "p.csv", "x\nnan\ninf\n-inf\n1e-300\n-0.0\n"), 10)
    x = got[0][0]["x"]
    assert np.isnan(x[0]) and x[1] == np.inf and x[2] == -np.inf and x[3] == 1e-300


@pytest.mark.parametrize("text, line, col, what", [
    ("x,y\n1,2\n3,abc\n", 3, "y", "'abc' is not a number"),
    ("x,y\n1,2\n3\n", 3, None, "1 cell for 2 columns"),
    ("x,y\n1,2\n3,4\n5,6,7\n", 4, None, "3 cells for 2 columns"),
    ("x,y\n1,\n", 2, "y", "an empty cell is not a number"),
])
def test_csv_bad_rows_name_line_and_column(tmp_path, text, line, col, what):
    path = write(tmp_path, "p.csv", text)
    with pytest.raises(batching.BadRow) as e:
        chunks(path)
    assert e.value.line == line and e.value.column == col
    assert what in str(e.value) and f"line {line}" in str(e.value)


def test_csv_keep_going_skips_bad_rows(tmp_path):
    bad = []
    path = write(tmp_path, "p.csv", "x,y\n1,2\n3,abc\n5,6\n")
    _, got = chunks(path, keep_going=True, on_bad=bad.append)
    assert [b.line for b in bad] == [3]
    c, lines = got[0]
    assert c["x"].tolist() == [1, 5] and lines.tolist() == [2, 4]


def test_csv_header_problems(tmp_path):
    for text, msg in [("", "empty"), ("1,2\n3,4\n", "not a header"),
                      ("x,x\n1,2\n", "names x 2 times"), ("x,\n1,2\n", "no name")]:
        with pytest.raises(BindingError, match=msg):
            chunks(write(tmp_path, "p.csv", text))


def test_unused_text_column_is_not_parsed(tmp_path):
    path = write(tmp_path, "p.csv", "label,x\nfirst,1\nsecond,2\n")
    names, got = chunks(path, names={"x"})
    assert names == ["x"] and got[0][0]["x"].tolist() == [1, 2]


def test_jsonl_points(tmp_path):
    text = '{"x": 1, "v": [1, 2]}\n\n{"x": "nan", "v": [3, 4]}\n{"x": 2.5, "v": [5, 6]}\n'
    names, got = chunks(write(tmp_path, "p.jsonl", text), chunk_size=10)
    assert names == ["x", "v"]
    c, lines = got[0]
    assert np.isnan(c["x"][1]) and c["v"].shape == (3, 2) and lines.tolist() == [1, 3, 4]


@pytest.mark.parametrize("text, line, col", [
    ('{"x": 1}\n{"x": \n', 2, None),
    ('{"x": 1}\n{"y": 2}\n', 2, "x"),
    ('{"x": [1, 2]}\n{"x": [1]}\n', 2, "x"),
    ('{"x": 1}\n{"x": "a"}\n', 2, "x"),
])
def test_jsonl_bad_rows(tmp_path, text, line, col):
    with pytest.raises(batching.BadRow) as e:
        chunks(write(tmp_path, "p.jsonl", text))
    assert (e.value.line, e.value.column) == (line, col)


def test_npz_and_npy_points_stream(tmp_path):
    p = tmp_path / "p.npz"
    np.savez_compressed(p, x=np.arange(10.0), v=np.arange(20.0).reshape(10, 2))
    names, got = chunks(str(p), chunk_size=4)
    assert sorted(names) == ["v", "x"]
    assert [len(c["x"]) for c, _ in got] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([c["v"] for c, _ in got]),
                                  np.arange(20.0).reshape(10, 2))
    rec = np.zeros(5, dtype=[("x", "f8"), ("y", "f4")])
    rec["x"], rec["y"] = np.arange(5), np.arange(5) * 2
    np.save(tmp_path / "r.npy", rec)
    names, got = chunks(str(tmp_path / "r.npy"), chunk_size=2)
    assert names == ["x", "y"] and got[2][0]["y"].tolist() == [8]


def test_npy_refuses_objects_and_fortran(tmp_path):
    np.save(tmp_path / "f.npy", np.asfortranarray(np.ones((3, 2))))
    with pytest.raises(BindingError, match="Fortran"):
        chunks(str(tmp_path / "f.npy"))
    np.save(tmp_path / "o.npy", np.array([1, "a"], dtype=object), allow_pickle=True)
    with pytest.raises(BindingError, match="objects"):
        chunks(str(tmp_path / "o.npy"))


def test_iter_chunks_for_minibatches(tmp_path):
    path = write(tmp_path, "p.csv", "x,y\n" + "".join(f"{i},{i}\n" for i in range(5)))
    got = list(batching.iter_chunks(path, 2, names={"x"}))
    assert [c["x"].tolist() for c in got] == [[0, 1], [2, 3], [4]]
    assert all(list(c) == ["x"] for c in got)


def test_sweep_grid_order_and_errors():
    pts = batching.sweep_points(["x=0:1:3", "y=10:20:2"], chunk_size=4)
    got = list(pts)
    x = np.concatenate([c["x"] for c, _ in got])
    y = np.concatenate([c["y"] for c, _ in got])
    assert x.tolist() == [0, 0, 0.5, 0.5, 1, 1] and y.tolist() == [10, 20] * 3
    for spec, msg in [("x=0:1", "NAME=START:STOP:N"), ("x=0:1:0", "at least 1"),
                      ("x=a:1:2", "numbers"), ("x=0:inf:2", "finite"), ("x=0:1:2.5", "whole")]:
        with pytest.raises(BindingError, match=msg):
            batching.parse_sweep(spec)
    with pytest.raises(BindingError, match="twice"):
        batching.sweep_points(["x=0:1:2", "x=0:1:2"])


# ---------------------------------------------------------------- writers

@pytest.fixture(params=["orjson", "plain"])
def formatter(request, monkeypatch):
    if request.param == "plain":
        monkeypatch.setenv("GRADCLI_NO_ORJSON", "1")
    else:
        import orjson  # noqa: F401  (a test dependency: the fast path must be tested)
    return request.param


def result(value, **grads):
    return batching.BatchResult("f", np.asarray(value, dtype=float),
                                {k: np.asarray(v, dtype=float) for k, v in grads.items()})


NASTY = [0.1, -0.0, 1e-300, 1.7976931348623157e308, np.nan, np.inf, -np.inf, 1 / 3, 5e-324]


def test_csv_writer_round_trips_every_float(formatter):
    buf = io.BytesIO()
    w = batching.writer_for("csv", buf, "f", ["x"])
    w.write(result(NASTY, x=list(reversed(NASTY))))
    w.write(result([2.0], x=[3.0]))
    w.close()
    text = buf.getvalue().decode()
    lines = text.splitlines()
    assert lines[0] == "f,d_x" and len(lines) == len(NASTY) + 2
    back = np.array([[float(c) for c in line.split(",")] for line in lines[1:]])
    np.testing.assert_array_equal(back[:-1, 0], NASTY)  # nan == nan for array_equal
    np.testing.assert_array_equal(back[:-1, 1], NASTY[::-1])
    assert "nan" in text and "-inf" in text


def test_jsonl_writer_writes_nan_as_strings(formatter):
    buf = io.BytesIO()
    w = batching.writer_for("jsonl", buf, "f", ["x", "y"])
    w.write(result(NASTY, x=NASTY, y=np.zeros(len(NASTY))))
    w.close()
    objs = [json.loads(line) for line in buf.getvalue().decode().splitlines()]
    assert objs[4] == {"value": "nan", "gradients": {"x": "nan", "y": 0.0}}
    assert objs[5]["value"] == "inf" and objs[6]["gradients"]["x"] == "-inf"
    assert objs[0]["value"] == 0.1 and objs[-1]["value"] == 5e-324


def test_array_columns_in_csv_and_jsonl(formatter):
    res = result([[1, 2], [3, np.nan]], W=np.arange(8.0).reshape(2, 2, 2))
    buf = io.BytesIO()
    w = batching.writer_for("csv", buf, "f", ["W"])
    w.write(res)
    lines = buf.getvalue().decode().splitlines()
    assert lines[0] == 'f[0],f[1],"d_W[0,0]","d_W[0,1]","d_W[1,0]","d_W[1,1]"'
    assert lines[2] == "3.0,nan,4.0,5.0,6.0,7.0"
    buf = io.BytesIO()
    batching.writer_for("jsonl", buf, "f", ["W"]).write(res)
    second = json.loads(buf.getvalue().decode().splitlines()[1])
    assert second == {"value": [3.0, "nan"], "gradients": {"W": [[4.0, 5.0], [6.0, 7.0]]}}


def test_sweep_points_are_written_first(formatter):
    pts = {"x": np.array([0.0, 2.0])}
    buf = io.BytesIO()
    w = batching.writer_for("csv", buf, "f", ["x"], inputs=["x"])
    w.write(result([0.0, 4.0], x=[0.0, 4.0]), pts)
    assert buf.getvalue().decode() == "x,f,d_x\n0.0,0.0,0.0\n2.0,4.0,4.0\n"
    buf = io.BytesIO()
    w = batching.writer_for("jsonl", buf, "f", ["x"], inputs=["x"])
    w.write(result([0.0, 4.0], x=[0.0, 4.0]), pts)
    assert [json.loads(line) for line in buf.getvalue().decode().splitlines()] == [
        {"point": {"x": 0.0}, "value": 0.0, "gradients": {"x": 0.0}},
        {"point": {"x": 2.0}, "value": 4.0, "gradients": {"x": 4.0}}]


def test_npz_writer_streams_chunks(tmp_path):
    p = tmp_path / "o.npz"
    with open(p, "wb") as f:
        w = batching.writer_for("npz", f, "f", ["x"])
        for k in range(3):
            w.write(result(np.arange(4.0) + 4 * k, x=np.ones(4) * k))
        w.close()
    d = np.load(p)
    assert sorted(d.files) == ["d_x", "f"]
    np.testing.assert_array_equal(d["f"], np.arange(12.0))
    np.testing.assert_array_equal(d["d_x"], np.repeat([0.0, 1, 2], 4))


def test_npz_writer_spills_to_disk_past_its_memory_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(batching.NpzWriter, "IN_MEMORY", 1000)
    p = tmp_path / "o.npz"
    with open(p, "wb") as f:
        w = batching.writer_for("npz", f, "f", ["v"])
        for k in range(5):  # 5 chunks of 100 points: in memory, then on disk
            w.write(result(np.arange(100.0) + 100 * k, v=np.full((100, 2), float(k))))
        assert w.files and w.held < 1000
        w.close()
    d = np.load(p)
    np.testing.assert_array_equal(d["f"], np.arange(500.0))
    np.testing.assert_array_equal(d["d_v"][::100, 0], [0, 1, 2, 3, 4])
