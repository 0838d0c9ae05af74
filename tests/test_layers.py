"""The layer programs of examples/layers: each against finite differences (gradcli.check),
its value against the same layer written in NumPy, and through the real command line."""
from __future__ import annotations

import json
import math
import pathlib

import numpy as np
import pytest

import gradcli
from conftest import run

LAYERS = pathlib.Path(__file__).resolve().parent.parent / "examples" / "layers"
NAMES = sorted(p.stem for p in LAYERS.glob("*.gc"))


def _load(name):
    program = (LAYERS / f"{name}.gc").read_text(encoding="utf-8")
    values = {k: np.array(v, dtype=np.float64)
              for k, v in json.loads((LAYERS / f"{name}.json").read_text()).items()}
    return program, values


def _softmax(z, axis):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _layer_norm(x, g, b, t):
    y = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * g + b
    return np.sum(y * t)


def _attention(X, Wq, Wk, Wv, T):
    Q, K, V = X @ Wq, X @ Wk, X @ Wv
    A = _softmax(Q @ K.transpose(0, 2, 1) / math.sqrt(8), -1)
    return np.sum((A @ V) * T)


def _gelu(x):
    return x * 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def _mlp(X, W1, b1, W2, b2, T):
    z = _gelu(X @ W1 + b1) @ W2 + b2
    logp = z - z.max(1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
    return -np.mean(np.sum(T * logp, axis=1))


def _conv_pool(x, w, b, t):
    xp = np.pad(x, [(0, 0), (0, 0), (1, 1), (1, 1)])
    y = np.zeros((2, 3, 6, 6))
    for i in range(6):
        for j in range(6):
            y[:, :, i, j] = np.einsum("ncpq,ocpq->no", xp[:, :, i:i + 3, j:j + 3], w) + b
    y = np.maximum(y, 0)
    p = y.reshape(2, 3, 3, 2, 3, 2).max(axis=(3, 5))
    return np.sum(p * t)


def _rnn(h, Wh, Wx, X, b, T):
    for k in range(4):
        h = np.tanh(h @ Wh.T + X[k] @ Wx.T + b)
    return np.sum(h * T)


def _nll(x, mu, L):
    S = L @ L.T + 0.5 * np.eye(3)
    d = x - mu
    return 0.5 * (d @ np.linalg.solve(S, d) + np.log(np.linalg.det(S)) + 3 * np.log(2 * np.pi))


REFERENCE = {"layer_norm": _layer_norm, "attention": _attention, "mlp_cross_entropy": _mlp,
             "conv_relu_pool": _conv_pool, "rnn": _rnn, "gaussian_nll": _nll}


def test_every_layer_has_a_reference_and_a_readme_line():
    assert set(NAMES) == set(REFERENCE)
    readme = (LAYERS / "README.md").read_text(encoding="utf-8")
    for name in NAMES:
        assert f"`{name}.gc`" in readme


@pytest.mark.parametrize("name", NAMES)
def test_layer_value_matches_numpy(name):
    program, values = _load(name)
    got = gradcli.evaluate(program, values).value
    assert float(got) == pytest.approx(REFERENCE[name](**values), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("method", ["central", "complex"])
def test_layer_gradients_match_finite_differences(name, method):
    program, values = _load(name)
    r = gradcli.check(program, values, method=method)
    assert r.ok, name
    g = gradcli.grad(program, values)
    assert set(g.gradients) == set(values)
    for k, v in values.items():
        assert g.gradients[k].shape == v.shape


@pytest.mark.parametrize("name", NAMES)
def test_layer_gradients_match_numpy_differences(name):
    """The same, with differences of the NumPy reference (independent of gradcli's forward)."""
    program, values = _load(name)
    g = gradcli.grad(program, values).gradients
    f = REFERENCE[name]
    rng = np.random.default_rng(1)
    for k, v in values.items():
        u = rng.normal(size=v.shape)  # a random direction per input
        e = 1e-6
        fp = f(**{**values, k: v + e * u})
        fm = f(**{**values, k: v - e * u})
        assert float(np.sum(g[k] * u)) == pytest.approx((fp - fm) / (2 * e), rel=1e-6,
                                                       abs=1e-8), (name, k)


def test_rnn_versions_are_told_apart():
    program, values = _load("rnn")
    g = gradcli.compile(program)
    assert g.variables["h"] == 0 and g.nodes[0].name == "h"
    named = [n.name for n in g.nodes if n.name and n.name.startswith("h")]
    assert named == ["h", "h#2", "h#3", "h#4", "h#5"]
    r = gradcli.grad(program, values)
    assert r.gradients["h"].shape == (2, 3)  # the input state, not the last statement


@pytest.mark.parametrize("name", NAMES)
def test_layer_through_the_command_line(name, gradcli_exe):
    p = run(gradcli_exe, "check", "-f", str(LAYERS / f"{name}.gc"), "--values",
            str(LAYERS / f"{name}.json"))
    assert p.returncode == 0, p.stderr
    assert "PASS" in p.stdout and "Traceback" not in p.stderr


# ---------------------------------------------------------------- the fast reverse pass

FAN_OUT = [
    ("x + x", {"x": (3, 4)}),
    ("a = x * 2; a + a * a + a", {"x": (3, 4)}),
    ("sum((x - mean(x, -1, keepdims=true)) / sqrt(var(x, -1, keepdims=true, correction=0) "
     "+ 1e-5) * t)", {"x": (5, 6), "t": (5, 6)}),
    ("x / b - b / x + x * b - (b - x)", {"x": (4, 3), "b": (3,)}),
    ("x / b + x / x", {"x": (4, 3), "b": (4, 1)}),
    ("sum(exp(x) * x) + sum(x / c)", {"x": (2, 3), "c": ()}),
    ("sum(tanh(W @ v + b)) + sum(u @ W)", {"W": (3, 4), "v": (4,), "b": (3,), "u": (3,)}),
]


@pytest.mark.parametrize("program, shapes", FAN_OUT)
def test_the_fast_reverse_pass_agrees_and_writes_into_nothing_it_does_not_own(program, shapes):
    """The reverse pass adds gradients in place into arrays it made, and reduces before it
    multiplies: the same gradients as the traced pass (the one tables show), every node's
    value, every binding and the upstream unchanged, every result its own array."""
    from gradcli import engine

    rng = np.random.default_rng(7)
    b = {k: rng.uniform(0.5, 1.5, s) for k, s in shapes.items()}
    kept = {k: v.copy() for k, v in b.items()}
    graph = gradcli.compile(program)
    out_shape = np.shape(engine.evaluate(graph, b).value)
    up = rng.normal(size=out_shape)
    up_kept = up.copy()
    fast = engine.differentiate(graph, b, upstream=up)
    slow = engine.differentiate(graph, b, upstream=up, trace=True)
    again = engine.evaluate(graph, b)
    for name in b:
        np.testing.assert_allclose(fast.gradients[name], slow.gradients[name], rtol=1e-12,
                                   atol=1e-12, err_msg=name)
        np.testing.assert_array_equal(b[name], kept[name])
    np.testing.assert_array_equal(up, up_kept)
    for i in fast.order:
        np.testing.assert_array_equal(fast.values[i], again.values[i])
        if slow.grads[i] is not None:
            np.testing.assert_allclose(fast.grads[i], slow.grads[i], rtol=1e-12, atol=1e-12)
    arrays = list(fast.gradients.values())
    others = list(b.values()) + [up] + [v for v in fast.values if v is not None]
    for k, g in enumerate(arrays):
        assert g.flags.writeable
        assert not any(np.shares_memory(g, o) for o in others + arrays[:k])
    # and a numeric check of the whole program: the rules are right, not just consistent
    assert gradcli.check(program, **b).ok
