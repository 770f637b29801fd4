"""Compile C source into a shared library, load it with ctypes, and cache it on disk and in memory.

A cache entry ``<key>.so`` is valid only when ``<key>.json`` exists and records the .so's sha256;
anything else (truncated .so, garbled json, a library that fails to load) is deleted and rebuilt.
Builds of one key are serialized across processes with a lock file, and every file lands via
``os.replace`` so readers never see a half-written one.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from kerneldsl.errors import CompileError

try:  # flock serializes concurrent builds of one key; without it atomic replaces still keep us safe
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX
    fcntl = None  # type: ignore[assignment]

CACHE_FORMAT = 1
# No -ffast-math: generated kernels rely on IEEE NaN/inf semantics.
# -fno-math-errno and -fno-trapping-math change no result (we never read errno or FP traps) but let
# loops of expf/logf and of selects vectorize;
# with glibc's libmvec those become SIMD calls (declared in the C prelude under KD_USE_MVEC).
_GLIBC = tuple(int(x) for x in (os.confstr("CS_GNU_LIBC_VERSION") or "glibc 0.0").split()[-1].split(".")[:2]) \
    if hasattr(os, "confstr") and "CS_GNU_LIBC_VERSION" in os.confstr_names else (0, 0)
_MVEC = ("-DKD_USE_MVEC", "-lmvec") if (_GLIBC >= (2, 35) and any(
    os.path.exists(os.path.join(d, "libmvec.so.1"))
    for d in ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64"))) else ()
DEFAULT_CFLAGS: tuple[str, ...] = ("-O3", "-march=native", "-fopenmp", "-fwrapv", "-fno-math-errno",
                                  "-fno-trapping-math", "-ffp-contract=off", *_MVEC)
_MAX_OUTPUT = 4000  # characters of compiler output quoted in a CompileError message


@dataclass(frozen=True)
class CompiledLibrary:
    lib: ctypes.CDLL
    path: str  # the loaded .so
    source_path: str  # the saved .c next to it
    key: str  # hex sha256 naming the cache entry
    from_cache: bool  # True when no compiler ran to produce this object


@dataclass
class BuildStats:
    compiles: int = 0  # compiler invocations in this process
    disk_hits: int = 0
    memory_hits: int = 0

    def reset(self) -> None:
        self.compiles = self.disk_hits = self.memory_hits = 0


stats = BuildStats()
_memory: dict[str, CompiledLibrary] = {}


def clear_memory_cache() -> None:
    """Forget in-process libraries (the disk cache is untouched; loaded libraries stay mapped)."""
    _memory.clear()


@functools.cache
def _installed_version() -> str:
    try:
        from importlib.metadata import version

        return version("kerneldsl")
    except Exception:
        return "0"


def kerneldsl_version() -> str:
    # Read the attribute lazily: kerneldsl/__init__ may still be mid-import when we are first used.
    version = getattr(sys.modules.get("kerneldsl"), "__version__", None)
    return str(version) if version else _installed_version()


def cache_dir() -> Path:
    """The versioned folder holding this kerneldsl's entries (not created here)."""
    root = os.environ.get("KERNELDSL_CACHE")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(xdg, "kerneldsl")
    return Path(root) / f"v{CACHE_FORMAT}-{kerneldsl_version()}".replace(os.sep, "_")


def _compiler() -> list[str]:
    return shlex.split(os.environ.get("KERNELDSL_CC") or "cc")


def _flags(flags: tuple[str, ...] | None) -> list[str]:
    if flags is not None:
        return list(flags)
    env = os.environ.get("KERNELDSL_CFLAGS", "").strip()
    return shlex.split(env) if env else list(DEFAULT_CFLAGS)


def _missing_compiler(cc: list[str]) -> CompileError:
    return CompileError(
        f"C compiler {cc[0]!r} not found; set KERNELDSL_CC to a working C compiler "
        f"(KERNELDSL_CC={os.environ.get('KERNELDSL_CC')!r})"
    )


@functools.cache
def _compiler_identity(cc: tuple[str, ...]) -> tuple:
    """Who the compiler is, from the filesystem only: a warm cache hit must not spawn a process."""
    if not cc or shutil.which(cc[0]) is None:
        raise _missing_compiler(list(cc) or ["<empty>"])
    ident = []
    for word in cc:  # wrappers like "ccache gcc": fingerprint every word that is a program
        exe = None if word.startswith("-") else shutil.which(word)
        if exe is None:
            ident.append(word)
        else:
            real = os.path.realpath(exe)
            st = os.stat(real)
            ident.append([real, st.st_size, st.st_mtime_ns])
    return tuple(map(str, ident))


@functools.cache
def _host_identity() -> str:
    # -march=native output depends on the CPU; a cache shared across machines (NFS home) must
    # not hand one host's binary to another, where it could die with SIGILL.
    cpu = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags", "Features", "CPU part"))]
        cpu = "".join(dict.fromkeys(lines))  # dedupe the per-core repeats, keep order
    except OSError:
        pass
    return f"{platform.system()}|{platform.machine()}|{hashlib.sha256(cpu.encode()).hexdigest()}"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        _unlink(Path(tmp))
        raise


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+b") as f:
        if fcntl is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)  # released when the file closes or we die
        yield


def _load_entry(d: Path, key: str, *, repair: bool) -> CompiledLibrary | None:
    """Load a valid entry, else None; with ``repair`` (lock held) delete an invalid one."""
    so, meta = d / f"{key}.so", d / f"{key}.json"
    try:
        expected = json.loads(meta.read_text(encoding="utf-8"))["so_sha256"]
        # Hash before dlopen: dlopen of a truncated file may misbehave rather than fail cleanly.
        if _sha256_file(so) != expected:
            raise ValueError("sha256 mismatch")
        lib = ctypes.CDLL(str(so))
    except (OSError, ValueError, KeyError, TypeError):
        if repair:  # json first, so lock-free readers stop trusting the entry at once
            _unlink(meta)
            _unlink(so)
        return None
    return CompiledLibrary(lib, str(so), str(d / f"{key}.c"), key, from_cache=True)


def _build(d: Path, key: str, source: str, cc: list[str], flags: list[str], name: str) -> CompiledLibrary:
    src = d / f"{key}.c"
    _atomic_write(src, source.encode())  # compile from the final path so diagnostics name it
    fd, tmp_so = tempfile.mkstemp(dir=d, prefix=f"{key}.", suffix=".so.tmp")
    os.close(fd)
    try:
        libs = [f for f in flags if f.startswith("-l")]  # libraries after the source, for the linker
        opts = [f for f in flags if not f.startswith("-l")]
        cmd = [*cc, *opts, "-shared", "-fPIC", "-o", tmp_so, str(src), *libs, "-lm"]
        stats.compiles += 1
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace")
        except FileNotFoundError:
            raise _missing_compiler(cc) from None
        output = (proc.stderr + proc.stdout).strip()
        if proc.returncode != 0:
            shown = output[:_MAX_OUTPUT]
            if len(output) > _MAX_OUTPUT:
                shown += f"\n... ({len(output) - _MAX_OUTPUT} more characters in .compiler_output)"
            raise CompileError(
                f"failed to compile kernel {name!r} (exit {proc.returncode}); source saved at {src}\n"
                f"command: {shlex.join(cmd)}\n{shown}",
                source_path=str(src),
                compiler_output=output,
            )
        so = d / f"{key}.so"
        digest = _sha256_file(Path(tmp_so))
        os.replace(tmp_so, so)
        meta = {"so_sha256": digest, "name": name, "compiler": cc, "flags": flags,
                "kerneldsl_version": kerneldsl_version(), "cache_format": CACHE_FORMAT}
        _atomic_write(d / f"{key}.json", json.dumps(meta, indent=1).encode())  # last: commits entry
    finally:
        _unlink(Path(tmp_so))
    try:
        lib = ctypes.CDLL(str(so))
    except OSError as e:
        raise CompileError(f"built {so} but could not load it: {e}", str(src), output) from e
    return CompiledLibrary(lib, str(so), str(src), key, from_cache=False)


def compile_c(source: str, *, name: str = "kernel", flags: tuple[str, ...] | None = None) -> CompiledLibrary:
    """Compile ``source`` to a shared library (or reuse a cached one) and load it.

    Compiler: ``$KERNELDSL_CC`` (default ``cc``); flags: ``flags`` else ``$KERNELDSL_CFLAGS`` else
    ``DEFAULT_CFLAGS``, followed by ``-shared -fPIC``. Raises CompileError on failure.
    """
    cc, flag_list = _compiler(), _flags(flags)
    ident = [CACHE_FORMAT, kerneldsl_version(), _host_identity(), _compiler_identity(tuple(cc)),
             flag_list, source]
    key = hashlib.sha256(json.dumps(ident).encode()).hexdigest()
    hit = _memory.get(key)
    if hit is not None:
        stats.memory_hits += 1
        return hit
    d = cache_dir()
    entry = _load_entry(d, key, repair=False)
    if entry is None:
        d.mkdir(parents=True, exist_ok=True)
        with _locked(d / f"{key}.lock"):
            # Another process may have finished this key while we waited for the lock.
            entry = _load_entry(d, key, repair=True)
            if entry is None:
                entry = _build(d, key, source, cc, flag_list, name)
    if entry.from_cache:
        stats.disk_hits += 1
    _memory[key] = entry
    return entry
