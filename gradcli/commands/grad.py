"""``gradcli grad``: the forward and the reverse pass."""
from __future__ import annotations

import click

from ..cliutil import (emit, load_program, note_seed, output_options, parse_program,
                       program_options, reports_errors, warn, wrt_names)


@click.command("grad", short_help="Forward and reverse pass: every gradient.")
@program_options
@click.option("--wrt", metavar="A,B", help="Differentiate with respect to these names only "
              "(variables, or named values of the program).")
@click.option("--upstream", metavar="VALUE",
              help="Start the reverse pass from this array (of the output's shape) "
                   "instead of ones.")
@output_options("gradients")
@reports_errors
def command(args, program_file, ops_files, values_file, output, dtype, debug, wrt, upstream,
            fmt):
    """Forward and reverse pass: the gradient of the output with respect to every input.

    The table shows, node by node from the output back, the upstream gradient that arrives,
    the local gradient for each input and the downstream gradient sent to it
    (downstream = upstream x local), then the gradient with respect to each input.  A
    non-scalar output starts from ones (the gradient of its sum), as
    y.backward(torch.ones_like(y)) does.
    """
    from .. import engine
    from ..values import parse_value

    text, bindings = load_program(args, program_file, values_file)
    seed = parse_value(upstream, "--upstream") if upstream is not None else None
    graph = parse_program(text, bindings, ops_files)
    res = engine.differentiate(graph, bindings, wrt=wrt_names(wrt), upstream=seed,
                               output=output, dtype=dtype, trace=fmt == "table")
    warn(res.warnings)
    if fmt != "table":  # the table says it in its own last line
        note_seed(res)
    emit(fmt, "gradients", res)
