"""Symbolic derivatives: the reverse pass recorded as a graph of the same ops.

The op library writes every gradient rule with its own ops and Python's operators, and
``Op.__call__`` hands each call to ``ops.tracer`` when one is set.  Here the tracer records
the call as a node (:class:`Sym`) instead of computing it, so running the engine's own
reverse-pass step (``engine.downstream``) on symbols gives the backward pass as a program:
``gradcli diff`` prints it, and differentiating it again gives Hessians, Hessian-vector
products and ``--order N``.  Nothing here knows an op by name; the rewrite rules that keep
the result readable live in :mod:`gradcli.simplify`.

    >>> import gradcli
    >>> gradcli.diff("x**2 + 2*x + 1").text["x"]
    '2*x + 2'
"""
from __future__ import annotations

import contextlib

import numpy as np

from . import ops as oplib
from . import simplify
from .errors import BindingError, GradcliError

__all__ = ["diff", "hessian", "hvp", "gradient_graph", "Sym", "Builder", "NotTraceable",
           "Derivatives", "Hessian"]


class NotTraceable(GradcliError):
    """An op's gradient rule computes with NumPy (or a custom op's backward is Python), so
    it has no expression."""


# ---------------------------------------------------------------- symbols

def _infix(name):
    op = oplib.INFIX.get(name)
    return op if op is not None else getattr(oplib, name)


class Sym:
    """One node of a symbolic graph: an op applied to earlier symbols, a variable or a
    constant.  Arithmetic on symbols calls the library's ops, so a gradient rule run on
    symbols records itself."""

    __slots__ = ("id", "op", "inputs", "params", "shape", "value", "name", "probe", "label")
    __array_ufunc__ = None       # NumPy defers to our operators: np.float64(2) * s is s.__rmul__
    __array_priority__ = 1000

    def __init__(self, id, op, inputs, params, shape, value=None, name=None, probe=None):
        self.id = id
        self.op = op
        self.inputs = inputs     # Syms
        self.params = params     # static arguments, as the op takes them
        self.shape = shape
        self.value = value       # a constant's value: an array, or a 0-d number for all of shape
        self.name = name         # a variable's name
        self.probe = probe       # the value at the point the graph was built (for shapes)
        self.label = None        # the program's name for this value, if it has one

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def size(self):
        return int(np.prod(self.shape, dtype=np.int64))

    def __repr__(self):
        what = self.name if self.op is oplib.VAR else self.op.name
        return f"Sym({self.id}, {what}, shape={self.shape})"

    # arithmetic: each goes through Op.__call__, hence the tracer
    def __add__(self, o):
        return _infix("add")(self, o)

    def __radd__(self, o):
        return _infix("add")(o, self)

    def __sub__(self, o):
        return _infix("sub")(self, o)

    def __rsub__(self, o):
        return _infix("sub")(o, self)

    def __mul__(self, o):
        return _infix("mul")(self, o)

    def __rmul__(self, o):
        return _infix("mul")(o, self)

    def __truediv__(self, o):
        return _infix("div")(self, o)

    def __rtruediv__(self, o):
        return _infix("div")(o, self)

    def __pow__(self, o):
        return _infix("pow")(self, o)

    def __rpow__(self, o):
        return _infix("pow")(o, self)

    def __matmul__(self, o):
        return _infix("matmul")(self, o)

    def __rmatmul__(self, o):
        return _infix("matmul")(o, self)

    def __neg__(self):
        return _infix("neg")(self)

    def __pos__(self):
        return self

    def __lt__(self, o):
        return _infix("lt")(self, o)

    def __le__(self, o):
        return _infix("le")(self, o)

    def __gt__(self, o):
        return _infix("gt")(self, o)

    def __ge__(self, o):
        return _infix("ge")(self, o)

    __hash__ = object.__hash__

    def __abs__(self):
        return oplib.CALLABLE[("abs", 1)](self)

    # what a rule cannot do with a symbol: look at its numbers
    def _untraceable(self, *args):
        raise _Untraced()

    __bool__ = __float__ = __int__ = __index__ = __array__ = __iter__ = __len__ = _untraceable


class _Untraced(Exception):
    pass


class Builder:
    """Makes symbols: every node once (equal nodes are shared), simplified as it is made."""

    def __init__(self, dtype=np.float64):
        self.nodes = []
        self.table = {}
        self.dtype = dtype
        self.terms = {}  # sym id -> its terms as a sum (simplify's like terms), or None
        self.as_written = False  # True while lifting a program: fold constants, nothing else

    # -- sources
    def var(self, name, probe):
        key = ("var", name)
        s = self.table.get(key)
        if s is None:
            probe = np.asarray(probe)
            s = self._new(oplib.VAR, (), (), probe.shape, name=name, probe=probe)
            self.table[key] = s
        return s

    def const(self, value, shape=None):
        """A constant: an array, or a number filling ``shape``."""
        value = np.asarray(value, dtype=self.dtype)
        if shape is None:
            shape = value.shape
        shape = tuple(shape)
        if value.ndim and value.size and (value == value.flat[0]).all():
            value = value.flat[0]  # uniform: kept as one number
            value = np.asarray(value, dtype=self.dtype)
        small = value.ndim == 0 or value.size <= simplify.SMALL
        key = ("const", value.tobytes(), value.shape, shape) if small else None
        s = self.table.get(key) if key else None
        if s is None:
            probe = np.broadcast_to(value, shape) if value.ndim == 0 else value
            s = self._new(oplib.CONST, (), (), shape, value=value, probe=probe)
            if key:
                self.table[key] = s
        return s

    def lift(self, x):
        """A rule's argument as a symbol (numbers and arrays become constants)."""
        if isinstance(x, Sym):
            return x
        return self.const(x)

    # -- ops
    def forward(self, op, xs, params):
        # (callers run under np.errstate(all="ignore"): a probe may be outside a domain)
        saved = oplib.tracer
        oplib.tracer = None
        try:
            return op.forward(*xs, *params)
        finally:
            oplib.tracer = saved

    def apply(self, op, inputs, params=(), unique=False):
        """``op(*inputs, *params)`` as a symbol, simplified unless ``unique``."""
        key = (op, tuple([i.id for i in inputs]), _params_key(params))
        if not unique:
            s = self.table.get(key)
            if s is not None:
                return s
        probe = np.asarray(self.forward(op, [i.probe for i in inputs], params))
        shape = probe.shape
        if not unique:
            s = simplify.rewrite(self, op, inputs, params, shape)
            if s is not None:
                if s.shape != shape:  # a rule must keep the shape; broadcast if it did not
                    s = self.apply(oplib.broadcast_to, (s,), (shape,))
                self.table[key] = s
                return s
        s = self._new(op, tuple(inputs), tuple(params), shape, probe=probe)
        if not unique:
            self.table[key] = s
        return s

    def _new(self, op, inputs, params, shape, **kw):
        s = Sym(len(self.nodes), op, inputs, params, tuple(shape), **kw)
        self.nodes.append(s)
        return s

    def trace(self, op, args):
        """The tracer: a library op called inside a gradient rule becomes a node."""
        n = op.arity
        if n is None:  # variadic: inputs until the first static argument
            n = 0
            while n < len(args) and isinstance(args[n], (Sym, np.ndarray, float)):
                n += 1
        inputs = tuple(self.lift(a) for a in args[:n])
        return self.apply(op, inputs, tuple(args[n:]))

    @contextlib.contextmanager
    def tracing(self):
        saved = oplib.tracer
        oplib.tracer = self.trace
        try:
            yield self
        finally:
            oplib.tracer = saved


def _params_key(params):
    try:
        hash(params)
        return params
    except TypeError:
        return repr(params)


# ---------------------------------------------------------------- reverse pass on symbols

def reach(nodes, roots):
    """A bytearray marking every node the ``roots`` depend on (themselves included): one
    sweep down the ids, which are topological, so no recursion."""
    top = max((r.id for r in roots), default=-1)
    mark = bytearray(top + 1)
    for r in roots:
        mark[r.id] = 1
    for i in range(top, -1, -1):
        if mark[i]:
            for x in nodes[i].inputs:
                mark[x.id] = 1
    return mark


def backward(b, out, seed, targets):
    """The reverse pass from ``out`` (seeded with ``seed``) to each of ``targets``, as
    symbols: the engine's step, downstream = upstream x local, run on symbols."""
    from .engine import downstream

    nodes = b.nodes
    top = out.id
    need = bytearray(top + 1)
    wanted = {t.id for t in targets}
    for t in wanted:
        if t <= top:
            need[t] = 1
    marked = reach(nodes, [out])
    order = [i for i in range(top + 1) if marked[i]]
    for i in order:
        if not need[i]:
            for x in nodes[i].inputs:
                if need[x.id]:
                    need[i] = 1
                    break
    grads = {top: seed} if need[top] else {}
    with b.tracing():
        for i in reversed(order):
            s = nodes[i]
            g = grads.get(i)
            if g is None or not s.inputs or simplify.is_zero(g):
                continue
            if s.op.gate is not None:
                raise _custom_op_error(s.op)
            for k, x in enumerate(s.inputs):
                if not need[x.id]:
                    continue
                try:
                    d, _ = downstream(s, k, g, s, s.inputs)
                except GradcliError:
                    raise
                except Exception as e:  # a rule that computes with NumPy on its arguments
                    why = "" if isinstance(e, _Untraced) else f" ({type(e).__name__}: {e})"
                    raise NotTraceable(
                        f"the gradient rule of op {s.op.name} (input {k + 1}) computes with "
                        f"NumPy{why}, so it has no expression; gradcli grad gives its numbers"
                    ) from None
                d = b.lift(d)
                if simplify.is_zero(d):
                    if x.id not in grads:
                        grads[x.id] = b.const(0.0, x.shape)
                    continue
                prev = grads.get(x.id)
                grads[x.id] = d if prev is None or simplify.is_zero(prev) \
                    else b.apply(_infix("add"), (prev, d))
    return [grads.get(t.id) if t.id in grads else b.const(0.0, t.shape) for t in targets]


def _custom_op_error(op):
    return NotTraceable(f"op {op.name} is a custom op: its backward is Python code, not an "
                        f"expression, so diff cannot print it; gradcli grad and check "
                        f"give its numbers")


# ---------------------------------------------------------------- programs into symbols

class Lifted:
    """A program's graph as symbols: ``syms[node id]``, the output and the variables."""

    def __init__(self, builder, graph, syms, out, out_name, variables, evaluation,
                 bindings=None):
        self.builder = builder
        self.bindings = bindings
        self.graph = graph
        self.syms = syms
        self.out = out
        self.out_name = out_name
        self.variables = variables      # name -> Sym
        self.evaluation = evaluation    # engine.Evaluation at the bindings, or None


def _probe_for(k):
    return 0.3 + 0.1 * k  # any value gives the shapes; distinct ones avoid a tie by chance


def lift(graph, bindings=None, *, output=None, dtype="float64", unique=()):
    """Symbols for the nodes ``output`` depends on.  Without bindings every variable is a
    scalar; with them, each has its binding's shape (and every value is checked)."""
    from . import engine

    out_id, out_name = engine.resolve_output(graph, output)
    order = graph.ancestors(out_id)
    nodes = graph.nodes
    for i in order:
        if nodes[i].op.gate is not None:
            raise _custom_op_error(nodes[i].op)
    ev = None
    if bindings:
        ev = engine.evaluate(graph, bindings, output=output, dtype=dtype)
        np_dtype = ev.dtype
    else:
        np_dtype = engine.DTYPES.get(dtype, np.float64) if isinstance(dtype, str) else dtype
    b = Builder(np_dtype)
    syms = {}
    variables = {}
    k = 0
    unique = set(unique)
    b.as_written = True
    try:
        for i in order:
            node = nodes[i]
            if node.op is oplib.VAR:
                probe = ev.values[i] if ev is not None else np.asarray(_probe_for(k), np_dtype)
                k += 1
                s = variables[node.name] = b.var(node.name, probe)
            elif node.op is oplib.CONST:
                s = b.const(node.value)
            else:
                s = b.apply(node.op, tuple(syms[j] for j in node.inputs), node.params,
                            unique=i in unique)
            if node.name and s.label is None and s.op is not oplib.VAR \
                    and s.op is not oplib.CONST:
                s.label = node.name
            syms[i] = s
    except GradcliError:
        raise
    except Exception as e:
        if ev is None:
            raise BindingError(f"{graph.source(i, 40)} ({nodes[i].op.name}): {_first(e)}; "
                               f"without bindings every variable is taken as a scalar: "
                               f"give NAME=VALUE bindings for their shapes") from None
        raise
    finally:
        b.as_written = False
    return Lifted(b, graph, syms, syms[out_id], out_name, variables, ev, bindings)


def _first(e):
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _targets(lifted, wrt):
    """(names, target symbols) for ``wrt`` (default: every variable the output needs)."""
    from . import engine

    graph = lifted.graph
    if wrt is None:
        names = list(lifted.variables)
        return names, [lifted.variables[n] for n in names], []

    class _Ev:  # what engine.resolve_targets reads
        pass

    ev = _Ev()
    ev.graph = graph
    ev.order = list(lifted.syms)
    ev.warnings = []
    ev.output_name = lifted.out_name
    found = engine.resolve_targets(ev, list(wrt))
    out = []
    for name, i in found.items():
        if i is None:
            out.append(None)
        else:
            out.append(lifted.syms[i])
    return list(found), out, ev.warnings


def _names(wrt):
    if isinstance(wrt, str):
        return [w.strip() for w in wrt.split(",") if w.strip()]
    return list(wrt) if wrt is not None else None


def _graph_for(program, ops):
    from .api import compile

    return compile(program, ops)


def _merge(bindings, kw):
    merged = dict(bindings or {})
    merged.update(kw)
    return merged


def _unused(lifted, name):
    """The derivative with respect to a variable the output does not need: zeros of its
    binding's shape."""
    v = (lifted.bindings or {}).get(name, 0.0)
    return lifted.builder.const(0.0, np.shape(v))


def derivative_syms(lifted, wrt=None, order=1):
    """(names, derivative symbols, warnings) of the output with respect to ``wrt``."""
    b = lifted.builder
    out = lifted.out
    names, targets, warnings = _targets(lifted, wrt)
    if order != 1:
        if out.shape != ():
            raise BindingError(f"--order {order} needs a scalar output; {lifted.out_name} has "
                               f"shape {out.shape}")
        for n, t in zip(names, targets):
            if t is not None and t.shape != ():
                raise BindingError(f"--order {order}: {n} has shape {t.shape}; repeated "
                                   f"derivatives need a scalar variable (use hessian)")
    seed = b.const(1.0, out.shape)
    present = [t for t in targets if t is not None]
    if order == 1:  # one reverse pass for every target
        grads = iter(backward(b, out, seed, present))
        return names, [next(grads) if t is not None else _unused(lifted, n)
                       for n, t in zip(names, targets)], warnings
    results = []
    for n, t in zip(names, targets):
        if t is None:
            results.append(_unused(lifted, n))
            continue
        d = out
        for _ in range(order):
            d = backward(b, d, seed if d is out else b.const(1.0, ()), [t])[0]
        results.append(d)
    return names, results, warnings


# ---------------------------------------------------------------- evaluating symbols

def evaluate_syms(b, outputs, env, cache=None):
    """Values of ``outputs`` with variables from ``env`` (name -> array); ``cache`` holds
    values already known (id -> value), which are reused."""
    nodes = b.nodes
    marked = reach(nodes, outputs)
    values = dict(cache or {})
    saved = oplib.tracer
    oplib.tracer = None
    try:
        with np.errstate(all="ignore"):
            for i in range(len(marked)):
                if not marked[i] or i in values:
                    continue
                s = nodes[i]
                if s.op is oplib.VAR:
                    values[i] = env[s.name]
                elif s.op is oplib.CONST:
                    values[i] = s.probe
                else:
                    values[i] = s.op.forward(*[values[x.id] for x in s.inputs], *s.params)
    finally:
        oplib.tracer = saved
    return [np.asarray(values[s.id]) for s in outputs]


# ---------------------------------------------------------------- the public API

class Derivatives:
    """What ``gradcli diff`` prints: the derivatives as symbols and as program text."""

    def __init__(self, lifted, names, syms, order, warnings):
        self.lifted = lifted
        self.builder = lifted.builder
        self.output_name = lifted.out_name
        self.names = names          # the --wrt names, in order
        self.syms = syms            # name's derivative, as a symbol
        self.order = order
        self.warnings = warnings
        self._program = None

    @property
    def program(self):
        """The printed form: :class:`gradcli.render.expr.Program` (statements + results)."""
        if self._program is None:
            from .render.expr import Program

            self._program = Program(self.builder, dict(zip(self.names, self.syms)),
                                    taken=set(self.lifted.variables),
                                    program_names=set(self.lifted.graph.names))
        return self._program

    @property
    def text(self):
        """name -> the derivative as a program of gradcli's language (statements, then the
        expression), which ``gradcli eval`` evaluates with the same bindings."""
        return self.program.standalone()

    @property
    def values(self):
        """name -> the derivative's value at the bindings (None without bindings)."""
        if self.lifted.evaluation is None:
            return None
        return dict(zip(self.names, [np.asarray(s.probe) for s in self.syms]))

    @property
    def value(self):
        ev = self.lifted.evaluation
        return None if ev is None else ev.value

    @property
    def seed_is_ones(self):
        """True when the output is not a scalar: the derivatives are those of its sum."""
        return self.lifted.out.shape != ()

    def label(self, name):
        return f"d/d{name}" if self.order == 1 else f"d{self.order}/d{name}{self.order}"


def _quiet(f):
    """Run under np.errstate(all="ignore"): values at the probe point may leave a domain."""
    import functools

    @functools.wraps(f)
    def run(*args, **kwargs):
        with np.errstate(all="ignore"):
            return f(*args, **kwargs)
    return run


@_quiet
def diff(program, bindings=None, /, *, wrt=None, order=1, output=None, dtype="float64",
         ops=None, **values):
    """The derivatives of the output with respect to ``wrt`` as expressions.

    ``.text[name]`` is each as a program of gradcli's language; ``.values[name]`` its value
    at the bindings (when given).  ``order=N`` differentiates N times (scalar variables).
    """
    if not isinstance(order, int) or order < 1:
        raise BindingError(f"--order {order}: give a whole number, 1 or more")
    graph = _graph_for(program, ops)
    bindings = _merge(bindings, values)
    wrt = _names(wrt)
    unique = _intermediate_ids(graph, wrt)
    lifted = lift(graph, bindings, output=output, dtype=dtype, unique=unique)
    names, syms, warnings = derivative_syms(lifted, wrt, order)
    ev = lifted.evaluation
    all_warnings = list(ev.warnings) if ev is not None else list(getattr(graph, "warnings", ()))
    return Derivatives(lifted, names, syms, order,
                       all_warnings + warnings + _unreadable(lifted.builder, names, syms))


def _unreadable(b, names, syms):
    """Warnings for derivatives that use internal ops the language does not take."""
    out = []
    syntax = (getattr(oplib, "index", None), getattr(oplib, "stack", None))
    if all(n.op.public or n.op in syntax or n.op is oplib.VAR or n.op is oplib.CONST
           for n in b.nodes):
        return out  # the usual case: one look at each node
    for name, s in zip(names, syms):
        seen = set()
        todo = [s]
        marked = {s.id}
        while todo:
            t = todo.pop()
            if not t.op.public and t.op not in syntax and t.op is not oplib.VAR \
                    and t.op is not oplib.CONST:
                seen.add(t.op.name)
            for x in t.inputs:
                if x.id not in marked:
                    marked.add(x.id)
                    todo.append(x)
        if seen:
            ops = ", ".join(sorted(seen))
            out.append(f"d/d{name} uses {ops}, an internal op of gradcli's gradient rules "
                       f"that its language does not take: the text is for reading, "
                       f"gradcli eval cannot run it")
    return out


def _intermediate_ids(graph, wrt):
    """Node ids of named values (not variables) in ``wrt``: kept as their own nodes."""
    if not wrt:
        return ()
    variables = graph.variables
    return [graph.names[n] for n in wrt if n not in variables and n in graph.names]


class Hessian:
    """Second derivatives of a scalar output: ``.matrix`` over the variables' elements
    flattened in C order (variables in ``wrt`` order), or ``.diagonal``, or ``.product``
    (H @ v) per variable."""

    def __init__(self, output_name, value, variables, matrix=None, diagonal=None,
                 product=None, asymmetry=None, warnings=()):
        self.output_name = output_name
        self.value = value
        self.variables = variables      # [(name, shape)]
        self.matrix = matrix
        self.diagonal = diagonal
        self.product = product          # name -> (H v) block, of the variable's shape
        self.asymmetry = asymmetry      # max |H - H^T| (None unless the full matrix)
        self.warnings = list(warnings)


class _HvpGraph:
    """The symbolic Hessian-vector product: H v per variable, with v as variables."""

    def __init__(self, lifted, names, targets):
        b = lifted.builder
        out = lifted.out
        if out.shape != ():
            raise BindingError(f"the Hessian needs a scalar output; {lifted.out_name} has "
                               f"shape {out.shape}")
        grads = backward(b, out, b.const(1.0, ()), targets)
        self.vnames = [_fresh(f"v_{n}", lifted) for n in names]
        vs = [b.var(vn, np.zeros(t.shape, b.dtype)) for vn, t in zip(self.vnames, targets)]
        with b.tracing():
            total = None
            for g, v in zip(grads, vs):
                if simplify.is_zero(g):
                    continue
                term = oplib.sum_to(g * v, ()) if g.shape != () else g * v
                total = term if total is None else total + term
        self.grads = grads
        self.vs = vs
        if total is None:
            self.products = [b.const(0.0, t.shape) for t in targets]
        else:
            self.products = backward(b, total, b.const(1.0, ()), targets)
        self.builder = b
        self.targets = targets
        # values that do not depend on v: computed once, at the bindings
        dep = bytearray(len(b.nodes))
        for v in vs:
            dep[v.id] = 1
        for s in b.nodes:
            if not dep[s.id] and any(dep[x.id] for x in s.inputs):
                dep[s.id] = 1
        self.fixed = {s.id: s.probe for s in b.nodes if not dep[s.id]}

    def __call__(self, vectors):
        env = dict(zip(self.vnames, vectors))
        return evaluate_syms(self.builder, self.products, env, self.fixed)


def _fresh(base, lifted):
    taken = set(lifted.graph.names) | set(lifted.variables)
    name, k = base, 1
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    return name


def _hessian_setup(program, bindings, wrt, output, dtype, ops):
    graph = _graph_for(program, ops)
    wrt = _names(wrt)
    if not bindings:
        raise BindingError("hessian needs NAME=VALUE bindings: the point to take it at")
    lifted = lift(graph, bindings, output=output, dtype=dtype,
                  unique=_intermediate_ids(graph, wrt))
    names, targets, warnings = _targets(lifted, wrt)
    targets = [t if t is not None else lifted.builder.const(0.0, ()) for t in targets]
    return lifted, names, targets, list(lifted.evaluation.warnings) + warnings


@_quiet
def hvp(program, bindings=None, /, *, vector, wrt=None, output=None, dtype="float64",
        ops=None, **values):
    """The Hessian-vector product H v without building H (as JAX's ``hvp``): ``vector`` is
    one array per variable (a dict by name, or a list in ``wrt`` order, or one array for
    one variable); the result's ``.product[name]`` has that variable's shape."""
    bindings = _merge(bindings, values)
    lifted, names, targets, warnings = _hessian_setup(program, bindings, wrt, output, dtype,
                                                      ops)
    vectors = _vectors(vector, names, targets, lifted.builder.dtype)
    h = _HvpGraph(lifted, names, targets)
    prods = h(vectors)
    return Hessian(lifted.out_name, lifted.evaluation.value,
                   [(n, t.shape) for n, t in zip(names, targets)],
                   product=dict(zip(names, prods)), warnings=warnings)


def _vectors(vector, names, targets, dtype):
    """One array per variable from ``vector``: a dict by name, a list or tuple in ``wrt``
    order, or one array (a variable's shape, or every element flattened in C order)."""
    from .values import as_array

    if isinstance(vector, dict):
        missing = [n for n in names if n not in vector]
        if missing:
            raise BindingError(f"--vector: no value for {', '.join(missing)}")
        items = [vector[n] for n in names]
    elif isinstance(vector, (list, tuple)) and len(vector) == len(names) and len(names) > 1:
        items = list(vector)
    else:
        flat = np.asarray(as_array(vector, "--vector"), dtype=dtype)
        sizes = [t.size for t in targets]
        if len(targets) == 1 and flat.shape == targets[0].shape:
            items = [flat]
        elif flat.size == sum(sizes):
            flat = flat.reshape(-1)
            cuts = np.cumsum([0] + sizes)
            items = [flat[cuts[k]:cuts[k + 1]] for k in range(len(sizes))]
        else:
            what = ", ".join(f"{n} {t.shape}" for n, t in zip(names, targets))
            raise BindingError(f"--vector has {flat.size} elements; the variables ({what}) "
                               f"have {sum(sizes)} together")
    out = []
    for n, t, v in zip(names, targets, items):
        v = np.asarray(as_array(v, f"--vector {n}"), dtype=dtype)
        if v.shape != t.shape:
            if v.size != t.size:
                raise BindingError(f"--vector: {n} has shape {t.shape} but its part of the "
                                   f"vector has shape {v.shape}")
            v = v.reshape(t.shape)
        out.append(v)
    return out


@_quiet
def hessian(program, bindings=None, /, *, wrt=None, vector=None, diag=False, output=None,
            dtype="float64", ops=None, **values):
    """Second derivatives of a scalar output at the bindings.

    ``.matrix`` is the square Hessian over the elements of the ``wrt`` variables (C order);
    ``diag=True`` gives only ``.diagonal``; ``vector=`` gives ``.product`` = H v instead
    (see :func:`hvp`).  Built by differentiating the symbolic backward pass.
    """
    if vector is not None:
        return hvp(program, bindings, vector=vector, wrt=wrt, output=output, dtype=dtype,
                   ops=ops, **values)
    bindings = _merge(bindings, values)
    lifted, names, targets, warnings = _hessian_setup(program, bindings, wrt, output, dtype,
                                                      ops)
    h = _HvpGraph(lifted, names, targets)
    sizes = [t.size for t in targets]
    n = sum(sizes)
    dtype_ = lifted.builder.dtype
    offsets = np.cumsum([0] + sizes)
    if diag:
        d = np.empty(n, dtype_)
    else:
        m = np.empty((n, n), dtype_)
    for k in range(n):  # one product per basis vector: column k of H
        vectors = [np.zeros(t.shape, dtype_) for t in targets]
        which = int(np.searchsorted(offsets, k, side="right") - 1)
        vectors[which].reshape(-1)[k - offsets[which]] = 1.0
        col = np.concatenate([np.reshape(p, -1) for p in h(vectors)]) if n else np.zeros(0)
        if diag:
            d[k] = col[k]
        else:
            m[:, k] = col
    variables = [(nm, t.shape) for nm, t in zip(names, targets)]
    if diag:
        return Hessian(lifted.out_name, lifted.evaluation.value, variables, diagonal=d,
                       warnings=warnings)
    asym = float(np.max(np.abs(m - m.T))) if n else 0.0
    scale = float(np.max(np.abs(m))) if n else 0.0
    if not np.isfinite(asym) or asym > 1e-10 * max(scale, 1.0):
        warnings.append(f"the Hessian is not symmetric: max |H - H^T| = {asym:.3g} (the "
                        f"function is not twice differentiable here, e.g. at a kink)")
    return Hessian(lifted.out_name, lifted.evaluation.value, variables, matrix=m,
                   asymmetry=asym, warnings=warnings)


def gradient_graph(graph, wrt=None, bindings=None, *, output=None, dtype="float64"):
    """name -> a :class:`gradcli.graph.Graph` whose output is d output / d name, built from
    the symbolic backward pass (for ``gradcli check --order 2``: checking this graph's own
    gradient against finite differences checks the second derivatives).

    ``graph`` is a parsed program (or its text); ``bindings`` give the shapes (without them
    every variable is a scalar).  Each graph has the program's variables as its variables.
    """
    if isinstance(graph, str):
        graph = _graph_for(graph, None)
    d = diff(graph, bindings or {}, wrt=wrt, output=output, dtype=dtype)
    return {name: to_graph(d, name) for name in d.names}


def to_graph(d, name):
    """The derivative ``name`` of ``d`` (a :class:`Derivatives`) as a gradcli Graph."""
    from .graph import Graph, Node

    b = d.builder
    root = d.syms[d.names.index(name)]
    top = root.id
    marked = reach(b.nodes, [root])
    # each node's own printed form, one per line: messages about node i quote its line
    inline, statements = d.program._language
    lines, spans, pos = [], {}, 0
    for i in range(top + 1):
        if marked[i]:
            t = statements.get(i) or (inline[i][0] if i in inline else f"#{i}")
            spans[i] = (pos, pos + len(t))
            lines.append(t)
            pos += len(t) + 1
    text = "\n".join(lines)
    nodes, ids, names = [], {}, {}
    # the program's variables first, so the graph binds what the program binds
    for vname, s in d.lifted.variables.items():
        node = Node(len(nodes), oplib.VAR, (), (), vname)
        nodes.append(node)
        ids[s.id] = node.id
        names[vname] = node.id
    for i in range(top + 1):
        if not marked[i] or i in ids:
            continue
        s = b.nodes[i]
        start, end = spans[i]
        if s.op is oplib.CONST:
            value = np.array(np.broadcast_to(s.value, s.shape), dtype=np.float64)
            value.flags.writeable = False
            node = Node(len(nodes), oplib.CONST, (), (), None, value, start, end)
        else:
            node = Node(len(nodes), s.op, tuple(ids[x.id] for x in s.inputs), s.params,
                        d.program.named.get(i), None, start, end)
        nodes.append(node)
        ids[i] = node.id
    label = d.label(name)
    out = ids[top]
    if nodes[out].op is oplib.VAR:  # d/dx = y: an output node of its own
        one = _const_node(nodes, 1.0, len(text))
        node = Node(len(nodes), _infix("mul"), (out, one), (), label, None, 0, len(text))
        nodes.append(node)
        out = node.id
    else:
        nodes[out].name = label
    for node in nodes:
        if node.name and node.op is not oplib.VAR:
            names.setdefault(node.name, node.id)
    names[label] = out
    return Graph(text, nodes, names, out, label)


def _const_node(nodes, v, end):
    from .graph import Node

    value = np.array(v, dtype=np.float64)
    value.flags.writeable = False
    node = Node(len(nodes), oplib.CONST, (), (), None, value, 0, end)
    nodes.append(node)
    return node.id
