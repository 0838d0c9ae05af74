"""Grouped differences: many input elements perturbed in one evaluation (Curtis-Powell-Reid).

Checking every element of W in ``sum(tanh(W @ x + b))`` the textbook way takes two
evaluations per element.  But W[i, j] moves only row i of ``tanh(W @ x + b)`` until the
final sum, so every W[:, j] can be perturbed at once and each row still tells one element's
difference: a thousand evaluations for a million elements.

How: below a final linear reduction (``sum`` or ``mean`` of everything, or a non-scalar
output, whose gradient is that of its sum; with ``--jacobian`` the output itself), find the
*sparsity pattern* of the Jacobian of that node P w.r.t. the input: which elements of P each
input element can reach.  It follows from each op's structure: elementwise ops (with
broadcasting), ``matmul``, and -- for every other op, the custom ones included -- probes of
the op's own forward: does it only move elements around (a gather), act elementwise (a nan
put into some inputs comes out at exactly those places), or mix along some axes (a nan
spreads along them)?  An op none of these fits makes everything it outputs depend on
everything it got (dense).  Then colour the input elements so that no two of one colour reach
a common element of P (greedy CPR colouring), and perturb a whole colour per evaluation.

Why a grouped check cannot hide a wrong element: an element c of colour G reaches the rows
R_c of P, and no other element of G reaches any of them; each row of R_c is computed from c
and from unperturbed values only, so its change is exactly the change one-at-a-time
differencing of c gives (the same arithmetic on the same numbers), and the numeric
derivative of c, summed over R_c with the reduction's weights, is that of the textbook check.
If a probe got an op's pattern wrong (too sparse), rows outside the group's rows would move:
every evaluation checks that they did not, and falls back to one element at a time if any
did.  And any element a grouped check fails is taken again on its own (the step ladder of
gradcli/fdiff.py), so a verdict of ``fail`` never rests on grouping.

A field ``op.pattern`` (for each input, the local pairs (output position, input position))
in gradcli/ops.py could replace the probes for built-ins; the probes stay for custom ops.
"""
from __future__ import annotations

import numpy as np

from .fdiff import EPS64, steps
from .plan import Plan

__all__ = ["grouped_numeric", "grouped", "pattern", "colour"]

_MAX_NNZ = 40_000_000    # pattern entries kept at most (else: one element at a time)
_MIN_SAVING = 4          # group only when it saves at least this factor in evaluations


# ---------------------------------------------------------------- the pattern

class _Pat:
    """The pattern of one node: for each of its flat positions, the source elements that
    reach it, as CSR (``ptr`` of size n + 1, ``cols``)."""

    __slots__ = ("ptr", "cols", "n")

    def __init__(self, ptr, cols):
        self.ptr, self.cols = ptr, cols
        self.n = len(ptr) - 1

    @classmethod
    def from_pairs(cls, rows, cols, n):
        rows = np.asarray(rows, dtype=np.int64)
        cols = np.asarray(cols, dtype=np.int64)
        if rows.size:
            m = int(cols.max()) + 1
            key = np.sort(rows * m + cols)   # a sort, not np.unique's hashing: 40x faster
            keep = np.empty(key.size, dtype=bool)
            keep[0] = True
            np.not_equal(key[1:], key[:-1], out=keep[1:])
            key = key[keep]
            rows, cols = key // m, key % m
        ptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n), out=ptr[1:])
        return cls(ptr, cols)


def _identity(n):
    return _Pat(np.arange(n + 1, dtype=np.int64), np.arange(n, dtype=np.int64))


def _compose(local_out, local_in, n_out, pat):
    """Pattern of a node from a local map (out position <- in position pairs) and its
    input's pattern: out o reaches every column in_pattern[i] for each pair (o, i)."""
    counts = pat.ptr[local_in + 1] - pat.ptr[local_in]
    total = int(counts.sum())
    if total > _MAX_NNZ:
        raise _TooBig
    rows = np.repeat(local_out, counts)
    starts = np.repeat(pat.ptr[local_in], counts)
    offs = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    cols = pat.cols[starts + offs]
    return rows, cols


class _TooBig(Exception):
    pass


def _broadcast_map(in_shape, out_shape):
    n_in = int(np.prod(in_shape)) if in_shape else 1
    src = np.broadcast_to(np.arange(n_in).reshape(in_shape), out_shape).reshape(-1)
    return np.arange(src.size), src


def _matmul_map(k, shapes, out_shape):
    a, b = shapes
    if len(a) > 2 or len(b) > 2 or not a or not b:
        return None
    n, m = (1, a[0]) if len(a) == 1 else a
    m2, p = (b[0], 1) if len(b) == 1 else b
    if m != m2:
        return None
    if k == 0:  # A[i, j] reaches out[i, :]
        i, j, q = np.meshgrid(np.arange(n), np.arange(m), np.arange(p), indexing="ij")
        return (i * p + q).ravel(), (i * m + j).ravel()
    j, q, i = np.meshgrid(np.arange(m), np.arange(p), np.arange(n), indexing="ij")
    return (i * p + q).ravel(), (j * p + q).ravel()


def _local_map(node, k, fn, xs, out_shape, rng):
    """(out positions, in positions): which inputs of argument k each output can depend on."""
    op = node.op
    shapes = [np.shape(x) for x in xs]
    if op.elementwise:
        return _broadcast_map(shapes[k], out_shape)
    if op.name == "matmul" and len(xs) == 2:
        got = _matmul_map(k, shapes, out_shape)
        if got is not None:
            return got
    for probe in (_gather_probe, _elementwise_probe, _axes_probe):
        try:
            with np.errstate(all="ignore"):
                got = probe(fn, xs, k, node, out_shape, rng)
        except Exception:
            got = None
        if got is not None:
            return got
    return None


def _call(fn, node, xs):
    return np.asarray(fn(*xs, *node.params), dtype=np.float64)


def _with(xs, k, v):
    ys = list(xs)
    ys[k] = v
    return ys


def _gather_probe(fn, xs, k, node, out_shape, rng):
    """Does the op only move argument k's elements (reshape, transpose, index, concat)?"""
    x = np.asarray(xs[k], dtype=np.float64)
    n = x.size
    base = 1e6 + np.arange(n, dtype=np.float64).reshape(x.shape)
    y = _call(fn, node, _with(xs, k, base)).reshape(-1)
    y0 = _call(fn, node, xs).reshape(-1)
    from_k = (y >= 1e6) & (y < 1e6 + n) & (y == np.round(y))
    src = (y[from_k] - 1e6).astype(np.int64)
    for _ in range(2):
        r = rng.standard_normal(x.shape) + 7.0
        yr = _call(fn, node, _with(xs, k, r)).reshape(-1)
        if not (np.array_equal(yr[from_k], r.reshape(-1)[src])
                and np.array_equal(yr[~from_k], y0[~from_k])):
            return None
    return np.flatnonzero(from_k), src


def _elementwise_probe(fn, xs, k, node, out_shape, rng):
    """Does a nan put into some of argument k's elements come out at exactly those places
    (broadcast to the output's shape)?"""
    x = np.asarray(xs[k], dtype=np.float64)
    try:
        if np.broadcast_shapes(*[np.shape(v) for v in xs]) != tuple(out_shape):
            return None
    except ValueError:
        return None
    for _ in range(3):
        mask = rng.random(x.shape) < 0.5
        if x.size and not mask.any():
            mask.reshape(-1)[0] = True
        probe = np.where(mask, np.nan, x)
        y = _call(fn, node, _with(xs, k, probe))
        want = np.broadcast_to(mask, out_shape)
        if not np.array_equal(np.isnan(y), want | np.isnan(_call(fn, node, xs))):
            return None
    return _broadcast_map(np.shape(x), out_shape)


def _axes_probe(fn, xs, k, node, out_shape, rng):
    """Does the op mix argument k's elements along some axes only (a reduction with an axis,
    softmax along one, a cumulative sum)?  A nan at one element spreads along those axes."""
    x = np.asarray(xs[k], dtype=np.float64)
    shape = x.shape
    if not shape or np.isnan(_call(fn, node, xs)).any():
        return None
    masks = []
    for _ in range(3):
        p = tuple(int(rng.integers(s)) for s in shape)
        probe = x.copy()
        probe[p] = np.nan
        masks.append((p, np.isnan(_call(fn, node, _with(xs, k, probe)))))
    nd = len(shape)
    same = tuple(out_shape) == shape or (len(out_shape) == nd and all(
        o in (1, s) for o, s in zip(out_shape, shape)))
    if same:  # keepdims or shape-preserving: out coordinates along kept axes equal p's
        p, m = masks[0]
        coords = np.argwhere(m)
        if not coords.size:
            return None
        mixed = [a for a in range(nd) if out_shape[a] == 1 and shape[a] > 1
                 or len(np.unique(coords[:, a])) > 1]
        keep = [a for a in range(nd) if a not in mixed]
        out_pos, in_pos = _axes_map(shape, tuple(out_shape), keep, reduced=False)
    else:
        drop = nd - len(out_shape)
        cands = [c for c in _combinations(nd, drop)
                 if tuple(s for a, s in enumerate(shape) if a not in c) == tuple(out_shape)]
        if len(cands) != 1:
            return None
        keep = [a for a in range(nd) if a not in cands[0]]
        out_pos, in_pos = _axes_map(shape, tuple(out_shape), keep, reduced=True)
    # the predicted pattern must contain every probe's spread
    n_out = int(np.prod(out_shape)) if out_shape else 1
    for p, m in masks:
        flat_p = int(np.ravel_multi_index(p, shape))
        predicted = np.zeros(n_out, dtype=bool)
        predicted[out_pos[in_pos == flat_p]] = True
        if (m.reshape(-1) & ~predicted).any():
            return None
    return out_pos, in_pos


def _combinations(n, r):
    import itertools

    return [set(c) for c in itertools.combinations(range(n), r)]


def _axes_map(shape, out_shape, keep, reduced):
    """Pairs (out, in): in reaches every out that agrees with it on the kept axes."""
    nd = len(shape)
    in_idx = np.indices(shape).reshape(nd, -1)            # coordinates of every input
    n_in = in_idx.shape[1]
    key_in = np.zeros(n_in, dtype=np.int64)
    sizes = [shape[a] for a in keep]
    for a in keep:
        key_in = key_in * shape[a] + in_idx[a]
    o_nd = len(out_shape)
    out_idx = np.indices(out_shape).reshape(o_nd, -1) if out_shape else np.zeros((0, 1), int)
    n_out = out_idx.shape[1]
    key_out = np.zeros(n_out, dtype=np.int64)
    for pos, a in enumerate(keep):
        key_out = key_out * shape[a] + out_idx[pos if reduced else a]
    del sizes
    order = np.argsort(key_out, kind="stable")
    ks = key_out[order]
    lo = np.searchsorted(ks, key_in, "left")
    hi = np.searchsorted(ks, key_in, "right")
    counts = hi - lo
    total = int(counts.sum())
    if total > _MAX_NNZ:
        raise _TooBig
    in_pos = np.repeat(np.arange(n_in), counts)
    offs = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    out_pos = order[np.repeat(lo, counts) + offs]
    return out_pos, in_pos


def pattern(ref, source, target, rng):
    """The sparsity pattern of node ``target`` w.r.t. input node ``source`` (a :class:`_Pat`
    over target's flat positions), or None when it cannot be found within bounds."""
    graph, values = ref.graph, ref.values
    n_src = int(np.size(values[source]))
    pats = {source: _identity(n_src)}
    for i in ref.order:
        if i == source or i not in _ancestors_of(ref, target):
            continue
        node = graph.nodes[i]
        if not any(j in pats for j in node.inputs):
            continue
        out_shape = np.shape(values[i])
        n_out = int(np.prod(out_shape)) if out_shape else 1
        fn = Plan._function(node, set(pats), values, False, False, graph=graph)
        xs = [values[j] for j in node.inputs]
        rows, cols = [], []
        same = False
        for k, j in enumerate(node.inputs):
            if j not in pats:
                continue
            m = _local_map(node, k, fn, xs, out_shape, rng)
            if m is None:  # dense: every output of the node from every column reaching it
                reach = np.unique(pats[j].cols)
                if reach.size * n_out > _MAX_NNZ:
                    return None
                rows.append(np.repeat(np.arange(n_out), reach.size))
                cols.append(np.tile(reach, n_out))
                continue
            lo, li = np.asarray(m[0], dtype=np.int64), np.asarray(m[1], dtype=np.int64)
            if len(node.inputs) - sum(q not in pats for q in node.inputs) == 1 and \
                    lo.size == n_out == pats[j].n and np.array_equal(lo, li) and \
                    np.array_equal(lo, np.arange(n_out)):
                same = True            # one to one (tanh, + a constant): the same pattern
                pats[i] = pats[j]
                break
            try:
                r, c = _compose(lo, li, n_out, pats[j])
            except _TooBig:
                return None
            rows.append(r)
            cols.append(c)
        if same:
            if i == target:
                break
            continue
        rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        cols = np.concatenate(cols) if cols else np.zeros(0, np.int64)
        if rows.size > _MAX_NNZ:
            return None
        pats[i] = _Pat.from_pairs(rows, cols, n_out)
        if i == target:
            break
    return pats.get(target)


def _ancestors_of(ref, target):
    cache = ref.__dict__.setdefault("_ancestors", {})
    if target not in cache:
        cache[target] = set(ref.graph.ancestors(target))
    return cache[target]


# ---------------------------------------------------------------- the colouring

def colour(pat, n_cols):
    """Greedy Curtis-Powell-Reid colouring: columns that share no row get one colour.

    Returns (colour per column, number of colours), or None when grouping saves little.
    A column that reaches at most one row takes the rank of its row among such columns
    (vectorised: W in W @ x); the others are coloured one by one against the colours their
    rows hold.
    """
    n_rows = pat.n
    # every colour holds at most one column per row: the busiest row bounds the colours
    if n_rows and int(np.diff(pat.ptr).max()) * _MIN_SAVING > n_cols:
        return None
    rows_of = np.repeat(np.arange(n_rows), np.diff(pat.ptr))
    cols = pat.cols
    per_col = np.bincount(cols, minlength=n_cols)
    colours = np.full(n_cols, -1, dtype=np.int64)
    single = per_col <= 1
    # columns reaching no row: any colour (0); one row: their rank within that row
    if single.any():
        sel = single[cols]
        r, c = rows_of[sel], cols[sel]
        order = np.lexsort((c, r))
        r, c = r[order], c[order]
        first = np.searchsorted(r, r, "left")
        colours[c] = np.arange(r.size) - first
        colours[single & (per_col == 0)] = 0
    multi = np.flatnonzero(~single)
    if multi.size:
        if multi.size > 200_000:
            return None
        # rows -> colours taken there; columns of CSC
        order = np.argsort(cols, kind="stable")
        csc_rows = rows_of[order]
        cptr = np.concatenate([[0], np.cumsum(per_col)])
        taken = [set() for _ in range(n_rows)]
        for r, c in zip(rows_of[single[cols]], cols[single[cols]]):
            taken[r].add(int(colours[c]))
        for c in multi:
            rs = csc_rows[cptr[c]:cptr[c + 1]]
            used = set()
            for r in rs:
                used |= taken[r]
            g = 0
            while g in used:
                g += 1
            colours[c] = g
            for r in rs:
                taken[r].add(g)
    n_colours = int(colours.max()) + 1 if n_cols else 0
    if n_colours * _MIN_SAVING > n_cols:
        return None
    return colours, n_colours


# ---------------------------------------------------------------- a linear head

class LinearHead:
    """When the input's only use on the path is ``input @ C`` or ``C @ input`` (C not
    depending on it), a perturbation d of the input changes that product by ``d @ C`` (or
    ``C @ d``) exactly, up to rounding: for a sparse d that costs a few rows, not a whole
    product.  ``head(flat_positions, steps)`` is the product's perturbed value; the rest of
    the program runs from there (``plan``)."""

    def __init__(self, ref, source, target, complex_step=False):
        graph = ref.graph
        self.complex_step = complex_step
        anc = _ancestors_of(ref, target)
        users = [i for i in ref.order if i in anc and source in graph.nodes[i].inputs]
        self.ok = False
        if len(users) != 1:
            return
        node = graph.nodes[users[0]]
        if node.op.name != "matmul" or len(node.inputs) != 2 or node.params not in ((), None) \
                and any(p is not None for p in node.params):
            return
        a, b = node.inputs
        if a == b or (a == source) == (b == source):
            return
        other = b if a == source else a
        if source in graph.ancestors(other):
            return
        self.left = a == source                   # input @ C, else C @ input
        self.src_shape = np.shape(ref.values[source])
        self.C = np.asarray(ref.values[other], dtype=np.float64)
        if len(self.src_shape) not in (1, 2) or self.C.ndim not in (1, 2):
            return
        self.node = node.id
        self.base = np.asarray(ref.values[node.id], dtype=np.float64)
        self.plan = Plan(graph, ref.order, ref.values, node.id, target, total=False,
                         complex_step=complex_step)
        self.ok = True

    def __call__(self, pos, dx):
        """The product when input elements ``pos`` (flat) move by ``dx`` (imaginary steps
        ``1j * h`` for the complex step: the product is then complex)."""
        out = np.array(self.base, dtype=np.complex128 if np.iscomplexobj(dx) else np.float64)
        shape = self.src_shape
        if self.left:  # (S + D) @ C: rows i of the product gain dx * C[j]
            if len(shape) == 1:  # s (m,) @ C (m,) or (m, p)
                out += np.tensordot(dx, self.C[pos], axes=(0, 0))
            else:
                i, j = np.unravel_index(pos, shape)
                if self.C.ndim == 1:
                    np.add.at(out, i, dx * self.C[j])
                else:
                    np.add.at(out, i, dx[:, None] * self.C[j])
        else:          # C @ (S + D): columns gain C[:, i] * dx
            if len(shape) == 1:
                cols = self.C[..., pos]
                out += cols @ dx
            else:
                i, j = np.unravel_index(pos, shape)
                if self.C.ndim == 1:
                    np.add.at(out, j, self.C[i] * dx)
                else:
                    contrib = self.C[:, i] * dx          # (n, k)
                    out_t = out.T.copy() if out.ndim == 2 else out
                    np.add.at(out_t, j, contrib.T)
                    out = out_t.T if out.ndim == 2 else out_t
        return out

    def run(self, pos, dx):
        return self.plan(self(pos, dx))


def linear_head(ref, source, target, complex_step=False):
    """A :class:`LinearHead` for ``source`` below ``target``, or None."""
    cache = ref.__dict__.setdefault("_heads", {})
    key = (source, target, complex_step)
    if key not in cache:
        try:
            h = LinearHead(ref, source, target, complex_step)
        except Exception:
            h = None
        cache[key] = h if h is not None and h.ok else None
    return cache[key]


# ---------------------------------------------------------------- the differences

def _reduction(ref):
    """(P, weights): the node below a final sum/mean of everything and the reduction's
    weight per element of P; or (output, ones) for a non-scalar output."""
    graph = ref.graph
    out = ref.output
    node = graph.nodes[out]
    if np.shape(ref.values[out]):
        return out, 1.0
    if node.op.name in ("sum", "mean") and len(node.inputs) == 1 and not any(
            p is not None and p != () and p is not False for p in node.params):
        p = node.inputs[0]
        n = int(np.size(ref.values[p]))
        if n > 1:
            return p, 1.0 if node.op.name == "sum" else 1.0 / n
    return None, None


def grouped_numeric(ref, source, x0, method, eps, jacobian):
    """The numeric derivative of every element of input ``source`` from grouped
    differences: (array as gradcheck._numeric returns it, evaluations), or None when
    grouping does not apply or would not save evaluations.  (:func:`grouped` also gives
    Richardson's error estimate.)"""
    got = grouped(ref, source, x0, method, eps, jacobian)
    return None if got is None else (got[0], got[2])


def grouped(ref, source, x0, method, eps, jacobian):
    """Grouped differences by any method: (numeric, error estimate or None, evaluations),
    or None when grouping does not apply, would not save evaluations, or an evaluation
    moved a row outside its group's rows (a pattern found too sparse).

    ``central`` and ``forward`` perturb each colour by +-h (+h); ``complex`` by ``1j h``
    (the imaginary part of each row is then the colour's only member reaching it times h:
    Im f(x + i h e_c) / h for every c at once); ``richardson`` takes grouped central
    differences at h, h/2 and h/4 and combines them per element exactly as one element at
    a time does (the combination is linear, so combining rows or sums is the same)."""
    g = _Groups.make(ref, source, x0, jacobian, method == "complex")
    if g is None:
        return None
    h = steps(x0, eps).reshape(-1)
    if method != "richardson":
        vals = g.run(method, h)
        return None if vals is None else (g.assemble(vals), None, g.evals)
    d1, d2, d4 = (g.run("central", h / k) for k in (1, 2, 4))
    if d1 is None or d2 is None or d4 is None:
        return None
    d1, d2, d4 = (g.assemble(v) for v in (d1, d2, d4))
    r1, r2 = (4 * d2 - d1) / 3, (4 * d4 - d2) / 3   # O(h^4)
    d = (16 * r2 - r1) / 15                          # O(h^6)
    out = np.asarray(ref.values[ref.output], dtype=np.float64)
    hh = h.reshape(x0.shape)
    if jacobian:
        scale = np.abs(out).reshape(out.shape + (1,) * x0.ndim)
    else:
        scale = np.abs(np.sum(out))
    rounding = 8 * EPS64 * np.maximum(scale, EPS64) / hh
    return d, np.abs(d - r2) + rounding, g.evals


class _Groups:
    """The colouring of one input's elements and what a grouped evaluation needs."""

    @classmethod
    def make(cls, ref, source, x0, jacobian, complex_step):
        n = x0.size
        if jacobian:
            target, weight = ref.output, None
            if not np.shape(ref.values[target]):
                return None
        else:
            target, weight = _reduction(ref)
            if target is None:
                return None
        if target == source:
            return None
        rng = np.random.default_rng(12345)
        pat = pattern(ref, source, target, rng)
        if pat is None:
            return None
        got = colour(pat, n)
        if got is None:
            return None
        self = cls()
        self.ref, self.source, self.target, self.weight = ref, source, target, weight
        self.jacobian, self.complex_step = jacobian, complex_step
        self.x0, self.n = x0, n
        colours, self.n_colours = got
        self.head = linear_head(ref, source, target, complex_step)
        self.plan = None if self.head else Plan(ref.graph, ref.order, ref.values, source,
                                                target, total=False, complex_step=complex_step)
        self.p0 = np.asarray(ref.values[target], dtype=np.float64).reshape(-1)
        # column -> its rows (CSC), grouped by colour
        rows_of = np.repeat(np.arange(pat.n), np.diff(pat.ptr))
        self.by_colour = np.argsort(colours, kind="stable")
        self.cbounds = np.searchsorted(colours[self.by_colour], np.arange(self.n_colours + 1))
        entry_order = np.lexsort((rows_of, colours[pat.cols]))
        self.e_rows, self.e_cols = rows_of[entry_order], pat.cols[entry_order]
        self.ebounds = np.searchsorted(colours[self.e_cols], np.arange(self.n_colours + 1))
        self.evals = 0
        return self

    def _eval(self, members, new, dx, x, flat, flat0):
        """The target's rows (flat) with ``members`` set to ``new`` (moved by ``dx``)."""
        if self.head is not None:
            return np.asarray(self.head.run(members, dx)).reshape(-1)
        flat[members] = new
        try:
            return np.asarray(self.plan(x)).reshape(-1)
        finally:
            flat[members] = flat0[members]

    def run(self, how, h):
        """One grouped difference per colour: the derivative along each (row, column) entry
        of the pattern, in entry order; None when a row outside a group's rows moved."""
        cplx = how == "complex"
        x = np.array(self.x0, dtype=np.complex128 if cplx else np.float64, order="C")
        flat = x.reshape(-1)
        flat0 = flat.copy()
        p0 = self.p0
        values = np.empty(self.e_rows.size)
        step = np.empty(self.n)
        with np.errstate(all="ignore"):
            for g in range(self.n_colours):
                members = self.by_colour[self.cbounds[g]:self.cbounds[g + 1]]
                if not members.size:
                    continue
                er = self.e_rows[self.ebounds[g]:self.ebounds[g + 1]]
                ec = self.e_cols[self.ebounds[g]:self.ebounds[g + 1]]
                hm = h[members]
                if cplx:
                    f = self._eval(members, flat0[members] + 1j * hm, 1j * hm, x, flat,
                                   flat0)
                    delta = np.imag(f)
                    dx = hm
                    self.evals += 1
                    # a row no member reaches keeps a zero imaginary part
                    limit = 8 * EPS64 * np.abs(p0) * float(hm.max())
                else:
                    r0 = flat0[members].real
                    xp = r0 + hm
                    fp = np.asarray(self._eval(members, xp, xp - r0, x, flat, flat0),
                                    dtype=np.float64)
                    if how == "forward":
                        xm = r0
                        fm = p0
                        self.evals += 1
                    else:
                        xm = r0 - hm
                        fm = np.asarray(self._eval(members, xm, xm - r0, x, flat, flat0),
                                        dtype=np.float64)
                        self.evals += 2
                    delta = fp - fm
                    dx = xp - xm
                    limit = 8 * EPS64 * np.abs(p0)
                # rows no member reaches must not have moved: else a pattern was too sparse
                moved = np.ones(delta.size, dtype=bool)
                moved[er] = False
                if np.any(np.abs(delta[moved]) > limit[moved]):
                    return None
                step[members] = dx
                values[self.ebounds[g]:self.ebounds[g + 1]] = delta[er] / step[ec]
        return values

    def assemble(self, values):
        """Entry values -> the numeric array (the Jacobian, or the weighted gradient)."""
        x0 = self.x0
        if self.jacobian:
            out_shape = np.shape(self.ref.values[self.target])
            J = np.zeros((int(np.prod(out_shape)), self.n))
            J[self.e_rows, self.e_cols] = values
            return J.reshape(out_shape + x0.shape)
        grad = np.bincount(self.e_cols, weights=values * self.weight, minlength=self.n)
        return grad.reshape(x0.shape)
