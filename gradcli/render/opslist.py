"""The op library as rows for ``gradcli ops``: name, call, derivative rule, kinks, domain."""
from __future__ import annotations

import os

from .. import ops as oplib


#: Other spellings of an operator in the grammar (grammar/expr.lark: POW is "**" or "^").
_ALSO = {"**": "^"}


def _call(op, names):
    """Every way to write the op: ``a ** b, a ^ b, pow(a, b)``."""
    args = list(op.argnames[:op.arity])
    calls = []
    if op.symbol:
        for sym in (op.symbol, _ALSO.get(op.symbol)):
            if sym:
                calls.append(f"{sym}{args[0]}" if op.arity == 1 else
                             f"{args[0]} {sym} {args[1]}")
    extra = "".join(f"[, {p}]" for p in op.params)
    calls += [f"{name}({', '.join(args)}{extra})" for name in names]
    return ", ".join(calls)


def _rule(op):
    """An elementwise op's local derivative per input (d/da = b), or, for the others, the
    gradient each input gets from the gradient g arriving from above (a gets g @ ...)."""
    names = op.argnames[:op.arity]
    if op.partials is not None:
        return "; ".join(f"d/d{n} = {f}" for n, f in zip(names, op.formulas))
    return "; ".join(f"{n} gets {f}" for n, f in zip(names, op.formulas))


def rows(library=None):
    out = []
    for op in oplib.BUILTINS:
        if not op.public:
            continue
        names = sorted({n for (n, _), o in oplib.CALLABLE.items() if o is op})
        out.append({"name": op.name, "call": _call(op, names), "arity": op.arity,
                    "derivative": _rule(op), "kinks": op.kinks, "domain": op.domain,
                    "doc": op.doc})
    for op in (library.custom.values() if library is not None else ()):
        out.append({"name": op.name, "call": _call(op, [op.name]), "arity": op.arity,
                    "derivative": f"{op.gate.__name__}.backward (custom, "
                                  f"{os.path.basename(op.path)})",
                    "kinks": getattr(op.gate, "kinks", None), "domain": _domain(op),
                    "doc": op.doc})
    return out


def _domain(op):
    if not op.sample_domain:
        return None
    return ", ".join(f"{n}: {d if isinstance(d, str) else f'({d[0]}, {d[1]})'}"
                     for n, d in zip(op.argnames, op.sample_domain))


def table(rows, **options):
    from .layout import Table

    t = Table("op", "call", "derivative rule (g: the gradient from above)",
              "not differentiable at", "domain")
    for r in rows:
        t.add_row(r["name"], r["call"], r["derivative"], r["kinks"] or "", r["domain"] or "")
    return [t]


def csv_text(rows, **options):
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["name", "call", "arity", "derivative", "kinks", "domain"])
    for r in rows:
        w.writerow([r["name"], r["call"], r["arity"], r["derivative"], r["kinks"] or "",
                    r["domain"] or ""])
    return buf.getvalue()


def json_text(rows, **options):
    import json

    return json.dumps({"ops": rows})
