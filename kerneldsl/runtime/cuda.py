"""CUDA runtime: nvcc to cubin (cached on disk, with ptxas's resource report), and launches on a
real GPU through PyCUDA or CuPy.

    cubin = compile_cubin(source.text, target)          # cached like C builds
    cubin.resources["kd_kernel_C"] -> {"registers": 40, "spill_stores": 0, "shared": 128, ...}
    f = make_gpu_function(module, source, cubin, inputs, outputs, config)   # kd.build(target="cuda")

Driver choice: `KERNELDSL_CUDA_DRIVER=pycuda|cupy`, else PyCUDA if importable, else CuPy.
Architecture: the present GPU's, else `KERNELDSL_CUDA_ARCH` (e.g. sm_80), else sm_90.

The GPU path keeps the C callable's contract: numpy arrays in and out, the same input checks
(inherited from Function), entry checks evaluated on the host before any launch, per-element
index checks reported by the kernels through a small device `report` buffer. Inputs may also
be GPU arrays (CuPy, PyCUDA, PyTorch CUDA tensors: `__cuda_array_interface__` or DLPack, see
runtime/device_arrays.py), read in place through their strides; `device_out=True` (the default
when any input is a GPU array) leaves the outputs on the GPU as the driver's arrays.
"""

from __future__ import annotations

import functools
import re
import shutil
from dataclasses import dataclass, field

import numpy as np

from ..errors import CompileError
from ..ir import expr as E
from ..settings import settings
from ..target import Target, register_gpu_probe
from . import cache
from .build import identity
from .cache import Artifact
from .callable import Function
from .device_arrays import DeviceArray, device_array, is_device_array

NVCC_FLAGS = ("-O3", "-std=c++17", "-Xptxas", "-v", "-Werror", "all-warnings")
DEFAULT_ARCH = "sm_90"


# --- a cached build product (cubin, emulator .so): runtime/cache.py, any compiler -----------------
def cached_artifact(ident: list, source: str, src_suffix: str, suffix: str, cmd_for, name: str) -> Artifact:
    """Build `source` with the command `cmd_for(src_path, out_path)` unless a valid entry exists.

    The key hashes `ident` (compiler identity, flags, versions) and the source; see runtime/cache.py.
    """
    return cache.get(cache.Recipe(ident, source, src_suffix, suffix, cmd_for, name))


# --- nvcc ----------------------------------------------------------------------------------
def nvcc_path(nvcc: str | None = None) -> str | None:
    return shutil.which(nvcc or settings.nvcc)


def default_arch() -> str:
    """The present GPU's sm_XY (a cubin runs only on its own major architecture), else
    $KERNELDSL_CUDA_ARCH, else sm_90."""
    cc = device_capability()
    if cc:
        return f"sm_{cc[0]}{cc[1]}"
    env = settings.cuda_arch
    if env:
        return env if env.startswith("sm_") else f"sm_{env}"
    return DEFAULT_ARCH


@functools.cache
def device_capability():
    """(major, minor) of the present GPU, or None (no driver, no device)."""
    try:
        drv = driver()
        return drv.capability() if drv is not None else None
    except Exception:  # noqa: BLE001 - no GPU, no driver: fine, we only compile
        return None


register_gpu_probe(device_capability)  # Target.detect("cuda") asks the present GPU through it


@dataclass(frozen=True)
class Cubin:
    path: str
    arch: str
    source_path: str
    resources: dict = field(default_factory=dict)  # kernel -> {"registers", "spill_stores", ...}
    report: str = ""  # ptxas -v's text


def compile_cubin(source: str, target: Target | None = None, name: str = "kernel", arch: str | None = None) -> Cubin:
    """nvcc -cubin -arch=<arch> with -Werror all-warnings; resources parsed from ptxas -v. The
    compiler and architecture are the target's (default: this machine's "cuda" target)."""
    target = target or Target.detect("cuda")
    nvcc = nvcc_path(target.nvcc)
    if nvcc is None:
        raise CompileError("nvcc not found: install the CUDA toolkit or set KERNELDSL_NVCC; "
                           "without a GPU, target='cuda-emu' runs the same kernels on the CPU")
    arch = arch or target.cuda_arch or default_arch()
    flags = [*NVCC_FLAGS, f"-arch={arch}"]
    ident = ["nvcc", identity((nvcc,), "KERNELDSL_NVCC"), flags]
    art = cached_artifact(ident, source, ".cu", ".cubin",
                          lambda src, out: [nvcc, "-cubin", *flags, "-o", out, src], name)
    return Cubin(art.path, arch, art.source_path, parse_ptxas(art.output), art.output)


_FUNC = re.compile(r"Compiling entry function '(\w+)'|Function properties for (\w+)")


def parse_ptxas(text: str) -> dict:
    """{kernel: {registers, spill_stores, spill_loads, stack, shared, constant}} from ptxas -v."""
    out: dict = {}
    cur = None
    for line in text.splitlines():
        m = _FUNC.search(line)
        if m:
            cur = out.setdefault(m.group(1) or m.group(2), {})
            continue
        if cur is None:
            continue
        for pat, key in ((r"(\d+) bytes stack frame", "stack"), (r"(\d+) bytes spill stores", "spill_stores"),
                         (r"(\d+) bytes spill loads", "spill_loads"), (r"Used (\d+) registers", "registers"),
                         (r"(\d+) bytes smem", "shared"),
                         (r"used (\d+) barriers", "barriers"), (r"(\d+) bytes cmem\[0\]", "constant")):
            v = re.search(pat, line)
            if v:
                cur[key] = int(v.group(1))
    for r in out.values():
        for key in ("registers", "spill_stores", "spill_loads", "stack", "shared"):
            r.setdefault(key, 0)
    return out


# --- drivers ---------------------------------------------------------------------------------
class _PyCuda:
    name = "pycuda"

    def __init__(self):
        import pycuda.autoinit  # noqa: F401 - creates the context
        import pycuda.driver as cuda
        self.cuda = cuda

    def capability(self):
        return self.cuda.Context.get_device().compute_capability()

    def load(self, path):
        with open(path, "rb") as fh:
            return self.cuda.module_from_buffer(fh.read())

    def function(self, mod, name):
        return mod.get_function(name)

    def to_device(self, a: np.ndarray):
        return self.cuda.to_device(a) if a.nbytes else None

    def empty(self, nbytes: int):
        return self.cuda.mem_alloc(nbytes) if nbytes else None

    def pointer(self, buf) -> int:
        return int(buf) if buf is not None else 0

    def launch(self, fn, grid, block, args):
        if getattr(fn, "arg_format", None) is None:  # prepared once: int64 sizes and strides, pointers
            fn.prepare("".join("q" if isinstance(a, np.int64) else "P" for a in args))
        fn.prepared_call((grid, 1, 1), (block, 1, 1), *(int(a) for a in args))

    def empty_array(self, shape, dtype):
        """A device array the caller keeps (device_out=True), and its pointer."""
        from pycuda import gpuarray
        a = gpuarray.empty(shape, dtype)
        return a, int(a.gpudata) if a.size else 0

    def to_host(self, dst: np.ndarray, buf):
        if buf is not None:
            self.cuda.memcpy_dtoh(dst, buf)

    def synchronize(self):
        self.cuda.Context.synchronize()


class _CuPy:
    name = "cupy"

    def __init__(self):
        import cupy
        self.cp = cupy

    def capability(self):
        cc = self.cp.cuda.Device().compute_capability
        return int(cc[:-1]), int(cc[-1])

    def load(self, path):
        return self.cp.RawModule(path=path)

    def function(self, mod, name):
        return mod.get_function(name)

    def to_device(self, a: np.ndarray):
        return self.cp.asarray(a) if a.nbytes else None

    def empty(self, nbytes: int):
        return self.cp.empty(nbytes, dtype=self.cp.uint8) if nbytes else None

    def pointer(self, buf) -> int:
        return int(buf.data.ptr) if buf is not None else 0

    def launch(self, fn, grid, block, args):
        fn((grid,), (block,), args)

    def empty_array(self, shape, dtype):
        a = self.cp.empty(shape, dtype)
        return a, int(a.data.ptr) if a.size else 0

    def to_host(self, dst: np.ndarray, buf):
        if buf is not None:
            dst[...] = self.cp.asnumpy(buf).view(dst.dtype).reshape(dst.shape)

    def synchronize(self):
        self.cp.cuda.Device().synchronize()


@functools.cache
def driver():
    """The CUDA driver wrapper ($KERNELDSL_CUDA_DRIVER, else PyCUDA, else CuPy), or None."""
    want = settings.cuda_driver.lower()
    order = {"pycuda": [_PyCuda], "cupy": [_CuPy]}.get(want, [_PyCuda, _CuPy])
    for cls in order:
        try:
            return cls()
        except Exception:  # noqa: BLE001, S112 - not installed, or no device: try the next
            continue
    return None


def gpu_available() -> bool:
    return nvcc_path() is not None and device_capability() is not None


# --- the callable -------------------------------------------------------------------------
def eval_cond(e: E.Expr, sizes: dict) -> bool:
    """Value of an entry check (comparisons, & | ~ of size expressions) on the host."""
    from ..ir.int_eval import eval_cond as cond
    return cond(e, sizes)


def _element_strides(a) -> list:
    return list(a.strides) if isinstance(a, DeviceArray) else [st // a.itemsize for st in a.strides]


# every launch whose index decomposition fits in int32 (with room for the grid-stride step) runs the
# kernel's int32 variant: 64-bit division and modulo are long instruction sequences on a GPU
INT32_LIMIT = 2**31 - 1


class GpuFunction(Function):
    """What kd.build(target="cuda" or "cuda-emu") returns: the C callable's contract on a GPU.

    Inputs are checked exactly as for the C target; numpy inputs are copied to the device
    (contiguous), GPU arrays are read in place; the entry checks are evaluated on the host
    before any launch; the kernels are launched in order through the driver, each in its
    int32 or int64 index variant; per-element index checks come back in a small device
    `report` buffer. `f.kernels` lists each kernel with its launch and ptxas's resource report.
    """

    def __init__(self, module, source, binary: str, inputs, outputs, drv, cubin: Cubin | None = None,
                 config=None):
        self.drv, self.launches, self.cuda_source, self._cubin = drv, source.launches, source, cubin
        self.config = config
        self.module, self.source, self.source_path = module, source.text, getattr(cubin, "source_path", "")
        self.inputs, self.outputs = tuple(inputs), tuple(outputs)
        self._mod = drv.load(binary)
        self._fns = {(L.kernel, bits): drv.function(self._mod, L.variant(bits))
                     for L in self.launches for bits in (32, 64)}
        self._temps = [module.tensors[b] for b in module.temps]
        self._dummy = None  # a small device buffer standing in for empty arrays
        self._plan()

    @property
    def resources(self) -> dict:
        """ptxas's report per kernel (registers, spills, shared memory) for its int32 variant, the
        int64 variant's under "int64"; nvcc runs on first use."""
        if self._cubin is None:
            self._cubin = compile_cubin(self.source, self.config.target.with_kind("cuda"))
        res = self._cubin.resources
        return {L.kernel: {**res.get(L.variant(32), {}), "int64": res.get(L.variant(64), {})} for L in self.launches}

    @property
    def arch(self) -> str:
        return self._cubin.arch if self._cubin is not None else (self.config.target.cuda_arch or default_arch())

    @property
    def kernels(self):
        from ..codegen.cuda import KernelReport
        return tuple(KernelReport(k, L, self) for k, L in zip(self.module.kernels, self.launches))

    def __repr__(self) -> str:
        return super().__repr__().replace("Function", f"GpuFunction[{self.drv.name}]", 1)

    def _input(self, a, p):
        """A numpy array (as the C target takes), or a DeviceArray describing a GPU array in place."""
        return device_array(a, f"input {p.name}") if is_device_array(a) else super()._input(a, p)

    def __call__(self, *args, out=None, device_out=None):
        arrays, sizes, shapes = self._bind(args)
        on_device = any(isinstance(a, DeviceArray) for a in arrays)
        device_out = on_device if device_out is None else bool(device_out)
        if device_out and out is not None:
            raise ValueError("out= takes numpy arrays; with device_out=True the outputs are new GPU arrays")
        named = dict(zip(self.module.sizes, sizes))
        outs = None if out is None else self._outputs(shapes[:self._nout], out, [])
        # (np.ascontiguousarray would make 0-d inputs 1-d)
        bufs = [a if isinstance(a, DeviceArray) or a.flags.c_contiguous else np.array(a, order="C") for a in arrays]
        bufs += self._allocate(shapes, 0)
        meta = list(sizes)
        for a in bufs:  # an empty array's strides are zero: a failed check then reads the dummy's element 0
            meta += _element_strides(a) if a.size else [0] * a.ndim
        report = np.zeros(2, np.int64)
        rc, dev_out = self._run(bufs, named, meta, report, device_out)
        if rc:
            raise self._error(rc, named, int(report[1]))
        results = dev_out if device_out else bufs[len(arrays):len(arrays) + self._nout]
        if outs is not None:
            for (o, _), r in zip(outs, results):
                o[...] = r
            results = [o for o, _ in outs]
        return results[0] if self._nout == 1 else tuple(results)

    def _pointer(self, buf, nbytes: int) -> int:
        if nbytes:
            return self.drv.pointer(buf)
        if self._dummy is None:
            self._dummy = self.drv.to_device(np.zeros(2, np.float64))
        return self.drv.pointer(self._dummy)

    def _run(self, bufs, named, meta, report, device_out=False):
        """(error code, the outputs as GPU arrays when device_out)."""
        from ..shapes import eval_int
        drv, m = self.drv, self.module
        for c in m.checks:
            if not eval_cond(c.cond, named):
                return c.code, None
        dev, ptrs, kept = [], [], []
        for a, b in zip(bufs, m.buffers):
            if isinstance(a, DeviceArray):  # a GPU input: read in place
                d, ptr = a, (a.ptr if a.size else self._pointer(None, 0))
            elif b.role == "output" and device_out:
                d, ptr = drv.empty_array(a.shape, a.dtype)
                kept.append(d)
                ptr = ptr or self._pointer(None, 0)
            else:
                d = drv.to_device(a) if b.role == "input" else drv.empty(a.nbytes)
                ptr = self._pointer(d, a.nbytes)
            dev.append(d)
            ptrs.append(ptr)
        dev_report = drv.to_device(report)
        for L in self.launches:
            work = eval_int(L.work, named)
            if work <= 0 or (L.runs_if is not None and not eval_cond(L.runs_if, named)):
                continue
            blocks = L.blocks(work)
            span = blocks * L.threads + max(eval_int(e, named) for e in (L.work, *L.index_extents))
            args = []
            for p in L.params:
                if p.kind in ("size", "stride"):
                    args.append(np.int64(meta[p.index]))
                else:
                    args.append(np.uintp(ptrs[p.index] if p.kind == "buf" else drv.pointer(dev_report)))
            fn = self._fns[L.kernel, 32 if span <= INT32_LIMIT else 64]
            drv.launch(fn, blocks, L.threads, args)
        drv.synchronize()
        drv.to_host(report, dev_report)
        if report[0]:
            return int(report[0]), None
        if device_out:
            return 0, kept
        for a, b, d in zip(bufs, m.buffers, dev):
            if b.role == "output" and a.nbytes:
                drv.to_host(a, d)
        return 0, None


def make_gpu_function(module, source, cubin: Cubin, inputs, outputs, config=None):
    drv = driver()
    if drv is None:
        raise RuntimeError("target='cuda' needs PyCUDA or CuPy and a CUDA GPU; none was found "
                           "(set KERNELDSL_CUDA_DRIVER, or use target='cuda-emu' to run on the CPU)")
    return GpuFunction(module, source, cubin.path, inputs, outputs, drv, cubin, config)
