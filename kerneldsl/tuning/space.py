"""The search space of a workload, generated from its default Config.

    space = SearchSpace.of(f.inputs, f.outputs, f.config, sizes)
    space.dims                      # (Dimension('C', 'tile', ((12, 32), (8, 48), ...)), ...)
    cfg = space.config(point)       # a kd.Config; ScheduleError when the primitives refuse it

A point picks one value per dimension. The dimensions of a kernel depend on what runs it:

    C gemm          tile (mr, nr) that fits the vector registers, kc, mc, nc (as targets,
                    rounded to multiples of mr / nr), threads, parallel_min_work
    C loops         parallel_min_work, simd_block (where a loop is both parallel and SIMD), and
                    mutations of its default loop nest: split the innermost output loop (the
                    inner part vectorized: the vector width), fuse the two outer output loops
                    (which loop is parallel), no parallel loop, swap the two inner output loops,
                    tile the two inner output loops (the tile unrolled), move the reductions
                    outside the innermost output loop (decompose_reduction + reorder +
                    vectorize: loop order), unroll short windows
    CUDA gemm       (bm, bn, bk, tm, tn) tiles that pass the template's checks, stages, max_blocks
    CUDA row_reduce row_threads, max_blocks;  CUDA grid_stride: threads_per_block, max_blocks, vectorize

Every value is checked alone against the default when the space is made (a value the
primitives refuse is dropped), and every point is realized through the primitives before it
is built, so a candidate the primitives reject is never built.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ..codegen.c import simd_blocked
from ..errors import ScheduleError
from ..ir import expr as E
from ..ir import loops as L
from ..schedule import primitives as P
from ..schedule.config import Config
from ..schedule.schedule import LoopRef, Schedule, front
from ..schedule.templates import family, register_tiles, template

@dataclass(frozen=True)
class Dimension:
    kernel: str
    name: str
    values: tuple
    default: int = 0  # the index of the default schedule's value

    def __str__(self) -> str:
        return f"{self.kernel}.{self.name}: {len(self.values)} values {list(self.values)[:8]}"


def _with_default(values, default) -> tuple[tuple, int]:
    vals = list(dict.fromkeys(values))
    if default not in vals:
        vals.insert(0, default)
    return tuple(vals), vals.index(default)


def _cpu_gemm_dims(k, target, dtype: str, cores: int) -> list[Dimension]:
    knobs = k.knobs
    tiles = register_tiles(target, dtype)
    dims = []
    for name, values, default in (
            ("tile", tiles, (knobs["mr"], knobs["nr"])),
            ("kc", (64, 128, 192, 256, 384, 512, 768, 1024), knobs["kc"]),
            ("mc", (24, 48, 72, 96, 144, 192, 288, 384, 576), knobs["mc"]),
            ("nc", (256, 512, 1024, 2048, 4096, 8192), knobs["nc"]),
            # 0: all cores, or one on a call where that ran faster (templates/c/team.h); a fixed
            # count of all cores would time the same idle and stall on a busy machine
            ("threads", tuple(range(cores)) if cores <= 8 else (0, 1, cores // 2), knobs["threads"]),
            ("parallel_min_work", (1 << 15, 1 << 20, 1 << 22, 1 << 24, 1 << 26), knobs["parallel_min_work"])):
        vals, d = _with_default(values, default)
        dims.append(Dimension(k.name, name, vals, d))
    return dims


def _cuda_gemm_dims(k, target, dtype: str) -> list[Dimension]:
    t = template("gemm", target)
    knobs = k.knobs
    tiles = []
    for bm in (32, 64, 128):
        for bn in (32, 64, 128):
            for bk in (8, 16, 32):
                for tm in (2, 4, 8):
                    for tn in (2, 4, 8):
                        vals = {**knobs, "gemm_bm": bm, "gemm_bn": bn, "gemm_bk": bk, "gemm_tm": tm, "gemm_tn": tn}
                        try:
                            t.resolve(vals, target, dtype)
                        except ScheduleError:
                            continue
                        tiles.append((bm, bn, bk, tm, tn))
    default = tuple(knobs[f"gemm_{x}"] for x in ("bm", "bn", "bk", "tm", "tn"))
    dims = []
    for name, values, d in (("tile", tiles, default), ("gemm_stages", (1, 2), knobs["gemm_stages"]),
                            ("max_blocks", (1024, 4096, 16384, 65536), knobs["max_blocks"])):
        vals, di = _with_default(values, d)
        dims.append(Dimension(k.name, name, vals, di))
    return dims


def _plain_knob_dims(k, choices: dict) -> list[Dimension]:
    dims = []
    for name, values in choices.items():
        vals, d = _with_default(values, k.knobs[name])
        dims.append(Dimension(k.name, name, vals, d))
    return dims


LOOP_MUTATIONS = {
    "split": (0, 4, 8, 16, 32, 64, 256),  # 0: the default nest
    "parallel": ("default", "fuse2", "none"),
    "order": ("default", "swap_inner2", "reduce_outside"),
    "tile": (0, 2, 4, 8),  # tile the two innermost output loops, the inner tile unrolled
    "unroll_window": (False, True),
}


def _knob_values(k, target) -> dict:
    """Plain knob dimensions of a template (those that are not tiles)."""
    if family(target) == "c":
        if k.template == "loops":
            blocks = {"simd_block": (0, 16, 32, 64, 128, 256)} \
                if any(simd_blocked(lp) for lp in L.loops(k.body)) else {}
            return {"parallel_min_work": (0, 1 << 12, 1 << 15, 1 << 18, 1 << 21), **blocks}
        return {}
    if k.template == "grid_stride":
        return {"threads_per_block": (64, 128, 256, 512, 1024), "max_blocks": (256, 1024, 4096, 16384, 65536),
                "vectorize": (True, False)}
    if k.template == "row_reduce":
        return {"row_threads": (32, 64, 128, 256, 512, 1024), "max_blocks": (1024, 4096, 16384, 65536)}
    if k.template == "loops":
        return {"threads_per_block": (64, 128, 256, 512, 1024)}
    return {}


class SearchSpace:
    """The dimensions of every kernel of one workload, and how a point becomes a Config."""

    def __init__(self, inputs, outputs, base: Config, sizes: dict | None = None) -> None:
        self.inputs, self.outputs, self.base = tuple(inputs), tuple(outputs), base
        self.sizes = dict(sizes or {})  # {SizeVar: int} of the tuned call (the cost model's shape features)
        inline = [s["tensor"] for s in base.steps if s.get("primitive") == "compute_inline"]
        self.plain = front(self.outputs, self.inputs, base.fuse, inline)
        s = Schedule.on(self.outputs, self.inputs, self.plain, [dict(x) for x in base.steps], base)
        self.base_steps = [dict(x) for x in s.config.steps]
        self.kernels = s.module.kernels
        self.target = base.target
        dims: list[Dimension] = []
        for k in self.kernels:
            dims += self._dims_of(k)
        self.dims = tuple(dims)
        self._prune()

    @staticmethod
    def of(inputs, outputs, base: Config, sizes: dict | None = None) -> SearchSpace:
        return SearchSpace(inputs, outputs, base, sizes)

    def _dims_of(self, k) -> list[Dimension]:
        dtype = k.op.dtype
        if family(self.target) == "c" and k.template == "gemm":
            return _cpu_gemm_dims(k, self.target, dtype, self.target.cores)
        if family(self.target) == "cuda" and k.template == "gemm":
            return _cuda_gemm_dims(k, self.target, dtype)
        dims = _plain_knob_dims(k, _knob_values(k, self.target))
        if family(self.target) == "c" and k.template == "loops":
            dims += [Dimension(k.name, f"loop.{name}", values, 0) for name, values in LOOP_MUTATIONS.items()]
        return dims

    # --- points ------------------------------------------------------------------------
    def default_point(self) -> tuple:
        return tuple(d.default for d in self.dims)

    def random_point(self, rng: random.Random) -> tuple:
        return tuple(rng.randrange(len(d.values)) for d in self.dims)

    @property
    def size(self) -> int:
        n = 1
        for d in self.dims:
            n *= len(d.values)
        return n

    def values(self, point: tuple) -> dict:
        """{(kernel, name): value} of a point."""
        return {(d.kernel, d.name): d.values[i] for d, i in zip(self.dims, point)}

    def describe(self, point: tuple) -> str:
        """The point's choices that differ from the default, `kernel.name=value` (or 'default')."""
        diff = [f"{d.kernel}.{d.name}={d.values[i]}" for d, i in zip(self.dims, point) if i != d.default]
        return ", ".join(diff) or "default"

    # --- realizing a point -------------------------------------------------------------
    def config(self, point: tuple) -> Config:
        """The Config of a point, through the primitives (ScheduleError when they refuse it)."""
        return self.schedule(point).config

    def schedule(self, point: tuple) -> Schedule:
        v = self.values(point)
        steps = [dict(s) for s in self.base_steps if "kernel" not in s]
        for k in self.kernels:
            for s in self.base_steps:
                if s.get("kernel") != k.name:
                    continue
                if s["primitive"] == "template":
                    s = {**s, "knobs": self._knobs(k, s["knobs"], v)}
                steps.append(s)
        sched = Schedule.on(self.outputs, self.inputs, self.plain, steps, self.base)
        for k in self.kernels:
            if family(self.target) == "c" and k.template == "loops":
                _mutate_loops(sched, k.name, {n.split(".", 1)[1]: val for (kn, n), val in v.items()
                                              if kn == k.name and n.startswith("loop.")})
        return sched

    def _knobs(self, k, knobs: dict, v: dict) -> dict:
        out = dict(knobs)
        for (kn, name), val in v.items():
            if kn != k.name or name.startswith("loop."):
                continue
            if name == "tile" and family(self.target) == "c":
                out["mr"], out["nr"] = val
            elif name == "tile":
                for x, t in zip(("bm", "bn", "bk", "tm", "tn"), val):
                    out[f"gemm_{x}"] = t
            else:
                out[name] = val
        if family(self.target) == "c" and k.template == "gemm":  # targets -> multiples of the register tile
            mc = v.get((k.name, "mc"), out["mc"])
            nc = v.get((k.name, "nc"), out["nc"])
            out["mc"] = out["mr"] * max(1, mc // out["mr"])
            out["nc"] = out["nr"] * max(1, nc // out["nr"])
        return out

    def _prune(self) -> None:
        """Drop values the primitives refuse even alone (a template's checks, an illegal mutation)."""
        base = self.default_point()
        dims = []
        for k, d in enumerate(self.dims):
            keep = []
            for i, val in enumerate(d.values):
                if i == d.default:
                    keep.append(val)
                    continue
                point = base[:k] + (i,) + base[k + 1:]
                try:
                    self.schedule(point)
                except ScheduleError:
                    continue
                keep.append(val)
            if len(keep) > 1:
                dims.append(Dimension(d.kernel, d.name, tuple(keep), keep.index(d.values[d.default])))
        self.dims = tuple(dims)


def _op_loops(sched: Schedule, name: str) -> list:
    k = sched.kernel(name)
    names = {v.name for v in k.axis_vars}
    return [lp for lp in P.loops(k.body) if lp.var.name in names]


def _mutate_loops(sched: Schedule, name: str, choice: dict) -> None:
    """Apply a point's loop mutations to kernel `name` (its default marks already applied)."""
    if all(not v or v == "default" for v in choice.values()):
        return
    ref = lambda lp: LoopRef(name, lp.var.name if isinstance(lp, L.For) else lp)
    ops = _op_loops(sched, name)
    if not ops:
        raise ScheduleError(f"kernel {name} has no output loops to mutate")
    order = choice.get("order", "default")
    if order == "swap_inner2":
        if len(ops) < 2:
            raise ScheduleError("swap_inner2 needs two output loops")
        sched.reorder(ref(ops[-1]), ref(ops[-2]))
    elif order == "reduce_outside":
        inner = ops[-1]
        sched.decompose_reduction(ref(inner))
        lp = P.find(sched.kernel(name).body, inner.var.name)
        reductions = [x for x in L.loops(lp.body)]
        if not reductions:
            raise ScheduleError("reduce_outside: no reduction inside the innermost output loop")
        sched.reorder(*[ref(x) for x in reductions], ref(inner))
        sched.vectorize(ref(inner))
    factor = choice.get("split", 0)
    if factor:
        inner = P.find(sched.kernel(name).body, ops[-1].var.name)
        if isinstance(inner.extent, E.Const) and inner.extent.value <= factor:
            raise ScheduleError("split: the loop is not longer than the factor")
        _, inside = sched.split(ref(inner), factor)
        if P.find(sched.kernel(name).body, inside.name).kind != "vectorized":
            sched.vectorize(inside)
    tile = choice.get("tile", 0)
    if tile:
        if factor or order != "default":
            raise ScheduleError("tile: one mutation of the inner loops at a time")
        if len(ops) < 3:
            raise ScheduleError("tile needs three output loops (the outermost stays parallel)")
        _, _, xi, yi = sched.tile(ref(ops[-2]), ref(ops[-1]), tile, tile)
        sched.unroll(xi)
        try:
            sched.vectorize(yi)
        except ScheduleError:
            sched.unroll(yi)
    if choice.get("parallel") == "fuse2":
        if len(ops) < 3:
            raise ScheduleError("fuse2 needs three output loops (the innermost stays apart)")
        sched.fuse(ref(ops[0]), ref(ops[1]))
    elif choice.get("parallel") == "none":
        par = [lp for lp in P.loops(sched.kernel(name).body) if lp.kind == "parallel"]
        if not par:
            raise ScheduleError("no parallel loop to make serial")
        for lp in par:
            sched.serial(ref(lp))
    if choice.get("unroll_window"):
        k = sched.kernel(name)
        names = {v.name for v in k.axis_vars}
        short = [lp for lp in P.loops(k.body) if lp.var.name not in names and isinstance(lp.extent, E.Const) and lp.extent.value <= 8
                 and lp.kind == "serial"]
        if not short:
            raise ScheduleError("unroll_window: no short constant loop")
        for lp in short:
            sched.unroll(ref(lp))


__all__ = ["LOOP_MUTATIONS", "Dimension", "SearchSpace"]
