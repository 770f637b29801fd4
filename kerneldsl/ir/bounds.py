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
from .simplify import simplify


def _nonneg(e: E.Expr) -> bool:
    """True when `e` is known to be >= 0 (constants and products/sums of sizes)."""
    if isinstance(e, E.Const):
        return e.value >= 0
    if isinstance(e, E.SizeVar):
        return True
    if isinstance(e, E.Binary) and e.op in ("add", "mul", "floordiv"):
        return _nonneg(e.a) and _nonneg(e.b)
    return False


def _min(a, b):
    return E.call("minimum", a, b)


def _max(a, b):
    return E.call("maximum", a, b)


def _interval(e: E.Expr):
    if isinstance(e, (E.Const, E.SizeVar)):
        return e, e
    if isinstance(e, E.Bound):
        return _interval(e.index)
    if isinstance(e, E.IndexVar):
        return E.Const(0, "int64"), e.extent - 1
    if isinstance(e, E.Cast) and e.dtype in ("int32", "int64") and e.x.dtype in ("int32", "int64"):
        return _interval(e.x)
    if isinstance(e, E.Unary) and e.op == "neg":
        r = _interval(e.x)
        return None if r is None else (-r[1], -r[0])
    if isinstance(e, E.Binary):
        if e.op in ("add", "sub", "mul"):
            a, b = _interval(e.a), _interval(e.b)
            if a is None or b is None:
                return None
            if e.op == "add":
                return a[0] + b[0], a[1] + b[1]
            if e.op == "sub":
                return a[0] - b[1], a[1] - b[0]
            if a[0] is a[1] and _nonneg(a[0]):
                return a[0] * b[0], a[0] * b[1]
            if b[0] is b[1] and _nonneg(b[0]):
                return a[0] * b[0], a[1] * b[0]
            ps = [x * y for x in a for y in b]
            return _min(_min(ps[0], ps[1]), _min(ps[2], ps[3])), _max(_max(ps[0], ps[1]), _max(ps[2], ps[3]))
        if e.op == "floordiv" and isinstance(e.b, E.Const) and e.b.value > 0:
            a = _interval(e.a)
            return None if a is None else (a[0] // e.b, a[1] // e.b)
        if e.op == "mod" and _nonneg(e.b):
            return E.Const(0, "int64"), _max(e.b - 1, 0)
    if isinstance(e, E.Call) and e.fn in ("minimum", "maximum"):
        a, b = _interval(e.args[0]), _interval(e.args[1])
        if a is None or b is None:
            return None
        f = _min if e.fn == "minimum" else _max
        return f(a[0], b[0]), f(a[1], b[1])
    if isinstance(e, E.Select):
        a, b = _interval(e.a), _interval(e.b)
        if a is None or b is None:
            return None
        return _min(a[0], b[0]), _max(a[1], b[1])
    return None


def _fits_int64(e: E.Expr) -> bool:
    """True when no linear combination inside `e` has a coefficient beyond int64: the bound
    is then exact once printed (int64 constants would wrap around, e.g. 2**62 * 2 -> -2**63)."""
    from .simplify import _linear
    for n in E.walk(e):
        if isinstance(n, (E.Binary, E.Unary)) and n.dtype == "int64" and n.op in ("add", "sub", "mul", "neg"):
            if any(not -(1 << 63) <= c < (1 << 63) for c in _linear(n).values()):
                return False
    return True


def interval(e: E.Expr):
    r = _interval(e)
    if r is None or not (_fits_int64(r[0]) and _fits_int64(r[1])):
        return None  # the index is then checked element by element, in the kernels' int64
    return simplify(r[0]), simplify(r[1])
