"""The reverse pass over large arrays: the shortcuts that keep it within hand-written NumPy
(forward values reused by the gradient rules, an all-ones upstream passed on, one-pass sums
of products for broadcast inputs) give the traced pass's gradients, write into nothing they
do not own, and are taken where they should be."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gradcli
from gradcli import engine
from gradcli import ops as oplib

LAYER_NORM = ("sum((x - mean(x, -1, keepdims=true)) / sqrt(var(x, -1, keepdims=true, "
              "correction=0) + 1e-5) * t)")

PROGRAMS = [
    (LAYER_NORM, {"x": (5, 6), "t": (5, 6)}),
    ("sum((x - mean(x, 0, keepdims=true)) / std(x, 0, keepdims=true) * t)",
     {"x": (5, 6), "t": (5, 6)}),
    ("sum(softmax(Q @ transpose(K, (0, 2, 1)) / 8) @ V * T)",
     {"Q": (2, 4, 3), "K": (2, 4, 3), "V": (2, 4, 3), "T": (2, 4, 3)}),
    ("sum(x * g + b)", {"x": (4, 3), "g": (3,), "b": (4, 1)}),
    ("sum(g * x) + sum(x / s) + sum(s / x)", {"x": (4, 3), "g": (1, 3), "s": (4, 1)}),
    ("a = x * t; sum(a) + sum(a * t)", {"x": (3, 4), "t": (3, 4)}),
    ("sum(x * t) + sum(t * x)", {"x": (3, 4), "t": (3, 4)}),
    ("x * t", {"x": (3, 4), "t": (3, 4)}),
    ("sum(log_softmax(x, 0) * t) + sum(var(x, 1))", {"x": (4, 5), "t": (4, 5)}),
    ("sum(exp(x) * exp(x)) + sum((x - mean(x, 1, keepdims=true)) * 2)", {"x": (3, 4)}),
]


@pytest.mark.parametrize("large", [1, None], ids=["every-array-large", "default"])
@pytest.mark.parametrize("seeded", [False, True], ids=["ones", "upstream"])
@pytest.mark.parametrize("program, shapes", PROGRAMS)
def test_the_reverse_pass_agrees_with_the_traced_pass(program, shapes, seeded, large,
                                                      monkeypatch):
    """With every array counted as large (so every shortcut runs on small test arrays) and
    without: the traced pass's gradients, every node's value and every binding unchanged,
    every result a writeable array of its own sharing memory with no value."""
    if large is not None:
        monkeypatch.setattr(engine, "_LARGE", large)
    rng = np.random.default_rng(11)
    b = {k: rng.uniform(0.5, 1.5, s) for k, s in shapes.items()}
    kept = {k: v.copy() for k, v in b.items()}
    graph = gradcli.compile(program)
    up = rng.normal(size=np.shape(engine.evaluate(graph, b).value)) if seeded else None
    fast = engine.differentiate(graph, b, upstream=up)
    slow = engine.differentiate(graph, b, upstream=up, trace=True)
    again = engine.evaluate(graph, b)
    assert oplib.tracer is None  # the pass puts back what it found
    for name in b:
        np.testing.assert_allclose(fast.gradients[name], slow.gradients[name], rtol=1e-12,
                                   atol=1e-12, err_msg=name)
        np.testing.assert_array_equal(b[name], kept[name])
    for i in fast.order:
        np.testing.assert_array_equal(fast.values[i], again.values[i])
        if slow.grads[i] is not None:
            np.testing.assert_allclose(fast.grads[i], slow.grads[i], rtol=1e-12, atol=1e-12)
    arrays = list(fast.gradients.values())
    others = list(b.values()) + [v for v in fast.values if v is not None]
    for k, g in enumerate(arrays):
        assert g.flags.writeable
        assert not any(np.shares_memory(g, o) for o in others + arrays[:k])
    assert gradcli.check(program, **b).ok


def _calls(monkeypatch, op):
    """Count the calls of op's forward (the rules' calls go through it)."""
    seen = []
    forward = op.forward

    def counted(*args):
        seen.append(np.shape(args[0]))
        return forward(*args)

    monkeypatch.setattr(op, "forward", counted)
    return seen


def test_var_rule_takes_x_minus_mean_from_the_forward_pass(monkeypatch):
    """Layer norm's program holds x - mean(x): var's rule asks for the same and gets it from
    the forward pass, no new pass over x (and without that node it computes it itself)."""
    x = np.random.default_rng(0).normal(size=(64, 600))  # 38,400 elements: a large array
    t = np.ones_like(x)
    ev = engine.evaluate(gradcli.compile(LAYER_NORM), {"x": x, "t": t})
    subs, means = _calls(monkeypatch, oplib.sub), _calls(monkeypatch, oplib.mean)
    grads = engine.reverse(ev, None, None)
    assert subs == [] and means == []
    alone = engine.evaluate(gradcli.compile("sum(var(x, -1, keepdims=true) * s)"),
                            {"x": x, "s": np.ones((64, 1))})
    engine.reverse(alone, None, None)
    assert subs == [(64, 600)] and means == [(64, 600)]
    # and the reused value gave the right gradient
    want = engine.differentiate(gradcli.compile(LAYER_NORM), {"x": x, "t": t}, trace=True)
    np.testing.assert_allclose(grads["x"], want.gradients["x"], rtol=1e-12, atol=1e-12)


def test_a_reused_value_is_read_only_and_keyed_by_identity(monkeypatch):
    """What the forward pass lends is a read-only view; an equal array that is not the
    forward value (a copy of x) is computed afresh."""
    x = np.random.default_rng(1).normal(size=(300, 200))
    graph = gradcli.compile("sum(x - mean(x, -1, keepdims=true))")
    ev = engine.evaluate(graph, {"x": x})
    reuse = engine._Reuse.of(graph, ev.order, ev.values)
    m = reuse(oplib.mean, (ev.values[0], -1, True))
    assert not m.flags.writeable and np.shares_memory(m, ev.values[1])
    d = reuse(oplib.sub, (ev.values[0], m))
    assert not d.flags.writeable and np.shares_memory(d, ev.values[2])
    fresh = reuse(oplib.sub, (x.copy(), m))
    assert fresh.flags.writeable and not np.shares_memory(fresh, ev.values[2])
    assert reuse(oplib.mean, (ev.values[0], 0, True)).shape == (1, 200)  # other params
    small = gradcli.compile("sum(x - mean(x))")
    ev = engine.evaluate(small, {"x": np.ones(5)})
    assert engine._Reuse.of(small, ev.order, ev.values) is None  # nothing large: no tracer


def test_a_value_passed_on_as_a_gradient_is_copied_once():
    """sum(a * t) sends t's gradient a (the seed is all ones): the result is a copy of it,
    safe to change, and the node's value stays as it was."""
    rng = np.random.default_rng(2)
    x, t = rng.normal(size=(256, 256)), rng.normal(size=(256, 256))
    r = gradcli.grad("a = sin(x); sum(a * t)", x=x, t=t)
    np.testing.assert_allclose(r.gradients["t"], np.sin(x), rtol=1e-15)
    np.testing.assert_allclose(r.gradients["x"], np.cos(x) * t, rtol=1e-14)
    assert not any(np.shares_memory(r.gradients["t"], v) for v in r.values if v is not None)
    r.gradients["t"][:] = 0
    np.testing.assert_allclose(r.value, np.sum(np.sin(x) * t), rtol=1e-12)


def test_all_ones_is_told_from_other_constants():
    assert engine._all_ones(np.broadcast_to(np.ones(()), (3, 4)))
    assert not engine._all_ones(np.broadcast_to(np.full((), 2.0), (3, 4)))
    assert not engine._all_ones(np.ones((3, 4)))  # a real array: not known without a pass
    assert not engine._all_ones(np.broadcast_to(np.ones(()), (0, 4)))
    assert not engine._all_ones(1.0)


_dims = st.integers(1, 4)


@st.composite
def _broadcast_case(draw):
    full = tuple(draw(st.lists(_dims, min_size=0, max_size=4)))

    def part():
        n = draw(st.integers(0, len(full)))
        tail = full[len(full) - n:]
        return tuple(1 if draw(st.booleans()) else d for d in tail)

    a, b = part(), part()
    real = np.broadcast_shapes(a, b)
    n = draw(st.integers(0, len(real)))
    shape = tuple(1 if draw(st.booleans()) else d for d in real[len(real) - n:])
    return a, b, shape


@settings(max_examples=150, deadline=None)
@given(_broadcast_case(), st.integers(0, 2**32 - 1))
def test_sum_to_product_is_sum_to_of_the_product(case, seed):
    """The one-pass rule equals sum_to(a * b, shape) for every broadcast of a and b and every
    shape they sum down to, with its own shape exactly."""
    a_shape, b_shape, shape = case
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=a_shape), rng.normal(size=b_shape)
    want = oplib.sum_to(a * b, shape)
    got = oplib._sum_to_product(a, b, shape)
    assert np.shape(got) == shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_sum_to_product_of_complex_and_float32():
    a = np.arange(6.0).reshape(2, 3) + 1j
    b = np.ones((1, 3))
    np.testing.assert_allclose(oplib._sum_to_product(a, b, (2, 1)), np.sum(a, 1, keepdims=True))
    f = np.ones((4, 3), dtype=np.float32)
    assert oplib._sum_to_product(f, f, (3,)).dtype == np.float32


def test_a_spent_reuse_and_another_threads_calls_go_straight_to_the_op():
    """ops.tracer is one for the process: after its pass, or from another thread, the
    reuse tracer computes afresh (an id of a freed forward value may be taken again)."""
    import threading

    x = np.random.default_rng(3).normal(size=(300, 200))
    graph = gradcli.compile("sum(x - mean(x, -1, keepdims=true))")
    ev = engine.evaluate(graph, {"x": x})
    reuse = engine._Reuse.of(graph, ev.order, ev.values)
    got = []
    t = threading.Thread(target=lambda: got.append(reuse(oplib.mean, (ev.values[0], -1, True))))
    t.start()
    t.join()
    assert got[0].flags.writeable and not np.shares_memory(got[0], ev.values[1])
    reuse.known = None  # what the pass does when it ends
    m = reuse(oplib.mean, (ev.values[0], -1, True))
    assert m.flags.writeable and not np.shares_memory(m, ev.values[1])


def test_threads_differentiating_at_once_get_their_own_gradients():
    import threading

    rng = np.random.default_rng(4)
    graph = gradcli.compile(LAYER_NORM)
    cases = [{"x": rng.normal(size=(64, 600)), "t": rng.normal(size=(64, 600))}
             for _ in range(4)]
    want = [engine.differentiate(graph, b, trace=True).gradients for b in cases]
    errors = []

    def work(k):
        for _ in range(5):
            got = engine.differentiate(graph, cases[k]).gradients
            for name in ("x", "t"):
                if not np.allclose(got[name], want[k][name], rtol=1e-12, atol=1e-12):
                    errors.append((k, name))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert oplib.tracer is None


def test_a_custom_op_backward_calling_library_ops_sees_no_reuse(tmp_path):
    """A custom op's backward that calls gradcli's own ops on what it kept gets new,
    writeable arrays (it was given copies of its inputs), and may change them in place."""
    f = tmp_path / "myops.py"
    f.write_text(
        "import numpy as np\n"
        "from gradcli import ops\n"
        "class Shift:\n"
        "    name = 'shift'\n"
        "    def forward(self, x):\n"
        "        self.x = x\n"
        "        return x - ops.mean(x, -1, True)\n"
        "    def backward(self, dz):\n"
        "        m = ops.mean(self.x, -1, True)\n"
        "        d = ops.sub(self.x, m)\n"
        "        d *= 0\n"
        "        return [dz - ops.mean(dz, -1, True) + d]\n", encoding="utf-8")
    x = np.random.default_rng(5).normal(size=(64, 600))
    t = np.random.default_rng(6).normal(size=(64, 600))
    program = "sum((x - mean(x, -1, keepdims=true)) * t) + sum(shift(x) * t)"
    r = gradcli.grad(program, x=x, t=t, ops=[str(f)])
    want = 2 * (t - t.mean(-1, keepdims=True))
    np.testing.assert_allclose(r.gradients["x"], want, rtol=1e-12, atol=1e-12)
