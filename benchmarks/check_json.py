"""Benchmark: ``gradcli check --format json`` on a big input (a record per element).

``sum(W @ x)`` with W n x n (n² + n records; a fixed seed, .npy files), float64:

1. in process, the writer alone (``checkreport.json_text`` of one report): column by column
   with orjson against a dict per element and ``json.dumps`` (``GRADCLI_NO_ORJSON=1``, what
   it was), and ``--results problems``; the CSV by columns against a csv.writer row per
   record (what it was; the same text);
2. whole process, side by side: ``check --format json`` against the same with
   ``GRADCLI_NO_ORJSON=1``, ``--results problems`` and the table, with a trivial
   ``gradcli eval`` as the floor.

Both documents must be equal.

    python benchmarks/check_json.py [--n 1000] [--repeat 2]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

import _bench


def csv_by_records(report):
    """The CSV as it was written: a csv.writer row per record of checkreport.rows."""
    import csv
    import io

    from gradcli.render import checkreport

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    cols = ["wrt", "index", "analytic", "numeric", "abs_err", "rel_err", "status"]
    w.writerow(cols)
    for d in checkreport.rows(report):
        w.writerow([",".join(map(str, d[c])) if isinstance(d.get(c), list) else d.get(c)
                    for c in cols])
    return buf.getvalue()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--gradcli", default=None)
    args = ap.parse_args()
    import gradcli
    from gradcli.render import checkreport

    n = args.n
    rng = np.random.default_rng(n)
    W, x = rng.standard_normal((n, n)), rng.standard_normal(n)
    print(f"NumPy {np.__version__}; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores; sum(W @ x), W {n}x{n}: {n * n + n:,} records")
    report = gradcli.check("sum(W @ x)", W=W, x=x)
    writers = {"orjson, by columns": {}, "dict per element + json.dumps": {"old": True},
               "--results problems": {"results": "problems"},
               "csv, by columns": {"csv": True},
               "csv, a csv.writer row per record (before)": {"csv": "old"}}
    series = {k: _bench.Series(k) for k in writers}
    texts = {}
    for _, order in _bench.rotations(list(writers), args.repeat):
        for k in order:
            opts = dict(writers[k])
            how = opts.pop("csv", None)
            if opts.pop("old", False):
                os.environ["GRADCLI_NO_ORJSON"] = "1"
            try:
                fn = (checkreport.as_csv if how is True else csv_by_records if how else
                      checkreport.json_text)
                dt, texts[k] = _bench.timed(fn, report, **opts)
            finally:
                os.environ.pop("GRADCLI_NO_ORJSON", None)
            series[k].add(dt)
    old = series["dict per element + json.dumps"]
    _bench.report("the writer alone, in process (s)", series.values(), old, unit="s")
    same = json.loads(texts["orjson, by columns"]) == json.loads(
        texts["dict per element + json.dumps"])
    same_csv = texts["csv, by columns"] == texts["csv, a csv.writer row per record (before)"]
    print(f"documents equal: {same}; {len(texts['orjson, by columns']) / 1e6:.0f} MB "
          f"(was {len(texts['dict per element + json.dumps']) / 1e6:.0f} MB); CSV texts "
          f"equal: {same_csv}")
    c_new = series["csv, by columns"]
    c_old = series["csv, a csv.writer row per record (before)"]
    print(f"csv by columns against before: {c_old.median / c_new.median:.1f}x faster "
          f"(median)")
    same &= same_csv

    gradcli_cmd = _bench.gradcli_cmd(args.gradcli)
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    old_env = dict(env, GRADCLI_NO_ORJSON="1")
    with tempfile.TemporaryDirectory() as d:
        np.save(f"{d}/W.npy", W)
        np.save(f"{d}/x.npy", x)
        prog = ["check", "sum(W @ x)", f"W=@{d}/W.npy", f"x=@{d}/x.npy"]
        runs = {"trivial eval": (gradcli_cmd + ["eval", "x*y", "x=2", "y=3"], env),
                "check (table)": (gradcli_cmd + prog, env),
                "check --format json": (gradcli_cmd + prog + ["--format", "json"], env),
                "  the same, json.dumps (before)": (gradcli_cmd + prog + ["--format", "json"],
                                                    old_env),
                "check --format json --results problems": (
                    gradcli_cmd + prog + ["--format", "json", "--results", "problems"], env)}
        series = {k: _bench.Series(k) for k in runs}
        for _, order in _bench.rotations(list(runs), args.repeat):
            for k in order:
                cmd, e = runs[k]
                series[k].add(_bench.timed_run(cmd, env=e)[0])
        _bench.report("whole process (s)", series.values(), series["trivial eval"], unit="s")
        new, before = series["check --format json"], series["  the same, json.dumps (before)"]
        table = series["check (table)"]
        print(f"json now against before: {before.median / new.median:.1f}x faster (median), "
              f"{before.min / new.min:.1f}x (min); json against the table "
              f"{new.median / table.median:.2f} (median)")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
