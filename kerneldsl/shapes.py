"""Binding symbolic sizes from input arrays, and checking inputs against placeholders."""

from __future__ import annotations

import numpy as np

from .errors import DTypeError, ShapeError
from .ir import expr as E
from .ir.int_eval import eval_int, int_source
from .ir.tensor import shape_str


def size_vars_of(placeholders) -> list:
    out: dict = {}
    for p in placeholders:
        for d in p.shape:
            for s in sorted(E.size_vars(d), key=lambda v: v.name):
                out.setdefault(s, None)
    return list(out)


def check_bindable(placeholders, outputs_shapes=()) -> None:
    """Every size used anywhere must appear alone as a dimension of some input."""
    bare = {d for p in placeholders for d in p.shape if isinstance(d, E.SizeVar)}
    used = {s for p in placeholders for d in p.shape for s in E.size_vars(d)}
    for shape in outputs_shapes:
        for d in shape:
            used |= E.size_vars(d)
    missing = used - bare
    if missing:
        names = ", ".join(sorted(s.name for s in missing))
        raise ShapeError(f"size(s) {names} cannot be bound from the inputs: each size must be a whole "
                         f"dimension of at least one input")


def bind_sizes(placeholders, arrays) -> dict:
    """Check rank and dtype of each array and bind every size; ShapeError/DTypeError on mismatch."""
    sizes: dict = {}
    for p, a in zip(placeholders, arrays):
        if a.ndim != p.ndim:
            raise ShapeError(f"input {p.name} must have {p.ndim} dimension(s) {shape_str(p.shape)}, "
                             f"got an array of shape {a.shape}")
        if a.dtype.name != p.dtype or not a.dtype.isnative:
            raise DTypeError(f"input {p.name} must be {p.dtype}, got {a.dtype}; convert it with "
                             f".astype(np.{p.dtype}) (kerneldsl does not cast silently)")
        for k, d in enumerate(p.shape):
            if isinstance(d, E.SizeVar):
                prev = sizes.setdefault(d, a.shape[k])
                if prev != a.shape[k]:
                    raise ShapeError(f"size {d.name} is {prev} from an earlier input but dimension {k} "
                                     f"of {p.name} is {a.shape[k]}")
    for p, a in zip(placeholders, arrays):
        for k, d in enumerate(p.shape):
            if not isinstance(d, E.SizeVar):
                want = eval_int(d, sizes)
                if want != a.shape[k]:
                    raise ShapeError(f"dimension {k} of {p.name} must be {d} = {want}, got {a.shape[k]}")
    return sizes


def concrete_shape(t, sizes: dict) -> tuple:
    shape = tuple(eval_int(d, sizes) for d in t.shape)
    for k, n in enumerate(shape):
        if n < 0:
            names = ", ".join(f"{s.name}={v}" for s, v in sizes.items())
            raise ShapeError(f"{t.name} would have negative dimension {k}: {t.shape[k]} = {n} with "
                             f"{names}; the inputs are too small for this computation")
    return shape


def as_input_array(x, p) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "__array__") or isinstance(x, (list, tuple, int, float, bool, np.generic)):
        return np.asarray(x)
    raise TypeError(f"input {p.name} must be a numpy array, got {type(x).__name__}")


def shape_function(shapes, slot: dict):
    """A function of the size list returning each shape tuple: one call per kernel launch."""
    body = ", ".join("(" + "".join(int_source(d, slot) + ", " for d in shape) + ")" for shape in shapes)
    return eval(f"lambda s: ({body}{',' if len(shapes) == 1 else ''})", {})
