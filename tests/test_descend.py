"""gradcli descend: the compiled step, the optimizers against reference updates, the loop's
stops, save and resume, mini-batches and the command's streams."""
import json
import math

import numpy as np
import pytest

import gradcli
from gradcli import engine, training
from gradcli.parse import parse

from conftest import GATES, bad, cli, run

SEED_LOSS = "mean((w*x + b - y)**2)"
SEED_DATA = dict(x=[1.0, 2.0, 3.0, 4.0], y=[2.0, 3.0, 4.0, 5.0])


def seed_loop(steps, lr=0.01):
    """Seed 003's training loop, by hand: forward, the gradients of the MSE, p -= lr * g."""
    x, y = np.array(SEED_DATA["x"]), np.array(SEED_DATA["y"])
    w = b = 0.0
    losses = []
    for _ in range(steps):
        r = w * x + b - y
        losses.append(np.mean(r ** 2))
        gw, gb = np.mean(2 * r * x), np.mean(2 * r)
        w, b = w - lr * gw, b - lr * gb
    losses.append(np.mean((w * x + b - y) ** 2))
    return w, b, losses


# ---------------------------------------------------------------- the seed's regression

def test_seed_regression_equals_a_numpy_loop():
    r = gradcli.descend(SEED_LOSS, params="w,b", w=0, b=0, lr=0.01, steps=1000, **SEED_DATA)
    w, b, losses = seed_loop(1000)
    assert r.steps == 1000 and r.stopped == "steps"
    assert abs(float(r.params["w"]) - w) <= 1e-12
    assert abs(float(r.params["b"]) - b) <= 1e-12
    assert len(r.loss) == 1001
    np.testing.assert_allclose(r.loss, losses, rtol=1e-12, atol=0)
    assert r.loss[0] == 13.5  # mean of (0 - y)^2 = (4 + 9 + 16 + 25) / 4


def test_seed_regression_approaches_one_one():
    far = [gradcli.descend(SEED_LOSS, params="w,b", w=0, b=0, steps=n, **SEED_DATA)
           for n in (1000, 4000, 10000)]
    errs = [max(abs(float(r.params["w"]) - 1), abs(float(r.params["b"]) - 1)) for r in far]
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 1e-6


def test_cli_table_and_json():
    args = ["descend", SEED_LOSS, "--params", "w,b", "w=0", "b=0", "x=[1,2,3,4]",
            "y=[2,3,4,5]", "--lr", "0.01", "--steps", "1000"]
    r = cli(*args, "--format", "json")
    assert r.code == 0, r.err
    d = json.loads(r.out)
    assert set(d) >= {"params", "loss", "steps"}
    assert d["steps"] == 1000 and len(d["loss"]) == 1001
    w, b, losses = seed_loop(1000)
    assert abs(d["params"]["w"] - w) <= 1e-12 and abs(d["params"]["b"] - b) <= 1e-12
    assert d["loss"][0] == 13.5 and abs(d["loss"][-1] - losses[-1]) <= 1e-15
    t = cli(*args)
    assert t.code == 0, t.err
    lines = t.out.splitlines()
    assert lines[0].split() == ["parameter", "shape", "value"]
    assert lines[2].split()[:2] == ["w", "scalar"] and lines[3].split()[:2] == ["b", "scalar"]
    assert "loss 13.5 → 0.000145286 after 1000 steps (sgd, lr 0.01)" in t.out
    assert t.err == ""


# ---------------------------------------------------------------- the compiled step

PROGRAMS = [
    ("mean((w*x + b - y)**2)", dict(w=0.3, b=-0.2), dict(x=[1., 2, 3, 4], y=[2., 3, 4, 5])),
    ("sum(tanh(W @ x + b))", dict(W=[[0.1, -0.2], [0.3, 0.4], [0.5, -0.6]], b=[0.1, 0.2, 0.3]),
     dict(x=[1.0, -2.0])),
    ("h = relu(X @ W1 + b1)\nz = h @ w2\nmean(softplus(z) - t * z)",
     dict(W1=[[0.5, -0.3, 0.2], [0.1, 0.4, -0.6]], b1=[0.0, 0.1, -0.1], w2=[0.3, -0.2, 0.5]),
     dict(X=[[1., 2], [-1, 0.5], [0.3, -0.7], [2, 1]], t=[1., 0, 1, 0])),
    ("-sum(t * log_softmax(W @ x))", dict(W=[[0.1, 0.2], [0.3, -0.1], [-0.2, 0.4]]),
     dict(x=[1.0, 2.0], t=[0., 1, 0])),
    ("a = w * w; a = a + sin(a) * w; sum(max(a, 0.1) + abs(w - 0.5)) + w[0] * w[1:]@[1, 2]",
     dict(w=[0.3, -0.7, 1.2]), {}),
    ("sum(MultiplyGate(w, x) ** 2) + mean(exp(w))", dict(w=[0.5, -1.0]), dict(x=[2.0, 3.0])),
    ("prod(w) + var(w) + norm(w) + sum(cumsum(w, 0) * [1, 2, 3])", dict(w=[0.5, 2.0, -1.5]),
     {}),
]


@pytest.mark.parametrize("text,params,data", PROGRAMS)
def test_compiled_step_equals_the_engine(text, params, data):
    ops = gradcli.load_ops(GATES) if "Gate" in text else None
    graph = parse(text, ops)
    binds = {**{k: np.array(v) for k, v in params.items()},
             **{k: np.array(v) for k, v in data.items()}}
    step = training.compile_step(graph, binds, list(params))
    rng = np.random.default_rng(1)
    for trial in range(3):  # the traced point, then others: nothing of it is baked in
        P = [binds[n] + (0 if trial == 0 else 0.1 * rng.standard_normal(np.shape(binds[n])))
             for n in params]
        loss, grads = step(P)
        ref = engine.differentiate(graph, {**binds, **dict(zip(params, P))}, wrt=list(params))
        assert abs(float(loss) - float(ref.value)) <= 1e-12 * max(1, abs(float(ref.value)))
        for n, g in zip(params, grads):
            np.testing.assert_allclose(g, ref.gradients[n], rtol=1e-12, atol=1e-12)
            assert np.shape(g) == np.shape(binds[n])


def test_compiled_step_is_straight_line_numpy():
    graph = parse(SEED_LOSS)
    step = training.compile_step(graph, {"w": 0.0, "b": 0.0, **SEED_DATA}, ["w", "b"])
    body = step.source.splitlines()[1:]
    assert all(line.startswith("    t") or line.startswith("    return") for line in body)
    # the rule of x**2 (where(eq(2, 0), 0 * out, 2 * x**1)) folds to one multiply
    assert step.lines <= 12 and step.fallbacks == 0


def test_compiled_step_with_mini_batch_arguments():
    graph = parse("mean((X @ w - y)**2)")
    X, y = np.arange(12.0).reshape(6, 2), np.arange(6.0)
    step = training.compile_step(graph, {"w": [0.1, 0.2], "X": X, "y": y}, ["w"],
                                 data=["X", "y"])
    loss, (g,) = step([np.array([0.3, -0.1])], [X[:6], y[:6]])
    ref = engine.differentiate(graph, {"w": [0.3, -0.1], "X": X, "y": y}, wrt=["w"])
    np.testing.assert_allclose(g, ref.gradients["w"], rtol=1e-12)
    assert abs(float(loss) - float(ref.value)) < 1e-12
