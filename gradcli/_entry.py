"""The ``gradcli`` console script: the first code that runs.

What a shell can rely on, whatever happens around the command itself:

- Ctrl-C exits 130 quietly, from the first instruction on: while modules import (nothing to
  clean up yet) the process ends at once; from then on a ``KeyboardInterrupt`` unwinds and
  the command's own handlers clean up (an ``-o`` file half written is removed).
- Output that cannot be written (``> /dev/full``, a closed stdout) is one ``error:`` line and
  exit 2; a reader that leaves early (``| head -c 10``) ends the run with 141, as a tool
  killed by SIGPIPE does, and nothing on stderr.
- No exit code but 0, 1 (a check's mismatch), 2 (bad input), 130 and 141.
"""
import signal as _signal  # already loaded by the interpreter: costs nothing


def _interrupted(signum, frame):  # Ctrl-C before the command runs: nothing to clean up
    import os

    os._exit(128 + signum)


try:
    _signal.signal(_signal.SIGINT, _interrupted)
except (ValueError, OSError):  # not the main thread (embedded use): leave signals alone
    pass


def main(argv=None):
    """Run the ``gradcli`` group on ``argv`` (default: the command line) and exit."""
    import sys

    code = _run(argv)
    sys.exit(code)


def _run(argv):
    import sys

    if sys.stdout is None:  # started with stdout closed (>&-): writing it is an error
        sys.stdout = _ClosedStream("standard output")
    else:
        sys.stdout = _whole_writes(sys.stdout)
    try:
        import click

        from .cli import main as group
    except KeyboardInterrupt:
        return 130
    _signal.signal(_signal.SIGINT, _signal.default_int_handler)
    try:
        try:
            rv = group.main(args=argv, prog_name="gradcli", standalone_mode=False)
            code = rv if type(rv) is int else 0
        except click.exceptions.Abort:  # Ctrl-C while click parses or prompts
            _newline_on_stderr()
            code = 130
        except click.exceptions.ClickException as e:
            e.show()
            code = e.exit_code
        except SystemExit as e:
            code = _exit_code(e.code)
        _flush(sys.stdout)
    except KeyboardInterrupt:
        _newline_on_stderr()
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return 141
    except OSError as e:
        _silence_stdout()
        _error(f"cannot write the output: {_reason(e)}")
        return 2
    return code if code in (0, 1, 2, 130, 141) else 2


def _exit_code(code):
    if code is None:
        return 0
    if type(code) is int:
        return code
    _error(str(code))  # sys.exit("message"): a message and a failure
    return 2


def _flush(stream):
    """Flush now, so a write error is reported here and not at interpreter exit."""
    if stream is not None and not getattr(stream, "closed", False):
        stream.flush()


def _silence_stdout():
    """Point fd 1 at /dev/null so the interpreter's last flush cannot fail again."""
    import os
    import sys

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    except OSError:
        pass
    if sys.stdout is not None and not isinstance(sys.stdout, _ClosedStream):
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass


def _reason(e):
    import errno
    import os

    if e.errno == errno.EBADF:
        return "standard output is closed"
    return os.strerror(e.errno) if e.errno else (str(e) or type(e).__name__)


def _error(message):
    import sys

    try:
        if sys.stderr is not None:
            sys.stderr.write(f"error: {message}\n")
            sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _newline_on_stderr():
    import sys

    try:
        if sys.stderr is not None:
            sys.stderr.write("\n")
            sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _whole_writes(stream):
    """``stream`` (fd 1, not a terminal) rewrapped so that every write is written whole.

    A write of 40 MB into a pipe whose reader leaves after 10 bytes returns early from the
    kernel with a partial count; Python's buffered writer takes that as done and drops the
    rest without an error, so ``| head -c 10`` would exit 0 with the output cut.  Writing
    in a loop until every byte is out makes the next write fail with EPIPE, as it must.
    """
    import io
    import os

    try:
        if stream is not __import__("sys").__stdout__ or stream.fileno() != 1 \
                or os.isatty(1):
            return stream
        stream.flush()
        wrapper = io.TextIOWrapper(io.BufferedWriter(_WholeWriter(1), 1 << 16),
                                   encoding=stream.encoding, errors=stream.errors,
                                   line_buffering=False, write_through=False)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return stream
    return wrapper


def _make_whole_writer():
    import io
    import os

    class WholeWriter(io.RawIOBase):
        """fd 1 as a raw stream whose ``write`` writes every byte or raises."""

        def __init__(self, fd):
            super().__init__()
            self._fd = fd

        def writable(self):
            return True

        def fileno(self):
            return self._fd

        def isatty(self):
            return False

        def close(self):  # fd 1 belongs to the process, not to this object
            self.flush()
            io.RawIOBase.close(self)

        def write(self, data):
            view = memoryview(data).cast("B")
            done, total = 0, len(view)
            while done < total:
                try:
                    done += os.write(self._fd, view[done:done + (1 << 24)])
                except BlockingIOError:  # a non-blocking stdout: wait until it drains
                    import select

                    select.select([], [self._fd], [])
            return total

    return WholeWriter


_WholeWriter = _make_whole_writer()


class _ClosedStream:
    """Stands for a standard stream that was closed when gradcli started: a write fails
    with EBADF, which the commands report as one error line."""

    encoding = "utf-8"
    errors = "strict"

    def __init__(self, what):
        self.what = what

    def _fail(self, *args, **kwargs):
        import errno

        raise OSError(errno.EBADF, f"{self.what} is closed")

    write = writelines = _fail

    def flush(self):
        pass

    def isatty(self):
        return False

    def fileno(self):
        self._fail()

    def writable(self):
        return True

    closed = False
