"""Reading the files a user names: program files, ``--values`` files, ``NAME=@FILE``.

Only a regular file (or ``-``, standard input) is read: a device (``/dev/zero``), a FIFO
(which would block for ever with no writer), a socket or a directory is refused before it is
opened, and a symlink counts as what it points to.  At most :func:`max_bytes` are read
(``GRADCLI_MAX_BYTES`` changes the limit); a file that says it is smaller and then keeps
going (``/proc``) is stopped there too.  Text is UTF-8; a byte-order mark at the start is
dropped, and a lone carriage return (an old Mac line end) is a line end, in files and on
stdin alike, as Python's universal newlines read it.
"""
from __future__ import annotations

import os
import stat
import sys

from .errors import BindingError, clip

__all__ = ["read_program", "read_text", "read_bytes", "max_bytes", "MAX_BYTES"]

#: The default cap on any one file (or stdin): 1 GiB.
MAX_BYTES = 1 << 30
#: The cap on a program's text: no program is this long, and a parse of it would take hours.
MAX_PROGRAM_BYTES = 64 << 20
LIMIT_HINT = "set GRADCLI_MAX_BYTES to raise the limit"

_KINDS = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISDIR, "a directory"))


def max_bytes():
    """The most gradcli reads from one file: ``GRADCLI_MAX_BYTES``, else 1 GiB."""
    raw = os.environ.get("GRADCLI_MAX_BYTES", "").strip()
    if raw:
        try:
            n = int(float(raw))
        except ValueError:
            n = -1
        if n <= 0:
            raise BindingError(f"GRADCLI_MAX_BYTES={clip(raw, 40)}: give a number of bytes, "
                               f"such as 2e9")
        return n
    return MAX_BYTES


def extension(path):
    """The lower-case extension of ``path`` (``.npy``), ``""`` for ``-`` and bare names."""
    return os.path.splitext(path)[1].lower() if path != "-" else ""


def exists(path):
    return path == "-" or os.path.lexists(path)


def size_text(n):
    """``3.2 GB``: a number of bytes for people (powers of 1000, as disks are sold)."""
    if n < 1000:
        return f"{n} bytes"
    for k, unit in enumerate(("KB", "MB", "GB", "TB", "PB"), 1):
        if n < 1000 ** (k + 1) or unit == "PB":
            return f"{n / 1000 ** k:.3g} {unit}" if n < 1000 ** 6 else f"{n:.3g} bytes"


def _too_big(what, size, limit):
    return BindingError(f"{what}: the file is {'over ' if size is None else ''}"
                        f"{size_text(limit if size is None else size)}; gradcli reads at most "
                        f"{size_text(limit)} from one file ({LIMIT_HINT})")


def read_bytes(path, what, limit=None):
    """The bytes of a regular file (or of stdin for ``-``), at most ``limit`` of them."""
    limit = max_bytes() if limit is None else limit
    if path == "-":
        stream = getattr(sys.stdin, "buffer", None)
        if sys.stdin is None or sys.stdin.closed or stream is None:
            raise BindingError(f"{what}: no standard input to read")
        return _read_capped(stream, what, limit)
    try:
        st = os.stat(path)  # follows symlinks: a link to /dev/zero is a device
    except FileNotFoundError:
        raise BindingError(f"{what}: no such file") from None
    except OSError as e:
        raise BindingError(f"{what}: cannot read it: {os.strerror(e.errno)}") from None
    _regular(st, what)
    if st.st_size > limit:
        raise _too_big(what, st.st_size, limit)
    try:
        # O_NONBLOCK: if the path was swapped for a FIFO since the stat, open does not wait
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
                     | getattr(os, "O_BINARY", 0))
    except OSError as e:
        raise BindingError(f"{what}: cannot read it: {os.strerror(e.errno)}") from None
    try:
        _regular(os.fstat(fd), what)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as f:
            return _read_capped(f, what, limit)
    except OSError as e:
        raise BindingError(f"{what}: cannot read it: {os.strerror(e.errno)}") from None
    finally:
        os.close(fd)


def _regular(st, what):
    if not stat.S_ISREG(st.st_mode):
        kind = next((k for test, k in _KINDS if test(st.st_mode)), "not a regular file")
        raise BindingError(f"{what}: it is {kind}, not a regular file; gradcli reads "
                           f"regular files (or '-' for standard input)")


def _read_capped(f, what, limit):
    buf = bytearray()
    while len(buf) <= limit:
        chunk = f.read(min(1 << 24, limit + 1 - len(buf)))
        if not chunk:
            return buf
        buf += chunk
    raise _too_big(what, None, limit)


def decode(data, what):
    """UTF-8 text of ``data``: a byte-order mark dropped, line ends made ``\\n``."""
    if data[:3] == b"\xef\xbb\xbf":
        data = data[3:]
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise BindingError(f"{what}: not UTF-8 text (byte 0x{data[e.start]:02x} at line "
                           f"{line}, byte {e.start + 1})") from None
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def read_text(path, what, limit=None):
    """A regular file's (or stdin's) text: see :func:`decode`."""
    return decode(read_bytes(path, what, limit), what)


def read_program(path):
    """The text of a program file, or of stdin for ``-``."""
    if path == "-":
        if sys.stdin is None or sys.stdin.closed:
            raise BindingError("-f -: no standard input to read the program from")
        if getattr(sys.stdin, "buffer", None) is None:  # a text-only stream (tests, IDEs)
            text = sys.stdin.read(MAX_PROGRAM_BYTES + 1)
            if len(text) > MAX_PROGRAM_BYTES:
                raise _too_big("-f -", None, MAX_PROGRAM_BYTES)
            return decode(text.encode("utf-8", "surrogatepass"), "-f -")
        return read_text("-", "-f -", min(max_bytes(), MAX_PROGRAM_BYTES))
    return read_text(path, f"the program file {clip(path, 60)}",
                     min(max_bytes(), MAX_PROGRAM_BYTES))


def write_atomic(path, write):
    """Write ``path`` all at once: ``write(f)`` fills a temporary file beside it (opened in
    binary), which then replaces ``path``.  On any failure, Ctrl-C included, the temporary
    file goes and ``path`` is as it was: a reader sees the old file or the new one, never half
    of one.  An OSError (a folder that does not exist, a full disk) propagates."""
    import tempfile

    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".gradcli-", suffix=os.path.splitext(path)[1] or ".tmp",
                               dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # as open() would have made it, not mkstemp's 0600
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise

