"""A graph as bytes, for the processes and machines that build and measure candidates.

Expression nodes are interned (ir/expr.py): structural equality is identity, so an unpickled
node must go back through its constructor, or the worker's own nodes would never be the same
object as the graph's (and `a is b` tests in the passes would fail). Plain pickling bypasses
the constructor; `dumps` here makes every node rebuild through it.

Axes carry a uid, unique within a process; a worker numbers its own new axes from its own
counter, so an unpickled axis keeps its place in the uid order (fusion and rewrites sort axes
by uid) but gets a fresh uid of the worker's: the worker draws one fresh axis per pickled axis,
in the original uid order, before it loads the graph.
"""

from __future__ import annotations

import io
import pickle
import threading
from dataclasses import fields

from ..ir import expr as E

_loading = threading.local()  # the uid map of the graph being loaded, in this thread


def _node(cls, values):
    return cls(*values)


def _axis(name, extent, uid, reduce):
    uids = _loading.uids
    if uid not in uids:  # an axis the walk did not see (in a check): still a fresh, unique one
        uids[uid] = E.index_var("_uid", E.const(1, "int64")).uid
    return E.IndexVar(name, extent, uids[uid], reduce)


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj):
        if isinstance(obj, E.IndexVar):
            return _axis, (obj.name, obj.extent, obj.uid, obj.reduce)
        if isinstance(obj, E.Expr):
            return _node, (type(obj), tuple(getattr(obj, f.name) for f in fields(obj)))
        return NotImplemented


def _uids(obj) -> list[int]:
    """Every axis uid in a graph (inputs, outputs), sorted."""
    from ..ir.tensor import ComputeOp, topo_order
    found: set = set()
    tensors = [t for part in obj if isinstance(part, (tuple, list)) for t in part if hasattr(t, "shape")]

    def visit(e):
        for n in E.walk(e):
            if isinstance(n, E.IndexVar) and n.uid not in found:
                found.add(n.uid)
                visit(n.extent)
            elif isinstance(n, E.Reduce):
                for a in n.axes:
                    if a.uid not in found:
                        found.add(a.uid)
                        visit(a.extent)
    for t in topo_order(tuple(tensors)):
        for d in t.shape:
            visit(d)
        if isinstance(t, ComputeOp):
            for a in t.axes:
                found.add(a.uid)
                visit(a.extent)
            visit(t.body)
    return sorted(found)


def dumps(obj) -> bytes:
    """Pickle `obj` (anything holding tensors and expressions: `(inputs, outputs)`)."""
    buf = io.BytesIO()
    _Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return pickle.dumps((_uids(obj), buf.getvalue()), protocol=pickle.HIGHEST_PROTOCOL)


def loads(data: bytes):
    uids, body = pickle.loads(data)
    # one fresh axis per pickled axis, in uid order: fresh uids above all of this process's
    fresh = [E.index_var("_uid", E.const(1, "int64")) for _ in uids]
    _loading.uids = {u: f.uid for u, f in zip(uids, fresh)}
    try:
        return pickle.loads(body)
    finally:
        del _loading.uids


__all__ = ["dumps", "loads"]
