"""The grammar ships inside the package, and the shipped parser is the grammar's.

``grammar/expr.lark`` is installed as ``gradcli/grammar/expr.lark`` (pyproject's package-dir),
``gradcli/_tables.py`` (its LALR tables, from Lark) is generated from it by
``tools/build_parser.py`` and records its sha256, and gradcli's parser accepts exactly the
programs that the full Lark, built from the grammar file, parses.
"""
from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import json
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
GRAMMAR = ROOT / "grammar" / "expr.lark"


def _editable(dist):
    text = dist.read_text("direct_url.json")
    if text:
        try:
            if json.loads(text).get("dir_info", {}).get("editable"):
                return True
        except ValueError:
            pass
    return any("__editable__" in str(f) for f in (dist.files or []))


def _installed():
    """gradcli's installed distribution, passing over the checkout's own ``gradcli.egg-info``
    (a build artifact that ``python -m pytest`` run in the checkout would find first)."""
    for dist in metadata.distributions(name="gradcli"):
        if pathlib.Path(dist.locate_file("")).resolve() != ROOT:
            return dist
    pytest.skip("gradcli is not installed (run pip install .)")


def test_grammar_is_installed_with_the_package():
    dist = _installed()
    if _editable(dist):
        pytest.skip("gradcli is an editable install (pip install -e): its files are the "
                    "checkout's, so there is no installed copy of the grammar to check; "
                    "`pip install .` (as .ci/run does) runs this test")
    files = {str(f).replace("\\", "/"): f for f in dist.files or []}
    assert "gradcli/grammar/expr.lark" in files, sorted(files)
    installed = pathlib.Path(dist.locate_file(files["gradcli/grammar/expr.lark"]))
    assert installed.read_bytes() == GRAMMAR.read_bytes()
    assert "gradcli/_tables.py" in files


def test_generated_tables_match_grammar():
    from gradcli import _tables

    digest = hashlib.sha256(GRAMMAR.read_text(encoding="utf-8").encode("utf-8")).hexdigest()
    assert _tables.GRAMMAR_SHA256 == digest, (
        "grammar/expr.lark changed: run python tools/build_parser.py")


def test_generated_tables_are_what_lark_builds_now():
    """Regenerating gives the same tables (skipped when Lark is not installed)."""
    pytest.importorskip("lark")
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_parser",
                                                  ROOT / "tools" / "build_parser.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    fresh = {}
    exec(build.generate(), fresh)
    from gradcli import _tables

    for name in ("TERMINALS", "IGNORE", "RULES", "STATES", "START", "END"):
        assert fresh[name] == getattr(_tables, name), name


# Programs for both parsers.  None of the valid ones is rejected by gradcli for a semantic
# reason (unknown op, assignment to a constant, ...), and none has a new line inside
# brackets (gradcli's lexer drops those; plain Lark does not).
VALID = [
    "(x+y)*max(y,z)",
    "(x+y)*z",
    "x**2 + 2*x + 1",
    "a = x * y; b = a - y; f = exp(b) * a",
    "a = x + y\nb = max(y, z)\nf = a * b\n",
    "# comments run to the end of the line\na = x + y  # a sum\nf = a * 2",
    "sum(tanh(W @ x + b))",
    "loss = -sum(t * log(softmax(W @ x)))",
    "logsumexp([1000, 1000])",
    "-x**2",
    "2**-1",
    "x**y**z",
    "x^y^z",
    "-x^2 + +y",
    "a - b - c",
    "a / b * c @ d",
    "a + b * c",
    "(a + b) * c",
    "--x",
    "x[0] + W[1, 2] + sum(x[1:]) + sum(x[:-1]) + sum(W[:, 0]) + sum(x[::2])",
    "[[1, 0], [0, 1]] @ [x, y]",
    "[1, 2, 3,]",
    "sum(x, 0) + mean(x, -1)",
    "pi * e * .5 * 1e-3 * 2.5E+2",
    "θ = 2 * x; θ * θ",
    "a = x;; b = a\n\n",
    "x \\\n + y",
    "f = sigmoid(relu(softplus(abs(x))))",
]
INVALID = [
    "x +* y",
    "(x",
    "x)",
    "x y",
    "x $ y",
    "a = = b",
    "2 ** ** 3",
    "[1, 2",
    "sin(,)",
    "x[]",
    "x[y]",
    "1 = x",
    "x = ",
    "x[1:2:3:4]",
    "@x",
    "f(x) = 1",
]
CORPUS = VALID + INVALID


@pytest.fixture(scope="module")
def full_lark():
    lark = pytest.importorskip("lark")
    return lark.Lark(GRAMMAR.read_text(encoding="utf-8"), parser="lalr", lexer="basic")


def _full_ok(parser, text):
    import lark

    try:
        parser.parse(text)
        return True
    except lark.exceptions.UnexpectedInput:
        return False


def _shipped_ok(text):
    from gradcli.errors import ParseError
    from gradcli.parse import parse

    try:
        parse(text)
        return True
    except ParseError:
        return False


@pytest.mark.parametrize("text", CORPUS)
def test_shipped_parser_agrees_with_full_lark(full_lark, text):
    assert _full_ok(full_lark, text) == _shipped_ok(text)


def test_semantic_errors_are_parse_errors_too():
    """The grammar takes any number in an index; gradcli then insists on a whole one."""
    assert not _shipped_ok("x[1.5]") and not _shipped_ok("x[1e3]")


def test_corpus_has_both_kinds(full_lark):
    accepted = [t for t in CORPUS if _full_ok(full_lark, t)]
    assert len(accepted) >= 25 and len(CORPUS) - len(accepted) >= 12


@pytest.mark.parametrize("text, root", [
    ("-x**2", "neg"), ("2**-1", "pow"), ("x**y**z", "pow"), ("a - b - c", "sub"),
    ("a / b * c @ d", "matmul"), ("a + b * c", "add"), ("(a + b) * c", "mul"),
    ("-x^2 + +y", "add"), ("x[0] * 2", "mul"), ("-x[0]", "neg"),
])
def test_precedence_agrees(full_lark, text, root):
    """The full parser's top rule is the op of gradcli's output node."""
    import gradcli

    tree = full_lark.parse(text)
    stmt = tree.children[0]          # the bare statement
    assert stmt.data == "bare"
    assert stmt.children[0].data == root
    graph = gradcli.compile(text)
    assert graph.nodes[graph.output].op.name == root
