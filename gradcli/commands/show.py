"""``gradcli show``: one self-contained web page that steps through both passes."""
from __future__ import annotations

import click

from ..cliutil import (load_program, note, parse_program, picture_options, program_options,
                       reports_errors, warn, wrt_names)


@click.command("show", short_help="A web page that steps through the forward and reverse "
                                  "pass.")
@program_options
@click.option("--wrt", metavar="A,B", help="Differentiate with respect to these names only.")
@click.option("--upstream", metavar="VALUE",
              help="Start the reverse pass from this array (of the output's shape) "
                   "instead of ones.")
@click.option("-o", "--out", "out_file", metavar="FILE",
              help="Write the page to FILE (atomically) instead of stdout.")
@picture_options
@click.option("--title", metavar="TEXT", help="The page's heading (default: the program).")
@reports_errors
def command(args, program_file, ops_files, values_file, output, dtype, debug, wrt, upstream,
            out_file, collapse, max_nodes, title):
    """One self-contained HTML page that walks the forward pass node by node (each value
    appears as it is computed), then the reverse pass (at each node the upstream gradient,
    its local gradients and the downstream gradient sent along each edge, fan-out sums
    growing as their parts arrive).

    \b
      gradcli show '(x+y)*max(y,z)' x=1 y=2 z=0 -o page.html
      open page.html            # or xdg-open; page.html#step=9 opens at step 9

    Step with the buttons, the slider, the arrow keys or play (space); click a node for its
    value and gradient in full, its derivative rule and its chain rule.  The page needs no
    network (its script and style are inside it); drawing it needs Graphviz.
    """
    from .. import engine, graphviz
    from ..render import html
    from ..values import parse_value

    text, bindings = load_program(args, program_file, values_file)
    seed = parse_value(upstream, "--upstream") if upstream is not None else None
    graph = parse_program(text, bindings, ops_files)
    res = engine.differentiate(graph, bindings, wrt=wrt_names(wrt), upstream=seed,
                               output=output, dtype=dtype, trace=True)
    warn(res.warnings)
    page = html.page(res, collapse=collapse, max_nodes=max_nodes, title=title)
    for n in page.notes:
        note(n)
    if out_file is not None:
        graphviz.write_atomic(out_file, page)
    else:
        click.echo(page, nl=False)
