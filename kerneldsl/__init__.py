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

import importlib
import sys
import types

from .errors import CompileError, DisconnectedInputError, DTypeError, ScheduleError, ShapeError
from .ir.expr import Expr
from .ir.tensor import ComputeOp, Placeholder, Tensor
from .settings import settings
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
                   erfc,
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
                   softplus,
                   sizes,
                   sqrt,
                   stop_gradient,
                   sum,
                   tanh,
                   where,
)

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
                   "DisconnectedInputError",
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
                   "erfc",
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
                   "softplus",
                   "sizes",
                   "sqrt",
                   "stop_gradient",
                   "sum",
                   "tanh",
                   "tune",
                   "where",
    "function", "debugprint", "DebugModeError", "nn", "shared", "config",
]

from . import numpy  # noqa: E402,F401 - numpy's operators and methods on tensors (Tensor hooks)
from .frontend import (  # noqa: E402
    SharedVariable,
    bvector,
    config,
    imatrix,
    iscalar,
    ivector,
    lmatrix,
    lvector,
    matrix,
    scalar,
    shared,
    tensor,
    tensor3,
    tensor4,
    vector,
)
from . import export  # noqa: E402 - kd.export.torch_op / jax_op / c_library (torch and jax imported lazily)

# The compiler behind the front end loads on first use (PEP 562), so that `import kerneldsl`
# costs little more than numpy: the name -> the module that defines it.
_LAZY = {
    "build": "pipeline", "schedule": "schedule.schedule", "Schedule": "schedule.schedule",
    "LoopRef": "schedule.schedule", "Trace": "schedule.schedule", "Config": "schedule.config",
    "knobs": "schedule.templates", "Target": "target", "check_grad": "autodiff", "grad": "autodiff",
    "evaluate": "reference", "function": "function", "debugprint": "function",
    "DebugModeError": "function", "tune": "tuning",
}
_SUBMODULES = ("nn", "datasets", "export", "tuning")


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'kerneldsl' has no attribute {name!r}")
    globals()[name] = value
    return value


class _Package(types.ModuleType):
    """The import system records a loaded submodule as an attribute of its package: kd.function
    and kd.schedule stay the functions, not the modules of the same name."""

    def __setattr__(self, name, value):
        if name in ("function", "schedule") and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))
