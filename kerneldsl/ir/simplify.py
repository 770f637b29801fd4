"""Simplifier: constant folding, identities exact in floating point, index normalisation.

Index arithmetic (int64) is put in a canonical linear form `c0 + c1*t1 + ...`
with the terms in a fixed order, so that `2*i + k - i` and `k + i` become the
same node. Two rules for floor division and modulo by a positive constant c
(exact under numpy's floor semantics): `(c*a + b) // c -> a + b // c` and
`(c*a + b) % c -> b % c`. Float rules are only those that hold bit for bit:
`x*1`, `x/1`, `x-0`, `-(-x)`, `x**2 -> x*x`; never `x*0` (NaN) nor `x+0` (-0.0).
"""

from __future__ import annotations

import numpy as np

from . import expr as E


def _fold(n: E.Expr):
    from ..reference import _binary  # the same numpy semantics the kernels follow
    from .intrinsics import INTRINSICS
    with np.errstate(all="ignore"):
        if isinstance(n, E.Binary) and isinstance(n.a, E.Const) and isinstance(n.b, E.Const):
            if n.a.dtype in ("int32", "int64") and n.op in ("floordiv", "mod") and n.b.value == 0:
                return E.Const(0, n.dtype)
            v = _binary(n.op, np.array(n.a.value, n.a.dtype), np.array(n.b.value, n.b.dtype), n.dtype)
            return E.const(np.asarray(v).item(), n.dtype)
        if isinstance(n, E.Unary) and isinstance(n.x, E.Const):
            v = {"neg": np.negative, "not": np.logical_not, "invert": np.invert}[n.op](
                np.array(n.x.value, n.x.dtype))
            return E.const(np.asarray(v).astype(n.dtype).item(), n.dtype)
        if isinstance(n, E.Call) and all(isinstance(a, E.Const) for a in n.args):
            v = INTRINSICS[n.fn].numpy(*[np.array(a.value, a.dtype) for a in n.args])
            return E.const(np.asarray(v).astype(n.dtype).item(), n.dtype)
        if isinstance(n, E.Cast) and isinstance(n.x, E.Const):
            return E.const(np.array(n.x.value, n.x.dtype).astype(n.dtype).item(), n.dtype)
    return None


def _is(c, value) -> bool:
    return isinstance(c, E.Const) and c.value == value and not isinstance(c.value, bool)


def _identities(n: E.Expr):
    if isinstance(n, E.Binary):
        a, b, op = n.a, n.b, n.op
        integer = n.dtype in ("int32", "int64")
        if op == "mul" and _is(b, 1):
            return a
        if op == "mul" and _is(a, 1):
            return b
        if op in ("div", "floordiv") and _is(b, 1) and (op == "div" or integer):
            return a
        if op == "sub" and _is(b, 0):
            return a
        if op == "pow" and n.dtype in ("float32", "float64") and _is(b, 2):
            return E.Binary("mul", a, a, n.dtype)  # x**2 is x*x rounded once: exact, and no pow call
        if integer:
            if op == "add" and _is(b, 0):
                return a
            if op == "add" and _is(a, 0):
                return b
            if op == "mul" and (_is(a, 0) or _is(b, 0)):
                return E.Const(0, n.dtype)
            if op == "sub" and a is b:
                return E.Const(0, n.dtype)
        if op == "and" and n.dtype == "bool":
            if isinstance(a, E.Const):
                return b if a.value else a
            if isinstance(b, E.Const):
                return a if b.value else b
        if op == "or" and n.dtype == "bool":
            if isinstance(a, E.Const):
                return a if a.value else b
            if isinstance(b, E.Const):
                return b if b.value else a
    if isinstance(n, E.Unary) and n.op in ("neg", "not", "invert") and isinstance(n.x, E.Unary) \
            and n.x.op == n.op:
        return n.x.x
    if isinstance(n, E.Select):
        if isinstance(n.cond, E.Const):
            return n.a if n.cond.value else n.b
        if n.a is n.b:
            return n.a
    return None


# --- linear forms of int64 index arithmetic ------------------------------------------

def _linear(e: E.Expr):
    """{term: coef} with key None for the constant, or None if `e` is not int64."""
    if e.dtype != "int64":
        return None
    if isinstance(e, E.Const):
        return {None: e.value}
    if isinstance(e, E.Binary) and e.op in ("add", "sub"):
        la, lb = _linear(e.a), _linear(e.b)
        s = 1 if e.op == "add" else -1
        out = dict(la)
        for t, c in lb.items():
            out[t] = out.get(t, 0) + s * c
        return out
    if isinstance(e, E.Unary) and e.op == "neg":
        return {t: -c for t, c in _linear(e.x).items()}
    if isinstance(e, E.Binary) and e.op == "mul":
        la, lb = _linear(e.a), _linear(e.b)
        if set(lb) == {None}:
            return {t: c * lb[None] for t, c in la.items()}
        if set(la) == {None}:
            return {t: c * la[None] for t, c in lb.items()}
    return {e: 1}


def _order(t: E.Expr):
    if isinstance(t, E.IndexVar):
        return (0, t.uid, t.name)
    if isinstance(t, E.Var):
        return (1, 0, t.name)
    if isinstance(t, E.SizeVar):
        return (2, 0, t.name)
    return (3, 0, str(t))


def _wrap(v: int) -> int:
    """`v` as int64 arithmetic leaves it: wrapped modulo 2**64, as the kernels and numpy do."""
    return (v + (1 << 63)) % (1 << 64) - (1 << 63)


_INT64_MIN = -(1 << 63)


def _build(lin: dict) -> E.Expr:
    lin = {t: _wrap(c) for t, c in lin.items()}  # every constant built below fits in int64
    terms = sorted(((t, c) for t, c in lin.items() if t is not None and c != 0), key=lambda tc: _order(tc[0]))
    out = None
    for t, c in terms:
        if out is None:
            out = t if c == 1 else (E.Unary("neg", t, "int64") if c == -1 else
                                    E.Binary("mul", E.Const(c, "int64"), t, "int64"))
        elif c > 0 or c == _INT64_MIN:  # -INT64_MIN does not exist
            out = E.Binary("add", out, t if c == 1 else E.Binary("mul", E.Const(c, "int64"), t, "int64"),
                           "int64")
        else:
            out = E.Binary("sub", out, t if c == -1 else E.Binary("mul", E.Const(-c, "int64"), t, "int64"),
                           "int64")
    k = lin.get(None, 0)
    if out is None:
        return E.Const(k, "int64")
    if k > 0 or k == _INT64_MIN:
        return E.Binary("add", out, E.Const(k, "int64"), "int64")
    if k < 0:
        return E.Binary("sub", out, E.Const(-k, "int64"), "int64")
    return out


def _divmod_rule(n: E.Expr):
    if not (isinstance(n, E.Binary) and n.op in ("floordiv", "mod") and n.dtype == "int64"
            and isinstance(n.b, E.Const) and n.b.value > 0):
        return None
    c = n.b.value
    lin = _linear(n.a)
    whole = {t: v // c for t, v in lin.items() if v % c == 0}
    if not whole or len(whole) == len(lin) and n.op == "floordiv" and c != 1:
        if len(whole) == len(lin):  # everything divisible
            return _build(whole) if n.op == "floordiv" else E.Const(0, "int64")
        return None
    rest = {t: v for t, v in lin.items() if v % c != 0}
    rest_e = E.Binary(n.op, _build(rest), n.b, "int64")
    if n.op == "mod":
        return rest_e
    return E.Binary("add", _build(whole), rest_e, "int64")


def _rule(n: E.Expr):
    r = _fold(n)
    if r is not None:
        return r
    r = _identities(n)
    if r is not None:
        return r
    r = _divmod_rule(n)
    if r is not None:
        return r
    if isinstance(n, E.Binary) and n.op in ("lt", "le", "gt", "ge", "eq", "ne") and n.a.dtype == "int64":
        la, lb = _linear(n.a), _linear(n.b)
        diff = dict(la)
        for t, c in lb.items():
            diff[t] = diff.get(t, 0) - c
        if all(c == 0 for t, c in diff.items() if t is not None):  # a - b is a constant
            d = diff.get(None, 0)
            v = {"lt": d < 0, "le": d <= 0, "gt": d > 0, "ge": d >= 0, "eq": d == 0, "ne": d != 0}[n.op]
            return E.Const(v, "bool")
    if n.dtype == "int64" and isinstance(n, (E.Binary, E.Unary)) and n.op in ("add", "sub", "mul", "neg"):
        b = _build(_linear(n))
        if b is not n:
            return b
    return None


def simplify(e: E.Expr) -> E.Expr:
    """Rewrite to a fixed point (bounded: each pass must change something to go on)."""
    for _ in range(8):
        new = E.transform(e, _rule)
        if new is e:
            return e
        e = new
    return e
