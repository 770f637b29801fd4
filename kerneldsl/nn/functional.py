"""Neural-network functions on symbolic arrays (`kd.nn.softmax`, `kd.nn.conv2d`, ...).

Each is a few compute ops of the loop DSL written for the kernels they become: softmax's max,
sum and division fuse into one kernel that reads the row twice (schedule/fuse.py,
schedule/reuse.py); conv2d is a sum of a product that the GEMM templates run as an implicit GEMM;
pooling windows are short constant reductions. The ops are tagged (`op.tag`: "softmax",
"log_softmax", "crossentropy", ...) so that the graph rewrites can recognise them.
"""

from __future__ import annotations

import math

from .. import lang as L
from .. import numpy as knp
from ..errors import ShapeError
from ..ir import expr as E
from ..ir.simplify import simplify
from ..ir.tensor import Tensor

ZERO = E.Const(0, "int64")


def _axis(x: Tensor, axis: int) -> int:
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis {axis} is out of range for {x.name} with {x.ndim} dimension(s)")
    return axis % x.ndim


def _row_reduce(x: Tensor, axis: int, fn, name: str, tag: str):
    """A reduction over one axis (dropped from the shape): fn(value_at(r), r) -> Expr. Over the
    last axis it is read at a prefix of its consumer's loops, so fusion hoists it into their row."""
    shape = [d for k, d in enumerate(x.shape) if k != axis]

    def body(*ax):
        r = L.reduce_axis(x.shape[axis], name="r")
        full = list(ax)
        full.insert(axis, r)
        return fn(x[tuple(full)], r)
    return knp.array_op(shape, body, name, tag=tag)


def _at(t: Tensor, ax: tuple, axis: int):
    """t (a reduction over `axis`) at the point `ax` of the full array."""
    return t[tuple(a for k, a in enumerate(ax) if k != axis)]


# --- activations ---------------------------------------------------------------------------------

def relu(x):
    """max(0, x): NaN stays NaN (numpy's maximum, torch.relu); its gradient at 0 is 0, and it is
    read from the output (`y > 0`), so a backward never recomputes what the relu was applied to
    (a convolution). As a maximum it is also an epilogue a contraction absorbs."""
    return knp.elementwise(lambda v: L.maximum(E.const(0, v.dtype), v), x, name="relu")


def leaky_relu(x, alpha: float = 0.01):
    return knp.elementwise(lambda v: L.where(v > 0, v, v * alpha), x, name="leaky_relu")


def elu(x, alpha: float = 1.0):
    return knp.elementwise(lambda v: L.where(v > 0, v, L.expm1(v) * alpha), x, name="elu")


def sigmoid(x):
    return knp.elementwise(L.sigmoid, x, name="sigmoid")


def tanh(x):
    return knp.elementwise(L.tanh, x, name="tanh")


def softplus(x):
    """log(1 + exp(x)), without overflow."""
    return knp.elementwise(L.softplus, x, name="softplus")


def gelu(x, approximate: bool = False):
    """x * Phi(x): exact with erf, or the tanh form (approximate=True)."""
    if approximate:
        c = math.sqrt(2 / math.pi)
        return knp.elementwise(lambda v: 0.5 * v * (1 + L.tanh(c * (v + 0.044715 * v * v * v))), x, name="gelu")
    return knp.elementwise(lambda v: 0.5 * v * (1 + L.erf(v * (1 / math.sqrt(2)))), x, name="gelu")


def softmax(x, axis: int = -1):
    """exp(x - max) / sum(exp(x - max)) along `axis`: one kernel reading the row twice."""
    x = knp.asarray(x)
    axis = _axis(x, axis)
    mx = _row_reduce(x, axis, lambda v, r: L.max(v, axis=r), "softmax_max", "softmax_max")
    den = _row_reduce(x, axis, lambda v, r: L.sum(L.exp(v - L.stop_gradient(_at(mx, _ax_of(v, x), axis))), axis=r),
                      "softmax_sum", "softmax_sum")
    return knp.array_op(x.shape, lambda *ax: L.exp(x[ax] - L.stop_gradient(_at(mx, ax, axis))) / _at(den, ax, axis),
                   "softmax", tag="softmax")


def _ax_of(load: E.Load, x: Tensor) -> tuple:
    """The point a load of x reads (inside a row reduction: the row's axes and r)."""
    return tuple(load.indices)


def log_softmax(x, axis: int = -1):
    """x - max - log(sum(exp(x - max))) along `axis`: never log(0), never exp overflow."""
    x = knp.asarray(x)
    axis = _axis(x, axis)
    mx = _row_reduce(x, axis, lambda v, r: L.max(v, axis=r), "lsm_max", "log_softmax_max")
    lse = _row_reduce(x, axis, lambda v, r: L.log(L.sum(L.exp(v - L.stop_gradient(_at(mx, _ax_of(v, x), axis))),
                                                          axis=r)), "lsm_lse", "log_softmax_lse")
    return knp.array_op(x.shape, lambda *ax: x[ax] - L.stop_gradient(_at(mx, ax, axis)) - _at(lse, ax, axis),
                   "log_softmax", tag="log_softmax")


# --- losses -----------------------------------------------------------------------------------------

def categorical_crossentropy(predictions, targets):
    """-sum(targets * log(predictions), axis=1) per row (Lasagne's): `targets` are int class
    indices (a vector) or a one-hot / probability matrix."""
    p = knp.asarray(predictions)
    t = knp.asarray(targets)
    if p.ndim != 2:
        raise ShapeError(f"categorical_crossentropy: predictions must be (rows, classes), got {p.ndim} dimension(s)")
    if t.ndim == 1:
        if t.dtype not in ("int32", "int64"):
            raise TypeError(f"categorical_crossentropy: a target vector holds class indices (ints), got {t.dtype}")
        checks = [] if t.shape[0] is p.shape[0] else [knp.size_check(p.name, 0, p.shape[0], t.name, 0, t.shape[0],
                                                                     "categorical_crossentropy")]
        return knp.array_op((p.shape[0],), lambda i: -L.log(p[i, E.cast(t[i], "int64")]), "crossentropy", checks,
                       tag="crossentropy")
    return knp.negative(knp.sum(knp.multiply(t, knp.log(p)), axis=1))


def binary_crossentropy(predictions, targets):
    """-(t * log(p) + (1 - t) * log(1 - p)), elementwise."""
    return knp.elementwise(lambda p, t: -(t * L.log(p) + (1 - t) * L.log(1 - p)), predictions, targets,
                           name="binary_crossentropy")


def squared_error(a, b):
    return knp.elementwise(lambda x, y: (x - y) * (x - y), a, b, name="squared_error")


# --- normalisation -------------------------------------------------------------------------------------

def layer_norm(x, gamma=None, beta=None, axis: int = -1, eps: float = 1e-5):
    """(x - mean) / sqrt(var + eps) * gamma + beta over `axis` (gamma, beta along that axis)."""
    x = knp.asarray(x)
    axis = _axis(x, axis)
    n = x.shape[axis]
    mean = _row_reduce(x, axis, lambda v, r: L.sum(v, axis=r) / n, "ln_mean", "layer_norm_mean")

    def var_body(v, r):
        d = v - _at(mean, tuple(v.indices), axis)
        return L.sum(d * d, axis=r) / n
    var = _row_reduce(x, axis, var_body, "ln_var", "layer_norm_var")

    def body(*ax):
        y = (x[ax] - _at(mean, ax, axis)) * L.rsqrt(_at(var, ax, axis) + eps)
        if gamma is not None:
            y = y * _param(gamma, ax, axis)
        if beta is not None:
            y = y + _param(beta, ax, axis)
        return y
    return knp.array_op(x.shape, body, "layer_norm", _param_checks(x, axis, gamma, beta, what="layer_norm"),
                        tag="layer_norm")


def _param(p, ax, axis):
    p = knp.asarray(p) if not isinstance(p, (int, float)) else p
    if isinstance(p, (int, float)):
        return p
    if p.ndim != 1:
        raise ShapeError(f"a normalisation parameter is a vector along the normalised axis, got {p.ndim} dimensions")
    return p[ax[axis]]


def _param_checks(x, axis: int, *params, what: str) -> list:
    """A parameter vector's length must be the normalised axis's: a longer one would be read in
    part, silently."""
    out = []
    for p in params:
        if p is None or isinstance(p, (int, float)):
            continue
        p = knp.asarray(p)
        if p.ndim == 1 and p.shape[0] is not x.shape[axis]:
            out.append(knp.size_check(x.name, axis, x.shape[axis], p.name, 0, p.shape[0], what))
    return out


def batch_norm(x, gamma=None, beta=None, mean=None, var=None, axes=None, eps: float = 1e-4):
    """(x - mean) / sqrt(var + eps) * gamma + beta, with mean and var over `axes` (default: all but
    axis 1, the channels) from the batch when not given. gamma, beta, mean, var are vectors over
    the kept axis (channels). Returns the normalised array."""
    x = knp.asarray(x)
    axes = tuple(a % x.ndim for a in (axes if axes is not None else [k for k in range(x.ndim) if k != 1]))
    kept = [k for k in range(x.ndim) if k not in axes]
    if len(kept) != 1:
        raise ShapeError("batch_norm: normalise over all axes but one (the channels)")
    c = kept[0]
    if mean is None:
        mean = knp.mean(x, axis=axes)
    if var is None:
        d = knp.subtract(x, knp.dimshuffle(mean, *["x" if k != c else 0 for k in range(x.ndim)]))
        var = knp.mean(knp.multiply(d, d), axis=axes)
    mean, var = knp.asarray(mean), knp.asarray(var)

    def body(*ax):
        y = (x[ax] - mean[ax[c]]) * L.rsqrt(var[ax[c]] + eps)
        if gamma is not None:
            y = y * _param(gamma, ax, c)
        if beta is not None:
            y = y + _param(beta, ax, c)
        return y
    checks = _param_checks(x, c, gamma, beta, mean, var, what="batch_norm")
    return knp.array_op(x.shape, body, "batch_norm", checks, tag="batch_norm")


# --- dropout ---------------------------------------------------------------------------------------------

def _hash32(x):
    """A 32-bit integer hash (in int64 arithmetic, so C, CUDA and numpy agree bit for bit)."""
    m = 1 << 32
    x = (x ^ (x // 65536)) * 0x45D9F3B % m
    x = (x ^ (x // 65536)) * 0x45D9F3B % m
    return x ^ (x // 65536)


def dropout(x, p: float = 0.5, seed: int = 0, deterministic: bool = False, rescale: bool = True):
    """Zero each element with probability p (a counter-based hash of the seed and the element's
    index: the same mask on every backend and every call with the same seed; pass a new seed per
    step), scaling the rest by 1 / (1 - p)."""
    x = knp.asarray(x)
    if deterministic or p == 0:
        return x
    if not 0 <= p < 1:
        raise ValueError(f"dropout: p must be in [0, 1), got {p}")
    seed_e = E.cast(seed, "int64") if isinstance(seed, E.Expr) else E.Const(int(seed) % (1 << 31), "int64")
    keep = int(p * (1 << 32))
    scale = 1 / (1 - p) if rescale else 1.0

    def body(*ax):
        flat = ZERO
        for a, d in zip(ax, x.shape):
            flat = flat * d + a
        h = _hash32((flat % (1 << 32)) ^ _hash32(seed_e * 2654435761 % (1 << 32)))
        v = x[ax] if ax else x[()]
        return L.where(h >= keep, v * scale, 0)
    return knp.array_op(x.shape, body, "dropout", tag="dropout")


# --- convolution and pooling ---------------------------------------------------------------------------

def _pair(v, what: str) -> tuple:
    if isinstance(v, int):
        return (v, v)
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(a, int) for a in v):
        return tuple(v)
    raise ValueError(f"{what} must be an int or a pair of ints, got {v!r}")


def conv2d(x, w, stride=1, padding=0, dilation=1, bias=None, flip: bool = False):
    """2-D convolution (cross-correlation, as every framework's), NCHW input, (out, in, kh, kw)
    filters; padding an int, a pair, "valid" (0) or "same" (odd filters, stride 1). flip=True
    flips the filters (a true convolution, Theano's conv2d and Lasagne's flip_filters=True)."""
    x, w = knp.asarray(x), knp.asarray(w)
    if x.ndim != 4 or w.ndim != 4:
        raise ShapeError(f"conv2d: input (batch, channels, h, w) and filters (out, in, kh, kw); got {x.ndim} and "
                         f"{w.ndim} dimensions")
    sh, sw = _pair(stride, "stride")
    dh, dw = _pair(dilation, "dilation")
    kh, kw = w.shape[2], w.shape[3]
    if padding == "valid":
        ph = pw = 0
    elif padding == "same":
        if not (isinstance(kh, E.Const) and isinstance(kw, E.Const)) or (sh, sw) != (1, 1):
            raise ValueError("conv2d: padding='same' needs constant filter sizes and stride 1")
        ph, pw = dh * (kh.value - 1) // 2, dw * (kw.value - 1) // 2
    else:
        ph, pw = _pair(padding, "padding")
    n, c, h, wd = x.shape
    checks = [] if c is w.shape[1] else [knp.size_check(x.name, 1, c, w.name, 1, w.shape[1], "conv2d channels")]
    oh = simplify((h + 2 * ph - dh * (kh - 1) - 1) // sh + 1)
    ow = simplify((wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1)

    def body(b, co, i, j):
        ci, ry, rx = L.reduce_axis(c, name="ci"), L.reduce_axis(kh, name="ry"), L.reduce_axis(kw, name="rx")
        yy, xx = i * sh + ry * dh - ph, j * sw + rx * dw - pw
        v = x[b, ci, yy, xx]
        if ph or pw:
            inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < wd)
            v = L.where(inside, v, 0.0)
        wv = w[co, ci, kh - 1 - ry, kw - 1 - rx] if flip else w[co, ci, ry, rx]
        out = L.sum(v * wv, axis=[ci, ry, rx])
        if bias is not None:
            out = out + knp.asarray(bias)[co]
        return out
    return knp.array_op((n, w.shape[0], oh, ow), body, "conv2d", checks, tag="conv2d")


def _pool(x, pool_size, stride, padding, combiner: str, name: str, grad_to_ties: bool = False):
    x = knp.asarray(x)
    if x.ndim != 4:
        raise ShapeError(f"{name}: input (batch, channels, h, w), got {x.ndim} dimensions")
    ph_, pw_ = _pair(pool_size, "pool_size")
    sh, sw = _pair(stride if stride is not None else pool_size, "stride")
    ph, pw = _pair(padding, "padding")
    n, c, h, w = x.shape
    oh = simplify((h + 2 * ph - ph_) // sh + 1)
    ow = simplify((w + 2 * pw - pw_) // sw + 1)

    def body(b, ch, i, j):
        ry, rx = L.reduce_axis(ph_, name="ry"), L.reduce_axis(pw_, name="rx")
        yy, xx = i * sh + ry - ph, j * sw + rx - pw
        v = x[b, ch, yy, xx]
        if ph or pw:
            inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            v = L.where(inside, v, -math.inf if combiner == "max" else 0.0)
        if combiner == "max":
            return L.max(v, axis=[ry, rx])
        return L.sum(v, axis=[ry, rx]) * (1.0 / (ph_ * pw_))
    out = knp.array_op((n, c, oh, ow), body, name, tag=name)
    if not grad_to_ties:
        return out

    # The value of the max, with the gradient of `sum(where(v == max, v - stop_gradient(v), 0))`
    # (zero in value): dX = dY at every element equal to its window's max. No argmax tensor, and
    # for windows that tile the input (stride == size) each element reads one window.
    def tied(b, ch, i, j):
        ry, rx = L.reduce_axis(ph_, name="ry"), L.reduce_axis(pw_, name="rx")
        yy, xx = i * sh + ry - ph, j * sw + rx - pw
        v = x[b, ch, yy, xx]
        if ph or pw:
            v = L.where((yy >= 0) & (yy < h) & (xx >= 0) & (xx < w), v, -math.inf)
        m = L.stop_gradient(out[b, ch, i, j])
        return m + L.sum(L.where(v == m, v - L.stop_gradient(v), 0.0), axis=[ry, rx])
    return knp.array_op((n, c, oh, ow), tied, name, tag=f"{name}_tied")


def max_pool2d(x, pool_size=2, stride=None, padding=0, grad_to_ties: bool = False):
    """Max over windows (Lasagne's ignore_border=True): NCHW. The gradient goes to the first
    maximum of each window, or with grad_to_ties=True to every element equal to the maximum
    (Theano's pool gradient, which Lasagne's MaxPool2DLayer has; no argmax is kept)."""
    return _pool(x, pool_size, stride, padding, "max", "max_pool2d", grad_to_ties)


def avg_pool2d(x, pool_size=2, stride=None, padding=0):
    """Mean over windows, counting padding as zeros (Lasagne's average_inc_pad): NCHW."""
    return _pool(x, pool_size, stride, padding, "sum", "avg_pool2d")


__all__ = ["avg_pool2d", "batch_norm", "binary_crossentropy", "categorical_crossentropy", "conv2d", "dropout",
           "elu", "gelu", "layer_norm", "leaky_relu", "log_softmax", "max_pool2d", "relu", "sigmoid", "softmax",
           "softplus", "squared_error", "tanh"]
