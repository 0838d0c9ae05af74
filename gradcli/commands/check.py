"""``gradcli check``: reverse mode against finite differences."""
from __future__ import annotations

import sys

import click

from ..cliutil import (Command, configure_terminal, emit, library_for, load_program, note,
                       output_options, program_options, reports_errors, terminal_options, warn,
                       wrt_names)


@click.command("check", cls=Command, short_help="Compare reverse mode with finite differences.")
@program_options
@click.option("--wrt", metavar="A,B", help="Check these inputs only (default: all).")
@click.option("--method", type=click.Choice(["central", "forward", "complex", "richardson"]),
              default="central", show_default=True, help="How to take finite differences.")
@click.option("--eps", type=float, metavar="H",
              help="Step size, relative to each element's size when above 1 "
                   "[default: central 6.1e-6, forward 1.5e-8, richardson 5.8e-3, "
                   "complex 1e-20; with the default, an element that fails is taken again "
                   "with smaller steps until its difference settles].")
@click.option("--atol", type=float, help="Absolute tolerance [default: 1e-6; forward 1e-5; "
              "float32 1e-4].")
@click.option("--rtol", type=float, help="Relative tolerance [default: 1e-5; forward 1e-4; "
              "float32 1e-3].")
@click.option("--jacobian", is_flag=True,
              help="For a non-scalar output, compare the whole Jacobian (a row per output "
                   "element) instead of the gradient of the sum.")
@click.option("--fast", is_flag=True,
              help="Check a few random projections u·J·v instead of every element.")
@click.option("--projections", type=click.IntRange(1, 1000), default=4, show_default=True,
              help="How many projections --fast checks per input.")
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True,
              help="Seed for the random choices (projections, upstream gradients, samples).")
@click.option("--strict", is_flag=True, help="Exit 1 on kinks too.")
@click.option("--eps-sweep", "sweep", is_flag=True,
              help="Also show the error over a range of steps: truncation vs rounding.")
@click.option("--taylor", is_flag=True,
              help="The Taylor test instead: the remainder of f(x + h v) must fall as h^2 "
                   "for random directions v (no step or tolerance to choose).")
@click.option("--directions", type=click.IntRange(1, 1000), metavar="N",
              help="How many random directions --taylor tests per input [default: 4]; each "
                   "costs one ladder of forward passes.")
@click.option("--local", "local", is_flag=True,
              help="Also check every node's own backward with a random upstream gradient "
                   "(custom-op nodes always are).")
@click.option("--one-at-a-time", "one_at_a_time", is_flag=True,
              help="Perturb one element per evaluation, not groups of elements whose "
                   "effects stay apart (same verdict, slower).")
@click.option("--order", type=click.IntRange(1, 2), default=1, show_default=True,
              help="2: check the second derivatives (the Hessian, by the reverse pass through "
                   "the traced gradient) against finite differences of the gradient.")
@click.option("--batch", "batch_file", metavar="FILE",
              help="Check at every point of FILE ('-': stdin; CSV with a header, JSON Lines, "
                   ".npy/.npz, as grad --batch): one row per point (csv, or json: JSON "
                   "Lines), the verdict on stderr, exit 1 if any point disagrees.")
@click.option("--all", "show_all", is_flag=True, help="List every element in the table.")
@click.option("--results", "results", type=click.Choice(["all", "problems"]), default="all",
              show_default=True,
              help="json/csv: a record for every element, or only for those that fail or "
                   "sit at a kink (JSON counts the others in \"omitted\").")
@click.option("--html", "html_file", metavar="FILE",
              help="Also write the check as a step-through page (as gradcli show): failing "
                   "nodes red with the blame, kinks orange with their one-sided slopes.")
@click.option("--render", "render_file", metavar="FILE",
              help="Also draw the checked graph with Graphviz (failing nodes red, kinks "
                   "orange) into FILE: .svg, .png or .pdf (or .dot / .mmd for the text).")
@output_options("check", pictures=True)
@terminal_options
@reports_errors
def command(args, program_file, ops_files, values_file, output, dtype, debug, wrt, method,
            eps, atol, rtol, jacobian, fast, projections, seed, strict, sweep, taylor,
            directions, local,
            one_at_a_time, order, batch_file, show_all, results, html_file, render_file,
            fmt, color, width):
    """Compare the reverse-mode gradient with finite differences, element by element.

    Exit 0 when every element agrees (kinks, where an op is not differentiable, only note
    themselves unless --strict), 1 on a mismatch, 2 on bad input.  On a mismatch each op's
    own backward is checked to name the one that is wrong.  With --ops FILE and no EXPR it
    checks every custom op in FILE at random inputs.

    \b
    Examples:
      gradcli check '(x+y)*max(y,z)' x=1 y=2 z=0.5
      gradcli check --method complex 'sum(tanh(W @ x))' W=[[1,2],[3,4]] x=[1,2]
      gradcli check --ops my_ops.py
      gradcli check --ops my_ops.py --html page.html 'sum(MyGate(x))' x=[1,2,3]
      gradcli check --taylor 'sum(sin(W @ x))' W=[[1,2],[3,4]] x=[1,2]
    """
    configure_terminal(color, width)
    import numpy as np

    from .. import gradcheck, localcheck
    from ..parse import parse

    if render_file is not None:
        _picture_format(render_file)  # a bad name is refused before the check runs
    if order == 2 and (html_file is not None or render_file is not None):
        raise click.UsageError("--html and --render draw the first-order check; --order 2 "
                               "checks the gradient's own program")
    if directions is not None and not taylor:
        raise click.UsageError("--directions N is the number of random directions of "
                               "--taylor; give --taylor too (--fast takes --projections N)")
    if results != "all" and fmt not in ("json", "csv"):
        raise click.UsageError(f"--results {results}: for --format json or csv (the table "
                               f"shows failures in full; --all lists every element)")
    library = library_for(ops_files)
    if not args and program_file is None:
        if not ops_files:
            raise click.UsageError("missing EXPR (or -f FILE, or --ops FILE to check its ops)")
        given = [flag for flag, on in (
            ("--wrt", wrt), ("--method", method != "central"), ("--jacobian", jacobian),
            ("--fast", fast), ("--strict", strict), ("--eps-sweep", sweep),
            ("--values", values_file), ("--output", output), ("--dtype", dtype != "float64"),
            ("--taylor", taylor), ("--local", local), ("--one-at-a-time", one_at_a_time),
            ("--all", show_all), ("--order", order != 1), ("--batch", batch_file is not None),
            ("--results", results != "all"), ("--html", html_file is not None),
            ("--render", render_file is not None),
            (f"--format {fmt}", fmt not in ("table", "json", "csv"))) if on]
        if given:
            raise click.UsageError(f"{', '.join(given)}: for checking an EXPR; the self-check "
                                   f"of --ops FILE takes --seed, --eps, --atol and --rtol")
        report = localcheck.check_ops(library, seed=seed, eps=eps, atol=atol, rtol=rtol)
        kind = "opscheck"
    elif batch_file is not None:
        _check_batch(args, program_file, values_file, library, batch_file, wrt=wrt,
                     output=output, dtype=dtype, method=method, eps=eps, atol=atol, rtol=rtol,
                     seed=seed, strict=strict, local=local, fmt=fmt, others=(
                         ("--jacobian", jacobian), ("--fast", fast), ("--eps-sweep", sweep),
                         ("--taylor", taylor), ("--order", order != 1), ("--all", show_all),
                         ("--results", results != "all"),
                         ("--html", html_file is not None),
                         ("--render", render_file is not None)))
    else:
        text, bindings = load_program(args, program_file, values_file)
        report = gradcheck.check(parse(text, library), bindings, wrt=wrt_names(wrt),
                                 output=output,
                                 method=method, eps=eps, atol=atol, rtol=rtol,
                                 jacobian=jacobian, fast=fast, projections=projections,
                                 seed=seed, dtype=dtype, strict=strict, sweep=sweep,
                                 taylor=(directions or True) if taylor else False,
                                 local=local, grouped=not one_at_a_time,
                                 order=order)
        warn(report.warnings)
        kind = "check"
        if render_file is not None:
            _write_picture(render_file, report)
        if html_file is not None:
            from .. import graphviz
            from ..render.html import check_page

            graphviz.write_atomic(html_file, check_page(report, bindings, wrt=wrt_names(wrt),
                                                        output=output))
    if report.kinked and not report.failed and not strict:
        note("note: some elements are at kinks (points where an op is not differentiable); "
             "they do not fail the check (--strict makes them)")
    if results == "problems" and kind == "check":
        left = sum(int(np.count_nonzero(ic.status == "ok")) for ic in report.inputs)
        if left:
            note(f"note: --results problems: the {left:,} passing elements have no record "
                 f"(--results all lists them)")
    emit(fmt, kind, report, show_all=show_all,
         **({"results": results} if fmt in ("json", "csv") else {}))
    sys.exit(0 if report.ok else 1)


def _picture_format(path):
    """What ``--render FILE`` makes, from the extension: svg/png/pdf, dot or mermaid."""
    from .. import graphviz

    fmt = graphviz.format_for(path)
    if fmt is None:
        raise click.UsageError(f"--render {path}: give a file name ending in .svg, .png or "
                               f".pdf (or .dot / .mmd for the picture's text)")
    return fmt


def _write_picture(path, report):
    """The check's picture (as ``--format dot``), rendered by Graphviz as ``gradcli dot -o``
    does, into ``path``."""
    from .. import graphviz, render
    from ..render import dot as picture

    fmt = _picture_format(path)
    notes = []
    text = render.render("mermaid" if fmt == "mermaid" else "dot", "check", report,
                         max_nodes=picture.MAX_NODES, notes=notes)
    for n in notes:
        note(n)
    graphviz.write_atomic(path, graphviz.run(text, fmt) if fmt in graphviz.FORMATS else text)


def _check_batch(args, program_file, values_file, library, batch_file, *, wrt, output, dtype,
                 method, eps, atol, rtol, seed, strict, local, fmt, others):
    """``check --batch FILE``: a row per point on stdout, the verdict on stderr."""
    from .. import batching, gradcheck
    from ..parse import parse
    from ..render import checkreport

    given = [flag for flag, on in others if on] + (["--method"] if method != "central"
                                                   else [])
    if given:
        raise click.UsageError(f"{', '.join(given)}: not with --batch (each point is checked "
                               f"by central differences, element by element)")
    ctx = click.get_current_context(silent=True)
    source = ctx.get_parameter_source("fmt") if ctx is not None else None
    if fmt == "table" and source is not None and source.name == "DEFAULT":
        fmt = "csv"  # a batch is for programs first, as grad --batch
    fmt = {"csv": "csv", "json": "jsonl"}.get(fmt)
    if fmt is None:
        raise click.UsageError("with --batch, --format is csv (the default) or json (JSON "
                               "Lines)")
    text, bindings = load_program(args, program_file, values_file)
    graph = parse(text, library)
    where = batch_file if batch_file != "-" else "stdin"
    points = batching.open_points(batch_file, set(graph.variables))
    n = failed = kinked = examined = 0
    said = []
    try:
        if getattr(points, "single", False) and not points.structured:
            free = [v for v in graph.variables if v not in bindings]
            if len(free) != 1:
                raise click.UsageError(f"--batch {batch_file}: a .npy file holds one array, "
                                       f"so the program needs exactly one variable not bound "
                                       f"on the command line")
            points.bind_single(free[0])
        chunks = (columns for columns, _lines in points)
        for rec in gradcheck.check_points(graph, bindings, chunks, wrt=wrt_names(wrt),
                                          output=output, eps=eps, atol=atol, rtol=rtol,
                                          dtype=dtype, seed=seed, strict=strict,
                                          local=local, source=where, warnings=said):
            if n == 0 and fmt == "csv":  # the header with the first row: an error before
                click.echo(checkreport.batch_header())  # it leaves stdout empty
            n += 1
            failed += not rec["ok"]
            kinked += rec["ok"] and rec["status"] == "kink"
            examined += rec["examined"] and not rec["ok"]
            click.echo(checkreport.batch_line(rec, fmt))
    finally:
        points.close()
    warn(said)
    if n == 0:
        from ..errors import BindingError

        raise BindingError(f"--batch {batch_file}: no points to check")
    note(checkreport.batch_verdict(n, failed, kinked, examined))
    sys.exit(1 if failed else 0)
