"""Reuse through the output: a row reduction's costly term, stored once and read back.

Softmax after fusion computes exp twice per element, once for the row sum and once for the
output. When the output row is written right after a reduction over the same row and the
output's value contains the reduction's costly term at the same point, the reduction loop can
store that term into the output row, and the output loop reads it back:

    for i in range(rows):                        for i in range(rows):
      ...                                          ...
      for c in range(cols):                        for c in range(cols):
        s = s + exp(X[i, c] - m)         ->          t = exp(X[i, c] - m)
      for j in range(cols):                          Y[i, c] = t
        Y[i, j] = exp(X[i, j] - m) / s               s = s + t
                                                   for j in range(cols):
                                                     Y[i, j] = Y[i, j] / s
"""

from __future__ import annotations

from dataclasses import replace

from ..ir import expr as E
from ..ir.loops import Assign, Declare, For, Seq, Stmt, Store


def _flat(body: Stmt) -> tuple:
    return body.stmts if isinstance(body, Seq) else (body,)


def _costly(e: E.Expr) -> bool:
    return any(isinstance(n, E.Call) for n in E.walk(e))


def reuse_through_output(nest: Stmt, out) -> Stmt:
    if not (isinstance(nest, For) and out.ndim == 2):
        return nest
    body = list(_flat(nest.body))
    if not body or not isinstance(body[-1], For):
        return nest
    last = body[-1]
    store = last.body
    if not (isinstance(store, Store) and store.buffer is out and store.indices == (nest.var, last.var)):
        return nest
    value_nodes = set(E.walk(store.value))
    for k in range(len(body) - 2, -1, -1):
        red = body[k]
        if not isinstance(red, For) or red.extent is not last.extent:
            continue
        upd = red.body
        if not (isinstance(upd, Assign) and isinstance(upd.value, E.Binary) and upd.value.a is upd.var
                and upd.value.op in ("add", "mul")):
            continue
        term = upd.value.b
        if any(isinstance(n, E.Load) and n.tensor is out for n in E.walk(term)):
            continue
        best = None
        for t in E.walk(term):
            if t.dtype != out.dtype or not _costly(t) or red.var not in set(E.walk(t)):
                continue
            there = E.substitute(t, {red.var: last.var})
            if there in value_nodes and (best is None or len(E.walk(t)) > len(E.walk(best[0]))):
                best = (t, there)
        if best is None:
            continue
        t, there = best
        tmp = E.Var(f"{upd.var.name}_t", t.dtype)
        new_red = replace(red, body=Seq((Declare(tmp, t), Store(out, (nest.var, red.var), tmp),
                                         Assign(upd.var, E.Binary(upd.value.op, upd.var,
                                                                  E.substitute(term, {t: tmp}),
                                                                  upd.value.dtype)))))
        reread = E.Load(out, (nest.var, last.var), out.dtype)
        new_last = replace(last, body=Store(out, store.indices, E.substitute(store.value, {there: reread})))
        body[k], body[-1] = new_red, new_last
        return replace(nest, body=Seq(tuple(body)))
    return nest
