"""Gradient descent on a scalar loss: the seeds' training loop, compiled once.

Seed 003 ends with the loop every tutorial writes: forward, backward, then
``p = p - lr * grad`` for every parameter.  :func:`descend` runs that loop on any scalar
program.  The parameters are the bindings named in ``params``; every other binding is data.

The loop never walks the graph.  :func:`compile_step` traces one forward and one reverse pass
(the engine's own rules: each op's ``forward`` and, for the backward, ``engine.downstream``)
and writes down the NumPy calls they make as a straight-line Python function, generated
once.  Everything that does not depend on a parameter (the data's own arithmetic, constant
factors of the local gradients such as ``eq(2, 0)`` in the rule of ``x**2``) is computed
once, while tracing, and baked in as a constant; what is left is the function a person
would write by hand.  A rule that cannot be traced (it looks at a value, say) is called as
it is, on the live values, so the step is always what ``engine.differentiate`` computes.

The optimizers are PyTorch's (``torch.optim.SGD`` with and without momentum, ``Adam``,
``AdamW``: same update rules, same defaults, same state names), and so are the schedules
(``CosineAnnealingLR``, ``StepLR``), so a run compares with a PyTorch one step for step.
"""
from __future__ import annotations

import math
import os
import time

import numpy as np

from . import engine
from . import ops as oplib
from .errors import BindingError, EvalError, GradcliError, clip, did_you_mean, name_list

__all__ = ["descend", "Descent", "compile_step", "Step", "save", "load_state", "OPTIMIZERS",
           "SCHEDULES", "INITS", "state_path"]

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "step")
INITS = ("zeros", "normal", "xavier")


# ================================================================ the compiled step

class _Sym:
    """A value of the step being compiled: its name in the generated code, and its value at
    the point traced (rules read its shape, as they do on live arrays)."""

    __slots__ = ("name", "value", "tracer")
    __array_ufunc__ = None  # NumPy defers to our operators: array * sym -> sym.__rmul__
    __hash__ = object.__hash__

    def __init__(self, tracer, name, value):
        self.tracer, self.name, self.value = tracer, name, value

    shape = property(lambda self: np.shape(self.value))
    ndim = property(lambda self: np.ndim(self.value))
    size = property(lambda self: np.size(self.value))
    dtype = property(lambda self: np.result_type(self.value))

    # Python's operators on arrays are these NumPy functions, argument order kept.
    def _op(fn, swap=False):  # noqa: N805 - a helper run while the class body is built
        if swap:
            return lambda self, other: self.tracer.call(fn, (other, self))
        return lambda self, other: self.tracer.call(fn, (self, other))

    __add__, __radd__ = _op(np.add), _op(np.add, True)
    __sub__, __rsub__ = _op(np.subtract), _op(np.subtract, True)
    __mul__, __rmul__ = _op(np.multiply), _op(np.multiply, True)
    __truediv__, __rtruediv__ = _op(np.true_divide), _op(np.true_divide, True)
    __pow__, __rpow__ = _op(np.power), _op(np.power, True)
    __matmul__, __rmatmul__ = _op(np.matmul), _op(np.matmul, True)
    del _op

    def __neg__(self):
        return self.tracer.call(np.negative, (self,))

    def __pos__(self):
        return self.tracer.call(np.positive, (self,))

    # A rule that looks at a value cannot be traced: refuse, and it runs live instead.
    def _refuse(self, *args):
        raise _Untraceable("the rule reads a value")

    __bool__ = __float__ = __int__ = __index__ = __len__ = __iter__ = _refuse
    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __getitem__ = _refuse
    __array__ = _refuse


class _Untraceable(Exception):
    pass


def _all_equal(value, number):
    a = np.asarray(value)
    return a.dtype.kind in "biuf" and bool(np.all(a == number))


class _Tracer:
    """Records NumPy calls on :class:`_Sym` values as lines of a Python function."""

    def __init__(self, where_fn):
        self.lines = []        # (target, function name, argument names)
        self.ns = {}           # name -> object, for the generated code
        self._names = {}       # id(object) -> its name in ns
        self.count = 0
        self.where_fn = where_fn
        self.sum_to = oplib.sum_to.forward

    def name_of(self, obj, prefix="c"):
        key = id(obj)
        name = self._names.get(key)
        if name is None:
            name = f"{prefix}{len(self._names)}"
            self._names[key] = name
            self.ns[name] = obj
        return name

    def new(self, value, name=None):
        if name is None:
            self.count += 1
            name = f"t{self.count}"
        return _Sym(self, name, value)

    def call(self, fn, args):
        """``fn(*args)``: computed now when no argument depends on a parameter or a batch,
        else recorded (and computed on the traced values, for the shapes)."""
        syms = [a for a in args if isinstance(a, _Sym)]
        if not syms:
            return fn(*args)
        live = [a.value if isinstance(a, _Sym) else a for a in args]
        value = fn(*live)
        short = self._shortcut(fn, args, value)
        if short is not None:
            return short
        if fn is self.sum_to and isinstance(args[0], _Sym):
            fn, args = _sum_to_at(np.shape(live[0]), args[1]), args[:1]
        out = self.new(value)
        names = [a.name if isinstance(a, _Sym) else self.name_of(a) for a in args]
        self.lines.append((out.name, self.name_of(fn, "f"), names))
        return out

    def _shortcut(self, fn, args, value):
        """An argument that is the result as it stands, whatever the parameters are: exact
        identities only (x*1, x/1, x**1, where with a constant condition, a no-op)."""
        pick = None
        if fn is np.multiply:
            a, b = args
            pick = a if not isinstance(b, _Sym) and _all_equal(b, 1) else \
                b if not isinstance(a, _Sym) and _all_equal(a, 1) else None
        elif fn in (np.true_divide, np.power):
            a, b = args
            pick = a if isinstance(a, _Sym) and not isinstance(b, _Sym) and \
                _all_equal(b, 1) else None
        elif fn is self.where_fn and not isinstance(args[0], _Sym):
            c = np.asarray(args[0])
            pick = args[1] if bool(np.all(c != 0)) else args[2] if not np.any(c) else None
        else:
            pick = next((a for a in args if isinstance(a, _Sym) and a.value is value), None)
        if not isinstance(pick, _Sym):
            return None
        p = pick.value
        v = np.asarray(value)
        if np.shape(p) == v.shape and np.result_type(p) == v.dtype:
            return pick
        return None

    def hook(self, op, args):
        """``ops.tracer``: the rules' op calls while tracing (as ``Op.__call__``)."""
        return self.call(op.forward, args)


def _sum_to_at(xshape, shape):
    """``sum_to(x, shape)`` for an x of shape ``xshape``, with its axes worked out once:
    the reduction the engine's helper does (``np.sum`` is ``np.add.reduce``), no more."""
    lead = len(xshape) - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and xshape[lead + i] != 1)
    kept = tuple(n for i, n in enumerate(xshape) if i not in axes)
    reduce = np.add.reduce
    if kept == tuple(shape):
        return lambda x: reduce(x, axes)
    return lambda x: reduce(x, axes).reshape(shape)


class Step:
    """``step(params, data)`` -> (loss, gradients): one forward and reverse pass, compiled.

    ``params`` is a list of arrays in :attr:`names` order and ``data`` a list in
    :attr:`data_names` order (the bindings that change from step to step: mini-batches).
    The gradients come back as a tuple in the same order as the parameters.  ``source`` is
    the generated Python.
    """

    def __init__(self, names, data_names, source, fn, n_lines, n_fallbacks):
        self.names = names
        self.data_names = data_names
        self.source = source
        self._fn = fn
        self.lines = n_lines            # NumPy calls per step
        self.fallbacks = n_fallbacks    # rules run live (not traced)

    def __call__(self, params, data=()):
        return self._fn(*params, *data)


def compile_step(graph, bindings, params, *, data=(), output=None, dtype="float64"):
    """Compile the forward and reverse pass of ``graph`` as a function of ``params``.

    ``bindings`` holds a value for every variable (parameters included: their values fix
    the shapes traced); the names in ``data`` stay arguments (mini-batches), every other
    binding is baked in.  The loss must be a scalar.  Errors are the engine's (its forward
    runs first, on these values).
    """
    dtype = _dtype(dtype)
    ev = engine.evaluate(graph, bindings, output=output, dtype=dtype)
    _check_scalar(ev)
    return _compile(ev, list(params), list(data))


def _dtype(dtype):
    if isinstance(dtype, str):
        if dtype not in engine.DTYPES:
            raise BindingError(f"dtype {dtype!r}: choose float64 or float32")
        return engine.DTYPES[dtype]
    return np.dtype(dtype).type


def _check_scalar(ev):
    shape = np.shape(ev.value)
    if shape != ():
        node = ev.graph.nodes[ev.output]
        what = node.name or ev.graph.source(ev.output, 40)
        raise EvalError(f"the loss must be a scalar, but {clip(what, 40)} has shape {shape}: "
                        f"reduce it with mean(...) or sum(...)", ev.graph.text, node.start)


def _compile(ev, params, data):
    graph, order, dtype = ev.graph, ev.order, ev.dtype
    nodes = graph.nodes
    T = _Tracer(getattr(oplib, "where", None) and oplib.where.forward)
    variables = graph.variables
    args = {}
    for k, name in enumerate(params):
        args[name] = f"p{k}"
    for k, name in enumerate(data):
        args[name] = f"d{k}"
    val = [None] * len(ev.values)
    states = {}
    VAR, CONST = oplib.VAR, oplib.CONST
    with np.errstate(all="ignore"):
        for i in order:
            node = nodes[i]
            op = node.op
            if op is VAR:
                v = ev.values[i]
                val[i] = T.new(v, args[node.name]) if node.name in args else v
            elif op is CONST:
                val[i] = ev.values[i]
            elif op.gate is None:
                val[i] = T.call(op.forward, (*[val[j] for j in node.inputs], *node.params))
            else:
                xs = [val[j] for j in node.inputs]
                pair = T.call(_gate_forward(graph, node, dtype), xs) if any(
                    isinstance(x, _Sym) for x in xs) else engine.gate_forward(
                        graph, node, xs, dtype)
                if isinstance(pair, _Sym):
                    states[i], val[i] = T.call(_first, (pair,)), T.call(_second, (pair,))
                else:
                    states[i], val[i] = pair
        grads = _trace_backward(T, ev, val, states, [variables.get(n) for n in params])
    loss = val[ev.output]
    outs = [loss] + grads
    returned = [o.name if isinstance(o, _Sym) else T.name_of(o) for o in outs]
    lines = _live(T.lines, returned)
    pnames = [f"p{k}" for k in range(len(params))] + [f"d{k}" for k in range(len(data))]
    body = [f"    {t} = {f}({', '.join(a)})" for t, f, a in lines]
    src = "\n".join([f"def step({', '.join(pnames)}):", *body,
                     f"    return {returned[0]}, ({', '.join(returned[1:])},)"])
    ns = dict(T.ns)
    exec(src, ns)  # generated from node ids and op functions only: nothing user-written
    fallbacks = sum(1 for _, f, _ in lines if getattr(T.ns[f], "_live_rule", False))
    return Step(list(params), list(data), src, ns["step"], len(lines), fallbacks)


def _first(pair):
    return pair[0]


def _second(pair):
    return pair[1]


def _gate_forward(graph, node, dtype):
    def run(*xs):
        return engine.gate_forward(graph, node, list(xs), dtype)
    return run


def _gate_backward(graph, node):
    def run(inst, g, *xs):
        return engine.gate_backward(graph, node, inst, g, list(xs))
    return run


def _getter(k):
    def get(items):
        return items[k]
    return get


def _live_downstream(node, k):
    """The rule of input k of ``node``, run on live values (when it cannot be traced)."""
    def run(g, y, *xs):
        return engine.downstream(node, k, g, y, list(xs))[0]
    run._live_rule = True
    return run


def _trace_backward(T, ev, val, states, targets):
    """The reverse pass of engine._backward, recorded: downstream = upstream x local."""
    graph, order = ev.graph, ev.order
    nodes = graph.nodes
    need = bytearray(len(val))
    for i in targets:
        if i is not None:
            need[i] = 1
    for i in order:
        if not need[i] and any(need[j] for j in nodes[i].inputs):
            need[i] = 1
    grads = [None] * len(val)
    out = ev.output
    if need[out]:
        grads[out] = np.ones(np.shape(ev.values[out]), dtype=ev.dtype)
    old = oplib.tracer
    oplib.tracer = T.hook
    try:
        for i in reversed(order):
            node = nodes[i]
            g = grads[i]
            if g is None or not node.inputs:
                continue
            xs = [val[j] for j in node.inputs]
            y = val[i]
            gate = None
            if node.op.gate is not None:
                got = T.call(_gate_backward(graph, node), (states[i], g, *xs))
                gate = [T.call(_getter(k), (got,)) if isinstance(got, _Sym) else got[k]
                        for k in range(len(xs))]
            for k, j in enumerate(node.inputs):
                if not need[j]:
                    continue
                mark = len(T.lines)
                try:
                    d, _ = engine.downstream(node, k, g, y, xs, gate)
                except (_Untraceable, TypeError, AttributeError, ValueError):
                    del T.lines[mark:]
                    oplib.tracer = old
                    try:
                        d = T.call(_live_downstream(node, k), (g, y, *xs))
                    finally:
                        oplib.tracer = T.hook
                grads[j] = d if grads[j] is None else grads[j] + d
    except GradcliError:
        raise
    except Exception as e:
        raise engine._op_failure(graph, nodes[i], ev.values, e, "backward") from e
    finally:
        oplib.tracer = old
    out_grads = []
    for i in targets:
        g = grads[i] if i is not None else None
        if g is None:
            g = np.zeros(np.shape(ev.values[i]) if i is not None else (), dtype=ev.dtype)
        out_grads.append(g)
    return out_grads


def _live(lines, returned):
    """Drop the lines whose results nothing returned depends on."""
    live = set(returned)
    keep = []
    for t, f, a in reversed(lines):
        if t in live:
            keep.append((t, f, a))
            live.update(a)
    keep.reverse()
    return keep


# ================================================================ optimizers (PyTorch's)

class Optimizer:
    """One update rule with its state: ``update(params, grads, lr)`` -> new params.

    The state (``state[buffer][name]``, PyTorch's buffer names) and the step count are what
    ``--save`` writes and ``--resume`` reads.  Every update makes new arrays, so the
    gradients the step returned (possibly constants of the compiled step) are never written.
    """

    name = "sgd"
    buffers = ()

    def __init__(self, names, *, weight_decay=0.0, **options):
        self.names = list(names)
        self.weight_decay = float(weight_decay)
        self.options = options
        self.t = 0                       # updates made so far (Adam's bias correction)
        self.state = {b: {} for b in self.buffers}

    def hyper(self):
        return {"weight_decay": self.weight_decay, **self.options}

    def update(self, params, grads, lr):
        self.t += 1
        return self._update(params, grads, lr)

    def _update(self, params, grads, lr):
        wd = self.weight_decay
        if wd:
            return [p - lr * (g + wd * p) for p, g in zip(params, grads)]
        return [p - lr * g for p, g in zip(params, grads)]  # the seed's update, bit for bit


class SGD(Optimizer):
    """torch.optim.SGD without momentum: ``p = p - lr * g`` (``g + wd * p`` with decay)."""


class Momentum(Optimizer):
    """torch.optim.SGD with momentum: ``buf = mu*buf + (1-dampening)*g`` (``buf = g`` at the
    first step), then ``p -= lr * buf`` (Nesterov: ``p -= lr * (g + mu*buf)``)."""

    name = "momentum"
    buffers = ("momentum_buffer",)

    def _update(self, params, grads, lr):
        mu = self.options["momentum"]
        damp = self.options["dampening"]
        nesterov = self.options["nesterov"]
        wd = self.weight_decay
        bufs = self.state["momentum_buffer"]
        out = []
        for name, p, g in zip(self.names, params, grads):
            if wd:
                g = g + wd * p
            buf = bufs.get(name)
            buf = np.array(g, copy=True) if buf is None else mu * buf + (1 - damp) * g
            bufs[name] = buf
            out.append(p - lr * (g + mu * buf if nesterov else buf))
        return out


class Adam(Optimizer):
    """torch.optim.Adam (``decoupled=False``) and AdamW (``decoupled=True``)."""

    name = "adam"
    buffers = ("exp_avg", "exp_avg_sq")
    decoupled = False

    def __init__(self, names, **options):
        super().__init__(names, **options)
        if self.options.get("amsgrad"):
            self.buffers = self.buffers + ("max_exp_avg_sq",)
            self.state["max_exp_avg_sq"] = {}

    def _update(self, params, grads, lr):
        b1, b2 = self.options["betas"]
        eps = self.options["eps"]
        amsgrad = self.options.get("amsgrad", False)
        wd = self.weight_decay
        t = self.t
        m_all, v_all = self.state["exp_avg"], self.state["exp_avg_sq"]
        bias1 = 1 - b1 ** t
        bias2_sqrt = (1 - b2 ** t) ** 0.5  # as torch: a float's ** 0.5
        step_size = lr / bias1
        out = []
        for name, p, g in zip(self.names, params, grads):
            if wd and self.decoupled:
                p = p * (1 - lr * wd)
            elif wd:
                g = g + wd * p
            m = m_all.get(name)
            v = v_all.get(name)
            if m is None:
                m = np.zeros_like(p)
                v = np.zeros_like(p)
            m = m + (1 - b1) * (g - m)      # exp_avg.lerp_(grad, 1 - beta1)
            v = b2 * v + (1 - b2) * g * g   # exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1-beta2)
            m_all[name], v_all[name] = m, v
            if amsgrad:
                vmax = self.state["max_exp_avg_sq"].get(name)
                vmax = v if vmax is None else np.maximum(vmax, v)
                self.state["max_exp_avg_sq"][name] = vmax
                v = vmax
            denom = np.sqrt(v) / bias2_sqrt + eps
            out.append(p - step_size * (m / denom))
        return out


class AdamW(Adam):
    """torch.optim.AdamW: decay applied to the parameter, ``p *= 1 - lr * wd``, then Adam."""

    name = "adamw"
    decoupled = True


_OPTIMIZER_CLASSES = {"sgd": SGD, "momentum": Momentum, "adam": Adam, "adamw": AdamW}


def make_optimizer(name, params, *, momentum=0.9, nesterov=False, dampening=0.0,
                   betas=(0.9, 0.999), eps=1e-8, weight_decay=None, amsgrad=False):
    """An optimizer by name, with PyTorch's defaults (AdamW's weight decay is 0.01)."""
    if name not in _OPTIMIZER_CLASSES:
        raise BindingError(f"optimizer {clip(str(name), 40)!r}: choose "
                           f"{', '.join(OPTIMIZERS)}{did_you_mean(str(name), OPTIMIZERS)}")
    if weight_decay is None:
        weight_decay = 0.01 if name == "adamw" else 0.0
    if weight_decay < 0 or not math.isfinite(weight_decay):
        raise BindingError(f"weight decay {weight_decay}: give a number >= 0")
    if name == "momentum":
        if not (0 <= momentum and math.isfinite(momentum)):
            raise BindingError(f"momentum {momentum}: give a number >= 0")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise BindingError("Nesterov momentum needs a momentum > 0 and no dampening "
                               "(as torch.optim.SGD)")
        return Momentum(params, weight_decay=weight_decay, momentum=float(momentum),
                        dampening=float(dampening), nesterov=bool(nesterov))
    if name in ("adam", "adamw"):
        b1, b2 = (float(b) for b in betas)
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise BindingError(f"betas ({b1}, {b2}): each must be in [0, 1)")
        if not eps >= 0:
            raise BindingError(f"eps {eps}: give a number >= 0")
        return _OPTIMIZER_CLASSES[name](params, weight_decay=weight_decay, betas=(b1, b2),
                                        eps=float(eps), amsgrad=bool(amsgrad))
    return SGD(params, weight_decay=weight_decay)


# ================================================================ schedules (PyTorch's)

def schedule_fn(name, lr, *, t_max, eta_min=0.0, step_size=None, gamma=0.1):
    """The learning rate of update k (0-based, counted over resumed runs too).

    ``cosine``: CosineAnnealingLR, ``eta_min + (lr - eta_min) * (1 + cos(pi k / T_max)) / 2``;
    ``step``: StepLR, ``lr * gamma ** (k // step_size)``; ``constant`` (or None): ``lr``.
    The scheduler steps after each update, as ``scheduler.step()`` after ``optimizer.step()``.
    """
    if name in (None, "constant"):
        return None
    if name == "cosine":
        if not t_max or t_max < 1:
            raise BindingError(f"--t-max {t_max}: give a number of steps >= 1")
        span = lr - eta_min
        return lambda k: eta_min + span * (1 + math.cos(math.pi * k / t_max)) / 2
    if name == "step":
        if not step_size or step_size < 1:
            raise BindingError(f"--step-size {step_size}: give a number of steps >= 1")
        return lambda k: lr * gamma ** (k // step_size)
    raise BindingError(f"schedule {clip(str(name), 40)!r}: choose "
                       f"{', '.join(SCHEDULES)}{did_you_mean(str(name), SCHEDULES)}")


# ================================================================ starting values

def init_value(kind, shape, rng, *, std=1.0, dtype=np.float64):
    """``zeros``; ``normal``: N(0, std^2); ``xavier``: torch.nn.init.xavier_uniform_, uniform
    on +-sqrt(6 / (fan_in + fan_out)), with fans as PyTorch counts them for 2 or more axes
    (fan_in = shape[1] * receptive field, fan_out = shape[0] * receptive field), a vector
    of n counted as an n x 1 matrix and a scalar as 1 x 1."""
    shape = tuple(shape)
    if kind == "zeros":
        return np.zeros(shape, dtype=dtype)
    if kind == "normal":
        return (rng.standard_normal(shape) * std).astype(dtype, copy=False)
    if kind == "xavier":
        if len(shape) >= 2:
            field = int(np.prod(shape[2:], dtype=np.int64))
            fan_in, fan_out = shape[1] * field, shape[0] * field
        else:
            fan_in, fan_out = 1, (shape[0] if shape else 1)
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-bound, bound, shape).astype(dtype, copy=False)
    raise BindingError(f"--init {clip(str(kind), 40)!r}: choose "
                       f"{', '.join(INITS)}{did_you_mean(str(kind), INITS)}")


def parse_shape(text, name="--shape"):
    """``"3,2"`` -> (3, 2); ``""`` or ``"()"`` -> () (a scalar)."""
    t = text.strip().strip("()[] ")
    if not t:
        return ()
    try:
        dims = tuple(int(d) for d in t.split(",") if d.strip())
    except ValueError:
        raise BindingError(f"{name} {clip(text, 40)!r}: give the shape as whole numbers "
                           f"separated by commas, like 3,2") from None
    if any(d < 0 for d in dims):
        raise BindingError(f"{name} {clip(text, 40)!r}: a shape has no negative lengths")
    return dims


# ================================================================ data: mini-batches

def read_table(path, names=None):
    """A whole batch file in memory: {column name: array with a leading row axis}
    (gradcli.batching reads it: a CSV with a header, JSON Lines, .npy or .npz)."""
    from .batching import iter_chunks

    parts = {}
    for chunk in iter_chunks(path, 65536, names):
        for k, v in chunk.items():
            parts.setdefault(k, []).append(v)
    if not parts:
        raise BindingError(f"--batch {clip(str(path), 60)}: the file has no rows")
    return {k: np.concatenate(v) for k, v in parts.items()}


def column_names(path):
    """The columns of a batch file, read from its head."""
    from .batching import open_points

    points = open_points(path)
    try:
        return list(points.names)
    finally:
        points.close()


class StreamBatches:
    """Mini-batches read from the file as the loop goes, in file order, one pass per epoch
    (memory stays flat however long the file is); the last batch of a pass may be
    smaller."""

    def __init__(self, path, size, names):
        self.path, self.size, self.names = path, int(size), names
        self.epoch = 0
        self.rows = None      # known once a pass has ended
        self.columns = None   # never all in memory
        self._chunks = None
        self._seen = 0

    def __next__(self):
        from .batching import iter_chunks

        while True:
            if self._chunks is None:
                self._chunks = iter_chunks(self.path, self.size, self.names)
                self.epoch += 1
                self._seen = 0
            chunk = next(self._chunks, None)
            if chunk is not None:
                self._seen += len(next(iter(chunk.values())))
                return chunk
            if not self._seen:
                raise BindingError(f"--batch {clip(str(self.path), 60)}: the file has no rows")
            self.rows, self._chunks = self._seen, None

    def skip(self, n):
        for _ in range(n):
            next(self)


class Batches:
    """Mini-batches of ``size`` rows of columns in memory, in order or shuffled each epoch
    (``rng``); the last batch of an epoch may be smaller, as PyTorch's DataLoader
    (drop_last=False)."""

    def __init__(self, columns, size, shuffle=False, rng=None):
        self.columns = columns
        self.rows = next(iter(columns.values())).shape[0]
        if self.rows == 0:
            raise BindingError("--batch: the file has no rows")
        self.size = int(size)
        self.shuffle = shuffle
        self.rng = rng
        self.epoch = 0
        self._order = None
        self._at = self.rows

    def __next__(self):
        if self._at >= self.rows:
            self._at = 0
            self._order = self.rng.permutation(self.rows) if self.shuffle else None
            self.epoch += 1
        a, b = self._at, min(self._at + self.size, self.rows)
        self._at = b
        if self._order is None:
            return {k: v[a:b] for k, v in self.columns.items()}
        idx = self._order[a:b]
        return {k: v[idx] for k, v in self.columns.items()}

    def skip(self, n):
        for _ in range(n):
            next(self)


# ================================================================ the loop

class Descent:
    """What :func:`descend` did.

    ``params``: name -> final value; ``loss``: the loss at the parameters after k updates,
    for k = 0 .. ``steps`` (``steps + 1`` numbers; with mini-batches, on the batch at hand);
    ``steps``: updates made in this run; ``stopped``: why it ended (``"steps"``, ``"tol"``,
    ``"time"``, ``"interrupted"``, ``"nan"``); ``diverged``: the message when the loss became
    nan or inf (then ``params`` are the last ones with a finite loss); ``grad_norm``: the
    gradient's 2-norm at each point of ``loss`` (when asked); ``optimizer``: the optimizer
    and its state (``optimizer.state``, ``optimizer.t``), which :func:`save` writes.
    """

    def __init__(self, **kw):
        self.__dict__.update(kw)

    @property
    def final_loss(self):
        return self.loss[-1] if self.loss else math.nan


def _names(params):
    if isinstance(params, str):
        params = [p.strip() for p in params.split(",")]
    names = list(params or ())
    if not names or not all(isinstance(n, str) and n for n in names):
        raise BindingError("--params: name the parameters to learn, separated by commas, "
                           "like --params w,b")
    seen = set()
    for n in names:
        if n in seen:
            raise BindingError(f"--params names {clip(n, 40)} twice")
        seen.add(n)
    return names


def _check_params(graph, names):
    variables = graph.variables
    for n in names:
        if n not in variables:
            named = n in graph.names
            raise BindingError(
                f"--params {clip(n, 40)}: " + (
                    f"{clip(n, 40)} is a value the program computes, not an input it could "
                    f"learn" if named else
                    f"the program has no variable {clip(n, 40)}"
                    f"{did_you_mean(n, list(variables))}")
                + f" (variables: {name_list(variables) or 'none'})")


def _number(value, what, low=None, integer=False, allow_none=False):
    if value is None and allow_none:
        return None
    try:
        v = int(value) if integer else float(value)
    except (TypeError, ValueError):
        raise BindingError(f"{what} {value!r}: give a number") from None
    if integer and v != value:
        raise BindingError(f"{what} {value!r}: give a whole number")
    if not math.isfinite(v) or (low is not None and v < low):
        raise BindingError(f"{what} {value}: give a number >= {low}")
    return v


def descend(program, bindings=None, /, *, params, lr=0.01, steps=100, optimizer="sgd",
            momentum=0.9, nesterov=False, dampening=0.0, betas=(0.9, 0.999), eps=1e-8,
            weight_decay=None, amsgrad=False, schedule=None, t_max=None, eta_min=0.0,
            step_size=None, gamma=0.1, init=None, shapes=None, seed=0, init_std=1.0,
            batch=None, batch_size=None, shuffle=False, tol=None, max_time=None,
            resume=None, output=None, dtype="float64", ops=None, callback=None,
            grad_norm=False, **values):
    """Gradient descent on the scalar ``program``: each step ``p = p - lr * dL/dp``.

        >>> import gradcli
        >>> r = gradcli.descend("mean((w*x + b - y)**2)", params="w,b", w=0, b=0,
        ...                     x=[1, 2, 3, 4], y=[2, 3, 4, 5], lr=0.01, steps=1000)
        >>> round(float(r.params["w"]), 3), round(float(r.params["b"]), 3), len(r.loss)
        (1.01, 0.971, 1001)

    ``params`` names the bindings that learn (a list or ``"w,b"``); every other binding is
    data.  A parameter without a binding starts from ``init`` (``zeros``, ``normal``,
    ``xavier``; ``seed``) with its shape from ``shapes`` ({name: (3, 2)}; a scalar when not
    given; a number bound to a parameter with a shape fills it).  ``optimizer``: ``sgd``,
    ``momentum`` (``momentum``, ``nesterov``, ``dampening``), ``adam``, ``adamw``
    (``betas``, ``eps``, ``amsgrad``), all as ``torch.optim`` with its defaults; ``weight_decay`` (AdamW's default 0.01, else 0).
    ``schedule``: ``cosine`` (``t_max``, default ``steps``; ``eta_min``) or ``step``
    (``step_size``, default a third of ``steps``; ``gamma`` 0.1), as PyTorch's
    CosineAnnealingLR and StepLR.  ``batch``: a file (or a dict of columns) whose columns
    bind data variables, ``batch_size`` rows a step, in file order or ``shuffle``d each
    epoch.  ``tol``: stop when the loss changes by less than this; ``max_time``: seconds.
    ``resume``: a file written by :func:`save` (or a :class:`Descent`) to continue from,
    optimizer state included.  ``callback(k, loss)`` is called at every point of the loss
    curve and stops the run when it returns true.  Returns a :class:`Descent`.
    """
    from .api import _bindings, compile as compile_program

    graph = compile_program(program, ops)
    given = _bindings(bindings, values)
    names = _names(params)
    dtype = _dtype(dtype)
    lr = _number(lr, "--lr", 0)
    steps = _number(steps, "--steps", 0, integer=True)
    tol = _number(tol, "--tol", 0, allow_none=True)
    max_time = _number(max_time, "--max-time", 0, allow_none=True)
    _check_params(graph, names)
    warnings = list(getattr(given, "warnings", ()))

    # --- where the parameters start
    opt = make_optimizer(optimizer, names, momentum=momentum, nesterov=nesterov,
                         dampening=dampening, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad)
    start = {}
    if resume is not None:
        start = _resume_from(resume, names, opt, dtype)
    shapes = dict(shapes or {})
    for n in shapes:
        if n not in names:
            raise BindingError(f"--shape {clip(n, 40)}: {clip(n, 40)} is not one of --params "
                               f"({', '.join(names)})")
    rng = np.random.default_rng(seed)
    for n in names:
        if n in start:
            continue
        if n in given:
            v = np.array(given[n], dtype=dtype) if not isinstance(given[n], np.ndarray) \
                else given[n].astype(dtype)
            if n in shapes and tuple(shapes[n]) != v.shape:
                if v.shape != ():
                    raise BindingError(f"--shape {n}={','.join(map(str, shapes[n]))}: but "
                                       f"{n} is bound to a value of shape {v.shape}")
                v = np.full(tuple(shapes[n]), v, dtype=dtype)  # b=0 --shape b=8: 8 zeros
            start[n] = v
        elif init is not None:
            start[n] = init_value(init, shapes.get(n, ()), rng, std=init_std, dtype=dtype)
        else:
            raise BindingError(f"parameter {clip(n, 40)} has no starting value: bind it "
                               f"({clip(n, 40)}=0) or give --init zeros|normal|xavier "
                               f"(with --shape {clip(n, 40)}=3,2 for an array)")
    if init is not None and init not in INITS:
        init_value(init, (), rng)  # the clear error for a bad name

    # --- data: fixed bindings, and mini-batches
    batches = None
    data_names = []
    if batch is not None:
        in_file = isinstance(batch, (str, os.PathLike))
        path = os.fspath(batch) if in_file else None
        # a file in file order streams; shuffled (or stdin, read once) it is read whole
        stream = in_file and batch_size is not None and not shuffle and path != "-"
        columns = None
        if in_file and stream:
            available = column_names(path)
        else:
            columns = read_table(path) if in_file else {k: np.asarray(v)
                                                         for k, v in dict(batch).items()}
            available = list(columns)
        variables = graph.variables
        for n in available:
            if n in names:
                raise BindingError(f"--batch: column {clip(n, 40)} is a parameter; "
                                   f"parameters come from bindings or --init, not the data")
        data_names = [n for n in available if n in variables]
        for n in available:
            if n not in variables:
                warnings.append(f"--batch column {clip(n, 40)} is not used: the program has "
                                f"no variable {clip(n, 40)}")
        if not data_names:
            raise BindingError("--batch: no column of the file names a variable of the "
                               "program (give the file a header row with their names)")
        if stream:
            size = _number(batch_size, "--batch-size", 1, integer=True)
            batches = StreamBatches(path, size, data_names)
        else:
            columns = {n: columns[n] for n in data_names}
            size = _number(batch_size, "--batch-size", 1, integer=True) if batch_size else \
                next(iter(columns.values())).shape[0]
            batches = Batches(columns, size, shuffle, np.random.default_rng([seed, 1]))
        batches.skip(opt.t)  # a resumed run continues where the data stood
        for n in data_names:
            if n in given:
                warnings.append(f"binding {clip(n, 40)} is replaced by the --batch column "
                                f"of that name")
    elif batch_size is not None or shuffle:
        raise BindingError("--batch-size and --shuffle need --batch FILE")

    fixed = {k: v for k, v in given.items() if k not in names and k not in data_names}
    if t_max is None:
        t_max = steps
    if step_size is None and schedule == "step":
        step_size = max(1, steps // 3)
    lr_at = schedule_fn(schedule, lr, t_max=t_max, eta_min=float(eta_min),
                        step_size=step_size, gamma=float(gamma))

    steps_cache = {}
    first = [True]

    def compiled(data):
        key = tuple(np.shape(v) for v in data)
        st = steps_cache.get(key)
        if st is None:
            binds = dict(fixed)
            binds.update(zip(names, P))
            binds.update(zip(data_names, data))
            ev = engine.evaluate(graph, binds, output=output, dtype=dtype)
            _check_scalar(ev)
            if first[0]:  # the same for every batch: say them once
                first[0] = False
                warnings.extend(ev.warnings)
            st = steps_cache[key] = _compile(ev, names, data_names)
        return st

    P = [start[n] for n in names]
    first_step = opt.t
    if batches is not None:
        def next_data():
            b = next(batches)
            return [b[n].astype(dtype, copy=False) for n in data_names]
    else:
        def next_data():
            return ()

    losses, norms = [], ([] if grad_norm else None)
    stopped, diverged = "steps", None
    prev = None
    k = 0
    t0 = time.perf_counter()
    data = next_data()
    step = compiled(data)
    with np.errstate(all="ignore"):
        while True:
            loss, grads = step(P, data)
            L = float(loss)
            losses.append(L)
            if norms is not None:
                norms.append(math.sqrt(sum(float(np.sum(g * g)) for g in grads)))
            if L - L != 0:  # nan or inf
                stopped = "nan"
                diverged = _diverged(k, L, names, P, prev)
                if k > 0:
                    P = prev[0]
                    losses.pop()
                    if norms is not None:
                        norms.pop()
                    k -= 1
                    opt.t, opt.state = prev[2], prev[3]
                break
            if k == steps:
                break
            if tol is not None and k > 0 and abs(L - losses[-2]) < tol:
                stopped = "tol"
                break
            if callback is not None and callback(k, L):
                stopped = "interrupted"
                break
            if max_time is not None and time.perf_counter() - t0 >= max_time:
                stopped = "time"
                break
            rate = lr if lr_at is None else lr_at(opt.t)
            # what to go back to if the next loss is nan (buffers are replaced, not written)
            prev = (P, grads, opt.t, {b: dict(d) for b, d in opt.state.items()})
            P = opt.update(P, grads, rate)
            k += 1
            if batches is not None:
                data = next_data()
                step = compiled(data)
    elapsed = time.perf_counter() - t0
    full_loss = None
    if batches is not None and batches.columns is not None:
        # the loss on all the data at the end (when they are in memory), beside the batch's
        binds = dict(fixed)
        binds.update(zip(names, P))
        binds.update(batches.columns)
        full_loss = float(engine.evaluate(graph, binds, output=output, dtype=dtype).value)
    if callback is not None and stopped not in ("interrupted", "nan"):
        callback(k, losses[-1])  # the last point (the loop stopped before showing it)
    batched = batches is not None
    return Descent(params={n: np.asarray(p) for n, p in zip(names, P)}, loss=losses,
                   steps=k, stopped=stopped, diverged=diverged, grad_norm=norms,
                   optimizer=opt, names=names, lr=lr, schedule=schedule or "constant",
                   elapsed=elapsed, first_step=first_step, warnings=warnings, graph=graph,
                   output_name=output or graph.output_name, full_loss=full_loss,
                   batch_size=batches.size if batched else None,
                   rows=batches.rows if batched else None,
                   epochs=batches.epoch if batched else None,
                   compiled=list(steps_cache.values()))


def _diverged(k, L, names, P, prev):
    """Which step and which parameter: the message of a loss that became nan or inf."""
    what = "nan" if L != L else "inf" if L > 0 else "-inf"
    if prev is None:
        return (f"the loss is {what} at the starting parameters (step 0): the program gives "
                f"{what} at the starting values")
    head = f"the loss became {what} at step {k}"
    tail = f"; the output shows the parameters after step {k - 1}; try a smaller --lr"
    for n, p, g in zip(names, P, prev[1]):
        bad = ~np.isfinite(p)
        if np.any(bad):
            count = int(np.count_nonzero(bad))
            of = f" in {count} of {p.size} elements" if p.size > 1 else ""
            return (f"{head}: parameter {n} became non-finite{of} (its gradient reached "
                    f"{_size(g)})" + tail)
    for n, g in zip(names, prev[1]):
        if np.any(~np.isfinite(g)):
            return f"{head}: the gradient of {n} was not finite at step {k - 1}" + tail
    sizes = [(float(np.max(np.abs(p))) if np.size(p) else 0.0, n) for n, p in zip(names, P)]
    big, n = max(sizes)
    return f"{head}: parameter {n} blew up (|{n}| reached {big:.3g})" + tail


def _size(g):
    g = np.asarray(g)
    return f"{float(np.max(np.abs(g))):.3g}" if g.size else "0"


# ================================================================ save and resume

def state_path(path):
    """Where :func:`save` keeps the optimizer state of ``path``: ``path + ".optim.npz"``."""
    return os.fspath(path) + ".optim.npz"


def _atomic(path, write, what="--save"):
    """Write ``path`` through a temporary file beside it, renamed over it at the end: a
    reader sees the old file or the new one, never half of one."""
    from .files import write_atomic

    try:
        write_atomic(path, write)
    except OSError as e:
        raise BindingError(f"{what} {clip(os.fspath(path), 60)}: cannot write it "
                           f"({e.strerror or e})") from None


def check_save_path(path):
    """The error --save would give at the end, before the run."""
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext not in (".json", ".npz"):
        raise BindingError(f"--save {clip(os.fspath(path), 60)}: give a .json or an .npz "
                           f"file name")
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    if not os.path.isdir(folder):
        raise BindingError(f"--save {clip(os.fspath(path), 60)}: no folder {clip(folder, 60)}")


def save(result, path):
    """Write the parameters to ``path`` (JSON object or ``.npz``, read back by
    ``--values``) and the optimizer state beside it (:func:`state_path`), each atomically."""
    import io
    import json

    from .values import to_json

    path = os.fspath(path)
    check_save_path(path)
    ext = os.path.splitext(path)[1].lower()
    params = result.params
    if ext == ".npz":
        def write(f):
            buf = io.BytesIO()
            np.savez(buf, **{n: np.asarray(v) for n, v in params.items()})
            f.write(buf.getvalue())
    else:
        def write(f):
            f.write((json.dumps({n: to_json(v) for n, v in params.items()}, indent=1,
                                allow_nan=False) + "\n").encode())
    opt = result.optimizer
    arrays = {"optimizer": np.array(opt.name), "step": np.array(opt.t, dtype=np.int64),
              "names": np.array(list(params), dtype=str)}
    for key, value in opt.hyper().items():
        arrays[f"hyper/{key}"] = np.asarray(value)
    for buffer, per in opt.state.items():
        for n, v in per.items():
            arrays[f"{buffer}/{n}"] = np.asarray(v)

    def write_state(f):
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        f.write(buf.getvalue())
    _atomic(path, write)
    _atomic(state_path(path), write_state)


def load_state(path):
    """The optimizer state :func:`save` wrote for ``path``: {"optimizer", "step", buffers}."""
    import io
    import zipfile

    from . import files

    spath = state_path(path)
    what = f"--resume {path}"
    if not files.exists(spath):
        raise BindingError(f"{what}: no optimizer state beside it ({os.path.basename(spath)}"
                           f" is missing); --save writes both. To start fresh from its "
                           f"parameters, pass --values {path}")
    try:
        with np.load(io.BytesIO(files.read_bytes(spath, what)), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise BindingError(f"{what}: {os.path.basename(spath)} is not a valid state file "
                           f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") \
            from None
    if "optimizer" not in arrays or "step" not in arrays:
        raise BindingError(f"{what}: {os.path.basename(spath)} is not a gradcli state file")
    return arrays


def _resume_from(resume, names, opt, dtype):
    """Starting values and the optimizer state from a saved fit (or a Descent)."""
    if isinstance(resume, Descent):
        params = resume.params
        src = resume.optimizer
        saved_name, step = src.name, src.t
        buffers = {b: dict(d) for b, d in src.state.items()}
        what = "resume"
    else:
        from .values import load_values_file

        params = load_values_file(os.fspath(resume))
        arrays = load_state(resume)
        saved_name, step = str(arrays["optimizer"]), int(arrays["step"])
        buffers = {}
        for key, v in arrays.items():
            if "/" in key and not key.startswith("hyper/"):
                b, n = key.split("/", 1)
                buffers.setdefault(b, {})[n] = v
        what = f"--resume {resume}"
    if saved_name != opt.name:
        raise BindingError(f"{what}: the fit was made with --optimizer {saved_name}; resume "
                           f"it with the same optimizer (or start afresh with --values)")
    missing = [n for n in names if n not in params]
    if missing:
        raise BindingError(f"{what}: it has no value for {', '.join(missing)} "
                           f"(it holds {name_list(params) or 'nothing'})")
    start = {n: np.array(params[n], dtype=dtype) for n in names}
    for b in opt.buffers:
        for n, v in buffers.get(b, {}).items():
            if n in names:
                if np.shape(v) != np.shape(start[n]):
                    raise BindingError(f"{what}: the state {b} of {n} has shape "
                                       f"{np.shape(v)} but {n} has shape {np.shape(start[n])}")
                opt.state[b][n] = np.array(v)
    opt.t = step
    return start
