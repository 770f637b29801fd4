"""Loop IR: what a kernel becomes after lowering.

Statements are immutable dataclasses; scalar expressions are the expression IR
of expr.py, where `Load.tensor` is a `Buffer` and loop variables are `Var`s.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from . import expr as E

LOOP_KINDS = ("serial", "parallel", "vectorized", "unrolled",
              "block_x", "block_y", "block_z", "thread_x", "thread_y", "thread_z")


@dataclass(frozen=True, eq=False)
class Buffer:
    """An array the kernel reads or writes: an input, an output or a temporary."""
    name: str
    dtype: str
    shape: tuple  # int64 expressions of sizes
    role: str  # input | output | temp

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __hash__(self):
        return id(self)


@E.node
class Checked(E.Expr):
    """`index`, verified at run time to lie in [0, extent); failure sets error `code`."""
    index: E.Expr
    extent: E.Expr
    code: int
    dtype: str = "int64"

    def children(self):
        return (self.index, self.extent)

    def rebuild(self, kids):
        return Checked(kids[0], kids[1], self.code, self.dtype)


class Stmt:
    """Base of loop-IR statements. Every statement lists the fields that hold its children
    (`KIDS`: expressions and statements; a tuple-valued field holds several, a field may hold
    None), so that one walker and one bottom-up mapper (below) serve every pass. The other
    fields (a loop's variable, a store's buffer) are binders and names, not children."""

    KIDS: tuple = ()

    def children(self) -> tuple:
        out = []
        for f in self.KIDS:
            v = getattr(self, f)
            out.extend(v) if isinstance(v, tuple) else out.append(v)
        return tuple(out)

    def rebuild(self, kids) -> Stmt:
        """This statement with its children replaced (same count, same order as children())."""
        kids, values, k = tuple(kids), {}, 0
        for f in self.KIDS:
            v = getattr(self, f)
            n = len(v) if isinstance(v, tuple) else 1
            values[f] = kids[k:k + n] if isinstance(v, tuple) else kids[k]
            k += n
        if all(values[f] is getattr(self, f) or (isinstance(values[f], tuple) and len(values[f]) ==
               len(getattr(self, f)) and all(a is b for a, b in zip(values[f], getattr(self, f))))
               for f in self.KIDS):
            return self
        return replace(self, **values)

    def __str__(self) -> str:
        return "\n".join(stmt_lines(self))


@dataclass(frozen=True, eq=False)
class For(Stmt):
    KIDS = ("extent", "body")
    var: E.Var
    extent: E.Expr
    body: Stmt
    kind: str = "serial"


@dataclass(frozen=True, eq=False)
class Store(Stmt):
    KIDS = ("indices", "value")
    buffer: Buffer
    indices: tuple
    value: E.Expr


@dataclass(frozen=True, eq=False)
class Declare(Stmt):
    """A local scalar (scope=local): accumulators of reductions."""
    KIDS = ("init",)
    var: E.Var
    init: E.Expr


@dataclass(frozen=True, eq=False)
class Assign(Stmt):
    KIDS = ("value",)
    var: E.Var
    value: E.Expr


@dataclass(frozen=True, eq=False)
class IfThenElse(Stmt):
    KIDS = ("cond", "then", "otherwise")
    cond: E.Expr
    then: Stmt
    otherwise: Stmt | None = None


@dataclass(frozen=True, eq=False)
class Seq(Stmt):
    KIDS = ("stmts",)
    stmts: tuple = field(default_factory=tuple)


@dataclass(frozen=True, eq=False)
class Assert(Stmt):
    """Checked at kernel entry: when `cond` is false the kernel returns `code` untouched."""
    KIDS = ("cond",)
    cond: E.Expr
    code: int


@dataclass(frozen=True, eq=False)
class Allocate(Stmt):
    """A local array live in `body` (a C array on the stack): partial accumulators of rfactor,
    tiles of cache_read/cache_write. `buffer.role` is "local"; its shape is int64 Consts."""
    KIDS = ("body",)
    buffer: Buffer
    body: Stmt


class NameScope:
    """Fresh names within one kernel: `fresh("acc")` gives acc, acc1, acc2, ... never one in use."""

    def __init__(self, used=()):
        self.used: set = set(used)

    def fresh(self, base: str) -> str:
        name, k = base, 0
        while name in self.used:
            k += 1
            name = f"{base}{k}"
        self.used.add(name)
        return name


# --- the generic walker and mapper ------------------------------------------------------------

def walk(s: Stmt):
    """Every statement inside `s` (itself included), parents before children, in order."""
    stack = [s]
    while stack:
        n = stack.pop()
        yield n
        stack.extend(reversed([c for c in n.children() if isinstance(c, Stmt)]))


def walk_path(s: Stmt, ancestors: tuple = ()):
    """(statement, the statements enclosing it, outermost first) for every statement inside `s`."""
    yield s, ancestors
    inner = ancestors + (s,)
    for c in s.children():
        if isinstance(c, Stmt):
            yield from walk_path(c, inner)


def leaves(s: Stmt):
    """The statements inside `s` that hold no statement (stores, declarations, assignments, ...)."""
    return (n for n in walk(s) if not any(isinstance(c, Stmt) for c in n.children())
            and not isinstance(n, Seq))


def exprs(s: Stmt):
    """Every expression node used by the statements inside `s` (children before parents)."""
    for n in walk(s):
        for c in n.children():
            if isinstance(c, E.Expr):
                yield from E.walk(c)


def map_stmt(s: Stmt, stmt_fn=None, expr_fn=None) -> Stmt:
    """Bottom-up rebuild: each expression child becomes `expr_fn(child)`, each statement is rebuilt
    from its mapped children and then replaced by `stmt_fn(statement)` unless that returns None."""
    kids = tuple(map_stmt(c, stmt_fn, expr_fn) if isinstance(c, Stmt) else
                 (expr_fn(c) if expr_fn is not None and isinstance(c, E.Expr) else c) for c in s.children())
    new = s.rebuild(kids)
    if stmt_fn is not None:
        r = stmt_fn(new)
        if r is not None:
            return r
    return new


def loops(s: Stmt) -> list:
    """Every loop inside `s`, outermost first (pre-order)."""
    return [n for n in walk(s) if isinstance(n, For)]


def work(s: Stmt) -> E.Expr:
    """How many statements `s` runs, as an expression of the sizes: the estimate behind a
    parallel loop's "worth threading" test. A branch counts in full; an extent that depends on
    an outer loop (a split's last, shorter block) counts as in that loop's first iteration."""
    def count(x: Stmt) -> E.Expr:
        if isinstance(x, For):
            return x.extent * count(x.body)
        total = None
        for c in x.children():
            if isinstance(c, Stmt):
                total = count(c) if total is None else total + count(c)
        return E.Const(1, "int64") if total is None else total
    w = count(s)
    return E.substitute(w, {v: E.Const(0, "int64") for v in E.walk(w) if isinstance(v, E.Var)})


def seq(*stmts) -> Stmt:
    flat = []
    for s in stmts:
        if s is None:
            continue
        flat.extend(s.stmts if isinstance(s, Seq) else [s])
    return flat[0] if len(flat) == 1 else Seq(tuple(flat))


def stmt_lines(s: Stmt, indent: str = "") -> list[str]:
    """Readable text of a loop nest (the `str` of every statement)."""
    from .printer import expr_str
    if isinstance(s, Seq):
        return [ln for x in s.stmts for ln in stmt_lines(x, indent)]
    if isinstance(s, For):
        kind = "" if s.kind == "serial" else f"  # {s.kind}"
        return [f"{indent}for {s.var.name} in range({expr_str(s.extent)}):{kind}",
                *stmt_lines(s.body, indent + "  ")]
    if isinstance(s, Store):
        idx = ", ".join(expr_str(i) for i in s.indices)
        return [f"{indent}{s.buffer.name}[{idx}] = {expr_str(s.value)}"]
    if isinstance(s, Declare):
        return [f"{indent}{s.var.name}: {s.var.dtype} = {expr_str(s.init)}"]
    if isinstance(s, Assign):
        return [f"{indent}{s.var.name} = {expr_str(s.value)}"]
    if isinstance(s, IfThenElse):
        out = [f"{indent}if {expr_str(s.cond)}:", *stmt_lines(s.then, indent + "  ")]
        if s.otherwise is not None:
            out += [f"{indent}else:", *stmt_lines(s.otherwise, indent + "  ")]
        return out
    if isinstance(s, Allocate):
        shape = ", ".join(expr_str(d) for d in s.buffer.shape)
        return [f"{indent}allocate {s.buffer.name}: {s.buffer.dtype}[{shape}]  # local",
                *stmt_lines(s.body, indent + "  ")]
    if isinstance(s, Assert):
        return [f"{indent}assert {expr_str(s.cond)}  # else error {s.code}"]
    return [f"{indent}<{type(s).__name__}>"]
