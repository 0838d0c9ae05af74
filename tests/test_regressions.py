"""Bugs the property tests found in CI, pinned as plain cases."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from gradcli.cli import main


def cli(*args, env=None):
    return CliRunner().invoke(main, list(args), env=env)


@pytest.mark.parametrize("width", ["40", "60", "200"])
@pytest.mark.parametrize("command", ["grad", "eval"])
def test_a_table_of_empty_arrays(command, width):
    r = cli(command, "--format", "table", "x * 2", "x=[]", env={"COLUMNS": width})
    assert r.exit_code == 0, r.output
    assert "internal error" not in r.output
    assert "[]" in r.output


@pytest.mark.parametrize("program", ["h = [x, 1]\nsum(h * h)", "h = [x, 1]; sum(h * h)",
                                     "h=[x,1]\nsum(h*h)"])
def test_a_program_that_starts_by_naming_a_list_is_a_program(program):
    r = cli("grad", "--format", "json", "--", program, "x=2")
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["value"] == pytest.approx(5.0) and d["gradients"]["x"] == pytest.approx(4.0)


@pytest.mark.parametrize("first", ["x=[1,2]", "x=[1e-3, nan]", "x=[1,2", "x = [[1, 2], [3, -inf]]"])
def test_a_lone_binding_still_says_the_program_is_missing(first):
    r = cli("grad", first, "y=2")
    assert r.exit_code == 2
    assert "missing EXPR" in r.output
