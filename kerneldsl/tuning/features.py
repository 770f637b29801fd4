"""What the cost model sees of a candidate: its choices and the loop features of its schedule.

As in TVM's cost model, the features describe the loop nest that runs rather than the raw
point: per kernel, the loops by kind (parallel, vectorized, unrolled), the extents of the
vectorized and parallel loops (where constant), the nest depth, and for the GEMM templates the
register tile, the packed panels' bytes against the caches, the threads, and how the tile and K
block fit the tuned call's M, N and K (padding, K blocks, the threads' imbalance). The raw choices
(log2 of numbers, the index of a named choice) come first, so that nothing is lost.
"""

from __future__ import annotations

import math

from ..ir import expr as E
from ..ir import loops as L
from ..schedule.templates import FLOAT_BYTES

L1_BYTES, L2_BYTES = 32 * 1024, 512 * 1024  # the caches a CPU GEMM's panels aim at (typical x86 cores)


def _num(v) -> list[float]:
    if isinstance(v, bool):
        return [float(v)]
    if isinstance(v, (int, float)):
        return [math.log2(1 + max(v, 0))]
    if isinstance(v, tuple):
        return [x for part in v for x in _num(part)]
    return []  # a named choice: its index (written before it) says it


def point_features(space, point: tuple) -> list[float]:
    out: list[float] = []
    for d, i in zip(space.dims, point):
        val = d.values[i]
        out += [float(i)] + _num(val)
    return out


def _extent(lp) -> float:
    return math.log2(1 + lp.extent.value) if isinstance(lp.extent, E.Const) else -1.0


PER_KERNEL = 19  # features of one kernel


def _gemm_shape_features(k, sizes: dict, cores: int) -> list[float]:
    """How the register tile and K block fit the call's M, N and K: the padded share of the last
    row and column tile, the K blocks, and the threads' imbalance over their slices (the
    template's split: whichever of M and N has more tiles)."""
    from ..ir.int_eval import eval_int
    c, kn = k.plan.contraction, k.knobs
    try:
        m, n, kk = (math.prod(eval_int(a.extent, sizes) for a in axes) for axes in (c.m, c.n, c.k))
    except Exception:  # noqa: BLE001 - a size the call does not bind: nothing known
        return [0.0] * 4
    if min(m, n, kk) <= 0:
        return [0.0] * 4
    mu, nu = -(-m // kn["mr"]), -(-n // kn["nr"])
    units = max(mu, nu)
    parts = max(1, min(kn["threads"] or cores, units))
    return [(-m % kn["mr"]) / m, (-n % kn["nr"]) / n, float(-(-kk // kn["kc"])), -(-units // parts) * parts / units]


def kernel_features(k, sizes: dict | None = None, cores: int = 1) -> list[float]:
    lps = L.loops(k.body)
    kinds = [lp.kind for lp in lps]
    vec = [lp for lp in lps if lp.kind == "vectorized"]
    par = [lp for lp in lps if lp.kind == "parallel"]
    depth = 0
    for lp in lps:  # the deepest chain of loops
        depth = max(depth, 1 + sum(1 for x in lps if lp in L.loops(x.body)))
    f = [float(len(lps)), float(kinds.count("parallel")), float(kinds.count("vectorized")),
         float(kinds.count("unrolled")), float(depth),
         max((_extent(lp) for lp in vec), default=0.0), max((_extent(lp) for lp in par), default=0.0),
         float(bool(vec) and vec[0] is lps[-1])]
    kn = k.knobs or {}
    if k.template == "gemm" and "mr" in kn:
        size = FLOAT_BYTES.get(k.op.dtype, 4)
        f += [kn["mr"], kn["nr"], kn["mr"] * kn["nr"], kn["kc"] * kn["nr"] * size / L1_BYTES,
              kn["mc"] * kn["kc"] * size / L2_BYTES, math.log2(1 + kn["kc"] * kn["nc"] * size), kn["threads"]]
        f += _gemm_shape_features(k, sizes or {}, cores)
    elif k.template == "gemm":
        f += [kn.get("gemm_bm", 0) * kn.get("gemm_bn", 0), kn.get("gemm_tm", 0) * kn.get("gemm_tn", 0),
              kn.get("gemm_bk", 0), kn.get("gemm_stages", 0), 0, 0, 0] + [0.0] * 4
    else:
        f += [0.0] * 11
    return f


def features(space, point: tuple) -> list[float]:
    """The feature vector of a point (a fixed length for one space)."""
    out = point_features(space, point)
    try:
        sched = space.schedule(point)
    except Exception:  # noqa: BLE001 - an illegal point is never measured; zeros keep the length
        return out + [0.0] * (PER_KERNEL * len(space.kernels))
    for k in sched.module.kernels:
        out += kernel_features(k, space.sizes, space.target.cores)
    missing = PER_KERNEL * len(space.kernels) - (len(out) - len(point_features(space, point)))
    return out + [0.0] * max(missing, 0)


__all__ = ["features", "kernel_features", "point_features"]
