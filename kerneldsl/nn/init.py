"""Parameter initialisers, as Lasagne's (`lasagne.init`): an initialiser is called with a shape
and returns a numpy array of kd.config.floatX.

    W = init.GlorotUniform()((784, 100))          # Lasagne's default for DenseLayer and Conv2DLayer
    init.set_rng(np.random.RandomState(42))       # every initialiser (and dropout seeds) draw from it

Fans follow Lasagne: for a matrix (num_inputs, num_units) they are its two dimensions; for a
convolution's filters (num_filters, num_input_channels, *filter_size) they are the first two
dimensions times the receptive field.
"""

from __future__ import annotations

import numpy as np

from ..frontend import config

_rng = [np.random.RandomState(1234)]  # Lasagne's lasagne.random: one generator, replaceable


def get_rng() -> np.random.RandomState:
    """The generator initialisers draw from (Lasagne's `lasagne.random.get_rng`)."""
    return _rng[0]


def set_rng(rng) -> None:
    """Replace the generator (a np.random.RandomState or Generator; an int seeds a new one)."""
    _rng[0] = np.random.RandomState(rng) if isinstance(rng, (int, np.integer)) else rng


def _floatx(a) -> np.ndarray:
    return np.asarray(a, dtype=config.floatX)


def _shape(shape) -> tuple:
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    if not all(isinstance(d, (int, np.integer)) and d >= 0 for d in shape):
        raise ValueError(f"an initialiser needs a shape of non-negative ints, got {shape!r}")
    return tuple(int(d) for d in shape)


class Initializer:
    """Base class: `init(shape)` -> np.ndarray (calls `sample`)."""

    def __call__(self, shape) -> np.ndarray:
        return self.sample(_shape(shape))

    def sample(self, shape: tuple) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class Constant(Initializer):
    def __init__(self, val: float = 0.0):
        self.val = val

    def sample(self, shape):
        return _floatx(np.full(shape, self.val))


class Normal(Initializer):
    def __init__(self, std: float = 0.01, mean: float = 0.0):
        self.std, self.mean = std, mean

    def sample(self, shape):
        return _floatx(get_rng().normal(self.mean, self.std, size=shape))


class Uniform(Initializer):
    """Uniform on `range` (a pair, or r for (-r, r)); or std/mean given: the uniform with them."""

    def __init__(self, range=0.01, std=None, mean: float = 0.0):
        if std is not None:
            a, b = mean - np.sqrt(3) * std, mean + np.sqrt(3) * std
        else:
            a, b = range if isinstance(range, (tuple, list)) else (-range, range)
        self.range = (a, b)

    def sample(self, shape):
        return _floatx(get_rng().uniform(self.range[0], self.range[1], size=shape))


def _fans(shape: tuple, c01b: bool = False) -> tuple[float, float]:
    if len(shape) < 2:
        raise ValueError(f"this initialiser needs a shape of 2 or more dimensions (fan in and fan out), got {shape}")
    if c01b:
        if len(shape) != 4:
            raise ValueError("c01b=True needs a 4-D shape (in, 0, 1, out)")
        rf = shape[1] * shape[2]
        return shape[0] * rf, shape[3] * rf
    rf = int(np.prod(shape[2:]))
    return shape[0] * rf, shape[1] * rf


class Glorot(Initializer):
    """std = gain * sqrt(2 / (fan_in + fan_out)) (Glorot and Bengio 2010); `initializer` is
    Normal or Uniform. gain="relu" is sqrt(2)."""

    def __init__(self, initializer, gain=1.0, c01b: bool = False):
        self.initializer, self.gain, self.c01b = initializer, np.sqrt(2) if gain == "relu" else gain, c01b

    def sample(self, shape):
        n1, n2 = _fans(shape, self.c01b)
        std = self.gain * np.sqrt(2.0 / (n1 + n2))
        return self.initializer(std=std).sample(shape)


class GlorotNormal(Glorot):
    def __init__(self, gain=1.0, c01b: bool = False):
        super().__init__(Normal, gain, c01b)


class GlorotUniform(Glorot):
    def __init__(self, gain=1.0, c01b: bool = False):
        super().__init__(Uniform, gain, c01b)


class He(Initializer):
    """std = gain * sqrt(1 / fan_in) (He et al. 2015; gain="relu": sqrt(2))."""

    def __init__(self, initializer, gain=1.0, c01b: bool = False):
        self.initializer, self.gain, self.c01b = initializer, np.sqrt(2) if gain == "relu" else gain, c01b

    def sample(self, shape):
        if len(shape) == 2:
            fan_in = shape[0]
        elif len(shape) > 2:
            fan_in = int(np.prod(shape[:3])) if self.c01b else int(np.prod(shape[1:]))
        else:
            raise ValueError(f"He initialisation needs 2 or more dimensions, got {shape}")
        return self.initializer(std=self.gain * np.sqrt(1.0 / fan_in)).sample(shape)


class HeNormal(He):
    def __init__(self, gain=1.0, c01b: bool = False):
        super().__init__(Normal, gain, c01b)


class HeUniform(He):
    def __init__(self, gain=1.0, c01b: bool = False):
        super().__init__(Uniform, gain, c01b)


class Orthogonal(Initializer):
    """A (scaled) orthogonal matrix over (shape[0], prod(shape[1:])) (Saxe et al. 2013)."""

    def __init__(self, gain=1.0):
        self.gain = np.sqrt(2) if gain == "relu" else gain

    def sample(self, shape):
        if len(shape) < 2:
            raise ValueError(f"Orthogonal needs 2 or more dimensions, got {shape}")
        flat = (shape[0], int(np.prod(shape[1:])))
        a = get_rng().normal(0.0, 1.0, flat)
        u, _, v = np.linalg.svd(a, full_matrices=False)
        q = u if u.shape == flat else v
        return _floatx(self.gain * q.reshape(shape))


def make_param(spec, shape, name: str = "param") -> np.ndarray:
    """The initial value of a parameter: an Initializer, a numpy array (its shape checked) or a
    callable(shape) -> array."""
    shape = _shape(shape)
    if isinstance(spec, Initializer) or (callable(spec) and not isinstance(spec, np.ndarray)):
        value = np.asarray(spec(shape))
    elif isinstance(spec, (np.ndarray, list, tuple, float, int)):
        value = np.asarray(spec)
    else:
        raise TypeError(f"parameter {name}: expected an initialiser, a numpy array or a callable, got {spec!r}")
    if value.shape != shape:
        raise ValueError(f"parameter {name}: the initial value has shape {value.shape}, the layer needs {shape}")
    return _floatx(value)


__all__ = ["Constant", "Glorot", "GlorotNormal", "GlorotUniform", "He", "HeNormal", "HeUniform", "Initializer",
           "Normal", "Orthogonal", "Uniform", "get_rng", "make_param", "set_rng"]
