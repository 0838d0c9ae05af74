"""The Taylor test (``gradcli check --taylor``): a gradient check with no step to choose.

For a random direction v, Taylor's theorem says the remainder

    r(h) = |f(x + h v) - f(x) - h grad f(x) . v|

falls as h^2 when the gradient is right, and only as h when it is wrong (the wrong part of
the first-order term is left over).  So the check measures r over a range of h, fits the
slope of log r against log h, and passes when that convergence rate is near 2 (at least
1.8): no step size and no tolerance to pick, as dolfin-adjoint's ``taylor_test``.

Points where r has sunk to the rounding noise of f are left out of the fit (there r stops
falling); where r is at that noise for every h the first-order term matches f to rounding
(f is linear along v), which passes.  A kink crossed by the steps (relu at 0) is a
``kink``, as in the element-wise check.  A non-scalar output is checked through a random
weighting u of its elements (the gradient of u . f), which also catches a backward that
ignores its upstream gradient.

Each input gets several random directions (:data:`DIRECTIONS`, ``--directions N``): one
direction can miss a backward that is wrong only in a few coordinates (where v happens to be
small); every direction must pass.
"""
from __future__ import annotations

import math

import numpy as np

from . import engine
from .fdiff import EPS64
from .plan import Plan

__all__ = ["taylor_test", "PASS_RATE", "STEPS", "DIRECTIONS"]

PASS_RATE = 1.8
#: Random directions per input by default.  One Gaussian direction v misses a gradient
#: error e only where e.v is too small to show over the h^2 term, which for an error in one
#: coordinate k (or any small subspace) happens when v_k happens to be small; k independent
#: directions all miss it with that probability to the k-th power.  Each direction costs the
#: forward passes of one ladder of steps (the gradient is computed once): next to a start-up
#: and one reverse pass, a few directions cost little.
DIRECTIONS = 4
#: h = 2^-k / |v|_inf for k = 2 ... 30: from a quarter of the unit scale down past where
#: the remainder of any smooth function meets rounding
STEPS = tuple(2.0 ** -k for k in range(2, 31))
_FIT = 6          # the smallest-h points above the noise that the rate is fitted on


def taylor_test(graph, bindings, ref, targets, rng, output=None, dtype="float64",
                directions=DIRECTIONS):
    """One record per input and direction (``direction`` 0, 1, ...): the remainders, the
    fitted rate, the verdict.  The gradient (one reverse pass, from the random output
    weights u) serves every direction."""
    out0 = np.asarray(ref.values[ref.output], dtype=np.float64)
    u = rng.standard_normal(out0.shape) if out0.shape else None
    g = engine.differentiate(graph, bindings, output=output, dtype=dtype, upstream=u,
                             wrt=[n for n, i in targets.items() if i is not None]).gradients
    f0 = float(np.sum(out0 * u)) if u is not None else float(out0)
    records = []
    for name, i in targets.items():
        if i is None:
            continue
        x0 = np.array(ref.values[i], dtype=np.float64, order="C")
        if not x0.size:
            continue
        plan = Plan(graph, ref.order, ref.values, i, ref.output, total=False)
        grad = np.asarray(g[name], dtype=np.float64)
        for d in range(directions):
            v = rng.standard_normal(x0.shape)
            records.append(_one(name, d, plan, x0, v, grad, u, f0, ref))
    return records


def _weigh(y, u):
    y = np.asarray(y, dtype=np.float64)
    return float(np.sum(y * u)) if u is not None else float(y)


def _one(name, d, plan, x0, v, grad, u, f0, ref):
    vmax = float(np.max(np.abs(v))) or 1.0
    slope = float(np.sum(grad * v))
    hs, r0s, r1s, noise = [], [], [], []
    with np.errstate(all="ignore"):
        for s in STEPS:
            h = s / vmax
            fh = _weigh(plan(x0 + h * v), u)
            hs.append(h)
            r0s.append(abs(fh - f0))
            r1s.append(abs(fh - f0 - h * slope))
            # rounding of f(x+hv) - f(x): a few ulps of f, and of the terms summed into it
            noise.append(64 * EPS64 * (abs(fh) + abs(f0) + abs(h * slope)))
    hs, r0s, r1s, noise = (np.array(a) for a in (hs, r0s, r1s, noise))
    rec = {"wrt": name, "direction": d, "h": hs.tolist(), "remainder_first": r0s.tolist(),
           "remainder": r1s.tolist(), "slope": slope}
    finite = np.isfinite(r1s)
    if not finite.all() or not np.isfinite(slope):
        rec.update(rate=math.nan, status="fail", why="the remainder is not a number at some "
                   "step (the function leaves its domain along v, or the gradient is not "
                   "finite)")
        return _kinked(rec, plan, x0, v, ref, hs[~finite] if (~finite).any() else hs[:1])
    above = r1s > 1e3 * noise
    idx = np.flatnonzero(above)
    if idx.size < 3:
        # the remainder is rounding noise wherever the first-order term is measurable
        rec.update(rate=math.nan, status="ok", why="the remainder is at rounding level at "
                   "every step: f is linear along v and the gradient matches it")
        return rec
    fit = idx[-_FIT:]
    rate = float(np.polyfit(np.log(hs[fit]), np.log(r1s[fit]), 1)[0])
    rec["rate"] = rate
    rec["fitted"] = [int(k) for k in fit]
    if rate >= PASS_RATE:
        rec.update(status="ok", why=f"the remainder falls as h^{rate:.2f}")
        return rec
    rec.update(status="fail", why=f"the remainder falls as h^{rate:.2f}, not h^2: the "
               "gradient is wrong along v" if rate < 1.5 else f"the remainder falls as "
               f"h^{rate:.2f}, short of h^2")
    return _kinked(rec, plan, x0, v, ref, hs[fit])


def _kinked(rec, plan, x0, v, ref, hs):
    """A failing direction whose steps cross a kink (relu at 0) is a kink, not a fail."""
    graph = ref.graph
    kinky = [m for m in plan.steps if graph.nodes[m].op.kink_side is not None]
    if not kinky:
        return rec
    traced = Plan(graph, ref.order, ref.values, plan.source, ref.output, total=False,
                  trace=True)
    h = float(np.min(hs))
    with np.errstate(all="ignore"):
        _, tp = traced(x0 + h * v)
    for m in kinky:
        node = graph.nodes[m]
        side = node.op.kink_side

        def ins(trace, x):
            return [x if j == plan.source else trace.get(j, ref.values[j]) for j in node.inputs]
        try:
            s0 = side(*[ref.values[j] for j in node.inputs], *node.params)
            sp = side(*ins(tp, x0 + h * v), *node.params)
        except Exception:
            continue
        if not np.array_equal(s0, sp):
            rec["status"] = "kink"
            rec["why"] = (f"the steps cross a point where node {m} {graph.source(m, 30)} is "
                          f"not differentiable, where no rate is expected")
            rec["kink_nodes"] = [m]
            return rec
    return rec
