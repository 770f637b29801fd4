"""Contractions: recognise `epilogue(sum(k..., A[...] * B[...]))` and plan a GEMM kernel for it.

A compute op is a contraction when its body is an elementwise epilogue of one
sum whose body is a product of factors that split into two operands:

    C[i, j]          = sum(r, A[i, r] * B[r, j])                         matmul
    C[b, i, j]       = sum(r, A[b, i, r] * B[b, r, j])                   batched: b read by both
    Y[i, j]          = tanh(sum(r, X[i, r] * W[r, j]) + bias[j])         dense + epilogue
    Y[n, co, oh, ow] = sum((ci, kh, kw), where(inside, X[n, ci, oh + kh - 1, ow + kw - 1], 0)
                                          * W[co, ci, kh, kw])          conv2d, implicit GEMM

The output axes split by which operand reads them: read by the column operand
B only -> N (columns), by A only (or by neither) -> M (rows), by both -> batch.
B is the operand reading the output's last axis, so that C's columns are its
contiguous direction (for NCHW conv2d: A = W, M = co, N = (n, oh, ow), and B is
the im2col view of X, read through its index expressions when packed).

`plan_gemm(kernel)` finds the pieces of a kernel's plain loop nest that the GEMM
templates (templates/c/gemm.c.j2, templates/cuda/gemm.cu.j2) print; the `template`
step of a schedule attaches it with its knobs (schedule/templates.py). The loop
nest stays in `Kernel.body`: the loop-IR interpreter and the CPU template's
fallback for small work use it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..ir import expr as E
from ..ir.bounds import interval
from ..errors import ScheduleError
from ..ir.loops import Assign, Checked, Declare, For, IfThenElse, Seq, Store, stmt_lines
from ..ir.simplify import simplify
from ..ir.tensor import ComputeOp

FLOATS = ("float32", "float64")


@dataclass(frozen=True)
class Contraction:
    """`op[batch, m, n] = epilogue(sum(k, a * b))`, with a over (batch, m, k) and b over (batch, n, k).

    `m`, `n`, `batch` list the op's axes (each group in the op's order), `k` the reduce axes;
    `epilogue` is the op's body with the sum replaced by `acc`. A sum's `where=cond` (autodiff's
    padding and stride guards) becomes `where(cond, x, 0)` on the operand `guarded` whose axes the
    condition reads: `sum(k, a * b, where=cond) = sum(k, where(cond, a, 0) * b)` for finite b.
    """
    op: ComputeOp
    batch: tuple
    m: tuple
    n: tuple
    k: tuple
    a: E.Expr
    b: E.Expr
    reduce: E.Reduce
    acc: E.Var
    epilogue: E.Expr
    guarded: str = ""  # "a" or "b": the operand the sum's `where=` moved onto, as where(cond, x, 0)

    def __str__(self) -> str:
        names = lambda axes: "(" + ", ".join(a.name for a in axes) + ")"
        return (f"contraction {self.op.name}: batch {names(self.batch)}, M {names(self.m)}, "
                f"N {names(self.n)}, K {names(self.k)}; A = {self.a}; B = {self.b}; "
                f"C = {self.epilogue}")


def _factors(e: E.Expr) -> list:
    """The factors of a product tree, left to right."""
    if isinstance(e, E.Binary) and e.op == "mul":
        return _factors(e.a) + _factors(e.b)
    return [e]


def _product(factors: list) -> E.Expr:
    out = factors[0]
    for f in factors[1:]:
        out = E.Binary("mul", out, f, out.dtype)
    return out


def _axes_in(e: E.Expr) -> set:
    return {n for n in E.walk(e) if isinstance(n, E.IndexVar)} | {
        a for n in E.walk(e) if isinstance(n, E.IndexVar) for a in _axes_in(n.extent)}


def match(op: ComputeOp) -> Contraction | None:
    """The contraction `op` computes, or None when it is not one (then it stays a loop nest)."""
    if not isinstance(op, ComputeOp) or op.dtype not in FLOATS or not op.axes:
        return None
    reduces = [n for n in E.walk(op.body) if isinstance(n, E.Reduce)]
    if len(reduces) != 1:
        return None
    red = reduces[0]
    if red.combiner != "sum" or red.dtype != op.dtype:
        return None
    if red.cond is not None and any(isinstance(n, (E.Load, E.Reduce)) for n in E.walk(red.cond)):
        return None
    if _under_select(op.body, red):  # a guarded sum is computed only where its guard holds
        return None
    axes, kaxes = tuple(op.axes), tuple(red.axes)
    for a in kaxes:  # a rectangular iteration space: extents made of sizes only
        if _axes_in(a.extent):
            return None
    factors = _factors(red.body)
    if len(factors) < 2 or any(f.dtype != op.dtype for f in factors):
        return None
    if any(isinstance(n, E.Reduce) for f in factors for n in E.walk(f)):
        return None
    uses = [_axes_in(f) & set(axes) for f in factors]
    last = axes[-1]
    in_b = [last in u for u in uses]
    if not any(in_b) or all(in_b):
        return None
    a_f = [f for f, b in zip(factors, in_b) if not b]
    b_f = [f for f, b in zip(factors, in_b) if b]
    a_axes = set().union(*(u for u, b in zip(uses, in_b) if not b))
    b_axes = set().union(*(u for u, b in zip(uses, in_b) if b))
    batch = tuple(a for a in axes if a in a_axes and a in b_axes)
    n = tuple(a for a in axes if a in b_axes and a not in a_axes)
    m = tuple(a for a in axes if a not in b_axes)
    if not m or not n or any(a in batch for a in (last,)):
        return None
    a, b, guarded = _product(a_f), _product(b_f), ""
    if red.cond is not None:  # sum(k, a * b, where=cond) -> sum(k, where(cond, a, 0) * b)
        cond_axes = _axes_in(red.cond)
        for side, f in (("a", a), ("b", b)):
            if cond_axes <= _axes_in(f):
                guarded = side
                break
        else:
            return None  # the guard reads axes of both operands: not one operand's padding
        zero = E.Const(0.0, op.dtype)
        if guarded == "a":
            a = E.Select(red.cond, a, zero, op.dtype)
        else:
            b = E.Select(red.cond, b, zero, op.dtype)
    acc = E.Var("acc", op.dtype)
    epilogue = E.substitute(op.body, {red: acc})
    return Contraction(op, batch, m, n, kaxes, a, b, red, acc, epilogue, guarded)


def _under_select(body: E.Expr, red: E.Reduce) -> bool:
    found = False
    seen: set = set()

    def visit(n, guarded):
        nonlocal found
        if (n, guarded) in seen:  # a DAG: each node once per context
            return
        seen.add((n, guarded))
        if n is red:
            found = found or guarded
            return
        kids = n.children()
        for k, c in enumerate(kids):
            visit(c, guarded or (isinstance(n, E.Select) and k > 0))
    visit(body, False)
    return found


# --- planning: a lowered kernel gets the template ----------------------------------------------

@dataclass(frozen=True, eq=False)
class GemmPlan:
    """The loop-IR side of a contraction: what the template's packing and stores print."""
    contraction: Contraction
    vars: dict  # IndexVar -> loop Var
    a: E.Expr  # loop-IR operands (Buffers, loop Vars, checked indices as lowering made them)
    b: E.Expr
    acc: E.Var  # the accumulator the epilogue reads
    store: Store  # the loop nest's store: C's buffer, indices and epilogue value

    def describe(self, kernel) -> list[str]:
        """What runs, in the loop notation of the plain nests (templates/*/gemm.*.j2 do this)."""
        c, k = self.contraction, kernel.knobs
        names = lambda axes: ", ".join(a.name for a in axes) or "-"  # noqa: E731
        lines = [f"# GEMM: batch ({names(c.batch)}), M ({names(c.m)}), N ({names(c.n)}), K ({names(c.k)})",
                 f"#   A[m, k] = {c.a}", f"#   B[k, n] = {c.b}"]
        if "mr" in k:  # the CPU's packed GEMM
            team = f"{k['threads']} threads" if k["threads"] else "all threads, or one on a call where that ran faster"
            lines += [
                f"for work item in batch x slices of M, N or K:  # parallel ({team}) "
                f"when M*N*K >= {k['parallel_min_work']}; K when min(M, N) * K * (threads - 1) > 4 * threads * M * N",
                f"  for jc in range(0, N, {k['nc']}):",
                f"    for pc in range(0, K, {k['kc']}):",
                f"      pack B[pc:pc+{k['kc']}, jc:jc+{k['nc']}] into {k['nr']}-column slivers",
                f"      for ic in range(0, M, {k['mc']}):",
                f"        pack A[ic:ic+{k['mc']}, pc:pc+{k['kc']}] into {k['mr']}-row slivers",
                f"        for jr, ir: {k['mr']}x{k['nr']} register tile += A sliver x B sliver  # FMA",
                f"        on the last K block: {self.store_text()}  (split K: into the thread's partial C; "
                f"then, the partials added, tile by tile)",
                f"# below M*N*K = {k['min_work']}, or M or N below {k['min_side']}, the loop nest:"]
            return lines + ["#   " + ln for ln in stmt_lines(kernel.body)]
        bm, bn, bk, tm, tn = (k[f"gemm_{x}"] for x in ("bm", "bn", "bk", "tm", "tn"))
        return lines + [
            f"for block tile in batch x M/{bm} x N/{bn}:  # blockIdx.x (grid-stride, at most {k['max_blocks']} blocks)",
            f"  for kb in range(0, K, {bk}):  # {k['gemm_stages']} shared-memory stage(s)",
            f"    load A[{bm}x{bk}], B[{bk}x{bn}] slices into shared memory",
            f"    {(bm // tm) * (bn // tn)} threads: {tm}x{tn} register tile += A x B  # threadIdx.x",
            f"  {self.store_text()}"]

    def store_text(self) -> str:
        s = self.store
        value = E.substitute(s.value, {self.acc: E.Var("acc", self.acc.dtype)})
        return f"{s.buffer.name}[{', '.join(map(str, s.indices))}] = {value}"


def plan_gemm(kernel) -> GemmPlan:
    """The GEMM plan of a kernel's plain loop nest; ScheduleError saying why when there is none."""
    c = match(kernel.op)
    if c is None:
        raise ScheduleError(f"kernel {kernel.name} is not a contraction (an elementwise epilogue of one sum "
                            f"of a product of two operands), so the gemm template cannot run it")
    p = _lowered(kernel.body, c)
    if p is None:
        raise ScheduleError(f"kernel {kernel.name}: the gemm template needs the kernel's plain loop nest; "
                            f"choose it before loop primitives")
    return p


def _lowered(body, c: Contraction) -> GemmPlan | None:
    """Find the pieces of the default loop nest: the op's loops, the accumulation and the store."""
    vars_, s = {}, body
    for a in c.op.axes:
        if not isinstance(s, For) or s.extent is not a.extent:
            return None
        vars_[a] = s.var
        s = s.body
    stmts = s.stmts if isinstance(s, Seq) else (s,)
    if len(stmts) != 3 or not isinstance(stmts[0], Declare) or not isinstance(stmts[1], For) \
            or not isinstance(stmts[2], Store):
        return None
    acc, r, store = stmts[0].var, stmts[1], stmts[2]
    for a in c.k:
        if not isinstance(r, For) or r.extent is not a.extent:
            return None
        vars_[a] = r.var
        r = r.body
    guard = None
    if c.guarded and isinstance(r, IfThenElse) and r.otherwise is None:  # if (cond) acc = acc + a * b
        guard, r = r.cond, r.then
    if not (isinstance(r, Assign) and r.var is acc and isinstance(r.value, E.Binary)
            and r.value.op == "add" and r.value.a is acc):
        return None
    term = r.value.b
    if c.guarded and guard is None:  # the sum's `where=` as lowering printed it: acc + where(cond, a * b, 0)
        if not (isinstance(term, E.Select) and isinstance(term.b, E.Const) and term.b.value == 0):
            return None
        guard, term = term.cond, term.a
    tensor_f, loop_f = _factors(c.reduce.body), _factors(term)
    if len(tensor_f) != len(loop_f):
        return None
    a_ids = {id(f) for f in _factors(c.a.a if c.guarded == "a" else c.a)}
    # the operands of the loop nest, factor for factor (lowering keeps the expression's shape)
    in_a = [id(f) in a_ids for f in tensor_f]
    axis_of = {v: a for a, v in vars_.items()}
    a = _product([f for f, x in zip(loop_f, in_a) if x])
    b = _product([f for f, x in zip(loop_f, in_a) if not x])
    if guard is not None:
        zero = E.Const(0.0, c.op.dtype)
        if c.guarded == "a":
            a = E.Select(guard, a, zero, a.dtype)
        else:
            b = E.Select(guard, b, zero, b.dtype)
    a, b = _drop_proven_checks(a, axis_of), _drop_proven_checks(b, axis_of)
    store = Store(store.buffer, store.indices, _drop_proven_checks(store.value, axis_of))
    return GemmPlan(c, vars_, a, b, acc, store)


# --- checks that cannot fail ------------------------------------------------------------------
# Lowering checks every index read under a `where` per element (kd_chk), since it cannot know
# which points are read. Packing reads operands once per element, so a check costs as much as
# the read and keeps the loop scalar. A check is dropped when it provably never fails: its
# range over the axes lies inside the dimension, or the `where` guarding the read says so.
# Conv2d's padding: where((y + kh - 1 >= 0) & (y + kh - 1 < h) & ..., X[n, c, y + kh - 1, ...], 0)
# guards exactly the index it checks; n and c range over the axes of X's own sizes.

def _facts(cond: E.Expr) -> set:
    """The conjuncts of an integer condition, each as the canonical `e` of `e >= 0`."""
    if isinstance(cond, E.Binary) and cond.op == "and" and cond.dtype == "bool":
        return _facts(cond.a) | _facts(cond.b)
    if isinstance(cond, E.Binary) and cond.op in ("ge", "gt", "le", "lt") and cond.a.dtype == "int64":
        a, b = (cond.a, cond.b) if cond.op in ("ge", "gt") else (cond.b, cond.a)
        return {simplify(a - b - 1 if cond.op in ("gt", "lt") else a - b)}
    return set()


def _proven(chk: Checked, facts: set, axis_of: dict) -> bool:
    index, extent = chk.index, chk.extent
    rng = interval(E.substitute(index, axis_of)) if not any(
        isinstance(n, (E.Load, Checked)) for n in E.walk(index)) else None
    lo_ok = simplify(index) in facts or (rng is not None and _true(rng[0] >= 0))
    hi_ok = simplify(extent - 1 - index) in facts or (rng is not None and _true(rng[1] < extent))
    return lo_ok and hi_ok


def _true(cond: E.Expr) -> bool:
    c = simplify(cond)
    return isinstance(c, E.Const) and bool(c.value)


def _drop_proven_checks(e: E.Expr, axis_of: dict, facts: frozenset = frozenset()) -> E.Expr:
    if isinstance(e, Checked):
        index = _drop_proven_checks(e.index, axis_of, facts)
        chk = Checked(index, e.extent, e.code)
        return index if _proven(chk, facts, axis_of) else chk
    if isinstance(e, E.Select):
        cond = _drop_proven_checks(e.cond, axis_of, facts)
        a = _drop_proven_checks(e.a, axis_of, facts | _facts(e.cond))
        b = _drop_proven_checks(e.b, axis_of, facts)
        return E.Select(cond, a, b, e.dtype)
    kids = e.children()
    if not kids:
        return e
    new = tuple(_drop_proven_checks(k, axis_of, facts) for k in kids)
    return e if all(x is y for x, y in zip(kids, new)) else E.rebuild(e, new)
