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
import unicodedata

import numpy as np

from . import ops as oplib
from .errors import ParseError, did_you_mean
from .graph import Graph, Node
from .values import MAX_DEPTH, too_deep

__all__ = ["parse", "CONSTANTS"]

CONSTANTS = {"pi": math.pi, "e": math.e, "true": True, "false": False}

_STATIC = "a static argument of an op (an axis, a shape, a flag, einsum's subscripts)"


class _Ex:
    """A parsed expression: a node id, or (id -1) a literal not yet made into a node.

    A literal's value is a number (float or bool), an array, or a constant only an op's
    static argument can take: None, a tuple, a string (``oplib._Str``).
    """

    __slots__ = ("id", "value", "start", "end")

    def __init__(self, id, value, start, end):
        self.id, self.value, self.start, self.end = id, value, start, end

    @property
    def numeric(self):
        return self.id >= 0 or isinstance(self.value, (float, bool, int, np.ndarray))


class _Kw:
    """A keyword argument ``name=value`` of a call."""

    __slots__ = ("tok", "ex")

    def __init__(self, tok, ex):
        self.tok, self.ex = tok, ex


class _Builder:
    """Builds the nodes of one program as the parser reduces its rules."""

    def __init__(self, text, library):
        self.text = text
        self.library = library
        self.nodes = []
        self.names = {}       # name -> node id, as bound so far
        self.variables = {}   # variable name -> node id
        self.versions = {}    # statement name -> how many values it has had
        self.statements = []  # in order: an _Ex (bare expression) or an assignment
        self.warnings = []
        self.depth = {}       # node id of a list of nodes (stack) -> how deep its lists nest

    # -- nodes
    def add(self, op, inputs, start, end, params=(), name=None, value=None):
        node = Node(len(self.nodes), op, inputs, params, name, value, start, end)
        self.nodes.append(node)
        return node.id

    def node(self, ex):
        """The node id of ``ex``, making a constant node for a literal."""
        if ex.id < 0:
            if not ex.numeric:
                self.not_a_value(ex)
            value = np.array(ex.value, dtype=np.float64)
            value.flags.writeable = False  # a cached graph's constants stay what they say
            ex.id = self.add(oplib.CONST, (), ex.start, ex.end, value=value)
        return ex.id

    def apply(self, op, args, start, end, params=()):
        return _Ex(self.add(op, tuple(self.node(a) for a in args), start, end, params),
                   None, start, end)

    def error(self, message, pos):
        raise ParseError(message, self.text, pos)

    def not_a_value(self, ex):
        v = ex.value
        what = ("None" if v is None else "a string" if isinstance(v, str) else
                "a tuple" if isinstance(v, tuple) else "this")
        where = " or a new axis in an index (x[:, None])" if v is None else ""
        self.error(f"{what} is not a value: it can only be {_STATIC}{where}", ex.start)

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
        """``NAME = EXPR``: a new node each time; a name assigned again gets ``a#2``, ..."""
        n = tok.text
        if n in CONSTANTS and n not in self.names:
            line = self.text.count("\n", 0, tok.start) + 1
            value = {True: "true", False: "false"}.get(CONSTANTS[n], CONSTANTS[n])
            self.warnings.append(f"line {line}: {n} = ... takes the name of the constant {n} "
                                 f"({value}); from here on {n} is this statement")
        i = self.node(ex)
        node = self.nodes[i]
        k = self.versions.get(n, 1 if n in self.variables else 0) + 1
        self.versions[n] = k
        label = n if k == 1 else f"{n}#{k}"
        if node.name is None:
            node.name = label
        self.names[n] = i
        if k > 1:
            self.names[label] = i
        return ("=", n, i, tok.start)

    # -- calls and literals
    def call(self, tok, args, end):
        name, start = tok.text, tok.start
        pos, kws = [], []
        for a in args:
            if isinstance(a, _Kw):
                kws.append(a)
            elif kws:
                self.error("a positional argument cannot follow a keyword argument", a.start)
            else:
                pos.append(a)
        op = self.library.lookup(name, len(pos))
        for more in range(1, 4):  # required params given as keywords: cumsum(x, axis=1)
            if op is not None:
                break
            op = self.library.lookup(name, len(pos) + more)
            if op is not None and (op.gate is not None or op.arity is None or
                                   op.arity > len(pos)):
                op = None
        if op is None:
            variadic = oplib.VARIADIC.get(name)
            if variadic is not None and name not in getattr(self.library, "custom", {}):
                least = variadic.lead + variadic.min_arity
                self.error(f"{name} takes at least {least} argument{'s' * (least != 1)}, "
                           f"got {len(pos)}", start)
            arities = self.library.arities(name)
            if arities:
                want = " or ".join(str(a) for a in arities)
                plural = "s" if arities[-1] != 1 else ""
                more = " (and keywords)" if kws else ""
                self.error(f"{name} takes {want} argument{plural}{more}, got {len(pos)}", start)
            hint = did_you_mean(name, self.library.names())
            self.error(f"unknown op {name!r}{hint}", start)
        sig = op.signature
        if kws and not sig:
            others = op.gate is None and any(
                o.signature for (n, _), o in oplib.CALLABLE.items() if n == name)
            what = f"{name} with {len(pos)} arguments" if others else name
            self.error(f"{what} takes no keyword arguments", kws[0].tok.start)
        if op.arity is None and len(sig) > op.lead and pos and isinstance(
                pos[-1].value, (float, bool)) and pos[-1].id < 0:
            p = sig[-1]
            self.error(f"{name}'s {p.name} is a keyword: {name}(a, b, {p.name}="
                       f"{literal_text(pos[-1].value)})", pos[-1].start)
        lead = op.lead
        n_in = len(pos) - lead if op.arity is None else op.arity
        inputs = pos[lead:lead + n_in]
        given = {}
        positional = [p for p in sig if p.positional]
        for p, ex in zip(positional, pos[:lead] + pos[lead + n_in:]):
            given[p.name] = ex
        names = [p.name for p in sig]
        for kw in kws:
            k = kw.tok.text
            if k not in names:
                hint = did_you_mean(k, names)
                keys = ", ".join(names)
                self.error(f"{name} has no keyword {k}{hint} (its keywords: {keys})",
                           kw.tok.start)
            if k in given:
                self.error(f"{name}'s {k} is given twice", kw.tok.start)
            given[k] = kw.ex
        params = []
        for p in sig:
            ex = given.get(p.name)
            if ex is None:
                if p.required:
                    self.error(f"{name} needs its {p.name}: {name}("
                               f"{', '.join(_example(op, p))})", start)
                params.append(p.default)
                continue
            params.append(self.static(op, p, ex))
        if op is oplib.einsum:
            self.check_einsum(params[0], len(inputs), given["subscripts"])
        return self.apply(op, inputs, start, end, tuple(params))

    def static(self, op, p, ex):
        """The value of a static argument: a constant of the kind ``p`` takes."""
        if ex.id >= 0:
            self.error(f"the {p.name} of {op.name} must be a constant, not an expression "
                       f"of the program's values", ex.start)
        v = ex.value
        if isinstance(v, np.ndarray):
            v = tuple(v.tolist()) if v.ndim == 1 else v
        try:
            return p.convert(v)
        except ValueError as e:
            self.error(f"the {p.name} of {op.name} must be {e}", ex.start)

    def check_einsum(self, subscripts, n, ex):
        try:
            ins, _ = oplib.einsum_terms(subscripts)
        except ValueError as e:
            self.error(str(e), ex.start)
        if len(ins) != n:
            self.error(f"einsum subscripts {subscripts!r} name {len(ins)} operand"
                       f"{'s' * (len(ins) != 1)}, got {n}", ex.start)

    def array(self, items, start, end):
        if not items:
            self.error("an array needs at least one item", start)
        for it in items:
            if not it.numeric:
                self.not_a_value(it)
        depth = 1 + max(np.ndim(it.value) if it.id < 0 else self.depth.get(it.id, 0)
                        for it in items)
        if depth > MAX_DEPTH:
            self.error(too_deep("a list literal"), start)
        if all(it.id < 0 for it in items):
            shapes = {np.shape(it.value) for it in items}
            if len(shapes) > 1:
                a, b = sorted(shapes, key=len)[:2]
                self.error(f"ragged array: items have shapes {a} and {b}", start)
            return _Ex(-1, np.array([it.value for it in items], dtype=np.float64), start, end)
        ex = self.apply(oplib.stack, items, start, end)
        self.depth[ex.id] = depth
        return ex

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
        return Graph(self.text, self.nodes, self.names, output, name, self.warnings)


def literal_text(v):
    return oplib.literal(v)


def _example(op, missing):
    """The arguments of a call that gives every required param: ``x, axis``."""
    args = list(op.argnames[:op.arity]) if op.arity else ["a", "b"]
    req = [p.name for p in op.signature if p.required]
    return req[:op.lead] + args + req[op.lead:]


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

    def lt(self, c):
        return self._binary(oplib.lt, c)

    def le(self, c):
        return self._binary(oplib.le, c)

    def gt(self, c):
        return self._binary(oplib.gt, c)

    def ge(self, c):
        return self._binary(oplib.ge, c)

    def eq(self, c):
        return self._binary(oplib.eq, c)

    def ne(self, c):
        return self._binary(oplib.ne, c)

    def string(self, c):
        tok = c[0]
        return _Ex(-1, oplib._Str(tok.text[1:-1]), tok.start, tok.end)

    def tuple(self, c):  # ( ) | ( expr , ) | ( expr , items ) | ( expr , items , )
        items = [] if len(c) == 2 else [c[1]] + (c[3] if len(c) > 4 else [])
        for it in items:
            if it.id >= 0:
                self.b.error("a tuple holds constants only (an axis, a shape): "
                             "(0, 1), (2, -1)", it.start)
        return _Ex(-1, tuple(it.value for it in items), c[0].start, c[-1].end)

    def keyword(self, c):
        return _Kw(c[0], c[2])

    def neg(self, c):
        tok, a = c
        if a.id < 0 and not a.numeric:
            self.b.not_a_value(a)
        if a.id < 0:  # a negative literal stays a literal: [-1, 2], x * -1
            return _Ex(-1, -a.value, tok.start, a.end)
        return self.b.apply(oplib.neg, (a,), tok.start, a.end)

    def pos(self, c):
        tok, a = c
        if a.id < 0 and not a.numeric:
            self.b.not_a_value(a)
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
        if sum(1 for k in key if k is Ellipsis) > 1:
            self.b.error("an index takes '...' at most once", c[1].start)
        return self.b.apply(oplib.index, (x,), x.start, rsqb.end, (tuple(key),))

    def newaxis(self, c):
        return None

    def none(self, c):
        tok = c[0]
        return _Ex(-1, None, tok.start, tok.end)

    def ellipsis(self, c):
        return Ellipsis

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
    terminals = frozenset(name for name, _ in tables.TERMINALS) | {"$END"} | frozenset(
        t for m in tables.KEYWORDS.values() for t in m.values())
    return tables, lexer, terminals


def _tokens(text, lexer, ignore, keywords=None):
    """The program's tokens, then $END.  A new line inside (), [] is not a separator."""
    match = lexer.match
    names = (keywords or {}).get("NAME", {})
    pos, n, depth = 0, len(text), 0
    ascii = text.isascii()
    while pos < n:
        m = match(text, pos)
        if m is None:
            raise _BadCharacter(pos)
        kind, end = m.lastgroup, m.end()
        word = m.group()
        if kind == "NAME":
            if not ascii:
                end, word = _name(text, pos, end)
            if names:
                kind = names.get(word, kind)
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
        yield _Token(kind, word, pos, end)
        pos = end
    yield _Token("$END", "", n, n)


def _name(text, start, end):
    """Where the name lexed at ``start`` ends, and the name, by Python's rule for identifiers:
    letters, digits, ``_`` and combining marks (a decomposed é), checked as Python checks an
    identifier and then NFKC-normalised, so ``𝑥`` and ``x`` are one name."""
    n = len(text)
    while end < n:  # the regexp stops at a combining mark (\w does not take them)
        c = text[end]
        if c.isascii():
            if not (c.isalnum() or c == "_"):
                break
        elif not (c.isalnum() or ("a" + c).isidentifier()):
            break
        end += 1
    raw = text[start:end]
    if raw.isascii():
        return end, raw
    if not raw.isidentifier():
        bad = next(k for k, c in enumerate(raw) if not (c if k == 0 else "a" + c).isidentifier())
        c = raw[bad]
        raise ParseError(f"invalid character {c!r} (U+{ord(c):04X}) in a name: a name is "
                         f"letters, digits and _, as in Python", text, start + bad)
    return end, unicodedata.normalize("NFKC", raw)


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
        for tok in _tokens(text, lexer, tables.IGNORE, tables.KEYWORDS):
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
        for tok in _tokens(text, lexer, tables.IGNORE, tables.KEYWORDS):
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
    if text[:1] == "\ufeff" or "\r" in text:  # as files.decode reads a file
        text = text[text[:1] == "\ufeff":].replace("\r\n", "\n").replace("\r", "\n")
    if len(text) > _CACHE_TEXT:  # a big program is parsed once; do not keep it alive
        return _parse.__wrapped__(text, library)
    return _parse(text, library)


_CACHE_TEXT = 10_000  # characters: programs up to this size are remembered (64 of them)


@functools.lru_cache(maxsize=64)
def _parse(text, library):
    return _drive(text, _Rules(_Builder(text, library)))


# ---------------------------------------------------------------- syntax errors

_DESCRIBE = {
    "NUMBER": "a number", "NAME": "a name", "STRING": "a string", "LPAR": "'('",
    "LSQB": "'['", "MINUS": "'-'",
    "PLUS": "'+'", "STAR": "'*'", "SLASH": "'/'", "AT": "'@'", "POW": "'**'", "RPAR": "')'",
    "RSQB": "']'", "COMMA": "','", "COLON": "':'", "EQUAL": "'='", "ELLIPSIS": "'...'", "NONE": "None", "LT": "'<'", "LE": "'<='",
    "GT": "'>'", "GE": "'>='", "EQEQ": "'=='", "NE": "'!='", "_SEP": "';'",
    "$END": "the end of the program",
}
_ORDER = list(_DESCRIBE)
_COMPARISONS = {"LT", "LE", "GT", "GE", "EQEQ", "NE"}
_OPERATORS = {"STAR", "SLASH", "AT", "POW", "PLUS", "MINUS"} | _COMPARISONS


def _expected(names):
    names = set(names)
    words = []
    if {"STAR", "SLASH", "AT", "POW"} <= names:  # after a complete operand
        names -= _OPERATORS
        words.append("an operator")
    # a string and None are only an op's static arguments (None also a new axis in an
    # index): never suggest them where any operand would do
    names.discard("STRING")
    if "NAME" in names:
        names.discard("NONE")
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
            return ParseError("an index or slice takes whole-number constants, None or ..., "
                              "as in x[0], W[1, -1], x[1:], x[:, None]", text, pos)
        if tok.type == "EQUAL" and re.search(r"(?<!\w)None\s*$", text[:tok.start]):
            return ParseError("cannot assign to None", text, text.rindex("None", 0, tok.start))
        if tok.type in _COMPARISONS and "PLUS" in expected:
            return ParseError("comparisons do not chain: write (a < b) * (b < c) for "
                              "a < b < c", text, pos)
    return ParseError(f"{what}; expected {_expected(expected)}", text, pos)
