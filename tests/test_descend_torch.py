"""descend's optimizers and schedules against torch.optim itself, step for step.

PyTorch runs in its own interpreter: ``GRADCLI_TORCH_PYTHON`` (a python with torch), else
this python if it has torch, else /work/torchvenv/bin/python.  That interpreter needs only
torch and NumPy; it runs the script below on the same problem and prints every
parameter after every step as JSON.  Marked ``torch``: .ci/run's ``python -m pytest -m
torch`` runs it, in the venv where it installed torch.
"""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import gradcli

pytestmark = pytest.mark.torch

TORCH_SCRIPT = r"""
import json, sys
import torch
torch.set_default_dtype(torch.float64)
spec = json.load(sys.stdin)
A = torch.tensor(spec["A"]); c = torch.tensor(spec["c"])
out = []
for case in spec["cases"]:
    p = torch.tensor(spec["p0"], requires_grad=True)
    kind, kw = case["torch"], case["kw"]
    opt = getattr(torch.optim, kind)([p], **kw)
    sched = None
    if case.get("cosine"):
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, **case["cosine"])
    if case.get("step"):
        sched = torch.optim.lr_scheduler.StepLR(opt, **case["step"])
    traj = []
    for _ in range(spec["steps"]):
        opt.zero_grad()
        loss = ((A @ p - c) ** 2).sum()
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        traj.append(p.detach().tolist())
    out.append(traj)
print(json.dumps(out))
"""

A = [[1.0, 2.0], [0.5, -1.0], [2.0, 0.3]]
C = [1.0, -2.0, 0.5]
P0 = [0.5, -0.5]
STEPS = 40

# (gradcli keywords, torch.optim class, its keywords, schedule)
CASES = [
    (dict(optimizer="sgd", lr=0.02), "SGD", dict(lr=0.02), None),
    (dict(optimizer="sgd", lr=0.02, weight_decay=0.1), "SGD",
     dict(lr=0.02, weight_decay=0.1), None),
    (dict(optimizer="momentum", lr=0.02), "SGD", dict(lr=0.02, momentum=0.9), None),
    (dict(optimizer="momentum", lr=0.02, momentum=0.8, dampening=0.3, weight_decay=0.05),
     "SGD", dict(lr=0.02, momentum=0.8, dampening=0.3, weight_decay=0.05), None),
    (dict(optimizer="momentum", lr=0.02, nesterov=True), "SGD",
     dict(lr=0.02, momentum=0.9, nesterov=True), None),
    (dict(optimizer="adam", lr=0.05), "Adam", dict(lr=0.05), None),
    (dict(optimizer="adam", lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
     "Adam", dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1), None),
    (dict(optimizer="adam", lr=0.05, amsgrad=True), "Adam", dict(lr=0.05, amsgrad=True),
     None),
    (dict(optimizer="adamw", lr=0.05), "AdamW", dict(lr=0.05), None),
    (dict(optimizer="adamw", lr=0.05, weight_decay=0.3), "AdamW",
     dict(lr=0.05, weight_decay=0.3), None),
    (dict(optimizer="sgd", lr=0.03, schedule="cosine", t_max=25, eta_min=0.001), "SGD",
     dict(lr=0.03), ("cosine", dict(T_max=25, eta_min=0.001))),
    (dict(optimizer="adam", lr=0.05, schedule="step", step_size=7, gamma=0.5), "Adam",
     dict(lr=0.05), ("step", dict(step_size=7, gamma=0.5))),
]


def torch_python():
    env = os.environ.get("GRADCLI_TORCH_PYTHON")
    if env:
        return env
    if importlib.util.find_spec("torch") is not None:
        return sys.executable
    return "/work/torchvenv/bin/python"


@pytest.fixture(scope="module")
def torch_trajectories():
    spec = {"A": A, "c": C, "p0": P0, "steps": STEPS, "cases": [
        {"torch": t, "kw": kw, **({s[0]: s[1]} if s else {})} for _, t, kw, s in CASES]}
    py = torch_python()
    assert os.path.exists(py), (f"no python with torch at {py}: set GRADCLI_TORCH_PYTHON "
                                f"to one (pip install torch)")
    p = subprocess.run([py, "-c", TORCH_SCRIPT], input=json.dumps(spec), text=True,
                       capture_output=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


@pytest.mark.parametrize("k", range(len(CASES)),
                         ids=[f"{c[1]}-{i}" for i, c in enumerate(CASES)])
def test_against_torch_optim(torch_trajectories, k):
    ours_kw = CASES[k][0]
    traj = torch_trajectories[k]
    r = None
    for step in (1, 2, 10, STEPS):  # the start of the run and its end
        r = gradcli.descend("sum((A @ p - c)**2)", params="p", p=P0, A=A, c=C, steps=step,
                            **ours_kw)
        np.testing.assert_allclose(r.params["p"], traj[step - 1], rtol=1e-12, atol=1e-14)
    assert len(r.loss) == STEPS + 1
