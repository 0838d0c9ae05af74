"""Renderers, and the registry by which a command picks one by name.

Each renderer module makes some formats of some kinds of result ("evaluation", "gradients",
"check", ...).  ``FORMATS`` says which, as data, so a command lists its ``--format`` choices
without importing any renderer, and adding a format is one entry here plus its module: no
``if fmt == ...`` branch in any command.  A renderer function takes the result (and the
command's options as keywords) and returns text, or a list of :mod:`layout` items (tables and
lines) that :func:`write` draws for a terminal or a pipe.
"""
from __future__ import annotations

import importlib

#: format -> kind of result -> "module:function" under gradcli.render.  The first format of
#: each kind is its default.
FORMATS = {
    "text": {"derivative": "expr:diff_text"},
    "table": {"evaluation": "table:evaluation", "gradients": "table:gradients",
              "check": "checkreport:table", "opscheck": "checkreport:ops_table",
              "ops": "opslist:table", "descend": "training:table",
              "hessian": "expr:hessian_table"},
    "json": {"evaluation": "jsonout:evaluation_text", "gradients": "jsonout:gradients_text",
             "check": "checkreport:json_text", "opscheck": "checkreport:json_text",
             "ops": "opslist:json_text", "descend": "training:json_text",
             "derivative": "expr:diff_json", "hessian": "expr:hessian_json"},
    "csv": {"evaluation": "csvout:evaluation", "gradients": "csvout:gradients",
            "check": "checkreport:as_csv", "opscheck": "checkreport:as_csv",
            "ops": "opslist:csv_text"},
    "dot": {"evaluation": "dot:evaluation", "gradients": "dot:gradients",
            "check": "dot:check"},
    "mermaid": {"evaluation": "mermaid:evaluation", "gradients": "mermaid:gradients",
                "check": "mermaid:check"},
    "latex": {"derivative": "expr:diff_latex"},
    "python": {"derivative": "expr:diff_python"},
}

#: What ``--format`` says in a command's help, per kind of result, where the formats are
#: not "table for people, the others for programs".
HELP = {
    "derivative": "text: the program for people and gradcli eval; json for scripts; latex "
                  "for slides; python: a NumPy function of the inputs.",
    "hessian": "table for people; json for programs.",
}

#: Formats a command offers only where it says so (pictures belong to `dot` and `check`).
PICTURES = ("dot", "mermaid")


def choices(kind, pictures=False):
    """The format names that can render ``kind``, default first."""
    return [f for f, kinds in FORMATS.items()
            if kind in kinds and (pictures or f not in PICTURES) and _exists(kinds[kind])]


def describe(kind):
    """The ``--format`` help for ``kind``: its own line in :data:`HELP`, else the usual."""
    return HELP.get(kind, "table for people; the others for programs (never coloured).")


def _exists(target):
    import importlib.util

    module = target.split(":")[0]
    return importlib.util.find_spec(f"{__name__}.{module}") is not None


def render(fmt, kind, result, **options):
    """``result`` rendered as ``fmt``: text, or a list of layout items for :func:`write`."""
    module, func = FORMATS[fmt][kind].split(":")
    f = getattr(importlib.import_module(f"{__name__}.{module}"), func)
    return f(result, **options)


def write(out, stream=None):
    """Write what :func:`render` gave: text as it is (ending in a new line), else drawn."""
    import sys

    stream = stream or sys.stdout
    if isinstance(out, str):
        stream.write(out if out.endswith("\n") or not out else out + "\n")
    else:
        from . import layout

        layout.show(out, stream)
