"""A symbolic graph printed as a program: gradcli's language, LaTeX, or a NumPy function.

:class:`Program` decides once which values become statements (a value used more than once
whose text is longer than a name: shared subexpressions are named, never repeated, so the
text grows with the graph, not exponentially), and which names they get (the program's own
name for a value it named, else ``t1``, ``t2``, ...).  A dialect then says how each node
prints.  Every node is printed from its inputs' texts in topological order: no recursion.

Precedence follows grammar/expr.lark: comparisons < ``+ -`` < ``* / @`` < unary ``-`` <
``**`` < calls, names and numbers.
"""
from __future__ import annotations

import inspect
import keyword
import math

import numpy as np

from .. import ops as oplib

__all__ = ["Program", "number", "LANGUAGE", "LATEX", "PYTHON"]

CMP, ADD, MUL, UNARY, POW, ATOM = range(6)

#: A value used more than once gets a statement when its text is longer than this.
INLINE = 10
#: Uniform constants of up to this many elements print as a literal ([1, 1, 1]).
LITERAL = 16

_SYMBOL_PREC = {"+": ADD, "-": ADD, "*": MUL, "/": MUL, "@": MUL, "**": POW,
                "<": CMP, "<=": CMP, ">": CMP, ">=": CMP, "==": CMP, "!=": CMP}


def number(v):
    """A float as the language writes it: 2, 0.5, 1e-05, -3."""
    v = float(v)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v.is_integer() and abs(v) < 1e16:
        return str(int(v))
    return repr(v)


def _nested(a, fmt=number):
    a = np.asarray(a)
    if a.ndim == 0:
        return fmt(a)
    return "[" + ", ".join(_nested(x, fmt) for x in a) + "]"


def _shape_text(shape):
    return "(" + ", ".join(str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"


def _is_infix(op):
    return op.symbol is not None and op.symbol in _SYMBOL_PREC and op.arity == 2


def _is_unary_minus(op):
    return op.symbol == "-" and op.arity == 1


# ---------------------------------------------------------------- dialects

class Language:
    """gradcli's own language (what ``gradcli eval`` reads back)."""

    name = "language"

    def ident(self, name):
        return name

    def const(self, s):
        v = s.value
        if v.ndim == 0:
            if s.shape == ():
                return number(v), (UNARY if float(v) < 0 else ATOM)
            if int(np.prod(s.shape)) <= LITERAL:
                return _nested(np.broadcast_to(v, s.shape)), ATOM
            return f"broadcast_to({number(v)}, {_shape_text(s.shape)})", ATOM
        return _nested(v), ATOM

    def param(self, v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v + '"'
        if isinstance(v, (tuple, list)):
            return "(" + ", ".join(self.param(x) for x in v) + ("," if len(v) == 1 else "") \
                + ")"
        if isinstance(v, float):
            return number(v)
        return str(v)

    def infix(self, op, a, b):
        sym = op.symbol
        if sym == "**":
            return f"{a}**{b}"
        if sym in ("*", "/"):
            return f"{a}{sym}{b}"
        return f"{a} {sym} {b}"

    def neg(self, a):
        return f"-{a}"

    def paren(self, text):
        return f"({text})"

    def index_key(self, key):
        parts = []
        for k in key:
            if k is None:
                parts.append("None")
            elif k is Ellipsis:
                parts.append("...")
            elif isinstance(k, slice):
                t = ("" if k.start is None else str(k.start)) + ":" + \
                    ("" if k.stop is None else str(k.stop))
                if k.step is not None:
                    t += f":{k.step}"
                parts.append(t)
            else:
                parts.append(str(k))
        return ", ".join(parts)

    def index(self, x, key):
        return f"{x}[{self.index_key(key)}]"

    def stack(self, items):
        return "[" + ", ".join(items) + "]"

    def call(self, op, args, params):
        parts = list(args)
        names = tuple(op.params or ())
        for k, v in enumerate(params):
            if v is None:
                continue
            pname = names[k] if k < len(names) else None
            if pname is None or (k == 0 and isinstance(v, int) and not isinstance(v, bool)):
                parts.append(self.param(v))
            else:
                parts.append(f"{pname}={self.param(v)}")
        return f"{op.name}({', '.join(parts)})"

    def statement(self, name, text):
        return f"{name} = {text}"


class Latex(Language):
    """LaTeX for slides: ``\\frac``, ``\\cdot``, ``\\sqrt``, cases for ``where``."""

    name = "latex"
    FUNCS = {"sin": r"\sin", "cos": r"\cos", "tan": r"\tan", "exp": r"\exp", "log": r"\log",
             "tanh": r"\tanh", "sinh": r"\sinh", "cosh": r"\cosh", "asin": r"\arcsin",
             "acos": r"\arccos", "atan": r"\arctan", "max": r"\max", "min": r"\min"}
    RELATIONS = {"<": "<", "<=": r"\le", ">": ">", ">=": r"\ge", "==": "=", "!=": r"\ne",
                 "lt": "<", "le": r"\le", "gt": ">", "ge": r"\ge", "eq": "=", "ne": r"\ne"}

    def ident(self, name):
        base, _, sub = name.partition("_")
        base = base.replace("#", "")
        text = base if len(base) == 1 else r"\mathit{" + base + "}"
        return text + ("_{" + sub.replace("_", r"\_") + "}" if sub else "")

    def const(self, s):
        text, prec = super().const(s)
        if s.value.ndim or s.shape:
            a = np.broadcast_to(s.value, s.shape)
            if a.ndim == 1 and a.size <= LITERAL:
                rows = r" \\ ".join(number(x) for x in a)
                return r"\begin{bmatrix}" + rows + r"\end{bmatrix}", ATOM
            if a.ndim == 2 and a.size <= LITERAL:
                rows = r" \\ ".join(" & ".join(number(x) for x in r) for r in a)
                return r"\begin{bmatrix}" + rows + r"\end{bmatrix}", ATOM
            return r"\mathbf{" + number(s.value.flat[0]) + "}", ATOM
        return text, prec

    def infix(self, op, a, b):
        sym = op.symbol
        if sym == "**":
            return f"{{{a}}}^{{{b}}}"
        if sym == "*":
            return f"{a} {b}" if a[:1].isdigit() and not b[:1].isdigit() else \
                rf"{a} \cdot {b}"
        if sym == "/":
            return rf"\frac{{{a}}}{{{b}}}"
        if sym == "@":
            return rf"{a} \, {b}"
        return f"{a} {self.RELATIONS.get(sym, sym)} {b}"

    def paren(self, text):
        return rf"\left({text}\right)"

    def index(self, x, key):
        return f"{x}_{{{self.index_key(key)}}}"

    def stack(self, items):
        return r"\begin{bmatrix}" + r" \\ ".join(items) + r"\end{bmatrix}"

    def call(self, op, args, params):
        name = op.name
        if name in self.RELATIONS and len(args) == 2:
            return rf"\left[{args[0]} {self.RELATIONS[name]} {args[1]}\right]"
        if name == "sqrt":
            return rf"\sqrt{{{args[0]}}}"
        if name == "abs":
            return rf"\left|{args[0]}\right|"
        if name == "transpose" and all(v is None for v in params):
            return rf"{{{args[0]}}}^{{\top}}"
        if name == "step":
            return rf"\left[{args[0]} > 0\right]"
        if name == "where" and len(args) == 3:
            return (r"\begin{cases}" + args[1] + r" & \text{if } " + args[0] + r" \ne 0 \\ "
                    + args[2] + r" & \text{otherwise}\end{cases}")
        func = self.FUNCS.get(name, r"\operatorname{" + name.replace("_", r"\_") + "}")
        extra = [self.param(v) for v, dflt in zip(params, op.defaults or (None,) * len(params))
                 if v is not None and v != dflt]
        return rf"{func}\left({', '.join(list(args) + extra)}\right)"

    def statement(self, name, text):
        return f"{name} &= {text}"


class Python(Language):
    """NumPy code: operators for arithmetic, ``np.`` functions, and the library's own
    forward functions copied in for the rest (so the module needs nothing but NumPy)."""

    name = "python"

    def __init__(self):
        self.helpers = {}  # name -> source
        self.imports = set()

    def ident(self, name):
        name = name.replace("#", "_")
        return name + "_" if keyword.iskeyword(name) or name in ("np",) else name

    def const(self, s):
        v = s.value
        if v.ndim == 0:
            if s.shape == ():
                return number(v).replace("inf", "np.inf").replace("nan", "np.nan") \
                    if not np.isfinite(v) else repr(float(v)), \
                    (UNARY if float(v) < 0 else ATOM)
            return f"np.full({_shape_text(s.shape)}, {float(v)!r})", ATOM
        return f"np.array({_nested(v, lambda x: repr(float(x)))})", ATOM

    def param(self, v):
        if isinstance(v, str):
            return repr(v)
        if isinstance(v, slice):
            return repr(v)
        if v is Ellipsis:
            return "..."
        if isinstance(v, (tuple, list)):
            return "(" + ", ".join(self.param(x) for x in v) + ("," if len(v) == 1 else "") \
                + ")"
        return repr(v)

    def infix(self, op, a, b):
        if op.symbol in ("+", "-", "*", "/", "**", "@"):
            return f"{a} {op.symbol} {b}"
        raise AssertionError(op)  # comparisons are calls here (see node)

    def stack(self, items):
        return "np.stack([" + ", ".join(items) + "])"

    def call(self, op, args, params):
        f = op.forward
        extra = [self.param(v) for v in params]
        if isinstance(f, np.ufunc) or getattr(np, getattr(f, "__name__", ""), None) is f:
            return f"np.{f.__name__}({', '.join(list(args) + extra)})"
        name = self.helper(op)
        return f"{name}({', '.join(list(args) + extra)})"

    def helper(self, op):
        """The op's forward function, copied in with the module-level helpers it calls (a
        closure is rebuilt by a maker function that binds its free variables)."""
        from ..errors import GradcliError

        f = op.forward
        name = getattr(f, "__name__", "")
        if not inspect.isfunction(f) or name == "<lambda>" or f.__module__ != oplib.__name__:
            raise GradcliError(f"--format python: op {op.name} has no NumPy form to print")
        if f.__closure__:
            name = f"_{op.name}_forward"
        if name in self.helpers:
            return name
        if f.__closure__:
            self.helpers[name] = self._closure(op, f, name)
        else:
            self.helpers[name] = inspect.getsource(f)
        self._globals(f)
        return name

    def _globals(self, f):
        """Copy in the module-level functions, constants and modules ``f`` uses, and theirs."""
        import types

        todo = [f]
        while todo:
            g = todo.pop()
            codes, names = [g.__code__], []
            while codes:  # the function's own names and those of code nested in it
                code = codes.pop()
                names.extend(code.co_names)
                codes.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
            for ref in names:
                if ref in self.helpers or ref == "np" or ref not in g.__globals__:
                    continue
                h = g.__globals__[ref]
                if inspect.isfunction(h) and h.__module__ == oplib.__name__ \
                        and not h.__closure__:
                    self.helpers[ref] = inspect.getsource(h)
                    todo.append(h)
                elif isinstance(h, types.ModuleType):
                    self.imports.add(f"import {h.__name__}" if h.__name__ == ref
                                     else f"import {h.__name__} as {ref}")
                elif isinstance(h, (int, float, str, tuple, frozenset)) and \
                        not isinstance(h, bool) and len(repr(h)) < 2000:
                    self.helpers[ref] = f"{ref} = {h!r}\n"

    def _closure(self, op, f, name):
        import textwrap

        from ..errors import GradcliError

        lines = [f"def {name}_make():"]
        for var, cell in zip(f.__code__.co_freevars, f.__closure__):
            v = cell.cell_contents
            vname = getattr(v, "__name__", "")
            if isinstance(v, np.ufunc) or (vname and getattr(np, vname, None) is v):
                lines.append(f"    {var} = np.{vname}")
            elif isinstance(v, (int, float, str, bool)) or v is None:
                lines.append(f"    {var} = {v!r}")
            elif inspect.isfunction(v) and v.__module__ == oplib.__name__ and not v.__closure__:
                self.helpers.setdefault(v.__name__, inspect.getsource(v))
                self._globals(v)
                lines.append(f"    {var} = {v.__name__}")
            else:
                raise GradcliError(f"--format python: op {op.name} has no NumPy form to print")
        body = textwrap.dedent(inspect.getsource(f))
        lines.extend("    " + line if line else line for line in body.rstrip().splitlines())
        lines.append(f"    return {f.__name__}")
        lines.append("")
        lines.append("")
        lines.append(f"{name} = {name}_make()")
        return "\n".join(lines) + "\n"

    def statement(self, name, text):
        return f"    {name} = {text}"


LANGUAGE = Language()
LATEX = Latex()


def PYTHON():
    return Python()


# ---------------------------------------------------------------- the program

class Program:
    """Derivatives (name -> symbol) laid out as statements and one expression each."""

    def __init__(self, builder, results, taken=(), program_names=()):
        self.builder = builder
        self.results = results
        nodes = builder.nodes
        top = max((s.id for s in results.values()), default=-1)
        reach = bytearray(top + 1)
        uses = [0] * (top + 1)
        for s in results.values():
            reach[s.id] = 1
        for i in range(top, -1, -1):
            if reach[i]:
                for x in nodes[i].inputs:
                    reach[x.id] = 1
                    uses[x.id] += 1
        self.order = [i for i in range(top + 1) if reach[i]]
        self.uses = uses
        # which values are statements, and their names
        inline = {}
        self.named = {}
        # names a statement may not take: variables, and the program's names (a value the
        # program named keeps its own name; a version a#2 of a is a_2)
        taken = set(taken) | set(program_names)
        counter = [0]

        def fresh(label):
            if label:
                base = label.replace("#", "_")
                if base.isidentifier() and (base == label or base not in taken) \
                        and base not in used:
                    used.add(base)
                    taken.add(base)
                    return base
            while True:
                counter[0] += 1
                name = f"t{counter[0]}"
                if name not in taken and name not in used:
                    taken.add(name)
                    used.add(name)
                    return name

        used = set(taken) - set(program_names)  # variables: never a statement's name
        statements = {}
        for i in self.order:
            s = nodes[i]
            text, prec = self._node(LANGUAGE, s, inline)
            inline[i] = (text, prec)
            if uses[i] >= 2 and s.op is not oplib.VAR and len(text) > INLINE and \
                    not (s.op is oplib.CONST and s.value.ndim == 0 and s.shape == ()):
                name = fresh(s.label)
                self.named[i] = name
                statements[i] = LANGUAGE.statement(name, text)
                inline[i] = (name, ATOM)
        self._language = (inline, statements)

    # -- one node
    def _prec(self, s):
        op = s.op
        if op is oplib.VAR:
            return ATOM
        if op is oplib.CONST:
            return UNARY if s.value.ndim == 0 and s.shape == () and float(s.value) < 0 \
                else ATOM
        if _is_infix(op):
            return _SYMBOL_PREC[op.symbol]
        if _is_unary_minus(op):
            return UNARY
        return ATOM

    def _node(self, d, s, done):
        """(text, precedence) of node s in dialect d, its inputs' texts from ``done``."""
        op = s.op
        if op is oplib.VAR:
            return d.ident(s.name), ATOM
        if op is oplib.CONST:
            return d.const(s)

        def arg(x, need):
            text, prec = done[x.id]
            return d.paren(text) if prec < need else text

        if _is_infix(op) and not (d.name == "python" and _SYMBOL_PREC[op.symbol] == CMP):
            prec = _SYMBOL_PREC[op.symbol]
            a, b = s.inputs
            if op.symbol == "**":
                return d.infix(op, arg(a, ATOM), arg(b, UNARY)), POW
            if prec == CMP:
                return d.infix(op, arg(a, ADD), arg(b, ADD)), CMP
            left = arg(a, prec)
            right = arg(b, prec + 1)
            if op.symbol == "*" and a.op is oplib.CONST and b.op is op and \
                    done[b.id][1] == MUL:
                right = done[b.id][0]  # 2*x*y for 2*(x*y): the number leads the product
            if d.name == "latex" and op.symbol == "/":  # \frac groups by itself
                left, right = done[a.id][0], done[b.id][0]
                return d.infix(op, left, right), ATOM
            return d.infix(op, left, right), prec
        if _is_unary_minus(op):
            # -(a*b) prints as -a*b: (-a)*b is the same number (negation is exact)
            x = s.inputs[0]
            if done[x.id][1] == MUL and not done[x.id][0].startswith("-"):
                return d.neg(done[x.id][0]), MUL
            return d.neg(arg(x, UNARY)), UNARY
        if op is getattr(oplib, "index", None):
            return d.index(arg(s.inputs[0], ATOM), s.params[0]), ATOM
        if op is getattr(oplib, "stack", None):
            return d.stack([done[x.id][0] for x in s.inputs]), ATOM
        if d.name == "language" and hasattr(op, "text"):
            return op.text([done[x.id][0] for x in s.inputs], s.params), ATOM
        return d.call(op, [done[x.id][0] for x in s.inputs], s.params), ATOM

    def _texts(self, d):
        """Every reachable node's reference text in dialect d (a name for statements) and
        the statement texts, in order."""
        if d is LANGUAGE:
            return self._language
        nodes = self.builder.nodes
        done = {}
        statements = {}
        for i in self.order:
            text, prec = self._node(d, nodes[i], done)
            if i in self.named:
                name = d.ident(self.named[i])
                statements[i] = d.statement(name, text)
                done[i] = (name, ATOM)
            else:
                done[i] = (text, prec)
        return done, statements

    def _needs(self, s):
        """The statements s needs, in order (s's own last, if it is one)."""
        from ..symbolic import reach

        marked = reach(self.builder.nodes, [s])
        return [i for i in range(s.id + 1) if marked[i] and i in self.named]

    def standalone(self, dialect=LANGUAGE):
        """name -> a program computing that result alone (statements, then the result)."""
        done, statements = self._texts(dialect)
        out = {}
        for name, s in self.results.items():
            lines = [statements[i] for i in self._needs(s)]
            lines.append(done[s.id][0])
            out[name] = "\n".join(lines)
        return out

    def layout(self, dialect, labels):
        """(statement lines shared by all results, {name: result text}) in ``dialect``."""
        done, statements = self._texts(dialect)
        return [statements[i] for i in self.order if i in self.named], \
            {name: done[s.id][0] for name, s in self.results.items()}

    # -- whole documents
    def text(self, labels):
        """The language: shared statements, then ``d/dx = ...`` per result."""
        lines, results = self.layout(LANGUAGE, labels)
        lines = list(lines)
        for name in self.results:
            lines.append(f"{labels[name]} = {results[name]}")
        return "\n".join(lines)

    def latex(self, output, order=1):
        lines, results = self.layout(LATEX, None)
        out = [r"\begin{aligned}"]
        body = list(lines)
        f = LATEX.ident(output)
        for name in self.results:
            x = LATEX.ident(name)
            if order == 1:
                lhs = rf"\frac{{\partial {f}}}{{\partial {x}}}"
            else:
                lhs = rf"\frac{{\partial^{{{order}}} {f}}}{{\partial {x}^{{{order}}}}}"
            body.append(f"{lhs} &= {results[name]}")
        out.append(" \\\\\n".join(body))
        out.append(r"\end{aligned}")
        return "\n".join(out)

    def python(self, variables, output, func="gradient"):
        """A module defining ``func(variables...)`` that returns the derivatives."""
        py = Python()
        lines, results = self.layout(py, None)
        args = [py.ident(v) for v in variables]
        names = list(self.results)
        body = []
        body.append(f'def {func}({", ".join(args)}):')
        what = ", ".join(f"d{output}/d{n}" for n in names)
        body.append(f'    """{what}{" (a tuple, in this order)" if len(names) > 1 else ""}'
                    f', from gradcli diff."""')
        for a in args:
            body.append(f"    {a} = np.asarray({a}, dtype=np.float64)")
        body.append("    with np.errstate(all='ignore'):")
        body.extend("    " + line for line in lines)
        rets = []
        for n in names:
            text = results[n]
            r = self.results[n]
            if r.op is oplib.VAR:
                text = f"{text}.copy()"
            elif r.op is oplib.CONST and r.value.ndim == 0:
                shape = f"np.shape({py.ident(n)})" if n in variables else _shape_text(r.shape)
                text = f"np.full({shape}, {float(r.value)!r})"
            rets.append(text)
        body.append(f"        return {', '.join(rets)}")
        helpers = [h.rstrip() for h in py.helpers.values()]
        imports = "".join(line + "\n" for line in sorted(py.imports))
        head = f'"""Generated by gradcli diff: NumPy only."""\n{imports}import numpy as np\n\n\n'
        return head + "".join(h + "\n\n\n" for h in helpers) + "\n".join(body) + "\n"


# ---------------------------------------------------------------- diff and hessian results

def _labels(d):
    return {n: d.label(n) for n in d.names}


def diff_text(d, **options):
    """``d/dx = ...`` per derivative after the shared statements; values at the bindings."""
    from . import text as fmt

    out = d.program.text(_labels(d))
    values = d.values
    if values is not None:
        lines = [out, "", "at the bindings:"]
        for n in d.names:
            lines.append(f"  {d.label(n)} = {fmt.array(values[n])}")
        out = "\n".join(lines)
    return out + "\n"


def diff_json(d, **options):
    import json

    from ..values import to_json

    obj = {"output": d.output_name, "derivatives": d.text}
    if d.order != 1:
        obj["order"] = d.order
    values = d.values
    if values is not None:
        obj["value"] = to_json(d.value)
        obj["values"] = {n: to_json(v) for n, v in values.items()}
    return json.dumps(obj, allow_nan=False, ensure_ascii=False) + "\n"


def diff_latex(d, **options):
    return d.program.latex(d.output_name, d.order) + "\n"


def diff_python(d, **options):
    return d.program.python(list(d.lifted.variables), d.output_name)


def _elements(variables):
    """Labels of every element, variables in order, C order: x, W[0,0], W[0,1], ..."""
    out = []
    for name, shape in variables:
        if shape == ():
            out.append(name)
        else:
            out.extend(f"{name}[{','.join(map(str, idx))}]" for idx in np.ndindex(*shape))
    return out


#: A full Hessian is drawn as a table up to this many rows; bigger ones are summarised.
TABLE_MAX = 12


def hessian_table(h, **options):
    """The Hessian for people: a matrix table, the diagonal, or the product H v."""
    from . import text as fmt
    from .layout import Line, Table
    from .text import Num

    items = [Line(f"{h.output_name} = {fmt.array(h.value)}")]
    labels = _elements(h.variables)
    if h.product is not None:
        t = Table("variable", ("(H v)", "right"))
        for name, _ in h.variables:
            t.add_row(name, fmt.array_parts(h.product[name]))
        items.append(t)
        return items
    if h.diagonal is not None:
        t = Table("element", (f"d2{h.output_name}/dx2", "right"))
        for lab, v in zip(labels, h.diagonal):
            t.add_row(lab, Num(v))
        items.append(t)
        return items
    m = h.matrix
    if len(labels) <= TABLE_MAX:
        t = Table("", *[(lab, "right") for lab in labels])
        for lab, row in zip(labels, m):
            t.add_row(lab, *[Num(v) for v in row])
        items.append(t)
    else:
        items.append(Line(f"Hessian: {len(labels)}×{len(labels)} (too big for a table; "
                          f"--format json gives every entry, --diag the diagonal)"))
        d = np.diag(m)
        items.append(Line(f"diagonal: {fmt.array(d)}"))
        ev = np.linalg.eigvalsh((m + m.T) / 2) if np.isfinite(m).all() else None
        if ev is not None:
            items.append(Line(f"eigenvalues: {fmt.num(ev[0])} to {fmt.num(ev[-1])}"))
    if h.asymmetry is not None:
        items.append(Line(f"symmetric: max |H - H^T| = {fmt.num(h.asymmetry)}"))
    return items


def hessian_json(h, **options):
    import json

    from ..values import to_json

    obj = {"output": h.output_name, "value": to_json(h.value),
           "variables": [{"name": n, "shape": list(s)} for n, s in h.variables]}
    if h.matrix is not None:
        obj["hessian"] = to_json(h.matrix)
        obj["asymmetry"] = to_json(h.asymmetry)
    if h.diagonal is not None:
        obj["diagonal"] = to_json(h.diagonal)
    if h.product is not None:
        obj["product"] = {n: to_json(v) for n, v in h.product.items()}
    return json.dumps(obj, allow_nan=False, ensure_ascii=False) + "\n"

