"""C code generation: a C printer for loop-IR expressions and statements, and the
Jinja2 template that lays out the translation unit.

Every identifier in the source is made here: buffers `b_<name>`, sizes
`s_<name>`, loop variables and locals `v_<name>` (names validated as
identifiers when the user made them), strides `st_<buffer>_<dim>`.
All index arithmetic is int64.
"""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path

import jinja2

from .. import dtypes as dt
from ..ir import expr as E
from ..ir import ops
from ..ir.loops import Allocate, Assign, Buffer, Checked, Declare, For, IfThenElse, Seq, Stmt, Store, leaves, walk
from ..ir.loops import work as loop_work
from ..ir.lower import Module, extreme_update, straight_line
from ..ir.simplify import simplify

CTYPE = {"float32": "float", "float64": "double", "int32": "int32_t", "int64": "int64_t", "bool": "bool"}
_SUFFIX = {"float32": "f32", "float64": "f64", "int32": "i32", "int64": "i64"}
TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


@cache
def environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), undefined=jinja2.StrictUndefined,
                              keep_trailing_newline=True, trim_blocks=False, lstrip_blocks=False)


def c_const(value, dtype: str) -> str:
    if dtype == "bool":
        return "true" if value else "false"
    if dtype in ("int32", "int64"):
        v = int(value)
        if dtype == "int64":
            return "INT64_MIN" if v == -(1 << 63) else f"INT64_C({v})"
        return "INT32_MIN" if v == -(1 << 31) else f"((int32_t){v})"
    v = float(value)
    suffix = "f" if dtype == "float32" else ""
    cast = "" if dtype == "float32" else "(double)"
    if math.isnan(v):
        return f"({cast}NAN)"
    if math.isinf(v):
        return f"({cast}INFINITY)" if v > 0 else f"(-{cast}INFINITY)"
    text = repr(v)
    if "e" not in text and "." not in text:
        text += ".0"
    return f"({text}{suffix})" if v < 0 else f"{text}{suffix}"


class CPrinter:
    """Prints loop-IR expressions as C; `target` picks intrinsic spellings (c or cuda)."""

    target = "c"

    def __init__(self, var_names: dict, strides: dict):
        self.var_names = var_names  # Var/SizeVar -> C name
        self.strides = strides  # Buffer -> tuple of C stride names

    def name(self, v) -> str:
        if isinstance(v, Buffer) and v.role == "local" and v not in self.var_names:
            return f"l_{v.name}"  # a local array (Allocate): named where it is used
        return self.var_names[v]

    def expr(self, e: E.Expr) -> str:
        m = getattr(self, "_" + type(e).__name__)
        return m(e)

    def _Const(self, e):
        return c_const(e.value, e.dtype)

    def _SizeVar(self, e):
        return self.name(e)

    def _Var(self, e):
        return self.name(e)

    def _Cast(self, e):
        x = self.expr(e.x)
        if e.dtype == "bool":
            return f"({x} != 0)"
        if e.dtype in _SUFFIX and e.dtype.startswith("int") and e.x.dtype.startswith("float"):
            # C leaves NaN and out-of-range float -> int undefined; numpy (x86) gives INT_MIN
            return f"kd_{_SUFFIX[e.x.dtype]}_to_{_SUFFIX[e.dtype]}({x})"
        return f"(({CTYPE[e.dtype]})({x}))"

    saturate = False  # entry checks: int64 + - * saturate instead of wrapping (see render)
    parallel_min_work = 1 << 15  # the kernel's knob: below this much work a parallel loop runs on one thread
    simd_block = 0  # the kernel's knob: a loop both parallel and SIMD runs in blocks of this many iterations

    def _op(self, e):
        """An operator or intrinsic, spelled as its op table row says for the first operand's
        dtype and this printer's target (saturating int64 arithmetic in entry checks)."""
        kids = e.children()
        text = ops.of(e).spelling(self.target, kids[0].dtype, self.saturate)
        return text.format(*(self.expr(k) for k in kids))

    _Unary = _Binary = _Call = _op

    def _Select(self, e):
        if e.dtype in dt.FLOATS and not any(_reads(x) for x in (e.a, e.b)):
            # both values computed, then one picked: C's `c ? a : b` evaluates only one, so GCC
            # will not vectorize a select whose value may trap (a division), trapping math on
            return f"kd_select_{_SUFFIX[e.dtype]}({self.expr(e.cond)}, {self.expr(e.a)}, {self.expr(e.b)})"
        return f"({self.expr(e.cond)} ? {self.expr(e.a)} : {self.expr(e.b)})"

    def _Checked(self, e):
        return f"kd_chk({self.expr(e.index)}, {self.expr(e.extent)}, {e.code}, kd_report)"

    def index(self, buf: Buffer, indices) -> str:
        if not indices:
            return "0"
        parts = []
        strides = self.strides[buf] if buf.role != "local" else _local_strides(buf)
        for ix, st in zip(indices, strides):
            parts.append(f"{self.expr(ix)} * {st}")
        return " + ".join(parts)

    def _extreme_loop(self, s: For, indent: str, acc, v, op: str, nan_aware: bool) -> list[str]:
        """A max/min reduction loop as SIMD lanes: the loop's own extreme `m` by `reduction(max:m)`
        over the plain comparison, and, for floats, a flag that any lane saw NaN. It is combined
        into the accumulator once, NaN first (np.max): OpenMP's combine of a NaN accumulator with
        a lane's value would drop the NaN, so the accumulator stays out of the clause."""
        a, lv, it = self.name(acc), self.name(v), self.name(s.var)
        body = s.body.stmts if isinstance(s.body, Seq) else (s.body,)
        decl = body[0]
        sym = ">" if op == "max" else "<"
        m, flag, ctype = f"{a}_m", f"{a}_nan", CTYPE[v.dtype]
        init = c_const(float("-inf") if op == "max" else float("inf"), v.dtype) if nan_aware else \
            c_const(*((-(1 << 63) if v.dtype == "int64" else -(1 << 31)) if op == "max" else
                      ((1 << 63) - 1 if v.dtype == "int64" else (1 << 31) - 1),), v.dtype)
        clause = f" reduction({op}:{m})" + (f" reduction(|:{flag})" if nan_aware else "")
        out = [f"{indent}{{", f"{indent}    {ctype} {m} = {init};"]
        if nan_aware:
            out.append(f"{indent}    int {flag} = 0;")
        out += [f"{indent}    #pragma omp simd{clause}",
                f"{indent}    for (int64_t {it} = 0; {it} < {self.expr(s.extent)}; ++{it}) {{",
                f"{indent}        {ctype} {lv} = {self.expr(decl.init)};",
                f"{indent}        {m} = {lv} {sym} {m} ? {lv} : {m};"]
        if nan_aware:
            out.append(f"{indent}        {flag} |= {lv} != {lv};")
        out.append(f"{indent}    }}")
        out.append(f"{indent}    {a} = {m} {sym} {a} ? {m} : {a};  /* a NaN already in {a} stays */")
        if nan_aware:
            out.append(f"{indent}    if ({flag}) {a} = {c_const(float('nan'), acc.dtype)};")
        return out + [f"{indent}}}"]

    def _blocked_loop(self, s: For, indent: str, work: str) -> list[str]:
        """A loop both parallel and SIMD: threads take blocks of simd_block iterations, each block
        one SIMD loop of constant length but the last."""
        v, b, n = self.name(s.var), self.simd_block, self.expr(s.extent)
        blk, lane, size = f"kd_blk_{v}", f"kd_lane_{v}", f"kd_size_{v}"
        # the SIMD loop counts from 0 to at most b: gcc vectorizes that form best (measured)
        return [f"{indent}#pragma omp parallel for schedule(static) num_threads(kd_team) "
                f"if ({work} >= {self.parallel_min_work})",
                f"{indent}for (int64_t {blk} = 0; {blk} < ({n} + {b - 1}) / {b}; ++{blk}) {{",
                f"{indent}    const int64_t {size} = {n} - {blk} * {b} < {b} ? {n} - {blk} * {b} : {b};",
                f"{indent}    #pragma omp simd",
                f"{indent}    for (int64_t {lane} = 0; {lane} < {size}; ++{lane}) {{",
                f"{indent}        const int64_t {v} = {blk} * {b} + {lane};",
                *self.stmt(s.body, indent + "        "), f"{indent}    }}", f"{indent}}}"]

    def _reduction_clause(self, loop: For) -> str:
        """`reduction(+:acc)` for accumulators the loop's iterations update (at any depth, under
        any condition) but do not declare: without the clause a parallel loop races on them."""
        return "".join(f" reduction({'+' if op == 'add' else '*'}:{self.name(v)})"
                       for v, op in _accumulated(loop).items())

    def _Load(self, e):
        text = f"{self.name(e.tensor)}[{self.index(e.tensor, e.indices)}]"
        if e.dtype == "bool" and getattr(e.tensor, "role", "") == "input":
            return f"({text} != 0)"  # an input's bytes: numpy reads any nonzero byte as True
        return text

    # --- statements -------------------------------------------------------------------
    def stmt(self, s: Stmt, indent: str) -> list[str]:
        if isinstance(s, Seq):
            return [ln for x in s.stmts for ln in self.stmt(x, indent)]
        if isinstance(s, For):
            v = self.name(s.var)
            out = []
            extreme = extreme_update(s) if s.kind == "vectorized" else None
            if extreme is not None:
                return self._extreme_loop(s, indent, *extreme)
            if s.kind == "parallel":
                work = self.expr(simplify(loop_work(s)))
                if self.simd_block and simd_blocked(s):
                    return self._blocked_loop(s, indent, work)
                simd = " simd" if _innermost(s) and straight_line(s.body) else ""
                out.append(f"{indent}#pragma omp parallel for{simd} schedule(static){self._reduction_clause(s)} "
                           f"num_threads(kd_team) if ({work} >= {self.parallel_min_work})")
            elif s.kind == "unrolled":
                out.append(f"{indent}#pragma GCC unroll 16")
            elif s.kind == "vectorized":
                out.append(f"{indent}#pragma omp simd{self._reduction_clause(s)}")
            out.append(f"{indent}for (int64_t {v} = 0; {v} < {self.expr(s.extent)}; ++{v}) {{")
            return out + self.stmt(s.body, indent + "    ") + [f"{indent}}}"]
        if isinstance(s, Store):
            buf = s.buffer
            return [f"{indent}{self.name(buf)}[{self.index(buf, s.indices)}] = {self.expr(s.value)};"]
        if isinstance(s, Declare):
            return [f"{indent}{CTYPE[s.var.dtype]} {self.name(s.var)} = {self.expr(s.init)};"]
        if isinstance(s, Assign):
            return [f"{indent}{self.name(s.var)} = {self.expr(s.value)};"]
        if isinstance(s, Allocate):  # a local array on the stack, scoped to its block
            size = math.prod(int(d.value) for d in s.buffer.shape)
            return [f"{indent}{{", f"{indent}    {CTYPE[s.buffer.dtype]} {self.name(s.buffer)}[{size}];",
                    *self.stmt(s.body, indent + "    "), f"{indent}}}"]
        if isinstance(s, IfThenElse):
            out = [f"{indent}if ({self.expr(s.cond)}) {{", *self.stmt(s.then, indent + "    ")]
            if s.otherwise is not None:
                out += [f"{indent}}} else {{", *self.stmt(s.otherwise, indent + "    ")]
            return out + [f"{indent}}}"]
        raise TypeError(f"C codegen: unknown statement {type(s).__name__}")


def _reads(e: E.Expr) -> bool:
    """Whether evaluating `e` reads memory (a load may be out of range where its guard fails)."""
    return any(isinstance(n, (E.Load, Checked)) for n in E.walk(e))


def _local_strides(buf: Buffer) -> tuple[str, ...]:
    """Row-major strides of a local array (constant shape), as C literals."""
    dims = [int(d.value) for d in buf.shape]
    return tuple(str(math.prod(dims[k + 1:])) for k in range(len(dims)))


def _accumulated(loop: For) -> dict:
    """{accumulator: "add" | "mul"}: variables the loop's iterations update but do not declare."""
    stmts = list(leaves(loop.body))
    declared = {s.var for s in stmts if isinstance(s, Declare)}
    return {s.var: s.value.op for s in stmts
            if isinstance(s, Assign) and s.var not in declared and isinstance(s.value, E.Binary)
            and s.value.a is s.var and s.value.op in ("add", "mul")}


def simd_blocked(loop: For) -> bool:
    """A parallel loop that is also the SIMD loop (innermost, straight-line, no reduction), which
    the knob simd_block runs in blocks."""
    return loop.kind == "parallel" and _innermost(loop) and straight_line(loop.body) and not _accumulated(loop)


def _innermost(loop: For) -> bool:
    body = loop.body.stmts if isinstance(loop.body, Seq) else (loop.body,)
    return not any(isinstance(s, (For, IfThenElse)) for s in body)


def buffer_ctype(b: Buffer) -> str:
    """The element type of a buffer in generated source: a bool input is read as bytes (a C
    `bool` holding anything but 0 or 1 is undefined behaviour), and normalised where loaded."""
    return "uint8_t" if b.dtype == "bool" and b.role == "input" else CTYPE[b.dtype]


class KernelSummary:
    """One kernel of a build as `f.kernels` shows it: the scheduled kernel (its attributes pass
    through: name, op, body, template, knobs, fused, ...), a one-line summary of what runs
    (template, knobs, fused producers, threads), and `str()` with the loop nest or template
    structure that runs."""

    def __init__(self, kernel, target):
        self.kernel, self.target = kernel, target

    def __getattr__(self, name):
        return getattr(self.kernel, name)

    def threads(self) -> str:
        k = self.kernel
        # a count of 0 is the entry's per-call choice (templates/c/team.h)
        per_call = " (one instead on a call where that ran faster)"
        if k.template == "gemm":
            n = k.knobs.get("threads")
            return (f"{n or self.target.cores} thread(s) when M*N*K >= {k.knobs['parallel_min_work']}"
                    f"{'' if n else per_call}")
        par = parallel_loops(k.body)
        if not par:
            return "one thread"
        work = expr_text(simplify(loop_work(par[0])))
        blocks = f" in SIMD blocks of {k.knobs['simd_block']}" if k.knobs.get("simd_block") and simd_blocked(par[0]) \
            else ""
        return (f"loop {par[0].var.name} over {self.target.cores} thread(s){blocks} when {work} >= "
                f"{k.knobs.get('parallel_min_work', CPrinter.parallel_min_work)}{per_call}")

    def summary(self) -> str:
        k = self.kernel
        knobs = ", ".join(f"{n}={v}" for n, v in k.knobs.items())
        fused = f"; fused {', '.join(k.fused)}" if k.fused else ""
        return f"{k.name}: {k.template or 'loops'} ({knobs}){fused}; {self.threads()}"

    def __str__(self) -> str:
        return f"# {self.summary()}\n{self.kernel}"

    def __repr__(self) -> str:
        return f"<kernel {self.summary()}>"


def expr_text(e) -> str:
    from ..ir.printer import expr_str
    return expr_str(e)


def meta_layout(module: Module) -> tuple[dict, dict]:
    """Positions in the int64 meta array: sizes first, then each buffer's strides (elements)."""
    size_pos = {s: k for k, s in enumerate(module.sizes)}
    stride_pos, k = {}, len(module.sizes)
    for b in module.buffers:
        stride_pos[b] = tuple(range(k, k + b.ndim))
        k += b.ndim
    return size_pos, stride_pos


def used_names(stmt_or_expr_list) -> set:
    """Vars, SizeVars and Buffers that statements (or expressions) use: what a kernel's prologue
    must bind."""
    out: set = set()

    def ex(e):
        for n in E.walk(e):
            if isinstance(n, (E.Var, E.SizeVar)):
                out.add(n)
            elif isinstance(n, E.IndexVar):
                ex(n.extent)
            elif isinstance(n, E.Load):
                out.add(n.tensor)

    for x in stmt_or_expr_list:
        if isinstance(x, E.Expr):
            ex(x)
            continue
        for st in walk(x):
            if isinstance(st, (For, Declare, Assign)):
                out.add(st.var)
            elif isinstance(st, (Store, Allocate)):
                out.add(st.buffer)
            for c in st.children():
                if isinstance(c, E.Expr):
                    ex(c)
    return out


def source_names(module: Module) -> tuple[dict, dict]:
    """The identifiers of sizes and buffers in generated source (`s_n`, `b_A`), and of each
    buffer's strides (`st_A_0`, ...): shared by the C and CUDA renderers."""
    names: dict = {s: f"s_{s.name}" for s in module.sizes}
    strides: dict = {}
    for b in module.buffers:
        names[b] = f"b_{b.name}"
        strides[b] = tuple(f"st_{b.name}_{d}" for d in range(b.ndim))
    return names, strides


def render(module: Module, target, version: str, printer_cls=CPrinter, profile: bool = False) -> str:
    """The C translation unit of a scheduled module: one function per kernel (its template's
    code, or its loop nest), and the entry that checks ranges and runs them in order."""
    size_pos, stride_pos = meta_layout(module)
    buf_pos = {b: k for k, b in enumerate(module.buffers)}
    names, strides = source_names(module)

    def prologue(used) -> list[str]:
        lines = []
        for s in module.sizes:
            if s in used:
                lines.append(f"const int64_t {names[s]} KD_UNUSED = kd_meta[{size_pos[s]}];")
        for b in module.buffers:
            if b in used:
                const = "const " if b.role == "input" else ""
                ctype = buffer_ctype(b)
                lines.append(f"{const}{ctype} *restrict {names[b]} = ({const}{ctype} *)kd_bufs[{buf_pos[b]}];")
                for d, st in enumerate(strides[b]):
                    lines.append(f"const int64_t {st} KD_UNUSED = kd_meta[{stride_pos[b][d]}];")
        return lines

    kernels = []
    for k in module.kernels:
        used = used_names([k.body])
        local = dict(names)
        for v in sorted((v for v in used if isinstance(v, E.Var)), key=lambda v: v.name):
            local[v] = f"v_{v.name}"
        p = printer_cls(local, strides)
        p.parallel_min_work = k.knobs.get("parallel_min_work", p.parallel_min_work)
        p.simd_block = k.knobs.get("simd_block", 0)
        body = "\n".join(p.stmt(k.body, "    "))
        unit = [b for b in module.buffers if b in used and b.ndim]
        if unit:  # a copy of the nest for unit innermost strides: contiguous, vectorizable accesses
            fast = printer_cls(local, {b: st[:-1] + ("1",) if b in unit else st for b, st in strides.items()})
            fast.parallel_min_work, fast.simd_block = p.parallel_min_work, p.simd_block
            cond = " && ".join(f"{strides[b][-1]} == 1" for b in unit)
            body = "\n".join([f"    if ({cond}) {{", *fast.stmt(k.body, "        "), "    } else {",
                              *p.stmt(k.body, "        "), "    }"])
        preamble = ""
        if k.template == "gemm":  # a contraction: the GEMM template, the loop nest as its fallback
            from .gemm import render_gemm, render_micro
            body = render_gemm(k, target, local, strides, printer_cls, unit, body)
            preamble = render_micro(k, target)
        from ..ir.printer import expr_str
        comment = f"{k.op.name}[{', '.join(a.name for a in k.op.axes)}] = {expr_str(k.op.body)}"
        kernels.append({"fname": f"kd_kernel_{k.name}", "comment": comment.replace("*/", "* /"),
                        "prologue": prologue(used), "body": body, "preamble": preamble})
    p = printer_cls(names, strides)
    for info, k in zip(kernels, module.kernels):
        info["runs_if"] = "" if k.runs_if is None else p.expr(k.runs_if)
    # an index range like [0, 2**61 * (n - 1)] must not wrap around into a passing check
    p.saturate = True
    checks = [{"cond": p.expr(c.cond), "code": c.code} for c in module.checks]
    entry_used = used_names([c for c in module.checks] + [k.runs_if for k in module.kernels if k.runs_if is not None])
    entry_prologue = [f"const int64_t {names[s]} = kd_meta[{size_pos[s]}];"
                      for s in module.sizes if s in entry_used]
    prelude = environment().get_template("c/prelude.h").render()
    team = environment().get_template("c/team.h").render() if any(map(_parallel, module.kernels)) else ""
    n_meta = len(module.sizes) + sum(b.ndim for b in module.buffers)
    return environment().get_template("c/module.c.j2").render(
        version=version, prelude=prelude, kernels=kernels, checks=checks, entry_prologue=entry_prologue,
        profile=profile, team=team, n_meta=n_meta)


def parallel_loops(body) -> list:
    return [lp for lp in walk(body) if isinstance(lp, For) and lp.kind == "parallel"]


def _parallel(k) -> bool:
    """Whether a kernel runs parallel regions (on the entry's kd_team threads)."""
    return k.template == "gemm" or bool(parallel_loops(k.body))
