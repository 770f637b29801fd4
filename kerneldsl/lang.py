"""The embedded DSL: placeholders, compute, reduce axes, reductions and intrinsics."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

from . import dtypes as dt
from .errors import DTypeError, ShapeError
from .ir import expr as E
from .ir.tensor import ComputeOp, Placeholder, Tensor, array_api, check_name, is_name, new_uid

Expr = E.Expr


# --- sizes, inputs, axes --------------------------------------------------------------

def size(name: str) -> E.SizeVar:
    """A symbolic dimension; bound from the shapes of the inputs at call time."""
    return E.SizeVar(check_name(name, "size"))


def sizes(names: str) -> tuple[E.SizeVar, ...]:
    """`n, m = kd.sizes("n m")`."""
    return tuple(size(n) for n in names.replace(",", " ").split())


def shape_tuple(shape, what: str) -> tuple:
    if isinstance(shape, (int, E.Expr)):
        shape = (shape,)
    out = []
    for k, s in enumerate(shape):
        e = E.as_index(s, f"dimension {k} of {what}")
        bad = [n for n in E.walk(e) if isinstance(n, (E.IndexVar, E.Load, E.Reduce))]
        if bad:
            raise ShapeError(f"dimension {k} of {what} ({e}) may use only constants and sizes, "
                             f"not axes or tensor values")
        if isinstance(e, E.Const) and e.value < 0:
            raise ShapeError(f"dimension {k} of {what} is negative ({e.value})")
        out.append(e)
    return tuple(out)


def placeholder(shape, dtype="float32", name: str | None = None) -> Placeholder:
    """An input tensor: `kd.placeholder((n, k), "float32", name="A")`."""
    uid = new_uid()
    name = check_name(name, "placeholder") if name is not None else f"in{uid}"
    return Placeholder(name, shape_tuple(shape, f"placeholder {name}"), dt.normalize(dtype), uid)


def reduce_axis(extent, name: str = "r") -> E.IndexVar:
    """A reduction axis ranging over [0, extent)."""
    return E.index_var(check_name(name, "axis"), extent, reduce=True)


def compute(shape, fcompute: Callable, name: str | None = None, dtype=None) -> ComputeOp:
    """`kd.compute((n, m), lambda i, j: ...)`: a tensor defined elementwise over its axes."""
    uid = new_uid()
    name = check_name(name, "compute") if name is not None else f"t{uid}"
    shape = shape_tuple(shape, f"compute {name}")
    params = [p for p in inspect.signature(fcompute).parameters.values()  # `lambda i, f=f:` captures f
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
    if len(params) != len(shape) and not any(
            p.kind == p.VAR_POSITIONAL for p in inspect.signature(fcompute).parameters.values()):
        raise ShapeError(f"compute {name} has {len(shape)} dimension(s) but its function takes "
                         f"{len(params)} argument(s): give one axis argument per dimension")
    names = [p.name if k < len(params) else f"i{k}" for k, p in enumerate(params + [None] * len(shape))]
    axes = tuple(E.index_var(names[k] if is_name(names[k]) else f"i{k}", s)
                 for k, s in enumerate(shape))
    body = fcompute(*axes)
    if isinstance(body, Tensor):
        raise TypeError(f"compute {name}: the function returned the tensor {body.name}; "
                        f"return an element such as {body.name}[i, j]")
    body = E.as_expr(body)
    if dtype is not None:
        body = E.cast(body, dtype)
    _check_body(name, axes, body)
    return ComputeOp(name, shape, body.dtype, axes, body, uid)


def _check_body(name: str, axes, body: Expr) -> None:
    stray = E.free_axes(body) - set(axes)
    if stray:
        a = next(iter(stray))
        if a.reduce:
            raise ValueError(f"compute {name}: reduce axis {a.name} is used outside a reduction; "
                             f"wrap the expression in kd.sum(..., axis={a.name}) (or max/min/...)")
        raise ValueError(f"compute {name}: axis {a.name} belongs to another compute; use this "
                         f"compute's own lambda arguments")

    def check(n, bound):
        if isinstance(n, E.Reduce):
            again = set(n.axes) & bound
            if again:
                raise ValueError(f"compute {name}: axis {next(iter(again)).name} is reduced twice "
                                 f"(nested reductions need distinct axes)")
            bound = bound | set(n.axes)
        for c in n.children():
            check(c, bound)

    check(body, frozenset())


# --- reductions -----------------------------------------------------------------------

def _reduce(combiner: str, value, axis, where) -> Expr:
    if isinstance(value, Tensor):  # a whole array: numpy's reduction over integer axes
        if where is not None:
            raise TypeError(f"kd.{combiner} of an array takes no where=; use knp.where first")
        return array_api(combiner)(value, axis=axis)
    value = E.as_expr(value)
    axes = tuple(axis) if isinstance(axis, (list, tuple)) else (axis,)
    if not axes:
        raise ValueError(f"kd.{combiner} needs at least one axis")
    for a in axes:
        if not isinstance(a, E.IndexVar) or not a.reduce:
            raise TypeError(f"kd.{combiner}: axis must be made with kd.reduce_axis, got {a!r}")
    if len(set(axes)) != len(axes):
        raise ValueError(f"kd.{combiner}: the same axis is listed twice")
    cond = None
    if where is not None:
        cond = E.as_expr(where)
        if cond.dtype != "bool":
            raise DTypeError(f"kd.{combiner}: where= needs a bool condition, got {cond.dtype}")
    if combiner in ("argmax", "argmin") or combiner in ("sum", "prod") and value.dtype == "bool":
        dtype = "int64"
    else:
        dtype = value.dtype
    if combiner not in ("argmax", "argmin"):
        value = E.cast(value, dtype)
    return E.Reduce(combiner, axes, value, cond, dtype)


def sum(value, axis, where=None) -> Expr:
    """Sum of `value` over reduce axis/axes, counting only points where `where` holds."""
    return _reduce("sum", value, axis, where)


def prod(value, axis, where=None) -> Expr:
    return _reduce("prod", value, axis, where)


def max(value, axis, where=None) -> Expr:
    """Maximum over the axes (NaN propagates; -inf, or the dtype's minimum, when empty)."""
    return _reduce("max", value, axis, where)


def min(value, axis, where=None) -> Expr:
    return _reduce("min", value, axis, where)


def argmax(value, axis, where=None) -> Expr:
    """int64 index of the first maximum (row-major over several axes); first NaN wins."""
    return _reduce("argmax", value, axis, where)


def argmin(value, axis, where=None) -> Expr:
    return _reduce("argmin", value, axis, where)


# --- elementwise ----------------------------------------------------------------------

def where(cond, a, b) -> Expr:
    """`a` where `cond` holds, else `b`; only the chosen side is read."""
    if any(isinstance(v, Tensor) for v in (cond, a, b)):
        return array_api("where")(cond, a, b)
    return E.select(cond, a, b)


def cast(x, dtype) -> Expr:
    if isinstance(x, Tensor):
        return array_api("astype")(x, dtype)
    return E.cast(x, dtype)


def const(value, dtype=None) -> Expr:
    return E.const(value, dtype)


def _intrinsic(fn: str):
    def f(*args):
        if any(isinstance(a, Tensor) for a in args):  # on whole arrays: elementwise (kerneldsl.numpy)
            return array_api("elementwise")(lambda *a: E.call(fn, *a), *args, name=fn)
        return E.call(fn, *args)
    f.__name__ = fn
    f.__doc__ = f"The {fn} intrinsic, elementwise (on expressions, or on whole arrays)."
    return f


exp = _intrinsic("exp")
log = _intrinsic("log")
log1p = _intrinsic("log1p")
expm1 = _intrinsic("expm1")
tanh = _intrinsic("tanh")
sigmoid = _intrinsic("sigmoid")
erf = _intrinsic("erf")
erfc = _intrinsic("erfc")
softplus = _intrinsic("softplus")
sqrt = _intrinsic("sqrt")
rsqrt = _intrinsic("rsqrt")
abs = _intrinsic("abs")
sin = _intrinsic("sin")
cos = _intrinsic("cos")
floor = _intrinsic("floor")
ceil = _intrinsic("ceil")
minimum = _intrinsic("minimum")
maximum = _intrinsic("maximum")
pow = _intrinsic("pow")
stop_gradient = _intrinsic("stop_gradient")
stop_gradient.__doc__ = "The value of x, through which kd.grad passes no gradient."


def shape_of(t: Tensor) -> Sequence:
    return t.shape
