"""The Python side of the GPU GEMM template (templates/cuda/gemm.cu.j2): the index arithmetic.

A kernel whose op `schedule.contraction.match` recognises (matmul, batched matmul, dense with
an elementwise epilogue, implicit-GEMM convolution) is rendered as a shared-memory tiled
GEMM. The template lays out tiles, stages and barriers; this file prints what depends on
the contraction: the batch / row / column / k variables decoded from flat GEMM indices, the
operands' values at a (row, k) and (k, column) point, and the epilogue store.

A group of axes flattened into one GEMM dimension (conv2d's columns (n, oh, ow)) is decoded
from its flat index, row-major, last axis fastest:

    kd_idx kd_f0 = kd_gn;
    const int64_t v_ow = kd_f0 % (kd_idx)(s_W - 2); kd_f0 /= (kd_idx)(s_W - 2);
    const int64_t v_oh = kd_f0 % (kd_idx)(s_H - 2); kd_f0 /= (kd_idx)(s_H - 2);
    const int64_t v_n = kd_f0;

Flat indices and their division are in the kernel's index type kd_idx (int32 when the launch
fits, else int64); the decoded variables and the operands' index arithmetic are int64 (as the
C printer's); the tile-local offsets are int.
"""

from __future__ import annotations

from ..ir import expr as E
from ..schedule.templates import gemm_threads

def tiles_work(gp, k: dict) -> E.Expr:
    """The launch's work: batch x row tiles x column tiles (one block each, block-strided)."""
    from ..ir.simplify import simplify
    c = gp.contraction

    def total(axes):
        w = E.Const(1, "int64")
        for a in axes:
            w = w * a.extent
        return w
    bm, bn = E.Const(k["gemm_bm"], "int64"), E.Const(k["gemm_bn"], "int64")
    m_tiles = (total(c.m) + (k["gemm_bm"] - 1)) // bm
    n_tiles = (total(c.n) + (k["gemm_bn"] - 1)) // bn
    return simplify(total(c.batch) * m_tiles * n_tiles)


def gemm_extents(gp) -> tuple:
    """The GEMM's M, N, K and batch totals: values its index type must hold."""
    from ..ir.simplify import simplify
    c = gp.contraction

    def total(axes):
        w = E.Const(1, "int64")
        for a in axes:
            w = w * a.extent
        return simplify(w)
    return tuple(total(axes) for axes in (c.m, c.n, c.k, c.batch))


def _decode(p, gp, axes, flat: str, tag: str) -> list[str]:
    """Declare the group's loop variables from a flat index (row-major, last axis fastest); the
    division and modulo are in the kernel's index type kd_idx, the variables int64."""
    names = [p.name(gp.vars[a]) for a in axes]
    if not axes:
        return []
    if len(axes) == 1:
        return [f"const int64_t {names[0]} = {flat};", f"(void){names[0]};"]
    f = f"kd_f{tag}"
    out = [f"kd_idx {f} = {flat};"]
    for a, v in zip(reversed(axes[1:]), reversed(names[1:])):
        ext = f"(kd_idx)({p.expr(a.extent)})"
        out += [f"const int64_t {v} = {f} % {ext};", f"(void){v};", f"{f} /= {ext};"]
    return [*out, f"const int64_t {names[0]} = {f};", f"(void){names[0]};"]


def render_gemm(p, kernel, gp, k: dict) -> str:
    """The kernel body (inside the __global__ function) from templates/cuda/gemm.cu.j2."""
    from .c import CTYPE, environment
    c = gp.contraction
    dtype = kernel.op.dtype
    bm, bn, bk = k["gemm_bm"], k["gemm_bn"], k["gemm_bk"]
    nthreads = gemm_threads(k)

    def total(axes) -> str:
        return " * ".join(f"({p.expr(a.extent)})" for a in axes) if axes else "INT64_C(1)"
    store = "\n".join(p.stmt(gp.store, ""))
    return environment().get_template("cuda/gemm.cu.j2").render(
        T=CTYPE[dtype], bm=bm, bn=bn, bk=bk, tm=k["gemm_tm"], tn=k["gemm_tn"], stages=k["gemm_stages"],
        threads=nthreads, la=bm * bk // nthreads, lb=bn * bk // nthreads,
        a_ld=bm + 1, a_stage=bk * (bm + 1), b_stage=bk * bn,  # A's rows padded: fewer bank conflicts
        nb=total(c.batch), m=total(c.m), n=total(c.n), kk=total(c.k),
        batch_decode="\n".join(_decode(p, gp, c.batch, "kd_bi", "b")),
        a_decode="\n".join(_decode(p, gp, c.m, "kd_gm", "m") + _decode(p, gp, c.k, "kd_gk", "k")),
        b_decode="\n".join(_decode(p, gp, c.n, "kd_gn", "n") + _decode(p, gp, c.k, "kd_gk", "k")),
        a_value=p.expr(gp.a), b_value=p.expr(gp.b),
        m_decode="\n".join(_decode(p, gp, c.m, "kd_gm", "m")),
        n_decode="\n".join(_decode(p, gp, c.n, "kd_gn", "n")), store=store)
