"""Tables and lines for people, apart from how they are drawn.

The renderers build :class:`Table` and :class:`Line` objects; :func:`show` draws them with
Rich on a terminal (colour, bold headers, wrapping to the window) and as plain aligned text
when the output is piped or ``NO_COLOR`` is set.  The plain drawing is done here, in one
pass: a 100,000-row table prints in a second instead of a minute of Rich's layout, and what
scripts and golden files see does not depend on Rich's version.
"""
from __future__ import annotations

import os
import sys

GAP = "   "      # between columns
RULE = "─"       # under the header


class Styled(str):
    """A string with a Rich style for the terminal (``"bold red"``); plain text ignores it."""

    def __new__(cls, text, style=None):
        obj = super().__new__(cls, text)
        obj.style = style
        return obj


class Line(Styled):
    """A line of text between tables."""


class Table:
    """Columns (name, justification) and rows of cells; a cell may span several lines."""

    def __init__(self, *columns):
        self.columns = [(c, "left") if isinstance(c, str) else c for c in columns]
        self.rows = []

    def add_row(self, *cells):
        self.rows.append([c if isinstance(c, str) else str(c) for c in cells])


def _plain_table(t):
    heads = [name for name, _ in t.columns]
    just = [j for _, j in t.columns]
    cells = [[c.split("\n") for c in row] for row in t.rows]
    widths = [len(h) for h in heads]
    for row in cells:
        for k, lines in enumerate(row):
            for line in lines:
                if len(line) > widths[k]:
                    widths[k] = len(line)

    def fit(k, s):
        return s.rjust(widths[k]) if just[k] == "right" else s.ljust(widths[k])

    out = [GAP.join(fit(k, h) for k, h in enumerate(heads)).rstrip()]
    out.append(RULE * (sum(widths) + len(GAP) * (len(widths) - 1)))
    for row in cells:
        height = max(len(lines) for lines in row)
        for r in range(height):
            out.append(GAP.join(fit(k, lines[r] if r < len(lines) else "")
                                for k, lines in enumerate(row)).rstrip())
    return "\n".join(out)


def plain(items):
    """Everything as plain text, one string ending in a new line."""
    parts = [_plain_table(it) if isinstance(it, Table) else str(it).rstrip() for it in items]
    return "\n".join(parts) + "\n"


def _rich(item):
    from rich import box
    from rich.table import Table as RichTable
    from rich.text import Text

    if not isinstance(item, Table):
        return Text(str(item), style=getattr(item, "style", None) or "")
    t = RichTable(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    for name, justify in item.columns:
        t.add_column(name, justify=justify)
    for row in item.rows:
        t.add_row(*[Text(c, style=getattr(c, "style", None) or "") for c in row])
    return t


def is_plain(stream):
    """Plain text unless writing to a terminal; NO_COLOR (set and not empty) asks for plain."""
    return bool(os.environ.get("NO_COLOR")) or not (hasattr(stream, "isatty")
                                                    and stream.isatty())


def show(items, stream=None):
    """Draw tables and lines: with Rich on a terminal, as plain text otherwise."""
    stream = stream or sys.stdout
    if is_plain(stream):
        stream.write(plain(items))
        return
    from rich.console import Console

    console = Console(file=stream, highlight=False, emoji=False)
    for item in items:
        if isinstance(item, Table):
            text = _plain_table(item)
            if max(len(line) for line in text.splitlines()) > console.width:
                # wider than the window: Rich would wrap each cell on its own and pull a
                # row's lines apart; keep rows whole and let the terminal fold long lines
                console.print(text, soft_wrap=True, markup=False)
                continue
        console.print(_rich(item))


_SETTINGS = {"color": "auto", "width": None}


def configure(color="auto", width=None):
    """``--color auto|always|never`` and ``--width N`` for the tables drawn from now on."""
    _SETTINGS["color"] = color or "auto"
    _SETTINGS["width"] = width
