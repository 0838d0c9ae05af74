"""Tables and lines for people, apart from how they are drawn.

The renderers build :class:`Table` and :class:`Line` objects; :func:`show` draws them.  The
layout is computed here, once, the same for a terminal and a pipe: each column as wide as its
widest cell, and when that is wider than the width to fit (``--width N``, else ``COLUMNS``,
else the terminal's width; no limit when piped without either), the table is fitted:

1. the widest columns are narrowed and their text wraps inside the column: at spaces, else
   after a bracket or a comma or before an operator, else folded; a number is never split;
2. when the columns cannot get as wide as their longest number (and some room for text),
   the numbers a renderer gave as :class:`~gradcli.render.text.Num` are printed in 4
   significant digits instead of 6, then the table's optional columns are left out (the grad
   table's local gradients first), then the numbers go to 3 digits;
3. when even that does not fit, each row is printed as a record: its key cells on a line,
   then one ``column  value`` line per other column.

A dim note under the table says what was shortened or left out.  Lines between tables wrap
at spaces (numbers whole).  On a terminal (or ``--color always``) the same lines are printed
with colour and bold through Rich; ``NO_COLOR``, ``--color never`` and pipes get plain text.
One pass, no Rich layout: a 100,000-row table prints in a second, and what scripts and
golden files see does not depend on Rich's version.
"""
from __future__ import annotations

import os
import re
import sys

from .text import DIGITS, Cell, Num

GAP = "   "      # between columns
RULE = "─"       # under the header
ELLIPSIS = "…"

#: Below this a text column is not narrowed (unless its longest word is shorter).
TEXT_MIN = 10
#: The precisions a fitted table tries for its numbers, after the full one.
SHORTER = (4, 3)

#: What is never split across lines: a number (1.5, -0.000911, 1e-05, inf, nan) or a shape
#: (2×3), with the brackets it opens and the brackets and comma that follow it (no line
#: begins with ``,`` or ``]``, none ends with a lone ``[``).
NUMBER = re.compile(r"[\[(]*(?:\d+(?:×\d+)+"
                    r"|(?<![\w.])[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![\w.])"
                    r"|(?<![\w.])-?(?:inf|nan)(?![\w.]))[\]),;:]*")

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
    """Columns (name, justification) and rows of cells; a cell may span several lines.

    A cell is text (``str``, :class:`Styled`) or a :class:`~gradcli.render.text.Cell` of text
    and numbers, whose precision the layout may lower to fit.  ``optional`` names columns the
    layout may leave out, first the first, when the table is too wide; ``keys`` is how many
    leading columns name a row (the heading of its record when the table is drawn as
    records)."""

    def __init__(self, *columns, optional=(), keys=1):
        self.columns = [(c, "left") if isinstance(c, str) else c for c in columns]
        self.rows = []
        self.optional = list(optional)
        self.keys = keys
        self.has_numbers = False

    def add_row(self, *cells):
        row = []
        for c in cells:
            if isinstance(c, Num):
                c = Cell([c])
            if isinstance(c, Cell):
                if not self.has_numbers and c.has_numbers:
                    self.has_numbers = True
            elif not isinstance(c, str):
                c = str(c)
            row.append(c)
        self.rows.append(row)


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


_AFTER = set("([{,;:.")       # a line may end after these
_BEFORE = set("+-*/@=<>|")    # or begin with these


def _break_at(line, pos, end, spans):
    """Where to break ``line[pos:]`` with no space in ``line[pos:end + 1]``: after a bracket
    or comma or before an operator, else anywhere outside a number; at the end of a number
    longer than the width (it overflows, it is not split)."""
    def inside(j):
        return any(s < j < e for s, e in spans)

    fold = last = None
    for j in range(end, pos, -1):
        if inside(j):
            continue
        if line[j - 1] in _AFTER or line[j] in _BEFORE:
            return j
        if fold is None and not (line[j].isdigit() or line[j - 1].isdigit()):
            fold = j  # log10 stays whole: its 0 would read as a number
        if last is None:
            last = j
    if fold is not None or last is not None:
        return fold if fold is not None else last
    return next((e for s, e in spans if s <= pos < e), end)


def _keep_group(line, pos, cut, width):
    """A break at the space ``cut`` moved before the bracketed list it falls in (``[1, 2]``)
    when that list fits a line of its own: ``→ b:`` then ``[1, 2]``, not ``→ b: [1,`` then
    ``2]``."""
    opened = []
    for i in range(pos, cut):
        ch = line[i]
        if ch == "[":
            opened.append(i)
        elif ch == "]" and opened:
            opened.pop()
    for o in opened:  # the outermost list that fits
        if o - 1 <= pos or line[o - 1] != " ":
            continue
        depth, c = 0, None
        for i in range(o, min(len(line), o + width)):
            depth += {"[": 1, "]": -1}.get(line[i], 0)
            if depth == 0:
                c = i
                break
        if c is not None:
            return o - 1
    return cut


def _wrap(line, width):
    """One cell line in lines of at most ``width``: broken at spaces, else at a sensible
    point of a word (a bracket, a comma, an operator), else folded, numbers kept whole."""
    if len(line) <= width:
        return [line]
    spans = [m.span() for m in NUMBER.finditer(line)]
    out = []
    pos = 0
    while len(line) - pos > width:
        end = pos + width
        cut = line.rfind(" ", pos + 1, end + 1)
        if cut > pos:
            cut = _keep_group(line, pos, cut, width)
        if cut > pos and line[pos:cut].strip():
            out.append(line[pos:cut].rstrip())
            pos = cut + 1
        else:
            j = _break_at(line, pos, end, spans)
            out.append(line[pos:j])
            pos = j
        while pos < len(line) and line[pos] == " ":
            pos += 1
    if pos < len(line) or not out:
        out.append(line[pos:])
    return out


def _fit(natural, heads, limit, words=None, floors=None):
    """Column widths that fit ``limit`` (None: the natural ones): the widest columns are
    narrowed to one cap, none below its floor (``floors``; by default its header's longest
    word or 6 characters, or its longest word up to 16 when that still fits)."""
    gaps = len(GAP) * (len(natural) - 1)
    if limit is None or sum(natural) + gaps <= limit:
        return list(natural)
    if floors is not None:
        floor = [min(n, f) for n, f in zip(natural, floors)]
    else:
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


def _text_of(cell, digits):
    return cell.text(digits) if isinstance(cell, Cell) else cell


class _Plan:
    """How a table is drawn at a width: which columns, numbers in how many digits, the
    column widths (or ``records``), and the cells as lines."""

    def __init__(self, keep, digits, widths=None, cells=None, records=False, natural=None):
        self.keep, self.digits, self.widths, self.cells = keep, digits, widths, cells
        self.records, self.natural = records, natural


def _cells(t, keep, digits):
    """Every row's cells (of the columns kept) as lists of lines, numbers in ``digits``."""
    if not t.has_numbers and len(keep) == len(t.columns):
        # (a cell may be a Cell without numbers: an empty array's [])
        return [[(c if c.__class__ is str else _text_of(c, digits)).split("\n") for c in row]
                for row in t.rows]
    return [[_text_of(row[k], digits).split("\n") for k in keep] for row in t.rows]


def _natural(heads, cells):
    natural = [len(h) for h in heads]
    for row in cells:
        for k, lines in enumerate(row):
            for line in lines:
                if len(line) > natural[k]:
                    natural[k] = len(line)
    return natural


def _floors(heads, cells, natural):
    """Per column: its longest number (never split), its header's longest word, and at
    least TEXT_MIN for text (or its longest word, when shorter)."""
    atoms = [0] * len(heads)
    words = [max((len(w) for w in h.split()), default=0) for h in heads]
    heads_words = list(words)
    for row in cells:
        for k, lines in enumerate(row):
            for line in lines:
                if len(line) <= atoms[k] and len(line) <= words[k]:
                    continue
                for w in line.split(" "):
                    if len(w) > words[k]:
                        words[k] = len(w)
                for m in NUMBER.finditer(line):
                    if m.end() - m.start() > atoms[k]:
                        atoms[k] = m.end() - m.start()
    return [min(n, max(a, h, min(w, TEXT_MIN)))
            for n, a, h, w in zip(natural, atoms, heads_words, words)]


def _words(cells):
    """Per column its longest word, up to 16 characters."""
    out = [0] * (len(cells[0]) if cells else 0)
    for row in cells:
        for k, lines in enumerate(row):
            for line in lines:
                if len(line) > out[k] and out[k] < 16:
                    out[k] = min(16, max(out[k], max(map(len, line.split(" ")))))
    return out


def plan(t, limit):
    """The :class:`_Plan` for table ``t`` at width ``limit`` (None: no limit)."""
    heads = [name for name, _ in t.columns]
    everything = list(range(len(heads)))
    cells = _cells(t, everything, DIGITS)
    natural = _natural(heads, cells)
    gaps = len(GAP) * (len(heads) - 1)
    if limit is None or sum(natural) + gaps <= limit:
        return _Plan(everything, DIGITS, natural, cells, natural=natural)
    levels = [(DIGITS, 0)] + [(d, 0) for d in SHORTER[:1]]
    optional = [heads.index(c) for c in t.optional if c in heads]
    levels += [(SHORTER[0], n) for n in range(1, len(optional) + 1)]
    levels += [(d, len(optional)) for d in SHORTER[1:]]
    if not t.has_numbers:
        levels = [(DIGITS, n) for n in range(len(optional) + 1)]
    for digits, drop in levels:
        keep = [k for k in everything if k not in optional[:drop]]
        if (digits, drop) != (DIGITS, 0):
            cells = _cells(t, keep, digits)
        sub = [heads[k] for k in keep]
        natural = _natural(sub, cells)
        floors = _floors(sub, cells, natural)
        room = limit - len(GAP) * (len(keep) - 1)
        if sum(floors) <= room:
            wide = [max(f, min(n, w)) for f, n, w in zip(floors, natural, _words(cells))]
            if sum(wide) <= room:  # every word whole (up to 16 characters) when it fits
                floors = wide
            return _Plan(keep, digits, _fit(natural, sub, limit, floors=floors), cells,
                         natural=natural)
    return _record_plan(t, limit)


_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}


def _note(t, p, limit):
    """What the fitted table leaves out or shortens, as a dim line (or none)."""
    said = []
    if p.digits != DIGITS:  # in words: a note has no numbers to mistake for the table's
        said.append(f"numbers to {_WORDS.get(p.digits, p.digits)} significant digits")
    left = [t.columns[k][0] for k in range(len(t.columns)) if k not in p.keep]
    if left:
        said.append("without the " + " and ".join(left)
                    + (" columns" if len(left) > 1 else " column"))
    if not said:
        return []
    text = f"(fitted to the width: {', '.join(said)})"
    return [[(piece, "dim")] for piece in _wrap(text, limit)]


def _layout(t, limit):
    """The table as lines of (text, style) pieces: header, rule, rows; fitted to ``limit``."""
    p = plan(t, limit)
    if p.records:
        return _records(t, p, limit)
    heads = [t.columns[k][0] for k in p.keep]
    just = [t.columns[k][1] for k in p.keep]
    widths = p.widths
    natural = p.natural
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
    for row, raw in zip(p.cells, t.rows):
        lines.extend(block(row, [getattr(raw[k], "style", None) for k in p.keep]))
    return lines + _note(t, p, limit)


_INDENT = 2


def _record_room(t, limit):
    """(width of the column names, width of the values, values beside the names?)"""
    heads = [name for name, _ in t.columns]
    keys = max(1, min(t.keys, len(heads)))
    label = min(max((len(h) for h in heads[keys:]), default=0), max(14, limit // 3))
    room = limit - _INDENT - label - 2
    if room >= 12:
        return label, room, True
    return label, limit - 2 * _INDENT, False


def _record_plan(t, limit):
    """Records: every column, numbers in as many digits as the values' width holds."""
    everything = list(range(len(t.columns)))
    heads = [name for name, _ in t.columns]
    _, room, _ = _record_room(t, limit)
    for digits in (DIGITS,) + (SHORTER if t.has_numbers else ()):
        cells = _cells(t, everything, digits)
        if max(_floors(heads, cells, [room] * len(heads)), default=0) <= room:
            break
    return _Plan(everything, digits, cells=cells, records=True)


def _records(t, p, limit):
    """The table as records, for a width too narrow for its columns: per row its key cells
    on a line (bold), then ``column  value`` lines, the value wrapped beside the column's
    name (a long name wraps too; both go under each other when even that is too narrow);
    rows apart by an empty line."""
    heads = [name for name, _ in t.columns]
    keys = max(1, min(t.keys, len(heads)))
    indent = _INDENT
    label, room, beside = _record_room(t, limit)
    cells = p.cells
    names = {k: _wrap(heads[k], label) for k in range(keys, len(heads))}
    lines = []
    for n, (row, raw) in enumerate(zip(cells, t.rows)):
        if n:
            lines.append([("", None)])
        head = "  ".join(line for lines_ in row[:keys] for line in lines_ if line)
        for piece in _wrap(head, limit):
            lines.append([(piece, "bold")])
        for k in range(keys, len(heads)):
            values = [piece for line in row[k] for piece in _wrap(line, room)]
            if not any(v.strip() for v in values):
                continue
            style = getattr(raw[k], "style", None)
            if beside:
                for i in range(max(len(values), len(names[k]))):
                    name = names[k][i] if i < len(names[k]) else ""
                    value = values[i] if i < len(values) else ""
                    lines.append([(" " * indent + name.ljust(label) + "  ", "dim"),
                                  (value, style)])
            else:
                lines.extend([(" " * indent + name, "dim")] for name in names[k])
                lines.extend([(" " * 2 * indent, None), (v, style)] for v in values)
    return lines + _note(t, p, limit) + [[("", None)]]  # apart from what follows


def _line_texts(item, limit):
    """A line between tables as display lines: wrapped at spaces to ``limit``."""
    out = []
    for line in str(item).rstrip().split("\n"):
        if not limit or len(line) <= limit:
            out.append(line)
            continue
        body = line.lstrip(" ")
        indent = line[:len(line) - len(body)]
        if len(indent) > limit // 2:
            indent = ""
        out.extend(indent + piece for piece in _wrap(body, limit - len(indent)))
    return out


def _text(pieces):
    return "".join(p for p, _ in pieces).rstrip()


def _plain_table(t, limit=None):
    return "\n".join(_text(pieces) for pieces in _layout(t, limit))


def plain(items, width=None):
    """Everything as plain text, one string ending in a new line (fitted to ``width``)."""
    parts = [_plain_table(it, width) if isinstance(it, Table)
             else "\n".join(x.rstrip() for x in _line_texts(it, width)) for it in items]
    return "\n".join(parts).rstrip("\n") + "\n"


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
            style = getattr(item, "style", None) or ""
            for line in _line_texts(item, limit):
                console.print(Text(line.rstrip(), style=style), no_wrap=True,
                              overflow="ignore", crop=False)
