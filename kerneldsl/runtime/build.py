"""Compile C source into a shared library and load it with ctypes, through the artifact cache.

The cache (runtime/cache.py) keys the entry by the source, the compiler's identity, the flags and
the host; it writes atomically, validates by sha256, serialises builds across processes, and keeps
loaded libraries in memory. This module only says how C is compiled and loaded: with the
target's compiler and flags (kerneldsl/target.py), or those of the settings in force.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

from kerneldsl.errors import CompileError
from kerneldsl.runtime import cache
from kerneldsl.runtime.cache import (  # re-exported: the names other modules import from here
    CACHE_FORMAT,
    BuildStats,
    cache_dir,
    clear_memory_cache,
    kerneldsl_version,
    stats,
)
from kerneldsl.target import DEFAULT_CFLAGS, Target, compiler_identity, host_identity

__all__ = ["CACHE_FORMAT", "DEFAULT_CFLAGS", "BuildStats", "CompiledLibrary", "cache_dir",
           "clear_memory_cache", "compile_c", "kerneldsl_version", "stats"]


@dataclass(frozen=True)
class CompiledLibrary:
    lib: ctypes.CDLL
    path: str  # the loaded .so
    source_path: str  # the saved .c next to it
    key: str  # hex sha256 naming the cache entry
    from_cache: bool  # True when no compiler ran to produce this object


def missing_compiler(cc, variable: str) -> CompileError:
    return CompileError(f"compiler {cc[0] if cc else '<empty>'!r} not found; set {variable} to a working "
                        f"compiler")


def identity(cc: tuple, variable: str) -> tuple:
    """The compiler's identity for a cache key; CompileError naming `variable` when it is missing."""
    try:
        return compiler_identity(tuple(cc))
    except FileNotFoundError:
        raise missing_compiler(cc, variable) from None


def compile_c(source: str, target: Target | None = None, *, name: str = "kernel",
              flags: tuple[str, ...] | None = None) -> CompiledLibrary:
    """Compile ``source`` to a shared library (or reuse a cached one) and load it.

    Compiler and flags: the target's (default: `Target.detect("c")`, i.e. $KERNELDSL_CC and
    $KERNELDSL_CFLAGS or DEFAULT_CFLAGS); ``flags`` replaces the flags. Raises CompileError.
    """
    target = target or Target.detect("c")
    cc, flag_list = list(target.cc), list(flags if flags is not None else target.cflags)
    libs = [f for f in flag_list if f.startswith("-l")]  # libraries after the source, for the linker
    opts = [f for f in flag_list if not f.startswith("-l")]
    recipe = cache.Recipe(
        ident=["c", host_identity(), identity(tuple(cc), "KERNELDSL_CC"), flag_list], source=source,
        src_suffix=".c", suffix=".so", name=name, compiler_env="KERNELDSL_CC",
        command=lambda src, out: [*cc, *opts, "-shared", "-fPIC", "-o", out, src, *libs, "-lm"])
    return cache.get(recipe, _load)


def _load(a: cache.Artifact) -> CompiledLibrary:
    return CompiledLibrary(cache.load_library(a.path), a.path, a.source_path, a.key, a.from_cache)
