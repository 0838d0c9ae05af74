"""``--batch`` and ``--sweep`` as shell pipelines use them: real processes, real pipes.

Each test runs the installed ``gradcli`` (a subprocess, from a temporary directory) the way a
script would: ``printf ... | gradcli ... | python -c ...``, files in and out, a reader that
leaves early (``| head``), a run interrupted half way, stderr a pipe or a terminal.  Results
are checked against the formulas computed here with NumPy, at every point.
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import cli

EXPR = "(x+y)*max(y,z) + sin(x)*y"


def expected(x, y, z):
    m = np.maximum(y, z)
    t = (y > z) + 0.5 * (y == z)
    return np.stack([(x + y) * m + np.sin(x) * y, m + np.cos(x) * y,
                     m + (x + y) * t + np.sin(x), (x + y) * ((z > y) + 0.5 * (y == z))], 1)


@pytest.fixture
def sh(gradcli_exe, tmp_path):
    """Run a bash pipeline in tmp_path, with ``gradcli`` standing for the installed one."""
    exe = " ".join(shlex.quote(c) for c in gradcli_exe)

    def run(script, env=None, timeout=120):
        full = dict(os.environ, **(env or {}))
        full.pop("NO_COLOR", None) if env and env.get("NO_COLOR") == "" else None
        return subprocess.run(["bash", "-c", f"gradcli() {{ {exe} \"$@\"; }}\n{script}"],
                              capture_output=True, text=True, cwd=tmp_path, env=full,
                              timeout=timeout)
    return run


def points(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3))


def csv_text(a, header="x,y,z", end="\n"):
    return header + end + "".join(f"{x!r},{y!r},{z!r}{end}" for x, y, z in a.tolist())


# ---------------------------------------------------------------- round trips

def test_printf_to_gradcli_to_python(sh):
    r = sh("printf 'x,y,z\\n1,2,0\\n3,-1,2\\n' | gradcli grad --batch - '(x+y)*max(y,z)' "
           "| python -c 'import csv,sys; rows=list(csv.DictReader(sys.stdin)); "
           "print(rows[0][\"f\"], rows[1][\"d_y\"], len(rows))'")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["6.0", "2.0", "2"]  # by hand: (1+2)*2; max(-1,2) + 0
    assert r.stderr == ""


@pytest.mark.parametrize("end", ["\n", "\r\n"])
def test_csv_round_trip_is_exact(sh, tmp_path, end):
    a = points(2500)
    (tmp_path / "rows.csv").write_bytes(csv_text(a, end=end).encode())
    r = sh(f"gradcli grad --batch rows.csv --chunk-size 1000 '{EXPR}' > out.csv")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    lines = (tmp_path / "out.csv").read_text().splitlines()
    assert lines[0] == "f,d_x,d_y,d_z" and len(lines) == 2501
    got = np.array([[float(c) for c in line.split(",")] for line in lines[1:]])
    np.testing.assert_allclose(got, expected(*a.T), rtol=1e-14, atol=1e-15)


def test_wrt_picks_columns_and_fixed_bindings(sh, tmp_path):
    (tmp_path / "p.csv").write_text("x,y\n1,2\n3,4\n")
    r = sh("gradcli grad --batch p.csv --wrt y,w 'x*y*w' w=10")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "f,d_y,d_w\n20.0,10.0,2.0\n120.0,30.0,12.0\n"


def test_jsonl_in_and_out_through_jq_style_reader(sh, tmp_path):
    (tmp_path / "p.jsonl").write_text('{"v": [1, 2], "s": 3}\n{"v": [1, -1], "s": "inf"}\n')
    r = sh("gradcli grad --batch p.jsonl --format jsonl 'sum(v * v) * s' | "
           "python -c 'import json,sys; [print(json.dumps(json.loads(l))) for l in sys.stdin]'")
    assert r.returncode == 0, r.stderr
    first, second = [json.loads(line) for line in r.stdout.splitlines()]
    assert first == {"value": 15.0, "gradients": {"v": [6.0, 12.0], "s": 5.0}}
    assert second == {"value": "inf", "gradients": {"v": ["inf", "-inf"], "s": 2.0}}


def test_npz_round_trip(sh, tmp_path):
    a = points(3000, seed=2)
    np.savez(tmp_path / "p.npz", x=a[:, 0], y=a[:, 1], z=a[:, 2])
    r = sh(f"gradcli grad --batch p.npz --format npz -o out.npz --chunk-size 700 '{EXPR}'")
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stderr
    d = np.load(tmp_path / "out.npz")
    assert sorted(d.files) == ["d_x", "d_y", "d_z", "f"]
    got = np.stack([d["f"], d["d_x"], d["d_y"], d["d_z"]], 1)
    np.testing.assert_allclose(got, expected(*a.T), rtol=1e-14, atol=1e-15)


def test_npy_binds_the_one_free_variable(sh, tmp_path):
    np.save(tmp_path / "v.npy", np.arange(6.0).reshape(3, 2))
    r = sh("gradcli eval --batch v.npy --format jsonl 'sum(v) * k' k=2")
    assert r.returncode == 0, r.stderr
    assert [json.loads(line)["value"] for line in r.stdout.splitlines()] == [2.0, 10.0, 18.0]


def test_sweep_grid_feeds_a_plot(sh):
    script = ("gradcli grad --sweep x=-2:2:5 --sweep w=1:2:2 'relu(x) * w' | python -c '"
              "import csv,sys; r=list(csv.DictReader(sys.stdin)); "
              "print(len(r), r[0][\"f\"], r[-1][\"d_x\"], r[-1][\"d_w\"])'")
    r = sh(script)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["10", "0.0", "2.0", "2.0"]  # relu(-2)*1; at x=2, w=2
    r = sh("gradcli grad --sweep x=-2:2:3 --sweep w=1:2:2 'relu(x) * w' | head -3")
    assert r.stdout == "x,w,f,d_x,d_w\n-2.0,1.0,0.0,0.0,0.0\n-2.0,2.0,0.0,0.0,0.0\n"


def test_eval_sweep_csv_header_is_the_output_name(sh):
    r = sh("gradcli eval --sweep t=0:1:3 'y = t * 2; y + 1'")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "t,f\n0.0,1.0\n0.5,2.0\n1.0,3.0\n"   # the point, then f
    r = sh("gradcli eval --sweep t=0:1:2 --output y 'y = t * 2; y + 1'")
    assert r.stdout == "t,y\n0.0,0.0\n1.0,2.0\n"


# ---------------------------------------------------------------- bad rows

BAD = "x,y,z\n1,2,3\n4,oops,6\n7,8\n10,11,12\n"


def test_bad_row_stops_with_line_and_column_and_writes_nothing(sh, tmp_path):
    (tmp_path / "p.csv").write_text(BAD)
    r = sh("gradcli grad --batch p.csv 'x+y+z'")
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == "error: --batch p.csv line 3, column y: 'oops' is not a number\n"


def test_keep_going_writes_good_rows_reports_each_bad_one(sh, tmp_path):
    (tmp_path / "p.csv").write_text(BAD)
    r = sh("gradcli grad --batch p.csv --keep-going 'x+y+z'")
    assert r.returncode == 2
    assert r.stdout == "f,d_x,d_y,d_z\n6.0,1.0,1.0,1.0\n33.0,1.0,1.0,1.0\n"
    err = r.stderr.splitlines()
    assert err[0] == "error: --batch p.csv line 3, column y: 'oops' is not a number (left out)"
    assert err[1].startswith("error: --batch p.csv line 4: 2 cells for 3 columns")
    assert err[2] == "error: 2 bad rows left out; the other 2 were written"
    assert len(err) == 3


def test_bad_row_after_the_first_chunks_leaves_stdout_empty(sh, tmp_path):
    a = points(5000)
    text = csv_text(a) + "1,2,x\n"
    (tmp_path / "p.csv").write_text(text)
    r = sh("gradcli grad --batch p.csv --chunk-size 500 'x+y+z'")
    assert r.returncode == 2 and r.stdout == "", r.stdout[:200]
    assert "line 5002, column z" in r.stderr


# ---------------------------------------------------------------- -o is atomic

def test_failing_run_leaves_the_old_file_and_no_temporary(sh, tmp_path):
    (tmp_path / "out.csv").write_text("old\n")
    a = points(3000)
    (tmp_path / "p.csv").write_text(csv_text(a) + "1,2,x\n")
    r = sh("gradcli grad --batch p.csv --chunk-size 500 -o out.csv 'x+y+z'")
    assert r.returncode == 2
    assert (tmp_path / "out.csv").read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv", "p.csv"]


def test_o_replaces_the_file_whole(sh, tmp_path):
    (tmp_path / "out.csv").write_text("old\n")
    r = sh("gradcli eval --sweep x=0:1:3 -o out.csv 'x*2'")
    assert r.returncode == 0 and r.stdout == ""
    assert (tmp_path / "out.csv").read_text() == "x,f\n0.0,0.0\n0.5,1.0\n1.0,2.0\n"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_run_leaves_no_partial_file(gradcli_exe, tmp_path, sig):
    """Points trickle in through a pipe; the run is stopped half way."""
    feeder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\n"
         "sys.stdout.write('x\\n')\n"
         "for i in range(100000):\n"
         "    sys.stdout.write(f'{i}\\n'); sys.stdout.flush(); time.sleep(0.001)\n"],
        stdout=subprocess.PIPE)
    p = subprocess.Popen([*gradcli_exe, "grad", "--batch", "-", "--chunk-size", "50",
                          "-o", "out.csv", "x*x"], stdin=feeder.stdout,
                         stderr=subprocess.PIPE, cwd=tmp_path)
    feeder.stdout.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until chunks are being written to the temporary
        tmp = [f for f in tmp_path.iterdir() if f.name.startswith(".out.csv.")]
        if tmp and tmp[0].stat().st_size > 0:
            break
        time.sleep(0.05)
    else:
        pytest.fail("no temporary file appeared")
    p.send_signal(sig)
    err = p.communicate(timeout=60)[1].decode()
    feeder.kill()
    feeder.wait()
    assert p.returncode == 130, err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- pipes and terminals

def test_reader_leaving_early_ends_quietly(sh):
    r = sh("gradcli grad --sweep x=0:1:2000000 'x*x' | head -3; "
           "echo \"status ${PIPESTATUS[0]}\"")
    lines = r.stdout.splitlines()
    x = np.linspace(0, 1, 2000000)[1]
    assert lines[:2] == ["x,f,d_x", "0.0,0.0,0.0"]
    assert [float(c) for c in lines[2].split(",")] == [x, x * x, 2 * x]
    assert lines[3:] == ["status 141"]
    assert r.stderr == ""


def test_keep_going_streams_to_a_closed_pipe_quietly(sh, tmp_path):
    a = points(20000)
    (tmp_path / "p.csv").write_text(csv_text(a))
    r = sh("gradcli grad --keep-going --batch p.csv --chunk-size 100 'x*y*z' | head -2; "
           "echo \"status ${PIPESTATUS[0]}\"")
    lines = r.stdout.splitlines()
    assert lines[0] == "f,d_x,d_y,d_z" and lines[2] == "status 141" and r.stderr == ""


SLOW_OP = '''
import time
class Slow:
    def forward(self, x):
        time.sleep(0.004)
        return x
    def backward(self, g):
        return [g]
'''


def _run_with_terminal_stderr(gradcli_exe, tmp_path, *args, env=None):
    import pty

    master, slave = pty.openpty()
    p = subprocess.Popen([*gradcli_exe, *args], stdout=subprocess.PIPE, stderr=slave,
                         cwd=tmp_path, env=dict(os.environ, **(env or {})))
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    out = p.stdout.read()
    p.wait(timeout=120)
    os.close(master)
    return p.returncode, out.decode(), b"".join(chunks).decode(errors="replace")


def test_progress_bar_only_on_a_terminal(gradcli_exe, tmp_path):
    # 400 points of 4 ms each: every run takes 1.6 s, past the second after which a bar shows
    # (so the runs that must show none would have shown one)
    (tmp_path / "slow.py").write_text(SLOW_OP)
    args = ["grad", "--ops", "slow.py", "--sweep", "x=0:1:400", "--chunk-size", "50",
            "Slow(x) * 2"]
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    code, out, err = _run_with_terminal_stderr(gradcli_exe, tmp_path, *args,
                                               env={"NO_COLOR": ""} if "NO_COLOR" in env
                                               else None)
    assert code == 0 and len(out.splitlines()) == 401 and out.startswith("x,f,d_x\n")
    assert "points" in err and "batch" in err, repr(err)     # the bar, on the terminal
    for extra, env2 in ((["--quiet"], None), ([], {"NO_COLOR": "1"})):
        code, out, err = _run_with_terminal_stderr(gradcli_exe, tmp_path, *args[:1], *extra,
                                                   *args[1:], env=env2)
        assert code == 0 and err == "", repr(err)
    p = subprocess.run([*gradcli_exe, *args], capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 0 and p.stderr == ""              # stderr a pipe: no bar


# ---------------------------------------------------------------- the CLI around batches

def test_column_bound_twice_and_unused_columns(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.csv").write_text("x,y,q\n1,2,3\n")
    r = cli("grad", "--batch", "p.csv", "x*y", "y=5")
    assert r.code == 2 and r.out == ""
    assert "y is bound twice: it is a column of p.csv and bound on the command line" in r.err
    r = cli("grad", "--batch", "p.csv", "x*y")
    assert r.code == 0 and r.out == "f,d_x,d_y\n2.0,2.0,1.0\n"
    assert r.err == "warning: column q of p.csv is not used: the program has no variable q\n"


def test_unbound_variable_names_the_columns(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.csv").write_text("x,y\n1,2\n")
    r = cli("grad", "--batch", "p.csv", "x*y*z")
    assert r.code == 2
    assert r.err.startswith("error: unbound variable: z: not a column of p.csv "
                            "(columns: x, y) and not bound on the command line")


def test_batch_usage_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.csv").write_text("x\n1\n")
    for args, msg in [(["--batch", "p.csv", "--sweep", "x=0:1:2"], "not both"),
                      (["--format", "jsonl"], "--format jsonl is for many points"),
                      (["--keep-going"], "--keep-going goes with --batch"),
                      (["-o", "f.csv"], "-o FILE goes with --batch or --sweep")]:
        r = cli("grad", *args, "x*2", *([] if "--batch" in args or "--sweep" in args
                                          else ["x=1"]))
        assert r.code == 2 and r.out == "", r.err
        lines = r.err.splitlines()
        assert lines[0].startswith("error: ") and msg in lines[0], r.err
        assert lines[1].startswith("hint: "), r.err


def test_batch_table_for_people(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = cli("grad", "--sweep", "x=0:2:3", "--format", "table", "x*x")
    assert r.code == 0
    assert r.out.splitlines() == ["x   f   d_x", "───────────", "0   0     0", "1   1     2",
                                  "2   4     4"]


def test_missing_file_and_empty_input(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = cli("grad", "--batch", "nope.csv", "x")
    assert r.code == 2 and r.err == "error: --batch nope.csv: no such file\n"
    r = cli("grad", "--batch", "-", "x", input="")
    assert r.code == 2 and "empty" in r.err
    r = cli("grad", "--batch", "-", "x", input="x\n")
    assert r.code == 0 and r.out == "f,d_x\n"
