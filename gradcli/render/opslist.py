"""The op library as rows for ``gradcli ops``: name, call, PyTorch equivalent, derivative
rule, kinks, domain."""
from __future__ import annotations

import os

from .. import ops as oplib


#: Other spellings of an operator in the grammar (grammar/expr.lark: POW is "**" or "^").
_ALSO = {"**": "^"}
#: Families listed first (the operators), then the rest in the library's order; the shape
#: helpers the engine uses (sum_to, broadcast_to) go with the other shape ops.
_FIRST = ("add", "sub", "mul", "div", "neg", "pow", "lt", "le", "gt", "ge", "eq", "ne")
_WITH_SHAPES = ("reshape", "broadcast_to", "sum_to")


def _params(op, keyword_only_mark=False):
    parts = []
    for p in op.signature[op.lead:]:
        if p.required and p.positional:
            parts.append(p.name)
        else:
            parts.append(f"{p.name}={oplib.literal(p.default)}" if not p.required
                         else f"{p.name}=...")
    return parts


def _signature(op, name):
    """``sum(x, axis=None, keepdims=false)``, ``einsum(subscripts, a, b, ...)``."""
    lead = [p.name for p in op.signature[:op.lead]]
    if op.arity is None:
        args = ["a", "b", "..."]
    else:
        args = list(op.argnames[:op.arity])
    if op.name.startswith("conv") and op.arity == 3:
        args = ["x", "w[, b]"]
    return f"{name}({', '.join(lead + args + _params(op))})"


def _call(op, names):
    """Every way to write the op: ``a ** b, a ^ b, pow(a, b)``."""
    args = list(op.argnames[:op.arity or 0])
    calls = []
    if op.symbol:
        for sym in (op.symbol, _ALSO.get(op.symbol)):
            if sym:
                calls.append(f"{sym}{args[0]}" if op.arity == 1 else
                             f"{args[0]} {sym} {args[1]}")
    calls += [_signature(op, name) for name in names]
    return ", ".join(calls)


def _rule(op):
    """An elementwise op's local derivative per input (d/da = b), or, for the others, the
    gradient each input gets from the gradient g arriving from above (a gets g @ ...)."""
    names = op.argnames[:op.arity] if op.arity else ("each item",)
    if op.partials is not None:
        return "; ".join(f"d/d{n} = {f}" for n, f in zip(names, op.formulas))
    return "; ".join(f"{n} gets {f}" for n, f in zip(names, op.formulas))


def _ordered():
    ops = [op for op in oplib.BUILTINS if op.public and op.listed]
    first = [op for name in _FIRST for op in ops if op.name == name and op.symbol]
    rest = [op for op in ops if op not in first and op.name not in _WITH_SHAPES]
    shapes = [op for name in _WITH_SHAPES for op in ops if op.name == name]
    at = next((k for k, op in enumerate(rest) if op.name == "flatten"), len(rest))
    return first + rest[:at] + shapes + rest[at:]


def rows(library=None):
    out = []
    for op in _ordered():
        names = sorted({n for (n, _), o in oplib.CALLABLE.items() if o is op})
        names += sorted(n for n, o in oplib.VARIADIC.items() if o is op and n not in names)
        out.append({"name": op.name, "call": _call(op, names), "arity": op.arity,
                    "torch": op.torch, "derivative": _rule(op), "kinks": op.kinks,
                    "domain": op.domain, "doc": op.doc})
    for op in (library.custom.values() if library is not None else ()):
        out.append({"name": op.name, "call": _call(op, [op.name]), "arity": op.arity,
                    "torch": None,
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

    t = Table("op", "call", "PyTorch", "derivative rule (g: the gradient from above)",
              "not differentiable at", "domain")
    for r in rows:
        t.add_row(r["name"], r["call"], r["torch"] or "", r["derivative"], r["kinks"] or "",
                  r["domain"] or "")
    return [t]


def csv_text(rows, **options):
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["name", "call", "arity", "torch", "derivative", "kinks", "domain"])
    for r in rows:
        w.writerow([r["name"], r["call"], "" if r["arity"] is None else r["arity"],
                    r["torch"] or "", r["derivative"], r["kinks"] or "", r["domain"] or ""])
    return buf.getvalue()


def json_text(rows, **options):
    import json

    return json.dumps({"ops": rows})
