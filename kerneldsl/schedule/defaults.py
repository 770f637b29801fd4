"""The default schedule of a kernel for a target, as steps, and what a `template` step does.

C: a contraction (matmul, batched matmul, dense + epilogue, implicit-GEMM convolution) takes the
gemm template; every other kernel runs its loop nest (template `loops`) with these marks:
    the outermost output loop        parallel (threads only above the knob parallel_min_work); when
                                     it is also the SIMD loop (one output loop, straight-line), the
                                     threads take blocks of the knob simd_block iterations
    the innermost output loop        vectorized, when its body is straight-line
    a sum/prod/max/min loop          vectorized, when it is innermost and straight-line
    the outer loop of a scalar sum   parallel_reduce (each thread sums a share; OpenMP combines them)
    a reduction over rows whose output runs along the rows (a column sum): the reduction loop
                                     moved inside blocks of the output (column_steps)
and a row reduction stores its costly term once (`reuse_output`, schedule/reuse.py).

CUDA: gemm for contractions whose tiles fit, row_reduce for row reductions (softmax, layer norm,
sums over trailing axes), grid_stride for the rest (schedule/gpu.py).

Every choice is written into the steps, knobs included, so that the trace says everything.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ScheduleError
from ..ir import expr as E
from ..ir.lower import Kernel, extreme_update, straight_line
from ..ir.bounds import guard_range
from ..ir.loops import For, Stmt, exprs, loops, stmt_lines
from ..ir.simplify import linear
from ..settings import settings
from . import gpu
from . import primitives as P
from .contraction import match, plan_gemm
from .reuse import reuse_through_output
from .rfactor import reduction_of
from .templates import SHARED_LIMIT, active_overrides, choice, family, fit_gemm_knobs, gemm_shared_bytes, template


def template_step(kernel: Kernel, name: str, knobs: dict, target) -> dict:
    t = template(name, target)
    return {"primitive": "template", "kernel": kernel.name, "template": name,
            "knobs": t.resolve(knobs, target, kernel.op.dtype)}


def default_steps(kernel: Kernel, target) -> list[dict]:
    """The steps that give `kernel` (its plain loop nest) its default schedule on `target`."""
    return steps_for(kernel, default_template(kernel, target), {}, target)


def default_template(kernel: Kernel, target) -> str:
    dtype = kernel.op.dtype
    if family(target) == "c":
        return "gemm" if choice("gemm", settings.gemm) and _gemm_fits(kernel) else "loops"
    if choice("gemm", settings.gemm) and dtype in ("float32", "float64") and _gemm_fits(kernel):
        knobs = template_step(kernel, "gemm", {}, target)["knobs"] if _cuda_gemm_knobs_ok(kernel, target) else None
        if knobs is not None and gemm_shared_bytes(knobs, dtype) <= SHARED_LIMIT:
            return "gemm"
    if choice("row_reduce", True):
        body = reuse_through_output(kernel.body, _out_buffer(kernel))
        threads = template("row_reduce", target).defaults(target, dtype)["row_threads"]
        flat, flattened = gpu.flatten_reductions(body)
        if gpu.row_plan(flat, flattened, threads) is not None:
            return "row_reduce"
    return "grid_stride"


def _cuda_gemm_knobs_ok(kernel: Kernel, target) -> bool:
    try:  # tiles a knobs block made too large for shared memory: the kernel stays off the template
        template_step(kernel, "gemm", {}, target)
    except ScheduleError as e:
        if "shared memory" in str(e):
            return False
        raise
    return True


def steps_for(kernel: Kernel, name: str, knobs: dict, target) -> list[dict]:
    """The steps that run the plain `kernel` with template `name`: the CPU's loop nest gets its
    default marks; a row reduction stores its costly term once (before a CUDA template plans)."""
    if name == "gemm" and family(target) == "c" and choice("fit_gemm", True):
        fitted = {k: v for k, v in _fitted_gemm_knobs(kernel, target).items() if k not in active_overrides()}
        knobs = {**fitted, **knobs}
    step = template_step(kernel, name, knobs, target)
    if family(target) == "c":
        return [step, *(column_steps(kernel) or mark_steps(kernel)), *reuse_steps(kernel)] if name == "loops" \
            else [step]
    return [step] if name in ("loops", "gemm") else [*reuse_steps(kernel), step]


def _fitted_gemm_knobs(kernel: Kernel, target) -> dict:
    """The CPU GEMM knobs fitted to the contraction's M, N and K where they are known now."""
    c = plan_gemm(kernel).contraction

    def extent(axes):
        n = 1
        for a in axes:
            if not isinstance(a.extent, E.Const):
                return None
            n *= a.extent.value
        return n
    return fit_gemm_knobs(extent(c.m), extent(c.n), extent(c.k), target, kernel.op.dtype)


def _gemm_fits(kernel: Kernel) -> bool:
    if match(kernel.op) is None:
        return False
    try:
        plan_gemm(kernel)
    except ScheduleError:
        return False
    return True


def _out_buffer(kernel: Kernel):
    return next(s.buffer for s in _stores(kernel.body))


def _stores(body: Stmt):
    from ..ir.loops import Store, walk
    return [s for s in walk(body) if isinstance(s, Store)]


def reuse_steps(kernel: Kernel) -> list[dict]:
    """`reuse_output` when the kernel is a row reduction whose costly term the output row can hold."""
    new = reuse_through_output(kernel.body, _out_buffer(kernel))
    return [] if new is kernel.body else [{"primitive": "reuse_output", "kernel": kernel.name}]


COLUMN_BLOCK = 128  # output elements a column reduction keeps in L1 while it walks the rows


def column_steps(kernel: Kernel, contraction: bool = False) -> list[dict]:
    """A sum/prod whose terms run contiguously along the innermost output loop rather than along
    the reduction (a column sum, the weight gradient of a matrix-vector product, a convolution
    whose filter window is short): in the default order each output element walks its terms one
    at a time. Instead the innermost output loop is split into blocks of COLUMN_BLOCK (unless it
    is that short already); in each block the output is zeroed, the reduction loops move outside
    (terms in order), and the block's loop is vectorized: the same terms added in the same order
    per element. A contraction (matmul) keeps its (i, j, r) nest for hand scheduling unless it
    is a GEMM's fallback (`contraction`). [] when not that case."""
    body = kernel.body
    by_var = {lp.var: lp for lp in loops(body)}
    op_loops = [by_var[v] for v in kernel.axis_vars if v in by_var]
    if not op_loops or not contraction and match(kernel.op) is not None:
        return []
    inner = op_loops[-1]
    stmts = _top_statements(inner.body)
    if len(stmts) != 3 or not isinstance(stmts[1], For):
        return []
    reds = [stmts[1]]  # the reduction loops, a perfect nest
    while isinstance(reds[-1].body, For):
        reds.append(reds[-1].body)
    last = reds[-1]
    if any(isinstance(x, For) for x in loops(last.body)) or not straight_line(last.body) \
            or _reduction_kind(last) not in ("add", "mul"):
        return []
    red_vars = {lp.var for lp in reds}
    short = isinstance(last.extent, E.Const) and last.extent.value < 8

    def along_output(ld):
        """Contiguous along the output loop, and not along the reduction, or only briefly: a short
        window, or a sliding one (`x[.., z + rw]`: filter taps are few, output columns many)."""
        if not ld.indices:
            return False
        lin = linear(ld.indices[-1])
        if lin is None or lin.get(inner.var) != 1:
            return False
        return short or last.var in lin or any(v in E.walk(ix) for ix in ld.indices[:-1] for v in red_vars)
    terms = [ld for st in _stores_and_assigns(last.body) for ld in E.loads(st)]
    if not any(along_output(ld) for ld in terms):
        return []
    name = kernel.name
    fits = isinstance(inner.extent, E.Const) and inner.extent.value <= COLUMN_BLOCK and len(op_loops) > 1
    try:
        b, steps = body, []
        if fits:
            inner_name = inner.var.name
        else:
            b, outer_name, inner_name = P.split(body, inner.var.name, COLUMN_BLOCK)
            steps.append({"primitive": "split", "kernel": name, "loop": inner.var.name, "factor": COLUMN_BLOCK})
        b = P.decompose_reduction(b, inner_name)
        order = [*(lp.var.name for lp in reds), inner_name]
        b = P.reorder(b, order)
    except ScheduleError:
        return []
    parallel = op_loops[0].var.name if len(op_loops) > 1 else outer_name
    return [*steps,
            {"primitive": "decompose_reduction", "kernel": name, "loop": inner_name},
            {"primitive": "reorder", "kernel": name, "loops": order},
            {"primitive": "vectorize", "kernel": name, "loop": inner_name},
            *partition_steps(name, b, inner_name),
            {"primitive": "parallel", "kernel": name, "loop": parallel}]


def partition_steps(kernel_name: str, body: Stmt, loop_name: str) -> list[dict]:
    """`partition` for a vectorized loop whose body tests a range of its variable (a padded read):
    SIMD lanes without the test and without masked loads."""
    lp = P.find(body, loop_name)
    if not any(isinstance(n, E.Select) and guard_range(n.cond, lp.var) is not None for n in exprs(lp.body)):
        return []
    return [{"primitive": "partition", "kernel": kernel_name, "loop": loop_name}]


def _stores_and_assigns(s: Stmt) -> list:
    from ..ir.loops import Assign, Store, walk
    return [x.value for x in walk(s) if isinstance(x, (Assign, Store))]


def mark_steps(kernel: Kernel) -> list[dict]:
    """parallel / vectorize steps of the default CPU loop nest (see the module's docstring)."""
    steps, body = [], kernel.body
    by_var = {lp.var: lp for lp in loops(body)}
    op_loops = [by_var[v] for v in kernel.axis_vars if v in by_var]

    def mark(prim: str, lp: For):
        steps.append({"primitive": prim, "kernel": kernel.name, "loop": lp.var.name})

    if op_loops:
        mark("parallel", op_loops[0])
        inner = op_loops[-1]
        if len(op_loops) > 1 and straight_line(inner.body):
            mark("vectorize", inner)
            steps += partition_steps(kernel.name, body, inner.var.name)
    op_vars = set(kernel.axis_vars)
    top_reductions = [] if op_loops else [s for s in _top_statements(body) if isinstance(s, For)]
    for lp in loops(body):
        if lp.var in op_vars or not P.outer_updates(lp):
            continue
        kind = _reduction_kind(lp)
        innermost = not any(isinstance(x, For) for x in loops(lp.body))
        short = isinstance(lp.extent, E.Const) and lp.extent.value < 8  # a pooling window: plain code wins
        if innermost and not short and (straight_line(lp.body) and kind in ("add", "mul")
                                         or extreme_update(lp) is not None):
            mark("vectorize", lp)
        elif lp in top_reductions and kind in ("add", "mul"):
            mark("parallel_reduce", lp)
    return steps


def _top_statements(body: Stmt):
    from ..ir.loops import Seq
    return body.stmts if isinstance(body, Seq) else (body,)


def _reduction_kind(lp: For) -> str | None:
    """add / mul / max / min for a loop of one plain reduction, else None."""
    try:
        return reduction_of(lp)[1]
    except ScheduleError:
        return None


# --- plans: what a template's renderer follows, and what `str(kernel)` says runs -------------------

@dataclass(frozen=True, eq=False)
class GridPlan:
    """CUDA grid_stride: the perfect nest's points spread over a grid-stride loop."""
    vector: object = None  # gpu.VectorPlan when 16-byte accesses apply

    def describe(self, kernel: Kernel) -> list[str]:
        nest, inner = gpu.perfect_nest(kernel.body)
        k = kernel.knobs
        points = " * ".join(str(lp.extent) for lp in nest) or "1"
        head = (f"for point in range({points}):  # grid-stride: {k['threads_per_block']} threads per block, "
                f"at most {k['max_blocks']} blocks")
        vec = [] if self.vector is None else [
            f"#   {self.vector.lanes} points per thread-step with 16-byte accesses when aligned"]
        names = ", ".join(lp.var.name for lp in nest)
        return [head, *vec, f"  ({names}) = unflatten(point)" if nest else "", *["  " + ln for ln in stmt_lines(inner)]]


@dataclass(frozen=True, eq=False)
class RowPlan:
    """CUDA row_reduce: a block per row; the row's loops strided over its threads."""
    steps: tuple  # gpu.RowStep

    def describe(self, kernel: Kernel) -> list[str]:
        nest, _ = gpu.perfect_nest(kernel.body)
        k = kernel.knobs
        rows = " * ".join(str(lp.extent) for lp in nest) or "1"
        out = [f"for row in range({rows}):  # a block of {k['row_threads']} threads per row, at most "
               f"{k['max_blocks']} blocks"]
        for st in self.steps:
            if st.kind == "stmt":
                out += ["  " + ln for ln in stmt_lines(st.stmt)]
            elif st.kind == "store":
                out += ["  " + ln + "  # thread 0" for ln in stmt_lines(st.stmt)]
            else:
                lines = stmt_lines(st.stmt)
                out.append(f"  {lines[0]}  # strided over the block's threads")
                out += ["  " + ln for ln in lines[1:]]
                if st.kind == "reduce":
                    out.append(f"  {st.acc.name} = block_{st.combiner}({st.acc.name})  # warp shuffles + shared memory")
        return out


def apply_template(kernel: Kernel, name: str, knobs: dict, target) -> Kernel:
    """`kernel` run by template `name` with `knobs` (checked): its plan attached, its nest adapted
    (the gemm fallback's marks, row_reduce's flattened reductions). ScheduleError when the
    template cannot run this kernel, saying why."""
    t = template(name, target)
    dtype = kernel.op.dtype
    knobs = t.resolve(knobs, target, dtype)
    base = Kernel(kernel.name, kernel.op, kernel.body, kernel.fused, name, knobs, None, kernel.axis_vars)
    if name == "loops":
        if family(target) == "cuda":
            gpu.check_bound(kernel.name, kernel.body)
        return base
    if name == "gemm":
        if dtype not in ("float32", "float64"):
            raise ScheduleError(f"kernel {kernel.name} is {dtype}; the gemm template runs float32 and float64")
        plan = plan_gemm(kernel)
        body = kernel.body
        if family(target) == "c":  # the fallback for small or thin work: the default loop nest
            body = _marked(body, column_steps(kernel, contraction=True) or mark_steps(kernel))
        return Kernel(kernel.name, kernel.op, body, kernel.fused, name, knobs, plan, kernel.axis_vars)
    if name == "row_reduce":
        body, flattened = gpu.flatten_reductions(kernel.body)
        steps = gpu.row_plan(body, flattened, knobs["row_threads"])
        if steps is None:
            raise ScheduleError(f"kernel {kernel.name} is not a row reduction (per row: accumulators, reductions "
                                f"over a contiguous row at least row_threads long, loops over the row, stores); "
                                f"the row_reduce template cannot run it")
        return Kernel(kernel.name, kernel.op, body, kernel.fused, name, knobs, RowPlan(steps), kernel.axis_vars)
    if name == "grid_stride":
        if gpu.bound_loops(kernel.body):
            raise ScheduleError(f"kernel {kernel.name} has loops bound with bind(); run it with the loops template")
        vector = gpu.vector_plan(kernel.body) if knobs["vectorize"] else None
        return Kernel(kernel.name, kernel.op, kernel.body, kernel.fused, name, knobs, GridPlan(vector),
                      kernel.axis_vars)
    raise ScheduleError(f"template {name!r} has no planner")  # pragma: no cover - every template has one


def _marked(body, steps: list[dict]):
    """`body` with the default marks of column_steps / mark_steps applied."""
    for st in steps:
        prim, loop = st["primitive"], st.get("loop")
        if prim == "split":
            body = P.split(body, loop, st["factor"])[0]
        elif prim == "decompose_reduction":
            body = P.decompose_reduction(body, loop)
        elif prim == "reorder":
            body = P.reorder(body, st["loops"])
        elif prim == "partition":
            body = P.partition(body, loop)
        else:
            body = P.set_kind(body, loop, "vectorized" if prim == "vectorize" else "parallel",
                              reduction=prim == "parallel_reduce")
    return body


def loop_marks_allowed(kernel: Kernel, prim: str) -> None:
    """Loop primitives change the loop nest: only meaningful when the nest is what runs."""
    if kernel.template not in (None, "loops"):
        raise ScheduleError(
            f"{prim}: kernel {kernel.name} runs the {kernel.template} template, not its loop nest, so a loop "
            f"primitive would change nothing that runs. Tune the template with s.knobs({kernel.name!r}, ...), "
            f"or schedule the loop nest by hand after s.template({kernel.name!r}, 'loops')")


__all__ = ["GridPlan", "RowPlan", "apply_template", "default_steps", "loop_marks_allowed", "mark_steps",
           "reuse_steps", "template_step"]
