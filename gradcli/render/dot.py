"""Pictures of the graph: Graphviz DOT text (and the drawing core Mermaid shares).

A picture is built once, format-free (:func:`picture`): boxes for ops, ellipses for
variables and constants, forward edges labelled with the value they carry and, with
gradients, backward edges (dashed, red) labelled with the gradient they carry.  Each format
then only spells it (:func:`to_dot` here, :func:`gradcli.render.mermaid.to_mermaid`).

Nothing here asks which op a node is: labels come from the op's name, the statement's name
and the program text the node was made from (``graph.source``).  Ids are the node ids
(``n7``), written in id order, so the same program gives the same bytes.

Big graphs stay readable: constants are folded into their consumer's label (its text already
shows ``x * 2``), ``collapse`` draws one box per statement, and past ``max_nodes`` the
picture collapses by itself (and keeps only the statements nearest the output if that is
still too many), with a note saying so.
"""
from __future__ import annotations

import re

import numpy as np

from ..ops import CONST, VAR
from . import text as fmt

__all__ = ["dot", "evaluation", "gradients", "check", "picture", "to_dot", "repr_svg",
           "MAX_NODES"]

#: Past this many boxes and ellipses the picture collapses by itself (0: no limit).
MAX_NODES = 150
#: Labels longer than this are clipped with an ellipsis (the whole text goes in a tooltip).
LABEL = 40
#: A value feeding more boxes than this is drawn again next to each further consumer
#: (a dashed copy): one node wired to every statement makes Graphviz's layout quadratic.
FAN_OUT = 8
#: Past this many boxes Graphviz is told to spend less effort on edge crossings.
BIG = 60
#: Lines of a label past this length are clipped (gradient sums, array previews).
LONG = 64
#: Elements an array edge label previews.
PREVIEW = 4

BACK = "#c0392b"      # backward edges and gradients
FAIL = "#f4a6a6"      # nodes whose backward failed a check
KINK = "#f8c471"      # nodes at a kink
OUT = "#2c3e50"


class Box:
    """One drawn vertex: its id, shape, label lines and marks."""

    __slots__ = ("id", "shape", "lines", "output", "mark", "tooltip", "copy")

    def __init__(self, id, shape, lines, output=False, mark=None, tooltip=None, copy=False):
        self.copy = copy        # another drawing of a value that feeds many nodes
        self.id = id            # "n7", "s7" (a statement), "more"
        self.shape = shape      # "ellipse", "box", "note"
        self.lines = lines      # [(text, "bold"|"plain"|"grad")]
        self.output = output
        self.mark = mark        # None, "fail", "kink"
        self.tooltip = tooltip


class Picture:
    """Boxes and edges in drawing order, and notes for the user (stderr)."""

    def __init__(self, title):
        self.title = title
        self.boxes = []
        self.edges = []          # (src id, dst id, label or None, backward?)
        self.notes = []


# ---------------------------------------------------------------- text helpers

def clip(s, limit=LABEL):
    return s if len(s) <= limit else s[:limit - 1] + "…"


def value_text(v):
    """A value for an edge label: a number, or shape and a short preview."""
    t = type(v)
    if t is np.ndarray and v.ndim == 0 or t is float or t is np.float64 or t is int:
        x = float(v)
        return "0" if x == 0 else format(x, ".6g")   # as text.num, inline: the hot path
    if v is None:
        return None
    if not isinstance(v, (np.ndarray, np.generic, list)):  # a trace's Peek of an array
        from .table import _cell

        return _cell(v)
    return fmt.array(v, small=PREVIEW)


def _grad_symbol(out_name, label):
    return f"∂{out_name}/∂{label}"


# ---------------------------------------------------------------- the drawing core

class _Source:
    """What a picture is drawn from, whatever the result object (evaluation, check)."""

    def __init__(self, graph, order, output, output_name, values=None, grads=None,
                 trace=None, gradients=None):
        self.graph, self.order, self.output, self.output_name = graph, order, output, \
            output_name
        self.values, self.grads, self.trace, self.gradients = values, grads, trace, gradients

    @classmethod
    def of(cls, res, with_grad):
        return cls(res.graph, res.order, res.output, res.output_name, res.values,
                   getattr(res, "grads", None) if with_grad else None,
                   getattr(res, "trace", None) if with_grad else None,
                   getattr(res, "gradients", None) if with_grad else None)

    def value(self, i):
        return None if self.values is None else self.values[i]


def _folded(graph, order, fold):
    """Ids of the constants drawn inside their consumer's label (unnamed constants)."""
    if not fold:
        return set()
    nodes = graph.nodes
    return {i for i in order if nodes[i].op is CONST and not nodes[i].name}


def _statements(graph, order, output):
    """Node id -> the id of its statement's node (the named op node that ends it).

    Nodes are made in program order, so an unnamed op node belongs to the next named node
    (or the output) after it; variables and constants stand alone.
    """
    nodes = graph.nodes
    of = {}
    pending = []
    for i in order:
        node = nodes[i]
        if node.op is VAR or (node.op is CONST and not node.name):
            of[i] = i
            continue
        pending.append(i)
        if node.name or i == output:
            for p in pending:
                of[p] = i
            pending = []
    for p in pending:   # cannot happen for a parsed program; stay total anyway
        of[p] = p
    return of


def picture(src, *, collapse=False, max_nodes=MAX_NODES, fold_constants=True, marks=None):
    """The format-free picture of ``src`` (a :class:`_Source`)."""
    graph, order = src.graph, src.order
    folded = _folded(graph, order, fold_constants)
    pic = Picture(graph.source(src.output, 60) or src.output_name)
    drawn = len(order) - len(folded)
    if not collapse and max_nodes and drawn > max_nodes:
        collapse = True
        pic.notes.append(f"note: the graph has {drawn:,} nodes, more than --max-nodes "
                         f"{max_nodes}: drawn as one box per statement (--max-nodes 0 draws "
                         f"every node)")
    marks = marks or {}
    import gc

    was = gc.isenabled()
    gc.disable()  # many small objects, no cycles: the collector would only rescan the graph
    try:
        if collapse:
            _collapsed(pic, src, folded, max_nodes, marks)
        else:
            _per_node(pic, src, folded, marks)
        _copies(pic)
        _clip_lines(pic)
    finally:
        if was:
            gc.enable()
    return pic


def _clip_lines(pic):
    """Clip label lines past LONG characters; the whole text goes in the tooltip."""
    for b in pic.boxes:
        for t, _ in b.lines:
            if len(t) > LONG:
                break
        else:
            continue
        if not b.tooltip:
            b.tooltip = "\n".join(t for t, _ in b.lines)
        b.lines = [(clip(t, LONG), st) for t, st in b.lines]


def _copies(pic):
    """Draw a value that feeds more than FAN_OUT boxes again (dashed) beside each consumer
    after the first, so the layout needs no edge that spans the whole picture."""
    from collections import Counter

    edges = pic.edges
    uses = Counter([e[0] for e in edges if not e[3]])
    candidates = {a for a, n in uses.items() if n > FAN_OUT}
    if not candidates:
        return
    fan = {}
    for a, b, _, back in edges:
        if a in candidates and not back:
            fan.setdefault(a, {})[b] = None     # distinct consumers, in drawing order
    many = {a: bs for a, bs in fan.items() if len(bs) > FAN_OUT}
    if not many:
        return
    first = {a: next(iter(bs)) for a, bs in many.items()}
    boxes = {b.id: b for b in pic.boxes if b.id in many}
    made = set()
    for k, (a, b, label, back) in enumerate(edges):
        if a in many and b != first[a]:
            c = f"{a}_{b}"
            if c not in made:
                made.add(c)
                orig = boxes[a]
                pic.boxes.append(Box(c, orig.shape, orig.lines[:1], copy=True,
                                     tooltip=f"{orig.lines[0][0]} again (it feeds "
                                             f"{len(many[a]):,} boxes)"))
            edges[k] = (c, b, label, back)


def _source_lines(src, i):
    """The label of a variable or an unfolded constant."""
    graph = src.graph
    node = graph.nodes[i]
    if node.op is VAR:
        lines = [(clip(node.name), "bold")]
    else:
        name = node.name
        text = clip(graph.source(i)) or value_text(node.value)
        lines = [(clip(f"{name} = {text}") if name else text, "bold" if name else "plain")]
    if src.grads is not None and src.grads[i] is not None and node.op is VAR:
        lines.append((_total_grad(src, i), "grad"))
    return lines


def _total_grad(src, i):
    """``∂f/∂y = 2 (via a) + 3 (via b) = 5``: an input's gradient, fan-out sums spelled out."""
    from .table import _fan_in

    g = src.grads[i]
    head = _grad_symbol(src.output_name, clip(src.graph.label(i), 24))
    fan = _fan_in(src.graph, src.trace.into, i) if src.trace is not None else None
    total = value_text(g)
    return f"{head} = {fan} = {total}" if fan else f"{head} = {total}"


def _op_lines(src, i, folded, text):
    graph = src.graph
    node = graph.nodes[i]
    lines = [(node.op.name, "bold")]
    said = clip(f"{node.name} = {text}") if node.name and text and text != node.name else \
        clip(node.name or text)
    if not text:  # no program text to show the folded constants: name them
        consts = [value_text(graph.nodes[j].value) for j in node.inputs if j in folded]
        if consts:
            said = f"{said} ({', '.join(consts)})" if said else ", ".join(consts)
    if said and said != node.op.name:
        lines.append((said, "plain"))
    return lines


def _out_lines(src, i, lines):
    if i == src.output:
        v = value_text(src.value(i))
        lines.append((f"{clip(src.output_name, 24)} = {v}" if v is not None
                      else f"output {clip(src.output_name, 24)}", "bold"))
    if src.grads is not None and src.graph.nodes[i].op is not VAR:
        g = src.grads[i]
        if g is not None:
            lines.append((f"grad {value_text(g)}" + (" (start)" if i == src.output else ""),
                          "grad"))
    return lines


def _per_node(pic, src, folded, marks):
    graph = src.graph
    nodes = graph.nodes
    tr = src.trace
    grads = src.grads
    values = src.values
    boxes, edges = pic.boxes, pic.edges
    said = {}   # node id -> its value's label (a value feeds many nodes)
    out = src.output
    for i in src.order:
        if i in folded:
            continue
        node = nodes[i]
        nid = f"n{i}"
        mark = marks.get(i)
        if not node.inputs:
            lines = _source_lines(src, i)
            if i == out or grads is not None:
                lines = _out_lines(src, i, lines)
            boxes.append(Box(nid, "ellipse", lines, i == out, *(mark or (None, None))))
            continue
        text = graph.source(i)
        lines = _op_lines(src, i, folded, text)
        if i == out or grads is not None:
            lines = _out_lines(src, i, lines)
        tip = mark[1] if mark else (text if len(text) > LABEL else None)
        boxes.append(Box(nid, "box", lines, i == out, mark[0] if mark else None, tip))
        down = tr.down.get(i, {}) if tr is not None else {}
        for k, j in enumerate(node.inputs):
            if j in folded:
                continue
            if values is None:
                label = None
            else:
                label = said.get(j)
                if label is None:
                    label = said[j] = value_text(values[j])
            edges.append((f"n{j}", nid, label, False))
            if grads is not None:
                d = down.get(k)
                if d is not None:
                    edges.append((f"n{j}", nid, value_text(d), True))


def _sum_text(parts):
    """The gradient a statement sends one value: the sum of what its nodes send it."""
    if len(parts) == 1:
        return value_text(parts[0])
    if all(isinstance(d, (np.ndarray, np.generic, float, int)) for d in parts):
        total = parts[0]
        for d in parts[1:]:
            total = total + d
        return value_text(total)
    # the trace kept only a peek of these big arrays: say what the sum is of
    return f"{'×'.join(map(str, getattr(parts[0], 'shape', ())))} (sum of {len(parts)})"


def _collapsed(pic, src, folded, max_nodes, marks):
    """One box per statement; past ``max_nodes``, only the statements nearest the output."""
    graph = src.graph
    nodes = graph.nodes
    of = _statements(graph, src.order, src.output)
    members = {}
    for i in src.order:
        if i not in folded:
            members.setdefault(of[i], []).append(i)
    heads = list(members)  # in id order: the order of the statements
    sources = [h for h in heads if not nodes[h].inputs]
    statements = [h for h in heads if nodes[h].inputs]
    hidden = set()
    if max_nodes and len(heads) > max_nodes:
        keep = max(1, max_nodes - 1)
        kept = statements[-keep:] if keep < len(statements) else statements
        hidden = set(statements) - set(kept)
        needed = set()
        for h in kept:
            for m in members[h]:
                needed.update(of[j] for j in nodes[m].inputs)
        sources = [s for s in sources if s in needed]
        cut = len(hidden)
        what = f"{cut:,} statements" if cut != 1 else "statement"
        verb = "are" if cut != 1 else "is"
        pic.notes.append(f"note: still {len(heads):,} boxes: the {what} farthest from the "
                         f"output {verb} drawn as one box")
        statements = kept
    grads, tr = src.grads, src.trace
    if hidden:
        n_hidden = sum(len(members[h]) for h in hidden)
        pic.boxes.append(Box("more", "note", [(f"⋯ {len(hidden):,} earlier statement"
                                               + ("s" if len(hidden) != 1 else ""), "bold"),
                                              (f"{n_hidden:,} nodes", "plain")]))
    for h in sorted(sources + statements):
        mark = marks.get(h)
        if h in sources:
            lines = _out_lines(src, h, _source_lines(src, h))
            pic.boxes.append(Box(f"n{h}", "ellipse", lines, h == src.output,
                                 *(mark or (None, None))))
            continue
        group = members[h]
        inner = set(group)
        bad = [marks[m] for m in group if m in marks]
        kind = ("fail" if any(b[0] == "fail" for b in bad) else "kink") if bad else None
        name = nodes[h].name
        text = graph.source(h)
        ops = []
        for m in group:
            if nodes[m].op.name not in ops:
                ops.append(nodes[m].op.name)
        head = clip(f"{name} = {text}" if name and text != name else (name or text or
                                                                       nodes[h].op.name))
        lines = [(head, "bold"), (clip(", ".join(ops)) + (f" ({len(group)} ops)"
                                                          if len(group) > 1 else ""), "plain")]
        lines = _out_lines(src, h, lines)
        tip = "\n".join(b[1] for b in bad) if bad else (text if len(text) > LABEL else None)
        pic.boxes.append(Box(f"s{h}", "box", lines, h == src.output, kind, tip))
        # edges from outside the statement, once per value that comes in
        seen = []
        for m in group:
            for j in nodes[m].inputs:
                if j in inner or j in folded or j in seen:
                    continue
                seen.append(j)
        for j in seen:
            s = of[j]
            sid = "more" if s in hidden else (f"n{s}" if not nodes[s].inputs else f"s{s}")
            pic.edges.append((sid, f"s{h}", value_text(src.value(j)), False))
            if grads is not None and tr is not None:
                parts = [d for i, _, d in tr.into.get(j, ()) if i in inner]
                if parts:
                    pic.edges.append((sid, f"s{h}", _sum_text(parts), True))


# ---------------------------------------------------------------- DOT

_HTML = re.compile(r'[&<>"]')
_QUOTED = re.compile(r'["\\\n\r]')


def html(s):
    """Text for an HTML-like label: & < > and quotes escaped."""
    if _HTML.search(s) is None:
        return s
    return (s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def quoted(s):
    """A DOT double-quoted string (also an escString: backslashes doubled)."""
    if _QUOTED.search(s) is None:
        return f'"{s}"'
    return '"' + (s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
                  .replace("\r", "")) + '"'


_STYLE = {"bold": "<B>{}</B>", "plain": "{}", "grad": f'<FONT COLOR="{BACK}">{{}}</FONT>'}


def to_dot(pic):
    """DOT text of a picture: one statement per line, in the picture's order."""
    import gc

    was = gc.isenabled()
    gc.disable()
    try:
        return _to_dot(pic)
    finally:
        if was:
            gc.enable()


def _label(lines, _plain=_HTML.search):
    """An HTML-like label's inside; escaping only when some line needs it (rarely)."""
    if len(lines) == 1:
        t, st = lines[0]
        if _plain(t) is not None:
            t = html(t)
        return f"<B>{t}</B>" if st == "bold" else _STYLE[st].format(t)
    (t0, s0), (t1, s1) = lines[0], lines[1]
    if len(lines) == 2 and s0 == "bold" and s1 == "plain" and _plain(t0) is None \
            and _plain(t1) is None:
        return f"<B>{t0}</B><BR/>{t1}"   # an op and its text: most boxes of a big graph
    return "<BR/>".join([_STYLE[st].format(html(t)) for t, st in lines])


def _to_dot(pic):
    """DOT text of a picture: one statement per line, in the picture's order."""
    title = " ".join(pic.title.split())
    effort = ", mclimit=0.1, nslimit=2, nslimit1=2" if len(pic.boxes) > BIG else ""
    out = [f"// gradcli: {clip(title, 70)}",
           "digraph gradcli {",
           f'  graph [rankdir=LR, fontname="Helvetica", nodesep=0.3, ranksep=0.5{effort}];',
           '  node [fontname="Helvetica", fontsize=11, margin="0.12,0.06"];',
           '  edge [fontname="Helvetica", fontsize=9, arrowsize=0.7];']
    add = out.append
    output = f', peripheries=2, penwidth=1.6, color="{OUT}"'
    for b in pic.boxes:
        line = f"  {b.id} [shape={b.shape}, label=<{_label(b.lines)}>"
        if b.output:
            line += output
        if b.mark:
            line += f', style=filled, fillcolor="{FAIL if b.mark == "fail" else KINK}"'
        elif b.shape == "note" or b.copy:
            line += ", style=dashed"
        if b.tooltip:
            line += f", tooltip={quoted(b.tooltip)}"
        add(line + "];")
    back = f'dir=back, style=dashed, color="{BACK}", fontcolor="{BACK}"'
    plain = _QUOTED.search
    for a, b, label, is_back in pic.edges:
        if label is None:
            add(f"  {a} -> {b} [{back}];" if is_back else f"  {a} -> {b};")
            continue
        label = f'"{label}"' if plain(label) is None else quoted(label)
        add(f"  {a} -> {b} [{back}, label={label}];" if is_back
            else f"  {a} -> {b} [label={label}];")
    out.append("}")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- the registry's functions

def _emit_notes(pic, notes):
    if notes is not None:
        notes.extend(pic.notes)
    elif pic.notes:
        import click

        for n in pic.notes:
            click.echo(n, err=True)


def _options(options):
    return {k: options[k] for k in ("collapse", "max_nodes", "fold_constants")
            if k in options and options[k] is not None}


def draw(src, to_text, options):
    pic = picture(src, marks=options.get("marks"), **_options(options))
    _emit_notes(pic, options.get("notes"))
    return to_text(pic)


def evaluation(res, **options):
    """The graph with the value on every forward edge."""
    return draw(_Source.of(res, False), to_dot, options)


def gradients(res, **options):
    """Also the backward edges, labelled with the gradients they carry."""
    if getattr(res, "trace", None) is None and getattr(res, "grads", None) is not None:
        res = _traced(res)
    return draw(_Source.of(res, True), to_dot, options)


def _traced(res):
    """A result whose per-edge trace was not recorded: the reverse pass again, recorded."""
    from .. import engine

    ev = engine.Evaluation(res.graph, res.order, res.values, res.output, res.output_name,
                           res.dtype, [], res.states)
    targets = {name: res.graph.names.get(name) for name in res.gradients}
    targets = {n: (i if i in set(res.order) else None) for n, i in targets.items()}
    seed = res.grads[res.output]
    if seed is None:
        return res
    grads, tr = engine._backward(ev, targets, seed, True)
    out = engine.Gradients(ev, grads, res.gradients, res.seed_is_ones, tr)
    out.upstream_given = res.upstream_given
    return out


def check_source(report):
    """What a check report is drawn from: its graph, and its values when it kept them."""
    graph = report.graph
    ref = getattr(report, "ref", None)
    if ref is not None:
        return _Source(graph, ref.order, ref.output, ref.output_name, ref.values)
    output = graph.names.get(report.output_name, graph.output)
    return _Source(graph, graph.ancestors(output), output, report.output_name)


def check_marks(report):
    """Node id -> ("fail", blame text) or ("kink", where) from a check report."""
    graph = report.graph
    marks = {}
    kinks = {}
    for ic in getattr(report, "inputs", ()):
        for rec in getattr(ic, "kinks", {}).values():
            if rec.get("inside"):
                for m in rec.get("nodes", ()):
                    kinks.setdefault(m, set()).add(ic.name)
    for p in getattr(report, "projections", ()):
        rec = p.get("kink") if isinstance(p, dict) else None
        if rec and rec.get("inside"):
            for m in rec.get("nodes", ()):
                kinks.setdefault(m, set()).add(p.get("wrt", "?"))
    for m, names in kinks.items():
        node = graph.nodes[m]
        where = f" ({node.op.kinks})" if node.op.kinks else ""
        marks[m] = ("kink", f"{graph.source(m, 60)}: at a kink{where} for "
                            f"{', '.join(sorted(names))}")
    blamed = list(getattr(report, "blame", ()) or ())
    blamed += [r for r in getattr(report, "local", ()) or ()
               if isinstance(r, dict) and r.get("status") == "fail" and "node" in r]
    for b in blamed:
        i = b["node"]
        bad = [r for r in b.get("inputs", ()) if r.get("status") == "fail"]
        which = ", ".join(f"input {r['input'] + 1} ({r.get('label', r.get('name'))})"
                          for r in bad)
        err = b.get("max_rel_err")
        marks[i] = ("fail", f"{graph.source(i, 60)} ({graph.nodes[i].op.name}): its backward "
                            f"disagrees with finite differences"
                            + (f" for {which}" if which else "")
                            + (f", max relative error {fmt.num(err)}" if err is not None
                               else ""))
    return marks


def check(report, **options):
    """The checked graph: nodes whose backward failed filled red, nodes at a kink orange."""
    options = dict(options, marks=check_marks(report))
    return draw(check_source(report), to_dot, options)


# ---------------------------------------------------------------- the Python API

def dot(program, bindings=None, /, *, grad=False, format="dot", collapse=False,
        max_nodes=MAX_NODES, wrt=None, upstream=None, output=None, dtype="float64", ops=None,
        **values):
    """DOT text (or Mermaid, ``format="mermaid"``) of a program's graph.

        >>> print(gradcli.dot("(x+y)*max(y,z)", x=1, y=2, z=0, grad=True))

    Without bindings the graph is drawn without values.  Notes about a big graph collapsing
    go to the ``notes`` of the result, not to stderr: call :func:`picture` for them.
    """
    from ..api import _bindings, _names, compile

    graph = compile(program, ops)
    res = result(graph, _bindings(bindings, values), grad=grad, wrt=_names(wrt),
                 upstream=upstream, output=output, dtype=dtype)
    kind = "gradients" if grad else "evaluation"
    return render_as(format, kind, res, collapse=collapse, max_nodes=max_nodes, notes=[])


def render_as(format, kind, res, **options):
    from .. import render

    return render.render(format, kind, res, **options)


class Unbound:
    """The graph of a program without values (no bindings given): structure only."""

    def __init__(self, graph, output=None):
        from ..engine import resolve_output

        self.graph = graph
        self.output, self.output_name = resolve_output(graph, output)
        self.order = graph.ancestors(self.output)
        self.values = None


def result(graph, bindings, *, grad=False, wrt=None, upstream=None, output=None,
           dtype="float64"):
    """What to draw: the forward (and with ``grad`` the traced reverse) pass, or, with no
    bindings at all for a program that has variables, the bare structure."""
    from .. import engine

    if not bindings and graph.variables and not grad:
        return Unbound(graph, output)
    if grad:
        return engine.differentiate(graph, bindings, wrt=wrt, upstream=upstream,
                                    output=output, dtype=dtype, trace=True)
    return engine.evaluate(graph, bindings, output=output, dtype=dtype)


def repr_svg(res):
    """SVG text of a result's graph for notebooks (``_repr_svg_``), or None without dot."""
    from .. import graphviz

    if not graphviz.available():
        return None
    grads = getattr(res, "grads", None) is not None
    text = gradients(res, notes=[]) if grads else evaluation(res, notes=[])
    try:
        return graphviz.run(text, "svg").decode("utf-8")
    except Exception:  # a notebook shows the repr instead of a traceback
        return None
