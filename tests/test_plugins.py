"""Custom ops (``--ops FILE``): forward/backward gate classes.

What is checked:

- examples/gates.py: every gate works in ``eval``, ``grad`` and ``check`` and gives exactly what
  the built-in equivalent gives; ``gradcli ops --ops`` lists them; each graph node gets its own
  instance (the same gate twice in one program);
- the self-check ``gradcli check --ops FILE`` (no EXPR): gates.py passes, buggy_gates.py fails
  exactly its five buggy gates, for several seeds;
- every class of broken ops file exits 2 with one ``error:`` message naming the op (and the
  file) and no traceback, in process and through the real console script;
- sampling hints: ``domain`` and ``shapes`` are honoured; ops without hints run at scalars.
"""
from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest

import gradcli
from conftest import BUGGY, GATES, Out, bad, cli, run
from gradcli import localcheck
from gradcli.parse import parse
from gradcli.plugins import OpsFileError, load_ops_files

GATE_NAMES = ["MultiplyGate", "SubtractGate", "SigmoidGate", "TanhGate", "MatMulGate",
              "AddBiasGate", "LogGate"]
BUGS = ["MultiplyGate", "SigmoidGate", "MatMulGate", "TanhGate", "AddBiasGate"]


def js(r, code=0):
    assert r.exception is None, repr(r.exception)
    assert r.code == code, f"exit {r.code}\nstdout:\n{r.out}\nstderr:\n{r.err}"
    return json.loads(r.out)


def ops_file(tmp_path, name, source):
    p = tmp_path / name
    p.write_text(textwrap.dedent(source))
    return str(p)


LIB = None


def gates_lib():
    global LIB
    if LIB is None:
        LIB = load_ops_files([GATES])
    return LIB


def G(program, **values):
    """gradcli.grad of a program that may call the gates of examples/gates.py."""
    return gradcli.grad(parse(program, gates_lib()), **values)


rng = np.random.default_rng(12345)
A = rng.standard_normal((3, 3))
B = rng.standard_normal((3, 3))
V = rng.standard_normal(3)
P = rng.uniform(0.5, 2.0, (2, 3))

# (gate program, built-in program, bindings)
EQUIVALENTS = [
    ("sum(MultiplyGate(a, b) * c)", "sum(a * b * c)", dict(a=A, b=B, c=V)),
    ("sum(SubtractGate(a, b) ** 2)", "sum((a - b) ** 2)", dict(a=A, b=B)),
    ("sum(SigmoidGate(x) * c)", "sum(sigmoid(x) * c)", dict(x=A, c=V)),
    ("sum(TanhGate(x) * c)", "sum(tanh(x) * c)", dict(x=A, c=V)),
    ("sum(MatMulGate(W, x) * c)", "sum((W @ x) * c)", dict(W=A, x=B, c=V)),
    ("sum(exp(AddBiasGate(x, b)))", "sum(exp(x + b))", dict(x=A, b=V)),
    ("sum(LogGate(x) * x)", "sum(log(x) * x)", dict(x=P)),
]


@pytest.mark.parametrize("gate_prog,builtin_prog,values", EQUIVALENTS,
                         ids=[g for g in GATE_NAMES])
def test_gates_equal_their_builtin_equivalents(gate_prog, builtin_prog, values):
    got = G(gate_prog, **values)
    want = gradcli.grad(builtin_prog, **values)
    assert float(got.value) == pytest.approx(float(want.value), rel=1e-12, abs=1e-12)
    assert set(got.gradients) == set(want.gradients)
    for name in want.gradients:
        assert got.gradients[name].shape == np.shape(values[name])
        np.testing.assert_allclose(got.gradients[name], want.gradients[name], rtol=1e-12,
                                   atol=1e-12)


def test_gates_in_eval_and_grad_commands():
    W, x = "W=[[1,2],[3,4]]", "x=[[0.5],[-1]]"
    r = js(cli("eval", "--format", "json", "--ops", GATES, "MatMulGate(W, x)", W, x))
    assert r["value"] == [[-1.5], [-2.5]] and r["shape"] == [2, 1]
    assert [n["op"] for n in r["nodes"]] == ["var", "var", "MatMulGate"]
    r = js(cli("eval", "--format", "json", "--ops", GATES, "MultiplyGate(a, b)",
               "a=[1,2]", "b=[3,-4]"))
    assert r["value"] == [3.0, -8.0]
    r = js(cli("eval", "--format", "json", "--ops", GATES, "SigmoidGate(x)", "x=0"))
    assert r["value"] == 0.5
    # grad, as in the docstring of gates.py
    g = js(cli("grad", "--format", "json", "--ops", GATES,
               "sum(SigmoidGate(MatMulGate(W, x)))", W, x))
    ref = js(cli("grad", "--format", "json", "sum(sigmoid(W @ x))", W, x))
    assert g["value"] == pytest.approx(ref["value"], rel=1e-12)
    for name in ("W", "x"):
        np.testing.assert_allclose(g["gradients"][name], ref["gradients"][name], rtol=1e-12)
    # the table shows the custom op too
    t = cli("grad", "--ops", GATES, "MultiplyGate(a, b)", "a=2", "b=3")
    assert t.code == 0 and "MultiplyGate" in t.out


@pytest.mark.parametrize("program,bindings", [
    ("sum(MultiplyGate(a, b) * c)", ["a=[1,2]", "b=[3,-1]", "c=[0.5,2]"]),
    ("sum(SubtractGate(a, b) ** 2)", ["a=[1,2]", "b=[3,-1]"]),
    ("sum(SigmoidGate(x) * c)", ["x=[0.5,-1.2,0.3]", "c=[0.7,-0.4,2]"]),
    ("sum(TanhGate(W @ x))", ["W=[[0.5,-1.2],[0.3,0.8]]", "x=[0.5,-1]"]),
    ("sum(tanh(MatMulGate(W, X)) * C)", ["W=[[0.5,-1.2],[0.3,0.8]]", "X=[[0.2,-0.4],[0.9,0.1]]",
                                         "C=[[1,2],[3,4]]"]),
    ("sum(sigmoid(AddBiasGate(X, b)) * C)", ["X=[[0.2,-0.4],[0.9,0.1]]", "b=[0.1,-0.2]",
                                             "C=[[1,2],[3,4]]"]),
    ("sum(LogGate(x) * c)", ["x=[0.5,2,3]", "c=[1,-1,2]"]),
], ids=GATE_NAMES)
def test_gates_pass_check(program, bindings):
    for method in ("central", "richardson"):
        d = js(cli("check", "--format", "json", "--method", method, "--ops", GATES, program,
                   *bindings))
        assert d["ok"] is True and d["blame"] == []
        assert all(r["status"] == "ok" for r in d["results"])


def test_ops_command_lists_the_gates():
    d = js(cli("ops", "--format", "json", "--ops", GATES))
    rows = {r["name"]: r for r in d["ops"]}
    for name in GATE_NAMES:
        assert name in rows
    assert rows["MultiplyGate"]["arity"] == 2 and rows["SigmoidGate"]["arity"] == 1
    assert rows["MultiplyGate"]["call"] == "MultiplyGate(x, y)"
    assert rows["MatMulGate"]["call"] == "MatMulGate(W, x)"
    assert "gates.py" in rows["TanhGate"]["derivative"]
    assert rows["LogGate"]["domain"] and "positive" in rows["LogGate"]["domain"]
    assert "tanh" in rows and "add" in rows  # the built-ins are still listed
    t = cli("ops", "--ops", GATES)
    assert t.code == 0
    for name in GATE_NAMES:
        assert name in t.out
    # without --ops they are not there
    assert "MultiplyGate" not in {r["name"] for r in js(cli("ops", "--format", "json"))["ops"]}


def test_same_gate_twice_gets_separate_instances():
    a, b, c = np.array([1.5, -2.0]), np.array([0.5, 3.0]), np.array([-1.0, 0.25])
    got = G("sum(MultiplyGate(MultiplyGate(a, b), c))", a=a, b=b, c=c)
    assert got.gradients["a"] == pytest.approx(b * c)
    assert got.gradients["b"] == pytest.approx(a * c)
    assert got.gradients["c"] == pytest.approx(a * b)
    assert float(got.value) == pytest.approx(float(np.sum(a * b * c)))
    # the same gate nested, and used again on the same input
    got = G("sum(TanhGate(TanhGate(x)) * TanhGate(x))", x=a)
    want = gradcli.grad("sum(tanh(tanh(x)) * tanh(x))", x=a)
    np.testing.assert_allclose(got.gradients["x"], want.gradients["x"], rtol=1e-12)
    d = js(cli("check", "--format", "json", "--ops", GATES,
               "sum(MultiplyGate(MultiplyGate(a, b), c))", "a=[1.5,-2]", "b=[0.5,3]",
               "c=[-1,0.25]"))
    assert d["ok"] is True


def test_an_instance_is_never_reused(tmp_path):
    f = ops_file(tmp_path, "once.py", """
        class OnceGate:
            def forward(self, x):
                if hasattr(self, "x"):
                    raise RuntimeError("instance reused")
                self.x = x
                return 2 * x

            def backward(self, dz):
                if getattr(self, "done", False):
                    raise RuntimeError("backward twice on one instance")
                self.done = True
                return [2 * dz]
        """)
    d = js(cli("grad", "--format", "json", "--ops", f, "OnceGate(OnceGate(x)) + OnceGate(x)",
               "x=1.5"))
    assert d["value"] == 9.0 and d["gradients"]["x"] == 6.0
    for extra in ([], ["--fast"], ["--method", "complex"], ["--jacobian"]):
        d = js(cli("check", "--format", "json", "--ops", f, *extra,
                   "OnceGate(OnceGate(x)) * x", "x=[1.5,2]"))
        assert d["ok"] is True, extra
    assert js(cli("check", "--format", "json", "--ops", f))["ok"] is True


def test_name_attribute_renames_the_op(tmp_path):
    f = ops_file(tmp_path, "named.py", """
        class Whatever:
            name = "double"
            def forward(self, x):
                return 2 * x
            def backward(self, dz):
                return [2 * dz]
        """)
    d = js(cli("grad", "--format", "json", "--ops", f, "sum(double(x))", "x=[1,2]"))
    assert d["gradients"]["x"] == [2.0, 2.0]
    r = cli("eval", "--ops", f, "Whatever(x)", "x=1")
    assert r.code == 2 and "Whatever" in r.err


# ---------------------------------------------------------------- the self-check

def test_self_check_of_correct_gates_passes():
    r = cli("check", "--ops", GATES)
    assert r.code == 0, r
    assert "PASS: 7 of 7 ops agree" in r.out
    d = js(cli("check", "--format", "json", "--ops", GATES))
    assert d["ok"] is True
    assert [o["name"] for o in d["ops"]] == GATE_NAMES
    assert all(o["status"] == "ok" for o in d["ops"])
    assert all(r["status"] == "ok" for r in d["results"])


@pytest.mark.parametrize("seed", [0, 1, 7, 42, 2024])
def test_self_check_names_exactly_the_five_buggy_gates(seed):
    d = js(cli("check", "--format", "json", "--seed", seed, "--ops", BUGGY), code=1)
    assert d["ok"] is False
    status = {o["name"]: o["status"] for o in d["ops"]}
    assert sorted(n for n, s in status.items() if s == "fail") == sorted(BUGS)
    assert status["SubtractGate"] == "ok" and status["LogGate"] == "ok"
    # the wrong argument, not both, for the gates whose bug is in one gradient
    by = {o["name"]: {i["input"]: i["status"] for i in o["inputs"]} for o in d["ops"]}
    assert by["MatMulGate"] == {"W": "fail", "x": "ok"}
    assert by["AddBiasGate"] == {"x": "ok", "b": "fail"}
    assert by["MultiplyGate"] == {"x": "fail", "y": "fail"}


def test_self_check_table_and_csv():
    r = cli("check", "--ops", BUGGY)
    assert r.code == 1
    assert "FAIL: 5 of 7 ops disagree" in r.out
    for name in BUGS:
        assert name in r.out.split("FAIL:")[1]
    c = cli("check", "--format", "csv", "--ops", BUGGY)
    assert c.code == 1
    lines = c.out.splitlines()
    assert lines[0] == "op,wrt,index,analytic,numeric,abs_err,rel_err,status"
    assert {line.split(",")[0] for line in lines[1:]} == set(GATE_NAMES)


def test_self_check_is_repeatable_for_a_seed():
    a = cli("check", "--format", "json", "--seed", "5", "--ops", GATES)
    b = cli("check", "--format", "json", "--seed", "5", "--ops", GATES)
    c = cli("check", "--format", "json", "--seed", "6", "--ops", GATES)
    assert a.out == b.out
    assert a.out != c.out


def test_self_check_uses_a_random_upstream():
    """A backward that forgets dz is caught by the self-check at every seed."""
    for seed in range(5):
        lib = load_ops_files([BUGGY])
        rep = localcheck.check_ops(lib, seed=seed)
        status = {o["name"]: o["status"] for o in rep.ops}
        assert status["SigmoidGate"] == "fail"


def test_self_check_through_real_subprocess(gradcli_exe, tmp_path):
    p = run(gradcli_exe, "check", "--ops", GATES, cwd=tmp_path)
    assert p.returncode == 0 and "PASS" in p.stdout and "Traceback" not in p.stderr
    p = run(gradcli_exe, "check", "--format", "json", "--ops", BUGGY, cwd=tmp_path)
    assert p.returncode == 1
    d = json.loads(p.stdout)
    assert sorted(o["name"] for o in d["ops"] if o["status"] == "fail") == sorted(BUGS)


# ---------------------------------------------------------------- broken ops files

GOOD = """
    class Fine:
        def forward(self, x):
            return x
        def backward(self, dz):
            return [dz]
    """

# (case id, file name, source, expression to use it with or None, bindings,
#  fragments the message must contain)
BROKEN = [
    ("syntax", "syn.py", """
        import numpy as np

        class A:
            def forward(self, x)
                return x
        """, None, [], ["syn.py", "syntax error", "line 5"]),
    ("load-exception", "loaderr.py", """
        import numpy as np
        raise RuntimeError("cannot load the weights")
        """, None, [], ["loaderr.py", "RuntimeError: cannot load the weights", "line 3"]),
    ("no-backward", "nobwd.py", """
        class HalfGate:
            def forward(self, x):
                return x
        """, None, [], ["nobwd.py", "HalfGate", "no backward"]),
    ("no-forward", "nofwd.py", """
        class HalfGate:
            def backward(self, dz):
                return [dz]
        """, None, [], ["nofwd.py", "HalfGate", "no forward"]),
    ("forward-raises", "fwdexc.py", """
        class BoomGate:
            def forward(self, x):
                raise ValueError("boom in forward")
            def backward(self, dz):
                return [dz]
        """, "sum(BoomGate(x))", ["x=[1,2]"],
     ["fwdexc.py", "BoomGate", "forward", "ValueError: boom in forward"]),
    ("backward-raises", "bwdexc.py", """
        class BoomGate:
            def forward(self, x):
                return x * 2
            def backward(self, dz):
                raise ValueError("boom in backward")
        """, "sum(BoomGate(x))", ["x=[1,2]"],
     ["bwdexc.py", "BoomGate", "backward", "ValueError: boom in backward"]),
    ("gradient-count", "count.py", """
        class PairGate:
            def forward(self, x, y):
                return x * y
            def backward(self, dz):
                return [dz]
        """, "sum(PairGate(x, y))", ["x=[1,2]", "y=[3,4]"],
     ["PairGate", "backward", "1 gradient for 2 inputs"]),
    ("gradient-shape", "shape.py", """
        import numpy as np
        class SumGate:
            def forward(self, x):
                return np.sum(x)
            def backward(self, dz):
                return [np.ones(5) * dz]
        """, "SumGate(x)", ["x=[1,2]"],
     ["SumGate", "backward", "(5,)", "(2,)"]),
    ("forward-non-number", "nonnum.py", """
        class StrGate:
            def forward(self, x):
                return "hello"
            def backward(self, dz):
                return [dz]
        """, "sum(StrGate(x))", ["x=[1,2]"], ["StrGate", "forward", "str"]),
    ("clash-class", "clash1.py", """
        class sin:
            def forward(self, x):
                return x
            def backward(self, dz):
                return [dz]
        """, None, [], ["clash1.py", "sin", "built-in"]),
    ("clash-name", "clash2.py", """
        class MyTanh:
            name = "tanh"
            def forward(self, x):
                return x
            def backward(self, dz):
                return [dz]
        """, None, [], ["clash2.py", "tanh", "built-in"]),
    ("clash-constant", "clash3.py", """
        class MyPi:
            name = "pi"
            def forward(self, x):
                return x
            def backward(self, dz):
                return [dz]
        """, None, [], ["clash3.py", "pi", "built-in"]),
    ("bad-name", "badname.py", """
        class Odd:
            name = "not a name"
            def forward(self, x):
                return x
            def backward(self, dz):
                return [dz]
        """, None, [], ["badname.py", "not a name"]),
    ("shapes-count", "shapes1.py", """
        class S:
            shapes = [(3,)]
            def forward(self, x, y):
                return x * y
            def backward(self, dz):
                return [dz, dz]
        """, None, [], ["shapes1.py", "op S", "shapes", "1 shapes for 2 inputs"]),
    ("shapes-not-shapes", "shapes2.py", """
        class S:
            shapes = ["abc"]
            def forward(self, x):
                return x
            def backward(self, dz):
                return [dz]
        """, None, [], ["shapes2.py", "op S", "shapes"]),
    ("shapes-not-a-list", "shapes3.py", """
        class S:
            shapes = 5
            def forward(self, x):
                return x
            def backward(self, dz):
                return [dz]
        """, None, [], ["shapes3.py", "op S", "shapes"]),
    ("domain-word", "domain1.py", """
        class D:
            domain = ["bogus"]
            def forward(self, x):
                return x
            def backward(self, dz):
                return [dz]
        """, None, [], ["domain1.py", "op D", "domain", "bogus"]),
    ("domain-count", "domain2.py", """
        class D:
            domain = ["real", "positive"]
            def forward(self, x):
                return x
            def backward(self, dz):
                return [dz]
        """, None, [], ["domain2.py", "op D", "domain", "2 entries for 1 inputs"]),
    ("domain-empty-range", "domain3.py", """
        class D:
            domain = [(2, 1)]
            def forward(self, x):
                return x
            def backward(self, dz):
                return [dz]
        """, None, [], ["domain3.py", "op D", "domain", "(2, 1)"]),
    ("no-ops", "empty.py", """
        import numpy as np
        X = 1
        """, None, [], ["empty.py", "no class with forward and backward"]),
    ("varargs", "varargs.py", """
        class V:
            def forward(self, *xs):
                return xs[0]
            def backward(self, dz):
                return [dz]
        """, None, [], ["varargs.py", "op V", "*args"]),
]


def _cases_for(mode):
    out = []
    for case in BROKEN:
        cid, fname, src, expr, bindings, frags = case
        if mode == "expr" and expr is None:
            expr, bindings = "x * 2", ["x=1"]  # the file is broken whatever the program
        out.append(pytest.param(fname, src, expr, bindings, frags, id=cid))
    return out


@pytest.mark.parametrize("fname,src,expr,bindings,frags", _cases_for("expr"))
def test_broken_ops_file_in_a_program(tmp_path, fname, src, expr, bindings, frags):
    f = ops_file(tmp_path, fname, src)
    for cmd in ("grad", "check"):
        bad(cli(cmd, "--ops", f, expr, *bindings), *frags)


@pytest.mark.parametrize("fname,src,expr,bindings,frags", _cases_for("self"))
def test_broken_ops_file_in_the_self_check(tmp_path, fname, src, expr, bindings, frags):
    f = ops_file(tmp_path, fname, src)
    # the self-check picks its own shapes: () here, not the program's (2,)
    skip = {"(5,)", "(2,)"}
    bad(cli("check", "--ops", f), *[x for x in frags if x not in skip])


def test_forward_failure_at_every_shape_in_the_self_check(tmp_path):
    f = ops_file(tmp_path, "fwdexc.py", """
        class BoomGate:
            def forward(self, x):
                raise ValueError("boom in forward")
            def backward(self, dz):
                return [dz]
        """)
    err = bad(cli("check", "--ops", f), "BoomGate", "forward", "boom in forward")
    assert err.count("\n") <= 3


@pytest.mark.parametrize("case", ["gradient-count", "gradient-shape", "forward-non-number",
                                  "forward-raises"])
def test_every_bad_op_message_names_the_file(tmp_path, case):
    (cid, fname, src, expr, bindings, frags), = [c for c in BROKEN if c[0] == case]
    f = ops_file(tmp_path, fname, src)
    bad(cli("grad", "--ops", f, expr, *bindings), fname)
    bad(cli("check", "--ops", f), fname)


def test_missing_ops_file(tmp_path):
    missing = str(tmp_path / "nope.py")
    for args in (["check"], ["check", "x*2", "x=1"], ["grad", "x*2", "x=1"], ["ops"]):
        bad(cli(args[0], "--ops", missing, *args[1:]), "nope.py", "no such file")


def test_gradient_shape_message_names_both_shapes(tmp_path):
    f = ops_file(tmp_path, "shape.py", """
        import numpy as np
        class SumGate:
            def forward(self, x):
                return np.sum(x)
            def backward(self, dz):
                return [np.ones(5) * dz]
        """)
    err = bad(cli("grad", "--ops", f, "SumGate(W)", "W=[[1,2,3],[4,5,6]]"))
    assert "(5,)" in err and "(2, 3)" in err
    assert "SumGate" in err


def test_the_ops_own_message_and_line_appear(tmp_path):
    f = ops_file(tmp_path, "bwdexc.py", """
        class BoomGate:
            def forward(self, x):
                return x * 2

            def backward(self, dz):
                raise KeyError("the cache is empty")
        """)
    err = bad(cli("grad", "--ops", f, "BoomGate(x)", "x=1"))
    assert "the cache is empty" in err and "KeyError" in err and "line 7" in err
    # eval does not run backward: fine
    assert cli("eval", "--ops", f, "BoomGate(x)", "x=1").code == 0


def test_same_op_in_two_files(tmp_path):
    one = ops_file(tmp_path, "one.py", GOOD.replace("Fine", "DupGate"))
    two = ops_file(tmp_path, "two.py", GOOD.replace("Fine", "DupGate"))
    for args in (["check"], ["grad", "DupGate(x)", "x=1"], ["ops"]):
        bad(cli(args[0], "--ops", one, "--ops", two, *args[1:]),
            "DupGate", "defined twice", "one.py", "two.py")
    # the same gates file twice is also a clash, and so is a gate shadowing another file's
    bad(cli("check", "--ops", GATES, "--ops", BUGGY), "MultiplyGate", "defined twice")


def test_two_files_with_different_ops_work_together(tmp_path):
    f = ops_file(tmp_path, "more.py", GOOD.replace("Fine", "IdentityGate"))
    d = js(cli("grad", "--format", "json", "--ops", GATES, "--ops", f,
               "sum(IdentityGate(MultiplyGate(a, b)))", "a=[1,2]", "b=[3,4]"))
    assert d["gradients"] == {"a": [3.0, 4.0], "b": [1.0, 2.0]}
    d = js(cli("check", "--format", "json", "--ops", GATES, "--ops", f))
    assert {o["name"] for o in d["ops"]} == set(GATE_NAMES) | {"IdentityGate"}


def test_wrong_arity_call_is_a_clear_error():
    r = cli("eval", "--ops", GATES, "MultiplyGate(a)", "a=1")
    bad(r, "MultiplyGate")


def test_domain_pair_of_non_numbers(tmp_path):
    f = ops_file(tmp_path, "domain4.py", """
        class D:
            domain = [("a", "b")]
            def forward(self, x):
                return x
            def backward(self, dz):
                return [dz]
        """)
    bad(cli("check", "--ops", f), "domain4.py", "op D", "domain")


def test_load_ops_files_raises_ops_file_error(tmp_path):
    with pytest.raises(OpsFileError, match="no such file"):
        load_ops_files([str(tmp_path / "missing.py")])
    f = ops_file(tmp_path, "clash.py", GOOD.replace("Fine", "exp"))
    with pytest.raises(OpsFileError, match="clashes with the built-in exp"):
        load_ops_files([f])
    lib = load_ops_files([GATES])
    assert sorted(lib.custom) == sorted(GATE_NAMES)
    assert lib.lookup("MultiplyGate", 2) is not None
    assert lib.lookup("MultiplyGate", 3) is None


def test_broken_ops_files_through_real_subprocess(gradcli_exe, tmp_path):
    syn = ops_file(tmp_path, "syn.py", "class A:\n    def forward(self, x)\n        return x\n")
    shp = ops_file(tmp_path, "shape.py", """
        import numpy as np
        class SumGate:
            def forward(self, x):
                return np.sum(x)
            def backward(self, dz):
                return [np.ones(5) * dz]
        """)
    clash = ops_file(tmp_path, "clash.py", GOOD.replace("Fine", "sin"))
    bwd = ops_file(tmp_path, "bwd.py", """
        class BoomGate:
            def forward(self, x):
                return x
            def backward(self, dz):
                raise ValueError("boom in backward")
        """)
    for args, frags in [
            (["check", "--ops", syn], ["syn.py", "line 2"]),
            (["check", "--ops", str(tmp_path / "missing.py")], ["missing.py"]),
            (["grad", "--ops", shp, "SumGate(x)", "x=[1,2]"], ["SumGate", "(5,)", "(2,)"]),
            (["check", "--ops", clash], ["clash.py", "sin"]),
            (["check", "--ops", bwd, "sum(BoomGate(x))", "x=[1,2]"],
             ["bwd.py", "BoomGate", "boom in backward"])]:
        p = run(gradcli_exe, *args, cwd=tmp_path)
        bad(Out(p.returncode, p.stdout, p.stderr), *frags)


# ---------------------------------------------------------------- sampling hints

HINTED = """
    import numpy as np

    SEEN = {"SqrtGate": [], "RangeGate": [], "DotGate": [], "PlainGate": []}


    class SqrtGate:
        domain = ["positive"]

        def forward(self, x):
            SEEN["SqrtGate"].append(np.array(x, dtype=float))
            if np.any(x <= 0):
                raise ValueError("SqrtGate needs positive input")
            self.y = np.sqrt(x)
            return self.y

        def backward(self, dz):
            return [dz / (2 * self.y)]


    class RangeGate:
        domain = [(2, 3)]

        def forward(self, x):
            SEEN["RangeGate"].append(np.array(x, dtype=float))
            if np.any(x <= 2) or np.any(x >= 3):
                raise ValueError("RangeGate needs 2 < x < 3")
            self.x = x
            return np.log(x - 2) + np.log(3 - x)

        def backward(self, dz):
            return [dz * (1 / (self.x - 2) - 1 / (3 - self.x))]


    class DotGate:
        shapes = [(4,), (4,)]

        def forward(self, x, y):
            SEEN["DotGate"].append((np.shape(x), np.shape(y)))
            assert np.shape(x) == (4,) and np.shape(y) == (4,), "DotGate wants 4-vectors"
            self.x, self.y = x, y
            return x @ y

        def backward(self, dz):
            return [dz * self.y, dz * self.x]


    class VecGate:
        def forward(self, x):
            if np.ndim(x) == 0:
                raise ValueError("VecGate needs a vector")
            self.x = x
            return x * x

        def backward(self, dz):
            return [2 * self.x * dz]


    class PlainGate:
        def forward(self, x, y):
            SEEN["PlainGate"].append((np.shape(x), np.shape(y)))
            self.x, self.y = x, y
            return x * y + x

        def backward(self, dz):
            return [_sum_to((self.y + 1) * dz, np.shape(self.x)),
                    _sum_to(self.x * dz, np.shape(self.y))]

    def _sum_to(g, shape):
        while g.ndim > len(shape):
            g = g.sum(axis=0)
        for axis, n in enumerate(shape):
            if n == 1 and g.shape[axis] != 1:
                g = g.sum(axis=axis, keepdims=True)
        return g
    """


def SEEN_SHAPES(d, op):
    """The (x shape, y shape) pairs the self-check ran a two-input op at, from its rows."""
    shapes, cur = set(), {}
    for r in d["results"]:
        if r["op"] != op:
            continue
        cur.setdefault(r["wrt"], []).append(tuple(r["index"]))
    # rows come per try: x's indices then y's; rebuild each try's shapes from the index runs
    def runs(idx):
        out, block = [], []
        for i in idx:
            if block and (len(i) != len(block[-1]) or i <= block[-1]):
                out.append(block)
                block = []
            block.append(i)
        out.append(block)
        return [tuple(np.max(np.array(b), axis=0) + 1) if b[0] != () else () for b in out]
    return set(zip(runs(cur["x"]), runs(cur["y"])))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_sampling_hints_are_honoured(tmp_path, seed):
    f = ops_file(tmp_path, "hinted.py", HINTED)
    d = js(cli("check", "--format", "json", "--seed", seed, "--ops", f))
    assert d["ok"] is True
    status = {o["name"]: o["status"] for o in d["ops"]}
    assert status == {"SqrtGate": "ok", "RangeGate": "ok", "DotGate": "ok", "VecGate": "ok",
                      "PlainGate": "ok"}
    rows = {}
    for r in d["results"]:
        rows.setdefault((r["op"], r["wrt"]), []).append(tuple(r["index"]))
    # shapes = [(4,), (4,)]: four elements per input
    assert rows[("DotGate", "x")] == rows[("DotGate", "y")] == [(0,), (1,), (2,), (3,)]
    # no shape hint: every shape the forward takes, scalars, vectors and matrices
    every = [()] + [(i,) for i in range(3)] + [(i, j) for i in range(2) for j in range(3)]
    assert rows[("PlainGate", "x")][:len(every)] == rows[("PlainGate", "y")][:len(every)] \
        == every
    # ... and pairs that broadcast: x (3,) with y (2, 3), (1, 3) with (3, 1), a scalar and a
    # matrix, both ways round
    assert SEEN_SHAPES(d, "PlainGate") >= {((3,), (2, 3)), ((2, 3), (3,)), ((1, 3), (3, 1)),
                                           ((), (2, 3)), ((2, 3), ())}
    assert rows[("SqrtGate", "x")] == every
    # ... and where scalars do not work, the others still are checked
    assert rows[("VecGate", "x")] == every[1:]


def test_sampled_values_respect_the_domain(tmp_path):
    f = ops_file(tmp_path, "hinted.py", HINTED)
    for seed in range(3):
        lib = load_ops_files([f])
        module_seen = lib.custom["SqrtGate"].gate.forward.__globals__["SEEN"]
        rep = localcheck.check_ops(lib, seed=seed)
        assert all(o["status"] == "ok" for o in rep.ops)
        sq = np.concatenate([np.ravel(x) for x in module_seen["SqrtGate"]])
        rg = np.concatenate([np.ravel(x) for x in module_seen["RangeGate"]])
        assert sq.size and (sq > 0).all()
        assert rg.size and ((rg > 2) & (rg < 3)).all()
        assert set(module_seen["DotGate"]) == {((4,), (4,))}
        assert set(module_seen["PlainGate"]) >= {((), ()), ((3,), (3,)), ((2, 3), (2, 3))}


def test_without_the_domain_hint_a_positive_only_gate_can_fail_to_sample(tmp_path):
    # the same gate with no hint is sampled at negative values too: the self-check says so
    f = ops_file(tmp_path, "nohint.py", """
        import numpy as np
        class SqrtGate:
            def forward(self, x):
                if np.any(x <= 0):
                    raise ValueError("SqrtGate needs positive input")
                self.y = np.sqrt(x)
                return self.y
            def backward(self, dz):
                return [dz / (2 * self.y)]
        """)
    codes = set()
    for seed in range(6):
        r = cli("check", "--seed", seed, "--ops", f)
        codes.add(r.code)
        if r.code == 2:
            bad(r, "SqrtGate", "needs positive input")
    assert 2 in codes  # at least one seed hits a negative sample at every shape


def test_domain_string_applies_to_every_input(tmp_path):
    f = ops_file(tmp_path, "both.py", """
        import numpy as np
        class LogProd:
            domain = "positive"
            def forward(self, x, y):
                if np.any(x <= 0) or np.any(y <= 0):
                    raise ValueError("positive only")
                self.x, self.y = x, y
                return np.log(x * y)
            def backward(self, dz):
                return [_sum_to(dz / self.x, np.shape(self.x)),
                        _sum_to(dz / self.y, np.shape(self.y))]
        def _sum_to(g, shape):
            while g.ndim > len(shape):
                g = g.sum(axis=0)
            for axis, n in enumerate(shape):
                if n == 1 and g.shape[axis] != 1:
                    g = g.sum(axis=axis, keepdims=True)
            return g
        """)
    for seed in range(3):
        assert js(cli("check", "--format", "json", "--seed", seed, "--ops", f))["ok"] is True


# ---------------------------------------------------------------- PyTorch absent; bad attributes

TORCH_FILE = """
import torch
class Twice(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return 2 * x
    @staticmethod
    def backward(ctx, g):
        return 2 * g
"""


def test_a_torch_ops_file_without_torch_says_how_to_install_it(tmp_path, gradcli_exe):
    import os
    import sys

    f = tmp_path / "tops.py"
    f.write_text(TORCH_FILE)
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "torch.py").write_text("raise ImportError('no torch here')\n")
    env = {"PYTHONPATH": str(hide) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for args in (["check", "--ops", str(f)], ["check", "--ops", str(f), "Twice(x)", "x=1"],
                 ["ops", "--ops", str(f)]):
        p = run(gradcli_exe, *args, env=env)
        assert p.returncode == 2, (args, p.stdout, p.stderr)
        assert "pip install 'gradcli[torch]'" in p.stderr and "Traceback" not in p.stderr
        assert p.stderr.startswith("error: ") and p.stdout == ""
    # a file without torch never imports it
    p = run([sys.executable, "-c", "import sys, gradcli; gradcli.load_ops(sys.argv[1]); "
             "print('torch' in sys.modules)", GATES], env=env)
    assert p.stdout.strip() == "False", p.stderr


@pytest.mark.parametrize("attr,words", [
    ("shapes = [(-3,)]", "negative"),
    ("shapes = [(10**6, 10**6)]", "at most"),
    ("shapes = 5", "shapes must be a list"),
    ("domain = [(0, float('inf'))]", "finite"),
    ("domain = 5", "domain entries"),
    ("domain = [(1, 0)]", "domain entries"),
    ("domain = ['sideways']", "domain entries"),
])
def test_ops_file_attributes_out_of_range_are_clear_errors(tmp_path, attr, words):
    f = ops_file(tmp_path, "attrs.py", f"""
        import numpy as np
        class G:
            {attr}
            def forward(self, x):
                return x * 2
            def backward(self, dz):
                return [2 * dz]
        """)
    for args in (["check", "--ops", f], ["ops", "--ops", f], ["check", "--ops", f, "G(x)",
                                                              "x=1"]):
        bad(cli(*args), "attrs.py", words)


def test_ops_files_that_are_not_regular_files_are_refused(tmp_path):
    import os

    fifo = tmp_path / "fifo.py"
    os.mkfifo(fifo)
    for path, words in (("/dev/zero", "not a regular file"), (str(fifo), "FIFO"),
                        (str(tmp_path), "directory")):
        bad(cli("check", "--ops", path, "x*2", "x=1"), words)
        bad(cli("check", "--ops", path), words)


def test_an_ops_file_over_the_size_cap_is_refused(tmp_path):
    f = tmp_path / "big.py"
    f.write_text("# " + "x" * (17 << 20) + "\n")
    bad(cli("check", "--ops", str(f)), "big.py", "at most")


@pytest.mark.parametrize("ret,kind", [("x * 1j", "complex"), ("x > 0", "bool")])
def test_an_op_returning_the_wrong_dtype_is_bad_input_in_check(tmp_path, ret, kind):
    f = ops_file(tmp_path, "dtype.py", f"""
        import numpy as np
        class Odd:
            def forward(self, x):
                return {ret}
            def backward(self, dz):
                return [dz]
        """)
    r = cli("check", "--ops", f, "sum(Odd(x))", "x=[1,2]")
    bad(r, "Odd")
    assert "dtype" in r.err or kind in r.err


def test_each_broken_op_is_reported_once_and_the_others_still_checked(tmp_path):
    f = ops_file(tmp_path, "mixed.py", """
        import numpy as np
        class Boom:
            def forward(self, x):
                raise ValueError("boom in forward")
            def backward(self, dz):
                return [dz]
        class TwoGrads:
            def forward(self, x):
                return x * 2
            def backward(self, dz):
                return [2 * dz, dz]
        class Fine:
            def forward(self, x):
                return x * 3
            def backward(self, dz):
                return [3 * dz]
        class Wrong:
            def forward(self, x):
                return x * 3
            def backward(self, dz):
                return [2 * dz]
        """)
    r = cli("check", "--ops", f)
    bad(r, "Boom", "TwoGrads")
    assert r.err.count("boom in forward") == 1          # once, not once per shape
    assert "every shape tried" in r.err
    assert r.err.count("returned 2 gradients") == 1
    assert "the other 2 checked: 1 disagree: Wrong" in r.err


def test_a_backward_that_does_not_sum_over_broadcast_axes_fails_the_self_check(tmp_path):
    f = ops_file(tmp_path, "bcast.py", """
        class Mul:
            def forward(self, x, y):
                self.x, self.y = x, y
                return x * y
            def backward(self, dz):
                return [self.y * dz, self.x * dz]     # right only when shapes are equal
        """)
    r = cli("check", "--ops", f)
    assert r.code == 1, r.out + r.err
    assert "which its forward broadcasts" in r.out and "sum over the broadcast axes" in r.out
    assert r.out.count("which its forward broadcasts") == 1   # said once for the op
    d = json.loads(cli("check", "--format", "json", "--ops", f).out)
    assert d["ops"][0]["status"] == "fail" and d["ops"][0]["problems"]
