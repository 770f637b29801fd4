"""A slow, exact Python interpreter of the loop IR, for tiny sizes.

Every schedule transform is tested as "same result before and after" with it,
independently of any compiler. Scalars are 0-d numpy values of the node's
dtype, so arithmetic follows the same numpy rules as the reference.
"""

from __future__ import annotations

import numpy as np

from ..shapes import bind_sizes, concrete_shape
from . import expr as E
from . import ops
from .loops import Allocate, Assert, Assign, Checked, Declare, For, IfThenElse, Seq, Stmt, Store


def run_module(module, arrays) -> list[np.ndarray]:
    """Run a lowered module on input arrays; returns the outputs."""
    ins = [module.tensors[b] for b in module.inputs]
    arrays = [np.asarray(a) for a in arrays]
    sizes = bind_sizes(ins, arrays)
    env = {s: np.int64(v) for s, v in sizes.items()}
    bufs = dict(zip(module.inputs, arrays))
    for b in module.outputs + module.temps:
        bufs[b] = np.zeros(concrete_shape(module.tensors[b], sizes), dtype=b.dtype)
    interp = Interpreter(bufs, env)
    for c in module.checks:
        interp.stmt(c)
    for k in module.kernels:
        if k.runs_if is None or bool(interp.expr(k.runs_if)):
            interp.stmt(k.body)
    return [bufs[b] for b in module.outputs]


class Interpreter:
    def __init__(self, bufs: dict, env: dict):
        self.bufs, self.env = bufs, env

    def stmt(self, s: Stmt) -> None:
        if isinstance(s, Seq):
            for x in s.stmts:
                self.stmt(x)
        elif isinstance(s, For):
            start = int(self.expr(s.start)) if getattr(s, "start", None) is not None else 0
            for v in range(start, start + int(self.expr(s.extent))):
                self.env[s.var] = np.int64(v)
                self.stmt(s.body)
        elif isinstance(s, Store):
            idx = tuple(int(self.expr(i)) for i in s.indices)
            self.bufs[s.buffer][idx] = self.expr(s.value)
        elif isinstance(s, (Declare, Assign)):
            v = self.expr(s.init if isinstance(s, Declare) else s.value)
            self.env[s.var] = np.asarray(v).astype(s.var.dtype)[()]
        elif isinstance(s, IfThenElse):
            if bool(self.expr(s.cond)):
                self.stmt(s.then)
            elif s.otherwise is not None:
                self.stmt(s.otherwise)
        elif isinstance(s, Allocate):
            shape = tuple(int(self.expr(d)) for d in s.buffer.shape)
            saved = self.bufs.get(s.buffer)
            # not zero: a transform must not rely on a local array's first value (C leaves it undefined)
            junk = np.nan if s.buffer.dtype.startswith("float") else 7
            self.bufs[s.buffer] = np.full(shape, junk, dtype=s.buffer.dtype)
            self.stmt(s.body)
            if saved is not None:
                self.bufs[s.buffer] = saved
        elif isinstance(s, Assert):
            if not bool(self.expr(s.cond)):
                raise IndexError(f"entry check {s.code} failed: {s.cond}")
        else:
            raise TypeError(f"loop interpreter: unknown statement {type(s).__name__}")

    def expr(self, e: E.Expr):
        with np.errstate(all="ignore"):
            if isinstance(e, E.Const):
                return np.asarray(e.value, dtype=e.dtype)[()]
            if isinstance(e, (E.Var, E.SizeVar)):
                return self.env[e]
            if isinstance(e, E.Cast):
                x = np.asarray(self.expr(e.x))
                return (x != 0) if e.dtype == "bool" else x.astype(e.dtype)[()]
            if isinstance(e, (E.Unary, E.Binary, E.Call)):  # the op table's numpy evaluation
                return ops.evaluate(ops.of(e), [np.asarray(self.expr(a)) for a in e.children()], e.dtype)[()]
            if isinstance(e, E.Select):
                return self.expr(e.a) if bool(self.expr(e.cond)) else self.expr(e.b)
            if isinstance(e, Checked):
                i, n = int(self.expr(e.index)), int(self.expr(e.extent))
                if not 0 <= i < n:
                    raise IndexError(f"index {i} out of range [0, {n}) (check {e.code})")
                return np.int64(i)
            if isinstance(e, E.Load):
                idx = tuple(int(self.expr(i)) for i in e.indices)
                return self.bufs[e.tensor][idx]
        raise TypeError(f"loop interpreter: cannot evaluate {type(e).__name__}")
