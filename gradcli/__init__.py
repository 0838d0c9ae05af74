"""gradcli: a command-line expression differentiator and gradient checker.

    import gradcli
    r = gradcli.grad("sum(tanh(W @ x + b))", W=W, x=x, b=b)
    r.value, r.gradients["W"]

The heavy parts (NumPy, the parser) load on first use, so ``gradcli --help`` stays quick.
"""
__version__ = "0.1.0"

__all__ = ["grad", "evaluate", "compile", "check", "check_ops", "load_ops", "GradcliError",
           "__version__"]


def __getattr__(name):
    if name in ("grad", "evaluate", "compile", "check", "check_ops", "load_ops"):
        from . import api

        return getattr(api, name)
    if name == "GradcliError":
        from .errors import GradcliError

        return GradcliError
    raise AttributeError(f"module 'gradcli' has no attribute {name!r}")
