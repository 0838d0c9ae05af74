#!/usr/bin/env python3
"""Regenerate gradcli/_tables.py from grammar/expr.lark: Lark builds the LALR(1) tables.

gradcli parses with the tables Lark computes from the grammar, run by a small driver in
gradcli/parse.py, so that a command neither imports Lark nor rebuilds the tables at start-up.
Run this after any change to the grammar (a test fails until you do):

    python tools/build_parser.py
"""
import hashlib
import pathlib
import pprint
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
GRAMMAR = ROOT / "grammar" / "expr.lark"
TARGET = ROOT / "gradcli" / "_tables.py"


def generate():
    import lark
    from lark.parsers.lalr_analysis import Shift

    text = GRAMMAR.read_text(encoding="utf-8")
    parser = lark.Lark(text, parser="lalr", lexer="basic")
    table = parser.parser.parser.parser.parse_table
    rules = list(parser.rules)
    index = {id(r): k for k, r in enumerate(rules)}
    # the order Lark's basic lexer tries terminals in: the first that matches wins
    # a string terminal that a regexp terminal also matches whole (NONE "None" and NAME) is
    # a keyword: the lexer matches NAME and then renames the token, as Lark's own does
    from lark.lexer import PatternRE, PatternStr

    keywords = {}
    for t in parser.terminals:
        if isinstance(t.pattern, PatternStr):
            for r in parser.terminals:
                if isinstance(r.pattern, PatternRE) and r.priority == t.priority and \
                        __import__("re").fullmatch(r.pattern.to_regexp(), t.pattern.value):
                    keywords.setdefault(r.name, {})[t.pattern.value] = t.name
    embedded = {name for m in keywords.values() for name in m.values()}
    terms = sorted((t for t in parser.terminals if t.name not in embedded),
                   key=lambda t: (-t.priority, -t.pattern.max_width, -len(t.pattern.value),
                                  t.name))
    # Lark numbers states in an order that varies from run to run (it builds them from
    # sets); renumber them breadth-first from the start, so the file is the same every time
    start = table.start_states["start"]
    number, queue = {start: 0}, [start]
    for s in queue:
        for sym, (action, arg) in sorted(table.states[s].items()):
            if action is Shift and arg not in number:
                number[arg] = len(number)
                queue.append(arg)
    states = []
    for s in queue:
        row = {}
        for sym, (action, arg) in sorted(table.states[s].items()):
            row[str(sym)] = number[arg] if action is Shift else -1 - index[id(arg)]
        states.append(row)
    rule_rows = [(str(r.origin.name), len(r.expansion), str(r.alias or r.origin.name),
                  bool(r.options.expand1 and r.alias is None and len(r.expansion) == 1))
                 for r in rules]
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    fmt = pprint.PrettyPrinter(width=96, compact=True).pformat
    return f'''# Generated from grammar/expr.lark by tools/build_parser.py with Lark {lark.__version__}:
# do not edit.  The LALR(1) tables of the grammar, read by the driver in gradcli/parse.py.
GRAMMAR_SHA256 = "{digest}"

#: (name, regular expression) of each terminal, in the order the lexer tries them.
TERMINALS = {fmt(tuple((t.name, t.pattern.to_regexp()) for t in terms))}

#: Keywords: a token of the first terminal with this text is of the second (NAME "None").
KEYWORDS = {fmt({k: dict(sorted(v.items())) for k, v in sorted(keywords.items())})}

#: Terminals the lexer skips (comments, blanks, line continuations).
IGNORE = frozenset({{{", ".join(repr(t) for t in sorted(parser.ignore_tokens))}}})

#: (rule, symbols it takes, method to call, passes a lone child through) per rule number.
RULES = {fmt(tuple(rule_rows))}

#: Per state, symbol -> next state (>= 0: shift or goto) or rule to reduce (-1 - rule number).
STATES = {fmt(tuple(states))}

START = 0
END = {number[table.end_states["start"]]}
'''


if __name__ == "__main__":
    TARGET.write_text(generate(), encoding="utf-8")
    print(f"wrote {TARGET.relative_to(ROOT)}", file=sys.stderr)
