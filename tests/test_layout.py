"""Tables that fit: the width to fit (--width, COLUMNS, the terminal), cells wrapped inside
their column, colour on a terminal at any width, --color, labels cut with brackets balanced.

Golden files (tests/golden/layout_*.txt) pin what a user reads at COLUMNS=60, 100 and 200;
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
