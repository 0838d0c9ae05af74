"""The Python API: everything the commands do, as library calls.

    >>> import gradcli
    >>> r = gradcli.grad("(x+y)*max(y,z)", x=1, y=2, z=0)
    >>> float(r.value), {k: float(v) for k, v in r.gradients.items()}
    (6.0, {'x': 2.0, 'y': 5.0, 'z': 0.0})

Bindings are keyword arguments (numbers, lists or arrays) or a mapping passed second, for
names that clash with an option (``gradcli.grad("output * 2", {"output": 3})``).  A program
is parsed once and kept, so calling these in a loop costs only the passes.
"""
from __future__ import annotations

from . import engine
from .parse import parse

__all__ = ["compile", "evaluate", "grad"]


def compile(program):
    """Parse ``program`` into its graph (a :class:`gradcli.graph.Graph`)."""
    return parse(program) if isinstance(program, str) else program


def _bindings(bindings, kw):
    merged = dict(bindings or {})
    merged.update(kw)
    return merged


def evaluate(program, bindings=None, /, *, output=None, dtype="float64", **values):
    """The forward pass; ``.value`` is the output, ``.values[i]`` every node's value."""
    return engine.evaluate(compile(program), _bindings(bindings, values), output=output,
                           dtype=dtype)


def grad(program, bindings=None, /, *, wrt=None, upstream=None, output=None,
         dtype="float64", **values):
    """Forward and reverse pass; ``.gradients[name]`` is d output / d name.

    ``wrt`` chooses the variables (a list or ``"a,b"``); ``upstream`` starts the reverse pass
    from an array of the output's shape instead of ones.
    """
    if isinstance(wrt, str):
        wrt = [w.strip() for w in wrt.split(",") if w.strip()]
    return engine.differentiate(compile(program), _bindings(bindings, values), wrt=wrt,
                                upstream=upstream, output=output, dtype=dtype)
