"""kerneldsl: loop-level tensor expressions compiled to fast kernels, with symbolic gradients.

    import kerneldsl as kd
    n, m, k = kd.sizes("n m k")
    A = kd.placeholder((n, k), "float32", name="A")
    B = kd.placeholder((k, m), "float32", name="B")
    r = kd.reduce_axis(k, name="r")
    C = kd.compute((n, m), lambda i, j: kd.sum(A[i, r] * B[r, j], axis=r), name="C")
    f = kd.build([A, B], [C])
"""

__version__ = "0.1.0"

from .api import build
from .schedule.config import Config
from .schedule.templates import knobs
from .settings import settings
from .target import Target
from .autodiff import check_grad, grad
from .errors import CompileError, DTypeError, ScheduleError, ShapeError
from .ir.expr import Expr
from .ir.tensor import ComputeOp, Placeholder, Tensor
from .lang import (
                   abs,
                   argmax,
                   argmin,
                   cast,
                   ceil,
                   compute,
                   const,
                   cos,
                   erf,
                   exp,
                   expm1,
                   floor,
                   log,
                   log1p,
                   max,
                   maximum,
                   min,
                   minimum,
                   placeholder,
                   pow,
                   prod,
                   reduce_axis,
                   rsqrt,
                   sigmoid,
                   sin,
                   size,
                   sizes,
                   sqrt,
                   stop_gradient,
                   sum,
                   tanh,
                   where,
)
from .reference import evaluate
from .schedule.schedule import LoopRef, Schedule, Trace, schedule

__all__ = [
                   "CompileError",
                   "Config",
                   "Target",
                   "knobs",
                   "settings",
                   "ComputeOp",
                   "DTypeError",
                   "Expr",
                   "LoopRef",
                   "Placeholder",
                   "Schedule",
                   "ScheduleError",
                   "ShapeError",
                   "Tensor",
                   "Trace",
                   "abs",
                   "argmax",
                   "argmin",
                   "build",
                   "cast",
                   "ceil",
                   "check_grad",
                   "compute",
                   "const",
                   "cos",
                   "erf",
                   "evaluate",
                   "exp",
                   "expm1",
                   "floor",
                   "grad",
                   "log",
                   "log1p",
                   "max",
                   "maximum",
                   "min",
                   "minimum",
                   "placeholder",
                   "pow",
                   "prod",
                   "reduce_axis",
                   "rsqrt",
                   "schedule",
                   "sigmoid",
                   "sin",
                   "size",
                   "sizes",
                   "sqrt",
                   "stop_gradient",
                   "sum",
                   "tanh",
                   "where",
]

from . import numpy  # noqa: E402,F401 - numpy's operators and methods on tensors (Tensor hooks)
