"""Simplifier: constant folding, identities exact in floating point, index normalisation.

Three rule sets on the rewrite engine (rewrite.py), applied in this order at each node:

- FOLD: an operator, intrinsic or cast of constants is evaluated with the op table's numpy
  rule, exactly as the kernels compute it (integer // and % by zero give 0, int32 wraps).
- IDENTITIES: only those that hold bit for bit in floating point: `x*1`, `x/1`, `x-0`,
  `-(-x)`, `x**2 -> x*x`; never `x*0` (NaN) nor `x+0` (-0.0), which hold for integers only.
- INDEX: index arithmetic (int64) is put in a canonical linear form `c0 + c1*t1 + ...` with
  the terms in a fixed order, so that `2*i + k - i` and `k + i` become the same node; floor
  division and modulo by a positive constant c (exact under numpy's floor semantics):
  `(c*a + b) // c -> a + b // c` and `(c*a + b) % c -> b % c`; and a comparison of two
  index expressions that differ by a constant is decided.

`linear(e)` / `build_linear(lin)` (the linear form and back) serve autodiff's index solving
and bounds inference too.
"""

from __future__ import annotations

import numpy as np

from . import expr as E
from . import ops
from .rewrite import Pat, Rule, RuleSet, rewrite

_INTS = ("int32", "int64")
_FLOATS = ("float32", "float64")


# --- FOLD: constants -----------------------------------------------------------------------

def _fold_op(n: E.Expr) -> E.Expr:
    with np.errstate(all="ignore"):
        v = ops.evaluate(ops.of(n), [np.array(a.value, a.dtype) for a in n.children()], n.dtype)
        return E.const(v.item(), n.dtype)


def _fold_cast(n: E.Cast) -> E.Expr:
    with np.errstate(all="ignore"):
        return E.const(np.array(n.x.value, n.x.dtype).astype(n.dtype).item(), n.dtype)


def _all_const(n: E.Expr) -> bool:
    return all(type(a) is E.Const for a in n.children())


FOLD = RuleSet("fold", [
    Rule("fold_binary", Pat.binary(None, Pat.const(), Pat.const(), name="n"), _fold_op),
    Rule("fold_unary", Pat.unary(None, Pat.const(), name="n"), _fold_op),
    Rule("fold_call", Pat.call(name="n"), _fold_op, guard=_all_const),
    Rule("fold_cast", Pat.cast(Pat.const(), name="n"), _fold_cast),
])


# --- IDENTITIES ----------------------------------------------------------------------------

def _x(x, **_):
    return x


def _zero(n, **_):
    return E.Const(0, n.dtype)


def _and_const(a, b, **_):
    if isinstance(a, E.Const):
        return b if a.value else a
    return a if b.value else b


def _or_const(a, b, **_):
    if isinstance(a, E.Const):
        return a if a.value else b
    return b if b.value else a


def _either_const(a, b, **_) -> bool:
    return isinstance(a, E.Const) or isinstance(b, E.Const)


def _select_const(c, a, b):
    return a if c.value else b


x, y = Pat.var("x"), Pat.var("y")

IDENTITIES = RuleSet("identities", [
    Rule("mul_one", Pat.binary("mul", x, Pat.const(1), commutative=True), _x),
    Rule("div_one", Pat.binary("div", x, Pat.const(1)), _x),
    Rule("floordiv_one", Pat.binary("floordiv", x, Pat.const(1), dtype=_INTS), _x),
    Rule("sub_zero", Pat.binary("sub", x, Pat.const(0)), _x),
    # x**2 is x*x rounded once: exact, and no pow call
    Rule("square", Pat.binary("pow", x, Pat.const(2), dtype=_FLOATS, name="n"),
         lambda x, n: E.Binary("mul", x, x, n.dtype)),
    # x**0.5 is sqrt(x), as numpy computes it (sqrt(-inf) is nan and sqrt(-0.0) is -0.0, where C's
    # pow gives inf and 0.0)
    Rule("sqrt_half", Pat.binary("pow", x, Pat.const(0.5), dtype=_FLOATS)
         | Pat.call("pow", x, Pat.const(0.5), dtype=_FLOATS), lambda x: E.call("sqrt", x)),
    Rule("add_zero", Pat.binary("add", x, Pat.const(0), dtype=_INTS, commutative=True), _x),
    Rule("mul_zero", Pat.binary("mul", Pat.any(), Pat.const(0), dtype=_INTS, commutative=True, name="n"),
         _zero),
    Rule("sub_self", Pat.binary("sub", x, x, dtype=_INTS, name="n"), _zero),
    Rule("and_const", Pat.binary("and", Pat.var("a"), Pat.var("b"), dtype="bool"), _and_const,
         guard=_either_const),
    Rule("or_const", Pat.binary("or", Pat.var("a"), Pat.var("b"), dtype="bool"), _or_const,
         guard=_either_const),
    Rule("double_negation", Pat.unary("neg", Pat.unary("neg", x)), _x),
    Rule("double_not", Pat.unary("not", Pat.unary("not", x)), _x),
    Rule("double_invert", Pat.unary("invert", Pat.unary("invert", x)), _x),
    Rule("select_const", Pat.select(Pat.const(name="c"), Pat.var("a"), Pat.var("b")), _select_const),
    Rule("select_same", Pat.select(Pat.any(), x, x), _x),
    Rule("reduce_where_true", Pat.reduce(name="n"), lambda n: E.Reduce(n.combiner, n.axes, n.body, None, n.dtype),
         guard=lambda n: isinstance(n.cond, E.Const) and n.cond.value is True),
])
del x, y


# --- INDEX: linear forms of int64 index arithmetic -------------------------------------------

def linear(e: E.Expr) -> dict | None:
    """{term: coef} with key None for the constant, or None if `e` is not int64.

    `2*i + k - i` -> {i: 1, k: 1}; `3*(n - 1)` -> {n: 3, None: -3}; any other node is a term.
    """
    if e.dtype != "int64":
        return None
    if isinstance(e, E.Const):
        return {None: e.value}
    if isinstance(e, E.Binary) and e.op in ("add", "sub"):
        la, lb = linear(e.a), linear(e.b)
        s = 1 if e.op == "add" else -1
        out = dict(la)
        for t, c in lb.items():
            out[t] = out.get(t, 0) + s * c
        return out
    if isinstance(e, E.Unary) and e.op == "neg":
        return {t: -c for t, c in linear(e.x).items()}
    if isinstance(e, E.Binary) and e.op == "mul":
        la, lb = linear(e.a), linear(e.b)
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


def build_linear(lin: dict) -> E.Expr:
    """The canonical int64 expression of a linear form: terms in a fixed order, the constant last."""
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


def _divmod(n: E.Binary, a: E.Expr, c: E.Const):
    """`(c*a + b) // c -> a + b // c`, `(c*a + b) % c -> b % c` (c > 0)."""
    c = c.value
    lin = linear(a)
    whole = {t: v // c for t, v in lin.items() if v % c == 0}
    if not whole or len(whole) == len(lin) and n.op == "floordiv" and c != 1:
        if len(whole) == len(lin):  # everything divisible
            return build_linear(whole) if n.op == "floordiv" else E.Const(0, "int64")
        return None
    rest = {t: v for t, v in lin.items() if v % c != 0}
    rest_e = E.Binary(n.op, build_linear(rest), n.b, "int64")
    if n.op == "mod":
        return rest_e
    return E.Binary("add", build_linear(whole), rest_e, "int64")


_DECIDE = {"lt": lambda d: d < 0, "le": lambda d: d <= 0, "gt": lambda d: d > 0, "ge": lambda d: d >= 0,
           "eq": lambda d: d == 0, "ne": lambda d: d != 0}


def _compare(n: E.Binary, a: E.Expr, b: E.Expr):
    """A comparison of index expressions whose difference is a constant d: decided by d vs 0."""
    la, lb = linear(a), linear(b)
    diff = dict(la)
    for t, c in lb.items():
        diff[t] = diff.get(t, 0) - c
    if all(c == 0 for t, c in diff.items() if t is not None):  # a - b is a constant
        return E.Const(_DECIDE[n.op](diff.get(None, 0)), "bool")
    return None


def _axis_in_range(n: E.Binary, a: E.Expr, b: E.Expr):
    """An axis against its own extent or 0: `i < extent` and `i >= 0` hold for every point (the
    guard a gradient keeps when it could not tell two equal sizes apart)."""
    if isinstance(a, E.IndexVar) and b is a.extent and n.op in ("lt", "ge"):
        return E.Const(n.op == "lt", "bool")
    if isinstance(a, E.IndexVar) and isinstance(b, E.Const) and b.value == 0 and n.op in ("ge", "lt"):
        return E.Const(n.op == "ge", "bool")
    return None


def _normalise(n: E.Expr):
    return build_linear(_join_divmod(linear(n)))


def _join_divmod(lin: dict) -> dict:
    """`k*c*(x // c) + k*(x % c) -> k*x` (floor division and modulo: x == c*(x // c) + x % c),
    the index of an element read back through its window and offset (a pooling gradient)."""
    for t, k in list(lin.items()):
        if not (isinstance(t, E.Binary) and t.op == "mod" and isinstance(t.b, E.Const) and t.b.value > 0 and k):
            continue
        q = E.Binary("floordiv", t.a, t.b, "int64")
        if lin.get(q) != k * t.b.value or t not in lin:
            continue
        del lin[t], lin[q]
        for u, c in linear(t.a).items():
            lin[u] = lin.get(u, 0) + k * c
    return lin


INDEX = RuleSet("index", [
    Rule("divmod_const",
         Pat.binary(("floordiv", "mod"), Pat.var("a"), Pat.const(name="c"), dtype="int64", name="n"),
         _divmod, guard=lambda n, a, c: c.value > 0),
    Rule("compare_linear", Pat.binary(tuple(_DECIDE), Pat.var("a", dtype="int64"), Pat.var("b"), name="n"),
         _compare),
    Rule("axis_in_range", Pat.binary(("lt", "ge"), Pat.var("a", dtype="int64"), Pat.var("b"), name="n"),
         _axis_in_range),
    Rule("linear",
         Pat.binary(("add", "sub", "mul"), dtype="int64", name="n")
         | Pat.unary("neg", dtype="int64", name="n"),
         _normalise),
    # sizes are never negative: a slice's length maximum(n, 0) is n
    Rule("max_nonneg_zero", Pat.call("maximum", Pat.var("a", dtype="int64"), Pat.const(0)),
         lambda a: a, guard=lambda a: ops.nonneg(a)),
    Rule("min_nonneg_zero", Pat.call("minimum", Pat.var("a", dtype="int64"), Pat.const(0)),
         lambda a: E.Const(0, "int64"), guard=lambda a: ops.nonneg(a)),
])

SIMPLIFY = (FOLD, IDENTITIES, INDEX)


def simplify(e: E.Expr) -> E.Expr:
    """`e` rewritten by FOLD, IDENTITIES and INDEX to a fixed point (at most 8 passes)."""
    return rewrite(e, SIMPLIFY, max_passes=8)[0]
