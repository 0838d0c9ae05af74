"""``gradcli eval``: the forward pass (at one point, or at many with --batch/--sweep)."""
from __future__ import annotations

import click

from ..cliutil import (Command, batch_options, configure_terminal, emit, is_batch,
                       load_program, output_options, parse_program, program_options,
                       reports_errors, run_batch, terminal_options, warn)


@click.command("eval", cls=Command, short_help="Forward pass: every node's value.")
@program_options
@batch_options
@output_options("evaluation", extra=("jsonl", "npz"))
@terminal_options
@reports_errors
def command(args, program_file, ops_files, values_file, output, dtype, debug, batch_file,
            sweeps, out_file, keep_going, quiet, chunk_size, fmt, color, width):
    """Forward pass: the value of every node of the graph, in topological order.

    Bindings are NAME=VALUE: a number (x=1, t=nan), a JSON list (W=[[1,2],[3,4]]) or a
    file (W=@w.npy, @data.csv, @v.json, @x.txt).  With --batch FILE or --sweep the program
    runs at many points and prints the output's value per point (CSV column named after
    the output); bindings on the command line stay fixed.

    \b
    Examples:
      gradcli eval '(x+y)*max(y,z)' x=1 y=2 z=0
      gradcli eval --format json 'sum(W @ v)' W=[[1,2],[3,4]] v=[1,1]
      gradcli eval --batch points.csv 'x**2 + y'        # CSV header x,y
      gradcli eval --sweep x=0:3.14:5 'sin(x)'
    """
    from .. import engine

    configure_terminal(color, width)
    text, bindings = load_program(args, program_file, values_file)
    graph = parse_program(text, bindings, ops_files)
    if is_batch(batch_file, sweeps):
        run_batch(graph, bindings, batch_file=batch_file, sweeps=sweeps, fmt=fmt,
                  out_file=out_file, keep_going=keep_going, quiet=quiet, grad=False,
                  output=output, dtype=dtype, chunk_size=chunk_size)
        return
    _single_only(fmt, out_file, keep_going)
    res = engine.evaluate(graph, bindings, output=output, dtype=dtype)
    warn(res.warnings)
    emit(fmt, "evaluation", res)


def _single_only(fmt, out_file, keep_going):
    if fmt in ("jsonl", "npz"):
        raise click.UsageError(f"--format {fmt} is for many points: add --batch FILE or "
                               f"--sweep NAME=START:STOP:N")
    if keep_going:
        raise click.UsageError("--keep-going goes with --batch FILE")
    if out_file is not None:
        raise click.UsageError("-o FILE goes with --batch or --sweep; for one point, "
                               "redirect stdout (> FILE)")
