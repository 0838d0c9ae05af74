"""A 25,000-statement program (125,001 nodes): parse, forward and reverse pass, the command.

The program (written to a temporary file) is the recurrence

    a_0 = y
    a_i = a_{i-1} * 1.00001 + y * 0.00001        for i = 1 .. 25,000

(5 nodes per statement: two constants, two products and a sum, so 125,001 nodes of which
75,000 are ops; y fans out to 25,001 nodes),
so the output a_n = y * (c^n + d (c^n - 1) / (c - 1)) with c = 1.00001, d = 0.00001, and
d a_n / d y = c^n + d (c^n - 1) / (c - 1)  (= 2 c^n - 1 here, about 1.568 for n = 25,000).

In process (rounds interleaved; min and median; ratios side by side):
  parse      gradcli.parse.parse (of a new text each time, so no cache hits), against CPython's compile() of the
             same text (the text is valid Python too), the floor for parsing
  forward    gradcli.engine.evaluate, against a plain Python loop doing the same arithmetic
             on NumPy 0-d arrays (the floor for an interpreter that visits every node)
  reverse    gradcli.engine.differentiate minus the forward pass it runs (engine.evaluate,
             timed inside the same call; if differentiate stops calling it, minus a separate
             engine.evaluate), so the reverse pass and its bookkeeping, as a ratio to that
             forward pass: target reverse/forward <= 3.  --passes K pass pairs per round.
Whole process (wall clock):
  gradcli grad --format json -f FILE y=2              target < 10 s
  gradcli grad -f FILE y=2 > /dev/null (the table)    for information (slow: one run by
                                                       default, --table-repeat to change)
Both are also shown as a ratio to the in-process parse + differentiate (the floor).
The gradient and value printed by the JSON run and computed in process are checked against
the closed form (relative tolerance 1e-9).

Run:
    python benchmarks/big_program.py                       # ~1.5 minutes
    python benchmarks/big_program.py --repeat 5 --table-repeat 0
    python benchmarks/big_program.py --statements 5000 --gradcli "python -m gradcli"
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile

import numpy as np

import _bench

C, D = 1.00001, 0.00001
C_TEXT, D_TEXT = "1.00001", "0.00001"
RTOL = 1e-9


def program(n):
    lines = ["a_0 = y"]
    lines += [f"a_{i} = a_{i - 1} * {C_TEXT} + y * {D_TEXT}" for i in range(1, n + 1)]
    return "\n".join(lines) + "\n"


def closed_form(n, y):
    """(a_n, d a_n / d y) for the recurrence, in float64."""
    cn = C ** n
    slope = cn + D * (cn - 1.0) / (C - 1.0)
    return y * slope, slope


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, metavar="N",
                    help="rounds of the in-process passes and the JSON command (default 3)")
    ap.add_argument("--table-repeat", type=int, default=1, metavar="N",
                    help="runs of the table command (about 50 s each today; default 1, "
                         "0 to skip)")
    ap.add_argument("--passes", type=int, default=5, metavar="K",
                    help="forward/reverse pass pairs per round (default 5)")
    ap.add_argument("--statements", type=int, default=25_000, metavar="N",
                    help="statements of the recurrence (default 25000: 125,001 nodes)")
    ap.add_argument("--gradcli", metavar="CMD",
                    help="the gradcli command (default: the gradcli next to sys.executable, "
                         "else python -m gradcli)")
    ap.add_argument("--y", type=float, default=2.0, help="the value bound to y (default 2)")
    args = ap.parse_args()
    n, y, repeat = args.statements, args.y, max(1, args.repeat)
    passes = max(1, args.passes)

    import gradcli
    from gradcli import engine
    from gradcli import parse as parse_mod

    gradcli_cmd = _bench.gradcli_cmd(args.gradcli)
    text = program(n)
    value_cf, slope_cf = closed_form(n, y)
    print(f"gradcli {gradcli.__version__} ({os.path.dirname(gradcli.__file__)}); "
          f"numpy {np.__version__}; python {sys.version.split()[0]}; {os.cpu_count()} cpus")
    print(f"gradcli command: {_bench.show_cmd(gradcli_cmd, 200)}")

    parse = parse_mod.parse

    nonce = iter(range(1 << 30))

    def parse_uncached(t):
        # gradcli caches parsed programs by their text: a fresh comment line defeats any such
        # cache without touching gradcli's internals.
        return parse(f"# benchmark run {next(nonce)}\n{t}")

    def drop_cached_graphs():
        # Outside the timings: let go of the graphs gradcli's caches keep (memory only).
        for name in ("parse", "_parse"):
            clear = getattr(getattr(parse_mod, name, None), "cache_clear", None)
            if clear:
                clear()

    with tempfile.TemporaryDirectory(prefix="gradcli-big-") as tmp:
        path = os.path.join(tmp, "big.gc")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        json_out = os.path.join(tmp, "out.json")

        # Warm up: load the parser and the ops, and check the graph is what we think it is.
        parse_uncached("a = y * 2 + y")
        graph = parse_uncached(text)
        ops = sum(1 for node in graph.nodes if node.inputs)
        print(f"program: {n} statements, {len(text) / 1e6:.2f} MB, {len(graph.nodes)} nodes "
              f"({ops} op nodes, {len(graph.nodes) - ops} variables and constants)")
        del graph
        drop_cached_graphs()

        s_compile = _bench.Series("python compile() of the same text", floor=True)
        s_parse = _bench.Series("gradcli parse")
        s_loop = _bench.Series("python loop on 0-d arrays", floor=True)
        s_fwd = _bench.Series("forward: engine.evaluate")
        s_fwdrev = _bench.Series("engine.differentiate (both passes)", info=True)
        s_fwd_in = _bench.Series("forward, inside differentiate", info=True)
        s_rev = _bench.Series("reverse: differentiate - its forward")
        s_lib = _bench.Series("in process: parse + differentiate", floor=True)
        s_json = _bench.Series("gradcli grad --format json -f FILE")
        s_table = _bench.Series("gradcli grad -f FILE > /dev/null", info=True)

        yb = {"y": y}
        cmd_json = gradcli_cmd + ["grad", "--format", "json", "-f", path, f"y={y!r}"]
        cmd_table = gradcli_cmd + ["grad", "-f", path, f"y={y!r}"]
        in_process = None
        print(f"running {repeat} rounds" + (f" (+{args.table_repeat} of the table, "
                                            f"which is slow)" if args.table_repeat else "")
              + " ...", flush=True)
        for r in range(repeat):
            gc.collect()
            dt, _ = _bench.timed(compile, text, "<big>", "exec")
            s_compile.add(dt)
            dt, graph = _bench.timed(parse_uncached, text)
            s_parse.add(dt)
            s_loop.add(_bench.timed(python_loop, n, y)[0])
            for k in range(passes):
                # Alternate which goes first, so neither always meets a cold cache.
                if (r * passes + k) % 2 == 0:
                    t_fwd, ev = _bench.timed(engine.evaluate, graph, yb)
                    t_both, t_inner, res = split_differentiate(engine, graph, yb)
                else:
                    t_both, t_inner, res = split_differentiate(engine, graph, yb)
                    t_fwd, ev = _bench.timed(engine.evaluate, graph, yb)
                s_fwd.add(t_fwd)
                s_fwdrev.add(t_both)
                if t_inner is not None:  # the forward pass timed inside the same call
                    s_fwd_in.add(t_inner)
                    s_rev.add(t_both - t_inner)
                else:
                    s_rev.add(max(t_both - t_fwd, 0.0))
            s_lib.add(s_parse.times[-1] + s_fwdrev.times[-1])
            in_process = (float(res.value), float(res.gradients["y"]))
            del graph, ev, res
            drop_cached_graphs()
            gc.collect()

            with open(json_out, "wb") as out:
                dt, _ = _bench.timed_run(cmd_json, stdout=out)
            s_json.add(dt)
            if r < args.table_repeat:
                dt, _ = _bench.timed_run(cmd_table)
                s_table.add(dt)
            print(f"  round {r + 1}/{repeat}: parse {s_parse.times[-1]:.2f} s, json command "
                  f"{s_json.times[-1]:.2f} s" + (f", table command {s_table.times[-1]:.1f} s"
                                                 if r < args.table_repeat else ""), flush=True)
        for r in range(repeat, args.table_repeat):  # more table runs than rounds
            dt, _ = _bench.timed_run(cmd_table)
            s_table.add(dt)

        with open(json_out, encoding="utf-8") as f:
            printed = json.load(f)

    unit = "s"
    _bench.report("parse (in process)", [s_compile, s_parse], s_compile, unit=unit)
    _bench.report("forward pass (in process)", [s_loop, s_fwd], s_loop, unit=unit)
    fwd = s_fwd_in if s_fwd_in.times else s_fwd
    if not s_fwd_in.times:
        s_rev.label = "reverse: differentiate - evaluate"
    _bench.report(f"reverse / forward (in process, {len(s_rev.times)} pass pairs)",
                  [fwd, s_rev, s_fwd if fwd is not s_fwd else None, s_fwdrev], fwd, unit=unit)
    _bench.report("whole process, wall clock", [s_lib, s_json, s_table], s_lib, unit=unit)
    print()
    _bench.verdict("reverse / forward", 3, s_rev.median / fwd.median, s_rev.min / fwd.min)
    _bench.verdict("gradcli grad --format json wall time", 10, s_json.median, s_json.min,
                   op="<", unit=" s")

    # The answers, against the closed form.
    print(f"\nclosed form: a_{n} = {value_cf!r}, d a_{n} / d y = {slope_cf!r} (at y = {y:g})")
    ok = True
    for where, value, slope in [("in process", *in_process),
                                ("printed JSON", printed.get("value"),
                                 printed.get("gradients", {}).get("y"))]:
        good = (isinstance(value, float) and isinstance(slope, float)
                and abs(value - value_cf) <= RTOL * abs(value_cf)
                and abs(slope - slope_cf) <= RTOL * abs(slope_cf))
        ok &= good
        rel = (abs(slope - slope_cf) / abs(slope_cf)) if isinstance(slope, float) else None
        print(f"  {where:<13} value {value!r}, gradient {slope!r}: "
              + (f"agrees (relative error {rel:.1e} <= {RTOL:g})" if good
                 else f"DISAGREES (tolerance {RTOL:g})"))
    print("gradient check: " + ("ok" if ok else "FAILED"))


def split_differentiate(engine, graph, bindings):
    """Time engine.differentiate and, inside it, its forward pass (engine.evaluate).

    -> (total seconds, forward seconds or None if it did not call evaluate, result)
    """
    inner = []
    real = engine.evaluate

    def timed_evaluate(*a, **kw):
        t, r = _bench.timed(real, *a, **kw)
        inner.append(t)
        return r

    engine.evaluate = timed_evaluate
    try:
        total, res = _bench.timed(engine.differentiate, graph, bindings)
    finally:
        engine.evaluate = real
    return total, (inner[0] if len(inner) == 1 else None), res


def python_loop(n, y):
    """The same 4n operations in a plain loop, on 0-d arrays as the engine holds them."""
    yv, c, d = np.asarray(y), np.asarray(C), np.asarray(D)
    a = yv
    mul, add = np.multiply, np.add
    for _ in range(n):
        a = add(mul(a, c), mul(yv, d))
    return a


if __name__ == "__main__":
    main()
