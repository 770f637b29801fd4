"""The numpy reference interpreter of the tensor IR: the oracle of every test.

Each compute op is evaluated over a grid with one numpy dimension per axis
(output axes first, then every reduction axis of the body), using broadcasting:
an axis is an `arange` shaped to its own dimension, a load is fancy indexing,
a reduction is a numpy reduction over its axes' dimensions. Loads under a
`where`/`where=` condition are range-checked only where the condition holds,
exactly as the compiled kernels read only the chosen side.
"""

from __future__ import annotations

import numpy as np

from . import dtypes as dt
from .ir import expr as E
from .ir import ops
from .errors import ShapeError
from .ir.int_eval import eval_cond, eval_int
from .ir.tensor import ComputeOp, Placeholder, SizeCheck, topo_order
from .shapes import as_input_array, bind_sizes, check_bindable, concrete_shape

_CHUNK_ELEMENTS = 1 << 23  # bound the grid's memory by evaluating slabs of the first axis


def evaluate(outputs, feed: dict) -> list[np.ndarray]:
    """Values of `outputs` given numpy arrays for the placeholders: `kd.evaluate([C], {A: a})`."""
    outputs = list(outputs)
    order = topo_order(outputs)
    placeholders = [t for t in order if isinstance(t, Placeholder)]
    missing = [p.name for p in placeholders if p not in feed]
    if missing:
        raise ValueError(f"evaluate: no value given for placeholder(s) {', '.join(missing)}")
    # inputs the outputs do not read still bind sizes, as they do for a build
    placeholders += [p for p in feed if isinstance(p, Placeholder) and p not in placeholders]
    check_bindable(placeholders, [t.shape for t in outputs])
    arrays = [as_input_array(feed[p], p) for p in placeholders]
    sizes = bind_sizes(placeholders, arrays)
    values = dict(zip(placeholders, arrays))
    for t in order:  # every shape first, as a compiled function checks them before it runs
        if isinstance(t, ComputeOp):
            for c in t.checks:
                if isinstance(c, SizeCheck) and not eval_cond(c.cond, sizes):
                    raise ShapeError(c.message.format(a=eval_int(c.a, sizes), b=eval_int(c.b, sizes)))
            concrete_shape(t, sizes)
    for t in order:
        if isinstance(t, ComputeOp):
            values[t] = _eval_op(t, values, sizes)
    return [values[t] for t in outputs]


def _reduce_axes(body: E.Expr) -> list:
    axes: dict = {}
    for n in E.walk(body):
        if isinstance(n, E.Reduce):
            for a in n.axes:
                axes.setdefault(a, None)
    return list(axes)


def _eval_op(op: ComputeOp, values: dict, sizes: dict) -> np.ndarray:
    shape = concrete_shape(op, sizes)
    raxes = _reduce_axes(op.body)
    extents = {a: n for a, n in zip(op.axes, shape)}
    for a in raxes:
        extents[a] = max(concrete_shape_of(a.extent, sizes), 0)
    out = np.empty(shape, dtype=op.dtype)
    if out.size == 0:
        return out
    inner = int(np.prod([extents[a] for a in list(op.axes[1:]) + raxes], dtype=np.int64))
    step = max(1, _CHUNK_ELEMENTS // max(inner, 1)) if op.axes else 1
    first = shape[0] if op.axes else 1
    for start in range(0, first, step):
        stop = min(first, start + step)
        ev = _Evaluator(op, raxes, extents, values, sizes, (start, stop))
        val = ev.eval(op.body, None)
        grid = ((stop - start,) + shape[1:]) if op.axes else ()
        val = np.broadcast_to(np.asarray(val), grid + (1,) * len(raxes)) if raxes else \
            np.broadcast_to(np.asarray(val), grid)
        val = val.reshape(grid)
        if op.axes:
            out[start:stop] = val
        else:
            out[()] = val
    return out


def concrete_shape_of(e: E.Expr, sizes: dict) -> int:
    from .shapes import eval_int
    return eval_int(e, sizes)


class _Evaluator:
    def __init__(self, op, raxes, extents, values, sizes, chunk):
        self.op, self.values, self.sizes = op, values, sizes
        self.ndim = len(op.axes) + len(raxes)
        self.dim = {a: k for k, a in enumerate(list(op.axes) + raxes)}
        self.extents, self.chunk = extents, chunk
        self.memo: dict = {}

    def axis(self, a: E.IndexVar) -> np.ndarray:
        k = self.dim[a]
        start, stop = (self.chunk if k == 0 and self.op.axes else (0, self.extents[a]))
        shape = [1] * self.ndim
        shape[k] = stop - start
        return np.arange(start, stop, dtype=np.int64).reshape(shape)

    def eval(self, e: E.Expr, mask):
        key = (e, id(mask))
        hit = self.memo.get(key)
        if hit is not None:
            return hit[0]
        v = self._eval(e, mask)
        self.memo[key] = (v, mask)  # keep mask alive so its id stays unique
        return v

    def _eval(self, e, mask):
        with np.errstate(all="ignore"):
            return self._eval_inner(e, mask)

    def _eval_inner(self, e, mask):
        if isinstance(e, E.Const):
            return np.array(e.value, dtype=e.dtype)
        if isinstance(e, E.SizeVar):
            return np.array(self.sizes[e], dtype=np.int64)
        if isinstance(e, E.IndexVar):
            return self.axis(e)
        if isinstance(e, E.Cast):
            x = self.eval(e.x, mask)
            return x.astype(e.dtype) if e.dtype != "bool" else (x != 0)
        if isinstance(e, (E.Unary, E.Binary, E.Call)):  # the op table's numpy evaluation
            return ops.evaluate(ops.of(e), [np.asarray(self.eval(a, mask)) for a in e.children()], e.dtype)
        if isinstance(e, E.Select):
            c = self.eval(e.cond, mask)
            a = self.eval(e.a, _and(mask, c))
            b = self.eval(e.b, _and(mask, np.logical_not(c)))
            return np.where(c, a, b).astype(e.dtype, copy=False)
        if isinstance(e, E.Load):
            return self.load(e, mask)
        if isinstance(e, E.Bound):
            ix = np.asarray(self.eval(e.index, mask), dtype=np.int64)
            n = int(np.asarray(self.eval(e.extent, mask)))
            bad = (ix < 0) | (ix >= n)
            if mask is not None:
                bad = bad & mask
            if np.any(bad):
                raise IndexError(f"{self.op.name} reads {e.tensor} with index {_first(ix, bad)} "
                                 f"in dimension {e.dim} of size {n} (out of range)")
            return ix
        if isinstance(e, E.Reduce):
            return self.reduce(e, mask)
        raise TypeError(f"reference: cannot evaluate {type(e).__name__}")

    def load(self, e: E.Load, mask):
        arr = self.values[e.tensor]
        idx = [np.asarray(self.eval(i, mask), dtype=np.int64) for i in e.indices]
        parts = np.broadcast_arrays(*idx, *([mask] if mask is not None else []))
        idx, m = parts[:len(idx)], (parts[-1] if mask is not None else None)
        clipped = []
        for k, (ix, n) in enumerate(zip(idx, arr.shape)):
            bad = (ix < 0) | (ix >= n)
            if m is not None:
                bad &= m
            if bad.any():
                raise IndexError(f"{self.op.name} reads {e.tensor.name}[...] with index "
                                 f"{_first(ix, bad)} in dimension {k} of size {n} "
                                 f"(out of range) in {E.Load(e.tensor, e.indices, e.dtype)}")
            clipped.append(np.clip(ix, 0, max(n - 1, 0)))
        if arr.size == 0:
            return np.zeros(np.broadcast_shapes(*(c.shape for c in clipped)) if clipped else (),
                            dtype=arr.dtype)
        return arr[tuple(clipped)] if clipped else arr[()]

    def reduce(self, e: E.Reduce, mask):
        dims = tuple(self.dim[a] for a in e.axes)
        if any(self.extents[a] == 0 for a in e.axes):  # an empty domain reads nothing: the identity
            if e.combiner in ("argmax", "argmin"):
                return np.zeros((1,) * self.ndim, dtype=np.int64)
            fill = {"sum": 0, "prod": 1, "max": dt.min_value(e.dtype), "min": dt.max_value(e.dtype)}[e.combiner]
            return np.full((1,) * self.ndim, fill, dtype=e.dtype)
        cond = None if e.cond is None else self.eval(e.cond, mask)
        inner = mask if cond is None else _and(mask, cond)
        body = np.asarray(self.eval(e.body, inner))
        shape = list(np.broadcast_shapes(body.shape, *(self.axis(a).shape for a in e.axes),
                                         *(() if cond is None else (np.shape(cond),))))
        body = np.broadcast_to(body, shape)
        if e.combiner in ("argmax", "argmin"):
            fill = dt.min_value(body.dtype.name) if e.combiner == "argmax" else dt.max_value(body.dtype.name)
        else:
            fill = {"sum": 0, "prod": 1, "max": dt.min_value(e.dtype), "min": dt.max_value(e.dtype)}[e.combiner]
        if cond is not None:
            body = np.where(np.broadcast_to(cond, shape), body, np.array(fill, dtype=body.dtype))
        if e.combiner == "sum":
            return body.sum(axis=dims, keepdims=True, dtype=e.dtype)
        if e.combiner == "prod":
            return body.prod(axis=dims, keepdims=True, dtype=e.dtype)
        if e.combiner in ("max", "min"):
            if any(shape[d] == 0 for d in dims):
                out_shape = [1 if k in dims else s for k, s in enumerate(shape)]
                return np.full(out_shape, fill, dtype=e.dtype)
            return (body.max if e.combiner == "max" else body.min)(axis=dims, keepdims=True)
        # argmax/argmin: flatten the reduced dimensions (row-major in the order given)
        moved = np.moveaxis(body, dims, tuple(range(-len(dims), 0)))
        keep = moved.shape[:moved.ndim - len(dims)]
        flat = moved.reshape(keep + (int(np.prod(moved.shape[len(keep):], dtype=np.int64)),))
        if flat.shape[-1] == 0:
            res = np.zeros(keep, dtype=np.int64)
        else:
            res = (np.argmax if e.combiner == "argmax" else np.argmin)(flat, axis=-1)
        res = res.reshape(keep + (1,) * len(dims))
        return np.moveaxis(res, tuple(range(-len(dims), 0)), dims).astype(np.int64)


def _first(ix: np.ndarray, bad: np.ndarray) -> int:
    """The first offending index value (any shapes, 0-d included)."""
    ix, bad = np.broadcast_arrays(ix, bad)
    return int(ix[np.unravel_index(int(np.flatnonzero(bad)[0]), bad.shape)])


def _and(mask, c):
    c = np.asarray(c, dtype=bool)
    return c if mask is None else np.logical_and(mask, c)
