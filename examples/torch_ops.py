"""Custom ops written as torch.autograd.Function subclasses, the form PyTorch users write.

    pip install 'gradcli[torch]'
    gradcli check --ops examples/torch_ops.py                       # self-check every op
    gradcli check --ops examples/torch_ops.py 'sum(Swish(W @ x))' W=[[1,2],[3,4]] x=[0.5,-1]

gradcli runs each on float64 tensors through PyTorch's own machinery (ctx, save_for_backward)
and checks it like any gate: element by element, blame inside an expression, and on its own
with a random upstream gradient.  LeakyTanh's backward forgets to multiply by grad_output,
a bug an upstream gradient of ones hides; the check finds it anyway.
"""
import torch


class Swish(torch.autograd.Function):
    """x * sigmoid(x)."""

    @staticmethod
    def forward(ctx, x):
        s = torch.sigmoid(x)
        ctx.save_for_backward(x, s)
        return x * s

    @staticmethod
    def backward(ctx, grad):
        x, s = ctx.saved_tensors
        return grad * (s + x * s * (1 - s))


class ScaledProduct(torch.autograd.Function):
    """a * b * 2, elementwise (with broadcasting)."""

    @staticmethod
    def forward(ctx, a, b):
        ctx.save_for_backward(a, b)
        return 2 * a * b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        ga, gb = 2 * b * grad, 2 * a * grad
        # back to each input's shape: sum over the axes it was broadcast along
        return ga.sum_to_size(a.shape), gb.sum_to_size(b.shape)


class LeakyTanh(torch.autograd.Function):
    """tanh(x) + 0.1 x, with a bug: the backward ignores grad_output."""

    @staticmethod
    def forward(ctx, x):
        t = torch.tanh(x)
        ctx.save_for_backward(t)
        return t + 0.1 * x

    @staticmethod
    def backward(ctx, grad):
        (t,) = ctx.saved_tensors
        return 1 - t * t + 0.1          # BUG: should be (1 - t * t + 0.1) * grad
