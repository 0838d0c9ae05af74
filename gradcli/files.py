"""Reading the files a user names: program files and stdin."""
from __future__ import annotations

import sys

from .errors import BindingError


def read_program(path):
    """The text of a program file, or of stdin for ``-``."""
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
