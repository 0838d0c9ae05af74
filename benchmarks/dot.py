"""Pictures: DOT text of the 125,001-node program, and --render of a 1,000-node one.

The program is big_program.py's recurrence (5 nodes per statement; y feeds every statement).

In process (rounds interleaved; min and median; ratios side by side):
  DOT text    render.dot of an evaluated program, every node drawn (--max-nodes 0), at
              N/5 and N statements, against the forward pass of the same program
              (engine.evaluate: visits every node once, the floor for anything per node),
              and one f-string line per node and edge (for information: the least any
              DOT writer in Python does);
              the per-node ratio at N/5 and N shows whether it grows linearly.
              target: DOT text of the 125,001-node program < 3 s
  --grad      the same with the backward edges, against engine.differentiate
  default     what `gradcli dot` draws by itself (collapsed, the statements nearest the
              output), for information
Whole process (wall clock):
  gradcli dot --render svg -f FILE(1,001 nodes) -o OUT.svg      target < 5 s
  ... --grad, and plain `gradcli dot` of it (no Graphviz) as the floor

Run:
    python benchmarks/dot.py                    # ~1 minute
    python benchmarks/dot.py --repeat 1 --statements 5000
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

import _bench
from big_program import program


def _lines(graph):
    """The least a text writer does: one formatted line per node and per edge."""
    out = [f"  n{n.id} [shape=box, label=<<B>{n.op.name}</B>>];" for n in graph.nodes]
    out += [f"  n{j} -> n{n.id} [label=\"{j}\"];" for n in graph.nodes for j in n.inputs]
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, metavar="N")
    ap.add_argument("--statements", type=int, default=25_000, metavar="N",
                    help="statements of the big program (default 25000: 125,001 nodes)")
    ap.add_argument("--render-statements", type=int, default=200, metavar="N",
                    help="statements of the rendered program (default 200: 1,001 nodes)")
    ap.add_argument("--gradcli", metavar="CMD")
    args = ap.parse_args()
    repeat = max(1, args.repeat)

    import gradcli
    from gradcli import engine
    from gradcli.parse import parse
    from gradcli.render import dot

    cmd = _bench.gradcli_cmd(args.gradcli)
    n = args.statements
    small_n = max(1, n // 5)
    print(f"gradcli {gradcli.__version__}; python {sys.version.split()[0]}; "
          f"{os.cpu_count()} cpus")
    big, small = parse(program(n)), parse(program(small_n))
    print(f"programs: {len(big.nodes):,} and {len(small.nodes):,} nodes")
    yb = {"y": 2.0}

    s_fwd = _bench.Series(f"forward pass ({len(big.nodes):,} nodes)", floor=True)
    s_lines = _bench.Series("one f-string line per node and edge", info=True)
    s_dot = _bench.Series(f"DOT text ({len(big.nodes):,} nodes)")
    s_fwd_s = _bench.Series(f"forward pass ({len(small.nodes):,} nodes)", info=True)
    s_dot_s = _bench.Series(f"DOT text ({len(small.nodes):,} nodes)", info=True)
    s_diff = _bench.Series("differentiate, traced", floor=True)
    s_grad = _bench.Series("DOT text --grad")
    s_default = _bench.Series("DOT text, default --max-nodes", info=True)

    def one(series, fn, *a, **kw):
        dt, r = _bench.timed(fn, *a, **kw)
        series.add(dt)
        return r

    lines = None
    for _, order in _bench.rotations(["big", "small", "grad"], repeat):
        for what in order:
            if what == "big":
                ev = one(s_fwd, engine.evaluate, big, yb)
                text = one(s_dot, dot.evaluation, ev, max_nodes=0, notes=[])
                one(s_lines, _lines, big)
                lines = text.count("\n")
                one(s_default, dot.evaluation, ev, notes=[])
            elif what == "small":
                ev = one(s_fwd_s, engine.evaluate, small, yb)
                one(s_dot_s, dot.evaluation, ev, max_nodes=0, notes=[])
            else:
                res = one(s_diff, engine.differentiate, big, yb, trace=True)
                one(s_grad, dot.gradients, res, max_nodes=0, notes=[])
            ev = res = None
    print(f"DOT text of the big program: {lines:,} lines")
    _bench.report("DOT text against the forward pass (in process)",
                  [s_fwd, s_lines, s_dot, s_default], s_fwd, unit="s")
    _bench.report("--grad against differentiate", [s_diff, s_grad], s_diff, unit="s")
    _bench.report("linear growth: the small program", [s_fwd_s, s_dot_s], s_fwd_s, unit="s")
    per_big = s_dot.median / len(big.nodes)
    per_small = s_dot_s.median / len(small.nodes)
    print(f"  time per node: {per_small * 1e6:.2f} us at {len(small.nodes):,} nodes, "
          f"{per_big * 1e6:.2f} us at {len(big.nodes):,} (ratio {per_big / per_small:.2f}; "
          f"1 is linear)")
    _bench.verdict("DOT text of the big program", 3, s_dot.median, s_dot.min, unit=" s")

    # On a shared machine wall clock mostly measures the neighbours: CPU time as well.
    import time

    cpu = {}
    for label, graph in (("small", small), ("big", big)):
        ev = engine.evaluate(graph, yb)
        runs = []
        for _ in range(repeat):
            c0 = time.process_time()
            dot.evaluation(ev, max_nodes=0, notes=[])
            c1 = time.process_time()
            _lines(graph)
            runs.append((c1 - c0, time.process_time() - c1))
        cpu[label] = (min(r[0] for r in runs), min(r[1] for r in runs), len(graph.nodes))
        ev = None
    print("\nCPU time (process_time, min of the rounds)")
    for label in ("small", "big"):
        d, floor, nodes = cpu[label]
        print(f"  DOT text of {nodes:,} nodes: {d:.2f} s CPU, {d / nodes * 1e6:.1f} us per "
              f"node, {d / floor:.2f} x one f-string per node and edge")
    per = [cpu[k][0] / cpu[k][2] for k in ("big", "small")]
    print(f"  per-node ratio big/small: {per[0] / per[1]:.2f} (1 is linear)")
    _bench.verdict("DOT text of the big program, CPU", 3, cpu["big"][0], unit=" s")

    with tempfile.TemporaryDirectory(prefix="gradcli-dot-") as tmp:
        path = os.path.join(tmp, "p.gc")
        with open(path, "w", encoding="utf-8") as f:
            f.write(program(args.render_statements))
        nodes = len(parse(program(args.render_statements)).nodes)
        out = os.path.join(tmp, "p.svg")
        plain = cmd + ["dot", "-f", path, "y=2"]
        rend = plain + ["-o", out]
        rend_g = cmd + ["dot", "--grad", "-f", path, "y=2", "-o", out]
        s_plain = _bench.Series("gradcli dot (DOT text only)", floor=True)
        s_rend = _bench.Series("gradcli dot -o p.svg")
        s_rend_g = _bench.Series("gradcli dot --grad -o p.svg")
        for _, order in _bench.rotations([(s_plain, plain), (s_rend, rend),
                                          (s_rend_g, rend_g)], repeat):
            for series, c in order:
                dt, _ = _bench.timed_run(c)
                series.add(dt)
        _bench.report(f"--render of a {nodes:,}-node program (wall clock, collapsed by "
                      f"itself)", [s_plain, s_rend, s_rend_g], s_plain, unit="s")
        _bench.verdict(f"--render of {nodes:,} nodes", 5, max(s_rend.median, s_rend_g.median),
                       max(s_rend.min, s_rend_g.min), unit=" s")


if __name__ == "__main__":
    main()
