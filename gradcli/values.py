"""Values in and out: NAME=VALUE bindings, values files, and JSON-safe output values.

A value is a number (``1``, ``-3``, ``2.5e-3``, ``nan``, ``inf``), a JSON nested list
(``[[1, 2], [3, 4]]``; ragged lists are an error) or ``@FILE`` (.npy without pickles, .csv,
.json, anything else as whitespace-separated text).
"""
from __future__ import annotations

import json
import math
import os
import re
import warnings

import numpy as np

from .errors import BindingError

__all__ = ["parse_binding", "parse_value", "load_values_file", "to_json", "as_array"]

_NAME = re.compile(r"(?!\d)\w+")
# nan / inf written bare inside a JSON list, as NumPy and Python print them
_NONFINITE = re.compile(r"(?<![\w.\"])(-?)(nan|inf(?:inity)?)(?![\w\"])", re.IGNORECASE)


def parse_binding(arg):
    """``"W=[[1,2],[3,4]]"`` -> ``("W", array)``."""
    name, eq, text = arg.partition("=")
    name = name.strip()
    if not eq:
        raise BindingError(f"expected NAME=VALUE, got {arg!r}")
    if not _NAME.fullmatch(name):
        raise BindingError(f"bad binding {arg!r}: {name!r} is not a variable name")
    return name, parse_value(text, name)


def parse_value(text, name="value"):
    """A value written on the command line (see the module's docstring)."""
    text = text.strip()
    if text.startswith("@"):
        return load_file(text[1:], name)
    try:
        return np.asarray(float(text))
    except ValueError:
        pass
    if text.startswith("["):
        return _from_json_text(text, name)
    raise BindingError(f"bad value for {name}: {text!r} is not a number, a JSON list "
                       f"such as [1, 2] or @FILE")


def _from_json_text(text, name):
    return from_nested(_json(text, f"bad value for {name}"), name)


def _json(text, what):
    """JSON text (with bare nan/inf allowed) -> Python objects; errors say ``what``."""
    try:
        # integers as floats: a 400-digit integer is inf, not an OverflowError later
        return json.loads(_NONFINITE.sub(_json_nonfinite, text), parse_int=float)
    except json.JSONDecodeError as e:
        raise BindingError(f"{what}: {e.msg} at line {e.lineno}, column {e.colno} "
                           f"of {_clip(text)}") from None
    except RecursionError:
        raise BindingError(f"{what}: lists nested too deeply") from None


def _json_nonfinite(m):
    sign, word = m.group(1), m.group(2).lower()
    return sign + ("NaN" if word == "nan" else "Infinity")


def _clip(text, n=40):
    return repr(text if len(text) <= n else text[:n - 1] + "…")


def from_nested(obj, name):
    """A number or a rectangular nested list of numbers -> array; says what is wrong if not."""
    level, shape = [obj], []
    while True:
        lists = [isinstance(v, list) for v in level]
        if not any(lists):
            break
        if not all(lists):
            raise BindingError(f"ragged list for {name}: mixes numbers and lists "
                               f"at depth {len(shape) + 1}")
        lengths = sorted({len(v) for v in level})
        if len(lengths) > 1:
            raise BindingError(f"ragged list for {name}: rows of lengths {lengths[0]} "
                               f"and {lengths[-1]} at depth {len(shape) + 1}")
        shape.append(lengths[0])
        level = [x for v in level for x in v]
    for v in level:
        if isinstance(v, str) and v.strip().lower() in ("nan", "inf", "+inf", "-inf",
                                                        "infinity", "-infinity"):
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise BindingError(f"bad value for {name}: {json.dumps(v)} is not a number")
    if len(shape) > 32:
        raise BindingError(f"bad value for {name}: lists nested {len(shape)} deep; "
                           f"arrays have at most 32 axes here")
    return np.array(obj, dtype=np.float64).reshape(shape)


def load_file(path, name="value"):
    """Read one array from a file, by its extension."""
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".npy":
            value = np.load(path, allow_pickle=False)
        elif ext == ".json":
            with open(path, encoding="utf-8") as f:
                return _from_json_text(f.read().strip(), name)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # "input contained no data" is an error here
                value = np.loadtxt(path, delimiter="," if ext == ".csv" else None,
                                   dtype=np.float64, ndmin=0)
    except BindingError:
        raise
    except FileNotFoundError:
        raise BindingError(f"cannot read {name}=@{path}: no such file") from None
    except (OSError, ValueError, UserWarning) as e:
        raise BindingError(f"cannot read {name}=@{path}: {_first_line(e)}") from None
    return as_array(value, name)


def load_values_file(path):
    """``--values FILE``: a JSON object of NAME: VALUE, or a NumPy .npz archive."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".json", ".npz"):
        raise BindingError(f"--values {path}: give a .json file holding an object "
                           f"{{NAME: VALUE}}, or a NumPy .npz archive")
    try:
        if ext == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                return {k: as_array(archive[k], k) for k in archive.files}
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise BindingError(f"cannot read --values {path}: no such file") from None
    except (OSError, ValueError) as e:
        raise BindingError(f"cannot read --values {path}: {_first_line(e)}") from None
    obj = _json(text, f"cannot read --values {path}")
    if not isinstance(obj, dict):
        raise BindingError(f"--values {path} must hold a JSON object of NAME: VALUE")
    out = {}
    for k, v in obj.items():
        if not _NAME.fullmatch(k):
            raise BindingError(f"--values {path}: {k!r} is not a variable name")
        out[k] = (parse_value(v, k) if isinstance(v, str) and v.startswith("@")
                  else from_nested(v, k))
    return out


def as_array(value, name="value"):
    """Any binding (number, list, array) -> a float array; complex and text are refused."""
    try:
        arr = np.asarray(value)
    except ValueError as e:
        raise BindingError(f"bad value for {name}: {_first_line(e)}") from None
    if arr.dtype.kind not in "biuf":
        if arr.dtype.kind == "O" and isinstance(value, (list, tuple)):
            return from_nested(list(value), name)
        raise BindingError(f"bad value for {name}: {arr.dtype} values are not real numbers")
    return arr


def _first_line(e):
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


_NONFINITE_TEXT = {math.inf: "inf", -math.inf: "-inf"}


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
