"""Where values live: cache_read and cache_write (local tiles), compute_at (a producer's rows
computed inside its consumer's loop).

Supported form of cache_read/cache_write: inside `loop`, every access of the tensor has the
same indices, and each index is either invariant in `loop` or `t + base` with `t` a loop at or
below `loop` (a tile loop) whose extent is invariant in `loop` and a constant `c` or
`minimum(c, ...)` (what split makes). The tile is a local array of shape (c, ...), one dimension
per tile loop, in the order of the tensor's dimensions. Reads under a condition (checked
indices) are refused.

cache_write(C, r) on matmul after decompose_reduction(j), split(j, 4), reorder(j_o, r, j_i):

    for j_o in range((m + 3) // 4):                for j_o in range((m + 3) // 4):
      for r in range(k):                             allocate C_local: float32[4]  # local
        for j_i in range(minimum(4, ...)):             for j_i_c in range(minimum(4, ...)):  # read once
          C[i, j_i + 4 * j_o] = C[i, ...]  ->            C_local[j_i_c] = C[i, j_i_c + 4 * j_o]
              + A[i, r] * B[r, j_i + 4 * j_o]          for r in range(k):
                                                         for j_i in range(minimum(4, ...)):
                                                           C_local[j_i] = C_local[j_i] + A[i, r] * B[r, ...]
                                                       for j_i_w in range(minimum(4, ...)):
                                                         C[i, j_i_w + 4 * j_o] = C_local[j_i_w]

cache_write always reads the tile before the loop, so that points the loop leaves alone go back
unchanged; the tile's points are the ones the original nest may write (its tile loops' ranges).

cache_read(B, r_i) makes the same kind of tile of an input, filled before `loop` (packing), and
redirects the loads inside `loop` to it. When a loop below `loop` that is not a tile loop
encloses the reads, the copy is guarded by its extent being positive (the original nest read
nothing otherwise, and its entry checks do not cover that case); such a loop's extent must then
not vary inside `loop`.
"""

from __future__ import annotations

import math
from dataclasses import replace

from ..errors import ScheduleError
from ..ir import expr as E
from ..ir.loops import (Allocate, Assign, Buffer, Checked, Declare, For, IfThenElse, NameScope, Seq, Stmt, Store,
                        map_stmt, seq, walk, walk_path)
from ..ir.printer import expr_str
from ..ir.simplify import simplify
from .primitives import declared_names, find, loops, map_exprs, replace_loop

LOCAL_LIMIT_BYTES = 1 << 16  # a tile lives on the stack (per thread)


def accesses(s: Stmt, buf: Buffer) -> list:
    """[(kind, indices, enclosing loops, under a condition)] of every load/store of `buf` in `s`."""
    out = []
    for x, ancestors in walk_path(s):
        enclosing = tuple(a for a in ancestors if isinstance(a, For))
        under_if = any(isinstance(a, IfThenElse) for a in ancestors)
        for e in x.children():
            if isinstance(e, E.Expr):
                out += [("load", n.indices, enclosing, under_if or _guarded(e, n))
                        for n in E.walk(e) if isinstance(n, E.Load) and n.tensor is buf]
        if isinstance(x, Store) and x.buffer is buf:
            out.append(("store", x.indices, enclosing, under_if))
    return out


def _guarded(e: E.Expr, load: E.Load) -> bool:
    """Whether `load` sits in a branch of a select (read only when its condition holds)."""
    return any(isinstance(n, E.Select) and (load in E.walk(n.a) or load in E.walk(n.b)) for n in E.walk(e))


def _const_bound(extent: E.Expr):
    if isinstance(extent, E.Const):
        return int(extent.value)
    if isinstance(extent, E.Call) and extent.fn == "minimum":
        consts = [int(a.value) for a in extent.args if isinstance(a, E.Const)]
        if consts:
            return min(consts)
    return None


def _tile(prim: str, lp: For, buf: Buffer, acc: list, guarded: bool = True):
    """[(tile loop or None, index)] per dimension of `buf`, and the guard of the copies."""
    name = lp.var.name
    if not acc:
        raise ScheduleError(f"{prim}: loop {name!r} does not access {buf.name}")
    inside = {x.var: x for x in loops(lp)}
    bound = set(inside)
    for x in walk(lp):
        if isinstance(x, Declare):
            bound.add(x.var)
    indices = acc[0][1]
    for kind, idx, _, cond in acc:
        if cond:
            raise ScheduleError(f"{prim}: {buf.name} is accessed under a condition inside loop {name!r}; "
                                f"only unconditional accesses can be tiled")
        if len(idx) != len(indices) or any(a is not b for a, b in zip(idx, indices)):
            raise ScheduleError(f"{prim}: {buf.name} is accessed at different points inside loop {name!r} "
                                f"([{', '.join(map(expr_str, indices))}] and [{', '.join(map(expr_str, idx))}]); "
                                f"a tile needs a single access pattern")
    dims = []
    for d, ix in enumerate(indices):
        if any(isinstance(n, Checked) for n in E.walk(ix)):
            raise ScheduleError(f"{prim}: index {d} of {buf.name} inside loop {name!r} is a checked "
                                f"(gathered or guarded) index; only affine tiles are supported")
        vs = [n for n in E.walk(ix) if n in bound]
        if not vs:
            dims.append((None, ix))
            continue
        t = vs[0] if len(vs) == 1 and vs[0] in inside else None
        ok = t is not None and (ix is t or (isinstance(ix, E.Binary) and ix.op == "add"
                                             and (ix.a is t or ix.b is t)))
        if not ok:
            raise ScheduleError(f"{prim}: index {d} of {buf.name} ({expr_str(ix)}) is not one loop variable "
                                f"below {name!r} plus an offset invariant in {name!r}")
        tl = inside[t]
        if any(n in bound for n in E.walk(tl.extent)) or _const_bound(tl.extent) is None:
            raise ScheduleError(f"{prim}: the extent of tile loop {t.name!r} ({expr_str(tl.extent)}) is not a "
                                f"constant bound invariant in {name!r}; split it first")
        if any(tl is other for other, _ in dims):
            raise ScheduleError(f"{prim}: loop {t.name!r} indexes two dimensions of {buf.name}")
        dims.append((tl, ix))
    size = math.prod(_const_bound(tl.extent) for tl, _ in dims if tl is not None)
    if size * 8 > LOCAL_LIMIT_BYTES:
        raise ScheduleError(f"{prim}: the tile of {buf.name} has {size} elements, too large for a local "
                            f"array (at most {LOCAL_LIMIT_BYTES // 8}); split with smaller factors")
    tiles = {tl for tl, _ in dims if tl is not None}
    guard = None
    for _, _, encl, _ in acc if guarded else ():
        for x in encl:
            if x in tiles or not _below(x, lp):
                continue
            if any(n in bound for n in E.walk(x.extent)):
                raise ScheduleError(f"{prim}: loop {x.var.name!r} around the accesses of {buf.name} has an "
                                    f"extent that varies inside {name!r}")
            if isinstance(x.extent, E.Const) and x.extent.value > 0:
                continue
            c = x.extent > 0
            guard = c if guard is None else guard & c
    return dims, guard


def _below(x: For, lp: For) -> bool:
    return any(x is y for y in loops(lp))


def _copy(fresh, dims, suffix: str, make):
    """A nest over the tile loops' extents (fresh variables): make(global indices, local indices)."""
    mapping, nest_loops = {}, []
    for tl, _ in dims:
        if tl is not None:
            v = E.Var(fresh(f"{tl.var.name}_{suffix}"), "int64")
            mapping[tl.var] = v
            nest_loops.append((v, tl.extent))
    gidx = tuple(simplify(E.substitute(ix, mapping)) for _, ix in dims)
    lidx = tuple(v for v, _ in nest_loops) or (E.Const(0, "int64"),)
    nest = make(gidx, lidx)
    for v, ext in reversed(nest_loops):
        nest = For(v, ext, nest)
    return nest


def _local(fresh, buf: Buffer, dims) -> tuple[Buffer, tuple]:
    shape = tuple(E.Const(_const_bound(tl.extent), "int64") for tl, _ in dims if tl is not None)
    lidx = tuple(tl.var for tl, _ in dims if tl is not None)
    return (Buffer(fresh(f"{buf.name}_local"), buf.dtype, shape or (E.Const(1, "int64"),), "local"),
            lidx or (E.Const(0, "int64"),))


def _redirect(s: Stmt, buf: Buffer, local: Buffer, lidx: tuple, stores: bool) -> Stmt:
    def expr(e):
        return E.transform(e, lambda n: E.Load(local, lidx, n.dtype)
                           if isinstance(n, E.Load) and n.tensor is buf else None)

    def leaf(x):
        if stores and isinstance(x, Store) and x.buffer is buf:
            return Store(local, lidx, x.value)
        return x
    from .primitives import map_leaves
    return map_exprs(map_leaves(s, leaf), expr)


def _buffer(body: Stmt, lp: For, name: str, prim: str) -> Buffer:
    bufs = {}
    for x in walk(lp):
        if isinstance(x, Store):
            bufs.setdefault(x.buffer.name, x.buffer)
        for e in (x.indices + (x.value,) if isinstance(x, Store) else (x.init,) if isinstance(x, Declare)
                  else (x.value,) if isinstance(x, Assign) else (x.cond,) if isinstance(x, IfThenElse)
                  else (x.extent,) if isinstance(x, For) else ()):
            for n in E.walk(e):
                if isinstance(n, E.Load):
                    bufs.setdefault(n.tensor.name, n.tensor)
    if name not in bufs:
        raise ScheduleError(f"{prim}: loop {lp.var.name!r} does not access a tensor named {name!r} "
                            f"(it accesses: {', '.join(sorted(bufs)) or 'none'})")
    return bufs[name]


def cache_write(body: Stmt, tensor: str, name: str) -> Stmt:
    """Accumulate the tile of `tensor` touched inside loop `name` in a local array, read from
    `tensor` once before the loop (when the loop reads it) and written back once after it."""
    lp = find(body, name)
    buf = _buffer(body, lp, tensor, "cache_write")
    acc = accesses(lp, buf)
    if not any(kind == "store" for kind, *_ in acc):
        raise ScheduleError(f"cache_write: loop {name!r} does not write {buf.name}; use cache_read")
    par = [x.var.name for x in loops(lp) if x.kind != "serial" and x.kind not in ("unrolled", "vectorized")]
    if par:
        raise ScheduleError(f"cache_write: loop {par[0]!r} inside {name!r} is {find(lp, par[0]).kind}; the "
                            f"local tile would be shared by its iterations")
    dims, _ = _tile("cache_write", lp, buf, acc, guarded=False)
    fresh = NameScope(declared_names(body)).fresh
    local, lidx = _local(fresh, buf, dims)
    # always read the tile first: points the loop does not write (a short or empty inner loop)
    # go back unchanged
    copy_in = _copy(fresh, dims, "c", lambda g, loc: Store(local, loc, E.Load(buf, g, buf.dtype)))
    new_lp = _redirect(lp, buf, local, lidx, stores=True)
    out = _copy(fresh, dims, "w", lambda g, loc: Store(buf, g, E.Load(local, loc, buf.dtype)))
    return replace_loop(body, lp, Allocate(local, seq(copy_in, new_lp, out)))


def cache_read(body: Stmt, tensor: str, name: str) -> Stmt:
    """Copy the tile of `tensor` read inside loop `name` into a local array before the loop,
    and read it from there."""
    lp = find(body, name)
    buf = _buffer(body, lp, tensor, "cache_read")
    acc = accesses(lp, buf)
    if any(kind == "store" for kind, *_ in acc):
        raise ScheduleError(f"cache_read: loop {name!r} writes {buf.name}; use cache_write")
    dims, guard = _tile("cache_read", lp, buf, acc)
    fresh = NameScope(declared_names(body)).fresh
    local, lidx = _local(fresh, buf, dims)
    copy = _copy(fresh, dims, "c", lambda g, loc: Store(local, loc, E.Load(buf, g, buf.dtype)))
    if guard is not None:
        copy = IfThenElse(guard, copy)
    return replace_loop(body, lp, Allocate(local, seq(copy, _redirect(lp, buf, local, lidx, stores=False))))


def compute_at(producer: Stmt, pbuf: Buffer, consumer: Stmt, name: str) -> Stmt:
    """Compute the rows of the producer (whose kernel is `producer`, one loop over its first
    axis) inside the consumer's loop `name`, one row per iteration, into the producer's buffer.

    # kernel T                                   # kernel D
    for i in range(n):                           for i in range(n):
      for j in range(m):                           for j1 in range(m):
        T[i, j] = <row i>             ->             T[i, j1] = <row i>
    # kernel D                                     for j in range(m):
    for i in range(n):                               D[i, j] = T[i, j] + T[i, m - 1 - j]
      for j in range(m):
        D[i, j] = T[i, j] + T[i, m - 1 - j]

    The consumer must read the producer only inside `name`, at row `name` (its first index is
    exactly the loop variable); other dimensions are free. When the loops' extents differ, the row
    is guarded by `i < rows of the producer`.
    """
    lp = find(consumer, name)
    row = producer.stmts[0] if isinstance(producer, Seq) and len(producer.stmts) == 1 else producer
    if not isinstance(row, For):
        raise ScheduleError(f"compute_at: the kernel of {pbuf.name} is not a single loop over its rows "
                            f"(it has statements outside its outermost loop)")
    if lp.kind == "vectorized":
        raise ScheduleError(f"compute_at: loop {name!r} is vectorized; a row loop cannot go inside it")
    inside = accesses(lp, pbuf)
    total = accesses(consumer, pbuf)
    if len(inside) != len(total) or not total:
        raise ScheduleError(f"compute_at: the consumer reads {pbuf.name} outside loop {name!r}"
                            if total else f"compute_at: the consumer does not read {pbuf.name}")
    for kind, idx, _, _ in total:
        if kind == "store" or not idx or idx[0] is not lp.var:
            raise ScheduleError(f"compute_at: the consumer reads {pbuf.name}[{', '.join(map(expr_str, idx))}] "
                                f"inside loop {name!r}; only reads of row {name} (first index exactly "
                                f"{name}) are supported")
    fresh = NameScope(declared_names(consumer)).fresh
    rename = {}
    for x in walk(row.body):
        if isinstance(x, (For, Declare)) and x.var not in rename:
            rename[x.var] = E.Var(fresh(x.var.name), x.var.dtype)
    rows = _rename(row.body, rename)
    rows = map_exprs(rows, lambda e: simplify(E.substitute(e, {row.var: lp.var})))
    if row.extent is not lp.extent:
        rows = IfThenElse(lp.var < row.extent, rows)
    return replace_loop(consumer, lp, replace(lp, body=seq(rows, lp.body)))


def _rename(s: Stmt, m: dict) -> Stmt:
    """`s` with the variables of `m` renamed (binders and uses); its parallel loops made serial."""
    def rebind(x):
        if isinstance(x, For):
            return replace(x, var=m.get(x.var, x.var), kind="serial" if x.kind == "parallel" else x.kind)
        if isinstance(x, (Declare, Assign)) and x.var in m:
            return replace(x, var=m[x.var])
        return None
    return map_stmt(s, rebind, lambda e: E.substitute(e, m))
