"""``gradcli grad``: the forward and the reverse pass (at one point, or many)."""
from __future__ import annotations

import click

from ..cliutil import (Command, batch_options, configure_terminal, emit, is_batch,
                       load_program, note_seed, output_options, parse_program, program_options,
                       reports_errors, run_batch, terminal_options, warn, wrt_names)
from .evaluate import _single_only


@click.command("grad", cls=Command, short_help="Forward and reverse pass: every gradient.")
@program_options
@click.option("--wrt", metavar="A,B", help="Differentiate with respect to these names only "
              "(variables, or named values of the program).")
@click.option("--upstream", metavar="VALUE",
              help="Start the reverse pass from this array (of the output's shape) "
                   "instead of ones.")
@click.option("--explain", is_flag=True,
              help="Spell out the chain rule for each input, path by path, with numbers "
                   "(instead of the table).")
@batch_options
@output_options("gradients", extra=("jsonl", "npz"))
@terminal_options
@reports_errors
def command(args, program_file, ops_files, values_file, output, dtype, debug, wrt, upstream,
            explain, batch_file, sweeps, out_file, keep_going, quiet, chunk_size, fmt, color, width):
    """Forward and reverse pass: the gradient of the output with respect to every input.

    The table shows, node by node from the output back, the upstream gradient that arrives,
    the local gradient for each input and the downstream gradient sent to it
    (downstream = upstream x local), then the gradient with respect to each input.  A
    non-scalar output starts from ones (the gradient of its sum), as
    y.backward(torch.ones_like(y)) does.

    With --batch FILE or --sweep it runs at many points, vectorised, and writes one row per
    point: CSV columns f,d_x,d_y,... (the output's value, then d f/d each variable that
    changes from point to point, or --wrt's), JSON Lines {"value": ..., "gradients": {...}}
    or an .npz of arrays.  Bindings on the command line stay fixed.

    \b
    Examples:
      gradcli grad '(x+y)*max(y,z)' x=1 y=2 z=0
      gradcli grad --format json --wrt W 'sum(tanh(W @ x))' W=@W.npy x=[1,2]
      gradcli grad --batch rows.csv '(x+y)*max(y,z) + sin(x)*y' > grads.csv
      gradcli grad --sweep x=-2:2:5 --format jsonl 'relu(x) * w' w=3
      gradcli grad --explain '(x+y)*max(y,z)' x=1 y=2 z=0
      gradcli grad -- '-x**2' x=3          # an EXPR that begins with - goes after --
    """
    from .. import engine
    from ..values import parse_value

    configure_terminal(color, width)
    text, bindings = load_program(args, program_file, values_file)
    seed = parse_value(upstream, "--upstream") if upstream is not None else None
    graph = parse_program(text, bindings, ops_files)
    if is_batch(batch_file, sweeps):
        run_batch(graph, bindings, batch_file=batch_file, sweeps=sweeps, fmt=fmt,
                  out_file=out_file, keep_going=keep_going, quiet=quiet, grad=True,
                  wrt=wrt_names(wrt), upstream=seed, output=output, dtype=dtype,
                  chunk_size=chunk_size)
        return
    _single_only(fmt, out_file, keep_going)
    if explain and fmt != "table":
        raise click.UsageError("--explain writes text for people: it does not go with "
                               f"--format {fmt}")
    res = engine.differentiate(graph, bindings, wrt=wrt_names(wrt), upstream=seed,
                               output=output, dtype=dtype, trace=fmt == "table")
    warn(res.warnings)
    if explain:
        import sys

        from ..render.explain import explain as explain_text, needs_ascii

        text = explain_text(res, ascii=needs_ascii(sys.stdout))
        click.echo(text, nl=not text.endswith("\n"))
        return
    if fmt != "table":  # the table says it in its own last line
        note_seed(res)
    emit(fmt, "gradients", res)
