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

gemm: a kernel that `schedule.contraction.match` recognises (matmul, batched, dense with an
epilogue, implicit-GEMM conv) is a shared-memory tiled GEMM with double-buffered K slices
and register tiles: templates/cuda/gemm.cu.j2, printed by codegen/cuda_gemm.py.

row_reduce: a kernel whose per-row body is accumulator declarations, reductions
(sum/max/min of one accumulator) over the last, contiguous axis, data-parallel loops
over the row (a fused epilogue such as softmax's exp(x - max)) and per-row stores gets
one block per row (grid-stride over rows): the threads stride over each row loop; after
a reduction a warp shuffle tree (`__shfl_down_sync`) and a shared-memory exchange across
warps (`__syncthreads`) give every thread the row's result; thread 0 does scalar stores.

bound: loops the user bound with `bind` become block- or thread-strided loops
(`for (v = threadIdx.x; v < n; v += blockDim.x)`), correct for any launch size.

The launch of every kernel is data (`Launch`): the emulator's host entry in the
.cu file and the Python launcher of a real GPU (runtime/cuda.py) both follow it.
Every numeric choice is a knob of `KNOBS`.
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass

from ..ir import expr as E
from ..ir.loops import Declare, For, Seq, Stmt, Store
from ..ir.lower import Kernel, Module
from ..ir.printer import expr_str
from .c import CTYPE, CPrinter, _used, buffer_ctype, environment, meta_layout, source_names
from .cuda_gemm import GEMM_KNOB_RANGES

KNOBS = {
    "threads_per_block": 256,  # grid-stride kernels; a multiple of 32 in [32, 1024]
    "row_threads": 256,  # row-reduction kernels (threads cooperating on one row); multiple of 32
    "max_blocks": 4096,  # grid-stride loops cover the rest
    "vectorize": True,  # elementwise kernels move 16 bytes per access (float4, ...) where alignment allows
    "row_reduce": True,  # False: every kernel takes the grid-stride schedule
    # contractions (codegen/cuda_gemm.py, templates/cuda/gemm.cu.j2): a BM x BN tile per block,
    # a TM x TN register tile per thread, K walked BK at a time through `stages` shared buffers
    "gemm": True,  # False: contractions take the grid-stride schedule
    "gemm_bm": 64, "gemm_bn": 64, "gemm_bk": 16, "gemm_tm": 4, "gemm_tn": 4, "gemm_stages": 2,
}
KNOB_RANGES = {"threads_per_block": (32, 1024), "row_threads": (32, 1024), "max_blocks": (1, 1 << 20),
               **GEMM_KNOB_RANGES}
ROW_COMBINERS = ("sum", "max", "min")
ROW_DTYPES = ("float32", "float64", "int32", "int64")


_overrides: contextvars.ContextVar = contextvars.ContextVar("kerneldsl_cuda_knobs", default=None)


@contextlib.contextmanager
def knobs(**values):
    """Override CUDA knobs for the builds in this block, as `schedule.contraction.knobs` does for
    the CPU: `with knobs(row_threads=128, gemm_bm=128): kd.build(..., target="cuda")`."""
    resolve_knobs(values)  # an unknown or out-of-range knob fails here, not at the build
    token = _overrides.set({**(_overrides.get() or {}), **values})
    try:
        yield
    finally:
        _overrides.reset(token)


def resolve_knobs(overrides: dict | None = None) -> dict:
    """KNOBS with the active `knobs` block and `overrides` applied, and checked."""
    k = dict(KNOBS)
    for name, value in {**(_overrides.get() or {}), **(overrides or {})}.items():
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
    from .cuda_gemm import check_knobs
    check_knobs(k)
    return k


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

    def blocks(self, work: int, max_blocks: int) -> int:
        # grid_stride: a thread per vector step; row_reduce, gemm, bound: a block per unit
        per = self.threads * self.lanes if self.schedule == "grid_stride" else 1
        return max(1, min(-(-work // per), max_blocks))

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


class KernelReport:
    """One kernel of a CUDA build (`f.kernels`): the lowered kernel (its attributes pass through),
    its launch, ptxas's resource report and the occupancy it allows, with warnings for spills
    and for a kernel that cannot keep one block resident per SM."""

    def __init__(self, kernel: Kernel, launch: Launch, function):
        self.kernel, self.launch, self._f = kernel, launch, function

    def __getattr__(self, name):
        return getattr(self.kernel, name)

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

    def summary(self) -> str:
        L = self.launch
        head = f"{L.kernel}: {L.schedule}, {L.threads} threads per block"
        try:
            r = self.resources
        except Exception as e:  # noqa: BLE001 - no nvcc: the report says so instead of failing
            return f"{head}; no resource report ({e})"
        text = (f"{head}; {r.get('registers', 0)} registers (int64 indices: {r.get('int64', {}).get('registers')}), "
                f"{r.get('spill_stores', 0)} B spill stores, "
                f"{r.get('shared', 0)} B shared; {self.blocks_per_sm} block(s) per SM on {self.arch}")
        return text + "".join(f"\n  WARNING: {w}" for w in self.warnings)

    def __str__(self) -> str:
        return f"{self.kernel}\n# cuda: {self.summary()}"

    def __repr__(self) -> str:
        return f"<KernelReport {self.summary()}>"


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
            v, ext = self.name(s.var), self.expr(s.extent)
            if s.kind in _BOUND:  # bind(): a block/thread-strided loop, correct for any launch size
                idx, dim = _BOUND[s.kind]
                head = f"for (int64_t {v} = {idx}; {v} < {ext}; {v} += {dim}) {{"
            else:
                head = f"for (int64_t {v} = 0; {v} < {ext}; ++{v}) {{"
            return [indent + head, *self.stmt(s.body, indent + "    "), f"{indent}}}"]
        return super().stmt(s, indent)


_BOUND = {f"{level}_{a}": (f"{level[0]}Idx.{a}".replace("bIdx", "blockIdx").replace("tIdx", "threadIdx"),
                           f"{'gridDim' if level == 'block' else 'blockDim'}.{a}")
          for level in ("block", "thread") for a in "xyz"}


def _bound_loops(body: Stmt) -> list:
    from ..schedule.primitives import loops
    return [lp for lp in loops(body) if lp.kind in _BOUND]


def _check_bound(k: Kernel, bound: list) -> None:
    """A bound loop runs its iterations on different threads: none may update an outer scalar."""
    from ..errors import ScheduleError
    from ..ir.loops import Assign
    for lp in bound:
        declared = {n.var for n in _stmts(lp.body) if isinstance(n, Declare)}
        for n in _stmts(lp.body):
            if isinstance(n, Assign) and n.var not in declared:
                raise ScheduleError(f"kernel {k.name}: loop {lp.var.name!r} is bound to {lp.kind} but is a "
                                    f"reduction loop (it updates {n.var.name}); bind only data-parallel loops")


def _stmts(s: Stmt):
    from ..ir.loops import IfThenElse
    yield s
    if isinstance(s, Seq):
        for x in s.stmts:
            yield from _stmts(x)
    elif isinstance(s, For):
        yield from _stmts(s.body)
    elif isinstance(s, IfThenElse):
        yield from _stmts(s.then)
        if s.otherwise is not None:
            yield from _stmts(s.otherwise)


def _perfect_nest(body: Stmt):
    """The outer loops that form a box (a perfect nest, extents free of their variables), and
    the statement inside them. Those loops are data parallel: nothing is declared outside them."""
    loops, s = [], body
    while isinstance(s, For) and s.kind not in _BOUND:
        if {lp.var for lp in loops} & set(E.walk(s.extent)):
            break
        loops.append(s)
        s = s.body
    return loops, s


def _outer_assigns(loop: For) -> set:
    """Scalars declared outside `loop` that its body assigns (its reduction accumulators)."""
    from ..ir.loops import Assign
    inside = {n.var for n in _stmts(loop.body) if isinstance(n, Declare)}
    return {n.var for n in _stmts(loop.body) if isinstance(n, Assign) and n.var not in inside}


def _combiner(loop: For, acc: E.Var) -> str | None:
    """sum / max / min when every update of `acc` in `loop` has the shape lowering gives it."""
    from ..ir.loops import Assign, IfThenElse
    kinds = set()
    guarded = set()
    for n in _stmts(loop.body):
        if isinstance(n, IfThenElse) and isinstance(n.then, Assign) and n.then.var is acc:
            v = n.then.value
            guarded.add(n.then)
            if n.otherwise is not None or not isinstance(v, E.Var):
                return None
            for kind, cmp in (("max", v > acc), ("min", v < acc)):
                if n.cond is cmp or (v.dtype in ("float32", "float64") and n.cond is (cmp | (v != v))):  # noqa: PLR0124 - the IR's NaN test
                    kinds.add(kind)
                    break
            else:
                return None
    for n in _stmts(loop.body):
        if isinstance(n, Assign) and n.var is acc and n not in guarded:
            v = n.value
            if not (isinstance(v, E.Binary) and v.op == "add" and v.a is acc and acc not in set(E.walk(v.b))):
                return None
            kinds.add("sum")
    return kinds.pop() if len(kinds) == 1 else None


def _contiguous(loop: For) -> bool:
    """The loop variable indexes only the last (contiguous) dimension of what the loop reads."""
    for n in _walk_stmt(loop.body):
        if isinstance(n, E.Load) and any(loop.var in set(E.walk(ix)) for ix in n.indices[:-1]):
            return False
    return True


def _only_loop(s: Stmt):
    """The loop that is the whole of `s`, or None."""
    if isinstance(s, Seq) and len(s.stmts) == 1:
        s = s.stmts[0]
    return s if isinstance(s, For) and s.kind not in _BOUND else None


def _flatten_reductions(body: Stmt) -> tuple[Stmt, set]:
    """A reduction over several axes (sum(X[n, c, h, w]) over c, h, w) becomes one loop over
    their product, so that the threads of a row block share all of it. Loops are fused from the
    innermost pair out and only when the innermost is contiguous: neighbouring threads then read
    neighbouring elements. Returns the body and the variables of the flattened loops."""
    from ..schedule.primitives import find, fuse
    flattened: set = set()
    while True:
        _, inner = _perfect_nest(body)
        for st in inner.stmts if isinstance(inner, Seq) else (inner,):
            if not (isinstance(st, For) and st.kind not in _BOUND and _outer_assigns(st)):
                continue
            outer, nested = st, _only_loop(st.body)
            while nested is not None and _only_loop(nested.body) is not None:
                outer, nested = nested, _only_loop(nested.body)
            if nested is not None and (nested.var in flattened or _contiguous(nested)) \
                    and outer.var not in set(E.walk(nested.extent)):
                body, name = fuse(body, outer.var.name, nested.var.name)
                flattened.add(find(body, name).var)
                break
        else:
            return body, flattened


def _row_plan(inner: Stmt, flattened: frozenset | set = frozenset(), min_extent: int = 1):
    """The steps of a row kernel, or None: [("stmt"|"reduce"|"parallel"|"store", statement, ...)].

    A row body is a sequence of accumulator declarations, reduction loops over the row
    (sum/max/min of one accumulator, contiguous reads), data-parallel loops over the row (a
    fused epilogue such as softmax's exp(x - max)) and stores of per-row values.
    """
    stmts = inner.stmts if isinstance(inner, Seq) else (inner,)
    plan, decls, reduces = [], {}, 0
    for st in stmts:
        if isinstance(st, Declare):
            decls[st.var] = st
            plan.append(("stmt", st))
        elif isinstance(st, Store):
            plan.append(("store", st))
        elif isinstance(st, For) and st.kind not in _BOUND:
            accs = _outer_assigns(st)
            if not accs:
                plan.append(("parallel", st))
                continue
            if len(accs) != 1:
                return None
            acc = next(iter(accs))
            comb = _combiner(st, acc)
            if acc not in decls or comb is None or acc.dtype not in ROW_DTYPES or \
                    not (st.var in flattened or _contiguous(st)):
                return None
            if isinstance(st.extent, E.Const) and st.extent.value < min_extent:
                return None  # a short window (pooling): a thread per output does better than a block
            plan.append(("reduce", st, acc, comb, decls[acc].init))
            reduces += 1
        else:
            return None
    return plan if reduces else None


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


def _row_lines(p: CudaPrinter, plan, indent: str) -> tuple[str, set]:
    """The body of one row: every thread of the block takes part in every step."""
    lines, partials = [], set()
    block_reduce = environment().get_template("cuda/block_reduce.cu.j2")
    for step in plan:
        kind, st = step[0], step[1]
        if kind == "stmt":
            lines += p.stmt(st, indent)
        elif kind == "store":
            lines += [f"{indent}if (threadIdx.x == 0) {{", *p.stmt(st, indent + "    "), f"{indent}}}"]
        else:  # reduce / parallel: the threads of the block stride over the row
            v = p.name(st.var)
            lines.append(f"{indent}for (int64_t {v} = threadIdx.x; {v} < {p.expr(st.extent)}; {v} += blockDim.x) {{")
            lines += p.stmt(st.body, indent + "    ") + [f"{indent}}}"]
            if kind == "reduce":
                _, _, acc, comb, init = step
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


# (element dtype, lanes) -> the CUDA vector type moving them in one access
VECTOR_TYPES = {("float32", 4): "float4", ("float32", 2): "float2", ("int32", 4): "int4", ("int32", 2): "int2",
                ("float64", 2): "double2", ("int64", 2): "longlong2"}
ITEMSIZE = {"float32": 4, "int32": 4, "float64": 8, "int64": 8}
LANE = "xyzw"


@dataclass(frozen=True)
class VectorPlan:
    """A grid-stride kernel whose store and unguarded loads move `lanes` neighbouring elements of
    the innermost loop per access (16 bytes of the stored dtype): float4, double2, ..."""
    lanes: int
    store: Store
    loads: tuple  # the Load nodes read as vectors (others stay scalar, per lane)


def _vector_plan(loops, inner) -> VectorPlan | None:
    """A single store whose last index is the innermost loop variable (and no other index uses
    it) vectorizes; so does every load like it that is always evaluated (not under a select
    branch, not a checked gather), when its element size fits the same lanes."""
    if not loops or not isinstance(inner, Store) or not inner.indices or inner.buffer.dtype not in ITEMSIZE:
        return None
    j = loops[-1].var
    lanes = 16 // ITEMSIZE[inner.buffer.dtype]

    def along_j(indices) -> bool:
        return bool(indices) and indices[-1] is j and not any(j in set(E.walk(ix)) for ix in indices[:-1])
    if not along_j(inner.indices):
        return None
    found: list = []

    def visit(e, guarded: bool):
        if isinstance(e, E.Select):
            visit(e.cond, guarded)
            visit(e.a, True)
            visit(e.b, True)
            return
        if isinstance(e, E.Load) and not guarded and (e.dtype, lanes) in VECTOR_TYPES and along_j(e.indices) \
                and e not in found:
            found.append(e)
        for c in e.children():
            visit(c, guarded)
    visit(inner.value, False)
    return VectorPlan(lanes, inner, tuple(found))


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


def _gemm_plan(k: Kernel, kn: dict):
    """The contraction plan when the GEMM template takes this kernel (float32/float64, tiles fit)."""
    from .cuda_gemm import SHARED_LIMIT, gemm_plan, shared_bytes
    if not kn["gemm"] or k.op.dtype not in ("float32", "float64"):
        return None
    if shared_bytes(kn, k.op.dtype) > SHARED_LIMIT:
        return None
    return gemm_plan(k)


def render(module: Module, overrides: dict | None = None, version: str = "") -> CudaSource:
    """The .cu text of a module (kernels, and the emulator's host entry) and its launches."""
    kn = resolve_knobs(overrides)
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
        extents = ()
        bound = _bound_loops(k.body)
        gp = _gemm_plan(k, kn) if not bound else None
        body, plan = k.body, None
        if kn["row_reduce"] and not bound and gp is None:
            flat, flattened = _flatten_reductions(k.body)
            plan = _row_plan(_perfect_nest(flat)[1], flattened, kn["row_threads"])
            body = flat if plan is not None else body
        loops, inner = _perfect_nest(body)
        used = _used([body])
        local = dict(names)
        for v in sorted((v for v in used if isinstance(v, E.Var)), key=lambda v: v.name):
            local[v] = f"v_{v.name}"
        p = CudaPrinter(local, strides)
        fname = f"kd_kernel_{k.name}"
        comment = f"{k.op.name}[{', '.join(a.name for a in k.op.axes)}] = {expr_str(k.op.body)}"
        info = {"fname": fname, "comment": comment.replace("*/", "* /")}
        if gp is not None:  # a contraction: the shared-memory tiled GEMM template
            from .cuda_gemm import gemm_extents, render_gemm, threads, tiles_work
            work = tiles_work(gp, kn)
            extents = gemm_extents(gp)
            gemm_printer = CudaPrinter({**local, gp.acc: "kd_acc"}, strides)
            info.update(schedule="gemm", threads=threads(kn), work=p.expr(work),
                        body=render_gemm(gemm_printer, k, gp, kn))
        elif bound:  # the user's bind(): blocks over the first block loop, threads over the first thread loop
            _check_bound(k, bound)
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
        elif plan is not None:
            work = _product(lp.extent for lp in loops)
            body, partials = _row_lines(p, plan, " " * 8)
            info.update(schedule="row_reduce", threads=kn["row_threads"], work=p.expr(work),
                        decompose=_decompose(p, "kd_row", loops), body=body,
                        partials=[{"ctype": CTYPE[d], "name": f"kd_partial_{d}"} for d in sorted(partials)])
        else:
            work = _product(lp.extent for lp in loops)
            info.update(schedule="grid_stride", threads=kn["threads_per_block"], work=p.expr(work),
                        decompose=_decompose(p, "kd_t", loops), body="\n".join(p.stmt(inner, " " * 8)))
            vp = _vector_plan(loops, inner) if kn["vectorize"] else None
            if vp is not None:
                cond, vlines = _vector_lines(p, vp, loops[-1].var)
                info.update(lanes=vp.lanes, vector_cond=f"{p.expr(loops[-1].extent)} % {vp.lanes} == 0 && {cond}",
                            vector_decompose=_decompose(p, "kd_t", loops, vp.lanes), vector_body=vlines)
        ps = params(used)
        info["params"] = [x.decl for x in ps]
        info["args"] = [x.name for x in ps]
        info["arg_types"] = [x.ctype for x in ps]
        kernels.append(info)
        launches.append(Launch(fname, info["schedule"], work, info["threads"], ps, extents, info.get("lanes", 1),
                               k.runs_if))

    prelude = environment().get_template("cuda/prelude.cuh").render()
    text = environment().get_template("cuda/module.cu.j2").render(version=version, prelude=prelude, kernels=kernels)
    return CudaSource(text, tuple(launches), kn)


__all__ = ["KNOBS", "CudaPrinter", "CudaSource", "KernelReport", "Launch", "Param", "blocks_per_sm", "knobs",
           "render", "resolve_knobs"]
