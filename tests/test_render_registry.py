"""The render registry (gradcli.render.FORMATS) is where every command's --format comes from:
its choices, its default, its help and what it draws, diff and hessian included."""
from __future__ import annotations

import importlib
import json

import click
import pytest

from conftest import cli
from gradcli import render
from gradcli.cli import main


def _format_param(name):
    command = main.get_command(click.Context(main), name)
    return next(p for p in command.params if p.name == "fmt")


def test_every_entry_names_a_function_that_exists():
    for fmt, kinds in render.FORMATS.items():
        for kind, target in kinds.items():
            module, func = target.split(":")
            mod = importlib.import_module(f"gradcli.render.{module}")
            assert callable(getattr(mod, func)), (fmt, kind, target)


@pytest.mark.parametrize("command, kind, want", [
    ("diff", "derivative", ["text", "json", "latex", "python"]),
    ("hessian", "hessian", ["table", "json"]),
])
def test_diff_and_hessian_take_their_formats_from_the_registry(command, kind, want):
    assert render.choices(kind) == want
    p = _format_param(command)
    assert list(p.type.choices) == want and p.default == want[0]
    assert p.help == render.describe(kind)


def test_a_format_the_registry_lacks_is_a_usage_error_naming_the_registry_choices():
    r = cli("diff", "--format", "table", "x**2")
    assert r.code == 2
    assert "'text', 'json', 'latex', 'python'" in r.err and r.err.startswith("error: ")
    r = cli("hessian", "--format", "latex", "x**2", "x=1")
    assert r.code == 2 and "'table', 'json'" in r.err


def test_diff_renders_through_the_registry():
    d = cli("diff", "x**2 + 2*x + 1")
    assert d.code == 0 and d.out == "d/dx = 2*x + 2\n"
    obj = json.loads(cli("diff", "--format", "json", "x*y").out)
    assert obj["derivatives"] == {"x": "y", "y": "x"}


def test_hessian_renders_through_the_registry_and_takes_a_width():
    r = cli("hessian", "x**2*y", "x=1", "y=2")
    assert r.code == 0
    assert r.out.splitlines()[0] == "f = 2"
    assert r.out.splitlines()[3].split() == ["x", "4", "2"]
    obj = json.loads(cli("hessian", "--format", "json", "x**2*y", "x=1", "y=2").out)
    assert obj["hessian"] == [[4.0, 2.0], [2.0, 0.0]]
    wide = cli("hessian", "sum(x**3) * y / 7", "x=[1,2,3]", "y=2")
    narrow = cli("hessian", "--width", "40", "sum(x**3) * y / 7", "x=[1,2,3]", "y=2")
    assert wide.code == narrow.code == 0
    assert max(len(line) for line in wide.out.splitlines()) > 40
    assert max(len(line) for line in narrow.out.splitlines()) <= 40
