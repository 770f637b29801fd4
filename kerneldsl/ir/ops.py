"""The op table: one row per operator and intrinsic, holding everything about it.

A row (`Op`) gives, beside each other: the node it builds (`Unary`, `Binary` or
`Call`) and its arity, the dtype rule, the numpy evaluation (the reference's and
the loop interpreter's, and the simplifier's constant folding), the C spelling
per operand dtype and the CUDA one where it differs, the readable printing
(infix symbol and Python precedence, or call syntax), the Python source over
ints that size expressions are evaluated with, the interval rule of bounds
inference, the derivative of autodiff, and the Python operator methods of
`Expr` that build it. Every pass reads the table, so adding an operator or an
intrinsic is one `register(Op(...))` here plus its export in `kerneldsl/lang.py`:

    register(Op("hypot", "call", 2, _float_rule, _ufunc(np.hypot),
                c={"float32": "hypotf({0}, {1})", "float64": "hypot({0}, {1})"},
                derivative=lambda a, out: (a[0] / out, a[1] / out)))

Rows are keyed by (kind, name): the operator `**` (a `Binary` "pow") and the
intrinsic `kd.pow` (a `Call` "pow") are two rows sharing their rules.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from .. import dtypes as dt
from ..errors import DTypeError
from . import expr as E

KINDS = ("unary", "binary", "call")  # the node a row builds: Unary, Binary or Call


@dataclass(frozen=True, eq=False)
class Op:
    """One operator or intrinsic. Spelling tables map the first operand's dtype (or "*", any
    other) to a format string over the operands' text `{0}`, `{1}`."""

    name: str
    kind: str  # unary | binary | call: builds a Unary / Binary / Call node
    arity: int
    # (dtype of the operands after numpy's promotion, operands) -> (dtype the operands are cast
    # to, result dtype); raises DTypeError for operands the op refuses
    typing: Callable[[str, tuple], tuple[str, str]]
    numpy: Callable  # (*arrays, dtype=result dtype) -> array, exactly as the kernels compute
    c: Mapping  # operand dtype -> C format
    cuda: Mapping = field(default_factory=dict)  # CUDA spellings where they differ from C
    saturating: Mapping = field(default_factory=dict)  # entry checks: int64 that saturates, not wraps
    symbol: str | None = None  # infix (binary) or prefix (unary) symbol; None: call syntax name(args)
    prec: float = 9  # Python's precedence of the symbol, so that printed text parses back
    assoc: str = "left"  # left | right (pow) | none (comparisons): where equal precedence needs no ()
    associative: bool = False  # a op (b op c) is printed without parentheses
    commutative: bool = False
    py: str | None = None  # Python source over ints (size expressions); None: not a size operation
    interval: Callable | None = None  # bounds: (node, child intervals) -> (lo, hi) or None
    derivative: Callable | None = None  # autodiff: (args, out) -> d(out)/d(arg) per argument
    vjp: Callable | None = None  # autodiff, when not a partial: (args, out, adjoint) -> adjoint per arg
    method: str | None = None  # the Expr method building it: "__add__"
    rmethod: str | None = None  # its reflected method: "__radd__"
    becomes: Mapping = field(default_factory=dict)  # operand dtype -> row built instead (~bool: "not")
    _spell: dict = field(default_factory=dict, init=False, repr=False)  # target -> merged spellings

    def spelling(self, target: str, dtype: str, saturate: bool = False) -> str:
        """The format string for operands of `dtype` in C (`target="c"`) or CUDA source."""
        if saturate and dtype in self.saturating:
            return self.saturating[dtype]
        table = self._spell.get(target)
        if table is None:
            table = {**self.c, **self.cuda} if target == "cuda" else dict(self.c)
            self._spell[target] = table
        text = table.get(dtype) or table.get("*")
        if text is None:
            raise TypeError(f"{self.kind} {self.name!r} has no {target} spelling for {dtype} operands")
        return text


REGISTRY: dict[tuple[str, str], Op] = {}


class _Kind(Mapping):
    """A read-only view of the registry's rows of one kind, by name (no second table)."""

    def __init__(self, kind: str):
        self.kind = kind

    def __getitem__(self, name: str) -> Op:
        return REGISTRY[self.kind, name]

    def __iter__(self) -> Iterator[str]:
        return (name for kind, name in REGISTRY if kind == self.kind)

    def __len__(self) -> int:
        return sum(1 for kind, _ in REGISTRY if kind == self.kind)

    def __contains__(self, name) -> bool:
        return (self.kind, name) in REGISTRY

    def get(self, name, default=None):
        return REGISTRY.get((self.kind, name), default)


UNARY = _Kind("unary")
BINARY = _Kind("binary")
INTRINSICS = _Kind("call")


def of(n: E.Expr) -> Op:
    """The row of a Unary, Binary or Call node."""
    if isinstance(n, E.Call):
        return REGISTRY["call", n.fn]
    return REGISTRY["binary" if isinstance(n, E.Binary) else "unary", n.op]


def row(n: E.Expr) -> Op | None:
    """The row of `n`, or None for nodes that are not operator applications."""
    if isinstance(n, E.Call):
        return REGISTRY.get(("call", n.fn))
    if isinstance(n, E.Binary):
        return REGISTRY.get(("binary", n.op))
    if isinstance(n, E.Unary):
        return REGISTRY.get(("unary", n.op))
    return None


def register(op: Op) -> Op:
    """Add a row (replacing one of the same kind and name) and install its operator methods."""
    if op.kind not in KINDS:
        raise ValueError(f"op {op.name!r}: kind must be one of {KINDS}, got {op.kind!r}")
    REGISTRY[op.kind, op.name] = op
    build = {"unary": E.unary, "binary": E.binary, "call": E.call}[op.kind]
    name = op.name
    if op.method is not None:
        if op.arity == 1:
            setattr(E.Expr, op.method, lambda self: build(name, self))
        else:  # an array operand (a Tensor) takes over: elementwise with broadcasting
            setattr(E.Expr, op.method, lambda self, o: NotImplemented if getattr(o, "__kd_array__", False)
                    else build(name, self, o))
    if op.rmethod is not None:
        setattr(E.Expr, op.rmethod, lambda self, o: NotImplemented if getattr(o, "__kd_array__", False)
                else build(name, o, self))
    return op


def unregister(kind: str, name: str) -> None:
    """Remove a row and the operator methods it installed (tests register toy rows)."""
    op = REGISTRY.pop((kind, name))
    for m in (op.method, op.rmethod):
        if m is not None and m in E.Expr.__dict__:
            delattr(E.Expr, m)


def evaluate(op: Op, args, dtype: str) -> np.ndarray:
    """The row's numpy evaluation on arrays, as an array of the result dtype."""
    return np.asarray(op.numpy(*args, dtype=dtype)).astype(dtype, copy=False)


# --- dtype rules -------------------------------------------------------------------------

def _arith(dtype, args):
    d = "int64" if dtype == "bool" else dtype  # numpy: bool + bool is or; here it counts
    return d, d


def _true_div(dtype, args):
    d = dtype if dtype in dt.FLOATS else "float64"
    return d, d


def _compare(dtype, args):
    return dtype, "bool"


def _logic(name: str):
    def rule(dtype, args):
        if dtype in dt.FLOATS:
            raise DTypeError(f"'{name}' needs bool or integer operands, got {args[0]} and {args[1]}")
        return dtype, dtype
    return rule


def _neg_rule(dtype, args):
    if dtype == "bool":
        raise DTypeError(f"cannot negate the bool expression {args[0]}; use ~ for logical not")
    return dtype, dtype


def _invert_rule(dtype, args):
    if dtype in dt.FLOATS:
        raise DTypeError(f"~ needs a bool or integer operand, got {dtype} ({args[0]})")
    return dtype, dtype


def _not_rule(dtype, args):
    if dtype != "bool":
        raise DTypeError(f"logical not needs a bool operand, got {dtype} ({args[0]}); use ~")
    return dtype, dtype


def _float_rule(dtype, args):
    d = dtype if dtype in dt.FLOATS else "float64"
    return d, d


def _same_rule(dtype, args):
    return dtype, dtype


# --- numpy evaluation --------------------------------------------------------------------

def _ufunc(f):
    """An elementwise numpy function of the operands (the result dtype follows them)."""
    return lambda *args, dtype: f(*args)


def floordiv_np(a, b, dtype):
    """Floor division as the kernels do it: an integer division by zero gives 0."""
    if np.dtype(dtype).kind in "iu":
        bz = b == 0
        q = np.floor_divide(a, np.where(bz, 1, b))
        return np.where(bz, 0, q).astype(dtype)
    return np.floor_divide(a, b).astype(dtype)


def mod_np(a, b, dtype):
    """Modulo with the sign of the divisor (numpy's); an integer modulo by zero gives 0."""
    if np.dtype(dtype).kind in "iu":
        bz = b == 0
        r = np.remainder(a, np.where(bz, 1, b))
        return np.where(bz, 0, r).astype(dtype)
    return np.remainder(a, b).astype(dtype)


def ipow_np(a, b):
    """Integer power as the generated kernels do it: negative exponents give 0 unless |a| == 1."""
    a, b = np.broadcast_arrays(np.asarray(a), np.asarray(b))
    with np.errstate(all="ignore"):
        pos = np.power(a, np.where(b < 0, 0, b))
    neg = np.where(a == 1, 1, np.where(a == -1, np.where(b % 2 == 0, 1, -1), 0)).astype(a.dtype)
    return np.where(b < 0, neg, pos).astype(a.dtype)


def pow_np(a, b, dtype):
    """`a ** b` (both of `dtype`): integer powers as `ipow_np`. Floats as numpy's arrays (C's pow:
    `(-inf) ** 0.5` is inf); numpy's 0-d path differs (nan), so a 0-d power runs as a 1-element one."""
    if np.dtype(dtype).kind in "iu":
        return ipow_np(a, b).astype(dtype, copy=False)
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim == 0 and b.ndim == 0:
        return np.power(a.reshape(1), b.reshape(1)).reshape(()).astype(dtype, copy=False)
    return np.power(a, b).astype(dtype, copy=False)


_erfc_vec = np.frompyfunc(math.erfc, 1, 1)


def _erfc_np(x):
    return np.asarray(_erfc_vec(np.asarray(x, dtype=np.float64)), dtype=np.float64).astype(x.dtype)


def _sigmoid_np(x):
    with np.errstate(over="ignore"):
        e = np.exp(-np.abs(x))
        return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype)


def _log1mexp_np(x):
    with np.errstate(all="ignore"):
        return np.where(x > -math.log(2), np.log(-np.expm1(x)), np.log1p(-np.exp(x))).astype(x.dtype)


_erf_vec = np.frompyfunc(math.erf, 1, 1)


def _erf_np(x):
    return np.asarray(_erf_vec(np.asarray(x, dtype=np.float64)), dtype=np.float64).astype(x.dtype)


# --- spellings ---------------------------------------------------------------------------

_SUFFIX = {"float32": "f32", "float64": "f64", "int32": "i32", "int64": "i64"}


def _f(name32: str, name64: str | None = None) -> dict:
    """A libm function: `expf` for float32, `exp` for float64."""
    return {"float32": name32 + "({0})", "float64": (name64 or name32.removesuffix("f")) + "({0})"}


def _safe(name: str) -> dict:
    """A libm function through the C prelude's wrapper that keeps SIMD loops on glibc's vector
    fast path (`kd_exp_f32`); CUDA calls its own `expf`."""
    return {"float32": f"kd_{name}_f32({{0}})", "float64": f"kd_{name}_f64({{0}})"}


def _kd(name: str, nargs: int, dtypes=("int32", "int64")) -> dict:
    """kerneldsl's own helpers of the prelude: `kd_floordiv_i64({0}, {1})`."""
    args = ", ".join(f"{{{k}}}" for k in range(nargs))
    return {d: f"kd_{name}_{_SUFFIX[d]}({args})" for d in dtypes}


def _infix(sym: str, wrap32: bool = False) -> dict:
    text = f"({{0}} {sym} {{1}})"
    return {"*": text, **({"int32": f"((int32_t){text})"} if wrap32 else {})}  # int32 wraps, as numpy


_POW_C = {"float32": "powf({0}, {1})", "float64": "pow({0}, {1})", **_kd("pow", 2)}


# --- bounds: interval rules ----------------------------------------------------------------

def nonneg(e: E.Expr) -> bool:
    """True when `e` is known to be >= 0 (constants and products/sums of sizes)."""
    if isinstance(e, E.Const):
        return e.value >= 0
    if isinstance(e, E.SizeVar):
        return True
    if isinstance(e, E.Binary) and e.op in ("add", "mul", "floordiv"):
        return nonneg(e.a) and nonneg(e.b)
    return False


def _min(a, b):
    return E.call("minimum", a, b)


def _max(a, b):
    return E.call("maximum", a, b)


def _iv_neg(e, ivs):
    (r,) = ivs
    return None if r is None else (-r[1], -r[0])


def _iv_add(e, ivs):
    a, b = ivs
    return None if a is None or b is None else (a[0] + b[0], a[1] + b[1])


def _iv_sub(e, ivs):
    a, b = ivs
    return None if a is None or b is None else (a[0] - b[1], a[1] - b[0])


def _iv_mul(e, ivs):
    a, b = ivs
    if a is None or b is None:
        return None
    if a[0] is a[1] and nonneg(a[0]):
        return a[0] * b[0], a[0] * b[1]
    if b[0] is b[1] and nonneg(b[0]):
        return a[0] * b[0], a[1] * b[0]
    ps = [x * y for x in a for y in b]
    return _min(_min(ps[0], ps[1]), _min(ps[2], ps[3])), _max(_max(ps[0], ps[1]), _max(ps[2], ps[3]))


def _iv_floordiv(e, ivs):
    a = ivs[0]
    if isinstance(e.b, E.Const) and e.b.value > 0 and a is not None:
        return a[0] // e.b, a[1] // e.b
    return None


def _iv_mod(e, ivs):
    if nonneg(e.b):
        return E.Const(0, "int64"), _max(e.b - 1, 0)
    b = ivs[1]  # a % b has b's sign and |a % b| < |b|; a % 0 is 0: within (min(b, 0), max(b, 0))
    return None if b is None else (_min(b[0] + 1, 0), _max(b[1] - 1, 0))


def _iv_extreme(f):
    def rule(e, ivs):
        a, b = ivs
        return None if a is None or b is None else (f(a[0], b[0]), f(a[1], b[1]))
    return rule


# --- derivatives -------------------------------------------------------------------------

def _where(c, a, b):
    return E.select(c, a, b)


def _maximum_derivative(a, out):
    """Ties go to the first argument. Against a constant first argument (relu: maximum(0, v)) the
    second's partial is read from the result, `out > c`, equal for every v but NaN (0 there): the
    backward then reads the forward's output instead of recomputing v."""
    if isinstance(a[0], E.Const):
        return 0, _where(out > a[0], 1, 0)
    return _where(a[0] >= a[1], 1, 0), _where(a[0] >= a[1], 0, 1)


def _pow_derivative(a, out):
    return (a[1] * E.call("pow", a[0], a[1] - 1),
            _where(a[0] > 0, out * E.call("log", _where(a[0] > 0, a[0], 1)), 0))


def _div_vjp(args, out, g):
    return g / args[1], -(g * out) / args[1]


# --- the rows ----------------------------------------------------------------------------
# Derivatives: ties of minimum/maximum send the whole gradient to the first argument, abs'(0) = 0,
# and sqrt'(0) = inf, as the formula says.

def _cmp(name, sym, method, ufunc):
    return Op(name, "binary", 2, _compare, lambda a, b, dtype: ufunc(a, b), _infix(sym), symbol=sym,
              prec=1, assoc="none", commutative=name in ("eq", "ne"), py=f"({{0}} {sym} {{1}})",
              method=method)


def _bitwise(name, sym, prec, ufunc):
    return Op(name, "binary", 2, _logic(name), lambda a, b, dtype: ufunc(a, b), _infix(sym), symbol=sym,
              prec=prec, associative=True, commutative=True, py=f"({{0}} {sym} {{1}})",
              method=f"__{name}__", rmethod=f"__r{name}__")


def _intrinsic(name, nargs, typing, f, c, derivative, **kw):
    return Op(name, "call", nargs, typing, _ufunc(f), c, derivative=derivative, **kw)


_ROWS = [
    # --- unary operators
    Op("neg", "unary", 1, _neg_rule, lambda x, dtype: np.negative(x), {"*": "(-{0})"},
       saturating={"int64": "kd_sat_sub(0, {0})"}, symbol="-", prec=6, py="(-{0})",
       interval=_iv_neg, derivative=lambda a, out: (-1,), method="__neg__"),
    Op("invert", "unary", 1, _invert_rule, lambda x, dtype: np.invert(x), {"*": "(~{0})"}, symbol="~",
       prec=6, py="(~{0})", method="__invert__", becomes={"bool": "not"}),
    Op("not", "unary", 1, _not_rule, lambda x, dtype: np.logical_not(x), {"*": "(!{0})"}, symbol="~",
       prec=6, py="(not {0})"),
    # --- arithmetic
    Op("add", "binary", 2, _arith, lambda a, b, dtype: np.add(a, b, dtype=dtype), _infix("+", True),
       saturating={"int64": "kd_sat_add({0}, {1})"}, symbol="+", prec=4, associative=True,
       commutative=True, py="({0} + {1})", interval=_iv_add, derivative=lambda a, out: (1, 1),
       method="__add__", rmethod="__radd__"),
    Op("sub", "binary", 2, _arith, lambda a, b, dtype: np.subtract(a, b, dtype=dtype), _infix("-", True),
       saturating={"int64": "kd_sat_sub({0}, {1})"}, symbol="-", prec=4, py="({0} - {1})",
       interval=_iv_sub, derivative=lambda a, out: (1, -1), method="__sub__", rmethod="__rsub__"),
    Op("mul", "binary", 2, _arith, lambda a, b, dtype: np.multiply(a, b, dtype=dtype), _infix("*", True),
       saturating={"int64": "kd_sat_mul({0}, {1})"}, symbol="*", prec=5, associative=True,
       commutative=True, py="({0} * {1})", interval=_iv_mul, derivative=lambda a, out: (a[1], a[0]),
       method="__mul__", rmethod="__rmul__"),
    Op("div", "binary", 2, _true_div, lambda a, b, dtype: np.true_divide(a, b).astype(dtype, copy=False),
       _infix("/"), symbol="/", prec=5, vjp=_div_vjp, method="__truediv__", rmethod="__rtruediv__"),
    Op("floordiv", "binary", 2, _arith, floordiv_np, _kd("floordiv", 2, tuple(_SUFFIX)), symbol="//", prec=5,
       py="(({0}) // ({1}) if ({1}) else 0)", interval=_iv_floordiv,
       method="__floordiv__", rmethod="__rfloordiv__"),
    Op("mod", "binary", 2, _arith, mod_np, _kd("mod", 2, tuple(_SUFFIX)), symbol="%", prec=5,
       py="(({0}) % ({1}) if ({1}) else 0)", interval=_iv_mod,
       derivative=lambda a, out: (1, -E.call("floor", a[0] / a[1])),  # a - b * floor(a / b)
       method="__mod__", rmethod="__rmod__"),
    Op("pow", "binary", 2, _arith, pow_np, _POW_C,
       symbol="**", prec=7, assoc="right", derivative=_pow_derivative,
       method="__pow__", rmethod="__rpow__"),
    # --- comparisons (bool results) and bitwise logic
    _cmp("lt", "<", "__lt__", np.less),
    _cmp("le", "<=", "__le__", np.less_equal),
    _cmp("gt", ">", "__gt__", np.greater),
    _cmp("ge", ">=", "__ge__", np.greater_equal),
    _cmp("eq", "==", "__eq__", np.equal),
    _cmp("ne", "!=", "__ne__", np.not_equal),
    _bitwise("and", "&", 3, np.bitwise_and),
    _bitwise("or", "|", 2, np.bitwise_or),
    _bitwise("xor", "^", 2.5, np.bitwise_xor),
    # --- intrinsics (kd.exp, ...)
    _intrinsic("exp", 1, _float_rule, np.exp, _safe("exp"), lambda a, out: (out,), cuda=_f("expf")),
    _intrinsic("log", 1, _float_rule, np.log, _safe("log"), lambda a, out: (1 / a[0],), cuda=_f("logf")),
    _intrinsic("log1p", 1, _float_rule, np.log1p, _safe("log1p"), lambda a, out: (1 / (a[0] + 1),),
               cuda=_f("log1pf")),
    _intrinsic("expm1", 1, _float_rule, np.expm1, _safe("expm1"), lambda a, out: (out + 1,),
               cuda=_f("expm1f")),
    _intrinsic("tanh", 1, _float_rule, np.tanh, _f("tanhf"), lambda a, out: (1 - out * out,)),
    _intrinsic("sigmoid", 1, _float_rule, _sigmoid_np, _kd("sigmoid", 1, ("float32", "float64")),
               lambda a, out: (out * (1 - out),)),
    _intrinsic("erf", 1, _float_rule, _erf_np, _f("erff"),
               lambda a, out: (E.call("exp", -(a[0] * a[0])) * (2 / math.sqrt(math.pi)),)),
    _intrinsic("erfc", 1, _float_rule, _erfc_np, _safe("erfc"),
               lambda a, out: (E.call("exp", -(a[0] * a[0])) * (-2 / math.sqrt(math.pi)),), cuda=_f("erfcf")),
    # log(1 + exp(x)) without overflow: x + log1p(exp(-x)) for x > 0
    _intrinsic("softplus", 1, _float_rule, lambda x: np.logaddexp(np.zeros((), x.dtype), x).astype(x.dtype),
               _kd("softplus", 1, ("float32", "float64")), lambda a, out: (E.call("sigmoid", a[0]),)),
    # log(1 - exp(x)) (x <= 0) without cancellation: log(-expm1(x)) near 0, log1p(-exp(x)) below -log(2)
    _intrinsic("log1mexp", 1, _float_rule, _log1mexp_np, _kd("log1mexp", 1, ("float32", "float64")),
               lambda a, out: (-1 / E.call("expm1", -a[0]),)),
    # x * x with x evaluated once (the graph rewrites' form of a square of a computed value)
    _intrinsic("sqr", 1, _float_rule, lambda x: np.multiply(x, x), _kd("sqr", 1, ("float32", "float64")),
               lambda a, out: (2 * a[0],)),
    _intrinsic("sqrt", 1, _float_rule, np.sqrt, _f("sqrtf"), lambda a, out: (0.5 / out,)),
    _intrinsic("rsqrt", 1, _float_rule, lambda x: (1 / np.sqrt(x)).astype(x.dtype),
               {"float32": "(1.0f / sqrtf({0}))", "float64": "(1.0 / sqrt({0}))"},
               lambda a, out: (-0.5 * out / a[0],), cuda={"float32": "rsqrtf({0})", "float64": "rsqrt({0})"}),
    _intrinsic("sin", 1, _float_rule, np.sin, _f("sinf"), lambda a, out: (E.call("cos", a[0]),)),
    _intrinsic("cos", 1, _float_rule, np.cos, _f("cosf"), lambda a, out: (-E.call("sin", a[0]),)),
    _intrinsic("abs", 1, _same_rule, np.abs, {**_f("fabsf"), **_kd("abs", 1), "bool": "{0}"},
               lambda a, out: (_where(a[0] > 0, 1, _where(a[0] < 0, -1, 0)),), py="abs({0})",
               method="__abs__"),
    _intrinsic("floor", 1, _same_rule, lambda x: np.floor(x) if x.dtype.kind == "f" else x,
               {**_f("floorf"), "*": "{0}"}, lambda a, out: (0,)),
    _intrinsic("ceil", 1, _same_rule, lambda x: np.ceil(x) if x.dtype.kind == "f" else x,
               {**_f("ceilf"), "*": "{0}"}, lambda a, out: (0,)),
    _intrinsic("minimum", 2, _same_rule, np.minimum,
               {**_kd("min", 2, tuple(_SUFFIX)), "bool": "({0} && {1})"},
               lambda a, out: (_where(a[0] <= a[1], 1, 0), _where(a[0] <= a[1], 0, 1)),
               py="min({0}, {1})", interval=_iv_extreme(_min)),
    _intrinsic("maximum", 2, _same_rule, np.maximum,
               {**_kd("max", 2, tuple(_SUFFIX)), "bool": "({0} || {1})"}, _maximum_derivative,
               py="max({0}, {1})", interval=_iv_extreme(_max)),
    # identity forward, no gradient: e.g. the max subtracted in a stable log-softmax, whose gradient
    # contribution cancels exactly (as jax.lax.stop_gradient in jax.nn.log_softmax)
    _intrinsic("stop_gradient", 1, _same_rule, lambda x: x, {"*": "{0}"}, lambda a, out: (0,)),
    Op("pow", "call", 2, _arith, pow_np, _POW_C, derivative=_pow_derivative),
]

for _op in _ROWS:
    register(_op)
del _op
