"""Gradient checking: reverse mode against finite differences, element by element.

The numeric side perturbs one input element at a time and re-runs only the part of the
program that element affects (a compiled :class:`~gradcli.plan.Plan`), in float64 whatever
``--dtype`` the analytic side ran in.  Where every op on the path can run batched, many
perturbed copies go through one vectorised pass instead, if a timed trial says that is
quicker (it is not always: batching a matrix that feeds ``@`` copies it once per element).

An element passes when ``|analytic - numeric| <= atol + rtol * |numeric|`` plus the rounding
floor of the difference.  A mismatch at a point where an op is not differentiable (relu at 0,
ties of max) is a ``kink``, with the one-sided slopes shown; a real mismatch is a ``fail``,
and then every node's own backward is checked on its own (gradcli/localcheck.py) to name the
culprit.
"""
from __future__ import annotations

import math
import time
import warnings

import numpy as np

from . import engine
from .errors import BindingError
from .fdiff import (EPS64, METHODS, ROUNDING, InputCheck, Report, default_eps,
                    default_tolerances, errors, grade, grades, ladder, max_of, passes, settings,
                    status_grade, steps)
from .plan import Plan

__all__ = ["check", "METHODS", "default_eps", "default_tolerances", "grade", "grades",
           "errors", "passes", "Report", "InputCheck"]

_KINK_LIMIT = 100      # failing elements examined for kinks before giving up if none is
_KINK_CAP = 20_000     # ... and at most, per input
_REFINE_LIMIT = 100    # failing elements settled by a step ladder before giving up if none
_REFINE_CAP = 20_000   # passes on a smaller step; and at most, per input

_settings = settings
_steps = steps
_max = max_of
_ROUNDING = ROUNDING


# ---------------------------------------------------------------- the check

#: ``check --order 2`` (second derivatives, issue 16): a function ``(report, graph, bindings,
#: ref, targets, **options)`` that fills ``report.inputs`` with the Hessian's blocks (and
#: ``report.blame``, ``report.local``, ``report.second``); :func:`check` with ``order=2``
#: calls it instead of the first-order check.  :func:`second_order` by default.
SECOND_ORDER = None


def check(graph, bindings, *, wrt=None, output=None, method="central", eps=None, atol=None,
          rtol=None, jacobian=False, fast=False, projections=4, seed=0, dtype="float64",
          strict=False, sweep=False, local=False, taylor=False, grouped=True, order=1):
    """Check reverse mode against finite differences; returns a :class:`Report`.

    ``local``: check every node's own backward with a random upstream gradient (custom-op
    nodes always are).  ``taylor``: the eps-free Taylor test instead of differences
    (gradcli/taylor.py): True for its default number of random directions per input
    (``taylor.DIRECTIONS``), or that number (``--taylor --directions N``).  ``grouped``:
    perturb structurally independent elements together (gradcli/sparsity.py); False takes
    one element at a time.
    """
    adaptive = eps is None  # the default step settles failures with a ladder; --eps H is kept
    eps, atol, rtol = settings(method, dtype, eps, atol, rtol)
    if fast and sweep:
        raise BindingError("--eps-sweep goes with a full check, not --fast")
    if taylor and (fast or sweep or jacobian):
        given = [f for f, on in (("--fast", fast), ("--eps-sweep", sweep),
                                 ("--jacobian", jacobian)) if on]
        raise BindingError(f"--taylor is a check of its own; it does not go with "
                           f"{', '.join(given)}")
    directions = _directions(taylor)
    if order not in (1, 2):
        raise BindingError(f"--order {order}: choose 1 or 2")
    if order == 2 and (fast or sweep or jacobian or taylor):
        given = [f for f, on in (("--fast", fast), ("--eps-sweep", sweep),
                                 ("--jacobian", jacobian), ("--taylor", taylor)) if on]
        raise BindingError(f"--order 2 checks every second derivative by differences of the "
                           f"gradient; it does not go with {', '.join(given)}")
    rng = np.random.default_rng(seed)

    ref = engine.evaluate(graph, bindings, output=output, dtype="float64")
    targets = engine.resolve_targets(ref, wrt)
    _checkable(graph, ref, targets)
    with warnings.catch_warnings():  # perturbed runs may warn; the reference run already did
        warnings.simplefilter("ignore")
        report = Report(method=method, eps=eps, atol=atol, rtol=rtol, dtype=dtype,
                        strict=strict, jacobian=jacobian, fast=fast, seed=seed,
                        output_name=ref.output_name, graph=graph,
                        warnings=list(ref.warnings), grouped_evals=0, adaptive=adaptive)
        if order == 2:
            (SECOND_ORDER or second_order)(
                report, graph, bindings, ref, targets, output=output, method=method,
                eps=None if adaptive else eps, atol=atol, rtol=rtol, dtype=dtype, seed=seed,
                local=local, grouped=grouped)
            return report
        if taylor:
            from .taylor import taylor_test

            report.directions = directions
            report.taylor = taylor_test(graph, bindings, ref, targets, rng, output, dtype,
                                        directions=directions)
        else:
            _check(report, graph, bindings, ref, targets, rng, output, method, eps, atol,
                   rtol, jacobian, fast, projections, dtype, sweep, grouped)
        # No blind spot: a node fed ones (a gate right below a sum) cannot show a backward
        # that ignores its upstream gradient; each custom-op node (each node with --local)
        # is checked on its own with a random upstream, whatever the verdict so far.
        from .localcheck import audit, blame

        upstreams = None
        if local or any(graph.nodes[i].op.gate is not None for i in ref.order):
            upstreams = dict(enumerate(engine.differentiate(
                graph, bindings, wrt=[n for n, i in targets.items() if i is not None],
                output=output, dtype="float64").grads))
        report.local = audit(graph, ref, targets, rng, atol, rtol, every=local,
                             upstreams=upstreams)
        if report.failed:
            report.blame = blame(graph, ref, targets, rng, atol, rtol, done=report.local)
    return report


def _directions(taylor):
    """How many random directions per input ``taylor`` asks for (0: no Taylor test)."""
    if taylor is None or (isinstance(taylor, (bool, int, np.integer)) and not taylor):
        return 0
    if taylor is True:
        from .taylor import DIRECTIONS

        return DIRECTIONS
    if isinstance(taylor, (int, np.integer)) and not isinstance(taylor, bool) and \
            1 <= taylor <= 1000:
        return int(taylor)
    raise BindingError(f"taylor={taylor!r}: give True, or a number of random directions "
                       f"per input from 1 to 1000 (--directions N)")


def second_order(report, graph, bindings, ref, targets, *, output, method, eps, atol, rtol,
                 dtype, seed, local, grouped):
    """``check --order 2``: every second derivative, as PyTorch's ``gradgradcheck`` does.

    The gradient d f / d x of each input x is traced into a program of the same ops
    (:func:`gradcli.symbolic.gradient_graph`); that program's own check, with the whole
    Jacobian (``--jacobian``), compares its reverse pass (the second reverse pass: the
    Hessian's rows) with finite differences of the gradient.  So each Hessian block
    d/dy (d f / d x) gets the table, grades, kinks and blame of a first-order check, the
    blame naming the node of the gradient program whose backward is wrong.
    """
    from . import symbolic

    names = [n for n, i in targets.items() if i is not None]
    others = [n for n in targets if n not in graph.variables]
    if others:
        raise BindingError(f"--order 2 checks second derivatives with respect to input "
                           f"variables; {', '.join(others)} is a value the program computes")
    report.order = 2
    report.second = []
    custom = sorted({graph.nodes[i].op.name for i in ref.order
                     if graph.nodes[i].op.gate is not None})
    if custom:
        raise BindingError(f"--order 2: {', '.join(custom)} "
                           f"{'is a custom op' if len(custom) == 1 else 'are custom ops'}: a "
                           f"backward in Python cannot be traced into a gradient program to "
                           f"differentiate again (check without --order 2 checks its first "
                           f"derivatives)")
    try:
        grads = symbolic.gradient_graph(graph, names, bindings, output=output,
                                        dtype="float64")
    except symbolic.NotTraceable as e:
        raise BindingError(f"--order 2: {e}") from None
    out = ref.output_name
    for x in names:
        g = grads[x]
        sub_ref = engine.evaluate(g, bindings, dtype="float64")
        row = f"d{out}/d{x}"
        rec = {"of": x, "gradient": row, "program": g.text}
        sub_targets = engine.resolve_targets(sub_ref, names)
        if not any(i is not None for i in sub_targets.values()):
            # the gradient is a constant: every second derivative is exactly 0, and so is
            # every difference of it
            rec["constant"] = True
            for y in names:
                shape = np.shape(ref.values[targets[y]])
                zero = np.zeros(np.shape(sub_ref.values[sub_ref.output]) + shape)
                ic = InputCheck(y, shape, zero, zero, atol, rtol,
                                out_shape=np.shape(sub_ref.values[sub_ref.output]))
                _second_names(ic, x, row)
                report.inputs.append(ic)
            report.second.append(rec)
            continue
        sub = check(g, bindings, wrt=names, method=method, eps=eps, atol=atol, rtol=rtol,
                    jacobian=True, seed=seed, dtype=dtype, local=local, grouped=grouped)
        for ic in sub.inputs:
            if ic.out_shape is None:  # a scalar x: its gradient is a scalar, one row
                ic.out_shape = ()
            _second_names(ic, x, row)
            ic.graph = g
            report.inputs.append(ic)
        report.grouped_evals += sub.grouped_evals
        for b in sub.blame:
            report.blame.append(dict(b, label=f"{b['label']} (in {row})", of=x))
        for r in sub.local:
            report.local.append(dict(r, label=f"{r['label']} (in {row})", of=x))
        # what the gradient program's own evaluation found (a node giving nan); not that
        # it leaves out an input, which a gradient often does
        report.warnings += [w for w in sub.warnings if w.startswith("node ")
                            and w not in report.warnings]
        report.second.append(rec)


def _second_names(ic, x, row):
    """An input check of the gradient program as a block of the Hessian: rows by the
    element of d f / d x (``row``), columns by the element of the input."""
    ic.of = x
    ic.row_name = row


def _checkable(graph, ref, targets):
    """Refuse what finite differences cannot check: nothing to vary, or no finite output."""
    if not any(i is not None for i in targets.values()):
        from .parse import looks_like_a_binding

        text = graph.text.strip()
        hint = (f" ('{text}' was read as the program: did you forget EXPR before the "
                f"bindings?)" if looks_like_a_binding(text) else "")
        raise BindingError("nothing to check: the output depends on no input variable" + hint)
    if not any(np.size(ref.values[i]) for i in targets.values() if i is not None):
        raise BindingError("nothing to check: the inputs have no elements")
    out = np.asarray(ref.values[ref.output])
    if out.dtype.kind not in "fiu":
        raise BindingError(f"the output {ref.output_name} is {out.dtype} (a custom op "
                           f"returned the wrong dtype), so it cannot be checked")
    if not np.isfinite(out).all():
        bad = "nan" if np.isnan(out).any() else "inf"
        why = [w for w in ref.warnings if w.startswith("node ")]
        raise BindingError(f"the output {ref.output_name} is {bad} at this point"
                           + (f" ({why[0]})" if why else "")
                           + ", so finite differences cannot check it; choose values where "
                             "it is finite")


def _check(report, graph, bindings, ref, targets, rng, output, method, eps, atol, rtol,
           jacobian, fast, projections, dtype, sweep, grouped):
    out_shape = np.shape(ref.values[ref.output])
    if not out_shape:
        jacobian = report.jacobian = False  # a scalar's Jacobian is its gradient
    if fast:
        _check_fast(report, graph, bindings, ref, targets, rng, projections, output, dtype,
                    jacobian)
        return
    analytic = _analytic(graph, bindings, targets, output, dtype, jacobian, out_shape)
    for name, i in targets.items():
        x0 = _value_of(ref, i, name, bindings)
        a = np.asarray(analytic[name], dtype=np.float64)
        num = est = None
        if grouped and i is not None and x0.size > 1:
            from .sparsity import grouped as grouped_differences

            got = grouped_differences(ref, i, x0, method, eps, jacobian)
            if got is not None:
                num, est, evals = got
                report.grouped_evals += evals
        if num is None:
            num, est = _numeric(ref, i, x0, method, eps, jacobian)
        noise = _rounding(ref, x0, method, eps, jacobian)
        ic = InputCheck(name, x0.shape, a.reshape(num.shape), num, atol, rtol, est,
                        out_shape if jacobian else None, noise)
        if i is not None:
            _undefined(ic)
            if (ic.status == "fail").any():
                _find_kinks(ic, ref, i, x0, eps, atol, rtol, jacobian)
            if (ic.status == "fail").any() and method != "complex" and report.adaptive:
                _refine(ic, ref, i, x0, eps, atol, rtol, jacobian)
        report.inputs.append(ic)
    if out_shape and not jacobian:
        # The gradient of sum(f) starts the reverse pass from ones, which hides a
        # backward that ignores its upstream gradient: two projections with random
        # output weights u catch that, for the price of a few passes.
        _check_fast(report, graph, bindings, ref, targets, rng, 2, output, dtype, True)
    if sweep:
        report.sweep = _sweep(ref, targets, analytic, method, jacobian, rng, atol)


def _rounding(ref, x0, method, eps, jacobian, h=None):
    """The rounding floor of the numeric derivative, per element (rows by output element).

    A difference of two evaluations of f loses about eps_machine |f| to rounding, which the
    division by the step h magnifies: a large output makes a small gradient uncheckable
    below eps_machine |f| / h, and the pass rule allows for that.
    """
    out = np.abs(np.asarray(ref.values[ref.output], dtype=np.float64))
    h = steps(x0, eps) if h is None else h
    if jacobian:
        return ROUNDING[method] * EPS64 * out.reshape(out.shape + (1,) * h.ndim) / h
    return ROUNDING[method] * EPS64 * float(np.sum(out)) / h


def _value_of(ref, i, name, bindings):
    """The input's value as a fresh C-ordered float64 array, whatever its layout (a Fortran
    order .npy, a transposed view, a read-only buffer): element k of ``reshape(-1)`` is then
    element k in C order, and writes go into this array, never into a copy."""
    v = bindings.get(name, 0.0) if i is None else ref.values[i]
    return np.array(v, dtype=np.float64, order="C")


def _undefined(ic):
    """nan against nan (the function undefined on both sides of the point, as (-2)**y is off
    the integers): no derivative exists to check, so the element is not a failure."""
    st = ic.status.reshape(-1)
    both = np.flatnonzero((st != "kink") & np.isnan(ic.analytic.reshape(-1))
                          & np.isnan(ic.numeric.reshape(-1)))
    for pos in both:
        st[pos] = "kink"
        ic.kinks[int(pos)] = {"nodes": [], "left": math.nan, "right": math.nan,
                              "inside": True, "kind": "undefined"}


def _refine(ic, ref, source, x0, eps, atol, rtol, jacobian):
    """Settle each failing element with a step ladder (fdiff.ladder): a step too large for
    the curvature (sin at 1e5) or across a pole shrinks until the difference settles; a pole
    or a domain edge inside every step is reported as such, never as a wrong backward."""
    from .sparsity import linear_head

    plan = _plan(ref, source, False, False, not jacobian)
    head = linear_head(ref, source, ref.output)
    n_in = x0.size
    x = np.array(x0, dtype=np.float64, order="C")
    flat = x.reshape(-1)
    h0 = steps(x0, eps).reshape(-1)
    out = np.abs(np.asarray(ref.values[ref.output], dtype=np.float64))
    fscale = out.reshape(-1) if jacobian else float(np.sum(out))
    st = ic.status.reshape(-1)
    analytic = ic.analytic.reshape(-1)
    n_out = st.size // n_in
    cols = np.unique(np.flatnonzero(st == "fail") % n_in)
    tried = settled_ok = 0
    for k in cols:
        if tried >= _REFINE_CAP or (tried >= _REFINE_LIMIT and not settled_ok):
            break
        tried += 1
        k = int(k)
        pos = k + n_in * np.arange(n_out)      # this element's entries (a column by rows)
        o = flat[k]

        def f(t, k=k, o=o):
            if head is not None:
                y = head.run([k], np.array([t - o]))
                return np.ravel(y) if jacobian else float(np.sum(y))
            flat[k] = t
            try:
                return np.ravel(plan(x)) if jacobian else plan(x)
            finally:
                flat[k] = o

        a = analytic[pos] if jacobian else analytic[k]
        d0 = ic.numeric.reshape(-1)[pos] if jacobian else ic.numeric.reshape(-1)[k]
        r = ladder(f, float(o), float(h0[k]), a, atol, rtol, fscale, d0)
        rows = pos if jacobian else [k]
        if r["kind"] == "settled":
            d = np.ravel(r["numeric"])
            for m, p in enumerate(rows):
                if st[p] == "kink":
                    continue
                ic.update(int(p), d[m] if jacobian else float(d[0]))
                tol = atol + rtol * abs(ic.numeric.reshape(-1)[p])
                noise = ROUNDING["central"] * EPS64 * (fscale[m // 1] if jacobian else
                                                        fscale) / r["step"]
                good = ic.abs_err.reshape(-1)[p] <= tol + noise
                ic.allowed.reshape(-1)[p] = tol + noise
                st[p] = "ok" if good else "fail"
                ic.refined[int(p)] = r["step"]
                settled_ok += bool(good)
            continue
        node = _culprit(ref, source, x0, k, r)
        for m, p in enumerate(rows):
            if st[p] != "fail":
                continue
            if r["kind"] == "edge":
                left = float(np.ravel(r["left"])[m])
                right = float(np.ravel(r["right"])[m])
                inside = _edge_inside(float(analytic[p]), left, right)
                rec = {"nodes": node, "left": left, "right": right, "inside": inside,
                       "kind": "edge", "step": r["step"]}
            else:
                rec = {"nodes": node, "left": math.nan, "right": math.nan, "inside": True,
                       "kind": "pole", "step": r["step"], "first_step": float(h0[k])}
                inside = True
            ic.kinks[int(p)] = rec
            if inside:
                st[p] = "kink"
                settled_ok += 1


def _edge_inside(a, left, right):
    """At a domain edge only one side has a slope: the analytic value must not be nan, and a
    finite one must have that slope's sign (or be 0 against a vanishing slope)."""
    if math.isnan(a):
        return False
    side = right if math.isnan(left) else left
    if math.isnan(side):
        return True  # neither side defined: nothing to hold the analytic value to
    if math.isinf(a) or a == 0 or side == 0:
        return True
    return (a > 0) == (side > 0)


def _culprit(ref, source, x0, k, r):
    """The first node on the path that leaves its domain (an edge) or turns back on itself
    across the step (a pole: its value on both sides lies beyond the middle one's)."""
    try:
        traced = Plan(ref.graph, ref.order, ref.values, source, ref.output, total=False,
                      trace=True)
        h = r["step"]
        xs = []
        for t in (x0.reshape(-1)[k] + h, x0.reshape(-1)[k] - h):
            x = np.array(x0, dtype=np.float64, order="C")
            x.reshape(-1)[k] = t
            xs.append(x)
        with np.errstate(all="ignore"):
            _, tp = traced(xs[0])
            _, tm = traced(xs[1])
        for m in traced.steps:
            v0 = np.asarray(ref.values[m], dtype=np.float64)
            vp, vm = np.asarray(tp[m], dtype=np.float64), np.asarray(tm[m], dtype=np.float64)
            if r["kind"] == "edge":
                if np.isfinite(v0).all() and not (np.isfinite(vp).all() and
                                                  np.isfinite(vm).all()):
                    return [m]
            elif np.shape(vp) == np.shape(v0) and np.any((vp - v0) * (v0 - vm) < 0):
                node = ref.graph.nodes[m]
                if all(np.all((np.asarray(tp.get(j, ref.values[j])) -
                               np.asarray(ref.values[j])) * (np.asarray(ref.values[j]) -
                                                             np.asarray(tm.get(j, ref.values[j]))
                                                             ) >= 0)
                       for j in node.inputs if j != source):
                    return [m]
    except Exception:  # naming the node is a courtesy; the verdict stands without it
        return []
    return []


def _analytic(graph, bindings, targets, output, dtype, jacobian, out_shape):
    wrt = list(targets)
    if not jacobian:
        return engine.differentiate(graph, bindings, wrt=wrt, output=output,
                                    dtype=dtype).gradients
    n_out = int(np.prod(out_shape))
    reverse = _reverser(graph, bindings, output, dtype)
    rows = {}
    for k in range(n_out):  # one reverse pass per output element: rows of the Jacobian
        seed = np.zeros(n_out)
        seed[k] = 1
        g = reverse(wrt, seed.reshape(out_shape))
        for name in wrt:
            rows.setdefault(name, np.zeros((n_out,) + g[name].shape))[k] = g[name]
    unused = [name for name in wrt if targets[name] is None]
    if not n_out or unused:
        # an input the output does not depend on (a gradient program of f linear in it,
        # with --order 2) has a zero row of its own shape per output element
        ev = engine.evaluate(graph, bindings, output=output, dtype=dtype)
        for name in (wrt if not n_out else unused):
            rows[name] = np.zeros((n_out,) + engine._shape_of(ev, name, targets[name],
                                                              bindings))
    return rows


def _reverser(graph, bindings, output, dtype):
    """``reverse(wrt, upstream)``: more reverse passes over one forward pass; a program with
    custom ops gets a fresh forward each time (a gate's backward may use up its instance)."""
    ev = engine.evaluate(graph, bindings, output=output, dtype=dtype)
    if any(graph.nodes[i].op.gate is not None for i in ev.order):
        return lambda wrt, upstream: engine.differentiate(
            graph, bindings, wrt=wrt, upstream=upstream, output=output,
            dtype=dtype).gradients
    return lambda wrt, upstream: engine.reverse(ev, wrt, upstream)


# ---------------------------------------------------------------- finite differences

def _numeric(ref, source, x0, method, eps, jacobian):
    """d output / d x0 by ``method`` (rows by output element when ``jacobian``)."""
    out_value = ref.values[ref.output] if source is not None else None
    n = x0.size
    if source is None or n == 0:
        return np.zeros(_num_shape(ref, x0, jacobian)), None
    total = not jacobian
    h = _steps(x0, eps).ravel()
    est = None
    head = None
    if n > 1:
        from .sparsity import linear_head

        head = linear_head(ref, source, ref.output, method == "complex")
        if head is not None and method != "richardson":
            # x in W @ x: each element's difference costs a column of W
            d = _diff_head(head, x0, h, method, total, out_value)
            d = d.T if jacobian else d
            return d.reshape(_num_shape(ref, x0, jacobian)), None
    if method == "complex":
        d = _run(ref, source, x0, h, "complex", total)
    elif method == "forward":
        base = np.sum(out_value) if total else np.asarray(out_value)
        d = _run(ref, source, x0, h, "forward", total, base=base)
    elif method == "central":
        d = _run(ref, source, x0, h, "central", total)
    else:  # richardson: central differences at h, h/2, h/4 combined to cancel h^2 and h^4
        d1, d2, d4 = (_diff_head(head, x0, h / k, "central", total, out_value)
                      if head is not None else _run(ref, source, x0, h / k, "central", total)
                      for k in (1, 2, 4))
        r1, r2 = (4 * d2 - d1) / 3, (4 * d4 - d2) / 3   # O(h^4)
        d = (16 * r2 - r1) / 15                          # O(h^6)
        # the error left: what the last extrapolation changed (truncation), plus rounding,
        # about eps |f| / h per difference, amplified by the extrapolation's weights
        scale = np.abs(np.sum(out_value)) if total else np.abs(np.ravel(out_value))
        rounding = 8 * EPS64 * np.maximum(scale, EPS64) / (h if total else h[:, None])
        est = np.abs(d - r2) + rounding
    d = d.T if jacobian else d  # (n, n_out) -> rows by output element
    shape = _num_shape(ref, x0, jacobian)
    return d.reshape(shape), None if est is None else (est.T if jacobian else est).reshape(shape)


def _diff_head(head, x0, h, method, total, out_value):
    """Differences of every element through a linear head (gradcli/sparsity.py)."""
    n = x0.size
    flat0 = x0.reshape(-1)
    base = np.sum(out_value) if total else np.ravel(out_value)
    rows = []
    with np.errstate(all="ignore"):
        for k in range(n):
            if method == "complex":  # Im f(x + i h e_k) / h through the product's column
                fi = head.run([k], np.array([1j * h[k]]))
                rows.append((np.sum(np.imag(fi)) if total else np.ravel(np.imag(fi))) / h[k])
                continue
            o = flat0[k]
            xp = o + h[k]
            fp = head.run([k], np.array([xp - o]))
            fp = np.sum(fp) if total else np.ravel(fp)
            if method == "forward":
                rows.append((fp - base) / (xp - o))
                continue
            xm = o - h[k]
            fm = head.run([k], np.array([xm - o]))
            fm = np.sum(fm) if total else np.ravel(fm)
            rows.append((fp - fm) / (xp - xm))
    out = np.array(rows, dtype=np.float64)
    return out if total else out.reshape(n, -1)


def _num_shape(ref, x0, jacobian):
    return (np.shape(ref.values[ref.output]) + x0.shape) if jacobian else x0.shape


def _run(ref, source, x0, h, how, total, base=None):
    """Differences for every element of x0: batched where a trial says that is quicker."""
    complex_step = how == "complex"
    seq = _plan(ref, source, False, complex_step, total)
    bat = _plan(ref, source, True, complex_step, total)
    n = x0.size
    out = None
    k = 0
    use_batch = bat.ok and n > 1
    if use_batch:  # time a small batch against a few single elements; keep the faster way
        size = _batch_size(ref, seq, x0.size, n)
        trial = min(size, 16)
        t0 = time.perf_counter()
        first = _diff_batched(bat, x0, h, range(0, trial), how, base)
        t_bat = (time.perf_counter() - t0) / trial
        out = np.empty((n,) + first.shape[1:])
        out[:trial] = first
        k = trial
        m = min(8, n - k)
        if m:
            t0 = time.perf_counter()
            out[k:k + m] = _diff_single(seq, x0, h, range(k, k + m), how, base)
            t_seq = (time.perf_counter() - t0) / m
            k += m
            use_batch = t_bat < t_seq
        while use_batch and k < n:
            out[k:k + size] = _diff_batched(bat, x0, h, range(k, min(n, k + size)), how, base)
            k += size
    if k < n:
        rest = _diff_single(seq, x0, h, range(k, n), how, base)
        if out is None:
            out = np.empty((n,) + rest.shape[1:])
        out[k:] = rest
    return out


def _plan(ref, source, batched, complex_step, total):
    """The plan for one input, made once per check (kept on the reference evaluation)."""
    plans = ref.__dict__.setdefault("plans", {})
    key = (source, batched, complex_step, total)
    if key not in plans:
        try:
            plans[key] = Plan(ref.graph, ref.order, ref.values, source, ref.output,
                              batched=batched, complex_step=complex_step, total=total)
        except Exception:
            if not batched:
                raise
            plans[key] = _NO_PLAN  # an op that cannot batch these shapes: one at a time
    return plans[key]


class _NoPlan:
    ok = False


_NO_PLAN = _NoPlan()


def _batch_size(ref, plan, source_size, n, budget=4_000_000):
    """Copies per batch: all of them together hold at most ``budget`` numbers."""
    per_copy = source_size + sum(np.size(ref.values[i]) for i in plan.steps)
    return int(max(1, min(n, 256, budget // per_copy)))


def _diff_single(plan, x0, h, ks, how, base):
    """Differences for elements ``ks``, one perturbed evaluation (or two) at a time."""
    x = np.array(x0, dtype=np.complex128 if how == "complex" else np.float64,
                 order="C")
    flat = x.reshape(-1)
    rows = []
    add = rows.append
    with np.errstate(all="ignore"):
        if how == "central":  # the common case, kept lean: the loop is the check's cost
            for k in ks:
                o = flat[k]
                xp = o + h[k]
                xm = o - h[k]
                flat[k] = xp
                fp = plan(x)
                flat[k] = xm
                add((fp - plan(x)) / (xp - xm))
                flat[k] = o
        else:
            for k in ks:
                o = flat[k]
                hk = h[k]
                if how == "complex":
                    flat[k] = o + 1j * hk
                    add(np.imag(plan(x)) / hk)
                else:
                    xp = o + hk
                    flat[k] = xp
                    add((plan(x) - base) / (xp - o))
                flat[k] = o
    out = np.array(rows)
    return out if plan.total else out.reshape(len(rows), -1)


def _diff_batched(plan, x0, h, ks, how, base):
    """Differences for elements ``ks`` in one pass over a batch of perturbed copies."""
    ks = np.asarray(ks)
    b = len(ks)
    rows = np.arange(b)
    flat0 = x0.reshape(-1)
    hk = h[ks]
    shape = (b,) + x0.shape
    with np.errstate(all="ignore"):
        if how == "complex":
            X = np.repeat(flat0[None].astype(np.complex128), b, axis=0)
            X[rows, ks] += 1j * hk
            d = np.imag(plan(X.reshape(shape))).reshape(b, -1) / hk[:, None]
        else:
            X = np.repeat(flat0[None], b, axis=0)
            xp = flat0[ks] + hk
            X[rows, ks] = xp
            fp = plan(X.reshape(shape)).reshape(b, -1)
            if how == "forward":
                d = (fp - base) / (xp - flat0[ks])[:, None]
            else:
                xm = flat0[ks] - hk
                X[rows, ks] = xm
                d = (fp - plan(X.reshape(shape)).reshape(b, -1)) / (xp - xm)[:, None]
    return d[:, 0] if plan.total else d


def _input_values(graph, node, source, x, trace, values):
    """The values of ``node``'s inputs in a traced run where ``source`` took value ``x``."""
    return [x if j == source else trace[j] if j in trace else values[j] for j in node.inputs]


def _kink_tracer(ref, source, total):
    """A traced plan for ``source`` and the nodes on its path that have kinks (or None)."""
    graph = ref.graph
    traced = Plan(graph, ref.order, ref.values, source, ref.output, total=total, trace=True)
    kinky = [m for m in traced.steps if graph.nodes[m].op.kink_side is not None]
    return (traced, kinky) if kinky else None


def _crossed(ref, tracer, source, x_plus, x_minus):
    """Run at two points; the kinky nodes whose side differs there or from the base point."""
    traced, kinky = tracer
    graph = ref.graph
    with np.errstate(all="ignore"):
        fp, tp = traced(x_plus)
        fm, tm = traced(x_minus)
        crossed = []
        for m in kinky:
            node = graph.nodes[m]
            side = node.op.kink_side
            s0 = side(*[ref.values[j] for j in node.inputs], *node.params)
            sp = side(*_input_values(graph, node, source, x_plus, tp, ref.values), *node.params)
            sm = side(*_input_values(graph, node, source, x_minus, tm, ref.values),
                      *node.params)
            if not (np.array_equal(sp, s0) and np.array_equal(sm, s0)):
                crossed.append(m)
    return crossed, np.ravel(fp), np.ravel(fm)


def _find_kinks(ic, ref, source, x0, eps, atol, rtol, jacobian):
    """Turn failures that straddle a point where an op is not differentiable into kinks."""
    tracer = _kink_tracer(ref, source, not jacobian)
    if tracer is None:
        return
    n_in = x0.size
    h = _steps(x0, eps).ravel()
    flat0 = x0.reshape(-1)
    base = ref.values[ref.output]
    base = np.sum(base) if not jacobian else np.ravel(base)
    status = ic.status.reshape(-1)
    analytic = ic.analytic.reshape(-1)
    runs = {}
    found = 0
    for pos in np.flatnonzero(status == "fail"):
        k, row = int(pos % n_in), int(pos // n_in)
        if k not in runs:
            # a wrong gradient fails everywhere and has no kinks: stop looking after a
            # while when none turned up; else look at every failure (up to a large cap)
            if len(runs) >= _KINK_LIMIT and (not found or len(runs) >= _KINK_CAP):
                break
            o = flat0[k]
            xp, xm = o + h[k], o - h[k]
            plus = np.array(x0, dtype=np.float64, order="C")
            minus = plus.copy()
            plus.reshape(-1)[k], minus.reshape(-1)[k] = xp, xm
            runs[k] = _crossed(ref, tracer, source, plus, minus) + (xp - o, o - xm)
        crossed, fp, fm, hp, hm = runs[k]
        if not crossed:
            continue
        f0 = base if not jacobian else base[row]
        right = float((fp[row if jacobian else 0] - f0) / hp)
        left = float((f0 - fm[row if jacobian else 0]) / hm)
        inside = _inside(float(analytic[pos]), left, right, atol, rtol)
        ic.kinks[int(pos)] = {"nodes": crossed, "left": left, "right": right, "inside": inside}
        found += 1
        if inside:
            status[pos] = "kink"


def _inside(a, left, right, atol, rtol):
    """Whether ``a`` lies in the subgradient bracket of the two one-sided slopes.

    At the edge of a domain (sqrt at 0) one side has no slope (nan): the bracket is then
    open on that side, and any value the finite side allows, inf included, is inside.
    """
    if not (math.isfinite(left) and math.isfinite(right)):
        # one side outside the domain: open there; no slope on either side: nothing to judge
        return any(math.isfinite(v) for v in (left, right)) and not math.isnan(a)
    lo, hi = min(left, right), max(left, right)
    tol = atol + rtol * max(abs(lo), abs(hi))
    return lo - tol <= a <= hi + tol


# ---------------------------------------------------------------- --eps-sweep

SWEEP_EPS = tuple(10.0 ** -k for k in range(1, 13))
_SWEEP_SAMPLE = 64


def _sweep(ref, targets, analytic, method, jacobian, rng, atol):
    """Max error against the analytic gradient for each step size: truncation vs rounding."""
    picks = []
    for name, i in targets.items():
        if i is None:
            continue
        x0 = np.asarray(ref.values[i], dtype=np.float64)
        n = x0.size
        if not n:
            continue
        ks = np.sort(rng.choice(n, size=min(n, _SWEEP_SAMPLE), replace=False))
        a = np.asarray(analytic[name], dtype=np.float64).reshape(-1 if not jacobian else
                                                                 (-1, n))
        picks.append((i, x0, ks, a[..., ks]))
    rows = []
    how = "central" if method in ("central", "richardson") else method
    for eps in SWEEP_EPS:
        abs_err = rel_err = 0.0
        for i, x0, ks, a in picks:
            plan = _plan(ref, i, False, how == "complex", not jacobian)
            h = _steps(x0, eps).ravel()
            base = ref.values[ref.output]
            base = np.sum(base) if not jacobian else np.asarray(base)
            d = _diff_single(plan, x0, h, ks, how, base)
            ae, re_ = errors(a, d.T if jacobian else d, atol)
            abs_err = max(abs_err, _max(ae, nan=math.inf))
            rel_err = max(rel_err, _max(re_, nan=math.inf))
        rows.append({"eps": eps, "max_abs_err": abs_err, "max_rel_err": rel_err})
    return rows


# ---------------------------------------------------------------- --fast

def _check_fast(report, graph, bindings, ref, targets, rng, count, output, dtype, jac):
    """u.J.v for ``count`` random directions v per input (and random output weights u when
    ``jac``), each against a directional difference: a handful of passes in all.

    v is Gaussian, not normalised, so a wrong gradient with error d passes one projection
    at tolerance t only if |d.v| <= t, which happens with probability at most 0.8 t / |d|.
    """
    out_shape = np.shape(ref.values[ref.output])
    wrt = [name for name, i in targets.items() if i is not None]
    reverse = _reverser(graph, bindings, output, dtype)
    plain = None if jac else reverse(wrt, None)
    for name in wrt:
        i = targets[name]
        x0 = np.asarray(ref.values[i], dtype=np.float64)
        if not x0.size:
            continue
        plan = _plan(ref, i, False, report.method == "complex", not jac)
        for p in range(count):
            v = rng.standard_normal(x0.shape)
            # a step of eps (relative, as elsewhere) on the largest perturbed element
            h = report.eps * max(1.0, float(np.max(np.abs(x0)))) / float(np.max(np.abs(v)))
            u = rng.standard_normal(out_shape) if jac else None
            g = reverse([name], u)[name] if jac else plain[name]
            a = float(np.sum(np.asarray(g, dtype=np.float64) * v))
            n = _directional(plan, x0, v, h, report.method, u, ref)
            abs_err, rel_err = (float(e) for e in errors(np.float64(a), np.float64(n),
                                                          report.atol))
            ok = bool(passes(abs_err, n, report.atol, report.rtol))
            rec = {"wrt": name, "projection": p, "analytic": a, "numeric": n,
                   "abs_err": abs_err, "rel_err": rel_err, "status": "ok" if ok else "fail",
                   "weighted": jac}
            if not ok:
                _projection_kink(rec, ref, i, x0, v, h, u, report)
            if rec["status"] == "fail" and report.method != "complex" and report.adaptive:
                _settle_projection(rec, plan, x0, v, h, u, ref, report)
            report.projections.append(rec)


def _settle_projection(rec, plan, x0, v, h, u, ref, report):
    """A failing projection re-taken with a shrinking step along v (fdiff.ladder)."""
    def f(t):
        y = plan(x0 + t * v)
        return float(np.sum(y * u)) if u is not None else float(y)
    out = np.abs(np.asarray(ref.values[ref.output], dtype=np.float64))
    scale = float(np.sum(out * np.abs(u))) if u is not None else float(np.sum(out))
    r = ladder(f, 0.0, h, rec["analytic"], report.atol, report.rtol, scale, rec["numeric"])
    if r["kind"] == "settled":
        n = float(np.ravel(r["numeric"])[0])
        rec["numeric"] = n
        rec["abs_err"], rec["rel_err"] = (float(e) for e in errors(
            np.float64(rec["analytic"]), np.float64(n), report.atol))
        rec["status"] = "ok" if r["ok"] else "fail"
        rec["step"] = r["step"]
    elif not math.isnan(rec["analytic"]):
        rec["status"] = "kink"
        rec["kink"] = {"nodes": [], "left": math.nan, "right": math.nan, "inside": True,
                       "kind": r["kind"], "step": r["step"]}


def _projection_kink(rec, ref, source, x0, v, h, u, report):
    """A failing projection whose step crosses a kink is a kink, as an element's is."""
    tracer = _kink_tracer(ref, source, u is None)
    if tracer is None:
        return
    crossed, fp, fm = _crossed(ref, tracer, source, x0 + h * v, x0 - h * v)
    if not crossed:
        return
    out = np.asarray(ref.values[ref.output], dtype=np.float64)
    weigh = (lambda y: float(np.sum(y * np.ravel(u)))) if u is not None else \
        (lambda y: float(np.sum(y)))
    f0 = weigh(np.ravel(out)) if u is not None else float(np.sum(out))
    left, right = (f0 - weigh(fm)) / h, (weigh(fp) - f0) / h
    inside = _inside(rec["analytic"], left, right, report.atol, report.rtol)
    rec["kink"] = {"nodes": crossed, "left": left, "right": right, "inside": inside}
    if inside:
        rec["status"] = "kink"


def _directional(plan, x0, v, h, method, u, ref):
    def f(x):
        y = plan(x)
        return np.sum(y * u) if u is not None else y
    with np.errstate(all="ignore"):
        if method == "complex":
            return float(np.imag(f(x0 + 1j * h * v)) / h)
        if method == "forward":
            base = ref.values[ref.output]
            base = np.sum(base * u) if u is not None else np.sum(base)
            return float((f(x0 + h * v) - base) / h)
        d1 = (f(x0 + h * v) - f(x0 - h * v)) / (2 * h)
        if method == "central":
            return float(d1)
        d2 = (f(x0 + h / 2 * v) - f(x0 - h / 2 * v)) / h
        d4 = (f(x0 + h / 4 * v) - f(x0 - h / 4 * v)) / (h / 2)
        return float((16 * (4 * d4 - d2) / 3 - (4 * d2 - d1) / 3) / 15)


# ---------------------------------------------------------------- check --batch FILE

#: Points of a batch that a failing screen sends to the full check (kinks, step ladder,
#: blame); the others are reported as the screen found them.
BATCH_EXAMINED = 50


def check_points(graph, bindings, chunks, *, wrt=None, output=None, eps=None, atol=None,
                 rtol=None, dtype="float64", seed=0, strict=False, local=False,
                 source="the batch", warnings=None):
    """``check --batch``: the check at every point of a batch; yields one record per point.

    Each chunk is screened at once, vectorised over its points: the gradients by the batch
    kernel's reverse pass (:class:`gradcli.batching.Kernel`), the central differences by its
    forward pass on the chunk with one element of one input stepped at every point (two
    passes per input element, never one per point), under the pass rule of a single check.
    A point the screen fails, up to :data:`BATCH_EXAMINED` of them, is checked again in full
    (:func:`check`: kinks, poles, the step ladder, blame), whose verdict stands.  A program
    with custom ops is checked in full at every point: the per-node check with a random
    upstream (no blind spot) needs each point on its own.  ``warnings``: a list that gets
    what the batch kernel warns about (unused columns or bindings).
    """
    from .batching import Kernel

    eps_given = eps
    eps, atol, rtol = settings("central", dtype, eps, atol, rtol)
    custom = any(graph.nodes[i].op.gate is not None for i in graph.ancestors(
        engine.resolve_output(graph, output)[0]))
    grad_k = value_k = None
    examined = 0
    point = 0
    for chunk in chunks:
        names = [n for n in chunk if n in graph.variables]
        B = len(np.asarray(chunk[names[0]])) if names else 0
        if custom or local:
            for b in range(B):
                yield _full_point(graph, bindings, chunk, names, b, point + b, wrt, output,
                                  eps_given, atol, rtol, dtype, seed, strict, local)
            point += B
            continue
        if grad_k is None:
            grad_k = Kernel(graph, names, bindings, wrt=wrt, output=output, dtype=dtype,
                            source=source)
            if warnings is not None:
                warnings.extend(w for w in grad_k.warnings if w not in warnings)
            wrt_names = [n for n, i in grad_k.targets.items() if i is not None]
            fixed = {n: v for n, v in bindings.items() if n not in wrt_names}
            value_k = Kernel(graph, names + [n for n in wrt_names if n not in names], fixed,
                             grad=False, output=output, dtype="float64", source=source)
        res = grad_k(chunk)
        cols = {n: np.asarray(chunk[n], dtype=np.float64) for n in names}
        for n in wrt_names:
            if n not in cols:
                v = np.asarray(bindings[n], dtype=np.float64)
                cols[n] = np.broadcast_to(v, (B,) + v.shape)
        out = np.abs(np.asarray(value_k(cols).value, dtype=np.float64)).reshape(B, -1)
        fscale = out.sum(axis=1)
        worst_abs, worst_rel = np.zeros(B), np.zeros(B)
        ok = np.ones(B, dtype=bool)
        with np.errstate(all="ignore"):
            for n in wrt_names:
                x = np.array(cols[n], dtype=np.float64).reshape(B, -1)
                a = np.asarray(res.gradients[n], dtype=np.float64).reshape(B, -1)
                num = np.empty_like(x)
                h = steps(x, eps)
                for k in range(x.shape[1]):  # one element of the input, at every point
                    xp, xm = x.copy(), x.copy()
                    xp[:, k] += h[:, k]
                    xm[:, k] -= h[:, k]
                    shape = (B,) + np.shape(cols[n])[1:]
                    fp = _point_sums(value_k, cols, n, xp.reshape(shape), B)
                    fm = _point_sums(value_k, cols, n, xm.reshape(shape), B)
                    num[:, k] = (fp - fm) / (xp[:, k] - xm[:, k])
                err, rel = errors(a, num, atol)
                noise = ROUNDING["central"] * EPS64 * fscale[:, None] / h
                ok &= passes(err, num, atol, rtol, noise).all(axis=1)
                worst_abs = np.maximum(worst_abs, np.nan_to_num(err, nan=np.inf).max(
                    axis=1, initial=0))
                worst_rel = np.maximum(worst_rel, np.nan_to_num(rel, nan=np.inf).max(
                    axis=1, initial=0))
        for b in range(B):
            if not ok[b] and examined < BATCH_EXAMINED:
                examined += 1
                yield _full_point(graph, bindings, chunk, names, b, point + b, wrt, output,
                                  eps_given, atol, rtol, dtype, seed, strict, local)
                continue
            status = "ok" if ok[b] else "fail"
            yield {"point": point + b, "ok": bool(ok[b]), "status": status,
                   "max_abs_err": float(worst_abs[b]), "max_rel_err": float(worst_rel[b]),
                   "grade": status_grade(status, float(worst_rel[b])), "kinks": 0,
                   "blame": [], "examined": False}
        point += B


def _point_sums(kernel, cols, name, x, B):
    """The output summed at each point, with input ``name`` replaced by ``x``."""
    trial = dict(cols)
    trial[name] = x
    return np.asarray(kernel(trial).value, dtype=np.float64).reshape(B, -1).sum(axis=1)


def _full_point(graph, bindings, chunk, names, b, point, wrt, output, eps, atol, rtol, dtype,
                seed, strict, local):
    """One point of a batch checked as ``gradcli check`` checks it: its record."""
    at = dict(bindings)
    for n in names:
        at[n] = np.asarray(chunk[n])[b]
    r = check(graph, at, wrt=wrt, output=output, eps=eps, atol=atol, rtol=rtol, dtype=dtype,
              seed=seed, strict=strict, local=local)
    blame = [f"node {x['node']} {x['label']}" for x in r.blame]
    blame += [f"node {x['node']} {x['label']}" for x in r.local
              if x["status"] == "fail" and f"node {x['node']} {x['label']}" not in blame]
    return {"point": point, "ok": r.ok, "status": "fail" if r.failed else
            "kink" if r.kinked else "ok", "max_abs_err": r.max_abs_err,
            "max_rel_err": r.max_rel_err, "grade": r.grade, "kinks": r.count("kink"),
            "blame": blame, "examined": True}
