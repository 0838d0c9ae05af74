"""The Python API: everything the commands do, as library calls.

    >>> import gradcli
    >>> r = gradcli.grad("(x+y)*max(y,z)", x=1, y=2, z=0)
    >>> float(r.value), {k: float(v) for k, v in r.gradients.items()}
    (6.0, {'x': 2.0, 'y': 5.0, 'z': 0.0})

Bindings are keyword arguments (numbers, lists or arrays) or a mapping passed second, for
names that clash with an option (``gradcli.grad("output * 2", {"output": 3})``).  A program
is parsed once and kept, so calling these in a loop costs only the passes.  Custom ops come
from ``load_ops("gates.py")``, passed as ``ops=``.
"""
from __future__ import annotations

import os

from . import engine
from .parse import parse

__all__ = ["compile", "evaluate", "grad", "check", "check_ops", "load_ops"]


def load_ops(*paths):
    """Load custom ops (forward/backward classes) from Python files; runs their code."""
    from .plugins import load_ops_files

    return load_ops_files(paths)


def compile(program, ops=None):
    """Parse ``program`` into its graph (a :class:`gradcli.graph.Graph`).  ``ops``: what
    :func:`load_ops` returned, or the path of an ops file, or a list of them."""
    if isinstance(ops, (str, os.PathLike)):
        ops = load_ops(ops)
    elif isinstance(ops, (list, tuple)):
        ops = load_ops(*ops)
    return parse(program, ops) if isinstance(program, str) else program


def _bindings(bindings, kw):
    merged = dict(bindings or {})
    merged.update(kw)
    return merged


def _names(wrt):
    if isinstance(wrt, str):
        return [w.strip() for w in wrt.split(",") if w.strip()]
    return wrt


def evaluate(program, bindings=None, /, *, output=None, dtype="float64", ops=None, **values):
    """The forward pass; ``.value`` is the output, ``.values[i]`` every node's value."""
    return engine.evaluate(compile(program, ops), _bindings(bindings, values), output=output,
                           dtype=dtype)


def grad(program, bindings=None, /, *, wrt=None, upstream=None, output=None,
         dtype="float64", ops=None, **values):
    """Forward and reverse pass; ``.gradients[name]`` is d output / d name.

    ``wrt`` chooses the variables (a list or ``"a,b"``); ``upstream`` starts the reverse pass
    from an array of the output's shape instead of ones.
    """
    return engine.differentiate(compile(program, ops), _bindings(bindings, values),
                                wrt=_names(wrt), upstream=upstream, output=output, dtype=dtype)


def check(program, bindings=None, /, *, wrt=None, output=None, method="central", eps=None,
          atol=None, rtol=None, jacobian=False, fast=False, projections=4, seed=0,
          dtype="float64", strict=False, sweep=False, local=False, taylor=False,
          grouped=True, one_at_a_time=None, order=1, ops=None, **values):
    """Reverse mode against finite differences; ``.ok``, ``.inputs``, ``.blame``, ...

    The options are those of ``gradcli check`` (``sweep`` is ``--eps-sweep``; ``grouped=False``
    or ``one_at_a_time=True`` is ``--one-at-a-time``); see :func:`gradcli.gradcheck.check`.
    """
    from . import gradcheck

    if one_at_a_time is not None:  # the CLI's name for grouped=False
        if not grouped and not one_at_a_time:
            raise TypeError("grouped=False and one_at_a_time=False contradict each other")
        grouped = not one_at_a_time
    return gradcheck.check(compile(program, ops), _bindings(bindings, values),
                           wrt=_names(wrt), output=output, method=method, eps=eps, atol=atol,
                           rtol=rtol, jacobian=jacobian, fast=fast, projections=projections,
                           seed=seed, dtype=dtype, strict=strict, sweep=sweep, local=local,
                           taylor=taylor, grouped=grouped, order=order)


def check_ops(ops, *, seed=0, eps=None, atol=None, rtol=None):
    """Check every custom op of ``ops`` (from :func:`load_ops`) at random inputs."""
    from . import localcheck

    return localcheck.check_ops(ops, seed=seed, eps=eps, atol=atol, rtol=rtol)
