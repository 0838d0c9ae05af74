"""Rewrite rules that keep a symbolic derivative readable.

:class:`gradcli.symbolic.Builder` asks :func:`rewrite` before it makes any node: the rule
either returns an equal, simpler expression (built from existing nodes) or ``None``.  Every
rule keeps the value exactly (the same floating-point operations or fewer), so a simplified
derivative still evaluates to what ``gradcli grad`` gives.  The one exception is stated in
README.md ("Derivatives as expressions"): ``0 * x`` is dropped as 0 even where ``x`` is inf or nan.

The rules (applied where a node is made, so they cost one look at its inputs):

- constants fold: an op whose inputs are all constants becomes a constant;
- identities: ``x + 0``, ``x - 0``, ``x * 1``, ``x / 1``, ``x ** 1`` are ``x``; ``0 * x``,
  ``0 / x`` are 0; ``x ** 0`` is 1; ``--x`` is ``x``;
- signs move outward: ``-a * b`` is ``-(a * b)``, ``a + -b`` is ``a - b``, ``a - -b`` is ``a + b``;
- constants lead a product (``x * 2`` is ``2 * x``) and trail a sum (``1 + x`` is ``x + 1``);
  ``2 * (3 * x)`` is ``6 * x``; ``a * (1 / b)`` is ``a / b``;
- like terms: ``a + a`` is ``2 * a``, ``2 * a + 3 * a`` is ``5 * a``, ``a * a`` is ``a ** 2``,
  ``a * a ** n`` is ``a ** (n + 1)``;
- a ``where`` with a constant condition is the branch it picks; broadcasting, summing back
  and reshaping to the shape a value already has are no-ops; an elementwise op does not need
  its input broadcast first.

These look only at a node's direct inputs: no search, no canonical form.
"""
from __future__ import annotations

import numpy as np

from . import ops as oplib

__all__ = ["rewrite"]

#: Folded constants up to this many elements stay constants (printed as literals).
SMALL = 16


class _Ops:
    """The ops the rules know, looked up once (ops.py may gain or rename helpers)."""

    def __init__(self):
        infix = oplib.INFIX
        self.add, self.sub, self.mul = infix["add"], infix["sub"], infix["mul"]
        self.div, self.neg, self.pow = infix["div"], infix["neg"], infix["pow"]
        self.matmul = infix.get("matmul")
        self.where = getattr(oplib, "where", None)
        self.sum_to = getattr(oplib, "sum_to", None)
        self.broadcast_to = getattr(oplib, "broadcast_to", None)
        self.reshape = getattr(oplib, "reshape", None)
        self.sum_all = getattr(oplib, "sum_all", None)
        self.outer = getattr(oplib, "outer", None)
        self.transpose = getattr(oplib, "transpose", None)
        self.concat = getattr(oplib, "concat", None)
        self.index_grad = getattr(oplib, "index_grad", None)
        self.index = getattr(oplib, "index", None)
        self.stack = getattr(oplib, "stack", None)
        self.stack_axis = getattr(oplib, "stack_axis", None)
        self.flip = getattr(oplib, "flip", None)


_OPS = None


def ops():
    global _OPS
    if _OPS is None:
        _OPS = _Ops()
    return _OPS


# ---------------------------------------------------------------- looking at nodes

def is_const(s):
    return s.op is oplib.CONST


def scalar(s):
    """The number a uniform constant holds (any shape), else None."""
    if s.op is oplib.CONST and s.value.ndim == 0:
        return float(s.value)
    return None


def is_zero(s):
    return scalar(s) == 0.0


def coefficient(s, O):
    """(c, rest) with s = c * rest, c a number: ``2 * x`` -> (2, x), ``-x`` -> (-1, x)."""
    if s.op is O.mul:
        c = scalar(s.inputs[0])
        if c is not None and s.inputs[0].shape == ():
            return c, s.inputs[1]
    elif s.op is O.neg:
        c, rest = coefficient(s.inputs[0], O)
        return -c, rest
    return 1.0, s


def _scaled(b, c, x, shape):
    """c * x, as the simplest node: x, -x, 0 or c * x."""
    O = ops()
    if c == 1.0:
        return x
    if c == 0.0:
        return b.const(0.0, shape)
    if c == -1.0:
        return b.apply(O.neg, (x,))
    return b.apply(O.mul, (b.const(c), x))


# ---------------------------------------------------------------- folding

def fold(b, op, inputs, params):
    """All inputs constant: the constant result, or None to keep the op (a big array)."""
    xs = [np.broadcast_to(i.value, i.shape) for i in inputs]
    with np.errstate(all="ignore"):
        out = np.asarray(b.forward(op, xs, params))
    if out.dtype.kind not in "fiub":
        return None
    if out.ndim == 0:
        return b.const(out)
    if out.size:
        first = out.flat[0]
        if (np.isnan(first) and np.isnan(out).all()) or (out == first).all():
            return b.const(first, out.shape)
    if out.size <= SMALL:
        return b.const(out)
    return None


# ---------------------------------------------------------------- the rules

def rewrite(b, op, inputs, params, shape):
    """An equal, simpler node for ``op(*inputs, *params)`` (of ``shape``), or None."""
    if op.gate is not None:
        return None
    if inputs and all(i.op is oplib.CONST for i in inputs):
        if max(np.prod(i.shape, dtype=np.int64) for i in inputs) <= 1 << 20:
            folded = fold(b, op, inputs, params)
            if folded is not None:
                return folded
    if b.as_written:  # the program's own values: kept as the user wrote them
        return None
    O = ops()
    if op.partials is not None and len(inputs) > 1:
        new = _unbroadcast_inputs(b, inputs, shape, O)
        if op is O.where:
            got = _where(b, new, shape, O)
            if got is not None:
                return got
        elif len(new) == 2:
            got = _binary(b, op, new[0], new[1], shape, O)
            if got is not None:
                return got
        if any(n is not i for n, i in zip(new, inputs)):
            return b.apply(op, tuple(new), params)
        return None
    if op is O.neg:
        return _neg(b, inputs[0], O)
    if op in (O.sum_to, O.broadcast_to, O.reshape) and op is not None:
        return _shape_op(b, op, inputs[0], params, shape, O)
    if not op.public and op not in (O.index, O.stack):
        got = _public(b, op, inputs, params, shape, O)
        if got is not None:
            return got
    if op is O.matmul and O.matmul is not None:
        if any(is_zero(i) for i in inputs):
            return b.const(0.0, shape)
        return _outer(b, inputs[0], inputs[1], shape, O)
    return None


def _unbroadcast_inputs(b, inputs, shape, O):
    """The inputs of an elementwise op without the broadcasts it does by itself."""
    new = list(inputs)
    if not any((x.op is oplib.CONST and x.shape) or x.op is O.broadcast_to
               or x.op is O.reshape or x.op is O.stack for x in inputs):
        return new
    for k, x in enumerate(inputs):
        inner = None
        if x.op is oplib.CONST and x.value.ndim == 0 and x.shape != ():
            inner = b.const(x.value)
        elif x.op is O.broadcast_to and O.broadcast_to is not None:
            inner = x.inputs[0]
        elif x.op is O.stack and len(x.inputs) == 1 and x.inputs[0].shape == ():
            inner = x.inputs[0]  # [v] broadcasts as v does
        elif x.op is O.reshape and O.reshape is not None:
            # a reshape that only puts length-1 axes in front: broadcasting does that
            v = x.inputs[0]
            lead = len(x.shape) - len(v.shape)
            if lead > 0 and x.shape[lead:] == v.shape and all(n == 1 for n in x.shape[:lead]):
                inner = v
        if inner is None:
            continue
        trial = new[:k] + [inner] + new[k + 1:]
        try:
            if np.broadcast_shapes(*[t.shape for t in trial]) == shape:
                new = trial
        except ValueError:
            pass
    return new


def _spread_to(b, x, shape, O):
    """x broadcast to ``shape`` (a value x * ones would have), as one node."""
    if O.broadcast_to is None:
        return None
    return b.apply(O.broadcast_to, (x,), (shape,))


def _binary(b, op, x, y, shape, O):
    """Rules for two-input elementwise ops."""
    if op is O.add:
        return _add(b, x, y, shape, O)
    if op is O.sub:
        return _sub(b, x, y, shape, O)
    if op is O.mul:
        return _mul(b, x, y, shape, O)
    if op is O.div:
        return _div(b, x, y, shape, O)
    if op is O.pow:
        return _pow(b, x, y, shape, O)
    return None


def _fits(s, shape):
    return s.shape == shape


#: Like terms are looked for among at most this many terms of a sum.
TERMS = 6


def _terms(b, s, O):
    """s as a list of (coefficient, term) when it is a sum of at most TERMS terms, else
    None; kept per node, so a long sum costs one look per node."""
    cache = b.terms
    got = cache.get(s.id, False)
    if got is not False:
        return got
    if s.op is O.add or s.op is O.sub:
        a, c = s.inputs
        ta, tc = _terms(b, a, O), _terms(b, c, O)
        if ta is None or tc is None or len(ta) + len(tc) > TERMS:
            got = None
        else:
            got = ta + (tc if s.op is O.add else [(-k, t) for k, t in tc])
    else:
        got = [coefficient(s, O)]
    cache[s.id] = got
    return got


def _collect(b, x, y, sign, shape, O):
    """x + sign * y with like terms gathered (2*a - b + a is 3*a - b), or None when no two
    terms are alike."""
    tx, ty = _terms(b, x, O), _terms(b, y, O)
    if tx is None or ty is None or len(tx) + len(ty) > TERMS or len(tx) + len(ty) < 3:
        return None
    terms = tx + [(sign * k, t) for k, t in ty]
    seen = {}
    merged = []
    for c, t in terms:
        k = seen.get(t.id)
        if k is None:
            seen[t.id] = len(merged)
            merged.append([c, t])
        else:
            merged[k][0] += c
    if len(merged) == len(terms):
        return None
    total = None
    for c, t in merged:
        if c == 0.0:
            continue
        if total is None:
            total = _scaled(b, c, t, t.shape)
        elif c < 0:
            total = b.apply(O.sub, (total, _scaled(b, -c, t, t.shape)))
        else:
            total = b.apply(O.add, (total, _scaled(b, c, t, t.shape)))
    if total is None:
        return b.const(0.0, shape)
    return total if total.shape == shape else _spread_to(b, total, shape, O)


def _add(b, x, y, shape, O):
    if is_zero(y):
        return x if _fits(x, shape) else _spread_to(b, x, shape, O)
    if is_zero(x):
        return y if _fits(y, shape) else _spread_to(b, y, shape, O)
    if y.op is O.neg:
        return b.apply(O.sub, (x, y.inputs[0]))
    if x.op is O.neg:
        return b.apply(O.sub, (y, x.inputs[0]))
    cy = scalar(y)
    if cy is not None and y.shape == () and cy < 0:
        return b.apply(O.sub, (x, b.const(-cy)))
    cx = scalar(x)
    if cx is not None and x.shape == () and cy is None:
        return b.apply(O.add, (y, x))  # constants last: x + 1
    ca, ra = coefficient(x, O)
    cb, rb = coefficient(y, O)
    if ra is rb and _fits(ra, shape):
        return _scaled(b, ca + cb, ra, shape)
    if cb < 0 and not is_const(rb):
        return b.apply(O.sub, (x, _scaled(b, -cb, rb, rb.shape)))
    return _collect(b, x, y, 1.0, shape, O)


def _sub(b, x, y, shape, O):
    if is_zero(y) and _fits(x, shape):
        return x
    if is_zero(x) and _fits(y, shape):
        return b.apply(O.neg, (y,))
    if x is y:
        return b.const(0.0, shape)
    if y.op is O.neg:
        return b.apply(O.add, (x, y.inputs[0]))
    cy = scalar(y)
    if cy is not None and y.shape == () and cy < 0:
        return b.apply(O.add, (x, b.const(-cy)))
    ca, ra = coefficient(x, O)
    cb, rb = coefficient(y, O)
    if ra is rb and _fits(ra, shape):
        return _scaled(b, ca - cb, ra, shape)
    if cb < 0 and not is_const(rb):
        return b.apply(O.add, (x, _scaled(b, -cb, rb, rb.shape)))
    return _collect(b, x, y, -1.0, shape, O)


def _mul(b, x, y, shape, O):
    if is_zero(x) or is_zero(y):
        return b.const(0.0, shape)
    cx, cy = scalar(x), scalar(y)
    if cx == 1.0:
        return y if _fits(y, shape) else _spread_to(b, y, shape, O)
    if cy == 1.0:
        return x if _fits(x, shape) else _spread_to(b, x, shape, O)
    if cx == -1.0 and _fits(y, shape):
        return b.apply(O.neg, (y,))
    if cy == -1.0 and _fits(x, shape):
        return b.apply(O.neg, (x,))
    if cy is not None and y.shape == () and cx is None:
        return b.apply(O.mul, (y, x))  # the number first: 2 * x
    if cx is not None and x.shape == ():
        c2, rest = coefficient(y, O)
        if c2 != 1.0 and _fits(rest, shape):
            return _scaled(b, cx * c2, rest, shape)
        return None
    if x.op is O.neg:
        return b.apply(O.neg, (b.apply(O.mul, (x.inputs[0], y)),))
    if y.op is O.neg:
        return b.apply(O.neg, (b.apply(O.mul, (x, y.inputs[0])),))
    c2, rest = coefficient(y, O)
    if c2 != 1.0 and y.op is O.mul:  # a * (2 * b) is 2 * (a * b): numbers gather in front
        return _scaled(b, c2, b.apply(O.mul, (x, rest)), shape)
    if y.op is O.div and scalar(y.inputs[0]) == 1.0 and y.inputs[0].shape == ():
        return b.apply(O.div, (x, y.inputs[1]))
    if x.op is O.div and scalar(x.inputs[0]) == 1.0 and x.inputs[0].shape == ():
        return b.apply(O.div, (y, x.inputs[1]))
    for a, w in ((x, y), (y, x)):
        if w.op is O.where and w.op is not None and _fits(a, shape):
            c, one, zero = w.inputs
            if scalar(one) == 1.0 and is_zero(zero):
                return b.apply(O.where, (c, a, b.const(0.0)))
            if is_zero(one) and scalar(zero) == 1.0:
                return b.apply(O.where, (c, b.const(0.0), a))
    if x is y:
        return b.apply(O.pow, (x, b.const(2.0)))
    if y.id < x.id and cx is None:
        return b.apply(O.mul, (y, x))  # older values first: x*y, not y*x (exact: a*b = b*a)
    for a, p in ((x, y), (y, x)):
        if p.op is O.pow and p.inputs[0] is a and scalar(p.inputs[1]) is not None \
                and p.inputs[1].shape == () and _fits(a, shape):
            return b.apply(O.pow, (a, b.const(scalar(p.inputs[1]) + 1.0)))
    return None


def _div(b, x, y, shape, O):
    cy = scalar(y)
    if cy == 1.0 and _fits(x, shape):
        return x
    if is_zero(x) and not is_zero(y):
        return b.const(0.0, shape)
    if x.op is O.neg:
        return b.apply(O.neg, (b.apply(O.div, (x.inputs[0], y)),))
    return None


def _pow(b, x, y, shape, O):
    cy = scalar(y)
    if cy == 1.0 and _fits(x, shape):
        return x
    if cy == 0.0:
        return b.const(1.0, shape)
    return None


def _neg(b, x, O):
    if x.op is O.neg:
        return x.inputs[0]
    if x.op is O.sub:
        return b.apply(O.sub, (x.inputs[1], x.inputs[0]))
    c, rest = coefficient(x, O)
    if c != 1.0 and x.op is O.mul:
        return _scaled(b, -c, rest, x.shape)
    return None


def _where(b, inputs, shape, O):
    c, x, y = inputs
    v = scalar(c)
    if v is not None:
        pick = x if v != 0 else y
        return pick if pick.shape == shape else _spread_to(b, pick, shape, O)
    if x is y and _fits(x, shape):
        return x
    if scalar(x) == 1.0 and is_zero(y) and c.op.symbol in COMPARISONS and _fits(c, shape):
        return c  # a comparison is 1 or 0 already
    return None


#: Operator symbols of the ops whose value is 1 or 0.
COMPARISONS = ("<", "<=", ">", ">=", "==", "!=")


def _column(s, O):
    """v when s is v reshaped into a column (k, 1), else None."""
    if s.op is O.reshape and len(s.shape) == 2 and s.shape[1] == 1 \
            and s.inputs[0].shape == s.shape[:1]:
        return s.inputs[0]
    return None


def _matvec(b, m, shape, O):
    """reshape(A @ column(v), (n,)) is A @ v: NumPy's matrix-vector product."""
    a, c = m.inputs
    v = _column(c, O)
    if v is not None and len(a.shape) == 2 and shape == a.shape[:1]:
        return b.apply(O.matmul, (a, v))
    return None


def _outer(b, x, y, shape, O):
    """column(u) @ transpose(column(v)) is outer(u, v)."""
    u = _column(x, O)
    if u is None or O.outer is None or y.op.name != "transpose" or any(v is not None for v in y.params) \
            or len(y.shape) != 2:
        return None
    v = _column(y.inputs[0], O)
    if v is None:
        return None
    return b.apply(O.outer, (u, v))


# ---------------------------------------------------------------- internal ops, public form
#
# The gradient rules use a few ops the language does not take (they have no syntax for
# their static arguments).  Where one has an equal form in public ops, the node is made in
# that form, so the printed derivative reads back: an axis permutation (swapaxes,
# moveaxis, ...) is a transpose; the adjoint of indexing is a concat with zeros.

def _public(b, op, inputs, params, shape, O):
    if op is O.index_grad and O.index_grad is not None:
        return _index_adjoint(b, inputs[0], params[0], tuple(params[1]), O)
    if len(inputs) == 1 and O.transpose is not None:
        return _permutation(b, op, inputs[0], params, shape, O)
    return None


def _permutation(b, op, x, params, shape, O):
    """transpose(x, perm) when op moves x's axes and nothing else (found by running it on
    numbered elements, so no op is known by name)."""
    n = len(x.shape)
    if n < 1 or n > 5 or sorted(shape) != sorted(x.shape):
        return None
    numbered = np.arange(int(np.prod(x.shape)), dtype=np.float64).reshape(x.shape)
    try:
        got = np.asarray(b.forward(op, [numbered], params))
    except Exception:
        return None
    import itertools

    for perm in itertools.permutations(range(n)):
        if tuple(x.shape[p] for p in perm) == shape and \
                np.array_equal(np.transpose(numbered, perm), got):
            if perm == tuple(range(n)):
                return x
            if perm == tuple(range(n - 1, -1, -1)):
                return b.apply(O.transpose, (x,), (None,))
            return b.apply(O.transpose, (x,), (perm,))
    return None


def _index_adjoint(b, g, key, shape, O):
    """index_grad(g, key, shape), zeros with g at ``key``, in public ops, for keys of
    integers, slices, None and ``...``: along an axis sliced with a step, g interleaved with
    zeros (stack along a new axis, reshape; flipped first for a negative step); then
    concats with zeros before and after.  None for other keys."""
    if O.concat is None or O.reshape is None:
        return None
    key = key if isinstance(key, tuple) else (key,)
    if any(k is Ellipsis for k in key):
        i = key.index(Ellipsis)
        named = sum(1 for k in key if k is not None and k is not Ellipsis)
        key = key[:i] + (slice(None),) * (len(shape) - named) + key[i + 1:]
    # per axis of the result: (first, step, count) of the elements g fills
    spans = []
    axis = 0
    for k in key:
        if k is None:
            continue
        if axis >= len(shape):
            return None
        n = shape[axis]
        if isinstance(k, slice):
            start, stop, step = k.indices(n)
            count = len(range(start, stop, step))
            if count == 0:
                return None
            if step != 1 and (O.stack_axis is None or O.flip is None or O.index is None):
                return None
            spans.append((start, step, count))
        elif isinstance(k, (int, np.integer)):
            spans.append((int(k) % n, 1, 1))
        else:
            return None
        axis += 1
    spans += [(0, 1, n) for n in shape[len(spans):]]
    inner = tuple(count for _, _, count in spans)
    if int(np.prod(inner)) != g.size:
        return None
    x = g if g.shape == inner else b.apply(O.reshape, (g,), (inner,))
    for ax, (start, step, count) in enumerate(spans):
        n = shape[ax]
        if count == 1:
            step = 1
        if step < 0:  # the elements in increasing order, from the lowest one
            x = b.apply(O.flip, (x,), (ax,))
            start, step = start + (count - 1) * step, -step
        if step != 1:  # count elements, step - 1 zeros after each but the last
            cur = list(x.shape)
            zeros = b.const(0.0, tuple(cur))
            x = b.apply(O.stack_axis, (x,) + (zeros,) * (step - 1), (ax + 1,))
            cur[ax] = count * step
            x = b.apply(O.reshape, (x,), (tuple(cur),))
            x = b.apply(O.index, (x,), ((slice(None),) * ax + (slice(None, (count - 1) * step + 1),),))
        stop = start + (count - 1) * step + 1
        if (start, stop) == (0, n):
            continue
        parts = []
        cur = list(x.shape)
        if start:
            cur[ax] = start
            parts.append(b.const(0.0, tuple(cur)))
        parts.append(x)
        if stop < n:
            cur[ax] = n - stop
            parts.append(b.const(0.0, tuple(cur)))
        x = b.apply(O.concat, tuple(parts), (ax,))
    return x


def _shape_op(b, op, x, params, shape, O):
    if x.shape == shape:
        return x
    if op is O.sum_to and shape == () and O.sum_all is not None:
        return b.apply(O.sum_all, (x,), O.sum_all.defaults)
    if op is O.reshape and shape == (1,) and x.shape == () and O.stack is not None:
        return b.apply(O.stack, (x,))  # [x]
    if op is O.reshape and x.op is O.matmul and O.matmul is not None:
        got = _matvec(b, x, shape, O)
        if got is not None:
            return got
    if op is O.sum_to and x.op is O.broadcast_to and x.inputs[0].shape == shape:
        return x.inputs[0]
    if op is O.broadcast_to and x.op is O.broadcast_to:
        return b.apply(op, (x.inputs[0],), params)
    if op is O.reshape and x.op is O.reshape:
        inner = x.inputs[0]
        return inner if inner.shape == shape else b.apply(op, (inner,), params)
    return None
