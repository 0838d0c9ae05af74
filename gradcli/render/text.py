"""Numbers and arrays as short text for people (tables, messages)."""
from __future__ import annotations

import numpy as np


def num(x):
    """A number in at most 6 significant digits: 6, 0.333333, 1e-05, nan, -inf."""
    x = float(x)
    if x == 0:
        return "0"  # also -0.0
    return format(x, ".6g")


def shape_text(shape):
    return str(tuple(shape)) if shape else "scalar"


def array(value, small=8):
    """A value for a table cell: the number, a small array in full, else shape and a peek."""
    a = np.asarray(value)
    if a.ndim == 0:
        return num(a)
    if a.size <= small and a.ndim <= 2:
        return _nested(a)
    flat = a.ravel()
    peek = ", ".join(num(v) for v in flat[:3])
    dims = "×".join(map(str, a.shape))
    return f"{dims} [{peek}, …, {num(flat[-1])}]" if a.size > 3 else f"{dims} [{peek}]"


def _nested(a):
    if a.ndim == 1:
        return "[" + ", ".join(num(v) for v in a) + "]"
    return "[" + ", ".join(_nested(row) for row in a) + "]"
