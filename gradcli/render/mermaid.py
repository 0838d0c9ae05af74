"""Pictures as Mermaid ``flowchart LR`` text, ready to paste into Markdown (GitHub draws it).

The same picture as the DOT output (:func:`gradcli.render.dot.picture`), spelled in Mermaid:
ellipses become stadiums, the output a double-bordered subroutine box, backward edges dotted
and red (``linkStyle``), failed and kinked nodes filled (``classDef``).
"""
from __future__ import annotations

from . import dot as core

__all__ = ["evaluation", "gradients", "check", "to_mermaid", "text"]

_SHAPES = {"ellipse": ('(["', '"])'), "box": ('["', '"]'), "note": ('>"', '"]')}
_OUTPUT = ('[["', '"]]')


def text(s):
    """Text inside a quoted Mermaid label: its entity codes for the characters Mermaid or
    HTML would read (``#quot;`` style, numeric), so no name can break the chart."""
    return (s.replace("#", "#35;").replace("&", "#38;").replace('"', "#34;")
            .replace("<", "#60;").replace(">", "#62;").replace("|", "#124;")
            .replace("\n", " "))


_STYLE = {"bold": "<b>{}</b>", "plain": "{}", "grad": "<i>{}</i>"}


def _label(lines):
    return "<br/>".join(_STYLE[style].format(text(t)) for t, style in lines)


def to_mermaid(pic):
    title = " ".join(pic.title.split())
    out = ["flowchart LR", f"  %% gradcli: {core.clip(title, 70).replace('%%', '% %')}"]
    for b in pic.boxes:
        left, right = _OUTPUT if b.output else _SHAPES[b.shape]
        out.append(f"  {b.id}{left}{_label(b.lines)}{right}")
    back = []
    for n, (a, b, label, is_back) in enumerate(pic.edges):
        arrow = "-.->" if is_back else "-->"
        src, dst = (b, a) if is_back else (a, b)
        lab = f'|"{text(label)}"|' if label is not None else ""
        out.append(f"  {src} {arrow}{lab} {dst}")
        if is_back:
            back.append(n)
    if back:
        out.append(f"  linkStyle {','.join(map(str, back))} stroke:{core.BACK},color:{core.BACK}")
    classes = {"fail": [], "kink": []}
    for b in pic.boxes:
        if b.mark:
            classes[b.mark].append(b.id)
    outputs = [b.id for b in pic.boxes if b.output]
    if outputs:
        out.append(f"  classDef output stroke:{core.OUT},stroke-width:2px")
        out.append(f"  class {','.join(outputs)} output")
    for kind, color in (("fail", core.FAIL), ("kink", core.KINK)):
        if classes[kind]:
            out.append(f"  classDef {kind} fill:{color}")
            out.append(f"  class {','.join(classes[kind])} {kind}")
    return "\n".join(out) + "\n"


def evaluation(res, **options):
    return core.draw(core._Source.of(res, False), to_mermaid, options)


def gradients(res, **options):
    if getattr(res, "trace", None) is None and getattr(res, "grads", None) is not None:
        res = core._traced(res)
    return core.draw(core._Source.of(res, True), to_mermaid, options)


def check(report, **options):
    options = dict(options, marks=core.check_marks(report))
    return core.draw(core.check_source(report), to_mermaid, options)
