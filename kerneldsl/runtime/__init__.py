"""Runtime support: compiling generated C and loading it."""

from kerneldsl.runtime.build import (
    CACHE_FORMAT,
    DEFAULT_CFLAGS,
    BuildStats,
    CompiledLibrary,
    cache_dir,
    clear_memory_cache,
    compile_c,
    stats,
)

__all__ = [
    "CACHE_FORMAT",
    "DEFAULT_CFLAGS",
    "BuildStats",
    "CompiledLibrary",
    "cache_dir",
    "clear_memory_cache",
    "compile_c",
    "stats",
]
