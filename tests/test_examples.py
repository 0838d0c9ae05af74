"""The worked examples (examples/*.gc) and the gallery made from them (docs/gallery/).

Each example file says in a comment the command that runs it (``# gradcli grad -f ...``).
The tests run that command and pin what it prints as golden files (the table, JSON, and the
DOT of ``gradcli dot --grad`` with the same bindings), check the gradients against values
derived by hand (or finite differences), and hand every DOT text to the real Graphviz.

The gallery's SVGs are made by the real ``dot`` from the DOT files beside them; a test makes
each DOT text again and fails when a committed one is stale, and renders the committed DOT
and compares it with the committed SVG (Graphviz's version comment aside; with another
Graphviz version than the one that made them, the texts drawn are compared instead).

To update the golden files and the gallery after an intended change:

    GRADCLI_UPDATE_GOLDEN=1 python -m pytest tests/test_examples.py
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import gradcli
from gradcli.cli import main

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.gc"))
GOLDEN = Path(__file__).parent / "golden"
GALLERY = ROOT / "docs" / "gallery"
UPDATE = os.environ.get("GRADCLI_UPDATE_GOLDEN") == "1"
DOT = shutil.which("dot")


def command_of(path):
    """The arguments of the ``# gradcli ...`` line of an example (after ``gradcli``)."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# gradcli "):
            return shlex.split(line[2:])[1:]
    raise AssertionError(f"{path} has no '# gradcli ...' line")


def bindings_of(args):
    """NAME=VALUE arguments as a dict of arrays (JSON values)."""
    out = {}
    for a in args:
        if "=" in a and not a.startswith("-"):
            name, value = a.split("=", 1)
            out[name] = np.array(json.loads(value), dtype=float)
    return out


def invoke(args, monkeypatch):
    monkeypatch.chdir(ROOT)
    try:
        runner = CliRunner(mix_stderr=False)
    except TypeError:
        runner = CliRunner()
    r = runner.invoke(main, args, env={"NO_COLOR": "1"})
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    text = f"$ gradcli {shlex.join(args)}\n{r.stderr}{r.stdout}[exit {r.exit_code}]\n"
    return r, "\n".join(line.rstrip() for line in text.splitlines()) + "\n"


def golden(name, text):
    path = GOLDEN / f"{name}.txt"
    if UPDATE:
        path.write_text(text, encoding="utf-8")
        return
    assert path.exists(), f"{path} is missing: run GRADCLI_UPDATE_GOLDEN=1 pytest {__file__}"
    assert text == path.read_text(encoding="utf-8")


def variants(args):
    """The example's command as a table, as JSON, and as the DOT picture of it."""
    grad = args[0] == "grad"
    rest = args[1:]
    out = {"table": args, "json": [args[0], "--format", "json", *rest]}
    out["dot"] = ["dot", "--grad", *rest] if grad else ["dot", *rest]
    return out


def test_every_example_has_a_command():
    assert len(EXAMPLES) >= 6
    for path in EXAMPLES:
        assert command_of(path)[0] in ("grad", "eval", "check")


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
@pytest.mark.parametrize("kind", ["table", "json", "dot"])
def test_example_golden(path, kind, monkeypatch):
    args = variants(command_of(path))[kind]
    r, text = invoke(args, monkeypatch)
    assert r.exit_code == 0, text
    golden(f"example_{path.stem}_{kind}", text)
    if kind == "dot":
        assert DOT, "Graphviz's dot must be installed (.ci/run installs it)"
        done = subprocess.run([DOT, "-Tsvg"], input=r.stdout.encode(), capture_output=True)
        assert done.returncode == 0 and not done.stderr, done.stderr
    if kind == "json":
        d = json.loads(r.stdout)
        assert all("text" in n for n in d["nodes"])


def _run(path):
    args = command_of(path)
    program = path.read_text(encoding="utf-8")
    wrt = args[args.index("--wrt") + 1] if "--wrt" in args else None
    return gradcli.grad(program, bindings_of(args), wrt=wrt), bindings_of(args)


def test_worked_by_hand():
    r, _ = _run(ROOT / "examples" / "worked.gc")
    assert float(r.value) == 6
    assert {k: float(v) for k, v in r.gradients.items()} == {"x": 2, "y": 5, "z": 0}


def test_chain_by_hand():
    r, _ = _run(ROOT / "examples" / "chain.gc")
    # g = (x+y) z: dg/dx = dg/dy = z = -3, dg/dz = x + y = 4
    assert float(r.value) == -12
    assert {k: float(v) for k, v in r.gradients.items()} == {"x": -3, "y": -3, "z": 4}


def test_quadratic_by_hand():
    r, b = _run(ROOT / "examples" / "quadratic.gc")
    x = b["x"]
    np.testing.assert_allclose(r.value, x ** 2 + 2 * x + 1)
    np.testing.assert_allclose(r.gradients["x"], 2 * x + 2)


def test_linear_by_hand():
    r, b = _run(ROOT / "examples" / "linear.gc")
    W, x, bias = b["W"], b["x"], b["b"]
    z = W @ x + bias
    np.testing.assert_allclose(r.gradients["W"], np.outer(2 * z, x))
    np.testing.assert_allclose(r.gradients["x"], W.T @ (2 * z))
    np.testing.assert_allclose(r.gradients["b"], 2 * z)


def test_shared_weights_sum_both_uses():
    from conftest import numeric_grad

    path = ROOT / "examples" / "shared.gc"
    r, b = _run(path)

    def loss(W):
        h1 = np.tanh(W @ b["x"] + b["b"])
        h2 = np.tanh(W @ h1 + b["b"])
        return np.sum((h2 - b["t"]) ** 2)
    np.testing.assert_allclose(r.gradients["W"], numeric_grad(loss, b["W"]), rtol=1e-6,
                               atol=1e-9)
    # and the table spells dloss/dW as the sum of what its two uses send back
    args = command_of(path)
    from conftest import cli

    out = cli(*args).out
    assert "(via W @ x) + " in out and "(via W @ h1) = " in out


def test_softmax_cross_entropy_is_p_minus_t():
    path = ROOT / "examples" / "softmax.gc"
    args = command_of(path)
    b = bindings_of(args)
    r = gradcli.grad(path.read_text(), b, wrt="z,W")
    z = b["W"] @ b["x"]
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    np.testing.assert_allclose(r.gradients["z"], p - b["t"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(r.gradients["W"], np.outer(p - b["t"], b["x"]), rtol=1e-12)
    assert float(r.value) == pytest.approx(-np.log(p[1]))


# ---------------------------------------------------------------- the gallery

def gallery():
    """name -> the arguments that make docs/gallery/<name>.svg (listed in GALLERY.md)."""
    text = (GALLERY / "GALLERY.md").read_text(encoding="utf-8")
    out = {}
    for line in text.splitlines():
        if line.startswith("$ gradcli "):
            args = shlex.split(line[2:])[1:]
            name = Path(args[args.index("-o") + 1]).stem
            out[name] = args
    return out


_VERSION = re.compile(r"<!-- Generated by graphviz version [^>]*-->\n?")


def _svg_texts(svg):
    return sorted(re.findall(r"<text[^>]*>([^<]*)</text>", svg))


def test_gallery_lists_every_svg():
    made = gallery()
    assert len(made) >= 6
    assert {p.stem for p in GALLERY.glob("*.svg")} == set(made)
    assert {p.stem for p in GALLERY.glob("*.dot")} == set(made)


@pytest.mark.parametrize("name", sorted(gallery()) if (GALLERY / "GALLERY.md").exists()
                         else [])
def test_gallery_is_fresh(name, monkeypatch, tmp_path):
    args = gallery()[name]
    at = args.index("-o")
    dot_args = args[:at] + ["-o", str(tmp_path / f"{name}.dot")] + args[at + 2:]
    monkeypatch.chdir(ROOT)
    r, text = invoke(dot_args, monkeypatch)
    assert r.exit_code == 0, text
    source = (tmp_path / f"{name}.dot").read_text(encoding="utf-8")
    committed_dot = GALLERY / f"{name}.dot"
    committed_svg = GALLERY / f"{name}.svg"
    if UPDATE:
        committed_dot.write_text(source, encoding="utf-8")
        r, text = invoke(args, monkeypatch)   # the real command, as GALLERY.md shows it
        assert r.exit_code == 0, text
        return
    assert source == committed_dot.read_text(encoding="utf-8"), \
        f"{committed_dot} is stale: run GRADCLI_UPDATE_GOLDEN=1 pytest {__file__}"
    done = subprocess.run([DOT, "-Tsvg"], input=source.encode(), capture_output=True)
    assert done.returncode == 0
    fresh = done.stdout.decode("utf-8")
    old = committed_svg.read_text(encoding="utf-8")
    v_fresh, v_old = _VERSION.search(fresh), _VERSION.search(old)
    if v_fresh and v_old and v_fresh[0] == v_old[0]:
        assert _VERSION.sub("", fresh) == _VERSION.sub("", old), \
            f"{committed_svg} is stale: run GRADCLI_UPDATE_GOLDEN=1 pytest {__file__}"
    else:  # another Graphviz lays it out its own way: the same words must be drawn
        assert _svg_texts(fresh) == _svg_texts(old), f"{committed_svg} is stale"
