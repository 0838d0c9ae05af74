"""``gradcli hessian``: second derivatives, by differentiating the backward pass."""
from __future__ import annotations

import click

from .. import render
from ..cliutil import configure_terminal, emit, load_program, parse_program, \
    program_options, reports_errors, terminal_options, warn, wrt_names

#: The formats the render registry has for a Hessian (the first is the default).
FORMATS = tuple(render.choices("hessian"))


@click.command("hessian", short_help="Second derivatives of a scalar output.")
@program_options
@click.option("--wrt", metavar="A,B", help="Variables (or named values) to differentiate "
              "with respect to, in this order (default: every variable, in program order).")
@click.option("--diag", is_flag=True, help="Only the diagonal (d2f/dx_i2 per element).")
@click.option("--vector", metavar="V", help="The Hessian-vector product H v instead of H "
              "(never built): V as a value (JSON list, number or @file) with as many "
              "elements as the variables together, in --wrt order, C order.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=FORMATS[0],
              show_default=True, help=render.describe("hessian"))
@terminal_options
@reports_errors
def command(args, program_file, ops_files, values_file, output, dtype, debug, wrt, diag,
            vector, fmt, color, width):
    """The Hessian of a scalar output at the bindings.

    The backward pass is built as a graph of the same ops (as `gradcli diff` prints it)
    and differentiated again: each column of H is one Hessian-vector product, so --vector
    costs about two gradients whatever the size, and --diag skips nothing but the storage.
    Entries are over the variables' elements flattened in C order.

    \b
      gradcli hessian 'x**2*y' x=1 y=2
      gradcli hessian '(1-x)**2 + 100*(y-x**2)**2' x=1 y=1
      gradcli hessian --vector [1,0] 'sum(tanh(W @ x))' W=[[1,2],[3,4]] x=[1,-1] --wrt x
    """
    from ..symbolic import hessian
    from ..values import parse_value

    configure_terminal(color, width)
    if diag and vector is not None:
        raise click.UsageError("--diag and --vector do not go together")
    text, bindings = load_program(args, program_file, values_file)
    graph = parse_program(text, bindings, ops_files)
    v = parse_value(vector, "--vector") if vector is not None else None
    h = hessian(graph, bindings, wrt=wrt_names(wrt), vector=v, diag=diag, output=output,
                dtype=dtype)
    warn(h.warnings)
    emit(fmt, "hessian", h)
