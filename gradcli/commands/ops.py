"""``gradcli ops``: the op library."""
from __future__ import annotations

import click

from ..cliutil import emit, library_for, output_options, reports_errors


@click.command("ops", short_help="List the ops and their derivative rules.")
@click.option("--ops", "ops_files", metavar="FILE", multiple=True,
              help="Also list the custom ops of this file (repeatable).")
@output_options("ops")
@reports_errors
def command(ops_files, fmt, debug=False):
    """Every op: its name, arguments, derivative rule and where it is not differentiable."""
    from ..render import opslist

    emit(fmt, "ops", opslist.rows(library_for(ops_files)))
