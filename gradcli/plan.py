"""Compiled forward plans: re-run the part of a program one input affects, fast.

A finite-difference check evaluates the program once or twice per input element: 80,000
times for a 200x200 matrix.  Re-running the engine each time would re-check bindings and
dispatch every node; a plan instead turns the nodes downstream of one input into a small
straight-line Python function of NumPy calls (generated once), with every value the input
does not affect baked in as a constant.  The same plan can run on a batch of perturbed
copies stacked on a leading axis, where every op on the path can (``op.batch``), and on
complex values for the complex-step method (``op.cforward``).
"""
from __future__ import annotations

import numpy as np

from . import engine

__all__ = ["Plan", "gate_forward"]


def gate_forward(graph, node, xs, *, complex_step=False):
    """A custom op's forward as a check runs it: a fresh instance, through the engine's
    protected call (what it prints goes to stderr; whatever it raises, ``BaseException`` and
    ``sys.exit()`` included, is an :class:`~gradcli.errors.EvalError` naming the op), on
    private copies of its inputs, its result a fresh array.  So a gate that writes into its
    arrays (``flags.writeable = True``) changes only its own copies, never the reference
    values or the perturbed input the check is stepping.
    """
    op = node.op
    try:
        inst = engine.call_gate(op.gate)
        out = engine.call_gate(inst.forward, *[engine.private(x) for x in xs])
    except engine.GateFailure as f:
        raise engine._gate_error(graph, node, "forward", f.error) from None
    if complex_step and any(np.iscomplexobj(x) for x in xs):
        if not np.iscomplexobj(out):
            from .errors import EvalError

            raise EvalError(f"op {op.name}: its forward drops the imaginary part of complex "
                            f"inputs, so the complex step cannot pass through it; use "
                            f"--method central")
        return np.array(out, dtype=np.complex128, copy=True)
    dtype = np.result_type(*[np.asarray(x).dtype for x in xs]) if xs else np.float64
    if dtype.kind != "f":
        dtype = np.float64
    return engine.real_array(graph, node, "forward", out, dtype)


def _gate_runner(graph, node, complex_step):
    def run(*xs):
        return gate_forward(graph, node, xs, complex_step=complex_step)
    return run


class Plan:
    """``plan(x)``: the output when input node ``source`` takes value ``x``.

    ``batched``: ``x`` has a leading batch axis and so does the result.  ``total``: return
    the sum of the output (per batch item when batched), the function a gradient of a
    non-scalar output differentiates.  ``trace``: return every computed node's value too.
    ``ok`` is False when an op on the path cannot run batched.
    """

    def __init__(self, graph, order, values, source, output, *, batched=False,
                 complex_step=False, total=True, trace=False):
        nodes = graph.nodes
        affected = {source}
        steps = []
        for i in order:
            node = nodes[i]
            if i != source and any(j in affected for j in node.inputs):
                affected.add(i)
                steps.append(node)
        self.source, self.output, self.batched, self.total = source, output, batched, total
        self.steps = [n.id for n in steps]
        self.ok = True
        ns = {"_np": np}
        names = {source: "x"}
        lines = ["def run(x):"]
        for node in steps:
            i = node.id
            args = []
            for j in node.inputs:
                if j in affected:
                    args.append(names[j])
                else:
                    ns[f"c{j}"] = values[j]
                    args.append(f"c{j}")
            fn = self._function(node, affected, values, batched, complex_step, graph=graph)
            if fn is None:
                self.ok = False
                return
            if not batched:  # batched functions have the params inside already
                for k, p in enumerate(node.params):
                    ns[f"p{i}_{k}"] = p
                    args.append(f"p{i}_{k}")
            ns[f"f{i}"] = fn
            lines.append(f"    t{i} = f{i}({', '.join(args)})")
            names[i] = f"t{i}"
        result = names.get(output)
        if result is None:  # the output does not depend on this input
            ns["c_out"] = values[output]
            result = "c_out"
            if batched:
                result = "_np.broadcast_to(c_out, x.shape[:1] + _np.shape(c_out))"
        nd = np.ndim(values[output])
        if total and nd:
            axes = tuple(range(1, nd + 1)) if batched else None
            result = f"_np.sum({result}, axis={axes})"  # a new array
        else:
            # a fresh copy: the result may be the input itself (the program "x") or a view
            # of it (x[1:]), which the caller changes next
            result = f"_np.array({result})"
        if trace:
            result = "(" + result + ", {" + ", ".join(f"{i}: t{i}" for i in self.steps) + "})"
        lines.append(f"    return {result}")
        exec("\n".join(lines), ns)  # generated from node ids only: nothing user-written
        self._run = ns["run"]

    @staticmethod
    def _function(node, affected, values, batched, complex_step, *, graph):
        op = node.op
        if op.gate is not None:
            return None if batched else _gate_runner(graph, node, complex_step)
        fwd = op.cforward if complex_step else op.forward
        if not batched:
            return fwd
        if op.batch is None:
            return None
        flags = tuple(j in affected for j in node.inputs)
        ndims = tuple(np.ndim(values[j]) for j in node.inputs)
        return op.batch(fwd, flags, ndims, node.params)

    def __call__(self, x):
        return self._run(x)
