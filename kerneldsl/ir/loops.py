"""Loop IR: what a kernel becomes after lowering.

Statements are immutable dataclasses; scalar expressions are the expression IR
of expr.py, where `Load.tensor` is a `Buffer` and loop variables are `Var`s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    def __str__(self) -> str:
        return "\n".join(stmt_lines(self))


@dataclass(frozen=True, eq=False)
class For(Stmt):
    var: E.Var
    extent: E.Expr
    body: Stmt
    kind: str = "serial"
    work: E.Expr | None = None  # for parallel loops: total work, to skip threading small runs


@dataclass(frozen=True, eq=False)
class Store(Stmt):
    buffer: Buffer
    indices: tuple
    value: E.Expr


@dataclass(frozen=True, eq=False)
class Declare(Stmt):
    """A local scalar (scope=local): accumulators of reductions."""
    var: E.Var
    init: E.Expr


@dataclass(frozen=True, eq=False)
class Assign(Stmt):
    var: E.Var
    value: E.Expr


@dataclass(frozen=True, eq=False)
class IfThenElse(Stmt):
    cond: E.Expr
    then: Stmt
    otherwise: Stmt | None = None


@dataclass(frozen=True, eq=False)
class Seq(Stmt):
    stmts: tuple = field(default_factory=tuple)


@dataclass(frozen=True, eq=False)
class Assert(Stmt):
    """Checked at kernel entry: when `cond` is false the kernel returns `code` untouched."""
    cond: E.Expr
    code: int


@dataclass(frozen=True, eq=False)
class Allocate(Stmt):
    """A local array live in `body` (a C array on the stack): partial accumulators of rfactor,
    tiles of cache_read/cache_write. `buffer.role` is "local"; its shape is int64 Consts."""
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
