"""Templates and their knobs: every numeric choice a schedule makes, declared in one place.

A kernel runs one template, chosen by a `template` step of its schedule:

    target  template      what runs
    c       loops         the kernel's loop nest as scheduled (parallel / vectorized / unrolled loops)
    c       gemm          a packed, BLIS-style GEMM (templates/c/gemm.c.j2); the loop nest below min_work
    cuda    grid_stride   a thread per output point in a grid-stride loop, 16-byte vector accesses
    cuda    row_reduce    a block per row; warp-shuffle and shared-memory reductions
    cuda    gemm          a shared-memory tiled GEMM with register tiles (templates/cuda/gemm.cu.j2)
    cuda    loops         the loop nest as scheduled, with the loops bind() gave to blocks and threads

Each template declares its knobs (`Knob`: name, default, range, meaning) and the checks across
them. The default schedule takes every knob's default, unless a `knobs(...)` block overrides it:

    with kd.knobs(kc=128, row_threads=128):
        f = kd.build(...)
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ScheduleError

FLOAT_BYTES = {"float32": 4, "float64": 8}


@dataclass(frozen=True)
class Knob:
    name: str
    default: Any  # a value, or a function (target, dtype) -> value
    lo: int | None = None  # integer knobs: the range [lo, hi]; None: a bool knob
    hi: int | None = None
    doc: str = ""

    def value_for(self, target, dtype: str):
        return self.default(target, dtype) if callable(self.default) else self.default

    def check(self, value) -> None:
        if self.lo is None:
            if not isinstance(value, bool):
                raise ScheduleError(f"knob {self.name} is on or off (True/False), got {value!r}")
            return
        if not isinstance(value, int) or isinstance(value, bool) or not self.lo <= value <= self.hi:
            raise ScheduleError(f"knob {self.name} must be an integer in [{self.lo}, {self.hi}], got {value!r}")


@dataclass(frozen=True)
class Template:
    name: str
    family: str  # "c" or "cuda": the targets that render it
    knobs: tuple
    check: Callable[[dict, Any, str], None] | None = None  # (knobs, target, dtype): across knobs
    doc: str = ""

    def defaults(self, target, dtype: str) -> dict:
        over = _overrides.get() or {}
        return {k.name: over.get(k.name, k.value_for(target, dtype)) for k in self.knobs}

    def resolve(self, values: dict, target, dtype: str) -> dict:
        """The defaults with `values` applied, every knob checked."""
        names = {k.name: k for k in self.knobs}
        unknown = set(values) - set(names)
        if unknown:
            raise ScheduleError(f"template {self.name} has no knob(s) {', '.join(sorted(unknown))}; its knobs: "
                                f"{', '.join(names) or 'none'}")
        out = {**self.defaults(target, dtype), **values}
        for name, k in names.items():
            k.check(out[name])
        if self.check is not None:
            self.check(out, target, dtype)
        return out


# --- the CPU GEMM's register tiles -----------------------------------------------------------
# MR rows x NR columns of accumulators: MR * NR / lanes accumulators plus NR / lanes B vectors
# and one broadcast A must fit the vector registers (16 on AVX2: 6 x 16 floats = 12
# accumulators; 32 on AVX-512).
TILES = {
    ("avx512", "float32"): (12, 32), ("avx512", "float64"): (12, 16),
    ("avx2", "float32"): (6, 16), ("avx2", "float64"): (6, 8),
    ("generic", "float32"): (4, 8), ("generic", "float64"): (4, 4),
}


def lanes(target, dtype: str) -> int:
    return max(1, target.vector_bytes // FLOAT_BYTES.get(dtype, 4))


def _mr(target, dtype):
    return TILES[(target.isa, dtype)][0]


def _nr(target, dtype):
    return TILES[(target.isa, dtype)][1]


def _kc(target, dtype):
    # a KC x NR sliver of B (32 KiB) streams from L1/L2 on the k loop; deeper K blocks mean fewer
    # passes of partial sums over C (measured on znver3: 512 beat 256 by ~5% at 2048^3)
    return 2048 // FLOAT_BYTES[dtype]


def _mc_for(mr: int) -> int:
    return mr * max(1, 96 // mr)  # MC x KC of packed A: ~200 KiB, well inside L2 (512 KiB)


def _nc_for(nr: int) -> int:
    return nr * max(1, 4096 // nr)  # KC x NC of packed B: a few MiB of L3


def _mc(target, dtype):
    return _mc_for(_mr(target, dtype))


def _nc(target, dtype):
    return _nc_for(_nr(target, dtype))


VECTOR_REGISTERS = {"avx512": 32, "avx2": 16, "generic": 16}


def register_tiles(target, dtype: str) -> list[tuple[int, int]]:
    """(mr, nr) tiles whose mr * nr / lanes accumulators, nr / lanes B vectors and one broadcast
    A fit the vector registers (the tuner searches these; the default is TILES')."""
    n, regs = lanes(target, dtype), VECTOR_REGISTERS.get(target.isa, 16)
    return [(mr, nv * n) for nv in (1, 2, 3, 4) for mr in (2, 4, 6, 8, 10, 12, 14, 16, 20, 24, 28)
            if mr * nv + nv + 1 <= regs and mr * nv >= 6 and nv * n <= 256]


FIT_WASTE = 0.05  # padding of the last register tile that is worth another tile


def fit_gemm_knobs(m, n, k, target, dtype: str) -> dict:
    """CPU GEMM knobs fitted to the extents known when the kernel is built (None: known only at a
    call), as tuning found them on this machine class (benchmarks/NOTES.md, "Better defaults"):
    - nr: the register tile's columns padding N least (N = 100: 16 columns, 112 computed, not
      32 columns, 128 computed); mr likewise for M (M = 64 output channels: 8 rows, not 12);
      the target's tile is kept unless it pads more than FIT_WASTE;
    - kc: K in one block when K is at most twice the default block (one pass over C, one packing
      of each panel), e.g. a dense layer's K = 784.
    Only knobs that differ from the defaults are returned."""
    d_mr, d_nr, d_kc = _mr(target, dtype), _nr(target, dtype), _kc(target, dtype)
    waste = lambda extent, t: (-extent) % t / extent  # noqa: E731 - padded share of the last tile
    nr, mr = d_nr, d_mr
    # tiles: measured with 32 vector registers (AVX-512), where every tile below keeps >= 12
    # accumulators; with 16 the smaller tiles starve the FMA units, so those targets keep theirs
    tiles = [t for t in register_tiles(target, dtype) if t[0] * t[1] // lanes(target, dtype) >= 12 and t[0] <= d_mr] \
        if VECTOR_REGISTERS.get(target.isa, 16) >= 32 else []
    if tiles and n and waste(n, d_nr) > FIT_WASTE:
        nr = min({t[1] for t in tiles}, key=lambda c: (-(-n // c) * c, -c))
    if tiles and m and waste(m, d_mr) > FIT_WASTE:
        mr = min((t[0] for t in tiles if t[1] == nr), key=lambda r: (-(-m // r) * r, -r))
    out = {}
    if (mr, nr) != (d_mr, d_nr):
        out.update(mr=mr, nr=nr, mc=_mc_for(mr), nc=_nc_for(nr))
    if k and d_kc < k <= 2 * d_kc:
        out["kc"] = k
    return out


def _check_cpu_gemm(k: dict, target, dtype: str) -> None:
    n = lanes(target, dtype)
    if k["nr"] % n:
        raise ScheduleError(f"GEMM knob nr={k['nr']} must be a multiple of the vector lanes ({n} {dtype} on "
                            f"{target.isa})")
    if k["mc"] % k["mr"] or k["nc"] % k["nr"]:
        raise ScheduleError(f"GEMM knobs: mc ({k['mc']}) must be a multiple of mr ({k['mr']}) and nc ({k['nc']}) "
                            f"of nr ({k['nr']})")


PARALLEL_MIN_WORK = Knob("parallel_min_work", 1 << 15, 0, 1 << 62,
                         "below this many iterations (the loop nest's count) a parallel loop runs on one thread")
# a loop both parallel and SIMD (a 1-D elementwise kernel): threads take blocks of 4 vectors, each
# block one SIMD loop; as one `parallel for simd` loop exp(x) of 2^22 floats ran 1.14x slower here
SIMD_BLOCK = Knob("simd_block", lambda target, dtype: 4 * lanes(target, dtype), 0, 1 << 16,
                  "a loop both parallel and SIMD runs in blocks of this many iterations per thread step (0: one loop)")

# --- CUDA ---------------------------------------------------------------------------------------
SHARED_LIMIT = 48 * 1024  # static __shared__ bytes a block may declare


def gemm_threads(k: dict) -> int:
    return (k["gemm_bm"] // k["gemm_tm"]) * (k["gemm_bn"] // k["gemm_tn"])


def gemm_shared_bytes(k: dict, dtype: str) -> int:
    return k["gemm_stages"] * k["gemm_bk"] * ((k["gemm_bm"] + 1) + k["gemm_bn"]) * FLOAT_BYTES.get(dtype, 4)


def _check_cuda_gemm(k: dict, target, dtype: str) -> None:
    bm, bn, bk, tm, tn = (k[f"gemm_{x}"] for x in ("bm", "bn", "bk", "tm", "tn"))
    if bm % tm or bn % tn:
        raise ScheduleError(f"CUDA GEMM knobs: gemm_bm ({bm}) must be a multiple of gemm_tm ({tm}) and "
                            f"gemm_bn ({bn}) of gemm_tn ({tn})")
    threads = gemm_threads(k)
    if not 1 <= threads <= 1024:
        raise ScheduleError(f"CUDA GEMM knobs: (bm/tm) * (bn/tn) = {threads} threads per block; must be in "
                            f"[1, 1024]")
    if (bm * bk) % threads or (bn * bk) % threads:
        raise ScheduleError(f"CUDA GEMM knobs: the A slice (bm*bk = {bm * bk}) and the B slice (bn*bk = "
                            f"{bn * bk}) must be multiples of the {threads} threads, so that each thread "
                            f"loads whole elements")
    if gemm_shared_bytes(k, dtype) > SHARED_LIMIT:
        raise ScheduleError(f"CUDA GEMM knobs: the tiles need {gemm_shared_bytes(k, dtype)} bytes of shared "
                            f"memory; a block may declare at most {SHARED_LIMIT}")


def _warps(*names):
    def check(k: dict, target, dtype: str) -> None:
        for n in names:
            if k[n] % 32:
                raise ScheduleError(f"CUDA knob {n} must be a multiple of the warp size 32, got {k[n]}")
    return check


MAX_BLOCKS = Knob("max_blocks", 4096, 1, 1 << 20, "blocks launched at most (grid-stride loops cover the rest)")
THREADS = Knob("threads_per_block", 256, 32, 1024, "threads per block (a multiple of 32)")

TEMPLATES = {t.family + ":" + t.name: t for t in (
    Template("loops", "c", (PARALLEL_MIN_WORK, SIMD_BLOCK), doc="the loop nest as scheduled"),
    Template("gemm", "c", (
        Knob("mr", _mr, 1, 64, "register tile rows"),
        Knob("nr", _nr, 1, 256, "register tile columns (a multiple of the vector lanes)"),
        Knob("kc", _kc, 1, 1 << 16, "K block depth of the packed panels"),
        Knob("mc", _mc, 1, 1 << 16, "rows of the packed A block (a multiple of mr)"),
        Knob("nc", _nc, 1, 1 << 20, "columns of the packed B panel (a multiple of nr)"),
        Knob("threads", 0, 0, 1024, "OpenMP threads (0: all cores)"),
        Knob("min_work", 4096, 0, 1 << 62, "below this M*N*K the loop nest runs instead"),
        Knob("min_side", 4, 1, 1 << 20, "M or N below this (a matrix-vector product, a one-channel "
                                        "convolution's input gradient: no reuse to pack for) runs the loop nest"),
        PARALLEL_MIN_WORK), _check_cpu_gemm, "packed BLIS-style GEMM"),
    Template("grid_stride", "cuda", (THREADS, MAX_BLOCKS, Knob("vectorize", True, doc=(
        "16-byte vector accesses (float4, ...) where alignment allows"))), _warps("threads_per_block"),
        "a thread per output point, grid-stride loop"),
    Template("row_reduce", "cuda", (Knob("row_threads", 256, 32, 1024, "threads cooperating on one row"),
                                    MAX_BLOCKS), _warps("row_threads"), "a block per row"),
    Template("gemm", "cuda", (
        Knob("gemm_bm", 64, 1, 256, "rows of a block's tile"), Knob("gemm_bn", 64, 1, 256, "columns of a block's tile"),
        Knob("gemm_bk", 16, 1, 64, "K depth of a shared-memory slice"),
        Knob("gemm_tm", 4, 1, 16, "rows of a thread's register tile"),
        Knob("gemm_tn", 4, 1, 16, "columns of a thread's register tile"),
        Knob("gemm_stages", 2, 1, 2, "shared-memory buffers (2: double-buffered)"), MAX_BLOCKS),
        _check_cuda_gemm, "shared-memory tiled GEMM"),
    Template("loops", "cuda", (THREADS, MAX_BLOCKS), _warps("threads_per_block"),
             "the loop nest with its bound loops"),
)}

# Choices of the default schedule (not knobs of one template): whether it picks a template at all.
CHOICES = {"gemm": "contractions take the GEMM template (else: loops / grid_stride)",
           "row_reduce": "row reductions take the row_reduce template on CUDA (else: grid_stride)",
           "fit_gemm": "CPU GEMM tiles and K blocks fitted to the extents known at the build (else: the target's)"}


def family(target) -> str:
    return "cuda" if target.kind in ("cuda", "cuda-emu") else "c"


def template(name: str, target) -> Template:
    t = TEMPLATES.get(f"{family(target)}:{name}")
    if t is None:
        names = sorted(k.split(":")[1] for k in TEMPLATES if k.startswith(family(target) + ":"))
        raise ScheduleError(f"no template {name!r} for target {target.kind}; templates: {', '.join(names)}")
    return t


def knob_names() -> set:
    return {k.name for t in TEMPLATES.values() for k in t.knobs} | set(CHOICES)


_overrides: contextvars.ContextVar = contextvars.ContextVar("kerneldsl_knobs", default=None)


@contextlib.contextmanager
def knobs(**values):
    """Override knob defaults (any template's) for the builds in this block:
    `with kd.knobs(kc=64, row_threads=128): kd.build(...)`; `gemm=False` keeps contractions as
    loop nests. An unknown knob or a bad value fails here; checks across knobs fail at the build."""
    known = knob_names()
    unknown = set(values) - known
    if unknown:
        raise ScheduleError(f"unknown knob(s) {', '.join(sorted(unknown))}; knobs: {', '.join(sorted(known))}")
    specs = {k.name: k for t in TEMPLATES.values() for k in t.knobs}
    for name, v in values.items():
        if name in CHOICES:
            if not isinstance(v, bool):
                raise ScheduleError(f"knob {name} is on or off (True/False), got {v!r}")
        else:
            specs[name].check(v)
    token = _overrides.set({**(_overrides.get() or {}), **values})
    try:
        yield
    finally:
        _overrides.reset(token)


def choice(name: str, default: bool) -> bool:
    """A default-schedule choice (gemm, row_reduce): the active knobs block's, else `default`."""
    return (_overrides.get() or {}).get(name, default)


def active_overrides() -> dict:
    return dict(_overrides.get() or {})
