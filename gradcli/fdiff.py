"""Finite-difference primitives shared by the whole-program check and the per-op check.

Both gradcli/gradcheck.py (the program against differences) and gradcli/localcheck.py (one
op's backward on its own) use these, and neither imports the other's internals: the steps,
the pass rule with its rounding floor, the grades, the step ladder that settles a difference
whatever the scale, and the record of a check (:class:`Report`, :class:`InputCheck`).

The grade of an element follows from its status, so a table can never say ``excellent
fail`` or ``wrong ok``: an element that passes the rule is ``excellent`` or ``fine``, one
that fails is ``suspicious`` or ``wrong`` (CS231n's words), one at a kink or pole has none.
"""
from __future__ import annotations

import math

import numpy as np

from .errors import BindingError

__all__ = ["METHODS", "EPS64", "ROUNDING", "default_eps", "default_tolerances", "settings",
           "steps", "errors", "passes", "allowed", "grade", "grades", "status_grade",
           "max_of", "ladder", "Report", "InputCheck"]

METHODS = ("central", "forward", "complex", "richardson")
EPS64 = float(np.finfo(np.float64).eps)
TINY = float(np.finfo(np.float64).tiny)

#: The default step per method, for float64 arithmetic (the numeric side always is).  The
#: error of a difference quotient is truncation (shrinks with h) plus rounding (about
#: eps |f| / h, grows as h shrinks); the best h balances them: eps^(1/3) for central
#: differences (error O(h^2)), eps^(1/2) for forward ones (O(h)), eps^(1/7) for Richardson's
#: extrapolation over h, h/2, h/4 (O(h^6)).  The complex step subtracts nothing: no rounding.
_DEFAULT_EPS = {"central": EPS64 ** (1 / 3), "forward": EPS64 ** 0.5,
                "richardson": EPS64 ** (1 / 7), "complex": 1e-20}

#: (atol, rtol) by the dtype of the analytic side and the method.
_TOLERANCES = {("float64", "central"): (1e-6, 1e-5), ("float64", "richardson"): (1e-6, 1e-5),
               ("float64", "complex"): (1e-6, 1e-5), ("float64", "forward"): (1e-5, 1e-4),
               ("float32", None): (1e-4, 1e-3)}

#: How many times eps |f| / h the rounding of each method's difference can reach.
ROUNDING = {"central": 4.0, "forward": 4.0, "richardson": 16.0, "complex": 0.0}

#: CS231n's scale of relative errors: below 1e-7 excellent, below 1e-4 fine, below 1e-2
#: suspicious, else wrong.  Used within the verdict: a passing element is excellent or fine,
#: a failing one suspicious or wrong.
_GRADES = ((1e-7, "excellent"), (1e-4, "fine"), (1e-2, "suspicious"), (math.inf, "wrong"))


def default_eps(method):
    return _DEFAULT_EPS[method]


def default_tolerances(method, dtype="float64"):
    return _TOLERANCES.get((dtype, method)) or _TOLERANCES[("float32", None)]


def settings(method, dtype, eps, atol, rtol):
    """The step and tolerances, defaults filled in and each checked."""
    if method not in METHODS:
        raise BindingError(f"--method {method}: choose one of {', '.join(METHODS)}")
    eps = default_eps(method) if eps is None else float(eps)
    if not (math.isfinite(eps) and eps > 0):
        raise BindingError(f"--eps must be a positive number, got {eps:g}")
    if eps < TINY or (method != "complex" and eps < 1e-300):
        # a subnormal step loses its own digits: x + h and x - h round to x
        raise BindingError(f"--eps {eps:g} is too small to be a step (at least 1e-300; "
                           f"the default for {method} is {default_eps(method):.2g})")
    if eps >= 1 and method != "complex":
        raise BindingError(f"--eps {eps:g} is too large for a difference step (it must be "
                           f"below 1; the default for {method} is {default_eps(method):.2g})")
    d_atol, d_rtol = default_tolerances(method, dtype)
    atol = d_atol if atol is None else float(atol)
    rtol = d_rtol if rtol is None else float(rtol)
    for flag, v in (("--atol", atol), ("--rtol", rtol)):
        if not (math.isfinite(v) and v >= 0):
            raise BindingError(f"{flag} must be a number >= 0, got {v}")
    return eps, atol, rtol


def steps(x, eps):
    """The first step per element: eps relative to the element's size, at least eps.

    Relative steps keep the rounding of x + h in bounds for large x; where the function
    curves on a scale smaller than |x| (sin at 1e5, softmax at 3000) the step is too large
    for the truncation error, and :func:`ladder` shrinks it until the difference settles.
    """
    return eps * np.maximum(1.0, np.abs(x))


def errors(analytic, numeric, atol):
    """(absolute, relative) error of each element.

    The relative error is ``|a - n| / max(|a|, |n|)``, and 0 where both values are below
    ``atol`` (both are zero at that tolerance).  Equal infinities, and nan against nan (the
    function undefined both ways), have no error.
    """
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        abs_err = np.abs(analytic - numeric)
        same = (analytic == numeric) | (np.isnan(analytic) & np.isnan(numeric))
        abs_err = np.where(same, 0.0, abs_err)
        big = np.maximum(np.abs(analytic), np.abs(numeric))
        rel_err = np.where(big > atol, abs_err / np.where(big > atol, big, 1.0),
                           np.where(abs_err <= atol, 0.0, np.inf))
    rel_err = np.where(same, 0.0, rel_err)
    return abs_err, rel_err


def allowed(numeric, atol, rtol, noise=0.0):
    """What the pass rule allows: atol + rtol |n| + the rounding floor (inf for a non-finite n
    counts as nothing: an infinite difference allows no error)."""
    with np.errstate(invalid="ignore", over="ignore"):
        n = np.abs(numeric)
        return atol + rtol * np.where(np.isfinite(n), n, 0.0) + noise


def passes(abs_err, numeric, atol, rtol, noise=0.0):
    """The pass rule: |a - n| <= atol + rtol |n| + the rounding floor of the difference.

    A non-finite difference passes only against the same value (abs_err 0)."""
    with np.errstate(invalid="ignore"):
        return abs_err <= allowed(numeric, atol, rtol, noise)


def grade(rel_err):
    """CS231n's word for a relative error, with no verdict (< 1e-7 excellent ... wrong)."""
    for limit, word in _GRADES:
        if rel_err < limit:
            return word
    return "wrong"  # nan


def status_grade(status, rel_err):
    """The grade of one element, consistent with its status."""
    if status == "kink":
        return "-"
    g = grade(rel_err)
    if status == "ok":
        return g if g in ("excellent", "fine") else "fine"
    return g if g in ("suspicious", "wrong") else "suspicious"


def grades(rel_err, status=None):
    """:func:`status_grade` of every element of an array, at once (no status: the raw
    scale)."""
    rel = np.nan_to_num(np.asarray(rel_err, dtype=np.float64), nan=np.inf)
    raw = np.select([rel < limit for limit, _ in _GRADES], [w for _, w in _GRADES],
                    "wrong").astype(object)
    if status is None:
        return raw
    status = np.asarray(status, dtype=object)
    good = (raw == "excellent") | (raw == "fine")
    out = np.where(status == "ok", np.where(good, raw, "fine"),
                   np.where(good, "suspicious", raw)).astype(object)
    out[status == "kink"] = "-"
    return out


def max_of(a, nan=0.0):
    """The largest entry (0 for none; a nan counts as ``nan``), without NumPy's warnings."""
    a = np.nan_to_num(np.ravel(np.asarray(a, dtype=np.float64)), nan=nan, posinf=math.inf)
    return float(a.max()) if a.size else 0.0


# ---------------------------------------------------------------- the step ladder

_LADDER_RATIO = 4.0
_LADDER_STEPS = 40      # h0 / 4^40 ~ h0 * 1e-24: far below any pole a float can sit next to


def ladder(f, x0, h0, analytic, atol, rtol, fscale, d0=None):
    """Settle one element's central difference by shrinking the step: a pass, a fail, a
    domain edge or a pole, never a verdict from a step that was simply too large.

    ``f(t)`` is the function (a scalar, or a vector for a Jacobian column) at the element's
    value ``t``; ``x0`` that value; ``h0`` the first step; ``d0`` the difference already
    taken at ``h0``.  The step shrinks by 4 each time.  Central differences lose truncation
    error as h^2 (16 times less per step), so two successive differences that agree within
    the pass rule have settled: the last one is the derivative to that accuracy, and the
    analytic value passes or fails against it.  If one side leaves the function's domain (a
    nan or an inf), the point is at a domain edge; if the differences never settle down to
    the smallest step a float can take, the point is a pole or a jump inside every step.

    Returns ``{"kind": "settled"|"edge"|"pole", "numeric": d, "step": h, "ok": bool,
    "left": ..., "right": ...}``.
    """
    a = np.asarray(analytic, dtype=np.float64)
    f0 = np.asarray(f(x0), dtype=np.float64)
    prev = None if d0 is None else np.asarray(d0, dtype=np.float64)
    h = float(h0)
    smallest = max(4 * np.spacing(abs(x0)) if x0 else 1e-300, 1e-300)
    last = None
    edge_slopes = []
    for _ in range(_LADDER_STEPS + 1):
        if prev is not None or last is not None:
            h /= _LADDER_RATIO
        if h < smallest:
            break
        xp, xm = x0 + h, x0 - h
        hp, hm = xp - x0, x0 - xm
        if hp <= 0 or hm <= 0:
            break
        with np.errstate(all="ignore"):
            fp = np.asarray(f(xp), dtype=np.float64)
            fm = np.asarray(f(xm), dtype=np.float64)
            good_p, good_m = bool(np.isfinite(fp).all()), bool(np.isfinite(fm).all())
            if not (good_p and good_m):
                right = (fp - f0) / hp if good_p else np.full(np.shape(f0), np.nan)
                left = (f0 - fm) / hm if good_m else np.full(np.shape(f0), np.nan)
                edge_slopes.append((left, right, h))
                if not (good_p or good_m) or len(edge_slopes) >= 3:
                    break
                last = True
                continue
            d = (fp - fm) / (hp + hm)
        noise = ROUNDING["central"] * EPS64 * fscale / h
        tol = allowed(d, atol, rtol, noise)
        if prev is not None and bool(np.all(np.abs(d - prev) <= tol)):
            err = np.abs(a - d)
            ok = bool(np.all((err <= tol) | (a == d)))
            return {"kind": "settled", "numeric": d, "step": h, "ok": ok}
        if bool(np.all(noise > 0.1 * np.abs(d) + atol)):
            break  # rounding rules from here down: smaller steps tell nothing more
        prev, last = d, d
    if edge_slopes:
        left, right, h = edge_slopes[-1]
        return {"kind": "edge", "numeric": None, "step": h, "ok": False,
                "left": left, "right": right}
    return {"kind": "pole", "numeric": prev, "step": h * _LADDER_RATIO, "ok": False}


# ---------------------------------------------------------------- results

class InputCheck:
    """The check of one input: arrays over its elements (rows by output element with
    ``--jacobian``)."""

    def __init__(self, name, shape, analytic, numeric, atol, rtol, err_est=None,
                 out_shape=None, noise=0.0):
        self.name = name
        self.shape = shape
        self.out_shape = out_shape       # with --jacobian: the output's shape, else None
        # C order throughout: element k of reshape(-1) is then a view, whatever the layout
        # the input arrived in
        self.analytic = np.ascontiguousarray(analytic, dtype=np.float64)
        self.numeric = np.array(numeric, dtype=np.float64, order="C")
        numeric = self.numeric
        analytic = self.analytic
        self.err_est = err_est           # Richardson's estimate of the numeric error
        self.atol, self.rtol = atol, rtol
        abs_err, rel_err = errors(analytic, numeric, atol)
        self.abs_err = np.array(abs_err, order="C")
        self.rel_err = np.array(rel_err, order="C")
        self.allowed = np.array(allowed(numeric, atol, rtol, noise) * np.ones(numeric.shape),
                                order="C")
        ok = self.abs_err <= self.allowed
        self.status = np.array(np.where(ok, "ok", "fail"), dtype=object, order="C")
        self.kinks = {}                  # flat index -> kink record
        self.refined = {}                # flat index -> the step a ladder settled at
        self.grouped = None              # how many evaluations a coloured check took

    def update(self, pos, numeric):
        """A better difference for element ``pos`` (flat, rows by output element)."""
        num = self.numeric.reshape(-1)
        num[pos] = numeric
        a = self.analytic.reshape(-1)[pos]
        ae, re_ = errors(np.float64(a), np.float64(numeric), self.atol)
        self.abs_err.reshape(-1)[pos] = ae
        self.rel_err.reshape(-1)[pos] = re_

    def grades(self):
        return grades(self.rel_err, self.status)

    def indices(self):
        """(flat position, index tuple, output index tuple or None) for every element."""
        out_idx = list(np.ndindex(self.out_shape)) if self.out_shape is not None else [None]
        in_idx = list(np.ndindex(self.shape))
        pos = 0
        for o in out_idx:
            for i in in_idx:
                yield pos, i, o
                pos += 1

    def index_of(self, pos):
        """(index tuple, output index tuple or None) of one flat position."""
        n_in = int(np.prod(self.shape)) if self.shape else 1
        i = tuple(int(k) for k in np.unravel_index(pos % n_in, self.shape)) if self.shape \
            else ()
        if self.out_shape is None:
            return i, None
        return i, tuple(int(k) for k in np.unravel_index(pos // n_in, self.out_shape))


class Report:
    """Everything ``gradcli check`` found, for the table, JSON and CSV renderers."""

    def __init__(self, **kw):
        self.inputs = []          # InputCheck per input
        self.blame = []           # nodes whose own backward disagrees with differences
        self.projections = []     # --fast: one record per projection
        self.sweep = []           # --eps-sweep rows
        self.ops = None           # check --ops FILE: one record per custom op
        self.local = []           # per-node checks with a random upstream (custom ops, --local)
        self.taylor = None        # --taylor: one record per input
        self.second = None        # --order 2: one record per gradient program
        self.order = 1
        self.strict = False
        self.__dict__.update(kw)

    def count(self, status):
        """How many elements (or projections, or op inputs) have ``status``."""
        if self.ops is not None:
            return sum(r["status"] == status for o in self.ops for r in o["inputs"])
        n = (sum(int(np.count_nonzero(ic.status == status)) for ic in self.inputs)
             + sum(p["status"] == status for p in self.projections))
        if self.taylor is not None:
            n += sum(t["status"] == status for t in self.taylor)
        return n

    @property
    def total(self):
        if self.ops is not None:
            return sum(len(o["inputs"]) for o in self.ops)
        return sum(ic.status.size for ic in self.inputs) + len(self.projections)

    @property
    def local_failed(self):
        return any(rec["status"] == "fail" for rec in self.local)

    @property
    def failed(self):
        if self.ops is not None:
            return any(o["status"] == "fail" for o in self.ops)
        return self.count("fail") > 0 or self.local_failed

    @property
    def kinked(self):
        return self.count("kink") > 0

    @property
    def ok(self):
        return not self.failed and not (self.strict and self.kinked)

    def _errs(self, attr):
        if self.ops is not None:
            return max((r["max_" + attr] for o in self.ops for r in o["inputs"]
                        if r["status"] != "kink"), default=0.0)
        # kinks are not failures of the backward rule: their errors do not count here; an
        # error that is not a number (inf against a finite value, nan) counts as inf
        vals = [getattr(ic, attr)[ic.status != "kink"] for ic in self.inputs]
        vals = [np.nan_to_num(v, nan=np.inf, posinf=np.inf) for v in vals]
        vals.append(np.nan_to_num(np.array([p[attr] for p in self.projections
                                            if p["status"] != "kink"]), nan=np.inf))
        vals += [np.array([rec["max_" + attr]]) for rec in self.local
                 if rec["status"] == "fail" and rec["inputs"]]
        vals = [v for v in vals if v.size]
        return float(max(v.max() for v in vals)) if vals else 0.0

    @property
    def max_abs_err(self):
        return self._errs("abs_err")

    @property
    def max_rel_err(self):
        return self._errs("rel_err")

    @property
    def grade(self):
        """The grade of the verdict: the worst graded element's, status included."""
        return status_grade("fail" if self.failed else "ok", self.max_rel_err)
