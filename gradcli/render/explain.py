"""``grad --explain``: the chain rule spelled out for each input, with numbers.

For ``(x+y)*max(y,z)`` at 1, 2, 0, with a = x+y and b = max(y,z), the line for y reads

    df/dy = df/da · da/dy + df/db · db/dy = 2·1 + 3·1 = 5

one term per edge out of y (its gradient is the sum over the nodes it feeds: each consumer's
gradient times its local derivative), and then the same sum path by path, each path the
product of the local derivatives along it.  Above that, the local rules, each with its
formula and value (``d max(y,z)/dy = 1 because y > z``; ties and kinks said).  Programs with
very many paths are summarised per edge (the per-edge sums already add up every path),
and the text says so.

Nothing here asks which op a node is: the rules come from the op's formula text.
"""
from __future__ import annotations

import re

import numpy as np

from . import text as fmt

__all__ = ["explain", "needs_ascii", "PATHS", "ascii_text"]

#: Paths listed per input before summarising per edge instead.
PATHS = 12
#: Terms of one sum shown before the middle is elided.
TERMS = 6
#: Nodes whose local rules are listed before the rest are elided.
RULES = 40

_ASCII = {"·": "*", "→": "->", "…": "...", "×": "x", "−": "-", "≥": ">=", "≤": "<=",
          "∂": "d", "—": "-"}


def ascii_text(s):
    """``s`` with this module's symbols spelled in ASCII (``·`` as ``*``, ``→`` as ``->``)."""
    for a, b in _ASCII.items():
        s = s.replace(a, b)
    return s


def explain(res, ascii=False):
    """The chain rule for each input of ``res`` (a :class:`gradcli.engine.Gradients`)."""
    if getattr(res, "trace", None) is None:
        from .dot import _traced

        res = _traced(res)
    text = "\n".join(_Explainer(res).lines()) + "\n"
    return ascii_text(text) if ascii else text


def _label(graph, i):
    return graph.label(i, 24)


_WORD = re.compile(r"[\w.]+")


def _d(label):
    """``label`` as a derivative's variable: ``dy``, ``d max(y,z)``, ``d(x+y)``."""
    from .table import _paren

    if _WORD.fullmatch(label):
        return f"d{label}"
    p = _paren(label)
    return f"d {p}" if p == label else f"d{p}"


def _is_scalar(*vs):
    return all(v is not None and np.ndim(v) == 0 and isinstance(v, (np.ndarray, np.generic,
                                                                    float, int)) for v in vs)


def _value(v):
    from .table import _cell

    return _cell(v)


class _Explainer:
    def __init__(self, res):
        self.res = res
        self.graph = res.graph
        self.tr = res.trace
        self.out = res.output
        self.f = res.output_name
        seed = res.grads[res.output]
        self.seed_one = seed is not None and _is_scalar(seed) and float(seed) == 1.0

    # ------------------------------------------------------------ sections

    def lines(self):
        res, graph = self.res, self.graph
        out = [f"{self.f} = {graph.source(self.out, 60)} = {_value(res.values[self.out])}"]
        if res.values is not None:
            ins = [f"{n} = {_value(res.values[i])}" for n, i in graph.variables.items()
                   if i in set(res.order)]
            if ins:
                out[0] += f"   at {', '.join(ins)}"
        if not self.seed_one:
            seed = res.grads[self.out]
            out.append(f"the reverse pass starts from d{self.f}/d{self.f} = "
                       f"{_value(seed) if seed is not None else 'nothing'}"
                       + (" (ones: the gradient of the sum)" if res.seed_is_ones else ""))
        out.append("")
        out.append("local derivatives (each op's rule for each input, from the output back)")
        out.extend(self.rules())
        out.append("")
        out.append(f"chain rule: d{self.f}/d(input) = sum over the nodes it feeds of "
                   f"d{self.f}/d(node) · d(node)/d(input)")
        variables = graph.variables
        for name in res.gradients:
            i = variables.get(name, graph.names.get(name))
            out.extend(self.chain(name, i))
        return out

    def rules(self):
        tr = self.tr
        shown, total = [], 0
        for i in reversed(self.res.order):
            if i not in tr.down:
                continue
            total += 1
            if len(shown) < RULES:
                shown.extend(self.rule(i))
        if total > RULES:
            shown.append(f"  … ({total - RULES:,} more nodes; the grad table lists every one)")
        return shown or ["  (none: the output is an input)"]

    def rule(self, i):
        graph, tr = self.graph, self.tr
        node = graph.nodes[i]
        labels = [_label(graph, j) for j in node.inputs]
        from .table import _formula

        xs = [self.res.values[j] for j in node.inputs]
        out = []
        for k, j in enumerate(node.inputs):
            if k not in tr.down[i]:
                continue
            head = f"  {_dnode(graph, i)}/{_d(labels[k])}"
            formula = _formula(node.op, k, labels)
            local = tr.local[i].get(k)
            if local is None:
                out.append(f"{head}: {node.op.name} sends {formula} (its vector-Jacobian "
                           f"product; not elementwise)")
                continue
            lv = _value(local)
            line = f"{head} = {formula}" if formula != lv else f"{head} = {lv}"
            if formula != lv:
                line += f" = {lv}"
                why = _because(formula, local) if _is_scalar(local) else None
                if why:
                    line += f" because {why}"
            kink = _kink(node, xs, k, labels)
            if kink:
                line += f"; {kink}"
            out.append(line)
        return out

    # ------------------------------------------------------------ the chain rule

    def chain(self, name, v):
        res, graph, tr = self.res, self.graph, self.tr
        g = res.gradients[name]
        lhs = f"d{self.f}/{_d(name)}"
        if v is None or res.grads[v] is None:
            return [f"  {lhs} = 0 ({self.f} does not depend on {name})"]
        if v == self.out:
            return [f"  {lhs} = {_value(g)} (it is the output)"]
        parts = sorted(tr.into.get(v, []), key=lambda p: p[:2])
        symbols, numbers = [], []
        for c, k, d in parts:
            local = tr.local.get(c, {}).get(k)
            up = res.grads[c]
            dc = _dnode(graph, c)
            if c == self.out and self.seed_one:
                symbols.append(f"{dc}/{_d(name)}")
            else:
                symbols.append(f"d{self.f}/{dc} · {dc}/{_d(name)}")
            if _is_scalar(up, local, d):
                numbers.append(_value(local) if c == self.out and self.seed_one
                               else f"{_value(up)}·{_value(local)}")
            else:
                numbers.append(_value(d))
        line = f"  {lhs} = {_sum(symbols)}"
        if numbers and not (len(numbers) == 1 and numbers[0] == _value(g)):
            line += f" = {_sum(numbers)}"
        line += f" = {_value(g)}"
        out = [line]
        out.extend(self.paths(name, v))
        return out

    def paths(self, name, v):
        """The sum path by path (scalars), or why it is summarised per edge instead."""
        res, tr = self.res, self.tr
        count = _count_paths(res.order, tr.into, v, self.out)
        if count <= 1 and all(c == self.out for c, _, _ in tr.into.get(v, [])):
            return []  # one edge straight into the output: the line above is the path
        if count > PATHS:
            return [f"    {_big(count)} paths from {name} to {self.f}: too many to list; the "
                    f"sum above is per edge (each node's gradient already adds up every "
                    f"path through it)"]
        found = _enumerate_paths(tr.into, v, self.out)
        lines = []
        values = []
        for path in found:   # path: [(node, k), ...] edges from v up to the output
            locals_ = [tr.local.get(c, {}).get(k) for c, k in path]
            if not all(_is_scalar(x) for x in locals_):
                if count == 1:
                    return []  # one path, through arrays: the line above is all of it
                return [f"    {count} path{'s' * (count != 1)} from {name} to {self.f}; "
                        f"they go through arrays, so the sum above is per edge"]
            prod = 1.0
            for x in locals_:
                prod *= float(x)
            if not self.seed_one:
                prod *= float(np.sum(res.grads[self.out])) if _is_scalar(
                    res.grads[self.out]) else float("nan")
            names = [name] + [_label(self.graph, c) for c, _ in path]
            factors = "·".join(_value(x) for x in locals_)
            lines.append(f"    path {' → '.join(names)}: {factors} = {fmt.num(prod)}")
            values.append(prod)
        if len(found) > 1:
            lines.append(f"    sum of the {len(found)} paths = {fmt.num(sum(values))}")
        return lines


def _dnode(graph, i):
    return _d(_label(graph, i))


def _sum(terms):
    if len(terms) > TERMS:
        hidden = len(terms) - TERMS
        terms = terms[:TERMS - 2] + [f"… ({hidden:,} more)"] + terms[-2:]
    out = terms[0]
    for t in terms[1:]:
        out += f" - {t[1:]}" if t.startswith("-") and t[1:2].isdigit() else f" + {t}"
    return out


def _big(n):
    return f"{n:,}" if n < 10 ** 9 else f"about 2^{n.bit_length() - 1}"


def _count_paths(order, into, v, out):
    """How many paths lead from node v up to the output (exact; iterative, linear)."""
    count = {out: 1}
    for i in reversed(order):
        if i == out or i < v:
            continue
        n = 0
        for c, _, _ in into.get(i, ()):
            n += count.get(c, 0)
        if n:
            count[i] = n
    return count.get(v, 0)


def _enumerate_paths(into, v, out):
    """Every path from v to the output as [(consumer, argument), ...] (few: checked before)."""
    # consumers of each node along the way, from the trace
    paths, stack = [], [(v, [])]
    while stack:
        node, path = stack.pop()
        if node == out:
            paths.append(path)
            continue
        for c, k, _ in sorted(into.get(node, ()), key=lambda p: p[:2], reverse=True):
            stack.append((c, path + [(c, k)]))
    return paths


# ---------------------------------------------------------------- why a rule gives its value

_SPLIT = re.compile(r",\s*")


def _clauses(formula):
    """``1 if y > z, 1/2 if y = z, else 0`` -> [("1", "y > z"), ("1/2", "y = z"),
    ("0", None)]; None when the formula is not written by cases."""
    parts, depth, cur = [], 0, ""
    for ch in formula:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    parts.append(cur.strip())
    out = []
    for p in parts:
        if p.startswith("else "):
            out.append((p[5:].strip(), None))
        elif " if " in p:
            value, cond = p.split(" if ", 1)
            out.append((value.strip(), cond.strip()))
        else:
            return None
    return out if len(out) > 1 else None


def _number(text):
    try:
        if "/" in text:
            a, b = text.split("/", 1)
            return float(a) / float(b)
        return float(text)
    except ValueError:
        return None


def _because(formula, local):
    """Which case of a piecewise rule gave ``local``: ``y > z``, or the else case."""
    clauses = _clauses(formula)
    if not clauses:
        return None
    x = float(local)
    conds = [c for _, c in clauses if c]
    for value, cond in clauses:
        n = _number(value)
        if n is None or not np.isclose(n, x, rtol=1e-12, atol=0):
            continue
        if cond:
            return cond
        if len(conds) == 1:
            return f"not {conds[0]}"
        return f"neither {' nor '.join(conds)}"
    return None


def _kink(node, xs, k, labels):
    """``at a kink ...`` when a scalar node sits where its op is not differentiable in input
    k: the op says it may be (its ``kink_side`` is 0 there) and the local derivative just
    left and just right of the point differ."""
    op = node.op
    side = getattr(op, "kink_side", None)
    if side is None or op.partials is None or not all(_is_scalar(x) for x in xs):
        return None
    partial = op.partials[k]
    if partial.__class__ is int:
        return None
    try:
        with np.errstate(all="ignore"):
            s = np.asarray(side(*xs, *node.params))
            if not (s.size and np.any(s == 0)):
                return None
            x = float(xs[k])
            h = 1e-6 * max(1.0, abs(x))

            def at(t):
                moved = list(xs)
                moved[k] = np.asarray(x + t, dtype=np.result_type(xs[k]))
                return float(partial(op.forward(*moved, *node.params), *moved))
            left, right = at(-h), at(h)
    except Exception:  # a rule that cannot run off the point: say nothing
        return None
    if np.isclose(left, right, rtol=1e-3, atol=1e-3):
        return None
    where = f" ({_named(op.kinks, op, labels)})" if op.kinks else ""
    arg = labels[k]
    return (f"a kink{where}: {fmt.num(left)} just below {arg} = {fmt.num(x)}, "
            f"{fmt.num(right)} just above; the value here is gradcli's convention")


def _named(text, op, labels):
    """An op's text (its kinks) with its argument names replaced by the program's."""
    from .table import _CANONICAL, _paren

    names = dict(zip(op.argnames, labels))
    return _CANONICAL.sub(lambda m: _paren(names.get(m.group(1), m.group(1))), text)


def needs_ascii(stream):
    """True when ``stream``'s encoding cannot show ``·`` (and the other symbols used here)."""
    encoding = getattr(stream, "encoding", None) or "ascii"
    try:
        "·→…×".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return True
    return False
