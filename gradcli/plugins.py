"""Custom ops: forward/backward gate classes loaded from ``--ops FILE``.

An ops file is Python code, and loading it runs it.  Every class defined in the file with
``forward`` and ``backward`` methods becomes an op, called in programs by its ``name``
attribute if it has one, else by its class name::

    class MultiplyGate:
        def forward(self, x, y):
            self.x, self.y = x, y
            return x * y

        def backward(self, dz):
            return [self.y * dz, self.x * dz]

Each graph node gets its own instance, so ``forward`` may keep what ``backward`` needs.
Optional class attributes say how ``gradcli check --ops FILE`` samples inputs:
``shapes = [(3,), (3,)]`` and ``domain = ["real", "positive"]`` (or ``"nonzero"`` or a
``(low, high)`` pair), one entry per input.
"""
from __future__ import annotations

import inspect
import os
import types

from . import ops as oplib
from .errors import GradcliError

__all__ = ["OpsFileError", "load_ops_files", "Library", "BUILTIN_LIBRARY", "GATE_DOMAINS"]

GATE_DOMAINS = ("real", "positive", "nonzero")


class OpsFileError(GradcliError):
    """An ops file or one of its ops is broken; the message names the file and the op."""


def _short(path):
    return os.path.basename(path)


def load_ops_file(path):
    """The ops a file defines, as :class:`~gradcli.ops.Op` objects with ``gate`` set."""
    where = _short(path)
    try:
        with open(path, encoding="utf-8") as f:
            source = f.read()
    except FileNotFoundError:
        raise OpsFileError(f"--ops {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise OpsFileError(f"--ops {path}: cannot read it: {e}") from None
    try:
        code = compile(source, path, "exec")
    except SyntaxError as e:
        raise OpsFileError(f"ops file {where}: syntax error at line {e.lineno}: {e.msg}") from None
    module = types.ModuleType(f"gradcli_ops_{abs(hash(os.path.abspath(path)))}")
    module.__file__ = path
    try:
        exec(code, module.__dict__)
    except (Exception, SystemExit) as e:
        raise OpsFileError(f"ops file {where}: loading it raised {_exc_text(e, path)}") from None
    classes = [v for v in list(module.__dict__.values())
               if isinstance(v, type) and v.__module__ == module.__name__]
    # A class the file's other classes derive from is a base for them, not an op; so is a
    # class whose name starts with an underscore.
    bases = {b for c in classes for b in c.__mro__[1:]}
    found = []
    for value in classes:
        if value in bases or value.__name__.startswith("_"):
            continue
        has_fwd = callable(getattr(value, "forward", None))
        has_bwd = callable(getattr(value, "backward", None))
        if has_fwd != has_bwd:
            missing = "backward" if has_fwd else "forward"
            raise OpsFileError(f"ops file {where}: class {value.__name__} has "
                               f"{'forward' if has_fwd else 'backward'} but no {missing} method")
        if has_fwd:
            found.append(_gate_op(value, where))
    if not found:
        raise OpsFileError(f"ops file {where}: no class with forward and backward methods")
    for op in found:
        op.path = path
    return found


def _exc_text(e, path=None):
    """``ValueError: message (line 12)``: the op's own words, without a traceback."""
    text = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    if path is not None:
        tb = e.__traceback__
        line = None
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == path:
                line = tb.tb_lineno
            tb = tb.tb_next
        if line is not None:
            text += f" (line {line})"
    return text


def _gate_op(cls, where):
    name = getattr(cls, "name", cls.__name__)
    label = f"ops file {where}: op {name}" + (f" (class {cls.__name__})"
                                               if name != cls.__name__ else "")
    if not isinstance(name, str) or not name.isidentifier():
        raise OpsFileError(f"{label}: its name must be a name the language can call")
    try:
        params = list(inspect.signature(cls.forward).parameters.values())[1:]  # drop self
    except (TypeError, ValueError):
        raise OpsFileError(f"{label}: cannot read the arguments of forward") from None
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        raise OpsFileError(f"{label}: forward must take a fixed number of inputs, not *args")
    inputs = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
              and p.default is p.empty]
    if not inputs:
        raise OpsFileError(f"{label}: forward takes no inputs")
    arity = len(inputs)
    argnames = tuple(p.name for p in inputs)
    shapes = getattr(cls, "shapes", None)
    if shapes is not None:
        try:
            shapes = [tuple(int(n) for n in s) for s in shapes]
        except (TypeError, ValueError):
            raise OpsFileError(f"{label}: shapes must be a list of shapes like [(3,), (3,)]") \
                from None
        if len(shapes) != arity:
            raise OpsFileError(f"{label}: shapes gives {len(shapes)} shapes for {arity} inputs")
    domain = getattr(cls, "domain", None)
    if domain is not None:
        domain = list(domain) if not isinstance(domain, str) else [domain] * arity
        if len(domain) != arity:
            raise OpsFileError(f"{label}: domain gives {len(domain)} entries for {arity} inputs")
        for d in domain:
            try:
                ok = d in GATE_DOMAINS or (isinstance(d, (tuple, list)) and len(d) == 2
                                           and float(d[0]) < float(d[1]))
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise OpsFileError(f"{label}: domain entries are 'real', 'positive', "
                                   f"'nonzero' or a (low, high) pair, not {d!r}")
    doc = (inspect.getdoc(cls) or "").strip().splitlines()
    op = oplib.Op(name, None, arity=arity, argnames=argnames,
                  formulas=[f"{cls.__name__}.backward"] * arity,
                  doc=doc[0] if doc else f"custom op from {where}")
    op.gate = cls
    op.shapes = shapes
    op.sample_domain = domain
    return op


def load_ops_files(paths):
    """Load several ops files; names must not clash with built-ins or each other."""
    ops = {}
    seen = set()
    for path in paths:
        if os.path.abspath(path) in seen:  # the same file named twice: load it once
            continue
        seen.add(os.path.abspath(path))
        for op in load_ops_file(path):
            what = f"ops file {_short(op.path)}: op {op.name}"
            if op.name in oplib.CALLABLE_NAMES or op.name in ("pi", "e"):
                raise OpsFileError(f"{what} clashes with the built-in {op.name}; set "
                                   f"name = '...' in the class to call it something else")
            if op.name in ops:
                raise OpsFileError(f"{what} is defined twice (also in {_short(ops[op.name].path)})")
            ops[op.name] = op
    return Library(ops)


class Library:
    """Which op a call ``name(args)`` denotes: the built-ins, plus custom ops."""

    def __init__(self, custom=None):
        self.custom = dict(custom or {})

    def lookup(self, name, nargs):
        op = self.custom.get(name)
        if op is not None:
            return op if op.arity == nargs else None
        return oplib.CALLABLE.get((name, nargs))

    def arities(self, name):
        if name in self.custom:
            return [self.custom[name].arity]
        return sorted(n for (m, n) in oplib.CALLABLE if m == name)

    def names(self):
        return sorted({m for (m, _) in oplib.CALLABLE} | set(self.custom))


BUILTIN_LIBRARY = Library()
