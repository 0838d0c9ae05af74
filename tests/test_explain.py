"""``grad --explain``: the chain rule spelled out, and its numbers equal to the gradients.

The explanation is checked against the seed's worked example line by line, against golden
files, and on random programs: the last number of each input's line is its gradient, the
terms add up to it, and the path products (scalar programs) add up to it too.
"""
from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np
import pytest

import gradcli
from gradcli.render import text as fmt
from gradcli.render.explain import PATHS, explain, needs_ascii

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("GRADCLI_UPDATE_GOLDEN") == "1"
NAMED = "a = x + y\nb = max(y, z)\nf = a * b"


def golden(name, text):
    path = GOLDEN / f"{name}.txt"
    if UPDATE:
        path.write_text(text, encoding="utf-8")
        return
    assert path.exists(), f"run GRADCLI_UPDATE_GOLDEN=1 pytest {__file__}"
    assert text == path.read_text(encoding="utf-8")


def chain_lines(text):
    """input name -> its chain-rule line."""
    out = {}
    for line in text.split("\nchain rule:")[1].splitlines():
        m = re.match(r"^  d\w+/d(\w+) = ", line)
        if m:
            out[m[1]] = line.strip()
    return out


def test_the_worked_example_line_for_y():
    text = explain(gradcli.grad(NAMED, x=1, y=2, z=0))
    lines = chain_lines(text)
    assert lines["y"] == "df/dy = df/da · da/dy + df/db · db/dy = 2·1 + 3·1 = 5"
    assert lines["x"] == "df/dx = df/da · da/dx = 2·1 = 2"
    assert lines["z"] == "df/dz = df/db · db/dz = 3·0 = 0"
    assert "db/dy = 1 if y > z, 1/2 if y = z, else 0 = 1 because y > z" in text
    assert "db/dz = 1 if z > y, 1/2 if y = z, else 0 = 0 because neither z > y nor y = z" \
        in text
    assert "path y → a → f: 1·2 = 2" in text and "path y → b → f: 1·3 = 3" in text
    golden("explain_worked", text)


def test_unnamed_nodes_go_by_their_text():
    text = explain(gradcli.grad("(x+y)*max(y,z)", x=1, y=2, z=0))
    assert "d max(y,z)/dy = 1 if y > z, 1/2 if y = z, else 0 = 1 because y > z" in text
    assert ("df/dy = df/d(x+y) · d(x+y)/dy + df/d max(y,z) · d max(y,z)/dy = 2·1 + 3·1 = 5"
            in text)


def test_ties_and_kinks_are_said():
    text = explain(gradcli.grad(NAMED, x=1, y=2, z=2))
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("db/dy"))
    assert "= 0.5 because y = z" in line and "kink" in line and "split evenly" in line
    assert "0 just below y = 2, 1 just above" in line
    relu = explain(gradcli.grad("relu(x) * 3", x=0))
    assert "because not x > 0" in relu and "kink" in relu
    smooth = explain(gradcli.grad("x**2 * 3", x=0))   # pow's kink needs b < 1: none here
    assert "kink" not in smooth
    golden("explain_tie", text)


def test_ascii_when_the_output_cannot_show_the_dot():
    res = gradcli.grad(NAMED, x=1, y=2, z=0)
    text = explain(res, ascii=True)
    assert "·" not in text and "→" not in text
    assert "df/dy = df/da * da/dy + df/db * db/dy = 2*1 + 3*1 = 5" in text
    text.encode("ascii")
    assert needs_ascii(io.TextIOWrapper(io.BytesIO(), encoding="ascii"))
    assert not needs_ascii(io.TextIOWrapper(io.BytesIO(), encoding="utf-8"))


PROGRAMS = [
    ("a = x * y\nb = a + x\nc = a * b\nf = c + sin(x)", ["x", "y"]),
    ("u = tanh(x * y + z)\nv = exp(-u) * x\nf = v / (1 + z * z) + max(u, v)", ["x", "y", "z"]),
    ("p = x - y\nq = p * p\nr = log(q + 1) * y\nf = r - sqrt(q + x * x)", ["x", "y"]),
]


@pytest.mark.parametrize("program, names", PROGRAMS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_numbers_equal_the_gradients(program, names, seed):
    rng = np.random.default_rng(seed)
    values = {n: float(rng.uniform(0.3, 1.7)) for n in names}
    res = gradcli.grad(program, **values)
    text = explain(res)
    lines = chain_lines(text)
    for name in names:
        g = float(res.gradients[name])
        line = lines[name]
        assert line.rsplit(" = ", 1)[1] == fmt.num(g)
        # the products of the terms add up to the gradient
        parts = line.split(" = ")
        if len(parts) >= 3 and "·" in parts[-2]:
            signs = re.findall(r" ([+-]) ", parts[-2])
            terms = [float(a) * float(b) for a, b in
                     (t.split("·") for t in re.split(r" \+ | - ", parts[-2]))]
            total = terms[0] + sum(t if s == "+" else -t for s, t in zip(signs, terms[1:]))
            assert total == pytest.approx(g, rel=1e-4, abs=1e-5)
    # the paths of each input add up to its gradient
    for block in re.split(r"\n  (?=d)", text.split("chain rule:")[1])[1:]:
        name = re.match(r"d\w+/d(\w+)", block)[1]
        values_ = [float(v) for v in re.findall(r"    path .*: \S+ = (\S+)", block)]
        if values_:
            assert sum(values_) == pytest.approx(float(res.gradients[name]), rel=1e-4,
                                                 abs=1e-5)


def test_arrays_give_the_terms_as_arrays():
    res = gradcli.grad("h = tanh(W @ x)\nf = sum(h * W @ x)", W=[[1, 2], [3, 4]], x=[0.1, -0.2])
    text = explain(res)
    line = chain_lines(text)["W"]
    assert line.endswith(" = " + fmt.array(res.gradients["W"]))
    assert "not elementwise" in text   # matmul's rule is a vector-Jacobian product


def test_exponentially_many_paths_are_summarised():
    n = 40   # each statement uses the one before three times: 3^40 paths from x
    prog = "a0 = x\n" + "\n".join(f"a{i} = a{i - 1} * a{i - 1} * 0.5 + a{i - 1}"
                                  for i in range(1, n + 1))
    res = gradcli.grad(prog, x=0.001)
    text = explain(res)
    assert "about 2^63 paths from x to a40: too many to list" in text
    assert "per edge" in text
    assert chain_lines(text)["x"].rsplit(" = ", 1)[1] == fmt.num(res.gradients["x"])
    assert len(text.splitlines()) < 120      # the rules are elided past a few dozen nodes
    few = explain(gradcli.grad("a = x * x\nb = a * a\nf = b * b", x=1.5))
    assert few.count("    path x") == 8 and 8 <= PATHS


# ---------------------------------------------------------------- the command

def test_grad_explain_command_in_process_and_as_a_process(gradcli_exe):
    """`grad --explain` prints the chain rule; its numbers are the gradients."""
    import subprocess

    from click.testing import CliRunner

    from gradcli.cli import main

    args = ["grad", "--explain", "(x+y)*max(y,z)", "x=1", "y=2", "z=0"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "= 2·1 + 3·1 = 5" in r.output and "path y → max(y,z) → f: 1·3 = 3" in r.output
    p = subprocess.run(gradcli_exe + args, capture_output=True, text=True,
                       env=dict(os.environ, PYTHONIOENCODING="ascii"))
    assert p.returncode == 0 and p.stderr == ""
    assert "= 2*1 + 3*1 = 5" in p.stdout  # ASCII where the output cannot show the dot
    bad = CliRunner().invoke(main, ["grad", "--explain", "--format", "json", "x", "x=1"])
    assert bad.exit_code == 2 and "--explain" in bad.output and "Traceback" not in bad.output
