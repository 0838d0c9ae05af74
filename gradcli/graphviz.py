"""Running the real Graphviz ``dot``: DOT text in, SVG/PNG/PDF bytes out, written atomically.

Plain DOT text needs nothing installed; only rendering does, and then a missing ``dot`` is
one clear error (exit 2) saying how to install it.
"""
from __future__ import annotations

import os
import shutil
import subprocess

from .errors import GradcliError

__all__ = ["FORMATS", "available", "run", "write_atomic", "format_for", "MISSING"]

#: What --render makes.
FORMATS = ("svg", "png", "pdf")
#: Text formats an -o extension may ask for instead (no Graphviz needed).
TEXT = {".dot": "dot", ".gv": "dot", ".mmd": "mermaid", ".mermaid": "mermaid"}
#: Seconds Graphviz may take before we give up on it.
TIMEOUT = 60

MISSING = ("Graphviz's dot program is not installed (or not on PATH), so the picture cannot "
           "be rendered: install Graphviz: apt install graphviz / brew install graphviz; "
           "plain DOT output needs nothing (leave out --render)")


class RenderError(GradcliError):
    """Graphviz is missing, failed or took too long."""


def available():
    return shutil.which("dot") is not None


def format_for(path):
    """The format a file name asks for by its extension: svg/png/pdf, dot, mermaid, or None."""
    ext = os.path.splitext(path)[1].lower()
    if ext[1:] in FORMATS:
        return ext[1:]
    return TEXT.get(ext)


def run(text, fmt, timeout=TIMEOUT):
    """``dot -T<fmt>`` of ``text``: the rendered bytes."""
    if fmt not in FORMATS:
        raise RenderError(f"--render {fmt}: choose one of {', '.join(FORMATS)}")
    exe = shutil.which("dot")
    if exe is None:
        raise RenderError(MISSING)
    try:
        done = subprocess.run([exe, f"-T{fmt}"], input=text.encode("utf-8"),
                              capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RenderError(f"Graphviz took more than {timeout} s to lay the graph out; "
                          f"draw fewer boxes with --collapse or a smaller --max-nodes") from None
    except OSError as e:
        raise RenderError(f"cannot run Graphviz's dot ({exe}): {e.strerror or e}") from None
    if done.returncode != 0:
        why = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise RenderError(f"Graphviz's dot failed (exit {done.returncode})"
                          + (f": {why[0]}" if why else ""))
    return done.stdout


def write_atomic(path, data):
    """Write ``data`` (bytes or text) to ``path`` via a temporary file and a rename, so a
    failure never leaves a partial file behind (nor clobbers an old one)."""
    from .files import write_atomic as write_file

    if isinstance(data, str):
        data = data.encode("utf-8")
    try:
        write_file(path, lambda f: f.write(data))
    except OSError as e:
        raise RenderError(f"cannot write {path}: {e.strerror or e}") from None
