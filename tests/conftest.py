"""Shared test helpers."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest


def numeric_grad(f, x, eps=1e-6):
    """Central differences of a scalar function f at array x (float64), element by element."""
    x = np.array(x, dtype=np.float64)
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + eps
        fp = float(np.sum(f(x)))
        x[idx] = old - eps
        fm = float(np.sum(f(x)))
        x[idx] = old
        g[idx] = (fp - fm) / (2 * eps)
    return g


@pytest.fixture(scope="session")
def gradcli_exe():
    """The installed console script (a real subprocess), else ``python -m gradcli``."""
    exe = shutil.which("gradcli", path=os.path.dirname(sys.executable)) or shutil.which("gradcli")
    return [exe] if exe else [sys.executable, "-m", "gradcli"]


def run(cmd, *args, input=None, cwd=None, env=None):
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run(list(cmd) + list(args), input=input, capture_output=True, text=True,
                          cwd=cwd, env=full_env, timeout=120)
