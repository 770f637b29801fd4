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
        """The operand nodes, in a fixed order (leaves: none)."""
        return ()

    def rebuild(self, kids: tuple) -> Expr:
        """This node with its children replaced (same op, fields and dtype)."""
        return self

    # --- the DSL: operators. `+ - * / // % ** < <= > >= == != & | ^`, unary `-`, `~` and abs()
    # are installed from the op table (ops.py: each row names the methods that build it).
    def __pos__(self):
        return self

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

    def rebuild(self, kids):
        if not kids or kids[0] is self.extent:
            return self
        return IndexVar(self.name, kids[0], self.uid, self.reduce)


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

    def rebuild(self, kids):
        return Unary(self.op, kids[0], self.dtype)


@node
class Binary(Expr):
    op: str
    a: Expr
    b: Expr
    dtype: str

    def children(self):
        return (self.a, self.b)

    def rebuild(self, kids):
        return Binary(self.op, kids[0], kids[1], self.dtype)

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

    def rebuild(self, kids):
        return Call(self.fn, tuple(kids), self.dtype)


@node
class Load(Expr):
    tensor: Any  # a Tensor (tensor.py) or, in the loop IR, a Buffer
    indices: tuple
    dtype: str

    def children(self):
        return self.indices

    def rebuild(self, kids):
        return Load(self.tensor, tuple(kids), self.dtype)


@node
class Select(Expr):
    cond: Expr
    a: Expr
    b: Expr
    dtype: str

    def children(self):
        return (self.cond, self.a, self.b)

    def rebuild(self, kids):
        return Select(kids[0], kids[1], kids[2], self.dtype)


@node
class Cast(Expr):
    x: Expr
    dtype: str

    def children(self):
        return (self.x,)

    def rebuild(self, kids):
        return Cast(kids[0], self.dtype)


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

    def rebuild(self, kids):
        return Bound(kids[0], kids[1], self.tensor, self.dim)


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

    def rebuild(self, kids):
        return Reduce(self.combiner, self.axes, kids[0], kids[1] if len(kids) > 1 else None, self.dtype)


# --- smart constructors: conversion of Python scalars and numpy's dtype promotion ---------

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


def is_size(e) -> bool:
    """An integer expression of sizes and constants only (`n - 1`, `h * w`): what numpy would
    hold as a Python int (`x.shape[0]`), so it promotes weakly (`x / n` keeps float32)."""
    if not isinstance(e, Expr) or e.dtype != "int64":
        return False
    nodes = walk(e)
    return any(isinstance(n, SizeVar) for n in nodes) and all(
        isinstance(n, (SizeVar, Const, Binary, Unary, Cast, Call)) for n in nodes)


def _operands(a, b):
    """Convert a pair to expressions with numpy's (weak-scalar) promotion; returns (a, b, dtype).
    Size expressions are weak, as the Python ints numpy's shapes are."""
    ae, be = isinstance(a, Expr), isinstance(b, Expr)
    if ae and be and is_size(a) != is_size(b):
        strong = b if is_size(a) else a
        dtype = dt.promote_weak(strong.dtype, 0)
    elif ae and be:
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


def _promoted(args: tuple):
    """Operands converted to expressions with numpy's (weak-scalar) promotion: (exprs, dtype)."""
    if len(args) == 1:
        x = as_expr(args[0])
        return (x,), x.dtype
    if len(args) == 2:
        a, b, dtype = _operands(*args)
        return (a, b), dtype
    args = tuple(a.__kd_expr__() if hasattr(a, "__kd_expr__") else a for a in args)
    strong = [a.dtype for a in args if isinstance(a, Expr)]
    if not strong:
        args = tuple(as_expr(a) for a in args)
        strong = [a.dtype for a in args]
    dtype = strong[0]
    for d in strong[1:]:
        dtype = dt.promote(dtype, d)
    for a in args:
        if not isinstance(a, Expr):
            dtype = dt.promote_weak(dtype, a)
    return tuple(a if isinstance(a, Expr) else const(a, dtype) for a in args), dt.normalize(dtype)


def _apply(op, args: tuple) -> Expr:
    """The node of row `op` (ops.py) applied to `args`: promoted, typed by the row, cast."""
    exprs, dtype = _promoted(args)
    if dtype in op.becomes:
        from .ops import REGISTRY
        op = REGISTRY[op.kind, op.becomes[dtype]]
    operand, out = op.typing(dtype, exprs)
    exprs = tuple(cast(e, operand) for e in exprs)
    if op.kind == "binary":
        return Binary(op.name, exprs[0], exprs[1], out)
    if op.kind == "unary":
        return Unary(op.name, exprs[0], out)
    return Call(op.name, exprs, out)


def binary(op: str, a, b) -> Expr:
    """`a op b` with numpy's promotion: `binary("add", x, 1)` is `x + 1`."""
    from .ops import BINARY
    row = BINARY.get(op)
    if row is None:
        raise ValueError(f"unknown binary operator {op!r}")
    return _apply(row, (a, b))


def unary(op: str, x) -> Expr:
    from .ops import UNARY
    row = UNARY.get(op)
    if row is None:
        raise ValueError(f"unknown unary operator {op!r}")
    return _apply(row, (x,))


def select(cond, a, b) -> Expr:
    cond = as_expr(cond)
    if cond.dtype != "bool":
        raise DTypeError(f"kd.where needs a bool condition, got {cond.dtype} ({cond})")
    a, b, dtype = _operands(a, b)
    return Select(cond, cast(a, dtype), cast(b, dtype), dtype)


def call(fn: str, *args) -> Expr:
    """The intrinsic `fn` applied to `args`: `call("exp", x)` is `kd.exp(x)`."""
    from .ops import INTRINSICS
    row = INTRINSICS.get(fn)
    if row is None:
        raise ValueError(f"unknown intrinsic {fn!r}")
    if len(args) != row.arity:
        raise TypeError(f"kd.{fn} takes {row.arity} argument(s), got {len(args)}")
    return _apply(row, args)


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
    """The node `n` with its children replaced (same op and dtype): `n.rebuild(kids)`."""
    return n.rebuild(kids)


def fold(e: Expr, fn):
    """Bottom-up evaluation: `fn(node, values of its children)` for every distinct node of `e`,
    children first; returns the value of `e`. The one engine of every bottom-up pass."""
    memo: dict = {}
    for n in walk(e):
        memo[n] = fn(n, tuple(memo[k] for k in n.children()))
    return memo[e]


def transform(e: Expr, fn) -> Expr:
    """Bottom-up rewrite: fn(node_with_new_children) -> replacement or None (keep)."""
    def step(n, new):
        m = n if all(a is b for a, b in zip(n.children(), new)) else n.rebuild(new)
        r = fn(m)
        return m if r is None else r
    return fold(e, step)


def substitute(e: Expr, mapping: dict) -> Expr:
    """Replace nodes (typically IndexVars) by expressions."""
    if not mapping:
        return e
    return transform(e, lambda n: mapping.get(n))


def free_axes(e: Expr) -> set:
    """IndexVars used in `e` that are not bound by a Reduce inside it."""
    def free(n, kids):
        if isinstance(n, IndexVar):
            return frozenset((n,))
        out = frozenset().union(*kids)
        if isinstance(n, Reduce):  # binds its axes, in its body and in their extents
            out = (out | frozenset().union(*(free_axes(a.extent) for a in n.axes))) - frozenset(n.axes)
        return out
    return set(fold(e, free))


def canonical(e: Expr) -> Expr:
    """`e` with the axes its reductions bind renamed by position: two expressions that differ
    only in the names of their bound axes (alpha-equivalent) have the same canonical form. Fusion
    renames an inlined op's reduction axes per copy; lowering keys its memo on this form so that
    the copies are still computed once."""
    bound = [a for n in walk(e) if isinstance(n, Reduce) for a in n.axes]
    if not bound:
        return e
    fresh = {a: IndexVar(f"_k{k}", a.extent, -1 - k, True) for k, a in enumerate(dict.fromkeys(bound))}

    def rule(n):
        if isinstance(n, Reduce):
            return Reduce(n.combiner, tuple(fresh[a] for a in n.axes), n.body, n.cond, n.dtype)
        return fresh.get(n)
    return transform(e, rule)


def size_vars(e: Expr) -> set:
    return {n for n in walk(e) if isinstance(n, SizeVar)} | {
        s for n in walk(e) if isinstance(n, IndexVar) for s in size_vars(n.extent)}


def loads(e: Expr) -> list:
    return [n for n in walk(e) if isinstance(n, Load)]


from . import ops as _ops  # noqa: F401 - the op table installs the operator methods of Expr
