"""The artifact cache: one implementation for every compiled product (C libraries, nvcc cubins,
emulator libraries), on disk and in memory.

    recipe = Recipe(ident=[compiler identity, flags], source=text, src_suffix=".c", suffix=".so",
                    command=lambda src, out: ["cc", "-shared", "-o", out, src], name="C")
    lib = get(recipe, make=lambda artifact: load_library(artifact.path))

On disk, in `cache_dir()`, an entry is `<key><src_suffix>` (the source, named in diagnostics),
`<key><suffix>` (the product) and `<key>.json` (its sha256 and the compiler's messages). The json
is written last, so it commits the entry; every file lands through `os.replace`, so a reader never
sees half a file; builds of one key are serialised across processes by `<key>.lock`; an entry
that fails its checks is deleted and rebuilt under that lock. In memory, the last
`loaded_limit()` entries are kept (a hit there touches no disk); a library nothing references
any more is dlclosed. The folder stays within `max_bytes()` after every build (least recently
used entries go first). Trust: the folder and each entry's files must be the user's own and not
writable by anyone else; the sha256 catches corruption, not an attacker who can write there.
"""

from __future__ import annotations

import _ctypes
import ctypes
import errno
import functools
import hashlib
import json
import os
import shlex
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from kerneldsl.errors import CacheError, CompileError
from kerneldsl.settings import SettingsError, settings

try:  # flock serialises concurrent builds of one key; without it atomic replaces still keep us safe
    import fcntl
except ImportError:  # pragma: no cover - non-POSIX
    fcntl = None  # type: ignore[assignment]

CACHE_FORMAT = 2
_MAX_OUTPUT = 4000  # characters of compiler output quoted in a CompileError message
STALE_AFTER = 600.0  # seconds after which an unlocked temporary or lock file is litter
EVICT_EVERY = 32  # builds between two size checks of the folder (a hit never scans it)


# --- settings: every environment variable the cache reads --------------------------------------
@functools.cache
def _installed_version() -> str:
    try:
        from importlib.metadata import version

        return version("kerneldsl")
    except Exception:  # noqa: BLE001 - not installed, or broken metadata: any version string will do
        return "0"


def kerneldsl_version() -> str:
    # Read the attribute lazily: kerneldsl/__init__ may still be mid-import when we are first used.
    version = getattr(sys.modules.get("kerneldsl"), "__version__", None)
    return str(version) if version else _installed_version()


def cache_root() -> Path:
    """$KERNELDSL_CACHE, else $XDG_CACHE_HOME/kerneldsl, else ~/.cache/kerneldsl."""
    return Path(_setting("cache"))


def cache_dir() -> Path:
    """The versioned folder holding this kerneldsl's entries (not created here)."""
    return cache_root() / f"v{CACHE_FORMAT}-{kerneldsl_version()}".replace(os.sep, "_")


def compile_timeout() -> float:
    """$KERNELDSL_COMPILE_TIMEOUT seconds (default 600) before a compiler is killed."""
    return _positive("compile_timeout", "KERNELDSL_COMPILE_TIMEOUT")


def lock_timeout() -> float:
    """$KERNELDSL_LOCK_TIMEOUT seconds (default: the compile timeout + 60) to wait for another
    process's build of the same kernel."""
    if _setting("lock_timeout") is None:
        return compile_timeout() + 60.0
    return _positive("lock_timeout", "KERNELDSL_LOCK_TIMEOUT")


def max_bytes() -> int:
    """$KERNELDSL_CACHE_MAX (default 2G): the folder's size bound; 500M, 2G, 1.5T or bytes."""
    return int(_positive("cache_max", "KERNELDSL_CACHE_MAX"))


def loaded_limit() -> int:
    """$KERNELDSL_CACHE_LOADED (default 256): entries kept in memory (loaded libraries)."""
    return max(1, int(_positive("cache_loaded", "KERNELDSL_CACHE_LOADED")))


def _setting(name: str):
    try:
        return getattr(settings, name)
    except SettingsError as e:
        raise CacheError(str(e)) from None


def _positive(name: str, variable: str) -> float:
    value = _setting(name)
    if not value > 0:
        raise CacheError(f"{variable}={value!r} is not a positive number (unset it for the default)")
    return value


# --- what is built, and what comes back ---------------------------------------------------------
@dataclass(frozen=True)
class Recipe:
    """How to make one artifact: what decides its bytes (`ident` and `source`), and the command."""

    ident: list  # compiler identity, flags, host: with the source, hashed into the key
    source: str
    src_suffix: str  # ".c", ".cu", ".emu.cpp": the saved source, which diagnostics name
    suffix: str  # ".so", ".cubin": the product
    command: Callable[[str, str], list]  # (source path, output path) -> argv
    name: str = "kernel"  # the kernel, for messages
    compiler_env: str | None = None  # the variable that picks the compiler, for messages


@dataclass(frozen=True)
class Artifact:
    path: str  # the product
    source_path: str
    key: str  # hex sha256 naming the entry
    output: str  # the compiler's messages (ptxas -v's resource report for nvcc)
    from_cache: bool  # True when no compiler ran to produce it


@dataclass
class BuildStats:
    compiles: int = 0  # compiler invocations in this process
    disk_hits: int = 0
    memory_hits: int = 0

    def reset(self) -> None:
        self.compiles = self.disk_hits = self.memory_hits = 0


class _Memory:
    """The in-process layer: the last loaded_limit() entries, least recently used first. A hit
    here touches no disk; an entry pushed out is only forgotten (its library closes once unused)."""

    def __init__(self) -> None:
        self._items: OrderedDict[str, object] = OrderedDict()
        self._lock = threading.Lock()  # builds may come from several threads

    def get(self, key: str):
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
            return hit

    def put(self, key: str, value: object) -> None:
        limit = loaded_limit()
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > limit:
                self._items.popitem(last=False)

    def keys(self) -> set[str]:
        with self._lock:
            return set(self._items)

    def path_keys(self) -> set[str]:
        """Entries whose product is a path still to be used (not a loaded library)."""
        with self._lock:
            return {k for k, v in self._items.items() if isinstance(v, Artifact)}

    def __contains__(self, key: str) -> bool:
        return key in self.keys()

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


stats = BuildStats()
_memory = _Memory()
_tidied: set[Path] = set()  # folders this process has swept for litter
_builds = 0  # builds (or waits for another process's build) in this process, to space out size checks
_sizes: dict[Path, int] = {}  # a folder's size at its last scan, plus what this process built since


def clear_memory_cache() -> None:
    """Forget in-process entries (the disk is untouched); a library is closed once unreferenced."""
    _memory.clear()


def key_of(recipe: Recipe) -> str:
    return hashlib.sha256(json.dumps([CACHE_FORMAT, kerneldsl_version(), recipe.ident,
                                      recipe.source]).encode()).hexdigest()


def get(recipe: Recipe, make: Callable[[Artifact], object] = lambda a: a):
    """`make(artifact)` for the recipe's product: from memory, else from disk, else built.

    `make` may raise OSError (a library that does not load): on disk that entry is rebuilt.
    """
    key = key_of(recipe)
    found = _find(key, recipe, make)
    if found is not None:
        return found
    d = cache_dir()
    with _errors(d):
        _check_dir(d, create=True)
        with _locked(d, d / f"{key}.lock"):
            # Another process may have finished this key while we waited for the lock.
            found = _open(d, key, recipe, make, repair=True)
            if found is None:
                found = _build(d, key, recipe, make)
        _memory.put(key, found)
        _after_build(d, key, recipe)
    return found


def find(recipe: Recipe, make: Callable[[Artifact], object] = lambda a: a):
    """`make(artifact)` of the recipe's product from memory or disk, or None: nothing is built."""
    return _find(key_of(recipe), recipe, make)


def _find(key: str, recipe: Recipe, make):
    hit = _memory.get(key)
    if hit is not None:
        stats.memory_hits += 1
        return hit
    d = cache_dir()
    with _errors(d):
        found = _open(d, key, recipe, make, repair=False) if _check_dir(d, create=False) else None
    if found is not None:
        _memory.put(key, found)
    return found


def _after_build(d: Path, key: str, recipe: Recipe) -> None:
    """Keep the folder within max_bytes() after a build: sweep litter at this process's first
    build in `d`; rescan the folder then, every EVICT_EVERY builds (other processes add entries
    too) and whenever this process's own builds since the last scan would pass the bound."""
    global _builds
    _builds += 1
    grown = _sizes.get(d, 0) + sum(_size(d / f"{key}{end}") for end in (recipe.src_suffix, recipe.suffix, ".json"))
    if d not in _tidied or _builds % EVICT_EVERY == 0 or grown > max_bytes():
        _sizes[d] = _tidy(d, sweep=d not in _tidied)
        _tidied.add(d)
    else:
        _sizes[d] = grown


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


# --- disk entries ---------------------------------------------------------------------------------
def _open(d: Path, key: str, recipe: Recipe, make, repair: bool):
    """make() of a valid entry, else None; with `repair` (lock held) delete an invalid one."""
    out, meta = d / f"{key}{recipe.suffix}", d / f"{key}.json"
    try:
        info = json.loads(_read_trusted(meta))
        # Hash before dlopen: dlopen of a truncated file may misbehave rather than fail cleanly.
        if _sha256_trusted(out) != info["sha256"]:
            raise ValueError("sha256 mismatch")
        src = d / f"{key}{recipe.src_suffix}"
        made = make(Artifact(str(out), str(src), key, info.get("output", ""), True))
    except (OSError, ValueError, KeyError, TypeError):
        if repair:  # json first, so lock-free readers stop trusting the entry at once
            _unlink(meta)
            _unlink(out)
        return None
    try:
        os.utime(meta)  # the entry's last use, for eviction
    except OSError:
        pass
    stats.disk_hits += 1
    return made


def _build(d: Path, key: str, recipe: Recipe, make):
    src = d / f"{key}{recipe.src_suffix}"
    _atomic_write(src, recipe.source.encode())  # compile from the final path so diagnostics name it
    fd, tmp = tempfile.mkstemp(dir=d, prefix=f"{key}.", suffix=recipe.suffix + ".tmp")
    os.close(fd)
    try:
        cmd = recipe.command(str(src), tmp)
        output = _compile(cmd, recipe, src)
        out = d / f"{key}{recipe.suffix}"
        os.chmod(tmp, os.stat(tmp).st_mode & 0o755)  # the compiler honours the umask; we refuse g+w
        digest = _sha256_file(Path(tmp))
        os.replace(tmp, out)
        meta = {"sha256": digest, "name": recipe.name, "command": cmd, "output": output,
                "kerneldsl_version": kerneldsl_version(), "cache_format": CACHE_FORMAT}
        _atomic_write(d / f"{key}.json", json.dumps(meta, indent=1).encode())  # last: commits the entry
    finally:
        _unlink(Path(tmp))
    try:
        return make(Artifact(str(out), str(src), key, output, False))
    except OSError as e:
        raise CompileError(f"built {out} but could not load it: {e}", str(src), output) from e


def _compile(cmd: list, recipe: Recipe, src: Path) -> str:
    """Run the compiler (killed with all its children after compile_timeout()); its messages."""
    stats.compiles += 1
    limit = compile_timeout()
    hint = f"; set {recipe.compiler_env} to a working compiler" if recipe.compiler_env else ""
    try:  # a session of its own, so that a timeout kills cc1, as and ld too
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                errors="replace", start_new_session=True)
    except FileNotFoundError:
        raise CompileError(f"compiler {cmd[0]!r} not found{hint}") from None
    except OSError as e:
        raise CompileError(f"could not run the compiler {cmd[0]!r}: {e}{hint}") from None
    try:
        stdout, stderr = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        _kill(proc)
        raise CompileError(f"compiling kernel {recipe.name!r} took longer than {limit:g} s, so the compiler "
                           f"was killed; source saved at {src}. If the kernel is just large, raise "
                           f"KERNELDSL_COMPILE_TIMEOUT (seconds).\ncommand: {shlex.join(cmd)}",
                           source_path=str(src)) from None
    except BaseException:  # KeyboardInterrupt: the compiler is not in our process group any more
        _kill(proc)
        raise
    output = (stderr + stdout).strip()
    if proc.returncode != 0:
        shown = output[:_MAX_OUTPUT]
        if len(output) > _MAX_OUTPUT:
            shown += f"\n... ({len(output) - _MAX_OUTPUT} more characters in .compiler_output)"
        raise CompileError(f"failed to compile kernel {recipe.name!r} (exit {proc.returncode}); source saved "
                           f"at {src}\ncommand: {shlex.join(cmd)}\n{shown}",
                           source_path=str(src), compiler_output=output)
    return output


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    proc.stdout.close()
    proc.stderr.close()


# --- files ----------------------------------------------------------------------------------------
def _trusted_fd(path: Path) -> int:
    """An fd of `path`, which must be ours and writable by nobody else (else ValueError)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        os.close(fd)
        raise ValueError(f"{path} is not ours alone (owner {st.st_uid}, mode {st.st_mode:o})")
    return fd


def _read_trusted(path: Path) -> bytes:
    with os.fdopen(_trusted_fd(path), "rb") as f:
        return f.read()


def _sha256_trusted(path: Path) -> str:
    with os.fdopen(_trusted_fd(path), "rb") as f:
        return _sha256(f)


def _sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return _sha256(f)


def _sha256(f) -> str:
    h = hashlib.sha256()
    for chunk in iter(lambda: f.read(1 << 20), b""):
        h.update(chunk)
    return h.hexdigest()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        _unlink(Path(tmp))
        raise


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# --- the folder: trust, errors, locks, litter, size --------------------------------------------------
def _check_dir(d: Path, create: bool) -> bool:
    """Whether `d` exists (made when `create`); CacheError when others could plant code in it."""
    if create:
        d.mkdir(mode=0o755, parents=True, exist_ok=True)
    try:
        st = os.stat(d)
    except (FileNotFoundError, NotADirectoryError):
        if create:
            raise
        return False
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, "a file stands where the cache folder should be", str(d))
    if st.st_uid != os.geteuid():
        why = f"owned by uid {st.st_uid}, not by you (uid {os.geteuid()})"
    elif st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        why = f"writable by {'others' if st.st_mode & 0o002 else 'its group'} (mode {st.st_mode & 0o7777:o})"
    else:
        return True
    raise CacheError(f"kernel cache {d} is {why}. kerneldsl loads and runs the libraries it finds there, so "
                     f"the folder must be yours and writable only by you: run `chmod go-w {d}`, or point "
                     f"KERNELDSL_CACHE at a private directory ({_env_now()})")


_FIXES = {
    errno.ENOSPC: "the disk is full: free space, lower KERNELDSL_CACHE_MAX, or point KERNELDSL_CACHE at "
                  "a directory on another disk",
    errno.EDQUOT: "the disk quota is exhausted: free space, lower KERNELDSL_CACHE_MAX, or point "
                  "KERNELDSL_CACHE at a directory on another disk",
    errno.EACCES: "it is not writable: point KERNELDSL_CACHE at a directory you can write",
    errno.EPERM: "it is not writable: point KERNELDSL_CACHE at a directory you can write",
    errno.EROFS: "it is on a read-only file system: point KERNELDSL_CACHE at a writable directory",
    errno.ENOTDIR: "a file stands where a directory should be: remove that file or point KERNELDSL_CACHE "
                   "at a directory",
    errno.EEXIST: "a file stands where the cache folder should be: remove that file or point "
                  "KERNELDSL_CACHE at a directory",
    errno.EISDIR: "a directory stands where a cache file should be: remove it (it is not kerneldsl's) or "
                  "point KERNELDSL_CACHE at another directory",
}


def _env_now() -> str:
    value = settings.given("cache")
    return f"KERNELDSL_CACHE={value!r}" if value else "KERNELDSL_CACHE is not set"


@contextmanager
def _errors(d: Path) -> Iterator[None]:
    """OS errors of the cache's own files become a CacheError that says how to fix them."""
    try:
        yield
    except OSError as e:
        fix = _FIXES.get(e.errno, "point KERNELDSL_CACHE at a writable local directory")
        where = f" ({e.filename})" if e.filename else ""
        raise CacheError(f"kernel cache {d} cannot be used: {e.strerror or e}{where}; {fix} "
                         f"({_env_now()})") from e


@contextmanager
def _locked(d: Path, path: Path) -> Iterator[None]:
    """Hold `path`'s flock, waiting at most lock_timeout() seconds for another process."""
    if fcntl is None:  # pragma: no cover - non-POSIX
        yield
        return
    limit = lock_timeout()
    fd = _acquire(path, time.monotonic() + limit)
    if fd is None:
        raise CacheError(f"waited {limit:g} s for the build lock {path}: another process is building the "
                         f"same kernel, or hangs. Raise KERNELDSL_LOCK_TIMEOUT (seconds); if no kerneldsl "
                         f"process is running, delete the lock file (cache {d}, {_env_now()})")
    try:
        yield
    finally:
        _release(path, fd)


def _acquire(path: Path, deadline: float) -> int | None:
    """An fd holding the flock of the file now at `path`, or None once `deadline` (monotonic) passed.

    A holder unlinks its lock file before releasing it, so a waiter may win the lock of a file that
    is gone from the folder: it then opens the new one and waits again (st_ino of fd vs path).
    """
    delay = 0.001
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            while not _try_flock(fd):
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return None
                time.sleep(delay)
                delay = min(2 * delay, 0.05)
            mine = os.fstat(fd)
            try:
                now = os.stat(path)
            except FileNotFoundError:
                now = None
        except BaseException:
            os.close(fd)
            raise
        if now is not None and (now.st_ino, now.st_dev) == (mine.st_ino, mine.st_dev):
            return fd
        os.close(fd)


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _release(path: Path, fd: int) -> None:
    # Only the holder unlinks, while it holds the lock: no one else can own the file at `path`.
    try:
        _unlink(path)
    finally:
        os.close(fd)


def _tidy(d: Path, sweep: bool) -> int:
    """Remove litter of killed builds (with `sweep`), then evict least recently used entries
    while the folder is over max_bytes(); the folder's size after. Entries this process holds
    count as the most recently used (a hit in memory touches no disk), and a held library's files
    may go (it stays loaded); never an entry being built, nor one whose path is still to be used
    (an object file or cubin in the memory layer)."""
    limit, now = max_bytes(), time.time()
    size: Counter[str] = Counter()
    used: dict[str, float] = {}  # key -> newest mtime of its files (the json is touched on each hit)
    for f in os.scandir(d):
        key = f.name.split(".", 1)[0]
        try:
            st = f.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        if f.name.endswith((".tmp", ".lock")):
            if sweep and now - st.st_mtime > STALE_AFTER:
                _remove_entry(d, key, only=f.name)
            continue
        size[key] += st.st_size
        used[key] = max(used.get(key, 0.0), st.st_mtime)
    total = sum(size.values())
    if total <= limit:
        return total
    held, paths = _held_keys(), _memory.path_keys()
    for key in sorted(used, key=lambda k: (k in held, used[k])):
        if total <= limit:
            break
        if key not in paths and _remove_entry(d, key):
            total -= size[key]
    return total


def _remove_entry(d: Path, key: str, only: str | None = None) -> bool:
    """Delete the entry's files (or just `only`) unless its lock is held (a build is running)."""
    lock = d / f"{key}.lock"
    fd = _acquire(lock, deadline=0.0)
    if fd is None:
        return False
    try:
        names = [only] if only else sorted((p.name for p in d.glob(f"{key}.*")),
                                           key=lambda n: not n.endswith(".json"))  # json first: uncommit
        for name in names:
            if name != lock.name:
                _unlink(d / name)
    finally:
        _release(lock, fd)
    return True


def _held_keys() -> set[str]:
    """Entries this process holds: in the memory layer, or a library still loaded."""
    return _memory.keys() | {os.path.basename(p).split(".", 1)[0] for p in _loaded_paths()}


# --- loaded libraries --------------------------------------------------------------------------------
_libraries: weakref.WeakSet = weakref.WeakSet()  # the CDLLs alive in this process
# Runtimes our libraries pull in are never closed: unloading libgomp under its idle thread pool
# would crash, and reloading it would start a new pool each time.
_RUNTIMES = ("libgomp.so.1", "libmvec.so.1", "libstdc++.so.6")
_pinned: dict[str, ctypes.CDLL] = {}


def _omp_wait_policy() -> None:
    """OpenMP reads its wait policy once, when it loads with the first kernel. Its default keeps
    idle threads spinning for a few milliseconds after each parallel region, so that the next
    region starts at once. A busy machine needs nothing else: each call picks its threads
    (templates/c/team.h), and where two threads lose it runs on one and leaves no spinners. But
    a second OpenMP runtime in the process (torch brings its own) cannot see ours: each one's
    spinners take the cores the other's next region needs, so there threads sleep (passive).
    OMP_WAIT_POLICY or GOMP_SPINCOUNT set by the user win."""
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        return
    if "torch" in sys.modules:
        os.environ["OMP_WAIT_POLICY"] = "passive"


def load_library(path: str) -> ctypes.CDLL:
    """ctypes.CDLL(path), dlclosed once the object (and every function taken from it) is gone."""
    _omp_wait_policy()
    lib = ctypes.CDLL(path)
    # Each CDLL is one dlopen reference, so each closes its own; not at exit, where the process
    # unmaps everything anyway and closing could pull code from under a later atexit handler.
    weakref.finalize(lib, _ctypes.dlclose, lib._handle).atexit = False
    _libraries.add(lib)
    for name in _RUNTIMES:
        if name not in _pinned:
            try:
                _pinned[name] = ctypes.CDLL(name, mode=os.RTLD_NOLOAD)
            except OSError:  # not loaded by this library
                pass
    return lib


def function_of(lib: ctypes.CDLL, name: str, restype, *argtypes):
    """`lib`'s function `name` as a pointer made from its address. ctypes' own (`lib.name`,
    `lib[name]`) refers to itself, a cycle that keeps the library loaded until the garbage
    collector runs; this one holds no reference to `lib`: its caller keeps the library alive
    while it may be called."""
    address = ctypes.addressof(ctypes.c_char.in_dll(lib, name))
    return ctypes.CFUNCTYPE(restype, *argtypes)(address)


def _loaded_paths() -> set[str]:
    return {lib._name for lib in list(_libraries)}
