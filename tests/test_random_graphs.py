"""Differential test: random expression graphs, compiled vs the reference interpreter.

Graphs mix elementwise chains, broadcasts (a vector read along either axis of a
matrix), reductions (all six combiners, with and without where=), gathers
(`T[idx[i] % n]`, `T[(j * 3) % n]`), rolls and reversals, casts, and the five
dtypes. Every index is built to lie in range, so both sides must succeed.
Shapes are tiny (sizes 1..4) and graphs small (at most three ops), so a run of
200 examples costs mostly the compiles, about 0.1 s each.
"""

from __future__ import annotations

import os

import numpy as np
from conftest import assert_same
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import kerneldsl as kd

DTYPES = ("float32", "float64", "int32", "int64", "bool")
INT_POOL = np.array([0, 1, -1, 2, -2, 3, -3, 5, 7, -8, 100, -1000, 2**31 - 1, -2**31])
FLOAT_POOL = np.array([0.0, -0.0, 1.0, -1.0, 0.5, -2.5, 3.0, 1e-3, 100.0, -7.25, 1e30, np.inf, -np.inf, np.nan])
TOL = {"float32": dict(rtol=1e-5, atol=1e-6), "float64": dict(rtol=1e-12, atol=1e-12)}

N, M = kd.sizes("n m")
EXTENT = {"n": N, "m": M}
SHAPES = {"nm": ("n", "m"), "n": ("n",), "m": ("m",), "": ()}


class Graph:
    """Draws a random graph from hypothesis' `data`, one choice at a time (so it shrinks well)."""

    def __init__(self, data):
        self.data = data
        self.tensors = []  # (tensor, dims) available to read
        self.inputs = []
        self.uid = 0

    def pick(self, seq, label=""):
        return seq[self.data.draw(st.integers(0, len(seq) - 1), label=label)]

    def flag(self, p_true=0.5):
        return self.data.draw(st.floats(0, 1)) < p_true

    def name(self, base):
        self.uid += 1
        return f"{base}{self.uid}"

    # --- inputs --------------------------------------------------------------------
    def add_input(self, dims=None, dtype=None):
        dims = dims if dims is not None else self.pick(list(SHAPES), "input shape")
        dtype = dtype or self.pick(DTYPES, "input dtype")
        p = kd.placeholder(tuple(EXTENT[d] for d in SHAPES[dims]), dtype, name=self.name("in"))
        self.inputs.append(p)
        self.tensors.append((p, SHAPES[dims]))
        return p

    # --- expressions -----------------------------------------------------------------
    def index(self, dim, ctx, depth):
        """An int64 expression in [0, size of dim) over the axes in ctx."""
        size = EXTENT[dim]
        axes = [a for a, d in ctx if d == dim]
        options = ["zero", "gather"] + (["axis", "reverse", "roll"] * 2 if axes else [])
        kind = self.pick(options, "index kind")
        if kind == "axis":
            return self.pick(axes)
        if kind == "reverse":
            return size - 1 - self.pick(axes)
        if kind == "roll":
            return (self.pick(axes) + self.pick([1, 2, -1, 5])) % size
        if kind == "gather" and depth > 0:
            e = self.expr(ctx, depth - 1, want="int")
            return kd.cast(e, "int64") % size
        return 0

    def load(self, ctx, depth):
        t, dims = self.pick(self.tensors, "tensor")
        return t[tuple(self.index(d, ctx, depth) for d in dims)]

    def const(self):
        return self.pick([0, 1, -1, 2, 3, 0.5, -1.5, 2.0, True, False], "const")

    def leaf(self, ctx, depth):
        kind = self.pick(["load", "load", "load", "const", "axis"], "leaf")
        if kind == "axis" and ctx:
            return self.pick(ctx)[0]
        if kind == "const":
            return self.const()
        return self.load(ctx, depth)

    def expr(self, ctx, depth, want=None):
        e = self._expr(ctx, depth)
        e = kd.const(e) if not isinstance(e, kd.Expr) else e
        if want == "int" and e.dtype not in ("int32", "int64"):
            e = self.to_int(e)
        if want == "bool" and e.dtype != "bool":
            e = e > self.pick([0, 1, -1])
        return e

    def to_int(self, e):
        if e.dtype in ("float32", "float64"):  # float -> int only where C and numpy agree
            e = kd.where(kd.abs(e) < 1e9, e, 0.0)
        return kd.cast(e, self.pick(["int32", "int64"]))

    def _expr(self, ctx, depth):
        if depth <= 0:
            return self.leaf(ctx, 0)
        kind = self.pick(["leaf", "unary", "binary", "binary", "where", "cast", "reduce", "reduce"], "node")
        if kind == "leaf":
            return self.leaf(ctx, depth)
        if kind == "unary":
            x = self.expr(ctx, depth - 1)
            op = self.pick(["neg", "abs", "exp", "log", "sqrt", "tanh", "sigmoid", "sin", "floor", "ceil",
                            "erf", "log1p", "expm1", "rsqrt", "cos"], "unary")
            if op == "neg":
                return ~x if x.dtype == "bool" else -x
            if op in ("log", "sqrt", "rsqrt", "log1p"):
                return getattr(kd, op)(kd.abs(x))
            return getattr(kd, op)(x)
        if kind == "binary":
            a, b = self.expr(ctx, depth - 1), self.expr(ctx, depth - 1)
            op = self.pick(["+", "-", "*", "/", "//", "%", "**", "min", "max", "<", "<=", "==", "!=",
                            "&", "|", "^"], "binary")
            if op in "&|^" and ("float" in a.dtype or "float" in b.dtype):
                op = "+"
            return {"+": lambda: a + b, "-": lambda: a - b, "*": lambda: a * b, "/": lambda: a / b,
                    "//": lambda: a // b, "%": lambda: a % b, "**": lambda: a ** b,
                    "min": lambda: kd.minimum(a, b), "max": lambda: kd.maximum(a, b),
                    "<": lambda: a < b, "<=": lambda: a <= b, "==": lambda: a == b, "!=": lambda: a != b,
                    "&": lambda: a & b, "|": lambda: a | b, "^": lambda: a ^ b}[op]()
        if kind == "where":
            c = self.expr(ctx, depth - 1, want="bool")
            return kd.where(c, self.expr(ctx, depth - 1), self.expr(ctx, depth - 1))
        if kind == "cast":
            x = self.expr(ctx, depth - 1)
            dtype = self.pick(DTYPES, "cast to")
            if dtype in ("int32", "int64") and "float" in x.dtype:
                return self.to_int(x)
            return kd.cast(x, dtype)
        # reduce over one or two fresh axes
        dims = [self.pick(["n", "m"], "reduce dim")]
        if self.flag(0.3):
            dims.append(self.pick(["n", "m"], "second reduce dim"))
        axes = [kd.reduce_axis(EXTENT[d], self.name("r")) for d in dims]
        inner = ctx + [(a, d) for a, d in zip(axes, dims)]
        body = self.expr(inner, depth - 1)
        where = self.expr(inner, depth - 1, want="bool") if self.flag(0.3) else None
        combiner = self.pick(["sum", "prod", "max", "min", "argmax", "argmin"], "combiner")
        return getattr(kd, combiner)(body, axis=axes if len(axes) > 1 else axes[0], where=where)

    def compute(self, dims_key, depth):
        dims = SHAPES[dims_key]

        def body(*axes):
            return self.expr(list(zip(axes, dims)), depth)

        t = kd.compute(tuple(EXTENT[d] for d in dims), body, name=self.name("t"))
        self.tensors.append((t, dims))
        return t


def _values(rs, shape, dtype):
    if dtype == "bool":
        return rs.random(shape) < 0.5
    pool = FLOAT_POOL if dtype.startswith("float") else INT_POOL
    special = rs.random(shape) < 0.15
    plain = rs.integers(-4, 5, shape) * (0.5 if dtype.startswith("float") else 1)
    return np.where(special, rs.choice(pool, shape), plain).astype(dtype)


# Shrinking recompiles hundreds of graphs (minutes); it runs only when asked: KERNELDSL_SHRINK=1.
PHASES = [p for p in Phase if p is not Phase.shrink or os.environ.get("KERNELDSL_SHRINK") == "1"]


@settings(max_examples=200, deadline=None, phases=PHASES,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data(), n=st.integers(1, 4), m=st.integers(1, 4), seed=st.integers(0, 2**32 - 1))
def test_random_graph_matches_reference(data, n, m, seed):
    g = Graph(data)
    for _ in range(data.draw(st.integers(1, 3), label="inputs")):
        g.add_input()
    if data.draw(st.booleans(), label="index input"):
        g.add_input("n", data.draw(st.sampled_from(["int32", "int64"])))
    for d in ("n", "m"):  # every size must be bound by some input
        if not any(d in dims for _, dims in g.tensors):
            g.add_input(d)
    outputs = []
    for k in range(data.draw(st.integers(1, 3), label="ops")):
        t = g.compute(g.pick(list(SHAPES), "out shape"), depth=data.draw(st.integers(1, 3), label="depth"))
        if k == 0 or data.draw(st.booleans(), label="is output"):
            outputs.append(t)
    if g.tensors[-1][0] not in outputs:
        outputs.append(g.tensors[-1][0])
    rs = np.random.default_rng(seed)
    sizes = {"n": n, "m": m}
    feed = {p: _values(rs, tuple(sizes[d] for d in dims), p.dtype) for p, dims in g.tensors if p in g.inputs}
    with np.errstate(all="ignore"):
        want = kd.evaluate(outputs, feed)
    try:
        f = kd.build(g.inputs, outputs)
        got = f(*[feed[p] for p in g.inputs])
    except Exception as e:
        raise AssertionError("the graph:\n" + "\n".join(str(t) for t in outputs)) from e
    got = [got] if len(outputs) == 1 else list(got)
    for t, a, b in zip(outputs, got, want):
        assert_same(a, b, **TOL.get(_lowest_precision(t), {}), what=f"{t.name}\n{t}\n")


def _lowest_precision(t) -> str:
    """A float64 result computed through a float32 step is only as exact as float32."""
    from kerneldsl.ir import expr as E
    from kerneldsl.ir.tensor import ComputeOp, topo_order
    seen = {t.dtype}
    for op in topo_order([t]):
        seen.add(op.dtype)
        if isinstance(op, ComputeOp):
            seen |= {n.dtype for n in E.walk(op.body)}
    return "float32" if "float32" in seen else t.dtype
