"""The callable a build returns: checks inputs, binds sizes, allocates, launches.

Nothing reaches the kernel before every input has the placeholder's rank and
dtype and every size agrees; index checks run inside the kernel, which returns
an error code instead of touching memory outside an array.
"""

from __future__ import annotations

import collections
import ctypes
import weakref

import numpy as np

from ..errors import ShapeError
from ..ir import expr as E
from ..ir.lower import Module, NegativeShape
from ..ir.tensor import SizeCheck
from ..shapes import as_input_array, bind_sizes, concrete_shape, eval_int, shape_function
from . import fastcall
from .cache import function_of

_DUMMY = np.zeros(8, dtype=np.float64)  # stands in for the data pointer of empty arrays
_DUMMY_PTR = _DUMMY.ctypes.data


class Function:
    """`f = kd.build(...)`; `f(a, b)` returns numpy arrays (a tuple for several outputs);
    `f(a, b, out=(o, None))` writes into given arrays (None: a new one)."""

    keep_temps = False  # set: the last call's temporaries stay in `last_temps` (buffer -> array)

    def __init__(self, module: Module, compiled, source: str, inputs, outputs, config=None):
        self.module, self.source, self.source_path = module, source, compiled.source_path
        self.inputs, self.outputs = tuple(inputs), tuple(outputs)
        self.config = config  # the kd.Config this function was built from
        self._lib = compiled.lib  # kept: the library is closed when nothing holds it
        self._entry = function_of(self._lib, "kd_entry", ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                  ctypes.c_void_p)
        tensors = module.tensors
        self._temps = [tensors[b] for b in module.temps]
        self._nbufs = len(module.buffers)
        self._nmeta = len(module.sizes) + sum(b.ndim for b in module.buffers)
        self._gemm = any(k.template == "gemm" for k in module.kernels)
        self._plan()
        self._fast = self.fast_call(fastcall.SINGLE if len(self.outputs) == 1 else fastcall.TUPLE)

    def fast_call(self, returns: int, convert=None):
        """A C call path of this function (runtime/fastcall.py) returning the one output, a tuple or
        a list; its Python path is this function's (`convert` shapes that path's result). None
        where the C path is not available."""
        from . import fastcall
        if getattr(self, "_entry", None) is None:  # a GPU function launches through its driver
            return None
        # No reference cycle, so that a deleted function unloads its library at once: the call
        # path holds the library (its entry must stay mapped) and this function and itself weakly.
        me, holder = weakref.ref(self), []

        def slow(*args, out=None):
            f = me()
            if f is None:
                raise ReferenceError("the kerneldsl function of this call path was deleted")
            result = f._call(args, out, holder[0]() if holder else None)
            return convert(result) if convert is not None else result
        slow.library = self._lib
        address = ctypes.c_void_p.from_address(ctypes.addressof(self._entry)).value
        fc = fastcall.make(address, slow,
                           [p.dtype for p in self.inputs], [p.ndim for p in self.inputs], self._out_dtypes[:self._nout],
                           [t.ndim for t in self.outputs], len(self._temps), returns)
        if fc is not None:
            holder.append(weakref.ref(fc))
        return fc

    @property
    def kernels(self):
        """One summary per kernel: its template and knobs, what it fused, its threads; str() adds
        the loop nest or template structure that runs."""
        from ..codegen.c import KernelSummary
        return tuple(KernelSummary(k, self.config.target) for k in self.module.kernels)

    @property
    def rewrites(self) -> collections.Counter:
        """How often each graph rewrite rule fired in this build (0 for a rule that did not)."""
        return collections.Counter(self.module.rewrites)

    @property
    def calls(self) -> int:
        """Calls of a function built with profile=True."""
        return int(self._profile_read()[1]) if self._profiled() else 0

    def thread_choices(self) -> list:
        """How this module's calls chose their threads (kd_team, templates/c/team.h): per size
        signature seen, {"one": calls on one thread, "all": calls on all, "us_one"/"us_all": the
        moving average of a call's time with each, None while unmeasured}. Empty for a module
        without parallel regions, or where OpenMP has one thread."""
        fn = self._symbol("kd_threads", None, ctypes.c_void_p)
        if fn is None:  # no parallel region: nothing to choose
            return []
        out = (ctypes.c_int64 * 16)()
        fn(out)
        rows = [list(out)[4 * s:4 * s + 4] for s in range(4)]
        return [{"one": one, "all": all_, "us_one": ns1 / 1e3 if ns1 >= 0 else None,
                 "us_all": nsa / 1e3 if nsa >= 0 else None}
                for one, all_, ns1, nsa in rows if one >= 0 and one + all_ > 0]

    def kernel_times(self) -> dict:
        """Seconds spent in each kernel so far (a function built with profile=True)."""
        if not self._profiled():
            raise ValueError("kernel_times: build with profile=True (kd.function(..., mode='PROFILE'))")
        seconds, _ = self._profile_read()
        return {k.name: s for k, s in zip(self.module.kernels, seconds)}

    def _symbol(self, name: str, restype, *argtypes):
        """The library's function `name` (cache.function_of), or None where it has none."""
        try:
            return function_of(self._lib, name, restype, *argtypes)
        except ValueError:  # no such symbol
            return None

    def _profiled(self) -> bool:
        return self._symbol("kd_profile", ctypes.c_longlong, ctypes.c_void_p) is not None

    def _profile_read(self):
        fn = self._symbol("kd_profile", ctypes.c_longlong, ctypes.c_void_p)
        out = (ctypes.c_double * max(len(self.module.kernels), 1))()
        calls = fn(out)
        return list(out)[:len(self.module.kernels)], calls

    def __reduce__(self):
        """Pickles as its module and C source; loading compiles that source (a disk-cache hit
        where this machine built it before), so the loaded function runs the same code."""
        return _load_function, (self.module, self.source, self.inputs, self.outputs, self.config)

    def __repr__(self) -> str:
        ins = ", ".join(t.name for t in self.inputs)
        outs = ", ".join(t.name for t in self.outputs)
        return f"<kerneldsl.Function ({ins}) -> ({outs}), {len(self.kernels)} kernel(s)>"

    def _plan(self) -> None:
        """Precompute the checks of a call, so that a launch costs a few microseconds."""
        slot = {s: k for k, s in enumerate(self.module.sizes)}
        self._slot = slot
        self._in_plan = []
        for p in self.inputs:
            bare = tuple((k, slot[d]) for k, d in enumerate(p.shape) if isinstance(d, E.SizeVar))
            self._in_plan.append((np.dtype(p.dtype), p.ndim, bare))
        self._derived = shape_function([p.shape for p in self.inputs], slot)
        self._shapes = shape_function([t.shape for t in self.outputs + tuple(self._temps)], slot)
        self._out_dtypes = [np.dtype(t.dtype) for t in self.outputs + tuple(self._temps)]
        # shapes made of sizes and constants can't go negative: skip that check per call
        self._may_be_negative = any(not isinstance(d, (E.SizeVar, E.Const))
                                    for t in self.outputs + tuple(self._temps) for d in t.shape)
        self._nout = len(self.outputs)

    def _fast_sizes(self, arrays):
        """The size list, or None when anything is off (the slow path then explains what)."""
        shapes = []
        for a, plan in zip(arrays, self._in_plan):
            if a.dtype != plan[0] or not a.dtype.isnative:
                return None
            shapes.append(a.shape)
        return self._shape_sizes(shapes)

    def _shape_sizes(self, shapes):
        """The size list bound from the inputs' shapes, or None when anything is off."""
        sizes = [-1] * len(self._slot)
        for shape, (_, ndim, bare) in zip(shapes, self._in_plan):
            if len(shape) != ndim:
                return None
            for k, j in bare:
                if sizes[j] < 0:
                    sizes[j] = shape[k]
                elif sizes[j] != shape[k]:
                    return None
        if any(s < 0 for s in sizes) or self._derived(sizes) != tuple(shapes):
            return None
        return sizes

    def _input(self, a, p):
        return a if type(a) is np.ndarray else as_input_array(a, p)

    def _bind(self, args) -> tuple[list, list, list]:
        """(input arrays, size values, shapes of the outputs and temps), every input checked."""
        if len(args) != len(self.inputs):
            names = ", ".join(t.name for t in self.inputs)
            raise TypeError(f"this function takes {len(self.inputs)} input(s) ({names}), got {len(args)}")
        arrays = [self._input(a, p) for a, p in zip(args, self.inputs)]
        sizes = self._fast_sizes(arrays)
        if sizes is None:
            named = bind_sizes(self.inputs, arrays)  # raises the precise ShapeError/DTypeError
            sizes = [named[s] for s in self.module.sizes]
        return arrays, sizes, self._checked_shapes(sizes)

    def _checked_shapes(self, sizes) -> list:
        """The shapes of the outputs and temporaries; ShapeError naming a tensor that would have a
        negative dimension."""
        shapes = self._shapes(sizes)
        if self._may_be_negative and any(d < 0 for shape in shapes for d in shape):
            named = dict(zip(self.module.sizes, sizes))
            for t in self.outputs + tuple(self._temps):
                concrete_shape(t, named)  # raises the ShapeError naming the tensor
        return shapes

    def __call__(self, *args, out=None):
        if out is None and self._fast is not None:
            return self._fast(*args)  # C when the arrays are like a call it remembers, else _call
        return self._call(args, out, None)

    def _call(self, args, out, fast):
        """The Python path of a call; a plain call of plain arrays is remembered by `fast`."""
        arrays, sizes, shapes = self._bind(args)
        if out is None:
            outs = [(o, False) for o in self._allocate(shapes[:self._nout], 0)]
        else:
            outs = self._outputs(shapes[:self._nout], out, arrays)
        targets = [o if not alias and not self._strided(o) else np.empty(o.shape, o.dtype) for o, alias in outs]
        outs = [(o, alias or t is not o) for (o, alias), t in zip(outs, targets)]
        for k, a in enumerate(arrays):
            if not a.flags.aligned or self._strided(a):  # a misaligned base or a stride that is not a
                arrays[k] = np.ascontiguousarray(a)  # whole number of elements (a structured array's field)
        ptrs, strides = [], []
        for a in arrays + targets:
            ptrs.append(a.ctypes.data if a.size else 0)
            isz = a.itemsize
            strides.append([st // isz for st in a.strides])
        meta, temps = self._launch(sizes, shapes, ptrs, strides)
        if fast is not None and not self.keep_temps and all(
                a is b and type(a) is np.ndarray and a.size for a, b in zip(arrays, args)) and all(
                a.size for a in temps) and all(t.size and t.flags.c_contiguous and not alias
                                               for t, (_, alias) in zip(targets, outs)):
            fast.remember(tuple(arrays), np.asarray(meta, np.int64).tobytes(), tuple(shapes[:self._nout]),
                          tuple(temps))
        for (o, alias), t in zip(outs, targets):
            if alias:
                o[...] = t
        if self._nout == 1:
            return outs[0][0]
        return tuple(o for o, _ in outs)

    def _launch(self, sizes, shapes, pointers, strides) -> tuple[list, list]:
        """Run the kernels on the given memory (per input and output, in order, its data pointer,
        0 for an empty one, and its strides in elements); the temporaries are allocated here:
        (the meta block passed to the entry, the temporaries)."""
        temps = self._allocate(shapes[self._nout:], self._nout)
        if self.keep_temps:  # for checks of every kernel (kd.function's DEBUG mode)
            self.last_temps = dict(zip(self.module.temps, temps))
        ptrs, meta = list(pointers), list(sizes)
        for k, st in enumerate(strides):
            if ptrs[k]:
                meta += st
            else:
                # an empty array's loads are all out of range; a failed check reads element 0,
                # which zero strides keep on the dummy pointer whatever the other indices are
                meta += [0] * len(st)
                ptrs[k] = _DUMMY_PTR
        for a in temps:
            if a.size:
                ptrs.append(a.ctypes.data)
                isz = a.itemsize
                meta += [st // isz for st in a.strides]
            else:
                ptrs.append(_DUMMY_PTR)
                meta += [0] * a.ndim
        ptrs = (ctypes.c_void_p * self._nbufs)(*ptrs)
        meta_arr = (ctypes.c_int64 * max(self._nmeta, 1))(*meta)
        report = (ctypes.c_int64 * 2)()
        rc = self._entry(ptrs, meta_arr, report)
        if rc:
            raise self._error(rc, dict(zip(self.module.sizes, sizes)), report[1])
        return meta, temps

    def _allocate(self, shapes, first: int) -> list:
        """New arrays for the outputs (first = 0) or the temporaries (first = number of outputs)."""
        tensors = self.outputs + tuple(self._temps)
        result = []
        for k, s in enumerate(shapes, first):
            try:
                result.append(np.empty(s, dtype=self._out_dtypes[k]))
            except (ValueError, MemoryError) as e:
                t = tensors[k]
                raise ShapeError(f"{t.name} would have shape {s} ({t.dtype}), too large to allocate: "
                                 f"{e}") from None
        return result

    def _strided(self, a: np.ndarray) -> bool:
        """An array a GEMM kernel of this module would leave to its loop nest (an innermost stride
        other than one element): such inputs are read from a copy, such outputs written through
        one, since the copy costs a pass over memory and the loop nest a contraction's worth."""
        return self._gemm and a.ndim > 0 and a.size > 1 and a.strides[-1] != a.itemsize

    def _outputs(self, shapes, out, arrays):
        out = (out,) if isinstance(out, np.ndarray) else tuple(out)
        if len(out) != len(self.outputs):
            raise TypeError(f"out= needs {len(self.outputs)} array(s), got {len(out)}")
        result = []
        for k, (t, s, o) in enumerate(zip(self.outputs, shapes, out)):
            if o is None:  # this one allocated as usual
                result.append((self._allocate([s], k)[0], False))
                continue
            if not isinstance(o, np.ndarray):
                raise TypeError(f"out= for {t.name} must be a numpy array, got {type(o).__name__}")
            if o.shape != s:
                raise ShapeError(f"out= for {t.name} must have shape {s}, got {o.shape}")
            if o.dtype.name != t.dtype or not o.dtype.isnative:
                from ..errors import DTypeError
                raise DTypeError(f"out= for {t.name} must be {t.dtype}, got {o.dtype}")
            if not o.flags.writeable:
                raise ValueError(f"out= for {t.name} is read-only")
            if self_overlapping(o):
                raise ValueError(f"out= for {t.name} overlaps itself (a view with a zero or overlapping "
                                 f"stride, strides {o.strides}): each element needs its own memory")
            alias = not o.flags.aligned or any(np.may_share_memory(o, a) for a in arrays) or any(
                np.may_share_memory(o, r) for r, _ in result)
            result.append((o, alias))
        return result

    def _error(self, code: int, sizes: dict, index: int) -> Exception:
        info = self.module.errors.get(code)
        if info is None:
            return RuntimeError(f"kernel failed with unknown code {code}")
        if isinstance(info, SizeCheck):
            return ShapeError(info.message.format(a=eval_int(info.a, sizes), b=eval_int(info.b, sizes)))
        if isinstance(info, NegativeShape):  # an op fused away: the message of a stored one
            shape = tuple(eval_int(d, sizes) for d in info.shape)
            k = next(k for k, n in enumerate(shape) if n < 0)
            names = ", ".join(f"{s.name}={v}" for s, v in sizes.items())
            return ShapeError(f"{info.tensor} would have negative dimension {k}: {info.shape[k]} = {shape[k]} "
                              f"with {names}; the inputs are too small for this computation")
        extent = eval_int(info.extent, sizes)
        if info.lo is not None:
            lo, hi = eval_int(info.lo, sizes), eval_int(info.hi, sizes)
            return IndexError(
                f"{info.op} reads {info.load}: the index in dimension {info.dim} ranges over [{lo}, {hi}] "
                f"but {info.tensor} has size {extent} there; the inputs are too small for this "
                f"computation, or the index expression is off")
        return IndexError(
            f"{info.op} reads {info.load}: index {index} in dimension {info.dim} is out of range "
            f"[0, {extent}) for {info.tensor}; nothing was read outside the array")


def self_overlapping(a: np.ndarray) -> bool:
    """Two elements of `a` may share memory (a broadcast view, or overlapping strides). Exact for
    the layouts numpy makes (strides sorted by size, each stepping past the dimensions inside
    it); an exotic interleaving that does not overlap is refused too, as a caller's mistake."""
    if a.size == 0:
        return False  # no element, no overlap (numpy gives empty arrays zero strides)
    dims = sorted((abs(st), n) for st, n in zip(a.strides, a.shape) if n > 1)
    span = a.itemsize  # bytes covered by the dimensions already placed
    for st, n in dims:
        if st < span:
            return True
        span = st * (n - 1) + span
    return False


def _load_function(module, source, inputs, outputs, config) -> Function:
    from ..target import Target
    from .build import compile_c
    built, here = config.target, Target.detect("c")
    if (built.isa, built.vector_bytes) != (here.isa, here.vector_bytes):
        raise RuntimeError(f"this kerneldsl function was compiled for {built.isa} ({8 * built.vector_bytes}-bit "
                           f"vectors) and this machine is {here.isa} ({8 * here.vector_bytes}-bit): build it "
                           f"again from its graph here (kd.build(inputs, outputs); a kd.function pickle does)")
    return Function(module, compile_c(source, built, name=outputs[0].name), source, inputs, outputs, config)
