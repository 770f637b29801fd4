"""rfactor: a reduction loop becomes `factor` independent partial reductions, combined in order.

rfactor(r, 4) on a sum (the same for prod, max and min, NaN-aware max/min included):

    acc: float32 = 0.0                          acc: float32 = 0.0
    for r in range(k):                          allocate acc_rf: float32[4]  # local
      acc = acc + A[i, r]               ->        for r_o in range(4):         # may be made parallel
    C[i] = acc                                      acc_p: float32 = 0.0
                                                    for r_i in range(minimum((k + 3) // 4, k - r_o * ((k + 3) // 4))):
                                                      acc_p = acc_p + A[i, r_i + r_o * ((k + 3) // 4)]
                                                    acc_rf[r_o] = acc_p
                                                  for r_c in range(4):         # serial: a fixed order
                                                    acc = acc + acc_rf[r_c]
                                                C[i] = acc

Each partial owns a contiguous chunk of `ceil(k / 4)` iterations (the last ones may be shorter
or empty: a loop with a non-positive extent runs no iteration). The partials are combined in
order by a serial loop, so the result does not depend on threads: `s.parallel(r_o)` is legal
afterwards (each iteration declares its own accumulator), and gives the same bits run to run.
"""

from __future__ import annotations


from .. import dtypes as dt
from ..errors import ScheduleError
from ..ir import expr as E
from ..ir.loops import Allocate, Assign, Buffer, Declare, For, IfThenElse, NameScope, Seq, Stmt, Store, seq
from ..ir.simplify import simplify
from .primitives import declared_names, find, replace_loop, substitute


def rfactor(body: Stmt, name: str, factor: int) -> tuple[Stmt, str, str]:
    if not isinstance(factor, int) or isinstance(factor, bool) or factor < 1:
        raise ScheduleError(f"rfactor of loop {name!r}: the factor must be a positive int, got {factor!r}")
    lp = find(body, name)
    acc, op, cond, v = reduction_of(lp)
    fresh = NameScope(declared_names(body)).fresh

    ro, ri, rc = (E.Var(fresh(f"{name}_{s}"), "int64") for s in ("o", "i", "c"))
    accp = E.Var(fresh(f"{acc.name}_p"), acc.dtype)
    part = Buffer(fresh(f"{acc.name}_rf"), acc.dtype, (E.Const(factor, "int64"),), "local")
    f = E.Const(factor, "int64")
    chunk = simplify((lp.extent + (factor - 1)) // f)
    exact = isinstance(lp.extent, E.Const) and lp.extent.value % factor == 0
    inner_extent = chunk if exact else simplify(E.call("minimum", chunk, lp.extent - ro * chunk))
    inner = rename_accumulator(substitute(lp.body, {lp.var: simplify(ri + ro * chunk)}), acc, accp)
    identity = _identity(op, acc.dtype)
    kind_in = lp.kind if lp.kind in ("vectorized", "unrolled") else "serial"
    kind_out = "parallel" if lp.kind == "parallel" else "serial"
    partials = For(ro, f, seq(Declare(accp, identity), For(ri, inner_extent, inner, kind_in),
                              Store(part, (ro,), accp)),
                   kind_out)
    p = E.Load(part, (rc,), acc.dtype)
    if op in ("add", "mul"):
        combine = Assign(acc, E.Binary(op, acc, p, acc.dtype))
    else:
        v2 = E.Var(fresh(f"{v.name}_c"), v.dtype)
        combine = seq(Declare(v2, p), IfThenElse(E.substitute(cond, {v: v2}), Assign(acc, v2)))
    new = Allocate(part, seq(partials, For(rc, f, combine, "serial")))
    return replace_loop(body, lp, new), ro.name, ri.name


def _identity(op: str, dtype: str) -> E.Expr:
    if op == "add":
        return E.Const(dt.cast_value(0, dtype), dtype)
    if op == "mul":
        return E.Const(dt.cast_value(1, dtype), dtype)
    return E.const(dt.min_value(dtype) if op == "max" else dt.max_value(dtype), dtype)


def _stmts(s: Stmt, parent=None):
    """(statement, parent) for every statement below `s`."""
    yield s, parent
    for k in s.children():
        if isinstance(k, Stmt):
            yield from _stmts(k, s)


def reduction_of(lp: For):
    """(accumulator, "add"|"mul"|"max"|"min", max/min condition, max/min candidate) of the
    reduction whose loop is `lp`, as lowering writes it; ScheduleError for anything else."""
    name = lp.var.name
    nodes = list(_stmts(lp.body))
    declared = {s.var for s, _ in nodes if isinstance(s, Declare)}
    accs = list(dict.fromkeys(s.var for s, _ in nodes if isinstance(s, Assign) and s.var not in declared))
    if not accs:
        raise ScheduleError(f"rfactor: loop {name!r} is not a reduction loop (its iterations update no "
                            f"accumulator declared outside it)")
    if len(accs) > 1:
        raise ScheduleError(f"rfactor: loop {name!r} updates several accumulators "
                            f"({', '.join(a.name for a in accs)}); rfactor supports a single sum, prod, "
                            f"max or min (not argmax/argmin)")
    acc = accs[0]
    ops, allowed, cond, v = set(), set(), None, None
    for s, parent in nodes:
        if not (isinstance(s, Assign) and s.var is acc):
            continue
        val = s.value
        if isinstance(val, E.Binary) and val.op in ("add", "mul") and val.a is acc and acc not in E.walk(val.b):
            ops.add(val.op)
            allowed.add(s)
            continue
        if isinstance(val, E.Var) and val in declared and isinstance(parent, IfThenElse) \
                and parent.otherwise is None and parent.then is s:
            for op, cmp in (("max", val > acc), ("min", val < acc)):
                if parent.cond is cmp or parent.cond is (cmp | (val != val)):  # noqa: PLR0124
                    ops.add(op)
                    allowed.update((s, parent))
                    cond, v = parent.cond, val
                    break
            else:
                ops.add("?")
            continue
        ops.add("?")
    if len(ops) != 1 or "?" in ops:
        raise ScheduleError(f"rfactor: the update of {acc.name} in loop {name!r} is not a plain sum, product, "
                            f"max or min")
    for s, _ in nodes:
        if s not in allowed and any(acc in E.walk(e) for e in s.children() if isinstance(e, E.Expr)):
            raise ScheduleError(f"rfactor: loop {name!r} reads the accumulator {acc.name} outside its update; "
                                f"its partial values cannot be split")
    return acc, ops.pop(), cond, v


def rename_accumulator(s: Stmt, old: E.Var, new: E.Var) -> Stmt:
    """`s` with the scalar `old` renamed `new` (reads and assignments)."""
    def leaf(x):
        return Assign(new, x.value) if isinstance(x, Assign) and x.var is old else x
    from .primitives import map_exprs, map_leaves
    return map_exprs(map_leaves(s, leaf), lambda e: E.substitute(e, {old: new}))
