"""The intrinsic table: one row per function, holding everything about it.

A row gives the dtype rule, the numpy evaluation (the reference interpreter's),
the derivative (for autodiff), and the C and CUDA spellings. Adding an
intrinsic touches this file only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .. import dtypes as dt
from . import expr as E


def _float_rule(dtype: str) -> str:
    return dtype if dtype in dt.FLOATS else "float64"


def _same_rule(dtype: str) -> str:
    return dtype


def _pow_rule(dtype: str) -> str:
    return "int64" if dtype == "bool" else dtype


@dataclass(frozen=True)
class Intrinsic:
    name: str
    nargs: int
    result_dtype: Callable[[str], str]
    numpy: Callable  # numpy arrays in, numpy array out (same dtype as the kernel's)
    # d(out)/d(arg_k) as expressions of the arguments and the result: (args, out) -> tuple
    derivative: Callable
    c: dict  # dtype -> format string with {0}, {1}
    cuda: dict | None = None  # dtype -> format; None: same as C

    def spelling(self, target: str, dtype: str) -> str:
        table = self.cuda if target == "cuda" and self.cuda is not None else self.c
        return table.get(dtype) or table["*"]


def _f(name32: str, name64: str | None = None) -> dict:
    return {"float32": name32 + "({0})", "float64": (name64 or name32.removesuffix("f")) + "({0})"}


def _sigmoid_np(x):
    with np.errstate(over="ignore"):
        e = np.exp(-np.abs(x))
        return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype)


_erf_vec = np.frompyfunc(math.erf, 1, 1)


def _erf_np(x):
    return np.asarray(_erf_vec(np.asarray(x, dtype=np.float64)), dtype=np.float64).astype(x.dtype)


def ipow_np(a, b):
    """Integer power as the generated kernels do it: negative exponents give 0 unless |a| == 1."""
    a, b = np.broadcast_arrays(np.asarray(a), np.asarray(b))
    with np.errstate(all="ignore"):
        pos = np.power(a, np.where(b < 0, 0, b))
    neg = np.where(a == 1, 1, np.where(a == -1, np.where(b % 2 == 0, 1, -1), 0)).astype(a.dtype)
    return np.where(b < 0, neg, pos).astype(a.dtype)


def _pow_np(a, b):
    if a.dtype.kind in "iu":
        return ipow_np(a, b)
    return np.power(a, b)


def _where(c, a, b):
    return E.select(c, a, b)


_I = {"int32": "kd_{name}_i32({args})", "int64": "kd_{name}_i64({args})"}


def _ints(name: str, nargs: int) -> dict:
    args = ", ".join("{%d}" % k for k in range(nargs))
    return {k: v.format(name=name, args=args) for k, v in _I.items()}


_ROWS = [
    Intrinsic("exp", 1, _float_rule, np.exp, lambda a, out: (out,), _f("expf")),
    Intrinsic("log", 1, _float_rule, np.log, lambda a, out: (1 / a[0],), _f("logf")),
    Intrinsic("log1p", 1, _float_rule, np.log1p, lambda a, out: (1 / (a[0] + 1),), _f("log1pf")),
    Intrinsic("expm1", 1, _float_rule, np.expm1, lambda a, out: (out + 1,), _f("expm1f")),
    Intrinsic("tanh", 1, _float_rule, np.tanh, lambda a, out: (1 - out * out,), _f("tanhf")),
    Intrinsic("sigmoid", 1, _float_rule, _sigmoid_np, lambda a, out: (out * (1 - out),),
              {"float32": "kd_sigmoid_f32({0})", "float64": "kd_sigmoid_f64({0})"}),
    Intrinsic("erf", 1, _float_rule, _erf_np, lambda a, out: (E.call("exp", -(a[0] * a[0])) * (2 / math.sqrt(math.pi)),), _f("erff")),
    Intrinsic("sqrt", 1, _float_rule, np.sqrt, lambda a, out: (0.5 / out,), _f("sqrtf")),
    Intrinsic("rsqrt", 1, _float_rule, lambda x: (1 / np.sqrt(x)).astype(x.dtype), lambda a, out: (-0.5 * out / a[0],),
              {"float32": "(1.0f / sqrtf({0}))", "float64": "(1.0 / sqrt({0}))"},
              {"float32": "rsqrtf({0})", "float64": "rsqrt({0})"}),
    Intrinsic("sin", 1, _float_rule, np.sin, lambda a, out: (E.call("cos", a[0]),), _f("sinf")),
    Intrinsic("cos", 1, _float_rule, np.cos, lambda a, out: (-E.call("sin", a[0]),), _f("cosf")),
    Intrinsic("abs", 1, _same_rule, np.abs, lambda a, out: (_where(a[0] > 0, 1, _where(a[0] < 0, -1, 0)),),
              {**_f("fabsf"), **_ints("abs", 1), "bool": "{0}"}),
    Intrinsic("floor", 1, _same_rule, lambda x: np.floor(x) if x.dtype.kind == "f" else x, lambda a, out: (0,),
              {**_f("floorf"), "*": "{0}"}),
    Intrinsic("ceil", 1, _same_rule, lambda x: np.ceil(x) if x.dtype.kind == "f" else x, lambda a, out: (0,),
              {**_f("ceilf"), "*": "{0}"}),
    Intrinsic("minimum", 2, _same_rule, np.minimum, lambda a, out: (_where(a[0] <= a[1], 1, 0), _where(a[0] <= a[1], 0, 1)),
              {"float32": "kd_min_f32({0}, {1})", "float64": "kd_min_f64({0}, {1})",
               **_ints("min", 2), "bool": "({0} && {1})"}),
    Intrinsic("maximum", 2, _same_rule, np.maximum, lambda a, out: (_where(a[0] >= a[1], 1, 0), _where(a[0] >= a[1], 0, 1)),
              {"float32": "kd_max_f32({0}, {1})", "float64": "kd_max_f64({0}, {1})",
               **_ints("max", 2), "bool": "({0} || {1})"}),
    # identity forward, no gradient: e.g. the max subtracted in a stable log-softmax, whose gradient
    # contribution cancels exactly (as jax.lax.stop_gradient in jax.nn.log_softmax)
    Intrinsic("stop_gradient", 1, _same_rule, lambda x: x, lambda a, out: (0,), {"*": "{0}"}),
    Intrinsic("pow", 2, _pow_rule, _pow_np, lambda a, out: (a[1] * E.call("pow", a[0], a[1] - 1),
                                 _where(a[0] > 0, out * E.call("log", _where(a[0] > 0, a[0], 1)), 0)),
              {"float32": "powf({0}, {1})", "float64": "pow({0}, {1})", **_ints("pow", 2)}),
]

INTRINSICS: dict[str, Intrinsic] = {r.name: r for r in _ROWS}


def derivative(name: str):
    """d(out)/d(arg_k) rules of an intrinsic: (args, out) -> one partial per argument.

    Ties of minimum/maximum send the whole gradient to the first argument; the
    derivative of sqrt at 0 is inf, as the formula says.
    """
    return INTRINSICS[name].derivative
