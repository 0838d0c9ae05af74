"""Tables and lines for people, apart from how they are drawn.

The renderers build :class:`Table` and :class:`Line` objects; :func:`show` draws them.  The
layout is computed here, once, the same for a terminal and a pipe: each column as wide as its
widest cell, and when that is wider than the width to fit (``--width N``, else ``COLUMNS``,
else the terminal's width; no limit when piped without either), the widest columns are
narrowed and their cells wrapped inside the column (at spaces, else folded), so a row never
breaks across the screen mid-cell.  On a terminal (or ``--color always``) the same lines are
printed with colour and bold through Rich; ``NO_COLOR``, ``--color never`` and pipes get plain
text.  One pass, no Rich layout: a 100,000-row table prints in a second, and what scripts and
golden files see does not depend on Rich's version.
"""
from __future__ import annotations

import os
import sys

GAP = "   "      # between columns
RULE = "─"       # under the header
ELLIPSIS = "…"

#: ``--color`` and ``--width`` of the running command (see :func:`configure`).
_SETTINGS = {"color": "auto", "width": None}


def configure(color="auto", width=None):
    """``--color auto|always|never`` and ``--width N`` for the tables drawn from now on."""
    _SETTINGS["color"] = color or "auto"
    _SETTINGS["width"] = width


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


# ---------------------------------------------------------------- fitting

def clip_balanced(text, limit):
    """``text`` cut to at most ``limit`` characters with ``…``, its brackets kept balanced:
    ``sum(t * log(softmax(W @ x)))`` at 16 is ``sum(t * log(…))``, never ``sum(t * log(so…``.
    """
    if limit is None or len(text) <= limit:
        return text
    pairs = {"(": ")", "[": "]", "{": "}"}
    for keep in range(max(0, limit - 1), -1, -1):
        head = text[:keep]
        stack = []
        for ch in head:
            if ch in pairs:
                stack.append(pairs[ch])
            elif stack and ch == stack[-1]:
                stack.pop()
        tail = "".join(reversed(stack))
        if len(head) + 1 + len(tail) <= limit:
            return head.rstrip() + ELLIPSIS + tail
    return ELLIPSIS


def _wrap(line, width):
    """One cell line in lines of at most ``width``: broken at spaces, else folded."""
    if len(line) <= width:
        return [line]
    out = []
    rest = line
    while len(rest) > width:
        cut = rest.rfind(" ", 1, width + 1)
        if cut <= 0:
            out.append(rest[:width])          # no space: fold the word
            rest = rest[width:]
        else:
            out.append(rest[:cut].rstrip())
            rest = rest[cut + 1:]
    if rest:
        out.append(rest)
    return out


def _fit(natural, heads, limit, words=None):
    """Column widths that fit ``limit`` (None: the natural ones): the widest columns are
    narrowed to one cap.  None is narrowed below its longest word (a number, a name; at
    most 16) when that still fits, else below its header's longest word or 6 characters,
    and then long words fold."""
    gaps = len(GAP) * (len(natural) - 1)
    if limit is None or sum(natural) + gaps <= limit:
        return list(natural)
    floor = [min(n, max(6, max((len(w) for w in h.split()), default=1))) for n, h in
             zip(natural, heads)]
    if words is not None:
        wide = [min(n, max(f, min(w, 16))) for n, f, w in zip(natural, floor, words)]
        if sum(wide) + gaps <= limit:
            floor = wide
    lo, hi = 1, max(natural)
    while lo < hi:  # the largest cap that fits
        cap = (lo + hi + 1) // 2
        if sum(max(f, min(n, cap)) for n, f in zip(natural, floor)) + gaps <= limit:
            lo = cap
        else:
            hi = cap - 1
    return [max(f, min(n, lo)) for n, f in zip(natural, floor)]


def _layout(t, limit):
    """The table as lines of (text, style) pieces: header, rule, rows; fitted to ``limit``."""
    heads = [name for name, _ in t.columns]
    just = [j for _, j in t.columns]
    cells = [[c.split("\n") for c in row] for row in t.rows]
    natural = [len(h) for h in heads]
    for row in cells:
        for k, lines in enumerate(row):
            for line in lines:
                if len(line) > natural[k]:
                    natural[k] = len(line)
    words = None
    if limit is not None and sum(natural) + len(GAP) * (len(natural) - 1) > limit:
        words = [0] * len(heads)
        for row in cells:
            for k, lines in enumerate(row):
                for line in lines:
                    if len(line) > words[k]:
                        longest = max(map(len, line.split(" ")), default=0)
                        if longest > words[k]:
                            words[k] = longest
    widths = _fit(natural, heads, limit, words)
    narrowed = [w < n for w, n in zip(widths, natural)]

    def fit(k, s):
        return s.rjust(widths[k]) if just[k] == "right" else s.ljust(widths[k])

    def block(parts, styles):
        """One row (lists of lines per column) as display lines."""
        if any(narrowed):
            parts = [[piece for line in lines for piece in _wrap(line, widths[k])]
                     if narrowed[k] else lines for k, lines in enumerate(parts)]
        height = max(len(lines) for lines in parts)
        out = []
        for r in range(height):
            pieces = []
            for k, lines in enumerate(parts):
                if k:
                    pieces.append((GAP, None))
                pieces.append((fit(k, lines[r] if r < len(lines) else ""), styles[k]))
            out.append(pieces)
        return out

    lines = block([[h] for h in heads], ["bold"] * len(heads))
    lines.append([(RULE * (sum(widths) + len(GAP) * (len(widths) - 1)), "dim")])
    for row, raw in zip(cells, t.rows):
        lines.extend(block(row, [getattr(c, "style", None) for c in raw]))
    return lines


def _text(pieces):
    return "".join(p for p, _ in pieces).rstrip()


def _plain_table(t, limit=None):
    return "\n".join(_text(pieces) for pieces in _layout(t, limit))


def plain(items, width=None):
    """Everything as plain text, one string ending in a new line (fitted to ``width``)."""
    parts = [_plain_table(it, width) if isinstance(it, Table) else str(it).rstrip()
             for it in items]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------- the terminal

def _isatty(stream):
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def is_plain(stream):
    """Plain text (no colour) unless writing to a terminal; ``NO_COLOR`` (set and not empty)
    and ``--color never`` ask for plain, ``--color always`` for colour even in a pipe."""
    color = _SETTINGS["color"]
    if color == "always":
        return False
    if color == "never":
        return True
    return bool(os.environ.get("NO_COLOR")) or not _isatty(stream)


def width_for(stream):
    """The width to fit tables to: ``--width``, else ``COLUMNS`` (piped or not), else the
    terminal's width; None (no limit) when piped without either."""
    if _SETTINGS["width"]:
        return int(_SETTINGS["width"])
    raw = os.environ.get("COLUMNS", "").strip()
    if raw.isdigit() and int(raw) >= 20:
        return int(raw)
    if _isatty(stream):
        try:
            return os.get_terminal_size(stream.fileno()).columns
        except (OSError, AttributeError, ValueError):
            return 80
    return None


def show(items, stream=None):
    """Draw tables and lines fitted to the width; in colour on a terminal, else plain."""
    stream = stream or sys.stdout
    limit = width_for(stream)
    if is_plain(stream):
        stream.write(plain(items, limit))
        return
    from rich.console import Console
    from rich.text import Text

    console = Console(file=stream, highlight=False, emoji=False, markup=False,
                      force_terminal=True, width=max(limit or 0, 10000),
                      color_system="auto" if _isatty(stream) else "standard")
    for item in items:
        if isinstance(item, Table):
            for pieces in _layout(item, limit):
                text = Text()
                for piece, style in pieces:
                    text.append(piece, style=style or "")
                text.rstrip()
                console.print(text, no_wrap=True, overflow="ignore", crop=False)
        else:
            console.print(Text(str(item), style=getattr(item, "style", None) or ""),
                          no_wrap=True, overflow="ignore", crop=False)
