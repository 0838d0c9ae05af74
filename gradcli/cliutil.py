"""What the commands share: options defined once, loading a program, errors, output.

Every command spells a shared option the same way because it comes from one decorator here
(``program_options``, ``output_options``); every command reports bad input the same way
because it is wrapped in ``reports_errors``.  Heavy modules (NumPy, Rich, the parser) are
imported inside the functions, so ``gradcli --help`` starts at once.
"""
from __future__ import annotations

import functools
import os
import sys

import click


def fail(message, code=2):
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def warn(messages):
    for m in messages:
        click.echo(f"warning: {m}", err=True)


def note(message):
    click.echo(message, err=True)


def _exit_code(e):
    """A GradcliError's exit code; anything but 1 (a check mismatch) or 2 becomes 2."""
    code = getattr(e, "exit_code", 2)
    return code if code in (1, 2) else 2


def reports_errors(f):
    """Bad input -> one ``error:`` line (and a caret) on stderr and exit 2, no traceback."""

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        debug = kwargs.get("debug", False)
        try:
            return f(*args, **kwargs)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except BrokenPipeError:
            # the reader left (| head): stop quietly, as a tool killed by SIGPIPE would
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(128 + 13)
        except KeyboardInterrupt:
            click.echo("", err=True)
            sys.exit(128 + 2)
        except SystemExit:
            raise
        except BaseException as e:
            from .errors import GradcliError

            if debug:
                raise
            if isinstance(e, GradcliError):
                fail(str(e), _exit_code(e))
            if isinstance(e, OSError) and e.errno is not None and getattr(e, "filename", None) \
                    is None:
                fail(f"cannot write the output: {os.strerror(e.errno)}")
            fail(f"internal error: {type(e).__name__}: {e} "
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


def output_options(kind, pictures=False):
    """``--format`` with the formats the render registry has for ``kind``."""
    from . import render

    names = render.choices(kind, pictures)

    def deco(f):
        return click.option("--format", "fmt", type=click.Choice(names), default=names[0],
                            show_default=True,
                            help="table for people; the others for programs (never "
                                 "coloured).")(f)
    return deco


def emit(fmt, kind, result, stream=None, **options):
    """Render ``result`` as ``fmt`` and write it to stdout (or ``stream``)."""
    from . import render

    render.write(render.render(fmt, kind, result, **options), stream)


def library_for(ops_files):
    """The ops a program may call: the built-ins and those of every --ops file."""
    from .plugins import BUILTIN_LIBRARY, load_ops_files

    return load_ops_files(ops_files) if ops_files else BUILTIN_LIBRARY


def load_program(args, program_file, values_file):
    """(program text, bindings) from the arguments and options."""
    from .errors import BindingError
    from .files import read_program
    from .values import load_values_file, parse_binding

    args = list(args)
    if program_file is not None:
        text = read_program(program_file)
    elif not args:
        raise click.UsageError("missing EXPR (or -f FILE)")
    else:
        text = args.pop(0)
        if text == "-":
            text = read_program("-")
    bindings = load_values_file(values_file) if values_file else {}
    for arg in args:
        if "=" not in arg:
            raise BindingError(f"expected NAME=VALUE, got {arg!r}"
                               + (" (the program comes from -f, so every argument is a binding)"
                                  if program_file is not None else ""))
        name, value = parse_binding(arg)
        bindings[name] = value
    return text, bindings


def parse_program(text, bindings, ops_files):
    """The graph of ``text``, warning when it is a lone NAME=VALUE (EXPR left out)."""
    from .parse import looks_like_a_binding, parse

    graph = parse(text, library_for(ops_files))
    if not graph.variables and looks_like_a_binding(text):
        warn([f"the program is {text.strip()!r}, which has no input variables; NAME=VALUE "
              f"bindings go after EXPR (was EXPR left out?)"])
    return graph


def wrt_names(value):
    if value is None:
        return None
    names = [w.strip() for w in value.split(",")]
    if not all(names):
        raise click.BadParameter(f"{value!r}: give names separated by commas, like a,b",
                                 param_hint="--wrt")
    return names


def note_seed(res):
    """Say on stderr that a non-scalar output started the reverse pass from ones."""
    if res.seed_is_ones:
        from .render.table import seed_note

        note(seed_note(res))
