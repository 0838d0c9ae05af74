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
import warnings as pywarnings

import numpy as np

from . import ops as oplib
from .errors import BindingError, EvalError, GradcliError, did_you_mean

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
    """

    def __init__(self):
        self.local = {}
        self.down = {}
        self.into = {}


# ---------------------------------------------------------------- forward

def resolve_output(graph, output):
    if output is None:
        return graph.output, graph.output_name
    i = graph.names.get(output)
    if i is None:
        names = ", ".join(sorted(graph.names))
        raise BindingError(f"--output {output}: the program has no value named {output} "
                           f"(names: {names})")
    return i, output


def bind(graph, order, bindings, dtype, warnings):
    """Check the bindings against the variables the output needs; cast them to ``dtype``."""
    from .values import as_array

    nodes = graph.nodes
    needed = [nodes[i].name for i in order if nodes[i].op is oplib.VAR]
    missing = [n for n in needed if n not in bindings]
    if missing:
        raise BindingError(_unbound_message(missing, bindings))
    env = {}
    for name in needed:
        v = bindings[name]
        if not (isinstance(v, np.ndarray) and v.dtype == dtype):
            v = as_array(v, name)
            with np.errstate(all="ignore"):
                cast = v.astype(dtype)
            if v.dtype.kind == "f" and np.count_nonzero(np.isinf(cast)) > np.count_nonzero(
                    np.isinf(v)):
                warnings.append(f"binding {name} is too large for {np.dtype(dtype).name} "
                                f"and becomes inf")
            v = cast
        env[name] = v
    for name in bindings:
        if name not in env:
            why = (f"'{name}' is a constant in the language" if name in ("pi", "e")
                   else "the program does not use it" if name not in graph.names
                   else "the output does not depend on it")
            warnings.append(f"binding {name} is not used: {why}")
    return env


def _unbound_message(missing, bindings):
    import difflib

    parts = []
    for name in missing:
        close = difflib.get_close_matches(name, [b for b in bindings if b not in missing],
                                          n=1, cutoff=0.6)
        parts.append(f"{name} (did you mean the binding {close[0]}?)" if close else name)
    plural = "s" if len(missing) > 1 else ""
    example = " ".join(f"{n}=1" for n in missing[:3])
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
    warnings = []
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


def gate_forward(graph, node, xs, dtype):
    """Run a custom op's forward on a fresh instance: (instance, output as an array)."""
    op = node.op
    try:
        inst = op.gate()
        out = inst.forward(*[read_only(x) for x in xs])
    except GradcliError:
        raise
    except (Exception, SystemExit) as e:
        raise _gate_error(graph, node, "forward", e) from e
    arr = np.asarray(out)
    if arr.dtype.kind not in "biufc":
        raise EvalError(f"{graph.source(node.id, 40)}: op {op.name} "
                        f"({os.path.basename(op.path or '')}): forward returned "
                        f"{type(out).__name__}, not an array of numbers", graph.text, node.start)
    kind = np.result_type(dtype, arr.dtype) if arr.dtype.kind == "c" else dtype
    return inst, arr.astype(kind, copy=False)


def gate_backward(graph, node, inst, g, xs):
    """A custom op's downstream gradients, checked: one per input, each of its shape."""
    op = node.op
    try:
        got = inst.backward(read_only(g))
    except GradcliError:
        raise
    except (Exception, SystemExit) as e:
        raise _gate_error(graph, node, "backward", e) from e
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
        if d is None:  # "no gradient", as autograd.Function allows
            out.append(np.zeros(shape, dtype=np.result_type(x)))
            continue
        d = np.asarray(d)
        if d.dtype.kind not in "biufc":
            raise EvalError(f"{where}: the gradient for input {k + 1} "
                            f"({op.argnames[k]}) is {type(got[k]).__name__}, not numbers",
                            graph.text, node.start)
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
    for name, i in targets.items():
        g = grads[i] if i is not None else None
        if g is None:  # the output does not depend on it: zeros of its shape
            g = np.zeros(_shape_of(ev, name, i, bindings), dtype=ev.dtype)
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


def resolve_targets(ev, wrt):
    """Name -> node id of what to differentiate with respect to (None: not in the run)."""
    graph = ev.graph
    variables = graph.variables
    ran = set(ev.order)
    if wrt is None:
        return {n: i for n, i in variables.items() if i in ran}
    targets = {}
    for name in wrt:
        i = graph.names.get(name)
        if i is None:
            choices = ", ".join(variables) or "none"
            named = ", ".join(n for n in graph.names if n not in variables)
            raise BindingError(f"--wrt {name}: the program has no variable or value named "
                               f"{name}{did_you_mean(name, list(graph.names))} "
                               f"(variables: {choices}" + (f"; named values: {named})"
                                                           if named else ")"))
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
    i = None
    try:
        with np.errstate(all="ignore"):  # sqrt'(0) = inf and the like are conventions
            for i in reversed(order):
                _backward_node(nodes[i], i, grads, values, need, states, graph, tr)
    except GradcliError:
        raise
    except Exception as e:
        raise _op_failure(graph, nodes[i], values, e, "backward") from e
    return grads, tr


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


def _backward_node(node, i, grads, values, need, states, graph, tr):
    """One step of the reverse pass: node i sends downstream = upstream x local."""
    g = grads[i]
    if g is None or not node.inputs:
        return
    xs = [values[j] for j in node.inputs]
    y = values[i]
    gate = gate_backward(graph, node, states[i], g, xs) if node.op.gate is not None else None
    for k, j in enumerate(node.inputs):
        if not need[j]:
            continue
        d, local = downstream(node, k, g, y, xs, gate)
        grads[j] = d if grads[j] is None else grads[j] + d
        if tr is not None:
            tr.local.setdefault(i, {})[k] = local
            tr.down.setdefault(i, {})[k] = d
            tr.into.setdefault(j, []).append((i, k, d))
