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

import contextlib
import inspect
import math
import operator
import os
import sys
import types

from . import ops as oplib
from .errors import GradcliError

__all__ = ["OpsFileError", "load_ops_files", "Library", "BUILTIN_LIBRARY", "GATE_DOMAINS"]

GATE_DOMAINS = ("real", "positive", "nonzero")


class OpsFileError(GradcliError):
    """An ops file or one of its ops is broken; the message names the file and the op."""


def _short(path):
    return os.path.basename(path)


#: The largest ops file read: Python source this long is not an ops file.
MAX_OPS_BYTES = 16 << 20
TORCH_HINT = "pip install 'gradcli[torch]'"


def _read_source(path):
    from . import files
    from .errors import BindingError

    if path == "-":
        raise OpsFileError("--ops -: an ops file is Python code; give its path")
    try:
        return files.read_text(path, f"--ops {path}", limit=min(files.max_bytes(),
                                                                 MAX_OPS_BYTES))
    except BindingError as e:
        raise OpsFileError(str(e)) from None


def _uses_torch(tree):
    """Whether the file imports PyTorch (found in its syntax, before running it)."""
    import ast

    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "torch"
                                                for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "torch" \
                and not node.level:
            return True
    return False


def load_ops_file(path):
    """The ops a file defines, as :class:`~gradcli.ops.Op` objects with ``gate`` set."""
    import ast

    where = _short(path)
    source = _read_source(path)
    try:
        tree = ast.parse(source, path)
        code = compile(tree, path, "exec")
    except SyntaxError as e:
        raise OpsFileError(f"ops file {where}: syntax error at line {e.lineno}: {e.msg}") from None
    except (ValueError, RecursionError, MemoryError) as e:
        raise OpsFileError(f"ops file {where}: cannot compile it: {_exc_text(e)}") from None
    torch = None
    if _uses_torch(tree):
        try:
            import torch  # noqa: F811 -- only for a file that uses it
        except ImportError:
            raise OpsFileError(f"ops file {where} uses PyTorch (import torch), which is not "
                               f"installed: {TORCH_HINT}") from None
    module = types.ModuleType(f"gradcli_ops_{abs(hash(os.path.abspath(path)))}")
    module.__file__ = path
    try:
        # what the file prints goes to stderr: stdout may be carrying JSON or CSV
        with contextlib.redirect_stdout(sys.stderr):
            exec(code, module.__dict__)
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # noqa: B036 - foreign code: sys.exit() included, nothing escapes
        raise OpsFileError(f"ops file {where}: loading it raised {_exc_text(e, path)}") from None
    classes = [v for v in list(module.__dict__.values())
               if isinstance(v, type) and v.__module__ == module.__name__]
    # A class the file's other classes derive from is a base for them, not an op; so is a
    # class whose name starts with an underscore.
    bases = {b for c in classes for b in c.__mro__[1:]}
    found = []
    functions = _torch_functions(classes, torch)
    for value in classes:
        if value in bases or value.__name__.startswith("_"):
            continue
        if value in functions:
            found.append(_gate_op(_torch_gate(value, where, torch), where))
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


def _torch_functions(classes, torch):
    """The classes that are ``torch.autograd.Function`` subclasses (none without torch)."""
    if torch is None:
        return set()
    base = torch.autograd.Function
    return {c for c in classes if isinstance(c, type) and issubclass(c, base)}


def _torch_gate(fn, where, torch):
    """A gate class that runs a ``torch.autograd.Function`` on float64 tensors.

    forward: the inputs become float64 tensors that require grad, ``fn.apply`` runs the
    Function's own forward (with its ctx); backward: ``torch.autograd.grad`` with the
    upstream gradient runs the Function's own backward, through PyTorch's machinery, so
    ``save_for_backward``, ``needs_input_grad`` and ``setup_context`` behave as in PyTorch.
    """
    label = f"ops file {where}: op {fn.__name__} (torch.autograd.Function)"
    try:
        params = list(inspect.signature(fn.forward).parameters.values())
    except (TypeError, ValueError):
        raise OpsFileError(f"{label}: cannot read the arguments of forward") from None
    own_setup = getattr(fn, "setup_context", None) is not getattr(
        torch.autograd.Function, "setup_context", None)
    if not own_setup:
        params = params[1:]  # forward(ctx, ...)
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        raise OpsFileError(f"{label}: forward must take a fixed number of inputs, not *args")
    names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
             and p.default is p.empty]
    if not names or not all(n.isidentifier() for n in names):
        raise OpsFileError(f"{label}: forward takes no inputs besides ctx")
    f64 = torch.float64

    def run_forward(self, *xs):
        import numpy as np

        if any(np.iscomplexobj(x) for x in xs):
            raise TypeError("a torch.autograd.Function op takes real inputs (use --method "
                            "central, not the complex step)")
        self._ts = [torch.tensor(np.asarray(x, dtype=np.float64), dtype=f64,
                                 requires_grad=True) for x in xs]
        out = fn.apply(*self._ts)
        if isinstance(out, (tuple, list)):
            raise TypeError(f"forward returned {len(out)} outputs; a gradcli op has one")
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"forward returned {type(out).__name__}, not a tensor")
        self._out = out
        return out.detach().cpu().numpy().copy()

    def run_backward(self, dz):
        import numpy as np

        g = torch.tensor(np.array(dz, dtype=np.float64), dtype=f64)
        if not self._out.requires_grad:  # forward detached its result: no gradient flows
            return [None] * len(self._ts)
        got = torch.autograd.grad(self._out, self._ts, grad_outputs=g, retain_graph=True,
                                  allow_unused=True)
        return [None if t is None else t.detach().cpu().numpy().copy() for t in got]

    ns = {"_f": run_forward}
    exec(f"def forward(self, {', '.join(names)}):\n    return _f(self, {', '.join(names)})",
         ns)  # the parameter names were checked to be identifiers
    attrs = {"forward": ns["forward"], "backward": run_backward, "__doc__": fn.__doc__,
             "__module__": fn.__module__, "torch_function": fn}
    for key in ("name", "shapes", "domain"):
        if key in fn.__dict__:
            attrs[key] = fn.__dict__[key]
    if "name" not in attrs:
        attrs["name"] = fn.__name__
    return type(fn.__name__, (), attrs)


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
    shapes = _valid_shapes(getattr(cls, "shapes", None), arity, label)
    domain = _valid_domain(getattr(cls, "domain", None), arity, label)
    doc = (inspect.getdoc(cls) or "").strip().splitlines()
    op = oplib.Op(name, None, arity=arity, argnames=argnames,
                  formulas=[f"{cls.__name__}.backward"] * arity,
                  doc=doc[0] if doc else f"custom op from {where}")
    op.gate = cls
    op.shapes = shapes
    op.sample_domain = domain
    return op


#: The most elements one input of the self-check may have (a shapes hint larger is an error)
MAX_SAMPLE_ELEMENTS = 1_000_000


def _valid_shapes(shapes, arity, label):
    if shapes is None:
        return None
    msg = f"{label}: shapes must be a list of shapes like [(3,), (3,)], one per input"
    if isinstance(shapes, (str, bytes)) or not hasattr(shapes, "__iter__"):
        raise OpsFileError(msg)
    try:
        shapes = [tuple(operator.index(n) for n in s) for s in shapes]
    except (TypeError, ValueError):
        raise OpsFileError(msg) from None
    if len(shapes) != arity:
        raise OpsFileError(f"{label}: shapes gives {len(shapes)} shapes for {arity} inputs")
    for s in shapes:
        if any(n < 0 for n in s):
            raise OpsFileError(f"{label}: shapes has a negative length in {s}")
        if len(s) > 32:
            raise OpsFileError(f"{label}: shapes has {len(s)} axes in one shape (at most 32)")
        size = 1
        for n in s:
            size *= n
        if size > MAX_SAMPLE_ELEMENTS:
            raise OpsFileError(f"{label}: shapes asks for {size:,} elements in {s}; the "
                               f"self-check samples at most {MAX_SAMPLE_ELEMENTS:,} per input")
    return shapes


def _valid_domain(domain, arity, label):
    if domain is None:
        return None
    what = (f"{label}: domain entries are 'real', 'positive', 'nonzero' or a (low, high) "
            f"pair of finite numbers")
    if isinstance(domain, str):
        domain = [domain] * arity
    elif isinstance(domain, (list, tuple)):
        if len(domain) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                    for v in domain) and arity != 2:
            domain = [tuple(domain)] * arity  # one (low, high) pair for every input
        domain = list(domain)
    else:
        raise OpsFileError(f"{what}; got {_brief(domain)}")
    if len(domain) != arity:
        raise OpsFileError(f"{label}: domain gives {len(domain)} entries for {arity} inputs")
    out = []
    for d in domain:
        if isinstance(d, str) and d in GATE_DOMAINS:
            out.append(d)
            continue
        ok = False
        if isinstance(d, (tuple, list)) and len(d) == 2:
            try:
                lo, hi = float(d[0]), float(d[1])
                ok = math.isfinite(lo) and math.isfinite(hi) and lo < hi
            except (TypeError, ValueError, OverflowError):
                ok = False
        if not ok:
            raise OpsFileError(f"{what}, not {_brief(d)}")
        out.append((lo, hi))
    return out


def _brief(v):
    try:
        text = repr(v)
    except Exception:
        text = f"a {type(v).__name__}"
    return text if len(text) <= 40 else text[:37] + "..."


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
