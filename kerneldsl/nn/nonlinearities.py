"""Nonlinearities, as Lasagne's (`lasagne.nonlinearities`): functions from a symbolic array to
one of the same shape (softmax: over the last axis of a matrix)."""

from __future__ import annotations

from . import functional as F


def sigmoid(x):
    return F.sigmoid(x)


def softmax(x):
    """Row-wise softmax of a matrix (one kernel reading each row twice)."""
    return F.softmax(x, axis=-1)


def tanh(x):
    return F.tanh(x)


class ScaledTanH:
    """scale_out * tanh(scale_in * x) (LeCun's 1.7159 * tanh(2x/3) with the defaults of ScaledTanh)."""

    def __init__(self, scale_in: float = 1.0, scale_out: float = 1.0):
        self.scale_in, self.scale_out = scale_in, scale_out

    def __call__(self, x):
        return F.tanh(x * self.scale_in) * self.scale_out


ScaledTanh = ScaledTanH


def rectify(x):
    """max(x, 0)."""
    return F.relu(x)


class LeakyRectify:
    """max(x, leakiness * x)."""

    def __init__(self, leakiness: float = 0.01):
        self.leakiness = leakiness

    def __call__(self, x):
        return F.leaky_relu(x, self.leakiness)


leaky_rectify = LeakyRectify()
very_leaky_rectify = LeakyRectify(1.0 / 3)


def elu(x):
    return F.elu(x)


def softplus(x):
    return F.softplus(x)


def linear(x):
    """The identity."""
    return x


identity = linear


__all__ = ["LeakyRectify", "ScaledTanH", "ScaledTanh", "elu", "identity", "leaky_rectify", "linear", "rectify",
           "sigmoid", "softmax", "softplus", "tanh", "very_leaky_rectify"]
