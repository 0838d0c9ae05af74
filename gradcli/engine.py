"""The forward and reverse passes, generic over the op library.

Forward: visit the output's ancestors in topological order and compute each node's value
from its inputs' values.  Reverse: start from the output with a seed gradient (ones, or the
user's upstream) and walk back; at every node, for each input that leads to a variable we
differentiate with respect to, **downstream = upstream x local** (an op's VJP), summed into
that input's gradient where a value fans out to several nodes.

The engine never asks which op a node is: it only reads the op's fields (``forward``,
``partials`` or ``vjps``).  Warnings (a log of a negative number, an overflow) name the node
they come from and let the nan or inf flow on, as NumPy does.
"""
from __future__ import annotations

import os
import threading
import warnings as pywarnings

import numpy as np

from . import ops as oplib
from .errors import (BindingError, EvalError, GradcliError, Suggestions, clip, did_you_mean,
                     name_list)

__all__ = ["Evaluation", "Gradients", "evaluate", "differentiate"]

DTYPES = {"float64": np.float64, "float32": np.float32}


class Evaluation:
    """The forward pass of a program: the value of every node the output depends on."""

    def __init__(self, graph, order, values, output, output_name, dtype, warnings,
                 states=None):
        self.graph = graph
        self.order = order          # ids of the nodes evaluated, in topological order
        self.values = values        # node id -> value (None for nodes not evaluated)
        self.output = output        # id of the output node
        self.output_name = output_name
        self.dtype = dtype
        self.warnings = warnings    # messages about the run (unused bindings, nan, ...)
        self.states = states or {}  # node id -> its custom op's instance (gates only)

    def _repr_svg_(self):
        """The graph with its values (and gradients), for notebooks; None without Graphviz."""
        from .render.dot import repr_svg

        return repr_svg(self)

    @property
    def value(self):
        """The output's value: a NumPy array (0-d for a scalar)."""
        return np.asarray(self.values[self.output])


class Gradients(Evaluation):
    """Forward and reverse pass: every node's gradient and the gradient per variable."""

    def __init__(self, ev, grads, gradients, seed_is_ones, trace):
        super().__init__(ev.graph, ev.order, ev.values, ev.output, ev.output_name, ev.dtype,
                         ev.warnings, ev.states)
        self.grads = grads              # node id -> d output / d node (None: not needed)
        self.gradients = gradients      # variable name -> d output / d variable
        self.seed_is_ones = seed_is_ones  # True when a non-scalar output started from ones
        self.trace = trace              # per-edge record for tables (None unless asked)
        self.upstream_given = False     # True when the reverse pass started from --upstream


class Trace:
    """What each edge of the reverse pass carried, for the tables that teach it.

    ``local[i][k]`` is node i's local gradient for input k (elementwise ops; else None),
    ``down[i][k]`` the downstream gradient it sent to input k (None: not sent), and
    ``into[j]`` the (consumer id, argument k, gradient) summed into node j's gradient.

    A table prints a large array as its shape and a few elements, so that is all the trace
    keeps of one (a :class:`Peek`): 200 ``x[i]`` nodes on a million-element vector send
    200 million-element gradients, and keeping them all took 1.6 GB.
    """

    def __init__(self):
        self.local = {}
        self.down = {}
        self.into = {}

    def record(self, i, k, j, local, d):
        local, d = keep(local), keep(d)
        self.local.setdefault(i, {})[k] = local
        self.down.setdefault(i, {})[k] = d
        self.into.setdefault(j, []).append((i, k, d))


#: Arrays up to this many elements are kept whole in a trace (tables print them in full).
KEPT_WHOLE = 8


class Peek:
    """A large array as a table shows it: its shape, its first three and its last element."""

    __slots__ = ("shape", "head", "last", "dtype")

    def __init__(self, a):
        self.shape = a.shape
        self.dtype = a.dtype
        self.head = np.array(a.flat[:3])
        self.last = a.flat[-1] if a.size else None

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def size(self):
        n = 1
        for d in self.shape:
            n *= d
        return n


def keep(x):
    """What a trace keeps of ``x``: small values as they are, a :class:`Peek` of big ones."""
    if isinstance(x, np.ndarray) and x.size > KEPT_WHOLE:
        return Peek(x)
    return x


# ---------------------------------------------------------------- forward

def resolve_output(graph, output):
    if output is None:
        return graph.output, graph.output_name
    i = graph.names.get(output)
    if i is None:
        names = name_list(sorted(graph.names))
        raise BindingError(f"--output {clip(output, 40)}: the program has no value named "
                           f"{clip(output, 40)}{did_you_mean(output, list(graph.names))} "
                           f"(names: {names})")
    return i, output


def bind(graph, order, bindings, dtype, warnings):
    """Check the bindings against the variables the output needs; cast them to ``dtype``."""
    from .values import as_array

    nodes = graph.nodes
    needed = [nodes[i].name for i in order if nodes[i].op is oplib.VAR]
    source = {n: n for n in needed if n in bindings}  # variable -> the binding's name
    if len(source) < len(needed):
        # names compare as Python compares identifiers (NFKC): a binding 𝑥=1 binds x
        from .values import normal_name

        spelled = {}
        for b in bindings:
            if isinstance(b, str):
                spelled.setdefault(normal_name(b), b)
        for n in needed:
            if n not in source and normal_name(n) in spelled:
                source[n] = spelled[normal_name(n)]
    missing = [n for n in needed if n not in source]
    if missing:
        raise BindingError(_unbound_message(missing, bindings))
    env = {}
    warnings.extend(getattr(bindings, "warnings", ()))  # values.Bindings: x=1e400 became inf
    for name in needed:
        v = bindings[source[name]]
        if not (isinstance(v, np.ndarray) and v.dtype == dtype):
            v = as_array(v, name)
            with np.errstate(all="ignore"):
                cast = v.astype(dtype)
            if v.dtype.kind == "f" and v.dtype.itemsize > np.dtype(dtype).itemsize:
                label = f"binding {clip(name, 40)}"
                if np.count_nonzero(np.isinf(cast)) > np.count_nonzero(np.isinf(v)):
                    warnings.append(f"{label} is too large for {np.dtype(dtype).name} "
                                    f"and becomes inf")
                if np.count_nonzero(cast) < np.count_nonzero(v):
                    warnings.append(f"{label} is too small for {np.dtype(dtype).name} "
                                    f"and becomes 0")
            v = cast
        env[name] = v
    used = set(source.values())
    for name in bindings:
        if name not in used:
            why = (f"'{name}' is a constant in the language" if name in ("pi", "e")
                   else "the program does not use it" if name not in graph.names
                   else "the output does not depend on it")
            warnings.append(f"binding {clip(name, 40)} is not used: {why}")
    return env


#: Unbound names that get a "did you mean" (the message still names every one).
_SUGGESTED = 10
_LISTED = 100


def _unbound_message(missing, bindings):
    """Every unbound name; for the first few, the binding that looks like a typo of it."""
    missing_set = set(missing)
    spare = Suggestions(b for b in bindings if b not in missing_set)  # bound, yet not needed
    parts = []
    for k, name in enumerate(missing[:_LISTED]):
        close = spare.match(name) if k < _SUGGESTED else None
        parts.append(f"{clip(name, 40)} (did you mean the binding {clip(close, 40)}?)"
                     if close else clip(name, 40))
    if len(missing) > _LISTED:
        parts.append(f"… ({len(missing) - _LISTED:,} more)")
    plural = "s" if len(missing) > 1 else ""
    example = " ".join(f"{clip(n, 40)}=1" for n in missing[:3])
    return f"unbound variable{plural}: {', '.join(parts)}; bind as NAME=VALUE, e.g. {example}"


def evaluate(graph, bindings, *, output=None, dtype="float64"):
    """The forward pass: every node the output depends on, in topological order."""
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise BindingError(f"dtype {dtype!r}: choose float64 or float32")
        dtype = DTYPES[dtype]
    else:
        dtype = np.dtype(dtype).type
    out, out_name = resolve_output(graph, output)
    order = graph.ancestors(out)
    warnings = list(getattr(graph, "warnings", ()))  # the parser's (a constant's name taken)
    env = bind(graph, order, bindings, dtype, warnings)
    states = {}
    values = _forward(graph, order, env, dtype, warnings, states)
    return Evaluation(graph, order, values, out, out_name, dtype, warnings, states)


def _forward(graph, order, env, dtype, warnings, states):
    nodes = graph.nodes
    values = [None] * (order[-1] + 1)
    VAR, CONST = oplib.VAR, oplib.CONST
    trouble = []
    i = -1

    def on_fp_error(kind, flag):  # NumPy calls this when an op makes a nan or an inf
        trouble.append((i, kind))

    def on_warning(message, *args, **kwargs):  # NumPy's Python warnings ("Mean of empty slice")
        trouble.append((i, str(message)))

    old = np.seterrcall(on_fp_error)
    try:
        with np.errstate(over="call", invalid="call", divide="call", under="ignore"), \
                pywarnings.catch_warnings():
            pywarnings.simplefilter("always")
            pywarnings.showwarning = on_warning
            for i in order:
                node = nodes[i]
                op = node.op
                if op is VAR:
                    values[i] = env[node.name]
                elif op is CONST:
                    values[i] = node.value if dtype is np.float64 else node.value.astype(dtype)
                elif op.gate is None:
                    values[i] = op.forward(*[values[j] for j in node.inputs], *node.params)
                else:
                    states[i], values[i] = gate_forward(
                        graph, node, [values[j] for j in node.inputs], dtype)
    except GradcliError:
        raise
    except Exception as e:
        raise _op_failure(graph, nodes[i], values, e) from e
    finally:
        np.seterrcall(old)
    if trouble:
        warnings.extend(_fp_warnings(graph, trouble, values))
    return values


_FP_WORDS = {"invalid value": "gives nan", "divide by zero": "divides by zero (gives inf)",
             "overflow": "overflows (gives inf)"}


def _fp_warnings(graph, trouble, values):
    seen, out = set(), []
    for i, kind in trouble:
        if (i, kind) in seen:
            continue
        seen.add((i, kind))
        node = graph.nodes[i]
        where = f" outside its domain ({node.op.domain})" if node.op.domain and \
            kind == "invalid value" else ""
        v = np.asarray(values[i])
        bad = int(np.count_nonzero(~np.isfinite(v))) if v.dtype.kind == "f" else 0
        count = f" in {bad} of {v.size} elements" if v.size > 1 else ""
        what = _FP_WORDS.get(kind)
        what = f" {what}{count}" if what else f": {kind[:1].lower()}{kind[1:]}"
        out.append(f"node {i} {graph.source(i, 40)} ({node.op.name}){where}{what}")
    return out


def _op_failure(graph, node, values, e, stage="forward"):
    if isinstance(e, MemoryError):
        return _out_of_memory(graph, node, values, e, stage)
    shapes = " and ".join(str(np.shape(values[j])) for j in node.inputs)
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if node.op.elementwise and isinstance(e, ValueError) and len(node.inputs) == 2:
        reason = f"shapes {shapes} do not broadcast together"
    elif node.op is oplib.stack and isinstance(e, ValueError):
        reason = f"items have different shapes: {shapes}"
    if stage != "forward":
        reason = f"the {stage} pass failed: {reason}"
    label = graph.source(node.id, 40)
    return EvalError(f"{label} ({node.op.name}): {reason}", graph.text, node.start)


def _out_of_memory(graph, node, values, e, stage):
    """Which node needed how much: its inputs' shapes and sizes, and what it asked for."""
    ins = [np.asarray(values[j]) for j in node.inputs if values[j] is not None]
    given = ", ".join(f"{_shape(x.shape)} ({_bytes(x.nbytes)})" for x in ins) or "none"
    asked = ""
    shape = getattr(e, "shape", None)  # NumPy's _ArrayMemoryError knows what it wanted
    dtype = getattr(e, "dtype", None)
    if shape is not None and dtype is not None:
        need = int(np.prod(shape, dtype=object)) * np.dtype(dtype).itemsize
        asked = f" needed an array of shape {_shape(shape)} ({_bytes(need)})"
    elif node.op.elementwise and ins:
        try:
            shape = np.broadcast_shapes(*[x.shape for x in ins])
        except ValueError:
            shape = None
        if shape is not None:
            need = int(np.prod(shape, dtype=object)) * max(x.itemsize for x in ins)
            asked = f" needed its result of shape {_shape(shape)} ({_bytes(need)})"
    what = "" if stage == "forward" else f" in the {stage} pass"
    asked = asked or " ran out of memory"
    return EvalError(f"{graph.source(node.id, 40)} ({node.op.name}): out of memory{what}: "
                     f"node {node.id}{asked}; its inputs have shapes {given}",
                     graph.text, node.start)


def _shape(shape):
    return "(" + ", ".join(str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"


def _bytes(n):
    from .files import size_text

    return size_text(n)


def _gate_error(graph, node, what, e):
    from .plugins import _exc_text

    return EvalError(f"{graph.source(node.id, 40)}: op {node.op.name} "
                     f"({os.path.basename(node.op.path or '')}): {what} raised "
                     f"{_exc_text(e, node.op.path)}", graph.text, node.start)


def read_only(x):
    """A view a custom op cannot write through: its inputs are other nodes' values."""
    v = np.asarray(x).view()
    v.flags.writeable = False
    return v


def private(x):
    """A read-only copy of ``x`` for a custom op: even a gate that sets
    ``flags.writeable = True`` and writes into it changes only its own copy."""
    v = np.array(x, copy=True)
    v.flags.writeable = False
    return v


def call_gate(fn, *args):
    """Call a custom op's method as gradcli must: what it prints goes to stderr (stdout may
    be carrying JSON or CSV), and whatever it raises, ``BaseException``, ``GeneratorExit``,
    ``sys.exit()`` or gradcli's own errors included, comes back as :class:`GateFailure`
    (Ctrl-C still stops the run)."""
    import contextlib
    import sys

    try:
        with contextlib.redirect_stdout(sys.stderr):
            return fn(*args)
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # noqa: B036 - an op is foreign code; nothing may escape
        raise GateFailure(e) from e


class GateFailure(Exception):
    """What a custom op's method raised, carried to where the node is known."""

    def __init__(self, error):
        super().__init__(error)
        self.error = error


def real_array(graph, node, what, value, dtype):
    """A custom op's result as a fresh array of ``dtype``; complex, bool and text refused."""
    op = node.op
    where = f"{graph.source(node.id, 40)}: op {op.name} ({os.path.basename(op.path or '')})"
    try:
        arr = np.asarray(value)
    except Exception as e:  # a ragged list, an object whose __array__ raises
        raise EvalError(f"{where}: {what} returned {type(value).__name__}, not an array of "
                        f"numbers ({_first_line(e)})", graph.text, node.start) from None
    kind = arr.dtype.kind
    if kind in "cb":
        raise EvalError(f"{where}: {what} returned dtype {arr.dtype}; gradcli needs real "
                        f"floats", graph.text, node.start)
    if kind not in "iuf":
        raise EvalError(f"{where}: {what} returned {type(value).__name__}"
                        + (f" of dtype {arr.dtype}" if isinstance(value, np.ndarray) else "")
                        + ", not an array of numbers", graph.text, node.start)
    return np.array(arr, dtype=dtype, copy=True)  # never the op's own array: it may keep it


def _first_line(e):
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def gate_forward(graph, node, xs, dtype):
    """Run a custom op's forward on a fresh instance: (instance, output as an array).

    The op gets read-only copies of its inputs and its output is copied, so nothing it does
    later (in ``backward``, or by writing through ``flags.writeable = True``) can change a
    value gradcli shows.
    """
    op = node.op
    try:
        inst = call_gate(op.gate)
        out = call_gate(inst.forward, *[private(x) for x in xs])
    except GateFailure as f:
        raise _gate_error(graph, node, "forward", f.error) from None
    return inst, real_array(graph, node, "forward", out, dtype)


def gate_backward(graph, node, inst, g, xs):
    """A custom op's downstream gradients, checked: one per input, each of its shape."""
    op = node.op
    try:
        got = call_gate(inst.backward, private(g))
    except GateFailure as f:
        raise _gate_error(graph, node, "backward", f.error) from None
    where = f"{graph.source(node.id, 40)}: op {op.name} ({os.path.basename(op.path or '')}): " \
            f"backward"
    if op.arity == 1 and not isinstance(got, (list, tuple)):
        got = [got]
    if not isinstance(got, (list, tuple)):
        raise EvalError(f"{where} returned {type(got).__name__}; it must return a list of "
                        f"{op.arity} gradients, one per input", graph.text, node.start)
    if len(got) != op.arity:
        raise EvalError(f"{where} returned {len(got)} gradient{'s' * (len(got) != 1)} for "
                        f"{op.arity} input{'s' * (op.arity != 1)}", graph.text, node.start)
    out = []
    for k, (d, x) in enumerate(zip(got, xs)):
        shape = np.shape(x)
        dtype = np.result_type(x)
        if d is None:  # "no gradient", as autograd.Function allows
            out.append(np.zeros(shape, dtype=dtype))
            continue
        d = real_array(graph, node, f"backward (the gradient for input {k + 1}, "
                                    f"{op.argnames[k]})", d, dtype)
        if d.shape != shape:
            raise EvalError(f"{where}: the gradient for input {k + 1} ({op.argnames[k]}) has "
                            f"shape {d.shape} but the input has shape {shape}",
                            graph.text, node.start)
        out.append(d)
    return out


# ---------------------------------------------------------------- reverse

def differentiate(graph, bindings, *, wrt=None, upstream=None, output=None, dtype="float64",
                  trace=False):
    """Forward and reverse pass: d output / d each variable in ``wrt`` (default: all)."""
    ev = evaluate(graph, bindings, output=output, dtype=dtype)
    targets = resolve_targets(ev, wrt)
    seed, seed_is_ones = _seed(ev, upstream, ev.values[ev.output])
    grads, tr = _backward(ev, targets, seed, trace)
    gradients = _collect(ev, targets, grads, bindings)
    res = Gradients(ev, grads, gradients, seed_is_ones, tr)
    res.upstream_given = upstream is not None
    return res


def reverse(ev, wrt, upstream):
    """One more reverse pass over an evaluated program, seeded with ``upstream``."""
    targets = resolve_targets(ev, wrt)
    seed, _ = _seed(ev, upstream, ev.values[ev.output])
    grads, _ = _backward(ev, targets, seed, False)
    return _collect(ev, targets, grads, {})


def _collect(ev, targets, grads, bindings):
    """name -> gradient: each its own writeable array; zeros where nothing flowed."""
    gradients, seen = {}, set()
    forward = None
    for name, i in targets.items():
        g = grads[i] if i is not None else None
        if g is None:  # the output does not depend on it: zeros of its shape
            g = np.zeros(_shape_of(ev, name, i, bindings), dtype=ev.dtype)
        elif isinstance(g, np.ndarray) and g.flags.writeable and g.flags.owndata and \
                id(g) not in seen and g.size >= _LARGE:
            # the reverse pass may pass a value on as a gradient (g * b with g all ones)
            if forward is None:
                forward = {id(v) for v in ev.values if v.__class__ is np.ndarray}
            if id(g) in forward:
                g = np.array(g, dtype=ev.dtype)
        elif not (isinstance(g, np.ndarray) and g.flags.writeable and g.flags.owndata) \
                or id(g) in seen:
            g = np.array(g, dtype=ev.dtype)  # every result its own array, safe to change
        seen.add(id(g))
        gradients[name] = g
    return gradients


def _shape_of(ev, name, i, bindings):
    if i is not None:
        return np.shape(ev.values[i])
    if name in bindings:
        return np.shape(bindings[name])
    if name in ev.graph.variables:  # unbound, and the output does not need it
        return ()
    # a named value the output does not depend on: run the program up to it
    return np.shape(evaluate(ev.graph, bindings, output=name, dtype=ev.dtype).value)


def wrt_node(graph, name):
    """The node ``--wrt NAME`` means: the input variable of that name, even when a statement
    assigns the name again (``a = sin(a) * y + a``: graph.names holds the newest statement),
    else the named value; an unknown name is a BindingError naming the choices."""
    i = graph.variables.get(name)
    if i is None:
        i = graph.names.get(name)
    if i is None:
        variables = graph.variables
        choices = name_list(variables) or "none"
        named = name_list(n for n in graph.names if n not in variables)
        raise BindingError(f"--wrt {clip(name, 40)}: the program has no variable or value "
                           f"named {clip(name, 40)}{did_you_mean(name, list(graph.names))} "
                           f"(variables: {choices}" + (f"; named values: {named})"
                                                       if named else ")"))
    return i


def resolve_targets(ev, wrt):
    """Name -> node id of what to differentiate with respect to (None: not in the run)."""
    graph = ev.graph
    variables = graph.variables
    ran = set(ev.order)
    if wrt is None:
        return {n: i for n, i in variables.items() if i in ran}
    targets = {}
    for name in wrt:
        i = wrt_node(graph, name)
        if i not in ran:
            ev.warnings.append(f"{ev.output_name} does not depend on {name}: "
                               f"its gradient is 0")
            i = None
        targets[name] = i
    return targets


def _seed(ev, upstream, out_value):
    shape = np.shape(out_value)
    if upstream is None:
        return np.ones(shape, dtype=ev.dtype), shape != ()
    from .values import as_array

    seed = as_array(upstream, "--upstream")
    if seed.shape != shape:
        if seed.shape != ():
            raise BindingError(f"--upstream has shape {seed.shape} but the output "
                               f"{ev.output_name} has shape {shape}")
        seed = np.full(shape, seed)
    return np.array(seed, dtype=ev.dtype), False


def _backward(ev, targets, seed, record):
    graph, values, order = ev.graph, ev.values, ev.order
    nodes = graph.nodes
    # A node needs a gradient when a target lies at or below it.
    need = bytearray(len(values))
    for i in targets.values():
        if i is not None:
            need[i] = 1
    for i in order:
        if not need[i]:
            for j in nodes[i].inputs:
                if need[j]:
                    need[i] = 1
                    break
    grads = [None] * len(values)
    out = ev.output
    if need[out]:
        grads[out] = seed
    tr = Trace() if record else None
    states = ev.states
    owned = None if record else set()
    step = _backward_node
    i = None
    saved = oplib.tracer
    reuse = _Reuse.of(graph, order, values) if owned is not None and saved is None else None
    if reuse is not None:
        oplib.tracer = reuse
    try:
        with np.errstate(all="ignore"):  # sqrt'(0) = inf and the like are conventions
            for i in reversed(order):
                step(nodes[i], i, grads, values, need, states, graph, tr, owned)
    except GradcliError:
        raise
    except Exception as e:
        raise _op_failure(graph, nodes[i], values, e, "backward") from e
    finally:
        if reuse is not None:
            reuse.known = None  # spent: harmless even if another thread put it back
            if oplib.tracer is reuse:
                oplib.tracer = saved
    return grads, tr


class _Reuse:
    """``ops.tracer`` during a reverse pass over large arrays: a gradient rule's op call that
    the forward pass already made (var's rule asks for ``x - mean(x)``; layer norm's program
    has that node) returns the forward value, a read-only view of it, instead of a new pass
    over the elements.  A call is the same when it is the same op on the same arrays (by
    identity: the forward values stay alive through the pass) with equal static arguments.
    """

    __slots__ = ("known", "alias", "keep", "thread")

    @classmethod
    def of(cls, graph, order, values):
        """The tracer for this pass, or None when no forward value is large."""
        known = {}
        nodes = graph.nodes
        for i in order:
            v = values[i]
            node = nodes[i]
            op = node.op
            if v.__class__ is np.ndarray and node.inputs and op.gate is None and \
                    op.arity == len(node.inputs) and not op.lead and (v.size >= _LARGE or any(
                        getattr(values[j], "size", 0) >= _LARGE for j in node.inputs)):
                try:
                    known[(op, *[id(values[j]) for j in node.inputs], *node.params)] = v
                except TypeError:  # an unhashable static argument (a slice): not kept
                    pass
        if not known:
            return None
        self = cls()
        self.known, self.alias, self.keep = known, {}, []
        self.thread = threading.get_ident()
        return self

    def __call__(self, op, args):
        n = op.arity
        # ops.tracer is one for the process: another thread's calls (and any call after the
        # pass) go straight to the op
        if n and self.known is not None and threading.get_ident() == self.thread:
            alias = self.alias
            try:
                v = self.known.get((op, *[alias.get(id(a), id(a)) for a in args[:n]],
                                    *args[n:]))
            except TypeError:
                v = None
            if v is not None:
                view = v.view()
                view.flags.writeable = False  # never a target of the in-place sums
                alias[id(view)] = id(v)
                self.keep.append(view)  # alive, so its id is not reused during the pass
                return view
        return op.forward(*args)


def downstream(node, k, g, y, xs, gate=None):
    """What node sends input k for upstream ``g``: (downstream gradient, local gradient).

    The local gradient is an elementwise op's d out / d input (None for other ops); a custom
    op's gradients come precomputed in ``gate`` (its checked ``backward`` result).
    """
    if gate is not None:
        return gate[k], None
    op = node.op
    if op.partials is None:
        return op.vjps[k](g, y, *xs, *node.params), None
    p = op.partials[k]
    if p.__class__ is int:
        d = g if p == 1 else -g
    else:
        p = p(y, *xs)
        d = g * p
    shape = xs[k].shape
    if d.shape != shape:
        d = oplib.sum_to(d, shape)
    return d, p


def _backward_node(node, i, grads, values, need, states, graph, tr, owned=None):
    """One step of the reverse pass: node i sends downstream = upstream x local.

    Without a trace, ``owned`` holds the ids whose gradient is an array this pass made and
    no one else holds: more gradient is added into it in place, and a fresh downstream
    gradient takes the sum itself, so a value fanning out costs no new array.
    """
    g = grads[i]
    if g is None or not node.inputs:
        return
    xs = [values[j] for j in node.inputs]
    y = values[i]
    # (a custom op gets copies of its inputs, so its own calls of library ops reuse nothing)
    gate = gate_backward(graph, node, states[i], g, xs) if node.op.gate is not None else None
    # small arrays (a program of 125,000 scalars) take the short step: the bookkeeping would
    # cost more than it saves; an elementwise op's inputs are no larger than its output
    if owned is None or (g.__class__ is not np.ndarray or g.size < _LARGE) and (
            node.op.partials is not None or not any(
                getattr(x, "size", 1) >= _LARGE for x in xs)):
        partials = node.op.partials if tr is None and gate is None else None
        for k, j in enumerate(node.inputs):
            if not need[j]:
                continue
            if partials is not None:  # downstream(), inlined: a call per edge is a cost here
                p = partials[k]
                d = (g if p == 1 else -g) if p.__class__ is int else g * p(y, *xs)
                shape = xs[k].shape
                if d.shape != shape:
                    d = oplib.sum_to(d, shape)
            else:
                d, local = downstream(node, k, g, y, xs, gate)
                if tr is not None:
                    tr.record(i, k, j, local, d)
            grads[j] = d if grads[j] is None else grads[j] + d
        return
    for k, j in enumerate(node.inputs):
        if not need[j]:
            continue
        d = _fast_downstream(node, k, g, y, xs, gate)
        fresh = _fresh(d, g, y, xs)
        have = grads[j]
        if have is None:
            grads[j] = d
            if fresh:
                owned.add(j)
        elif j in owned and isinstance(have, np.ndarray) and have.shape == np.shape(d) and \
                np.result_type(have, d) == have.dtype:
            np.add(have, d, out=have)
        elif fresh and d.shape == np.shape(have) and np.result_type(have, d) == d.dtype:
            grads[j] = np.add(d, have, out=d)
            owned.add(j)
        else:
            grads[j] = have = have + d
            if isinstance(have, np.ndarray):  # (0-d sums come back as NumPy scalars)
                owned.add(j)


#: Arrays of at least this many elements get the in-place reverse pass (smaller ones cost
#: more in checks than they save in memory).
_LARGE = 1 << 15


def _fresh(d, g, y, xs):
    """Whether ``d`` is a new array only this pass holds (not a view, a value or a gradient)."""
    if not (isinstance(d, np.ndarray) and d.flags.owndata and d.flags.writeable) \
            or d is g or d is y:
        return False
    return not any(d is x for x in xs)


def _fast_downstream(node, k, g, y, xs, gate):
    """:func:`downstream`'s gradient, with fewer full-size temporaries for elementwise ops:
    a local gradient constant along the axes summed over is applied after the sum, and a
    fresh local gradient takes the product in place."""
    op = node.op
    if gate is not None or op.partials is None:
        return downstream(node, k, g, y, xs, gate)[0]
    p = op.partials[k]
    shape = xs[k].shape
    if g.shape != shape and op.broadcast_vjps is not None and \
            op.broadcast_vjps[k] is not None:
        return op.broadcast_vjps[k](g, y, *xs)
    if p.__class__ is int:
        if g.shape != shape:
            g = oplib.sum_to(g, shape)  # sum first, then negate the small result
        return g if p == 1 else -g
    p = p(y, *xs)
    if g.shape == shape:
        return _times(g, p, y, xs)
    if np.shape(p) == shape:  # p does not vary along the summed axes
        return _times(oplib.sum_to(g, shape), p, y, xs)
    return oplib.sum_to(_times(g, p, y, xs), shape)


def _times(g, p, y, xs):
    """``g * p``: ``p`` itself when ``g`` is all ones (the seed of a sum, spread out), else
    into ``p`` when it is a temporary of the result's shape and dtype."""
    if isinstance(p, np.ndarray) and p.shape == np.shape(g):
        if _all_ones(g) and np.result_type(g, p) == p.dtype:
            return p
        if p.flags.owndata and p.flags.writeable and p is not y and \
                not any(p is x for x in xs) and np.result_type(g, p) == p.dtype:
            return np.multiply(g, p, out=p)
    return g * p


def _all_ones(g):
    """Whether ``g`` is one number repeated (all strides 0, as broadcast_to makes) and 1."""
    return g.__class__ is np.ndarray and g.size > 0 and not any(g.strides) and \
        g.flat[0] == 1
