"""Custom ops written as ``torch.autograd.Function`` subclasses (needs PyTorch).

Marked ``torch``: the plain run leaves them out and .ci/run runs them with
``python -m pytest -m torch`` after installing torch==2.13.0 (CPU) in the same venv.  The
tests that need torch *absent* are in tests/test_plugins.py (they run a subprocess with
torch hidden, so they run everywhere).

What is checked: a Function's forward and backward run on float64 tensors through PyTorch's
own machinery; gradients equal torch.autograd's; the whole check, blame inside an expression,
the per-node check with a random upstream (LeakyTanh ignores grad_output) and the self-check
all treat a Function as they treat a gate; broadcasting via sum_to_size; setup_context.
"""
from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")  # collected only with -m torch, where CI installs it

import gradcli  # noqa: E402
from conftest import ROOT, cli  # noqa: E402

pytestmark = pytest.mark.torch

TORCH_OPS = str(ROOT / "examples" / "torch_ops.py")


def _write(tmp_path, src, name="fn_ops.py"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(src))
    return str(p)


def test_gradients_equal_torch_autograd():
    lib = gradcli.load_ops(TORCH_OPS)
    rng = np.random.default_rng(0)
    W, x = rng.normal(size=(3, 4)), rng.normal(size=4)
    r = gradcli.grad("sum(Swish(W @ x) * c)", W=W, x=x, c=[1.0, -2.0, 0.5], ops=lib)
    Wt = torch.tensor(W, requires_grad=True)
    xt = torch.tensor(x, requires_grad=True)
    z = Wt @ xt
    y = (z * torch.sigmoid(z) * torch.tensor([1.0, -2.0, 0.5])).sum()
    y.backward()
    np.testing.assert_allclose(r.gradients["W"], Wt.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(r.gradients["x"], xt.grad.numpy(), rtol=1e-12)
    assert float(r.value) == pytest.approx(y.item(), rel=1e-12)


def test_the_check_passes_correct_functions_and_runs_float64():
    seen = []
    lib = gradcli.load_ops(TORCH_OPS)
    fn = lib.custom["Swish"].gate.torch_function
    orig = fn.forward

    def spy(ctx, x):
        seen.append(x.dtype)
        return orig(ctx, x)
    fn.forward = staticmethod(spy)
    try:
        r = gradcli.check("sum(Swish(x) * ScaledProduct(x, y))", x=[0.3, -1.2, 2.0],
                          y=[[1.0, 2.0, 3.0], [0.5, -0.5, 1.5]], ops=lib)
    finally:
        fn.forward = staticmethod(orig)
    assert r.ok, [ic.status for ic in r.inputs]
    assert seen and set(seen) == {torch.float64}
    assert [rec["status"] for rec in r.local] == ["ok", "ok"]


def test_a_backward_ignoring_grad_output_is_caught_in_an_expression():
    r = cli("check", "--format", "json", "--ops", TORCH_OPS, "sum(LeakyTanh(W @ x))",
            "W=[[1,2],[3,4]]", "x=[0.5,-1]")
    assert r.code == 1, r.err
    d = json.loads(r.out)
    # every element agrees (the Function received ones), its own check does not
    assert all(res["status"] == "ok" for res in d["results"])
    rec, = [x for x in d["local"] if x["op"] == "LeakyTanh"]
    assert rec["status"] == "fail" and rec["upstream_was_ones"] is True
    t = cli("check", "--ops", TORCH_OPS, "sum(LeakyTanh(W @ x))", "W=[[1,2],[3,4]]",
            "x=[0.5,-1]")
    assert "agreed only because the gate received ones" in t.out


def test_blame_names_the_wrong_function():
    r = cli("check", "--format", "json", "--ops", TORCH_OPS, "sum(LeakyTanh(W @ x) * c)",
            "W=[[1,2],[3,4]]", "x=[0.5,-1]", "c=[2,-3]")
    assert r.code == 1
    d = json.loads(r.out)
    assert [b["op"] for b in d["blame"]] == ["LeakyTanh"]
    assert any(res["status"] == "fail" for res in d["results"])


def test_self_check_of_a_torch_ops_file():
    r = cli("check", "--format", "json", "--ops", TORCH_OPS)
    assert r.code == 1, r.err
    d = json.loads(r.out)
    status = {o["name"]: o["status"] for o in d["ops"]}
    assert status == {"Swish": "ok", "ScaledProduct": "ok", "LeakyTanh": "fail"}


def test_broadcasting_inputs_are_tried_and_torch_sums_to_each_inputs_shape(tmp_path):
    # PyTorch's engine sums a Function's gradient over broadcast axes itself (sum_to), so a
    # backward returning the output's shape is right under PyTorch, and passes here too
    f = _write(tmp_path, """
        import torch
        class Prod(torch.autograd.Function):
            @staticmethod
            def forward(ctx, a, b):
                ctx.save_for_backward(a, b)
                return a * b
            @staticmethod
            def backward(ctx, grad):
                a, b = ctx.saved_tensors
                return b * grad, a * grad
        """)
    r = cli("check", "--format", "json", "--ops", f)
    assert r.code == 0, r.out + r.err
    shapes = {tuple(res["index"]) for res in json.loads(r.out)["results"]}
    assert (1, 2) in shapes  # a (2, 3) input was among those tried


def test_setup_context_style_and_attributes(tmp_path):
    f = _write(tmp_path, """
        import torch
        class Cube(torch.autograd.Function):
            name = "cube"
            domain = ["positive"]
            @staticmethod
            def forward(x):
                return x ** 3
            @staticmethod
            def setup_context(ctx, inputs, output):
                (x,) = inputs
                ctx.save_for_backward(x)
            @staticmethod
            def backward(ctx, grad):
                (x,) = ctx.saved_tensors
                return 3 * x ** 2 * grad
        """)
    r = gradcli.check("sum(cube(x))", x=[0.5, 2.0], ops=gradcli.load_ops(f))
    assert r.ok
    np.testing.assert_allclose(r.inputs[0].analytic, 3 * np.array([0.5, 2.0]) ** 2)
    assert cli("check", "--ops", f).code == 0


def test_a_function_returning_two_outputs_is_a_clear_error(tmp_path):
    f = _write(tmp_path, """
        import torch
        class Two(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return x, x * 2
            @staticmethod
            def backward(ctx, g1, g2):
                return g1 + 2 * g2
        """)
    r = cli("check", "--ops", f, "sum(Two(x))", "x=[1,2]")
    assert r.code == 2 and "2 outputs" in r.err and "Traceback" not in r.err
