"""CUDA code generation: the default GPU schedule of each lowered kernel, printed as CUDA.

Two schedules, chosen per kernel from the shape of its loop nest:

grid_stride: the output loops are flattened into one linear index covered by a
grid-stride loop; reductions stay serial inside each thread. For
`C[i, j] = sum(r, A[i, r] * B[r, j])`:

    for (int64_t kd_t = blockIdx.x * blockDim.x + threadIdx.x; kd_t < n * m; kd_t += blockDim.x * gridDim.x) {
        int64_t kd_rem = kd_t;
        const int64_t v_j = kd_rem % m; kd_rem /= m;
        const int64_t v_i = kd_rem;
        float v_acc = 0.0f;
        for (int64_t v_r = 0; v_r < k; ++v_r) v_acc = v_acc + A[..] * B[..];
        C[..] = v_acc;
    }

row_reduce: a kernel whose body is one sum/max/min over the last, contiguous axis
of its inputs (softmax's row max and row sum, a mean, a norm) gets one block per
output row (grid-stride over rows): the threads stride over the row, then a warp
shuffle tree (`__shfl_down_sync`) and a shared-memory exchange across warps
(`__syncthreads`) combine the partial results, and thread 0 stores.

The launch of every kernel is data (`Launch`): the emulator's host entry in the
.cu file and the Python launcher of a real GPU (runtime/cuda.py) both follow it.
Every numeric choice is a knob of `KNOBS`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..ir import expr as E
from ..ir.loops import Declare, For, Seq, Store, Stmt
from ..ir.lower import Kernel, Module
from ..ir.printer import expr_str
from .c import CTYPE, TEMPLATES, CPrinter, _used, environment, meta_layout

KNOBS = {
    "threads_per_block": 256,  # grid-stride kernels; a multiple of 32 in [32, 1024]
    "row_threads": 256,  # row-reduction kernels (threads cooperating on one row); multiple of 32
    "max_blocks": 4096,  # grid-stride loops cover the rest
    "row_reduce": True,  # False: every kernel takes the grid-stride schedule
}
KNOB_RANGES = {"threads_per_block": (32, 1024), "row_threads": (32, 1024), "max_blocks": (1, 1 << 20)}
ROW_COMBINERS = ("sum", "max", "min")
ROW_DTYPES = ("float32", "float64", "int32", "int64")


def knobs(overrides: dict | None = None) -> dict:
    """KNOBS with `overrides` applied and checked."""
    k = dict(KNOBS)
    for name, value in (overrides or {}).items():
        if name not in KNOBS:
            raise ValueError(f"unknown CUDA knob {name!r}; knobs are {', '.join(KNOBS)}")
        k[name] = value
    for name, (lo, hi) in KNOB_RANGES.items():
        v = k[name]
        if not isinstance(v, int) or not lo <= v <= hi:
            raise ValueError(f"CUDA knob {name} must be an integer in [{lo}, {hi}], got {v!r}")
    for name in ("threads_per_block", "row_threads"):
        if k[name] % 32:
            raise ValueError(f"CUDA knob {name} must be a multiple of the warp size 32, got {k[name]}")
    return k


@dataclass(frozen=True)
class Param:
    """One kernel parameter: kind is size (meta slot), buf (buffer index), stride (meta slot) or report."""
    kind: str
    index: int
    decl: str  # its C declaration in the kernel signature
    host: str  # the host expression passed for it by the emulator entry


@dataclass(frozen=True)
class Launch:
    """How the host launches one kernel: `blocks(work)` blocks of `threads` threads, `work` > 0."""
    kernel: str  # the __global__ function's name
    schedule: str  # grid_stride | row_reduce | single
    work: E.Expr  # output points (grid_stride), rows (row_reduce), 1 (single); over sizes
    threads: int
    params: tuple  # of Param

    def blocks(self, work: int, max_blocks: int) -> int:
        per = self.threads if self.schedule == "grid_stride" else 1
        return max(1, min(-(-work // per), max_blocks))


@dataclass(frozen=True)
class CudaSource:
    text: str
    launches: tuple
    knobs: dict


class CudaPrinter(CPrinter):
    """C printer with the CUDA intrinsic spellings; loops are plain (the schedule is explicit)."""

    target = "cuda"

    def stmt(self, s: Stmt, indent: str) -> list[str]:
        if isinstance(s, For):
            v = self.name(s.var)
            return [f"{indent}for (int64_t {v} = 0; {v} < {self.expr(s.extent)}; ++{v}) {{",
                    *self.stmt(s.body, indent + "    "), f"{indent}}}"]
        return super().stmt(s, indent)


def _output_loops(k: Kernel):
    """The loops over the output axes and the statement inside them, or None if not a plain nest."""
    loops, s = [], k.body
    for _ in k.op.axes:
        if not isinstance(s, For):
            return None
        loops.append(s)
        s = s.body
    return loops, s


def _row_reduction(k: Kernel, inner: Stmt):
    """(accumulator Declare, reduction For, Store, combiner) when `inner` is a row reduction."""
    if not (isinstance(inner, Seq) and len(inner.stmts) == 3):
        return None
    decl, loop, store = inner.stmts
    if not (isinstance(decl, Declare) and isinstance(loop, For) and isinstance(store, Store)):
        return None
    reduces = [n for n in E.walk(k.op.body) if isinstance(n, E.Reduce)]
    if len(reduces) != 1 or len(reduces[0].axes) != 1:
        return None
    red = reduces[0]
    if red.combiner not in ROW_COMBINERS or red.dtype not in ROW_DTYPES or decl.var.dtype != red.dtype:
        return None
    # A row: the reduction variable indexes only the last (contiguous) dimension of what it reads.
    r = loop.var
    for n in _walk_stmt(loop.body):
        if isinstance(n, E.Load):
            for ix in n.indices[:-1]:
                if r in set(E.walk(ix)):
                    return None
    return decl, loop, store, red.combiner


def _walk_stmt(s: Stmt):
    from ..ir.loops import Assign, IfThenElse
    if isinstance(s, Seq):
        for x in s.stmts:
            yield from _walk_stmt(x)
    elif isinstance(s, For):
        yield from E.walk(s.extent)
        yield from _walk_stmt(s.body)
    elif isinstance(s, Store):
        for i in s.indices:
            yield from E.walk(i)
        yield from E.walk(s.value)
    elif isinstance(s, (Declare, Assign)):
        yield from E.walk(s.init if isinstance(s, Declare) else s.value)
    elif isinstance(s, IfThenElse):
        yield from E.walk(s.cond)
        yield from _walk_stmt(s.then)
        if s.otherwise is not None:
            yield from _walk_stmt(s.otherwise)


def _decompose(p: CudaPrinter, linear: str, loops) -> list[str]:
    """Lines binding each output loop variable from the linear index (last axis fastest)."""
    if not loops:
        return []
    lines = [f"int64_t kd_rem = {linear};"] if len(loops) > 1 else []
    for k in range(len(loops) - 1, -1, -1):
        v = p.name(loops[k].var)
        if k == 0:
            lines.append(f"const int64_t {v} = {'kd_rem' if len(loops) > 1 else linear};")
        else:
            ext = p.expr(loops[k].extent)
            lines.append(f"const int64_t {v} = kd_rem % {ext};")
            lines.append(f"kd_rem /= {ext};")
    return lines


def _product(exprs) -> E.Expr:
    from ..ir.simplify import simplify
    w = E.Const(1, "int64")
    for x in exprs:
        w = w * x
    return simplify(w)


def render(module: Module, overrides: dict | None = None, version: str = "") -> CudaSource:
    """The .cu text of a module (kernels, and the emulator's host entry) and its launches."""
    kn = knobs(overrides)
    size_pos, stride_pos = meta_layout(module)
    buf_pos = {b: k for k, b in enumerate(module.buffers)}
    names: dict = {s: f"s_{s.name}" for s in module.sizes}
    strides: dict = {}
    for b in module.buffers:
        names[b] = f"b_{b.name}"
        strides[b] = tuple(f"st_{b.name}_{d}" for d in range(b.ndim))

    def params(used) -> tuple:
        out = [Param("size", size_pos[s], f"const int64_t {names[s]}", f"kd_meta[{size_pos[s]}]")
               for s in module.sizes if s in used]
        for b in module.buffers:
            if b not in used:
                continue
            const = "const " if b.role == "input" else ""
            ctype = CTYPE[b.dtype]
            out.append(Param("buf", buf_pos[b], f"{const}{ctype} *__restrict__ {names[b]}",
                             f"({const}{ctype} *)kd_bufs[{buf_pos[b]}]"))
            out += [Param("stride", stride_pos[b][d], f"const int64_t {st}", f"kd_meta[{stride_pos[b][d]}]")
                    for d, st in enumerate(strides[b])]
        out.append(Param("report", 0, "int64_t *__restrict__ kd_report", "kd_report"))
        return tuple(out)

    kernels, launches = [], []
    for k in module.kernels:
        used = _used([k.body])
        local = dict(names)
        for v in sorted((v for v in used if isinstance(v, E.Var)), key=lambda v: v.name):
            local[v] = f"v_{v.name}"
        p = CudaPrinter(local, strides)
        fname = f"kd_kernel_{k.name}"
        comment = f"{k.op.name}[{', '.join(a.name for a in k.op.axes)}] = {expr_str(k.op.body)}"
        info = {"fname": fname, "comment": comment.replace("*/", "* /")}
        peeled = _output_loops(k)
        row = _row_reduction(k, peeled[1]) if peeled is not None and kn["row_reduce"] else None
        if row is not None:
            loops, _ = peeled
            decl, loop, store, combiner = row
            r = p.name(loop.var)
            work = _product(lp.extent for lp in loops)
            info.update(schedule="row_reduce", threads=kn["row_threads"], work=p.expr(work),
                        decompose=_decompose(p, "kd_row", loops), ctype=CTYPE[decl.var.dtype],
                        acc=p.name(decl.var), init=p.expr(decl.init), combiner=combiner,
                        loop_head=f"for (int64_t {r} = threadIdx.x; {r} < {p.expr(loop.extent)}; "
                                  f"{r} += blockDim.x) {{",
                        step="\n".join(p.stmt(loop.body, " " * 12)),
                        store="\n".join(p.stmt(store, " " * 16)))
        elif peeled is not None:
            loops, inner = peeled
            work = _product(lp.extent for lp in loops)
            info.update(schedule="grid_stride", threads=kn["threads_per_block"], work=p.expr(work),
                        decompose=_decompose(p, "kd_t", loops), body="\n".join(p.stmt(inner, " " * 8)))
        else:  # an unexpected loop nest: one thread runs it as is (correct, slow)
            work = E.Const(1, "int64")
            info.update(schedule="single", threads=32, work="1",
                        body="\n".join(p.stmt(k.body, " " * 8)))
        ps = params(used)
        info["params"] = [x.decl for x in ps]
        kernels.append(info)
        launches.append(Launch(fname, info["schedule"], work, info["threads"], ps))

    hp = CudaPrinter(names, strides)
    checks = [{"cond": hp.expr(c.cond), "code": c.code} for c in module.checks]
    host = [{"fname": L.kernel, "work": hp.expr(L.work), "threads": L.threads,
             "per_block": L.threads if L.schedule == "grid_stride" else 1,
             "args": [x.host for x in L.params]} for L in launches]
    prelude = (TEMPLATES / "cuda" / "prelude.cuh").read_text()
    text = environment().get_template("cuda/module.cu.j2").render(
        version=version, prelude=prelude, kernels=kernels, checks=checks, launches=host,
        sizes=[{"name": names[s], "pos": size_pos[s]} for s in module.sizes], max_blocks=kn["max_blocks"])
    return CudaSource(text, tuple(launches), kn)


__all__ = ["KNOBS", "CudaPrinter", "CudaSource", "Launch", "Param", "knobs", "render"]
