"""Numbers and arrays as short text for people (tables, messages).

``num`` and ``array`` give text.  A table cell that may have to print its numbers shorter
(a narrow terminal) is built from :class:`Num` parts instead (``array_parts``, ``Cell``):
the layout picks the precision, each number is rounded once from its own value, never
from text already rounded.
"""
from __future__ import annotations

import numpy as np

#: Significant digits of a number when nothing asks for fewer.
DIGITS = 6


def num(x, digits=DIGITS):
    """A number in at most ``digits`` significant digits: 6, 0.333333, 1e-05, nan, -inf."""
    x = float(x)
    if x == 0:
        return "0"  # also -0.0
    return format(x, f".{digits}g")


def shape_text(shape):
    return str(tuple(shape)) if shape else "scalar"


class Num:
    """A number in a table cell, printed at the precision the layout chooses."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = float(value)

    def text(self, digits=DIGITS):
        return num(self.value, digits)

    def __str__(self):
        return self.text()

    def __repr__(self):
        return f"Num({self.value!r})"


class Cell:
    """A cell's content as text and :class:`Num` parts (``+`` joins them with text or
    cells); ``text(digits)`` prints it with every number in ``digits`` significant digits."""

    __slots__ = ("parts", "style")

    def __init__(self, parts=(), style=None):
        if isinstance(parts, (str, Num)):
            parts = [parts]
        flat = []
        for p in parts:
            flat.extend(p.parts if isinstance(p, Cell) else [p])
        self.parts = flat
        self.style = style

    @property
    def has_numbers(self):
        return any(isinstance(p, Num) for p in self.parts)

    def text(self, digits=DIGITS):
        return "".join(p if isinstance(p, str) else p.text(digits) for p in self.parts)

    def __str__(self):
        return self.text()

    def __add__(self, other):
        return Cell([self, other], self.style)

    def __radd__(self, other):
        return Cell([other, self], self.style)

    def startswith(self, prefix):
        return self.text().startswith(prefix)

    def __eq__(self, other):
        return self.text() == (other.text() if isinstance(other, Cell) else other)

    def __hash__(self):
        return hash(self.text())

    @staticmethod
    def join(sep, cells):
        out = []
        for k, c in enumerate(cells):
            if k:
                out.append(sep)
            out.append(c)
        return Cell(out)


def array_parts(value, small=8):
    """:func:`array` as a :class:`Cell` of text and numbers (for a table)."""
    a = np.asarray(value)
    if a.ndim == 0:
        return Cell([Num(a)])
    if a.size <= small and a.ndim <= 2:
        return Cell(_nested(a))
    flat = a.ravel()
    dims = "×".join(map(str, a.shape))
    parts = [f"{dims} ["]
    for k, v in enumerate(flat[:3]):
        parts += [", "] * bool(k) + [Num(v)]
    parts += [", …, ", Num(flat[-1]), "]"] if a.size > 3 else ["]"]
    return Cell(parts)


def array(value, small=8):
    """A value for a table cell: the number, a small array in full, else shape and a peek.
    (The same text as ``array_parts(value, small).text()``, made directly: it is called for
    every node of a picture or a page.)"""
    a = np.asarray(value)
    if a.ndim == 0:
        return num(a)
    if a.size <= small and a.ndim <= 2:
        return _nested_text(a)
    flat = a.ravel()
    peek = ", ".join(num(v) for v in flat[:3])
    dims = "×".join(map(str, a.shape))
    return f"{dims} [{peek}, …, {num(flat[-1])}]" if a.size > 3 else f"{dims} [{peek}]"


def _nested_text(a):
    if a.ndim == 1:
        return "[" + ", ".join(num(v) for v in a) + "]"
    return "[" + ", ".join(_nested_text(row) for row in a) + "]"


def _nested(a):
    if a.ndim == 1:
        out = ["["]
        for k, v in enumerate(a):
            out += [", "] * bool(k) + [Num(v)]
        return out + ["]"]
    out = ["["]
    for k, row in enumerate(a):
        out += [", "] * bool(k) + _nested(row)
    return out + ["]"]
