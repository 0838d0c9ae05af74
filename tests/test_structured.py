"""Grouped differences (gradcli/sparsity.py): the same numbers as one element at a time.

What is checked: for programs of every structure (matmul both ways, broadcasting, axis
reductions, softmax along an axis, indexing and transposes, custom elementwise and
non-elementwise gates, --jacobian) the grouped numeric derivative equals the one-at-a-time
one to rounding, with far fewer evaluations where the structure allows; the colouring never
puts two elements that reach one row in one group; a too-sparse pattern is caught and falls
back; a wrong element is found at its index whatever the grouping; the linear head.
"""
from __future__ import annotations

import numpy as np
import pytest

import gradcli
from gradcli import gradcheck, sparsity
from gradcli.engine import evaluate
from gradcli.parse import parse
from conftest import cli

R = np.random.default_rng(7)
W = R.normal(size=(12, 9))
X = R.normal(size=9)
B = R.normal(size=12)
M = R.normal(size=(6, 5))
C = R.normal(size=(6, 5))

ELEMENTWISE = '''
import numpy as np

class Swish:
    def forward(self, x):
        self.x, self.s = x, 1 / (1 + np.exp(-x))
        return x * self.s
    def backward(self, dz):
        s = self.s
        return [dz * (s + self.x * s * (1 - s))]

class RowSoftmax:
    """softmax along the last axis: mixes within a row only"""
    def forward(self, x):
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        self.y = e / e.sum(axis=-1, keepdims=True)
        return self.y
    def backward(self, dz):
        y = self.y
        return [y * (dz - (dz * y).sum(axis=-1, keepdims=True))]

class WrongAt3:
    """tanh with a backward wrong at flat element 3 only"""
    def forward(self, x):
        self.t = np.tanh(x)
        return self.t
    def backward(self, dz):
        g = np.array((1 - self.t ** 2) * dz)
        g.reshape(-1)[3] += 0.5
        return [g]
'''


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    p = tmp_path_factory.mktemp("ops") / "struct_ops.py"
    p.write_text(ELEMENTWISE)
    return gradcli.load_ops(str(p))


CASES = [
    ("sum(tanh(W @ x + b))", dict(W=W, x=X, b=B)),
    ("mean(exp(W @ x) * b)", dict(W=W, x=X, b=B)),
    ("sum(sigmoid(transpose(W) @ b))", dict(W=W, b=B)),
    ("sum(softmax(M, 1) * C)", dict(M=M, C=C)),
    ("sum(sum(M * M, 0) ** 2)", dict(M=M)),
    ("sum(M[1:, :] * C[:-1, :])", dict(M=M, C=C)),
    ("sum(tanh(M + b2))", dict(M=M, b2=R.normal(size=5))),
    ("tanh(W @ x)", dict(W=W, x=X)),                          # non-scalar: the sum's gradient
    ("sum(Swish(W @ x) * b)", dict(W=W, x=X, b=B)),
    ("sum(RowSoftmax(M) * C)", dict(M=M, C=C)),
]


@pytest.mark.parametrize("program,bindings", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("jacobian", [False, True])
def test_grouped_equals_one_at_a_time(lib, program, bindings, jacobian):
    g = parse(program, lib)
    grouped = gradcheck.check(g, bindings, jacobian=jacobian)
    single = gradcheck.check(g, bindings, jacobian=jacobian, grouped=False)
    assert grouped.ok and single.ok
    for a, b in zip(grouped.inputs, single.inputs):
        scale = 1e-9 * max(1.0, float(np.max(np.abs(b.numeric))))
        np.testing.assert_allclose(a.numeric, b.numeric, rtol=1e-6, atol=scale)
    assert single.grouped_evals == 0


def test_grouping_saves_evaluations_where_the_structure_allows():
    n = 40
    W_ = R.normal(size=(n, n))
    r = gradcli.check("sum(tanh(W @ x + b))", W=W_, x=R.normal(size=n), b=R.normal(size=n))
    assert r.ok
    # W: one colour per column (n of them, two evaluations each); b: one colour; x is dense
    assert r.grouped_evals == 2 * n + 2


def test_custom_ops_are_probed_with_their_forward(lib):
    g = parse("sum(RowSoftmax(M) * C)", lib)
    ref = evaluate(g, {"M": M, "C": C})
    src = g.variables["M"]
    target = g.nodes[ref.output].inputs[0]
    pat = sparsity.pattern(ref, src, target, np.random.default_rng(0))
    # row i of the product depends on row i of M only: 5 columns per row of 5
    rows_of = np.repeat(np.arange(pat.n), np.diff(pat.ptr))
    assert pat.n == M.size and pat.cols.size == M.size * 5
    assert np.all(rows_of // 5 == pat.cols // 5)


def test_the_colouring_never_groups_elements_that_share_a_row():
    rng = np.random.default_rng(2)
    for _ in range(20):
        n_rows, n_cols = 30, 200
        rows = rng.integers(0, n_rows, size=400)
        cols = rng.integers(0, n_cols, size=400)
        pat = sparsity._Pat.from_pairs(rows, cols, n_rows)
        got = sparsity.colour(pat, n_cols)
        if got is None:
            continue
        colours, k = got
        r_of = np.repeat(np.arange(pat.n), np.diff(pat.ptr))
        for r in range(n_rows):
            cs = colours[pat.cols[r_of == r]]
            assert len(cs) == len(set(cs.tolist())), (r, cs)


def test_a_too_sparse_pattern_is_caught_and_falls_back(monkeypatch):
    # pretend every op is elementwise-shaped one to one: W @ x would then look diagonal-ish;
    # the per-evaluation check sees rows outside the group move and gives up grouping
    g = parse("sum(tanh(W @ x))")
    ref = evaluate(g, {"W": W, "x": X})
    src = g.variables["x"]
    target = g.nodes[ref.output].inputs[0]

    def fake_pattern(ref, source, target, rng):
        n = int(np.size(ref.values[target]))
        m = int(np.size(ref.values[source]))
        rows = np.arange(m) % n
        return sparsity._Pat.from_pairs(rows, np.arange(m), n)
    monkeypatch.setattr(sparsity, "pattern", fake_pattern)
    monkeypatch.setattr(sparsity, "_MIN_SAVING", 0)
    got = sparsity.grouped_numeric(ref, src, np.array(X), "central", 6e-6, False)
    assert got is None
    # and the whole check is still right (one element at a time)
    r = gradcheck.check(g, {"W": W, "x": X})
    assert r.ok


def test_a_wrong_element_is_found_at_its_index_whatever_the_grouping(lib):
    g = parse("sum(WrongAt3(W @ x + b))", lib)
    r = gradcheck.check(g, {"W": W, "x": X, "b": B})
    assert not r.ok and r.grouped_evals > 0
    failed = {ic.name: set(map(int, np.flatnonzero(ic.status.ravel() == "fail")))
              for ic in r.inputs}
    assert failed["W"] == set(range(3 * 9, 4 * 9))   # row 3 of W
    assert failed["b"] == {3}
    assert failed["x"] == set(range(9))              # every x feeds row 3
    assert [b["op"] for b in r.blame] == ["WrongAt3"]


def test_jacobian_is_grouped_too():
    r = gradcli.check("tanh(W @ x)", W=W, x=X, jacobian=True)
    assert r.ok and r.grouped_evals > 0
    assert r.inputs[0].numeric.shape == (12, 12, 9)


def test_the_linear_head_matches_the_product():
    g = parse("sum(tanh(W @ x + b))")
    ref = evaluate(g, {"W": W, "x": X, "b": B})
    for name in ("W", "x"):
        src = g.variables[name]
        head = sparsity.linear_head(ref, src, ref.output)
        assert head is not None
        v = np.array(ref.values[src], dtype=float)
        pos = np.array([0, 5])
        dx = np.array([1e-3, -2e-3])
        moved = v.copy()
        moved.reshape(-1)[pos] += dx
        want = moved @ X if name == "W" else W @ moved
        np.testing.assert_allclose(head(pos, dx), want, rtol=1e-12, atol=1e-12)


def test_one_at_a_time_flag_in_the_cli():
    args = ["sum(tanh(W @ x))", "W=[[1,2],[3,4],[5,6]]", "x=[0.1,-0.2]"]
    a, b = cli("check", "--format", "json", *args), cli("check", "--format", "json",
                                                        "--one-at-a-time", *args)
    assert a.code == b.code == 0
