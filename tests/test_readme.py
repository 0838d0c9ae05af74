"""The README's examples really run, and show what gradcli really prints.

Every ```console block is a transcript: a line starting with ``$ `` is a shell command, run
with ``shell=True`` from the repository's root (as the README's commands are) with the
virtualenv's ``bin`` first on PATH (so
``gradcli`` and ``python`` are the installed ones), NO_COLOR=1 and COLUMNS=200; the lines up to
the next ``$ `` line are its expected output, compared with the command's stderr followed by
its stdout (trailing whitespace stripped per line, trailing blank lines ignored).  The exit
code must be 2 when the transcript shows an ``error:``, 1 when it shows a FAIL verdict, else 0.
"""
from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

from gradcli.cli import main

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
BIN = os.path.dirname(sys.executable)


def fenced_blocks(text):
    """(info string, [lines]) for every fenced block, in order."""
    return [(m.group(1).strip(), m.group(2).splitlines())
            for m in re.finditer(r"^```([^\n]*)\n(.*?)^```\s*$", text, re.M | re.S)]


def transcripts():
    """(command, expected output lines) for every ``$ `` line of every console block."""
    out = []
    for info, lines in fenced_blocks(README):
        if info != "console":
            continue
        cmd = None
        for line in lines:
            if line.startswith("$ "):
                if cmd is not None:
                    out.append((cmd, expected))
                cmd, expected = line[2:], []
            elif cmd is not None:
                expected.append(line)
        if cmd is not None:
            out.append((cmd, expected))
    return out


def _clean(lines):
    lines = [line.rstrip() for line in lines]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def shell(cmd, cwd):
    env = dict(os.environ, NO_COLOR="1", COLUMNS="200",
               PATH=BIN + os.pathsep + os.environ.get("PATH", ""))
    return subprocess.run(cmd, shell=True, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


TRANSCRIPTS = transcripts()

# The transcripts run in the README's order on one pytest-xdist worker (--dist loadfile keeps a
# file's tests together, in order): a command may read what one before it wrote (descend --save
# then --resume, a .npz then the batch that reads it).


@pytest.fixture(scope="session")
def scratch():
    """Where the transcripts' /tmp/... files go: this run's own directory, so two runs at once
    (or another test run on the machine) never read or overwrite each other's files.  Not
    under pytest's basetemp: a later pytest run removes all but the newest three of those,
    even while this run still reads them."""
    import shutil
    import tempfile

    path = tempfile.mkdtemp(prefix="gradcli-readme-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def own_tmp(text, scratch):
    return re.sub(r"(?<![\w.])/tmp/", scratch + "/", text)


def test_readme_has_transcripts():
    assert len(TRANSCRIPTS) >= 8
    assert any("|" in cmd for cmd, _ in TRANSCRIPTS)  # the JSON pipeline example


@pytest.mark.parametrize("cmd, expected", TRANSCRIPTS, ids=[c[:40] for c, _ in TRANSCRIPTS])
def test_console_example(cmd, expected, scratch):
    p = shell(own_tmp(cmd, scratch), ROOT)
    got = _clean((p.stderr + p.stdout).replace(scratch + "/", "/tmp/").splitlines())
    assert got == _clean(expected), f"$ {cmd}\n--- stderr\n{p.stderr}--- stdout\n{p.stdout}"
    assert "Traceback" not in p.stderr
    code = 2 if any(line.startswith("error:") for line in expected) else \
        1 if any(line.startswith("FAIL") for line in expected) else 0
    assert p.returncode == code


def test_first_block_is_the_set_up():
    info, lines = fenced_blocks(README)[0]
    commands = [line.strip() for line in lines if line.strip()]
    assert commands == ["pip install . && gradcli grad '(x+y)*max(y,z)' x=1 y=2 z=0",
                        "pip install '.[test]' && python -m pytest"]


def test_shell_examples_run(tmp_path):
    """The ```sh blocks that use gradcli (not the install ones) run without an error."""
    ran = 0
    for info, lines in fenced_blocks(README):
        if info != "sh" or any("pip " in line or "venv" in line for line in lines):
            continue
        (tmp_path / "examples").is_symlink() or (tmp_path / "examples").symlink_to(
            ROOT / "examples")  # the examples' paths are relative to the repository
        for line in "\n".join(lines).replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if not line:
                continue
            p = shell(line, tmp_path)
            assert p.returncode == 0, f"$ {line}\n{p.stderr}"
            assert "Traceback" not in p.stderr and "error" not in p.stderr, p.stderr
            ran += 1
    assert ran >= 3


def _readme_table(heading):
    section = README.split(heading, 1)[1]
    return [line for line in section.splitlines()[1:40] if line.startswith("| `")]


def test_command_table_names_real_commands():
    rows = _readme_table("## Commands")
    names = [re.match(r"\| `gradcli (\w+)", row).group(1) for row in rows
             if row.startswith("| `gradcli ")]
    assert names == ["eval", "grad", "check", "check", "dot", "show", "diff", "hessian",
                     "descend", "ops"]
    for name in names:
        assert name in main.list_commands(None), name


def test_option_table_options_exist():
    rows = [row for row in _readme_table("## Commands") if row.startswith("| `-")]
    options = [re.findall(r"--[\w-]+", row.split("|")[1]) for row in rows]
    assert len(options) >= 8
    helps = {name: CliRunner().invoke(main, [name, "--help"]).output for name in main.list_commands(None)}
    for opts in options:
        for opt in opts:
            assert any(opt in h for h in helps.values()), opt


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["eval", "--help"], ["grad", "--help"],
                                  ["check", "--help"], ["ops", "--help"]])
def test_help(args, tmp_path):
    p = shell("gradcli " + " ".join(args), tmp_path)
    assert p.returncode == 0 and p.stderr == ""
    assert p.stdout.startswith("Usage: gradcli")
    if args[0] in ("--help", "-h"):
        for name in ("eval", "grad", "ops"):
            assert re.search(rf"^\s+{name}\s", p.stdout, re.M), name
