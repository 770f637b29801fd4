"""Fusion: partition the tensor graph into kernels by inlining producers into consumers.

An elementwise/injective producer (a compute op with no reduction in its body)
is inlined into its consumer when it has exactly one consumer and is not an
output: its body is substituted at the load, so no intermediate array exists.
A view (one plain read: a copy, a broadcast) and a cheap producer (a few
arithmetic operations on plain reads: a bias add) are inlined into every
consumer: recomputing them costs a few reads, storing them a pass over memory.
A reduction is inlined into its single consumer when that reads it only at the
consumer's own point (`lse[i] = log(s[i])`): the epilogue joins the reduction.
Otherwise one consumer keeps "each producer computed once" true: a costly
producer shared by several consumers stays a kernel of its own and is read
from memory.

Inlining into a reduction's body is how a reduction absorbs its elementwise
prologue (`sum(r, exp(x[i, r] - m[i]))` where `exp(...)` was a separate op),
and inlining into a store is how elementwise chains become one loop.

Example:
    t[i]   = x[i] * 2          (elementwise, one consumer)
    y[i]   = exp(t[i]) + 1
becomes the single kernel
    y[i]   = exp(x[i] * 2) + 1     # fused: t
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

from ..ir import expr as E
from ..ir.simplify import simplify
from ..ir.lower import element_checked, read_checks, reads, shape_checks
from ..ir.printer import tensor_line
from ..ir.rules import cse
from ..ir.scatter import scatter_form
from ..ir.tensor import ComputeOp, map_graph, topo_order


@dataclass(frozen=True)
class FusedGraph:
    outputs: tuple  # the rewritten outputs, in the caller's order
    fused: dict  # rewritten op -> names of the producers inlined into it

    def __str__(self) -> str:
        lines = []
        for t in topo_order(self.outputs):
            if isinstance(t, ComputeOp):
                lines.append(tensor_line(t) + (f"  # fused: {', '.join(self.fused[t])}" if self.fused.get(t) else ""))
        return "\n".join(lines)


def is_injective(op: ComputeOp) -> bool:
    return not any(isinstance(n, E.Reduce) for n in E.walk(op.body))


ROW_LOCAL_NODES = 48


def small(op: ComputeOp) -> bool:
    """Small enough to compute in each consumer of one row (softmax's exp(x - max)); a long chain
    read by a reduction and by what follows it is stored once instead, or every reduction along
    the chain would compute the chain before it again."""
    return sum(1 for _ in E.walk(op.body)) <= ROW_LOCAL_NODES


def read_at_one_point(producer: ComputeOp, consumer: ComputeOp) -> bool:
    """The consumer reads the producer through one load (one index): inlined, its body is computed
    once per point of the consumer, not again in a reduction beside it (`e - mean(e)`)."""
    return len({ld for ld in E.loads(consumer.body) if ld.tensor is producer}) == 1


def is_view(op: ComputeOp) -> bool:
    """The op reads one element of one tensor at an index of plain arithmetic (a copy, a
    transpose, a broadcast, a reshape): inlined into each of several consumers it costs a load
    there, where storing it costs a pass over memory (a gradient seed `dY_copy[i] = dY[i]` read by
    three backward kernels)."""
    body = op.body.x if isinstance(op.body, E.Cast) else op.body
    return isinstance(body, E.Load) and not any(isinstance(n, (E.Load, E.Reduce)) for ix in body.indices
                                                 for n in E.walk(ix))


CHEAP_CALLS = ("abs", "minimum", "maximum", "sqr", "stop_gradient")
CHEAP_NODES = 8


def is_cheap(op: ComputeOp) -> bool:
    """A few arithmetic operations on plain reads (a bias add `x[i, j] + b[j]`): recomputed in
    each of several consumers it costs a few reads per point there, where storing it costs a pass
    to write it and one to read it back per consumer."""
    nodes = list(E.walk(op.body))
    return len(nodes) <= CHEAP_NODES and all(
        not isinstance(n, E.Reduce) and not (isinstance(n, E.Call) and n.fn not in CHEAP_CALLS)
        and not (isinstance(n, E.Load) and any(isinstance(m, E.Load) for ix in n.indices for m in E.walk(ix)))
        for n in nodes)


def same_point_use(producer: ComputeOp, consumer: ComputeOp) -> bool:
    """The consumer reads the producer only at its own output point, outside any reduction:
    inlining then computes each producer point exactly once (a reduction's epilogue)."""
    if len(producer.axes) != len(consumer.axes) or any(
            a is not b for a, b in zip(producer.shape, consumer.shape)):
        return False
    ok = True
    seen: set = set()

    def visit(n, in_reduce):
        nonlocal ok
        if (n, in_reduce) in seen:  # a DAG: each node once per context
            return
        seen.add((n, in_reduce))
        if isinstance(n, E.Load) and n.tensor is producer:
            if in_reduce or tuple(n.indices) != tuple(consumer.axes):
                ok = False
        for c in n.children():
            visit(c, in_reduce or isinstance(n, E.Reduce))
    visit(consumer.body, False)
    return ok


def consumers(outputs) -> dict:
    users: dict = {}
    for t in topo_order(outputs):
        if isinstance(t, ComputeOp):
            for p in t.inputs():
                users.setdefault(p, []).append(t)
    return users


_renamed: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # op -> body with fresh axes


def _fresh_reductions(op: ComputeOp) -> E.Expr:
    """The op's body with its reduction axes renamed to fresh ones, once per op: an inlined
    reduction must not share an axis with a reduction of the consumer that encloses it, and two
    copies of the same inlined reduction stay one node (computed once)."""
    body = _renamed.get(op)
    if body is None:
        axes = {a for n in E.walk(op.body) if isinstance(n, E.Reduce) for a in n.axes}
        fresh = {a: E.index_var(a.name, a.extent, reduce=True) for a in sorted(axes, key=lambda a: a.uid)}

        def rule(n):
            if isinstance(n, E.Reduce) and any(a in fresh for a in n.axes):
                return E.Reduce(n.combiner, tuple(fresh.get(a, a) for a in n.axes), n.body, n.cond, n.dtype)
            return fresh.get(n)
        body = E.transform(op.body, rule) if fresh else op.body
        _renamed[op] = body
    return body


def inline_load(body: E.Expr, producer: ComputeOp, definition: ComputeOp | None = None) -> E.Expr:
    """`body` with every load of `producer` replaced by the body of `definition` (default: itself)."""
    d = definition or producer
    dbody = _fresh_reductions(d)

    def rule(n):
        if isinstance(n, E.Load) and n.tensor is producer:
            return E.substitute(dbody, {a: _bounded(ix, a.extent, producer.name, k)
                                        for k, (a, ix) in enumerate(zip(d.axes, n.indices))})
        return None
    return simplify(E.transform(body, rule))


def _bounded(index: E.Expr, extent: E.Expr, tensor: str, dim: int) -> E.Expr:
    """The index of an inlined read, still range-checked unless it is an axis of the same extent."""
    if isinstance(index, E.IndexVar) and index.extent is extent:
        return index
    if isinstance(index, E.Bound):
        index = index.index
    return E.Bound(index, extent, tensor, dim)


def hoistable_use(producer: ComputeOp, consumer: ComputeOp) -> bool:
    """Every read of the producer is `P[a1, ..., ak]` where a1..ak are the consumer's k outermost
    loops (its output axes, then the reduction axes around the read), unguarded. Lowering places
    the inlined reduction right inside loop ak, so each producer point is still computed once:
    this is how softmax's row max and row sum join the row loop of their consumer."""
    ok = True
    seen: set = set()

    def visit(n, enclosing, guarded):
        nonlocal ok
        if (n, enclosing, guarded) in seen:  # a DAG: each node once per context
            return
        seen.add((n, enclosing, guarded))
        if isinstance(n, E.Load) and n.tensor is producer:
            # a keepdims dimension (size 1, read at 0) is not a loop: skip it
            kept = [(ix, d) for ix, d in zip(n.indices, producer.shape)
                    if not (isinstance(d, E.Const) and d.value == 1 and isinstance(ix, E.Const) and ix.value == 0)]
            idx = tuple(ix for ix, _ in kept)
            if guarded or len(idx) > len(enclosing) or idx != tuple(enclosing[:len(idx)]) or any(
                    a.extent is not d for a, (_, d) in zip(idx, kept)):
                ok = False
        if isinstance(n, E.Select):
            visit(n.cond, enclosing, guarded)
            visit(n.a, enclosing, True)
            visit(n.b, enclosing, True)
            return
        if isinstance(n, E.Reduce):
            inner = enclosing + tuple(n.axes)
            visit(n.body, inner, guarded or n.cond is not None)
            if n.cond is not None:
                visit(n.cond, inner, guarded)
            return
        for c in n.children():
            visit(c, enclosing, guarded)

    visit(consumer.body, tuple(consumer.axes), False)
    return ok


def drops_checks(producer: ComputeOp, consumer: ComputeOp) -> bool:
    """Inlining would lose a range check: the consumer reads the producer at an index that is not
    an axis of the same extent, in a dimension the producer's body does not use (so no `Bound`
    is left at a use of that axis). `t[0]` of a `t` of extent n - 1 must still fail for n = 1."""
    used = E.free_axes(producer.body)
    for ld in E.loads(consumer.body):
        if ld.tensor is producer:
            for a, ix in zip(producer.axes, ld.indices):
                if a in used or (isinstance(ix, E.IndexVar) and ix.extent is a.extent):
                    continue
                if isinstance(ix, E.Const) and isinstance(a.extent, E.Const) and 0 <= ix.value < a.extent.value:
                    continue  # provably in range (a keepdims dimension read at 0)
                return True
    return False


def reads_everywhere(producer: ComputeOp, consumer: ComputeOp) -> bool:
    """The consumer reads every point of the producer whenever the producer's domain is not empty:
    each read is unguarded, indexes by distinct axes of the producer's extents, and every other
    loop around it surely runs. Then the producer's element-by-element checks (gathers, guarded
    reads) still run at every point when it is inlined."""
    for ld, enclosing, guarded in reads(consumer):
        if not (isinstance(ld, E.Load) and ld.tensor is producer):
            continue
        idx = ld.indices
        if guarded or len(set(idx)) != len(idx) or not all(
                isinstance(ix, E.IndexVar) and ix.extent is d for ix, d in zip(idx, producer.shape)):
            return False
        for a in enclosing:
            if a not in idx and not (isinstance(a.extent, E.Const) and a.extent.value > 0):
                return False
    return True


def _inlinable(t, outputs, users, enabled: bool, force_names) -> bool:
    if not isinstance(t, ComputeOp) or t in outputs or scatter_form(t) is not None:
        return False  # a scatter runs over its own domain (ir/scatter.py); inlined it would be a scan
    mine = users.get(t, ())
    if any(drops_checks(t, u) for u in mine):
        return False
    if element_checked(t) and not all(reads_everywhere(t, u) for u in mine):
        return False  # its per-element checks would run only where the consumer reads it
    # one consumer computes t once per point when t is small or read through one load there
    once = len(mine) == 1 and (small(t) or read_at_one_point(t, mine[0]))
    if is_injective(t):
        return t.name in force_names or (enabled and (
            once or is_view(t) or is_cheap(t) or (small(t) and row_local(t, mine, users, outputs))))
    if enabled and row_reductions_only(t) and all(row_use(t, u) for u in mine) and (
            once or (small(t) and row_local(t, mine, users, outputs))):
        return True  # softmax's exp(x - max(x)) read in its row by the sum and by the division
    return enabled and once and (same_point_use(t, mine[0]) or hoistable_use(t, mine[0]))


def row_use(producer: ComputeOp, consumer: ComputeOp) -> bool:
    """Every read of the producer is in the consumer's row: its leading indices are the
    consumer's leading axes (the last index is free: the row element, or a reduction over the
    row), unguarded."""
    lead = len(producer.axes) - 1
    for ld, _, guarded in reads(consumer):
        if isinstance(ld, E.Load) and ld.tensor is producer:
            idx = tuple(ld.indices[:lead])
            if guarded or len(consumer.axes) < lead or idx != tuple(consumer.axes[:lead]) or any(
                    a.extent is not d for a, d in zip(idx, producer.shape)):
                return False
    return True


def row_reductions_only(op: ComputeOp) -> bool:
    """Every reduction in the op's body depends on its row only (not on its last axis): inlined
    anywhere in that row, lowering computes each once per row."""
    rows = set(op.axes[:-1])
    return bool(op.axes) and all(E.free_axes(n) <= rows for n in E.walk(op.body) if isinstance(n, E.Reduce))


def row_local(producer: ComputeOp, consumers, users, outputs) -> bool:
    """An elementwise producer read by several consumers that all end up in one kernel: one
    consumer U, and every other is a reduction whose only consumer is U and which joins U's row
    loop (softmax written the natural way: e = exp(x - max) read by sum(e) and by e / sum(e)).
    Inlined into each, it is computed in U's row; schedule/reuse.py then stores the costly term
    once in the output row and reads it back, so nothing is computed twice and no global array
    of e exists."""
    joining = [u for u in consumers if u not in outputs and len(users.get(u, ())) == 1 and users[u][0] in consumers]
    finals = [u for u in consumers if u not in joining]
    if len(finals) != 1:
        return False
    final = finals[0]
    for v in consumers:
        if v is final:
            continue
        if is_injective(v) or not (same_point_use(v, final) or hoistable_use(v, final)):
            return False
    return True


def fuse(outputs, enabled: bool = True, force=()) -> FusedGraph:
    """Inline producers into their consumers until none qualifies (a fixed point), so that
    inlining one tensor can make another single-consumer (softmax: denominator, then row max)."""
    outputs = tuple(outputs)
    force_names = {t if isinstance(t, str) else t.name for t in force}
    names: dict = {}
    # an op's verdict depends on it, its consumers and theirs, and whether it is an output: ops
    # that an inlining did not rebuild keep their identity, so their verdicts are kept too
    verdicts: dict = {}

    def inlinable(t, users) -> bool:
        mine = tuple(users.get(t, ()))
        key = (t, mine, tuple(tuple(users.get(u, ())) for u in mine), t in outputs, tuple(u in outputs for u in mine))
        if key not in verdicts:
            verdicts[key] = _inlinable(t, outputs, users, enabled, force_names)
        return verdicts[key]
    for _ in range(10_000):
        users = consumers(outputs)
        pick = next((t for t in topo_order(outputs) if inlinable(t, users)), None)
        if pick is None:
            break
        rewritten = {}
        carried = pick.checks + shape_checks(pick) + read_checks(pick)  # the same for every consumer
        for u in users[pick]:
            # pick's reads stay checked over its own domain (ir/lower.read_checks): the
            # consumer may read it fewer times than pick would have run
            body = inline_load(u.body, pick)
            kept = [ld for ld in E.loads(u.body) if ld.tensor is not pick]
            lost = not set(kept) <= set(E.loads(body))  # the simplifier dropped a read of u's own
            nu = u.with_body(body, u.checks + carried + (read_checks(u) if lost else ()))
            names[nu] = (*names.get(u, ()), *names.get(pick, ()), pick.name)
            rewritten[u] = nu
        outputs, mapping = map_graph(outputs, replaced=rewritten)
        names = {mapping.get(k, k): v for k, v in names.items()}
    # inlining a producer into several consumers can make two of them equal (the variance of a
    # batch norm, inlined into its forward and into the gradient's copy): compute them once
    by_uid = {t.uid: v for t, v in names.items()}
    outputs = cse(outputs)
    return FusedGraph(outputs, {t: tuple(dict.fromkeys(by_uid.get(t.uid, ())))
                                for t in topo_order(outputs) if isinstance(t, ComputeOp)})
