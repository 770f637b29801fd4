"""Small expression helpers of the autodiff: capture-avoiding substitution, guards, float partials."""

from __future__ import annotations

from .. import dtypes as dt
from ..ir import expr as E
from ..ir.simplify import simplify


def subst(e: E.Expr, mapping: dict) -> E.Expr:
    """Replace nodes by expressions, never inside a Reduce that binds a replaced axis.

    `E.substitute` rewrites every occurrence, which is wrong when an axis is free in
    one place and bound by an inner reduction in another (the adjoint of
    `Y[i, j] = X[i, j] - log(sum(k, exp(X[i, k])))` mentions `k` both ways).
    """
    if not mapping:
        return e
    memo: dict = {}

    def go(n: E.Expr, m: dict, key: int) -> E.Expr:
        hit = memo.get((n, key))
        if hit is not None:
            return hit
        r = m.get(n)
        if r is None:
            if isinstance(n, E.Reduce) and any(a in m for a in n.axes):
                inner = {k: v for k, v in m.items() if k not in n.axes}
                kids = tuple(go(c, inner, id(inner)) for c in n.children()) if inner else n.children()
                memo.setdefault(("keep", id(inner)), inner)  # keep `inner` alive: its id is a key
            else:
                kids = tuple(go(c, m, key) for c in n.children())
            r = n if all(a is b for a, b in zip(kids, n.children())) else E.rebuild(n, kids)
        memo[(n, key)] = r
        return r

    return go(e, mapping, 0)


def has_load(e: E.Expr) -> bool:
    return any(isinstance(n, (E.Load, E.Reduce)) for n in E.walk(e))


def conj(a: E.Expr | None, b: E.Expr | None) -> E.Expr | None:
    """`a and then b`: a Select when `b` reads memory, so that `b` is only read where `a` holds."""
    if a is None:
        return b
    if b is None:
        return a
    if isinstance(a, E.Const):
        return b if a.value else a
    if isinstance(b, E.Const):
        return a if b.value else b
    if has_load(b):
        return E.Select(a, b, E.Const(False, "bool"), "bool")
    return E.Binary("and", a, b, "bool")


def to_float(p, dtype: str) -> E.Expr | None:
    """A partial derivative as an expression of `dtype`; None when it is exactly zero.

    The intrinsic table writes partials with integer literals (`where(x > 0, 1, 0)`);
    they are rebuilt in the float dtype instead of being promoted to float64.
    """
    if isinstance(p, (int, float)) and not isinstance(p, bool):
        return None if p == 0 else E.const(float(p), dtype)
    p = E.as_expr(p)
    if isinstance(p, E.Const):
        return None if p.value == 0 else E.const(float(p.value), dtype)
    if isinstance(p, E.Select):
        a, b = to_float(p.a, dtype), to_float(p.b, dtype)
        if a is None and b is None:
            return None
        zero = E.const(0.0, dtype)
        return E.Select(p.cond, zero if a is None else a, zero if b is None else b, dtype)
    if p.dtype not in dt.FLOATS:
        return E.cast(p, dtype)
    return E.cast(p, dtype)


def mul(a: E.Expr, p: E.Expr) -> E.Expr:
    """a * p without the trivial products (p == 1, p == -1)."""
    if isinstance(p, E.Const):
        if p.value == 1:
            return a
        if p.value == -1:
            return -a
    if isinstance(a, E.Const) and a.value == 1:
        return p
    if isinstance(p, E.Binary) and p.op == "div" and isinstance(p.a, E.Const) and p.a.value == 1:
        return a / p.b
    return a * p


def flat_index(axes) -> E.Expr:
    """Row-major position of a point of several axes, as argmax reports it."""
    flat = None
    for a in axes:
        flat = a if flat is None else flat * a.extent + a
    return flat


def simp(e: E.Expr) -> E.Expr:
    """`simplify` that keeps every IndexVar as it is.

    The simplifier also rewrites an axis's extent, and an axis with a rewritten extent
    is a different node: `y` of a compute shaped `(6 - 2) // 1 + 1` would stop being
    the compute's own axis. Axes are swapped for opaque Vars while simplifying.
    """
    axes = {n for n in E.walk(e) if isinstance(n, E.IndexVar)}
    if not axes:
        return simplify(e)
    there = {a: E.Var(f"_ax{a.uid:09d}", "int64") for a in axes}
    back = {v: a for a, v in there.items()}
    return E.transform(simplify(E.transform(e, there.get)), back.get)
