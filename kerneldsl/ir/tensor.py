"""Tensor IR: placeholders (inputs) and compute ops, the nodes of the tensor graph.

Tensors compare by identity: two placeholders with the same name are two inputs.
"""

from __future__ import annotations

import itertools
import re
import weakref
from dataclasses import dataclass

from ..errors import ShapeError
from . import expr as E

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ids = itertools.count()


def is_name(name) -> bool:
    """An ASCII C identifier: the only names that reach generated source."""
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


def check_name(name: str, what: str) -> str:
    if not is_name(name):
        raise ValueError(f"{what} name {name!r} is not an identifier (letters, digits, _; not starting "
                         f"with a digit)")
    return name


ARRAY_API = None  # kerneldsl.numpy, once imported: the functions behind the array operators


def array_api(name: str):
    if ARRAY_API is None:
        raise TypeError("array operations need kerneldsl.numpy (import kerneldsl)")
    return getattr(ARRAY_API, name)


def _is_scalar_index(ix) -> bool:
    if isinstance(ix, bool):
        return False
    if isinstance(ix, E.Expr):
        return ix.dtype in ("int32", "int64")
    return isinstance(ix, int) or (hasattr(ix, "dtype") and getattr(ix, "ndim", 1) == 0
                                   and str(ix.dtype).startswith(("int", "uint")))


def _method(name: str, reflected: bool = False):
    def method(self, *args, **kwargs):
        fn = array_api(name)
        return fn(args[0], self) if reflected else fn(self, *args, **kwargs)
    method.__name__ = name
    return method


@dataclass(frozen=True, eq=False)
class Tensor:
    """A tensor of the graph, and a symbolic array: numpy's operators and methods build new
    compute ops (kerneldsl/numpy.py); `==` stays identity (use knp.equal), so tensors hash."""
    name: str
    shape: tuple  # of int64 expressions (constants and size expressions)
    dtype: str
    __kd_array__ = True

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def inputs(self) -> tuple[Tensor, ...]:
        return ()

    def __getitem__(self, index):
        """One index per dimension, each an integer scalar or expression (`A[i, r]`, `x[0]`): the
        element, a load, as in the loop DSL. Anything else (a slice, `...`, `None`, an integer
        array, fewer indices than dimensions): numpy's indexing, an array (kerneldsl.numpy)."""
        items = index if isinstance(index, tuple) else (index,)
        if len(items) != self.ndim or not all(_is_scalar_index(ix) for ix in items):
            return array_api("getitem")(self, index)
        idx = []
        for k, ix in enumerate(items):
            e = E.as_index(ix, f"index {k} of {self.name}")
            if isinstance(e, E.Const) and isinstance(self.shape[k], E.Const) and not (
                    0 <= e.value < self.shape[k].value):
                raise IndexError(f"{self.name}: index {e.value} is out of range for dimension {k} of "
                                 f"size {self.shape[k].value}")
            idx.append(e)
        return E.Load(self, tuple(idx), self.dtype)

    def __hash__(self):
        return id(self)

    # --- Python's protocols that would need values: refused, saying what to write instead
    def _what(self) -> str:  # the user's name for an input; a computed value's name is internal
        return f"the symbolic array {self.name}" if isinstance(self, Placeholder) else "a symbolic array"

    def __bool__(self):
        raise TypeError(f"the truth value of {self._what()} is not known until a compiled "
                        f"function runs: use knp.where(cond, a, b) instead of `if`, & | ~ instead of and/or/not, "
                        f"and knp.any / knp.all to reduce a condition")

    def __len__(self):
        raise TypeError(f"len() of {self._what()}: its length is a size known when the function runs; use "
                        f"x.shape[0]")

    def __iter__(self):
        raise TypeError(f"{self._what()} cannot be iterated in Python: use knp.sum(x, axis=0) "
                        f"instead of sum(x), and x[i] for one row")

    def __array__(self, *args, **kwargs):
        raise TypeError(f"{self._what()} has no values until a compiled function runs: build "
                        f"one (kd.function) and call it, or kd.evaluate the expression on arrays")

    def __array_ufunc__(self, ufunc, method, *args, **kwargs):
        """numpy's operators with a symbolic operand (`ndarray + x`) build the symbolic result;
        any other ufunc (`np.exp(x)`) names the kerneldsl.numpy function to call instead."""
        name = _UFUNC_OPERATORS.get(ufunc.__name__)
        if method == "__call__" and name is not None and not kwargs:
            return array_api(name)(*args)
        raise TypeError(f"numpy's {ufunc.__name__} cannot compute {self._what()}: use "
                        f"knp.{ufunc.__name__}(...) (import kerneldsl.numpy as knp)")

    def __str__(self):
        from .printer import tensor_str
        return tensor_str(self)

    def __repr__(self):
        return f"<{type(self).__name__} {self.name}{shape_str(self.shape)} {self.dtype}>"


_UFUNC_OPERATORS = {n: n for n in (
    "add", "subtract", "multiply", "divide", "floor_divide", "power", "matmul", "bitwise_and", "bitwise_or",
    "bitwise_xor", "less", "less_equal", "greater", "greater_equal", "equal", "not_equal", "negative",
    "absolute", "invert", "positive")}
_UFUNC_OPERATORS.update(true_divide="divide", remainder="mod")

_BINARY = {"add": "add", "sub": "subtract", "mul": "multiply", "truediv": "divide", "floordiv": "floor_divide",
           "mod": "mod", "pow": "power", "matmul": "matmul", "and": "bitwise_and", "or": "bitwise_or",
           "xor": "bitwise_xor"}
for _py, _fn in _BINARY.items():
    setattr(Tensor, f"__{_py}__", _method(_fn))
    setattr(Tensor, f"__r{_py}__", _method(_fn, reflected=True))
for _py, _fn in {"lt": "less", "le": "less_equal", "gt": "greater", "ge": "greater_equal"}.items():
    setattr(Tensor, f"__{_py}__", _method(_fn))
for _py, _fn in {"neg": "negative", "abs": "absolute", "invert": "invert", "pos": "positive"}.items():
    setattr(Tensor, f"__{_py}__", _method(_fn))
for _name in ("sum", "mean", "max", "min", "prod", "argmax", "argmin", "var", "std", "reshape", "transpose",
              "flatten", "astype", "dimshuffle", "dot", "clip", "any", "all", "ravel", "squeeze"):
    setattr(Tensor, _name, _method(_name))
Tensor.T = property(_method("transpose"))
Tensor.size = property(lambda self: array_api("size")(self))


@dataclass(frozen=True, eq=False, repr=False)
class Placeholder(Tensor):
    uid: int = 0


@dataclass(frozen=True)
class RangeCheck:
    """A read of an op that fusion inlined elsewhere, checked over that op's own domain: `cond`
    (over sizes) must hold. The consumer may evaluate the inlined read fewer times than the op
    would have (inside an empty loop, an untaken branch, or not at all for an empty output), but
    every op's reads are checked as if it ran (the reference computes every op in full)."""
    cond: E.Expr
    op: str  # the inlined op, and the read, for the user's message
    load: str
    tensor: str
    dim: int
    extent: E.Expr
    lo: E.Expr
    hi: E.Expr


@dataclass(frozen=True)
class SizeCheck:
    """Sizes an op needs to agree (two broadcast dimensions, a matmul's inner sizes): `cond`
    over sizes, and the message of the ShapeError when it fails; `{a}` and `{b}` in it are the
    values of `a` and `b`."""
    cond: E.Expr
    message: str
    a: E.Expr
    b: E.Expr


@dataclass(frozen=True)
class ShapeCheck:
    """The shape of an op that fusion inlined elsewhere must not be negative (as it is checked
    for the ops that are stored): `cond` over sizes, and the op's name and shape."""
    cond: E.Expr
    tensor: str
    shape: tuple


@dataclass(frozen=True, eq=False, repr=False)
class ComputeOp(Tensor):
    axes: tuple = ()  # IndexVars, one per output dimension
    body: E.Expr = None  # type: ignore[assignment]
    uid: int = 0
    checks: tuple = ()  # SizeChecks of its operands' sizes; checks of the ops fused into it
    tag: str = ""  # what the op is, for rewrites and printing ("softmax", "matmul", ...): its identity

    def with_body(self, body: E.Expr, checks: tuple | None = None) -> ComputeOp:
        """The same op (name, shape, axes, uid, tag) computing `body` (and carrying `checks`)."""
        if checks is not None:  # one check per condition
            checks = tuple({c.cond: c for c in reversed(checks)}.values())[::-1]
        return ComputeOp(self.name, self.shape, self.dtype, self.axes, body, self.uid,
                         self.checks if checks is None else checks, self.tag)

    def inputs(self) -> tuple[Tensor, ...]:
        hit = _INPUTS.get(self)  # ops are immutable; graph walks ask every op many times
        if hit is not None:
            return hit
        seen: dict = {}
        for ld in E.loads(self.body):
            seen.setdefault(ld.tensor, None)
        for ax in self.axes:
            for ld in E.loads(ax.extent):
                seen.setdefault(ld.tensor, None)
        _INPUTS[self] = out = tuple(seen)
        return out


_INPUTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # ComputeOp -> its inputs


def shape_str(shape) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def new_uid() -> int:
    return next(_ids)


def topo_order(outputs) -> list[Tensor]:
    """Every tensor the outputs depend on, producers first; each exactly once."""
    return E.postorder(outputs, lambda t: t.inputs())


def map_graph(outputs, fn=None, replaced: dict | None = None) -> tuple[tuple, dict]:
    """The graph of `outputs` rebuilt producers first: `replaced` (old -> new tensor) is applied,
    every compute op reads the new versions of its inputs, and `fn(op, body)` (that body, with
    its loads relinked) may return a new body (or a new ComputeOp). Ops whose body does not change are kept as they
    are. Returns (new outputs in order, {old tensor: new tensor})."""
    new: dict = dict(replaced or {})
    for t in topo_order(outputs):
        if not isinstance(t, ComputeOp) or t in new:
            continue

        def relink(n):
            if isinstance(n, E.Load) and n.tensor in new and new[n.tensor] is not n.tensor:
                return E.Load(new[n.tensor], n.indices, n.dtype)
            return None
        body = E.transform(t.body, relink) if new else t.body
        if fn is not None:
            body = fn(t, body)  # a new body, or a whole new op (to carry checks)
        new[t] = body if isinstance(body, ComputeOp) else t if body is t.body else t.with_body(body)
    return tuple(new.get(t, t) for t in outputs), new


def equal_sizes(outputs, inputs) -> tuple[dict, set]:
    """({size: the size it equals, of the earliest input}, the checks that say so) for every size
    a check of the graph equates with another (`x_1 == b_0`: a broadcast, a matmul's inner sizes)."""
    parent: dict = {}

    def find(v):
        while parent.get(v, v) is not v:
            v = parent[v]
        return v
    order = {v: k for k, v in enumerate(v for p in inputs for d in p.shape for v in E.walk(d)
                                        if isinstance(v, E.SizeVar))}
    kept = set()
    for t in topo_order(outputs):
        for c in getattr(t, "checks", ()):
            if isinstance(c, SizeCheck) and isinstance(c.cond, E.Binary) and c.cond.op == "eq" and all(
                    isinstance(x, E.SizeVar) and x in order for x in (c.cond.a, c.cond.b)):
                a, b = sorted((find(c.cond.a), find(c.cond.b)), key=order.get)
                if a is not b:
                    parent[b] = a
                kept.add(c)
    return {v: find(v) for v in parent}, kept


def unify_sizes(outputs, inputs) -> tuple:
    """The graph with every size that a check equates with another spelled as one of them (the
    earliest input's) in the compute ops; the inputs keep their own sizes, and the check stays as
    written, so a call whose sizes differ still fails before any kernel runs. Then the gradient of
    `x + b`'s b (axes over b_0, reading dx over x_1) needs no `i < x_1` guard."""
    sizes, kept = equal_sizes(outputs, inputs)
    return substitute_sizes(outputs, sizes, keep=kept) if sizes else tuple(outputs)


def substitute_sizes(outputs, sizes: dict, replaced: dict | None = None, keep=frozenset()) -> tuple:
    """The graph of `outputs` with the SizeVars of `sizes` (SizeVar -> size expression) replaced
    everywhere: shapes, axis extents (output and reduction axes alike), bodies and checks (but the
    checks in `keep`); and the tensors of `replaced` (old -> new) read instead. Returns the new
    outputs in order."""
    if not sizes:
        return map_graph(tuple(outputs), replaced=replaced)[0]
    axes: dict = {}
    memo: dict = {}

    def sub(e):
        if e is None:
            return None
        out = memo.get(id(e))
        if out is not None:
            return out[1]
        if isinstance(e, E.SizeVar):
            new = sizes.get(e, e)
        elif isinstance(e, E.IndexVar):
            new = axes.get(e)
            if new is None:
                new = axes[e] = E.IndexVar(e.name, sub(e.extent), e.uid, e.reduce)
        elif isinstance(e, E.Reduce):
            new = E.Reduce(e.combiner, tuple(sub(a) for a in e.axes), sub(e.body), sub(e.cond), e.dtype)
        else:
            kids = tuple(sub(k) for k in e.children())
            new = e if all(a is b for a, b in zip(e.children(), kids)) else e.rebuild(kids)
        memo[id(e)] = (e, new)  # e kept alive: ids stay unique
        return new

    def check(c):
        if c in keep:
            return c
        return type(c)(**{f: sub(v) if isinstance(v, E.Expr) else
                          tuple(sub(x) if isinstance(x, E.Expr) else x for x in v) if isinstance(v, tuple) else v
                          for f, v in vars(c).items()})

    new: dict = dict(replaced or {})
    for t in topo_order(outputs):
        if t in new:
            continue
        if isinstance(t, Placeholder):
            if not keep and any(n in sizes for s in t.shape for n in E.walk(s)):
                raise ValueError(f"{t.name}: an input whose sizes are replaced must be replaced too")
            continue

        def relink(n):
            if isinstance(n, E.Load) and n.tensor in new and new[n.tensor] is not n.tensor:
                return E.Load(new[n.tensor], n.indices, n.dtype)
            return None
        body = E.transform(sub(t.body), relink)
        new[t] = ComputeOp(t.name, tuple(sub(s) for s in t.shape), t.dtype, tuple(sub(a) for a in t.axes),
                           body, t.uid, tuple(check(c) for c in t.checks), t.tag)
    return tuple(new.get(t, t) for t in outputs)
