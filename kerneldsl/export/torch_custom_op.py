"""`kd.export.torch_op`: a DSL graph as a PyTorch custom op, with the backward kd.grad derives.

    op = kd.export.torch_op([X, W, B], [Y], name="mylib::layer_norm")
    y = op(x, w, b)                      # torch tensors in, torch tensors out
    y.sum().backward()                   # the backward op (mylib::layer_norm_backward), kd.grad's kernels
    torch.library.opcheck(op, (x, w, b))
    torch.compile(model, fullgraph=True, dynamic=True)   # traced through the fake kernel: no graph break

What is registered (torch.library.custom_op with an explicit schema; `op` is its CustomOpDef,
`op.kerneldsl` the export's description):
- CPU: the C kernels of kd.build, called on the tensors' memory: each tensor viewed as a numpy
  array (same data pointer and strides), the Function called on those views (its C call path
  when the layout repeats), the outputs wrapped by torch.from_numpy: no copy, any strides
  (expanded, transposed, sliced inputs are read in place), outputs new contiguous tensors.
- CUDA: the CUDA library of export/cfunction.py (nvcc, built at the first CUDA call), launched on
  the current stream with a workspace from torch's caching allocator.
- fake: output shapes from the symbolic shapes, evaluated on SymInts (dynamic sizes stay
  symbolic; their consistency is checked with torch._check), so torch.compile traces the op.
- autograd (register_autograd): setup_context saves only what the backward reads (export/spec.py),
  backward calls `<name>_backward`, itself a custom op with CPU, CUDA and fake kernels.

Integer inputs get no gradient (None); integer outputs take no cotangent. Outputs are always new
tensors: an input listed as an output is refused (exported ops are functional).

On few cores, set OMP_WAIT_POLICY=passive before importing torch or kerneldsl: the kernels use
the system's OpenMP and torch its own, and the idle workers of each spin on the cores the other
needs (benchmarks/NOTES.md, "Export").
"""

from __future__ import annotations

import ctypes
import re
from dataclasses import dataclass, field

from ..errors import DTypeError, ShapeError
from ..ir import expr as E
from ..shapes import shape_function
from .spec import OpSpec, Signature, op_spec

_QUALNAME = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)::([A-Za-z_][A-Za-z0-9_]*)$")


def import_torch():
    try:
        import torch
    except ImportError:
        raise ImportError("kd.export.torch_op needs PyTorch: pip install 'kerneldsl[export]' (or torch)") from None
    return torch


def torch_dtype(name: str):
    torch = import_torch()
    return {"float32": torch.float32, "float64": torch.float64, "int32": torch.int32, "int64": torch.int64,
            "bool": torch.bool}[name]


@dataclass(frozen=True)
class TorchExport:
    """What torch_op registered: `op.kerneldsl`."""
    spec: OpSpec
    qualname: str
    forward: object  # the CPU kd.build Function of the forward
    backward: object  # ... of the backward (None without one)
    backward_op: object = None  # the CustomOpDef of `<name>_backward`
    cuda: dict = field(default_factory=dict, compare=False)  # Signature name -> CUDA kernel, once built


class ArgumentCheck:
    """The checks every kernel (CPU, CUDA, fake) makes before touching a tensor: a tensor per
    input, of the placeholder's dtype, strided, all on one device."""

    def __init__(self, sig: Signature, qualname: str):
        torch = import_torch()
        self.sig, self.qualname = sig, qualname
        self.dtypes = tuple(torch_dtype(p.dtype) for p in sig.inputs)
        self.out_dtypes = tuple(torch_dtype(t.dtype) for t in sig.outputs)
        self.strided = torch.strided

    def __call__(self, tensors, device_type: str | None) -> None:
        for t, want, p in zip(tensors, self.dtypes, self.sig.inputs):
            if t.dtype is not want or t.layout is not self.strided:
                self._explain(tensors)
        if device_type is not None:
            for t in tensors:
                if t.device.type != device_type:
                    self._explain(tensors)
        if len(tensors) > 1:
            dev = tensors[0].device
            for t in tensors:
                if t.device != dev:
                    self._explain(tensors)

    def _explain(self, tensors):
        for t, want, p in zip(tensors, self.dtypes, self.sig.inputs):
            if t.layout is not self.strided:
                raise TypeError(f"{self.qualname}: input {p.name} is a {t.layout} tensor; kerneldsl ops take strided "
                                f"(dense) tensors: pass {p.name}.to_dense()")
            if t.dtype is not want:
                raise DTypeError(f"{self.qualname}: input {p.name} must be {want}, got {t.dtype}; convert it with "
                                 f"{p.name}.to({want}) (kerneldsl does not cast silently)")
        devices = sorted({str(t.device) for t in tensors})
        if len(devices) > 1:
            where = ", ".join(f"{p.name} on {t.device}" for t, p in zip(tensors, self.sig.inputs))
            raise ValueError(f"{self.qualname}: all inputs must be on one device, got {where}")
        raise ValueError(f"{self.qualname}: inputs on {devices[0]}: this kernel runs on CPU and CUDA tensors only")


class CpuKernel:
    """The CPU implementation: kd.build's C Function on the tensors' own memory. Each tensor is
    viewed as a numpy array (`Tensor.numpy`: same memory, same strides, nothing copied), so the
    call takes the Function's C call path (runtime/fastcall.py) when its shapes and strides are
    those of the call before, and its checked Python path otherwise; the outputs are numpy's new
    arrays, handed to torch without a copy (`torch.from_numpy`)."""

    def __init__(self, sig: Signature, function, qualname: str):
        self.sig, self.f, self.check = sig, function, ArgumentCheck(sig, qualname)
        self.single = len(sig.outputs) == 1
        self.from_numpy = import_torch().from_numpy

    def __call__(self, *tensors):
        self.check(tensors, "cpu")
        try:
            # force=True: a view even of a tensor that requires grad (the dispatcher is below
            # autograd here); a CPU tensor is never copied
            result = self.f(*[t.numpy(force=True) for t in tensors])
        except (ShapeError, IndexError) as e:
            raise type(e)(f"{self.check.qualname}: {e}") from None
        if self.single:
            return self.from_numpy(result)
        return tuple(self.from_numpy(r) for r in result)


class CudaKernel:
    """The CUDA implementation: the function's CUDA library (export/cfunction.py, nvcc), launched
    on the current stream of the tensors' device; built at the first call."""

    def __init__(self, sig: Signature, qualname: str, library=None):
        self.sig, self.qualname, self.check = sig, qualname, ArgumentCheck(sig, qualname)
        self.single = len(sig.outputs) == 1
        self._lib = library  # (ctypes library, FunctionSource); tests pass the emulator's

    def library(self):
        if self._lib is None:
            from .build import cuda_library
            from .cfunction import function_source
            fs = function_source(self.sig, "cuda")
            self._lib = (cuda_library(fs.text, name=self.sig.name), fs)
        return self._lib

    def __call__(self, *tensors, stream: int | None = None):
        torch = import_torch()
        self.check(tensors, None if stream is not None else "cuda")
        lib, fs = self.library()
        _, out_shapes = self.sig.bind([t.shape for t in tensors])  # ShapeError naming the culprit
        dev = tensors[0].device if tensors else torch.device("cuda")
        i64 = ctypes.c_int64
        shapes = [(i64 * max(len(t.shape), 1))(*t.shape) for t in tensors]
        out_shape_arrays = [(i64 * max(len(s), 1))(*s) for s in out_shapes]
        ws = i64(0)
        rc = getattr(lib, f"{fs.symbol}_shapes")(*shapes, *out_shape_arrays, ctypes.byref(ws))
        if rc:
            raise self._error(lib, fs, rc, 0)
        outs = [torch.empty(s, dtype=d, device=dev) for s, d in zip(out_shapes, self.check.out_dtypes)]
        workspace = torch.empty(max(ws.value, 1), dtype=torch.uint8, device=dev)
        args = []
        for t, sh in zip((*tensors, *outs), shapes + out_shape_arrays):
            args += [ctypes.c_void_p(t.data_ptr() or None), sh, (i64 * max(t.dim(), 1))(*t.stride())]
        bad = i64(0)
        if stream is None:
            with torch.cuda.device(dev):
                stream = torch.cuda.current_stream(dev).cuda_stream
                rc = getattr(lib, fs.symbol)(*args, ctypes.c_void_p(workspace.data_ptr()), ctypes.byref(bad),
                                             ctypes.c_void_p(stream))
        else:  # the emulator (tests): host memory, no stream
            rc = getattr(lib, fs.symbol)(*args, ctypes.c_void_p(workspace.data_ptr()), ctypes.byref(bad),
                                         ctypes.c_void_p(stream))
        if rc:
            raise self._error(lib, fs, rc, bad.value)
        return outs[0] if self.single else tuple(outs)

    def _error(self, lib, fs, code: int, bad: int) -> Exception:
        fn = getattr(lib, f"{fs.symbol}_error")
        fn.restype = ctypes.c_char_p
        text = fn(code).decode(errors="replace")
        kind = IndexError if code > 0 else ShapeError if code in (-1, -2) else RuntimeError
        return kind(f"{self.qualname}: {text} (code {code}, bad index {bad})")


class FakeKernel:
    """The fake (meta) implementation: output shapes from the symbolic shapes, on SymInts."""

    def __init__(self, sig: Signature, qualname: str):
        self.sig, self.qualname, self.check = sig, qualname, ArgumentCheck(sig, qualname)
        self.single = len(sig.outputs) == 1
        sizes = []
        for p in sig.inputs:
            for d in p.shape:
                for s in sorted(E.size_vars(d), key=lambda v: v.name):
                    if s not in sizes:
                        sizes.append(s)
        self.slot = {s: k for k, s in enumerate(sizes)}
        self.bare = []  # (input, dim, slot) of each dimension that is a size alone
        self.derived = []  # (input, dim, function of the size list)
        for k, p in enumerate(sig.inputs):
            for d, dim in enumerate(p.shape):
                if isinstance(dim, E.SizeVar):
                    self.bare.append((k, d, self.slot[dim]))
                else:
                    self.derived.append((k, d, shape_function([(dim,)], self.slot), dim))
        self.out_shapes = shape_function([t.shape for t in sig.outputs], self.slot)

    def __call__(self, *tensors):
        torch = import_torch()
        self.check(tensors, None)
        sig = self.sig
        for t, p in zip(tensors, sig.inputs):
            if t.dim() != p.ndim:
                raise ShapeError(f"{self.qualname}: input {p.name} must have {p.ndim} dimension(s), got shape "
                                 f"{tuple(t.shape)}")
        sizes = [None] * len(self.slot)
        for k, d, j in self.bare:
            v = tensors[k].shape[d]
            if sizes[j] is None:
                sizes[j] = v
            else:
                _require(v == sizes[j], lambda k=k, d=d, j=j: (
                    f"{self.qualname}: dimension {d} of {sig.inputs[k].name} is {tensors[k].shape[d]} but size "
                    f"{self._size_name(j)} is {sizes[j]} from an earlier input"))
        for k, d, fn, dim in self.derived:
            want = fn(sizes)[0][0]
            _require(tensors[k].shape[d] == want, lambda k=k, d=d, dim=dim, want=want: (
                f"{self.qualname}: dimension {d} of {sig.inputs[k].name} must be {dim} = {want}, got "
                f"{tensors[k].shape[d]}"))
        shapes = self.out_shapes(sizes)
        for t, shape in zip(sig.outputs, shapes):
            for d, v in enumerate(shape):
                _require(v >= 0, lambda t=t, d=d, v=v: (
                    f"{self.qualname}: {t.name} would have negative dimension {d} ({v}); the inputs are too small"))
        dev = tensors[0].device if tensors else torch.device("cpu")
        outs = [torch.empty(s, dtype=dt_, device=dev) for s, dt_ in zip(shapes, self.check.out_dtypes)]
        return outs[0] if self.single else tuple(outs)

    def _size_name(self, j: int) -> str:
        return next(s.name for s, k in self.slot.items() if k == j)


def _require(cond, message) -> None:
    """A shape condition: checked now for plain ints (kd's ShapeError), else a torch._check that
    the compiled graph keeps (sizes symbolic under torch.compile)."""
    if isinstance(cond, bool):
        if not cond:
            raise ShapeError(message())
        return
    import_torch()._check(cond, message)


def _schema(sig: Signature) -> str:
    args = ", ".join(f"Tensor {_arg_name(p.name, k)}" for k, p in enumerate(sig.inputs))
    rets = "Tensor" if len(sig.outputs) == 1 else "(" + ", ".join("Tensor" for _ in sig.outputs) + ")"
    return f"({args}) -> {rets}"


_SCHEMA_WORDS = {"self", "out", "Tensor", "int", "float", "bool", "str", "None", "True", "False", "Scalar",
                 "Device", "Layout", "ScalarType", "MemoryFormat", "Generator", "Storage", "SymInt", "Any", "t"}


def _arg_name(name: str, k: int) -> str:
    return name if name not in _SCHEMA_WORDS and not name.startswith("_") else f"arg{k}_{name.strip('_')}"


def _register(qualname: str, sig: Signature, function):
    """One custom op: CPU (kd.build's Function), CUDA (lazily), fake."""
    torch = import_torch()
    cpu = CpuKernel(sig, function, qualname)
    ns, opname = qualname.split("::")
    try:
        getattr(getattr(torch.ops, ns), opname)
        exists = True
    except (AttributeError, RuntimeError):
        exists = False
    if exists:  # torch would quietly re-register it
        raise ValueError(f"torch_op: an operator named {qualname} is already registered in this process; give "
                         f"another name (ops cannot be unregistered), or keep the op you made")
    op = torch.library.custom_op(qualname, cpu, mutates_args=(), device_types="cpu", schema=_schema(sig))
    cuda = CudaKernel(sig, qualname)
    op.register_kernel("cuda", cuda)
    op.register_fake(FakeKernel(sig, qualname))
    return op, cuda


def torch_op(inputs, outputs, name: str, *, backward: bool = True, config=None):
    """Register the graph from placeholders `inputs` to computed `outputs` as the custom op
    `name` ("namespace::op"): CPU and CUDA kernels, a fake kernel, and (backward=True, with float
    inputs and outputs) autograd through the kernels of kd.grad. Returns the op
    (a torch.library CustomOpDef: call it, opcheck it); `op.kerneldsl` describes the export."""
    import_torch()
    m = _QUALNAME.match(name) if isinstance(name, str) else None
    if m is None:
        raise ValueError(f"torch_op: name must look like 'namespace::op_name' (identifiers), got {name!r}")
    ns, opname = m.groups()
    spec = op_spec(inputs, outputs, opname, backward=backward)
    from ..pipeline import build
    fwd_fn = build(list(spec.forward.inputs), list(spec.forward.outputs), target="c", name=opname, config=config)
    op, fwd_cuda = _register(name, spec.forward, fwd_fn)
    bwd_fn = bwd_op = None
    kernels = {spec.forward.name: fwd_cuda}
    if spec.backward is not None:
        bwd_fn = build(list(spec.backward.inputs), list(spec.backward.outputs), target="c",
                       name=spec.backward.name)
        bwd_op, kernels[spec.backward.name] = _register(f"{ns}::{spec.backward.name}", spec.backward, bwd_fn)
        setup, grad = _autograd(spec, bwd_op)
        op.register_autograd(grad, setup_context=setup)
    op.kerneldsl = TorchExport(spec, name, fwd_fn, bwd_fn, bwd_op, kernels)
    return op


def _autograd(spec: OpSpec, bwd_op):
    """register_autograd's two functions: save what the backward reads, call the backward op."""
    torch = import_torch()
    n_in, single_out = len(spec.inputs), len(spec.outputs) == 1
    single_grad = len(spec.backward.outputs) == 1

    def setup_context(ctx, inputs, output):
        outs = (output,) if single_out else tuple(output)
        ctx.save_for_backward(*(inputs[k] for k in spec.saved_inputs), *(outs[j] for j in spec.saved_outputs))
        ctx.kd_cotangents = [(outs[j].shape, outs[j].dtype, outs[j].device) for j in spec.grad_outputs]

    def backward(ctx, *grads):
        dys = []
        for j, (shape, dtype, device) in zip(spec.grad_outputs, ctx.kd_cotangents):
            g = grads[j]
            dys.append(torch.zeros(shape, dtype=dtype, device=device) if g is None else g)
        res = bwd_op(*ctx.saved_tensors, *dys)
        res = (res,) if single_grad else res
        out = [None] * n_in
        for k, g in zip(spec.grad_inputs, res):
            if ctx.needs_input_grad[k]:
                out[k] = g
        return tuple(out)

    return setup_context, backward


__all__ = ["CpuKernel", "CudaKernel", "FakeKernel", "TorchExport", "import_torch", "torch_dtype", "torch_op"]
