"""The dtypes kerneldsl knows, and numpy's promotion rules over them.

Differences from numpy (documented in docs/design.md):
- arithmetic on two bools promotes to int64 (numpy: ``True + True`` is logical or);
- float intrinsics of bool/int inputs give float64 (numpy gives float16 for bool);
- ``sum``/``prod`` keep the body's dtype (numpy widens int32 to int64), bool sums give int64.
"""

from __future__ import annotations

import numpy as np

from .errors import DTypeError

DTYPES = ("bool", "int32", "int64", "float32", "float64")
FLOATS = ("float32", "float64")
INTS = ("int32", "int64")
DEFAULT_FLOAT = "float32"
_NAMES = frozenset(DTYPES)


def normalize(dtype) -> str:
    """'float32', np.float32, np.dtype('f4') -> 'float32'; anything unsupported -> DTypeError."""
    if isinstance(dtype, str) and dtype in _NAMES:  # the IR's own names: no numpy dtype lookup
        return dtype
    try:
        name = np.dtype(dtype).name
    except TypeError as e:
        raise DTypeError(f"unknown dtype {dtype!r}; kerneldsl supports {', '.join(DTYPES)}") from e
    if name not in DTYPES:
        raise DTypeError(f"dtype {name} is not supported; kerneldsl supports {', '.join(DTYPES)}")
    return name


def is_float(dtype: str) -> bool:
    return dtype in FLOATS


def is_int(dtype: str) -> bool:
    return dtype in INTS


def promote(a: str, b: str) -> str:
    """numpy's result_type of two array dtypes."""
    return np.result_type(np.dtype(a), np.dtype(b)).name


def promote_weak(dtype: str, value) -> str:
    """numpy's result_type of an array dtype and a Python scalar (NEP 50 weak scalars)."""
    return np.result_type(np.dtype(dtype), value).name


def scalar_dtype(value) -> str:
    """The dtype of a Python/numpy scalar standing alone (floats default to float32)."""
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, np.generic):
        return normalize(value.dtype)
    if isinstance(value, int):
        return "int64"
    if isinstance(value, float):
        return DEFAULT_FLOAT
    raise DTypeError(f"cannot use {value!r} of type {type(value).__name__} in a kerneldsl expression")


def cast_value(value, dtype: str):
    """A Python scalar converted exactly as numpy would store it in `dtype`."""
    if dtype == "bool":
        return bool(value)
    if dtype in INTS:
        info = np.iinfo(dtype)
        if isinstance(value, float):
            raise DTypeError(f"float constant {value!r} used where {dtype} is required")
        v = int(value)
        if not info.min <= v <= info.max:
            raise DTypeError(f"constant {v} does not fit in {dtype}")
        return v
    return float(np.dtype(dtype).type(value))


def min_value(dtype: str):
    return -np.inf if dtype in FLOATS else (False if dtype == "bool" else int(np.iinfo(dtype).min))


def max_value(dtype: str):
    return np.inf if dtype in FLOATS else (True if dtype == "bool" else int(np.iinfo(dtype).max))
