"""kerneldsl.numpy: numpy's functions on symbolic arrays (`import kerneldsl.numpy as knp`).

Every function builds compute ops of the loop DSL (`kd.compute`), tagged with what they are
(`op.tag`: "exp", "sum", "matmul", ...) so that rewrites can recognise them: there is one IR, so
kd.grad, fusion, schedules, both backends and the tuner apply unchanged. Arrays are tensors
(`kd.matrix("x")`, a placeholder, or any compute op); numpy's operators and methods on them
come here.

Semantics are numpy's, with sizes that may be symbolic:
- broadcasting: a dimension broadcasts only when it is known to be 1 (a constant 1, as Theano's
  broadcastable flags); two symbolic dimensions that must agree are checked when the function
  runs (a ShapeError naming both);
- dtype promotion as numpy's (NEP 50): Python scalars and sizes (`x.shape[0]`) are weak, so
  `x / x.shape[0]` stays float32; `sum` of int32 or bool gives int64; `mean` of ints float64;
- indexing: one integer (or integer expression) per dimension reads an element, as in the loop
  DSL (`x[0, 1]`, `A[i, r]`); anything else (a slice, `...`, `None`, fewer indices, integer
  arrays) is numpy's indexing and gives an array (`x[1:-1]`, `x[0]` of a matrix,
  `log_p[knp.arange(y.shape[0]), y]`).
"""

from __future__ import annotations

import builtins
import itertools
import sys
import math
import string
from dataclasses import replace

import numpy as _np

from . import dtypes as dt
from . import lang as L
from .errors import DTypeError, ShapeError
from .ir import expr as E
from .ir import tensor as T
from .ir.printer import written
from .ir.simplify import simplify
from .ir.tensor import ComputeOp, SizeCheck, Tensor

_names = itertools.count()
ONE = E.Const(1, "int64")


# --- arrays ------------------------------------------------------------------------------------

def _fresh(base: str) -> str:
    return f"{base}{next(_names)}"


def array_op(shape, body, name: str, checks=(), tag: str = "", dtype=None) -> ComputeOp:
    """A compute op of `shape` whose element is `body(*axes)`, with size checks and a tag."""
    t = L.compute(tuple(shape), body, name=_fresh(name), dtype=dtype)
    return replace(t, checks=tuple(checks), tag=tag or name) if checks or tag or name else t


def asarray(x, dtype=None) -> Tensor:
    """`x` as an array: a tensor as it is; a scalar, or an expression of sizes, as a 0-d array."""
    if isinstance(x, Tensor):
        return x if dtype is None or x.dtype == dt.normalize(dtype) else astype(x, dtype)
    if isinstance(x, _np.ndarray) and x.ndim > 0:
        raise TypeError("kerneldsl.numpy: numpy arrays are not graph values; pass them to the function as "
                        "inputs, or hold them in kd.shared(...)")
    e = E.as_expr(x.item() if isinstance(x, _np.ndarray) else x)
    if E.free_axes(e):
        raise TypeError(f"kerneldsl.numpy: {e} uses loop axes; array functions take whole arrays")
    return array_op((), lambda: e, "scalar", dtype=dtype)


def _is_one(d) -> bool:
    return isinstance(d, E.Const) and d.value == 1


def _same(a, b) -> bool:
    return a is b or simplify(a - b) is E.Const(0, "int64")


def size_check(a_name, a_dim: int, a, b_name, b_dim: int, b, what: str) -> SizeCheck:
    """The check `a == b` of two dimensions; the names are names, or the tensors themselves (the
    message then shows each as its user wrote it: `(-y).shape[0] = 7 and log(p).shape[0] = 8`)."""
    a_name, b_name = _label(a_name), _label(b_name)
    msg = (f"{what}: {a_name}.shape[{a_dim}] = {{a}} and {b_name}.shape[{b_dim}] = {{b}} must be equal"
           + (" (or 1)" if what == "broadcast" else ""))
    return SizeCheck(simplify(E.binary("eq", a, b)), msg, a, b)


def _label(x) -> str:
    if not isinstance(x, Tensor):
        return x
    s = written(x)
    return f"({s})" if " " in s or s.startswith("-") else s  # (-y).shape, log(p).shape


def broadcast_shape(arrays) -> tuple[tuple, list]:
    """The broadcast shape of `arrays` and the size checks it needs (numpy's rules; a symbolic
    dimension broadcasts only when it is a constant 1)."""
    nd = builtins.max((a.ndim for a in arrays), default=0)
    shape, checks = [], []
    for d in range(nd):
        dims = [(a, a.ndim - nd + d) for a in arrays if a.ndim - nd + d >= 0]
        real = [(a, k) for a, k in dims if not _is_one(a.shape[k])]
        if not real:
            shape.append(ONE)
            continue
        a0, k0 = real[0]
        for a, k in real[1:]:
            if _same(a.shape[k], a0.shape[k0]):
                continue
            if isinstance(a.shape[k], E.Const) and isinstance(a0.shape[k0], E.Const):
                raise ShapeError(f"operands could not be broadcast together: {_label(a0)}.shape[{k0}] = "
                                 f"{a0.shape[k0].value} and {_label(a)}.shape[{k}] = {a.shape[k].value}")
            checks.append(size_check(a0, k0, a0.shape[k0], a, k, a.shape[k], "broadcast"))
        shape.append(a0.shape[k0])
    return tuple(shape), checks


def _read(a: Tensor, axes: tuple):
    """The element of `a` at the output point `axes` (right-aligned; broadcast dims read 0)."""
    if not isinstance(a, Tensor):
        return a
    off = len(axes) - a.ndim
    return a[tuple(E.Const(0, "int64") if _is_one(d) else axes[off + k] for k, d in enumerate(a.shape))]


def elementwise(fn, *args, name: str = "ew", tag: str = "") -> Tensor | E.Expr:
    """`fn` applied elementwise to arrays and scalars, with broadcasting: an array (or, when no
    argument is an array, the expression `fn(*args)`)."""
    args = tuple(_arg(a) for a in args)
    arrays = [a for a in args if isinstance(a, Tensor)]
    if not arrays:
        return fn(*args)
    shape, checks = broadcast_shape(arrays)
    return array_op(shape, lambda *axes: fn(*(_read(a, axes) for a in args)), name, checks, tag or name)


def _arg(a):
    """Operands: tensors stay; Exprs without axes act as 0-d arrays (their value inside the body)."""
    if isinstance(a, (Tensor, E.Expr)) or isinstance(a, (bool, int, float, _np.generic)):
        return a
    if isinstance(a, _np.ndarray) and a.ndim == 0:
        return a[()]
    if isinstance(a, (list, tuple, _np.ndarray)):
        raise TypeError("kerneldsl.numpy: lists and numpy arrays are not graph values; pass them to the "
                        "function as inputs, or hold them in kd.shared(...)")
    raise TypeError(f"kerneldsl.numpy: cannot use {type(a).__name__} {a!r} as an array")


def _binary(op: str, name: str):
    def f(a, b):
        return elementwise(lambda x, y: E.binary(op, x, y), a, b, name=name)
    f.__name__ = name
    f.__doc__ = f"Elementwise `{op}` with numpy's broadcasting and promotion."
    return f


add, subtract, multiply, divide = (_binary(o, n) for o, n in
                                   (("add", "add"), ("sub", "subtract"), ("mul", "multiply"), ("div", "divide")))
true_divide = divide
floor_divide, mod, power = (_binary(o, n) for o, n in (("floordiv", "floor_divide"), ("mod", "mod"),
                                                        ("pow", "power")))
remainder = mod
less, less_equal, greater, greater_equal = (_binary(o, n) for o, n in (
    ("lt", "less"), ("le", "less_equal"), ("gt", "greater"), ("ge", "greater_equal")))
equal, not_equal = _binary("eq", "equal"), _binary("ne", "not_equal")
bitwise_and, bitwise_or, bitwise_xor = (_binary(o, n) for o, n in (("and", "bitwise_and"), ("or", "bitwise_or"),
                                                                     ("xor", "bitwise_xor")))


def logical_and(a, b):
    return bitwise_and(astype(a, "bool") if isinstance(a, Tensor) else a, astype(b, "bool") if isinstance(b, Tensor) else b)


def logical_or(a, b):
    return bitwise_or(astype(a, "bool") if isinstance(a, Tensor) else a, astype(b, "bool") if isinstance(b, Tensor) else b)


def logical_not(a):
    return elementwise(lambda x: ~E.cast(x, "bool"), a, name="logical_not")


def _unary(fn, name: str):
    def f(x):
        return elementwise(fn, x, name=name)
    f.__name__ = name
    f.__doc__ = f"Elementwise {name}."
    return f


negative = _unary(lambda x: -x, "negative")
positive = _unary(lambda x: x, "positive")
invert = _unary(lambda x: ~x, "invert")
exp, log, log1p, expm1, tanh, erf, sqrt, sin, cos, floor, ceil = (
    _unary(getattr(L, n), n) for n in ("exp", "log", "log1p", "expm1", "tanh", "erf", "sqrt", "sin", "cos",
                                       "floor", "ceil"))
absolute = abs = _unary(L.abs, "absolute")
sigmoid = _unary(L.sigmoid, "sigmoid")
rsqrt = _unary(L.rsqrt, "rsqrt")
square = _unary(lambda x: x * x, "square")
reciprocal = _unary(lambda x: 1 / x, "reciprocal")
sign = _unary(lambda x: L.where(x > 0, 1, L.where(x < 0, -1, 0)) if x.dtype != "bool" else x, "sign")
isnan = _unary(lambda x: x != x, "isnan")
isinf = _unary(lambda x: (x == _np.inf) | (x == -_np.inf), "isinf")
isfinite = _unary(lambda x: (x == x) & (x != _np.inf) & (x != -_np.inf), "isfinite")


def maximum(a, b):
    return elementwise(L.maximum, a, b, name="maximum")


def minimum(a, b):
    return elementwise(L.minimum, a, b, name="minimum")


def where(cond, a, b):
    """`a` where `cond`, else `b` (broadcast together); only the chosen side is read."""
    return elementwise(L.where, cond, a, b, name="where")


def clip(x, lo=None, hi=None):
    if lo is not None:
        x = maximum(x, lo)
    if hi is not None:
        x = minimum(x, hi)
    return x


def astype(x, dtype) -> Tensor:
    dtype = dt.normalize(dtype)
    x = asarray(x)
    if x.dtype == dtype:
        return x
    return array_op(x.shape, lambda *ax: E.cast(x[ax] if ax else x[()], dtype), "astype", tag="astype")


def size(x) -> E.Expr:
    x = asarray(x)
    n = ONE
    for d in x.shape:
        n = n * d
    return simplify(n)


# --- reductions ----------------------------------------------------------------------------------

def _axes(x: Tensor, axis) -> tuple:
    if axis is None:
        return tuple(range(x.ndim))
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    out = []
    for a in axes:
        if not isinstance(a, int) or isinstance(a, bool) or not -x.ndim <= a < builtins.max(x.ndim, 1):
            raise ValueError(f"axis {a!r} is out of range for {x.name} with {x.ndim} dimension(s)")
        out.append(a % x.ndim if x.ndim else 0)
    if len(set(out)) != len(out):
        raise ValueError(f"axis {axis!r} names a dimension twice")
    return tuple(sorted(out))


def _reduction(combiner: str, x, axis=None, keepdims: bool = False, cast=None, tag: str = ""):
    x = asarray(x)
    axes = _axes(x, axis)
    keep = [k for k in range(x.ndim) if k not in axes]
    shape = [ONE if k in axes else x.shape[k] for k in range(x.ndim)] if keepdims else [x.shape[k] for k in keep]
    if not axes:  # nothing to reduce: the values themselves (numpy: sum over axis=() copies)
        return array_op(x.shape, lambda *ax: _cast(x[ax] if ax else x[()], cast), combiner, tag=tag or combiner)

    def body(*out):
        raxes = [L.reduce_axis(x.shape[k], name=f"r{k}") for k in axes]
        idx, pos, rpos = [], 0, 0
        for k in range(x.ndim):
            if k in axes:
                idx.append(raxes[rpos])
                rpos += 1
                if keepdims:
                    pos += 1
            else:
                idx.append(out[pos])
                pos += 1
        value = _cast(x[tuple(idx)], cast)
        return getattr(L, combiner)(value, axis=raxes)
    return array_op(shape, body, combiner, tag=tag or combiner)


def _cast(e, dtype):
    return e if dtype is None else E.cast(e, dtype)


def _acc_dtype(x: Tensor, dtype) -> str | None:
    """numpy's accumulator of sum/prod: ints and bools widen to int64."""
    if dtype is not None:
        return dt.normalize(dtype)
    return "int64" if x.dtype in ("bool", "int32") else None


def sum(x, axis=None, keepdims=False, dtype=None):  # noqa: A001 - numpy's name
    x = asarray(x)
    return _reduction("sum", x, axis, keepdims, _acc_dtype(x, dtype))


def prod(x, axis=None, keepdims=False, dtype=None):
    x = asarray(x)
    return _reduction("prod", x, axis, keepdims, _acc_dtype(x, dtype))


def max(x, axis=None, keepdims=False):  # noqa: A001
    return _reduction("max", x, axis, keepdims)


def min(x, axis=None, keepdims=False):  # noqa: A001
    return _reduction("min", x, axis, keepdims)


amax, amin = max, min


def argmax(x, axis=None, keepdims=False):
    """Index of the first maximum (flat, row-major, for axis=None); int64."""
    if axis is not None and isinstance(axis, (tuple, list)):
        raise ValueError("argmax takes one axis or None")
    return _reduction("argmax", x, axis, keepdims)


def argmin(x, axis=None, keepdims=False):
    if axis is not None and isinstance(axis, (tuple, list)):
        raise ValueError("argmin takes one axis or None")
    return _reduction("argmin", x, axis, keepdims)


def any(x, axis=None, keepdims=False):  # noqa: A001
    return _reduction("max", astype(x, "bool"), axis, keepdims, tag="any")


def all(x, axis=None, keepdims=False):  # noqa: A001
    return _reduction("min", astype(x, "bool"), axis, keepdims, tag="all")


def _count(x: Tensor, axis) -> E.Expr:
    n = ONE
    for k in _axes(x, axis):
        n = n * x.shape[k]
    return simplify(n)


def mean(x, axis=None, keepdims=False, dtype=None):
    """sum / count; ints give float64 (numpy's), floats keep their dtype (the count is weak)."""
    x = asarray(x)
    acc = dt.normalize(dtype) if dtype is not None else (x.dtype if x.dtype in dt.FLOATS else "float64")
    s = _reduction("sum", x, axis, keepdims, acc, tag="mean_sum")
    n = _count(x, axis)
    return elementwise(lambda v: v / n, s, name="mean")


def var(x, axis=None, keepdims=False, ddof=0):
    x = asarray(x)
    m = mean(x, axis, keepdims=True)
    d = subtract(x, m)
    s = sum(multiply(d, d), axis, keepdims)
    n = _count(x, axis)
    return elementwise(lambda v: v / (n - ddof), s, name="var")


def std(x, axis=None, keepdims=False, ddof=0):
    return sqrt(var(x, axis, keepdims, ddof))


def logsumexp(x, axis=None, keepdims=False):
    """log(sum(exp(x))), computed as m + log(sum(exp(x - m))) with m the max (never overflows)."""
    x = asarray(x)
    m = max(x, axis, keepdims=True)
    s = sum(exp(subtract(x, stop_gradient(m))), axis, keepdims=True)
    out = add(log(s), stop_gradient(m))
    return out if keepdims else squeeze(out, _axes(x, axis))


def stop_gradient(x):
    return elementwise(L.stop_gradient, x, name="stop_gradient")


# --- shapes -----------------------------------------------------------------------------------------

def transpose(x, *axes) -> Tensor:
    """Reverse the dimensions, or permute them: transpose(x, (1, 0)) or x.transpose(1, 0)."""
    x = asarray(x)
    axes = axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) or axes == (None,) else axes
    axes = None if axes in ((), None) else axes
    perm = tuple(reversed(range(x.ndim))) if axes is None else tuple(a % x.ndim for a in axes)
    if sorted(perm) != list(range(x.ndim)):
        raise ValueError(f"transpose: {axes!r} is not a permutation of {x.ndim} dimensions")
    inv = [perm.index(k) for k in range(x.ndim)]
    return array_op([x.shape[p] for p in perm], lambda *ax: x[tuple(ax[inv[k]] for k in range(x.ndim))],
               "transpose", tag="transpose")


def dimshuffle(x, *pattern) -> Tensor:
    """Theano's dimshuffle: ints pick dimensions, 'x' inserts a broadcastable dimension of size 1;
    a dimension left out must have size 1."""
    x = asarray(x)
    if len(pattern) == 1 and isinstance(pattern[0], (list, tuple)):
        pattern = tuple(pattern[0])
    used = [p for p in pattern if p != "x"]
    for k in range(x.ndim):
        if k not in used and not _is_one(x.shape[k]):
            raise ShapeError(f"dimshuffle{pattern}: dimension {k} of {x.name} is dropped but is not of size 1")
    shape = [ONE if p == "x" else x.shape[p] for p in pattern]

    def body(*ax):
        where_ = {p: j for j, p in enumerate(pattern) if p != "x"}
        return x[tuple(ax[where_[k]] if k in where_ else E.Const(0, "int64") for k in range(x.ndim))]
    return array_op(shape, body, "dimshuffle", tag="dimshuffle")


def expand_dims(x, axis) -> Tensor:
    x = asarray(x)
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    nd = x.ndim + len(axes)
    axes = sorted(a % nd for a in axes)
    pattern, k = [], 0
    for j in range(nd):
        if j in axes:
            pattern.append("x")
        else:
            pattern.append(k)
            k += 1
    return dimshuffle(x, *pattern)


def squeeze(x, axis=None) -> Tensor:
    x = asarray(x)
    axes = [k for k in range(x.ndim) if _is_one(x.shape[k])] if axis is None else list(_axes(x, axis))
    for k in axes:
        if not _is_one(x.shape[k]):
            raise ShapeError(f"squeeze: dimension {k} of {x.name} is not of size 1")
    return dimshuffle(x, *[k for k in range(x.ndim) if k not in axes])


def reshape(x, *shape) -> Tensor:
    """numpy's reshape (row-major), one dimension may be -1; sizes may be symbolic."""
    x = asarray(x)
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    total = size(x)
    dims = [E.as_index(d, "a reshape dimension") if not (isinstance(d, int) and d == -1) else None for d in shape]
    if sum_(1 for d in dims if d is None) > 1:
        raise ValueError("reshape: only one dimension can be -1")
    known = ONE
    for d in dims:
        if d is not None:
            known = known * d
    known = simplify(known)
    checks = []
    if builtins.any(d is None for d in dims):
        dims = [simplify(total // known) if d is None else d for d in dims]
        checks.append(SizeCheck(simplify(E.binary("eq", total % known, E.Const(0, "int64"))),
                                f"reshape of {x.name}: its {{a}} elements do not split into rows of {{b}}",
                                total, known))
    elif not _same(known, total):
        if isinstance(known, E.Const) and isinstance(total, E.Const):
            raise ShapeError(f"reshape: cannot reshape {x.name} of {total.value} elements into {tuple(shape)}")
        checks.append(SizeCheck(simplify(E.binary("eq", known, total)),
                                f"reshape of {x.name}: {{a}} elements cannot take the new shape of {{b}}", total, known))
    if len(dims) == x.ndim and builtins.all(_same(a, b) for a, b in zip(dims, x.shape)):
        return x

    def body(*ax):
        flat = E.Const(0, "int64")
        for a, d in zip(ax, dims):
            flat = flat * d + a
        idx = []
        for k, d in enumerate(x.shape):  # row-major: x's index k is (flat // stride_k) % d_k
            q = flat // _prod(x.shape[k + 1:]) if k + 1 < x.ndim else flat
            idx.append(simplify(q if k == 0 else q % d))
        return x[tuple(idx)] if x.ndim else x[()]
    return array_op(dims, body, "reshape", checks, tag="reshape")


def sum_(it):
    return builtins.sum(it)


def _prod(dims) -> E.Expr:
    n = ONE
    for d in dims:
        n = n * d
    return simplify(n)


def flatten(x, ndim: int = 1) -> Tensor:
    """Theano's flatten: keep the first ndim - 1 dimensions, join the rest (numpy's for ndim=1)."""
    x = asarray(x)
    if ndim < 1 or ndim > builtins.max(x.ndim, 1):
        raise ValueError(f"flatten: ndim must be in [1, {builtins.max(x.ndim, 1)}], got {ndim}")
    return reshape(x, *x.shape[:ndim - 1], _prod(x.shape[ndim - 1:]))


ravel = flatten


def concatenate(arrays, axis: int = 0) -> Tensor:
    arrays = [asarray(a) for a in arrays]
    if not arrays:
        raise ValueError("concatenate needs at least one array")
    nd = arrays[0].ndim
    if builtins.any(a.ndim != nd for a in arrays):
        raise ShapeError("concatenate: the arrays must have the same number of dimensions")
    axis %= nd
    checks = []
    for a in arrays[1:]:
        for k in range(nd):
            if k != axis and not _same(a.shape[k], arrays[0].shape[k]):
                checks.append(size_check(arrays[0], k, arrays[0].shape[k], a, k, a.shape[k], "concatenate"))
    starts, total = [], E.Const(0, "int64")
    for a in arrays:
        starts.append(total)
        total = simplify(total + a.shape[axis])
    dtype = arrays[0].dtype
    for a in arrays[1:]:
        dtype = dt.promote(dtype, a.dtype)
    shape = [total if k == axis else arrays[0].shape[k] for k in range(nd)]

    def body(*ax):
        value = None
        for a, s in reversed(list(zip(arrays, starts))):
            v = E.cast(a[tuple(simplify(ax[k] - s) if k == axis else ax[k] for k in range(nd))], dtype)
            value = v if value is None else L.where(ax[axis] < s + a.shape[axis], v, value)
        return value
    return array_op(shape, body, "concatenate", checks, tag="concatenate")


def stack(arrays, axis: int = 0) -> Tensor:
    arrays = [asarray(a) for a in arrays]
    nd = arrays[0].ndim + 1
    axis %= nd
    return concatenate([expand_dims(a, axis) for a in arrays], axis)


def tile(x, reps) -> Tensor:
    x = asarray(x)
    reps = tuple(reps) if isinstance(reps, (tuple, list)) else (reps,)
    nd = builtins.max(x.ndim, len(reps))
    reps = (1,) * (nd - len(reps)) + reps
    x = reshape(x, *((ONE,) * (nd - x.ndim) + tuple(x.shape))) if nd > x.ndim else x
    shape = [simplify(d * r) for d, r in zip(x.shape, reps)]
    return array_op(shape, lambda *ax: x[tuple(a % d for a, d in zip(ax, x.shape))], "tile", tag="tile")


def repeat(x, repeats: int, axis=None) -> Tensor:
    x = asarray(x)
    if axis is None:
        x, axis = flatten(x), 0
    axis %= x.ndim
    shape = [simplify(d * repeats) if k == axis else d for k, d in enumerate(x.shape)]
    return array_op(shape, lambda *ax: x[tuple(a // repeats if k == axis else a for k, a in enumerate(ax))],
               "repeat", tag="repeat")


# --- creation ---------------------------------------------------------------------------------------

def arange(start, stop=None, step=1, dtype=None) -> Tensor:
    """arange(n), arange(a, b, step); the bounds may be sizes (`knp.arange(y.shape[0])`)."""
    if stop is None:
        start, stop = 0, start
    if isinstance(step, E.Expr) or step == 0:
        raise ValueError("arange: the step must be a nonzero Python number")
    ints = builtins.all(not isinstance(v, float) for v in (start, stop, step))
    dtype = dt.normalize(dtype) if dtype is not None else ("int64" if ints else dt.DEFAULT_FLOAT)
    if ints:
        span = E.as_index(stop) - E.as_index(start)
        n = (span + (step - 1)) // step if step > 0 else (span + (step + 1)) // step
        n = simplify(L.maximum(n, 0))
    else:
        n = E.Const(builtins.max(0, math.ceil((float(stop) - float(start)) / step)), "int64")
    return array_op((n,), lambda i: E.cast(start + i * step, dtype), "arange", tag="arange")


def full(shape, value, dtype=None) -> Tensor:
    shape = shape if isinstance(shape, (tuple, list)) else (shape,)
    v = E.const(value, dtype) if dtype is not None else E.as_expr(value)
    return array_op(shape, lambda *ax: v, "full", tag="full")


def zeros(shape, dtype="float32") -> Tensor:
    return full(shape, 0, dtype)


def ones(shape, dtype="float32") -> Tensor:
    return full(shape, 1, dtype)


def zeros_like(x, dtype=None) -> Tensor:
    x = asarray(x)
    return full(x.shape, 0, dtype or x.dtype)


def ones_like(x, dtype=None) -> Tensor:
    x = asarray(x)
    return full(x.shape, 1, dtype or x.dtype)


def full_like(x, value, dtype=None) -> Tensor:
    x = asarray(x)
    return full(x.shape, value, dtype or x.dtype)


# --- products ---------------------------------------------------------------------------------------

def matmul(a, b) -> Tensor:
    """numpy's matmul: batched over leading dimensions (broadcast). A 1-D operand is a vector
    read as it is (no row or column dimension added and removed: a matrix-vector product is one
    reduction, whose gradients are a product and a column reduction); the reduction runs over
    the vector's length, so that the vector's gradient needs no bounds guard."""
    a, b = asarray(a), asarray(b)
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError("matmul: operands must have at least one dimension (use * for scalars)")
    va, vb = a.ndim == 1, b.ndim == 1
    k_a, k_b = a.shape[-1], b.shape[0] if vb else b.shape[-2]
    checks = [] if _same(k_a, k_b) else [size_check(a, a.ndim - 1, k_a, b, builtins.max(b.ndim - 2, 0),
                                                    k_b, "matmul")]
    if isinstance(k_a, E.Const) and isinstance(k_b, E.Const) and k_a.value != k_b.value:
        raise ShapeError(f"matmul: {a.name} has {k_a.value} columns but {b.name} has {k_b.value} rows")
    batch_a, batch_b = a.shape[:-2], b.shape[:-2]
    bshape, bchecks = broadcast_shape([_Shape(batch_a, a.name), _Shape(batch_b, b.name)])
    shape = [*bshape] + ([] if va else [a.shape[-2]]) + ([] if vb else [b.shape[-1]])
    k = k_a if va or not vb else k_b

    def body(*ax):
        r = L.reduce_axis(k, name="r")
        nb = len(bshape)
        ia = tuple(E.Const(0, "int64") if _is_one(d) else ax[nb - len(batch_a) + n] for n, d in enumerate(batch_a))
        ib = tuple(E.Const(0, "int64") if _is_one(d) else ax[nb - len(batch_b) + n] for n, d in enumerate(batch_b))
        row = () if va else (ax[nb],)
        col = () if vb else (ax[nb + len(row)],)
        return L.sum(a[(*ia, *row, r)] * b[(*ib, r, *col)], axis=r)
    return array_op(shape, body, "matmul", checks + bchecks, tag="matmul")


class _Shape:
    """A shape standing for an array in broadcast_shape (matmul's batch dimensions)."""

    def __init__(self, shape, name):
        self.shape, self.name, self.ndim = tuple(shape), name, len(shape)


def dot(a, b) -> Tensor:
    """numpy's dot: matmul for 1-D and 2-D operands; N-D contracts a's last axis with b's
    second-to-last."""
    a, b = asarray(a), asarray(b)
    if a.ndim == 0 or b.ndim == 0:
        return multiply(a, b)
    if a.ndim <= 2 and b.ndim <= 2:
        return matmul(a, b)
    return tensordot(a, b, axes=([a.ndim - 1], [builtins.max(b.ndim - 2, 0)]))


def tensordot(a, b, axes=2) -> Tensor:
    a, b = asarray(a), asarray(b)
    if isinstance(axes, int):
        ax_a, ax_b = list(range(a.ndim - axes, a.ndim)), list(range(axes))
    else:
        ax_a, ax_b = [list(x) if isinstance(x, (list, tuple)) else [x] for x in axes]
    ax_a, ax_b = [k % a.ndim for k in ax_a], [k % b.ndim for k in ax_b]
    if len(ax_a) != len(ax_b):
        raise ValueError("tensordot: the two axis lists must have the same length")
    checks = [size_check(a, i, a.shape[i], b, j, b.shape[j], "tensordot")
              for i, j in zip(ax_a, ax_b) if not _same(a.shape[i], b.shape[j])]
    free_a = [k for k in range(a.ndim) if k not in ax_a]
    free_b = [k for k in range(b.ndim) if k not in ax_b]
    shape = [a.shape[k] for k in free_a] + [b.shape[k] for k in free_b]

    def body(*ax):
        rs = [L.reduce_axis(a.shape[i], name=f"r{n}") for n, i in enumerate(ax_a)]
        ia, ib = [None] * a.ndim, [None] * b.ndim
        for n, k in enumerate(free_a):
            ia[k] = ax[n]
        for n, k in enumerate(free_b):
            ib[k] = ax[len(free_a) + n]
        for r, i, j in zip(rs, ax_a, ax_b):
            ia[i], ib[j] = r, r
        prod_ = a[tuple(ia)] * b[tuple(ib)]
        return L.sum(prod_, axis=rs) if rs else prod_
    return array_op(shape, body, "tensordot", checks, tag="tensordot")


def outer(a, b) -> Tensor:
    return multiply(expand_dims(flatten(a), 1), expand_dims(flatten(b), 0))


def einsum(subscripts: str, *operands) -> Tensor:
    """Einstein summation (`"ij,jk->ik"`): each letter an axis; letters not in the output are
    summed (the output defaults to the letters seen once, in alphabetical order)."""
    ops = [asarray(o) for o in operands]
    spec = subscripts.replace(" ", "")
    if "..." in spec:
        raise ValueError("einsum: '...' is not supported; name every axis")
    lhs, arrow, rhs = spec.partition("->")
    ins = lhs.split(",")
    if len(ins) != len(ops):
        raise ValueError(f"einsum: {len(ins)} operand subscripts but {len(ops)} operands")
    sizes: dict = {}
    checks = []
    for o, letters in zip(ops, ins):
        if len(letters) != o.ndim or not builtins.all(c in string.ascii_letters for c in letters):
            raise ValueError(f"einsum: subscripts {letters!r} do not fit {o.name} with {o.ndim} dimension(s)")
        for k, c in enumerate(letters):
            if c in sizes:
                (pn, pk, pd) = sizes[c]
                if not _same(pd, o.shape[k]):
                    checks.append(size_check(pn, pk, pd, o.name, k, o.shape[k], f"einsum '{c}'"))
            else:
                sizes[c] = (o.name, k, o.shape[k])
    counts = {c: lhs.count(c) for c in sizes}
    out = rhs if arrow else "".join(sorted(c for c, n in counts.items() if n == 1))
    summed = [c for c in sizes if c not in out]

    def body(*ax):
        env = dict(zip(out, ax))
        rs = [L.reduce_axis(sizes[c][2], name=f"r_{c}") for c in summed]
        env.update(zip(summed, rs))
        prod_ = None
        for o, letters in zip(ops, ins):
            v = o[tuple(env[c] for c in letters)] if letters else o[()]
            prod_ = v if prod_ is None else prod_ * v
        return L.sum(prod_, axis=rs) if rs else prod_
    return array_op([sizes[c][2] for c in out], body, "einsum", checks, tag="einsum")


# --- indexing ---------------------------------------------------------------------------------------

def getitem(x: Tensor, index) -> Tensor:
    """numpy's indexing of a symbolic array: integers, slices (steps, negative bounds), `None`,
    `...`, and integer arrays (gathers, broadcast together, numpy's placement)."""
    items = list(index) if isinstance(index, tuple) else [index]
    for k, it in enumerate(items):
        if isinstance(it, (E.Expr, float)) and not isinstance(it, bool) and (
                not isinstance(it, E.Expr) or it.dtype not in ("int32", "int64")):
            raise DTypeError(f"index {k} of {x.name} must be an integer expression, got "
                             f"{getattr(it, 'dtype', type(it).__name__)} ({it})")
        if isinstance(it, E.Expr) and E.free_axes(it):
            raise ShapeError(f"{x.name} has {x.ndim} dimension(s) {T.shape_str(x.shape)} but was indexed with "
                             f"{len(items)}: give one index per dimension")
    if builtins.sum(1 for it in items if it is Ellipsis) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    used = builtins.sum(1 for it in items if it is not None and it is not Ellipsis)
    if used > x.ndim:
        raise ShapeError(f"{x.name} has {x.ndim} dimension(s) {T.shape_str(x.shape)} but was indexed with {used}")
    if Ellipsis in items:
        k = items.index(Ellipsis)
        items[k:k + 1] = [slice(None)] * (x.ndim - used)
    else:
        items += [slice(None)] * (x.ndim - used)
    arrays = [k for k, it in enumerate(items) if isinstance(it, Tensor)]
    for k in arrays:
        if items[k].dtype not in ("int32", "int64", "bool"):
            raise IndexError(f"arrays used as indices must be integers, got {items[k].dtype}")
        if items[k].dtype == "bool":
            raise IndexError("boolean mask indexing gives a data-dependent shape, which kerneldsl arrays cannot have; "
                             "use knp.where(mask, x, 0) instead")
    adv_shape, adv_checks = broadcast_shape([items[k] for k in arrays]) if arrays else ((), [])
    contiguous = not arrays or arrays == list(range(arrays[0], arrays[-1] + 1))
    out_shape, plan, dim = [], [], 0  # plan: per item, how it maps output axes to x's index
    adv_at = None
    for k, it in enumerate(items):
        if it is None:
            out_shape.append(ONE)
            plan.append(("new", None))
            continue
        d = x.shape[dim]
        if isinstance(it, Tensor):
            if adv_at is None:
                adv_at = len(out_shape) if contiguous else 0
                if contiguous:
                    out_shape.extend(adv_shape)
            plan.append(("array", (it, dim)))
        elif isinstance(it, slice):
            start, length, step = _slice(it, d)
            plan.append(("slice", (start, step, dim, len(out_shape))))
            out_shape.append(length)
        else:
            i = E.as_index(it, f"index {k} of {x.name}")
            if isinstance(i, E.Const) and i.value < 0:
                i = simplify(d + i)
            plan.append(("int", (i, dim)))
        dim += 1
    if arrays and not contiguous:
        out_shape = list(adv_shape) + out_shape
        shift = len(adv_shape)
        plan = [(kind, (info[0], info[1], info[2], info[3] + shift) if kind == "slice" else info)
                for kind, info in plan]
    nadv = len(adv_shape)

    def body(*ax):
        idx = [None] * x.ndim
        for kind, info in plan:
            if kind == "slice":
                start, step, xd, od = info
                idx[xd] = simplify(start + ax[od] * step)
            elif kind == "int":
                idx[info[1]] = info[0]
            elif kind == "array":
                arr, xd = info
                adv = ax[adv_at:adv_at + nadv] if contiguous else ax[:nadv]
                j = E.cast(_read(arr, tuple(adv)), "int64")
                # negative indices wrap as numpy's; the select picks a size, not a read, so a SIMD
                # loop runs it without a branch
                idx[xd] = j + L.where(j < 0, x.shape[xd], 0) if _maybe_negative(arr) else j
        return x[tuple(idx)] if idx else x[()]
    return array_op(out_shape, body, "getitem", adv_checks, tag="getitem")


def _maybe_negative(arr: Tensor) -> bool:
    return getattr(arr, "tag", "") != "arange"


def _slice(s: slice, d: E.Expr):
    """(start, length, step) of a slice over a dimension of size d (numpy's clamping)."""
    step = 1 if s.step is None else s.step
    if isinstance(step, E.Expr) or step == 0:
        raise ValueError("slice steps must be nonzero Python ints")

    def norm(v, default):
        if v is None:
            return default
        v = E.as_index(v, "a slice bound")
        if isinstance(v, E.Const) and v.value < 0:
            v = d + v
        lo, hi = (E.Const(0, "int64"), d) if step > 0 else (E.Const(-1, "int64"), d - 1)
        return simplify(L.minimum(L.maximum(v, lo), hi)) if not (isinstance(v, E.Const) and
                                                                  isinstance(d, E.Const)) else E.Const(
            builtins.min(builtins.max(v.value, lo.value), simplify(hi).value), "int64")
    if step > 0:
        start, stop = norm(s.start, E.Const(0, "int64")), norm(s.stop, d)
        length = simplify(L.maximum((stop - start + (step - 1)) // step, 0))
    else:
        start, stop = norm(s.start, simplify(d - 1)), norm(s.stop, E.Const(-1, "int64"))
        length = simplify(L.maximum((start - stop + (-step - 1)) // (-step), 0))
    return simplify(start), length, step


# the array API behind Tensor's operators and methods (ir/tensor.py)
T.ARRAY_API = sys.modules[__name__]
