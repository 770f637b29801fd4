"""The GPU side of scheduling: which CUDA template a kernel's loop nest fits, and its plan.

grid_stride: the outer loops that form a box (a perfect nest) are flattened into one linear
index covered by a grid-stride loop; what is inside runs on one thread per point. When the
innermost loop writes and reads along its own, contiguous dimension, 16-byte vector accesses
move `lanes` neighbouring points at once (`VectorPlan`).

row_reduce: a per-row body made of accumulator declarations, reductions (sum/max/min of one
accumulator) over the row's contiguous dimension, data-parallel loops over the row and per-row
stores (softmax, log-softmax, layer norm, a sum over trailing axes) gets one block per row. A
reduction over several contiguous axes is first flattened into one loop (`flatten_reductions`),
so that the block shares all of it.

Everything here reads the loop nest; codegen/cuda.py prints what these plans say.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ScheduleError
from ..ir import expr as E
from ..ir.loops import Assign, Declare, For, IfThenElse, Seq, Stmt, Store, exprs, loops, walk
from .primitives import find, fuse, outer_updates

BOUND_KINDS = tuple(f"{level}_{a}" for level in ("block", "thread") for a in "xyz")
ROW_COMBINERS = ("sum", "max", "min")
ROW_DTYPES = ("float32", "float64", "int32", "int64")
ITEMSIZE = {"float32": 4, "int32": 4, "float64": 8, "int64": 8}
VECTOR_TYPES = {("float32", 4): "float4", ("float32", 2): "float2", ("int32", 4): "int4", ("int32", 2): "int2",
                ("float64", 2): "double2", ("int64", 2): "longlong2"}


def bound_loops(body: Stmt) -> list:
    return [lp for lp in loops(body) if lp.kind in BOUND_KINDS]


def check_bound(kernel: str, body: Stmt) -> None:
    """A bound loop runs its iterations on different threads: none may update an outer scalar."""
    for lp in bound_loops(body):
        bad = outer_updates(lp)
        if bad:
            raise ScheduleError(f"kernel {kernel}: loop {lp.var.name!r} is bound to {lp.kind} but is a "
                                f"reduction loop (it updates {bad[0].name}); bind only data-parallel loops")


def perfect_nest(body: Stmt):
    """The outer loops that form a box (a perfect nest, extents free of their variables), and
    the statement inside them. Those loops are data parallel: nothing is declared outside them."""
    nest, s = [], body
    while isinstance(s, For) and s.kind not in BOUND_KINDS:
        if {lp.var for lp in nest} & set(E.walk(s.extent)):
            break
        nest.append(s)
        s = s.body
    return nest, s


def combiner(loop: For, acc: E.Var) -> str | None:
    """sum / max / min when every update of `acc` in `loop` has the shape lowering gives it."""
    kinds, guarded = set(), set()
    for n in walk(loop.body):
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
    for n in walk(loop.body):
        if isinstance(n, Assign) and n.var is acc and n not in guarded:
            v = n.value
            if not (isinstance(v, E.Binary) and v.op == "add" and v.a is acc and acc not in set(E.walk(v.b))):
                return None
            kinds.add("sum")
    return kinds.pop() if len(kinds) == 1 else None


def contiguous(loop: For) -> bool:
    """The loop variable indexes only the last (contiguous) dimension of what the loop reads."""
    return not any(isinstance(n, E.Load) and any(loop.var in set(E.walk(ix)) for ix in n.indices[:-1])
                   for n in exprs(loop.body))


def _only_loop(s: Stmt):
    """The loop that is the whole of `s`, or None."""
    if isinstance(s, Seq) and len(s.stmts) == 1:
        s = s.stmts[0]
    return s if isinstance(s, For) and s.kind not in BOUND_KINDS else None


def flatten_reductions(body: Stmt) -> tuple[Stmt, set]:
    """A reduction over several axes (sum(X[n, c, h, w]) over c, h, w) becomes one loop over
    their product, so that the threads of a row block share all of it. Loops are fused from the
    innermost pair out and only when the innermost is contiguous: neighbouring threads then read
    neighbouring elements. Returns the body and the variables of the flattened loops."""
    flattened: set = set()
    while True:
        _, inner = perfect_nest(body)
        for st in inner.stmts if isinstance(inner, Seq) else (inner,):
            if not (isinstance(st, For) and st.kind not in BOUND_KINDS and outer_updates(st)):
                continue
            outer, nested = st, _only_loop(st.body)
            while nested is not None and _only_loop(nested.body) is not None:
                outer, nested = nested, _only_loop(nested.body)
            if nested is not None and (nested.var in flattened or contiguous(nested)) \
                    and outer.var not in set(E.walk(nested.extent)):
                body, name = fuse(body, outer.var.name, nested.var.name)
                flattened.add(find(body, name).var)
                break
        else:
            return body, flattened


@dataclass(frozen=True)
class RowStep:
    kind: str  # stmt | reduce | parallel | store
    stmt: Stmt
    acc: E.Var | None = None  # reduce: the accumulator, its combiner and initial value
    combiner: str = ""
    init: E.Expr | None = None


def row_plan(body: Stmt, flattened=frozenset(), min_extent: int = 1):
    """The steps of a row kernel (inside its perfect nest of row loops), or None."""
    _, inner = perfect_nest(body)
    stmts = inner.stmts if isinstance(inner, Seq) else (inner,)
    plan, decls, reduces = [], {}, 0
    for st in stmts:
        if isinstance(st, Declare):
            decls[st.var] = st
            plan.append(RowStep("stmt", st))
        elif isinstance(st, Store):
            plan.append(RowStep("store", st))
        elif isinstance(st, For) and st.kind not in BOUND_KINDS:
            accs = outer_updates(st)
            if not accs:
                plan.append(RowStep("parallel", st))
                continue
            if len(accs) != 1:
                return None
            acc = accs[0]
            comb = combiner(st, acc)
            if acc not in decls or comb is None or acc.dtype not in ROW_DTYPES or \
                    not (st.var in flattened or contiguous(st)):
                return None
            if isinstance(st.extent, E.Const) and st.extent.value < min_extent:
                return None  # a short window (pooling): a thread per output does better than a block
            plan.append(RowStep("reduce", st, acc, comb, decls[acc].init))
            reduces += 1
        else:
            return None
    return tuple(plan) if reduces else None


@dataclass(frozen=True)
class VectorPlan:
    """A grid-stride kernel whose store and unguarded loads move `lanes` neighbouring elements of
    the innermost loop per access (16 bytes of the stored dtype): float4, double2, ..."""
    lanes: int
    store: Store
    loads: tuple  # the Load nodes read as vectors (others stay scalar, per lane)


def vector_plan(body: Stmt) -> VectorPlan | None:
    """A single store whose last index is the innermost loop variable (and no other index uses
    it) vectorizes; so does every load like it that is always evaluated (not under a select
    branch, not a checked gather), when its element size fits the same lanes."""
    nest, inner = perfect_nest(body)
    if not nest or not isinstance(inner, Store) or not inner.indices or inner.buffer.dtype not in ITEMSIZE:
        return None
    j = nest[-1].var
    lanes = 16 // ITEMSIZE[inner.buffer.dtype]

    def along_j(indices) -> bool:
        return bool(indices) and indices[-1] is j and not any(j in set(E.walk(ix)) for ix in indices[:-1])
    if not along_j(inner.indices):
        return None
    found: list = []
    seen: set = set()

    def visit(e, guarded: bool):
        if (e, guarded) in seen:  # a DAG: each node once per context
            return
        seen.add((e, guarded))
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
