"""Compile C source into a shared library and load it with ctypes, through the artifact cache.

The cache (runtime/cache.py) keys the entry by the source, the compiler's identity, the flags and
the host; it writes atomically, validates by sha256, serialises builds across processes, and keeps
loaded libraries in memory. This module only says how C is compiled and loaded: with the
target's compiler and flags (kerneldsl/target.py), or those of the settings in force.
"""

from __future__ import annotations

import ctypes
import sys
from contextlib import contextmanager
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
    $KERNELDSL_CFLAGS or DEFAULT_CFLAGS); ``flags`` replaces the flags. A large module (the
    codegen's, with kd:kernel and kd:entry lines) is compiled a kernel per translation unit, the
    units in parallel, then linked with its entry. Raises CompileError.
    """
    target = target or Target.detect("c")
    cc, flag_list = list(target.cc), list(flags if flags is not None else target.cflags)
    libs = [f for f in flag_list if f.startswith("-l")]  # libraries after the source, for the linker
    opts = [f for f in flag_list if not f.startswith("-l")]
    ident = [host_identity(), identity(tuple(cc), "KERNELDSL_CC"), flag_list]
    units = split_units(source, target.cores)
    if units is None:
        recipe = cache.Recipe(
            ident=["c", *ident], source=source, src_suffix=".c", suffix=".so", name=name,
            compiler_env="KERNELDSL_CC",
            command=lambda src, out: [*cc, *opts, "-shared", "-fPIC", "-o", out, src, *libs, "-lm"])
        return cache.get(recipe, _load)
    kernels, entry = units
    objects = [cache.Recipe(ident=["c-object", *ident], source=u, src_suffix=".c", suffix=".o",
                            name=f"{name} (part {k + 1} of {len(kernels)})", compiler_env="KERNELDSL_CC",
                            command=lambda src, out: [*cc, *opts, "-fPIC", "-c", "-o", out, src])
               for k, u in enumerate(kernels)]
    paths: list = []
    link = cache.Recipe(
        ident=["c-linked", *ident, [cache.key_of(o) for o in objects]], source=entry, src_suffix=".c",
        suffix=".so", name=name, compiler_env="KERNELDSL_CC",
        command=lambda src, out: [*cc, *opts, "-shared", "-fPIC", "-o", out, src, *paths, *libs, "-lm"])
    found = cache.find(link, _load)
    if found is not None:
        return found
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max(1, min(len(objects), target.cores))) as pool, \
            _progress(f"compiling {name}", len(objects) + 1) as done:  # each part a compiler process
        futures = [pool.submit(cache.get, o) for o in objects]
        for f in futures:
            f.add_done_callback(lambda _: done())
        paths.extend(f.result().path for f in futures)
        lib = cache.get(link, _load)
        done()
    return lib


@contextmanager
def _progress(title: str, total: int):
    """A progress bar (tqdm, on a terminal only) over a build's parts; a no-op elsewhere."""
    bar = None
    if sys.stderr.isatty():
        try:
            from tqdm import tqdm
            bar = tqdm(total=total, desc=title, unit="part", leave=False, file=sys.stderr)
        except ImportError:
            pass
    try:
        yield (lambda: bar.update(1)) if bar is not None else (lambda: None)
    finally:
        if bar is not None:
            bar.close()


# below this, one compiler process beats several (each starts and parses the prelude)
SPLIT_MIN_BYTES = 40_000
_KERNEL, _ENTRY = "\n/* kd:kernel */\n", "\n/* kd:entry */\n"
_HIDDEN = '#define KD_KERNEL __attribute__((visibility("hidden")))\n'


def split_units(source: str, parts: int) -> tuple[list, str] | None:
    """A module's translation units, (its kernels in `parts` units of about equal size, the
    entry's), or None to compile it whole: a small module, or one kernel. Each unit is the
    module's prelude and its own part, the kernels hidden symbols of the one library
    (templates/c/module.c.j2)."""
    if parts < 2 or len(source) < SPLIT_MIN_BYTES or source.count(_KERNEL) < 2 or source.count(_ENTRY) != 1:
        return None
    head, rest = source.split(_KERNEL, 1)
    body, entry = rest.split(_ENTRY)
    groups: list[list[str]] = [[] for _ in range(min(parts, body.count(_KERNEL) + 1))]
    for k in sorted(body.split(_KERNEL), key=len, reverse=True):  # the largest first, to the smallest group
        min(groups, key=lambda g: sum(map(len, g))).append(k)
    kernels = ["#define KD_SPLIT 1\n#define KD_SPLIT_KERNEL 1\n" + _HIDDEN + head
               + "".join(_KERNEL + k for k in g) for g in groups]
    return kernels, "#define KD_SPLIT 1\n" + _HIDDEN + head + _ENTRY + entry


def _load(a: cache.Artifact) -> CompiledLibrary:
    return CompiledLibrary(cache.load_library(a.path), a.path, a.source_path, a.key, a.from_cache)
