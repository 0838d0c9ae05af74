"""``gradcli dot``: the graph as a picture (Graphviz DOT, Mermaid, or rendered by Graphviz)."""
from __future__ import annotations

import click

from ..cliutil import (load_program, note, parse_program, picture_options, program_options,
                       reports_errors, warn, wrt_names)


@click.command("dot", short_help="The graph as Graphviz DOT or Mermaid, with values.")
@program_options
@click.option("--grad", "with_grad", is_flag=True,
              help="Also draw the backward edges (dashed, red), labelled with the gradients "
                   "they carry, and each input's total gradient.")
@click.option("--wrt", metavar="A,B", help="With --grad: differentiate with respect to these "
              "names only.")
@click.option("--upstream", metavar="VALUE",
              help="With --grad: start the reverse pass from this array instead of ones.")
@click.option("--format", "fmt", type=click.Choice(["dot", "mermaid"]), default=None,
              help="dot (Graphviz, the default) or mermaid (a flowchart for Markdown); "
                   "-o FILE.mmd also picks mermaid.")
@click.option("--render", "render_fmt", type=click.Choice(["svg", "png", "pdf"]),
              default=None, help="Run Graphviz's dot to make a picture (the format also "
                                 "follows from -o FILE's extension).")
@click.option("-o", "--out", "out_file", metavar="FILE",
              help="Write to FILE (atomically) instead of stdout.")
@picture_options
@reports_errors
def command(args, program_file, ops_files, values_file, output, dtype, debug, with_grad, wrt,
            upstream, fmt, render_fmt, out_file, collapse, max_nodes):
    """The computational graph as a picture: variables and constants as ellipses, ops as
    boxes (op and statement name), each forward edge labelled with the value it carries,
    the output drawn with a double border.

    \b
      gradcli dot '(x+y)*max(y,z)' x=1 y=2 z=0 | dot -Tsvg > graph.svg
      gradcli dot --grad '(x+y)*max(y,z)' x=1 y=2 z=0 -o graph.svg
      gradcli dot --format mermaid 'sum(tanh(W @ x + b))' W=[[1,2],[3,4]] x=[1,2] b=0

    Without bindings the graph is drawn without values.  Constants are written into the
    label of the op that uses them.  Rendering needs Graphviz; DOT and Mermaid text do not.
    """
    from .. import graphviz, render
    from ..errors import GradcliError
    from ..render import dot as picture
    from ..values import parse_value

    if out_file is not None:
        wants = graphviz.format_for(out_file)
        if wants in graphviz.FORMATS:
            if render_fmt is not None and render_fmt != wants:
                raise GradcliError(f"-o {out_file} asks for {wants} but --render is "
                                   f"{render_fmt}")
            render_fmt = wants
        elif wants in ("dot", "mermaid") and fmt is None and render_fmt is None:
            fmt = wants
    fmt = fmt or "dot"
    if render_fmt is not None and fmt != "dot":
        raise GradcliError("--render draws DOT with Graphviz; it does not go with "
                           "--format mermaid (GitHub and mermaid-cli render Mermaid)")
    if not with_grad and (wrt is not None or upstream is not None):
        raise GradcliError("--wrt and --upstream go with --grad")

    text, bindings = load_program(args, program_file, values_file)
    graph = parse_program(text, bindings, ops_files)
    seed = parse_value(upstream, "--upstream") if upstream is not None else None
    res = picture.result(graph, bindings, grad=with_grad, wrt=wrt_names(wrt), upstream=seed,
                         output=output, dtype=dtype)
    warn(getattr(res, "warnings", ()))
    notes = []
    kind = "gradients" if with_grad else "evaluation"
    out = render.render(fmt, kind, res, collapse=collapse,
                        max_nodes=picture.MAX_NODES if max_nodes is None else max_nodes,
                        notes=notes)
    for n in notes:
        note(n)
    if render_fmt is not None:
        data = graphviz.run(out, render_fmt)
    else:
        data = out.encode("utf-8")
    if out_file is not None:
        graphviz.write_atomic(out_file, data)
    elif render_fmt in ("png", "pdf"):
        stream = click.get_binary_stream("stdout")
        if stream.isatty():
            raise GradcliError(f"--render {render_fmt} is binary: give -o FILE or "
                               f"redirect stdout")
        stream.write(data)
        stream.flush()
    else:
        click.echo(data.decode("utf-8"), nl=False)
