"""Program text -> graph.

The grammar is ``grammar/expr.lark``.  Lark computes its LALR(1) tables, which
``tools/build_parser.py`` writes to ``gradcli/_tables.py``; the small driver here runs them,
so no command imports Lark or rebuilds the tables at start-up.  As the driver reduces each
grammar rule it calls the method of ``_Rules`` named after the rule (or its alias), and those
build graph nodes directly: no parse tree is kept and nothing recurses, so a 100,000-node
program or 20,000 nested parentheses parse in a loop, not on Python's stack.
"""
from __future__ import annotations

import functools
import math
import re

import numpy as np

from . import ops as oplib
from .errors import ParseError, did_you_mean
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
        self.assigned = {}    # statement name -> where it is assigned
        self.statements = []  # in order: an _Ex (bare expression) or an assignment

    # -- nodes
    def add(self, op, inputs, start, end, params=(), name=None, value=None):
        node = Node(len(self.nodes), op, inputs, params, name, value, start, end)
        self.nodes.append(node)
        return node.id

    def node(self, ex):
        """The node id of ``ex``, making a constant node for a literal."""
        if ex.id < 0:
            value = np.array(ex.value, dtype=np.float64)
            value.flags.writeable = False  # a cached graph's constants stay what they say
            ex.id = self.add(oplib.CONST, (), ex.start, ex.end, value=value)
        return ex.id

    def apply(self, op, args, start, end, params=()):
        return _Ex(self.add(op, tuple(self.node(a) for a in args), start, end, params),
                   None, start, end)

    def error(self, message, pos):
        raise ParseError(message, self.text, pos)

    # -- names
    def name(self, tok):
        n = tok.text
        i = self.names.get(n)
        if i is None:
            if n in CONSTANTS:
                return _Ex(-1, CONSTANTS[n], tok.start, tok.end)
            i = self.add(oplib.VAR, (), tok.start, tok.end, name=n)
            self.names[n] = self.variables[n] = i
        return _Ex(i, None, tok.start, tok.end)

    def assign(self, tok, ex):
        n = tok.text
        if n in CONSTANTS:
            self.error(f"cannot assign to the constant {n}", tok.start)
        if n in self.variables:
            line = self.text.count("\n", 0, self.nodes[self.variables[n]].start) + 1
            self.error(f"{n} is used as an input (line {line}) before this assignment; "
                       f"give the new value another name", tok.start)
        if n in self.assigned:  # one name, one value: tables and --wrt name values
            line = self.text.count("\n", 0, self.assigned[n]) + 1
            self.error(f"{n} is already assigned (line {line}); give the new value another "
                       f"name", tok.start)
        self.assigned[n] = tok.start
        i = self.node(ex)
        node = self.nodes[i]
        if node.name is None:
            node.name = n
        self.names[n] = i
        return ("=", n, i, tok.start)

    # -- calls and literals
    def call(self, tok, args, end):
        name, start = tok.text, tok.start
        op = self.library.lookup(name, len(args))
        if op is None:
            arities = self.library.arities(name)
            if arities:
                want = " or ".join(str(a) for a in arities)
                plural = "s" if arities[-1] != 1 else ""
                self.error(f"{name} takes {want} argument{plural}, got {len(args)}", start)
            hint = did_you_mean(name, self.library.names())
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

    def finish(self):
        statements = self.statements
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


def looks_like_a_binding(text):
    """Whether a program reads like ``x=1``: a NAME=VALUE given where EXPR belongs."""
    return re.fullmatch(r"\s*(?!\d)\w+\s*=\s*[-+.\w\[\], ]+\s*", text) is not None


def _fresh_name(taken):
    """A name for an unnamed output: f, as in the textbooks, unless the program uses it."""
    for name in ("f", "out", "result"):
        if name not in taken:
            return name
    k = 1
    while f"f_{k}" in taken:
        k += 1
    return f"f_{k}"


class _Rules:
    """What to build when the driver reduces a rule: methods named as the grammar's rules
    (or their aliases), called with the rule's children (tokens and built values)."""

    def __init__(self, builder):
        self.b = builder

    def program(self, c):
        return self.b.finish()

    def assign(self, c):
        self.b.statements.append(self.b.assign(c[0], c[2]))

    def bare(self, c):
        self.b.statements.append(c[0])

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
            return _Ex(-1, -a.value, tok.start, a.end)
        return self.b.apply(oplib.neg, (a,), tok.start, a.end)

    def pos(self, c):
        tok, a = c
        return _Ex(a.id, a.value, tok.start, a.end)  # +x is x

    def number(self, c):
        tok = c[0]
        return _Ex(-1, float(tok.text), tok.start, tok.end)

    def name(self, c):
        return self.b.name(c[0])

    def group(self, c):
        a = c[1]
        return _Ex(a.id, a.value, c[0].start, c[2].end)

    def call(self, c):  # NAME ( ) | NAME ( arguments ) | NAME ( arguments , )
        return self.b.call(c[0], c[2] if len(c) > 3 else [], c[-1].end)

    def array(self, c):  # [ ] | [ arguments ] | [ arguments , ]
        return self.b.array(c[1] if len(c) > 2 else [], c[0].start, c[-1].end)

    def first(self, c):  # the first of arguments or subscripts
        return [c[0]]

    def more(self, c):
        c[0].append(c[2])
        return c[0]

    def index(self, c):
        x, key, rsqb = c[0], c[2], c[-1]
        return self.b.apply(oplib.index, (x,), x.start, rsqb.end, (tuple(key),))

    def at(self, c):
        return c[0]

    def slice(self, c):  # bound : bound [: bound]
        return slice(*c[::2])

    def whole(self, c):  # NUMBER | - NUMBER, in an index
        tok = c[-1]
        if not tok.text.isdigit():
            self.b.error("an index or slice takes whole-number constants, "
                         "as in x[0], W[1, -1], x[1:]", tok.start)
        return -int(tok.text) if len(c) == 2 else int(tok.text)


# ---------------------------------------------------------------- the LALR(1) driver

class _Token:
    """A token: its terminal's name, its text and where it lies in the program."""

    __slots__ = ("type", "text", "start", "end")

    def __init__(self, type, text, start, end):
        self.type, self.text, self.start, self.end = type, text, start, end

    def __str__(self):
        return self.text


class _BadCharacter(Exception):
    def __init__(self, pos):
        self.pos = pos


_OPEN, _CLOSE = frozenset(("LPAR", "LSQB")), frozenset(("RPAR", "RSQB"))


@functools.lru_cache(maxsize=1)
def _tables():
    from . import _tables as tables

    lexer = re.compile("|".join(f"(?P<{name}>{regexp})" for name, regexp in tables.TERMINALS))
    terminals = frozenset(name for name, _ in tables.TERMINALS) | {"$END"}
    return tables, lexer, terminals


def _tokens(text, lexer, ignore):
    """The program's tokens, then $END.  A new line inside (), [] is not a separator."""
    match = lexer.match
    pos, n, depth = 0, len(text), 0
    while pos < n:
        m = match(text, pos)
        if m is None:
            raise _BadCharacter(pos)
        kind, end = m.lastgroup, m.end()
        if kind in ignore:
            pos = end
            continue
        if kind == "_SEP":
            if depth and text[pos] != ";":
                pos = end
                continue
        elif kind in _OPEN:
            depth += 1
        elif kind in _CLOSE and depth:
            depth -= 1
        yield _Token(kind, m.group(), pos, end)
        pos = end
    yield _Token("$END", "", n, n)


def _drive(text, rules):
    """Run the LALR(1) tables over ``text``; return what the start rule's method returns."""
    tables, lexer, _ = _tables()
    table, end_state = tables.STATES, tables.END
    calls = [(origin, n, None if passthrough else getattr(rules, method, None), passthrough)
             for origin, n, method, passthrough in tables.RULES]
    states = [tables.START]
    values = []
    tok = None
    try:
        for tok in _tokens(text, lexer, tables.IGNORE):
            kind = tok.type
            while True:
                act = table[states[-1]].get(kind)
                if act is None:
                    raise _syntax_error(text, tok)
                if act >= 0:  # shift
                    states.append(act)
                    values.append(tok)
                    break
                origin, n, call, passthrough = calls[-1 - act]  # reduce
                if n:
                    children = values[-n:]
                    del values[-n:]
                    del states[-n:]
                else:
                    children = []
                if passthrough:
                    value = children[0]
                else:
                    value = call(children) if call is not None else None
                states.append(table[states[-1]][origin])
                values.append(value)
                if kind == "$END" and states[-1] == end_state:
                    return value
    except _BadCharacter as e:
        raise _syntax_error(text, None, e.pos) from None
    raise AssertionError("the tables accepted no input")  # pragma: no cover


def _accepts(text, stop):
    """The terminals the parser could take where the token at ``stop`` stands (replayed
    without building anything, so nothing has been reduced on that token's account)."""
    tables, lexer, terminals = _tables()
    table, rules = tables.STATES, tables.RULES
    states = [tables.START]
    try:
        for tok in _tokens(text, lexer, tables.IGNORE):
            if tok.start >= stop and tok.type != "$END" or tok.type == "$END":
                break
            while True:
                act = table[states[-1]].get(tok.type)
                if act is None:
                    return set()
                if act >= 0:
                    states.append(act)
                    break
                origin, n = rules[-1 - act][:2]
                if n:
                    del states[-n:]
                states.append(table[states[-1]][origin])
    except _BadCharacter:
        pass
    return {t for t in table[states[-1]] if t in terminals and _takes(table, tables, states, t)}


def _takes(table, tables, states, kind):
    """Whether the parser in ``states`` would shift ``kind`` (after any reductions)."""
    states = list(states)
    while True:
        act = table[states[-1]].get(kind)
        if act is None:
            return False
        if act >= 0:
            return True
        origin, n = tables.RULES[-1 - act][:2]
        if n:
            del states[-n:]
        states.append(table[states[-1]][origin])
        if kind == "$END" and states[-1] == tables.END:
            return True


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
    return _drive(text, _Rules(_Builder(text, library)))


# ---------------------------------------------------------------- syntax errors

_DESCRIBE = {
    "NUMBER": "a number", "NAME": "a name", "LPAR": "'('", "LSQB": "'['", "MINUS": "'-'",
    "PLUS": "'+'", "STAR": "'*'", "SLASH": "'/'", "AT": "'@'", "POW": "'**'", "RPAR": "')'",
    "RSQB": "']'", "COMMA": "','", "COLON": "':'", "EQUAL": "'='", "_SEP": "';'",
    "$END": "the end of the program",
}
_ORDER = list(_DESCRIBE)
_OPERATORS = {"STAR", "SLASH", "AT", "POW", "PLUS", "MINUS"}


def _expected(names):
    names = set(names)
    words = []
    if {"STAR", "SLASH", "AT", "POW"} <= names:  # after a complete operand
        names -= _OPERATORS
        words.append("an operator")
    words += [_DESCRIBE[n] for n in sorted(names & set(_DESCRIBE), key=_ORDER.index)]
    if len(words) > 1:
        return ", ".join(words[:-1]) + " or " + words[-1]
    return words[0] if words else "something else"


def _syntax_error(text, tok, pos=None):
    if tok is None:  # no terminal matches here
        char = text[pos] if pos < len(text) else ""
        return ParseError(f"unexpected character {char!r}; expected "
                          f"{_expected(_accepts(text, pos))}", text, pos)
    expected = _accepts(text, tok.start)
    if tok.type == "$END":
        pos, what = len(text.rstrip()), "unexpected end of the program"
    else:
        pos = tok.start
        kind = {"NAME": "name ", "NUMBER": "number "}.get(tok.type, "")
        what = ("unexpected new line" if tok.type == "_SEP" and tok.text != ";"
                else f"unexpected {kind}{tok.text!r}")
        if tok.type == "NAME" and ("COLON" in expected and "NUMBER" in expected):
            return ParseError("an index or slice takes whole-number constants, "
                              "as in x[0], W[1, -1], x[1:]", text, pos)
    return ParseError(f"{what}; expected {_expected(expected)}", text, pos)
