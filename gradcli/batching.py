"""Many points at once: the chunk kernel of ``--batch`` and ``--sweep``, and batch I/O.

A batch is a program run at many points.  The points go through the engine in chunks, as a
**leading batch axis**: every variable that changes from point to point (a CSV column, a
sweep axis) holds an array of shape ``(B,) + its own shape``; everything else (the bindings
given on the command line, the constants, every node that depends on neither) is computed
once.  Each op runs once per chunk on the stacked values, never once per point:

* elementwise ops broadcast the batch axis by themselves (a batched input of lower rank gets
  length-1 axes after the batch axis first, so ``x + W`` with a scalar x per point and a
  fixed vector W lines up); their local gradients do the same, and the downstream gradient
  is summed back to the batched input's shape;
* other ops use the batched forward the checker uses (``op.batch``, else the kernel's own
  in :data:`_BATCHED_FORWARDS`) and the batched VJPs of :data:`_BATCHED_VJPS`: every
  built-in op has both.  An input that is fixed stays unbatched, so the rules can use it
  as such (a fixed matrix of ``solve`` factorised once for every point, a fixed kernel of
  ``conv1d`` meeting all the points' images as one larger N).  Each batched rule is checked
  against the op's own per-point VJPs (and each forward of the table against the op's
  forward) at two points of the first chunk;
* a custom op (a user's gate) keeps state between its forward and backward and may do
  anything, so it runs point by point, as the engine runs it (a fresh instance and private
  copies of its inputs each time), in a loop kept cheap; so does an op added to the library
  without a batched rule, *for that op only*, so the results stay right and the rest of the
  program stays vectorised (:attr:`Kernel.fallbacks` names them).

:class:`Kernel` is that pass, compiled once for a program; :func:`batch` is the library call
(``gradcli.batch``: arrays in, arrays out, a pure function of its chunk, so it maps over a
cluster's partitions as it is).  The readers stream CSV with a header, JSON Lines and
``.npy``/``.npz`` arrays chunk by chunk (memory stays flat however long the input), and the
writers put out CSV, JSON Lines or ``.npz``, in input order.
"""
from __future__ import annotations

import io
import itertools
import json
import math
import operator
import os
import sys
import warnings as pywarnings

import numpy as np

from . import ops as oplib
from .errors import BindingError, EvalError, GradcliError, clip, did_you_mean, name_list
from .values import is_number, orjson

__all__ = ["batch", "Kernel", "BatchResult", "iter_chunks", "open_points", "Points",
           "BadRow", "sweep_points", "parse_sweep", "Writer", "writer_for", "CHUNK",
           "column_names"]

#: Rows per chunk: large enough that NumPy's per-call cost vanishes, small enough that a
#: chunk of a few columns stays a few megabytes.
CHUNK = 65536

DTYPES = {"float64": np.float64, "float32": np.float32}


# ================================================================ the kernel

class BatchResult(dict):
    """One chunk's results: a dict of columns (``f``, ``d_x``, ...: each an array with the
    batch axis first), with ``.value`` (the output), ``.gradients`` (name -> array) and
    ``.output_name``.  ``pandas.DataFrame(result)`` works when every column is 1-D."""

    def __init__(self, output_name, value, gradients):
        super().__init__()
        self.output_name = output_name
        self.value = value
        self.gradients = gradients
        self[output_name] = value
        for name, g in gradients.items():
            self[f"d_{name}"] = g


def column_names(output_name, wrt):
    """The names of a batch's output columns: the output's, then ``d_NAME`` per gradient."""
    return [output_name] + [f"d_{n}" for n in wrt]


class Kernel:
    """A program compiled for batches: ``kernel(points) -> BatchResult``.

    ``names``: the variables that change from point to point (``points`` maps each to an
    array whose first axis is the batch).  ``fixed``: the other bindings, the same at every
    point.  ``wrt``: the names to differentiate with respect to (default: ``names``);
    ``grad=False`` runs the forward pass only.
    """

    def __init__(self, graph, names, fixed=None, *, wrt=None, grad=True, upstream=None,
                 output=None, dtype="float64", source=None):
        from . import engine

        self.graph = graph
        self.dtype = _dtype(dtype)
        self.grad = grad
        self.warnings = list(getattr(graph, "warnings", ()))
        fixed = dict(fixed or {})
        self.out, self.output_name = engine.resolve_output(graph, output)
        order = graph.ancestors(self.out)
        self.order = order
        nodes = graph.nodes
        variables = graph.variables
        names = list(names)
        source = source or "the batch"
        both = [n for n in names if n in fixed]
        if both:
            n = both[0]
            raise BindingError(f"{clip(n, 40)} is bound twice: it is a column of {source} and "
                               f"bound on the command line ({_binding_text(fixed, n)}); give "
                               f"each name one value")
        needed = [nodes[i].name for i in order if nodes[i].op is oplib.VAR]
        missing = [n for n in needed if n not in fixed and n not in names]
        if missing:
            cols = name_list(names) or "none"
            hint = did_you_mean(missing[0], names + list(fixed))
            raise BindingError(
                f"unbound variable{'s' * (len(missing) > 1)}: "
                f"{', '.join(clip(m, 40) for m in missing[:20])}{hint}: not a column of "
                f"{source} (columns: {cols}) and not bound on the command line")
        for n in names:
            if n not in variables:
                why = (f"'{n}' is a constant in the language" if n in ("pi", "e")
                       else "the program does not use it" if n not in graph.names
                       else "it names a statement of the program, not an input")
                self.warnings.append(f"column {clip(n, 40)} of {source} is not used: {why}")
            elif variables[n] not in set(order):
                self.warnings.append(f"column {clip(n, 40)} of {source} is not used: the "
                                     f"output does not depend on it")
        for n in fixed:
            if n not in variables or variables[n] not in set(order):
                why = (f"'{n}' is a constant in the language" if n in ("pi", "e")
                       else "the program does not use it" if n not in graph.names
                       else "the output does not depend on it")
                self.warnings.append(f"binding {clip(n, 40)} is not used: {why}")
        self.names = [n for n in names if n in variables and variables[n] in set(order)]
        # what to differentiate with respect to: node ids (None: the output does not need it)
        self.targets = {}
        if grad:
            self.targets = self._targets(wrt if wrt is not None else self.names, order)
        self.wrt = list(self.targets)
        # batched[i]: node i differs from point to point; a target that would not (a fixed
        # binding, a value that depends on none of the columns) is made to, by broadcasting
        batched = bytearray(len(nodes))
        for n in self.names:
            batched[variables[n]] = 1
        for i in order:
            if not batched[i] and any(batched[j] for j in nodes[i].inputs):
                batched[i] = 1
        self.forced = {i for i in self.targets.values() if i is not None and not batched[i]}
        for i in self.forced:
            batched[i] = 1
        for i in order:
            if not batched[i] and any(batched[j] for j in nodes[i].inputs):
                batched[i] = 1
        self.batched = batched
        # everything that is the same at every point: computed once, here
        static = {n: _cast(fixed[n], self.dtype, n, self.warnings) for n in needed
                  if n in fixed}
        self.values = [None] * (order[-1] + 1)
        self.states = {}
        self._run_static(static)
        self.steps = [i for i in order if batched[i] and i not in self.forced
                      and nodes[i].op is not oplib.VAR]
        self._ranks = None
        self._point_shapes = None
        self.upstream = None
        if upstream is not None:
            from .values import as_array

            self.upstream = np.asarray(as_array(upstream, "--upstream"), dtype=self.dtype)
        self._fns = {}
        self.fallbacks = set()    # ops that ran point by point (no batched rule)
        self.trouble = {}         # node id -> [kind, rows] for nan/inf made by an op
        self.rows = 0
        self.seed_is_ones = None

    # ------------------------------------------------------------ setup

    def _targets(self, wrt, order):
        from .engine import wrt_node

        graph = self.graph
        ran = set(order)
        targets = {}
        for name in wrt:
            i = wrt_node(graph, name)
            if i not in ran:
                self.warnings.append(f"{self.output_name} does not depend on {name}: its "
                                     f"gradient is 0")
                i = None
            targets[name] = i
        return targets

    def _run_static(self, static):
        from . import engine

        nodes, values, batched = self.graph.nodes, self.values, self.batched
        i = None
        try:
            with np.errstate(all="ignore"):
                for i in self.order:
                    node = nodes[i]
                    op = node.op
                    if op is oplib.VAR:
                        if node.name in static:
                            values[i] = static[node.name]
                    elif op is oplib.CONST:
                        values[i] = node.value if self.dtype is np.float64 \
                            else node.value.astype(self.dtype)
                    elif not any(batched[j] and j not in self.forced
                                 for j in node.inputs) and (not batched[i] or i in self.forced):
                        xs = [values[j] for j in node.inputs]
                        if op.gate is None:
                            values[i] = op.forward(*xs, *node.params)
                        else:
                            self.states[i], values[i] = engine.gate_forward(
                                self.graph, node, xs, self.dtype)
        except GradcliError:
            raise
        except Exception as e:
            raise _failure(self.graph, nodes[i], values, e) from e

    # ------------------------------------------------------------ one chunk

    def __call__(self, points):
        """Run one chunk: ``points`` maps each of :attr:`names` to an array ``(B, ...)``."""
        graph = self.graph
        B = None
        values = list(self.values)
        variables = graph.variables
        for n in self.names:
            if n not in points:
                raise BindingError(f"no values for {clip(n, 40)} in this chunk")
            v = np.asarray(points[n])
            if v.dtype != self.dtype:
                v = _cast(v, self.dtype, n, self.warnings)
            if v.ndim == 0:
                raise BindingError(f"{clip(n, 40)}: a batch needs an array with a leading "
                                   f"batch axis, got a scalar")
            if B is None:
                B = v.shape[0]
            elif v.shape[0] != B:
                raise BindingError(f"{clip(n, 40)} has {v.shape[0]} points but "
                                   f"{clip(self.names[0], 40)} has {B}")
            values[variables[n]] = v
        if B is None:  # no column varies (a program of fixed bindings): one point per row
            B = next((len(np.asarray(v)) for v in points.values()), 1)
        for i in self.forced:  # a fixed value we differentiate with respect to
            v = values[i]
            values[i] = np.broadcast_to(v, (B,) + np.shape(v))
        if self._ranks is None:
            self.prepare(points)
        if B == 0:  # no points: empty columns of the points' shapes, no op run
            return self._empty(values)
        states = dict(self.states)
        self._forward(values, states, B)
        out = values[self.out]
        if not self.batched[self.out]:
            out = np.broadcast_to(out, (B,) + np.shape(out))
            values[self.out] = out
        gradients = {}
        if self.grad:
            gradients = self._backward(values, states, B)
        self.rows += B
        value = np.array(out, dtype=self.dtype)
        return BatchResult(self.output_name, value, gradients)

    def _empty(self, values):
        shapes = self._point_shapes
        value = np.zeros((0,) + shapes[self.out], dtype=self.dtype)
        gradients = {}
        for name, i in self.targets.items():
            shape = shapes[i] if i is not None else self._shape_of(name, values, 0)
            gradients[name] = np.zeros((0,) + tuple(shape), dtype=self.dtype)
        return BatchResult(self.output_name, value, gradients)

    def _forward(self, values, states, B):

        graph, nodes, batched = self.graph, self.graph.nodes, self.batched
        trouble = []
        i = -1

        def on_fp_error(kind, flag):
            trouble.append((i, kind))

        old = np.seterrcall(on_fp_error)
        try:
            with np.errstate(over="call", invalid="call", divide="call", under="ignore"), \
                    pywarnings.catch_warnings():
                pywarnings.simplefilter("ignore")
                for i in self.steps:
                    node = nodes[i]
                    op = node.op
                    xs = [values[j] for j in node.inputs]
                    flags = [batched[j] for j in node.inputs]
                    if op.gate is not None:
                        values[i] = self._per_point_gate(node, xs, flags, states, B)
                    elif op.partials is not None:
                        values[i] = op.forward(*_aligned(xs, flags, self._ndims(node)),
                                               *node.params)
                    else:
                        fn = self._batched_forward(node)
                        if fn is None:
                            values[i] = self._per_point(node, xs, flags, B)
                        elif fn.__class__ is tuple:
                            values[i] = self._table_forward(node, fn[1], xs, flags, B)
                        else:
                            values[i] = fn(*xs)
        except GradcliError:
            raise
        except Exception as e:
            raise _failure(graph, nodes[i], _one_point(values, batched), e) from e
        finally:
            np.seterrcall(old)
        for i, kind in dict.fromkeys(trouble):
            v = values[i]
            if v is None or np.asarray(v).dtype.kind != "f":
                continue
            bad = np.isnan(v) if kind == "invalid value" else np.isinf(v)
            rows = int(np.count_nonzero(bad.reshape(B, -1).any(axis=1))) if v.ndim else 0
            t = self.trouble.setdefault((i, kind), [0])
            t[0] += rows

    def _ndims(self, node):
        return self._ranks[node.id]

    def _batched_forward(self, node):
        key = node.id
        if key in self._fns:
            return self._fns[key]
        op = node.op
        fn = None
        if op.batch is not None:
            flags = tuple(bool(self.batched[j]) for j in node.inputs)
            try:
                fn = op.batch(op.forward, flags, self._ranks[node.id], node.params)
            except Exception:
                fn = None
        if fn is None and op in _BATCHED_FORWARDS:
            flags = tuple(bool(self.batched[j]) for j in node.inputs)
            try:
                made = _BATCHED_FORWARDS[op](op, flags, self._ranks[node.id], node.params)
            except Exception:
                made = None
            if made is not None:
                fn = ("table", made)
        if fn is None:
            self.fallbacks.add(op.name)
        self._fns[key] = fn
        return fn

    def _table_forward(self, node, fn, xs, flags, B):
        """A batched forward of :data:`_BATCHED_FORWARDS`: checked against the op's own
        forward at the first and last points of the first chunk; where it fails or
        disagrees, that node runs point by point (so a bad input gets the op's own error)."""
        key = ("fwd", node.id)
        state = self._fns.get(key)
        if state is False:
            return self._per_point(node, xs, flags, B)
        try:
            y = np.asarray(fn(*xs))
        except GradcliError:
            raise
        except Exception:
            y = None
        if state is None:
            ok = y is not None and y.shape[:1] == (B,)
            op = node.op
            for b in (sorted({0, B - 1}) if B and ok else ()):
                ref = np.asarray(op.forward(*[x[b] if f else x for x, f in zip(xs, flags)],
                                            *node.params))
                if ref.shape != y.shape[1:] or not _close(y[b], ref):
                    ok = False
                    break
            self._fns[key] = ok
            if not ok:
                self.fallbacks.add(node.op.name)
                return self._per_point(node, xs, flags, B)
        elif y is None:
            return self._per_point(node, xs, flags, B)
        return y

    def _per_point(self, node, xs, flags, B):
        """An op with no batched rule: run it point by point (this op only)."""
        op = node.op
        outs = [op.forward(*[x[b] if f else x for x, f in zip(xs, flags)], *node.params)
                for b in range(B)]
        return np.stack([np.asarray(o) for o in outs]) if outs else np.zeros((0,))

    def _per_point_gate(self, node, xs, flags, states, B):
        self.fallbacks.add(node.op.name)
        insts, out = _gate_forward_all(self.graph, node, xs, flags, B, self.dtype)
        states[node.id] = insts
        return out

    # ------------------------------------------------------------ reverse

    def _backward(self, values, states, B):

        graph, nodes, batched = self.graph, self.graph.nodes, self.batched
        order = self.order
        need = bytearray(len(nodes))
        for i in self.targets.values():
            if i is not None:
                need[i] = 1
        for i in order:
            if not need[i] and batched[i]:
                for j in nodes[i].inputs:
                    if need[j]:
                        need[i] = 1
                        break
        out = values[self.out]
        shape = out.shape[1:]
        if self.upstream is None:
            seed = np.ones(out.shape, dtype=self.dtype)
            self.seed_is_ones = shape != ()
        else:
            up = self.upstream
            if up.shape != shape:
                if up.shape != ():
                    raise BindingError(f"--upstream has shape {up.shape} but the output "
                                       f"{self.output_name} has shape {shape}")
            seed = np.array(np.broadcast_to(up, out.shape), dtype=self.dtype)
            self.seed_is_ones = False
        grads = [None] * len(values)
        if need[self.out]:
            grads[self.out] = seed
        i = None
        try:
            with np.errstate(all="ignore"):
                for i in reversed(order):
                    g = grads[i]
                    node = nodes[i]
                    if g is None or not node.inputs or not batched[i] or i in self.forced:
                        continue
                    self._backward_node(node, g, grads, values, need, states, B)
        except GradcliError:
            raise
        except Exception as e:
            raise _failure(graph, nodes[i], _one_point(values, batched), e, "backward") from e
        gradients, seen = {}, set()
        for name, i in self.targets.items():
            g = grads[i] if i is not None else None
            if g is None:
                if i is not None:
                    shape = np.shape(values[i])[1:]
                else:
                    shape = self._shape_of(name, values, B)
                g = np.zeros((B,) + shape, dtype=self.dtype)
            elif not (isinstance(g, np.ndarray) and g.flags.writeable and g.flags.owndata) \
                    or id(g) in seen or g.dtype != self.dtype:
                g = np.array(g, dtype=self.dtype)
            seen.add(id(g))
            gradients[name] = g
        return gradients

    def _shape_of(self, name, values, B):
        i = self.graph.variables.get(name)
        if i is not None and values[i] is not None:
            v = values[i]
            return v.shape[1:] if name in self.names else np.shape(v)
        if name in self.graph.variables:
            return ()

        j = self.graph.names[name]
        if j < len(values) and values[j] is not None:
            return np.shape(values[j])[1:] if self.batched[j] else np.shape(values[j])
        return ()

    def _backward_node(self, node, g, grads, values, need, states, B):
        op = node.op
        xs = [values[j] for j in node.inputs]
        flags = [self.batched[j] for j in node.inputs]
        y = values[node.id]
        ks = [k for k, j in enumerate(node.inputs) if need[j]]
        if not ks:
            return
        if op.gate is not None:  # a custom op: its backward, point by point
            ds = _gate_backward_all(self.graph, node, states[node.id], g, xs, flags, ks, B)
        elif op.partials is not None:
            ax = _aligned(xs, flags, self._ndims(node))
            ds = {}
            for k in ks:
                p = op.partials[k]
                if p.__class__ is int:
                    d = g if p == 1 else -g
                else:
                    d = g * p(y, *ax)
                target = np.shape(ax[k])
                if d.shape != target:
                    d = oplib._sum_to(d, target) if hasattr(oplib, "_sum_to") else \
                        oplib.sum_to(d, target)
                    d = np.reshape(d, target)
                ds[k] = np.reshape(d, np.shape(xs[k]))
        else:
            ds = self._batched_vjps(node, g, y, xs, flags, ks, B)
        for k in ks:
            j = node.inputs[k]
            d = ds[k]
            grads[j] = d if grads[j] is None else grads[j] + d

    def _batched_vjps(self, node, g, y, xs, flags, ks, B):
        """An op's downstream gradients for a whole chunk.

        The candidates (the batched rules of :data:`_BATCHED_VJPS`, the op's own VJPs on
        lined-up arrays for an elementwise op, its own VJPs with the axis params moved past
        the batch axis) are tried once per node, on the first chunk, and each is checked
        against the per-point VJPs at the chunk's first and last points; the first that
        agrees is used from then on.  None agreeing, the op runs point by point.
        """
        key = ("vjp", node.id)
        choice = self._fns.get(key, "unknown")
        if choice is None:
            return self._per_point_vjps(node, g, y, xs, flags, ks, range(B), B)
        if choice != "unknown":
            return self._candidate(choice, node, g, y, xs, flags, ks, B)
        reference = None
        for cand in self._candidates(node):
            try:
                with np.errstate(all="ignore"):
                    got = self._candidate(cand, node, g, y, xs, flags, ks, B)
            except GradcliError:
                raise
            except Exception:
                continue
            if got is None:
                continue
            if reference is None:
                probe = sorted({0, B - 1}) if B else []
                reference = self._per_point_vjps(node, g, y, xs, flags, ks, probe, B,
                                                 stack=False)
            if _agrees(got, reference, ks, B):
                self._fns[key] = cand
                return got
        self._fns[key] = None
        return self._per_point_vjps(node, g, y, xs, flags, ks, range(B), B)

    def _candidates(self, node):
        op = node.op
        out = []
        if op in _BATCHED_VJPS:
            out.append("rule")
        if op.vjps is not None:
            if op.batch is not None and op.batch is getattr(oplib, "B_ELEMENTWISE", 0):
                out.append("aligned")
            names = tuple(getattr(op, "params", ()) or ())
            if node.params and names and names[0] in ("axis", "axes", "dim"):
                out.append("shifted")
            out.append("as is")
        return out

    def _candidate(self, cand, node, g, y, xs, flags, ks, B):
        op = node.op
        if cand == "rule":
            return _BATCHED_VJPS[op](g, y, xs, [bool(f) for f in flags], node.params, ks, op)
        full = [x if f else np.broadcast_to(x, (B,) + np.shape(x)) for x, f in zip(xs, flags)]
        if cand == "aligned":
            ax = _aligned(xs, flags, self._ndims(node))
            got = {}
            for k in ks:
                d = op.vjps[k](g, y, *ax, *node.params)
                target = np.shape(ax[k])
                if np.shape(d) != target:
                    d = np.reshape(oplib._sum_to(d, target), target)
                got[k] = np.reshape(d, np.shape(xs[k]))
            return got
        params = node.params
        if cand == "shifted":
            axis = params[0]
            nd = np.ndim(full[0]) - 1
            if axis is None:
                axis = tuple(range(1, nd + 1))
            else:
                axis = _shift_axis(axis)
            params = (axis,) + tuple(params[1:])
        return {k: np.asarray(op.vjps[k](g, y, *full, *params)) for k in ks}

    def _per_point_vjps(self, node, g, y, xs, flags, ks, points, B, stack=True):
        op = node.op
        if stack:
            self.fallbacks.add(op.name)
        got = {}
        for k in ks:
            per = [np.asarray(op.vjps[k](g[b], y[b],
                                         *[x[b] if f else x for x, f in zip(xs, flags)],
                                         *node.params)) for b in points]
            if not stack:
                got[k] = per
            else:
                got[k] = np.stack(per) if per else np.zeros((0,) + np.shape(xs[k])[1:])
        return got

    # ------------------------------------------------------------ after the run

    def run_warnings(self):
        """The run's warnings, nan/inf made by an op counted over every row so far."""
        out = list(self.warnings)
        from .engine import _FP_WORDS

        graph = self.graph
        for (i, kind), (rows,) in self.trouble.items():
            node = graph.nodes[i]
            where = f" outside its domain ({node.op.domain})" if node.op.domain and \
                kind == "invalid value" else ""
            what = _FP_WORDS.get(kind, kind)
            count = f" in {rows:,} of {self.rows:,} rows" if rows else ""
            out.append(f"node {i} {graph.source(i, 40)} ({node.op.name}){where} {what}{count}")
        return out

    def prepare(self, points):
        """Learn each node's per-point rank from a chunk (before the first call)."""
        self._ranks = _point_ranks(self, points)


# ---------------------------------------------------------------- custom ops
#
# A custom op (a user's forward/backward class) is foreign code that keeps state between its
# forward and its backward: it cannot be vectorised safely, so it runs once per point, with a
# fresh instance and its own read-only copies of the inputs at each point, as the engine runs
# it.  The loop is made cheap: stdout goes to stderr once for the whole loop (not per call),
# the results are written into one preallocated array, and the engine's checks with their
# messages (gate_forward, gate_backward, real_array) run only for a result that is not
# already a real array of the right shape.

class _Replay:
    """A finished call replayed, so that the engine's checks see what the op returned."""

    def __init__(self, got):
        self.got = got

    def backward(self, g):
        return self.got


def _gate_call(graph, node, what, fn, *args):
    try:
        return fn(*args)
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # noqa: B036 - an op is foreign code; nothing may escape
        from . import engine

        raise engine._gate_error(graph, node, what, e) from None


def _is_real(v, shape=None):
    """Whether a custom op's result is already a real NumPy array (or scalar) of ``shape``."""
    return (v.__class__ is np.ndarray or isinstance(v, np.generic)) and \
        v.dtype.kind in "iuf" and (shape is None or v.shape == shape)


def _gate_forward_all(graph, node, xs, flags, B, dtype):
    """(instances, outputs with the batch axis) of a custom op at each of B points."""
    import contextlib

    from . import engine

    private, gate = engine.private, node.op.gate
    insts = [None] * B
    out = None
    with contextlib.redirect_stdout(sys.stderr):
        for b in range(B):
            args = [private(x[b] if f else x) for x, f in zip(xs, flags)]
            inst = _gate_call(graph, node, "forward", gate)
            y = _gate_call(graph, node, "forward", inst.forward, *args)
            if not _is_real(y):
                y = engine.real_array(graph, node, "forward", y, dtype)
            if out is None:
                out = np.empty((B,) + y.shape, dtype=dtype)
            elif y.shape != out.shape[1:]:
                raise EvalError(f"{graph.source(node.id, 40)}: op {node.op.name}: forward "
                                f"returned shape {y.shape} at point {b + 1} but "
                                f"{out.shape[1:]} at point 1 of the chunk", graph.text,
                                node.start)
            out[b] = y   # a copy: never the op's own array (it may keep it)
            insts[b] = inst
    if out is None:
        out = np.zeros((0,), dtype=dtype)
    return insts, out


def _gate_backward_all(graph, node, insts, g, xs, flags, ks, B):
    """A custom op's downstream gradients for the inputs ``ks``, point by point."""
    import contextlib

    from . import engine

    op = node.op
    shapes = [np.shape(x)[1:] if f else np.shape(x) for x, f in zip(xs, flags)]
    ds = {k: np.zeros((B,) + shapes[k], dtype=np.result_type(xs[k])) for k in ks}
    with contextlib.redirect_stdout(sys.stderr):
        for b in range(B):
            got = _gate_call(graph, node, "backward", insts[b].backward, engine.private(g[b]))
            if op.arity == 1 and not isinstance(got, (list, tuple)):
                got = [got]
            fast = isinstance(got, (list, tuple)) and len(got) == op.arity
            if fast:  # every input's gradient checked, as the engine does
                for k in range(op.arity):
                    d = got[k]
                    if d is not None and not _is_real(d, shapes[k]):
                        fast = False
                        break
            if not fast:  # the engine's checks, and its messages
                got = engine.gate_backward(graph, node, _Replay(got), g[b],
                                           [x[b] if f else x for x, f in zip(xs, flags)])
            for k in ks:
                if got[k] is not None:
                    ds[k][b] = got[k]
    return ds


def _point_ranks(kernel, points):
    """node id -> per-point ranks of its inputs: from one point run through the engine."""
    graph, nodes = kernel.graph, kernel.graph.nodes
    shapes = {}
    for i in kernel.order:
        node = nodes[i]
        if node.op is oplib.VAR:
            if node.name in kernel.names:
                shapes[i] = np.shape(points[node.name])[1:]
            else:
                shapes[i] = np.shape(kernel.values[i])
        elif node.op is oplib.CONST:
            shapes[i] = np.shape(node.value)
    ranks = {}
    # shapes of the other nodes: evaluate one point with the per-point engine's shapes
    # (no points at all: a made-up one, inside every op's domain and no matrix singular)
    made = np.random.default_rng(0)
    one = {n: np.asarray(points[n])[0] if len(np.asarray(points[n])) else
           made.uniform(0.25, 0.75, np.shape(points[n])[1:]) for n in kernel.names}
    vals = list(kernel.values)
    for n in kernel.names:
        vals[graph.variables[n]] = one[n]
    with np.errstate(all="ignore"), pywarnings.catch_warnings():
        pywarnings.simplefilter("ignore")
        for i in kernel.order:
            node = nodes[i]
            if node.op in (oplib.VAR, oplib.CONST) or not kernel.batched[i] \
                    or i in kernel.forced:
                continue
            xs = [vals[j] for j in node.inputs]
            ranks[i] = tuple(np.ndim(x) for x in xs)
            try:
                if node.op.gate is not None:
                    from . import engine

                    vals[i] = engine.gate_forward(graph, node, xs, kernel.dtype)[1]
                else:
                    vals[i] = node.op.forward(*xs, *node.params)
            except GradcliError:
                raise
            except Exception as e:
                raise _failure(graph, node, vals, e) from e
    kernel._point_shapes = {i: np.shape(vals[i]) for i in kernel.order
                            if vals[i] is not None}
    return ranks


def _aligned(xs, flags, ndims):
    """Elementwise inputs with the batch axis lined up: a batched input of lower rank than
    the op's result gets length-1 axes after its batch axis."""
    n = max((d for d in ndims if d is not None), default=0)
    out = []
    for x, f, d in zip(xs, flags, ndims):
        if f and d is not None and d < n:
            x = x.reshape(x.shape[:1] + (1,) * (n - d) + x.shape[1:])
        out.append(x)
    return out


def _one_point(values, batched):
    """Values as one point (the first) for error messages that show shapes."""
    out = []
    for k, v in enumerate(values):
        if v is not None and k < len(batched) and batched[k] and np.ndim(v) and len(v):
            v = v[0]
        out.append(v)
    return out


def _failure(graph, node, values, e, stage="forward"):
    from . import engine

    make = getattr(engine, "_op_failure", None)
    if make is not None:
        try:
            return make(graph, node, values, e, stage)
        except Exception:
            pass
    return EvalError(f"{graph.source(node.id, 40)} ({node.op.name}): {e}", graph.text,
                     node.start)


def _dtype(dtype):
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise BindingError(f"dtype {dtype!r}: choose float64 or float32")
        return DTYPES[dtype]
    return np.dtype(dtype).type


def _cast(v, dtype, name, warnings):
    from .values import as_array

    if isinstance(v, np.ndarray) and v.dtype == dtype:
        return v
    a = as_array(v, name)
    with np.errstate(all="ignore"):
        cast = a.astype(dtype)
    if a.dtype.kind == "f" and cast.dtype != a.dtype and \
            np.count_nonzero(np.isinf(cast)) > np.count_nonzero(np.isinf(a)):
        warnings.append(f"values of {name} are too large for {np.dtype(dtype).name} and "
                        f"become inf")
    return cast


def _binding_text(fixed, name):
    sources = getattr(fixed, "sources", {})
    return clip(sources.get(name, f"{name}=..."), 40)


# ---------------------------------------------------------------- batched VJPs
#
# rule(g, out, xs, params, ks) -> {k: downstream gradient} for the inputs ks, where every
# array carries the batch axis first; None when the rule does not cover these params (the
# kernel then runs that op point by point).

def _agrees(got, reference, ks, B):
    """Whether a chunk's batched VJPs equal the per-point ones at the probed points."""
    probe = sorted({0, B - 1}) if B else []
    for k in ks:
        d = got.get(k)
        if d is None or np.shape(d)[:1] != (B,):
            return False
        for b, ref in zip(probe, reference[k]):
            if np.shape(d[b]) != np.shape(ref) or not _close(d[b], ref):
                return False
    return True


def _close(a, b):
    """Equal up to rounding: a batched rule may add in another order than the op's own."""
    single = np.result_type(a) == np.float32 or np.result_type(b) == np.float32
    rtol, atol = (1e-4, 1e-6) if single else (1e-10, 1e-12)
    return np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=True)


def _shift_axis(axis):
    if isinstance(axis, tuple):
        return tuple(_shift_axis(a) for a in axis)
    return axis + 1 if axis >= 0 else axis


def _keepdims(params):
    return bool(params[1]) if len(params) > 1 else False


def _red_axes(params, nd):
    """Batched axes of a reduction over per-point axis ``params[0]`` (None: all), its
    params (axis,) or (axis, keepdims)."""
    if len(params) > 2:
        return None
    axis = params[0] if params else None
    if axis is None:
        return tuple(range(1, nd + 1))
    if isinstance(axis, (int, np.integer)):
        axis = (int(axis),)
    if not all(isinstance(a, (int, np.integer)) for a in axis):
        return None
    return tuple(sorted((a % nd) + 1 if nd else 1 for a in axis))


def _expand(g, axes):
    for a in axes:
        g = np.expand_dims(g, a)
    return g


def _back(v, params, axes):
    """A reduction's result with its reduced axes back (length 1), to broadcast."""
    return v if _keepdims(params) else _expand(v, axes)


def _vjp_sum(g, out, xs, params, ks):
    x = xs[0]
    axes = _red_axes(params, x.ndim - 1)
    if axes is None:
        return None
    return {0: np.array(np.broadcast_to(_back(g, params, axes), x.shape))}


def _vjp_mean(g, out, xs, params, ks):
    x = xs[0]
    axes = _red_axes(params, x.ndim - 1)
    if axes is None:
        return None
    n = int(np.prod([x.shape[a] for a in axes])) if axes else 1
    return {0: np.broadcast_to(_back(g, params, axes), x.shape) / n}


def _vjp_extreme(g, out, xs, params, ks):
    x = xs[0]
    axes = _red_axes(params, x.ndim - 1)
    if axes is None:
        return None
    hit = (x == _back(out, params, axes)).astype(g.dtype)
    count = np.sum(hit, axis=axes, keepdims=True)
    return {0: _back(g, params, axes) * hit / count}


def _vjp_matmul(g, out, xs, params, ks):
    a, b = xs
    na, nb = a.ndim - 1, b.ndim - 1
    res = {}
    if na == 2 and nb == 2:
        if 0 in ks:
            res[0] = np.matmul(g, np.swapaxes(b, -1, -2))
        if 1 in ks:
            res[1] = np.matmul(np.swapaxes(a, -1, -2), g)
    elif na == 1 and nb == 2:
        if 0 in ks:
            res[0] = np.einsum("bn,bkn->bk", g, b)
        if 1 in ks:
            res[1] = np.einsum("bk,bn->bkn", a, g)
    elif na == 2 and nb == 1:
        if 0 in ks:
            res[0] = np.einsum("bm,bk->bmk", g, b)
        if 1 in ks:
            res[1] = np.einsum("bmk,bm->bk", a, g)
    elif na == 1 and nb == 1:
        if 0 in ks:
            res[0] = g[:, None] * b
        if 1 in ks:
            res[1] = g[:, None] * a
    else:
        return None
    return res


def _vjp_dot(g, out, xs, params, ks):
    a, b = xs
    if a.ndim != 2:
        return None
    return {k: g[:, None] * (b if k == 0 else a) for k in ks}


def _vjp_transpose(g, out, xs, params, ks):
    nd = xs[0].ndim - 1
    axes = params[0] if params else None
    perm = tuple(range(nd - 1, -1, -1)) if axes is None else tuple(a % nd for a in axes)
    batched = (0,) + tuple(a + 1 for a in perm)
    return {0: np.transpose(g, tuple(np.argsort(batched)))}


def _vjp_index(g, out, xs, params, ks):
    key = params[0] if params else None
    if not isinstance(key, tuple):
        key = (key,)
    x = xs[0]
    d = np.zeros(x.shape, dtype=g.dtype)
    d[(slice(None),) + tuple(key)] = g
    return {0: d}


def _vjp_stack(g, out, xs, params, ks):
    return {k: np.array(g[:, k]) for k in ks}


def _one_axis(params, nd, default=-1):
    axis = params[0] if params else default
    if not isinstance(axis, (int, np.integer)):
        return None
    return int(axis) % nd + 1


def _vjp_softmax(g, out, xs, params, ks):
    nd = xs[0].ndim - 1
    if nd == 0:
        return {0: np.zeros_like(g)}
    a = _one_axis(params, nd)
    if a is None:
        return None
    return {0: out * (g - np.sum(g * out, axis=a, keepdims=True))}


def _vjp_log_softmax(g, out, xs, params, ks):
    nd = xs[0].ndim - 1
    if nd == 0:
        return {0: np.zeros_like(g)}
    a = _one_axis(params, nd)
    if a is None:
        return None
    return {0: g - np.exp(out) * np.sum(g, axis=a, keepdims=True)}


def _vjp_logsumexp(g, out, xs, params, ks):
    x = xs[0]
    nd = x.ndim - 1
    if nd == 0:
        return {0: np.array(g)}
    axes = _red_axes(params, nd)
    if axes is None:
        return None
    return {0: _back(g, params, axes) * np.exp(x - _back(out, params, axes))}


# Rules of the second kind, ``rule(g, out, xs, flags, params, ks, op)``, take the inputs as
# they are: ``flags[k]`` says whether input k carries the batch axis (a fixed input does
# not, so a fixed matrix is factorised once and a fixed kernel meets every image at once).
# The inputs of ``ks`` always carry it (only values that vary get a gradient).

def _pp(x, f):
    """The shape of one point of ``x`` (flag ``f``: x carries the batch axis)."""
    return np.shape(x)[1:] if f else np.shape(x)


def _lift(x, f, lead):
    """``x`` with a batch axis (length 1 when fixed) and ``lead`` length-1 axes after it."""
    s = np.shape(x)
    if f:
        return np.reshape(x, s[:1] + (1,) * lead + s[1:]) if lead else x
    return np.reshape(x, (1,) * (1 + lead) + s)


def _dummy(shape):
    """An array of ``shape`` costing nothing: for the ops' shape checks and spec builders."""
    return np.broadcast_to(np.float64(0), shape)


def _bsum_to(d, shape):
    """``d`` (batch axis first) summed down to ``(B,) + shape``: the adjoint of broadcasting
    behind the batch axis."""
    target = d.shape[:1] + tuple(shape)
    if d.shape == target:
        return d
    lead = d.ndim - len(target)
    axes = tuple(range(1, 1 + lead)) + tuple(
        1 + lead + i for i, n in enumerate(shape) if n == 1 and d.shape[1 + lead + i] != 1)
    return np.reshape(np.sum(d, axis=axes), target)


def _reshape_back(g, out, xs, flags, params, ks, op):
    return {0: np.reshape(g, np.shape(xs[0]))}


def _vjp_sum_to(g, out, xs, flags, params, ks, op):
    x = xs[0]
    shape = tuple(params[0])
    lead = x.ndim - 1 - len(shape)
    return {0: np.broadcast_to(np.reshape(g, g.shape[:1] + (1,) * lead + shape), x.shape)}


def _vjp_broadcast_to(g, out, xs, flags, params, ks, op):
    return {0: _bsum_to(g, xs[0].shape[1:])}


def _vjp_flip(g, out, xs, flags, params, ks, op):
    axes = oplib._axes(_dummy(xs[0].shape[1:]), params[0])
    return {0: np.flip(g, tuple(a + 1 for a in axes))}


def _vjp_cumsum(g, out, xs, flags, params, ks, op):
    a = oplib._axis1(_dummy(xs[0].shape[1:]), params[0]) + 1
    return {0: np.flip(np.cumsum(np.flip(g, a), axis=a), a)}


def _vjp_tri(fn):
    def rule(g, out, xs, flags, params, ks, op):
        return {0: fn(g, params[0] if params else 0)}  # NumPy's tril/triu: the last two axes
    return rule


def _vjp_concat(g, out, xs, flags, params, ks, op):
    shapes = [_pp(x, f) for x, f in zip(xs, flags)]
    ax = oplib._axis1(_dummy(shapes[0]), params[0])
    starts = np.cumsum([0] + [s[ax] for s in shapes])
    lead = (slice(None),) * (ax + 1)
    return {k: g[lead + (slice(int(starts[k]), int(starts[k + 1])),)] for k in ks}


def _vjp_stack_axis(g, out, xs, flags, params, ks, op):
    ax = oplib._axis1(_dummy(_pp(xs[0], flags[0])), params[0], extra=1)
    lead = (slice(None),) * (ax + 1)
    return {k: g[lead + (k,)] for k in ks}


def _diag_positions(n, m, k):
    """Rows and columns of diagonal k of an n x m matrix."""
    length = max(0, min(n, m - k) if k >= 0 else min(n + k, m))
    r = np.arange(length) + max(0, -k)
    return r, r + k


def _fwd_diag(op, flags, ndims, params):
    k = params[0] if params else 0

    def run(x):
        if x.ndim == 2:  # vectors to matrices
            n = x.shape[1] + abs(k)
            d = np.zeros((x.shape[0], n, n), dtype=x.dtype)
            r, c = _diag_positions(n, n, k)
            d[:, r, c] = x
            return d
        if x.ndim == 3:
            return np.array(np.diagonal(x, k, axis1=1, axis2=2))
        raise ValueError("diag takes a vector or a matrix")
    return run


def _vjp_diag(g, out, xs, flags, params, ks, op):
    x = xs[0]
    k = params[0] if params else 0
    if x.ndim == 2:
        return {0: np.diagonal(g, k, axis1=1, axis2=2)}
    d = np.zeros(x.shape, dtype=g.dtype)
    r, c = _diag_positions(x.shape[1], x.shape[2], k)
    d[:, r, c] = g
    return {0: d}


def _vjp_trace(g, out, xs, flags, params, ks, op):
    x = xs[0]
    d = np.zeros(x.shape, dtype=g.dtype)
    r = np.arange(min(x.shape[1:]))
    d[:, r, r] = g[:, None]
    return {0: d}


def _matmul_lined_up(a, fa, b, fb):
    """Both operands as stacks of matrices lined up behind the batch axis (1-D operands as
    NumPy's matmul takes them): (A, B, the points' result shape)."""
    sa, sb = _pp(a, fa), _pp(b, fb)
    if not sa or not sb:
        raise ValueError("@ needs arrays of at least one axis")
    a2, sa2 = (a, sa) if len(sa) > 1 else (np.expand_dims(a, -2), (1,) + sa)
    b2, sb2 = (b, sb) if len(sb) > 1 else (np.expand_dims(b, -1), sb + (1,))
    lead = np.broadcast_shapes(sa2[:-2], sb2[:-2])
    n = len(lead)
    shape = lead + sa[-2:-1] * (len(sa) > 1) + sb[-1:] * (len(sb) > 1)
    return _lift(a2, fa, n - len(sa2) + 2), _lift(b2, fb, n - len(sb2) + 2), \
        lead + (sa2[-2], sb2[-1]), shape


def _fwd_matmul(op, flags, ndims, params):
    fa, fb = flags

    def run(a, b):
        A, Bm, _, shape = _matmul_lined_up(a, fa, b, fb)
        r = np.matmul(A, Bm)
        return np.reshape(r, r.shape[:1] + shape)
    return run


def _vjp_matmul_any(g, out, xs, flags, params, ks, op):
    (a, b), (fa, fb) = xs, flags
    if fa and fb and a.ndim <= 3 and b.ndim <= 3:  # the four shapes written out
        return _vjp_matmul(g, out, xs, params, ks)
    A, Bm, gshape, _ = _matmul_lined_up(a, fa, b, fb)
    G = np.reshape(g, g.shape[:1] + gshape)
    res = {}
    if 0 in ks:
        res[0] = np.reshape(_bsum_to(np.matmul(G, np.swapaxes(Bm, -1, -2)), A.shape[1:]),
                            a.shape)
    if 1 in ks:
        res[1] = np.reshape(_bsum_to(np.matmul(np.swapaxes(A, -1, -2), G), Bm.shape[1:]),
                            b.shape)
    return res


def _fwd_outer(op, flags, ndims, params):
    def run(a, b):
        if a.ndim - flags[0] != 1 or b.ndim - flags[1] != 1:
            raise ValueError("outer takes two vectors")
        return a[..., :, None] * b[..., None, :]
    return run


def _vjp_outer(g, out, xs, flags, params, ks, op):
    (a, b), (fa, fb) = xs, flags
    res = {}
    if 0 in ks:
        res[0] = np.einsum("bij,bj->bi", g, b) if fb else g @ b
    if 1 in ks:
        res[1] = np.einsum("bij,bi->bj", g, a) if fa else a @ g
    return res


def _einsum_spec(xs, flags, subscripts):
    """einsum's terms with '...' spelled out and a batch letter on the inputs that carry
    the batch axis and on the output: (input terms, output term)."""
    ins, out = oplib._einsum_explicit(subscripts, [_dummy(_pp(x, f)) for x, f in
                                                   zip(xs, flags)])
    used = set("".join(ins) + out)
    z = next(c for c in oplib._LETTERS if c not in used)
    return [z + t if f else t for t, f in zip(ins, flags)], z + out


def _einsum(ins, out, xs):
    """np.einsum of explicit terms; a product that sums over nothing (an outer product, a
    scaling) as a broadcast multiplication, which NumPy does faster."""
    if len(xs) == 2 and all(c in out for t in ins for c in t) and \
            all(len(set(t)) == len(t) for t in ins):
        parts = []
        for t, x in zip(ins, xs):
            lined = sorted(t, key=out.index)           # x's letters in the output's order
            perm = [t.index(c) for c in lined]
            if perm != list(range(len(t))):
                x = np.transpose(x, perm)
            parts.append(np.reshape(x, tuple(x.shape[lined.index(c)] if c in lined else 1
                                             for c in out)))
        return np.multiply(parts[0], parts[1])
    # NumPy's optimize pays for three operands or more (the order of the contractions); for
    # two its batched-matmul route is several times slower here than the plain C loop
    return np.einsum(",".join(ins) + "->" + out, *xs, optimize=len(xs) > 2)


def _fwd_einsum(op, flags, ndims, params):
    def run(*xs):
        ins, out = _einsum_spec(xs, flags, params[0])
        return _einsum(ins, out, xs)
    return run


def _vjp_einsum(g, out, xs, flags, params, ks, op):
    ins, outs = _einsum_spec(xs, flags, params[0])
    res = {}
    for k in ks:
        target = ins[k]
        uniq = "".join(dict.fromkeys(target))   # a letter repeated in x_k: its diagonal
        rest = [j for j in range(len(xs)) if j != k]
        seen = set(outs).union(*[ins[j] for j in rest])
        keep = "".join(c for c in uniq if c in seen)
        r = _einsum([outs] + [ins[j] for j in rest], keep, [g] + [xs[j] for j in rest])
        shape = xs[k].shape
        size = dict(zip(target, shape))
        ones = tuple(i for i, c in enumerate(keep) if size[c] == 1 and r.shape[i] != 1)
        if ones:  # an axis of length 1 broadcast against the others: sum it back
            r = np.sum(r, axis=ones, keepdims=True)
        if keep != uniq:  # letters of x_k alone (summed in the forward): spread g back
            r = np.broadcast_to(np.reshape(r, tuple(size[c] if c in keep else 1
                                                    for c in uniq)),
                                tuple(size[c] for c in uniq))
        if uniq != target:  # g goes back on the diagonal, zeros elsewhere
            d = np.zeros(shape, dtype=r.dtype)
            np.einsum(f"{target}->{uniq}", d)[...] = r   # a writable view of the diagonal
            r = d
        res[k] = r
    return res


def _vjp_own_on_stacks(g, out, xs, flags, params, ks, op):
    """The op's own VJPs, which take a stack as it is (det, inv, adjugate: NumPy's linalg
    works on stacks; an elementwise op with params), so the batch is one more axis."""
    return {k: op.vjps[k](g, out, *xs, *params) for k in ks}


def _vjp_own_shifted(g, out, xs, flags, params, ks, op):
    """The op's own VJP with its axis moved past the batch axis (None: every axis of a
    point): reductions and scans whose rule is a program of axis-aware library ops."""
    axis = params[0] if params else None
    axis = tuple(range(1, xs[0].ndim)) if axis is None else _shift_axis(axis)
    return {0: op.vjps[0](g, out, xs[0], axis, *params[1:])}


def _solve_kind(A, fA, b, fb):
    sA, sb = _pp(A, fA), _pp(b, fb)
    if len(sA) < 2 or sA[-1] != sA[-2] or not sb:
        raise ValueError("solve takes a square matrix")  # the op's own message, per point
    vec = len(sb) == 1 or (len(sb) == len(sA) - 1 and sb == sA[:-1])
    if sb[-1 if vec else -2] != sA[-1]:
        raise ValueError("A and b do not fit")
    return sA, sb, vec


def _bsolve(A, fA, b, fb, vec):
    """``solve`` over a batch: a fixed matrix is factorised once for every right-hand side
    (the points' columns side by side); stacks of matrices go to LAPACK as stacks."""
    sA, sb = _pp(A, fA), _pp(b, fb)
    if not fA and fb and len(sA) == 2 and len(sb) == (1 if vec else 2):
        n = sA[0]
        if vec:
            return np.linalg.solve(A, b.T).T
        B, _, m = b.shape
        r = np.linalg.solve(A, np.reshape(np.swapaxes(b, 0, 1), (n, B * m)))
        return np.swapaxes(np.reshape(r, (n, B, m)), 0, 1)
    bb, sbb = (b[..., None], sb + (1,)) if vec else (b, sb)
    n = max(len(sA), len(sbb)) - 2
    r = np.linalg.solve(_lift(A, fA, n - len(sA) + 2), _lift(bb, fb, n - len(sbb) + 2))
    return r[..., 0] if vec else r


def _fwd_solve(op, flags, ndims, params):
    fA, fb = flags

    def run(A, b):
        return _bsolve(A, fA, b, fb, _solve_kind(A, fA, b, fb)[2])
    return run


def _vjp_solve(g, out, xs, flags, params, ks, op):
    (A, b), (fA, fb) = xs, flags
    sA, sb, vec = _solve_kind(A, fA, b, fb)
    gb = _bsolve(np.swapaxes(A, -1, -2), fA, g, True, vec)
    res = {}
    if 1 in ks:
        res[1] = _bsum_to(gb, sb)
    if 0 in ks:
        if vec:
            r = -(gb[..., :, None] * out[..., None, :])
        else:
            r = -(gb @ np.swapaxes(out, -1, -2))
        res[0] = _bsum_to(r, sA)
    return res


# -- convolution (conv1d/2d, conv_transpose1d/2d).  Only x varies (a fixed kernel and bias):
# the points are more images, so the batch is folded into N and the op's own forward and
# VJPs run once, whatever its params.  A kernel that varies: the points become groups (B
# kernels of ``groups`` groups each are one convolution of B * groups groups, the points'
# images side by side as channels), again the op's own forward and VJPs, once.  An op
# without a ``groups`` param (an older library) runs point by point when its kernel varies.

def _conv_groups(op, params):
    """(index of the groups param, its value), or (None, None) when the op has none."""
    if "groups" not in op.params:
        return None, None
    k = op.params.index("groups")
    return k, params[k]


def _conv_grouped(op, xs, flags, params):
    """The batch of one convolution as one convolution: x (N, B*C, ...), w (B*O, ...), the
    bias as (B*O,), params with groups * B.  (x, w, bias list, params, B, N)."""
    x, w = xs[:2]
    fx = flags[0]
    B = w.shape[0]
    k, groups = _conv_groups(op, params)
    xb = x if fx else np.broadcast_to(x, (B,) + np.shape(x))
    N = xb.shape[1]
    xx = np.reshape(np.swapaxes(xb, 0, 1), (N, -1) + xb.shape[3:])
    ww = np.reshape(w, (-1,) + w.shape[2:])
    rest = []
    if op.arity == 3:
        b = xs[2]
        rest = [np.reshape(b, -1) if flags[2] else np.tile(b, B)]
    p = list(params)
    p[k] = groups * B
    return xx, ww, rest, tuple(p), B, N


def _fwd_conv(op, flags, ndims, params):
    fx, fw = flags[0], flags[1]
    fb = op.arity == 3 and flags[2]
    if not fw:
        def run(x, w, *b):
            bias = list(b)
            if fb:
                bias = [np.zeros(b[0].shape[1:], dtype=b[0].dtype)]
            y = op.forward(_fold_x(x) if fx else x, w, *bias, *params)
            if fx:
                y = np.reshape(y, x.shape[:2] + y.shape[1:])
            if fb:
                y = y + np.reshape(b[0], b[0].shape[:1] + (1, -1) + (1,) * (y.ndim - 3))
            return y
        return run
    if _conv_groups(op, params)[0] is None:
        return None

    def run(*xs):
        xx, ww, rest, p, B, N = _conv_grouped(op, xs, flags, params)
        y = op.forward(xx, ww, *rest, *p)                     # (N, B*O, ...)
        return np.swapaxes(np.reshape(y, (N, B, -1) + y.shape[2:]), 0, 1)
    return run


def _fold_x(x):
    return np.reshape(x, (-1,) + x.shape[2:])


def _vjp_conv(g, out, xs, flags, params, ks, op):
    x, w = xs[:2]
    fw = flags[1]
    fb = op.arity == 3 and flags[2]
    d = g.ndim - 3
    res = {}
    if 2 in ks:
        res[2] = np.sum(g, axis=(1,) + tuple(range(3, 3 + d)))
    if not fw:  # x varies, w is fixed: every point's images at once, the op's own rule
        if 0 in ks:
            rest = [xs[2] if not fb else xs[2][0]] if op.arity == 3 else []
            gx = op.vjps[0](_fold_x(g), _fold_x(out), _fold_x(x), w, *rest, *params)
            res[0] = np.reshape(gx, x.shape)
        return res
    if _conv_groups(op, params)[0] is None:
        return None
    xx, ww, rest, p, B, N = _conv_grouped(op, xs, flags, params)
    gg = np.reshape(np.swapaxes(g, 0, 1), (N, -1) + g.shape[3:])      # (N, B*O, ...)
    oo = np.reshape(np.swapaxes(out, 0, 1), gg.shape)
    if 0 in ks:
        gx = op.vjps[0](gg, oo, xx, ww, *rest, *p)                     # (N, B*C, ...)
        res[0] = np.swapaxes(np.reshape(gx, (N, B) + x.shape[2:]), 0, 1)
    if 1 in ks:
        res[1] = np.reshape(op.vjps[1](gg, oo, xx, ww, *rest, *p), w.shape)
    return res


_CONVS = tuple(f"{name}{d}d{tail}" for name in ("conv", "conv_transpose") for d in (1, 2)
               for tail in ("", "_nobias"))


def _legacy(rule):
    """A rule of the first kind (every input broadcast to the batch) as one of the second."""
    def run(g, out, xs, flags, params, ks, op):
        B = g.shape[0]
        full = [x if f else np.broadcast_to(x, (B,) + np.shape(x)) for x, f in zip(xs, flags)]
        return rule(g, out, full, params, ks)
    return run


def _rules():
    table, forwards = {}, {}
    legacy = (("sum_all", _vjp_sum), ("mean", _vjp_mean), ("max_all", _vjp_extreme),
              ("min_all", _vjp_extreme), ("dot", _vjp_dot),
              ("transpose", _vjp_transpose), ("index", _vjp_index),
              ("stack", _vjp_stack), ("softmax", _vjp_softmax),
              ("log_softmax", _vjp_log_softmax), ("logsumexp", _vjp_logsumexp))
    rules = [(name, _legacy(rule)) for name, rule in legacy] + [
        ("matmul", _vjp_matmul_any), ("sum_to", _vjp_sum_to),
        ("broadcast_to", _vjp_broadcast_to), ("reshape", _reshape_back),
        ("flatten", _reshape_back), ("squeeze", _reshape_back),
        ("unsqueeze", _reshape_back), ("flip", _vjp_flip), ("cumsum", _vjp_cumsum),
        ("tril", _vjp_tri(np.tril)), ("triu", _vjp_tri(np.triu)), ("concat", _vjp_concat),
        ("stack_axis", _vjp_stack_axis), ("diag", _vjp_diag), ("trace", _vjp_trace),
        ("outer", _vjp_outer), ("einsum", _vjp_einsum), ("det", _vjp_own_on_stacks),
        ("inv", _vjp_own_on_stacks), ("adjugate", _vjp_own_on_stacks),
        ("leaky_relu", _vjp_own_on_stacks), ("elu", _vjp_own_on_stacks),
        ("hardtanh", _vjp_own_on_stacks), ("gelu", _vjp_own_on_stacks),
        ("prod", _vjp_own_shifted), ("var", _vjp_own_shifted), ("std", _vjp_own_shifted),
        ("norm", _vjp_own_shifted), ("cumprod", _vjp_own_shifted), ("solve", _vjp_solve)] + [(name, _vjp_conv) for name in _CONVS]
    for name, rule in rules:
        op = getattr(oplib, name, None)
        if isinstance(op, oplib.Op) and op.partials is None:
            table[op] = rule
    for name, make in (("matmul", _fwd_matmul), ("outer", _fwd_outer),
                       ("einsum", _fwd_einsum), ("diag", _fwd_diag), ("solve", _fwd_solve),
                       ("sum_to", _fwd_sum_to), ("broadcast_to", _fwd_broadcast_to),
                       ("squeeze", _fwd_squeeze)) + tuple((n, _fwd_conv) for n in _CONVS):
        op = getattr(oplib, name, None)
        if isinstance(op, oplib.Op):
            forwards[op] = make
    return table, forwards


def _fwd_sum_to(op, flags, ndims, params):
    shape = tuple(params[0])

    def run(x):
        oplib._sum_to(_dummy(x.shape[1:]), shape)  # the op's own check
        return _bsum_to(x, shape)
    return run


def _fwd_broadcast_to(op, flags, ndims, params):
    shape = tuple(params[0])

    def run(x):
        s = x.shape[1:]
        np.broadcast_shapes(s, shape)
        return np.broadcast_to(np.reshape(x, x.shape[:1] + (1,) * (len(shape) - len(s)) + s),
                               x.shape[:1] + shape)
    return run


def _fwd_squeeze(op, flags, ndims, params):
    def run(x):
        keep = oplib._squeeze(_dummy(x.shape[1:]), *params).shape
        return np.reshape(x, x.shape[:1] + keep)
    return run


#: op -> batched VJP rule ``(g, out, xs, flags, params, ks, op) -> {k: gradient}`` (None:
#: these params are not covered); op -> maker of a batched forward ``(op, flags, ndims,
#: params) -> fn(*xs)`` for ops whose own ``batch`` entry has none.
_BATCHED_VJPS, _BATCHED_FORWARDS = _rules()



# ---------------------------------------------------------------- the library call

_COMPILED = {}


def _compiled(program, ops):
    from .parse import parse

    if not isinstance(program, str):
        return program
    key = (program, id(ops))
    graph = _COMPILED.get(key)
    if graph is None:
        if len(_COMPILED) > 64:
            _COMPILED.clear()
        graph = _COMPILED[key] = parse(program, ops)
    return graph


def batch(program, points=None, /, *, wrt=None, grad=True, upstream=None, output=None,
          dtype="float64", ops=None, fixed=None, **columns):
    """Run ``program`` at many points at once: arrays in, arrays out.

    ``points`` (or keyword arguments) maps each variable that changes from point to point to
    an array whose first axis is the batch (a dict of NumPy arrays, or anything with
    ``keys()`` and ``[name]``, such as a pandas DataFrame); ``fixed`` holds bindings that are
    the same at every point.  The result is a :class:`BatchResult`: a dict of columns
    ``{output_name: values, "d_x": ..., ...}`` (each with the batch axis first), with
    ``.value`` and ``.gradients`` as attributes, ``.warnings`` and ``.looped`` (the names of
    the ops that ran point by point: custom ops).  ``grad=False`` evaluates only.

    It is a pure function of its chunk, so it maps over partitions as it is::

        ddf.map_partitions(lambda df: pd.DataFrame(gradcli.batch(expr, df)))
    """
    merged = {}
    if points is not None:
        for k in points.keys():
            merged[k] = np.asarray(points[k])
    merged.update({k: np.asarray(v) for k, v in columns.items()})
    graph = _compiled(program, ops)
    wrt_list = [w.strip() for w in wrt.split(",") if w.strip()] if isinstance(wrt, str) \
        else wrt
    k = Kernel(graph, list(merged), fixed, wrt=wrt_list, grad=grad, upstream=upstream,
               output=output, dtype=dtype)
    k.prepare(merged)
    res = k(merged)
    res.warnings = k.run_warnings()
    res.looped = sorted(k.fallbacks)  # ops that ran point by point (custom ops)
    return res


# ================================================================ reading points

class BadRow(BindingError):
    """A row of a batch file that cannot be read: where it is and what is wrong."""

    def __init__(self, where, line, column, message):
        self.where, self.line, self.column = where, line, column
        col = f", column {column}" if column is not None else ""
        super().__init__(f"{where} line {line}{col}: {message}")


class Points:
    """A stream of points: ``.names`` (the columns) and chunks of them.

    Iterating gives ``(columns, lines)``: ``columns`` maps each name to an array with the
    batch axis first, ``lines`` the input line of each point (None when the input has no
    lines).  A bad row raises :class:`BadRow`, or with ``keep_going`` is passed to
    ``on_bad(bad_row)`` and left out.
    """

    names: list
    total = None        # bytes or points to go through, for a progress bar (None: unknown)
    done = 0

    def __iter__(self):
        raise NotImplementedError

    def close(self):
        pass


def _open_stream(path, what):
    """A binary stream of a batch file: a regular file, a FIFO (``<(cmd)``) or stdin."""
    import stat

    if path == "-":
        stream = getattr(sys.stdin, "buffer", None)
        if sys.stdin is None or sys.stdin.closed:
            raise BindingError(f"{what}: no standard input to read")
        if stream is None:  # a text-only stdin (tests): encode it as it comes
            return io.BytesIO(sys.stdin.read().encode("utf-8", "surrogatepass")), None
        return stream, None
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise BindingError(f"{what}: no such file") from None
    except OSError as e:
        raise BindingError(f"{what}: cannot read it: {os.strerror(e.errno)}") from None
    if stat.S_ISDIR(st.st_mode):
        raise BindingError(f"{what}: it is a directory, not a file")
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISFIFO(st.st_mode)):
        raise BindingError(f"{what}: it is not a regular file or a pipe")
    try:
        f = open(path, "rb")
    except OSError as e:
        raise BindingError(f"{what}: cannot read it: {os.strerror(e.errno)}") from None
    return f, (st.st_size if stat.S_ISREG(st.st_mode) else None)


def _kind(path, head):
    ext = os.path.splitext(path)[1].lower() if path != "-" else ""
    if ext in (".npy", ".npz", ".csv"):
        return ext[1:]
    if ext in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if head.startswith(b"\x93NUMPY"):
        return "npy"
    if head.startswith(b"PK\x03\x04"):
        return "npz"
    if head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{"):
        return "jsonl"
    return "csv"


def open_points(path, names=None, chunk_size=CHUNK, keep_going=False, on_bad=None):
    """The points of a batch file (CSV with a header, JSON Lines, .npy, .npz; ``-``:
    stdin, its kind told from its first bytes).  ``names``: the columns wanted (default:
    all); a wanted name the file lacks is left out, for the caller to report."""
    what = f"--batch {clip(path, 60)}"
    stream, size = _open_stream(path, what)
    head = stream.peek(8)[:8] if hasattr(stream, "peek") else b""
    if not head and hasattr(stream, "seekable") and stream.seekable():
        pos = stream.tell()
        head = stream.read(8)
        stream.seek(pos)
    kind = _kind(path, head)
    if kind in ("npy", "npz"):
        return _ArrayPoints(stream, path, what, kind, names, chunk_size)
    if kind == "csv":
        return _CsvPoints(None, stream, size, path, what, names, chunk_size, keep_going,
                          on_bad)
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline=None,
                            errors="strict")
    return _JsonlPoints(text, stream, size, path, what, names, chunk_size, keep_going, on_bad)


def iter_chunks(path, chunk_size=CHUNK, names=None):
    """Chunks of a batch file: dicts name -> array with a leading batch axis.

    For mini-batches (``gradcli descend``) and any loop over a large file in constant
    memory; bad rows raise :class:`BadRow`.
    """
    points = open_points(path, names, chunk_size)
    try:
        for columns, _ in points:
            yield columns
    finally:
        points.close()


class _TextPoints(Points):
    def __init__(self, text, raw, size, path, what, names, chunk_size, keep_going, on_bad):
        self.text, self.raw, self.total = text, raw, size
        self.path, self.what = path, what
        self.chunk_size = max(1, int(chunk_size))
        self.keep_going, self.on_bad = keep_going, on_bad
        self.line = 0  # lines read so far
        self.wanted = names

    def close(self):
        if self.raw is not getattr(sys.stdin, "buffer", None):
            try:
                self.raw.close()
            except Exception:
                pass

    def _bad(self, line, column, message):
        bad = BadRow(self.what, line, column, message)
        if not self.keep_going:
            raise bad
        if self.on_bad is not None:
            self.on_bad(bad)

    def _lines(self):
        try:
            lines = list(itertools.islice(self.text, self.chunk_size))
        except UnicodeDecodeError as e:
            raise BindingError(f"{self.what}: not UTF-8 text near line {self.line + 1} "
                               f"({e.reason})") from None
        if self.total is not None:
            try:
                self.done = self.raw.tell()
            except (OSError, ValueError):
                pass
        return lines


def _cell_text(cell):
    return repr(clip(cell, 40)) if cell.strip() else "an empty cell"


#: Bytes a CSV number may be made of, for the fastest parser (JSON's number syntax).
_NUMBER_BYTES = b"0123456789+-.eE, \t\n"
_BLOCK = 1 << 22


class _CsvPoints(_TextPoints):
    """CSV with a header row: one column per scalar variable.

    Read as bytes, by blocks: a block's complete lines are one chunk.  When every line has
    the right number of commas and nothing but numbers, the whole chunk is parsed by one C
    call (orjson when installed, else NumPy); otherwise the csv module reads it row by row,
    which handles quotes and blank lines and names the line and column of each bad cell.
    """

    def __init__(self, *args):
        super().__init__(*args)
        import csv

        header = b""
        while not header.strip():
            header = self.raw.readline()
            self.line += 1
            if not header:
                raise BindingError(f"{self.what}: the file is empty; a batch CSV starts with "
                                   f"a header row naming its columns (x,y,z)")
        if header.startswith(b"\xef\xbb\xbf"):
            header = header[3:]
        try:
            text = header.decode("utf-8")
        except UnicodeDecodeError:
            raise BindingError(f"{self.what}: the header row is not UTF-8 text") from None
        self.pending = b""
        if "\r" in text.rstrip("\r\n"):  # a lone CR ends lines (an old Mac file)
            text, rest = text.split("\r", 1)
            self.pending = rest.encode("utf-8")
        cells = [c.strip() for c in next(csv.reader([text.rstrip("\r\n")]))]
        from .values import normal_name

        cells = [normal_name(c) for c in cells]
        if all(is_number(c) for c in cells):
            raise BindingError(f"{self.what}: the first row ({clip(text.strip(), 40)}) is "
                               f"numbers, not a header; a batch CSV starts with a row naming "
                               f"its columns (x,y,z)")
        for k, c in enumerate(cells):
            if not c:
                raise BindingError(f"{self.what}: column {k + 1} of the header has no name")
            if cells.count(c) > 1:
                raise BindingError(f"{self.what}: the header names {clip(c, 40)} "
                                   f"{cells.count(c)} times")
        self.header = cells
        self.ncols = len(cells)
        wanted = self.wanted
        self.names = [c for c in cells if wanted is None or c in wanted]
        self.use = [cells.index(n) for n in self.names]
        self.done = len(header)

    def close(self):
        super().close()

    def _blocks(self):
        """(bytes of whole lines, newline positions in it, their count), chunk by chunk."""
        buf = self.pending
        eof = False
        while True:
            while not eof and buf.count(b"\n") < self.chunk_size:
                more = self._read(_BLOCK)
                if not more:
                    eof = True
                    break
                buf += more
                if b"\n" in more and (len(buf) >= _BLOCK or not self._more_waiting()):
                    break  # a full block, or all a pipe has for now: go with what we have
            if b"\r" in buf:
                hold = b""
                if buf.endswith(b"\r") and not eof:  # its \n may be in the next block
                    buf, hold = buf[:-1], b"\r"
                buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n") + hold
            if eof and buf and not buf.endswith(b"\n"):
                buf += b"\n"
            if not buf:
                return
            arr = np.frombuffer(buf, dtype=np.uint8)
            nl = np.flatnonzero(arr == 10)
            if not len(nl):
                if eof:
                    return
                continue
            n = min(len(nl), self.chunk_size)
            end = int(nl[n - 1]) + 1
            body, buf = buf[:end], buf[end:]
            self.done += end
            yield body, arr[:end], nl[:n]

    def _read(self, n):
        read1 = getattr(self.raw, "read1", None)
        return read1(n) if read1 is not None else self.raw.read(n)

    def _more_waiting(self):
        """Whether more input can be read at once (always, for a regular file)."""
        if self.total is not None:
            return True
        try:
            import select

            ready, _, _ = select.select([self.raw], [], [], 0)
            return bool(ready)
        except (OSError, ValueError, TypeError, io.UnsupportedOperation):
            return True

    def __iter__(self):
        for body, arr, nl in self._blocks():
            start = self.line + 1
            n = len(nl)
            self.line += n
            cols = self._fast(body, arr, nl)
            if cols is not None:
                yield cols, np.arange(start, start + n)
                continue
            cols, numbers = self._careful(body, start)
            if cols is not None:
                yield cols, numbers

    def _fast(self, body, arr, nl):
        """Every line complete and all numbers: one C call parses the whole chunk."""
        n, ncols = len(nl), self.ncols
        if ncols > 1:
            commas = np.flatnonzero(arr == 44)
            if len(commas) != n * (ncols - 1):
                return None
            commas = commas.reshape(n, ncols - 1)
            starts = np.empty(n, dtype=nl.dtype)
            starts[0] = -1
            starts[1:] = nl[:-1]
            if not ((commas[:, 0] > starts).all() and (commas[:, -1] < nl).all()):
                return None
        flat = None
        if not body.translate(None, _NUMBER_BYTES):  # only digits, signs, e, commas
            oj = orjson()
            if oj is not None:
                try:
                    flat = np.array(oj.loads(b"[" + body[:-1].replace(b"\n", b",") + b"]"),
                                    dtype=np.float64)
                except (ValueError, TypeError, OverflowError):
                    flat = None
        if flat is None:
            try:
                text = body[:-1].decode("ascii").replace("\n", ",")
                with pywarnings.catch_warnings():
                    pywarnings.simplefilter("error")
                    flat = np.fromstring(text, sep=",")
            except (ValueError, DeprecationWarning, UnicodeDecodeError):
                return None
        if flat.ndim != 1 or flat.size != n * ncols:
            return None
        table = flat.reshape(n, ncols)
        return {name: np.ascontiguousarray(table[:, k]) for name, k in zip(self.names,
                                                                             self.use)}

    def _careful(self, body, start):
        """Row by row with the csv module: blank lines skipped, each bad cell named."""
        import csv

        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as e:
            line = start + body.count(b"\n", 0, e.start)
            raise BindingError(f"{self.what} line {line}: not UTF-8 text") from None
        lines = text.split("\n")[:-1]
        keep, numbers = [], []
        for k, line_text in enumerate(lines):
            line = start + k
            row = next(csv.reader([line_text]), [])
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != self.ncols:
                self._bad(line, None, f"{len(row)} cell{'s' * (len(row) != 1)} for "
                                      f"{self.ncols} columns "
                                      f"({', '.join(clip(c, 20) for c in self.header[:8])}"
                                      f"{', ...' if self.ncols > 8 else ''})")
                continue
            ok = True
            for name, c in zip(self.names, self.use):
                cell = row[c]
                if not is_number(cell):
                    self._bad(line, name, f"{_cell_text(cell)} is not a number")
                    ok = False
                    break
            if ok:
                keep.append([row[c] for c in self.use])
                numbers.append(line)
        if not keep:
            return None, None
        cols = {}
        for k, name in enumerate(self.names):
            cols[name] = np.array([r[k].strip() for r in keep], dtype=np.float64)
        return cols, np.array(numbers)


class _JsonlPoints(_TextPoints):
    """JSON Lines: one object per point, numbers or (nested) lists; "nan"/"inf" strings."""

    def __init__(self, *args):
        super().__init__(*args)
        self._first = None
        self.shapes = {}
        # the names are those of the first object (or the wanted ones it has)
        while True:
            line = self.text.readline()
            if not line:
                raise BindingError(f"{self.what}: the file holds no points")
            self.line += 1
            if line.strip():
                break
        obj = self._load_one(line, self.line)
        if not isinstance(obj, dict):
            raise BindingError(f"{self.what} line {self.line}: a JSON Lines batch has one "
                               f"object per line, like {{\"x\": 1, \"y\": 2}}")
        self.names = [k for k in obj if self.wanted is None or k in self.wanted]
        self._first = (line, self.line)

    def _load_one(self, line, number):
        try:
            return json.loads(line)
        except ValueError as e:
            raise BadRow(self.what, number, None, f"not JSON ({e})") from None

    def __iter__(self):
        pending = [self._first[0]] if self._first else []
        start = self._first[1] if self._first else self.line + 1
        self._first = None
        while True:
            lines = pending + self._lines()
            pending = []
            if not lines:
                return
            self.line = start + len(lines) - 1
            got = self._chunk(lines, start)
            start = self.line + 1
            if got is not None:
                yield got

    def _chunk(self, lines, start):
        try:
            rows = _json_rows(lines)
            get = [list(map(operator.itemgetter(n), rows)) for n in self.names]
            cols = {}
            for n, vals in zip(self.names, get):
                a = np.array(vals, dtype=np.float64)
                shape = self.shapes.setdefault(n, a.shape[1:])
                if a.shape[1:] != shape:
                    raise ValueError
                cols[n] = a
            return cols, np.arange(start, start + len(lines))
        except (ValueError, TypeError, KeyError, AttributeError):
            pass
        keep = {n: [] for n in self.names}
        numbers = []
        for k, line in enumerate(lines):
            number = start + k
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                self._bad(number, None, f"not JSON ({e})")
                continue
            if not isinstance(obj, dict):
                self._bad(number, None, "not a JSON object")
                continue
            row = {}
            for n in self.names:
                if n not in obj:
                    self._bad(number, n, f"no value for {clip(n, 40)}")
                    break
                try:
                    a = np.array(obj[n], dtype=np.float64)
                except (ValueError, TypeError):
                    self._bad(number, n, f"{clip(json.dumps(obj[n]), 40)} is not a number or "
                                         f"an array of numbers")
                    break
                shape = self.shapes.setdefault(n, a.shape)
                if a.shape != shape:
                    self._bad(number, n, f"shape {a.shape}, but earlier points have {shape}")
                    break
                row[n] = a
            else:
                for n in self.names:
                    keep[n].append(row[n])
                numbers.append(number)
        if not numbers:
            return None
        return {n: np.stack(v) for n, v in keep.items()}, np.array(numbers)


def _json_rows(lines):
    text = "[" + ",".join(line for line in lines if line.strip()) + "]"
    if len(text) > 2 and any(not line.strip() for line in lines):
        raise ValueError  # blank lines: line numbers need the careful path
    oj = orjson()
    return json.loads(text) if oj is None else oj.loads(text)


class _ArrayPoints(Points):
    """``.npy`` (one array: the program's one batched variable, or a structured array with
    a field per variable) or ``.npz`` (one array per variable), batch axis first."""

    def __init__(self, stream, path, what, kind, names, chunk_size):
        import tempfile
        import zipfile

        self.what, self.chunk_size = what, max(1, int(chunk_size))
        self._tmp = None
        if path == "-" or not hasattr(stream, "seek") or not _seekable(stream):
            # stdin or a pipe: spill it to a temporary file to read it by parts
            tmp = tempfile.TemporaryFile()
            while True:
                block = stream.read(1 << 22)
                if not block:
                    break
                tmp.write(block)
            tmp.seek(0)
            self._tmp = stream = tmp
        self.stream = stream
        self.arrays = {}    # name -> (reader, shape, dtype)
        if kind == "npz":
            try:
                self.zip = zipfile.ZipFile(stream)
            except zipfile.BadZipFile:
                raise BindingError(f"{what}: not a valid .npz archive") from None
            for member in self.zip.namelist():
                name = member[:-4] if member.endswith(".npy") else member
                if names is None or name in names:
                    self.arrays[name] = member
        else:
            self.zip = None
            self.arrays[None] = None
        self.names = [n for n in self.arrays if n is not None]
        self._headers = {}
        for name, member in self.arrays.items():
            f = self.zip.open(member) if self.zip else stream
            shape, dtype, fields = _npy_header(f, f"{what}" + (f" ({member})" if member else ""))
            self._headers[name] = (shape, dtype)
            if self.zip:
                f.close()
            if name is None:
                if fields:
                    self.names = [n for n in fields if names is None or n in names]
                    self.structured = True
                else:
                    self.structured = False
                self.start = stream.tell()
        if None in self.arrays:
            self.single = True
            if not self.structured:  # named after the file until bind_single says
                stem = os.path.splitext(os.path.basename(path))[0] if path != "-" else "x"
                self._single_name = stem
                self.names = [stem]
        else:
            self.single = False
        counts = {n: h[0][0] if h[0] else None for n, h in self._headers.items()}
        for n, c in counts.items():
            if c is None:
                raise BindingError(f"{what}{'' if n is None else ' ' + n}: a 0-d array has no "
                                   f"batch axis; give one point per row (shape (N, ...))")
        if len(set(counts.values())) > 1:
            detail = ", ".join(f"{n}: {c}" for n, c in counts.items())
            raise BindingError(f"{what}: the arrays have different numbers of points "
                               f"({detail})")
        self.count = next(iter(counts.values()), 0)
        self.total = self.count

    def bind_single(self, name):
        """A plain .npy batch binds the program's one batched variable ``name``."""
        self.names = [name]
        self._single_name = name

    def __iter__(self):
        readers = {}
        try:
            for name, member in self.arrays.items():
                f = self.zip.open(member) if self.zip else self.stream
                if self.zip:
                    _npy_header(f, self.what)
                else:
                    f.seek(self.start)
                shape, dtype = self._headers[name]
                readers[name] = (f, shape, dtype)
            done = 0
            while done < self.count:
                n = min(self.chunk_size, self.count - done)
                cols = {}
                for name, (f, shape, dtype) in readers.items():
                    per = int(np.prod(shape[1:], dtype=np.int64))
                    data = f.read(n * per * dtype.itemsize)
                    if len(data) != n * per * dtype.itemsize:
                        raise BindingError(f"{self.what}: the file ends early: the header "
                                           f"declares {self.count:,} points")
                    a = np.frombuffer(data, dtype=dtype).reshape((n,) + tuple(shape[1:]))
                    if dtype.names:
                        for field in self.names:
                            cols[field] = np.asarray(a[field], dtype=np.float64)
                    else:
                        key = name if name is not None else getattr(self, "_single_name",
                                                                     None)
                        cols[key] = a
                done += n
                self.done = done
                yield cols, None
        finally:
            if self.zip:
                for f, _, _ in readers.values():
                    f.close()

    def close(self):
        for f in (self._tmp, self.stream):
            try:
                if f is not None and f is not getattr(sys.stdin, "buffer", None):
                    f.close()
            except Exception:
                pass


def _seekable(stream):
    try:
        return stream.seekable()
    except Exception:
        return False


def _npy_header(f, what):
    from numpy.lib import format as npformat

    try:
        version = npformat.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = npformat.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = npformat.read_array_header_2_0(f)
    except Exception as e:
        raise BindingError(f"{what}: not a valid .npy array ({str(e).strip()[:80]})") \
            from None
    if dtype.hasobject:
        raise BindingError(f"{what}: the array holds Python objects, which gradcli does not "
                           f"load (pickles are disallowed)")
    fields = list(dtype.names) if dtype.names else None
    kinds = [dtype.fields[n][0] for n in fields] if fields else [dtype]
    for d in kinds:
        if d.kind not in "biuf" or d.shape:
            raise BindingError(f"{what}: {d} values are not real numbers")
    if fortran and len(shape) > 1:
        raise BindingError(f"{what}: the array is in Fortran order; save it in C order "
                           f"(np.ascontiguousarray) to read it point by point")
    return tuple(shape), dtype, fields


# ================================================================ sweeps

def parse_sweep(text):
    """``x=START:STOP:N`` -> (name, array of N points from START to STOP, both included)."""
    from .values import normal_name

    name, eq, spec = text.partition("=")
    name = normal_name(name.strip())
    parts = spec.split(":")
    example = "x=0:1:11 (11 points from 0 to 1)"
    if not eq or not name.isidentifier() or len(parts) != 3:
        raise BindingError(f"--sweep {clip(text, 40)}: write NAME=START:STOP:N, e.g. {example}")
    try:
        start, stop = float(parts[0]), float(parts[1])
        n = float(parts[2])
    except ValueError:
        raise BindingError(f"--sweep {clip(text, 40)}: START, STOP and N must be numbers, "
                           f"e.g. {example}") from None
    if not (math.isfinite(start) and math.isfinite(stop)):
        raise BindingError(f"--sweep {clip(text, 40)}: START and STOP must be finite")
    if n != int(n) or n < 1:
        raise BindingError(f"--sweep {clip(text, 40)}: N is the number of points, a whole "
                           f"number of at least 1")
    return name, np.linspace(start, stop, int(n))


class _SweepPoints(Points):
    """The grid of several sweeps, in C order (the last sweep varies fastest), by chunks."""

    def __init__(self, axes, chunk_size):
        self.axes = axes
        self.names = [n for n, _ in axes]
        seen = set()
        for n in self.names:
            if n in seen:
                raise BindingError(f"--sweep {clip(n, 40)} is given twice; sweep each name "
                                   f"once")
            seen.add(n)
        self.shape = tuple(len(a) for _, a in axes)
        self.count = int(np.prod(self.shape, dtype=np.int64))
        self.total = self.count
        self.chunk_size = max(1, int(chunk_size))

    def __iter__(self):
        for lo in range(0, self.count, self.chunk_size):
            hi = min(self.count, lo + self.chunk_size)
            idx = np.unravel_index(np.arange(lo, hi), self.shape)
            self.done = hi
            yield {n: a[k] for (n, a), k in zip(self.axes, idx)}, None


def sweep_points(specs, chunk_size=CHUNK):
    """Points of ``--sweep NAME=START:STOP:N`` (repeatable: the grid of all of them)."""
    return _SweepPoints([parse_sweep(s) for s in specs], chunk_size)


# ================================================================ writing results

def _matrix(res, columns):
    """The chunk's columns as one (B, k) float64 matrix (arrays flattened per point)."""
    parts = []
    for c in columns:
        a = res[c]
        parts.append(a.reshape(a.shape[0], -1))
    return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]


def _csv_bytes(mat):
    """Rows of numbers as CSV text: the shortest text that reads back as the same float
    (``repr``), non-finite values as nan, inf, -inf."""
    if mat.shape[0] == 0:
        return b""
    oj = orjson()
    if oj is not None and mat.dtype in (np.float64, np.float32):
        body = _orjson_fields(oj, mat, (b"nan", b"inf", b"-inf"))
        return body[2:-2].replace(b"],[", b"\n") + b"\n"
    n, k = mat.shape
    line = ",".join(["%s"] * k) + "\n"
    return ((line * n) % tuple(_texts(mat))).encode("ascii")


def _texts(mat):
    """Each number's shortest round-trip text (float32 as float32), in C order."""
    if mat.dtype == np.float32:
        return list(map(str, mat.ravel()))
    return list(map(float.__repr__, mat.astype(np.float64).ravel().tolist()))


def _orjson_fields(oj, mat, tokens):
    """orjson's text of a matrix, with its nulls (nan, inf) replaced by ``tokens``."""
    text = oj.dumps(mat, option=oj.OPT_SERIALIZE_NUMPY)
    if not np.isfinite(mat).all():
        flat = mat.ravel()
        bad = flat[~np.isfinite(flat)]
        names = np.where(np.isnan(bad), 0, np.where(bad > 0, 1, 2))
        pieces = text.split(b"null")
        toks = [tokens[t] for t in names.tolist()]
        text = b"".join(itertools.chain.from_iterable(zip(pieces, toks + [b""])))
    return text


def _json_fields(mat):
    """Each number of a matrix as JSON text (nan and inf as strings), in C order."""
    quoted = (b'"nan"', b'"inf"', b'"-inf"')
    oj = orjson()
    if oj is not None and mat.dtype in (np.float64, np.float32):
        text = _orjson_fields(oj, mat, quoted)
        if mat.ndim == 2:
            text = text[2:-2].replace(b"],[", b",")
        return text.split(b",")
    fields = [t.encode() for t in _texts(mat)]
    flat = mat.ravel()
    for i in np.flatnonzero(~np.isfinite(flat)).tolist():
        v = flat[i]
        fields[i] = quoted[0] if v != v else quoted[1] if v > 0 else quoted[2]
    return fields


class Writer:
    """Where a batch's rows go: ``write(result)`` per chunk, then ``close()``."""

    def __init__(self, stream, output_name, wrt, grad, inputs=()):
        self.stream = stream
        self.output_name = output_name
        self.wrt = list(wrt)
        self.grad = grad
        self.inputs = [n for n in inputs if n not in column_names(output_name, self.wrt)]
        self.columns = column_names(output_name, self.wrt if grad else [])
        self.all = self.inputs + self.columns

    def write(self, res, points=None):
        """Write one chunk's results (and its ``points``, for the :attr:`inputs` columns)."""
        if self.inputs:
            merged = {n: np.asarray(points[n], dtype=res.value.dtype) for n in self.inputs}
            merged.update(res)
            res = _Merged(res, merged)
        self._write(res)

    def _write(self, res):
        raise NotImplementedError

    def close(self):
        """Finish the output (a CSV's header when no row came, an archive's directory)."""


class _Merged(dict):
    def __init__(self, res, merged):
        super().__init__(merged)
        self.value, self.gradients, self.output_name = res.value, res.gradients, \
            res.output_name


def _header_names(res, columns):
    names = []
    for c in columns:
        shape = res[c].shape[1:]
        if shape == ():
            names.append(c)
        else:
            names.extend(f"{c}[{','.join(map(str, idx))}]" for idx in np.ndindex(shape))
    return names


class CsvWriter(Writer):
    """``f,d_x,d_y``: the output, then each gradient; arrays flattened to ``d_W[0,1]``."""

    header_done = False

    def _write(self, res):
        if not self.header_done:
            import csv

            buf = io.StringIO()
            csv.writer(buf, lineterminator="\n").writerow(_header_names(res, self.all))
            self.stream.write(buf.getvalue().encode("utf-8"))
            self.header_done = True
        self.stream.write(_csv_bytes(_matrix(res, self.all)))

    def close(self):
        if not self.header_done:
            self.stream.write((",".join(self.all) + "\n").encode("utf-8"))
            self.header_done = True


class JsonlWriter(Writer):
    """``{"value": V, "gradients": {"x": ..., ...}}`` per point (``{"value": V}`` for eval);
    a sweep's lines start with ``"point": {"x": ...}``."""

    def _write(self, res):
        B = res.value.shape[0]
        if B == 0:
            return
        scalar = all(res[c].ndim == 1 for c in self.all)
        if scalar:
            line = ""
            if self.inputs:
                line = '"point": {' + ", ".join(f"{json.dumps(n)}: %s" for n in self.inputs) \
                    + "}, "
            line = "{" + line + '"value": %s'
            if self.grad:
                line += ', "gradients": {' + ", ".join(f"{json.dumps(n)}: %s"
                                                      for n in self.wrt) + "}"
            line += "}\n"
            fields = _json_fields(_matrix(res, self.all))
            self.stream.write((line.encode() * B) % tuple(fields))
            return
        from .values import to_json

        out = []
        for b in range(B):
            obj = {"point": {n: to_json(res[n][b]) for n in self.inputs}} if self.inputs \
                else {}
            obj["value"] = to_json(res.value[b])
            if self.grad:
                obj["gradients"] = {n: to_json(res.gradients[n][b]) for n in self.wrt}
            out.append(json.dumps(obj, allow_nan=False))
        self.stream.write(("\n".join(out) + "\n").encode("utf-8"))


class NpzWriter(Writer):
    """One array per column (``f``, ``d_x``, ...), the batch axis first, in an .npz.

    Each column's data is streamed to a temporary file as it comes and copied into the
    archive behind its header at the end, when the number of points is known: memory stays
    flat however many points there are.
    """

    #: Bytes held in memory before the columns go to temporary files.
    IN_MEMORY = 64 << 20

    def __init__(self, stream, output_name, wrt, grad, inputs=()):
        super().__init__(stream, output_name, wrt, grad, inputs)
        import tempfile

        self.parts = {}     # column -> chunks in memory (until IN_MEMORY bytes)
        self.files = {}     # column -> temporary file (after)
        self.shapes = {}
        self.count = 0
        self.held = 0
        self._tempfile = tempfile.TemporaryFile

    def _write(self, res):
        for c in self.all:
            a = np.ascontiguousarray(res[c])
            if c not in self.shapes:
                self.shapes[c] = (a.shape[1:], a.dtype)
                self.parts[c] = []
            f = self.files.get(c)
            if f is not None:
                f.write(a.tobytes())
            else:
                self.parts[c].append(a)
                self.held += a.nbytes
        self.count += res.value.shape[0]
        if self.held > self.IN_MEMORY:  # spill: memory stays flat from here on
            for c, parts in self.parts.items():
                f = self.files[c] = self._tempfile()
                for a in parts:
                    f.write(a.tobytes())
                parts.clear()
            self.held = 0

    def close(self):
        import shutil
        import zipfile

        from numpy.lib import format as npformat

        try:
            with zipfile.ZipFile(self.stream, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
                for c in self.all:
                    shape, dtype = self.shapes.get(c, ((), np.dtype(np.float64)))
                    header = {"descr": npformat.dtype_to_descr(np.dtype(dtype)),
                              "fortran_order": False, "shape": (self.count,) + tuple(shape)}
                    with z.open(f"{c}.npy", "w", force_zip64=True) as out:
                        npformat.write_array_header_2_0(out, header)
                        f = self.files.get(c)
                        if f is not None:
                            f.seek(0)
                            shutil.copyfileobj(f, out, 1 << 22)
                        for a in self.parts.get(c, ()):
                            out.write(memoryview(a).cast("B"))
        finally:
            for f in self.files.values():
                f.close()


WRITERS = {"csv": CsvWriter, "jsonl": JsonlWriter, "npz": NpzWriter}


def writer_for(fmt, stream, output_name, wrt, grad=True, inputs=()):
    """The :class:`Writer` of ``fmt`` (csv, jsonl, npz) on a binary ``stream``; ``inputs``
    names point columns written first (a sweep's, whose points are made, not read)."""
    return WRITERS[fmt](stream, output_name, wrt, grad, inputs)
