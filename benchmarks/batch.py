"""Batches: ``gradcli grad --batch`` against floors measured in the same run.

    target  gradcli grad --format csv --batch rows.csv '(x+y)*max(y,z) + sin(x)*y' > out.csv
    floor   plain Python: csv.reader over rows.csv, csv.writer of the same rows  (<= 1.5x)
    info    Python doing the work naively: csv.reader, float(), the formulas, csv.writer
    target  gradcli grad --format npz --batch rows.npz -o out.npz                 (<= 1.2x)
    floor   NumPy by hand: np.load, the value and the three gradients, np.savez
    memory  peak RSS of the CSV run at N rows and at N/5 rows (about equal: streamed)
    info    a shell loop calling gradcli once per point: 100 points, extrapolated to N

Each pair runs interleaved, ``--repeat`` rounds (min and median reported).  The rows are x,y,z
drawn from a normal distribution (full 17-digit numbers, the worst case for formatting).

Run:
    python benchmarks/batch.py                 # 1,000,000 rows (~1 min)
    python benchmarks/batch.py --rows 200000 --repeat 3 --loop 20
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import _bench

EXPR = "(x+y)*max(y,z) + sin(x)*y"

CSV_FLOOR = """
import csv, sys
with open(sys.argv[1], newline="") as f, open(sys.argv[2], "w", newline="") as g:
    csv.writer(g).writerows(csv.reader(f))
"""

CSV_NAIVE = """
import csv, math, sys
with open(sys.argv[1], newline="") as f, open(sys.argv[2], "w", newline="") as g:
    r, w = csv.reader(f), csv.writer(g)
    next(r)
    w.writerow(["f", "d_x", "d_y", "d_z"])
    for row in r:
        x, y, z = map(float, row)
        m = max(y, z)
        t = 1.0 if y > z else 0.5 if y == z else 0.0
        w.writerow([(x + y) * m + math.sin(x) * y, m + math.cos(x) * y,
                    m + (x + y) * t + math.sin(x), (x + y) * (1 - t if y != z else 0.5)])
"""

NPZ_FLOOR = """
import sys
import numpy as np
d = np.load(sys.argv[1])
x, y, z = d["x"], d["y"], d["z"]
m = np.maximum(y, z)
t = (y > z) + 0.5 * (y == z)
s = np.sin(x)
np.savez(sys.argv[2], f=(x + y) * m + s * y, d_x=m + np.cos(x) * y,
         d_y=m + (x + y) * t + s, d_z=(x + y) * ((z > y) + 0.5 * (y == z)))
"""

PEAK = """
import resource, subprocess, sys
with open(sys.argv[1], "wb") as out:
    subprocess.run(sys.argv[2:], stdout=out, check=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def make_rows(folder, n, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, 3))
    csv_path = folder / f"rows{n}.csv"
    with open(csv_path, "w") as f:
        f.write("x,y,z\n")
        for lo in range(0, n, 100000):
            part = a[lo:lo + 100000]
            f.write(("%r,%r,%r\n" * len(part)) % tuple(part.ravel().tolist()))
    npz_path = folder / f"rows{n}.npz"
    np.savez(npz_path, x=a[:, 0], y=a[:, 1], z=a[:, 2])
    return csv_path, npz_path, a


def _cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def pair(label_a, cmd_a, label_b, cmd_b, repeat, out_a=None, out_b=None):
    """Wall and CPU seconds of two commands, interleaved; the ratio a/b of each."""
    ta, tb, ca, cb = [], [], [], []
    for _ in range(repeat):
        for cmd, out, times, cpus in ((cmd_b, out_b, tb, cb), (cmd_a, out_a, ta, ca)):
            c0 = _cpu()
            if out is not None:
                with open(out, "wb") as f:
                    dt, _ = _bench.timed_run(cmd, stdout=f)
            else:
                dt, _ = _bench.timed_run(cmd)
            cpus.append(_cpu() - c0)
            times.append(dt)
    for label, t, c in ((label_b, tb, cb), (label_a, ta, ca)):
        print(f"  {label:<34} wall min {min(t):7.3f} s  median {statistics.median(t):7.3f} s"
              f"   cpu min {min(c):7.3f} s")
    ratio = min(ta) / min(tb)
    print(f"  ratio wall (min/min) {ratio:.2f}  (median/median "
          f"{statistics.median(ta) / statistics.median(tb):.2f});  cpu (min/min) "
          f"{min(ca) / min(cb):.2f}")
    return ratio


def peak_kb(cmd, out):
    p = subprocess.run([sys.executable, "-c", PEAK, str(out), *cmd], capture_output=True,
                       text=True, check=True)
    return int(p.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--loop", type=int, default=100, help="points of the shell loop")
    ap.add_argument("--gradcli", help="the gradcli command (default: next to python)")
    args = ap.parse_args()
    gradcli = _bench.gradcli_cmd(args.gradcli)
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="gradcli-bench-") as tmp:
        tmp = Path(tmp)
        n = args.rows
        csv_path, npz_path, a = make_rows(tmp, n)
        print(f"{n:,} rows of x,y,z; {EXPR!r}; {args.repeat} rounds, interleaved")
        out = tmp / "out.csv"

        # correctness first: the batch equals the formulas
        subprocess.run([*gradcli, "grad", "--format", "csv", "--batch", str(csv_path), EXPR],
                       stdout=open(out, "wb"), check=True)
        got = np.loadtxt(out, delimiter=",", skiprows=1, max_rows=1000)
        x, y, z = a[:1000].T
        m = np.maximum(y, z)
        assert np.allclose(got[:, 0], (x + y) * m + np.sin(x) * y), "wrong values"
        assert np.allclose(got[:, 1], m + np.cos(x) * y), "wrong d_x"

        print("\nCSV, 1.5x target:")
        csv_ratio = pair("gradcli grad --batch rows.csv",
                         [*gradcli, "grad", "--format", "csv", "--batch", str(csv_path), EXPR],
                         "floor: python csv read+write", [py, "-c", CSV_FLOOR, str(csv_path),
                                                          str(tmp / "copy.csv")],
                         args.repeat, out_a=out)
        dt, _ = _bench.timed_run([py, "-c", CSV_NAIVE, str(csv_path), str(tmp / "naive.csv")])
        print(f"  info: python csv + float() + formulas + csv.writer: {dt:.3f} s")
        print("  without orjson (NumPy's parser, repr formatting):")
        pair("gradcli, GRADCLI_NO_ORJSON=1",
             ["env", "GRADCLI_NO_ORJSON=1", *gradcli, "grad", "--format", "csv", "--batch",
              str(csv_path), EXPR],
             "floor: python csv read+write", [py, "-c", CSV_FLOOR, str(csv_path),
                                              str(tmp / "copy.csv")], 1, out_a=out)

        print("\n.npz, 1.2x target:")
        npz_ratio = pair("gradcli grad --batch rows.npz",
                         [*gradcli, "grad", "--format", "npz", "--batch", str(npz_path),
                          "-o", str(tmp / "out.npz"), EXPR],
                         "floor: NumPy by hand", [py, "-c", NPZ_FLOOR, str(npz_path),
                                                  str(tmp / "hand.npz")], args.repeat)

        print("\npeak memory (RSS):")
        small, _, _ = make_rows(tmp, max(1, n // 5), seed=1)
        cmd = [*gradcli, "grad", "--format", "csv", "--batch"]
        big_kb = peak_kb([*cmd, str(csv_path), EXPR], out)
        small_kb = peak_kb([*cmd, str(small), EXPR], out)
        print(f"  {n:,} rows: {big_kb / 1024:.0f} MB   {n // 5:,} rows: {small_kb / 1024:.0f} MB"
              f"   ratio {big_kb / small_kb:.2f}")

        print(f"\nshell loop, one gradcli per point ({args.loop} points):")
        t0 = time.perf_counter()
        for row in a[:args.loop]:
            subprocess.run([*gradcli, "grad", "--format", "csv", EXPR,
                            *(f"{k}={v!r}" for k, v in zip("xyz", row.tolist()))],
                           stdout=subprocess.DEVNULL, check=True)
        loop = time.perf_counter() - t0
        best = min(_bench.timed_run([*gradcli, "grad", "--format", "csv", "--batch",
                                     str(csv_path), EXPR])[0] for _ in range(1))
        per = loop / args.loop
        print(f"  {per * 1000:.0f} ms per point: {per * n:,.0f} s for {n:,} points, "
              f"against {best:.2f} s batched: {per * n / best:,.0f}x faster")
        print(f"\nsummary: csv {csv_ratio:.2f}x (target 1.5), npz {npz_ratio:.2f}x (target "
              f"1.2), memory {big_kb / small_kb:.2f}x for 5x the rows")


if __name__ == "__main__":
    os.environ.setdefault("NO_COLOR", "1")
    main()
