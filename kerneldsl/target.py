"""Where kernels run: a `Target`, detected once at the top of a build and passed down.

    kd.Target.detect("c")        # Target(kind='c', isa='avx512', vector_bytes=64, cores=2, ...)
    kd.build([A, B], [C], target="cuda-emu")       # a kind, or a Target object

The SIMD level is the C compiler's with its flags (`cc <flags> -dM -E`), asked once per
compiler, flags and host, and remembered beside the kernel cache, so that a warm build in a
new process starts no process. Nothing below the pipeline runs a compiler to find out where it
is: schedules read `target.isa`, `target.vector_bytes` and `target.cores`; the runtime compiles
with `target.cc` and `target.cflags`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from .settings import settings

KINDS = ("c", "cuda", "cuda-emu")

# No -ffast-math: generated kernels rely on IEEE NaN/inf semantics. -fno-math-errno changes no
# result (nothing reads errno) but lets loops of expf/logf vectorize (with glibc's libmvec those
# become SIMD calls, declared in the C prelude under KD_USE_MVEC). -fno-trapping-math is left
# out on purpose: it lets GCC fold (double)(int64_t)x into trunc(x), which gives -0.0 where
# numpy gives 0.0 (the differential tests caught it). -fwrapv: int overflow wraps, as numpy's.
_GLIBC = tuple(int(x) for x in (os.confstr("CS_GNU_LIBC_VERSION") or "glibc 0.0").split()[-1].split(".")[:2]) \
    if hasattr(os, "confstr") and "CS_GNU_LIBC_VERSION" in os.confstr_names else (0, 0)
_MVEC = ("-DKD_USE_MVEC", "-lmvec") if (_GLIBC >= (2, 35) and any(
    os.path.exists(os.path.join(d, "libmvec.so.1"))
    for d in ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64"))) else ()
DEFAULT_CFLAGS: tuple[str, ...] = ("-O3", "-march=native", "-fopenmp", "-fwrapv", "-fno-math-errno",
                                  "-ffp-contract=off", *_MVEC)
DEFAULT_ARCH = "sm_90"


@dataclass(frozen=True)
class Target:
    kind: str = "c"  # c | cuda | cuda-emu
    isa: str = "generic"  # avx512 | avx2 | generic: the SIMD level the C compiler targets
    vector_bytes: int = 16
    cores: int = 1
    cuda_arch: str | None = None  # sm_XY for the CUDA kinds
    cc: tuple = ("cc",)
    cflags: tuple = DEFAULT_CFLAGS
    cxx: tuple = ("g++",)  # the CUDA emulator's compiler
    nvcc: str = "nvcc"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown target {self.kind!r}; targets: {', '.join(KINDS)}")

    @property
    def is_cuda(self) -> bool:
        return self.kind in ("cuda", "cuda-emu")

    @staticmethod
    def detect(kind: str = "c") -> Target:
        """This machine's target of `kind`, from the settings (KERNELDSL_CC, ...) in force."""
        return _detect(kind, tuple(settings.cc), settings.cflags, tuple(settings.cxx), settings.nvcc,
                       settings.cuda_arch, settings.cache)

    @staticmethod
    def resolve(target) -> Target:
        """A Target from a Target, a kind ("c", "cuda", "cuda-emu") or None (c)."""
        if isinstance(target, Target):
            return target
        if target is None:
            return Target.detect("c")
        if isinstance(target, str):
            if target not in KINDS:
                raise ValueError(f"build: unknown target {target!r}; available: {', '.join(KINDS)}")
            return Target.detect(target)
        raise TypeError(f"target must be one of {', '.join(KINDS)} or a kd.Target, got {target!r}")

    def with_kind(self, kind: str) -> Target:
        return replace(self, kind=kind)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @staticmethod
    def from_dict(d: dict) -> Target:
        names = {f.name for f in fields(Target)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"a target has no field(s) {', '.join(sorted(unknown))}")
        return Target(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def __str__(self) -> str:
        where = f"{self.isa}, {self.vector_bytes}-byte vectors, {self.cores} core(s)"
        if self.is_cuda:
            where = f"{self.cuda_arch}; host {where}"
        return f"{self.kind} ({where})"


@functools.cache
def _detect(kind, cc, cflags, cxx, nvcc, cuda_arch, cache) -> Target:
    flags = tuple(cflags) if cflags is not None else DEFAULT_CFLAGS
    isa, vbytes = simd_level(cc, flags)
    arch = None
    if kind in ("cuda", "cuda-emu"):
        arch = _gpu_arch() if kind == "cuda" else None
        arch = arch or (cuda_arch if cuda_arch is None or cuda_arch.startswith("sm_") else f"sm_{cuda_arch}")
        arch = arch or DEFAULT_ARCH
    return Target(kind, isa, vbytes, _cores(), arch, cc, flags, cxx, nvcc)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


_gpu_probes: list = []  # functions giving the present GPU's (major, minor) or None: the runtime's


def register_gpu_probe(probe) -> None:
    """The runtime (which owns the GPU driver) tells targets how to ask for the present GPU."""
    _gpu_probes.append(probe)
    _detect.cache_clear()


def _gpu_arch() -> str | None:
    """The present GPU's sm_XY: a cubin loads only on its own major architecture."""
    for probe in _gpu_probes:
        cc = probe()
        if cc:
            return f"sm_{cc[0]}{cc[1]}"
    return None


# --- who the compiler and the host are: cache keys, no process started --------------------------

@functools.cache
def compiler_identity(cc: tuple[str, ...]) -> tuple:
    """Who the compiler is, from the filesystem only (a warm cache hit must not spawn a process).
    Raises FileNotFoundError when the command is not found."""
    if not cc or shutil.which(cc[0]) is None:
        raise FileNotFoundError(cc[0] if cc else "<empty>")
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
def host_identity() -> str:
    """The CPU: -march=native output depends on it, so a cache shared across machines (an NFS
    home) must not hand one host's binary to another, where it could die with SIGILL."""
    cpu = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags", "Features", "CPU part"))]
        cpu = "".join(dict.fromkeys(lines))  # dedupe the per-core repeats, keep order
    except OSError:
        pass
    return f"{platform.system()}|{platform.machine()}|{hashlib.sha256(cpu.encode()).hexdigest()}"


def simd_level(cc: tuple, flags: tuple) -> tuple[str, int]:
    """(isa, vector bytes) the compiler targets with `flags`: asked once (`cc -dM -E`) per
    compiler, flags and host, remembered in a small file beside the kernel cache."""
    try:
        ident = [list(compiler_identity(cc)), list(flags), host_identity()]
    except (FileNotFoundError, OSError):
        return "generic", 16  # no compiler: the build will say so
    key = hashlib.sha256(json.dumps(ident).encode()).hexdigest()[:32]
    path = Path(settings.cache) / "targets" / f"{key}.json"
    try:
        got = json.loads(path.read_text())
        return str(got["isa"]), int(got["vector_bytes"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    keep = [f for f in flags if f.startswith(("-m", "-f")) and f != "-fopenmp"]
    try:
        out = subprocess.run([*cc, *keep, "-dM", "-E", "-x", "c", os.devnull], capture_output=True,
                             text=True, timeout=min(60.0, settings.compile_timeout), check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return "generic", 16
    isa = ("avx512", 64) if "__AVX512F__" in out else ("avx2", 32) if "__AVX2__" in out and "__FMA__" in out \
        else ("generic", 16)
    try:  # remembered for the next process; a cache we cannot write only costs this question again
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump({"isa": isa[0], "vector_bytes": isa[1], "compiler": ident[0], "flags": list(flags)}, f)
        os.replace(tmp, path)
    except OSError:
        pass
    return isa
