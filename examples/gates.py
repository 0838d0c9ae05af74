"""Custom ops for gradcli, written as forward/backward gates (all correct).

    gradcli check --ops examples/gates.py          # self-check every op here
    gradcli grad --ops examples/gates.py 'sum(SigmoidGate(MatMulGate(W, x)))' \
        W=[[1,2],[3,4]] x=[[0.5],[-1]]

Each class with forward and backward methods is an op, called by its class name (or its
``name`` attribute).  Each node of a graph gets its own instance, so forward can keep what
backward needs.  backward gets the upstream gradient and returns one downstream gradient
per input, each of that input's shape.
"""
import numpy as np


def unbroadcast(g, shape):
    """Sum a gradient over the axes its input was broadcast along, back to ``shape``."""
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    for axis, n in enumerate(shape):
        if n == 1 and g.shape[axis] != 1:
            g = g.sum(axis=axis, keepdims=True)
    return g


class MultiplyGate:
    """x * y, elementwise."""

    def forward(self, x, y):
        self.x, self.y = x, y
        return x * y

    def backward(self, dz):
        return [unbroadcast(self.y * dz, np.shape(self.x)),
                unbroadcast(self.x * dz, np.shape(self.y))]


class SubtractGate:
    """x - y, elementwise."""

    def forward(self, x, y):
        self.shapes = np.shape(x), np.shape(y)
        return x - y

    def backward(self, dz):
        return [unbroadcast(dz, self.shapes[0]), unbroadcast(-dz, self.shapes[1])]


class SigmoidGate:
    """1 / (1 + exp(-x))."""

    def forward(self, x):
        self.s = 1 / (1 + np.exp(-x))
        return self.s

    def backward(self, dz):
        return [self.s * (1 - self.s) * dz]


class TanhGate:
    """tanh(x)."""

    def forward(self, x):
        self.t = np.tanh(x)
        return self.t

    def backward(self, dz):
        return [(1 - self.t ** 2) * dz]


class MatMulGate:
    """W @ x for matrices."""

    shapes = [(3, 3), (3, 3)]

    def forward(self, W, x):
        self.W, self.x = W, x
        return W @ x

    def backward(self, dz):
        return [dz @ self.x.T, self.W.T @ dz]


class AddBiasGate:
    """x + b, with a bias row b broadcast over the rows of x."""

    shapes = [(3, 3), (3,)]

    def forward(self, x, b):
        return x + b

    def backward(self, dz):
        return [dz, dz.sum(axis=0)]


class LogGate:
    """log(x), for positive x."""

    domain = ["positive"]

    def forward(self, x):
        self.x = x
        return np.log(x)

    def backward(self, dz):
        return [dz / self.x]
