"""Layers, as Lasagne's (`lasagne.layers`): a network is a graph of small layer objects, each
with `get_output_shape_for` and `get_output_for`; parameters are shared variables registered
with `add_param(spec, shape, name, trainable=True, regularizable=True)`, so that
`get_all_params(net, trainable=True)` is a query, not bookkeeping.

    l_in = InputLayer((None, 1, 28, 28))
    l = Conv2DLayer(l_in, num_filters=16, filter_size=(3, 3))        # rectify, GlorotUniform, b = 0
    l = MaxPool2DLayer(l, pool_size=(2, 2))
    l_out = DenseLayer(l, num_units=10, nonlinearity=softmax)
    prediction = get_output(l_out)                                    # a symbolic array
    params = get_all_params(l_out, trainable=True)

Shapes are Lasagne's: tuples with None for what is known only at a call (the batch). The
symbolic arrays have a size variable there and constants elsewhere, so the kernels are built for
the layer sizes and any batch size runs the same compiled function.

Randomness and running statistics: Theano attaches a `default_update` to the random streams
of dropout and to batch normalisation's averages; here a layer records those updates during a
non-deterministic `get_output`, and `get_state_updates(net)` returns them for
`kd.function(..., updates=...)` (NeuralNet adds them itself).
"""

from __future__ import annotations

import re
from collections import OrderedDict

import numpy as np

from .. import lang as L
from .. import numpy as knp
from ..frontend import SharedVariable, config, shared, tensor
from ..ir.tensor import Tensor
from . import functional as F
from . import init
from .nonlinearities import linear, rectify

# --- the base classes -------------------------------------------------------------------------------


def _ident(name: str) -> str:
    """A layer or parameter name as an identifier (kerneldsl names reach generated code)."""
    s = re.sub(r"\W", "_", str(name))
    return s if s and not s[0].isdigit() else f"l_{s}"


class Layer:
    """One input layer (`incoming`: a Layer, or a shape tuple for a layer fed from outside)."""

    def __init__(self, incoming, name: str | None = None):
        if isinstance(incoming, tuple):
            self.input_shape, self.input_layer = incoming, None
        elif isinstance(incoming, Layer):
            self.input_shape, self.input_layer = incoming.output_shape, incoming
        else:
            raise TypeError(f"{type(self).__name__}: incoming must be a layer or a shape tuple, got {incoming!r}")
        self.name = name
        self.params: OrderedDict = OrderedDict()
        self.state_updates: OrderedDict = OrderedDict()
        if any(d is not None and d <= 0 for d in self.input_shape):
            raise ValueError(f"cannot create {self._what()} with a non-positive input_shape dimension: "
                             f"{self.input_shape}")

    def _what(self) -> str:
        return f"{type(self).__name__} {self.name!r}" if self.name else type(self).__name__

    @property
    def output_shape(self) -> tuple:
        return self.get_output_shape_for(self.input_shape)

    def get_params(self, unwrap_shared: bool = True, **tags) -> list:
        """The layer's parameters with every tag given True and none given False."""
        out = []
        for p, ptags in self.params.items():
            if all((t in ptags) == bool(v) for t, v in tags.items()):
                out.append(p)
        return out

    def get_output_shape_for(self, input_shape):
        return input_shape

    def get_output_for(self, input, **kwargs):
        raise NotImplementedError

    def add_param(self, spec, shape, name: str | None = None, **tags) -> SharedVariable:
        """A parameter: `spec` an initialiser, a numpy array or a shared variable (its shape checked)."""
        shape = tuple(int(d) for d in shape)
        pname = _ident(f"{self.name}_{name}" if self.name and name else (name or "param"))
        if isinstance(spec, SharedVariable):
            have = spec.get_value(borrow=True).shape
            if have != shape:
                raise ValueError(f"{self._what()}: shared variable {spec.name} has shape {have}, the layer needs "
                                 f"{shape}")
            param = spec
        elif isinstance(spec, Tensor):
            raise TypeError(f"{self._what()}: parameter {name} must be a shared variable or an initialiser; a "
                            f"symbolic expression cannot be trained")
        else:
            param = shared(init.make_param(spec, shape, pname), name=pname, fixed_shape=True)
        tags.setdefault("trainable", True)
        tags.setdefault("regularizable", True)
        self.params[param] = {t for t, v in tags.items() if v}
        return param


class MergeLayer(Layer):
    """A layer of several inputs (`incomings`: layers or shape tuples)."""

    def __init__(self, incomings, name: str | None = None):
        self.input_shapes, self.input_layers = [], []
        for inc in incomings:
            if isinstance(inc, tuple):
                self.input_shapes.append(inc)
                self.input_layers.append(None)
            elif isinstance(inc, Layer):
                self.input_shapes.append(inc.output_shape)
                self.input_layers.append(inc)
            else:
                raise TypeError(f"{type(self).__name__}: each incoming must be a layer or a shape tuple, got {inc!r}")
        self.name = name
        self.params = OrderedDict()
        self.state_updates = OrderedDict()

    @property
    def output_shape(self):
        return self.get_output_shape_for(self.input_shapes)

    def get_output_for(self, inputs, **kwargs):
        raise NotImplementedError


# --- input ---------------------------------------------------------------------------------------------

_input_count = [0]


class InputLayer(Layer):
    """Where data enters: `shape` with None for sizes known only at a call (the batch)."""

    def __init__(self, shape, input_var=None, name: str | None = None, **kwargs):
        shape = tuple(shape)
        for d in shape:
            if d is not None and (not isinstance(d, (int, np.integer)) or d <= 0):
                raise ValueError(f"InputLayer: shape must hold positive ints or None, got {shape}")
        self.shape = tuple(None if d is None else int(d) for d in shape)
        self.name = name
        self.params = OrderedDict()
        self.state_updates = OrderedDict()
        self.input_layer = None
        if input_var is None:
            _input_count[0] += 1
            vname = _ident(name) if name else "inputs"
            dims = [L.size(f"{vname}{_input_count[0]}_{k}") if d is None else d for k, d in enumerate(self.shape)]
            input_var = tensor(vname, shape=dims, dtype=config.floatX) if dims else tensor(vname, 0)
        elif not isinstance(input_var, Tensor) or input_var.ndim != len(self.shape):
            raise ValueError(f"InputLayer: input_var must be a symbolic array of {len(self.shape)} dimensions, "
                             f"got {input_var!r}")
        self.input_var = input_var

    @property
    def output_shape(self):
        return self.shape


# --- dense and convolution ------------------------------------------------------------------------------

class DenseLayer(Layer):
    """nonlinearity(dot(x, W) + b), the input flattened after `num_leading_axes` axes."""

    def __init__(self, incoming, num_units, W=init.GlorotUniform(), b=init.Constant(0.0), nonlinearity=rectify,  # noqa: B008 - Lasagne's defaults
                 num_leading_axes: int = 1, **kwargs):
        super().__init__(incoming, **kwargs)
        if not isinstance(num_units, (int, np.integer)) or num_units <= 0:
            raise ValueError(f"{self._what()}: num_units must be a positive int, got {num_units!r}")
        self.num_units = int(num_units)
        self.nonlinearity = linear if nonlinearity is None else nonlinearity
        if num_leading_axes != 1:
            raise ValueError(f"{self._what()}: only num_leading_axes=1 is supported")
        self.num_leading_axes = num_leading_axes
        rest = self.input_shape[num_leading_axes:]
        if any(d is None for d in rest):
            raise ValueError(f"{self._what()}: the input shape {self.input_shape} must be known after the batch axis")
        num_inputs = int(np.prod(rest))
        self.W = self.add_param(W, (num_inputs, self.num_units), name="W")
        self.b = None if b is None else self.add_param(b, (self.num_units,), name="b", regularizable=False)

    def get_output_shape_for(self, input_shape):
        return (input_shape[0], self.num_units)

    def get_output_for(self, input, **kwargs):
        x = input if input.ndim == 2 else knp.flatten(input, 2)
        out = knp.dot(x, self.W)
        if self.b is not None:
            out = out + self.b
        return self.nonlinearity(out)


def conv_output_length(input_length, filter_size: int, stride: int, pad) -> int | None:
    """Lasagne's: the output length of a convolution (None for an unknown input)."""
    if input_length is None:
        return None
    if pad == "valid":
        out = input_length - filter_size + 1
    elif pad == "full":
        out = input_length + filter_size - 1
    elif pad == "same":
        out = input_length
    elif isinstance(pad, int):
        out = input_length + 2 * pad - filter_size + 1
    else:
        raise ValueError(f"invalid pad {pad!r}")
    return (out + stride - 1) // stride


def _pair(v, what: str) -> tuple:
    if isinstance(v, (int, np.integer)):
        return (int(v), int(v))
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(a, (int, np.integer)) for a in v):
        return (int(v[0]), int(v[1]))
    raise ValueError(f"{what} must be an int or a pair of ints, got {v!r}")


class Conv2DLayer(Layer):
    """2-D convolution over (batch, channels, rows, columns); Lasagne's defaults: stride 1, pad 0
    ("valid"), rectify, GlorotUniform filters (num_filters, channels, *filter_size), biases 0,
    and flip_filters=True: a true convolution (the filters flipped), as Theano's conv2d."""

    def __init__(self, incoming, num_filters, filter_size, stride=(1, 1), pad=0, untie_biases: bool = False,
                 W=init.GlorotUniform(), b=init.Constant(0.0), nonlinearity=rectify, flip_filters: bool = True,  # noqa: B008 - Lasagne's defaults
                 n=None, **kwargs):
        super().__init__(incoming, **kwargs)
        if len(self.input_shape) != 4:
            raise ValueError(f"{self._what()}: the input must be 4-D (batch, channels, rows, columns), got shape "
                             f"{self.input_shape}")
        if self.input_shape[1] is None:
            raise ValueError(f"{self._what()}: the number of input channels must be known")
        if not isinstance(num_filters, (int, np.integer)) or num_filters <= 0:
            raise ValueError(f"{self._what()}: num_filters must be a positive int, got {num_filters!r}")
        self.num_filters = int(num_filters)
        self.filter_size = _pair(filter_size, "filter_size")
        self.stride = _pair(stride, "stride")
        if pad == "valid":
            self.pad = (0, 0)
        elif pad == "full":
            self.pad = tuple(f - 1 for f in self.filter_size)
        elif pad == "same":
            if any(f % 2 == 0 for f in self.filter_size):
                raise NotImplementedError(f"{self._what()}: pad='same' needs odd filter sizes")
            self.pad = tuple(f // 2 for f in self.filter_size)
        else:
            self.pad = _pair(pad, "pad")
        self.untie_biases = untie_biases
        self.flip_filters = flip_filters
        self.nonlinearity = linear if nonlinearity is None else nonlinearity
        self.W = self.add_param(W, (self.num_filters, self.input_shape[1], *self.filter_size), name="W")
        if b is None:
            self.b = None
        else:
            bshape = (self.num_filters, *self.output_shape[2:]) if untie_biases else (self.num_filters,)
            self.b = self.add_param(b, bshape, name="b", regularizable=False)

    def get_output_shape_for(self, input_shape):
        return (input_shape[0], self.num_filters,
                *(conv_output_length(i, f, s, p) for i, f, s, p in
                  zip(input_shape[2:], self.filter_size, self.stride, self.pad)))

    def get_output_for(self, input, **kwargs):
        out = F.conv2d(input, self.W, stride=self.stride, padding=self.pad, flip=self.flip_filters,
                       bias=self.b if self.b is not None and not self.untie_biases else None)
        if self.b is not None and self.untie_biases:
            out = out + self.b
        return self.nonlinearity(out)


# --- pooling ------------------------------------------------------------------------------------------------

def pool_output_length(input_length, pool_size: int, stride: int, pad: int, ignore_border: bool) -> int | None:
    if input_length is None:
        return None
    if ignore_border:
        return (input_length + 2 * pad - pool_size) // stride + 1
    if stride >= pool_size:
        return (input_length + stride - 1) // stride
    return max(0, (input_length - pool_size + stride - 1) // stride) + 1


class Pool2DLayer(Layer):
    """Pooling over the last two axes; mode "max", "average_inc_pad" (padding counted as zeros) or
    "average_exc_pad" (the same without padding). Only ignore_border=True (Lasagne's default).
    Max pooling's gradient goes to each window's first maximum (torch's); grad_to_ties=True gives
    it to every element equal to the maximum (Theano's) and keeps no argmax."""

    def __init__(self, incoming, pool_size, stride=None, pad=(0, 0), ignore_border: bool = True, mode: str = "max",
                 grad_to_ties: bool = False, **kwargs):
        super().__init__(incoming, **kwargs)
        self.grad_to_ties = grad_to_ties
        if len(self.input_shape) != 4:
            raise ValueError(f"{self._what()}: the input must be 4-D (batch, channels, rows, columns), got shape "
                             f"{self.input_shape}")
        if mode not in ("max", "average_inc_pad", "average_exc_pad"):
            raise ValueError(f"{self._what()}: mode must be 'max', 'average_inc_pad' or 'average_exc_pad', got "
                             f"{mode!r}")
        if not ignore_border:
            raise NotImplementedError(f"{self._what()}: ignore_border=False is not supported; pad the input "
                                      f"(pad=...) instead")
        self.pool_size = _pair(pool_size, "pool_size")
        self.stride = self.pool_size if stride is None else _pair(stride, "stride")
        self.pad = _pair(pad, "pad")
        if mode == "average_exc_pad" and any(self.pad):
            raise NotImplementedError(f"{self._what()}: average_exc_pad with padding is not supported")
        self.ignore_border, self.mode = ignore_border, mode

    def get_output_shape_for(self, input_shape):
        return (*input_shape[:2], *(pool_output_length(i, p, s, pd, self.ignore_border) for i, p, s, pd in
                                    zip(input_shape[2:], self.pool_size, self.stride, self.pad)))

    def get_output_for(self, input, **kwargs):
        if self.mode == "max":
            # the gradient goes to each window's first maximum, as torch's and cuDNN's: Theano's
            # pool gradient (every element equal to the max: F.max_pool2d(grad_to_ties=True))
            # multiplies it in flat regions (an image's constant background), which trains
            # measurably differently from the peers' (Fashion-MNIST's CNN: 82.5% vs 83.8%)
            return F.max_pool2d(input, self.pool_size, self.stride, self.pad, grad_to_ties=self.grad_to_ties)
        return F.avg_pool2d(input, self.pool_size, self.stride, self.pad)


class MaxPool2DLayer(Pool2DLayer):
    def __init__(self, incoming, pool_size, stride=None, pad=(0, 0), ignore_border: bool = True,
                 grad_to_ties: bool = False, **kwargs):
        super().__init__(incoming, pool_size, stride, pad, ignore_border, mode="max", grad_to_ties=grad_to_ties,
                         **kwargs)


class GlobalPoolLayer(Layer):
    """Pool over every axis after the second: (batch, channels, ...) -> (batch, channels)."""

    def __init__(self, incoming, pool_function=knp.mean, **kwargs):
        super().__init__(incoming, **kwargs)
        self.pool_function = pool_function

    def get_output_shape_for(self, input_shape):
        return input_shape[:2]

    def get_output_for(self, input, **kwargs):
        return self.pool_function(input, axis=tuple(range(2, input.ndim)))


# --- noise and normalisation ------------------------------------------------------------------------------

class DropoutLayer(Layer):
    """Sets each value to zero with probability p during training (rescaling the others by
    1 / (1 - p) when rescale); the identity with deterministic=True. The mask comes from a
    counter-based hash of a seed that `get_state_updates` advances after every training step."""

    def __init__(self, incoming, p: float = 0.5, rescale: bool = True, shared_axes=(), **kwargs):
        super().__init__(incoming, **kwargs)
        if not 0 <= p < 1:
            raise ValueError(f"{self._what()}: p must be in [0, 1), got {p}")
        if shared_axes:
            raise NotImplementedError(f"{self._what()}: shared_axes is not supported")
        self.p, self.rescale = p, rescale
        self.seed = shared(np.int64(init.get_rng().randint(0, 2 ** 31 - 1)),
                           name=_ident(f"{self.name}_seed" if self.name else "dropout_seed"))

    def get_output_for(self, input, deterministic: bool = False, **kwargs):
        if deterministic or self.p == 0:
            return input
        self.state_updates[self.seed] = self.seed + 1
        return F.dropout(input, self.p, seed=self.seed[()], rescale=self.rescale)


dropout = DropoutLayer


class BatchNormLayer(Layer):
    """Ioffe and Szegedy's batch normalisation over `axes` ("auto": all but the second), with
    Lasagne's parameters: beta, gamma (trainable), and running mean and inv_std (not trainable,
    moved by alpha towards each batch's statistics, used with deterministic=True)."""

    def __init__(self, incoming, axes="auto", epsilon: float = 1e-4, alpha: float = 0.1, beta=init.Constant(0),  # noqa: B008 - Lasagne's defaults
                 gamma=init.Constant(1), mean=init.Constant(0), inv_std=init.Constant(1), **kwargs):  # noqa: B008 - Lasagne's defaults
        super().__init__(incoming, **kwargs)
        nd = len(self.input_shape)
        self.axes = (0, *range(2, nd)) if axes == "auto" else tuple(a % nd for a in
                                                                    (axes if isinstance(axes, (tuple, list)) else (axes,)))
        kept = [k for k in range(nd) if k not in self.axes]
        if len(kept) != 1:
            raise NotImplementedError(f"{self._what()}: normalise over all axes but one (axes={self.axes})")
        self.channel_axis = kept[0]
        shape = (self.input_shape[self.channel_axis],)
        if shape[0] is None:
            raise ValueError(f"{self._what()}: the size of the kept axis must be known")
        self.epsilon, self.alpha = epsilon, alpha
        self.beta = None if beta is None else self.add_param(beta, shape, "beta", trainable=True, regularizable=False)
        self.gamma = None if gamma is None else self.add_param(gamma, shape, "gamma", trainable=True,
                                                                regularizable=True)
        self.mean = self.add_param(mean, shape, "mean", trainable=False, regularizable=False)
        self.inv_std = self.add_param(inv_std, shape, "inv_std", trainable=False, regularizable=False)

    def get_output_for(self, input, deterministic: bool = False, batch_norm_use_averages=None,
                       batch_norm_update_averages=None, **kwargs):
        use_averages = deterministic if batch_norm_use_averages is None else batch_norm_use_averages
        update_averages = (not deterministic) if batch_norm_update_averages is None else batch_norm_update_averages
        bshape = ["x" if k != self.channel_axis else 0 for k in range(input.ndim)]
        if use_averages:
            mean, inv_std = self.mean, self.inv_std
        else:
            mean = knp.mean(input, axis=self.axes)
            d = input - knp.dimshuffle(mean, *bshape)
            inv_std = knp.rsqrt(knp.mean(d * d, axis=self.axes) + self.epsilon)
        if update_averages and not use_averages:
            a = self.alpha
            self.state_updates[self.mean] = (1 - a) * self.mean + a * knp.stop_gradient(mean)
            self.state_updates[self.inv_std] = (1 - a) * self.inv_std + a * knp.stop_gradient(inv_std)
        out = (input - knp.dimshuffle(mean, *bshape)) * knp.dimshuffle(inv_std, *bshape)
        if self.gamma is not None:
            out = out * knp.dimshuffle(self.gamma, *bshape)
        if self.beta is not None:
            out = out + knp.dimshuffle(self.beta, *bshape)
        return out


def batch_norm(layer, **kwargs):
    """Lasagne's batch_norm(): insert a BatchNormLayer before `layer`'s nonlinearity (dropping its now
    redundant bias) and reapply the nonlinearity after it."""
    nonlinearity = getattr(layer, "nonlinearity", None)
    if nonlinearity is not None:
        layer.nonlinearity = linear
    if getattr(layer, "b", None) is not None:
        del layer.params[layer.b]
        layer.b = None
    name = kwargs.pop("name", f"{layer.name}_bn" if getattr(layer, "name", None) else None)
    layer = BatchNormLayer(layer, name=name, **kwargs)
    if nonlinearity is not None:
        layer = NonlinearityLayer(layer, nonlinearity, name=f"{name}_nl" if name else None)
    return layer


# --- shapes and elementwise ------------------------------------------------------------------------------------

class NonlinearityLayer(Layer):
    def __init__(self, incoming, nonlinearity=rectify, **kwargs):
        super().__init__(incoming, **kwargs)
        self.nonlinearity = linear if nonlinearity is None else nonlinearity

    def get_output_for(self, input, **kwargs):
        return self.nonlinearity(input)


class ExpressionLayer(Layer):
    """Any function of the input: `ExpressionLayer(l, lambda x: x * 2)`; output_shape "auto"
    keeps the input's shape, or give it (or a function of the input shape)."""

    def __init__(self, incoming, function, output_shape=None, **kwargs):
        super().__init__(incoming, **kwargs)
        self.function, self._output_shape = function, output_shape

    def get_output_shape_for(self, input_shape):
        if self._output_shape is None or self._output_shape == "auto":
            return input_shape
        return self._output_shape(input_shape) if callable(self._output_shape) else tuple(self._output_shape)

    def get_output_for(self, input, **kwargs):
        return self.function(input)


class FlattenLayer(Layer):
    """Keep the first outdim - 1 axes, join the rest."""

    def __init__(self, incoming, outdim: int = 2, **kwargs):
        super().__init__(incoming, **kwargs)
        if outdim < 1:
            raise ValueError(f"{self._what()}: outdim must be at least 1, got {outdim}")
        self.outdim = outdim

    def get_output_shape_for(self, input_shape):
        rest = input_shape[self.outdim - 1:]
        joined = None if any(d is None for d in rest) else int(np.prod(rest))
        return (*input_shape[:self.outdim - 1], joined)

    def get_output_for(self, input, **kwargs):
        return knp.flatten(input, self.outdim)


class ReshapeLayer(Layer):
    """Lasagne's reshape spec: ints, [i] for the input's axis i, and at most one -1."""

    def __init__(self, incoming, shape, **kwargs):
        super().__init__(incoming, **kwargs)
        shape = tuple(shape)
        for s in shape:
            if isinstance(s, list):
                if len(s) != 1 or not isinstance(s[0], int) or not 0 <= s[0] < len(self.input_shape):
                    raise ValueError(f"{self._what()}: [i] must name an input axis, got {s!r}")
            elif not isinstance(s, (int, np.integer)) or s < -1:
                raise ValueError(f"{self._what()}: shape entries are ints, -1 or [i], got {s!r}")
        if sum(1 for s in shape if s == -1 and not isinstance(s, list)) > 1:
            raise ValueError(f"{self._what()}: only one -1 is allowed")
        self.shape = shape
        self.get_output_shape_for(self.input_shape)  # checks the sizes now

    def get_output_shape_for(self, input_shape):
        # Lasagne's rule: an axis copied with [i] counts as 1 on both sides, so that a -1 is
        # inferred even when the copied axis (the batch) is unknown
        out = [input_shape[s[0]] if isinstance(s, list) else (None if s == -1 else int(s)) for s in self.shape]
        masked_in = list(input_shape)
        masked_out = [1 if isinstance(s, list) else (None if s == -1 else int(s)) for s in self.shape]
        for s in self.shape:
            if isinstance(s, list):
                masked_in[s[0]] = 1
        if None in masked_in:
            return tuple(out)
        total = int(np.prod(masked_in))
        known = int(np.prod([d for d in masked_out if d is not None]))
        if None in masked_out:
            if known == 0 or total % known:
                raise ValueError(f"{self._what()}: cannot reshape {input_shape} into {self.shape}")
            out[masked_out.index(None)] = total // known
        elif known != total:
            raise ValueError(f"{self._what()}: cannot reshape {input_shape} into {tuple(out)}")
        return tuple(out)

    def get_output_for(self, input, **kwargs):
        dims = [input.shape[s[0]] if isinstance(s, list) else int(s) for s in self.shape]
        return knp.reshape(input, *dims)


reshape = ReshapeLayer


class DimshuffleLayer(Layer):
    """Theano's dimshuffle: ints pick axes, 'x' adds an axis of size 1."""

    def __init__(self, incoming, pattern, **kwargs):
        super().__init__(incoming, **kwargs)
        self.pattern = tuple(pattern)

    def get_output_shape_for(self, input_shape):
        return tuple(1 if p == "x" else input_shape[p] for p in self.pattern)

    def get_output_for(self, input, **kwargs):
        return knp.dimshuffle(input, *self.pattern)


class ConcatLayer(MergeLayer):
    """Join the inputs along `axis` (their other sizes must agree)."""

    def __init__(self, incomings, axis: int = 1, cropping=None, **kwargs):
        super().__init__(incomings, **kwargs)
        if cropping is not None:
            raise NotImplementedError("ConcatLayer: cropping is not supported")
        self.axis = axis

    def get_output_shape_for(self, input_shapes):
        nd = len(input_shapes[0])
        if any(len(s) != nd for s in input_shapes):
            raise ValueError(f"{self._what()}: inputs of different numbers of dimensions: {input_shapes}")
        axis = self.axis % nd
        out = []
        for k in range(nd):
            sizes = [s[k] for s in input_shapes]
            if k == axis:
                out.append(None if None in sizes else sum(sizes))
            else:
                known = {d for d in sizes if d is not None}
                if len(known) > 1:
                    raise ValueError(f"{self._what()}: input shapes {input_shapes} differ on axis {k}")
                out.append(known.pop() if known else None)
        return tuple(out)

    def get_output_for(self, inputs, **kwargs):
        return knp.concatenate(inputs, axis=self.axis)


concat = ConcatLayer


class ElemwiseMergeLayer(MergeLayer):
    """merge_function (e.g. knp.maximum) applied pairwise over the inputs."""

    def __init__(self, incomings, merge_function, **kwargs):
        super().__init__(incomings, **kwargs)
        self.merge_function = merge_function

    def get_output_shape_for(self, input_shapes):
        nd = len(input_shapes[0])
        out = []
        for k in range(nd):
            known = {s[k] for s in input_shapes if s[k] is not None}
            if len(known) > 1 or any(len(s) != nd for s in input_shapes):
                raise ValueError(f"{self._what()}: input shapes {input_shapes} do not match")
            out.append(known.pop() if known else None)
        return tuple(out)

    def get_output_for(self, inputs, **kwargs):
        out = inputs[0]
        for x in inputs[1:]:
            out = self.merge_function(out, x)
        return out


class ElemwiseSumLayer(ElemwiseMergeLayer):
    """sum(coeff * input); coeffs a number or one per input."""

    def __init__(self, incomings, coeffs=1, **kwargs):
        super().__init__(incomings, knp.add, **kwargs)
        n = len(self.input_layers)
        self.coeffs = list(coeffs) if isinstance(coeffs, (list, tuple)) else [coeffs] * n
        if len(self.coeffs) != n:
            raise ValueError(f"{self._what()}: {len(self.coeffs)} coeffs for {n} inputs")

    def get_output_for(self, inputs, **kwargs):
        out = None
        for c, x in zip(self.coeffs, inputs):
            term = x if c == 1 else x * c
            out = term if out is None else out + term
        return out


# --- the network as a graph ---------------------------------------------------------------------------------------

def _incoming(layer) -> list:
    if isinstance(layer, MergeLayer):
        return [a for a in layer.input_layers if a is not None]
    return [layer.input_layer] if getattr(layer, "input_layer", None) is not None else []


def get_all_layers(layer, treat_as_input=None) -> list:
    """Every layer `layer` (or a list of layers) depends on, inputs first (each once)."""
    outs = list(layer) if isinstance(layer, (list, tuple)) else [layer]
    stop = {id(t) for t in (treat_as_input or [])}
    order, seen = [], set()
    for root in outs:
        stack = [(root, False)]
        while stack:
            node, done = stack.pop()
            if id(node) in seen:
                continue
            if done:
                seen.add(id(node))
                order.append(node)
                continue
            stack.append((node, True))
            if id(node) not in stop:
                for parent in reversed(_incoming(node)):
                    if id(parent) not in seen:
                        stack.append((parent, False))
    return order


def get_output(layer_or_layers, inputs=None, **kwargs):
    """The symbolic output of a layer (or a list of them): `inputs` None (the input layers'
    variables), one array (for the single input layer), or a dict {layer: array}. Keyword
    arguments reach every layer's get_output_for (deterministic=True for evaluation)."""
    treat_as_input = list(inputs) if isinstance(inputs, dict) else []
    layers = get_all_layers(layer_or_layers, treat_as_input)
    outputs = {}
    if isinstance(inputs, dict):
        for k, v in inputs.items():
            outputs[id(k)] = knp.asarray(v)
    for lay in layers:
        if id(lay) in outputs:
            continue
        if isinstance(lay, InputLayer):
            if inputs is not None and not isinstance(inputs, dict):
                outputs[id(lay)] = knp.asarray(inputs)
            else:
                outputs[id(lay)] = lay.input_var
            continue
        lay.state_updates = OrderedDict()
        if isinstance(lay, MergeLayer):
            ins = []
            for parent in lay.input_layers:
                if parent is None:
                    raise ValueError(f"{lay._what()} has an input given as a shape; pass its value in inputs={{...}}")
                ins.append(outputs[id(parent)])
            outputs[id(lay)] = lay.get_output_for(ins, **kwargs)
        else:
            if lay.input_layer is None:
                raise ValueError(f"{lay._what()} has its input given as a shape; pass its value in inputs={{...}}")
            outputs[id(lay)] = lay.get_output_for(outputs[id(lay.input_layer)], **kwargs)
    if isinstance(layer_or_layers, (list, tuple)):
        return [outputs[id(lay)] for lay in layer_or_layers]
    return outputs[id(layer_or_layers)]


def get_output_shape(layer_or_layers, input_shapes=None):
    """The output shape(s), optionally for other input shapes ({input layer: shape} or one shape)."""
    if input_shapes is None:
        return [lay.output_shape for lay in layer_or_layers] if isinstance(layer_or_layers, (list, tuple)) \
            else layer_or_layers.output_shape
    layers = get_all_layers(layer_or_layers)
    shapes = {}
    for lay in layers:
        if isinstance(lay, InputLayer):
            shapes[id(lay)] = input_shapes.get(lay, lay.shape) if isinstance(input_shapes, dict) else tuple(input_shapes)
        elif isinstance(lay, MergeLayer):
            shapes[id(lay)] = lay.get_output_shape_for([shapes[id(p)] for p in lay.input_layers])
        else:
            shapes[id(lay)] = lay.get_output_shape_for(shapes[id(lay.input_layer)])
    if isinstance(layer_or_layers, (list, tuple)):
        return [shapes[id(lay)] for lay in layer_or_layers]
    return shapes[id(layer_or_layers)]


def get_all_params(layer, unwrap_shared: bool = True, **tags) -> list:
    """Every parameter of the network, in layer order, each once; tags filter (trainable=True)."""
    out = []
    for lay in get_all_layers(layer):
        for p in lay.get_params(unwrap_shared=unwrap_shared, **tags):
            if not any(p is q for q in out):
                out.append(p)
    return out


def get_state_updates(layer) -> OrderedDict:
    """The updates of state the last non-deterministic get_output recorded (dropout seeds,
    batch-norm running averages): add them to the training function's updates."""
    out = OrderedDict()
    for lay in get_all_layers(layer):
        out.update(lay.state_updates)
    return out


def count_params(layer, **tags) -> int:
    return int(sum(np.prod(p.get_value(borrow=True).shape) for p in get_all_params(layer, **tags)))


def get_all_param_values(layer, **tags) -> list:
    return [p.get_value() for p in get_all_params(layer, **tags)]


def set_all_param_values(layer, values, **tags) -> None:
    """Set every parameter (in get_all_params order); a ValueError on a count or shape mismatch."""
    params = get_all_params(layer, **tags)
    values = list(values)
    if len(params) != len(values):
        raise ValueError(f"set_all_param_values: the network has {len(params)} parameters, {len(values)} values "
                         f"were given")
    for p, v in zip(params, values):
        v = np.asarray(v)
        have = p.get_value(borrow=True).shape
        if v.shape != have:
            raise ValueError(f"set_all_param_values: parameter {p.name} has shape {have}, the value given has "
                             f"shape {v.shape}")
    for p, v in zip(params, values):
        p.set_value(np.asarray(v, dtype=p.dtype))


__all__ = ["BatchNormLayer", "ConcatLayer", "Conv2DLayer", "DenseLayer", "DimshuffleLayer", "DropoutLayer",
           "ElemwiseMergeLayer", "ElemwiseSumLayer", "ExpressionLayer", "FlattenLayer", "GlobalPoolLayer",
           "InputLayer", "Layer", "MaxPool2DLayer", "MergeLayer", "NonlinearityLayer", "Pool2DLayer",
           "ReshapeLayer", "batch_norm", "concat", "conv_output_length", "count_params", "dropout",
           "get_all_layers", "get_all_param_values", "get_all_params", "get_output", "get_output_shape",
           "get_state_updates", "pool_output_length", "reshape", "set_all_param_values"]
