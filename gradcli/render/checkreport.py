"""``gradcli check`` results: a table per input for people, JSON and CSV for programs."""
from __future__ import annotations

import csv
import io
import math

import numpy as np

from ..fdiff import _GRADES as _FDIFF_GRADES, status_grade
from ..values import orjson, to_json
from . import text as fmt
from .layout import Line, Styled, Table

_SHOW = 10        # rows per input shown by default when it has more elements
_SHOW_BAD = 50    # failing / kink rows shown at most, without --all


def _idx(index, name):
    return f"{name}[{', '.join(map(str, index))}]" if index else name


def _e(x):
    """An error in 2 significant digits: 3.1e-10, 0.31, 0."""
    x = float(x)
    if x == 0:
        return "0"
    if not np.isfinite(x):
        return fmt.num(x)
    return f"{x:.2g}" if 1e-3 <= abs(x) < 1e3 else f"{x:.1e}"


#: evaluations of the program per element, one element at a time, by method
_PER_ELEMENT = {"central": "two", "forward": "one", "complex": "one", "richardson": "six"}


def _method_text(r):
    words = {"central": "central differences", "forward": "forward differences",
             "complex": "the complex step", "richardson": "Richardson extrapolation"}
    return words[r.method]


def rows(report, problems_only=False):
    """Every element's record, as SPEC's JSON ``results`` entries (``problems_only``: only
    the elements that fail or sit at a kink)."""
    out = []
    for ic in report.inputs:
        # whole arrays to JSON values at once; then one small dict per element
        cols = [to_json(np.ravel(v)) for v in (ic.analytic, ic.numeric, ic.abs_err, ic.rel_err)]
        est = to_json(np.ravel(ic.err_est)) if ic.err_est is not None else None
        status = ic.status.reshape(-1).tolist()
        graded = ic.grades().reshape(-1).tolist()
        n_in = int(np.prod(ic.shape)) if ic.shape else 1
        # every index at once (as lists), not one np.ndindex step per element
        in_idx = (np.stack(np.unravel_index(np.arange(n_in), ic.shape), axis=1).tolist()
                  if ic.shape else [[]] * n_in)
        outs = (np.stack(np.unravel_index(np.arange(int(np.prod(ic.out_shape))),
                                          ic.out_shape), axis=1).tolist()
                if ic.out_shape else [[]]) if ic.out_shape is not None else [None]
        a, n, ae, re_ = cols
        name = ic.name
        of = getattr(ic, "of", None)   # --order 2: the gradient d f / d of this block is of
        kinks = ic.kinks
        pos = 0
        for o in outs:
            for index in in_idx:
                if problems_only and status[pos] == "ok":
                    pos += 1
                    continue
                d = {"wrt": name, "index": list(index)}
                if of is not None:
                    d["of"] = of
                if o is not None:
                    d["output_index"] = list(o)
                d["analytic"] = a[pos]
                d["numeric"] = n[pos]
                d["abs_err"] = ae[pos]
                d["rel_err"] = re_[pos]
                d["status"] = status[pos]
                d["grade"] = graded[pos]
                if est is not None:
                    d["error_estimate"] = est[pos]
                if pos in kinks:
                    d["kink"] = _kink_json(report, kinks[pos], getattr(ic, "graph", None))
                out.append(d)
                pos += 1
    return out


def _kink_json(report, k, graph=None):
    g = graph or report.graph
    return {"nodes": [{"id": m, "op": g.nodes[m].op.name, "label": g.source(m, 40)}
                      for m in k["nodes"]],
            "left_slope": to_json(k["left"]), "right_slope": to_json(k["right"]),
            "analytic_inside": bool(k["inside"])}


def _plain(obj):
    """``obj`` as JSON values: every float through :func:`~gradcli.values.to_json` (nan and
    inf as the strings SPEC gives), NumPy scalars and arrays as numbers and lists.  The one
    place the report's small parts (settings, blame, local checks, sweeps, projections,
    Taylor records) become JSON; the per-element results go through ``to_json`` by columns."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating, np.ndarray)):
        return to_json(obj)
    return obj


def as_json(report, results="all"):
    """The report as SPEC's JSON object (only JSON values: no nan or inf numbers).
    ``results="problems"``: records only for the elements that fail or sit at a kink, the
    others counted in ``"omitted"``."""
    d = _plain(_as_json(report))
    problems = results == "problems" and getattr(report, "ops", None) is None
    d["results"] = rows(report, problems) if getattr(report, "ops", None) is None else \
        ops_rows(report)
    if problems:
        d["omitted"] = _omitted(report)
    return d


def _omitted(report):
    """What ``--results problems`` leaves out: the passing elements, counted per input."""
    per = {}
    for ic in report.inputs:
        per[ic.name] = per.get(ic.name, 0) + int(np.count_nonzero(ic.status == "ok"))
    return {"status": "ok", "count": sum(per.values()), "by_input": per}


def _as_json(report):
    d = {"ok": report.ok, "method": report.method, "eps": report.eps,
         "max_abs_err": to_json(report.max_abs_err), "max_rel_err": to_json(report.max_rel_err),
         "atol": report.atol, "rtol": report.rtol, "grade": report.grade,
         "dtype": report.dtype}
    if getattr(report, "ops", None) is not None:
        d["results"] = None  # filled by as_json, already JSON values
        d["ops"] = [{"name": o["name"], "file": o["file"], "status": o["status"],
                     "problems": list(o.get("problems", ())),
                     "inputs": [_input_summary(r) for r in o["inputs"]]} for o in report.ops]
        return d
    d["results"] = None  # filled by as_json, already JSON values
    d["fast"] = bool(report.fast)
    if report.order == 2:
        d["order"] = 2
        d["second"] = [dict(r) for r in report.second or ()]
    if report.projections:
        d["projections"] = [{k: v for k, v in p.items() if k != "kink"}
                            | ({"kink": _kink_json(report, p["kink"])} if "kink" in p else {})
                            for p in report.projections]
    d["kinks"] = report.count("kink")
    d["blame"] = [{"node": b["node"], "label": b["label"], "op": b["op"],
                   "max_abs_err": b["max_abs_err"], "max_rel_err": b["max_rel_err"],
                   "inputs": [_input_summary(r) for r in b["inputs"]]} for b in report.blame]
    if report.sweep:
        d["sweep"] = report.sweep
    if report.local:
        d["local"] = [{"node": r["node"], "label": r["label"], "op": r["op"],
                       "status": r["status"], "upstream_was_ones": bool(r.get("ones")),
                       "problems": list(r.get("problems", ())),
                       "inputs": [_input_summary(x) for x in r["inputs"]]}
                      for r in report.local]
    if getattr(report, "taylor", None) is not None:
        d["directions"] = getattr(report, "directions", None)
        d["taylor"] = [dict(t) for t in report.taylor]
    return d


def _input_summary(r):
    return {"input": r["name"], "label": r.get("label"), "max_abs_err": r["max_abs_err"],
            "max_rel_err": r["max_rel_err"], "status": r["status"]}


def ops_rows(report):
    out = []
    for o in report.ops:
        for r in o["inputs"]:
            a, n = np.ravel(r["analytic"]), np.ravel(r["numeric"])
            where = ([{"projection": p} for p in range(a.size)] if r.get("projected") else
                     [{"index": list(i)} for i in np.ndindex(tuple(r["shape"]))])
            for pos, place in enumerate(where):
                with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                    err = abs(a[pos] - n[pos])     # inf - inf: nan, written as "nan"
                    rel = err / max(abs(a[pos]), abs(n[pos]), report.atol)
                out.append({"op": o["name"], "wrt": r["name"], **place,
                            "analytic": to_json(a[pos]), "numeric": to_json(n[pos]),
                            "abs_err": to_json(err),
                            "rel_err": to_json(rel),
                            "status": r["status"]})
    return out


def as_csv(report, **options):
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if getattr(report, "ops", None) is not None:
        data = ops_rows(report)
        cols = ["op", "wrt", "index", "analytic", "numeric", "abs_err", "rel_err", "status"]
    elif report.taylor is not None:
        data = [{"wrt": t["wrt"], "direction": t["direction"], "h": h, "remainder_first": r0,
                 "remainder": r1, "rate": t["rate"], "status": t["status"]}
                for t in report.taylor for h, r0, r1 in zip(t["h"], t["remainder_first"],
                                                           t["remainder"])]
        cols = ["wrt", "direction", "h", "remainder_first", "remainder", "rate", "status"]
    elif report.fast:
        data = report.projections
        cols = ["wrt", "projection", "analytic", "numeric", "abs_err", "rel_err", "status"]
    else:
        cols = ["wrt", "index", "analytic", "numeric", "abs_err", "rel_err", "status"]
        if report.jacobian or report.order == 2:
            cols.insert(1, "output_index")
        if report.order == 2:
            cols.insert(1, "of")
        w.writerow(cols)
        problems = options.get("results") == "problems"
        return buf.getvalue() + "".join(_csv_rows(ic, cols, problems) for ic in report.inputs)
    w.writerow(cols)
    for d in data:
        w.writerow([",".join(map(str, d[c])) if isinstance(d.get(c), list) else d.get(c)
                    for c in cols])
    return buf.getvalue()


def _csv_cell(text):
    """One CSV field as csv.writer writes it (quoted when it holds a comma, quote or line
    end)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow([text, ""])
    return buf.getvalue()[:-1]


def _csv_indices(shape, flat=None):
    """Each element's index as its CSV field (``"3,4"``, ``3``, or empty for a scalar)."""
    n = int(np.prod(shape)) if shape else 1
    m = n if flat is None else len(flat)
    if not shape:
        return [""] * m
    if m == 0:
        return []
    coords = np.unravel_index(np.arange(n) if flat is None else np.asarray(flat), shape)
    parts = [c.astype(str).tolist() for c in coords]
    if len(parts) == 1:
        return parts[0]
    return ['"' + ",".join(t) + '"' for t in zip(*parts)]


def _csv_numbers(a):
    """Each number as csv.writer writes the JSON value: repr, and nan, inf, -inf."""
    return list(map(float.__repr__, np.ravel(a).astype(np.float64).tolist()))


def _csv_rows(ic, cols, problems_only):
    """One input's CSV rows (the columns of :func:`as_csv`), column by column: the same
    text as a csv.writer row per record of :func:`rows`."""
    n_in = int(np.prod(ic.shape)) if ic.shape else 1
    status = ic.status.reshape(-1)
    sel = np.flatnonzero(status != "ok") if problems_only else None
    if sel is not None and not sel.size:
        return ""

    def pick(a):
        a = np.reshape(a, -1)
        return a if sel is None else a[sel]
    m = status.size if sel is None else sel.size
    fields = []
    for c in cols:
        if c == "wrt":
            fields.append([_csv_cell(ic.name)] * m)
        elif c == "of":
            of = getattr(ic, "of", None)
            fields.append([_csv_cell(of) if of is not None else ""] * m)
        elif c == "output_index":
            if ic.out_shape is None:
                fields.append([""] * m)
            else:
                flat = np.arange(status.size) if sel is None else sel
                fields.append(_csv_indices(tuple(ic.out_shape), flat // n_in))
        elif c == "index":
            flat = np.arange(status.size) if sel is None else sel
            fields.append(_csv_indices(ic.shape, flat % n_in))
        elif c == "status":
            fields.append(pick(status).tolist())
        else:
            fields.append(_csv_numbers(pick(getattr(ic, {"analytic": "analytic",
                                                           "numeric": "numeric",
                                                           "abs_err": "abs_err",
                                                           "rel_err": "rel_err"}[c]))))
    line = ",".join(["%s"] * len(cols)) + "\n"
    return "".join([line % t for t in zip(*fields)])


# ---------------------------------------------------------------- the table

def _new_table(cols):
    left = ("index", "grade", "status", "wrt", "op", "input", "output", "")
    # at a narrow width the absolute error and the grade go first (rel err and status stay)
    return Table(*[(c, "left" if c in left else "right") for c in cols],
                 optional=("abs err", "grade"))


_STATUS_STYLE = {"ok": "green", "fail": "bold red", "kink": "yellow"}


def _status(s):
    return Styled(s, _STATUS_STYLE.get(s))


def _pick(ic, show_all):
    """Which element positions to list (all, or the bad ones and the worst of the rest), and
    how many of each status are left out."""
    st = ic.status.reshape(-1)
    n = st.size
    if show_all or n <= _SHOW:
        return list(range(n)), {}
    bad = [int(p) for p in np.flatnonzero(st != "ok")[:_SHOW_BAD]]
    if len(bad) < _SHOW:  # and the worst of the rest, found without sorting them all
        rel = np.where(st == "ok", np.nan_to_num(ic.rel_err.reshape(-1), nan=np.inf), -1.0)
        k = min(_SHOW - len(bad), n - 1)
        worst = np.argpartition(-rel, k)[:k + 1] if k >= 0 else []
        worst = sorted((int(p) for p in worst if st[p] == "ok"), key=lambda p: -rel[p])
        bad += worst[:_SHOW - len(bad)]
    shown = st[np.array(sorted(bad), dtype=np.intp)] if bad else np.array([], dtype=object)
    left = {s: int(np.count_nonzero(st == s)) - int(np.count_nonzero(shown == s))
            for s in ("fail", "kink", "ok")}
    return sorted(bad), {s: c for s, c in left.items() if c}


def _rest_text(rest):
    words = {"fail": "failed", "kink": "at kinks", "ok": "ok"}
    parts = [f"{c} more {words[s]}" for s, c in rest.items()]
    return f"  … {', '.join(parts)} (--all lists every element)"


def table(report, show_all=False, **options):
    out = []
    program = report.graph.source(report.graph.names[report.output_name], 60)
    name = report.output_name
    what = name if program == name else f"{name} = {program}"
    if report.taylor is not None:
        return _taylor_table(report, what, show_all)
    step = ("the input's largest element" if report.fast else "each element") + \
        "'s size when above 1"
    if report.order == 2:
        what = (f"the second derivatives of {what} (the reverse pass through its gradient, "
                f"traced as a program) against {_method_text(report)} of the gradient")
    else:
        what = f"{what} against {_method_text(report)}"
    out.append(Line(f"checking {what}: "
                    f"eps {report.eps:.3g} (times {step}); it agrees when "
                    f"|analytic - numeric| <= {report.atol:g} + {report.rtol:g} * |numeric| "
                    f"(+ the rounding floor of the difference)"))
    grouped = getattr(report, "grouped_evals", 0)
    if grouped:
        n = sum(ic.status.size for ic in report.inputs)
        out.append(Line(f"grouped differences: elements whose effects stay apart until the "
                        f"final sum are perturbed together ({grouped:,} evaluations where one "
                        f"at a time takes {_PER_ELEMENT[report.method]} per element; "
                        f"--one-at-a-time to compare); "
                        f"{n:,} elements checked in all"))
    if report.fast or any(p["status"] != "ok" for p in report.projections):
        out += _fast_table(report)
    for ic in report.inputs:
        st = ic.status.reshape(-1)
        counts = (("ok", "ok"), ("kink", "at a kink"), ("fail", "failed"))
        summary = ", ".join(f"{int(np.count_nonzero(st == s))} {w}" for s, w in counts
                            if np.count_nonzero(st == s))
        counted = ic.rel_err.reshape(-1)[st != "kink"]  # kinks are not errors of the rule
        worst = float(np.max(np.nan_to_num(counted, nan=np.inf), initial=0)) \
            if counted.size else 0.0
        verdict = "fail" if (st == "fail").any() else "ok"
        row_name = getattr(ic, "row_name", None)  # --order 2: rows by the gradient's element
        unit = ("second derivative" if row_name else
                "Jacobian entry" if ic.out_shape is not None else "element")
        shape = f"shape {ic.shape}" if ic.shape else "a scalar"
        graded = (f"max rel err {_e(worst)} ({status_grade(verdict, worst)})"
                  if counted.size else "nothing to grade")
        title = f"d/d{ic.name} of {row_name}" if row_name else ic.name
        out.append(Line(f"\n{title}: {shape}, {_plural(st.size, unit)}: {summary}; "
                        f"{graded}", style="bold"))
        cols = ["index", "analytic", "numeric", "abs err", "rel err", "grade", "status"]
        if ic.out_shape is not None:
            cols.insert(0, "output")
        if ic.err_est is not None:
            cols.insert(-2, "error estimate")
        t = _new_table(cols)
        picks, rest = _pick(ic, show_all)
        a, n = ic.analytic.reshape(-1), ic.numeric.reshape(-1)
        ae, re_ = ic.abs_err.reshape(-1), ic.rel_err.reshape(-1)
        est = ic.err_est.reshape(-1) if ic.err_est is not None else None
        for p in picks:
            i, o = ic.index_of(p)
            row = [_idx(i, ic.name), fmt.num(a[p]), fmt.num(n[p]), _e(ae[p]), _e(re_[p]),
                   status_grade(st[p], re_[p])]
            if o is not None:
                row.insert(0, _idx(o, row_name or report.output_name))
            if est is not None:
                row.insert(-1, _e(est[p]))
            t.add_row(*row, _status(st[p]))
        out.append(t)
        if rest:
            out.append(Line(_rest_text(rest)))
        listed = set(picks)
        for p, k in sorted(ic.kinks.items()):
            if p not in listed:
                continue
            i, _o = ic.index_of(p)
            out.append(Line("  " + _kink_text(report, _idx(i, ic.name), a[p], k,
                                              getattr(ic, "graph", None))))
    if report.sweep:
        out += _sweep_table(report)
    out += _verdict(report)
    return out


def _kink_text(report, where, analytic, k, graph=None):
    g = graph or report.graph
    nodes = ", ".join(f"node {m} {g.source(m, 30)}" for m in k["nodes"])
    kind = k.get("kind")
    if kind == "undefined":
        return (f"undefined at {where}: the function has no value on either side of the "
                f"point (analytic and numeric are both nan), so there is no derivative to "
                f"check")
    if kind == "pole":
        what = nodes or "an op on the path"
        return (f"pole at {where}: the differences do not settle as the step shrinks from "
                f"{k.get('first_step', report.eps):.2g} to {k['step']:.2g}: {what} is not "
                f"smooth within every step a float can take (a pole or a jump), so "
                f"differences cannot check it here; this is not a wrong backward")
    left, right = k["left"], k["right"]
    lo, hi = min(left, right), max(left, right)
    if kind == "edge":
        what = nodes or "an op on the path"
        head = (f"domain edge at {where}: a step of {k['step']:.2g} leaves the domain of "
                f"{what}")
    else:
        head = (f"kink at {where}: the step crosses a point where {nodes} is not "
                f"differentiable")
    if left != left or right != right:  # one side lies outside the op's domain
        if left != left and right != right:
            return f"{head}; neither side has a slope, so there is nothing to compare with"
        side, v = ("right", right) if left != left else ("left", left)
        verdict = ("is accepted there" if k["inside"] else "is not a number, which no "
                   "slope allows" if analytic != analytic else "has the other sign, which "
                   "that slope does not allow")
        return (f"{head}; only the {side} slope exists ({fmt.num(v)}), and the analytic "
                f"{fmt.num(analytic)} {verdict}")
    inside = "lies inside" if k["inside"] else "lies OUTSIDE"
    return (f"{head}; one-sided slopes {fmt.num(left)} (left) and {fmt.num(right)} (right); "
            f"the analytic {fmt.num(analytic)} {inside} [{fmt.num(lo)}, {fmt.num(hi)}]")


def _taylor_inputs(report):
    """The Taylor records grouped by input, in order: [(name, [record, ...]), ...]."""
    by = {}
    for t in report.taylor:
        by.setdefault(t["wrt"], []).append(t)
    return list(by.items())


def _worst(recs):
    """The direction to show for an input: a failing one (the lowest rate), else a kink,
    else the lowest fitted rate (a direction at rounding level everywhere is the best)."""
    def key(t):
        rank = {"fail": 0, "kink": 1}.get(t["status"], 2)
        rate = t["rate"] if t["rate"] == t["rate"] else math.inf
        return rank, rate
    return min(recs, key=key)


def _input_status(recs):
    statuses = {t["status"] for t in recs}
    return "fail" if "fail" in statuses else "kink" if "kink" in statuses else "ok"


def _taylor_table(report, what, show_all):
    from ..taylor import PASS_RATE

    k = getattr(report, "directions", None) or max(
        (t["direction"] + 1 for t in report.taylor), default=1)
    each = ("for a random direction v per input" if k == 1 else
            f"for {k} random directions v per input")
    out = [Line(f"Taylor test of {what}: {each}, the remainder "
                f"|f(x + h v) - f(x) - h ∇f·v| must fall as h² (as h when the gradient is "
                f"wrong); it passes at a fitted rate >= {PASS_RATE:g}"
                f"{' along every direction' if k > 1 else ''}, with no step or "
                f"tolerance to choose")]
    for name, recs in _taylor_inputs(report):
        shown = recs if show_all else [_worst(recs)]
        for t in shown:
            rate = "-" if t["rate"] != t["rate"] else f"{t['rate']:.2f}"
            head = f"{t['wrt']}: rate {rate}"
            if len(recs) > 1:
                rates = ", ".join("-" if r["rate"] != r["rate"] else f"{r['rate']:.2f}"
                                  for r in recs)
                head += (f" (direction {t['direction'] + 1} of {len(recs)}" +
                         ("" if show_all else
                          f", the {'worst' if _input_status(recs) != 'ok' else 'lowest'}; "
                          f"rates {rates}") + ")")
            out.append(Line(f"\n{head}: {t['why']}", style="bold"))
            out.append(_taylor_steps(t, show_all))
    out += _verdict(report)
    return out


def _taylor_steps(t, show_all):
    tab = _new_table(["h", "|f(x+hv) - f(x)|", "remainder", "rate", ""])
    fitted = set(t.get("fitted", ()))
    ks = range(len(t["h"]))
    if not show_all:  # every 4th step and the fitted ones
        ks = sorted(set(range(0, len(t["h"]), 4)) | fitted)
    prev = None
    for k in ks:
        h, r1 = t["h"][k], t["remainder"][k]
        local = "-"
        if prev is not None and r1 > 0 and t["remainder"][prev] > 0:
            local = f"{math.log(t['remainder'][prev] / r1) / math.log(t['h'][prev] / h):.2f}"
        tab.add_row(f"{h:.2e}", _e(t["remainder_first"][k]), _e(r1), local,
                    "fitted" if k in fitted else "")
        prev = k
    return tab


def _fast_table(report):
    t = _new_table(["wrt", "projection", "analytic u·J·v", "numeric", "abs err", "rel err",
                    "status"])
    for p in report.projections:
        t.add_row(p["wrt"], str(p["projection"]), fmt.num(p["analytic"]),
                  fmt.num(p["numeric"]), _e(p["abs_err"]), _e(p["rel_err"]),
                  _status(p["status"]))
    out = [Line("\n--fast: random projections u·J·v against a directional difference "
                "(a wrong gradient passes all of them with probability about "
                "(0.8 t/|error|)^k for k projections at tolerance t)"), t]
    for p in report.projections:
        if p["status"] != "ok" and "kink" in p:
            out.append(Line("  " + _kink_text(report, f"{p['wrt']} (projection "
                                              f"{p['projection']})", p["analytic"],
                                              p["kink"])))
    failed = sorted({p["wrt"] for p in report.projections if p["status"] == "fail"})
    if failed:
        out.append(Line(f"  projections failed for: {', '.join(failed)}", style="bold red"))
    return out


def _sweep_table(report):
    t = _new_table(["eps", "max abs err", "max rel err", ""])
    def key(r):  # the smallest error as the table shows it: relative, then absolute
        return (float(_e(r["max_rel_err"]).replace("nan", "inf")),
                float(_e(r["max_abs_err"]).replace("nan", "inf")), r["max_rel_err"])
    best = min(report.sweep, key=key)
    for r in report.sweep:
        mark = "← smallest error" if r is best else ""
        t.add_row(f"{r['eps']:.0e}", _e(r["max_abs_err"]), _e(r["max_rel_err"]), mark)
    how = "central differences" if report.method in ("central", "richardson") \
        else _method_text(report)
    return [Line(f"\n--eps-sweep ({how} on up to 64 elements per input): "
                 "large steps lose to truncation (error ~ eps^2), small ones to rounding "
                 "(error ~ 1e-16 / eps)"), t]


def _args_text(rec):
    return ", ".join(r["name"] + (f" (= {r['label']})" if r.get("label") not in
                                  (None, r["name"]) else "")
                     for r in rec["inputs"] if r["status"] == "fail")


def local_lines(report):
    """The per-node checks with a random upstream that failed: why, in words."""
    out = []
    agreed = not any(np.any(ic.status == "fail") for ic in report.inputs) and not any(
        p["status"] == "fail" for p in report.projections) and not any(
        t["status"] == "fail" for t in (report.taylor or ()))
    for rec in report.local:
        if rec["status"] != "fail":
            continue
        head = f"local check: node {rec['node']} {rec['label']} (op {rec['op']})"
        bad = _args_text(rec)
        if bad and agreed:
            why = (f"{head}: with a random upstream gradient its backward disagrees with "
                   f"finite differences for its argument {bad} (max rel err "
                   f"{_e(rec['max_rel_err'])})")
            if rec.get("ones"):
                why += ("; the expression agreed only because the gate received ones as "
                        "its upstream gradient (does backward multiply by dz?)")
            else:
                why += "; the expression's own check did not show it"
            out.append(Line(why, style="bold red"))
        for p in rec.get("problems", ()):
            out.append(Line(f"{head}: {p}", style="bold red"))
    return out


def _verdict(report):
    out = local_lines(report)
    agreed = not any(np.any(ic.status == "fail") for ic in report.inputs) and not any(
        p["status"] == "fail" for p in report.projections) and not any(
        t["status"] == "fail" for t in (report.taylor or ()))
    shown = {rec["node"] for rec in report.local if rec["status"] == "fail" and agreed}
    for b in report.blame:
        if b["node"] in shown:
            continue
        out.append(Line(f"blame: node {b['node']} {b['label']}: backward disagrees with "
                        f"finite differences for its argument {_args_text(b)} (max rel err "
                        f"{_e(b['max_rel_err'])})", style="bold red"))
    if report.failed and not report.blame and not shown:
        out.append(Line("blame: no node's backward is wrong on its own; the mismatch comes "
                        "from their combination (rounding, a too-tight tolerance or a step "
                        "too large for this function: try --eps-sweep)"))
    tail = None
    if report.taylor is not None:
        per_input = _taylor_inputs(report)
        text, word = _tally(np.array([_input_status(recs) for _, recs in per_input],
                                     dtype=object), "input", report)
        text = text.replace("disagree", "do not converge at rate 2").replace(
            "agree", "converge at rate 2")
        k = max((len(recs) for _, recs in per_input), default=1)
        if k > 1:
            text += f" along {k} random directions each"
        rates = [t["rate"] for t in report.taylor if t["rate"] == t["rate"]]
        tail = f"lowest rate {min(rates):.2f}" if rates else "remainders at rounding level"
    elif report.fast:
        text, word = _tally(report.projections and
                            [p["status"] for p in report.projections], "projection", report)
    else:
        unit = ("second derivative" if report.order == 2 else
                "Jacobian entry" if report.jacobian else "element")
        statuses = np.concatenate([ic.status.reshape(-1) for ic in report.inputs]) \
            if report.inputs else np.array([], dtype=object)
        text, word = _tally(statuses, unit, report)
        if report.projections:  # the random-weight projections of a non-scalar output
            ptext, pword = _tally(np.array([p["status"] for p in report.projections],
                                           dtype=object), "random projection", report)
            text += f"; {ptext}"
            word = "FAIL" if "FAIL" in (word, pword) else word
    if report.local:
        n_bad = sum(rec["status"] == "fail" for rec in report.local)
        n = len(report.local)
        text += (f"; {n_bad} of {_plural(n, 'node')} checked on {'its' if n == 1 else 'their'}"
                 f" own with a random upstream {'disagrees' if n_bad == 1 else 'disagree'}"
                 if n_bad else f"; {_plural(n, 'node')} checked on "
                 f"{'its' if n == 1 else 'their'} own with a random upstream "
                 f"{'agree' if n > 1 else 'agrees'}")
        word = "FAIL" if n_bad else word
    style = "bold red" if word == "FAIL" else "bold green"
    if tail is None and not report.fast and report.inputs and not report.local and all(
            np.all(ic.status == "kink") for ic in report.inputs):
        tail = "every element at a kink or pole: nothing to grade"
    if tail is None:
        tail = (f"max abs err {_e(report.max_abs_err)}, max rel err "
                f"{_e(report.max_rel_err)}: {report.grade}")
    out.append(Line(f"\n{word}: {text} ({tail})", style=style))
    return out


def _plural(n, word):
    if n == 1:
        return f"1 {word}"
    return f"{n} {word[:-1] + 'ies' if word.endswith('y') else word + 's'}"


def _tally(statuses, unit, report):
    """("3 of 4 elements agree, 1 at a kink", "PASS") and the like."""
    statuses = np.asarray(statuses if statuses is not None else [], dtype=object)
    n = statuses.size
    fails = int(np.count_nonzero(statuses == "fail"))
    kinks = int(np.count_nonzero(statuses == "kink"))
    at = f", {kinks} at {'a kink' if kinks == 1 else 'kinks'}" if kinks else ""
    if fails:
        return f"{fails} of {_plural(n, unit)} disagree{at}", "FAIL"
    if kinks and report.strict:
        rest = n - kinks
        return (f"{kinks} of {_plural(n, unit)} at {'a kink' if kinks == 1 else 'kinks'}, "
                f"which --strict does not accept; the other {rest} "
                f"{'agrees' if rest == 1 else 'agree'}"), "FAIL"
    return f"{n - kinks} of {_plural(n, unit)} agree{at}", "PASS"


def ops_table(report, **options):
    t = _new_table(["op", "input", "shape", "max abs err", "max rel err", "status"])
    for o in report.ops:
        for r in o["inputs"]:
            t.add_row(o["name"], r["name"], fmt.shape_text(tuple(r["shape"])),
                      _e(r["max_abs_err"]), _e(r["max_rel_err"]), _status(r["status"]))
    out = [Line(f"checking each custom op's backward against central differences at random "
                f"inputs, with a random upstream gradient (seed {report.seed})"), t]
    for o in report.ops:
        for why in o.get("skipped", ()):
            out.append(Line(f"  {o['name']}: not at shape {why}"))
    for o in report.ops:
        for why in o.get("problems", ()):
            out.append(Line(f"  {o['name']}: {why}", style="bold red"))
    bad = [o["name"] for o in report.ops if o["status"] == "fail"]
    n = len(report.ops)
    if bad:
        out.append(Line(f"\nFAIL: {len(bad)} of {n} ops disagree: {', '.join(bad)}",
                        style="bold red"))
    else:
        out.append(Line(f"\nPASS: {n} of {n} ops agree (max rel err {_e(report.max_rel_err)})",
                        style="bold green"))
    return out


def json_text(report, **options):
    """The JSON report as text.  With orjson (a runtime dependency) the per-element records
    are written column by column (:func:`_results_json`): a million records in about a
    second, where building a dict per element and ``json.dumps`` took tens of seconds."""
    results = options.get("results") or "all"
    oj = orjson()
    if oj is None or getattr(report, "ops", None) is not None:
        import json

        return json.dumps(as_json(report, results), allow_nan=False)
    d = _plain(_as_json(report))
    d["results"] = _HOLE
    if results == "problems":
        d["omitted"] = _omitted(report)
    head = oj.dumps(d)
    hole = oj.dumps(_HOLE)
    at = head.index(hole)
    body = b",".join(part for part in (
        _results_json(oj, report, ic, results == "problems") for ic in report.inputs
        if ic.status.size) if part)
    return (head[:at] + b"[" + body + b"]" + head[at + len(hole):]).decode()


#: a placeholder for the results in the head of the report (no report string holds it)
_HOLE = "\x00gradcli check results\x00"


def _number_fields(oj, a):
    """Each number of a float array as JSON text, in C order (nan and inf as the strings
    SPEC gives: orjson writes them as null, which no finite number's text contains)."""
    a = np.ascontiguousarray(np.ravel(a), dtype=np.float64)
    text = oj.dumps(a, option=oj.OPT_SERIALIZE_NUMPY)[1:-1]
    fields = text.split(b",") if a.size else []
    bad = np.flatnonzero(~np.isfinite(a))
    if bad.size:
        v = a[bad]
        words = np.where(np.isnan(v), 0, np.where(v > 0, 1, 2)).tolist()
        quoted = (b'"nan"', b'"inf"', b'"-inf"')
        for k, w in zip(bad.tolist(), words):
            fields[k] = quoted[w]
    return fields


def _index_fields(oj, shape, flat=None):
    """The index of each element (every one in C order, or those at flat positions
    ``flat``) as the text inside its brackets (``3,4``)."""
    n = int(np.prod(shape)) if shape else 1
    m = n if flat is None else len(flat)
    if not shape:
        return [b""] * m
    if m == 0:
        return []
    idx = np.stack(np.unravel_index(np.arange(n) if flat is None else flat, shape),
                   axis=1).astype(np.int64)
    return oj.dumps(idx, option=oj.OPT_SERIALIZE_NUMPY)[2:-2].split(b"],[")


_STATUSES = ("ok", "fail", "kink")
_GRADE_WORDS = ("excellent", "fine", "suspicious", "wrong", "-")
#: fdiff's scale (below 1e-7 excellent, ...): the limits of its first three words
_GRADE_LIMITS = tuple(limit for limit, _ in _FDIFF_GRADES[:3])


def _results_json(oj, report, ic, problems_only=False):
    """One input's records, SPEC's ``results`` entries with the keys and order of
    :func:`rows`, as JSON text joined by commas: every column turned into texts at once,
    then one template per record; a record with a kink is written whole.
    ``problems_only``: the elements that fail or sit at a kink only (nothing is made for
    the others)."""
    n_in = int(np.prod(ic.shape)) if ic.shape else 1
    status = ic.status.reshape(-1)
    sel = np.flatnonzero(status != "ok") if problems_only else None
    if sel is not None and not sel.size:
        return b""

    def pick(a):
        a = np.reshape(a, -1)
        return a if sel is None else a[sel]
    of = getattr(ic, "of", None)
    keys = [b'{"wrt":' + oj.dumps(ic.name) + b',"index":[%s]']
    cols = []
    if of is not None:
        keys.append(b',"of":' + oj.dumps(of))
    if ic.out_shape is not None:
        keys.append(b',"output_index":[%s]')
        if sel is None:
            outs = _index_fields(oj, tuple(ic.out_shape))
            cols.append([o for o in outs for _ in range(n_in)])
            index = _index_fields(oj, ic.shape) * len(outs)
        else:
            cols.append(_index_fields(oj, tuple(ic.out_shape), sel // n_in))
            index = _index_fields(oj, ic.shape, sel % n_in)
    else:
        index = _index_fields(oj, ic.shape, sel)
    cols.insert(0, index)
    keys.append(b',"analytic":%s,"numeric":%s,"abs_err":%s,"rel_err":%s')
    cols += [_number_fields(oj, pick(v)) for v in (ic.analytic, ic.numeric, ic.abs_err,
                                                  ic.rel_err)]
    # status and grade: a few pairs, each written once and taken per element at once
    # (fdiff.grades by numbers: the scale's bucket, raised or lowered to agree with the
    # status, "-" at a kink)
    st = pick(status)
    rel = np.nan_to_num(pick(ic.rel_err), nan=np.inf)
    bucket = np.searchsorted(np.array(_GRADE_LIMITS), rel, side="right")
    fail, kink = st == "fail", st == "kink"
    grade = np.where(st == "ok", np.minimum(bucket, 1), np.maximum(bucket, 2))
    grade[kink] = 4
    code = grade * len(_STATUSES) + np.where(fail, 1, np.where(kink, 2, 0))
    texts = np.array([b',"status":' + oj.dumps(s) + b',"grade":' + oj.dumps(g)
                      for g in _GRADE_WORDS for s in _STATUSES], dtype=object)
    keys.append(b"%s")
    cols.append(texts[code].tolist())
    if ic.err_est is not None:
        keys.append(b',"error_estimate":%s')
        cols.append(_number_fields(oj, pick(ic.err_est)))
    template = b"".join(keys) + b"}"
    records = [template % t for t in zip(*cols)]
    if ic.kinks:
        graph = getattr(ic, "graph", None)
        for pos, k in ic.kinks.items():
            at = pos if sel is None else int(np.searchsorted(sel, pos))
            if sel is not None and (at >= sel.size or sel[at] != pos):
                continue  # an element that passed after all: left out with the others
            rec = records[at]
            records[at] = rec[:-1] + b',"kink":' + oj.dumps(
                _plain(_kink_json(report, k, graph))) + b"}"
    return b",".join(records)


# ---------------------------------------------------------------- check --batch

BATCH_COLUMNS = ["point", "ok", "status", "max_abs_err", "max_rel_err", "grade", "kinks",
                 "blame"]


def batch_line(rec, fmt):
    """One point's record of ``check --batch`` as a CSV row or a JSON line (no newline)."""
    import json

    if fmt == "jsonl":
        return json.dumps(_plain({k: rec[k] for k in BATCH_COLUMNS}), allow_nan=False)
    buf = io.StringIO()
    row = [rec["point"], "true" if rec["ok"] else "false", rec["status"],
           _csv_num(rec["max_abs_err"]), _csv_num(rec["max_rel_err"]), rec["grade"],
           rec["kinks"], "; ".join(rec["blame"])]
    csv.writer(buf, lineterminator="").writerow(row)
    return buf.getvalue()


def _csv_num(x):
    v = to_json(float(x))
    return v if isinstance(v, str) else repr(v)


def batch_header():
    return ",".join(BATCH_COLUMNS)


def batch_verdict(n, failed, kinked, examined):
    """The verdict of ``check --batch`` (on stderr: stdout carries the rows)."""
    if failed:
        more = ""
        if failed > examined:
            more = (f" ({examined} of them checked in full; the others as the vectorised "
                    f"screen found them)")
        return f"FAIL: {failed} of {_plural(n, 'point')} disagree{more}"
    at = f", {kinked} at {'a kink' if kinked == 1 else 'kinks'}" if kinked else ""
    return f"PASS: {n - kinked} of {_plural(n, 'point')} agree{at}"
