"""Golden files: the tables people read, pinned exactly (tests/golden/*.txt).

Each golden file holds what a user sees for one command in plain mode (CliRunner's stdout is
not a terminal, and NO_COLOR is set too): a first line ``$ gradcli ARGS``, then stderr, then
stdout, then ``[exit N]``.  Lines are compared after stripping trailing whitespace.

To update them after an intended change of the output, run

    GRADCLI_UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py

which rewrites every golden file instead of comparing; then read the diff (``git diff
tests/golden``) and check that what the files show is right before committing them.
"""
from __future__ import annotations

import os
import pathlib
import shlex

import pytest
from click.testing import CliRunner

from gradcli.cli import main

GOLDEN = pathlib.Path(__file__).parent / "golden"
UPDATE = os.environ.get("GRADCLI_UPDATE_GOLDEN") == "1"

EX1 = ["(x+y)*max(y,z)", "x=1", "y=2", "z=0"]
EX2 = ["(x+y)*z", "x=1", "y=3", "z=-3"]
FANOUT = ["a = x * y\nb = a + x\nc = a * b\nf = c + sin(x)", "x=2", "y=3"]
MATRIX = ["y = W @ x + b\nf = sum(y * y)", "W=[[1,2],[3,4]]", "x=[1,-1]", "b=[0.5,0]"]

CASES = {
    "eval_worked_example": ["eval", *EX1],
    "grad_worked_example": ["grad", *EX1],
    "eval_second_example": ["eval", *EX2],
    "grad_second_example": ["grad", *EX2],
    "grad_vector_starts_from_ones": ["grad", "x**2 + 2*x + 1", "x=[2,3]"],
    "eval_fan_out": ["eval", *FANOUT],
    "grad_fan_out": ["grad", *FANOUT],
    "eval_matrix": ["eval", *MATRIX],
    "grad_matrix": ["grad", *MATRIX],
    "grad_wrt": ["grad", "a = x * y; b = a - y; f = exp(b) * a", "x=0.5", "y=2", "--wrt", "y"],
    "grad_wrt_intermediate": ["grad", "a = x * y; f = a * a", "x=2", "y=3", "--wrt", "a,x"],
    "ops": ["ops"],
    "error_parse": ["grad", "x +* y", "x=1", "y=2"],
    "error_unknown_op_line_2": ["eval", "a = x * 2\nb = tanhh(a) + 1", "x=1"],
    "error_matmul_shapes": ["grad", "W @ x", "W=[[1,2],[3,4]]", "x=[1,2,3]"],
    "warning_log_negative": ["eval", "log(x)", "x=[-1,1]"],
}


def _runner():
    try:
        return CliRunner(mix_stderr=False)
    except TypeError:
        return CliRunner()


def render(args):
    # no width from the environment (pytest-xdist's workers have COLUMNS=80): unlimited
    r = _runner().invoke(main, args, env={"NO_COLOR": "1", "COLUMNS": None, "LINES": None})
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    text = f"$ gradcli {shlex.join(args)}\n{r.stderr}{r.stdout}[exit {r.exit_code}]\n"
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"


@pytest.mark.parametrize("name", list(CASES))
def test_golden(name):
    path = GOLDEN / f"{name}.txt"
    got = render(CASES[name])
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(got, encoding="utf-8")
        return
    assert path.exists(), f"{path} is missing: run GRADCLI_UPDATE_GOLDEN=1 pytest {__file__}"
    want = "\n".join(line.rstrip() for line in path.read_text(encoding="utf-8").splitlines())
    assert got.rstrip("\n") == want.rstrip("\n")


#: Golden files that other test modules own, by prefix (pictures, --explain, the examples,
#: layouts at several widths).
OTHERS = ("dot_", "mermaid_", "explain_", "example_", "layout_")


def test_no_stray_golden_files():
    """Every file in tests/golden belongs to a case (a renamed case leaves none behind)."""
    mine = [p for p in GOLDEN.glob("*.txt") if not p.stem.startswith(OTHERS)]
    if UPDATE:
        for p in mine:
            if p.stem not in CASES:
                p.unlink()
    assert {p.stem for p in mine} == set(CASES)
