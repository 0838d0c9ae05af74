"""Fuzz: random programs with random bindings through eval, grad and check.

Whatever the input, gradcli must answer with exit 0 (1 only for a check's mismatch) and
well-formed output, or exit 2 with one ``error:`` line: never a traceback, an internal
error, another exit code, a hang, or JSON/CSV that a program cannot read.  The inputs come
from a seeded generator (``GRADCLI_FUZZ_SEED`` and ``GRADCLI_FUZZ_N`` change the seed and the
count), so a failure names the exact input that caused it and reproduces.

    GRADCLI_FUZZ_N=20000 python -m pytest tests/test_fuzz.py -q -s   # a longer campaign
"""
import csv
import io
import json
import os
import random
import re
import signal
import time

from conftest import cli

NAMES = ["x", "y", "z", "W", "b", "a1", "θ", "e", "pi", "t_"]
UNARY = ["exp", "log", "sqrt", "sin", "cos", "tan", "tanh", "sigmoid", "relu", "abs", "softplus",
         "log1p", "expm1", "square", "reciprocal", "erf", "sign", "floor", "round", "gelu",
         "silu", "mish", "relu6", "hardtanh", "asin", "acos", "atan", "sinh", "cosh", "sum",
         "mean", "max", "min", "prod", "var", "std", "norm", "softmax", "log_softmax",
         "logsumexp", "transpose", "flatten", "det", "inv", "trace", "diag", "tril", "triu",
         "cumsum", "cumprod", "nosuchop"]
BINARY = ["max", "min", "pow", "atan2", "dot", "outer", "solve", "stack", "concat", "where"]
INFIX = ["+", "-", "*", "/", "**", "^", "@", "<", ">=", "==", "!="]
ODD = ["", "(", ")", "[", "]", ",", ";", "=", "\n", "#", "..", "1e999", "-", "**", "\x00",
       "é", "٣", "𝑥", "\r", "\t", "\ufeff", "'", '"', "None", "::", ":", "sum(x, 7)",
       "reshape(x, (2, -1))", "einsum(\"ij,j->i\", W, x)", "x[0]", "x[1:]", "x[:, None]",
       "x[...]", "W[1, 2]", "x[99]", "keepdims=true", "axis=", "gelu(x, approximate=\"tanh\")"]


def expr(r, depth=0):
    roll = r.random()
    if depth > 4 or roll < 0.3:
        return r.choice(NAMES) if r.random() < 0.7 else r.choice(
            ["1", "2.5", ".5", "1e-3", "0", "-1", "3", "1e308", "true", "false", "[1, 2]",
             "[[1, 0], [0, 1]]", "[x, y]"])
    if roll < 0.55:
        return f"{expr(r, depth + 1)} {r.choice(INFIX)} {expr(r, depth + 1)}"
    if roll < 0.8:
        return f"{r.choice(UNARY)}({expr(r, depth + 1)})"
    if roll < 0.9:
        return f"{r.choice(BINARY)}({expr(r, depth + 1)}, {expr(r, depth + 1)})"
    return f"({expr(r, depth + 1)})" if r.random() < 0.5 else f"-{expr(r, depth + 1)}"


def program(r):
    lines = []
    for _ in range(r.randint(1, 3)):
        e = expr(r)
        lines.append(f"{r.choice(NAMES + ['f', 'g', 'x'])} = {e}" if r.random() < 0.5 else e)
    text = r.choice(["\n", "; "]).join(lines)
    if r.random() < 0.35:  # mutate: insert, delete or replace a piece
        pos = r.randint(0, len(text))
        what = r.random()
        if what < 0.4:
            text = text[:pos] + r.choice(ODD) + text[pos:]
        elif what < 0.7:
            text = text[:pos] + text[pos + r.randint(1, 4):]
        else:
            text = text[:pos] + chr(r.randint(1, 0x2FFF)) + text[pos + 1:]
    return text


def value(r):
    roll = r.random()
    if roll < 0.35:
        return r.choice(["1", "-2", "0.5", "0", "3", "1e400", "1e-400", "nan", "inf", "-inf",
                         "1e308", "2.5e-3", "abc", "", "1,2", "[]", "[[]]", "@nope.npy"])
    if roll < 0.7:
        n = r.randint(0, 4)
        items = (r.choice(["1", "2", "-1", "0.5", "nan", "0"]) for _ in range(n))
        return "[" + ", ".join(items) + "]"
    if roll < 0.85:
        rows, cols = r.randint(1, 3), r.randint(1, 3)
        ragged = r.random() < 0.2
        return "[" + ", ".join("[" + ", ".join(str(r.randint(-3, 3)) for _ in range(
            cols + (ragged and i == 0))) + "]" for i in range(rows)) + "]"
    return r.choice(["[" * 40 + "1" + "]" * 40, "[1, [2]]", "[true, 1]", '["a"]', "{}",
                     "[1e999]", "[" + ",".join(["1"] * 300) + "]"])


def sensible(r):
    return r.choice(["1", "-2", "0.5", "3", "0.25", "[1, 2]", "[0.5, -1]", "[[1, 2], [3, 4]]",
                     "[[2, 0], [1, 3]]"])


def bindings(r, text):
    """Mostly sensible values for the names the program uses, some hostile ones, extras."""
    used = [n for n in NAMES if re.search(rf"(?<!\w){n}(?!\w)", text)]
    out = [f"{n}={sensible(r) if r.random() < 0.85 else value(r)}" for n in used
           if r.random() < 0.95]
    if r.random() < 0.3:  # one more, often not used, sometimes a name bound twice
        out.append(f"{r.choice(NAMES)}={value(r)}")
    if r.random() < 0.03:
        out.append("noequals")
    return out


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


def strict_json(text):
    def no_constants(name):
        raise ValueError(f"JSON has no {name}")

    return json.loads(text, parse_constant=no_constants)


def one(args, counts, failures, limit=20.0):
    """Run one input; classify what happened (a failure is described and kept)."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        r = cli(*args)
    except Hang:
        counts["hangs"] += 1
        failures.append(("hang", args, ""))
        return
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    counts["inputs"] += 1
    command = args[0]
    fmt = args[args.index("--format") + 1] if "--format" in args else "table"
    if r.exception is not None or "Traceback" in r.err or "Traceback" in r.out \
            or "internal error" in r.err:
        counts["tracebacks"] += 1
        failures.append(("traceback", args, repr(r.exception) + r.err[-500:]))
        return
    allowed = (0, 1, 2) if command == "check" else (0, 2)
    if r.code not in allowed:
        counts["wrong exit codes"] += 1
        failures.append((f"exit {r.code}", args, r.err[-500:]))
        return
    if r.code == 2:
        lines = r.err.splitlines()
        if r.out or not lines or sum(line.startswith("error") for line in lines) != 1 \
                or not any(line.startswith("error: ") for line in lines):
            counts["corrupted outputs"] += 1
            failures.append(("bad error", args, r.out[:300] + "|" + r.err[:500]))
        else:
            counts["errors"] += 1
        return
    try:
        if fmt == "json":
            strict_json(r.out)
        elif fmt == "csv":
            rows = list(csv.reader(io.StringIO(r.out)))
            assert rows and len({len(row) for row in rows}) == 1, "ragged CSV"
        else:
            assert r.out.strip(), "empty table"
        assert "\x1b" not in r.out or fmt == "table", "colour in machine output"
    except (ValueError, AssertionError) as e:
        counts["corrupted outputs"] += 1
        failures.append(("corrupted", args, f"{e}: {r.out[:300]}"))
        return
    counts["ok"] += 1


def campaign(seed, n, budget=None):
    r = random.Random(seed)
    counts = dict.fromkeys(["inputs", "ok", "errors", "tracebacks", "hangs",
                            "wrong exit codes", "corrupted outputs"], 0)
    failures = []
    start = time.perf_counter()
    for _ in range(n):
        command = r.choice(["eval", "eval", "grad", "grad", "check"])
        fmt = r.choice(["json", "csv", "table"])
        if r.random() < 0.4:  # a well-formed program at scalar points: the success paths
            text = expr(r)
            args = [command, "--format", fmt, "--", text] + [
                f"{n}={r.choice(['0.5', '1.5', '-0.7', '2', '0'])}" for n in NAMES
                if re.search(rf"(?<!\w){n}(?!\w)", text) and n not in ("pi", "e")]
        else:
            text = program(r)
            args = [command, "--format", fmt, "--", text] + bindings(r, text)
        if command == "check" and r.random() < 0.3:
            args[1:1] = ["--fast"]
        one(args, counts, failures)
        if budget is not None and time.perf_counter() - start > budget:
            break
    return counts, failures


def test_fuzz_random_programs_and_bindings():
    seed = int(os.environ.get("GRADCLI_FUZZ_SEED", "17"))
    n = int(os.environ.get("GRADCLI_FUZZ_N", "400"))
    counts, failures = campaign(seed, n)
    print(f"\nfuzz (seed {seed}): {counts}")
    assert counts["inputs"] >= min(n, 100)
    assert counts["ok"] > n // 20 and counts["errors"] > n // 20  # both paths exercised
    assert not failures, "\n".join(f"{kind}: gradcli {' '.join(map(repr, args))}\n  {detail}"
                                   for kind, args, detail in failures[:10])


def test_fuzz_sample_through_the_console_script(gradcli_exe):
    """A few of the same inputs through the real console script: the same exit code and
    the same stdout as in process (so the entry point adds nothing and loses nothing)."""
    from conftest import run

    r = random.Random(int(os.environ.get("GRADCLI_FUZZ_SEED", "17")) + 1)
    tried = 0
    while tried < 6:
        text = expr(r) if tried % 2 else program(r)
        args = [r.choice(["eval", "grad"]), "--format", "json", "--", text] + bindings(r, text)
        if "\x00" in " ".join(args):  # a command line cannot hold NUL
            continue
        tried += 1
        inproc = cli(*args)
        real = run(gradcli_exe, *args)
        assert real.returncode == inproc.code, (args, real.stderr, inproc.err)
        assert real.stdout == inproc.out, args
        assert "Traceback" not in real.stderr
        if real.returncode == 0:
            strict_json(real.stdout)
