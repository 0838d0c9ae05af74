"""The eval and grad tables for people (drawn by layout.show: Rich on a terminal, else plain).

The ``grad`` table walks the graph the way the reverse pass does, from the output back, and
shows at every node the seed's lesson: the upstream gradient that arrives, the local
gradient for each input, and the downstream gradient sent to each input
(downstream = upstream x local), with fan-out sums spelled out.
"""
from __future__ import annotations

import re

import numpy as np

from . import text as fmt
from .layout import Line, Table
from .text import Cell, Num


# ---------------------------------------------------------------- eval

def evaluation(res, **options):
    graph = res.graph
    t = Table(("#", "right"), "node", "op", "inputs", "value", optional=("inputs",), keys=2)
    for i in res.order:
        node = graph.nodes[i]
        t.add_row(str(i), graph.label(i), node.op.name,
                  ", ".join(graph.label(j) for j in node.inputs),
                  fmt.array_parts(res.values[i]))
    footer = Line(f"{res.output_name} = {fmt.array(res.values[res.output], small=64)}", "bold")
    return [t, footer]


# ---------------------------------------------------------------- grad

_CANONICAL = re.compile(r"\b([abcx])\b")


_ATOM = re.compile(r"[\w.]+(\([^()]*\))?|\([^()]*\)")


def _paren(label):
    """``label`` as an operand: wrapped in parentheses unless it is a name, number or call."""
    return label if _ATOM.fullmatch(label) else f"({label})"


def _formula(op, k, labels):
    """The op's rule for input k, with its canonical argument names replaced by labels."""
    names = dict(zip(op.argnames, labels))
    text = op.formulas[k] if k < len(op.formulas) else op.formulas[-1]
    if text in names:
        return names[text]

    def sub(m):
        label = names.get(m.group(1), m.group(1))
        s, a, b = m.string, m.start(), m.end()
        alone = a > 0 and s[a - 1] == "(" and b < len(s) and s[b] == ")"  # f(x): as is
        return label if alone else _paren(label)
    return _CANONICAL.sub(sub, text)


def _cell(v):
    """A traced value as text: as ``fmt.array`` prints it, for an array or a Peek."""
    return _cell_parts(v).text()


def _cell_parts(v):
    """:func:`_cell` as a :class:`Cell` of numbers (a table may print them shorter)."""
    from ..engine import Peek

    if not isinstance(v, Peek):
        return fmt.array_parts(v)
    parts = ["×".join(map(str, v.shape)) + " ["]
    for k, x in enumerate(v.head):
        parts += [", "] * bool(k) + [Num(x)]
    parts += [", …, ", Num(v.last), "]"] if v.size > 3 else ["]"]
    return Cell(parts)


def _scalar(*values):
    return all(np.ndim(v) == 0 for v in values)


_FAN_SHOWN = 6


def _fan_in(graph, into, j):
    """``2 (via a) + 3 (via b) = 5`` for a value that fans out to several nodes (text)."""
    parts = _fan_parts(graph, into, j)
    return None if parts is None else parts.text()


def _fan_parts(graph, into, j):
    """:func:`_fan_in` as a :class:`Cell` of numbers, or None."""
    parts = sorted(into.get(j, []), key=lambda p: p[:2])
    if len(parts) < 2:
        return None
    consumers = [i for i, _, _ in parts]
    hidden = 0
    if len(parts) > _FAN_SHOWN:  # a value used 25,000 times: show the ends of the sum
        hidden = len(parts) - _FAN_SHOWN
        parts = parts[:_FAN_SHOWN - 2] + parts[-2:]
    text = Cell()
    for n, (i, k, d) in enumerate(parts):
        if hidden and n == _FAN_SHOWN - 2:
            text += f" + … ({hidden} more)"
        term = _cell_parts(d)
        if n and term.startswith("-") and np.ndim(d) == 0:
            text += Cell([" - ", Num(-float(d))])
        else:
            text += Cell([" + ", term]) if n else term
        which = f", argument {k + 1}" if consumers.count(i) > 1 else ""
        text += f" (via {graph.label(i)}{which})"
    return text


def gradients(res, **options):
    graph, tr = res.graph, res.trace
    t = Table(("#", "right"), "node", "value", "upstream", "local gradient", "downstream",
              optional=("local gradient",), keys=2)
    for i in reversed(res.order):
        node = graph.nodes[i]
        g = res.grads[i]
        if g is None:
            if node.op.name == "const":
                continue
            t.add_row(str(i), graph.label(i), fmt.array_parts(res.values[i]), "—", "", "")
            continue
        fan = _fan_parts(graph, tr.into, i)
        up = fmt.array_parts(g)
        if fan:
            up = fan + " = " + up
        if i == res.output:
            up = up + " (start)"
        locs, downs = [], []
        labels = [graph.label(j) for j in node.inputs]
        for k, j in enumerate(node.inputs):
            if k not in tr.down.get(i, {}):
                continue
            d = tr.down[i][k]
            local = tr.local[i][k]
            if local is not None:
                lv = _cell_parts(local)
                rule = _formula(node.op, k, labels)
                locs.append(f"∂/∂{_paren(labels[k])} = {rule}"
                            + ("" if rule == lv else " = " + lv))
                if _scalar(g, local, d):
                    downs.append(Cell([f"→ {labels[k]}: ", Num(g), " × ", lv, " = ",
                                       Num(d)]))
                else:
                    downs.append(f"→ {labels[k]}: " + _cell_parts(d))
            else:
                locs.append(f"{labels[k]} gets {_formula(node.op, k, labels)}")
                downs.append(f"→ {labels[k]}: " + _cell_parts(d))
        t.add_row(str(i), graph.label(i), fmt.array_parts(res.values[i]), up,
                  Cell.join("\n", locs), Cell.join("\n", downs))
    out = [t]
    head = (f"upstream · ∂{res.output_name}/∂input" if res.upstream_given
            else f"∂{res.output_name}/∂input")
    g = Table("input", "shape", head)
    variables = graph.variables
    for name, grad in res.gradients.items():
        i = variables.get(name, graph.names.get(name))  # an input, even if reassigned
        fan = _fan_parts(graph, tr.into, i)
        value = fmt.array_parts(grad, small=64)
        g.add_row(name, fmt.shape_text(grad.shape), fan + " = " + value if fan else value)
    if res.gradients:
        out.append(g)
    else:
        out.append(Line("(no inputs to differentiate with respect to)"))
    if res.seed_is_ones:
        out.append(Line(seed_note(res)))
    return out


def seed_note(res):
    shape = np.shape(res.values[res.output])
    return (f"note: {res.output_name} has shape {fmt.shape_text(shape)}, not a scalar: the "
            f"reverse pass starts from ones, so these are the gradients of "
            f"sum({res.output_name})")

