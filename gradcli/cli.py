"""The command line: Click commands that parse options, call the library and print.

No math lives here.  Options shared by several commands are defined once (``program_options``,
``output_options``) so every command spells them the same way.  Heavy modules (NumPy, Rich,
the parser) are imported inside the commands, so ``gradcli --help`` starts at once.
"""
from __future__ import annotations

import functools
import os
import sys

import click

from . import __version__

FORMATS = ("table", "json", "csv")


def _fail(message, code=2):
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _warn(messages):
    for m in messages:
        click.echo(f"warning: {m}", err=True)


def reports_errors(f):
    """Bad input -> one ``error:`` line (and a caret) on stderr and exit 2, no traceback."""

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        debug = kwargs.get("debug", False)
        try:
            return f(*args, **kwargs)
        except click.exceptions.ClickException:
            raise
        except BrokenPipeError:
            # the reader left (| head): stop quietly, as a tool killed by SIGPIPE would
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(128 + 13)
        except KeyboardInterrupt:
            click.echo("", err=True)
            sys.exit(128 + 2)
        except Exception as e:
            from .errors import GradcliError

            if debug:
                raise
            if isinstance(e, GradcliError):
                _fail(str(e), e.exit_code)
            _fail(f"internal error: {type(e).__name__}: {e} "
                  f"(please report it; --debug shows the traceback)")

    return wrapper


def program_options(f):
    """The program and its values: shared by every command that runs a program."""
    f = click.option("--debug", is_flag=True,
                     help="Show Python tracebacks instead of one-line errors.")(f)
    f = click.option("--dtype", type=click.Choice(["float64", "float32"]), default="float64",
                     show_default=True, help="Floating-point type of every value.")(f)
    f = click.option("--output", "output", metavar="NAME",
                     help="Use this named value as the output instead of the last one.")(f)
    f = click.option("--values", "values_file", metavar="FILE",
                     help="Read bindings from a JSON object {NAME: VALUE} or an .npz file.")(f)
    f = click.option("--ops", "ops_files", metavar="FILE", multiple=True,
                     help="Load custom ops (forward/backward classes) from a Python file; "
                          "repeatable. The file's code runs.")(f)
    f = click.option("-f", "--file", "program_file", metavar="PATH",
                     help="Read the program from a file ('-' for stdin); then every "
                          "argument is a binding.")(f)
    f = click.argument("args", nargs=-1, metavar="EXPR [NAME=VALUE]...")(f)
    return f


def _library(ops_files):
    """The ops a program may call: the built-ins and those of every --ops file."""
    from .plugins import BUILTIN_LIBRARY, load_ops_files

    return load_ops_files(ops_files) if ops_files else BUILTIN_LIBRARY


def output_options(f):
    return click.option("--format", "fmt", type=click.Choice(FORMATS), default="table",
                        show_default=True,
                        help="table for people; json and csv for programs (never coloured).")(f)


def _load(args, program_file, values_file):
    """(program text, bindings) from the arguments and options."""
    from .errors import BindingError
    from .values import load_values_file, parse_binding

    args = list(args)
    if program_file is not None:
        text = _read_program(program_file)
    elif not args:
        raise click.UsageError("missing EXPR (or -f FILE)")
    else:
        text = args.pop(0)
        if text == "-":
            text = _read_program("-")
    bindings = load_values_file(values_file) if values_file else {}
    for arg in args:
        if "=" not in arg:
            raise BindingError(f"expected NAME=VALUE, got {arg!r}"
                               + (" (the program comes from -f, so every argument is a binding)"
                                  if program_file is not None else ""))
        name, value = parse_binding(arg)
        bindings[name] = value
    return text, bindings


def _check_program(text, graph, bindings):
    """Warn when the program is a lone NAME=VALUE: the EXPR was probably left out."""
    from .parse import looks_like_a_binding

    if not graph.variables and looks_like_a_binding(text):
        _warn([f"the program is {text.strip()!r}, which has no input variables; NAME=VALUE "
               f"bindings go after EXPR (was EXPR left out?)"])


def _read_program(path):
    from .errors import BindingError

    if path == "-":
        if sys.stdin is None or sys.stdin.closed:
            raise BindingError("-f -: no standard input to read the program from")
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise BindingError(f"cannot read the program: no such file {path!r}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BindingError(f"cannot read the program {path!r}: {e}") from None


def _wrt(value):
    if value is None:
        return None
    names = [w.strip() for w in value.split(",")]
    if not all(names):
        raise click.BadParameter(f"{value!r}: give names separated by commas, like a,b",
                                 param_hint="--wrt")
    return names


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gradcli")
def main():
    """Differentiate expressions: forward and reverse passes on a computational graph.

    \b
      gradcli eval '(x+y)*max(y,z)' x=1 y=2 z=0
      gradcli grad '(x+y)*max(y,z)' x=1 y=2 z=0
      gradcli grad --format json 'sum(tanh(W @ x + b))' W=@W.npy x=[1,2] b=0
      gradcli ops

    An EXPR that begins with '-' goes after '--': gradcli grad -- '-x**2' x=3
    """


@main.command("eval", short_help="Forward pass: every node's value.")
@program_options
@output_options
@reports_errors
def eval_cmd(args, program_file, ops_files, values_file, output, dtype, debug, fmt):
    """Forward pass: the value of every node of the graph, in topological order.

    Bindings are NAME=VALUE: a number (x=1, t=nan), a JSON list (W=[[1,2],[3,4]]) or a
    file (W=@w.npy, @data.csv, @v.json, @x.txt).
    """
    from . import engine
    from .parse import parse

    text, bindings = _load(args, program_file, values_file)
    graph = parse(text, _library(ops_files))
    _check_program(text, graph, bindings)
    res = engine.evaluate(graph, bindings, output=output, dtype=dtype)
    _warn(res.warnings)
    if fmt == "json":
        from .render import jsonout

        click.echo(jsonout.dumps(jsonout.evaluation(res)))
    elif fmt == "csv":
        from .render import csvout

        click.echo(csvout.evaluation(res), nl=False)
    else:
        from .render import layout, table

        layout.show(table.evaluation(res))


@main.command("grad", short_help="Forward and reverse pass: every gradient.")
@program_options
@click.option("--wrt", metavar="A,B", help="Differentiate with respect to these names only "
              "(variables, or named values of the program).")
@click.option("--upstream", metavar="VALUE",
              help="Start the reverse pass from this array (of the output's shape) "
                   "instead of ones.")
@output_options
@reports_errors
def grad_cmd(args, program_file, ops_files, values_file, output, dtype, debug, wrt, upstream,
             fmt):
    """Forward and reverse pass: the gradient of the output with respect to every input.

    The table shows, node by node from the output back, the upstream gradient that arrives,
    the local gradient for each input and the downstream gradient sent to it
    (downstream = upstream x local), then the gradient with respect to each input.  A
    non-scalar output starts from ones (the gradient of its sum), as
    y.backward(torch.ones_like(y)) does.
    """
    from . import engine
    from .parse import parse
    from .values import parse_value

    text, bindings = _load(args, program_file, values_file)
    seed = parse_value(upstream, "--upstream") if upstream is not None else None
    graph = parse(text, _library(ops_files))
    _check_program(text, graph, bindings)
    res = engine.differentiate(graph, bindings, wrt=_wrt(wrt), upstream=seed, output=output,
                               dtype=dtype, trace=fmt == "table")
    _warn(res.warnings)
    if fmt == "json":
        from .render import jsonout

        _note_seed(res)
        click.echo(jsonout.dumps(jsonout.gradients(res)))
    elif fmt == "csv":
        from .render import csvout

        _note_seed(res)
        click.echo(csvout.gradients(res), nl=False)
    else:
        from .render import layout, table

        layout.show(table.gradients(res))


def _note_seed(res):
    """Say on stderr that a non-scalar output started the reverse pass from ones."""
    if res.seed_is_ones:
        from .render.table import seed_note

        click.echo(seed_note(res), err=True)


@main.command("check", short_help="Compare reverse mode with finite differences.")
@program_options
@click.option("--wrt", metavar="A,B", help="Check these inputs only (default: all).")
@click.option("--method", type=click.Choice(["central", "forward", "complex", "richardson"]),
              default="central", show_default=True, help="How to take finite differences.")
@click.option("--eps", type=float, metavar="H",
              help="Step size, relative to each element's size when above 1 "
                   "[default: central 6.1e-6, forward 1.5e-8, richardson 5.8e-3, "
                   "complex 1e-20].")
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
@click.option("--all", "show_all", is_flag=True, help="List every element in the table.")
@output_options
@reports_errors
def check_cmd(args, program_file, ops_files, values_file, output, dtype, debug, wrt, method,
              eps, atol, rtol, jacobian, fast, projections, seed, strict, sweep, show_all, fmt):
    """Compare the reverse-mode gradient with finite differences, element by element.

    Exit 0 when every element agrees (kinks, where an op is not differentiable, only note
    themselves unless --strict), 1 on a mismatch, 2 on bad input.  On a mismatch each op's
    own backward is checked to name the one that is wrong.  With --ops FILE and no EXPR it
    checks every custom op in FILE at random inputs.
    """
    from . import gradcheck, localcheck
    from .parse import parse
    from .render import checkreport

    library = _library(ops_files)
    if not args and program_file is None:
        if not ops_files:
            raise click.UsageError("missing EXPR (or -f FILE, or --ops FILE to check its ops)")
        given = [flag for flag, on in (
            ("--wrt", wrt), ("--method", method != "central"), ("--jacobian", jacobian),
            ("--fast", fast), ("--strict", strict), ("--eps-sweep", sweep),
            ("--values", values_file), ("--output", output), ("--dtype", dtype != "float64"),
            ("--all", show_all)) if on]
        if given:
            raise click.UsageError(f"{', '.join(given)}: for checking an EXPR; the self-check "
                                   f"of --ops FILE takes --seed, --eps, --atol and --rtol")
        report = localcheck.check_ops(library, seed=seed, eps=eps, atol=atol, rtol=rtol)
        render_table = checkreport.ops_table
    else:
        text, bindings = _load(args, program_file, values_file)
        report = gradcheck.check(parse(text, library), bindings, wrt=_wrt(wrt), output=output,
                                 method=method, eps=eps, atol=atol, rtol=rtol,
                                 jacobian=jacobian, fast=fast, projections=projections,
                                 seed=seed, dtype=dtype, strict=strict, sweep=sweep)
        _warn(report.warnings)
        render_table = functools.partial(checkreport.table, show_all=show_all)
    if report.kinked and not report.failed and not strict:
        click.echo("note: some elements are at kinks (points where an op is not "
                   "differentiable); they do not fail the check (--strict makes them)", err=True)
    if fmt == "json":
        from .render import jsonout

        click.echo(jsonout.dumps(checkreport.as_json(report)))
    elif fmt == "csv":
        click.echo(checkreport.as_csv(report), nl=False)
    else:
        from .render import layout

        layout.show(render_table(report))
    sys.exit(0 if report.ok else 1)


@main.command("ops", short_help="List the ops and their derivative rules.")
@click.option("--ops", "ops_files", metavar="FILE", multiple=True,
              help="Also list the custom ops of this file (repeatable).")
@output_options
@reports_errors
def ops_cmd(ops_files, fmt, debug=False):
    """Every op: its name, arguments, derivative rule and where it is not differentiable."""
    from .render import opslist

    rows = opslist.rows(_library(ops_files))
    if fmt == "json":
        import json

        click.echo(json.dumps({"ops": rows}))
    elif fmt == "csv":
        click.echo(opslist.csv_text(rows), nl=False)
    else:
        from .render import layout

        layout.show(opslist.table(rows))
