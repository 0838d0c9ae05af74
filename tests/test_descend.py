"""gradcli descend: the compiled step, the optimizers against reference updates, the loop's
stops, save and resume, mini-batches and the command's streams."""
import json
import math

import numpy as np
import pytest

import gradcli
from gradcli import engine, training
from gradcli.parse import parse

from conftest import GATES, ROOT, bad, cli, run

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
    r = gradcli.descend(SEED_LOSS, params="w,b", w=0, b=0, steps=1000, **SEED_DATA)
    errs = []
    for more in (1000, 2000, 3000):  # 1000, 2000, 4000 and 7000 steps in all
        errs.append(max(abs(float(r.params["w"]) - 1), abs(float(r.params["b"]) - 1)))
        r = gradcli.descend(SEED_LOSS, params="w,b", steps=more, resume=r, **SEED_DATA)
    errs.append(max(abs(float(r.params["w"]) - 1), abs(float(r.params["b"]) - 1)))
    assert errs == sorted(errs, reverse=True) and errs[0] > 1e-2
    assert errs[-1] < 1e-6


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


# ---------------------------------------------------------------- optimizers, by the book

A = np.array([[1.0, 2.0], [0.5, -1.0], [2.0, 0.3]])
C = np.array([1.0, -2.0, 0.5])
QUAD = "sum((A @ p - c)**2)"


def quad_grad(p):
    return 2 * A.T @ (A @ p - C)


def quad_run(steps, **kw):
    return gradcli.descend(QUAD, params="p", p=[0.5, -0.5], A=A, c=C, steps=steps, **kw)


def reference(steps, update, lr=0.01, wd=0.0):
    """Run ``update(p, g, t, state, lr)`` (the textbook rule) from the same start."""
    p = np.array([0.5, -0.5])
    state = {}
    for t in range(1, steps + 1):
        p = update(p, quad_grad(p), t, state, lr)
    return p


def test_sgd_update_is_the_seeds_bit_for_bit():
    rng = np.random.default_rng(0)
    P = [rng.standard_normal((3, 2)), np.array(rng.standard_normal())]
    G = [rng.standard_normal((3, 2)), np.array(rng.standard_normal())]
    opt = training.make_optimizer("sgd", ["W", "b"])
    new = opt.update(P, G, 0.01)
    for p, g, q in zip(P, G, new):
        np.testing.assert_array_equal(q, p - 0.01 * g)  # W -= learning_rate * grad


def test_sgd_weight_decay_is_l2():
    def sgd_wd(p, g, t, s, lr):
        return p - lr * (g + 0.1 * p)
    r = quad_run(50, weight_decay=0.1)
    np.testing.assert_allclose(r.params["p"], reference(50, sgd_wd), rtol=1e-13)


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_as_torch_sgd(nesterov):
    mu = 0.9

    def heavy_ball(p, g, t, s, lr):  # torch.optim.SGD's documented algorithm
        s["b"] = g.copy() if t == 1 else mu * s["b"] + g
        return p - lr * (g + mu * s["b"] if nesterov else s["b"])
    r = quad_run(60, optimizer="momentum", momentum=mu, nesterov=nesterov)
    np.testing.assert_allclose(r.params["p"], reference(60, heavy_ball), rtol=1e-12)
    assert set(r.optimizer.state) == {"momentum_buffer"}


def adam_ref(b1=0.9, b2=0.999, eps=1e-8, wd=0.0, decoupled=False):
    def adam(p, g, t, s, lr):  # Kingma & Ba, with PyTorch's weight decay placement
        if decoupled:
            p = p - lr * wd * p
        elif wd:
            g = g + wd * p
        s["m"] = b1 * s.get("m", 0) + (1 - b1) * g
        s["v"] = b2 * s.get("v", 0) + (1 - b2) * g * g
        mhat = s["m"] / (1 - b1 ** t)
        vhat = s["v"] / (1 - b2 ** t)
        return p - lr * mhat / (np.sqrt(vhat) + eps)
    return adam


def test_adam_by_the_book():
    r = quad_run(80, optimizer="adam", lr=0.05)
    np.testing.assert_allclose(r.params["p"], reference(80, adam_ref(), lr=0.05), rtol=1e-11)
    r = quad_run(80, optimizer="adam", lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)
    ref = reference(80, adam_ref(0.8, 0.99, 1e-6, wd=0.1), lr=0.05)
    np.testing.assert_allclose(r.params["p"], ref, rtol=1e-11)


def test_adamw_decoupled_decay_default_001():
    r = quad_run(80, optimizer="adamw", lr=0.05)
    ref = reference(80, adam_ref(wd=0.01, decoupled=True), lr=0.05)
    np.testing.assert_allclose(r.params["p"], ref, rtol=1e-11)
    plain = quad_run(80, optimizer="adam", lr=0.05)
    assert not np.allclose(r.params["p"], plain.params["p"], rtol=1e-6)  # the decay acts


def test_schedules_as_pytorch():
    seen = []

    def sgd_logged(p, g, t, s, lr):
        return p - lr * g
    for name, lr_of in [
            ("cosine", lambda k: 0.0 + 0.1 * (1 + math.cos(math.pi * k / 30)) / 2),
            ("step", lambda k: 0.1 * 0.5 ** (k // 7))]:
        kw = dict(t_max=30) if name == "cosine" else dict(step_size=7, gamma=0.5)
        r = quad_run(30, lr=0.1, schedule=name, **kw)
        p = np.array([0.5, -0.5])
        for k in range(30):
            p = p - lr_of(k) * quad_grad(p)
        np.testing.assert_allclose(r.params["p"], p, rtol=1e-12)
        seen.append(r.params["p"])
    assert not np.allclose(seen[0], seen[1])


# ---------------------------------------------------------------- stops

def test_nan_stop_names_step_and_parameter():
    r = gradcli.descend(SEED_LOSS, params="w,b", w=0, b=0, lr=1.0, steps=1000, **SEED_DATA)
    assert r.stopped == "nan" and r.diverged
    assert all(math.isfinite(v) for v in r.loss)
    assert all(np.isfinite(v) for v in r.params.values())
    k = r.steps + 1  # the step whose loss was not finite
    assert f"at step {k}:" in r.diverged and "parameter w blew up" in r.diverged, r.diverged
    assert f"the parameters after step {k - 1}" in r.diverged
    c = cli("descend", SEED_LOSS, "--params", "w,b", "w=0", "b=0", "x=[1,2,3,4]",
            "y=[2,3,4,5]", "--lr", "1", "--steps", "1000", "--format", "json")
    assert c.code == 1 and c.exception is None
    assert c.err.startswith("error: the loss became ") and f"at step {k}" in c.err
    d = json.loads(c.out)
    assert d["steps"] == k - 1 and len(d["loss"]) == k and d["stopped"] == "nan"


def test_non_scalar_loss_is_exit_2():
    bad(cli("descend", "(w*x - y)**2", "--params", "w", "w=0", "x=[1,2]", "y=[1,2]"),
        "the loss must be a scalar", "shape (2,)", "mean(...)")


def test_tol_and_max_time():
    r = gradcli.descend(SEED_LOSS, params="w,b", w=0, b=0, steps=100000, tol=1e-9,
                        **SEED_DATA)
    assert r.stopped == "tol" and r.steps < 100000
    assert abs(r.loss[-1] - r.loss[-2]) < 1e-9 <= abs(r.loss[-2] - r.loss[-3])
    r = gradcli.descend(SEED_LOSS, params="w,b", w=0, b=0, steps=10 ** 9, max_time=0.2,
                        **SEED_DATA)
    assert r.stopped == "time" and 0 < r.steps < 10 ** 9 and len(r.loss) == r.steps + 1


# ---------------------------------------------------------------- save and resume

@pytest.mark.parametrize("ext", [".json", ".npz"])
@pytest.mark.parametrize("opt", ["sgd", "momentum", "adam"])
def test_save_and_resume_equals_one_longer_run(tmp_path, ext, opt):
    args = ["descend", QUAD_TEXT, "--params", "p", "p=[0.5,-0.5]", f"A={A.tolist()}",
            f"c={C.tolist()}", "--optimizer", opt, "--lr", "0.05", "--format", "json"]
    f = tmp_path / f"fit{ext}"
    one = json.loads(cli(*args, "--steps", "20").out)
    a = cli(*args, "--steps", "12", "--save", f)
    assert a.code == 0, a.err
    assert (tmp_path / f"fit{ext}.optim.npz").is_file()
    b = cli(*args, "--steps", "8", "--resume", f, "--save", f)
    assert b.code == 0, b.err
    two = json.loads(b.out)
    np.testing.assert_allclose(two["params"]["p"], one["params"]["p"], rtol=1e-15)
    np.testing.assert_allclose(json.loads(a.out)["loss"] + two["loss"][1:], one["loss"],
                               rtol=1e-15)
    # --values reads the saved parameters back: the loss there is the run's last loss
    e = cli("eval", QUAD_TEXT, "--values", f, f"A={A.tolist()}", f"c={C.tolist()}",
            "--format", "json")
    assert e.code == 0, e.err
    assert abs(json.loads(e.out)["value"] - one["loss"][-1]) <= 1e-12


QUAD_TEXT = QUAD


def test_resume_refuses_another_optimizer_and_a_missing_state(tmp_path):
    f = tmp_path / "fit.json"
    base = ["descend", SEED_LOSS, "--params", "w,b", "x=[1,2,3,4]", "y=[2,3,4,5]"]
    assert cli(*base, "w=0", "b=0", "--optimizer", "adam", "--save", f).code == 0
    bad(cli(*base, "--resume", f), "--optimizer adam")
    (tmp_path / "fit.json.optim.npz").unlink()
    bad(cli(*base, "--optimizer", "adam", "--resume", f), "--values")


def test_saved_files_are_complete_json_and_npz(tmp_path):
    r = quad_run(5, optimizer="adam")
    training.save(r, tmp_path / "p.json")
    training.save(r, tmp_path / "p.npz")
    assert json.loads((tmp_path / "p.json").read_text()) == {"p": r.params["p"].tolist()}
    with np.load(tmp_path / "p.npz") as z:
        np.testing.assert_array_equal(z["p"], r.params["p"])
    with np.load(tmp_path / "p.npz.optim.npz") as z:
        assert str(z["optimizer"]) == "adam" and int(z["step"]) == 5
        np.testing.assert_array_equal(z["exp_avg/p"], r.optimizer.state["exp_avg"]["p"])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".gradcli-")]


# ---------------------------------------------------------------- mini-batches

def _write_csv(path, X, y):
    rows = ["x,y"] + [f"{float(a)!r},{float(b)!r}" for a, b in zip(X, y)]
    path.write_text("\n".join(rows) + "\n")


def test_mini_batches_in_file_order(tmp_path):
    x = np.linspace(-1, 1, 8)
    y = 3 * x - 0.5
    f = tmp_path / "d.csv"
    _write_csv(f, x, y)
    r = gradcli.descend(SEED_LOSS, params="w,b", w=0, b=0, batch=str(f), batch_size=3,
                        lr=0.1, steps=10)
    w = b = 0.0
    losses = []
    starts = [0, 3, 6] * 4
    for k in range(11):
        s = starts[k]
        xb, yb = x[s:s + 3], y[s:s + 3]
        r_ = w * xb + b - yb
        losses.append(np.mean(r_ ** 2))
        if k < 10:
            w, b = w - 0.1 * np.mean(2 * r_ * xb), b - 0.1 * np.mean(2 * r_)
    assert abs(float(r.params["w"]) - w) < 1e-12 and abs(float(r.params["b"]) - b) < 1e-12
    np.testing.assert_allclose(r.loss, losses, rtol=1e-12)
    assert len(r.compiled) == 2  # batches of 3 and the last of 2: one step each


def test_shuffled_batches_are_seeded_and_resume(tmp_path):
    x = np.linspace(-1, 1, 10)
    f = tmp_path / "d.csv"
    _write_csv(f, x, 2 * x + 1)
    kw = dict(params="w,b", w=0, b=0, batch=str(f), batch_size=4, shuffle=True, lr=0.1)
    a = gradcli.descend(SEED_LOSS, steps=9, seed=3, **kw)
    b = gradcli.descend(SEED_LOSS, steps=9, seed=3, **kw)
    c = gradcli.descend(SEED_LOSS, steps=9, seed=4, **kw)
    ordered = gradcli.descend(SEED_LOSS, steps=9, **{**kw, "shuffle": False})
    assert a.loss == b.loss and a.loss != c.loss and a.loss != ordered.loss
    half = gradcli.descend(SEED_LOSS, steps=5, seed=3, **kw)
    rest = gradcli.descend(SEED_LOSS, steps=4, seed=3, resume=half,
                           **{k: v for k, v in kw.items() if k not in ("w", "b")})
    np.testing.assert_array_equal(rest.params["w"], a.params["w"])
    assert half.loss + rest.loss[1:] == a.loss


def test_batch_columns_from_npz_with_matrices(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((12, 3))
    t = X @ np.array([1.0, -2.0, 0.5])
    f = tmp_path / "d.npz"
    np.savez(f, X=X, t=t)
    r = cli("descend", "mean((X @ w - t)**2)", "--params", "w", "--init", "zeros",
            "--shape", "w=3", "--batch", f, "--batch-size", "5", "--steps", "400",
            "--lr", "0.1", "--format", "json")
    assert r.code == 0, r.err
    np.testing.assert_allclose(json.loads(r.out)["params"]["w"], [1, -2, 0.5], atol=1e-3)


# ---------------------------------------------------------------- starting values

def test_init_shapes_and_seed():
    kw = dict(params="W,b", x=[1.0, 2.0], steps=0)
    text = "sum(tanh(W @ x + b))"
    z = gradcli.descend(text, init="zeros", shapes={"W": (3, 2), "b": (3,)}, **kw)
    assert z.params["W"].shape == (3, 2) and not z.params["W"].any()
    a = gradcli.descend(text, init="xavier", seed=1, shapes={"W": (3, 2), "b": (3,)}, **kw)
    b = gradcli.descend(text, init="xavier", seed=1, shapes={"W": (3, 2), "b": (3,)}, **kw)
    np.testing.assert_array_equal(a.params["W"], b.params["W"])
    assert np.all(np.abs(a.params["W"]) <= math.sqrt(6 / 5))
    n = gradcli.descend(text, init="normal", seed=1, shapes={"W": (3, 2), "b": (3,)}, **kw)
    assert n.params["W"].shape == (3, 2) and np.std(n.params["W"]) > 0
    r = cli("descend", text, "--params", "W,b", "x=[1,2]", "--init", "xavier", "--shape",
            "W=3,2", "--shape", "b=3", "--steps", "0", "--format", "json", "--seed", "1")
    assert r.code == 0, r.err
    np.testing.assert_array_equal(json.loads(r.out)["params"]["W"], a.params["W"])


def test_bad_input_is_one_clear_error():
    base = ["descend", SEED_LOSS, "x=[1,2,3,4]", "y=[2,3,4,5]"]
    bad(cli(*base, "--params", "w,q", "w=0", "b=0"), "--params q", "no variable q")
    bad(cli(*base, "--params", "w,b", "w=0"), "parameter b has no starting value", "--init")
    bad(cli(*base, "--params", "w,b", "w=0", "b=0", "--shape", "w=x"), "--shape")
    bad(cli(*base, "--params", "w,b", "w=0", "b=0", "--save", "fit.txt"), ".json or an .npz")
    bad(cli(*base, "--params", "w,b", "w=0", "b=0", "--plot", "c.gif"), ".png")
    bad(cli(*base, "--params", "w,w", "w=0", "b=0"), "twice")
    bad(cli(*base, "--params", "w,b", "w=0", "b=0", "--batch-size", "2"), "--batch FILE")
    bad(cli(*base, "--params", "w,b", "w=0", "b=0", "--lr", "nan"), "--lr")
    bad(cli(*base, "--params", "w,b", "w=0", "b=0", "--optimizer", "momentum", "--nesterov",
            "--momentum", "0"), "Nesterov")


# ---------------------------------------------------------------- streams and signals

SEED_ARGS = ["descend", SEED_LOSS, "--params", "w,b", "w=0", "b=0", "x=[1,2,3,4]",
             "y=[2,3,4,5]"]


def test_no_progress_bar_in_a_pipe(gradcli_exe):
    p = run(gradcli_exe, *SEED_ARGS, "--steps", "2000")
    assert p.returncode == 0 and p.stderr == ""
    assert "\x1b" not in p.stdout and "━" not in p.stdout
    p = run(gradcli_exe, *SEED_ARGS, "--steps", "300", "--log-every", "100")
    assert p.returncode == 0
    assert [line.split()[:2] for line in p.stderr.splitlines()] == [
        ["step", "0"], ["step", "100"], ["step", "200"], ["step", "300"]]
    assert "\x1b" not in p.stderr


def test_progress_bar_on_a_terminal(gradcli_exe):
    import os
    import pty
    import subprocess
    import threading

    master, slave = pty.openpty()
    seen = []

    def drain():  # read the terminal while the command writes to it
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                return
            if not chunk:
                return
            seen.append(chunk)
    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        p = subprocess.Popen(gradcli_exe + SEED_ARGS + ["--steps", "3000", "--max-time", "0.8",
                                                       "--tol", "0", "--format", "json"],
                             stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL,
                             env=dict(os.environ, TERM="xterm", COLUMNS="100"))
        out, _ = p.communicate(timeout=120)
    finally:
        os.close(slave)
        reader.join(5)
        os.close(master)
    assert p.returncode == 0
    assert json.loads(out)["params"]  # stdout stays clean JSON
    text = b"".join(seen).decode(errors="replace")
    assert "descend" in text and "loss" in text and "/3000" in text, text


def test_ctrl_c_stops_after_the_step_prints_and_saves(gradcli_exe, tmp_path):
    import signal
    import subprocess

    f = tmp_path / "fit.npz"
    p = subprocess.Popen(gradcli_exe + SEED_ARGS + ["--steps", str(10 ** 9), "--log-every",
                                                   "1000", "--format", "json", "--save",
                                                   str(f)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first, second = p.stderr.readline(), p.stderr.readline()  # the loop is running
    assert first.startswith("step 0") and second.startswith("step 1000"), first + second
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "Traceback" not in err and "interrupted after" in err
    d = json.loads(out)
    assert d["stopped"] == "interrupted" and 0 < d["steps"] < 10 ** 9
    assert len(d["loss"]) == d["steps"] + 1
    with np.load(f) as z:
        assert float(z["w"]) == d["params"]["w"]


def test_log_csv(tmp_path):
    f = tmp_path / "log.csv"
    r = cli(*SEED_ARGS, "--steps", "20", "--log", f, "--format", "json")
    assert r.code == 0, r.err
    rows = f.read_text().splitlines()
    assert rows[0] == "step,loss,grad_norm" and len(rows) == 22
    loss = json.loads(r.out)["loss"]
    step, L, g = rows[1].split(",")
    assert step == "0" and float(L) == loss[0] == 13.5
    # at w = b = 0 the gradient is (mean(-2 y x), mean(-2 y)) = (-20, -7)
    assert abs(float(g) - math.hypot(20, 7)) < 1e-12
    assert [float(row.split(",")[1]) for row in rows[1:]] == loss
    cli(*SEED_ARGS, "--steps", "20", "--log", f, "--log-every", "8")
    assert [row.split(",")[0] for row in f.read_text().splitlines()[1:]] == ["0", "8", "16",
                                                                            "20"]


def test_plot_png_and_svg(tmp_path):
    for ext in ("png", "svg"):
        f = tmp_path / f"curve.{ext}"
        r = cli(*SEED_ARGS, "--steps", "50", "--plot", f)
        assert r.code == 0, r.err
        head = f.read_bytes()[:200]
        assert head.startswith(b"\x89PNG") if ext == "png" else b"<svg" in f.read_bytes()


def test_plot_without_matplotlib_says_how_to_install(gradcli_exe, tmp_path):
    # a matplotlib that cannot be imported: a package directory shadowing it, empty
    fake = tmp_path / "site"
    (fake / "matplotlib").mkdir(parents=True)
    (fake / "matplotlib" / "__init__.py").write_text("raise ImportError('no')\n")
    p = run(gradcli_exe, *SEED_ARGS, "--plot", str(tmp_path / "c.png"),
            env={"PYTHONPATH": str(fake)})
    assert p.returncode == 2 and "pip install 'gradcli[plot]'" in p.stderr
    assert p.stdout == "" and "Traceback" not in p.stderr


# ---------------------------------------------------------------- the examples

EXAMPLES = ROOT / "examples" / "descend"


def _header_command(name):
    """The command in an example's header comment, with its continuation lines joined."""
    lines = [ln[1:].strip() for ln in (EXAMPLES / name).read_text().splitlines()
             if ln.startswith("#")]
    start = next(k for k, ln in enumerate(lines) if ln.startswith("gradcli descend"))
    cmd = ""
    for ln in lines[start:]:
        cmd += ln.rstrip("\\").strip() + " "
        if not ln.endswith("\\"):
            break
    return cmd.split()[1:]  # without "gradcli"


@pytest.mark.parametrize("name,check", [
    ("linear.gc", lambda d: abs(d["params"]["w"] - 1) < 0.02 and abs(d["params"]["b"] - 1)
     < 0.04),
    ("logistic.gc", lambda d: d["params"]["w"] > 0.5 and d["loss"][-1] < 0.5),
    ("twolayer.gc", lambda d: d["loss"][-1] < 0.05),
])
def test_examples_fit(name, check, monkeypatch):
    monkeypatch.chdir(ROOT)  # the paths in the comments are relative to the repository's root
    r = cli(*_header_command(name), "--format", "json")
    assert r.code == 0, r.err
    d = json.loads(r.out)
    assert check(d), d["loss"][-1]
    assert d["loss"][-1] < d["loss"][0]


def test_batches_stream_the_file_in_order(tmp_path, monkeypatch):
    """In file order the file is read chunk by chunk, a new pass each epoch (never whole)."""
    from gradcli import batching

    x = np.linspace(-1, 1, 10)
    f = tmp_path / "d.csv"
    _write_csv(f, x, 2 * x + 1)
    sizes = []
    real = batching.iter_chunks

    def spy(path, chunk_size=None, names=None):
        sizes.append(chunk_size)
        return real(path, chunk_size, names)
    monkeypatch.setattr(batching, "iter_chunks", spy)
    r = gradcli.descend(SEED_LOSS, params="w,b", w=0, b=0, batch=str(f), batch_size=4,
                        steps=7, lr=0.1)
    assert sizes == [4, 4, 4]  # three passes over 10 rows in batches of 4, 4, 2
    assert r.epochs == 3 and r.full_loss is None
    whole = gradcli.descend(SEED_LOSS, params="w,b", w=0, b=0, batch=str(f), steps=3)
    assert whole.batch_size == 10 and whole.full_loss == whole.loss[-1]


# ---------------------------------------------------------------- golden files

GOLDEN_CASES = {
    "seed_sgd": SEED_ARGS + ["--lr", "0.01", "--steps", "1000"],
    "seed_json": SEED_ARGS + ["--steps", "3", "--format", "json"],
    "seed_adam_log_every": SEED_ARGS + ["--optimizer", "adam", "--lr", "0.1", "--steps",
                                        "300", "--log-every", "50"],
    "points_batches": ["descend", "-f", "examples/descend/linear.gc", "--params", "w,b",
                       "w=0", "b=0", "--batch", "examples/descend/points.csv",
                       "--batch-size", "3", "--shuffle", "--steps", "200", "--lr", "0.02"],
    "nan_stop": SEED_ARGS + ["--lr", "1", "--steps", "1000", "--log-every", "1000"],
    "error_not_scalar": ["descend", "(w*x - y)**2", "--params", "w", "w=0", "x=[1,2]",
                         "y=[2,4]"],
    "error_no_start": ["descend", SEED_LOSS, "--params", "w,b", "w=0", "x=[1,2,3,4]",
                       "y=[2,3,4,5]"],
}


@pytest.mark.parametrize("name", list(GOLDEN_CASES))
def test_golden_output(name, monkeypatch):
    """What people read, pinned (tests/golden/descend/; GRADCLI_UPDATE_GOLDEN=1 rewrites)."""
    import os

    from test_golden import render

    monkeypatch.chdir(ROOT)
    path = ROOT / "tests" / "golden" / "descend" / f"{name}.txt"
    got = render(GOLDEN_CASES[name])
    if os.environ.get("GRADCLI_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(got, encoding="utf-8")
    want = "\n".join(line.rstrip() for line in path.read_text(encoding="utf-8").splitlines())
    assert got.rstrip("\n") == want.rstrip("\n")


def test_nan_names_the_parameter_that_became_nan():
    # sqrt of a negative number: w's gradient is fine until w crosses 0, then the loss is nan
    r = gradcli.descend("sqrt(w) + (w - 3)**2 * 0 + 10 * w", params="w", w=1.0, lr=0.04,
                        steps=100)
    assert r.stopped == "nan"
    assert r.diverged.startswith(f"the loss became nan at step {r.steps + 1}: ")
    assert float(r.params["w"]) > 0
    r = gradcli.descend("sum(v * v)", params="v", v=[1e-300, 2.0], lr=1e308, steps=5)
    assert r.diverged.startswith("the loss became inf at step 1: parameter v became "
                                 "non-finite in 1 of 2 elements (its gradient reached 4)"), \
        r.diverged
    np.testing.assert_array_equal(r.params["v"], [1e-300, 2.0])
    r = gradcli.descend("log(w)", params="w", w=-1, steps=5)
    assert r.steps == 0 and r.diverged.startswith("the loss is nan at the starting")


def test_a_rule_that_cannot_be_traced_runs_live(monkeypatch):
    """A rule calling NumPy on its operands (not the op library) is called on the live
    values at every step: the step stays what the engine computes."""
    graph = parse("sum(tanh(w * x))")
    op = next(n.op for n in graph.nodes if n.op.name == "tanh")
    monkeypatch.setattr(op, "partials", (lambda out, x: 1 / np.cosh(x) ** 2,))
    binds = {"w": np.array([0.3, -0.2]), "x": np.array([1.0, 2.0])}
    step = training.compile_step(graph, binds, ["w"])
    assert step.fallbacks == 1
    for w in ([0.3, -0.2], [1.5, 0.7]):
        loss, (g,) = step([np.array(w)])
        ref = engine.differentiate(graph, {**binds, "w": w}, wrt=["w"])
        np.testing.assert_allclose(g, ref.gradients["w"], rtol=1e-13)
        np.testing.assert_allclose(g, np.array(binds["x"]) / np.cosh(np.array(w) * binds["x"])
                                   ** 2, rtol=1e-13)


def test_float32_runs_in_float32():
    r = gradcli.descend(SEED_LOSS, params="w,b", w=0, b=0, steps=1000, dtype="float32",
                        **SEED_DATA)
    assert r.params["w"].dtype == np.float32 and r.params["b"].dtype == np.float32
    w, b, _ = seed_loop(1000)
    assert abs(float(r.params["w"]) - w) < 1e-5 and abs(float(r.params["b"]) - b) < 1e-5


def test_warnings_name_unused_bindings_and_columns(tmp_path):
    r = cli(*SEED_ARGS, "z=3", "--steps", "2")
    assert r.code == 0
    assert r.err == "warning: binding z is not used: the program does not use it\n"
    f = tmp_path / "d.csv"
    f.write_text("x,y,extra\n1,2,0\n2,3,0\n")
    r = cli("descend", SEED_LOSS, "--params", "w,b", "w=0", "b=0", "--batch", f,
            "--batch-size", "1", "--steps", "2")
    assert r.code == 0, r.err
    assert "warning: --batch column extra is not used" in r.err


def test_unwritable_outputs_are_clear_errors(tmp_path):
    bad(cli(*SEED_ARGS, "--save", tmp_path / "no" / "fit.json"), "--save", "no folder")
    r = cli(*SEED_ARGS, "--steps", "2", "--log", tmp_path / "no" / "log.csv")
    assert r.code == 2 and r.err.startswith("error: --log ") and "cannot write" in r.err


# ---------------------------------------------------------------- random programs

from hypothesis import given, settings, strategies as st  # noqa: E402

UNARY = ["sin({})", "cos({})", "tanh({})", "sigmoid({})", "relu({})", "abs({})",
         "softplus({})", "square({})", "log(1 + {0}*{0})", "exp(tanh({}))", "({})**2",
         "({})**3", "-({})", "sqrt(1 + {0}*{0})", "leaky_relu({})", "elu({})"]
BINARY = ["({}) + ({})", "({}) - ({})", "({}) * ({})", "({}) / (1 + ({})**2)",
          "max({}, {})", "min({}, {})", "atan2({}, 1 + ({})**2)"]
LEAVES = ["w", "b", "x", "w * x", "A @ w", "w[0]", "w[1:] @ x[:2]", "2", "0.5"]
TOPS = ["sum({})", "mean({})", "norm({})", "logsumexp({})", "max({})", "prod({})",
        "var({})"]


@st.composite
def smooth_program(draw, depth=3):
    def expr(d):
        if d == 0 or draw(st.integers(0, 3)) == 0:
            return draw(st.sampled_from(LEAVES))
        if draw(st.booleans()):
            return draw(st.sampled_from(UNARY)).format(expr(d - 1))
        return draw(st.sampled_from(BINARY)).format(expr(d - 1), expr(d - 1))
    top = draw(st.sampled_from(TOPS)).format(f"({expr(depth)}) * [1, 1, 1]")
    return top + " + 0.1 * sum(w * w)"  # w is always a parameter


@settings(max_examples=40, deadline=None)
@given(smooth_program(), st.integers(0, 2 ** 32 - 1))
def test_random_programs_compile_to_the_engine(text, seed):
    rng = np.random.default_rng(seed)
    graph = parse(text)
    data = {"x": rng.uniform(-2, 2, 3), "A": rng.uniform(-1, 1, (3, 3))}
    params = {"w": rng.uniform(-2, 2, 3), "b": np.array(rng.uniform(-2, 2))}
    names = [n for n in ("w", "b") if n in graph.variables]
    binds = {**data, **params}
    used = {k: v for k, v in binds.items() if k in graph.variables or k in names}
    step = training.compile_step(graph, used, names)
    for trial in range(2):
        P = [params[n] + (0 if trial == 0 else rng.uniform(-1, 1, np.shape(params[n])))
             for n in names]
        loss, grads = step(P)
        with np.errstate(all="ignore"):
            ref = engine.differentiate(graph, {**used, **dict(zip(names, P))}, wrt=names)
        np.testing.assert_allclose(loss, ref.value, rtol=1e-12, atol=1e-12)
        for n, g in zip(names, grads):
            np.testing.assert_allclose(g, ref.gradients[n], rtol=1e-12, atol=1e-12)
