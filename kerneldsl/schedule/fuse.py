"""Fusion: partition the tensor graph into kernels by inlining producers into consumers.

An elementwise/injective producer (a compute op with no reduction in its body)
is inlined into its consumer when it has exactly one consumer and is not an
output: its body is substituted at the load, so no intermediate array exists.
A reduction is inlined into its single consumer when that reads it only at the
consumer's own point (`lse[i] = log(s[i])`): the epilogue joins the reduction.
One consumer keeps "each producer computed once" true: a producer shared by
several consumers stays a kernel of its own and is read from memory.

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

from dataclasses import dataclass

from ..ir import expr as E
from ..ir.simplify import simplify
from ..ir.tensor import ComputeOp, Placeholder, topo_order


@dataclass(frozen=True)
class FusedGraph:
    outputs: tuple  # the rewritten outputs, in the caller's order
    fused: dict  # rewritten op -> names of the producers inlined into it


def is_injective(op: ComputeOp) -> bool:
    return not any(isinstance(n, E.Reduce) for n in E.walk(op.body))


def same_point_use(producer: ComputeOp, consumer: ComputeOp) -> bool:
    """The consumer reads the producer only at its own output point, outside any reduction:
    inlining then computes each producer point exactly once (a reduction's epilogue)."""
    if len(producer.axes) != len(consumer.axes) or any(
            a is not b for a, b in zip(producer.shape, consumer.shape)):
        return False
    ok = True

    def visit(n, in_reduce):
        nonlocal ok
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


def inline_load(body: E.Expr, producer: ComputeOp, definition: ComputeOp | None = None) -> E.Expr:
    """`body` with every load of `producer` replaced by the body of `definition` (default: itself)."""
    d = definition or producer

    def rule(n):
        if isinstance(n, E.Load) and n.tensor is producer:
            return E.substitute(d.body, dict(zip(d.axes, n.indices)))
        return None
    return simplify(E.transform(body, rule))


def fuse(outputs, enabled: bool = True, force=()) -> FusedGraph:
    """Inline single-consumer elementwise producers (when `enabled`) and those in `force`."""
    outputs = tuple(outputs)
    users = consumers(outputs)
    inline = {t for t in topo_order(outputs) if isinstance(t, ComputeOp) and t not in outputs and (
        (is_injective(t) and (t in force or (enabled and len(users.get(t, ())) == 1)))
        or (enabled and len(users.get(t, ())) == 1 and same_point_use(t, users[t][0])))}
    new: dict = {}
    fused: dict = {}
    for t in topo_order(outputs):
        if isinstance(t, Placeholder):
            new[t] = t
            continue
        body, names = t.body, []
        # substitute already-rewritten producers; inline the inlinable ones (transitively)
        changed = True
        while changed:
            changed = False
            for ld in E.loads(body):
                p = ld.tensor
                if p in inline:
                    body = inline_load(body, p, new[p])
                    names += [*fused.get(new[p], ()), p.name]
                    changed = True
                    break
        def relink(n):
            if isinstance(n, E.Load) and new.get(n.tensor, n.tensor) is not n.tensor:
                return E.Load(new[n.tensor], n.indices, n.dtype)
            return None
        body = E.transform(body, relink)
        nt = t if body is t.body else _with_body(t, body)
        new[t] = nt
        fused[nt] = tuple(dict.fromkeys(names))
    outs = tuple(new[t] for t in outputs)
    return FusedGraph(outs, {new[t]: fused[new[t]] for t in topo_order(outputs)
                             if isinstance(t, ComputeOp) and t not in inline})


def _with_body(t: ComputeOp, body: E.Expr) -> ComputeOp:
    return ComputeOp(t.name, t.shape, t.dtype, t.axes, body, t.uid)
