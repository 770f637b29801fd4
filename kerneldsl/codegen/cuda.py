"""CUDA code generation: each scheduled kernel printed as CUDA, by the template its schedule chose.

The templates (schedule/templates.py; chosen and planned in schedule/defaults.py and
schedule/gpu.py) print as:

grid_stride: the output loops are flattened into one linear index covered by a grid-stride
loop; what is inside runs on one thread per point. For `C[i, j] = sum(r, A[i, r] * B[r, j])`:

    for (int64_t kd_t = blockIdx.x * blockDim.x + threadIdx.x; kd_t < n * m; kd_t += blockDim.x * gridDim.x) {
        int64_t kd_rem = kd_t;
        const int64_t v_j = kd_rem % m; kd_rem /= m;
        const int64_t v_i = kd_rem;
        float v_acc = 0.0f;
        for (int64_t v_r = 0; v_r < k; ++v_r) v_acc = v_acc + A[..] * B[..];
        C[..] = v_acc;
    }

gemm: a shared-memory tiled GEMM with double-buffered K slices and register tiles
(templates/cuda/gemm.cu.j2, printed by codegen/cuda_gemm.py).

row_reduce: one block per row (grid-stride over rows): the threads stride over each row loop;
after a reduction a warp shuffle tree (`__shfl_down_sync`) and a shared-memory exchange across
warps (`__syncthreads`) give every thread the row's result; thread 0 does scalar stores.

loops: the loop nest as scheduled; loops bound with `bind` become block- or thread-strided
loops (`for (v = threadIdx.x; v < n; v += blockDim.x)`), correct for any launch size.

The launch of every kernel is data (`Launch`): the emulator's host entry in the .cu file and
the Python launcher of a real GPU (runtime/cuda.py) both follow it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..ir import expr as E
from ..ir.loops import For, Stmt
from ..ir.lower import Kernel, Module
from ..ir.printer import expr_str
from ..schedule.gpu import BOUND_KINDS, ITEMSIZE, VECTOR_TYPES, VectorPlan, bound_loops, perfect_nest
from ..schedule.templates import gemm_threads
from .c import CTYPE, CPrinter, KernelSummary, buffer_ctype, environment, meta_layout, source_names, used_names

LANE = "xyzw"


@dataclass(frozen=True)
class Param:
    """One kernel parameter: kind is size (meta slot), buf (buffer index), stride (meta slot) or report."""
    kind: str
    index: int
    ctype: str  # "int64_t" for sizes and strides, "const float *" for an input buffer, ...
    name: str

    @property
    def decl(self) -> str:
        """Its declaration in the kernel signature."""
        if self.ctype.endswith("*"):
            return f"{self.ctype}__restrict__ {self.name}"
        return f"const {self.ctype} {self.name}"


@dataclass(frozen=True)
class Launch:
    """How the host launches one kernel: `blocks(work)` blocks of `threads` threads, `work` > 0.

    Each kernel comes in two index variants, `variant(32)` and `variant(64)`: the int32 one is
    launched when `work`, every `index_extents` value and the grid's thread count fit in int32.
    """
    kernel: str  # the kernel's name; the __global__ functions are its variants
    schedule: str  # grid_stride | row_reduce | gemm | bound (loops the user bound with bind())
    work: E.Expr  # output points (grid_stride), rows (row_reduce), tiles (gemm), blocks (bound); over sizes
    threads: int
    params: tuple  # of Param
    index_extents: tuple = ()  # other values the kernel's index type must hold (GEMM's M, N, K)
    lanes: int = 1  # elements per vector access of a grid-stride kernel (its vector path)
    runs_if: E.Expr | None = None  # the kernel's Kernel.runs_if: not launched when it is false
    max_blocks: int = 4096  # the kernel's knob: blocks launched at most (grid-stride loops cover the rest)

    def blocks(self, work: int) -> int:
        # grid_stride: a thread per vector step; row_reduce, gemm, bound: a block per unit
        per = self.threads * self.lanes if self.schedule == "grid_stride" else 1
        return max(1, min(-(-work // per), self.max_blocks))

    def variant(self, bits: int) -> str:
        return f"{self.kernel}_i{bits}"


# per-SM limits used for the occupancy estimate: (threads, blocks, shared bytes, 32-bit registers)
SM_LIMITS = {70: (2048, 32, 96 << 10, 65536), 75: (1024, 16, 64 << 10, 65536), 80: (2048, 32, 164 << 10, 65536),
             86: (1536, 16, 100 << 10, 65536), 89: (1536, 24, 100 << 10, 65536), 90: (2048, 32, 228 << 10, 65536),
             100: (2048, 32, 228 << 10, 65536), 120: (1536, 32, 100 << 10, 65536)}


def blocks_per_sm(arch: str, threads: int, registers: int, shared: int) -> int:
    """Resident blocks per SM for a kernel: the least of what threads, registers (allocated per
    warp in units of 256) and shared memory (1 KiB reserved per block) allow."""
    digits = arch.removeprefix("sm_").rstrip("af")  # sm_90a, sm_100f: the same SM
    cc = int(digits) if digits.isdigit() else 90
    max_threads, max_blocks, smem, regs = SM_LIMITS[max([c for c in SM_LIMITS if c <= cc] or [70])]
    warps = -(-threads // 32)
    per_warp = -(-max(registers, 1) * 32 // 256) * 256
    by_regs = (regs // per_warp) // warps
    by_shared = smem // (shared + 1024) if shared else max_blocks
    return max(0, min(max_threads // threads, max_blocks, by_regs, by_shared))


class KernelReport(KernelSummary):
    """One kernel of a CUDA build (`f.kernels`): the scheduled kernel (its attributes pass
    through), its launch, ptxas's resource report and the occupancy it allows, with warnings
    for spills and for a kernel that cannot keep one block resident per SM."""

    def __init__(self, kernel: Kernel, launch: Launch, function):
        super().__init__(kernel, function.config.target)
        self.launch, self._f = launch, function

    @property
    def resources(self) -> dict:
        return self._f.resources[self.launch.kernel]

    @property
    def arch(self) -> str:
        return self._f.arch

    @property
    def blocks_per_sm(self) -> int:
        r = self.resources
        return blocks_per_sm(self.arch, self.launch.threads, r.get("registers", 0), r.get("shared", 0))

    @property
    def warnings(self) -> list[str]:
        r, out = self.resources, []
        if r.get("spill_stores") or r.get("spill_loads"):
            out.append(f"spills registers ({r['spill_stores']} B stored, {r['spill_loads']} B loaded)")
        if self.blocks_per_sm < 1:
            out.append(f"occupancy below one block per SM on {self.arch} ({self.launch.threads} threads, "
                       f"{r.get('registers', 0)} registers, {r.get('shared', 0)} B shared)")
        return out

    def threads(self) -> str:
        L = self.launch
        return f"launch {L.kernel}: {L.threads} threads per block, at most {L.max_blocks} blocks"

    def summary(self) -> str:
        head = super().summary()
        try:
            r = self.resources
        except Exception as e:  # noqa: BLE001 - no nvcc: the report says so instead of failing
            return f"{head}; no resource report ({e})"
        text = (f"{head}; {r.get('registers', 0)} registers (int64 indices: {r.get('int64', {}).get('registers')}), "
                f"{r.get('spill_stores', 0)} B spill stores, "
                f"{r.get('shared', 0)} B shared; {self.blocks_per_sm} block(s) per SM on {self.arch}")
        return text + "".join(f"\n  WARNING: {w}" for w in self.warnings)


@dataclass(frozen=True)
class CudaSource:
    text: str
    launches: tuple


class CudaPrinter(CPrinter):
    """C printer with the CUDA intrinsic spellings; loops are plain (the schedule is explicit)."""

    target = "cuda"

    def stmt(self, s: Stmt, indent: str) -> list[str]:
        if isinstance(s, For):
            v, ext = self.name(s.var), self.expr(s.extent)
            if s.kind in BOUND_KINDS:  # bind(): a block/thread-strided loop, correct for any launch size
                idx, dim = _BOUND[s.kind]
                head = f"for (int64_t {v} = {idx}; {v} < {ext}; {v} += {dim}) {{"
            else:
                head = f"for (int64_t {v} = 0; {v} < {ext}; ++{v}) {{"
            return [indent + head, *self.stmt(s.body, indent + "    "), f"{indent}}}"]
        return super().stmt(s, indent)


_BOUND = {f"{level}_{a}": (f"{level[0]}Idx.{a}".replace("bIdx", "blockIdx").replace("tIdx", "threadIdx"),
                           f"{'gridDim' if level == 'block' else 'blockDim'}.{a}")
          for level in ("block", "thread") for a in "xyz"}


def _row_lines(p: CudaPrinter, plan, indent: str) -> tuple[str, set]:
    """The body of one row: every thread of the block takes part in every step."""
    lines, partials = [], set()
    block_reduce = environment().get_template("cuda/block_reduce.cu.j2")
    for step in plan:
        kind, st = step.kind, step.stmt
        if kind == "stmt":
            lines += p.stmt(st, indent)
        elif kind == "store":
            lines += [f"{indent}if (threadIdx.x == 0) {{", *p.stmt(st, indent + "    "), f"{indent}}}"]
        else:  # reduce / parallel: the threads of the block stride over the row
            v = p.name(st.var)
            lines.append(f"{indent}for (int64_t {v} = threadIdx.x; {v} < {p.expr(st.extent)}; {v} += blockDim.x) {{")
            lines += p.stmt(st.body, indent + "    ") + [f"{indent}}}"]
            if kind == "reduce":
                acc, comb, init = step.acc, step.combiner, step.init
                partials.add(acc.dtype)
                text = block_reduce.render(acc=p.name(acc), combiner=comb, init=p.expr(init),
                                           partial=f"kd_partial_{acc.dtype}")
                lines += [indent + ln if ln else ln for ln in text.rstrip("\n").split("\n")]
    return "\n".join(lines), partials


def _decompose(p: CudaPrinter, linear: str, loops, lanes: int = 1) -> list[str]:
    """Lines binding each output loop variable from the linear index (last axis fastest).

    The division and modulo are in the kernel's index type `kd_idx` (int32 when the launch fits);
    the loop variables themselves are int64, as everywhere else in the printed body."""
    if not loops:
        return []
    lines = [f"kd_idx kd_rem = {linear};"] if len(loops) > 1 else []
    for k in range(len(loops) - 1, -1, -1):
        v = p.name(loops[k].var)
        scale = f" * {lanes}" if lanes > 1 and k == len(loops) - 1 else ""  # a vector step: lanes elements
        if k == 0:
            lines.append(f"const int64_t {v} = (int64_t){'kd_rem' if len(loops) > 1 else linear}{scale};")
        else:
            ext = f"(kd_idx)({p.expr(loops[k].extent)})" + (f" / {lanes}" if scale else "")
            lines.append(f"const int64_t {v} = (int64_t)(kd_rem % ({ext})){scale};")
            lines.append(f"kd_rem /= {ext};")
    return lines


def _vector_lines(p: CudaPrinter, plan: VectorPlan, j: E.Var) -> tuple[str, list[str]]:
    """(the run-time condition for the vector path, the body of one vector step at v_j)."""
    lanes = plan.lanes
    bufs = [plan.store.buffer, *dict.fromkeys(ld.tensor for ld in plan.loads)]
    cond = []
    for b in bufs:  # aligned base, unit stride along j, and every row start a whole number of vectors
        size = ITEMSIZE[b.dtype] * lanes
        cond.append(f"((uintptr_t){p.name(b)} % {size} == 0)")
        st = p.strides[b]
        cond.append(f"{st[-1]} == 1")
        cond += [f"{x} % {lanes} == 0" for x in st[:-1]]
    lines, lane_vars = [], {}
    for n, ld in enumerate(plan.loads):
        vt = VECTOR_TYPES[ld.dtype, lanes]
        lines.append(f"const {vt} kd_v{n} = kd_vload<{vt}>(&{p.expr(ld)});")
        for lane in range(lanes):
            var = E.Var(f"kd_v{n}_{LANE[lane]}", ld.dtype)
            lane_vars[ld, lane] = var
            p.var_names[var] = f"kd_v{n}.{LANE[lane]}"
    values = []
    for lane in range(lanes):
        v = E.transform(plan.store.value, lambda e, lane=lane: lane_vars.get((e, lane)))
        if lane:
            v = E.substitute(v, {j: j + E.Const(lane, "int64")})
        values.append(f"kd_y{lane}")
        lines.append(f"const {CTYPE[plan.store.buffer.dtype]} kd_y{lane} = {p.expr(v)};")
    vt = VECTOR_TYPES[plan.store.buffer.dtype, lanes]
    st = plan.store
    lines.append(f"kd_vstore(&{p.name(st.buffer)}[{p.index(st.buffer, st.indices)}], "
                 f"make_{vt}({', '.join(values)}));")
    return " && ".join(cond), lines


def _product(exprs) -> E.Expr:
    from ..ir.simplify import simplify
    w = E.Const(1, "int64")
    for x in exprs:
        w = w * x
    return simplify(w)


def render(module: Module, target, version: str) -> CudaSource:
    """The .cu text of a scheduled module (kernels, and the emulator's host entry) and its launches."""
    size_pos, stride_pos = meta_layout(module)
    buf_pos = {b: k for k, b in enumerate(module.buffers)}
    names, strides = source_names(module)

    def params(used) -> tuple:
        out = [Param("size", size_pos[s], "int64_t", names[s]) for s in module.sizes if s in used]
        for b in module.buffers:
            if b not in used:
                continue
            const = "const " if b.role == "input" else ""
            out.append(Param("buf", buf_pos[b], f"{const}{buffer_ctype(b)} *", names[b]))
            out += [Param("stride", stride_pos[b][d], "int64_t", st) for d, st in enumerate(strides[b])]
        out.append(Param("report", 0, "int64_t *", "kd_report"))
        return tuple(out)

    kernels, launches = [], []
    for k in module.kernels:
        kn, extents = k.knobs, ()
        used = used_names([k.body])
        local = dict(names)
        for v in sorted((v for v in used if isinstance(v, E.Var)), key=lambda v: v.name):
            local[v] = f"v_{v.name}"
        p = CudaPrinter(local, strides)
        fname = f"kd_kernel_{k.name}"
        comment = f"{k.op.name}[{', '.join(a.name for a in k.op.axes)}] = {expr_str(k.op.body)}"
        info = {"fname": fname, "comment": comment.replace("*/", "* /")}
        loops, inner = perfect_nest(k.body)
        if k.template == "gemm":  # a contraction: the shared-memory tiled GEMM template
            from .cuda_gemm import gemm_extents, render_gemm, tiles_work
            gp = k.plan
            work = tiles_work(gp, kn)
            extents = gemm_extents(gp)
            gemm_printer = CudaPrinter({**local, gp.acc: "kd_acc"}, strides)
            info.update(schedule="gemm", threads=gemm_threads(kn), work=p.expr(work),
                        body=render_gemm(gemm_printer, k, gp, kn))
        elif k.template == "loops":  # the user's bind(): blocks over the first block loop, threads over the first thread loop
            bound = bound_loops(k.body)
            blk = next((lp for lp in bound if lp.kind.startswith("block")), None)
            thr = next((lp for lp in bound if lp.kind.startswith("thread")), None)
            sizes_only = blk is not None and not any(isinstance(n, E.Var) for n in E.walk(blk.extent))
            work = blk.extent if sizes_only else E.Const(1, "int64")
            threads = kn["threads_per_block"]
            if thr is not None and isinstance(thr.extent, E.Const) and 1 <= thr.extent.value <= 1024:
                threads = int(thr.extent.value)
            elif thr is None:
                threads = 32
            info.update(schedule="bound", threads=threads, work=p.expr(work),
                        body="\n".join(p.stmt(k.body, " " * 8)))
        elif k.template == "row_reduce":
            work = _product(lp.extent for lp in loops)
            body, partials = _row_lines(p, k.plan.steps, " " * 8)
            info.update(schedule="row_reduce", threads=kn["row_threads"], work=p.expr(work),
                        decompose=_decompose(p, "kd_row", loops), body=body,
                        partials=[{"ctype": CTYPE[d], "name": f"kd_partial_{d}"} for d in sorted(partials)])
        elif k.template == "grid_stride":
            work = _product(lp.extent for lp in loops)
            info.update(schedule="grid_stride", threads=kn["threads_per_block"], work=p.expr(work),
                        decompose=_decompose(p, "kd_t", loops), body="\n".join(p.stmt(inner, " " * 8)))
            vp = k.plan.vector
            if vp is not None:
                cond, vlines = _vector_lines(p, vp, loops[-1].var)
                info.update(lanes=vp.lanes, vector_cond=f"{p.expr(loops[-1].extent)} % {vp.lanes} == 0 && {cond}",
                            vector_decompose=_decompose(p, "kd_t", loops, vp.lanes), vector_body=vlines)
        else:
            raise ValueError(f"kernel {k.name} has no CUDA template (got {k.template!r})")
        ps = params(used)
        info["params"] = [x.decl for x in ps]
        info["args"] = [x.name for x in ps]
        info["arg_types"] = [x.ctype for x in ps]
        kernels.append(info)
        launches.append(Launch(fname, info["schedule"], work, info["threads"], ps, extents, info.get("lanes", 1),
                               k.runs_if, kn["max_blocks"]))

    prelude = environment().get_template("cuda/prelude.cuh").render()
    text = environment().get_template("cuda/module.cu.j2").render(version=version, prelude=prelude, kernels=kernels)
    return CudaSource(text, tuple(launches))


__all__ = ["CudaPrinter", "CudaSource", "KernelReport", "Launch", "Param", "blocks_per_sm", "render"]
