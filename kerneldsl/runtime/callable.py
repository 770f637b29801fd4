"""The callable a build returns: checks inputs, binds sizes, allocates, launches.

Nothing reaches the kernel before every input has the placeholder's rank and
dtype and every size agrees; index checks run inside the kernel, which returns
an error code instead of touching memory outside an array.
"""

from __future__ import annotations

import ctypes

import numpy as np

from ..errors import ShapeError
from ..ir.lower import Module
from ..shapes import as_input_array, bind_sizes, concrete_shape, eval_int

_DUMMY = np.zeros(8, dtype=np.float64)  # stands in for the data pointer of empty arrays
_DUMMY_PTR = _DUMMY.ctypes.data


def _ptr(a: np.ndarray) -> int:
    return a.ctypes.data if a.size else _DUMMY_PTR


class Function:
    """`f = kd.build(...)`; `f(a, b)` returns numpy arrays (a tuple for several outputs)."""

    def __init__(self, module: Module, lib, source: str, inputs, outputs, source_path: str = ""):
        self.module, self.source, self.source_path = module, source, source_path
        self.inputs, self.outputs = tuple(inputs), tuple(outputs)
        self._lib = lib
        self._entry = lib.kd_entry
        self._entry.argtypes = (ctypes.c_void_p, ctypes.c_void_p)
        self._entry.restype = ctypes.c_int
        tensors = module.tensors
        self._temps = [tensors[b] for b in module.temps]
        self._nbufs = len(module.buffers)
        self._nmeta = len(module.sizes) + sum(b.ndim for b in module.buffers)

    @property
    def kernels(self):
        return self.module.kernels

    def __repr__(self) -> str:
        ins = ", ".join(t.name for t in self.inputs)
        outs = ", ".join(t.name for t in self.outputs)
        return f"<kerneldsl.Function ({ins}) -> ({outs}), {len(self.kernels)} kernel(s)>"

    def __call__(self, *args, out=None):
        if len(args) != len(self.inputs):
            names = ", ".join(t.name for t in self.inputs)
            raise TypeError(f"this function takes {len(self.inputs)} input(s) ({names}), got {len(args)}")
        arrays = [as_input_array(a, p) for a, p in zip(args, self.inputs)]
        sizes = bind_sizes(self.inputs, arrays)
        arrays = [a if a.flags.aligned else np.ascontiguousarray(a) for a in arrays]
        outs = self._outputs(sizes, out, arrays)
        targets = [o if not alias else np.empty(o.shape, o.dtype) for o, alias in outs]
        temps = [np.empty(concrete_shape(t, sizes), dtype=t.dtype) for t in self._temps]
        bufs = arrays + targets + temps
        meta = [sizes[s] for s in self.module.sizes]
        for a in bufs:
            isz = a.itemsize
            meta.extend(s // isz for s in a.strides)
        ptrs = (ctypes.c_void_p * self._nbufs)(*[_ptr(a) for a in bufs])
        meta_arr = (ctypes.c_int64 * max(self._nmeta, 1))(*meta)
        rc = self._entry(ptrs, meta_arr)
        if rc:
            raise self._error(rc, sizes)
        for (o, alias), t in zip(outs, targets):
            if alias:
                o[...] = t
        results = tuple(o for o, _ in outs)
        return results[0] if len(results) == 1 else results

    def _outputs(self, sizes, out, arrays):
        shapes = [concrete_shape(t, sizes) for t in self.outputs]
        if out is None:
            return [(np.empty(s, dtype=t.dtype), False) for t, s in zip(self.outputs, shapes)]
        out = (out,) if isinstance(out, np.ndarray) else tuple(out)
        if len(out) != len(self.outputs):
            raise TypeError(f"out= needs {len(self.outputs)} array(s), got {len(out)}")
        result = []
        for t, s, o in zip(self.outputs, shapes, out):
            if not isinstance(o, np.ndarray):
                raise TypeError(f"out= for {t.name} must be a numpy array, got {type(o).__name__}")
            if o.shape != s:
                raise ShapeError(f"out= for {t.name} must have shape {s}, got {o.shape}")
            if o.dtype.name != t.dtype or not o.dtype.isnative:
                from ..errors import DTypeError
                raise DTypeError(f"out= for {t.name} must be {t.dtype}, got {o.dtype}")
            if not o.flags.writeable:
                raise ValueError(f"out= for {t.name} is read-only")
            alias = not o.flags.aligned or any(np.may_share_memory(o, a) for a in arrays) or any(
                np.may_share_memory(o, r) for r, _ in result)
            result.append((o, alias))
        return result

    def _error(self, code: int, sizes: dict) -> Exception:
        info = self.module.errors.get(code)
        if info is None:
            return RuntimeError(f"kernel failed with unknown code {code}")
        extent = eval_int(info.extent, sizes)
        if info.lo is not None:
            lo, hi = eval_int(info.lo, sizes), eval_int(info.hi, sizes)
            return IndexError(
                f"{info.op} reads {info.load}: index {info.dim} ranges over [{lo}, {hi}] but dimension "
                f"{info.dim} of {info.tensor} has size {extent}; the inputs are too small for this "
                f"computation, or the index expression is off")
        return IndexError(
            f"{info.op} reads {info.load}: index {info.dim} went out of range [0, {extent}) of "
            f"{info.tensor} (a gathered index or a guarded read outside the array); no element was read "
            f"outside the array")
