"""Each op's backward on its own: blame for a failed check, and the ops-file self-check.

A node is checked on the inputs it really got, with a random upstream gradient u (never
ones: a backward that forgets to multiply by its upstream gradient must not pass): its VJP
against central differences of sum(u * forward(...)).  A correct node below a wrong one is
therefore not blamed for the wrong gradient it was handed.
"""
from __future__ import annotations

import math
import os

import numpy as np

from . import engine
from .errors import GradcliError
from .fdiff import (EPS64, ROUNDING, Report, default_eps, errors, ladder, max_of, passes,
                    settings, steps)

__all__ = ["audit", "blame", "local_check", "check_ops"]

_ROUNDING, _max, _settings, _steps = ROUNDING, max_of, settings, steps


def _depends(graph, order, targets):
    """Node ids that a target lies at or below."""
    dep = set(i for i in targets.values() if i is not None)
    for i in order:
        if any(j in dep for j in graph.nodes[i].inputs):
            dep.add(i)
    return dep


def blame(graph, ref, targets, rng, atol, rtol, eps=None, done=()):
    """Check each node's own backward with a random upstream; return the ones that are wrong.

    Each node is checked on the inputs it really got, in isolation, so a correct node below
    a wrong one is not blamed for the wrong gradient it was handed.  ``done``: records of
    nodes :func:`audit` already checked (their verdict is reused, not redrawn).
    """
    eps = default_eps("central") if eps is None else eps
    dep = _depends(graph, ref.order, targets)
    seen = {r["node"]: r for r in done}
    out = []
    for i in ref.order:
        node = graph.nodes[i]
        if not node.inputs or i not in dep:
            continue
        if i in seen:
            if seen[i]["status"] == "fail":
                out.append(seen[i])
            continue
        rec = _node_record(graph, ref, node, dep, rng, atol, rtol, eps)
        if rec["status"] == "fail":
            out.append(rec)
    return out


def _node_record(graph, ref, node, dep, rng, atol, rtol, eps):
    xs = [np.array(ref.values[j], dtype=np.float64, order="C") for j in node.inputs]
    which = [k for k, j in enumerate(node.inputs) if j in dep]
    res = local_check(graph, node, xs, which, rng, atol, rtol, eps)
    for r in res:
        r["label"] = graph.label(node.inputs[r["input"]])
    bad = [r for r in res if r["status"] == "fail"]
    return {"node": node.id, "label": graph.source(node.id, 40), "op": node.op.name,
            "max_rel_err": max((r["max_rel_err"] for r in bad), default=0.0),
            "max_abs_err": max((r["max_abs_err"] for r in bad), default=0.0),
            "inputs": res, "status": "fail" if bad else "ok", "problems": []}


def audit(graph, ref, targets, rng, atol, rtol, *, every=False, upstreams=None, eps=None):
    """No blind spot: every custom-op node (every node, with ``every``) checked on its own.

    The whole-expression check differentiates sum(output): a gate right below the sum gets
    an upstream gradient of ones, and a backward that forgets to multiply by it is then
    right.  Here each such node gets a random upstream gradient, and a custom op is also
    tried for state: its backward called twice must give one answer, must leave its upstream
    gradient as it was, and its forward must not depend on an earlier call.

    ``upstreams``: node id -> the upstream gradient the node got in the whole check (to say
    when it was ones).  Returns one record per node checked, failing or not.
    """
    eps = default_eps("central") if eps is None else eps
    dep = _depends(graph, ref.order, targets)
    picked = [i for i in ref.order if graph.nodes[i].inputs and i in dep
              and (every or graph.nodes[i].op.gate is not None)]
    out = []
    for i in picked:
        node = graph.nodes[i]
        try:
            rec = _node_record(graph, ref, node, dep, rng, atol, rtol, eps)
        except GradcliError as e:
            if isinstance(e.__context__, engine.GateFailure):
                raise  # the op raised (BaseException, sys.exit() ...): bad input, exit 2
            rec = {"node": i, "label": graph.source(i, 40), "op": node.op.name,
                   "max_rel_err": math.inf, "max_abs_err": math.inf, "inputs": [],
                   "status": "fail", "problems": [str(e)]}
        if node.op.gate is not None:
            xs = [np.array(ref.values[j], dtype=np.float64, order="C") for j in node.inputs]
            rec["problems"] += _state_problems(graph, node, xs, rng)
            if rec["problems"]:
                rec["status"] = "fail"
        g = (upstreams or {}).get(i)
        rec["ones"] = bool(g is not None and np.size(g) and np.all(np.asarray(g) == 1))
        out.append(rec)
    return out


def _same(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a.shape == b.shape and bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))
                                              | (np.abs(a - b) <= 1e-12 * np.maximum(
                                                  np.abs(a), np.abs(b)))))


def _state_problems(graph, node, xs, rng, other=None):
    """What a custom op does with state that a one-shot check cannot see."""
    op = node.op
    problems = []
    with np.errstate(all="ignore"):
        try:
            inst, y = engine.gate_forward(graph, node, xs, np.float64)
            u = rng.standard_normal(np.shape(y))
            kept = u.copy()
            writable = u.copy()
            first = _backward_raw(op, inst, writable)
            if not _same(writable, kept):
                problems.append("its backward writes into its upstream gradient (the array "
                                "it was given changed): it must return new arrays, not "
                                "change dz in place")
            second = _backward_raw(op, inst, kept.copy())
            # a backward that refuses a second call (as PyTorch's does) is not wrong; one
            # that answers differently is
            if first is not None and second is not None and not (
                    len(first) == len(second) and all(_same(p, q)
                                                      for p, q in zip(first, second))):
                problems.append("its backward gives another answer when called a second "
                                "time (it uses up state that forward saved)")
            # a forward on another input, then the first input again on fresh instances
            if other is None:  # another input near this one (inside the same domain)
                other = [np.asarray(x) * (1 + 1e-3) for x in xs]
            engine.gate_forward(graph, node, other, np.float64)
            _, y_again = engine.gate_forward(graph, node, xs, np.float64)
            inst2, _y = engine.gate_forward(graph, node, other, np.float64)
            try:
                y_reused = engine.call_gate(inst2.forward, *[engine.private(x) for x in xs])
            except engine.GateFailure as f:
                raise engine._gate_error(graph, node, "forward", f.error) from None
            y_reused = engine.real_array(graph, node, "forward", y_reused, np.float64)
            if not _same(y, y_again) or not _same(y, y_reused):
                problems.append("its forward gives another output for the same input after "
                                "an earlier call (it depends on state from a previous call)")
        except GradcliError:
            pass  # a failure of the op itself is reported by the check that runs it
    return problems


def _backward_raw(op, inst, u):
    """The op's backward results as float arrays (None if it fails: reported elsewhere)."""
    try:
        got = engine.call_gate(inst.backward, u)
    except engine.GateFailure:
        return None
    if op.arity == 1 and not isinstance(got, (list, tuple)):
        got = [got]
    if not isinstance(got, (list, tuple)):
        return None
    try:
        return [np.zeros(1) if d is None else np.asarray(d, dtype=np.float64) for d in got]
    except (TypeError, ValueError):
        return None


def _forward_fn(graph, node):
    op = node.op
    if op.gate is None:
        return lambda *xs: op.forward(*xs, *node.params)
    from .plan import gate_forward

    # protected (prints to stderr, anything raised an error naming the op) and on private
    # copies: a gate writing into the input being stepped cannot skew the differences
    return lambda *xs: gate_forward(graph, node, [np.asarray(x, dtype=np.float64)
                                                  for x in xs])


def local_check(graph, node, xs, which, rng, atol, rtol, eps):
    """One node's backward against central differences of sum(u * forward(...))."""
    fwd = _forward_fn(graph, node)
    with np.errstate(all="ignore"):
        if node.op.gate is not None:
            inst, y = engine.gate_forward(graph, node, xs, np.float64)
        else:
            inst, y = None, fwd(*xs)
        u = rng.standard_normal(np.shape(y))
        gate = engine.gate_backward(graph, node, inst, u, xs) if inst is not None else None
        results = []
        for k in which:
            a = np.asarray(engine.downstream(node, k, u, y, xs, gate)[0], dtype=np.float64)
            x = np.asarray(xs[k], dtype=np.float64)
            scale = float(np.sum(np.abs(u * y)))
            vs = None
            # one difference per element while that stays cheap: the elements times the
            # size of what the op reads (x in W @ x re-reads W for each of its elements)
            cost = x.size * sum(int(np.size(v)) for v in xs)
            per_element = x.size <= _ELEMENTS and cost <= _COST
            if per_element:
                num = _local_numeric(fwd, xs, k, u, eps)
                steps = _steps(x, eps)
            else:  # a big input: random projections, not one difference per element
                a, num, steps, vs = _local_projections(fwd, xs, k, u, a, eps, rng)
            noise = _ROUNDING["central"] * EPS64 * scale / steps
            err, rel = errors(a, num, atol)
            ok = passes(err, num, atol, rtol, noise)
            status = "ok" if ok.all() else "fail"
            if status == "fail" and node.op.kink_side is not None and per_element \
                    and _local_kink(node, xs, k, eps, ~ok):
                status = "kink"
            if status == "fail":
                status, num = _settle(fwd, xs, k, u, a, num, ok, steps, vs, atol, rtol, scale)
                err, rel = errors(a, num, atol)
            results.append({"input": k, "name": node.op.argnames[k] if k < len(
                node.op.argnames) else f"#{k}", "max_abs_err": _max(err, math.inf),
                "max_rel_err": _max(rel, math.inf), "status": status,
                "analytic": a, "numeric": num, "projected": not per_element})
    return results


_SETTLE_CAP = 256   # failing elements of one input settled by a step ladder, at most


def _settle(fwd, xs, k, u, a, num, ok, steps, vs, atol, rtol, scale):
    """Failing differences re-taken with a shrinking step (fdiff.ladder): a step too large
    for the op's curvature, or across its pole, is not a wrong backward.  Returns the status
    ("ok", "fail" or "kink" when a pole or domain edge lies in every step) and the numbers."""
    x = np.array(xs[k], dtype=np.float64, order="C")
    args = list(xs)
    num = np.array(num, dtype=np.float64, order="C")
    flat_num, flat_a = num.reshape(-1), np.ravel(a)
    bad = np.flatnonzero(~np.ravel(ok))
    if bad.size > _SETTLE_CAP:
        return "fail", num
    kinked = still = False
    for m in bad:
        m = int(m)
        if vs is None:
            flat = x.reshape(-1)
            o = float(flat[m])

            def f(t, m=m, o=o, flat=flat):
                flat[m] = t
                args[k] = x
                try:
                    return float(np.sum(u * fwd(*args)))
                finally:
                    flat[m] = o
            x_m, h_m = o, float(np.ravel(steps)[m])
        else:
            v = vs[m]

            def f(t, v=v):
                args[k] = x + t * v
                return float(np.sum(u * fwd(*args)))
            x_m, h_m = 0.0, float(np.ravel(steps)[m])
        r = ladder(f, x_m, h_m, flat_a[m], atol, rtol, scale, flat_num[m])
        if r["kind"] == "settled":
            flat_num[m] = float(np.ravel(r["numeric"])[0])
            still |= not r["ok"]
        elif r["kind"] == "edge" and math.isnan(flat_a[m]):
            still = True
        else:
            kinked = True
    return ("fail" if still else "kink" if kinked else "ok"), num


_ELEMENTS = 4096    # inputs larger than this are checked by projections
_COST = 50_000_000  # ... and so are inputs whose elements times the op's reads exceed this
_PROJECTIONS = 8


def _local_projections(fwd, xs, k, u, a, eps, rng):
    """(a.v, the directional difference along v, the step) for a few Gaussian v."""
    x = np.asarray(xs[k], dtype=np.float64)
    args = list(xs)
    analytic, numeric, steps, vs = [], [], [], []
    for _ in range(_PROJECTIONS):
        v = rng.standard_normal(x.shape)
        h = eps * max(1.0, float(np.max(np.abs(x)))) / float(np.max(np.abs(v)))
        args[k] = x + h * v
        fp = np.sum(u * fwd(*args))
        args[k] = x - h * v
        fm = np.sum(u * fwd(*args))
        analytic.append(float(np.sum(a * v)))
        numeric.append((fp - fm) / (2 * h))
        steps.append(h)
        vs.append(v)
    return np.array(analytic), np.array(numeric), np.array(steps), vs


def _local_numeric(fwd, xs, k, u, eps):
    x = np.array(xs[k], dtype=np.float64, order="C")
    flat = x.reshape(-1)
    h = _steps(x, eps).ravel()
    args = list(xs)
    args[k] = x
    out = np.empty(x.size)
    for m in range(x.size):
        o = flat[m]
        xp, xm = o + h[m], o - h[m]
        flat[m] = xp
        fp = np.sum(u * fwd(*args))
        flat[m] = xm
        fm = np.sum(u * fwd(*args))
        flat[m] = o
        out[m] = (fp - fm) / (xp - xm)
    return out.reshape(x.shape)


def _local_kink(node, xs, k, eps, bad):
    """Whether stepping input k's bad elements crosses one of the op's kinks."""
    side = node.op.kink_side
    s0 = side(*xs, *node.params)
    x = np.array(xs[k], dtype=np.float64, order="C")
    flat = x.reshape(-1)
    h = _steps(x, eps).ravel()
    args = list(xs)
    args[k] = x
    for m in np.flatnonzero(np.ravel(bad)):
        o = flat[m]
        for step in (h[m], -h[m]):
            flat[m] = o + step
            if not np.array_equal(side(*args, *node.params), s0):
                flat[m] = o
                return True
        flat[m] = o
    return False


_TRY_SHAPES = ((), (3,), (2, 3))
#: Shape pairs that broadcast: a backward that forgets to sum over a broadcast axis returns
#: a gradient of the output's shape, not its input's, and is caught only here.
_BROADCAST_PAIRS = (((3,), (2, 3)), ((2, 3), (3,)), ((1, 3), (3, 1)), ((), (2, 3)),
                    ((2, 3), ()))


def _shape_tries(op):
    if op.shapes:
        return [op.shapes]
    same = [[s] * op.arity for s in _TRY_SHAPES]
    if op.arity < 2:
        return same
    # broadcasting pairs on the first two inputs, the others at the first one's shape
    return same + [[p, q] + [p] * (op.arity - 2) for p, q in _BROADCAST_PAIRS]


def _sample(rng, shape, domain):
    if isinstance(domain, (tuple, list)):
        lo, hi = float(domain[0]), float(domain[1])
        pad = 0.1 * (hi - lo)  # away from the ends, where poles and kinks live
        return rng.uniform(lo + pad, hi - pad, shape)
    mag = rng.uniform(0.5, 1.5, shape)
    if domain == "positive":
        return mag
    return mag * rng.choice([-1.0, 1.0], shape)  # real and nonzero: away from zero


def _after_op(text):
    """The part of an engine message after "op NAME (file): "."""
    for word in ("backward", "forward"):
        if f": {word}" in text:
            return text[text.index(f": {word}") + 2:]
    return text


def _once(messages):
    """"(3,): boom; (2, 3): boom" -> "boom (at every shape tried: (3,), (2, 3))"."""
    texts = {}
    for shapes, text in messages:
        texts.setdefault(text, []).append(shapes)
    parts = []
    for text, where in texts.items():
        at = ", ".join(str(tuple(s) if len(s) > 1 else s[0]) for s in where)
        parts.append(f"{text} (at {'every shape tried: ' if len(texts) == 1 and len(where) > 1 else ''}{at})")
    return "; ".join(parts)


def check_ops(library, *, seed=0, eps=None, atol=None, rtol=None):
    """Self-check every custom op at random inputs with a random upstream gradient.

    An op with a ``shapes`` hint is checked at those shapes; one without is checked at every
    shape of scalars, vectors and matrices its forward accepts (at least one must), and at
    pairs of shapes that broadcast.  An op that is broken (its forward fails at every shape,
    its backward raises or returns gradients of the wrong shape where its forward worked) is
    reported once, and the others are still checked: the error, raised at the end, names
    every broken op and what the others gave.
    """
    from .graph import Node
    from .plugins import OpsFileError, _exc_text

    eps, atol, rtol = _settings("central", "float64", eps, atol, rtol)
    rng = np.random.default_rng(seed)
    report = Report(method="central", eps=eps, atol=atol, rtol=rtol, dtype="float64",
                    strict=False, jacobian=False, fast=False, seed=seed, ops=[])
    broken = []
    for op in library.custom.values():
        domain = op.sample_domain or ["real"] * op.arity
        node = Node(0, op, tuple(range(op.arity)), start=None)  # no program: no caret
        graph = _OneOpGraph(op)
        results, refused, faults, problems = [], [], [], []
        for shapes in _shape_tries(op):
            xs = [_sample(rng, s, d) for s, d in zip(shapes, domain)]
            try:
                with np.errstate(all="ignore"):
                    engine.gate_forward(graph, node, xs, np.float64)
            except (Exception, SystemExit) as e:
                text = str(e) if isinstance(e, GradcliError) else _exc_text(e, op.path)
                if op.shapes:
                    faults.append((shapes, text))
                else:
                    refused.append((shapes, text))  # a guess at shapes the op does not take
                continue
            try:
                res = local_check(graph, node, xs, range(op.arity), rng, atol, rtol, eps)
            except (GradcliError, Exception, SystemExit) as e:
                # the forward took these inputs: what goes wrong after is the op's fault
                text = str(e) if isinstance(e, GradcliError) else _exc_text(e, op.path)
                if len({tuple(s) for s in shapes}) > 1 and not op.shapes:
                    # inputs that broadcast: the classic bug is a gradient left at the
                    # output's shape (no sum over the broadcast axes), a wrong backward;
                    # said once per op
                    if not any("broadcasts" in p for p in problems):
                        problems.append(
                            f"with inputs of shapes {', '.join(map(str, shapes))}, which its "
                            f"forward broadcasts: {_after_op(text)} (its backward must sum "
                            f"over the broadcast axes)")
                else:
                    faults.append((shapes, text))
                continue
            for r, x in zip(res, xs):
                r["shape"] = list(np.shape(x))
            results += res
            if len({tuple(s) for s in shapes}) == 1 and not any(
                    p.startswith("its ") for p in problems):
                other = [_sample(rng, s, d) for s, d in zip(shapes, domain)]
                problems += _state_problems(graph, node, xs, rng, other)
        where = f"ops file {os.path.basename(op.path or '')}: op {op.name}"
        if faults:
            broken.append(f"{where}: {_once(faults)}")
        elif not results:
            broken.append(f"{where} fails at every shape tried: " + _once(refused))
        if faults or not results:
            continue
        status = "fail" if any(r["status"] == "fail" for r in results) or problems else "ok"
        report.ops.append({"name": op.name, "file": op.path, "inputs": results,
                           "skipped": [f"{s}: {t}" for s, t in refused],
                           "problems": problems, "status": status})
    if broken:
        rest = ""
        if report.ops:
            bad = [o["name"] for o in report.ops if o["status"] == "fail"]
            rest = (f" (the other {len(report.ops)} checked: "
                    + (f"{len(bad)} disagree: {', '.join(bad)}" if bad else "all agree") + ")")
        raise OpsFileError("; ".join(broken) + rest)
    return report


class _OneOpGraph:
    """Just enough of a graph for one op's messages when it is checked on its own."""

    def __init__(self, op):
        self.text = f"{op.name}({', '.join(op.argnames)})"

    def source(self, i, limit=None):
        return self.text
