"""Tables at any width from 40 to 200 columns: no line wider than the width, no number split,
every number printed equal (to its printed precision) to the value it stands for.

The tables are built by the renderers from real results (eval, grad, hessian at random
values); the numbers a renderer gives as text.Num are collected from the cells with their
values, so the test knows which value every printed number must equal.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gradcli
from conftest import cli
from gradcli import engine
from gradcli.parse import parse
from gradcli.plugins import BUILTIN_LIBRARY
from gradcli.render import layout, table
from gradcli.render.expr import hessian_table
from gradcli.render.text import Cell, Num, num

#: A number as a reader sees one (no brackets): what must come out whole.
TOKEN = re.compile(r"(?<![\w.])[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![\w.])"
                   r"|(?<![\w.])-?(?:inf|nan)(?![\w.])")

PROGRAMS = [
    ("sum(t * log(softmax(W @ x + b)))", {"W": (2, 2), "x": (2,), "b": (2,), "t": (2,)}),
    ("(x+y)*max(y,z)", {"x": (), "y": (), "z": ()}),
    ("a = x * y\nb = a + x\nc = a * b\nf = c + sin(x)", {"x": (), "y": ()}),
    ("y = W @ x + b\nf = sum(tanh(y) * y)", {"W": (2, 3), "x": (3,), "b": (2,)}),
    ("sum(exp(v) / (1 + v*v))", {"v": (12,)}),
]

#: Values of every magnitude a table meets: tiny, huge, negative, whole.
VALUE = st.one_of(st.floats(-10, 10), st.floats(-1e9, 1e9),
                  st.floats(1e-9, 1e-3).map(lambda v: -v),
                  st.integers(-5, 5).map(float))


def _bindings(data, shapes):
    return {name: np.array(data.draw(st.lists(VALUE, min_size=int(np.prod(shape, dtype=int)),
                                              max_size=int(np.prod(shape, dtype=int)))),
                           dtype=float).reshape(shape)
            for name, shape in shapes.items()}


def _expected(items, width):
    """Every number the items print at ``width``, as (printed text, value): the Num parts at
    the precision the table's plan chose, numbers in plain text as they are."""
    out = []
    for item in items:
        if not isinstance(item, layout.Table):
            out += [(m, float(m)) for m in TOKEN.findall(str(item))]
            continue
        p = layout.plan(item, width)
        heads = [item.columns[k][0] for k in p.keep]
        if not p.records:  # the header once; a record names each column it shows
            out += [(m, float(m)) for h in heads for m in TOKEN.findall(h)]
        else:
            keys = max(1, item.keys)
            for row in item.rows:
                out += [(m, float(m)) for k in p.keep[keys:] if str(row[k]).strip()
                        for m in TOKEN.findall(heads[k])]
        for row in item.rows:
            for k in p.keep:
                cell = row[k]
                parts = cell.parts if isinstance(cell, Cell) else [cell]
                for part in parts:
                    if isinstance(part, Num):
                        out.append((part.text(p.digits), part.value))
                    else:
                        out += [(m, float(m)) for m in TOKEN.findall(part)]
    return out


def _close(text, value):
    """``text`` (a %g number) is ``value`` to its printed precision: within half a unit of
    its last printed digit (in decimal, so 1.798e+308 is not infinity)."""
    if not math.isfinite(value):
        return text == num(value)
    mantissa, _, exp = text.lower().lstrip("+-").partition("e")
    decimals = len(mantissa.partition(".")[2])
    half = Decimal(5).scaleb(int(exp or 0) - decimals - 1)
    return abs(Decimal(text) - Decimal(value)) <= half


def _check(items, width):
    text = layout.plain(items, width)
    lines = text.splitlines()
    for line in lines:
        assert len(line) <= width, (width, line)
    printed = [m for line in lines for m in TOKEN.findall(line)]
    for m in printed:
        float(m)  # every number printed parses
    want = _expected(items, width)
    assert Counter(printed) == Counter(t for t, _ in want), text  # none split, none lost
    for t, v in want:
        assert _close(t, v), (t, v)
    return text


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data(), st.sampled_from(PROGRAMS), st.integers(40, 200))
def test_grad_and_eval_tables_fit_every_width_numbers_whole(data, program, width):
    text, shapes = program
    graph = parse(text, BUILTIN_LIBRARY)
    b = _bindings(data, shapes)
    with np.errstate(all="ignore"):
        res = engine.differentiate(graph, b, trace=True)
        ev = engine.evaluate(graph, b)
    _check(table.gradients(res), width)
    _check(table.evaluation(ev), width)


@settings(max_examples=20, deadline=None)
@given(st.lists(VALUE, min_size=3, max_size=3), st.integers(40, 200))
def test_hessian_tables_fit_every_width_numbers_whole(xs, width):
    with np.errstate(all="ignore"):
        h = gradcli.hessian("sum(x**3) * y / 7 + x[0]*y*y", x=xs, y=2.5)
    _check(hessian_table(h), width)


@given(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([6, 4, 3]))
def test_a_number_is_its_value_to_its_printed_precision(v, digits):
    t = num(v, digits)
    assert _close(t, v), (t, v)
    assert len(t.lstrip("-").replace(".", "").partition("e")[0].lstrip("0")) <= digits


def test_narrow_tables_shorten_numbers_and_drop_the_local_gradients_first():
    args = ["sum(t * log(softmax(W @ x + b)))", "W=[[1,2],[3,4]]", "x=[1,2]", "b=[0,1]",
            "t=[0,1]"]
    wide = cli("grad", "--width", "200", *args).out
    mid = cli("grad", "--width", "80", *args).out
    narrow = cli("grad", "--width", "60", *args).out
    assert "-0.000911466" in wide and "local gradient" in wide.splitlines()[0]
    assert "-0.0009115" in mid and "-0.000911466" not in mid.split("input")[0]
    assert "numbers to four significant digits" in mid
    assert "local" not in narrow.splitlines()[0]
    assert "without the local gradient column" in narrow.replace("\n", " ")
    # the gradients table below is narrow enough to keep every digit
    assert "[-7.00091, -0.000911466]" in narrow


def test_too_narrow_for_columns_rows_become_records():
    out = cli("grad", "--width", "40", "(x+y)*max(y,z)", "x=1", "y=2", "z=0").out
    lines = out.splitlines()
    assert lines[0] == "5  f"
    assert lines[1].split() == ["value", "6"]
    assert lines[2].split() == ["upstream", "1", "(start)"]
    assert all(len(line) <= 40 for line in lines)


@pytest.mark.parametrize("width", [40, 60, 80, 200])
@pytest.mark.parametrize("args", [
    ["check", "sin(x)*y + exp(x*y)", "x=0.3", "y=[1,2,3]"],
    ["check", "relu(x) * y", "x=0", "y=2"],
    ["ops"],
    ["descend", "sum((w*x - t)**2)", "w=0.5", "x=[1,2,3]", "t=[2,4,6]", "--params", "w",
     "--steps", "5"],
    ["eval", "softmax(v) * 1e-7", "v=[1,2,3,4,5,6,7,8,9,10]"],
    ["grad", "sum(t * log(softmax(W @ x + b)))", "W=[[1,2],[3,4]]", "x=[1,2]", "b=[0,1]",
     "t=[0,1]"],
    ["hessian", "sum(x**3) * y / 7", "x=[1,2,3]", "y=2"],
])
def test_every_table_command_fits_numbers_whole(args, width):
    """Tables of plain text (check, ops, descend) keep their numbers as they are: the same
    numbers as with no limit, none split, no line wider than the width."""
    narrow = cli(*args, env={"COLUMNS": str(width)})
    wide = cli(*args, env={"COLUMNS": ""})
    assert narrow.code == wide.code
    lines = narrow.out.splitlines()
    assert all(len(line) <= width for line in lines), max(lines, key=len)
    printed = [m for line in lines for m in TOKEN.findall(line)]
    for m in printed:
        float(m)
    if args[0] not in ("eval", "grad", "hessian"):  # these may shorten; the others are text
        wide_numbers = Counter(TOKEN.findall(wide.out))
        if "(fitted to the width: without the" in narrow.out:  # a check table's abs err, grade
            assert Counter(printed) <= wide_numbers and args[0] == "check"
        else:
            assert Counter(printed) == wide_numbers


@given(st.data(), st.sampled_from([(), (0,), (1,), (3,), (9,), (2, 2), (2, 5), (1, 2, 3),
                                    (4, 20)]), st.sampled_from([8, 64]))
def test_array_parts_print_what_array_prints(data, shape, small):
    from gradcli.render.text import array, array_parts

    n = int(np.prod(shape, dtype=int))
    a = np.array(data.draw(st.lists(VALUE, min_size=n, max_size=n)), dtype=float)
    a = a.reshape(shape)
    assert array_parts(a, small).text() == array(a, small)
