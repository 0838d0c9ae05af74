"""Benchmark: grouped differences against one element at a time, for every ``--method``.

In process (``gradcli.check``, the library call the command makes), float64, on
``sum(tanh(W @ x + b))`` with W n x n (a fixed seed), for each of central, forward, the
complex step and Richardson extrapolation: the default check (grouped differences,
gradcli/sparsity.py) against ``grouped=False`` (``--one-at-a-time``), runs interleaved and
repeated, min and median side by side, and the ratio one-at-a-time / grouped.  Both
verdicts must agree and the numbers match.  Then, per method, a custom gate wrong at one
element: every wrong element found (W's row, every x, one b) and the gate blamed, grouped.

    python benchmarks/check_methods.py [--n 100] [--repeat 3]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np

import _bench

from check_big import GATE, PROGRAM, WRONG_AT  # the same program and gate wrong at one element

METHODS = ("central", "forward", "complex", "richardson")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    import gradcli
    import gradcli.gradcheck

    n = args.n
    rng = np.random.default_rng(n)
    vals = dict(W=rng.standard_normal((n, n)) / np.sqrt(n), x=rng.standard_normal(n),
                b=rng.standard_normal(n))
    vals["W"][WRONG_AT] = 0.05 + np.abs(vals["W"][WRONG_AT])   # the wrong row well away
    vals["b"][WRONG_AT] = 0.3 - vals["W"][WRONG_AT] @ vals["x"]  # from zero, unsaturated
    print(f"NumPy {np.__version__}; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores; W {n}x{n} ({n * n + 2 * n:,} inputs), in process")
    ok = True
    gradcli.check(PROGRAM, **vals)  # warm up imports
    series = {}
    runs = {}
    for m in METHODS:
        runs[f"{m} grouped"] = (m, True)
        runs[f"{m} one at a time"] = (m, False)
    series = {k: _bench.Series(k, info=True) for k in runs}
    results = {}
    for _, order in _bench.rotations(list(runs), args.repeat):
        for k in order:
            m, grouped = runs[k]
            dt, r = _bench.timed(gradcli.check, PROGRAM, method=m, grouped=grouped, **vals)
            series[k].add(dt)
            results[k] = r
    print(f"\n{'method':<12} {'grouped s':>10} {'one-at-a-time s':>16} {'ratio min':>10} "
          f"{'ratio med':>10} {'evaluations':>12}  verdicts")
    for m in METHODS:
        g, o = series[f"{m} grouped"], series[f"{m} one at a time"]
        rg, ro = results[f"{m} grouped"], results[f"{m} one at a time"]
        atol, rtol = gradcli.gradcheck.default_tolerances(m)   # the check's own rule
        same = rg.ok and ro.ok and all(
            np.allclose(a.numeric, c.numeric, rtol=rtol / 10, atol=atol / 10)
            for a, c in zip(rg.inputs, ro.inputs))
        ok &= same and rg.grouped_evals > 0
        print(f"{m:<12} {g.median:>10.3f} {o.median:>16.3f} {o.min / g.min:>10.1f} "
              f"{o.median / g.median:>10.1f} {rg.grouped_evals:>12,}  "
              f"{'both pass, same numbers' if same else 'MISMATCH'}")

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "gate.py")
        with open(path, "w") as f:
            f.write(GATE)
        ops = gradcli.load_ops(path)
        expect = ({("W", WRONG_AT * n + j) for j in range(n)} | {("x", j) for j in range(n)}
                  | {("b", WRONG_AT)})
        print(f"\na gate wrong at element {WRONG_AT} (grouped; {len(expect):,} wrong elements "
              f"expected)")
        for m in METHODS:
            dt, r = _bench.timed(gradcli.check, "sum(TanhOneWrong(W @ x + b))", method=m,
                                 ops=ops, **vals)
            wrong = {(ic.name, int(k)) for ic in r.inputs
                     for k in np.flatnonzero(ic.status.ravel() == "fail")}
            blamed = [b["op"] for b in r.blame]
            good = wrong == expect and blamed == ["TanhOneWrong"] and not r.ok
            ok &= good
            print(f"  {m:<12} {dt:6.3f} s  {len(wrong):,} failed, blamed {blamed}: "
                  f"{'all found, no others' if good else 'MISMATCH'}")
    print("\nall verdicts right" if ok else "\nsome verdicts WRONG")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
