"""The CUDA emulator target: the generated .cu compiled by the host C++ compiler with
templates/cuda/kd_cuda_emu.h (fibers for threads, blocks in turn), loaded with ctypes.

`kd.build(..., target="cuda-emu")` returns the GPU callable (runtime/cuda.py's GpuFunction)
with the emulator as its driver: the same launcher, argument packing, index-variant choice,
error report and GPU-array handling as on a real GPU, with host memory as device memory.
Each kernel variant has a launch entry in the .cu file (`kd_emu_launch_<kernel>`, taking
cuLaunchKernel's array of argument pointers). A misuse the emulator detects (divergent
__syncthreads, a deadlock between threads, a shared-memory index out of bounds) raises
`EmulatorError` with the emulator's message.
"""

from __future__ import annotations

import ctypes
import functools
import shutil

import numpy as np

from ..codegen.c import TEMPLATES
from ..errors import CompileError
from ..settings import settings
from ..target import Target
from .build import identity
from .cache import load_library
from .cuda import cached_artifact

EMU_FLAGS = ("-x", "c++", "-std=c++17", "-O1", "-fwrapv", "-fPIC", "-shared", "-w")
HEADER = TEMPLATES / "cuda" / "kd_cuda_emu.h"


class EmulatorError(RuntimeError):
    """The emulator caught a CUDA programming error (divergent barrier, deadlock, bad shared index)."""


def cxx_path() -> str | None:
    cxx = settings.cxx
    return shutil.which(cxx[0]) if cxx else None


@functools.cache
def _header() -> str:
    return HEADER.read_text()


def build_emulated(cu_text: str, target: Target | None = None, name: str = "kernel") -> str:
    """Compile CUDA source for the emulator (the header is prepended) with the target's C++
    compiler (default: $KERNELDSL_CXX or g++); the library's path."""
    cxx = list((target or Target.detect("cuda-emu")).cxx)
    if not cxx or shutil.which(cxx[0]) is None:
        raise CompileError(f"C++ compiler {cxx[0] if cxx else '<empty>'!r} not found; the CUDA emulator needs "
                           f"one (set KERNELDSL_CXX)")
    source = _header() + "\n#line 1 \"kernel.cu\"\n" + cu_text
    ident = ["emu", identity(tuple(cxx), "KERNELDSL_CXX"), list(EMU_FLAGS)]
    art = cached_artifact(ident, source, ".emu.cpp", ".so",
                          lambda src, out: [*cxx, *EMU_FLAGS, "-o", out, src, "-lm", "-lpthread"], name)
    return art.path


def _load(path: str) -> ctypes.CDLL:
    try:  # closed again once the callable (or whoever holds the library) is gone
        return load_library(path)
    except OSError as e:
        raise CompileError(f"built {path} but could not load it: {e}") from e


def compile_emulated(cu_text: str, name: str = "kernel") -> ctypes.CDLL:
    """The emulator library of hand-written CUDA source (kernels launched with kd_emu::launch)."""
    return _load(build_emulated(cu_text, None, name))


def last_error(lib: ctypes.CDLL) -> str:
    fn = lib.kd_emu_error
    fn.restype = ctypes.c_char_p
    return fn().decode(errors="replace")


class EmulatorDriver:
    """The driver interface of runtime/cuda.py (as _PyCuda and _CuPy) over the emulator: device
    buffers are numpy arrays, pointers their addresses, launches synchronous."""

    name = "cuda-emu"

    def capability(self):
        return None

    def load(self, path):
        return _load(path)

    def function(self, lib, name):
        fn = getattr(lib, f"kd_emu_launch_{name}")
        fn.argtypes = (ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p)
        fn.restype = ctypes.c_int
        return lib, fn

    def to_device(self, a: np.ndarray):
        return a if a.nbytes else None  # host memory is device memory; kernels never write their inputs

    def empty(self, nbytes: int):
        return np.empty(nbytes, np.uint8) if nbytes else None

    def pointer(self, buf) -> int:
        return buf.ctypes.data if buf is not None else 0

    def launch(self, fn, grid, block, args):
        lib, f = fn
        values = [ctypes.c_int64(int(a)) if isinstance(a, np.int64) else ctypes.c_void_p(int(a)) for a in args]
        argv = (ctypes.c_void_p * max(len(values), 1))(*[ctypes.addressof(v) for v in values])
        if f(int(grid), int(block), argv) != 0:
            raise EmulatorError(f"CUDA emulator: {last_error(lib)}")

    def empty_array(self, shape, dtype):
        a = np.empty(shape, dtype)
        return a, (a.ctypes.data if a.size else 0)

    def to_host(self, dst: np.ndarray, buf):
        if buf is not None:
            dst[...] = buf.view(dst.dtype).reshape(dst.shape)

    def synchronize(self):
        pass


def make_emulated_function(module, source, path: str, inputs, outputs, config=None):
    """The GPU callable over the emulator library at `path` (from build_emulated)."""
    from .cuda import GpuFunction
    return GpuFunction(module, source, path, inputs, outputs, EmulatorDriver(), None, config)
