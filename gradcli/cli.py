"""The command line: the ``gradcli`` group and where its commands live.

Each command is a module of :mod:`gradcli.commands` that defines ``command``; the group
imports one only when it runs (or when ``--help`` lists them), so start-up stays quick and
adding a command is one module plus one line in ``COMMANDS``.  No math lives in the command
layer: it parses options, calls the library and prints.
"""
from __future__ import annotations

import importlib
import importlib.util

import click

from . import __version__
from .cliutil import Group

#: command name -> module of gradcli.commands, in the order ``gradcli --help`` lists them.
COMMANDS = {
    "eval": "evaluate",
    "grad": "grad",
    "check": "check",
    "diff": "diff",
    "hessian": "hessian",
    "dot": "dot",
    "show": "show",
    "descend": "descend",
    "ops": "ops",
}


def _module(name):
    return f"{__package__}.commands.{COMMANDS[name]}"


class LazyGroup(Group):
    """A group whose commands are imported when first needed."""

    def list_commands(self, ctx):
        return [name for name in COMMANDS
                if importlib.util.find_spec(_module(name)) is not None]

    def get_command(self, ctx, name):
        if name not in COMMANDS or importlib.util.find_spec(_module(name)) is None:
            return None
        return importlib.import_module(_module(name)).command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gradcli")
def main():
    """Differentiate expressions: forward and reverse passes on a computational graph.

    \b
      gradcli eval '(x+y)*max(y,z)' x=1 y=2 z=0
      gradcli grad '(x+y)*max(y,z)' x=1 y=2 z=0
      gradcli grad --format json 'sum(tanh(W @ x + b))' W=@W.npy x=[1,2] b=0
      gradcli grad --batch rows.csv '(x+y)*max(y,z)' > grads.csv
      gradcli grad --sweep x=0:1:11 'sin(x)**2'
      gradcli check --ops my_ops.py
      gradcli dot --grad '(x+y)*max(y,z)' x=1 y=2 z=0 -o graph.svg
      gradcli diff 'x**2 + 2*x + 1'
      gradcli ops

    An EXPR that begins with '-' goes after '--': gradcli grad -- '-x**2' x=3
    """
