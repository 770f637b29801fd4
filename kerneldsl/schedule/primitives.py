"""Schedule primitives: loop-IR -> loop-IR transforms of one kernel's nest.

Each is a pure function `(body, ...) -> body` that checks legality and raises
ScheduleError naming the loop and the reason. Loops are found by the name of
their variable (unique within a kernel).

split(i, 4) on `for i in range(n): S(i)`:
    for i_o in range((n + 3) // 4):
      for i_i in range(minimum(4, n - 4 * i_o)):   # just 4 when 4 divides n
        S(i_i + 4 * i_o)
"""

from __future__ import annotations

from dataclasses import replace

from ..errors import ScheduleError
from ..ir import expr as E
from ..ir.loops import (Allocate, Assign, Declare, For, IfThenElse, NameScope, Seq, Stmt, Store, exprs, loops,
                        map_stmt, walk)
from ..ir.bounds import guard_range
from ..ir.lower import extreme_update
from ..ir.simplify import simplify


def map_exprs(s: Stmt, f) -> Stmt:
    """Apply `f` to every expression child of a statement tree (bottom-up rebuild)."""
    return map_stmt(s, expr_fn=f)


def map_leaves(s: Stmt, leaf) -> Stmt:
    """Rebuild a statement tree with `leaf(statement)` in place of each statement holding no other."""
    def fn(n):
        return None if any(isinstance(c, Stmt) for c in n.children()) or isinstance(n, Seq) else leaf(n)
    return map_stmt(s, fn)


def substitute(s: Stmt, mapping: dict) -> Stmt:
    return map_exprs(s, lambda e: simplify(E.substitute(e, mapping)))


def find(s: Stmt, name: str) -> For:
    for lp in loops(s):
        if lp.var.name == name:
            return lp
    names = ", ".join(lp.var.name for lp in loops(s))
    raise ScheduleError(f"no loop named {name!r} in this kernel (loops: {names})")


def replace_loop(s: Stmt, target: For, new: Stmt) -> Stmt:
    if s is target:
        return new
    kids = tuple(replace_loop(c, target, new) if isinstance(c, Stmt) else c for c in s.children())
    return s.rebuild(kids)


def declared_names(s: Stmt) -> set:
    """Names declared inside `s`: loop variables, scalars, local arrays."""
    used = set()
    for x in walk(s):
        if isinstance(x, (For, Declare, Assign)):
            used.add(x.var.name)
        elif isinstance(x, Allocate):
            used.add(x.buffer.name)
    return used


def _fresh(s: Stmt, base: str) -> E.Var:
    return E.Var(NameScope(declared_names(s)).fresh(base), "int64")


def _divides(extent: E.Expr, factor: int) -> bool:
    return isinstance(extent, E.Const) and extent.value % factor == 0


def split(body: Stmt, name: str, factor: int) -> tuple[Stmt, str, str]:
    if not isinstance(factor, int) or factor < 1:
        raise ScheduleError(f"split of loop {name!r}: the factor must be a positive int, got {factor!r}")
    lp = find(body, name)
    names = NameScope(declared_names(body))
    outer, inner = (E.Var(names.fresh(f"{name}_{part}"), "int64") for part in ("o", "i"))
    f = E.Const(factor, "int64")
    value = simplify(outer * f + inner)
    inner_body = substitute(lp.body, {lp.var: value})
    # the last block is shorter: a bounded extent keeps the body free of guards (it vectorizes)
    inner_extent = f if _divides(lp.extent, factor) else simplify(E.call("minimum", f, lp.extent - outer * f))
    kind_in = lp.kind if lp.kind in ("vectorized", "unrolled") else "serial"
    kind_out = lp.kind if lp.kind not in ("vectorized", "unrolled") else "serial"
    new = For(outer, simplify((lp.extent + (factor - 1)) // f), For(inner, inner_extent, inner_body, kind_in),
              kind_out)
    return replace_loop(body, lp, new), outer.name, inner.name


def _next_in_chain(node: For, guards: list):
    """The statement directly inside `node`, looking through guards (collected into `guards`)."""
    nxt = node.body
    while True:
        if isinstance(nxt, Seq) and len(nxt.stmts) == 1:
            nxt = nxt.stmts[0]
        elif isinstance(nxt, IfThenElse) and nxt.otherwise is None:
            guards.append(nxt.cond)
            nxt = nxt.then
        else:
            return nxt


def _chain(body: Stmt, names: list[str]):
    """The loops from the outermost to the innermost named one, which must nest perfectly
    (guards between them are allowed: pure conditions can move inwards); and the guards."""
    lps = [find(body, n) for n in names]
    all_loops = loops(body)
    order = sorted(lps, key=all_loops.index)
    chain, guards, node = [order[0]], [], order[0]
    while node is not order[-1]:
        nxt = _next_in_chain(node, guards)
        if not isinstance(nxt, For):
            raise ScheduleError(f"loops {order[0].var.name!r} and {order[-1].var.name!r} are not perfectly "
                                f"nested (statements sit between them)")
        chain.append(nxt)
        node = nxt
    return chain, guards, order


def reorder(body: Stmt, names: list[str]) -> Stmt:
    if len(set(names)) != len(names):
        raise ScheduleError(f"reorder: a loop is named twice in {names}")
    chain, guards, order = _chain(body, names)
    inner_guards: list = []
    innermost_body = _next_in_chain(chain[-1], inner_guards)
    guards += inner_guards
    wanted = [find(body, n) for n in names]
    slots = [k for k, lp in enumerate(chain) if lp in order]
    new_chain = list(chain)
    for k, lp in zip(slots, wanted):
        new_chain[k] = lp
    for k, lp in enumerate(new_chain):
        _check_movable(lp, new_chain)
        inner_vars = {x.var for x in new_chain[k:]}
        dep = [v for v in E.walk(lp.extent) if v in inner_vars]
        if dep:
            raise ScheduleError(f"reorder: the extent of loop {lp.var.name!r} depends on loop "
                                f"{dep[0].name!r}, which would no longer enclose it")
    nest = innermost_body
    if guards:
        cond = guards[0]
        for g in guards[1:]:
            cond = cond & g
        nest = IfThenElse(cond, nest)
    for lp in reversed(new_chain):
        nest = replace(lp, body=nest)
    return replace_loop(body, chain[0], nest)


def _check_movable(lp: For, chain) -> None:
    if lp.kind == "parallel" and chain.index(lp) != 0:
        raise ScheduleError(f"reorder: the parallel loop {lp.var.name!r} must stay outermost of the nest")


def fuse(body: Stmt, outer: str, inner: str) -> tuple[Stmt, str]:
    o, i = find(body, outer), find(body, inner)
    nested = o.body if not (isinstance(o.body, Seq) and len(o.body.stmts) == 1) else o.body.stmts[0]
    if nested is not i:
        raise ScheduleError(f"fuse: loop {inner!r} must be the only statement inside {outer!r}")
    v = _fresh(body, f"{outer}_{inner}")
    mapping = {o.var: simplify(v // i.extent), i.var: simplify(v % i.extent)}
    new = For(v, simplify(o.extent * i.extent), substitute(i.body, mapping), o.kind)
    return replace_loop(body, o, new), v.name


def set_kind(body: Stmt, name: str, kind: str, reduction: bool = False) -> Stmt:
    """The loop `name` marked `kind`. A parallel loop may update outer accumulators only with
    `reduction` (parallel_reduce) and only by plain sums or products, which OpenMP's reduction
    clause combines; anything else is a race."""
    lp = find(body, name)
    if kind == "vectorized" and any(isinstance(x, For) for x in loops(lp.body)):
        raise ScheduleError(f"vectorize: loop {name!r} is not innermost")
    if kind == "vectorized" and extreme_update(lp) is None:
        for x in walk(lp.body):  # SIMD lanes combine plain sums and products only (and max/min, above)
            if isinstance(x, Assign) and x.var in outer_updates(lp) and not (
                    isinstance(x.value, E.Binary) and x.value.op in ("add", "mul") and x.value.a is x.var):
                raise ScheduleError(f"vectorize: loop {name!r} updates {x.var.name} in a way SIMD lanes cannot "
                                    f"combine (only sums, products and lowering's max/min)")
    if kind == "parallel":
        _check_parallel(body, lp, reduction)
    if kind.startswith(("block_", "thread_")):
        around = [a.buffer.name for a in _allocates(body) if lp in loops(a.body)]
        if around:
            raise ScheduleError(f"bind: loop {name!r} is inside the local array {around[0]} (rfactor/cache_*); "
                                f"GPU threads would each get their own copy of it")
    return replace_loop(body, lp, replace(lp, kind=kind))


def _allocates(s: Stmt) -> list:
    return [x for x in walk(s) if isinstance(x, Allocate)]


def _check_parallel(body: Stmt, lp: For, reduction: bool = False) -> None:
    """Parallel iterations must not update a scalar declared outside the loop (a reduction),
    unless the loop is a parallel_reduce of plain sums and products."""
    bad = outer_updates(lp)
    if reduction:
        if not bad:
            raise ScheduleError(f"parallel_reduce: loop {lp.var.name!r} updates no accumulator; use parallel")
        for x in walk(lp.body):
            if isinstance(x, Assign) and x.var in bad and not (
                    isinstance(x.value, E.Binary) and x.value.op in ("add", "mul") and x.value.a is x.var):
                raise ScheduleError(f"parallel_reduce: loop {lp.var.name!r} updates {x.var.name} other than by a "
                                    f"plain sum or product (max, min and argmax need rfactor)")
        bad = []
    if bad:
        raise ScheduleError(f"parallel: loop {lp.var.name!r} is a reduction loop (its iterations update "
                            f"{bad[0].name}); use rfactor to parallelize a reduction")
    for st in walk(lp.body):
        if isinstance(st, Store) and st.indices and not any(lp.var in _direct_vars(ix) for ix in st.indices):
            raise ScheduleError(f"parallel: iterations of loop {lp.var.name!r} may write the same element of "
                                f"{st.buffer.name} (its index does not follow {lp.var.name!r}: a sum moved "
                                f"outside its output loops, or a scatter); they would race")
    for other in loops(body):
        if other.kind == "parallel" and other is not lp and (lp in loops(other.body) or other in loops(lp.body)):
            raise ScheduleError(f"parallel: loop {lp.var.name!r} is nested with the parallel loop "
                                f"{other.var.name!r}; only one level of parallelism is supported")


def _direct_vars(e: E.Expr) -> set:
    """The loop variables an index uses by arithmetic, not through a load (a gathered index may
    repeat)."""
    out, stack = set(), [e]
    while stack:
        n = stack.pop()
        if isinstance(n, E.Var):
            out.add(n)
        elif not isinstance(n, E.Load):
            stack.extend(n.children())
    return out


def outer_updates(loop: For) -> list:
    """Scalars the loop's iterations assign but do not declare: its reduction accumulators."""
    inside = list(walk(loop.body))
    declared = {x.var for x in inside if isinstance(x, Declare)}
    return list(dict.fromkeys(x.var for x in inside if isinstance(x, Assign) and x.var not in declared))


def partition(body: Stmt, name: str) -> Stmt:
    """Loop partitioning (TVM's LoopPartition): when the body of loop `name` selects on a range of
    the loop's variable (a padded read `where(0 <= z - r + 1 < w, x[z - r + 1], 0)`), the loop
    runs as three loops, below the range, inside it and above it, each with the select decided:
    no test per iteration, and the inner loop reads contiguously (it vectorizes without masks).
    Every iteration computes what it did, in the same order.

    for z in range(w):                    for z_lo in range(lo):             body[select -> 0]
      body(where(lo <= z < hi, a, 0))  -> for z_in in range(hi - lo):        body[z := lo + z_in, select -> a]
                                          for z_hi in range(w - hi):         body[z := hi + z_hi, select -> 0]
    """
    lp = find(body, name)
    cond = next((n.cond for n in exprs(lp.body) if isinstance(n, E.Select)
                 and guard_range(n.cond, lp.var) is not None), None)
    if cond is None:
        raise ScheduleError(f"partition: the body of loop {name!r} selects on no range of {name!r}")
    inv, los, his = guard_range(cond, lp.var)
    lo = E.Const(0, "int64")
    for b in los:
        lo = E.call("maximum", lo, b)
    lo = simplify(E.call("minimum", lo, lp.extent))
    hi = lp.extent
    for b in his:
        hi = E.call("minimum", hi, b)
    hi = simplify(E.call("maximum", hi, lo))
    held = None
    for g in inv:
        held = g if held is None else held & g

    def decided(inside: bool):
        def fn(n):
            if isinstance(n, E.Select) and n.cond is cond:
                return (n.a if held is None else E.Select(held, n.a, n.b, n.dtype)) if inside else n.b
            return None
        return map_exprs(lp.body, lambda e: simplify(E.transform(e, fn)))
    parts = []
    for suffix, start, count, inside in (("lo", None, lo, False), ("in", lo, simplify(hi - lo), True),
                                         ("hi", hi, simplify(lp.extent - hi), False)):
        v = _fresh(body, f"{name}_{suffix}")
        part_body = decided(inside)
        part_body = substitute(part_body, {lp.var: v if start is None else simplify(start + v)})
        parts.append(For(v, count, part_body, lp.kind))
    return replace_loop(body, lp, Seq(tuple(parts)))


def decompose_reduction(body: Stmt, name: str) -> Stmt:
    """Accumulate a sum/product in the output array instead of a scalar, from loop `name` down,
    so that the reduction loop can move outside the output loops below it (e.g. i, r, j order).

    for j in range(m):                      for j_init in range(m):
      acc = 0                                 C[i, j_init] = 0
      for r in range(k):           ->       for j in range(m):
        acc = acc + A[i, r] * B[r, j]         for r in range(k):
      C[i, j] = acc                             C[i, j] = C[i, j] + A[i, r] * B[r, j]
    """
    top = find(body, name)
    chain, node = [top], top
    while True:
        inner = node.body.stmts if isinstance(node.body, Seq) else (node.body,)
        if len(inner) == 1 and isinstance(inner[0], For):
            node = inner[0]
            chain.append(node)
            continue
        break
    if len(inner) != 3 or not (isinstance(inner[0], Declare) and isinstance(inner[1], For)
                               and isinstance(inner[2], Store)):
        raise ScheduleError(f"decompose_reduction: below loop {name!r} there is no single reduction "
                            f"feeding the store (expected: declare accumulator, reduction loops, store)")
    decl, red, store = inner
    acc = decl.var
    rchain, rnode = [red], red
    while isinstance(rnode.body, For):
        rnode = rnode.body
        rchain.append(rnode)
    upd = rnode.body
    if not (isinstance(upd, Assign) and upd.var is acc and isinstance(upd.value, E.Binary)
            and upd.value.op in ("add", "mul") and upd.value.a is acc):
        raise ScheduleError(f"decompose_reduction: the reduction below {name!r} is not a plain sum or "
                            f"product (max/min, conditions and argmax keep their scalar accumulator)")
    buf, idx = store.buffer, store.indices
    if store.value.dtype != acc.dtype:
        raise ScheduleError("decompose_reduction: the output's dtype differs from the accumulator's")
    current = E.Load(buf, idx, acc.dtype)
    update = Store(buf, idx, E.Binary(upd.value.op, current, upd.value.b, acc.dtype))
    for lp in reversed(rchain):
        update = replace(lp, body=update, kind="serial" if lp.kind == "vectorized" else lp.kind)

    def nest(inner_stmt, suffix):
        renamed, out = {}, inner_stmt
        if suffix:
            for lp in chain:
                renamed[lp.var] = _fresh(body, f"{lp.var.name}_{suffix}")
            out = substitute(out, renamed)
        for lp in reversed(chain):
            out = replace(lp, var=renamed.get(lp.var, lp.var), body=out,
                          extent=lp.extent, kind="serial" if lp.kind == "parallel" and lp is not top else lp.kind)
        return out

    parts = [nest(Store(buf, idx, decl.init), "init"), nest(update, "")]
    if store.value is not acc:
        parts.append(nest(Store(buf, idx, simplify(E.substitute(store.value, {acc: current}))), "epi"))
    return replace_loop(body, top, Seq(tuple(parts)))
