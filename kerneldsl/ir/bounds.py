"""Bounds inference: the range of an integer index expression over its axes.

`interval(e)` gives symbolic (lo, hi) expressions of the sizes, inclusive, such
that every value of `e` over the axes' ranges lies in [lo, hi]; None when the
range depends on data (a gather) or is beyond this analysis. Sizes are known to
be >= 0, which fixes the sign of products with them.

Example: for `2*i + r - 1` with i in [0, n) and r in [0, 3):
    2*i     -> [0, 2*(n-1)]
    + r     -> [0, 2*(n-1) + 2]
    - 1     -> [-1, 2*(n-1) + 1]
"""

from __future__ import annotations

from . import expr as E
from . import ops
from .simplify import build_linear, linear, simplify


def _interval(e: E.Expr):
    """(lo, hi) of `e`, bottom up; operators follow their op table row's interval rule."""
    return E.fold(e, _node)


def _node(e: E.Expr, ivs: tuple):
    if isinstance(e, (E.Const, E.SizeVar)):
        return e, e
    if isinstance(e, E.Bound):
        return ivs[0]
    if isinstance(e, E.IndexVar):
        return E.Const(0, "int64"), e.extent - 1
    if isinstance(e, E.Cast) and e.dtype in ("int32", "int64") and e.x.dtype in ("int32", "int64"):
        return ivs[0]
    row = ops.row(e)
    if row is not None:
        return None if row.interval is None else row.interval(e, ivs)
    if isinstance(e, E.Select):
        _, a, b = ivs
        if a is None or b is None:
            return None
        return E.call("minimum", a[0], b[0]), E.call("maximum", a[1], b[1])
    return None


def _fits_int64(e: E.Expr) -> bool:
    """True when no linear combination inside `e` has a coefficient beyond int64: the bound
    is then exact once printed (int64 constants would wrap around, e.g. 2**62 * 2 -> -2**63)."""
    for n in E.walk(e):
        arith = isinstance(n, (E.Binary, E.Unary)) and n.op in ("add", "sub", "mul", "neg")
        if arith and n.dtype == "int64" and any(not -(1 << 63) <= c < (1 << 63) for c in linear(n).values()):
            return False
    return True


def interval(e: E.Expr):
    r = _interval(e)
    if r is None or not (_fits_int64(r[0]) and _fits_int64(r[1])):
        return None  # the index is then checked element by element, in the kernels' int64
    return simplify(r[0]), simplify(r[1])


def guard_range(cond: E.Expr, var: E.Expr):
    """A condition that holds exactly on a range of `var` (a padded read's `0 <= y + r - 1 < h`):
    (the parts free of var, lower bounds, upper bounds), var's range being lo <= var < hi for
    every lo and hi, the bounds expressions of the other variables. None when some part of the
    conjunction is not a comparison affine in var with coefficient +-1, or none mentions var."""
    parts, stack = [], [cond]
    while stack:
        g = stack.pop()
        if isinstance(g, E.Binary) and g.op == "and" and g.dtype == "bool":
            stack += [g.b, g.a]
        else:
            parts.append(g)
    inv, los, his = [], [], []
    for g in parts:
        if var not in set(E.walk(g)):
            inv.append(g)
            continue
        if not (isinstance(g, E.Binary) and g.op in _FLIP and g.a.dtype == "int64" and g.b.dtype == "int64"):
            return None
        d = dict(linear(g.a))  # g.a - g.b  op  0
        for t, c in linear(g.b).items():
            d[t] = d.get(t, 0) - c
        coef = d.pop(var, 0)
        if coef not in (1, -1) or any(t is not None and var in set(E.walk(t)) for t in d):
            return None
        # coef * var + rest  op  0  <=>  var  op'  -coef * rest
        op = g.op if coef == 1 else _FLIP[g.op]
        bound = {t: -coef * c for t, c in d.items()}
        plus_one = {**bound, None: bound.get(None, 0) + 1}
        if op in ("ge", "gt"):
            los.append(build_linear(bound if op == "ge" else plus_one))
        else:
            his.append(build_linear(bound if op == "lt" else plus_one))
    return (inv, los, his) if los or his else None


_FLIP = {"lt": "gt", "le": "ge", "gt": "lt", "ge": "le"}
