"""Custom ops (user gates) in a batch: still once per point, with the engine's guarantees.

A gate keeps state between forward and backward and may do anything, so the kernel runs it
point by point (a fresh instance and private read-only copies of its inputs at each point,
as the engine does); only the loop around it is cheaper.  Checked here: the results equal
gradcli.grad's at every point (arrays, fixed inputs, lists and Python numbers as results),
what a gate prints goes to stderr, its failures and bad results get the engine's messages,
and a gate that writes into its input changes nothing outside its own copy.
"""
from __future__ import annotations

import numpy as np
import pytest

import gradcli
from gradcli import batching
from gradcli.errors import EvalError

GATES = '''
import numpy as np

class Scale:
    """x * w (w a fixed vector), and it prints"""
    def forward(self, x, w):
        print("forward", float(np.sum(x)))
        self.x, self.w = x, w
        return x * w
    def backward(self, g):
        print("backward")
        return [g * self.w, g * self.x]

class Listy:
    """sum(x) ** 2 as a Python float; the gradient as a list"""
    def forward(self, x):
        self.x = x
        return float(np.sum(x)) ** 2
    def backward(self, g):
        return [list(2 * np.sum(self.x) * g * np.ones(np.shape(self.x)))]

class Scribbler:
    """writes into its input, then returns 2 * x"""
    def forward(self, x):
        x.flags.writeable = True
        x *= 2
        self.n = x.shape
        return x
    def backward(self, g):
        return [2 * g]

class FailsAtNegative:
    def forward(self, x):
        if np.any(x < 0):
            raise RuntimeError("negative input")
        return x * 1
    def backward(self, g):
        return [g]

class WrongShape:
    def forward(self, x):
        return x * 1
    def backward(self, g):
        return [np.ones(3)]

class NoGradient:
    def forward(self, x, y):
        return x + y
    def backward(self, g):
        return [g, None]
'''


@pytest.fixture(scope="module")
def ops(tmp_path_factory):
    path = tmp_path_factory.mktemp("gates") / "gates.py"
    path.write_text(GATES)
    return gradcli.load_ops(str(path))


def per_point(program, ops, pts, fixed):
    n = len(next(iter(pts.values())))
    rows = []
    for b in range(n):
        binds = dict(fixed)
        binds.update({k: v[b] for k, v in pts.items()})
        rows.append(gradcli.grad(program, binds, wrt=list(pts), ops=ops))
    return rows


@pytest.mark.parametrize("program, pts, fixed", [
    ("sum(Scale(v, w) * v)", {"v": np.arange(12.0).reshape(4, 3) - 5}, {"w": [1.0, -2, 3]}),
    ("Listy(v) + sum(v)", {"v": np.linspace(-1, 1, 8).reshape(4, 2)}, {}),
    ("sum(Scribbler(v)) + sum(v)", {"v": np.arange(6.0).reshape(3, 2)}, {}),
    ("sum(NoGradient(v, u) * v)", {"v": np.ones((3, 2)), "u": np.arange(6.0).reshape(3, 2)},
     {}),
])
def test_gates_in_a_batch_equal_the_engine(ops, program, pts, fixed, capsys):
    res = gradcli.batch(program, pts, fixed=fixed, ops=ops)
    rows = per_point(program, ops, pts, fixed)
    np.testing.assert_allclose(res.value, [r.value for r in rows], rtol=1e-13)
    for k in pts:
        np.testing.assert_allclose(res.gradients[k], [r.gradients[k] for r in rows],
                                   rtol=1e-13)
        assert res.gradients[k].shape == pts[k].shape
    assert capsys.readouterr().out == ""


def test_gate_prints_go_to_stderr(ops, capsys):
    gradcli.batch("sum(Scale(v, w))", {"v": np.ones((3, 2))}, fixed={"w": [1.0, 2.0]},
                  ops=ops)
    out = capsys.readouterr()
    assert out.out == ""
    # a forward per point, and one more while the kernel learns the shapes (once per run)
    assert out.err.count("forward 2.0") == 3 + 1 and out.err.count("backward") == 3


def test_a_scribbling_gate_changes_only_its_copy(ops):
    v = np.arange(6.0).reshape(3, 2)
    keep = v.copy()
    res = gradcli.batch("sum(Scribbler(v)) + sum(v)", {"v": v}, ops=ops)
    np.testing.assert_array_equal(v, keep)
    np.testing.assert_allclose(res.value, 3 * keep.sum(axis=1))


def test_gate_failures_get_the_engines_messages(ops):
    pts = {"x": np.array([1.0, 2.0, -1.0])}
    with pytest.raises(EvalError) as batched:
        gradcli.batch("FailsAtNegative(x)", pts, ops=ops)
    with pytest.raises(EvalError) as single:
        gradcli.grad("FailsAtNegative(x)", x=-1.0, ops=ops)
    assert str(batched.value) == str(single.value)
    assert "negative input" in str(batched.value)
    with pytest.raises(EvalError) as batched:
        gradcli.batch("sum(WrongShape(v))", {"v": np.ones((2, 2))}, ops=ops)
    with pytest.raises(EvalError) as single:
        gradcli.grad("sum(WrongShape(v))", v=np.ones(2), ops=ops)
    assert str(batched.value) == str(single.value)
    assert "has shape (3,) but the input has shape (2,)" in str(batched.value)


def test_gates_are_the_only_loop(ops):
    graph = gradcli.compile("sum(Scale(v, w) @ M) + sum(solve(A, v))", ops)
    rng = np.random.default_rng(0)
    kernel = batching.Kernel(graph, ["v"], {"w": [1.0, 2, 3], "M": rng.random((3, 2)),
                                            "A": np.eye(3) * 4 + rng.random((3, 3))})
    kernel({"v": rng.random((5, 3))})
    assert kernel.fallbacks == {"Scale"}


def test_batch_result_names_the_looped_ops(ops):
    res = gradcli.batch("sum(Scale(v, w)) + sum(solve(A, v))", {"v": np.ones((2, 2))},
                        fixed={"w": [1.0, 2.0], "A": [[2.0, 0], [0, 4]]}, ops=ops)
    assert res.looped == ["Scale"]
    np.testing.assert_allclose(res.value, [3 + 0.75, 3 + 0.75])
    assert gradcli.batch("sum(solve(A, v))", {"v": np.ones((2, 2))},
                         fixed={"A": [[2.0, 0], [0, 4]]}).looped == []
