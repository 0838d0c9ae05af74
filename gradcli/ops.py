"""The op library: every operation gradcli knows, one entry each.

An entry says how to compute the op's output (``forward``) and how to turn the output's
gradient into its inputs' gradients (the vector-Jacobian product, "downstream = upstream x
local").  Elementwise ops give their *local gradients* (``partials``: d out / d input, element
by element) and the engine multiplies by the upstream gradient and sums broadcast axes back
(``sum_to``) once, for all of them.  The other ops give a VJP per input directly.

Every rule is written with the ops of this library and Python's arithmetic operators (plus
static shape arithmetic on ``np.shape``/``np.ndim`` of the arguments), never with NumPy calls
on values, as HIPS autograd does: the backward pass is then itself a program of the same ops,
which :mod:`gradcli.symbolic` traces into a graph (``tracer`` below).

One entry (one ``defop`` call) holds everything about an op:

- ``forward(*inputs, *params)`` and ``partials`` / ``vjps`` (see :class:`Op`);
- the text users see: ``formulas`` (the rule per input), ``kinks``, ``domain``, ``doc`` and
  ``torch`` (the PyTorch equivalent);
- its static arguments, ``signature``: :class:`Param` objects (name, default, kind, whether it
  may be written positionally).  A program writes them as constants, positionally after the
  inputs or as keywords (``sum(x, axis=1, keepdims=true)``); the parser resolves them into
  ``node.params``, a tuple in declared order with the defaults filled in.  ``op.params`` is
  the tuple of their names.  ``lead`` params (einsum's subscripts) are written before the
  inputs but still come after them in ``node.params``;
- what ``gradcli check`` needs: ``batch(fwd, flags, ndims, params)`` (a forward over a stack
  of perturbed copies, or None), ``cforward`` (a forward that carries a complex step) and
  ``kink_side(*inputs, *params)`` (an array that changes exactly when the op crosses a point
  where it is not differentiable).

Printing: ``op.text(arg_texts, params)`` writes the op applied to its arguments' texts back in
the language (``sum(x, axis=1, keepdims=true)``, ``a + b``, ``x[:, None]``); params equal to
their default are left out.  It does not add parentheses: pass compound arguments already
parenthesised.  The internal ops (``public`` False: ``index_grad``, ``moveaxis``,
``swapaxes``) print as calls too, though the language does not take them; the symbolic
derivative never shows them: :mod:`gradcli.simplify` makes each node of theirs in public ops
(a transpose, concats and stacks with zeros), so every printed derivative reads back.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["Op", "Param", "BUILTINS", "CALLABLE", "INFIX", "VAR", "CONST", "sum_to", "tracer"]

#: Set by gradcli.symbolic while it traces a backward pass: ``tracer(op, args)`` is called
#: instead of the forward, with args = inputs followed by the static params.
tracer = None

REQUIRED = object()  # a Param default: the program must give it


class Param:
    """A static argument of an op: a constant fixed when the program is parsed.

    ``kind`` says which constants it takes (``convert`` checks and normalises them):
    ``int``, ``axis`` (an integer, or None where that is the default), ``axes`` (an integer,
    a tuple of them or None), ``shape`` (a tuple of integers), ``perm`` (a tuple or None),
    ``ints`` (an integer or a tuple of them: conv's stride), ``padding`` (the same, or the
    string "same" or "valid"), ``bool``, ``number``,
    ``str`` (one of ``choices`` if given), ``key`` (internal: an index).
    """

    __slots__ = ("name", "default", "kind", "positional", "choices")

    def __init__(self, name, default=None, kind="axis", positional=True, choices=None):
        self.name, self.default, self.kind = name, default, kind
        self.positional, self.choices = positional, choices

    @property
    def required(self):
        return self.default is REQUIRED

    def convert(self, v):
        """The constant ``v`` as this parameter's value; ValueError saying what it takes."""
        k = self.kind
        if k in ("int", "axis"):
            if v is None and (k == "axis" and not self.required):
                return None
            return _whole(v, "a whole number" + (" or None" if k == "axis" and
                                                   not self.required else ""))
        if k == "axes":
            if v is None:
                return None
            if isinstance(v, tuple):
                return tuple(_whole(a, "whole numbers") for a in v)
            return _whole(v, "a whole number, a tuple of them or None")
        if k in ("shape", "perm"):
            if v is None and k == "perm":
                return None
            if isinstance(v, tuple):
                return tuple(_whole(a, "whole numbers") for a in v)
            return (_whole(v, "a tuple of whole numbers such as (2, -1)"),)
        if k == "padding" and isinstance(v, _Str):  # conv's padding="same" / "valid"
            if str(v) not in ("same", "valid"):
                raise ValueError(f'a whole number, a tuple of them, "same" or "valid", '
                                 f'not "{v}"')
            return str(v)
        if k in ("ints", "padding"):
            if isinstance(v, tuple):
                return tuple(_whole(a, "whole numbers") for a in v)
            return _whole(v, "a whole number or a tuple of them")
        if k == "bool":
            if isinstance(v, bool):
                return v
            if isinstance(v, float) and v in (0.0, 1.0):
                return bool(v)
            raise ValueError("true or false")
        if k == "number":
            if isinstance(v, (bool, int, float)):
                return float(v)
            raise ValueError("a number")
        if k == "str":
            if not isinstance(v, _Str):
                raise ValueError("a string such as " + (f'"{self.choices[0]}"' if self.choices
                                                         else '"ij,j->i"'))
            if self.choices and str(v) not in self.choices:
                raise ValueError(" or ".join(f'"{c}"' for c in self.choices) +
                                 f', not "{v}"')
            return str(v)
        return v


class _Str(str):
    """A string constant of a program (so that a param can tell it from a name)."""


def _whole(v, what):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not float(v).is_integer():
        raise ValueError(what)
    return int(v)


class Op:
    """One operation: its forward rule, its gradient rules and the text users see.

    ``partials`` (elementwise ops) holds one entry per input: a function ``(out, *inputs)``
    giving the local gradient d out / d input, or the number 1 or -1 when it is that constant.
    ``vjps`` (other ops) holds one function ``(g, out, *inputs, *params)`` per input giving the
    downstream gradient for upstream ``g``.  ``broadcast_vjps`` (optional, elementwise ops)
    holds per input None or a function ``(g, out, *inputs)`` giving ``sum_to(g * partial,
    shape of the input)`` for an input that was broadcast, by a cheaper route (summing over
    the broadcast axes before a full-size product): the engine's reverse pass uses it where
    no table shows the local gradient; the partials stay the rule users see.  Static arguments fixed when the program is parsed
    (an axis, an index, a shape) are passed after the inputs: ``signature`` declares them and
    ``params`` is the tuple of their names.  ``arity`` is None for an op taking any number of
    inputs (``concat``, ``einsum``).
    """

    __slots__ = ("name", "arity", "forward", "partials", "vjps", "broadcast_vjps", "formulas",
                 "kinks",
                 "domain", "doc", "symbol", "argnames", "public", "params", "gate", "path",
                 "shapes", "sample_domain", "batch", "cforward", "kink_side", "signature",
                 "defaults", "lead", "torch", "aliases", "listed", "min_arity")

    def __init__(self, name, forward, *, arity, partials=None, vjps=None, broadcast_vjps=None,
                 formulas=(),
                 kinks=None, domain=None, doc="", symbol=None, argnames=None, public=True,
                 params=(), batch=None, cforward=None, kink_side=None, torch=None, lead=0,
                 aliases=(), listed=True, min_arity=1):
        self.name = name
        self.forward = forward
        self.arity = arity
        self.partials = partials
        self.vjps = vjps
        self.broadcast_vjps = broadcast_vjps
        self.formulas = tuple(formulas)
        self.kinks = kinks
        self.domain = domain
        self.doc = doc
        self.symbol = symbol
        self.argnames = argnames or (("x",) if arity == 1 else ("a", "b", "c")[:arity or 0])
        self.public = public
        self.signature = tuple(p if isinstance(p, Param) else Param(p) for p in params)
        self.params = tuple(p.name for p in self.signature)
        self.defaults = tuple(p.default for p in self.signature)
        self.lead = lead            # params written before the inputs (einsum's subscripts)
        self.torch = torch          # the PyTorch equivalent, for ``gradcli ops``
        self.aliases = tuple(aliases)
        self.listed = listed        # a row of its own in ``gradcli ops``
        self.min_arity = min_arity  # for arity None: the fewest inputs
        # Custom ops (gradcli.plugins): the gate class, one instance per node, and how to
        # sample its inputs for a self-check.  None for the built-ins.
        self.gate = None
        self.path = None
        self.shapes = None
        self.sample_domain = None
        # For gradcli check: a batched forward, a forward that carries a complex step, and
        # where the op has kinks (see the module docstring).
        self.batch = batch
        self.cforward = cforward if cforward is not None else forward
        self.kink_side = kink_side

    @property
    def elementwise(self):
        return self.partials is not None

    def __call__(self, *args):
        # The single dispatch point: arrays normally; while gradcli.symbolic traces a
        # backward pass, graph nodes in and graph nodes out.  Params left out get their
        # defaults, so the tracer always sees the full tuple.
        if self.arity is not None and len(args) < self.arity + len(self.defaults):
            args = args + self.defaults[len(args) - self.arity:]
        if tracer is not None:
            return tracer(self, args)
        return self.forward(*args)

    def text(self, args, params=()):
        """The op applied to argument texts ``args``, in the language (see the module doc)."""
        args = list(args)
        if self.symbol is not None:
            if self.arity == 1:
                return f"{self.symbol}{args[0]}"
            return f"{args[0]} {self.symbol} {args[1]}"
        if self.name == "index":
            return f"{args[0]}[{key_text(params[0])}]"
        if self.name == "array":
            return "[" + ", ".join(args) + "]"
        lead = [literal(v) for v in params[:self.lead]]
        parts = []
        for p, v in zip(self.signature[self.lead:], params[self.lead:]):
            if p.required and p.positional:
                parts.append(literal(v))
            elif not _same(v, p.default):
                parts.append(f"{p.name}={literal(v)}")
        return f"{self.name}({', '.join(lead + args + parts)})"

    def __repr__(self):
        return f"Op({self.name!r})"


def _same(a, b):
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def literal(v):
    """A static value as the language writes it: ``true``, ``(0, 1)``, ``"tanh"``, ``None``."""
    if v is None:
        return "None"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v + '"'
    if isinstance(v, tuple):
        inner = ", ".join(literal(a) for a in v)
        return f"({inner},)" if len(v) == 1 else f"({inner})"
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return repr(v)


def key_text(key):
    """An index key as the language writes it inside ``[...]``."""
    def one(k):
        if k is None:
            return "None"
        if k is Ellipsis:
            return "..."
        if isinstance(k, slice):
            a = "" if k.start is None else str(k.start)
            b = "" if k.stop is None else str(k.stop)
            return f"{a}:{b}" + ("" if k.step is None else f":{k.step}")
        return str(k)
    return ", ".join(one(k) for k in key)


#: Every op of the library, in the order defined (the order ``gradcli ops`` lists them).
BUILTINS: list[Op] = []


def defop(name, forward, **kw):
    op = Op(name, forward, **kw)
    BUILTINS.append(op)
    return op


# Source nodes of a graph: a variable bound by the user, and a constant of the program.
VAR = Op("var", None, arity=0, public=False, doc="an input variable")
CONST = Op("const", None, arity=0, public=False, doc="a constant")


# ================================================================== helpers for check
#
# ``op.batch(fwd, flags, ndims, params)``: the checker evaluates many perturbed copies of one
# input at once, stacked on a new leading axis.  It returns a function of the op's inputs
# (params baked in), where the inputs with ``flags[k]`` carry that leading axis and
# ``ndims[k]`` is each input's own rank; or None when the op cannot be batched (the checker
# then perturbs one element at a time).  ``fwd`` is ``op.forward`` or ``op.cforward``.

def B_ELEMENTWISE(fwd, flags, ndims, params):
    n = max(ndims)
    pads = [(k, n - d) for k, (f, d) in enumerate(zip(flags, ndims)) if f and d < n]
    if not pads and not params:
        return fwd  # NumPy broadcasting lines the leading axis up by itself

    def run(*xs):  # give batched inputs of lower rank length-1 axes after the batch axis
        xs = list(xs)
        for k, pad in pads:
            x = xs[k]
            xs[k] = x.reshape(x.shape[:1] + (1,) * pad + x.shape[1:])
        return fwd(*xs, *params)
    return run


def _shift(axis):
    """An axis of the unbatched input as an axis of the batched one."""
    if axis is None:
        return None
    if isinstance(axis, tuple):
        return tuple(_shift(a) for a in axis)
    return axis + 1 if axis >= 0 else axis


def B_REDUCE(fwd, flags, ndims, params):
    """A unary op whose first param is an axis (or axes; None: every axis)."""
    axis = params[0] if params else None
    axis = tuple(range(1, ndims[0] + 1)) if axis is None else _shift(axis)
    rest = params[1:]
    return lambda x: fwd(x, axis, *rest)


def B_AXIS(fwd, flags, ndims, params):
    """A unary op whose first param is one axis (never None)."""
    axis, rest = _shift(params[0]), params[1:]
    return lambda x: fwd(x, axis, *rest)


def B_SAME(fwd, flags, ndims, params):
    """An op that already works on a leading batch axis (NumPy's linalg on stacks)."""
    if not all(flags):
        return None
    return lambda *xs: fwd(*xs, *params)


def _cstep(f, df):
    """A complex-step forward for a function NumPy cannot continue to complex numbers:
    f at the real part plus i times the imaginary part times f' (all the step needs)."""
    def run(x, *params):
        if not np.iscomplexobj(x):
            return f(x, *params)
        return f(x.real, *params) + 1j * x.imag * df(x.real, *params)
    return run


def _side_of_zero(x, *rest):
    return np.sign(np.real(x))


def _sides(*points):
    """kink_side of a one-input op with kinks at fixed points."""
    def side(x, *rest):
        return np.stack([np.sign(np.real(x) - p) for p in points])
    return side


# ================================================================== axis helpers

def _axes(x, axis):
    """``axis`` (None, an integer or a tuple) as a sorted tuple of axes of x; a clear
    ValueError naming x's shape when one is out of range."""
    nd = np.ndim(x)
    if axis is None:
        return tuple(range(nd))
    items = axis if isinstance(axis, tuple) else (axis,)
    out = []
    for a in items:
        if not -nd <= a < nd:
            raise ValueError(_bad_axis(a, np.shape(x)))
        out.append(a % nd)
    if len(set(out)) != len(out):
        raise ValueError(f"axis {axis} names an axis twice")
    return tuple(sorted(out))


def _axis1(x, axis, extra=0):
    """One axis of x (``extra``: positions past the end allowed, as unsqueeze's)."""
    nd = np.ndim(x) + extra
    if not -nd <= axis < nd:
        raise ValueError(_bad_axis(axis, np.shape(x), extra))
    return axis % nd


def _bad_axis(a, shape, extra=0):
    nd = len(shape) + extra
    if not shape and not extra:
        return f"axis {a} is out of range: a scalar has no axes"
    return f"axis {a} is out of range for shape {shape} (axes 0 to {nd - 1}, or -1 to -{nd})"


def _kept(x, axis):
    """x's shape with the reduced axes kept as length 1."""
    axes = _axes(x, axis)
    return tuple(1 if i in axes else n for i, n in enumerate(np.shape(x)))


def _count(x, axis):
    shape = np.shape(x)
    return int(np.prod([shape[a] for a in _axes(x, axis)], dtype=np.int64))


def _spread(g, x, axis, keepdims=False):
    """Broadcast a reduction's upstream gradient back over the reduced axes."""
    return broadcast_to(reshape(g, _kept(x, axis)), np.shape(x))


def _keep(v, x, axis):
    """A reduction's result (without kept axes) reshaped to broadcast against x."""
    return reshape(v, _kept(x, axis))


def _sum_to_product(a, b, shape):
    """``sum_to(a * b, shape)`` in one pass: an einsum of the two, never the full-size
    product (the reverse pass's rule for a broadcast input of ``*`` and ``/``)."""
    full = np.broadcast_shapes(np.shape(a), np.shape(b))
    n = len(full)
    lead = n - len(shape)
    if n == 0 or n > len(_LETTERS) or lead < 0:
        return sum_to(a * b, shape)
    axes = _LETTERS[:n]
    keep = "".join(axes[lead + i] for i, m in enumerate(shape) if m == full[lead + i])
    r = einsum(a, b, f"{axes[n - np.ndim(a):]},{axes[n - np.ndim(b):]}->{keep}")
    return _reshaped(r, shape)


def _real(v):
    return v.real if np.iscomplexobj(v) else v


# ================================================================== shape ops (also internal)

def _sum_to(x, shape):
    """Sum ``x`` down to ``shape``: the adjoint of NumPy broadcasting."""
    xshape = np.shape(x)
    if xshape == shape:
        return x
    lead = len(xshape) - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and xshape[lead + i] != 1)
    return np.reshape(np.sum(x, axis=axes), shape)


def _broadcast_to(x, shape):
    return np.broadcast_to(x, shape)


def _reshape(x, shape):
    if sum(1 for n in shape if n == -1) > 1:
        raise ValueError(f"reshape takes at most one -1 in its shape, got {shape}")
    try:
        return np.reshape(x, shape)
    except ValueError:
        raise ValueError(f"cannot reshape shape {np.shape(x)} ({np.size(x)} elements) "
                         f"into {shape}") from None


def _index_grad(g, key, shape):
    out = np.zeros(shape, dtype=np.result_type(g))
    out[key] = g
    return out


_SHAPE = Param("shape", REQUIRED, "shape")

sum_to = defop("sum_to", _sum_to, arity=1, params=(_SHAPE,),
               vjps=(lambda g, out, x, shape: broadcast_to(g, np.shape(x)),),
               formulas=("broadcast g back to x's shape",), torch="x.sum_to_size(shape)",
               doc="sum over broadcast axes down to a shape (the adjoint of broadcasting)")
broadcast_to = defop("broadcast_to", _broadcast_to, arity=1, params=(_SHAPE,),
                     vjps=(lambda g, out, x, shape: sum_to(g, np.shape(x)),),
                     formulas=("sum g over the broadcast axes",),
                     torch="torch.broadcast_to(x, shape)",
                     doc="repeat along new or length-1 axes, as NumPy broadcasting")
reshape = defop("reshape", _reshape, arity=1, params=(_SHAPE,),
                vjps=(lambda g, out, x, shape: reshape(g, np.shape(x)),),
                formulas=("reshape(g, shape of x)",), torch="torch.reshape(x, shape)",
                batch=lambda fwd, flags, ndims, params: (
                    lambda x: fwd(x, (x.shape[0],) + tuple(params[0]))),
                doc="same elements, another shape (one -1 allowed)")
index_grad = defop("index_grad", _index_grad, arity=1, public=False,
                   params=(Param("key", REQUIRED, "key"), _SHAPE),
                   vjps=(lambda g, out, x, key, shape: index(g, key),),
                   formulas=("g[key]",), doc="zeros of a shape with x placed at key")


# ================================================================== comparisons and where
#
# No gradient (0 wherever it exists).  They are public: the derivative of relu is step(x),
# of abs sign(x), and the symbolic derivative prints them.

def _cmp(np_fn, name, symbol, word, torch):
    def fwd(a, b):
        return np_fn(_real(a), _real(b)).astype(np.result_type(_real(a), _real(b), np.float32))
    zero = (lambda out, a, b: 0 * out, lambda out, a, b: 0 * out)
    return defop(name, fwd, arity=2, symbol=symbol, partials=zero, formulas=("0", "0"),
                 kinks="a = b", doc=f"1 where a {word} b, else 0", torch=torch,
                 batch=B_ELEMENTWISE,
                 kink_side=lambda a, b: np.sign(np.real(a) - np.real(b)))


lt = _cmp(np.less, "lt", "<", "<", "torch.lt(a, b)  (a < b)")
le = _cmp(np.less_equal, "le", "<=", "<=", "torch.le(a, b)  (a <= b)")
gt = _cmp(np.greater, "gt", ">", ">", "torch.gt(a, b)  (a > b)")
ge = _cmp(np.greater_equal, "ge", ">=", ">=", "torch.ge(a, b)  (a >= b)")
eq = _cmp(np.equal, "eq", "==", "=", "torch.eq(a, b)  (a == b)")
ne = _cmp(np.not_equal, "ne", "!=", "!=", "torch.ne(a, b)  (a != b)")


def _where(c, a, b):
    return np.where(_real(c) != 0, a, b)


def _where_a(out, c, a, b):
    return where(c, 1 + 0 * out, 0 * out)


def _where_b(out, c, a, b):
    return where(c, 0 * out, 1 + 0 * out)


where = defop("where", _where, arity=3, argnames=("c", "a", "b"),
              partials=(lambda out, c, a, b: 0 * out, _where_a, _where_b),
              formulas=("0", "1 where c != 0, else 0", "0 where c != 0, else 1"),
              kinks="where c changes", doc="a where c is non-zero, else b",
              torch="torch.where(c != 0, a, b)", batch=B_ELEMENTWISE,
              kink_side=lambda c, a, b: np.real(c) != 0)


def _step(x):
    # Heaviside step with step(0) = 0: the derivative of relu, by PyTorch's convention.
    x = _real(x)
    return (x > 0).astype(np.result_type(x, np.float32))


def _sign(x):
    return np.sign(_real(x))


step = defop("step", _step, arity=1, partials=(lambda out, x: 0 * out,), formulas=("0",),
             kinks="x = 0", doc="1 if x > 0, else 0 (relu's derivative)",
             torch="torch.heaviside(x, torch.tensor(0.))", batch=B_ELEMENTWISE,
             kink_side=_side_of_zero)
sign = defop("sign", _sign, arity=1, partials=(lambda out, x: 0 * out,), formulas=("0",),
             kinks="x = 0", doc="-1, 0 or 1", torch="torch.sign(x)", batch=B_ELEMENTWISE,
             kink_side=_side_of_zero)


def _rounding(name, fn, doc, side):
    def fwd(x):
        return fn(_real(x))
    return defop(name, fwd, arity=1, partials=(lambda out, x: 0 * out,), formulas=("0",),
                 kinks="where the result jumps (derivative taken as 0)", doc=doc,
                 torch=f"torch.{name}(x)", batch=B_ELEMENTWISE,
                 kink_side=lambda x: side(np.real(x)))


floor = _rounding("floor", np.floor, "the largest whole number <= x", np.floor)
ceil = _rounding("ceil", np.ceil, "the smallest whole number >= x", np.ceil)
round = _rounding("round", np.round, "the nearest whole number (halves to even)",
                  lambda x: np.floor(x + 0.5))


# ================================================================== arithmetic

add = defop("add", np.add, arity=2, symbol="+", partials=(1, 1), batch=B_ELEMENTWISE,
            formulas=("1", "1"), doc="a + b", torch="a + b")
sub = defop("sub", np.subtract, arity=2, symbol="-", partials=(1, -1), batch=B_ELEMENTWISE,
            formulas=("1", "-1"), doc="a - b", torch="a - b")
mul = defop("mul", np.multiply, arity=2, symbol="*", batch=B_ELEMENTWISE,
            partials=(lambda out, a, b: b, lambda out, a, b: a),
            # a broadcast input (a bias, layer norm's gain): g * the other, summed in one pass
            broadcast_vjps=(lambda g, out, a, b: _sum_to_product(g, b, np.shape(a)),
                            lambda g, out, a, b: _sum_to_product(g, a, np.shape(b))),
            formulas=("b", "a"), doc="a * b", torch="a * b")
div = defop("div", np.true_divide, arity=2, symbol="/", batch=B_ELEMENTWISE,
            partials=(lambda out, a, b: 1 / b, lambda out, a, b: -out / b),
            # a broadcast b (layer norm's x / std): sum g * out first, then divide by -b
            broadcast_vjps=(lambda g, out, a, b: _sum_to_product(g, 1 / b, np.shape(a)),
                            lambda g, out, a, b: _sum_to_product(g, out, np.shape(b)) / -b),
            formulas=("1 / b", "-a / b^2"), domain="b != 0", doc="a / b", torch="a / b")
neg = defop("neg", np.negative, arity=1, symbol="-", partials=(-1,), batch=B_ELEMENTWISE,
            formulas=("-1",), doc="-x", torch="-x")


def _pow_base(out, a, b):
    # b * a^(b-1), and 0 where b = 0 (so d/da a^0 = 0 even at a = 0, as PyTorch).
    return where(eq(b, 0), 0 * out, b * a ** (b - 1))


def _pow_exponent(out, a, b):
    # a^b * log(a), and 0 where a = 0 and b >= 0 (the limit; PyTorch's convention).
    return where(eq(a, 0) * (1 - gt(0, b)), 0 * out, out * log(a))


pow = defop("pow", np.power, arity=2, symbol="**", partials=(_pow_base, _pow_exponent),
            formulas=("b * a^(b-1)", "a^b * log(a)"),
            domain="a > 0, or a whole-number b", kinks="a = 0 with b < 1",
            doc="a ** b (also a ^ b, pow(a, b))", torch="torch.pow(a, b)  (a ** b)",
            batch=B_ELEMENTWISE, kink_side=_side_of_zero)


def _c_where_real_max(a, b):
    return np.where(a.real > b.real, a, np.where(a.real < b.real, b, (a + b) / 2))


# Ties split the gradient evenly between a and b (PyTorch, JAX).
maximum = defop("max", np.maximum, arity=2,
                partials=(lambda out, a, b: gt(a, b) + 0.5 * eq(a, b),
                          lambda out, a, b: gt(b, a) + 0.5 * eq(a, b)),
                formulas=("1 if a > b, 1/2 if a = b, else 0", "1 if b > a, 1/2 if a = b, else 0"),
                kinks="a = b (the gradient is split evenly)", doc="elementwise maximum",
                torch="torch.maximum(a, b)", batch=B_ELEMENTWISE,
                cforward=_c_where_real_max,
                kink_side=lambda a, b: np.sign(np.real(a) - np.real(b)))
minimum = defop("min", np.minimum, arity=2,
                partials=(lambda out, a, b: gt(b, a) + 0.5 * eq(a, b),
                          lambda out, a, b: gt(a, b) + 0.5 * eq(a, b)),
                formulas=("1 if a < b, 1/2 if a = b, else 0", "1 if b < a, 1/2 if a = b, else 0"),
                kinks="a = b (the gradient is split evenly)", doc="elementwise minimum",
                torch="torch.minimum(a, b)", batch=B_ELEMENTWISE,
                cforward=lambda a, b: _c_where_real_max(-a, -b) * -1,
                kink_side=lambda a, b: np.sign(np.real(a) - np.real(b)))


def _atan2(y, x):
    return np.arctan2(y, x)


atan2 = defop("atan2", _atan2, arity=2, argnames=("y", "x"), batch=B_ELEMENTWISE,
              partials=(lambda out, y, x: x / (x * x + y * y),
                        lambda out, y, x: -y / (x * x + y * y)),
              formulas=("x / (x^2 + y^2)", "-y / (x^2 + y^2)"), domain="(y, x) != (0, 0)",
              cforward=lambda y, x: np.arctan2(np.real(y), np.real(x)) + 1j * (
                  np.imag(y) * np.real(x) - np.imag(x) * np.real(y)) / (
                  np.real(x) ** 2 + np.real(y) ** 2),
              doc="the angle of the point (x, y)", torch="torch.atan2(y, x)")


def _clip(x, lo, hi):
    return np.minimum(np.maximum(x, lo), hi)


def _c_clip(x, lo, hi):
    lo_, hi_, x_ = np.real(lo), np.real(hi), np.real(x)
    return np.where(x_ < lo_, lo, np.where(x_ > hi_, hi, x)) * (lo_ <= hi_) + \
        hi * (lo_ > hi_)


def _clip_x(out, x, lo, hi):
    return ge(x, lo) * le(x, hi)


def _clip_lo(out, x, lo, hi):
    return lt(x, lo) * le(lo, hi)


def _clip_hi(out, x, lo, hi):
    return 1 - ge(x, lo) * le(x, hi) - lt(x, lo) * le(lo, hi)


clip = defop("clip", _clip, arity=3, argnames=("x", "lo", "hi"), aliases=("clamp",),
             partials=(_clip_x, _clip_lo, _clip_hi),
             formulas=("1 where lo <= x <= hi, else 0", "1 where x < lo, else 0",
                       "1 where x > hi, else 0"),
             kinks="x = lo, x = hi (x gets the gradient at both ends)",
             doc="x limited to [lo, hi]; the bounds are numbers or arrays",
             torch="torch.clamp(x, lo, hi)", batch=B_ELEMENTWISE, cforward=_c_clip,
             kink_side=lambda x, lo, hi: np.stack(np.broadcast_arrays(
                 np.sign(np.real(x) - np.real(lo)), np.sign(np.real(x) - np.real(hi)))))


# ================================================================== elementwise functions

def _unary(name, forward, partial, formula, **kw):
    kw.setdefault("torch", f"torch.{name}(x)")
    kw.setdefault("batch", B_ELEMENTWISE)
    return defop(name, forward, arity=1, partials=(partial,), formulas=(formula,), **kw)


def _sigmoid(x):
    # Stable both ways: never exp of a large positive number.
    z = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + z), z / (1 + z))


def _relu(x):
    return np.maximum(x, 0)


def _softplus(x):
    return np.logaddexp(0, x)


_LN2, _LN10 = math.log(2), math.log(10)
_TWO_OVER_SQRT_PI = 2 / math.sqrt(math.pi)
_RSQRT2, _RSQRT2PI = 1 / math.sqrt(2), 1 / math.sqrt(2 * math.pi)


def _erf_real(x):
    """erf to double precision, vectorised: the Taylor series for |x| < 3, the continued
    fraction of erfc beyond (a loop over terms, never over elements)."""
    x = np.asarray(x)
    dtype = np.result_type(x, np.float32)
    x64 = x.astype(np.float64)
    a = np.abs(x64)
    small = a < 3
    xs = np.where(small, x64, 0.0)
    term, total, x2 = xs.copy(), xs.copy(), xs * xs
    for n in range(1, 70):
        term = term * -x2 / n
        total = total + term / (2 * n + 1)
    series = total * _TWO_OVER_SQRT_PI
    al = np.where(small, 3.0, a)
    # erfc(a) = exp(-a^2) / sqrt(pi) * 1 / (a + 1/2 / (a + 1 / (a + 3/2 / (a + ...))))
    frac = al
    for k in range(60, 0, -1):
        frac = al + (k / 2) / frac
    erfc = np.exp(-al * al) / math.sqrt(math.pi) / frac
    big = np.sign(x64) * (1 - erfc)
    return np.where(small, series, big).astype(dtype)


def _erf_d(x):
    return _TWO_OVER_SQRT_PI * np.exp(-x * x)


def _log1p(x):
    return np.log1p(x)


exp = _unary("exp", np.exp, lambda out, x: out, "exp(x)")
exp2 = _unary("exp2", np.exp2, lambda out, x: out * _LN2, "2^x * log(2)",
              cforward=lambda x: np.exp(x * _LN2))
expm1 = _unary("expm1", np.expm1, lambda out, x: out + 1, "exp(x)",
               cforward=_cstep(np.expm1, np.exp))
log = _unary("log", np.log, lambda out, x: 1 / x, "1 / x", domain="x > 0")
log1p = _unary("log1p", _log1p, lambda out, x: 1 / (1 + x), "1 / (1 + x)", domain="x > -1",
               cforward=_cstep(np.log1p, lambda x: 1 / (1 + x)))
log2 = _unary("log2", np.log2, lambda out, x: 1 / (x * _LN2), "1 / (x * log(2))",
              domain="x > 0", cforward=lambda x: np.log(x) / _LN2)
log10 = _unary("log10", np.log10, lambda out, x: 1 / (x * _LN10), "1 / (x * log(10))",
               domain="x > 0", cforward=lambda x: np.log(x) / _LN10)
sqrt = _unary("sqrt", np.sqrt, lambda out, x: 0.5 / out, "1 / (2 * sqrt(x))",
              domain="x >= 0", kinks="x = 0 (derivative inf)", kink_side=_side_of_zero)
square = _unary("square", np.square, lambda out, x: 2 * x, "2 * x",
                cforward=lambda x: x * x)
reciprocal = _unary("reciprocal", np.reciprocal, lambda out, x: -out * out, "-1 / x^2",
                    domain="x != 0", cforward=lambda x: 1 / x)
sin = _unary("sin", np.sin, lambda out, x: cos(x), "cos(x)")
cos = _unary("cos", np.cos, lambda out, x: -sin(x), "-sin(x)")
tan = _unary("tan", np.tan, lambda out, x: 1 + out * out, "1 + tan(x)^2",
             domain="x != pi/2 + k pi")
asin = _unary("asin", np.arcsin, lambda out, x: 1 / sqrt(1 - x * x), "1 / sqrt(1 - x^2)",
              domain="-1 <= x <= 1", kinks="x = -1, 1 (derivative inf)")
acos = _unary("acos", np.arccos, lambda out, x: -1 / sqrt(1 - x * x), "-1 / sqrt(1 - x^2)",
              domain="-1 <= x <= 1", kinks="x = -1, 1 (derivative inf)")
atan = _unary("atan", np.arctan, lambda out, x: 1 / (1 + x * x), "1 / (1 + x^2)")
sinh = _unary("sinh", np.sinh, lambda out, x: cosh(x), "cosh(x)")
cosh = _unary("cosh", np.cosh, lambda out, x: sinh(x), "sinh(x)")
tanh = _unary("tanh", np.tanh, lambda out, x: 1 - out * out, "1 - tanh(x)^2")
erf = _unary("erf", _erf_real, lambda out, x: _TWO_OVER_SQRT_PI * exp(-x * x),
             "2 / sqrt(pi) * exp(-x^2)", cforward=_cstep(_erf_real, _erf_d))
sigmoid = _unary("sigmoid", _sigmoid, lambda out, x: out * (1 - out),
                 "sigmoid(x) * (1 - sigmoid(x))", cforward=lambda x: 1 / (1 + np.exp(-x)))
relu = _unary("relu", _relu, lambda out, x: step(x), "1 if x > 0, else 0",
              kinks="x = 0 (derivative taken as 0)", kink_side=_side_of_zero,
              cforward=lambda x: np.where(x.real > 0, x, 0), torch="torch.relu(x)")
softplus = _unary("softplus", _softplus, lambda out, x: sigmoid(x), "sigmoid(x)",
                  cforward=lambda x: np.where(x.real > 0, x + np.log1p(np.exp(-x)),
                                              np.log1p(np.exp(x))),
                  torch="torch.nn.functional.softplus(x)")
abs = _unary("abs", np.abs, lambda out, x: sign(x), "sign(x)",
             kinks="x = 0 (derivative taken as 0)", kink_side=_side_of_zero,
             cforward=lambda x: x * np.sign(x.real))


def _silu(x):
    return x * _sigmoid(x)


def _silu_d(out, x):
    s = sigmoid(x)
    return s * (1 + x * (1 - s))


def _mish(x):
    return x * np.tanh(_softplus(x))


def _mish_d(out, x):
    t = tanh(softplus(x))
    return t + x * sigmoid(x) * (1 - t * t)


silu = _unary("silu", _silu, _silu_d, "sigmoid(x) * (1 + x * (1 - sigmoid(x)))",
              cforward=lambda x: x / (1 + np.exp(-x)), torch="torch.nn.functional.silu(x)")
mish = _unary("mish", _mish, _mish_d,
              "tanh(softplus(x)) + x * sigmoid(x) * (1 - tanh(softplus(x))^2)",
              cforward=lambda x: x * np.tanh(np.log1p(np.exp(x))),
              torch="torch.nn.functional.mish(x)")


def _relu6(x):
    return np.minimum(np.maximum(x, 0), 6)


relu6 = _unary("relu6", _relu6, lambda out, x: gt(x, 0) * lt(x, 6), "1 if 0 < x < 6, else 0",
               kinks="x = 0, x = 6 (derivative taken as 0)", kink_side=_sides(0, 6),
               cforward=_cstep(_relu6, lambda x: ((x > 0) & (x < 6)).astype(x.dtype)),
               torch="torch.nn.functional.relu6(x)")


# -- elementwise with static parameters: a VJP each (partials get no params)

def _unary_p(name, forward, dfun, formula, params, **kw):
    """A one-input elementwise op with static params: ``dfun(x, *params)`` is its local
    derivative, written with library ops."""
    kw.setdefault("batch", B_ELEMENTWISE)
    return defop(name, forward, arity=1, params=params, formulas=(formula,),
                 vjps=(lambda g, out, x, *p: g * dfun(x, *p),), **kw)


def _leaky(x, slope):
    return np.where(x > 0, x, x * slope)


def _leaky_d(x, slope):
    return where(gt(x, 0), 1 + 0 * x, slope + 0 * x)


def _elu(x, alpha):
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))


def _elu_d(x, alpha):
    return where(gt(x, 0), 1 + 0 * x, alpha * exp(x))


def _hardtanh(x, lo, hi):
    return np.minimum(np.maximum(x, lo), hi)


def _hardtanh_d(x, lo, hi):
    return gt(x, lo) * lt(x, hi)


def _gelu(x, approximate):
    if approximate == "tanh":
        u = math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)
        return 0.5 * x * (1 + np.tanh(u))
    return x * 0.5 * (1 + _erf_real(x * _RSQRT2))


def _gelu_d(x, approximate):
    if approximate == "tanh":
        c = math.sqrt(2 / math.pi)
        t = tanh(c * (x + 0.044715 * x * x * x))
        return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * 0.044715 * x * x)
    return 0.5 * (1 + erf(x * _RSQRT2)) + x * exp(-0.5 * x * x) * _RSQRT2PI


def _np_gelu_d(x, approximate):
    if approximate == "tanh":
        c = math.sqrt(2 / math.pi)
        t = np.tanh(c * (x + 0.044715 * x ** 3))
        return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * 0.044715 * x * x)
    return 0.5 * (1 + _erf_real(x * _RSQRT2)) + x * np.exp(-0.5 * x * x) * _RSQRT2PI


leaky_relu = _unary_p(
    "leaky_relu", _leaky, _leaky_d, "1 if x > 0, else negative_slope",
    (Param("negative_slope", 0.01, "number"),),
    kinks="x = 0 (derivative taken as negative_slope)", kink_side=_side_of_zero,
    cforward=lambda x, s: np.where(np.real(x) > 0, x, x * s),
    torch="torch.nn.functional.leaky_relu(x, negative_slope=0.01)",
    doc="x if x > 0, else negative_slope * x")
elu = _unary_p(
    "elu", _elu, _elu_d, "1 if x > 0, else alpha * exp(x)", (Param("alpha", 1.0, "number"),),
    kinks="x = 0 (derivative taken as alpha)", kink_side=_side_of_zero,
    cforward=lambda x, a: np.where(np.real(x) > 0, x, a * np.expm1(np.where(
        np.real(x) > 0, 0, x))),
    torch="torch.nn.functional.elu(x, alpha=1.0)", doc="x if x > 0, else alpha * (exp(x) - 1)")
hardtanh = _unary_p(
    "hardtanh", _hardtanh, _hardtanh_d, "1 if min_val < x < max_val, else 0",
    (Param("min_val", -1.0, "number"), Param("max_val", 1.0, "number")),
    kinks="x = min_val, x = max_val (derivative taken as 0)",
    kink_side=lambda x, lo, hi: _sides(lo, hi)(x),
    cforward=lambda x, lo, hi: np.where(np.real(x) < lo, lo, np.where(np.real(x) > hi, hi, x)),
    torch="torch.nn.functional.hardtanh(x, min_val=-1.0, max_val=1.0)",
    doc="x limited to [min_val, max_val]")
gelu = _unary_p(
    "gelu", _gelu, _gelu_d, "Phi(x) + x * phi(x) (exact; tanh form with approximate=\"tanh\")",
    (Param("approximate", "none", "str", choices=("none", "tanh")),),
    cforward=_cstep(_gelu, _np_gelu_d), torch="torch.nn.functional.gelu(x, approximate='none')",
    doc="x * Phi(x), Phi the normal CDF; approximate=\"tanh\" for the tanh form")


# ================================================================== reductions

_AXES = Param("axis", None, "axes")
_KEEP = Param("keepdims", False, "bool")
_KW_AXES = Param("axis", None, "axes", positional=False)
_KW_KEEP = Param("keepdims", False, "bool", positional=False)


def _sum(x, axis=None, keepdims=False):
    axes = _axes(x, axis)
    if axis is None and not keepdims:
        return np.add.reduce(x, axis=None)  # np.sum, without its Python-level dispatch
    return np.add.reduce(x, axis=axes, keepdims=keepdims)


def _mean(x, axis=None, keepdims=False):
    return np.mean(x, axis=_axes(x, axis), keepdims=keepdims)


def _prod(x, axis=None, keepdims=False):
    return np.prod(x, axis=_axes(x, axis), keepdims=keepdims)


def _var(x, axis=None, correction=1, keepdims=False):
    axes = _axes(x, axis)
    if np.iscomplexobj(x):  # the complex step: the analytic continuation, not |x - m|^2
        d = x - np.mean(x, axis=axes, keepdims=True)
        return np.sum(d * d, axis=axes, keepdims=keepdims) / (_count(x, axis) - correction)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.var(x, axis=axes, ddof=correction, keepdims=keepdims)


def _std(x, axis=None, correction=1, keepdims=False):
    return np.sqrt(_var(x, axis, correction, keepdims))


def _norm(x, axis=None, keepdims=False):
    return np.sqrt(np.add.reduce(x * x, axis=_axes(x, axis), keepdims=keepdims))


def _max_all(x, axis=None, keepdims=False):
    return np.max(x, axis=_axes(x, axis), keepdims=keepdims)


def _min_all(x, axis=None, keepdims=False):
    return np.min(x, axis=_axes(x, axis), keepdims=keepdims)


def _extreme_vjp(g, out, x, axis=None, keepdims=False):
    # The gradient goes to the elements equal to the extreme, split evenly among ties.
    hit = eq(x, _keep(out, x, axis))
    return _spread(g, x, axis) * hit / sum_all(hit, axis, True)


def _c_extreme(pick):
    def run(x, axis=None, keepdims=False):
        axes = _axes(x, axis)
        m = pick(x.real, axis=axes, keepdims=True)
        hit = x.real == m
        return np.sum(x * hit, axis=axes, keepdims=keepdims) / np.sum(
            hit, axis=axes, keepdims=keepdims)
    return run


def _extreme_side(pick):
    def side(x, axis=None, keepdims=False):
        r = np.real(x)
        return np.sign(r - pick(r, axis=_axes(x, axis), keepdims=True))
    return side


def _prod_vjp(g, out, x, axis=None, keepdims=False):
    # PyTorch's values with zeros: the product of the others for a single zero, 0 for more.
    zero = eq(x, 0)
    nz = sum_all(zero, axis, True)
    safe = where(zero, 1 + 0 * x, x)
    p = prod(safe, axis, True)
    local = where(eq(nz, 0), p / safe, where(eq(nz, 1), zero * p, 0 * x))
    return _spread(g, x, axis) * local


def _var_vjp(g, out, x, axis=None, correction=1, keepdims=False):
    # the small factor first: two passes over x's elements, not four; sub and mean as calls,
    # so the reverse pass can take x - mean(x) from the forward pass when the program has it
    n = _count(x, axis)
    return sub(x, mean(x, axis, True)) * (_keep(g, x, axis) * (2 / (n - correction)))


def _std_vjp(g, out, x, axis=None, correction=1, keepdims=False):
    n = _count(x, axis)
    return sub(x, mean(x, axis, True)) * (_keep(g, x, axis) / (_keep(out, x, axis) *
                                                             (n - correction)))


def _norm_vjp(g, out, x, axis=None, keepdims=False):
    o = _keep(out, x, axis)
    return _spread(g, x, axis) * x / where(eq(o, 0), 1 + 0 * o, o)  # norm'(0) = 0


sum_all = defop("sum", _sum, arity=1, params=(_AXES, _KEEP), batch=B_REDUCE,
                vjps=(lambda g, out, x, axis=None, keepdims=False: _spread(g, x, axis),),
                formulas=("g, spread back over the elements summed",),
                torch="torch.sum(x, dim, keepdim=False)",
                doc="sum(x): all elements; sum(x, axis): along an axis or a tuple of axes")
mean = defop("mean", _mean, arity=1, params=(_AXES, _KEEP), batch=B_REDUCE,
             vjps=(lambda g, out, x, axis=None, keepdims=False:
                   _spread(g / _count(x, axis), x, axis),),
             formulas=("g / n, spread back over the n elements averaged",),
             torch="torch.mean(x, dim, keepdim=False)",
             doc="mean(x): all elements; mean(x, axis): along an axis or a tuple of axes")
max_all = defop("max", _max_all, arity=1, params=(_KW_AXES, _KW_KEEP), vjps=(_extreme_vjp,),
                formulas=("g at the maximum (split evenly among ties), 0 elsewhere",),
                kinks="where the maximum is tied", batch=B_REDUCE,
                cforward=_c_extreme(np.max), kink_side=_extreme_side(np.max),
                torch="torch.amax(x, dim, keepdim=False)",
                doc="the largest element (max(x, axis=1): along an axis)")
min_all = defop("min", _min_all, arity=1, params=(_KW_AXES, _KW_KEEP), vjps=(_extreme_vjp,),
                formulas=("g at the minimum (split evenly among ties), 0 elsewhere",),
                kinks="where the minimum is tied", batch=B_REDUCE,
                cforward=_c_extreme(np.min), kink_side=_extreme_side(np.min),
                torch="torch.amin(x, dim, keepdim=False)",
                doc="the smallest element (min(x, axis=1): along an axis)")
prod = defop("prod", _prod, arity=1, params=(_AXES, _KEEP), vjps=(_prod_vjp,),
             formulas=("g * the product of the other elements",), batch=B_REDUCE,
             torch="torch.prod(x, dim, keepdim=False)",
             doc="the product of the elements (along an axis or a tuple of axes)")
var = defop("var", _var, arity=1, batch=B_REDUCE, vjps=(_var_vjp,),
            params=(_AXES, Param("correction", 1, "int", positional=False), _KW_KEEP),
            formulas=("g * 2 * (x - mean(x)) / (n - correction)",),
            torch="torch.var(x, dim, correction=1, keepdim=False)",
            doc="variance, dividing by n - correction (1 by default, as PyTorch)")
std = defop("std", _std, arity=1, batch=B_REDUCE, vjps=(_std_vjp,),
            params=(_AXES, Param("correction", 1, "int", positional=False), _KW_KEEP),
            formulas=("g * (x - mean(x)) / ((n - correction) * std(x))",),
            kinks="where every element is equal (std = 0)",
            kink_side=lambda x, axis=None, c=1, k=False: _std(np.real(x), axis, c, True) > 0,
            torch="torch.std(x, dim, correction=1, keepdim=False)",
            doc="standard deviation: sqrt(var(x))")
norm = defop("norm", _norm, arity=1, params=(_KW_AXES, _KW_KEEP), batch=B_REDUCE,
             vjps=(_norm_vjp,), formulas=("g * x / norm(x), and 0 where norm(x) = 0",),
             kinks="x = 0 (derivative taken as 0)",
             kink_side=lambda x, axis=None, k=False: np.any(np.real(x) != 0),
             torch="torch.linalg.vector_norm(x, 2, dim, keepdim=False)",
             doc="the 2-norm of all elements (norm(x, axis=1): along an axis)")


# ================================================================== scans

def _flip(x, axis):
    return np.flip(x, _axes(x, axis))


def _cumsum(x, axis):
    return np.cumsum(x, axis=_axis1(x, axis))


def _cumprod(x, axis):
    return np.cumprod(x, axis=_axis1(x, axis))


def _cumsum_vjp(g, out, x, axis):
    return flip(cumsum(flip(g, axis), axis), axis)


def _cumprod_vjp(g, out, x, axis):
    ax = _axis1(x, axis)
    n = np.shape(x)[ax]
    if n * np.size(x) > 4_000_000:  # the quick rule; exact while x has no zeros
        return _cumsum_vjp(g * out, out, x, axis) / x
    # Exact with zeros: d out_j / d x_i = (prod_{k<i} x_k) (prod_{i<k<=j} x_k) for j >= i.
    # Lay the pairs (i, j) out on two trailing axes and take both products there.
    xl, gl = moveaxis(x, ax, -1), moveaxis(g, ax, -1)
    lead = np.shape(xl)[:-1]
    k = np.arange(n)
    after, before = k[None, :] > k[:, None], k[None, :] < k[:, None]   # [i, j]: j > i, j < i
    upper = k[None, :] >= k[:, None]
    xr = broadcast_to(unsqueeze(xl, -2), lead + (n, n))                 # [..., i, j] = x_j
    one = 1 + 0 * xr
    p = cumprod(where(after, xr, one), -1)                              # prod_{i<k<=j} x_k
    excl = prod(where(before, xr, one), -1)                             # prod_{k<i} x_k
    total = sum_all(where(upper, p * unsqueeze(gl, -2), 0 * xr), -1)
    return moveaxis(excl * total, -1, ax)


flip = defop("flip", _flip, arity=1, params=(Param("axis", REQUIRED, "axes"),),
             vjps=(lambda g, out, x, axis: flip(g, axis),), formulas=("flip(g, axis)",),
             torch="torch.flip(x, dims)", batch=B_AXIS,
             doc="the elements in reverse order along an axis (or a tuple of axes)")
cumsum = defop("cumsum", _cumsum, arity=1, params=(Param("axis", REQUIRED, "axis"),),
               vjps=(_cumsum_vjp,), formulas=("the reverse cumulative sum of g",),
               batch=B_AXIS, torch="torch.cumsum(x, dim)", doc="running sums along an axis")
cumprod = defop("cumprod", _cumprod, arity=1, params=(Param("axis", REQUIRED, "axis"),),
                vjps=(_cumprod_vjp,), batch=B_AXIS, torch="torch.cumprod(x, dim)",
                formulas=("sum over j >= i of g_j * d out_j / d x_i (exact with zeros while "
                          "length * size <= 4e6; beyond, revcumsum(g * out) / x)",),
                doc="running products along an axis")


# ================================================================== shapes

def _moveaxis(x, src, dst):
    return np.moveaxis(x, src, dst)


moveaxis = defop("moveaxis", _moveaxis, arity=1, public=False,
                 params=(Param("source", REQUIRED, "int"), Param("destination", REQUIRED, "int")),
                 vjps=(lambda g, out, x, s, d: moveaxis(g, d, s),),
                 formulas=("moveaxis(g, destination, source)",),
                 torch="torch.movedim(x, source, destination)", doc="move one axis")


def _flatten(x, start_dim=0, end_dim=-1):
    shape = np.shape(x)
    if not shape:
        return np.reshape(x, (1,))
    a, b = _axis1(x, start_dim), _axis1(x, end_dim)
    if a > b:
        raise ValueError(f"start_dim {start_dim} comes after end_dim {end_dim} "
                         f"for shape {shape}")
    return np.reshape(x, shape[:a] + (-1,) + shape[b + 1:])


def _squeeze(x, axis=None):
    shape = np.shape(x)
    axes = _axes(x, axis)
    drop = [a for a in axes if shape[a] == 1]  # as PyTorch: an axis longer than 1 stays
    return np.reshape(x, tuple(n for i, n in enumerate(shape) if i not in drop))


def _unsqueeze(x, axis):
    return np.expand_dims(x, _axis1(x, axis, extra=1))


def _perm(x, axes):
    nd = np.ndim(x)
    if axes is None:
        return tuple(range(nd - 1, -1, -1))
    if sorted(a % nd if -nd <= a < nd else a for a in axes) != list(range(nd)):
        raise ValueError(f"axes {axes} are not a permutation of the {nd} axes of "
                         f"shape {np.shape(x)}")
    return tuple(a % nd for a in axes)


def _transpose(x, axes=None):
    return np.transpose(x, _perm(x, axes))


def _transpose_vjp(g, out, x, axes=None):
    if axes is None:
        return transpose(g)
    return transpose(g, tuple(int(i) for i in np.argsort(_perm(x, axes))))


def _swapaxes(x):
    return np.swapaxes(x, -1, -2)


def _batch_transpose(fwd, flags, ndims, params):
    nd = ndims[0]
    perm = tuple(range(nd - 1, -1, -1)) if params[0] is None else tuple(
        a % nd for a in params[0])
    axes = (0,) + tuple(a + 1 for a in perm)
    return lambda x: np.transpose(x, axes)


def _batch_flatten(fwd, flags, ndims, params):
    if ndims[0] == 0:
        return lambda x: np.reshape(x, (-1, 1))
    a, b = (_shift(p) for p in params)
    return lambda x: fwd(x, a, b)


flatten = defop("flatten", _flatten, arity=1, batch=_batch_flatten,
                params=(Param("start_dim", 0, "int"), Param("end_dim", -1, "int")),
                vjps=(lambda g, out, x, a=0, b=-1: reshape(g, np.shape(x)),),
                formulas=("reshape(g, shape of x)",), torch="torch.flatten(x, start_dim, end_dim)",
                doc="the axes from start_dim to end_dim as one")
squeeze = defop("squeeze", _squeeze, arity=1, params=(_AXES,),
                batch=lambda fwd, flags, ndims, params: None if params[0] is None else (
                    lambda x: fwd(x, _shift(params[0]))),
                vjps=(lambda g, out, x, axis=None: reshape(g, np.shape(x)),),
                formulas=("reshape(g, shape of x)",), torch="torch.squeeze(x, dim)",
                doc="drop length-1 axes (all of them, or the ones named)")
unsqueeze = defop("unsqueeze", _unsqueeze, arity=1, params=(Param("axis", REQUIRED, "int"),),
                  batch=B_AXIS, vjps=(lambda g, out, x, axis: reshape(g, np.shape(x)),),
                  formulas=("reshape(g, shape of x)",), torch="torch.unsqueeze(x, dim)",
                  doc="insert a length-1 axis")
transpose = defop("transpose", _transpose, arity=1, params=(Param("axes", None, "perm"),),
                  vjps=(_transpose_vjp,), formulas=("g with the axes put back",),
                  batch=_batch_transpose, torch="x.permute(axes)  (x.T for a matrix)",
                  doc="reverse the axes (a matrix's transpose), or permute them: "
                      "transpose(x, (0, 2, 1))")
swapaxes = defop("swapaxes", _swapaxes, arity=1, public=False,
                 vjps=(lambda g, out, x: swapaxes(g),), formulas=("swapaxes(g)",),
                 torch="x.mT", doc="swap the last two axes",
                 batch=lambda fwd, flags, ndims, params: fwd if ndims[0] >= 2 else None)


def _same_ndim_items(name, xs, axis):
    nd = np.ndim(xs[0])
    for k, x in enumerate(xs):
        if np.ndim(x) != nd:
            raise ValueError(f"item {k + 1} has shape {np.shape(x)} but item 1 has "
                             f"shape {np.shape(xs[0])}")
    return nd


def _concat(*args):
    *xs, axis = args
    nd = _same_ndim_items("concat", xs, axis)
    if nd == 0:
        raise ValueError("concat joins arrays along an axis; scalars have none (use stack)")
    ax = _axis1(xs[0], axis)
    for k, x in enumerate(xs):
        if np.shape(x)[:ax] + np.shape(x)[ax + 1:] != np.shape(xs[0])[:ax] + \
                np.shape(xs[0])[ax + 1:]:
            raise ValueError(f"along axis {axis}, item {k + 1} has shape "
                             f"{np.shape(x)}, item 1 {np.shape(xs[0])}")
    return np.concatenate(xs, axis=ax)


def _stack_axis(*args):
    *xs, axis = args
    _same_ndim_items("stack", xs, axis)
    for k, x in enumerate(xs):
        if np.shape(x) != np.shape(xs[0]):
            raise ValueError(f"item {k + 1} has shape {np.shape(x)}, item 1 "
                             f"{np.shape(xs[0])}")
    return np.stack(xs, axis=_axis1(xs[0], axis, extra=1))


class _ConcatVjps:
    def __getitem__(self, k):
        def vjp(g, out, *args):
            *xs, axis = args
            ax = _axis1(xs[0], axis)
            start = sum(np.shape(x)[ax] for x in xs[:k])
            return index(g, (slice(None),) * ax + (slice(start, start + np.shape(xs[k])[ax]),))
        return vjp


class _StackVjps:
    def __getitem__(self, k):
        def vjp(g, out, *args):
            *xs, axis = args
            return index(g, (slice(None),) * _axis1(xs[0], axis, extra=1) + (k,))
        return vjp


def _batch_join(fwd, flags, ndims, params):
    axis = _shift(params[0])

    def run(*items):
        n = next(x.shape[0] for x, f in zip(items, flags) if f)
        return fwd(*[x if f else np.broadcast_to(x, (n,) + np.shape(x))
                     for x, f in zip(items, flags)], axis)
    return run


concat = defop("concat", _concat, arity=None, params=(Param("axis", 0, "int", False),),
               vjps=_ConcatVjps(), formulas=("its slice of g",), batch=_batch_join,
               argnames=("a", "b", "..."), aliases=("cat",),
               torch="torch.cat((a, b, ...), dim=0)", doc="join arrays along an existing axis")
stack_axis = defop("stack", _stack_axis, arity=None, params=(Param("axis", 0, "int", False),),
                   vjps=_StackVjps(), formulas=("its slice g[..., i, ...] (item i)",), batch=_batch_join,
                   argnames=("a", "b", "..."), torch="torch.stack((a, b, ...), dim=0)",
                   doc="join arrays of one shape along a new axis")


def _diag(x, diagonal=0):
    if np.ndim(x) not in (1, 2):
        raise ValueError(f"diag takes a vector or a matrix, got shape {np.shape(x)}")
    return np.diag(x, diagonal)


def _diag_vjp(g, out, x, diagonal=0):
    if np.ndim(x) == 1 or np.shape(x)[0] == np.shape(x)[1]:
        return diag(g, diagonal)
    return _on_diagonal(g, diagonal, np.shape(x))


def _on_diagonal(v, diagonal, shape):
    """An (n, m) matrix with vector v on its ``diagonal``, zeros elsewhere: diag(v, diagonal)
    (square, k + |diagonal| on a side) cut or padded with zeros to (n, m), so the rule is
    public ops (a printed derivative reads back)."""
    n, m = shape
    k = np.shape(v)[0]
    if k == 0:
        return broadcast_to(0 * sum_all(v), shape)
    sq = diag(v, diagonal)
    side = k + (diagonal if diagonal >= 0 else -diagonal)
    r, c = min(side, n), min(side, m)   # the rows and columns past these are all zero
    if (r, c) != (side, side):
        sq = index(sq, (slice(None, r), slice(None, c)))
    if (r, c) != (n, m):
        sq = index_grad(sq, (slice(None, r), slice(None, c)), (n, m))
    return sq


def _tri(fn):
    def run(x, diagonal=0):
        if np.ndim(x) < 2:
            raise ValueError(f"tril and triu take a matrix, got shape {np.shape(x)}")
        return fn(x, diagonal)
    return run


_DIAGONAL = Param("diagonal", 0, "int")
diag = defop("diag", _diag, arity=1, params=(_DIAGONAL,), vjps=(_diag_vjp,),
             formulas=("diag(g)",), torch="torch.diag(x, diagonal=0)",
             doc="a vector to a diagonal matrix, a matrix to its diagonal")
tril = defop("tril", _tri(np.tril), arity=1, params=(_DIAGONAL,),
             vjps=(lambda g, out, x, d=0: tril(g, d),), formulas=("tril(g)",),
             torch="torch.tril(x, diagonal=0)", doc="the lower triangle (zeros above)",
             batch=lambda fwd, flags, ndims, params: lambda x: fwd(x, *params))
triu = defop("triu", _tri(np.triu), arity=1, params=(_DIAGONAL,),
             vjps=(lambda g, out, x, d=0: triu(g, d),), formulas=("triu(g)",),
             torch="torch.triu(x, diagonal=0)", doc="the upper triangle (zeros below)",
             batch=lambda fwd, flags, ndims, params: lambda x: fwd(x, *params))


# ================================================================== linear algebra

def _matmul(a, b):
    try:
        return np.matmul(a, b)
    except ValueError:  # say it in the user's terms; checked only when NumPy refuses
        sa, sb = np.shape(a), np.shape(b)
        if not sa or not sb:
            raise ValueError(f"@ needs arrays of at least one axis, got shapes {sa} and {sb} "
                             f"(use * to multiply by a number)") from None
        ka, kb = sa[-1], sb[-2] if len(sb) > 1 else sb[0]
        if ka != kb:
            which = "second-to-last" if len(sb) > 1 else "only"
            raise ValueError(f"shapes {sa} and {sb} do not align: the last axis on the left "
                             f"({ka}) must match the {which} axis on the right ({kb})") from None
        raise


def _swap(x):
    return transpose(x) if np.ndim(x) == 2 else swapaxes(x)


def _as_matrices(g, a, b):
    """Give 1-D operands and the upstream gradient the 2-D shapes NumPy's matmul uses."""
    a2 = reshape(a, (1,) + np.shape(a)) if np.ndim(a) == 1 else a
    b2 = reshape(b, np.shape(b) + (1,)) if np.ndim(b) == 1 else b
    shape = np.broadcast_shapes(np.shape(a2)[:-2], np.shape(b2)[:-2]) \
        + (np.shape(a2)[-2], np.shape(b2)[-1])
    return _reshaped(g, shape), a2, b2


def _reshaped(x, shape):
    """reshape(x, shape), or x itself when it has that shape already (an array of its own
    stays one: the engine need not copy a gradient that is a view)."""
    return x if np.shape(x) == shape else reshape(x, shape)


def _matmul_da(g, out, a, b):
    if np.ndim(a) == 2 and np.ndim(b) == 2:
        return g @ transpose(b)
    if np.ndim(a) == 1 and np.ndim(b) == 1:
        return g * b
    if np.ndim(a) == 2 and np.ndim(b) == 1:  # matrix @ vector
        return outer(g, b)
    if np.ndim(a) == 1 and np.ndim(b) == 2:  # vector @ matrix
        return b @ g
    g2, a2, b2 = _as_matrices(g, a, b)
    return _reshaped(sum_to(g2 @ _swap(b2), np.shape(a2)), np.shape(a))


def _matmul_db(g, out, a, b):
    if np.ndim(a) == 2 and np.ndim(b) == 2:
        return transpose(a) @ g
    if np.ndim(a) == 1 and np.ndim(b) == 1:
        return g * a
    if np.ndim(a) == 2 and np.ndim(b) == 1:  # matrix @ vector
        return transpose(a) @ g
    if np.ndim(a) == 1 and np.ndim(b) == 2:  # vector @ matrix
        return outer(a, g)
    g2, a2, b2 = _as_matrices(g, a, b)
    return _reshaped(sum_to(_swap(a2) @ g2, np.shape(b2)), np.shape(b))


def _batch_matmul(fwd, flags, ndims, params):
    (fa, fb), (na, nb) = flags, ndims
    if na > 2 or nb > 2:
        return None
    if fa and fb:
        if na == 2 and nb == 2:
            return np.matmul
        if na == 2:
            return lambda a, b: np.matmul(a, b[..., None])[..., 0]
        if nb == 2:
            return lambda a, b: np.matmul(a[:, None, :], b)[:, 0, :]
        return lambda a, b: np.einsum("bk,bk->b", a, b)
    if fb and nb == 1:  # a @ (batch of vectors): the batch as rows, times a's transpose
        return lambda a, b: np.matmul(b, np.swapaxes(a, -1, -2)) if na == 2 else np.matmul(b, a)
    return np.matmul


def _dot(a, b):
    sa, sb = np.shape(a), np.shape(b)
    if len(sa) != 1 or sa != sb:
        raise ValueError(f"dot takes two vectors of one length, got shapes {sa} and {sb} "
                         f"(use @ for matrices)")
    return np.dot(a, b)


def _outer(a, b):
    if np.ndim(a) != 1 or np.ndim(b) != 1:
        raise ValueError(f"outer takes two vectors, got shapes {np.shape(a)} and {np.shape(b)}")
    return np.multiply.outer(a, b)


matmul = defop("matmul", _matmul, arity=2, symbol="@", vjps=(_matmul_da, _matmul_db),
               formulas=("g @ transpose(b) (an outer product if b is 1-D)",
                         "transpose(a) @ g (an outer product if a is 1-D)"),
               batch=_batch_matmul, torch="a @ b  (torch.matmul)",
               doc="matrix product (matrix-matrix, matrix-vector, vector-vector, batched)")
dot = defop("dot", _dot, arity=2, vjps=(lambda g, out, a, b: g * b, lambda g, out, a, b: g * a),
            formulas=("g * b", "g * a"), torch="torch.dot(a, b)",
            batch=lambda fwd, flags, ndims, params: (
                lambda a, b: np.einsum("...k,...k->...", a, b)),
            doc="inner product of two vectors of one length")
outer = defop("outer", _outer, arity=2, vjps=(lambda g, out, a, b: g @ b,
                                              lambda g, out, a, b: a @ g),
              formulas=("g @ b", "a @ g"), torch="torch.outer(a, b)",
              doc="the outer product of two vectors: out[i, j] = a[i] * b[j]")


# -- einsum

_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def einsum_terms(subscripts):
    """(input terms, output term or None) of einsum subscripts; ValueError when malformed.
    A term is a string of letters, with '.' standing for '...'."""
    s = subscripts.replace(" ", "")
    if s.count("->") > 1:
        raise ValueError(f"einsum subscripts {subscripts!r} have more than one '->'")
    lhs, arrow, rhs = s.partition("->")
    terms = lhs.split(",")
    for t in terms + ([rhs] if arrow else []):
        body = t.replace("...", ".")
        bad = [c for c in body if c not in _LETTERS and c != "."]
        if bad or body.count(".") > 1:
            what = f"the character {bad[0]!r}" if bad else "'...' twice"
            raise ValueError(f"einsum subscripts {subscripts!r}: a term has {what}; "
                             f"terms are letters and at most one '...', as in 'ij,jk->ik'")
    ins = [t.replace("...", ".") for t in terms]
    out = rhs.replace("...", ".") if arrow else None
    if out is not None:
        used = set("".join(ins))
        letters = out.replace(".", "")
        for c in letters:
            if c not in used:
                raise ValueError(f"einsum subscripts {subscripts!r}: the output letter {c!r} "
                                 f"is in no operand")
        if len(set(letters)) != len(letters):
            raise ValueError(f"einsum subscripts {subscripts!r}: the output repeats a letter "
                             f"({rhs!r}); a letter repeated in an operand ('ii->i') takes a "
                             f"diagonal, but the output names each axis once")
    return ins, out


def _einsum_explicit(subscripts, xs):
    """The subscripts with '...' spelled out in letters for these operands: (ins, out)."""
    ins, out = einsum_terms(subscripts)
    if len(ins) != len(xs):
        raise ValueError(f"einsum subscripts {subscripts!r} name {len(ins)} operand"
                         f"{'s' * (len(ins) != 1)}, got {len(xs)}")
    free = [c for c in _LETTERS if c not in subscripts]
    n_ell = 0
    for k, (t, x) in enumerate(zip(ins, xs)):
        named = len(t.replace(".", ""))
        nd = np.ndim(x)
        if ("." in t and nd < named) or ("." not in t and nd != named):
            raise ValueError(f"operand {k + 1} has shape {np.shape(x)} ({nd} {'axis' if nd == 1 else 'axes'}) "
                             f"but its subscripts {t.replace('.', '...')!r} name {named}")
        if "." in t:
            n_ell = max(n_ell, nd - named)
    ell = "".join(free[:n_ell])
    full = []
    sizes = {}
    for k, (t, x) in enumerate(zip(ins, xs)):
        e = np.ndim(x) - len(t.replace(".", ""))
        t = t.replace(".", ell[n_ell - e:] if e else "")
        for j, (c, n) in enumerate(zip(t, np.shape(x))):
            first = t.index(c)
            if first < j and np.shape(x)[first] != n:  # 'ii': a diagonal, of a square
                raise ValueError(f"operand {k + 1} repeats subscript {c!r} over axes of "
                                 f"lengths {np.shape(x)[first]} and {n} (shape "
                                 f"{np.shape(x)}): a diagonal needs them equal")
            if c in sizes and sizes[c][0] != n and 1 not in (n, sizes[c][0]):
                raise ValueError(f"subscript {c!r} is {sizes[c][0]} long in operand "
                                 f"{sizes[c][1]} but {n} in operand {k + 1}")
            sizes.setdefault(c, (n, k + 1))
        full.append(t)
    if out is None:
        counts = "".join(full)
        out = ell + "".join(sorted(c for c in set(counts) if counts.count(c) == 1 and
                                   c not in ell))
    else:
        out = out.replace(".", ell)
    return full, out


def _einsum(*args):
    *xs, subscripts = args
    ins, out = _einsum_explicit(subscripts, xs)
    spec = ",".join(ins) + "->" + out
    return np.einsum(spec, *xs, optimize=len(xs) > 1)


class _EinsumVjps:
    def __getitem__(self, k):
        def vjp(g, out, *args):
            *xs, subscripts = args
            ins, outs = _einsum_explicit(subscripts, xs)
            target = ins[k]
            others = [ins[j] for j in range(len(xs)) if j != k]
            seen = set(outs).union(*others) if others else set(outs)
            uniq = "".join(dict.fromkeys(target))
            keep = "".join(c for c in uniq if c in seen)
            spec = ",".join([outs] + others) + "->" + keep
            r = einsum(g, *[xs[j] for j in range(len(xs)) if j != k], spec)
            shape = np.shape(xs[k])
            if uniq != target:  # a letter repeated in x_k ('ii'): r goes on the diagonal
                r = _einsum_diagonal(r, keep, target, shape, ins + [outs])
                return sum_to(r, shape) if np.shape(r) != shape else r
            if keep != target:  # letters summed inside x_k alone: broadcast g back over them
                mid = tuple(n if c in keep else 1 for c, n in zip(target, shape))
                r = broadcast_to(reshape(r, mid), shape)
            elif np.shape(r) != shape:
                r = sum_to(r, shape)
            return r
        return vjp


def _einsum_diagonal(r, keep, target, shape, terms):
    """The array of ``shape`` (subscripts ``target``, a letter repeated) that holds r
    (subscripts ``keep``) on its diagonals, zeros off them, and r broadcast over the letters
    not in ``keep``: diag(r) for 'ii', else an einsum of r with identity matrices."""
    size = {c: n for c, n in zip(target, shape)}
    if len(target) == 2 and keep == target[0]:
        return diag(r)
    used = set("".join(terms))
    free = iter(c for c in _LETTERS if c not in used)
    subs, operands, names = [keep], [r], []
    for c in target:
        if c in names:
            f = next(free)
            subs.append(c + f)
            operands.append(np.eye(size[c], dtype=getattr(r, "dtype", np.float64)))
            names.append(f)
        else:
            names.append(c)
    for c in dict.fromkeys(target):
        if c not in keep:
            subs.append(c)
            operands.append(np.ones(size[c], dtype=getattr(r, "dtype", np.float64)))
    return einsum(*operands, ",".join(subs) + "->" + "".join(names))


einsum = defop("einsum", _einsum, arity=None, lead=1, vjps=_EinsumVjps(),
               params=(Param("subscripts", REQUIRED, "str"),), argnames=("a", "b", "..."),
               formulas=("an einsum of g with the other operands (put back on the diagonal "
                         "for a letter repeated in the item)",),
               torch="torch.einsum(subscripts, a, b, ...)",
               doc="Einstein summation: einsum(\"ij,jk->ik\", a, b); a letter repeated in "
                   "one operand takes its diagonal (\"ii->i\")")


# -- matrices

def _square(x, name):
    s = np.shape(x)
    if len(s) < 2 or s[-1] != s[-2]:
        raise ValueError(f"{name} takes a square matrix (or a stack of them), got shape {s}")


def _trace(x):
    if np.ndim(x) != 2:
        raise ValueError(f"trace takes a matrix, got shape {np.shape(x)}")
    return np.trace(x)


def _trace_vjp(g, out, x):
    n, m = np.shape(x)
    d = broadcast_to(g, (min(n, m),))
    return diag(d) if n == m else _on_diagonal(d, 0, (n, m))


def _det(x):
    _square(x, "det")
    return np.linalg.det(x)


def _inv(x):
    _square(x, "inv")
    try:
        return np.linalg.inv(x)
    except np.linalg.LinAlgError:
        raise ValueError(_singular("inv", x, "has no inverse")) from None


def _singular(name, x, what):
    s = np.shape(x)
    which = "the matrix is" if len(s) == 2 else "a matrix of the stack is"
    return f"{which} singular (shape {s}): it {what}"


def _others_product(s):
    """prod over j != i of s[..., j], for each i, without dividing (zeros welcome)."""
    one = np.ones_like(s[..., :1])
    left = np.cumprod(np.concatenate([one, s[..., :-1]], axis=-1), axis=-1)
    right = np.flip(np.cumprod(np.concatenate([one, np.flip(s[..., 1:], -1)], axis=-1),
                               axis=-1), -1)
    return left * right


def _adjugate(x):
    """adj(x) = det(x) inv(x), by the SVD (x = U S V^H: adj = det(U) det(V^H) V diag(prod of
    the other singular values) U^H), so finite and exact at singular matrices too."""
    _square(x, "adjugate")
    x = np.asarray(x)
    n = x.shape[-1]
    if n == 0:
        return np.array(x, dtype=np.result_type(x, np.float64))
    u, sv, vh = np.linalg.svd(x)
    phase = np.linalg.det(u) * np.linalg.det(vh)
    v, uh = np.conj(np.swapaxes(vh, -1, -2)), np.conj(np.swapaxes(u, -1, -2))
    return phase[..., None, None] * ((v * _others_product(sv)[..., None, :]) @ uh)


def _is_vector_rhs(a, b):
    return np.ndim(b) == 1 or (np.ndim(b) == np.ndim(a) - 1 and
                               np.shape(b) == np.shape(a)[:-1])


def _solve(a, b):
    _square(a, "solve")
    n = np.shape(a)[-1]
    if _is_vector_rhs(a, b):
        if np.shape(b)[-1] != n:
            raise ValueError(f"A has shape {np.shape(a)} but b has shape {np.shape(b)}; "
                             f"b's length must be {n}")
        return _solved(a, np.asarray(b)[..., None])[..., 0]
    if np.ndim(b) < 2 or np.shape(b)[-2] != n:
        raise ValueError(f"A has shape {np.shape(a)} but B has shape {np.shape(b)}; "
                         f"B's second-to-last axis must be {n}")
    return _solved(a, b)


def _solved(a, b):
    try:
        return np.linalg.solve(a, b)
    except np.linalg.LinAlgError:
        raise ValueError("A: " + _singular("solve", a, "gives no unique solution")) from None


def _det_vjp(g, out, x):
    # the cofactor matrix, transpose(adjugate(x)): det(x) * transpose(inv(x)) where x is
    # invertible, and its limit (finite, exact) where it is not
    a = _swap(adjugate(x))
    return a if np.shape(out) == () and _is_one(g) else reshape(g, np.shape(out) + (1, 1)) * a


def _is_one(g):
    return isinstance(g, (int, float)) and g == 1


def _adjugate_vjp(g, out, x):
    n = np.shape(x)[-1]
    if n <= 1:  # adj of a 1 x 1 matrix is [[1]]
        return 0 * g
    if n == 2:  # adj is linear, [[d, -b], [-c, a]]: its VJP is adj(g), at any x
        return adjugate(g)
    # (sum(g * adj) adj^T - adj^T g adj^T) / det where det != 0, written without the
    # division: g's rows as rank-one terms e_i g[i]^T, each term is the top-left block of
    # -adjugate([[x^T, e_i], [g[i], 0]]) (a bordered matrix): exact at singular x too
    lead = np.shape(x)[:-2]
    dt = getattr(g, "dtype", np.float64)
    eye = np.eye(n, dtype=dt)
    top = concat(broadcast_to(unsqueeze(_swap(x), -3), lead + (n, n, n)),
                 np.broadcast_to(eye[:, :, None], lead + (n, n, 1)), -1)
    bottom = concat(unsqueeze(g, -2), np.zeros(lead + (n, 1, 1), dtype=dt), -1)
    r = adjugate(concat(top, bottom, -2))                          # (..., n, n+1, n+1)
    key = (Ellipsis, slice(None, n), slice(None, n))
    return -sum_all(index(r, key), -3)


def _inv_vjp(g, out, x):
    t = _swap(out)
    return -(t @ g @ t)


def _solve_da(g, out, a, b):
    gb = solve(_swap(a), g)
    if _is_vector_rhs(a, b):
        n = np.shape(a)[-1]
        r = -reshape(gb, np.shape(gb) + (1,)) * reshape(out, np.shape(out)[:-1] + (1, n))
    else:
        r = -(gb @ _swap(out))
    return sum_to(r, np.shape(a)) if np.shape(r) != np.shape(a) else r


def _solve_db(g, out, a, b):
    r = solve(_swap(a), g)
    return sum_to(r, np.shape(b)) if np.shape(r) != np.shape(b) else r


trace = defop("trace", _trace, arity=1, vjps=(_trace_vjp,), torch="torch.trace(x)",
              formulas=("g on the diagonal, 0 elsewhere",),
              batch=lambda fwd, flags, ndims, params: lambda x: np.trace(x, axis1=1, axis2=2),
              doc="the sum of a matrix's diagonal")
det = defop("det", _det, arity=1, vjps=(_det_vjp,), batch=B_SAME,
            formulas=("g * transpose(adjugate(x)) (= g * det(x) * transpose(inv(x)), and "
                      "finite at singular x)",),
            torch="torch.linalg.det(x)", doc="determinant (of a matrix or a stack of them)")
adjugate = defop("adjugate", _adjugate, arity=1, vjps=(_adjugate_vjp,), batch=B_SAME,
                 formulas=("(sum(g * adj) * transpose(adj) - transpose(adj) @ g @ "
                           "transpose(adj)) / det(x), computed without dividing (by "
                           "adjugates of x bordered with g's rows); adjugate(g) for 2 x 2",),
                 torch="torch.linalg.det(x)[..., None, None] * torch.linalg.inv(x)",
                 doc="det(x) * inv(x), also at singular x (by the SVD): det's gradient is "
                     "its transpose")
inv = defop("inv", _inv, arity=1, vjps=(_inv_vjp,), batch=B_SAME,
            formulas=("-transpose(inv(x)) @ g @ transpose(inv(x))",), domain="x invertible",
            torch="torch.linalg.inv(x)", doc="matrix inverse (of a matrix or a stack of them)")
solve = defop("solve", _solve, arity=2, argnames=("A", "b"), vjps=(_solve_da, _solve_db),
              formulas=("-solve(transpose(A), g) @ transpose(out)", "solve(transpose(A), g)"),
              domain="A invertible", torch="torch.linalg.solve(A, b)",
              doc="x with A @ x = b (b a vector or a matrix of columns)")


# ================================================================== neural-network ops

_AXIS_LAST = Param("axis", -1, "axis")


def _softmax(x, axis=-1):
    if np.ndim(x) == 0:
        return np.ones_like(x)
    ax = _axis1(x, axis)
    if np.shape(x)[ax] == 0:  # nothing to normalise (as PyTorch: an empty result)
        return np.array(x, dtype=np.result_type(x, np.float32))
    m = np.max(_real(x), axis=ax, keepdims=True)
    e = x - np.where(np.isfinite(m), m, 0)  # stable: exp never overflows
    if e.dtype.kind not in "fc":
        e = np.exp(e)
        return e / np.sum(e, axis=ax, keepdims=True)
    np.exp(e, out=e)  # one new array, not three (e is this call's own)
    return np.divide(e, np.sum(e, axis=ax, keepdims=True), out=e)


def _logsumexp(x, axis=-1, keepdims=False):
    if np.ndim(x) == 0:
        return x + 0
    axes = _axes(x, axis)
    if any(np.shape(x)[a] == 0 for a in axes):  # the log of an empty sum: -inf, as PyTorch
        return np.full(np.shape(np.sum(x, axis=axes, keepdims=keepdims)), -np.inf,
                       dtype=np.result_type(x, np.float32))
    m = np.max(_real(x), axis=axes, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)  # a row of -inf gives -inf (and one with inf, inf)
    with np.errstate(divide="ignore"):    # log(0) = -inf is the right answer there
        r = np.log(np.sum(np.exp(x - m), axis=axes, keepdims=True)) + m
    return r if keepdims else np.reshape(r, np.shape(np.sum(m, axis=axes)))


def _log_softmax(x, axis=-1):
    if np.ndim(x) == 0:
        return np.zeros_like(x)
    return x - _logsumexp(x, axis, True)


def _softmax_vjp(g, out, x, axis=-1):
    if np.ndim(x) == 0:
        return 0 * g
    return out * (g - _sum_to_product(g, out, _kept(x, axis)))


def _log_softmax_vjp(g, out, x, axis=-1):
    if np.ndim(x) == 0:
        return 0 * g
    return g - exp(out) * sum_all(g, axis, True)


def _logsumexp_vjp(g, out, x, axis=-1, keepdims=False):
    if np.ndim(x) == 0:
        return g
    return _spread(g, x, axis) * exp(x - _keep(out, x, axis))


def _batch_last_axis(scalar_case, fixed=B_AXIS):
    def make(fwd, flags, ndims, params):
        return scalar_case if ndims[0] == 0 else fixed(fwd, flags, ndims, params)
    return make


softmax = defop("softmax", _softmax, arity=1, params=(_AXIS_LAST,), vjps=(_softmax_vjp,),
                batch=_batch_last_axis(np.ones_like),
                formulas=("softmax(x) * (g - sum(g * softmax(x), axis))",),
                torch="torch.softmax(x, dim=-1)",
                doc="exp(x) / sum(exp(x)) along an axis (the last by default), computed stably")
log_softmax = defop("log_softmax", _log_softmax, arity=1, params=(_AXIS_LAST,),
                    vjps=(_log_softmax_vjp,), batch=_batch_last_axis(np.zeros_like),
                    formulas=("g - softmax(x) * sum(g, axis)",),
                    torch="torch.log_softmax(x, dim=-1)",
                    doc="x - logsumexp(x) along an axis (the last by default), computed stably")
logsumexp = defop("logsumexp", _logsumexp, arity=1,
                  params=(Param("axis", -1, "axes"), _KEEP), vjps=(_logsumexp_vjp,),
                  batch=_batch_last_axis(lambda x: x, B_REDUCE),
                  formulas=("g * softmax(x) (along the axis)",),
                  torch="torch.logsumexp(x, dim=-1, keepdim=False)",
                  doc="log(sum(exp(x))) along an axis (the last by default), computed stably")


# -- convolution (PyTorch's conv1d/conv2d and conv_transpose1d/2d).  The forwards work on
# every window at once (im2col as a strided view, one matmul per group); conv's gradient
# with respect to x is a transposed convolution, the transposed convolution's is a
# convolution, and both weight gradients are a convolution of the input with the upstream
# gradient (batch and channel axes swapped): every rule is a program of public ops, so a
# printed derivative reads back and differentiates again.

def _tuple_of(v, d, name, what):
    v = v if isinstance(v, tuple) else (v,) * d
    if len(v) != d:
        raise ValueError(f"{name}'s {what} takes one number or {d} of them, got {v}")
    return tuple(int(a) for a in v)


def _conv_check(name, x, w, stride, padding, dilation, groups, d, transposed=False,
                output_padding=0):
    """Validated (kernel, stride, padding, dilation, output_padding) per spatial axis;
    ValueError naming the shapes."""
    sx, sw = np.shape(x), np.shape(w)
    layout = "(N, C, L)" if d == 1 else "(N, C, H, W)"
    k = "k" if d == 1 else "kh, kw"
    wl = f"(in channels, out channels / groups, {k})" if transposed else \
        f"(out channels, C / groups, {k})"
    if len(sx) != d + 2:
        raise ValueError(f"x must be {layout}, got shape {sx}")
    if len(sw) != d + 2:
        raise ValueError(f"w must be {wl}, got shape {sw}")
    stride = _tuple_of(stride, d, name, "stride")
    dilation = _tuple_of(dilation, d, name, "dilation")
    if padding == "valid":
        padding = 0
    elif padding == "same":  # PyTorch's: stride 1, the extra zero (if odd) at the end
        if any(st != 1 for st in stride):
            raise ValueError(f'padding="same" needs stride 1, got stride {stride} '
                             f'(as PyTorch)')
        padding = tuple(a * (k - 1) // 2 for a, k in zip(dilation, sw[2:]))
    padding = _tuple_of(padding, d, name, "padding")
    out_pad = _tuple_of(output_padding, d, name, "output_padding")
    if any(s < 1 for s in stride) or any(p < 0 for p in padding) or \
            any(a < 1 for a in dilation) or any(o < 0 for o in out_pad):
        raise ValueError(f"stride and dilation must be >= 1, padding and "
                         f"output_padding >= 0 (got stride={stride}, padding={padding}, "
                         f"dilation={dilation})")
    if isinstance(groups, bool) or groups < 1:
        raise ValueError(f"groups must be a whole number >= 1, got {groups}")
    if sx[1] % groups:
        raise ValueError(f"x has {sx[1]} channels (shape {sx}), not divisible by "
                         f"groups={groups}")
    if transposed:
        if sw[0] != sx[1]:
            raise ValueError(f"x has {sx[1]} channels (shape {sx}) but w (shape {sw}) "
                             f"takes {sw[0]}: w is {wl}")
        for o, s, a in zip(out_pad, stride, dilation):
            if o >= s and o >= a:
                raise ValueError(f"output_padding {out_pad} must be smaller than "
                                 f"the stride {stride} or the dilation {dilation}")
    else:
        if sw[0] % groups:
            raise ValueError(f"w has {sw[0]} out channels (shape {sw}), not divisible by "
                             f"groups={groups}")
        if sw[1] * groups != sx[1]:
            extra = f" per group, times groups={groups} makes {sw[1] * groups}" \
                if groups > 1 else ""
            raise ValueError(f"x has {sx[1]} channels (shape {sx}) but w expects "
                             f"{sw[1]}{extra} (shape {sw})")
        span = tuple(a * (n - 1) + 1 for a, n in zip(dilation, sw[2:]))
        padded = tuple(n + 2 * p for n, p in zip(sx[2:], padding))
        if any(s > n for s, n in zip(span, padded)):
            how = f" dilated by {dilation} spans {span}," if any(a > 1 for a in dilation) \
                else ""
            raise ValueError(f"the kernel {tuple(sw[2:])} (w shape {sw}){how} is larger than "
                             f"the (padded) input's spatial size {padded} (x shape {sx}, "
                             f"padding {padding})")
    return tuple(sw[2:]), stride, padding, dilation, out_pad


def _windows(x, kernel, stride, dilation):
    """(N, C, *spatial) -> (N, C, *kernel, *out): every (dilated) window, a strided view."""
    d = len(kernel)
    x = np.asarray(x)
    shape, strides = x.shape, x.strides
    out = tuple((n - a * (k - 1) - 1) // s + 1
                for n, k, s, a in zip(shape[-d:], kernel, stride, dilation))
    return np.lib.stride_tricks.as_strided(
        x, shape[:-d] + tuple(kernel) + out,
        strides[:-d] + tuple(st * a for st, a in zip(strides[-d:], dilation)) +
        tuple(st * s for st, s in zip(strides[-d:], stride)), writeable=False)


def _same_extra(padding, dilation, kernel):
    """padding="same" with an odd total (an even kernel): one more zero at the end of each
    such axis, as PyTorch; else zeros."""
    if padding != "same":
        return (0,) * len(kernel)
    return tuple(a * (k - 1) % 2 for a, k in zip(dilation, kernel))


def _conv_forward(x, w, b, stride, padding, dilation, groups, d):
    extra_pad = padding
    kernel, stride, padding, dilation, _ = _conv_check(
        f"conv{d}d", x, w, stride, padding, dilation, groups, d)
    extra = _same_extra(extra_pad, dilation, kernel)
    if any(padding) or any(extra):
        x = np.pad(x, [(0, 0), (0, 0)] + [(p, p + e) for p, e in zip(padding, extra)])
    cols = _windows(x, kernel, stride, dilation)                  # (N, C, *k, *out)
    c, o = np.shape(x)[1], np.shape(w)[0]
    cg, og = c // groups, o // groups
    axes = list(range(1, d + 2))
    # one BLAS product per group (a loop over groups, never over pixels)
    parts = [np.tensordot(cols[:, i * cg:(i + 1) * cg], w[i * og:(i + 1) * og], (axes, axes))
             for i in range(groups)]
    out = parts[0] if groups == 1 else np.concatenate(parts, axis=-1)   # (N, *out, O)
    return _conv_bias(np.moveaxis(out, -1, 1), b, o, d)


def _conv_bias(out, b, o, d):
    if b is None:
        return out
    if np.shape(b) != (o,):
        raise ValueError(f"the bias must have shape ({o},), got {np.shape(b)}")
    return out + np.reshape(b, (-1,) + (1,) * d)


def _conv_transpose_forward(x, w, b, stride, padding, output_padding, groups, dilation, d):
    kernel, stride, padding, dilation, out_pad = _conv_check(
        f"conv_transpose{d}d", x, w, stride, padding, dilation, groups, d, True,
        output_padding)
    n, cin = np.shape(x)[:2]
    sp = np.shape(x)[2:]
    cout = np.shape(w)[1] * groups
    full = tuple((m - 1) * s + a * (k - 1) + 1 + o
                 for m, s, a, k, o in zip(sp, stride, dilation, kernel, out_pad))
    size = tuple(f - 2 * p for f, p in zip(full, padding))
    if any(m <= 0 for m in size):
        raise ValueError(f"conv_transpose{d}d: the output would have spatial size {size} "
                         f"(x shape {np.shape(x)}, w shape {np.shape(w)}, padding "
                         f"{padding}): the padding is too large")
    cg = cin // groups
    parts = [np.tensordot(w[i * cg:(i + 1) * cg], x[:, i * cg:(i + 1) * cg], ([0], [1]))
             for i in range(groups)]                              # (out / G, *k, N, *sp)
    cols = parts[0] if groups == 1 else np.concatenate(parts, axis=0)
    cols = np.moveaxis(cols, d + 1, 0)           # (N, out, *k, *sp), each tap's block whole
    out = np.zeros((n, cout) + full, dtype=np.result_type(cols))
    lead = (slice(None), slice(None))
    for offs in np.ndindex(*kernel):  # a loop over the kernel's taps, never over pixels
        key = lead + tuple(slice(a * k, a * k + s * (m - 1) + 1, s)
                           for k, a, s, m in zip(offs, dilation, stride, sp))
        out[key] += cols[lead + offs]
    out = out[lead + tuple(slice(p, p + m) for p, m in zip(padding, size))]
    return _conv_bias(out, b, cout, d)


def _conv_weight_grad(x, g, kernel, stride, padding, dilation, groups, d):
    """d loss / d w of conv(x, w) for upstream g: a convolution of x (channels as the batch,
    the batch as channels) with g (the same swap) as the kernel, stride and dilation
    exchanged; groups stay groups.  (O, C / groups, *kernel)."""
    n, c = np.shape(x)[:2]
    o = np.shape(g)[1]
    rest = tuple(range(3, d + 3))
    if groups == 1:
        xs = transpose(x, (1, 0) + tuple(range(2, d + 2)))          # (C, N, *sp)
        gs = transpose(g, (1, 0) + tuple(range(2, d + 2)))          # (O, N, *out)
    else:
        xs = reshape(transpose(reshape(x, (n, groups, c // groups) + np.shape(x)[2:]),
                               (2, 1, 0) + rest), (c // groups, groups * n) + np.shape(x)[2:])
        gs = reshape(transpose(reshape(g, (n, groups, o // groups) + np.shape(g)[2:]),
                               (1, 2, 0) + rest), (o, n) + np.shape(g)[2:])
    conv = conv1d_nobias if d == 1 else conv2d_nobias
    r = conv(xs, gs, dilation, padding, stride, groups)             # (C / groups, O, *k')
    r = transpose(r, (1, 0) + tuple(range(2, d + 2)))
    if np.shape(r)[2:] != tuple(kernel):
        r = index(r, (slice(None), slice(None)) + tuple(slice(0, k) for k in kernel))
    return r


def _conv_vjps(d):
    def setup(x, w, rest):
        stride, padding, dilation, groups = rest[-4:]
        extra = padding
        kernel, stride, padding, dilation, _ = _conv_check(
            f"conv{d}d", x, w, stride, padding, dilation, groups, d)
        extra = _same_extra(extra, dilation, kernel)
        sp = np.shape(x)[2:]
        # x with padding="same"'s extra zeros at the end: what the convolution slides over
        key = (slice(None), slice(None)) + tuple(slice(None, n) for n in sp)
        wide = tuple(n + e for n, e in zip(sp, extra))
        return kernel, stride, padding, dilation, groups, extra, key, wide

    def dx(g, out, x, w, *rest):
        kernel, stride, padding, dilation, groups, extra, key, wide = setup(x, w, rest)
        out_pad = tuple(n + 2 * p - ((m - 1) * s + a * (k - 1) + 1) for n, p, m, s, a, k in
                        zip(wide, padding, np.shape(g)[2:], stride, dilation, kernel))
        convt = conv_transpose1d_nobias if d == 1 else conv_transpose2d_nobias
        r = convt(g, w, _one(stride), _one(padding), _one(out_pad), groups, _one(dilation))
        return index(r, key) if any(extra) else r

    def dw(g, out, x, w, *rest):
        kernel, stride, padding, dilation, groups, extra, key, wide = setup(x, w, rest)
        if any(extra):
            x = index_grad(x, key, tuple(np.shape(x)[:2]) + wide)
        return _conv_weight_grad(x, g, kernel, _one(stride), _one(padding), _one(dilation),
                                 groups, d)
    return dx, dw


def _conv_transpose_vjps(d):
    def dx(g, out, x, w, *rest):
        stride, padding, output_padding, groups, dilation = rest[-5:]
        conv = conv1d_nobias if d == 1 else conv2d_nobias
        r = conv(g, w, stride, padding, dilation, groups)
        if np.shape(r) != np.shape(x):  # output_padding >= stride: windows past x's end
            r = index(r, (slice(None), slice(None)) +
                      tuple(slice(0, m) for m in np.shape(x)[2:]))
        return r

    def dw(g, out, x, w, *rest):
        stride, padding, output_padding, groups, dilation = rest[-5:]
        kernel, stride, padding, dilation, _ = _conv_check(
            f"conv_transpose{d}d", x, w, stride, padding, dilation, groups, d, True,
            output_padding)
        return _conv_weight_grad(g, x, kernel, _one(stride), _one(padding), _one(dilation),
                                 groups, d)
    return dx, dw


def _one(v):
    """A per-axis tuple as one number when every axis has the same (prints shorter)."""
    return v[0] if len(set(v)) == 1 else v


def _conv_db(d):
    def vjp(g, out, x, w, b, *params):
        return sum_all(g, (0,) + tuple(range(2, d + 2)))
    return vjp


def _batch_conv(d, transposed):
    """Batched forward: a batch of x alone folds into N; a batch of w becomes groups (the
    stacked problems as B * groups groups of one convolution)."""
    def make(fwd, flags, ndims, params):
        fx, fw = flags[:2]
        fb = flags[2] if len(flags) > 2 else False
        groups = params[-2] if transposed else params[-1]

        def run(x, w, b=None):
            nb = next(np.shape(v)[0] for v, f in zip((x, w, b), flags) if f)
            if not fw:
                xx = np.reshape(x, (-1,) + np.shape(x)[2:]) if fx else x
                out = _forward(xx, w, params)
                if fx:
                    out = np.reshape(out, (nb, -1) + np.shape(out)[1:])
            else:
                xb = x if fx else np.broadcast_to(x, (nb,) + np.shape(x))
                n = np.shape(xb)[1]
                xx = np.reshape(np.swapaxes(xb, 0, 1), (n, -1) + np.shape(xb)[3:])
                ww = np.reshape(w, (-1,) + np.shape(w)[2:])
                p = list(params)
                p[-2 if transposed else -1] = groups * nb
                out = _forward(xx, ww, tuple(p))
                out = np.swapaxes(np.reshape(out, (n, nb, -1) + np.shape(out)[2:]), 0, 1)
            if b is not None:
                out = out + np.reshape(b, ((nb, 1, -1) if fb else (-1,)) + (1,) * d)
            return out

        def _forward(x, w, p):
            if transposed:
                return _conv_transpose_forward(x, w, None, *p, d)
            return _conv_forward(x, w, None, *p, d)
        return run
    return make


def _conv_ops(d):
    name = f"conv{d}d"
    params = (Param("stride", 1, "ints"), Param("padding", 0, "padding"),
              Param("dilation", 1, "ints"), Param("groups", 1, "int"))
    layout = "x (N, C, L), w (out, C / groups, k)" if d == 1 else \
        "x (N, C, H, W), w (out, C / groups, kh, kw)"
    common = dict(params=params, batch=_batch_conv(d, False),
                  torch=f"torch.nn.functional.{name}(x, w, b, stride, padding, dilation, "
                        f"groups)")
    dx, dw = _conv_vjps(d)
    formulas = (f"conv_transpose{d}d(g, w, stride, padding, output_padding, groups, "
                f"dilation), output_padding making x's size",
                f"conv{d}d of x with g (batch and channel axes swapped; stride and "
                f"dilation exchanged)")
    def conv_forward(x, w, *rest):  # (x, w, b, 4 params) or (x, w, 4 params)
        return _conv_forward(x, w, rest[0] if len(rest) == 5 else None, *rest[-4:], d)

    with_bias = defop(
        name, conv_forward, arity=3,
        argnames=("x", "w", "b"), vjps=(dx, dw, _conv_db(d)),
        formulas=formulas + ("sum(g) over all but the channel axis",),
        doc=f"cross-correlation, PyTorch's layout: {layout}; bias b optional", **common)
    no_bias = defop(
        name, conv_forward, arity=2,
        argnames=("x", "w"), vjps=(dx, dw), listed=False,
        formulas=formulas, doc=with_bias.doc, **common)
    return with_bias, no_bias


def _conv_transpose_ops(d):
    name = f"conv_transpose{d}d"
    params = (Param("stride", 1, "ints"), Param("padding", 0, "ints"),
              Param("output_padding", 0, "ints"), Param("groups", 1, "int"),
              Param("dilation", 1, "ints"))
    layout = "x (N, C, L), w (C, out / groups, k)" if d == 1 else \
        "x (N, C, H, W), w (C, out / groups, kh, kw)"
    common = dict(params=params, batch=_batch_conv(d, True),
                  torch=f"torch.nn.functional.{name}(x, w, b, stride, padding, "
                        f"output_padding, groups, dilation)")
    dx, dw = _conv_transpose_vjps(d)
    formulas = (f"conv{d}d(g, w, stride, padding, dilation, groups)",
                f"conv{d}d of g with x (batch and channel axes swapped; stride and "
                f"dilation exchanged)")
    def conv_transpose_forward(x, w, *rest):  # (x, w, b, 5 params) or (x, w, 5 params)
        return _conv_transpose_forward(x, w, rest[0] if len(rest) == 6 else None, *rest[-5:],
                                       d)

    with_bias = defop(
        name, conv_transpose_forward, arity=3, argnames=("x", "w", "b"), vjps=(dx, dw, _conv_db(d)),
        formulas=formulas + ("sum(g) over all but the channel axis",),
        doc=f"transposed convolution (the gradient of conv{d}d with respect to its input), "
            f"PyTorch's layout: {layout}; bias b optional", **common)
    no_bias = defop(
        name, conv_transpose_forward, arity=2, argnames=("x", "w"), vjps=(dx, dw), listed=False,
        formulas=formulas, doc=with_bias.doc, **common)
    return with_bias, no_bias


conv1d, conv1d_nobias = _conv_ops(1)
conv2d, conv2d_nobias = _conv_ops(2)
conv_transpose1d, conv_transpose1d_nobias = _conv_transpose_ops(1)
conv_transpose2d, conv_transpose2d_nobias = _conv_transpose_ops(2)


# ================================================================== structure

def _index(x, key):
    try:
        return x[key]
    except IndexError as e:
        raise ValueError(f"index [{key_text(key)}] does not fit shape {np.shape(x)}: "
                         f"{e}") from None


def _stack(*items):
    return np.stack(items)


def _batch_index(fwd, flags, ndims, params):
    key = (slice(None),) + tuple(params[0])
    return lambda x: x[key]


def _batch_stack(fwd, flags, ndims, params):
    def run(*items):
        n = next(x.shape[0] for x, f in zip(items, flags) if f)
        return np.stack([x if f else np.broadcast_to(x, (n,) + np.shape(x))
                         for x, f in zip(items, flags)], axis=1)
    return run


index = defop("index", _index, arity=1, public=False, params=(Param("key", REQUIRED, "key"),),
              vjps=(lambda g, out, x, key: index_grad(g, key, np.shape(x)),),
              formulas=("g placed at the indexed elements, 0 elsewhere",), batch=_batch_index,
              torch="x[key]",
              doc="x[i], x[i, j], x[a:b:s], x[:, None], x[..., 0]: indexing with constants")


class _PerItem:
    """The VJPs of ``[a, b, c, ...]``: as many as there are items, each made on demand."""

    def __getitem__(self, i):
        return lambda g, out, *items: index(g, (i,))


stack = defop("array", _stack, arity=None, vjps=_PerItem(), formulas=("g[i] for item i",),
              doc="[a, b, ...] with items that are not all numbers: items of one shape",
              public=False, batch=_batch_stack, torch="torch.stack((a, b, ...))")


# ================================================================== how names resolve

class _Callable(dict):
    """(name, number of positional arguments) -> op; ops of any arity answer any count."""

    def get(self, key, default=None):
        op = dict.get(self, key)
        if op is None:
            v = VARIADIC.get(key[0])
            if v is not None and key[1] >= v.lead + v.min_arity:
                return v
            return default
        return op


#: Functions callable by name in the language, by (name, number of positional arguments).
#: ``max`` and ``min`` are the reduction with one argument and elementwise with two; an op
#: whose params may be positional answers every count from its arity up.  Ops of any arity
#: (concat, stack, einsum) are in ``VARIADIC`` and answered by ``CALLABLE.get``.
CALLABLE: dict[tuple[str, int], Op] = _Callable()
VARIADIC: dict[str, Op] = {}
for _op in BUILTINS:
    if not _op.public:
        continue
    for _name in (_op.name,) + _op.aliases:
        if _op.arity is None:
            VARIADIC[_name] = _op
            dict.__setitem__(CALLABLE, (_name, _op.lead + _op.min_arity), _op)
            continue
        if _op.symbol is not None and _op.name in ("add", "sub", "mul", "div", "neg",
                                                    "matmul"):
            continue
        npos = sum(1 for p in _op.signature if p.positional)
        nreq = sum(1 for p in _op.signature if p.required)
        for _extra in range(nreq, npos + 1):
            CALLABLE.setdefault((_name, _op.arity + _extra), _op)
CALLABLE[("max", 2)], CALLABLE[("min", 2)] = maximum, minimum
CALLABLE[("max", 1)], CALLABLE[("min", 1)] = max_all, min_all
CALLABLE_NAMES = frozenset(name for name, _ in CALLABLE)

#: Operators of the grammar, by rule name.
INFIX = {"add": add, "sub": sub, "mul": mul, "div": div, "matmul": matmul, "pow": pow,
         "neg": neg, "lt": lt, "le": le, "gt": gt, "ge": ge, "eq": eq, "ne": ne}
