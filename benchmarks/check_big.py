"""Benchmark: `gradcli check` on every element of a million-element weight, and --taylor.

Whole process against whole process, float64, on ``sum(tanh(W @ x + b))`` (a fixed seed; the
arrays are .npy files), runs interleaved and repeated, min and median side by side:

1. every element of W 1000 x 1000, x and b (1,002,000 inputs) with the default check
   (grouped differences, gradcli/sparsity.py): target under 10 s;
2. the same with a custom elementwise gate in place of tanh whose backward is wrong at one
   element: every wrong element found (W's row, every x, one b: 2,001) and the gate blamed,
   target under 30 s;
3. ``check --taylor`` on W 200 x 200 (4 random directions per input, the default) against a
   trivial ``gradcli eval``: target within 1.5x; beside it ``--directions 1`` (what one
   direction cost);
4. for scale: the default check against ``--one-at-a-time`` at W 200 x 200 (the ratio is
   what grouping saves; both verdicts must agree).

The floor of each table is a trivial ``gradcli eval`` (start-up and imports), measured in the
same run.

    python benchmarks/check_big.py [--n 1000] [--taylor-n 200] [--repeat 3] [--no-big]
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

PROGRAM = "sum(tanh(W @ x + b))"
WRONG_AT = 7

GATE = f'''
import numpy as np

class TanhOneWrong:
    """tanh(x); the backward has a sign error at element {WRONG_AT} only."""
    def forward(self, x):
        self.t = np.tanh(x)
        return self.t

    def backward(self, dz):
        g = np.array((1 - self.t ** 2) * dz)
        g.reshape(-1)[{WRONG_AT}] *= -1
        return [g]
'''


def save(d, n, tag):
    rng = np.random.default_rng(n)
    for name, shape in (("W", (n, n)), ("x", (n,)), ("b", (n,))):
        np.save(f"{d}/{name}{tag}.npy", rng.standard_normal(shape) / np.sqrt(n))
    return [f"W=@{d}/W{tag}.npy", f"x=@{d}/x{tag}.npy", f"b=@{d}/b{tag}.npy"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--taylor-n", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--gradcli", default=None)
    ap.add_argument("--no-big", action="store_true", help="skip the million-element part")
    args = ap.parse_args()
    gradcli = _bench.gradcli_cmd(args.gradcli)
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    ok = True
    print(f"gradcli: {_bench.show_cmd(gradcli)}; NumPy {np.__version__}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as d:
        big = save(d, args.n, "big")
        small = save(d, args.taylor_n, "small")
        with open(f"{d}/gate.py", "w") as f:
            f.write(GATE)
        n_in = args.n * args.n + 2 * args.n
        trivial = gradcli + ["eval", "--format", "json", "x*y", "x=2", "y=3"]
        runs = {
            "trivial eval": trivial,
            "check every element": gradcli + ["check", PROGRAM] + big,
            "check, wrong gate": gradcli + ["check", "--ops", f"{d}/gate.py",
                                            "sum(TanhOneWrong(W @ x + b))"] + big,
        }
        series = {k: _bench.Series(k) for k in runs}
        outputs = {}
        for _, order in _bench.rotations(list(runs), 0 if args.no_big else args.repeat):
            for k in order:
                dt, p = _bench.timed_run(runs[k], env=env, check=False,
                                         stdout=subprocess.PIPE)
                series[k].add(dt)
                outputs[k] = p
        if not args.no_big:
            _bench.report(f"every element of W {args.n}x{args.n} ({n_in:,} inputs), "
                          f"{args.repeat} rounds (seconds)", series.values(),
                          series["trivial eval"], unit="s")
            # the tables timed above; what they found, read once more as JSON (a million result
            # records: the JSON writing is not part of the figure)
            assert outputs["check every element"].returncode == 0
            assert f"PASS: {n_in} of {n_in} elements agree" in \
                outputs["check every element"].stdout.decode()
            cmd = list(runs["check, wrong gate"])
            cmd.insert(cmd.index("check") + 1, "--format=json")
            p = subprocess.run(cmd, capture_output=True, env=env)
            bad = json.loads(p.stdout)
            wrong = [(r["wrt"], tuple(r["index"])) for r in bad["results"]
                     if r["status"] == "fail"]
            expect = ({("W", (WRONG_AT, j)) for j in range(args.n)}
                      | {("x", (j,)) for j in range(args.n)} | {("b", (WRONG_AT,))})
            found = set(wrong) == expect
            blamed = [b["op"] for b in bad["blame"]] == ["TanhOneWrong"]
            print(f"wrong gate: exit {outputs['check, wrong gate'].returncode}, {len(wrong):,} "
                  f"elements failed (expected exactly {len(expect):,}: "
                  f"{'all found, no others' if found else 'MISMATCH'}); blamed: "
                  f"{[b['op'] for b in bad['blame']]}")
            ok &= found and blamed and outputs["check, wrong gate"].returncode == 1
            ok &= _bench.verdict("check every element", 10, series["check every element"].median,
                                 series["check every element"].min, unit=" s")
            ok &= _bench.verdict("check with the wrong gate", 30,
                                 series["check, wrong gate"].median,
                                 series["check, wrong gate"].min, unit=" s")

        # --taylor against a trivial eval, and grouped against one at a time
        m = args.taylor_n
        runs = {
            "trivial eval": trivial,
            "check --taylor": gradcli + ["check", "--taylor", "--format", "json", PROGRAM]
            + small,
            "check --taylor --directions 1": gradcli + ["check", "--taylor", "--directions",
                                                        "1", "--format", "json", PROGRAM]
            + small,
            "check (grouped)": gradcli + ["check", "--format", "json", PROGRAM] + small,
            "check --one-at-a-time": gradcli + ["check", "--one-at-a-time", "--format",
                                                "json", PROGRAM] + small,
        }
        series = {k: _bench.Series(k, info=k.startswith("check (") or "one" in k
                                   or "directions" in k)
                  for k in runs}
        for _, order in _bench.rotations(list(runs), max(args.repeat, 5)):
            for k in order:
                series[k].add(_bench.timed_run(runs[k], env=env)[0])
        _bench.report(f"W {m}x{m} ({m * m + 2 * m:,} inputs) (ms)", series.values(),
                      series["trivial eval"])
        t, f = series["check --taylor"], series["trivial eval"]
        ok &= _bench.verdict("check --taylor / trivial eval", 1.5, t.median / f.median,
                             t.min / f.min)
        g, o = series["check (grouped)"], series["check --one-at-a-time"]
        print(f"grouping saves {o.median / g.median:.1f}x on the median "
              f"({o.min / g.min:.1f}x on the min)")
    print("\nall targets met" if ok else "\nsome targets NOT met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
