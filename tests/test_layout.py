"""Tables that fit: the width to fit (--width, COLUMNS, the terminal), cells wrapped inside
their column, colour on a terminal at any width, --color, labels cut with brackets balanced.

Golden files (tests/golden/layout_*.txt) pin what a user reads at COLUMNS=40, 60, 80, 100, 200;
``GRADCLI_UPDATE_GOLDEN=1 python -m pytest tests/test_layout.py`` rewrites them (read the
diff before committing).
"""
from __future__ import annotations

import os
import pathlib
import re
import shlex
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import cli
from gradcli.render import layout

GOLDEN = pathlib.Path(__file__).parent / "golden"
UPDATE = os.environ.get("GRADCLI_UPDATE_GOLDEN") == "1"
ANSI = re.compile(r"\x1b\[[0-9;]*m")

SOFTMAX = ["sum(t * log(softmax(W @ x + b)))", "W=[[1,2],[3,4]]", "x=[1,2]", "b=[0,1]",
           "t=[0,1]"]
CASES = {
    "layout_grad_softmax_60": (["grad", *SOFTMAX], 60),
    "layout_grad_softmax_100": (["grad", *SOFTMAX], 100),
    "layout_grad_softmax_200": (["grad", *SOFTMAX], 200),
    "layout_eval_softmax_60": (["eval", *SOFTMAX], 60),
    "layout_grad_worked_example_60": (["grad", "(x+y)*max(y,z)", "x=1", "y=2", "z=0"], 60),
    "layout_grad_softmax_80": (["grad", *SOFTMAX], 80),
    "layout_grad_softmax_40": (["grad", *SOFTMAX], 40),
    "layout_eval_softmax_40": (["eval", *SOFTMAX], 40),
    "layout_grad_worked_example_40": (["grad", "(x+y)*max(y,z)", "x=1", "y=2", "z=0"], 40),
    "layout_check_40": (["check", "sin(x)*y", "x=1", "y=[1,2]"], 40),
    "layout_check_80": (["check", "sin(x)*y", "x=1", "y=[1,2]"], 80),
    "layout_hessian_40": (["hessian", "sum(x**3) * y / 7", "x=[1,2,3]", "y=2"], 40),
}


def _env(columns):
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env.update(COLUMNS=str(columns), NO_COLOR="1")
    return env


@pytest.mark.parametrize("name", list(CASES))
def test_golden_layout(name):
    args, columns = CASES[name]
    r = cli(*args, env=_env(columns))
    assert r.code == 0, r.err
    text = f"$ COLUMNS={columns} gradcli {shlex.join(args)}\n{r.err}{r.out}"
    path = GOLDEN / f"{name}.txt"
    if UPDATE:
        path.write_text(text)
    assert text == path.read_text()
    for line in r.out.splitlines():  # nothing wider than the width
        assert len(line) <= columns, line


def test_width_option_equals_columns_and_wins_over_it():
    a = cli("grad", "--width", "70", *SOFTMAX, env={"COLUMNS": ""})
    b = cli("grad", *SOFTMAX, env={"COLUMNS": "70"})
    c = cli("grad", "--width", "70", *SOFTMAX, env={"COLUMNS": "200"})
    assert a.code == b.code == c.code == 0
    assert a.out == b.out == c.out
    assert max(len(line) for line in a.out.splitlines()) <= 70


def test_piped_without_a_width_is_not_wrapped():
    r = cli("grad", *SOFTMAX, env={"COLUMNS": ""})
    assert max(len(line) for line in r.out.splitlines()) > 200  # one line per row as it is


def test_cells_wrap_inside_their_column():
    t = layout.Table("name", ("value", "right"), "text")
    t.add_row("a", "1", "one two three four five six seven")
    t.add_row("bb", "22", "x" * 30)
    text = layout.plain([t], 30)
    # name 4 + value 5 + 2 gaps of 3 leave 15 for text: wrapped at spaces, else folded
    assert text.splitlines() == [
        "name   value   text",
        "─" * 30,
        "a          1   one two three",
        "               four five six",
        "               seven",
        "bb        22   xxxxxxxxxxxxxxx",
        "               xxxxxxxxxxxxxxx",
    ]


def test_fit_narrows_the_widest_columns_only():
    assert layout._fit([1, 40, 40], ["#", "node", "value"], 50) == [1, 21, 21]
    assert layout._fit([1, 10, 40], ["#", "node", "value"], 50) == [1, 10, 33]
    assert layout._fit([5, 5], ["a", "b"], 100) == [5, 5]
    # too narrow for even the floors (header words, 6): the floors; the terminal folds
    assert layout._fit([30, 30], ["upstream", "downstream"], 10) == [8, 10]


@pytest.mark.parametrize("text, n, want", [
    ("sum(t * log(softmax(W @ x)))", 16, "sum(t * log(s…))"),
    ("∂/∂(sum(t * log(softmax(W @", 18, "∂/∂(sum(t * log…))"),
    ("[1, [2, 3], [4, 5]]", 10, "[1, [2,…]]"),
    ("short", 10, "short"),
])
def test_clip_balanced_examples(text, n, want):
    got = layout.clip_balanced(text, n)
    assert got == want and len(got) <= n


@given(st.text(alphabet="ab (x)[y]{}", max_size=60), st.integers(1, 40))
def test_clip_balanced_is_balanced_and_short(text, n):
    got = layout.clip_balanced(text, n)
    assert len(got) <= max(n, 1)
    if got != text:
        assert got.endswith(("…", ")", "]", "}"))
        depth = []
        closes = {")": "(", "]": "[", "}": "{"}
        kept = got.replace("…", "")
        # every bracket the cut part opened is closed, in order
        for ch in kept:
            if ch in "([{":
                depth.append(ch)
            elif ch in closes and depth and depth[-1] == closes[ch]:
                depth.pop()
        assert not depth, got


def test_color_always_in_a_pipe_never_on_request():
    r = cli("grad", "--color", "always", "(x+y)*max(y,z)", "x=1", "y=2", "z=0")
    assert r.code == 0 and ANSI.search(r.out)
    assert ANSI.sub("", r.out) == cli("grad", "(x+y)*max(y,z)", "x=1", "y=2", "z=0").out
    r = cli("grad", "--color", "never", "(x+y)*max(y,z)", "x=1", "y=2", "z=0")
    assert not ANSI.search(r.out)


def _terminal(gradcli_exe, tmp_path, args, columns, env=None):
    import pty
    import struct
    import termios
    import fcntl

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    full = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "COLUMNS")}
    full.update(TERM="xterm-256color", **(env or {}))
    p = subprocess.Popen(gradcli_exe + args, stdout=slave, stderr=subprocess.DEVNULL,
                         stdin=subprocess.DEVNULL, cwd=tmp_path, env=full)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert p.wait(timeout=60) == 0
    return b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")


def test_terminal_narrower_than_the_table_keeps_colour_and_fits(gradcli_exe, tmp_path):
    out = _terminal(gradcli_exe, tmp_path, ["grad", *SOFTMAX], 80)
    assert ANSI.search(out)                        # colour whatever the width
    plain = ANSI.sub("", out)
    assert max(len(line) for line in plain.splitlines()) <= 80
    piped = cli("grad", *SOFTMAX, env={"COLUMNS": "80", "NO_COLOR": "1"}).out
    assert plain == piped                          # the same layout, only coloured
    never = _terminal(gradcli_exe, tmp_path, ["grad", "--color", "never", *SOFTMAX], 80)
    assert not ANSI.search(never) and never == piped


# ---------------------------------------------------------------- narrow: numbers whole

@pytest.mark.parametrize("line, width, want", [
    # a number is never split, with its brackets and comma: the line breaks before it
    ("[-0.000911051, 0.000911051]", 14, ["[-0.000911051,", "0.000911051]"]),
    ("→ W: [[-0.000911051, -0.0018221]]", 16, ["→ W:", "[[-0.000911051,", "-0.0018221]]"]),
    # a word too long breaks after a bracket or comma, or before an operator
    ("log(softmax(W", 10, ["log(", "softmax(W"]),
    ("t*log(softmax(W@x))", 8, ["t*log(", "softmax(", "W@x))"]),
    ("x+y*z+w", 4, ["x+y", "*z+w"]),
    ("torch.nn.functional.conv2d(x,", 12, ["torch.nn.", "functional.", "conv2d(x,"]),
    # a fold with no such point never cuts next to a digit (log10 must not read as log1 0)
    ("abclog10xyz", 6, ["abclo", "g10xyz"]),
    # a number wider than the column overflows whole rather than split
    ("-0.000911466", 8, ["-0.000911466"]),
])
def test_wrap_keeps_numbers_whole_and_breaks_text_at_sensible_points(line, width, want):
    assert layout._wrap(line, width) == want


def test_numbers_shorten_from_their_own_values_not_from_the_printed_text():
    from gradcli.render.text import Num

    # 0.12344999... prints 0.12345 in 6 digits; rounded again to 4 it would be 0.1235,
    # but from its value it is 0.1234
    v = -0.1234499999
    t = layout.Table(*[(c, "right") for c in "abcd"])
    t.add_row(*[Num(v)] * 4)
    assert Num(v).text() == "-0.12345"
    assert layout.plan(t, 41).digits == 6          # 4 columns of 8 and 3 gaps of 3 fit
    p = layout.plan(t, 40)
    assert p.digits == 4 and not p.records
    text = layout.plain([t], 40)
    assert text.splitlines()[2].split() == ["-0.1234"] * 4
    assert "numbers to four significant digits" in text.replace("\n", " ")


def test_optional_columns_go_first_then_rows_become_records():
    from gradcli.render.text import Num

    t = layout.Table("key", "note", ("value", "right"), optional=("note",), keys=1)
    t.add_row("alpha", "a long remark about this row " * 2, Num(3.14159265))
    assert layout.plan(t, 24).keep == [0, 1, 2]    # the note wraps at its words
    narrow = layout.plain([t], 20)                 # it does not fit: left out
    assert narrow.splitlines()[0].split() == ["key", "value"]
    assert "3.142" in narrow and "remark" not in narrow
    assert "without the note column" in narrow.replace("\n", " ")
    t2 = layout.Table("key", *[f"c{k}" for k in range(8)])
    t2.add_row("row", *["word" * 3] * 8)
    lines = layout.plain([t2], 40).splitlines()
    assert lines[0] == "row" and lines[1].split() == ["c0", "wordwordword"]
    assert all(len(line) <= 40 for line in lines)


def test_lines_between_tables_wrap_at_spaces_with_their_indent():
    text = layout.plain([layout.Line("  kink at x: " + "word " * 20 + "0.000911466")], 30)
    lines = text.splitlines()
    assert all(len(line) <= 30 and line.startswith("  ") for line in lines)
    assert lines[-1].endswith("0.000911466")
