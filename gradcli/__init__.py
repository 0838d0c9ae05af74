"""gradcli: a command-line expression differentiator and gradient checker.

    import gradcli
    r = gradcli.grad("sum(tanh(W @ x + b))", W=W, x=x, b=b)
    r.value, r.gradients["W"]

The heavy parts (NumPy, the parser) load on first use, so ``gradcli --help`` stays quick.
"""
__version__ = "0.1.0"

#: public name -> the module (under gradcli) that defines it, imported on first use.
_API = {
    "grad": "api", "evaluate": "api", "compile": "api", "check": "api", "check_ops": "api",
    "load_ops": "api",
    "GradcliError": "errors",
    "batch": "batching",            # the chunk kernel of --batch: arrays in, arrays out
    "dot": "render.dot",            # DOT text of a program's graph
    "show": "render.html",          # the step-through page
    "diff": "symbolic",             # derivatives as expressions
    "hessian": "symbolic",
    "descend": "training",          # gradient descent
}

__all__ = [*_API, "__version__"]


def __getattr__(name):
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'gradcli' has no attribute {name!r}")
    import importlib

    try:
        mod = importlib.import_module(f"{__name__}.{module}")
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{module}":
            raise
        raise AttributeError(f"module 'gradcli' has no attribute {name!r} (not built yet)") \
            from None
    return getattr(mod, name)
