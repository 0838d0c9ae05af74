"""``gradcli eval``: the forward pass."""
from __future__ import annotations

import click

from ..cliutil import (emit, load_program, output_options, parse_program, program_options,
                       reports_errors, warn)


@click.command("eval", short_help="Forward pass: every node's value.")
@program_options
@output_options("evaluation")
@reports_errors
def command(args, program_file, ops_files, values_file, output, dtype, debug, fmt):
    """Forward pass: the value of every node of the graph, in topological order.

    Bindings are NAME=VALUE: a number (x=1, t=nan), a JSON list (W=[[1,2],[3,4]]) or a
    file (W=@w.npy, @data.csv, @v.json, @x.txt).
    """
    from .. import engine

    text, bindings = load_program(args, program_file, values_file)
    graph = parse_program(text, bindings, ops_files)
    res = engine.evaluate(graph, bindings, output=output, dtype=dtype)
    warn(res.warnings)
    emit(fmt, "evaluation", res)
