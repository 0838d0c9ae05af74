"""Every derivative `gradcli diff` prints reads back: for every op of the registry.

The README's guarantee for diff: the printed derivative is a program of gradcli's language
that `gradcli eval` evaluates, with the same bindings, to what `gradcli grad` gives.  Here it
is checked for every entry of ``ops.BUILTINS`` (the internal ops through programs whose
gradient rules use them), through the real `eval` command; then each derivative is
differentiated again (its own printed derivative read back too), which covers the rules of
the ops that first derivatives are made of (conv_transpose, index with a step, ...).  The
NumPy module of ``diff --format python`` is checked against grad as well.
"""
from __future__ import annotations

import json
import subprocess
import sys
import zlib

import numpy as np
import pytest

import gradcli
from gradcli import ops as oplib
from conftest import cli

RTOL, ATOL = 1e-9, 1e-12
RNG = np.random.default_rng(5)

B = {"x": np.array([0.31, 0.62, 0.47]), "y": np.array([0.55, 0.25, 0.71]),
     "M": np.array([[0.3, 0.8, 0.5], [0.6, 0.2, 0.4]]),
     "S": np.array([[1.4, 0.3, 0.5], [0.2, 1.7, 0.6], [0.7, 0.1, 1.3]]),
     "T": np.array([[[1.3, 0.2, 0.7], [0.5, 1.4, 0.6], [0.1, 0.3, 1.5]],
                    [[1.8, 0.1, 0.9], [0.2, 1.3, 0.5], [0.4, 0.6, 1.1]]]),
     "X1": RNG.normal(size=(2, 4, 7)), "W1": RNG.normal(size=(4, 2, 3)),
     "X2": RNG.normal(size=(1, 4, 5, 5)), "W2": RNG.normal(size=(4, 2, 2, 3)),
     "Y1": RNG.normal(size=(2, 4, 4)), "V1": RNG.normal(size=(4, 3, 3)),
     "Y2": RNG.normal(size=(1, 4, 3, 3)), "V2": RNG.normal(size=(4, 3, 2, 2)),
     "b4": RNG.normal(size=4), "b6": RNG.normal(size=6),
     "P": np.array([[1.0, 2.0], [2.0, 4.0]])}  # singular

UNARY = ("exp", "exp2", "expm1", "log", "log1p", "log2", "log10", "sqrt", "square",
         "reciprocal", "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "tanh",
         "erf", "sigmoid", "relu", "softplus", "abs", "silu", "mish", "relu6")

#: op key (name/arity) -> programs whose derivatives use it (the op itself for public ops)
SAMPLES = {
    "sum_to/1": ["sum_to(M, (1, 3))", "sum_to(T, (3,))"],
    "broadcast_to/1": ["broadcast_to(x, (2, 3))"],
    "reshape/1": ["reshape(M, (3, 2))"],
    "index_grad/1": ["x[::2] * x[1::2]", "M[::-1, 1::2]", "T[..., ::2]", "M[1, None, ::2]",
                     "x[:1:-1]", "T[1:, ::-2, 1]"],
    "lt/2": ["(x < y) * x"], "le/2": ["(x <= y) * y"], "gt/2": ["(x > y) * x"],
    "ge/2": ["(x >= 0.47) * x"], "eq/2": ["(x == 0.62) * y"], "ne/2": ["(x != y) * x"],
    "where/3": ["where(x > 0.5, x * y, y)"],
    "step/1": ["step(x - 0.4) * x * y"], "sign/1": ["sign(x - 0.5) * y * x"],
    "floor/1": ["floor(3 * x) * x"], "ceil/1": ["ceil(3 * x) * y"],
    "round/1": ["round(3 * x) * x"],
    "add/2": ["x + y"], "sub/2": ["x - M"], "mul/2": ["x * M"], "div/2": ["M / y"],
    "neg/1": ["-x * y"], "pow/2": ["x ** y", "M ** 3"], "max/2": ["max(x, y)"],
    "min/2": ["min(x, M)"], "atan2/2": ["atan2(x, y)"], "clip/3": ["clip(x, 0.4, y)"],
    "leaky_relu/1": ["leaky_relu(x - 0.5, negative_slope=0.2)"],
    "elu/1": ["elu(x - 0.5, alpha=0.7)"], "hardtanh/1": ["hardtanh(x, min_val=0.4)"],
    "gelu/1": ["gelu(x)", 'gelu(x, approximate="tanh")'],
    "sum/1": ["sum(M, 0)", "sum(T, axis=(0, 2), keepdims=true)"],
    "mean/1": ["mean(M, axis=1, keepdims=true)"], "max/1": ["max(M, axis=0)", "max(M)"],
    "min/1": ["min(M, axis=1)"], "prod/1": ["prod(M, 1)"], "var/1": ["var(M, 0)"],
    "std/1": ["std(M, axis=1, correction=0)"], "norm/1": ["norm(M, axis=0)", "norm(x)"],
    "flip/1": ["flip(M, (0, 1))"], "cumsum/1": ["cumsum(M, 1)"],
    "cumprod/1": ["cumprod(M, 0)"], "moveaxis/1": ["cumprod(T, 1)"],
    "flatten/1": ["flatten(T, 1)"], "squeeze/1": ["squeeze(reshape(M, (2, 1, 3)), 1)"],
    "unsqueeze/1": ["unsqueeze(M, 1)"], "transpose/1": ["transpose(T, (1, 2, 0))",
                                                      "transpose(M)"],
    "swapaxes/1": ["T @ T", "T @ x"],
    "concat/None": ["concat(M, S, axis=0)"], "stack/None": ["stack(x, y, axis=1)"],
    "diag/1": ["diag(x)", "diag(S)", "diag(M, 1)", "diag(x, -1)", "diag(transpose(M))"],
    "tril/1": ["tril(S, -1)"], "triu/1": ["triu(M, 1)"],
    "matmul/2": ["M @ S", "x @ S", "S @ x", "x @ y"],
    "dot/2": ["dot(x, y)"], "outer/2": ["outer(x, y)"],
    "einsum/None": ['einsum("ij,jk->ik", M, S)', 'einsum("...j,j->...", T, x)',
                    'einsum("ij->", M)', 'einsum("ii->i", S)', 'einsum("ii", S)',
                    'einsum("ij,jj->i", M, S)', 'einsum("ijj->ji", T)'],
    "trace/1": ["trace(S)", "trace(M)", "trace(transpose(M))"],
    "det/1": ["det(S)", "det(T)", "det(P)"], "inv/1": ["inv(S)", "inv(T)"],
    "adjugate/1": ["adjugate(S)", "adjugate(T)", "adjugate(P)", "adjugate(S[:1, :1])"],
    "solve/2": ["solve(S, x)", "solve(T, S)"],
    "softmax/1": ["softmax(M)"], "log_softmax/1": ["log_softmax(M, axis=0)"],
    "logsumexp/1": ["logsumexp(M, axis=0, keepdims=true)"],
    "conv1d/3": ["conv1d(X1, W1, b4, stride=2, padding=1, dilation=2, groups=2)"],
    "conv1d/2": ["conv1d(X1, W1, groups=2)", "conv1d(X1, W1[:, :1], groups=4, stride=3)"],
    "conv2d/3": ["conv2d(X2, W2, b4, padding=(1, 0), groups=2)",
                 'conv2d(X2, W2, b4, padding="same", dilation=(1, 3), groups=2)'],
    "conv2d/2": ["conv2d(X2, W2, stride=2, dilation=(2, 1), groups=2)"],
    "conv_transpose1d/3": ["conv_transpose1d(Y1, V1, b6, stride=2, output_padding=1, "
                           "groups=2)"],
    "conv_transpose1d/2": ["conv_transpose1d(Y1, V1, padding=1, groups=2, dilation=2)"],
    "conv_transpose2d/3": ["conv_transpose2d(Y2, V2, b6, stride=(2, 1), groups=2)"],
    "conv_transpose2d/2": ["conv_transpose2d(Y2, V2, stride=2, padding=1, output_padding=1, "
                           "groups=2)"],
    "index/1": ["M[1, :]", "T[0, ..., 1:]"], "array/None": ["[x[0], y[1]]"],
}
SAMPLES.update({f"{u}/1": [f"{u}(x)"] for u in UNARY})


def _key(op):
    return f"{op.name}/{op.arity}"


def test_every_op_of_the_registry_has_a_sample():
    missing = [_key(op) for op in oplib.BUILTINS if _key(op) not in SAMPLES]
    assert not missing, f"ops without a readable-derivative sample: {missing}"
    extra = set(SAMPLES) - {_key(op) for op in oplib.BUILTINS}
    assert not extra, extra


def _weighted(expr, rng):
    """``sum((expr) * c)`` with c random of expr's shape (not a plain sum), and bindings."""
    g = gradcli.compile(expr)
    b = {k: B[k] for k in g.variables}
    shape = np.shape(gradcli.evaluate(expr, b).value)
    c = np.round(rng.uniform(0.5, 1.5, shape) * rng.choice([-1, 1], shape), 2)
    return f"sum(({expr}) * c)", {**b, "c": c}


def _args(bindings):
    return [f"{k}={json.dumps(np.asarray(v).tolist())}" for k, v in bindings.items()]


def _eval(text, bindings):
    """The value of program ``text`` by the `gradcli eval` command."""
    r = cli("eval", "--format", "json", "-f", "-", *_args(bindings), input=text + "\n")
    assert r.code == 0, f"gradcli eval refused the printed derivative:\n{text}\n{r.err}"
    return np.asarray(json.loads(r.out)["value"], dtype=float)


def _round_trip(program, bindings):
    """Each printed derivative, read back by `gradcli eval`, equals `gradcli grad`; no
    warning about internal ops.  Returns the texts."""
    r = cli("diff", "-f", "-", *_args(bindings), input=program + "\n")
    assert r.code == 0, r.err
    assert "internal op" not in r.err, r.err
    d = gradcli.diff(program, bindings)
    ref = gradcli.grad(program, bindings).gradients
    assert list(d.text) == list(ref)
    for name, text in d.text.items():
        got = _eval(text, bindings)
        want = ref[name]
        assert got.shape == want.shape, (name, text)
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=f"d/d{name}: {text}")
    return d.text


CASES = [pytest.param(key, expr, id=f"{key}:{expr}") for key, exprs in SAMPLES.items()
         for expr in exprs]


@pytest.mark.parametrize("key, expr", CASES)
def test_printed_derivative_reads_back(key, expr):
    rng = np.random.default_rng(zlib.crc32(expr.encode()))  # the same in every worker
    program, bindings = _weighted(expr, rng)
    if key.split("/")[0] in ("index_grad", "moveaxis", "swapaxes"):
        # the internal op is really in the gradient rules of this program
        name = key.split("/")[0]
        assert _uses(program, bindings, name), f"{program} does not use {name}"
    texts = _round_trip(program, bindings)
    _as_numpy_module(program, bindings)
    # and once more: each derivative's own derivative reads back too
    for name, text in texts.items():
        lines = text.splitlines()
        shape = np.shape(bindings[name])
        w = np.round(rng.uniform(0.5, 1.5, shape), 2)
        second = "\n".join(lines[:-1] + [f"sum(({lines[-1]}) * w_)"])
        used = set(gradcli.compile(second).variables)
        if not used - {"w_"}:
            continue  # a constant derivative: nothing to differentiate
        _round_trip(second, {k: v for k, v in {**bindings, "w_": w}.items() if k in used})


def _as_numpy_module(program, bindings):
    """diff --format python's module gives grad's numbers too; LaTeX prints."""
    import types

    d = gradcli.diff(program, bindings)
    source = d.program.python(list(bindings), d.output_name)
    mod = types.ModuleType("grad_f")
    exec(compile(source, "grad_f.py", "exec"), mod.__dict__)
    got = mod.gradient(*bindings.values())
    got = got if isinstance(got, tuple) else (got,)
    ref = gradcli.grad(program, bindings).gradients
    for g, name in zip(got, ref):
        np.testing.assert_allclose(np.broadcast_to(g, ref[name].shape), ref[name], rtol=RTOL,
                                   atol=ATOL, err_msg=f"NumPy module, d/d{name}")
    assert d.program.latex("f").startswith("\\begin{aligned}")


def _uses(program, bindings, name):
    from gradcli import symbolic

    lifted = symbolic.lift(gradcli.compile(program), bindings)
    seen = []
    b = lifted.builder
    trace = b.trace

    def spy(op, args):
        seen.append(op.name)
        return trace(op, args)
    b.trace = spy  # what Builder.tracing() installs as the tracer
    symbolic.backward(b, lifted.out, b.const(1.0, ()), list(lifted.variables.values()))
    return name in seen


@pytest.mark.parametrize("program, binding, expected", [
    ("sum(conv1d(x, w))", ["x=[[[1,2,3,4]]]", "w=[[[1,2]]]"],
     "d/dx = conv_transpose1d(t1, w)"),
    ("sum(x[::2] * x[1::2])", ["x=[1,2,3,4]"], None),
])
def test_the_examples_read_back_in_real_processes(program, binding, expected):
    exe = [sys.executable, "-m", "gradcli"]
    p = subprocess.run(exe + ["diff", program] + binding, capture_output=True, text=True)
    assert p.returncode == 0 and p.stderr == "", p.stderr
    if expected:
        assert expected in p.stdout.splitlines()
    grad = json.loads(subprocess.run(exe + ["grad", "--format", "json", program] + binding,
                                     capture_output=True, text=True).stdout)["gradients"]
    bindings = {b.split("=")[0]: json.loads(b.split("=")[1]) for b in binding}
    d = gradcli.diff(program, bindings)
    for name, text in d.text.items():
        q = subprocess.run(exe + ["eval", "--format", "json", "-f", "-"] + binding,
                           input=text + "\n", capture_output=True, text=True)
        assert q.returncode == 0, q.stderr
        np.testing.assert_allclose(json.loads(q.stdout)["value"], grad[name], rtol=1e-12)
