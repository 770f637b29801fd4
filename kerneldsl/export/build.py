"""Exported sources compiled through the artifact cache (runtime/cache.py), like any kernel.

    object_file(fs.text, ...)      a function's C translation unit as a .o (for the JAX handler)
    ffi_library(handler, objects)  a C++ XLA FFI handler linked with those objects, loaded
    cuda_ffi_library(texts, handler)    the same for CUDA handlers (nvcc), where JAX has a GPU
    cuda_library(fs.text)          a function's .cu as a shared library (nvcc), loaded
    emulated_library(fs.text)      the same .cu for the CUDA emulator (g++), loaded: tests on a CPU

Entry keys hash the source, the compiler's identity and the flags, so a second build of the same
op in a new process runs no compiler.
"""

from __future__ import annotations

import ctypes
import shutil

from ..errors import CompileError
from ..runtime import cache
from ..runtime.build import identity
from ..target import Target, host_identity

CUDA_LIBRARY_FLAGS = ("-O3", "-std=c++17", "-shared", "-Xcompiler", "-fPIC,-fvisibility=hidden",
                      "-cudart", "shared")  # the process's libcudart: the framework's current device


def _split(flags) -> tuple[list, list]:
    flags = list(flags)
    return [f for f in flags if not f.startswith("-l")], [f for f in flags if f.startswith("-l")]


def object_file(source: str, target: Target | None = None, name: str = "export") -> cache.Artifact:
    """A C translation unit compiled (not linked) with the target's compiler and flags; its
    public symbols hidden (they are linked into one library with their caller)."""
    target = target or Target.detect("c")
    cc = list(target.cc)
    opts, _ = _split(target.cflags)
    flags = [*opts, "-fPIC", "-fvisibility=hidden"]
    recipe = cache.Recipe(ident=["export-object", host_identity(), identity(tuple(cc), "KERNELDSL_CC"), flags],
                          source=source, src_suffix=".c", suffix=".o", name=name, compiler_env="KERNELDSL_CC",
                          command=lambda src, out: [*cc, *flags, "-c", "-o", out, src])
    return cache.get(recipe)


def ffi_library(handler: str, objects, include_dir: str, target: Target | None = None,
                name: str = "export") -> tuple[ctypes.CDLL, str]:
    """A C++ handler (XLA FFI) linked with the given objects into one library: (loaded, its key)."""
    target = target or Target.detect("c")
    cxx = list(target.cxx)
    if not cxx or shutil.which(cxx[0]) is None:
        raise CompileError(f"C++ compiler {cxx[0] if cxx else '<empty>'!r} not found; jax_op builds its XLA FFI "
                           f"handler with it (set KERNELDSL_CXX)")
    opts, libs = _split(target.cflags)
    paths = [o.path for o in objects]
    # the handlers only decode XLA's call frame: -O1 compiles jaxlib's template-heavy header in
    # ~4 s instead of ~5; the kernels in the objects keep the target's flags
    flags = ["-O1", *(f for f in opts if not f.startswith("-O")), "-std=c++17", "-fPIC", "-fvisibility=hidden",
             "-I", include_dir]
    ident = ["export-ffi", host_identity(), identity(tuple(cxx), "KERNELDSL_CXX"), flags, [o.key for o in objects]]
    recipe = cache.Recipe(ident=ident, source=handler, src_suffix=".cc", suffix=".so", name=name,
                          compiler_env="KERNELDSL_CXX",
                          command=lambda src, out: [*cxx, *flags, "-shared", "-Wl,-Bsymbolic", "-o", out, src,
                                                    *paths, *libs, "-lm"])
    return cache.get(recipe, lambda a: (cache.load_library(a.path), a.key))


def cuda_library(source: str, target: Target | None = None, name: str = "export") -> ctypes.CDLL:
    """A function's .cu built by nvcc as a shared library with its host entry points, loaded."""
    from ..runtime.cuda import nvcc_path
    target = target or Target.detect("cuda")
    nvcc = nvcc_path(target.nvcc)
    if nvcc is None:
        raise CompileError("nvcc not found: the CUDA path of an exported op needs the CUDA toolkit "
                           "(set KERNELDSL_NVCC)")
    flags = [*CUDA_LIBRARY_FLAGS, f"-arch={target.cuda_arch or 'sm_90'}"]
    recipe = cache.Recipe(ident=["export-cuda", identity((nvcc,), "KERNELDSL_NVCC"), flags], source=source,
                          src_suffix=".cu", suffix=".so", name=name, compiler_env="KERNELDSL_NVCC",
                          command=lambda src, out: [nvcc, *flags, "-o", out, src])
    return cache.get(recipe, lambda a: cache.load_library(a.path))


def cuda_ffi_library(sources, handler: str, include_dir: str, target: Target | None = None,
                     name: str = "export") -> tuple[ctypes.CDLL, str]:
    """Functions' .cu files (nvcc, to objects) and their CUDA XLA FFI handlers linked into one
    library: (loaded, its key). Runs only where JAX has a GPU."""
    from ..runtime.cuda import nvcc_path
    target = target or Target.detect("cuda")
    nvcc = nvcc_path(target.nvcc)
    if nvcc is None:
        raise CompileError("nvcc not found: jax_op's CUDA handler needs the CUDA toolkit (set KERNELDSL_NVCC)")
    arch = f"-arch={target.cuda_arch or 'sm_90'}"
    nv = identity((nvcc,), "KERNELDSL_NVCC")
    obj_flags = ["-O3", "-std=c++17", arch, "-Xcompiler", "-fPIC,-fvisibility=hidden"]
    objects = [cache.get(cache.Recipe(ident=["export-cuda-object", nv, obj_flags], source=src, src_suffix=".cu",
                                      suffix=".o", name=name, compiler_env="KERNELDSL_NVCC",
                                      command=lambda s, out: [nvcc, *obj_flags, "-c", "-o", out, s]))
               for src in sources]
    link = ["-O1", "-std=c++17", arch, "-shared", "-Xcompiler", "-fPIC,-fvisibility=hidden", "-I", include_dir,
            "-cudart", "shared"]
    recipe = cache.Recipe(ident=["export-cuda-ffi", nv, link, [o.key for o in objects]], source=handler,
                          src_suffix=".cc", suffix=".so", name=name, compiler_env="KERNELDSL_NVCC",
                          command=lambda src, out: [nvcc, *link, "-o", out, src, *(o.path for o in objects)])
    return cache.get(recipe, lambda a: (cache.load_library(a.path), a.key))


def emulated_library(source: str, name: str = "export") -> ctypes.CDLL:
    """A function's .cu compiled for the CUDA emulator (host memory is device memory), loaded."""
    from ..runtime.emulator import build_emulated
    return cache.load_library(build_emulated(source, None, name))


__all__ = ["cuda_ffi_library", "cuda_library", "emulated_library", "ffi_library", "object_file"]
