"""Scalar expression IR: immutable, interned nodes.

Every node is hash-consed: constructing a node structurally equal to a live one
returns that same object, so structural equality is identity and a node's hash
is free (tinygrad's UOp idea). That leaves ``==`` free to be the DSL's
comparison operator, as users expect (``kd.where(x == 0, ...)``).
"""

from __future__ import annotations

import itertools
import weakref
from dataclasses import dataclass
from typing import Any

from .. import dtypes as dt
from ..errors import DTypeError


def _key(v: Any):
    if isinstance(v, float):
        return ("f", v.hex())
    if isinstance(v, bool):
        return ("b", v)
    if isinstance(v, tuple):
        return tuple(_key(x) for x in v)
    return v


class _Interned(type):
    """Metaclass that returns the live node with the same class and fields, if any."""

    def __call__(cls, *args):
        fields = cls.__dataclass_fields__
        if len(args) < len(fields):  # fill defaults so that every spelling interns alike
            args += tuple(f.default for f in list(fields.values())[len(args):])
        key = (cls, *(_key(a) for a in args))
        node = cls._table.get(key)
        if node is None:
            node = super().__call__(*args)
            cls._table[key] = node
        return node


class Expr(metaclass=_Interned):
    """Base of scalar expressions. Operators build new expressions."""

    __slots__ = ()
    _table: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
    dtype: str

    __hash__ = object.__hash__

    def children(self) -> tuple[Expr, ...]:
        return ()

    # --- the DSL: operators -------------------------------------------------------
    def __add__(self, o): return binary("add", self, o)
    def __radd__(self, o): return binary("add", o, self)
    def __sub__(self, o): return binary("sub", self, o)
    def __rsub__(self, o): return binary("sub", o, self)
    def __mul__(self, o): return binary("mul", self, o)
    def __rmul__(self, o): return binary("mul", o, self)
    def __truediv__(self, o): return binary("div", self, o)
    def __rtruediv__(self, o): return binary("div", o, self)
    def __floordiv__(self, o): return binary("floordiv", self, o)
    def __rfloordiv__(self, o): return binary("floordiv", o, self)
    def __mod__(self, o): return binary("mod", self, o)
    def __rmod__(self, o): return binary("mod", o, self)
    def __pow__(self, o): return binary("pow", self, o)
    def __rpow__(self, o): return binary("pow", o, self)
    def __lt__(self, o): return binary("lt", self, o)
    def __le__(self, o): return binary("le", self, o)
    def __gt__(self, o): return binary("gt", self, o)
    def __ge__(self, o): return binary("ge", self, o)
    def __eq__(self, o): return binary("eq", self, o)  # type: ignore[override]
    def __ne__(self, o): return binary("ne", self, o)  # type: ignore[override]
    def __and__(self, o): return binary("and", self, o)
    def __rand__(self, o): return binary("and", o, self)
    def __or__(self, o): return binary("or", self, o)
    def __ror__(self, o): return binary("or", o, self)
    def __xor__(self, o): return binary("xor", self, o)
    def __rxor__(self, o): return binary("xor", o, self)
    def __neg__(self): return unary("neg", self)
    def __pos__(self): return self
    def __invert__(self): return unary("invert", self)
    def __abs__(self): return call("abs", self)

    def __bool__(self):
        raise TypeError(
            "a kerneldsl expression has no truth value: use kd.where(cond, a, b) instead of "
            "`if`, and & | ~ instead of and/or/not")

    def __str__(self) -> str:
        from .printer import expr_str
        return expr_str(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self}>"


def node(cls):
    """Declare an IR node: a frozen, slotted dataclass with identity equality (interned)."""
    return dataclass(frozen=True, slots=True, eq=False, weakref_slot=True)(cls)


@node
class Const(Expr):
    value: Any
    dtype: str


@node
class SizeVar(Expr):
    """A symbolic dimension, bound from input shapes at call time."""
    name: str
    dtype: str = "int64"


_uids = itertools.count()


@node
class IndexVar(Expr):
    """An axis: a compute op's output axis or a reduction axis, ranging over [0, extent)."""
    name: str
    extent: Expr
    uid: int
    reduce: bool = False
    dtype: str = "int64"
    # the extent is not a child: rewrites must never turn an axis into a different axis


def index_var(name: str, extent, reduce: bool = False) -> IndexVar:
    return IndexVar(name, as_index(extent, f"extent of axis {name}"), next(_uids), reduce)


@node
class Var(Expr):
    """A named scalar of the loop IR: a loop variable or a local accumulator."""
    name: str
    dtype: str


@node
class Unary(Expr):
    op: str  # neg | not | invert
    x: Expr
    dtype: str

    def children(self):
        return (self.x,)


@node
class Binary(Expr):
    op: str
    a: Expr
    b: Expr
    dtype: str

    def children(self):
        return (self.a, self.b)

    def __bool__(self):
        # so that `a == b` on expressions can still answer structural questions
        if self.op == "eq":
            return self.a is self.b
        if self.op == "ne":
            return self.a is not self.b
        return Expr.__bool__(self)


@node
class Call(Expr):
    fn: str
    args: tuple
    dtype: str

    def children(self):
        return self.args


@node
class Load(Expr):
    tensor: Any  # a Tensor (tensor.py) or, in the loop IR, a Buffer
    indices: tuple
    dtype: str

    def children(self):
        return self.indices


@node
class Select(Expr):
    cond: Expr
    a: Expr
    b: Expr
    dtype: str

    def children(self):
        return (self.cond, self.a, self.b)


@node
class Cast(Expr):
    x: Expr
    dtype: str

    def children(self):
        return (self.x,)


@node
class Bound(Expr):
    """`index`, which must lie in [0, extent): dimension `dim` of a read of `tensor` (a name) that
    fusion inlined away. Lowering checks it like the read it replaces; its value is `index`."""
    index: Expr
    extent: Expr
    tensor: str
    dim: int
    dtype: str = "int64"

    def children(self):
        return (self.index, self.extent)


REDUCERS = ("sum", "prod", "max", "min", "argmax", "argmin")


@node
class Reduce(Expr):
    """combiner over `axes` of `body`, counting only points where `cond` holds (None: all)."""
    combiner: str
    axes: tuple
    body: Expr
    cond: Expr | None
    dtype: str

    def children(self):
        return (self.body,) if self.cond is None else (self.body, self.cond)


# --- smart constructors: conversion of Python scalars and numpy's dtype promotion ---------

ARITH = ("add", "sub", "mul", "div", "floordiv", "mod", "pow")
COMPARE = ("lt", "le", "gt", "ge", "eq", "ne")
LOGIC = ("and", "or", "xor")


def const(value, dtype: str | None = None) -> Const:
    dtype = dt.normalize(dtype) if dtype is not None else dt.scalar_dtype(value)
    return Const(dt.cast_value(value, dtype), dtype)


def as_expr(v) -> Expr:
    if isinstance(v, Expr):
        return v
    if hasattr(v, "__kd_expr__"):
        return v.__kd_expr__()
    return const(v)


def as_index(v, what: str = "index") -> Expr:
    e = as_expr(v)
    if e.dtype not in dt.INTS:
        raise DTypeError(f"{what} must be an integer expression, got {e.dtype} ({e})")
    return cast(e, "int64")


def cast(x, dtype) -> Expr:
    x, dtype = as_expr(x), dt.normalize(dtype)
    if x.dtype == dtype:
        return x
    if isinstance(x, Const):
        v = x.value
        if dtype == "bool":
            return Const(bool(v), "bool")
        if dtype in dt.INTS and isinstance(v, float):
            return Cast(x, dtype)  # float->int of a constant: leave the C/numpy rule in charge
        import numpy as np
        return Const(dt.cast_value(np.array(v).astype(dtype).item(), dtype), dtype)
    return Cast(x, dtype)


def _operands(a, b):
    """Convert a pair to expressions with numpy's (weak-scalar) promotion; returns (a, b, dtype)."""
    ae, be = isinstance(a, Expr), isinstance(b, Expr)
    if ae and be:
        dtype = dt.promote(a.dtype, b.dtype)
    elif ae:
        b = b.__kd_expr__() if hasattr(b, "__kd_expr__") else b
        dtype = dt.promote(a.dtype, b.dtype) if isinstance(b, Expr) else dt.promote_weak(a.dtype, b)
        b = b if isinstance(b, Expr) else const(b, dtype)  # DTypeError if it does not fit, as numpy
    elif be:
        a = a.__kd_expr__() if hasattr(a, "__kd_expr__") else a
        dtype = dt.promote(a.dtype, b.dtype) if isinstance(a, Expr) else dt.promote_weak(b.dtype, a)
        a = a if isinstance(a, Expr) else const(a, dtype)
    else:
        a, b = as_expr(a), as_expr(b)
        dtype = dt.promote(a.dtype, b.dtype)
    dt.normalize(dtype)
    return a, b, dtype


def binary(op: str, a, b) -> Expr:
    a, b, dtype = _operands(a, b)
    if op in ARITH:
        if dtype == "bool":
            dtype = "int64"
        if op == "div" and dtype not in dt.FLOATS:
            dtype = "float64"
        a, b = cast(a, dtype), cast(b, dtype)
        return Binary(op, a, b, dtype)
    if op in COMPARE:
        return Binary(op, cast(a, dtype), cast(b, dtype), "bool")
    if op in LOGIC:
        if dtype in dt.FLOATS:
            raise DTypeError(f"'{op}' needs bool or integer operands, got {a} and {b}")
        return Binary(op, cast(a, dtype), cast(b, dtype), dtype)
    raise ValueError(f"unknown binary operator {op!r}")


def unary(op: str, x) -> Expr:
    x = as_expr(x)
    if op == "neg":
        if x.dtype == "bool":
            raise DTypeError(f"cannot negate the bool expression {x}; use ~ for logical not")
        return Unary("neg", x, x.dtype)
    if op == "invert":
        if x.dtype in dt.FLOATS:
            raise DTypeError(f"~ needs a bool or integer operand, got {x.dtype} ({x})")
        return Unary("not" if x.dtype == "bool" else "invert", x, x.dtype)
    raise ValueError(f"unknown unary operator {op!r}")


def select(cond, a, b) -> Expr:
    cond = as_expr(cond)
    if cond.dtype != "bool":
        raise DTypeError(f"kd.where needs a bool condition, got {cond.dtype} ({cond})")
    a, b, dtype = _operands(a, b)
    return Select(cond, cast(a, dtype), cast(b, dtype), dtype)


def call(fn: str, *args) -> Expr:
    from .intrinsics import INTRINSICS
    rule = INTRINSICS.get(fn)
    if rule is None:
        raise ValueError(f"unknown intrinsic {fn!r}")
    if len(args) != rule.nargs:
        raise TypeError(f"kd.{fn} takes {rule.nargs} argument(s), got {len(args)}")
    if rule.nargs == 2:
        a, b, dtype = _operands(*args)
        exprs = (cast(a, dtype), cast(b, dtype))
    else:
        exprs = (as_expr(args[0]),)
    out = rule.result_dtype(exprs[0].dtype)
    exprs = tuple(cast(e, out) for e in exprs)
    return Call(fn, exprs, out)


# --- traversal helpers -----------------------------------------------------------------

def postorder(roots, children) -> list:
    """Every distinct node reachable from `roots`, children before parents (iterative DFS)."""
    seen, order = set(), []
    for root in roots:
        stack = [(root, False)]
        while stack:
            n, done = stack.pop()
            if done:
                order.append(n)
                continue
            if n in seen:
                continue
            seen.add(n)
            stack.append((n, True))
            stack.extend((c, False) for c in reversed(children(n)) if c not in seen)
    return order


def walk(e: Expr):
    """Every distinct node of `e`, children before parents."""
    return postorder((e,), lambda n: n.children())


def rebuild(n: Expr, kids: tuple) -> Expr:
    """The node `n` with its children replaced (same op and dtype)."""
    if isinstance(n, Unary):
        return Unary(n.op, kids[0], n.dtype)
    if isinstance(n, Binary):
        return Binary(n.op, kids[0], kids[1], n.dtype)
    if isinstance(n, Call):
        return Call(n.fn, tuple(kids), n.dtype)
    if isinstance(n, Load):
        return Load(n.tensor, tuple(kids), n.dtype)
    if isinstance(n, Select):
        return Select(kids[0], kids[1], kids[2], n.dtype)
    if isinstance(n, Cast):
        return Cast(kids[0], n.dtype)
    if isinstance(n, Reduce):
        return Reduce(n.combiner, n.axes, kids[0], kids[1] if len(kids) > 1 else None, n.dtype)
    if isinstance(n, IndexVar):
        return n if kids[0] is n.extent else IndexVar(n.name, kids[0], n.uid, n.reduce)
    if isinstance(n, Bound):
        return Bound(kids[0], kids[1], n.tensor, n.dim)
    if hasattr(n, "rebuild"):  # nodes defined elsewhere (loops.Checked)
        return n.rebuild(kids)
    return n


def transform(e: Expr, fn) -> Expr:
    """Bottom-up rewrite: fn(node_with_new_children) -> replacement or None (keep)."""
    memo: dict[Expr, Expr] = {}
    for n in walk(e):
        kids = n.children()
        new = tuple(memo[k] for k in kids)
        m = n if all(a is b for a, b in zip(kids, new)) else rebuild(n, new)
        r = fn(m)
        memo[n] = m if r is None else r
    return memo[e]


def substitute(e: Expr, mapping: dict) -> Expr:
    """Replace nodes (typically IndexVars) by expressions."""
    if not mapping:
        return e
    return transform(e, lambda n: mapping.get(n))


def free_axes(e: Expr) -> set:
    """IndexVars used in `e` that are not bound by a Reduce inside it."""
    out: set = set()

    def visit(n, bound):
        if isinstance(n, IndexVar):
            if n not in bound:
                out.add(n)
            return
        if isinstance(n, Reduce):
            bound = bound | set(n.axes)
            for a in n.axes:
                visit(a.extent, bound)
        for c in n.children():
            visit(c, bound)

    visit(e, frozenset())
    return out


def size_vars(e: Expr) -> set:
    return {n for n in walk(e) if isinstance(n, SizeVar)} | {
        s for n in walk(e) if isinstance(n, IndexVar) for s in size_vars(n.extent)}


def loads(e: Expr) -> list:
    return [n for n in walk(e) if isinstance(n, Load)]
