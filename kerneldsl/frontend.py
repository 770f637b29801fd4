"""Theano's front end on kerneldsl's IR: symbolic arrays, shared variables and `kd.config`.

    x = kd.matrix("x"); y = kd.vector("y")                  # floatX, symbolic sizes
    w = kd.shared(np.zeros(784, "float32"), name="w")       # a value the functions keep
    kd.config.floatX = "float64"                            # or KERNELDSL_FLAGS="floatX=float64"

A symbolic array is a placeholder (a tensor of the graph): numpy's operators and methods on it
build compute ops (kerneldsl/numpy.py). Each dimension is its own size (`x_0`, `x_1`), bound
when a function is called; dimensions of symbolic arrays never broadcast (Theano's
broadcastable flags are False), so two sizes that must agree are checked at the call.
"""

from __future__ import annotations

import itertools
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import dtypes as dt
from .errors import DTypeError, ShapeError
from .ir import expr as E
from .ir.tensor import Placeholder, check_name, new_uid
from .settings import settings

# --- kd.config -------------------------------------------------------------------------------------

DEVICES = {"cpu": "c", "cuda": "cuda", "cuda-emu": "cuda-emu"}
MODES = ("FAST_RUN", "FAST_COMPILE", "DEBUG", "PROFILE")
FLAGS = {"floatX": ("float32", "float64"), "device": tuple(DEVICES), "mode": MODES}


class ConfigError(ValueError):
    """An unknown flag or value in kd.config, KERNELDSL_FLAGS or the rc file."""


@dataclass
class Config:
    """`kd.config`: floatX (the dtype of kd.matrix() & co. and of Python floats in arrays),
    device (cpu, cuda, cuda-emu) and mode (FAST_RUN, FAST_COMPILE, DEBUG, PROFILE). Defaults come
    from the rc file ($KERNELDSL_RC, else ~/.kerneldslrc: lines `flag = value`), then
    KERNELDSL_FLAGS ("device=cpu,floatX=float32,mode=FAST_RUN"); assignments override both."""
    _set: dict = field(default_factory=dict)

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in FLAGS:
            raise ConfigError(f"kd.config has no flag {name!r}; flags: {', '.join(FLAGS)}")
        if name in self._set:
            return self._set[name]
        return _defaults().get(name, FLAGS[name][0])

    def __setattr__(self, name, value):
        if name.startswith("_"):
            return object.__setattr__(self, name, value)
        self._set[name] = _check_flag(name, value, "kd.config")

    def reset(self) -> None:
        """Forget assignments: back to the rc file and KERNELDSL_FLAGS."""
        self._set.clear()

    def __repr__(self) -> str:
        return "kd.config(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in FLAGS) + ")"


def _check_flag(name: str, value, where: str):
    if name not in FLAGS:
        raise ConfigError(f"{where}: unknown flag {name!r}; flags: {', '.join(FLAGS)}")
    value = str(value).strip()
    if value not in FLAGS[name]:
        raise ConfigError(f"{where}: {name}={value!r} is not one of {', '.join(FLAGS[name])}")
    return value


def _parse(text: str, where: str, sep: str) -> dict:
    out = {}
    for item in text.split(sep):
        item = item.split("#", 1)[0].strip()
        if not item:
            continue
        if "=" not in item:
            raise ConfigError(f"{where}: {item!r} is not flag=value")
        k, v = (s.strip() for s in item.split("=", 1))
        out[k] = _check_flag(k, v, where)
    return out


def _defaults() -> dict:
    rc = settings.rc or str(Path.home() / ".kerneldslrc")
    out = {}
    if rc and os.path.isfile(rc):
        out.update(_parse(Path(rc).read_text(), f"rc file {rc}", "\n"))
    flags = settings.flags
    if flags:
        out.update(_parse(flags, "KERNELDSL_FLAGS", ","))
    return out


config = Config()


# --- symbolic arrays -----------------------------------------------------------------------------

_used_names: set = set()
_counter = itertools.count()


def _dims(name: str, ndim: int) -> tuple:
    """Sizes of a new array: `x_0`, `x_1`, ... (a uid is added when a name is reused, so two
    arrays named alike never share a size by accident)."""
    base = name if name not in _used_names else f"{name}{next(_counter)}"
    _used_names.add(name)
    return tuple(E.SizeVar(check_name(f"{base}_{k}", "size")) for k in range(ndim))


def tensor(name: str | None = None, ndim: int = 0, dtype=None, shape=None) -> Placeholder:
    """A symbolic array of `ndim` dimensions (or of the given `shape`: ints and sizes)."""
    uid = new_uid()
    name = check_name(name, "array") if name is not None else f"x{uid}"
    dtype = dt.normalize(dtype if dtype is not None else config.floatX)
    if shape is not None:
        from .lang import shape_tuple
        dims = shape_tuple(shape, f"array {name}")
    else:
        dims = _dims(name, ndim)
    return Placeholder(name, dims, dtype, uid)


def scalar(name=None, dtype=None):
    return tensor(name, 0, dtype)


def vector(name=None, dtype=None):
    return tensor(name, 1, dtype)


def matrix(name=None, dtype=None):
    return tensor(name, 2, dtype)


def tensor3(name=None, dtype=None):
    return tensor(name, 3, dtype)


def tensor4(name=None, dtype=None):
    return tensor(name, 4, dtype)


def iscalar(name=None):
    return tensor(name, 0, "int32")


def ivector(name=None):
    return tensor(name, 1, "int32")


def lvector(name=None):
    return tensor(name, 1, "int64")


def imatrix(name=None):
    return tensor(name, 2, "int32")


def lmatrix(name=None):
    return tensor(name, 2, "int64")


def bvector(name=None):
    return tensor(name, 1, "bool")


# --- shared variables -------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False, repr=False)
class SharedVariable(Placeholder):
    """A named, persistent value: an input of every function that uses it, passed implicitly;
    `updates` write it after every output of a call is computed. Its dimensions are symbolic
    (a new value may have another shape); its dtype is fixed."""
    box: list = field(default_factory=lambda: [None])  # [the value]: the variable is immutable, its value is not
    # held by every call that reads or updates the value, and by set_value: a call's update is
    # atomic with respect to the other calls (functions rotate the value's buffers; see function.py)
    lock: object = field(default_factory=threading.RLock, compare=False)

    def get_value(self, borrow: bool = False) -> np.ndarray:
        v = self.box[0]
        if hasattr(v, "__cuda_array_interface__") and hasattr(v, "get"):  # a GPU array (CuPy)
            return v.get()
        return v if borrow else np.array(v, copy=True)

    def set_value(self, value, borrow: bool = False) -> None:
        """A new value, checked; one held in GPU memory (a device="cuda" function's) stays there."""
        if hasattr(value, "__cuda_array_interface__") and hasattr(value, "get"):
            value = value.get()
        new = _checked_value(self, value, borrow)
        with self.lock:
            self.box[0] = to_device(new) if hasattr(self.box[0], "__cuda_array_interface__") else new

    @property
    def value(self):
        return self.box[0]

    def __getstate__(self) -> dict:
        """Pickled with its value (on the host); the lock is the process's own."""
        state = dict(self.__dict__)
        del state["lock"]
        state["box"] = [self.get_value(borrow=True)]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, lock=threading.RLock())

    def __repr__(self) -> str:
        v = self.box[0]
        return f"<shared {self.name} {getattr(v, 'shape', ())} {self.dtype}>"


def to_device(a):
    """`a` in GPU memory (CuPy, else PyCUDA); a GPU array as it is."""
    if hasattr(a, "__cuda_array_interface__"):
        return a
    try:
        import cupy
        return cupy.asarray(a)
    except ImportError:
        from pycuda import gpuarray
        return gpuarray.to_gpu(np.ascontiguousarray(a))


def python_value(v, p: Placeholder, what: str = "input") -> np.ndarray:
    """Python scalars and lists as `p`'s dtype, when numpy would cast them safely (the rule of a
    call's inputs and of set_value); a value
    the dtype cannot hold is an OverflowError (as numpy 2's `np.array([2**40], np.int32)`), never
    a wrapped integer or an infinity."""
    a = np.asarray(v)
    if a.dtype.kind == "O" and all(isinstance(x, int) for x in a.ravel().tolist()):
        raise OverflowError(f"{what} {p.name}: a Python integer beyond int64 does not fit in {p.dtype}")
    if a.dtype.name == p.dtype:
        return a
    if a.dtype.kind in "biuf" and (np.can_cast(a.dtype, p.dtype, "same_kind") or a.ndim == 0 and a.dtype.kind in "bi"):
        with np.errstate(over="ignore", invalid="ignore"):
            out = a.astype(p.dtype)
        target = np.dtype(p.dtype)
        if a.dtype.kind in "iu" and target.kind in "iu" and a.size:
            info = np.iinfo(target)
            lo, hi = a.min(), a.max()
            if lo < info.min or hi > info.max:
                bad = lo if lo < info.min else hi
                raise OverflowError(f"{what} {p.name}: {int(bad)} is out of bounds for {p.dtype} "
                                    f"[{info.min}, {info.max}]")
        if a.dtype.kind == "f" and target.kind == "f" and a.size and \
                (np.isfinite(a) & ~np.isfinite(out)).any():
            raise OverflowError(f"{what} {p.name}: {float(a[np.isfinite(a) & ~np.isfinite(out)].flat[0])} is "
                                f"beyond the range of {p.dtype}")
        return out
    raise DTypeError(f"{what} {p.name} must be {p.dtype}, got {a.dtype}; convert it with .astype(np.{p.dtype})")


def _checked_value(var: Placeholder, value, borrow: bool):
    """A call's rule (as Theano's set_value): an array keeps its dtype, so one of another dtype is
    refused (a float64 array would lose precision in a float32 variable); Python scalars and lists
    take the variable's dtype when they fit."""
    if isinstance(value, (np.ndarray, np.generic)) and value.dtype.name != var.dtype:
        raise DTypeError(f"shared {var.name} is {var.dtype}; the new value is a {value.dtype} array (convert it "
                         f"with .astype(np.{var.dtype}), as a call's inputs must be)")
    if not isinstance(value, (np.ndarray, np.generic)):
        value = python_value(value, var, "shared")
    a = value if borrow and isinstance(value, np.ndarray) else np.array(value, copy=not borrow, order="C")
    if a.ndim != var.ndim:
        raise ShapeError(f"shared {var.name} has {var.ndim} dimension(s); the new value has shape {a.shape}")
    fixed = tuple(d.value for d in var.shape if isinstance(d, E.Const))
    if len(fixed) == var.ndim and a.shape != fixed:
        raise ShapeError(f"shared {var.name} has the fixed shape {fixed} (kd.shared(..., fixed_shape=True)); the "
                         f"new value has shape {a.shape}")
    return a


def shared(value, name: str | None = None, borrow: bool = False, dtype=None,
           fixed_shape: bool = False) -> SharedVariable:
    """`kd.shared(np.zeros(784, "float32"), name="w")`: a value functions read implicitly and
    `updates` write. Python floats take kd.config.floatX; `borrow=True` keeps the array given.
    `fixed_shape=True` makes its dimensions constants (kernels are built for them, as for a
    layer's weights; a value of another shape is refused)."""
    uid = new_uid()
    name = check_name(name, "shared") if name is not None else f"shared{uid}"
    if dtype is None and isinstance(value, float):
        dtype = config.floatX
    a = np.asarray(value, dtype=dtype)
    if not borrow or not isinstance(value, np.ndarray):
        a = np.array(a, copy=True, order="C")
    dt.normalize(a.dtype)  # a clear DTypeError for unsupported dtypes
    dims = tuple(E.Const(int(d), "int64") for d in a.shape) if fixed_shape else _dims(name, a.ndim)
    var = SharedVariable(name, dims, a.dtype.name, uid)
    var.box[0] = a
    return var


__all__ = ["ConfigError", "SharedVariable", "bvector", "config", "imatrix", "iscalar", "ivector", "lmatrix",
           "lvector", "matrix", "scalar", "shared", "tensor", "tensor3", "tensor4", "vector"]
