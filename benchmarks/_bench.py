"""Helpers shared by the benchmark scripts in this folder (not a benchmark itself).

Plain Python: timing, interleaving, min/median and a side-by-side report of ratios against
a floor measured in the same run.  The scripts import it as ``_bench`` (they run as
``python benchmarks/NAME.py``, so this folder is first on ``sys.path``).
"""
from __future__ import annotations

import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def default_gradcli():
    """The ``gradcli`` next to ``sys.executable``, else ``python -m gradcli``."""
    exe = Path(sys.executable).parent / "gradcli"
    if exe.is_file() and os.access(exe, os.X_OK):
        return [str(exe)]
    return [sys.executable, "-m", "gradcli"]


def gradcli_cmd(value):
    """``--gradcli CMD`` (split as a shell would), or the default."""
    return shlex.split(value) if value else default_gradcli()


def show_cmd(cmd, limit=60):
    text = " ".join(shlex.quote(c) for c in cmd)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def timed_run(cmd, *, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True,
              env=None, timeout=600):
    """Run ``cmd`` to completion; return (wall seconds, CompletedProcess)."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL,
                          env=env, timeout=timeout)
    dt = time.perf_counter() - t0
    if check and proc.returncode != 0:
        err = proc.stderr.decode(errors="replace") if isinstance(proc.stderr, bytes) else ""
        fail(f"{show_cmd(cmd, 200)} exited {proc.returncode}\n{err.strip()}")
    return dt, proc


def timed(fn, *args, **kw):
    """Call ``fn``; return (seconds, result)."""
    t0 = time.perf_counter()
    r = fn(*args, **kw)
    return time.perf_counter() - t0, r


def fail(message):
    print(f"benchmark error: {message}", file=sys.stderr)
    sys.exit(2)


def rotations(items, rounds):
    """Round r runs ``items`` rotated by r: interleaved, and no item always goes first."""
    k = len(items)
    for r in range(rounds):
        s = r % k
        yield r, items[s:] + items[:s]


class Series:
    """Timings of one thing, in seconds."""

    def __init__(self, label, floor=False, info=False):
        self.label, self.floor, self.info = label, floor, info
        self.times = []

    def add(self, seconds):
        self.times.append(seconds)

    @property
    def min(self):
        return min(self.times)

    @property
    def median(self):
        return statistics.median(self.times)


def _fmt_time(s, unit):
    v = s * (1000.0 if unit == "ms" else 1.0)
    return f"{v:.1f}" if v >= 100 else f"{v:.2f}" if v >= 1 else f"{v:.3f}"


def report(title, series, floor, *, unit="ms"):
    """Print each series' min and median and its ratio to ``floor`` (min/min, median/median)."""
    print(f"\n{title}")
    series = [s for s in series if s is not None and s.times]
    width = max(len(s.label) for s in series) + 2
    width = max(width, 10)
    head = (f"  {'':<{width}} {'n':>4} {'min ' + unit:>10} {'median ' + unit:>11}"
            f" {'ratio min':>10} {'ratio med':>10}")
    print(head)
    print("  " + "-" * (len(head) - 2))
    for s in series:
        if not s.times:
            continue
        tag = "floor" if s is floor else ("info" if s.info else "")
        rmin = s.min / floor.min
        rmed = s.median / floor.median
        print(f"  {s.label:<{width}} {len(s.times):>4} {_fmt_time(s.min, unit):>10}"
              f" {_fmt_time(s.median, unit):>11} {rmin:>10.2f} {rmed:>10.2f}  {tag}")


def verdict(name, target, median, minimum=None, op="<=", unit=""):
    """Say whether ``median`` (and ``minimum``, when given) meet the target."""
    def meets(v):
        return v <= target if op == "<=" else v < target

    def word(v):
        return "met" if meets(v) else "NOT MET"

    text = f"target {name} {op} {target:g}{unit}: {word(median)} on the median ({median:.3g}{unit})"
    if minimum is not None:
        text += f", {word(minimum)} on the min ({minimum:.3g}{unit})"
    print(text)
    return meets(median)
