"""A sum whose condition picks the output point: run it as a scatter over its domain.

The adjoint of a gather `Y[t, d] = table[ids[t], d]` is, in the tensor IR,

    dtable[v, d] = sum(t, dY[t, d], where=ids[t] == v)

Evaluated as written, every output point scans the whole of t: work V * T * D. Yet for
each t the condition holds at one v only, so the same sum is

    dtable[:, :] = 0
    for t:                       # the reduction's domain, in order: deterministic
      v = ids[t]                 # the output point the condition picks
      if 0 <= v < V:
        for d:
          dtable[v, d] += dY[t, d]

whose work is the domain's size (T * D) plus one pass to zero the output. `scatter_form`
finds that shape; lowering (ir/lower.py) emits the nest above. Terms reach each output
point in the order of the domain, as the reference's sum adds them.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import expr as E
from .tensor import ComputeOp


@dataclass(frozen=True)
class ScatterForm:
    """`op.body` = sum(reduce.axes, reduce.body, where=chain[0] and then chain[1] ...), where
    some links of the chain equate an output axis with an index computed from the domain."""
    reduce: E.Reduce
    chain: tuple  # (axis, index) for an equation that picks the axis, else (None, condition)
    loop_axes: tuple  # the domain: the reduction axes, then the output axes no equation picks

    @property
    def targets(self) -> tuple:
        return tuple(a for a, _ in self.chain if a is not None)


def links(cond: E.Expr) -> list:
    """The parts of an `a and then b` chain in the order they are read: `Select(a, b, False)`
    reads b only where a holds; an `&` of reads-free parts is a chain too."""
    if isinstance(cond, E.Select) and isinstance(cond.b, E.Const) and cond.b.value is False:
        return links(cond.cond) + links(cond.a)
    if isinstance(cond, E.Binary) and cond.op == "and" and cond.dtype == "bool" and not _reads(cond):
        return links(cond.a) + links(cond.b)
    return [cond]


def _reads(e: E.Expr) -> bool:
    return any(isinstance(n, (E.Load, E.Reduce)) for n in E.walk(e))


def _picked(cond: E.Expr, op: ComputeOp, reduce_axes: set):
    """(axis, index) when `cond` is `index == axis` for an output axis and an index computed from
    the reduction's domain (it reads memory or a reduction axis: else no scan is saved)."""
    if not (isinstance(cond, E.Binary) and cond.op == "eq"):
        return None
    for a, g in ((cond.b, cond.a), (cond.a, cond.b)):
        if isinstance(a, E.IndexVar) and a in op.axes and g.dtype in ("int32", "int64") \
                and a not in E.free_axes(g) and E.free_axes(g) & reduce_axes:
            return a, g
    return None


def scatter_form(op: ComputeOp) -> ScatterForm | None:
    body = op.body
    if not (isinstance(body, E.Reduce) and body.combiner == "sum" and body.cond is not None):
        return None
    reduce_axes = set(body.axes)
    chain, picked = [], []
    for c in links(body.cond):
        hit = _picked(c, op, reduce_axes)
        if hit is not None and hit[0] not in picked:
            picked.append(hit[0])
            chain.append(hit)
        else:
            chain.append((None, c))
    if not picked:
        return None
    # an index or condition may use a picked axis only after the link that picks it; the
    # domain's extents use none
    known: set = reduce_axes | {a for a in op.axes if a not in picked}
    for a, e in chain:
        if not E.free_axes(e) <= known:
            return None
        if a is not None:
            known.add(a)
    if any(E.free_axes(r.extent) for r in body.axes) or not E.free_axes(body.body) <= known:
        return None
    loop_axes = tuple(body.axes) + tuple(a for a in op.axes if a not in picked)
    return ScatterForm(body, tuple(chain), loop_axes)
