"""The CUDA emulator target: the generated .cu compiled by the host C++ compiler with
templates/cuda/kd_cuda_emu.h (fibers for threads, blocks in turn), loaded with ctypes.

`kd.build(..., target="cuda-emu")` returns an `EmuFunction`: the C target's callable (same
input checks, same errors) whose kd_entry launches the CUDA kernels on the emulator. A
misuse the emulator detects (divergent __syncthreads, a deadlock between threads, a
shared-memory index out of bounds) raises `EmulatorError` with the emulator's message.
"""

from __future__ import annotations

import ctypes
import functools
import os
import shlex
import shutil

from ..codegen.c import TEMPLATES
from ..errors import CompileError
from . import build as B
from .callable import Function
from .cuda import cached_artifact, compile_cubin, nvcc_path

EMU_FLAGS = ("-x", "c++", "-std=c++17", "-O1", "-fwrapv", "-fPIC", "-shared", "-w")
EMU_FAILED = -1  # kd_entry's code for "the emulator stopped the launch"
HEADER = TEMPLATES / "cuda" / "kd_cuda_emu.h"


class EmulatorError(RuntimeError):
    """The emulator caught a CUDA programming error (divergent barrier, deadlock, bad shared index)."""


def cxx_path() -> str | None:
    cxx = shlex.split(os.environ.get("KERNELDSL_CXX") or "g++")
    return shutil.which(cxx[0]) if cxx else None


@functools.cache
def _header() -> str:
    return HEADER.read_text()


def compile_emulated(cu_text: str, name: str = "kernel") -> ctypes.CDLL:
    """Compile CUDA source for the emulator (the header is prepended) and load the library."""
    cxx = shlex.split(os.environ.get("KERNELDSL_CXX") or "g++")
    if not cxx or shutil.which(cxx[0]) is None:
        raise CompileError(f"C++ compiler {cxx[0] if cxx else '<empty>'!r} not found; the CUDA emulator needs "
                           f"one (set KERNELDSL_CXX)")
    source = _header() + "\n#line 1 \"kernel.cu\"\n" + cu_text
    ident = ["emu", B._compiler_identity(tuple(cxx)), list(EMU_FLAGS)]
    art = cached_artifact(ident, source, ".emu.cpp", ".so",
                          lambda src, out: [*cxx, *EMU_FLAGS, "-o", out, src, "-lm", "-lpthread"], name)
    try:
        return ctypes.CDLL(art.path)
    except OSError as e:
        raise CompileError(f"built {art.path} but could not load it: {e}", art.source_path) from e


def last_error(lib: ctypes.CDLL) -> str:
    fn = lib.kd_emu_error
    fn.restype = ctypes.c_char_p
    return fn().decode(errors="replace")


class EmuFunction(Function):
    """The C callable, with CUDA kernels running on the emulator; `launches` says how."""

    def __init__(self, module, source, lib, inputs, outputs, source_path: str = ""):
        super().__init__(module, lib, source.text, inputs, outputs, source_path)
        self.cuda_source, self.launches = source, source.launches
        self._resources = None

    @property
    def resources(self) -> dict:
        """ptxas's report per kernel (registers, spills, shared memory), compiled on first use."""
        if self._resources is None:
            if nvcc_path() is None:
                raise CompileError("resources need nvcc (the CUDA toolkit); it was not found")
            self._resources = compile_cubin(self.source).resources
        return self._resources

    def _error(self, code: int, sizes: dict, index: int) -> Exception:
        if code == EMU_FAILED:
            return EmulatorError(f"CUDA emulator: {last_error(self._lib)}")
        return super()._error(code, sizes, index)
