"""The op library: every operation gradcli knows, one entry each.

An entry says how to compute the op's output (``forward``) and how to turn the output's
gradient into its inputs' gradients (the vector-Jacobian product, "downstream = upstream x
local").  Elementwise ops give their *local gradients* (``partials``: d out / d input, element
by element) and the engine multiplies by the upstream gradient and sums broadcast axes back
(``sum_to``) once, for all of them.  The other ops give a VJP per input directly.

Every rule is written with the ops of this library and Python's arithmetic operators, never
with NumPy calls of its own, as HIPS autograd does: the backward pass is then itself a program
of the same ops, which is what later turns it into a graph (symbolic derivatives, Hessians).

Each entry also carries the text users see: the derivative rule per input, where the op is not
differentiable (``kinks``) and where it is defined (``domain``).  The engine never asks an op's
name; it only reads these fields.
"""
from __future__ import annotations

import numpy as np

__all__ = ["Op", "BUILTINS", "CALLABLE", "INFIX", "VAR", "CONST", "sum_to"]

#: Set by gradcli.symbolic while it traces a backward pass: ``tracer(op, args)`` is called
#: instead of the forward, with args = inputs followed by the static params.
tracer = None


class Op:
    """One operation: its forward rule, its gradient rules and the text users see.

    ``partials`` (elementwise ops) holds one entry per input: a function ``(out, *inputs)``
    giving the local gradient d out / d input, or the number 1 or -1 when it is that constant.
    ``vjps`` (other ops) holds one function ``(g, out, *inputs, *params)`` per input giving the
    downstream gradient for upstream ``g``.  Static arguments fixed when the program is parsed
    (an axis, an index, a shape) are passed after the inputs; ``params`` names the ones a
    program may write, as optional integer constants (``sum(x, 1)``).
    """

    __slots__ = ("name", "arity", "forward", "partials", "vjps", "formulas", "kinks",
                 "domain", "doc", "symbol", "argnames", "public", "params", "gate", "path",
                 "shapes", "sample_domain", "batch", "cforward", "kink_side")

    def __init__(self, name, forward, *, arity, partials=None, vjps=None, formulas=(),
                 kinks=None, domain=None, doc="", symbol=None, argnames=None, public=True,
                 params=()):
        self.name = name
        self.forward = forward
        self.arity = arity
        self.partials = partials
        self.vjps = vjps
        self.formulas = tuple(formulas)
        self.kinks = kinks
        self.domain = domain
        self.doc = doc
        self.symbol = symbol
        self.argnames = argnames or (("x",) if arity == 1 else ("a", "b", "c")[:arity or 0])
        self.public = public
        self.params = params
        # Custom ops (gradcli.plugins): the gate class, one instance per node, and how to
        # sample its inputs for a self-check.  None for the built-ins.
        self.gate = None
        self.path = None
        self.shapes = None
        self.sample_domain = None
        # For gradcli check (set below, after the ops): a batched forward, a forward that
        # carries a complex step, and where the op has kinks.
        self.batch = None
        self.cforward = forward
        self.kink_side = None

    @property
    def elementwise(self):
        return self.partials is not None

    def __call__(self, *args):
        # The single dispatch point: arrays normally; while gradcli.symbolic traces a
        # backward pass, graph nodes in and graph nodes out.
        if tracer is not None:
            return tracer(self, args)
        return self.forward(*args)

    def __repr__(self):
        return f"Op({self.name!r})"


#: Every op of the library, in the order defined (the order ``gradcli ops`` lists them).
BUILTINS: list[Op] = []


def defop(name, forward, **kw):
    op = Op(name, forward, **kw)
    BUILTINS.append(op)
    return op


# Source nodes of a graph: a variable bound by the user, and a constant of the program.
VAR = Op("var", None, arity=0, public=False, doc="an input variable")
CONST = Op("const", None, arity=0, public=False, doc="a constant")


# ------------------------------------------------------------------ shape helpers (ops too)
# These have static shape arguments, so the language cannot call them; the engine and the
# rules below do, and each has its own gradient so that rules built from them differentiate.


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
    return np.reshape(x, shape)


def _index_grad(g, key, shape):
    out = np.zeros(shape, dtype=np.result_type(g))
    out[key] = g
    return out


sum_to = defop("sum_to", _sum_to, arity=1, public=False,
               vjps=(lambda g, out, x, shape: broadcast_to(g, np.shape(x)),),
               formulas=("broadcast g back to x's shape",),
               doc="sum over broadcast axes down to a shape")
broadcast_to = defop("broadcast_to", _broadcast_to, arity=1, public=False,
                     vjps=(lambda g, out, x, shape: sum_to(g, np.shape(x)),),
                     formulas=("sum g over the broadcast axes",),
                     doc="repeat along new or length-1 axes")
reshape = defop("reshape", _reshape, arity=1, public=False,
                vjps=(lambda g, out, x, shape: reshape(g, np.shape(x)),),
                formulas=("reshape g back",), doc="same elements, another shape")
index_grad = defop("index_grad", _index_grad, arity=1, public=False,
                   vjps=(lambda g, out, x, key, shape: index(g, key),),
                   formulas=("g[key]",), doc="zeros of a shape with x placed at key")


def _where(c, a, b):
    return np.where(c, a, b)


def _step(x):
    # Heaviside step with step(0) = 0: the derivative of relu, by PyTorch's convention.
    return (x > 0).astype(np.result_type(x, np.float32))


def _sign(x):
    return np.sign(x)


def _eq(a, b):
    return (a == b).astype(np.result_type(a, b, np.float32))


def _gt(a, b):
    return (a > b).astype(np.result_type(a, b, np.float32))


def _zero_vjp(g, out, *args):
    return 0 * g


# Non-differentiable helpers the gradient rules are written with (their own gradient is zero
# wherever it exists).  Internal for now: the language gains them with symbolic derivatives.
where = defop("where", _where, arity=3, public=False, argnames=("c", "a", "b"),
              vjps=(_zero_vjp, lambda g, out, c, a, b: where(c, g, 0 * g),
                    lambda g, out, c, a, b: where(c, 0 * g, g)),
              formulas=("0", "g where c", "g where not c"), doc="a where c else b")
step = defop("step", _step, arity=1, public=False, partials=(lambda out, x: 0 * x,),
             formulas=("0",), kinks="x = 0", doc="1 if x > 0, else 0")
sign = defop("sign", _sign, arity=1, public=False, partials=(lambda out, x: 0 * x,),
             formulas=("0",), kinks="x = 0", doc="-1, 0 or 1")
eq = defop("eq", _eq, arity=2, public=False,
           partials=(lambda out, a, b: 0 * out, lambda out, a, b: 0 * out),
           formulas=("0", "0"), kinks="a = b", doc="1 where a = b, else 0")
gt = defop("gt", _gt, arity=2, public=False,
           partials=(lambda out, a, b: 0 * out, lambda out, a, b: 0 * out),
           formulas=("0", "0"), kinks="a = b", doc="1 where a > b, else 0")


# ------------------------------------------------------------------ arithmetic

add = defop("add", np.add, arity=2, symbol="+", partials=(1, 1),
            formulas=("1", "1"), doc="a + b")
sub = defop("sub", np.subtract, arity=2, symbol="-", partials=(1, -1),
            formulas=("1", "-1"), doc="a - b")
mul = defop("mul", np.multiply, arity=2, symbol="*",
            partials=(lambda out, a, b: b, lambda out, a, b: a),
            formulas=("b", "a"), doc="a * b")
div = defop("div", np.true_divide, arity=2, symbol="/",
            partials=(lambda out, a, b: 1 / b, lambda out, a, b: -out / b),
            formulas=("1 / b", "-a / b^2"), domain="b != 0", doc="a / b")
neg = defop("neg", np.negative, arity=1, symbol="-", partials=(-1,),
            formulas=("-1",), doc="-x")


def _pow_base(out, a, b):
    # b * a^(b-1), and 0 where b = 0 (so d/da a^0 = 0 even at a = 0, as PyTorch).
    return where(eq(b, 0), 0 * out, b * a ** (b - 1))


def _pow_exponent(out, a, b):
    # a^b * log(a), and 0 where a = 0 and b >= 0 (the limit; PyTorch's convention).
    return where(eq(a, 0) * (1 - gt(0, b)), 0 * out, out * log(a))


pow = defop("pow", np.power, arity=2, symbol="**", partials=(_pow_base, _pow_exponent),
            formulas=("b * a^(b-1)", "a^b * log(a)"),
            domain="a > 0, or a whole-number b", kinks="a = 0 with b < 1",
            doc="a ** b (also a ^ b, pow(a, b))")


def _max2(a, b):
    return np.maximum(a, b)


def _min2(a, b):
    return np.minimum(a, b)


# Ties split the gradient evenly between a and b (PyTorch, JAX).
maximum = defop("max", _max2, arity=2,
                partials=(lambda out, a, b: gt(a, b) + 0.5 * eq(a, b),
                          lambda out, a, b: gt(b, a) + 0.5 * eq(a, b)),
                formulas=("1 if a > b, 1/2 if a = b, else 0", "1 if b > a, 1/2 if a = b, else 0"),
                kinks="a = b (the gradient is split evenly)", doc="elementwise maximum")
minimum = defop("min", _min2, arity=2,
                partials=(lambda out, a, b: gt(b, a) + 0.5 * eq(a, b),
                          lambda out, a, b: gt(a, b) + 0.5 * eq(a, b)),
                formulas=("1 if a < b, 1/2 if a = b, else 0", "1 if b < a, 1/2 if a = b, else 0"),
                kinks="a = b (the gradient is split evenly)", doc="elementwise minimum")


# ------------------------------------------------------------------ elementwise functions

def _unary(name, forward, partial, formula, **kw):
    return defop(name, forward, arity=1, partials=(partial,), formulas=(formula,), **kw)


def _sigmoid(x):
    # Stable both ways: never exp of a large positive number.
    z = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + z), z / (1 + z))


def _relu(x):
    return np.maximum(x, 0)


def _softplus(x):
    return np.logaddexp(0, x)


exp = _unary("exp", np.exp, lambda out, x: out, "exp(x)")
log = _unary("log", np.log, lambda out, x: 1 / x, "1 / x", domain="x > 0")
sqrt = _unary("sqrt", np.sqrt, lambda out, x: 0.5 / out, "1 / (2 * sqrt(x))",
              domain="x >= 0", kinks="x = 0 (derivative inf)")
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
sigmoid = _unary("sigmoid", _sigmoid, lambda out, x: out * (1 - out),
                 "sigmoid(x) * (1 - sigmoid(x))")
relu = _unary("relu", _relu, lambda out, x: step(x), "1 if x > 0, else 0",
              kinks="x = 0 (derivative taken as 0)")
softplus = _unary("softplus", _softplus, lambda out, x: sigmoid(x), "sigmoid(x)")
abs = _unary("abs", np.abs, lambda out, x: sign(x), "sign(x)",
             kinks="x = 0 (derivative taken as 0)")


# ------------------------------------------------------------------ reductions

def _axis_shape(shape, axis):
    """The shape of a reduction's output kept with a length-1 axis (to broadcast back)."""
    if axis is None:
        return (1,) * len(shape)
    axis = axis % len(shape)
    return shape[:axis] + (1,) + shape[axis + 1:]


def _no_axis_of_scalar(x, axis):
    if axis is not None and np.ndim(x) == 0:
        raise ValueError(f"a scalar has no axis {axis} to reduce over")


def _sum(x, axis=None):
    if axis is not None:
        _no_axis_of_scalar(x, axis)
    return np.add.reduce(x, axis=axis)  # np.sum, without its Python-level dispatch


def _mean(x, axis=None):
    if axis is not None:
        _no_axis_of_scalar(x, axis)
    return np.mean(x, axis=axis)


def _spread(g, x, axis):
    """Broadcast a reduction's upstream gradient back over the reduced axis."""
    shape = np.shape(x)
    return broadcast_to(reshape(g, _axis_shape(shape, axis)), shape)


def _count(x, axis):
    shape = np.shape(x)
    return int(np.prod(shape)) if axis is None else shape[axis]


def _max_all(x, axis=None):
    return np.max(x, axis=axis)


def _min_all(x, axis=None):
    return np.min(x, axis=axis)


def _extreme_vjp(g, out, x):
    # The gradient goes to the elements equal to the extreme, split evenly among ties.
    hit = eq(x, out)
    return g * hit / sum_all(hit)


sum_all = defop("sum", _sum, arity=1, params=("axis",),
                vjps=(lambda g, out, x, axis=None: _spread(g, x, axis),),
                formulas=("g, spread back over the elements summed",),
                doc="sum(x): all elements; sum(x, axis): along one axis")
mean = defop("mean", _mean, arity=1, params=("axis",),
             vjps=(lambda g, out, x, axis=None: _spread(g, x, axis) / _count(x, axis),),
             formulas=("g / n, spread back over the n elements averaged",),
             doc="mean(x): all elements; mean(x, axis): along one axis")
max_all = defop("max", _max_all, arity=1, vjps=(_extreme_vjp,),
                formulas=("g at the maximum (split evenly among ties), 0 elsewhere",),
                kinks="where the maximum is tied", doc="the largest element")
min_all = defop("min", _min_all, arity=1, vjps=(_extreme_vjp,),
                formulas=("g at the minimum (split evenly among ties), 0 elsewhere",),
                kinks="where the minimum is tied", doc="the smallest element")


# ------------------------------------------------------------------ linear algebra

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
    return reshape(g, shape), a2, b2


def _matmul_da(g, out, a, b):
    if np.ndim(a) == 2 and np.ndim(b) == 2:
        return g @ transpose(b)
    if np.ndim(a) == 1 and np.ndim(b) == 1:
        return g * b
    g2, a2, b2 = _as_matrices(g, a, b)
    return reshape(sum_to(g2 @ _swap(b2), np.shape(a2)), np.shape(a))


def _matmul_db(g, out, a, b):
    if np.ndim(a) == 2 and np.ndim(b) == 2:
        return transpose(a) @ g
    if np.ndim(a) == 1 and np.ndim(b) == 1:
        return g * a
    g2, a2, b2 = _as_matrices(g, a, b)
    return reshape(sum_to(_swap(a2) @ g2, np.shape(b2)), np.shape(b))


def _transpose(x):
    return np.transpose(x)


def _swapaxes(x):
    return np.swapaxes(x, -1, -2)


def _dot(a, b):
    sa, sb = np.shape(a), np.shape(b)
    if len(sa) != 1 or sa != sb:
        raise ValueError(f"dot takes two vectors of one length, got shapes {sa} and {sb} "
                         f"(use @ for matrices)")
    return np.dot(a, b)


matmul = defop("matmul", _matmul, arity=2, symbol="@", vjps=(_matmul_da, _matmul_db),
               formulas=("g @ transpose(b) (an outer product if b is 1-D)",
                         "transpose(a) @ g (an outer product if a is 1-D)"),
               doc="matrix product (matrix-matrix, matrix-vector, vector-vector)")
dot = defop("dot", _dot, arity=2, vjps=(lambda g, out, a, b: g * b, lambda g, out, a, b: g * a),
            formulas=("g * b", "g * a"), doc="inner product of two vectors of one length")
transpose = defop("transpose", _transpose, arity=1,
                  vjps=(lambda g, out, x: transpose(g),), formulas=("transpose(g)",),
                  doc="reverse the axes (a matrix's transpose)")
swapaxes = defop("swapaxes", _swapaxes, arity=1, public=False,
                 vjps=(lambda g, out, x: swapaxes(g),), formulas=("swapaxes(g)",),
                 doc="swap the last two axes")


# ------------------------------------------------------------------ neural-network ops

def _unsqueeze(v):
    """A reduction's result with its reduced last axis put back (length 1), to broadcast."""
    return reshape(v, np.shape(v) + (1,))


def _softmax(x):
    if np.ndim(x) == 0:
        return np.ones_like(x)
    if np.shape(x)[-1] == 0:  # nothing to normalise (as PyTorch: an empty result)
        return np.array(x, dtype=np.result_type(x, np.float32))
    shifted = x - np.max(x, axis=-1, keepdims=True)  # stable: exp never overflows
    e = np.exp(shifted)
    return e / np.sum(e, axis=-1, keepdims=True)


def _logsumexp(x):
    if np.ndim(x) == 0:
        return x
    if np.shape(x)[-1] == 0:  # the log of an empty sum: -inf, as PyTorch
        return np.full(np.shape(x)[:-1], -np.inf, dtype=np.result_type(x, np.float32))
    m = np.max(x, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)  # a row of -inf gives -inf (and one with inf, inf)
    with np.errstate(divide="ignore"):    # log(0) = -inf is the right answer there
        return np.log(np.sum(np.exp(x - m), axis=-1)) + m[..., 0]


def _softmax_vjp(g, out, x):
    if np.ndim(x) == 0:
        return 0 * g
    return out * (g - _unsqueeze(sum_all(g * out, -1)))


def _logsumexp_vjp(g, out, x):
    if np.ndim(x) == 0:
        return g
    return _unsqueeze(g) * exp(x - _unsqueeze(out))


softmax = defop("softmax", _softmax, arity=1, vjps=(_softmax_vjp,),
                formulas=("softmax(x) * (g - sum(g * softmax(x))) (along the last axis)",),
                doc="exp(x) / sum(exp(x)) along the last axis, computed stably")
logsumexp = defop("logsumexp", _logsumexp, arity=1, vjps=(_logsumexp_vjp,),
                  formulas=("g * softmax(x) (along the last axis)",),
                  doc="log(sum(exp(x))) along the last axis, computed stably")


# ------------------------------------------------------------------ structure

def _index(x, key):
    return x[key]


def _stack(*items):
    return np.stack(items)


index = defop("index", _index, arity=1, public=False,
              vjps=(lambda g, out, x, key: index_grad(g, key, np.shape(x)),),
              formulas=("g placed at the indexed elements, 0 elsewhere",),
              doc="x[i], x[i, j], x[a:b]: indexing and slicing with integer constants")


class _PerItem:
    """The VJPs of ``[a, b, c, ...]``: as many as there are items, each made on demand."""

    def __getitem__(self, i):
        return lambda g, out, *items: index(g, (i,))


stack = defop("array", _stack, arity=None, vjps=_PerItem(), formulas=("g[i] for item i",),
              doc="[a, b, ...] with items that are not all numbers: items of one shape",
              public=False)


# ------------------------------------------------------------------ for gradcli check
#
# Batched forwards.  The checker evaluates many perturbed copies of one input at once,
# stacked on a new leading axis.  ``op.batch(fwd, flags, ndims, params)`` returns a function
# of the op's inputs, where the inputs with ``flags[k]`` carry that leading axis and
# ``ndims[k]`` is each input's own rank; or None when the op cannot be batched (the checker
# then perturbs one element at a time).  ``fwd`` is ``op.forward`` or ``op.cforward``.

def _batch_elementwise(fwd, flags, ndims, params):
    n = max(ndims)
    pads = [(k, n - d) for k, (f, d) in enumerate(zip(flags, ndims)) if f and d < n]
    if not pads:
        return fwd  # NumPy broadcasting lines the leading axis up by itself

    def run(*xs):  # give batched inputs of lower rank length-1 axes after the batch axis
        xs = list(xs)
        for k, pad in pads:
            x = xs[k]
            xs[k] = x.reshape(x.shape[:1] + (1,) * pad + x.shape[1:])
        return fwd(*xs)
    return run


def _batch_reduction(fwd, flags, ndims, params):
    if params and params[0] is not None:
        axis = params[0] + 1 if params[0] >= 0 else params[0]
    else:
        axis = tuple(range(1, ndims[0] + 1))
    return lambda x: fwd(x, axis)


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


def _batch_last_axis(scalar_case):
    def make(fwd, flags, ndims, params):
        return scalar_case if ndims[0] == 0 else fwd
    return make


def _batch_transpose(fwd, flags, ndims, params):
    axes = (0,) + tuple(range(ndims[0], 0, -1))
    return lambda x: np.transpose(x, axes)


def _batch_index(fwd, flags, ndims, params):
    key = (slice(None),) + tuple(params[0])
    return lambda x: x[key]


def _batch_stack(fwd, flags, ndims, params):
    def run(*items):
        n = next(x.shape[0] for x, f in zip(items, flags) if f)
        return np.stack([x if f else np.broadcast_to(x, (n,) + np.shape(x))
                         for x, f in zip(items, flags)], axis=1)
    return run


for _op in BUILTINS:
    if _op.partials is not None:
        _op.batch = _batch_elementwise
for _op in (sum_all, mean, max_all, min_all):
    _op.batch = _batch_reduction
matmul.batch = _batch_matmul
dot.batch = lambda fwd, flags, ndims, params: (
    lambda a, b: np.einsum("...k,...k->...", a, b))
transpose.batch = _batch_transpose
softmax.batch = _batch_last_axis(np.ones_like)
logsumexp.batch = _batch_last_axis(lambda x: x)
index.batch = _batch_index
stack.batch = _batch_stack


# Complex-step forwards.  ``--method complex`` pushes x + ih through the program and reads
# the derivative off the imaginary part, which needs every op to carry it.  Ops that compare
# or take magnitudes decide by the real part instead, keeping the kink conventions.

def _c_where_real_max(a, b):
    return np.where(a.real > b.real, a, np.where(a.real < b.real, b, (a + b) / 2))


def _c_extreme(pick):
    def run(x, axis=None):
        m = pick(x.real, axis=axis, keepdims=True)
        hit = x.real == m
        return np.sum(x * hit, axis=axis) / np.sum(hit, axis=axis)
    return run


def _c_softmax(x):
    if np.ndim(x) == 0:
        return np.ones_like(x)
    e = np.exp(x - np.max(x.real, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def _c_logsumexp(x):
    if np.ndim(x) == 0:
        return x
    m = np.max(x.real, axis=-1, keepdims=True)
    return np.log(np.sum(np.exp(x - m), axis=-1)) + m[..., 0]


sigmoid.cforward = lambda x: 1 / (1 + np.exp(-x))
relu.cforward = lambda x: np.where(x.real > 0, x, 0)
abs.cforward = lambda x: x * np.sign(x.real)
softplus.cforward = lambda x: np.where(x.real > 0, x + np.log1p(np.exp(-x)), np.log1p(np.exp(x)))
maximum.cforward = _c_where_real_max
minimum.cforward = lambda a, b: _c_where_real_max(-a, -b) * -1
max_all.cforward = _c_extreme(np.max)
min_all.cforward = _c_extreme(np.min)
softmax.cforward = _c_softmax
logsumexp.cforward = _c_logsumexp


# Kinks.  ``op.kink_side(*inputs)`` is an array that changes between two points exactly
# when the op passes a point where it is not differentiable between them: the checker
# compares it at x - h and x + h to tell a kink from a wrong gradient.

def _side_of_zero(x, *rest):
    return np.sign(np.real(x))


for _op in (relu, abs, sqrt, pow):
    _op.kink_side = _side_of_zero
maximum.kink_side = minimum.kink_side = lambda a, b: np.sign(np.real(a) - np.real(b))
max_all.kink_side = lambda x, *axis: np.sign(np.real(x) - np.max(np.real(x)))
min_all.kink_side = lambda x, *axis: np.sign(np.real(x) - np.min(np.real(x)))


# ------------------------------------------------------------------ how names resolve

#: Functions callable by name in the language, by (name, number of arguments).  ``max`` and
#: ``min`` are the reduction with one argument and elementwise with two; ``sum`` and ``mean``
#: take an optional integer axis.
CALLABLE: dict[tuple[str, int], Op] = {}
for _op in BUILTINS:
    if _op.public and _op.symbol is None:
        for _extra in range(len(_op.params) + 1):
            CALLABLE[(_op.name, _op.arity + _extra)] = _op
CALLABLE[("max", 2)], CALLABLE[("min", 2)] = maximum, minimum
CALLABLE[("max", 1)], CALLABLE[("min", 1)] = max_all, min_all
CALLABLE[("pow", 2)] = pow
CALLABLE_NAMES = frozenset(name for name, _ in CALLABLE)

#: Operators of the grammar, by rule name.
INFIX = {"add": add, "sub": sub, "mul": mul, "div": div, "matmul": matmul, "pow": pow,
         "neg": neg}

