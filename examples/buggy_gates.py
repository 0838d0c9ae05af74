"""The gates of gates.py, five of them with a classic backward bug each.

    gradcli check --ops examples/buggy_gates.py     # names the five wrong ops, exit 1

The bugs (each shape is still right, so only a numeric check can catch them):
  MultiplyGate  inputs swapped: returns x * dz for x and y * dz for y
  SigmoidGate   missing chain rule: forgets to multiply by the upstream gradient dz
  MatMulGate    missing transpose: dz @ x instead of dz @ x.T
  TanhGate      sign error: -(1 - tanh^2) * dz
  AddBiasGate   broadcast bug: takes the first row of dz instead of summing over rows
SubtractGate and LogGate are correct.
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
    def forward(self, x, y):
        self.x, self.y = x, y
        return x * y

    def backward(self, dz):
        return [unbroadcast(self.x * dz, np.shape(self.x)),  # BUG: inputs swapped
                unbroadcast(self.y * dz, np.shape(self.y))]


class SubtractGate:
    def forward(self, x, y):
        self.shapes = np.shape(x), np.shape(y)
        return x - y

    def backward(self, dz):
        return [unbroadcast(dz, self.shapes[0]), unbroadcast(-dz, self.shapes[1])]


class SigmoidGate:
    def forward(self, x):
        self.s = 1 / (1 + np.exp(-x))
        return self.s

    def backward(self, dz):
        return [self.s * (1 - self.s)]  # BUG: missing chain rule (no * dz)


class TanhGate:
    def forward(self, x):
        self.t = np.tanh(x)
        return self.t

    def backward(self, dz):
        return [-(1 - self.t ** 2) * dz]  # BUG: sign error


class MatMulGate:
    shapes = [(3, 3), (3, 3)]

    def forward(self, W, x):
        self.W, self.x = W, x
        return W @ x

    def backward(self, dz):
        return [dz @ self.x, self.W.T @ dz]  # BUG: missing transpose (dz @ x.T)


class AddBiasGate:
    shapes = [(3, 3), (3,)]

    def forward(self, x, b):
        return x + b

    def backward(self, dz):
        return [dz, dz[0]]  # BUG: broadcast: b was added to every row, so sum over rows


class LogGate:
    domain = ["positive"]

    def forward(self, x):
        self.x = x
        return np.log(x)

    def backward(self, dz):
        return [dz / self.x]
