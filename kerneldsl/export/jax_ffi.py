"""`kd.export.jax_op`: a DSL graph as a JAX function: XLA FFI calls with a custom_vjp whose
backward is another exported call.

    jop = kd.export.jax_op([X, W, B], [Y])
    y = jax.jit(jop)(x, w, b)
    gx = jax.grad(lambda x: jop(x, w, b).sum())(x)
    ys = jax.vmap(jop, in_axes=(0, None, None))(xs, w, b)   # a loop over the batch (vmap_method)

Per function (forward, backward): its C translation unit (export/cfunction.py) compiled to an
object, and an XLA FFI handler generated in C++ against jaxlib's headers (templates/export/
jax_ffi.cc.j2) linked with it, both through the artifact cache; the handler is registered with
jax.ffi.register_ffi_target under a name that hashes the library, for "cpu", and for "CUDA"
(the same function's .cu, nvcc) when JAX has a GPU. The call passes XLA's buffers (row-major),
with a uint8 workspace result for the intermediates, so the kernels allocate nothing.

Shapes are static in JAX: sizes are bound and checked in Python when the call is traced (a
ShapeError names the input and size at fault then, not at run time); only data-dependent index
errors (gathers) come back from the kernels, as XLA runtime errors with the kernel's message.

vmap: `vmap_method="sequential"` (default) runs the call once per batch element (jax.lax.map:
a loop); no batch dimension is added to the kernels.
"""

from __future__ import annotations

import ctypes
import hashlib
import threading
from dataclasses import dataclass

import numpy as np

from ..errors import DTypeError
from .spec import OpSpec, Signature, op_spec

XLA_DTYPE = {"float32": "F32", "float64": "F64", "int32": "S32", "int64": "S64", "bool": "PRED"}
_registered: dict = {}  # FFI target name -> the library holding its handler (kept loaded)
_lock = threading.Lock()


def _jax():
    try:
        import jax
        import jax.ffi
    except ImportError:
        raise ImportError("kd.export.jax_op needs JAX: pip install 'kerneldsl[export]' (or jax)") from None
    return jax


def gpu_platform() -> str | None:
    """"CUDA" when JAX has a CUDA device, else None."""
    jax = _jax()
    try:
        return "CUDA" if any(d.platform == "gpu" for d in jax.devices()) else None
    except RuntimeError:
        return None


@dataclass(frozen=True)
class FfiFunction:
    """One exported function as an FFI target: `call(*arrays)` inside or outside jit."""
    sig: Signature
    target: str  # the FFI target name
    libraries: dict  # platform -> (ctypes library, FunctionSource)
    vmap_method: str

    def workspace_bytes(self, shapes) -> int:
        """The largest workspace any registered platform's entry point asks for these shapes."""
        i64 = ctypes.c_int64
        ins = [(i64 * max(len(s), 1))(*s) for s in shapes]
        best = 0
        for lib, fs in self.libraries.values():
            outs = [(i64 * max(t.ndim, 1))() for t in self.sig.outputs]
            ws = i64(0)
            rc = getattr(lib, f"{fs.symbol}_shapes")(*ins, *outs, ctypes.byref(ws))
            if rc:
                fn = getattr(lib, f"{fs.symbol}_error")
                fn.restype = ctypes.c_char_p
                raise ValueError(f"{self.sig.name}: {fn(rc).decode()}")
            best = max(best, ws.value)
        return best

    def call(self, *args):
        jax = _jax()
        sig = self.sig
        if len(args) != len(sig.inputs):
            names = ", ".join(p.name for p in sig.inputs)
            raise TypeError(f"{sig.name} takes {len(sig.inputs)} input(s) ({names}), got {len(args)}")
        for a, p in zip(args, sig.inputs):
            got = np.dtype(getattr(a, "dtype", None) or np.asarray(a).dtype)
            if got != np.dtype(p.dtype):
                hint = (" (JAX makes 32-bit arrays unless jax_enable_x64 is set: "
                        "jax.config.update('jax_enable_x64', True))" if p.dtype in ("float64", "int64") else "")
                raise DTypeError(f"{sig.name}: input {p.name} must be {p.dtype}, got {got}; convert it with "
                                 f".astype(jnp.{p.dtype}){hint}")
        shapes = [tuple(np.shape(a)) for a in args]
        _, out_shapes = sig.bind(shapes)  # ShapeError when the call is traced
        results = [jax.ShapeDtypeStruct(s, np.dtype(t.dtype)) for s, t in zip(out_shapes, sig.outputs)]
        results.append(jax.ShapeDtypeStruct((self.workspace_bytes(shapes),), np.uint8))
        outs = jax.ffi.ffi_call(self.target, results, vmap_method=self.vmap_method)(*args)
        return tuple(outs[:-1])


def ffi_functions(sigs, vmap_method: str = "sequential") -> list:
    """Build (through the cache) and register the handlers of `sigs`: one library per platform
    holding every function's kernels and handler (jaxlib's header is compiled once)."""
    jax = _jax()
    from .build import ffi_library, object_file
    from .cfunction import function_source
    sources = [function_source(sig, "c") for sig in sigs]
    objects = [object_file(fs.text, name=fs.symbol) for fs in sources]
    lib, key = ffi_library(_handlers(sources, "cpu"), objects, jax.ffi.include_dir(), name=sigs[0].name)
    libraries = {"cpu": [(lib, fs) for fs in sources]}
    keys = [key]
    gpu = gpu_platform()
    if gpu is not None:  # needs nvcc and a GPU: not exercised on a machine without one
        from .build import cuda_ffi_library
        cuda_sources = [function_source(sig, "cuda") for sig in sigs]
        glib, gkey = cuda_ffi_library([fs.text for fs in cuda_sources], _handlers(cuda_sources, gpu),
                                      jax.ffi.include_dir(), name=sigs[0].name)
        libraries[gpu] = [(glib, fs) for fs in cuda_sources]
        keys.append(gkey)
    out = []
    for k, sig in enumerate(sigs):
        # one name per library: the same op made twice reuses its registration
        target = f"kerneldsl_{sig.name}_{hashlib.sha256('/'.join(keys).encode()).hexdigest()[:16]}"
        libs = {platform: entries[k] for platform, entries in libraries.items()}
        with _lock:
            if target not in _registered:
                for platform, (lib, fs) in libs.items():
                    capsule = jax.ffi.pycapsule(getattr(lib, f"kd_ffi_{fs.symbol}"))
                    jax.ffi.register_ffi_target(target, capsule, platform=platform)
                _registered[target] = libs
        out.append(FfiFunction(sig, target, libs, vmap_method))
    return out


def _handlers(sources, platform: str) -> str:
    from ..codegen.c import environment
    functions = [dict(sym=fs.symbol, prototypes=fs.prototypes, inputs=[a for a in fs.arrays if a.role == "input"],
                      outputs=[a for a in fs.arrays if a.role == "output"]) for fs in sources]
    return environment().get_template("export/jax_ffi.cc.j2").render(
        functions=functions, platform=platform, cuda=platform != "cpu", xla=XLA_DTYPE)


def jax_op(inputs, outputs, name: str | None = None, *, backward: bool = True, vmap_method: str = "sequential"):
    """A JAX function computing `outputs` from `inputs` (arrays in the placeholders' order and
    dtypes): one output is returned as an array, several as a tuple. With float inputs and
    outputs and backward=True it has a custom_vjp through the kernels of kd.grad."""
    jax = _jax()
    spec = op_spec(inputs, outputs, name, backward=backward)
    sigs = [spec.forward] + ([spec.backward] if spec.backward is not None else [])
    fwd, *rest = ffi_functions(sigs, vmap_method)
    single = len(spec.outputs) == 1

    def pack(outs):
        return outs[0] if single else tuple(outs)

    if spec.backward is None:
        return _Op(lambda *args: pack(fwd.call(*args)), spec, fwd, None)
    bwd = rest[0]
    n_in = len(spec.inputs)

    @jax.custom_vjp
    def op(*args):
        return pack(fwd.call(*args))

    def op_fwd(*args):
        outs = fwd.call(*args)
        saved = tuple(args[k] for k in spec.saved_inputs) + tuple(outs[j] for j in spec.saved_outputs)
        return pack(outs), saved

    def op_bwd(saved, cts):
        cts = (cts,) if single else tuple(cts)
        grads = bwd.call(*saved, *(cts[j] for j in spec.grad_outputs))
        out = [None] * n_in  # None: no cotangent (integer inputs)
        for k, g in zip(spec.grad_inputs, grads):
            out[k] = g
        return tuple(out)

    op.defvjp(op_fwd, op_bwd)
    return _Op(op, spec, fwd, bwd)


class _Op:
    """What jax_op returns: callable like the custom_vjp function it wraps, with the export's
    description beside it (`.kerneldsl`)."""

    def __init__(self, fn, spec: OpSpec, forward: FfiFunction, backward: FfiFunction | None):
        self._fn, self.kerneldsl, self.forward, self.backward = fn, spec, forward, backward
        self.__name__ = spec.name
        self.__doc__ = f"kerneldsl export {spec.name}: ({', '.join(p.name for p in spec.inputs)}) -> " \
                       f"({', '.join(t.name for t in spec.outputs)})"

    def __call__(self, *args):
        return self._fn(*args)


__all__ = ["FfiFunction", "ffi_functions", "gpu_platform", "jax_op"]
