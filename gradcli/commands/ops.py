"""``gradcli ops``: the op library."""
from __future__ import annotations

import click

from ..cliutil import (Command, configure_terminal, emit, library_for, output_options,
                       reports_errors, terminal_options)


@click.command("ops", cls=Command, short_help="List the ops and their derivative rules.")
@click.option("--ops", "ops_files", metavar="FILE", multiple=True,
              help="Also list the custom ops of this file (repeatable).")
@output_options("ops")
@terminal_options
@reports_errors
def command(ops_files, fmt, color, width, debug=False):
    """Every op: its name, how to call it (keywords and defaults), its PyTorch equivalent,
    its derivative rule, where it is not differentiable and where it is defined.

    \b
    Examples:
      gradcli ops
      gradcli ops --format csv
      gradcli ops --ops my_ops.py
    """
    from ..render import opslist

    configure_terminal(color, width)
    emit(fmt, "ops", opslist.rows(library_for(ops_files)))
