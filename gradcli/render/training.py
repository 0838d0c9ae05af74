"""``gradcli descend`` for people and programs: the fitted parameters and the loss curve.

The table shows the parameters (name, shape, value), the loss at evenly spaced steps (or
every ``--log-every`` steps) and a one-line summary with a sparkline of the whole curve.
JSON is SPEC's ``{"params": {...}, "loss": [L0, ..., Lsteps], "steps": N}``.  While the
loop runs, :class:`Live` draws a Rich progress bar with the current loss and a live
sparkline on stderr, only when stderr is a terminal.
"""
from __future__ import annotations

import json
import math
import time

from . import text as fmt
from .layout import Line, Table

#: The registry entries this module provides (see gradcli.render.FORMATS).
FORMATS = {"table": {"descend": "training:table"}, "json": {"descend": "training:json_text"}}

BLOCKS = "▁▂▃▄▅▆▇█"

STOPPED = {
    "steps": "",
    "tol": "stopped early: the loss changed by less than --tol",
    "time": "stopped early: --max-time was reached",
    "interrupted": "stopped early: interrupted",
    "nan": "stopped: the loss was no longer finite",
}


def sparkline(values, width=40):
    """The curve in ``width`` block characters; on a log scale when every value is positive
    and they span more than a factor of 100 (a falling loss would be flat otherwise)."""
    vals = [v for v in values if v - v == 0]
    if not vals:
        return ""
    if len(vals) > width:  # the mean of each of ``width`` equal slices
        n = len(vals)
        vals = [sum(vals[n * i // width:n * (i + 1) // width])
                / max(1, n * (i + 1) // width - n * i // width) for i in range(width)]
    lo, hi = min(vals), max(vals)
    if lo > 0 and hi / lo > 100:
        vals = [math.log10(v) for v in vals]
        lo, hi = min(vals), max(vals)
    if hi == lo:
        return BLOCKS[0] * len(vals)
    top = len(BLOCKS) - 1
    return "".join(BLOCKS[round((v - lo) / (hi - lo) * top)] for v in vals)


def curve_steps(n, every=None, rows=10):
    """The steps the loss table lists: 0, every K-th and the last (about ``rows`` rows)."""
    if every is None:
        every = max(1, math.ceil(n / rows)) if n else 1
    out = list(range(0, n + 1, every))
    if out[-1] != n:
        out.append(n)
    return out


def _setting(res):
    opt = res.optimizer
    parts = [opt.name, f"lr {fmt.num(res.lr)}"]
    if res.schedule != "constant":
        parts.append(f"{res.schedule} schedule")
    if res.batch_size is not None:
        epochs = res.epochs
        parts.append(f"batches of {res.batch_size}, {epochs} epoch{'s' * (epochs != 1)}")
    return ", ".join(parts)


def summary(res):
    n = res.steps
    if not res.loss:
        return "no steps"
    first, last = res.loss[0], res.loss[-1]
    word = "step" if n == 1 else "steps"
    return (f"loss {fmt.num(first)} → {fmt.num(last)} after {n} {word} ({_setting(res)})  "
            f"{sparkline(res.loss)}")


def table(res, every=None, **options):
    params = Table("parameter", "shape", "value")
    for name, value in res.params.items():
        params.add_row(name, fmt.shape_text(getattr(value, "shape", ())),
                       fmt.array(value, small=12))
    curve = Table(("step", "right"), ("loss", "right"))
    base = getattr(res, "first_step", 0)
    for k in curve_steps(len(res.loss) - 1, every):
        curve.add_row(str(base + k), fmt.num(res.loss[k]))
    items = [params, Line(""), curve, Line(""), Line(summary(res), "bold")]
    if getattr(res, "full_loss", None) is not None:
        items.append(Line(f"loss on all {res.rows} rows: {fmt.num(res.full_loss)}"))
    why = STOPPED.get(res.stopped)
    if why and res.stopped != "nan":
        items.append(Line(why))
    return items


def json_obj(res):
    from ..values import to_json

    d = {"params": {n: to_json(v) for n, v in res.params.items()},
         "loss": [to_json(v) for v in res.loss], "steps": res.steps, "stopped": res.stopped}
    if getattr(res, "full_loss", None) is not None:
        d["full_loss"] = to_json(res.full_loss)
    return d


def json_text(res, **options):
    return json.dumps(json_obj(res), allow_nan=False)


def _csv_number(x):
    return repr(float(x))  # the shortest text that reads back as the same float; nan, inf


def log_csv(res, every=None):
    """``step,loss,grad_norm`` rows (every step, or every ``every``-th and the last)."""
    norms = res.grad_norm or [None] * len(res.loss)
    base = getattr(res, "first_step", 0)
    rows = ["step,loss,grad_norm"]
    ks = range(len(res.loss)) if every is None else curve_steps(len(res.loss) - 1, every)
    for k in ks:
        g = norms[k]
        rows.append(f"{base + k},{_csv_number(res.loss[k])},"
                    f"{'' if g is None else _csv_number(g)}")
    return "\n".join(rows) + "\n"


def plot(res, path):
    """The loss curve drawn with matplotlib (imported only here) to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    base = getattr(res, "first_step", 0)
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    try:
        ax.plot(range(base, base + len(res.loss)), res.loss, lw=1.5)
        if res.loss and min(res.loss) > 0 and max(res.loss) / min(res.loss) > 100:
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(f"{res.output_name}: {_setting(res)}", fontsize=9)
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)


class Live:
    """A Rich progress bar on stderr (a terminal only) with the loss and a live sparkline;
    ``--log-every`` lines printed above it.  ``update(k, loss)`` is cheap: it redraws at
    most ten times a second."""

    def __init__(self, total, stream, log_every=None, first_step=0):
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn)

        self.console = Console(file=stream, highlight=False)
        self.history = []
        self.log_every = log_every
        self.first_step = first_step
        self.progress = Progress(TextColumn("descend"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("loss {task.fields[loss]}"),
                                 TextColumn("{task.fields[spark]}"), TimeElapsedColumn(),
                                 console=self.console, transient=True)
        self.task = self.progress.add_task("descend", total=total, loss="…", spark="")
        self._next = 0.0
        self._stride = 1

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def update(self, k, loss):
        if k % self._stride == 0:  # a bounded history: every other point once it is long
            self.history.append(loss)
            if len(self.history) > 512:
                self.history = self.history[::2]
                self._stride *= 2
        if self.log_every and k % self.log_every == 0:
            self.console.print(f"step {self.first_step + k}  loss {fmt.num(loss)}")
        now = time.monotonic()
        if now >= self._next:
            self._next = now + 0.1
            self.progress.update(self.task, completed=k, loss=fmt.num(loss),
                                 spark=sparkline(self.history, 24))
