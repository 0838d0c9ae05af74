"""The Python API's conveniences: ops= as a path or paths, as the README shows."""
from __future__ import annotations

import pathlib

import numpy as np
import pytest

import gradcli

GATES = pathlib.Path(__file__).resolve().parent.parent / "examples" / "gates.py"


@pytest.mark.parametrize("ops", [str(GATES), GATES, [str(GATES)], (GATES,)],
                         ids=["str", "path", "list", "tuple"])
def test_ops_as_a_path_or_a_list_of_paths(ops):
    r = gradcli.grad("MultiplyGate(a, b)", a=2, b=3, ops=ops)
    assert {k: float(v) for k, v in r.gradients.items()} == pytest.approx({"a": 3.0, "b": 2.0})
    assert gradcli.check("sum(MultiplyGate(a, b))", a=[1.0, 2.0], b=[3.0, 4.0], ops=ops).ok
    np.testing.assert_allclose(gradcli.evaluate("MultiplyGate(a, b)", a=2, b=3, ops=ops).value,
                               6.0)


def test_ops_from_a_missing_file_is_a_gradcli_error(tmp_path):
    with pytest.raises(gradcli.GradcliError, match="nope.py"):
        gradcli.grad("f(a)", a=1, ops=str(tmp_path / "nope.py"))
