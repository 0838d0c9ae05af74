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


#: A file name: no check here (the readers say what is wrong), but the shell completes it.
_PATH = click.Path(allow_dash=True)


def program_options(f):
    """The program and its values: shared by every command that runs a program."""
    f = click.option("--debug", is_flag=True,
                     help="Show Python tracebacks instead of one-line errors.")(f)
    f = click.option("--dtype", type=click.Choice(["float64", "float32"]), default="float64",
                     show_default=True, help="Floating-point type of every value.")(f)
    f = click.option("--output", "output", metavar="NAME",
                     help="Use this named value as the output instead of the last one.")(f)
    f = click.option("--values", "values_file", metavar="FILE", type=_PATH,
                     help="Read bindings from a JSON object {NAME: VALUE} or an .npz file.")(f)
    f = click.option("--ops", "ops_files", metavar="FILE", multiple=True, type=_PATH,
                     help="Load custom ops (forward/backward classes) from a Python file; "
                          "repeatable. The file's code runs.")(f)
    f = click.option("-f", "--file", "program_file", metavar="PATH", type=_PATH,
                     help="Read the program from a file ('-' for stdin); then every "
                          "argument is a binding.")(f)
    f = click.argument("args", nargs=-1, metavar="EXPR [NAME=VALUE]...")(f)
    return f


def output_options(kind, pictures=False, extra=()):
    """``--format`` with the formats the render registry has for ``kind`` (and ``extra``,
    formats a command writes itself, such as a batch's jsonl and npz)."""
    from . import render

    names = render.choices(kind, pictures)
    names += [n for n in extra if n not in names]

    def deco(f):
        return click.option("--format", "fmt", type=click.Choice(names), default=names[0],
                            show_default=True,
                            help="table for people; the others for programs (never "
                                 "coloured)." + (" With --batch/--sweep: csv (the default), "
                                                 "json or jsonl (JSON Lines), npz, table."
                                                 if "npz" in extra else ""))(f)
    return deco


def terminal_options(f):
    """``--color`` and ``--width``: how tables are drawn (stdout a terminal or not)."""
    f = click.option("--width", type=click.IntRange(20, 10000), metavar="N",
                     help="Draw tables N characters wide [default: the terminal's width, "
                          "or $COLUMNS, or unlimited when piped].")(f)
    f = click.option("--color", "color", type=click.Choice(["auto", "always", "never"]),
                     default="auto", show_default=True,
                     help="Colour tables: auto is on a terminal unless NO_COLOR is set.")(f)
    return f


def picture_options(f):
    """``--collapse`` and ``--max-nodes``: how big graphs stay readable (``dot``, ``show``)."""
    f = click.option("--max-nodes", type=click.IntRange(min=0), default=None, metavar="N",
                     help="Past N nodes the picture collapses by itself, and keeps only the "
                          "statements nearest the output if still bigger (0: no limit). "
                          "[default: 150]")(f)
    f = click.option("--collapse", is_flag=True,
                     help="One box per statement instead of one per op.")(f)
    return f


def configure_terminal(color="auto", width=None):
    """Apply ``--color`` and ``--width`` to how tables are drawn."""
    from .render import layout

    layout.configure(color=color, width=width)


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
    from . import values as valuesmod
    from .errors import BindingError
    from .files import read_program

    args = list(args)
    if program_file is not None:
        text = read_program(program_file)
    elif not args:
        raise click.UsageError("missing EXPR (or -f FILE)", ctx=click.get_current_context(
            silent=True))
    else:
        text = args.pop(0)
        if text == "-":
            text = read_program("-")
        elif _is_binding(text) and (not args or all(_is_binding(a) for a in args)):
            ctx = click.get_current_context(silent=True)
            where = _command_path(ctx)
            raise UsageProblem(
                f"missing EXPR: {_clip(text)} is a NAME=VALUE binding, not a program",
                f"the program comes first, then its bindings: {where} EXPR "
                f"{' '.join(_shell_word(a) for a in [text] + args)}", ctx)
    base = valuesmod.load_values_file(values_file) if values_file else {}
    for arg in args:
        if "=" not in arg:
            raise BindingError(f"expected NAME=VALUE, got {arg!r}"
                               + (" (the program comes from -f, so every argument is a binding)"
                                  if program_file is not None else ""))
    parse_bindings = getattr(valuesmod, "parse_bindings", None)
    if parse_bindings is not None:  # names a name bound twice
        return text, parse_bindings(args, base)
    bindings = dict(base)
    for arg in args:
        name, value = valuesmod.parse_binding(arg)
        bindings[name] = value
    return text, bindings


def _clip(text, n=40):
    text = " ".join(str(text).split())
    return repr(text if len(text) <= n else text[:n - 1] + "…")


def _shell_word(text):
    import shlex

    return shlex.quote(text) if len(text) <= 40 else shlex.quote(text[:39] + "…")


def _is_binding(text):
    """``x=3``, ``W=[[1,2]]``, ``v=@v.npy``: a lone NAME=VALUE (not a program)."""
    import re

    m = re.fullmatch(r"\s*([^\W\d]\w*)\s*=(?!=)\s*(.+?)\s*", text, re.S)
    if not m:
        return False
    value = m.group(2)
    if "\n" in value or ";" in value:  # more statements follow: a program (h = [x, 1]; h * 2)
        return False
    if value.startswith("@"):
        return True
    if value.startswith("["):  # a list of numbers; [x, 1] is a program's array of names
        from .errors import GradcliError
        from .values import parse_value

        try:
            parse_value(value)
        except GradcliError:
            return not re.search(r"[^\W\d]", re.sub(r"(?i)\b(nan|inf|infinity|e)\b|\d[eE]", "",
                                                    value))
        return True
    try:
        float(value)
    except ValueError:
        return False
    return True


def parse_program(text, bindings, ops_files):
    """The graph of ``text``, warning when it is a lone NAME=VALUE (EXPR left out)."""
    from . import parse as parsemod

    graph = parsemod.parse(text, library_for(ops_files))
    looks = getattr(parsemod, "looks_like_a_binding", None)
    if not graph.variables and looks is not None and looks(text):
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


# ---------------------------------------------------------------- one error style

class UsageProblem(click.UsageError):
    """A usage error shown as gradcli shows every error: ``error: ...`` and a hint."""

    def __init__(self, message, hint=None, ctx=None):
        super().__init__(message, ctx)
        self.hint = hint

    def show(self, file=None):
        stream = file or sys.stderr
        click.echo(f"error: {self.format_message()}", file=stream)
        hint = self.hint
        if hint is None and self.ctx is not None:
            hint = f"see '{_command_path(self.ctx)} --help'"
        if hint:
            click.echo(f"hint: {hint}", file=stream)


def _command_path(ctx):
    """``gradcli grad``: the command as the user types it (whatever the program's name)."""
    if ctx is None:
        return "gradcli COMMAND"
    return " ".join(["gradcli"] + ctx.command_path.split()[1:])


def restyle_usage_error(e, ctx=None, args=()):
    """Click's usage error ``e`` as a :class:`UsageProblem` (with a hint where one helps)."""
    if isinstance(e, UsageProblem):
        return e
    ctx = e.ctx or ctx
    message = e.message if isinstance(e, click.NoSuchOption) else e.format_message()
    hint = None
    if isinstance(e, click.NoSuchOption) and _looks_like_expr(e.option_name):
        word = next((a for a in args if a.startswith(e.option_name)), e.option_name)
        rest = [a for a in args if a != word and "=" in a and not a.startswith("-")]
        path = _command_path(ctx)
        hint = (f"an EXPR that begins with - goes after --: {path} -- "
                f"{' '.join(_shell_word(a) for a in [word] + rest)}")
    elif isinstance(e, click.NoSuchOption) and e.possibilities:
        hint = f"did you mean {', '.join(sorted(e.possibilities))}?"
    elif message.startswith("No such command") and ctx is not None and \
            isinstance(ctx.command, click.Group):
        import difflib

        name = message.split("'")[1] if "'" in message else ""
        close = difflib.get_close_matches(name, ctx.command.list_commands(ctx), 1)
        hint = (f"did you mean {close[0]}? " if close else "") + \
            f"see '{_command_path(ctx)} --help' for the commands"
    message = message[:1].lower() + message[1:] if message[:2] != "No" else \
        message[:1].lower() + message[1:]
    out = UsageProblem(message.rstrip("."), hint, ctx)
    out.exit_code = 2
    return out


def _looks_like_expr(option):
    """``-x``, ``-x**2``, ``-sin(x)``: an option name Click refused that reads as math."""
    if not option or option.startswith("--"):
        return False
    body = option[1:]
    return bool(body) and (body[0].isalpha() or body[0] in "(.0123456789[")


class StyledErrors:
    """Mixin for a Click command or group: its usage errors in gradcli's style."""

    def make_context(self, info_name, args, parent=None, **extra):
        given = list(args)  # Click's parser consumes the list it is given
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.exceptions.UsageError as e:
            raise restyle_usage_error(e, args=given) from None

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except click.exceptions.UsageError as e:
            raise restyle_usage_error(e, ctx) from None


class Command(StyledErrors, click.Command):
    """A gradcli command: usage errors in gradcli's style (``error: ...`` and a hint).
    Use it as ``@click.command("name", cls=Command)``."""


class Group(StyledErrors, click.Group):
    """A group whose own usage errors (an unknown command) read like gradcli's."""


# ---------------------------------------------------------------- --batch and --sweep

def batch_options(f):
    """``--batch``, ``--sweep``, ``-o``, ``--keep-going``, ``--quiet``: many points at once."""
    f = click.option("--chunk-size", type=click.IntRange(1), default=65536, hidden=True,
                     help="Points per chunk of a batch.")(f)
    f = click.option("-q", "--quiet", is_flag=True,
                     help="No progress bar (it shows only for long batches on a terminal).")(f)
    f = click.option("--keep-going", is_flag=True,
                     help="With --batch: leave out bad rows (each reported on stderr), write "
                          "the others, and exit 2 at the end.")(f)
    f = click.option("-o", "--out", "out_file", metavar="FILE", type=_PATH,
                     help="Write the output to FILE (atomically: all of it or nothing) "
                          "instead of stdout.")(f)
    f = click.option("--sweep", "sweeps", metavar="NAME=START:STOP:N", multiple=True,
                     help="Run at N points from START to STOP (both included); repeat it "
                          "for a grid (the last --sweep varies fastest).")(f)
    f = click.option("--batch", "batch_file", metavar="FILE", type=_PATH,
                     help="Run at every point of FILE ('-': stdin): CSV with a header row, "
                          "JSON Lines, or .npy/.npz with the points on the first axis; one "
                          "output row per point.")(f)
    return f


def is_batch(batch_file, sweeps):
    return batch_file is not None or bool(sweeps)


def run_batch(graph, bindings, *, batch_file, sweeps, fmt, out_file, keep_going, quiet,
              grad, wrt=None, upstream=None, output=None, dtype="float64",
              chunk_size=65536):
    """A batch or a sweep from start to end: read, run chunk by chunk, write, report."""
    from . import batching
    from .errors import BindingError

    if batch_file is not None and sweeps:
        raise click.UsageError("give --batch FILE or --sweep, not both")
    ctx = click.get_current_context(silent=True)
    if ctx is not None and fmt == "table":
        source = ctx.get_parameter_source("fmt")
        if source is not None and source.name == "DEFAULT":
            fmt = "csv"  # a batch is for programs first: CSV unless a table is asked for
    fmt = {"table": "table", "json": "jsonl", "jsonl": "jsonl", "csv": "csv",
           "npz": "npz"}.get(fmt)
    if fmt is None:
        raise click.UsageError("with --batch or --sweep, --format is csv, json (JSON Lines), "
                               "jsonl, npz or table")
    if fmt == "npz" and out_file is None and _stdout_is_terminal():
        raise click.UsageError("--format npz writes binary data: give -o FILE.npz or "
                               "redirect stdout")
    bad_rows = []

    def on_bad(row):
        bad_rows.append(row)
        if len(bad_rows) <= 100:
            click.echo(f"error: {row} (left out)", err=True)

    variables = graph.variables
    if sweeps:
        points = batching.sweep_points(sweeps, chunk_size)
        source = "the sweep"
    else:
        points = batching.open_points(batch_file, set(variables), chunk_size,
                                      keep_going=keep_going, on_bad=on_bad)
        source = batch_file if batch_file != "-" else "stdin"
    try:
        header = getattr(points, "header", None)
        notes = []
        if header is not None:
            for c in header:
                if c not in variables:
                    notes.append(f"column {c} of {source} is not used: the program has no "
                                 f"variable {c}")
        if getattr(points, "single", False) and not points.structured:
            free = [n for n in variables if n not in bindings]
            if len(free) != 1:
                raise BindingError(
                    f"--batch {batch_file}: a .npy file holds one array, so the program needs "
                    f"exactly one variable not bound on the command line (it has "
                    f"{len(free)}: {', '.join(free) or 'none'}); use an .npz with one array "
                    f"per variable, or a structured array")
            points.bind_single(free[0])
        kernel = batching.Kernel(graph, points.names, bindings, wrt=wrt, grad=grad,
                                 upstream=upstream, output=output, dtype=dtype, source=source)
        kernel.warnings[:0] = notes
        warn(dict.fromkeys(kernel.warnings))
        cols = batching.column_names(kernel.output_name, kernel.wrt if grad else [])
        if fmt == "table":
            with _progress(points, quiet) as tick:
                table = _batch_table(points, kernel, cols, tick,
                                     inputs=[n for n in points.names if n not in cols]
                                     if sweeps else [])
            items = [table] if table is not None else []
            if out_file is None:
                from .render import layout

                layout.show(items)
            else:
                with _output(out_file, spool=False) as stream:
                    from .render import layout

                    stream.write(layout.plain(items).encode("utf-8"))
        else:
            with _output(out_file, spool=not keep_going and out_file is None) as stream, \
                    _progress(points, quiet) as tick:
                w = batching.writer_for(fmt, stream, kernel.output_name, kernel.wrt, grad,
                                        inputs=points.names if sweeps else ())
                for chunk, _ in points:
                    w.write(kernel(chunk), chunk)
                    stream.flush()  # each chunk out as soon as it is made
                    tick(kernel.rows)
                w.close()
        late = [m for m in kernel.run_warnings() if m not in kernel.warnings]
        warn(late)
        if grad and kernel.seed_is_ones:
            note(f"note: {kernel.output_name} is not a scalar at each point: the reverse pass "
                 f"starts from ones, so these are the gradients of sum({kernel.output_name})")
    finally:
        points.close()
    if bad_rows:
        more = f" ({len(bad_rows) - 100:,} more not shown)" if len(bad_rows) > 100 else ""
        fail(f"{len(bad_rows):,} bad row{'s' * (len(bad_rows) != 1)} left out{more}; the "
             f"other {kernel.rows:,} were written")


def _batch_table(points, kernel, cols, tick, inputs=()):
    """The points as a table for people (at most 10,000 of them)."""
    import numpy as np

    from .batching import _header_names
    from .render import layout

    table = None
    for chunk, _ in points:
        res = kernel(chunk)
        if table is None:
            table = layout.Table(*[(n, "right") for n in inputs + _header_names(res, cols)])
        if kernel.rows > 10000:
            raise click.UsageError("--format table shows at most 10,000 points; use csv, "
                                   "jsonl or npz for more")
        mat = np.concatenate([np.reshape(chunk[n], (len(res.value), -1)) for n in inputs]
                             + [res[c].reshape(len(res.value), -1) for c in cols], axis=1)
        for row in mat.tolist():
            table.add_row(*[f"{v:.6g}" for v in row])
        tick(kernel.rows)
    return table


def _stdout_is_terminal():
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


import contextlib  # noqa: E402


@contextlib.contextmanager
def _output(path, spool):
    """A binary stream for a batch's output: ``-o FILE`` written to a temporary file beside
    it and renamed over it at the end (all or nothing); stdout spooled until the end when
    ``spool`` (a bad row then leaves stdout empty), else written as it comes."""
    import tempfile

    if path is not None and path != "-":
        target = os.path.abspath(path)
        folder = os.path.dirname(target)
        if os.path.isdir(target):
            raise _write_error(path, "it is a directory")
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp",
                                       dir=folder)
        except OSError as e:
            raise _write_error(path, os.strerror(e.errno) if e.errno else str(e)) from None
        done = False
        try:
            with _terminated_is_interrupt(), os.fdopen(fd, "wb") as f:
                yield f
                f.flush()
            try:
                mode = os.stat(target).st_mode & 0o7777 if os.path.exists(target) else None
                os.chmod(tmp, mode if mode is not None else 0o666 & ~_umask())
                os.replace(tmp, target)
            except OSError as e:
                raise _write_error(path, os.strerror(e.errno) if e.errno else str(e)) \
                    from None
            done = True
        finally:
            if not done:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        return
    out = _stdout_bytes()
    if not spool:
        yield out
        out.flush()
        return
    with tempfile.SpooledTemporaryFile(max_size=4 << 20) as buf:
        yield buf
        buf.seek(0)
        import shutil

        sys.stdout.flush()
        shutil.copyfileobj(buf, out, 1 << 20)
        out.flush()


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_error(path, reason):
    from .errors import BindingError

    return BindingError(f"-o {path}: cannot write it: {reason}")


@contextlib.contextmanager
def _terminated_is_interrupt():
    """SIGTERM while an -o file is being written unwinds like Ctrl-C, so the temporary file
    is removed (the default action would kill the process and leave it behind)."""
    import signal

    def on_term(signum, frame):
        raise KeyboardInterrupt

    try:
        old = signal.signal(signal.SIGTERM, on_term)
    except (ValueError, OSError):  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _stdout_bytes():
    stream = sys.stdout
    sys.stdout.flush()
    raw = getattr(stream, "buffer", None)
    if raw is not None:
        return raw
    return _TextAsBytes(stream)


class _TextAsBytes:
    """A text stream (a test harness's stdout) taking the bytes a batch writes."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, data):
        self.stream.write(bytes(data).decode("utf-8"))
        return len(data)

    def flush(self):
        self.stream.flush()

    def seekable(self):
        return False

    def tell(self):
        raise OSError("not seekable")


@contextlib.contextmanager
def _progress(points, quiet):
    """A Rich progress bar on stderr for a long batch, only when stderr is a terminal (never
    in a pipe or a file, with NO_COLOR or with --quiet); it appears after a second."""
    import time

    if quiet or os.environ.get("NO_COLOR") or not _stderr_is_terminal():
        yield lambda rows: None
        return
    start = time.monotonic()
    state = {"bar": None, "task": None}

    def tick(rows):
        if state["bar"] is None:
            if time.monotonic() - start < 1.0:
                return
            from rich.console import Console
            from rich.progress import (BarColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            bar = Progress(TextColumn("batch"), BarColumn(), TextColumn("{task.description}"),
                           TimeElapsedColumn(), TimeRemainingColumn(),
                           console=Console(file=sys.stderr), transient=True)
            bar.start()
            state["bar"] = bar
            state["task"] = bar.add_task("", total=points.total)
        bar = state["bar"]
        bar.update(state["task"], completed=points.done or 0,
                   description=f"{rows:,} points")

    try:
        yield tick
    finally:
        if state["bar"] is not None:
            state["bar"].stop()


def _stderr_is_terminal():
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
