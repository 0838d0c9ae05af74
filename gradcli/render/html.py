"""``gradcli show``: one self-contained HTML page that steps through both passes.

The page walks the forward pass node by node in topological order (each value appears as it
is computed), then the reverse pass from the output back: at every node the upstream
gradient arriving, its local gradient(s) and the downstream gradient sent along each edge,
with a fan-out sum growing as its parts arrive.  The graph is laid out by the real Graphviz
(the picture of ``gradcli dot --grad``, inlined as SVG); the walk itself is data: every step
is computed here, in Python, with the same numbers and the same wording as the ``grad``
table, and embedded once as JSON, so the page's script only replays it (a 1,000-node page
opens and steps at once; no per-node markup is built here).

No network, no CDN: every script and style is inlined, so the file opens from disk and can
be mailed to a class.
"""
from __future__ import annotations

import html as _html
import json
import re

import numpy as np

from . import text as fmt

__all__ = ["show", "page", "page_data", "check_page", "Page"]

#: Elements of one array embedded in full for the node panel; bigger arrays embed a corner.
FULL_LIMIT = 4096
#: Parts of a fan-out sum spelled out in a step's text (the rest is "… (n more)").
FAN_SHOWN = 6


class Page(str):
    """The page's HTML text; a notebook displays it (in an iframe, so its script and style
    stay out of the notebook's own)."""

    def _repr_html_(self):
        return (f'<iframe srcdoc="{_html.escape(str(self), quote=True)}" '
                f'style="width:100%;height:640px;border:1px solid #ddd" '
                f'sandbox="allow-scripts"></iframe>')


# ---------------------------------------------------------------- Python API

def show(program, bindings=None, /, *, wrt=None, upstream=None, output=None,
         dtype="float64", ops=None, collapse=False, max_nodes=None, title=None, **values):
    """The step-through page of ``program`` at the bindings, as HTML text.

        >>> page = gradcli.show("(x+y)*max(y,z)", x=1, y=2, z=0)
        >>> open("page.html", "w").write(page)

    Options as :func:`gradcli.grad`, plus the picture's ``collapse`` and ``max_nodes``
    (as ``gradcli dot``).  In a notebook the returned text displays as the page.
    """
    from .. import engine
    from ..api import _bindings, _names, compile

    graph = compile(program, ops)
    res = engine.differentiate(graph, _bindings(bindings, values), wrt=_names(wrt),
                               upstream=upstream, output=output, dtype=dtype, trace=True)
    return page(res, collapse=collapse, max_nodes=max_nodes, title=title)


def page(res, *, svg=None, title=None, collapse=False, max_nodes=None, notes=None,
         check=None):
    """The page of a :class:`gradcli.engine.Gradients` computed with ``trace=True``.

    ``svg`` is the graph as Graphviz drew it; by default it is drawn here from the
    ``gradcli dot --grad`` picture (``collapse``/``max_nodes`` as there).  ``notes`` are
    lines shown above the graph (the collapse message, the seed note).
    """
    notes = list(notes or [])
    if res.trace is None:
        raise ValueError("page() needs the gradients of differentiate(..., trace=True)")
    members = None
    if svg is None:
        svg, members, more = graph_svg(res, collapse=collapse, max_nodes=max_nodes,
                                       marks=_marks(check))
        notes.extend(more)
    if res.seed_is_ones:
        from .table import seed_note

        notes.append(seed_note(res))
    svg, boxes = annotate_svg(svg, res, members)
    data = page_data(res, boxes, check=check)
    data["notes"] = notes
    heading = title or res.graph.text.strip()
    out = Page(_assemble(heading, svg, data))
    out.notes = notes  # what the command also says on stderr
    return out


# ---------------------------------------------------------------- the walk as data

def page_data(res, boxes=None, check=None):
    """Everything the page's script needs, as plain JSON-able data.

    ``nodes[i]``: label, op, program text, rule lines, the value and gradient as short
    text and as (possibly cornered) nested lists.  ``steps``: the walk; each step names its
    node and phase, its text, the value that appears (``v``), the gradient texts that change
    (``g``: [node, text]), the gradients complete after it (``d``), and the edges it lights
    (``f``: forward [input, node]; ``b``: backward [node, input]).  ``box[i]`` is the
    index of the drawn box that holds node i (None when the picture folded it away).
    """
    from .table import _formula, _paren

    graph, tr = res.graph, res.trace
    nodes = graph.nodes
    order = res.order
    boxes = boxes or {}
    label = _labeller(graph)
    explain = _explain_lines(res)
    out_name = res.output_name

    info, docs = {}, {}
    for i in order:
        node = nodes[i]
        op = node.op
        v = res.values[i]
        g = res.grads[i]
        labels = [label(j) for j in node.inputs]
        kind = op.name if op.name in ("var", "const") else "op"
        rule = []
        if kind == "op":
            for k in range(len(node.inputs)):
                if op.formulas:
                    rule.append(f"∂{_paren(label(i))}/∂{_paren(labels[k])} = "
                                f"{_formula(op, k, labels)}")
            if op.kinks:
                rule.append(f"not differentiable at {op.kinks}")
        d = {"id": i, "label": label(i), "op": op.name, "text": graph.source(i, 200),
             "inputs": list(node.inputs), "shape": list(np.shape(v)), "V": _embed(v),
             "G": None if g is None else _embed(g), "rule": rule, "box": boxes.get(i)}
        docs.setdefault(op.name, op.doc or "")
        if i in explain:
            d["explain"] = explain[i]
        info[i] = d

    steps = [{"k": "start", "n": None,
              "t": f"Start: the program {_quote(graph.text)}. Step through the forward pass "
                   f"(→), which computes every value in topological order, then the reverse "
                   f"pass, which sends gradients back from {out_name}."}]
    fwd = {}
    for i in order:
        node = nodes[i]
        if node.op.name == "const":
            continue
        fwd[i] = len(steps)
        steps.append({"k": "fwd", "n": i, "t": _forward_text(graph, res, i, label),
                      "v": [i] + [j for j in node.inputs if nodes[j].op.name == "const"],
                      "f": [[j, i] for j in node.inputs]})
    steps.append({"k": "turn", "n": res.output,
                  "t": f"Forward pass done: {out_name} = {fmt.array(res.values[res.output])}. "
                       f"The reverse pass starts at {out_name} with the gradient "
                       f"{_seed_text(res)}."})

    parts = {}    # node -> [(consumer, argument, short text)] in arrival order
    running = {}  # node -> the sum so far, as the engine adds it (None: a part is a Peek)
    from ..engine import Peek
    from .table import _cell
    for i in reversed(order):
        node = nodes[i]
        g = res.grads[i]
        if g is None or node.op.name == "const":
            continue
        up = _sum_text(graph, parts.get(i, ()), g, label)
        if i == res.output:
            up = f"{fmt.array(g)} (start" + (f": {_seed_text(res)})" if res.seed_is_ones
                                             else ")")
        step = {"k": "bwd", "n": i, "g": [[i, up]], "d": [i], "b": []}
        if not node.inputs:
            step["t"] = (f"{label(i)}: all its gradient has arrived: {up}, so "
                         f"∂{out_name}/∂{label(i)} = {fmt.array(g)}.")
            steps.append(step)
            continue
        lines = []
        labels = [label(j) for j in node.inputs]
        sent = tr.down.get(i, {})
        for k, j in enumerate(node.inputs):
            if k not in sent:
                continue
            dk = sent[k]
            local = tr.local[i][k]
            rule = _formula(node.op, k, labels)
            if local is not None:
                lv = _cell(local)
                loc = f"∂/∂{_paren(labels[k])} = {rule}" + ("" if rule == lv else f" = {lv}")
                if np.ndim(g) == 0 and np.ndim(local) == 0 and np.ndim(dk) == 0:
                    send = f"{fmt.num(g)} × {lv} = {fmt.num(dk)}"
                else:
                    send = _cell(dk)
                lines.append(f"  {loc}\n      → {labels[k]}: {send}")
            else:
                lines.append(f"  {labels[k]} gets {rule}\n      → {labels[k]}: {_cell(dk)}")
            got = parts.setdefault(j, [])
            got.append((i, k if list(node.inputs).count(j) > 1 else None, _cell(dk)))
            if len(got) == len(tr.into.get(j, ())):
                running[j] = res.grads[j]  # complete: the engine's own sum
            elif isinstance(dk, Peek) or (j in running and running[j] is None):
                running[j] = None  # the trace kept only a peek: the parts, not the sum yet
            else:
                running[j] = dk if j not in running else running[j] + dk
            step["g"].append([j, _sum_text(graph, got, running[j], label)])
            step["b"].append([i, j])
        step["t"] = f"{label(i)}: upstream {up} arrives.\n" + "\n".join(lines)
        steps.append(step)
    grads = ", ".join(f"∂{out_name}/∂{n} = {fmt.array(v)}" for n, v in res.gradients.items())
    steps.append({"k": "end", "n": None,
                  "t": f"Reverse pass done: {grads}." if grads else
                       "Reverse pass done (no inputs to differentiate with respect to)."})

    data = {"output": out_name, "outputId": res.output, "order": list(order),
            "nodes": [info[i] for i in order], "steps": steps, "forward": fwd,
            "ops": docs, "forwardCount": len(fwd), "backwardCount": len(steps) - len(fwd) - 3}
    if check:
        data["check"] = check
    return data


def _labeller(graph):
    cache = {}

    def label(i):
        s = cache.get(i)
        if s is None:
            s = cache[i] = graph.label(i, 40)
        return s
    return label


def _quote(text):
    text = " ".join(text.split())
    return text if len(text) <= 120 else text[:119] + "…"


def _seed_text(res):
    seed = res.grads[res.output]
    if seed is None:
        return "0"
    if res.seed_is_ones:
        return f"ones of shape {fmt.shape_text(np.shape(seed))}"
    return fmt.array(seed)


def _forward_text(graph, res, i, label):
    node = graph.nodes[i]
    op = node.op
    v = fmt.array(res.values[i])
    if op.name == "var":
        return f"{label(i)} = {v} (an input)."
    head = label(i)
    src = graph.source(i, 60)
    if node.name and src and src != node.name:
        head = f"{node.name} = {src}"
    args = [fmt.array(res.values[j]) for j in node.inputs]
    if op.symbol and len(args) == 2:
        body = f"{args[0]} {op.symbol} {args[1]}"
    elif op.symbol and len(args) == 1:
        body = f"{op.symbol}{args[0]}"
    else:
        body = f"{op.name}({', '.join(args)})"
    return f"{head} = {body} = {v}."


def _sum_text(graph, got, total, label):
    """A gradient as it stands: one part as it is, several as ``3 (via a) + 2 (via b) = 5``."""
    if len(got) < 2:
        return got[0][2] if got else fmt.array(total)
    shown = list(got)
    hidden = 0
    if len(shown) > FAN_SHOWN:
        hidden = len(shown) - FAN_SHOWN
        shown = shown[:2] + shown[-(FAN_SHOWN - 2):]
    text = ""
    for n, (i, k, term) in enumerate(shown):
        if hidden and n == 2:
            text += f" + … ({hidden} more)"
        via = f" (via {label(i)}" + (f", argument {k + 1}" if k is not None else "") + ")"
        if n and term.startswith("-") and " " not in term:
            text += f" - {term[1:]}{via}"
        else:
            text += (f" + {term}" if n else term) + via
    return f"{text} = {'…' if total is None else fmt.array(total)}"


def _embed(value):
    """A value for the node panel: nested lists (nan/inf as strings); a big array's corner."""
    from ..values import to_json

    a = np.asarray(value)
    if a.size <= FULL_LIMIT:
        return {"a": to_json(a)}
    if a.ndim == 2:
        r = min(a.shape[0], 64)
        c = min(a.shape[1], FULL_LIMIT // r)
        return {"a": to_json(a[:r, :c]), "corner": [r, c]}
    return {"a": to_json(a.ravel()[:FULL_LIMIT]), "flat": FULL_LIMIT}


def _explain_lines(res):
    """Node id -> lines of ``grad --explain`` about it: an input's chain-rule line (with its
    paths), an op's local derivatives (with why, at a max or a kink)."""
    try:
        from .explain import explain
    except ImportError:  # built by the pictures issue; the page stands without it
        return {}
    try:
        text = explain(res, ascii=False)
    except Exception:  # the explanation is a bonus, never a reason to fail the page
        return {}
    from .table import _paren

    graph = res.graph
    out_name = res.output_name
    heads = {}
    for i in res.order:
        label = graph.label(i, 40)
        heads.setdefault(f"d{_paren(label)}/d".replace(" ", ""), i)
    inputs = {name: graph.names.get(name) for name in res.gradients}
    out, section, current = {}, None, None
    for line in text.splitlines():
        if not line.startswith(" "):
            section = "chain" if line.startswith("chain rule") else \
                "local" if line.startswith("local derivatives") else None
            current = None
            continue
        body = line.strip()
        if section == "chain":
            m = re.match(rf"d{re.escape(out_name)}/d(\S+) = ", body)
            if m and line.startswith("  ") and not line.startswith("   "):
                current = inputs.get(m.group(1))
            if current is not None:
                out.setdefault(current, []).append(line[2:])
        elif section == "local":  # "d(x+y)/dx = 1": the head is up to one of its "/d"s
            tight = body.replace(" ", "")
            at = tight.find("/d")
            while at >= 0:
                i = heads.get(tight[:at + 2])
                if i is not None:
                    out.setdefault(i, []).append(body)
                    break
                at = tight.find("/d", at + 1)
    return out


# ---------------------------------------------------------------- the picture

def graph_svg(res, *, collapse=False, max_nodes=None, marks=None):
    """(SVG text, box title -> node ids, notes): the ``gradcli dot --grad`` picture of
    ``res``, drawn by the real Graphviz, and which nodes each drawn box stands for."""
    from .. import graphviz
    from . import dot

    options = {"collapse": collapse}
    if max_nodes is not None:
        options["max_nodes"] = max_nodes
    pic = dot.picture(dot._Source.of(res, True), marks=marks, **options)
    _short_totals(pic)
    svg = graphviz.run(dot.to_dot(pic), "svg").decode("utf-8")
    return svg, box_members(res, pic), list(pic.notes)


def _short_totals(pic):
    """An input's label keeps its total only (``∂f/∂y = 5``): the page spells the fan-out sum
    out as it grows, and the long line would widen the ellipse while still hidden."""
    for box in pic.boxes:
        if box.shape != "ellipse":
            continue
        for n, (text, style) in enumerate(box.lines):
            if style == "grad" and text.count(" = ") > 1:
                head, total = text.split(" = ", 1)[0], text.rsplit(" = ", 1)[1]
                box.lines[n] = (f"{head} = {total}", style)


def box_members(res, pic):
    """Drawn box id -> the ids of the nodes it stands for (``n7``: node 7; ``s7``: the
    statement ending at node 7; ``more``: the statements too far from the output)."""
    from . import dot

    graph, order = res.graph, res.order
    drawn = {b.id for b in pic.boxes}
    of = dot._statements(graph, order, res.output)
    members = {}
    for i in order:
        if f"n{i}" in drawn:
            members.setdefault(f"n{i}", []).append(i)
        elif f"s{of[i]}" in drawn:
            members.setdefault(f"s{of[i]}", []).append(i)
        elif "more" in drawn and graph.nodes[i].inputs:
            members.setdefault("more", []).append(i)
    return members


_GROUP = re.compile(r'<g id="([^"]*)" class="(node|edge|cluster)">\s*<title>([^<]*)</title>')
_TEXT = re.compile(r"(<text\b)([^>]*>)([^<]*)(</text>)")


def _members_by_title(svg):
    """For an SVG drawn from other DOT: boxes named ``n<id>`` stand for that node."""
    out = {}
    for m in _GROUP.finditer(svg):
        t = re.fullmatch(r"n(\d+)", _html.unescape(m.group(3)))
        if m.group(2) == "node" and t:
            out[t.group(0)] = [int(t.group(1))]
    return out


def annotate_svg(svg, res, members=None):
    """Mark the drawn graph for the page's script: (SVG text, node id -> box index).

    Each node group gets ``data-b`` (its box index), each edge ``data-k`` (``f:a:b`` for a
    forward edge, ``b:a:b`` for a backward one, a and b the boxes in topological order),
    and each text of a box that spells its value or gradient the class ``v`` or ``g``, so
    the page can hide what the walk has not computed yet.
    """
    start = svg.find("<svg")
    svg = svg[start:] if start >= 0 else svg
    if members is None:
        members = _members_by_title(svg)
    ran = set(res.order)
    titles = {}  # box title -> box index
    boxes = {}   # node id -> box index
    rank = []    # box index -> its topological rank (largest node id inside)
    for m in _GROUP.finditer(svg):
        title = _html.unescape(m.group(3))
        ids = [i for i in members.get(title, ()) if i in ran] if m.group(2) == "node" else ()
        if not ids or title in titles:
            continue
        b = titles[title] = len(rank)
        rank.append(max(ids))
        for i in ids:
            boxes.setdefault(i, b)
    # constants folded into their consumer's label belong to the consumer's box
    consumers = {}
    for i in res.order:
        for j in res.graph.nodes[i].inputs:
            consumers.setdefault(j, []).append(i)
    for i in res.order:
        if i not in boxes:
            for c in consumers.get(i, ()):
                if c in boxes:
                    boxes[i] = boxes[c]
                    break
    values = [set() for _ in rank]
    grads = [set() for _ in rank]
    from .dot import value_text

    for i, b in boxes.items():
        values[b].add(value_text(res.values[i]))
        if res.grads[i] is not None:
            grads[b].add(value_text(res.grads[i]))

    pieces = []
    last = 0
    spans = list(_GROUP.finditer(svg))
    for n, m in enumerate(spans):
        end = spans[n + 1].start() if n + 1 < len(spans) else len(svg)
        pieces.append(svg[last:m.start()])
        seg = svg[m.start():end]
        last = end
        kind, title = m.group(2), _html.unescape(m.group(3))
        if kind == "node" and title in titles:
            b = titles[title]
            seg = seg.replace(' class="node">', f' class="node" data-b="{b}">', 1)
            seg = _TEXT.sub(lambda t: _mark_text(t, values[b], grads[b]), seg)
        elif kind == "edge":
            ends = title.split("->")
            if len(ends) == 2 and ends[0] in titles and ends[1] in titles:
                a, c = titles[ends[0]], titles[ends[1]]
                if rank[a] > rank[c]:
                    a, c = c, a
                back = "stroke-dasharray" in seg
                seg = seg.replace(' class="edge">',
                                  f' class="edge" data-k="{"b" if back else "f"}:{a}:{c}">', 1)
        pieces.append(seg)
    pieces.append(svg[last:])
    return "".join(pieces), boxes


_GRAD_WORDS = ("∂", "grad", "∇")


def _mark_text(m, values, grads):
    """Class ``g`` for a label line that shows a gradient, ``v`` for one showing a value."""
    content = _html.unescape(m.group(3)).strip()
    content = re.sub(r"\s*\((start|start: [^)]*)\)$", "", content)
    cls = None
    if any(w in content for w in _GRAD_WORDS):
        if any(content == g or content.endswith((" " + g)) for g in grads):
            cls = "g"
    elif any(content == v or content.endswith("= " + v) for v in values):
        cls = "v"
    if cls is None:
        return m.group(0)
    return f'{m.group(1)} class="{cls}"{m.group(2)}{m.group(3)}{m.group(4)}'


# ---------------------------------------------------------------- the check page

def check_page(report, bindings, *, wrt=None, output=None, collapse=False, max_nodes=None,
               title=None):
    """The page of a gradient check (``gradcli check ... --html page.html``): the walk of
    the reverse pass that was checked, nodes whose backward failed filled red with the blame
    text, nodes at a kink orange with their one-sided slopes, the verdict on top."""
    from .. import engine
    from .checkreport import _verdict

    graph = report.graph
    res = engine.differentiate(graph, bindings, wrt=wrt, output=output, dtype="float64",
                               trace=True)
    check = check_marks(report)
    verdict = [" ".join(str(line).split()) for line in _verdict(report) if str(line).strip()]
    head = title or f"check {graph.text.strip()}"
    return page(res, collapse=collapse, max_nodes=max_nodes, title=head, check=check,
                notes=verdict)


#: Kinks spelled out per node in its panel (the rest are counted).
KINKS_SHOWN = 4


def check_marks(report):
    """Node id -> {"status": "fail"|"kink", "text": ...}: the picture's marks (those of
    ``check --format dot``), each kink with the one-sided slopes the check measured."""
    from . import dot

    marks = {i: {"status": st, "text": text} for i, (st, text) in
             dot.check_marks(report).items()}
    slopes = {}
    for ic in getattr(report, "inputs", ()):
        for flat, rec in (getattr(ic, "kinks", None) or {}).items():
            for m in rec.get("nodes", ()):
                slopes.setdefault(m, []).append(
                    f"{ic.name}{_index_text(ic, flat)}: one-sided slopes "
                    f"{fmt.num(rec['left'])} (left) and {fmt.num(rec['right'])} (right)")
    for m, lines in slopes.items():
        if m in marks and marks[m]["status"] == "kink":
            more = len(lines) - KINKS_SHOWN
            shown = lines[:KINKS_SHOWN] + ([f"… ({more} more)"] if more > 0 else [])
            marks[m]["text"] += "\n" + "\n".join(shown)
    return {str(i): v for i, v in marks.items()}


def _index_text(ic, flat):
    shape = tuple(getattr(ic, "shape", ()) or ())
    if not shape:
        return ""
    return "[" + ", ".join(str(int(k)) for k in np.unravel_index(int(flat), shape)) + "]"


def _marks(check):
    """The picture's marks (node id -> (status, text)) from the page's check data."""
    if not check:
        return None
    return {int(i): (v["status"], v["text"].split("\n")[0]) for i, v in check.items()}


# ---------------------------------------------------------------- assembling the page

def _assemble(heading, svg, data):
    from .page_assets import CSS, JS, TEMPLATE

    blob = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    blob = blob.replace("<", "\\u003c")  # never a "</script>" or "<!--" inside the script
    first = heading.strip().splitlines()[0] if heading.strip() else ""
    short = _quote(first) + (" …" if first != heading.strip() else "")
    program = ""
    if short != heading.strip():
        program = (f'<details class="program"><summary>the whole program</summary>'
                   f'<pre>{_html.escape(heading)}</pre></details>')
    parts = {"TITLE": _html.escape(_quote(heading)), "HEADING": _html.escape(short),
             "PROGRAM": program, "CSS": CSS, "SVG": svg, "DATA": blob, "JS": JS}
    # one pass, so a program that writes "%JS%" in a comment stays text
    return _SLOT.sub(lambda m: parts[m.group(1)], TEMPLATE)


_SLOT = re.compile(r"%(TITLE|HEADING|PROGRAM|CSS|SVG|DATA|JS)%")
