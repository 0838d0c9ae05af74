"""Values in and out: NAME=VALUE bindings, values files, and JSON-safe output values.

A value is a number (``1``, ``-3``, ``2.5e-3``, ``nan``, ``inf``), a JSON nested list
(``[[1, 2], [3, 4]]``; ragged lists are an error) or ``@FILE``: ``.npy`` (no pickles),
``.csv`` (a header row of names is skipped; ``@data.csv:x`` takes the column named x),
``.json``, anything else as whitespace-separated text.

Files are read defensively (see :mod:`gradcli.files`): only regular files (or ``-``, stdin),
at most :data:`gradcli.files.MAX_BYTES`, and a ``.npy`` header is checked against the
bytes that follow it before anything is allocated.  Every problem is a
:class:`~gradcli.errors.BindingError` naming the file.
"""
from __future__ import annotations

import json
import math
import re
import unicodedata

import numpy as np

from .errors import BindingError, clip, did_you_mean

__all__ = ["parse_binding", "parse_bindings", "parse_value", "load_values_file", "load_file",
           "to_json", "as_array", "from_nested", "Bindings", "MAX_DEPTH", "too_deep"]

#: One limit for nested lists everywhere (bindings, values files, literals in programs).
MAX_DEPTH = 32

_NAME = re.compile(r"(?!\d)\w+")
# nan / inf written bare inside a JSON list, as NumPy and Python print them
_NONFINITE = re.compile(r"(?<![\w.\"])(-?)(nan|inf(?:inity)?)(?![\w\"])", re.IGNORECASE)
_CSV_COLUMN = re.compile(r"(?s)(.+\.csv):([^:/\\]+)", re.IGNORECASE)


def too_deep(what):
    """The one message for lists nested past :data:`MAX_DEPTH`."""
    return (f"{what}: lists nested more than {MAX_DEPTH} deep; an array has at most "
            f"{MAX_DEPTH} axes")


class Bindings(dict):
    """NAME -> array, with the warnings reading them gave (``x=1e400`` became inf) and
    the argument each name came from."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.warnings = list(getattr(args[0], "warnings", ())) if args else []
        self.sources = dict(getattr(args[0], "sources", {})) if args else {}


def normal_name(name):
    """A name as Python compares identifiers: NFKC (so ``𝑥`` is ``x``).  Bindings keep the
    spelling they were given; the engine matches them to variables by this form."""
    return unicodedata.normalize("NFKC", name) if not name.isascii() else name


def parse_binding(arg, warnings=None):
    """``"W=[[1,2],[3,4]]"`` -> ``("W", array)``."""
    name, eq, text = arg.partition("=")
    name = name.strip()
    if not eq:
        raise BindingError(f"expected NAME=VALUE, got {_clip(arg)}")
    if not _NAME.fullmatch(name):
        raise BindingError(f"bad binding {_clip(arg)}: {_clip(name)} is not a variable name")
    return name, parse_value(text, name, warnings)


def parse_bindings(args, base=None):
    """Every ``NAME=VALUE`` of the command line -> :class:`Bindings`.

    ``base`` (from ``--values FILE``) comes first and the command line overrides it; a name
    bound twice on the command line is an error naming both.
    """
    out = Bindings(base or {})
    seen = {}
    for arg in args:
        name, value = parse_binding(arg, out.warnings)
        key = normal_name(name)  # 𝑥 and x are one name, as in Python
        if key in seen:
            raise BindingError(f"{clip(key, 40)} is bound twice: {_clip(seen[key])} and "
                               f"{_clip(arg)}; give each name one value")
        seen[key] = arg
        for old in [b for b in out if b != name and normal_name(b) == key]:
            del out[old]  # the command line overrides --values, however it is spelled
        out[name] = value
        out.sources[name] = arg
    return out


def parse_value(text, name="value", warnings=None):
    """A value written on the command line (see the module's docstring)."""
    text = text.strip()
    if text.startswith("@"):
        return load_file(text[1:], name, warnings)
    try:
        v = float(text)
    except ValueError:
        pass
    else:
        _note_rounding(text, v, name, warnings)
        return np.asarray(v)
    if text.startswith("["):
        return _from_json_text(text, name, warnings)
    raise BindingError(f"bad value for {clip(name, 40)}: {_clip(text)} is not a number, a "
                       f"JSON list such as [1, 2] or @FILE")


_EXTREME = re.compile(r"[eE][+-]?0*[1-9][0-9]{2,}|[0-9]{300,}")
_NONZERO_MANTISSA = re.compile(r"\s*[+-]?[0-9_]*\.?[0-9_]*?[1-9]")


def _note_rounding(text, v, name, warnings):
    """``x=1e400`` is inf and ``1e-400`` is 0 in float64: say so, never silently."""
    if warnings is None:
        return
    if math.isinf(v) and "inf" not in text.lower():
        warnings.append(f"binding {clip(name, 40)}: {_clip(text)} is too large for float64 "
                        f"and becomes {'-' if v < 0 else ''}inf")
    elif v == 0 and _NONZERO_MANTISSA.match(text):
        warnings.append(f"binding {clip(name, 40)}: {_clip(text)} is too small for float64 "
                        f"and becomes 0")


def _from_json_text(text, name, warnings=None):
    return from_nested(_json(text, f"bad value for {clip(name, 40)}", warnings, name), name)


def _json(text, what, warnings=None, name=None):
    """JSON text (with bare nan/inf allowed) -> Python objects; errors say ``what``."""
    rounded = {"inf": 0, "0": 0}

    def number(s):  # integers as floats too: a 400-digit integer is inf, not an error later
        v = float(s)
        if v == 0 or math.isinf(v):
            if math.isinf(v):
                rounded["inf"] += 1
            elif _NONZERO_MANTISSA.match(s):
                rounded["0"] += 1
        return v

    # only a number with a 3-digit exponent or 300 digits can leave float64's range
    hook = number if _EXTREME.search(text) else float
    try:
        obj = json.loads(_NONFINITE.sub(_json_nonfinite, text), parse_int=hook,
                         parse_float=hook, object_pairs_hook=_unique_keys(what))
    except json.JSONDecodeError as e:
        raise BindingError(f"{what}: {e.msg} at line {e.lineno}, column {e.colno} "
                           f"of {_clip(text)}") from None
    except RecursionError:
        raise BindingError(too_deep(what)) from None
    if warnings is not None:
        where = f"binding {clip(name, 40)}" if name else what.replace("cannot read ", "")
        for to, n in rounded.items():
            if n:
                size = "large" if to == "inf" else "small"
                warnings.append(f"{where}: {n} number{'s are' if n > 1 else ' is'} too "
                                f"{size} for float64 and become{'s' * (n == 1)} {to}")
    return obj


def _unique_keys(what):
    def pairs(items):
        seen = {}
        for k, v in items:
            key = normal_name(k) if isinstance(k, str) else k
            if key in seen:
                raise BindingError(f"{what.replace('cannot read ', '')}: {_clip(k)} is given "
                                   f"twice; give each name one value")
            seen[key] = v
        return dict(items)
    return pairs


def _json_nonfinite(m):
    sign, word = m.group(1), m.group(2).lower()
    return sign + ("NaN" if word == "nan" else "Infinity")


def _clip(text, n=40):
    """A short, printable excerpt of text from the user or a file, quoted."""
    text = str(text)
    return repr(text if len(text) <= n else text[:n - 1] + "…")


def from_nested(obj, name):
    """A number or a rectangular nested list of numbers -> array; says what is wrong if not."""
    level, shape = [obj], []
    label = clip(name, 40)
    while True:
        lists = [isinstance(v, list) for v in level]
        if not any(lists):
            break
        if not all(lists):
            raise BindingError(f"ragged list for {label}: mixes numbers and lists "
                               f"at depth {len(shape) + 1}")
        if len(shape) == MAX_DEPTH:
            raise BindingError(too_deep(f"bad value for {label}"))
        lengths = sorted({len(v) for v in level})
        if len(lengths) > 1:
            raise BindingError(f"ragged list for {label}: rows of lengths {lengths[0]} "
                               f"and {lengths[-1]} at depth {len(shape) + 1}")
        shape.append(lengths[0])
        level = [x for v in level for x in v]
    for v in level:
        if isinstance(v, str) and v.strip().lower() in ("nan", "inf", "+inf", "-inf",
                                                        "infinity", "-infinity"):
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise BindingError(f"bad value for {label}: {_clip(json.dumps(v))} is not a number")
    return np.array(obj, dtype=np.float64).reshape(shape)


# ---------------------------------------------------------------- files

def load_file(path, name="value", warnings=None):
    """``NAME=@FILE``: one array from a file, by its extension."""
    from . import files

    m = _CSV_COLUMN.fullmatch(path)
    column = None
    if m and not files.exists(path):
        path, column = m.group(1), m.group(2)
    what = f"{clip(name, 40)}=@{path}"
    ext = files.extension(path)
    if ext == ".npy":
        return read_npy(files.read_bytes(path, what), what)
    if ext == ".npz":
        raise BindingError(f"{what}: an .npz archive holds several arrays; pass it as "
                           f"--values {path}, or bind one array from a .npy file")
    text = files.read_text(path, what)
    if ext == ".json":
        return _from_json_text(text.strip(), name, warnings)
    if ext == ".csv":
        return read_csv(text, what, column)
    return _table(text.splitlines(), what, None, None)


def read_csv(text, what, column=None):
    """A CSV table: a first row that is not all numbers is a header (names, not data)."""
    lines = text.splitlines()
    first = next((k for k, line in enumerate(lines) if line.strip()), None)
    if first is None:
        raise BindingError(f"{what}: the file holds no numbers")
    cells = [c.strip().strip('"').strip("'").strip() for c in lines[first].split(",")]
    header = not all(is_number(c) for c in cells)
    if column is not None:
        if not header:
            raise BindingError(f"{what}:{column}: the file has no header row to find "
                               f"column {clip(column, 40)} in")
        if cells.count(column) != 1:
            if column in cells:
                raise BindingError(f"{what}:{column}: the header names "
                                   f"{clip(column, 40)} {cells.count(column)} times")
            raise BindingError(f"{what}:{clip(column, 40)}: no column named "
                               f"{clip(column, 40)}{did_you_mean(column, cells)} "
                               f"(columns: {', '.join(clip(c, 20) for c in cells[:20])})")
        data = lines[first + 1:]
        return _table(data, f"{what}:{column}", ",", cells.index(column), ncols=len(cells))
    data = lines[first + 1:] if header else lines[first:]
    if header and not any(line.strip() for line in data):
        raise BindingError(f"{what}: the file has a header row and no numbers")
    return _table(data, what, ",", None)


def is_number(cell):
    """Whether a CSV cell reads as a number (a header cell does not)."""
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _table(lines, what, delimiter, usecol, ncols=None):
    import warnings as pywarnings

    lines = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise BindingError(f"{what}: the file holds no numbers")
    try:
        with pywarnings.catch_warnings():
            pywarnings.simplefilter("error")
            value = np.loadtxt(lines, delimiter=delimiter, dtype=np.float64, ndmin=0,
                               usecols=usecol, comments=None)
    except (ValueError, UserWarning, IndexError) as e:
        raise BindingError(f"{what}: {_first_line(e)}") from None
    if usecol is not None:
        value = np.atleast_1d(value)
    return value


def read_npy(data, what):
    """A ``.npy`` file's bytes -> array, its header checked before any allocation."""
    import io

    from numpy.lib import format as npformat

    if not data:
        raise BindingError(f"{what}: the file is empty, not a .npy array")
    if data[:6] != b"\x93NUMPY":
        raise BindingError(f"{what}: not a .npy file (it does not begin with NumPy's "
                           f"magic string)")
    f = io.BytesIO(data)
    try:
        version = npformat.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = npformat.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = npformat.read_array_header_2_0(f)
        elif version == (3, 0):  # as 2.0, with a UTF-8 header (only field names need it)
            shape, fortran, dtype = npformat.read_array_header_2_0(f)
        else:
            raise ValueError(f"format version {version[0]}.{version[1]} is not known")
    except Exception as e:  # a bad magic string, a header that is not a dict, ...
        raise BindingError(f"{what}: not a valid .npy file ({_first_line(e)})") from None
    if dtype.hasobject:
        raise BindingError(f"{what}: the array holds Python objects, which gradcli does not "
                           f"load (pickles are disallowed)")
    if dtype.kind not in "biuf":
        raise BindingError(f"{what}: {dtype} values are not real numbers")
    if len(shape) > MAX_DEPTH:
        raise BindingError(f"{what}: the array has {len(shape)} axes; at most {MAX_DEPTH}")
    count = 1
    for n in shape:
        count *= int(n)
    need = count * dtype.itemsize
    have = len(data) - f.tell()
    if need > have:
        raise BindingError(f"{what}: the header declares shape {tuple(shape)} "
                           f"({count:,} elements, {_bytes(need)}) but only {_bytes(have)} "
                           f"follow: the file is truncated or corrupt")
    arr = np.frombuffer(data, dtype=dtype, count=count, offset=f.tell())
    arr = arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)
    return as_array(arr, what)


def _bytes(n):
    from .files import size_text

    return size_text(n)


def load_values_file(path, warnings=None):
    """``--values FILE``: a JSON object of NAME: VALUE, or a NumPy .npz archive."""
    from . import files

    ext = files.extension(path)
    what = f"--values {path}"
    if ext not in (".json", ".npz"):
        raise BindingError(f"{what}: give a .json file holding an object "
                           f"{{NAME: VALUE}}, or a NumPy .npz archive")
    if ext == ".npz":
        return Bindings(read_npz(files.read_bytes(path, what), what))
    text = files.read_text(path, what)
    out = Bindings()
    obj = _json(text, f"cannot read {what}", out.warnings)
    if not isinstance(obj, dict):
        raise BindingError(f"{what} must hold a JSON object of NAME: VALUE")
    for k, v in obj.items():
        name = k
        if not _NAME.fullmatch(name):
            raise BindingError(f"{what}: {_clip(k)} is not a variable name")
        out[name] = (parse_value(v, name, out.warnings) if isinstance(v, str)
                     and v.startswith("@") else from_nested(v, name))
    return out


def read_npz(data, what):
    """An ``.npz`` archive's bytes -> {name: array}; a corrupt or truncated one is an error."""
    import io
    import zipfile
    import zlib

    from . import files

    if not data:
        raise BindingError(f"{what}: the file is empty, not an .npz archive")
    out = {}
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            members = [m for m in z.infolist() if not m.is_dir()]
            total = sum(m.file_size for m in members)
            if total > files.max_bytes():
                raise BindingError(f"{what}: its arrays unpack to {_bytes(total)}; gradcli "
                                   f"reads at most {_bytes(files.max_bytes())} "
                                   f"({files.LIMIT_HINT})")
            for m in members:
                key = m.filename[:-4] if m.filename.endswith(".npy") else m.filename
                label = f"{what}: member {clip(m.filename, 40)}"
                name = key
                if not _NAME.fullmatch(name):
                    raise BindingError(f"{label}: {_clip(key)} is not a variable name")
                out[name] = read_npy(z.read(m), label)
    except BindingError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError,
            NotImplementedError, RuntimeError) as e:
        raise BindingError(f"{what}: not a valid .npz archive, corrupt or truncated "
                           f"({_first_line(e)})") from None
    return out


# ---------------------------------------------------------------- arrays

def as_array(value, name="value"):
    """Any binding (number, list, array) -> a float array; complex and text are refused."""
    try:
        arr = np.asarray(value)
    except ValueError as e:
        raise BindingError(f"bad value for {clip(name, 40)}: {_first_line(e)}") from None
    if arr.dtype.kind not in "biuf":
        if arr.dtype.kind == "O" and isinstance(value, (list, tuple)):
            return from_nested(list(value), name)
        raise BindingError(f"bad value for {clip(name, 40)}: {arr.dtype} values are not real "
                           f"numbers")
    return arr


def _first_line(e):
    return clip(str(e).strip().splitlines()[0], 200) if str(e).strip() else type(e).__name__


_NONFINITE_TEXT = {math.inf: "inf", -math.inf: "-inf"}


def orjson():
    """The orjson module (JSON in C) when installed and not switched off by
    GRADCLI_NO_ORJSON, else None: the batch and check writers' fast path."""
    import os

    if os.environ.get("GRADCLI_NO_ORJSON"):
        return None
    try:
        import orjson as module
    except ImportError:
        return None
    return module


def to_json(value):
    """An array as JSON: a number for a scalar, nested lists otherwise; nan/inf as strings."""
    if isinstance(value, (float, np.floating)) or (isinstance(value, np.ndarray)
                                                    and value.ndim == 0):
        v = float(value)  # the common case of a scalar node, without array machinery
        if v - v == 0:
            return v
        return "nan" if v != v else _NONFINITE_TEXT[v]
    a = np.asarray(value)
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        obj = a.astype(object)
        obj[np.isnan(a)] = "nan"
        obj[a == np.inf] = "inf"
        obj[a == -np.inf] = "-inf"
        return obj.tolist()
    return a.tolist()
