"""The Python side of the GEMM template (templates/c/gemm.c.j2): all the index arithmetic.

The template lays out blocking, packing buffers and the micro-kernel; this file
prints what depends on the contraction: the operands' values at a (row, k) or
(k, column) point, the store of a tile through the epilogue, and the walk over
a group of axes flattened into one GEMM dimension.

A group such as conv2d's columns (n, oh, ow) is walked in runs along its
innermost axis, so no division happens per element:

    v_n, v_oh, v_ow = decode(first column)            # once per sliver or tile
    for each run of consecutive ow:                    # a plain (SIMD) loop
        for u in range(run): ow = base + u; ...
        advance ow by the run, carrying into oh and n
"""

from __future__ import annotations

from ..ir import expr as E
from ..ir.loops import Checked
from ..ir.bounds import guard_range
from ..schedule.templates import lanes

_FMA = {  # (vector bytes, dtype) -> (preprocessor guard, GCC builtin)
    (16, "float32"): ("defined(__FMA__)", "__builtin_ia32_vfmaddps((a), (b), (c))"),
    (16, "float64"): ("defined(__FMA__)", "__builtin_ia32_vfmaddpd((a), (b), (c))"),
    (32, "float32"): ("defined(__FMA__)", "__builtin_ia32_vfmaddps256((a), (b), (c))"),
    (32, "float64"): ("defined(__FMA__)", "__builtin_ia32_vfmaddpd256((a), (b), (c))"),
    (64, "float32"): ("defined(__AVX512F__)",
                      "__builtin_ia32_vfmaddps512_mask((a), (b), (c), (unsigned short)-1, 4)"),
    (64, "float64"): ("defined(__AVX512F__)",
                      "__builtin_ia32_vfmaddpd512_mask((a), (b), (c), (unsigned char)-1, 4)"),
}


class _Printer:
    """Prints the pieces of one variant (general strides, or unit innermost strides)."""

    def __init__(self, p, plan, ctype: str, nr: int, mr: int, lanes: int):
        self.p, self.plan, self.T, self.nr, self.mr, self.lanes = p, plan, ctype, nr, mr, lanes
        self.c = plan.contraction
        self.level = 0

    def v(self, axis) -> str:
        return self.p.name(self.plan.vars[axis])

    def ext(self, axis) -> str:
        return self.p.expr(axis.extent)

    def total(self, axes) -> str:
        return " * ".join(f"({self.ext(a)})" for a in axes) if axes else "INT64_C(1)"

    # --- a group of axes flattened into one index -----------------------------------------
    def decode(self, axes, flat: str) -> list[str]:
        """Set the group's variables from a flat index (row-major)."""
        if not axes:
            return []
        if len(axes) == 1:
            return [f"{self.v(axes[0])} = {flat};"]
        out = [f"{{ int64_t kd_f = {flat};"]
        for a in reversed(axes[1:]):
            out.append(f"  {self.v(a)} = kd_f % {self.ext(a)}; kd_f /= {self.ext(a)};")
        return out + [f"  {self.v(axes[0])} = kd_f; }}"]

    def advance(self, axes) -> list[str]:
        """Step the group's variables to the next flat index, carrying."""
        if len(axes) == 1:
            return [f"++{self.v(axes[0])};"]
        text = f"++{self.v(axes[0])};"
        for a in axes[1:]:
            text = f"if (++{self.v(a)} == {self.ext(a)}) {{ {self.v(a)} = 0; {text} }}"
        return [text]

    def save(self, axes, tag: str) -> list[str]:
        return [f"const int64_t kd_{tag}{k} = {self.v(a)};" for k, a in enumerate(axes)] if len(axes) > 1 else []

    def restore(self, axes, tag: str) -> list[str]:
        return [f"{self.v(a)} = kd_{tag}{k};" for k, a in enumerate(axes)] if len(axes) > 1 else []

    def runs(self, axes, count: str, off: str, body: list[str], simd: bool, split=None) -> list[str]:
        """Walk `count` flat indices from the group's current variables; `off` counts 0.. in the body.
        `split` (from copy_runs): (bounds of the innermost variable, zero body) where the body holds
        only inside the bounds: each run is three plain loops, zeros, body, zeros, no test per element."""
        self.level += 1
        L, inner, outer = self.level, axes[-1], axes[:-1]
        vi = self.v(inner)
        pragma = ["#pragma omp simd"] if simd else []
        run = count if not outer else f"kd_run{L}"
        step = (lambda u: f"const int64_t {off} = {u};") if not outer else \
            (lambda u: f"const int64_t {off} = kd_q{L} + {u};")

        def loop(lo, hi, lines, prag):
            return [*prag, f"for (int64_t kd_u{L} = {lo}; kd_u{L} < {hi}; ++kd_u{L}) {{",
                    f"    const int64_t {vi} = kd_base{L} + kd_u{L};", "    " + step(f"kd_u{L}"),
                    *("    " + ln for ln in lines), "}"]
        def chunks(lo, hi, lines):
            """[lo, hi) in whole vectors, the last one overlapping the one before (the body is a pure
            store, so a lane stored twice stores the same value): no scalar remainder loop."""
            V = self.lanes
            return [f"if ({hi} - {lo} >= {V}) {{",
                    f"    for (int64_t kd_t{L} = {lo}; ; kd_t{L} += {V}) {{",
                    f"        if (kd_t{L} > {hi} - {V}) kd_t{L} = {hi} - {V};",
                    *("        " + ln for ln in loop(f"kd_t{L}", f"kd_t{L} + {V}", lines, pragma)),
                    f"        if (kd_t{L} + {V} >= {hi}) break;", "    }", "} else {",
                    *("    " + ln for ln in loop(lo, hi, lines, [])), "}"]
        if split is None:
            inner_loops = loop(0, run, body, pragma)
        else:
            (inv, los, his), zero = split
            lo, hi = f"kd_lo{L}", f"kd_hi{L}"
            inner_loops = [f"int64_t {lo} = 0, {hi} = {run};",
                           *([f"if (!({inv})) {hi} = 0;"] if inv else []),
                           *(f"{lo} = kd_max_i64({lo}, ({b}) - kd_base{L});" for b in los),
                           *(f"{hi} = kd_min_i64({hi}, ({b}) - kd_base{L});" for b in his),
                           f"{lo} = kd_min_i64({lo}, {run});", f"{hi} = kd_max_i64({hi}, {lo});",
                           *loop(0, lo, zero, pragma), *chunks(lo, hi, body), *loop(hi, run, zero, pragma)]
        if not outer:  # one axis: one run
            out = [f"{{ const int64_t kd_base{L} = {vi};", *inner_loops, "}"]
        else:
            carry = self.advance(outer)[0]
            out = [f"for (int64_t kd_q{L} = 0; kd_q{L} < {count}; ) {{",
                   f"    const int64_t kd_run{L} = kd_min_i64({count} - kd_q{L}, {self.ext(inner)} - {vi});",
                   f"    const int64_t kd_base{L} = {vi};",
                   *("    " + ln for ln in inner_loops),
                   f"    kd_q{L} += kd_run{L};",
                   f"    {vi} += kd_run{L};",
                   f"    if ({vi} == {self.ext(inner)}) {{ {vi} = 0; {carry} }}", "}"]
        self.level -= 1
        return out

    def copy_runs(self, axes, count: str, off: str, dest: str, value: E.Expr) -> list[str]:
        """runs() storing `dest = value`; a padded read `where(lo <= v < hi, x[v], 0)` along the
        run's variable is split into its zero and copy ranges, so the copy is a plain vector loop."""
        simd = not _checked(value)
        var = self.plan.vars[axes[-1]]
        bounds = guard_range(value.cond, var) if simd and isinstance(value, E.Select) else None
        if bounds is None or not isinstance(value.b, E.Const):
            return self.runs(axes, count, off, [f"{dest} = {self.p.expr(value)};"], simd)
        (inv, los, his), then = bounds, value.a
        inv_c = " && ".join(f"({self.p.expr(g)})" for g in inv)
        split = ((inv_c, [self.p.expr(b) for b in los], [self.p.expr(b) for b in his]),
                 [f"{dest} = {self.p.expr(value.b)};"])
        return self.runs(axes, count, off, [f"{dest} = {self.p.expr(then)};"], True, split)

    # --- the pieces -----------------------------------------------------------------------
    def pack_a(self) -> list[str]:
        c = self.c
        return self._either(_walk_choice(self.plan.a, self.plan.vars, c.m, c.k, self.ext),
                            self._pack_a_along_m, self._pack_a_along_k)

    def _pack_a_along_m(self) -> list[str]:  # A[k, m]: walk the rows per k
        c, mr, value = self.c, self.mr, self.plan.a
        per_k = [*self.restore(c.m, "sm"),
                 *self.copy_runs(c.m, "kd_mcur", "kd_r",
                                 f"kd_ap[(kd_r / {mr}) * {mr} * kd_kc + kd_k * {mr} + kd_r % {mr}]", value),
                 *self.advance(c.k)]
        return [*self.decode(c.m, "kd_ic"), *self.save(c.m, "sm"), *self.decode(c.k, "kd_pc"),
                "for (int64_t kd_k = 0; kd_k < kd_kc; ++kd_k) {", *_ind(per_k), "}", *self._pad_a()]

    def _pack_a_along_k(self) -> list[str]:  # A[m, k]: walk K per row
        c, T, mr = self.c, self.T, self.mr
        row = [f"{T} *restrict kd_d = kd_ap + (kd_r / {mr}) * {mr} * kd_kc + kd_r % {mr};",
               *self.decode(c.k, "kd_pc"),
               "for (int64_t kd_k = 0; kd_k < kd_kc; ++kd_k) {",
               f"    kd_d[kd_k * {mr}] = {self.p.expr(self.plan.a)};",
               *("    " + ln for ln in self.advance(c.k)), "}"]
        return [*self.decode(c.m, "kd_ic"), *self.runs(c.m, "kd_mcur", "kd_r", row, False), *self._pad_a()]

    def _pad_a(self) -> list[str]:
        T, mr = self.T, self.mr
        return [f"for (int64_t kd_r = kd_mcur; kd_r % {mr}; ++kd_r) {{",
                f"    {T} *restrict kd_d = kd_ap + (kd_r / {mr}) * {mr} * kd_kc + kd_r % {mr};",
                f"    for (int64_t kd_k = 0; kd_k < kd_kc; ++kd_k) kd_d[kd_k * {mr}] = 0;", "}"]

    def pack_b(self) -> list[str]:
        c = self.c
        choice = _walk_choice(self.plan.b, self.plan.vars, c.k, c.n, self.ext) if c.k else False
        return self._either(choice, self._pack_b_along_k, self._pack_b_along_n)

    def _either(self, choice, walk, other) -> list[str]:
        """`walk` or `other`, or both behind the run-time test `choice` (a C condition)."""
        if isinstance(choice, bool):
            return walk() if choice else other()
        return [f"if ({choice}) {{", *_ind(walk()), "} else {", *_ind(other()), "}"]

    def _pack_b_along_k(self) -> list[str]:  # B[n, k]: walk K per column
        c, T, nr, value = self.c, self.T, self.nr, self.plan.b
        per_col = [f"{T} *restrict kd_d = kd_d0 + kd_c;", *self.decode(c.k, "kd_pc"),
                   *self.copy_runs(c.k, "kd_kc", "kd_k", f"kd_d[kd_k * {nr}]", value),
                   *self.advance(c.n)]
        return [f"for (int64_t kd_s = 0; kd_s * {nr} < kd_ncur; ++kd_s) {{",
                f"    {T} *restrict kd_d0 = kd_bp + kd_s * {nr} * kd_kc;",
                f"    const int64_t kd_nv = kd_min_i64({nr}, kd_ncur - kd_s * {nr});",
                *_ind(self.decode(c.n, f"kd_jc + kd_s * {nr}")),
                "    for (int64_t kd_c = 0; kd_c < kd_nv; ++kd_c) {", *_ind(_ind(per_col)), "    }",
                "    for (int64_t kd_k = 0; kd_k < kd_kc; ++kd_k)",
                f"        for (int64_t kd_c = kd_nv; kd_c < {nr}; ++kd_c) kd_d0[kd_k * {nr} + kd_c] = 0;",
                "}"]

    def _pack_b_along_n(self) -> list[str]:  # B[k, n]: walk the columns per k
        c, T, nr, value = self.c, self.T, self.nr, self.plan.b
        per_k = [f"{T} *restrict kd_d = kd_d0 + kd_k * {nr};", *self.restore(c.n, "sn"),
                 *self.copy_runs(c.n, "kd_nv", "kd_c", "kd_d[kd_c]", value),
                 f"for (int64_t kd_c = kd_nv; kd_c < {nr}; ++kd_c) kd_d[kd_c] = 0;",
                 *self.advance(c.k)]
        return [f"for (int64_t kd_s = 0; kd_s * {nr} < kd_ncur; ++kd_s) {{",
                f"    {T} *restrict kd_d0 = kd_bp + kd_s * {nr} * kd_kc;",
                f"    const int64_t kd_nv = kd_min_i64({nr}, kd_ncur - kd_s * {nr});",
                *("    " + ln for ln in self.decode(c.n, f"kd_jc + kd_s * {nr}")),
                *("    " + ln for ln in self.save(c.n, "sn")),
                *("    " + ln for ln in self.decode(c.k, "kd_pc")),
                "    for (int64_t kd_k = 0; kd_k < kd_kc; ++kd_k) {",
                *("        " + ln for ln in per_k), "    }", "}"]

    def store(self, final: bool = False) -> list[str]:
        """The tile into C; `final`: the one store of a finished tile (split K's last pass)."""
        c, st = self.c, self.plan.store
        p, T = self.p, self.T
        idx = p.index(st.buffer, st.indices)
        cbuf = f"{p.name(st.buffer)}[{idx}]"
        tile = f"kd_tile[kd_r * {self.nr} + kd_c]"
        epi = p.expr(st.value)
        simd = not _checked(st.value)

        def walk(lines, simd_ok, mv="kd_mv", nv="kd_nv"):
            cols = [*self.restore(c.n, "tn"), *self.runs(c.n, nv, "kd_c", lines, simd_ok)]
            return [*self.decode(c.m, "kd_ic + kd_ir"), *self.runs(c.m, mv, "kd_r", cols, False)]

        def both(lines, simd_ok):  # full tiles with constant trip counts: unrolled, vectorized
            return [f"if (kd_mv == {self.mr} && kd_nv == {self.nr}) {{",
                    *_ind(walk(lines, simd_ok, str(self.mr), str(self.nr))), "} else {",
                    *_ind(walk(lines, simd_ok)), "}"]
        last_first = [f"const {T} kd_acc = {tile};", f"{cbuf} = {epi};"]
        last_more = [f"const {T} kd_acc = {cbuf} + {tile};", f"{cbuf} = {epi};"]
        partial = [f"{cbuf} = kd_first ? {tile} : {cbuf} + {tile};"]
        if final:
            return [*self.decode(c.n, "kd_jc + kd_jr"), *self.save(c.n, "tn"), *both(last_first, simd)]
        return [*self.decode(c.n, "kd_jc + kd_jr"), *self.save(c.n, "tn"),
                "if (kd_last && kd_first) {", *_ind(both(last_first, simd)),
                "} else if (kd_last) {", *_ind(both(last_more, simd)),
                "} else {", *_ind(both(partial, True)), "}"]

    def pieces(self, cond: str | None) -> dict:
        return {"cond": cond, "decode_batch": "\n".join(self.decode(self.c.batch, "kd_bi")),
                "pack_a": "\n".join(self.pack_a()), "pack_b": "\n".join(self.pack_b()),
                "store": "\n".join(self.store()), "store_final": "\n".join(self.store(final=True))}


def _ind(lines: list[str]) -> list[str]:
    return ["    " + ln for ln in lines]


def _walk_choice(e: E.Expr, vars_: dict, walk: tuple, other: tuple, ext) -> bool | str:
    """Whether the operand's reads are contiguous along `walk`'s innermost axis rather than along
    `other`'s: every load's last index reads that axis, and either not `other`'s innermost axis or
    one of shorter extent (conv2d's dW reads X[n, c, ry + y, rx + x]: runs of x, not rx). Where
    that depends on sizes known only at run time, the C condition that decides it."""
    if not walk or not other:
        return False
    w, o = walk[-1], other[-1]
    loads = [n for n in E.walk(e) if isinstance(n, E.Load) and n.indices]
    if not loads:
        return False
    both = False
    for ld in loads:
        used = set(E.walk(ld.indices[-1]))
        if vars_[w] not in used:
            return False
        both = both or vars_[o] in used
    if not both:
        return True
    if isinstance(o.extent, E.Const) and isinstance(w.extent, E.Const):
        return o.extent.value < w.extent.value
    # a filter's few taps against an image's symbolic width (or the reverse): the image is the
    # longer run but for a tiny image, where either walk is cheap; one walk printed, not two
    if isinstance(o.extent, E.Const) and o.extent.value <= SHORT_WINDOW:
        return True
    if isinstance(w.extent, E.Const) and w.extent.value <= SHORT_WINDOW:
        return False
    return f"{ext(o)} < {ext(w)}"


SHORT_WINDOW = 8  # a constant extent this short is a filter window, shorter than the run it slides along


def _checked(e: E.Expr) -> bool:
    return any(isinstance(n, Checked) for n in E.walk(e))


def _micro_name(kernel, target) -> str:
    k = kernel.knobs
    return f"{'f32' if kernel.op.dtype == 'float32' else 'f64'}_{k['mr']}x{k['nr']}_v{target.vector_bytes}"


def render_micro(kernel, target) -> str:
    """The micro-kernel a GEMM kernel calls (file scope, once per tile shape in a module)."""
    from .c import CTYPE, environment
    dtype, k = kernel.op.dtype, kernel.knobs
    n = lanes(target, dtype)
    guard, builtin = _FMA[(target.vector_bytes, dtype)]
    return environment().get_template("c/gemm_micro.c.j2").render(
        name=_micro_name(kernel, target), T=CTYPE[dtype], mr=k["mr"], nr=k["nr"], nv=k["nr"] // n, lanes=n,
        vbytes=target.vector_bytes, fma_guard=guard, fma_builtin=builtin)


def render_gemm(kernel, target, names: dict, strides: dict, printer_cls, unit: list, fallback: str) -> str:
    """The body of a contraction kernel (after the prologue): the GEMM, else the loop nest."""
    from .c import CTYPE, environment
    plan, k = kernel.plan, kernel.knobs
    c = plan.contraction
    dtype = kernel.op.dtype
    # the plan names the plain nest's variables; the fallback nest may have been rescheduled
    names = {**{v: f"v_{v.name}" for v in plan.vars.values()}, **names, plan.acc: "kd_acc"}
    general = printer_cls(names, strides)
    n = lanes(target, dtype)
    # The GEMM reads and writes its arrays with unit innermost strides: contiguous packing reads
    # and SIMD epilogue stores. Any other stride runs the loop nest (the callable copies such an
    # input first: runtime/callable.py); a second GEMM for general strides doubled the kernel's
    # source and its compile time.
    fast = printer_cls(names, {b: st[:-1] + ("1",) if b in unit else st for b, st in strides.items()}) \
        if unit else general
    cond = " && ".join(f"{strides[b][-1]} == 1" for b in unit) or None
    variant = _Printer(fast, plan, CTYPE[dtype], k["nr"], k["mr"], n).pieces(cond)
    pr = _Printer(general, plan, CTYPE[dtype], k["nr"], k["mr"], n)
    axes = [*c.op.axes, *c.k]
    return environment().get_template("c/gemm.c.j2").render(
        k=k, T=CTYPE[dtype], id=kernel.name, micro=_micro_name(kernel, target), isa=target.isa,
        nb=pr.total(c.batch), m=pr.total(c.m),
        n=pr.total(c.n), kk=pr.total(c.k), parallel_min_work=k["parallel_min_work"],
        axis_decls=", ".join(f"{pr.v(a)} = 0" for a in axes), v=variant, fallback=fallback)
