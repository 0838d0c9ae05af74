"""``gradcli diff``: derivatives as expressions in gradcli's own language."""
from __future__ import annotations

import click

from .. import render
from ..cliutil import emit, load_program, note, parse_program, program_options, \
    reports_errors, warn, wrt_names

#: The formats the render registry has for a derivative (the first is the default).
FORMATS = tuple(render.choices("derivative"))


@click.command("diff", short_help="Derivatives as expressions: d/dx = 2*x + 2.")
@program_options
@click.option("--wrt", metavar="A,B", help="Differentiate with respect to these names only "
              "(variables, or named values of the program).")
@click.option("--order", type=click.IntRange(min=1), default=1, show_default=True,
              help="Differentiate this many times (a scalar output and scalar variables).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=FORMATS[0],
              show_default=True, help=render.describe("derivative"))
@reports_errors
def command(args, program_file, ops_files, values_file, output, dtype, debug, wrt, order, fmt):
    """The derivative of the output with respect to each input, as an expression.

    The reverse pass is built as a graph of the same ops and printed, simplified, in
    gradcli's own language: values used more than once become statements (t1 = ...), so a
    long program gives a derivative of about its own length.  Each printed derivative,
    given to `gradcli eval` with the same bindings, evaluates to what `gradcli grad` gives,
    kinks included.  Without bindings every variable is a scalar; with them the
    derivatives have their shapes and their values are shown.

    \b
      gradcli diff 'x**2 + 2*x + 1'
      gradcli diff 'sum(tanh(W @ x + b))' W=[[1,2],[3,4]] x=[1,-1] b=0
      gradcli diff --order 2 'sin(x)*x'
      gradcli diff --format python 'x*y + sin(x)' > grad_f.py
    """
    from ..symbolic import diff

    text, bindings = load_program(args, program_file, values_file)
    graph = parse_program(text, bindings, ops_files)
    d = diff(graph, bindings, wrt=wrt_names(wrt), order=order, output=output, dtype=dtype)
    warn(d.warnings)
    if d.seed_is_ones:
        note(f"note: {d.output_name} has shape {d.lifted.out.shape}, not a scalar: these are "
             f"the derivatives of sum({d.output_name}), as grad's reverse pass from ones")
    if not d.names:
        note(f"note: {d.output_name} has no input variables: nothing to differentiate")
    emit(fmt, "derivative", d)
