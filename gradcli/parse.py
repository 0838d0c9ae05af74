"""Program text -> graph.

The grammar is ``grammar/expr.lark``.  Lark turns it into a stand-alone LALR(1) parser
(``gradcli/_parser.py``, made by ``tools/build_parser.py``), so no command imports Lark or
rebuilds parse tables at start-up.  The parser calls the methods of ``_Rules`` as it reduces
each grammar rule (their names are the rule names), and those build graph nodes directly: no
parse tree is kept and nothing recurses, so a 100,000-node program or 20,000 nested
parentheses parse in a loop, not on Python's stack.
"""
from __future__ import annotations

import functools
import math
import threading

import numpy as np

from . import ops as oplib
from .errors import ParseError
from .graph import Graph, Node

__all__ = ["parse", "CONSTANTS"]

CONSTANTS = {"pi": math.pi, "e": math.e}


class _Ex:
    """A parsed expression: a node id, or (id -1) a literal not yet made into a node."""

    __slots__ = ("id", "value", "start", "end")

    def __init__(self, id, value, start, end):
        self.id, self.value, self.start, self.end = id, value, start, end


class _Builder:
    """Builds the nodes of one program as the parser reduces its rules."""

    def __init__(self, text, library):
        self.text = text
        self.library = library
        self.nodes = []
        self.names = {}       # name -> node id, as bound so far
        self.variables = {}   # variable name -> node id

    # -- nodes
    def add(self, op, inputs, start, end, params=(), name=None, value=None):
        node = Node(len(self.nodes), op, inputs, params, name, value, start, end)
        self.nodes.append(node)
        return node.id

    def node(self, ex):
        """The node id of ``ex``, making a constant node for a literal."""
        if ex.id < 0:
            ex.id = self.add(oplib.CONST, (), ex.start, ex.end,
                             value=np.asarray(ex.value, dtype=np.float64))
        return ex.id

    def apply(self, op, args, start, end, params=()):
        return _Ex(self.add(op, tuple(self.node(a) for a in args), start, end, params),
                   None, start, end)

    def error(self, message, pos):
        raise ParseError(message, self.text, pos)

    # -- names
    def name(self, tok):
        n = str(tok)
        i = self.names.get(n)
        if i is None:
            if n in CONSTANTS:
                return _Ex(-1, CONSTANTS[n], tok.start_pos, tok.end_pos)
            i = self.add(oplib.VAR, (), tok.start_pos, tok.end_pos, name=n)
            self.names[n] = self.variables[n] = i
        return _Ex(i, None, tok.start_pos, tok.end_pos)

    def assign(self, tok, ex):
        n = str(tok)
        if n in CONSTANTS:
            self.error(f"cannot assign to the constant {n}", tok.start_pos)
        if n in self.variables:
            first = self.nodes[self.variables[n]].start
            line = self.text.count("\n", 0, first) + 1
            self.error(f"{n} is used as an input (line {line}) before this assignment; "
                       f"give the new value another name", tok.start_pos)
        i = self.node(ex)
        node = self.nodes[i]
        if node.name is None:
            node.name = n
        self.names[n] = i
        return ("=", n, i, tok.start_pos)

    # -- calls and literals
    def call(self, tok, args, end):
        name, start = str(tok), tok.start_pos
        op = self.library.lookup(name, len(args))
        if op is None:
            arities = self.library.arities(name)
            if arities:
                want = " or ".join(str(a) for a in arities)
                plural = "s" if arities[-1] != 1 else ""
                self.error(f"{name} takes {want} argument{plural}, got {len(args)}", start)
            hint = _did_you_mean(name, self.library.names())
            self.error(f"unknown op {name!r}{hint}", start)
        inputs, static = args[:op.arity], args[op.arity:]
        params = tuple(self.integer_arg(op, k, a) for k, a in enumerate(static))
        return self.apply(op, inputs, start, end, params)

    def integer_arg(self, op, k, ex):
        v = ex.value
        if ex.id >= 0 or np.ndim(v) or not float(v).is_integer():
            self.error(f"the {op.params[k]} of {op.name} must be a whole-number constant, "
                       f"as in {op.name}(x, 0)", ex.start)
        return int(v)

    def array(self, items, start, end):
        if not items:
            self.error("an array needs at least one item", start)
        if all(it.id < 0 for it in items):
            shapes = {np.shape(it.value) for it in items}
            if len(shapes) > 1:
                a, b = sorted(shapes, key=len)[:2]
                self.error(f"ragged array: items have shapes {a} and {b}", start)
            return _Ex(-1, np.array([it.value for it in items], dtype=np.float64), start, end)
        return self.apply(oplib.stack, items, start, end)

    def finish(self, statements):
        statements = [s for s in statements if s is not None]
        if not statements:
            raise ParseError("the program is empty: write an expression such as x * y")
        for s in statements[:-1]:
            if isinstance(s, _Ex):
                self.error("only the last statement can be a bare expression: "
                           "name this one (NAME = ...) or remove it", s.start)
        last = statements[-1]
        if isinstance(last, _Ex):
            output = self.node(last)
            name = self.text[last.start:last.end]
            if self.names.get(name) != output:  # not just a name: name the output
                name = self.nodes[output].name
            if name is None or (self.nodes[output].op is oplib.VAR and name == self.nodes[output].name):
                name = _fresh_name(self.names)
                if self.nodes[output].name is None:
                    self.nodes[output].name = name
                self.names[name] = output
        else:
            _, name, output, _ = last
        return Graph(self.text, self.nodes, self.names, output, name)


def _fresh_name(taken):
    """A name for an unnamed output: f, as in the textbooks, unless the program uses it."""
    for name in ("f", "out", "result"):
        if name not in taken:
            return name
    k = 1
    while f"f_{k}" in taken:
        k += 1
    return f"f_{k}"


def _did_you_mean(name, candidates):
    import difflib  # only on this error path

    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


class _Rules:
    """Grammar rule name -> what to build; the parser calls these with the rule's children."""

    def __init__(self):
        self.b = None

    def start(self, c):
        return self.b.finish(c)

    def assign(self, c):
        return self.b.assign(c[0], c[1])

    def _binary(self, op, c):
        a, b = c[0], c[2]
        return self.b.apply(op, (a, b), a.start, b.end)

    def add(self, c):
        return self._binary(oplib.add, c)

    def sub(self, c):
        return self._binary(oplib.sub, c)

    def mul(self, c):
        return self._binary(oplib.mul, c)

    def div(self, c):
        return self._binary(oplib.div, c)

    def matmul(self, c):
        return self._binary(oplib.matmul, c)

    def pow(self, c):
        return self._binary(oplib.pow, c)

    def neg(self, c):
        tok, a = c
        if a.id < 0:  # a negative literal stays a literal: [-1, 2], x * -1
            return _Ex(-1, -a.value, tok.start_pos, a.end)
        return self.b.apply(oplib.neg, (a,), tok.start_pos, a.end)

    def pos(self, c):
        tok, a = c
        return _Ex(a.id, a.value, tok.start_pos, a.end)  # +x is x

    def number(self, c):
        tok = c[0]
        return _Ex(-1, float(tok), tok.start_pos, tok.end_pos)

    def name(self, c):
        return self.b.name(c[0])

    def group(self, c):
        a = c[1]
        return _Ex(a.id, a.value, c[0].start_pos, c[2].end_pos)

    def call(self, c):
        tok, _, args, rpar = c
        return self.b.call(tok, args or [], rpar.end_pos)

    def array(self, c):
        lsqb, items, rsqb = c
        return self.b.array(items or [], lsqb.start_pos, rsqb.end_pos)

    def arguments(self, c):
        return [a for a in c if isinstance(a, _Ex)]

    def index(self, c):
        x, _, key, rsqb = c
        return self.b.apply(oplib.index, (x,), x.start, rsqb.end_pos, (key,))

    def subscripts(self, c):
        return tuple(k for k in c if k is not None)

    def at(self, c):
        return c[0]

    def slice(self, c):
        return slice(*[k for k in c if not hasattr(k, "type")])

    def integer(self, c):
        return -int(c[1]) if len(c) == 2 else int(c[0])


class _NewlinesInBrackets:
    """Post-lexer: a new line inside (), [] continues the statement, as in Python."""

    always_accept = ("_SEP",)

    def process(self, stream):
        depth = 0
        for tok in stream:
            t = tok.type
            if t == "_SEP":
                if depth and tok.value != ";":
                    continue
            elif t == "LPAR" or t == "LSQB":
                depth += 1
            elif (t == "RPAR" or t == "RSQB") and depth:
                depth -= 1
            yield tok


_RULES = _Rules()
_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def _parser():
    from . import _parser as standalone

    return standalone, standalone.Lark_StandAlone(transformer=_RULES,
                                                  postlex=_NewlinesInBrackets())


def parse(text, library=None):
    """Parse a program into a :class:`Graph`; ``library`` adds custom ops (plugins.Library).

    Cached: a graph is never changed once built, so the same text gives the same graph.
    """
    if library is None:
        from .plugins import BUILTIN_LIBRARY as library
    if len(text) > _CACHE_TEXT:  # a big program is parsed once; do not keep it alive
        return _parse.__wrapped__(text, library)
    return _parse(text, library)


_CACHE_TEXT = 10_000  # characters: programs up to this size are remembered (64 of them)


@functools.lru_cache(maxsize=64)
def _parse(text, library):
    standalone, parser = _parser()
    with _LOCK:
        _RULES.b = _Builder(text, library)
        try:
            return parser.parse(text)
        except standalone.UnexpectedInput as e:
            raise _syntax_error(e, text) from None
        finally:
            _RULES.b = None


# ---------------------------------------------------------------- syntax errors

_DESCRIBE = {
    "NUMBER": "a number", "NAME": "a name", "INT": "a whole number", "LPAR": "'('",
    "LSQB": "'['", "MINUS": "'-'", "PLUS": "'+'", "STAR": "'*'", "SLASH": "'/'", "AT": "'@'",
    "POW": "'**'", "RPAR": "')'", "RSQB": "']'", "COMMA": "','", "COLON": "':'",
    "EQUAL": "'='", "_SEP": "';'", "$END": "the end of the program",
}
_ORDER = list(_DESCRIBE)
_BINARY = {"STAR", "SLASH", "AT", "POW"}


def _expected(names):
    names = set(names)
    if "PLUS" in names and not names & {"NAME", "NUMBER", "LPAR"}:
        # After a complete operand.  LALR may have reduced it into a sum before noticing the
        # error, leaving only + and - in its table; * / @ ** were just as possible.
        names |= _BINARY
    words = []
    if _BINARY <= names:  # after a complete operand: any operator may follow
        names -= _BINARY | {"PLUS", "MINUS"}
        words.append("an operator")
    words += [_DESCRIBE[n] for n in sorted(names, key=lambda n: (
        _ORDER.index(n) if n in _DESCRIBE else len(_ORDER), n)) if n in _DESCRIBE]
    if len(words) > 1:
        return ", ".join(words[:-1]) + " or " + words[-1]
    return words[0] if words else "something else"


def _accepted(e):
    """The tokens the parser could have taken: replayed, so more exact than LALR's table."""
    try:
        return e.accepts or e.expected
    except Exception:  # the replay is a nicety; the table's answer is still right
        return e.expected


def _syntax_error(e, text):
    token = getattr(e, "token", None)
    if token is not None:  # UnexpectedToken (and the end of input)
        if token.type == "$END":
            pos, what = len(text.rstrip()), "unexpected end of the program"
        else:
            pos = token.start_pos
            kind = {"NAME": "name ", "NUMBER": "number ", "INT": "number "}.get(token.type, "")
            what = ("unexpected new line" if token.type == "_SEP" and token.value != ";"
                    else f"unexpected {kind}{str(token)!r}")
        if token.type in ("NAME", "NUMBER") and ({"INT", "COLON"} & set(e.expected)):
            return ParseError("an index or slice takes whole-number constants, "
                              "as in x[0], W[1, -1], x[1:]", text, pos)
        return ParseError(f"{what}; expected {_expected(_accepted(e))}", text, pos)
    pos = e.pos_in_stream
    char = text[pos] if pos < len(text) else ""
    return ParseError(f"unexpected character {char!r}; expected {_expected(e.allowed or ())}",
                      text, pos)
