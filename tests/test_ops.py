"""Every intrinsic and operator, compiled, against numpy itself (and against the reference).

Tolerances, kernel vs numpy (relative, absolute), per intrinsic and dtype. The kernels call
glibc's libm; numpy uses its own (often SIMD) implementations, so transcendental functions may
differ by a few ulp. float32 ulp ~ 6e-8, float64 ulp ~ 1.1e-16.
  exact ops (+ - * / // % comparisons, abs floor ceil minimum maximum where cast): bit-exact
      up to the sign of zero (0.0 == -0.0 here);
  sqrt: correctly rounded in both, exact;
  exp log log1p expm1 sin cos tanh sigmoid erf rsqrt pow (floats): TOL below,
      i.e. float32 16 ulp, float64 64 ulp (glibc is < 1 ulp; numpy's SIMD float32 paths are <= 4);
  integer ops: exact (wrap-around on overflow, as numpy).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_same, check, rng

import kerneldsl as kd

TOL = {"float32": dict(rtol=1e-6, atol=1e-6), "float64": dict(rtol=1e-14, atol=1e-15)}
EXACT = dict(rtol=0, atol=0)
FLOATS = ("float32", "float64")
INTS = ("int32", "int64")
N = 37  # odd, not a multiple of any vector width


def _vec(dtype, name="A"):
    n = kd.size("n")
    return kd.placeholder((n,), dtype, name=name)


def _elementwise(fn, *arrays, dtypes=None):
    """Build B[i] = fn(A0[i], A1[i], ...) for 1-D arrays of equal length; return (kernel, ref)."""
    dtypes = dtypes or [a.dtype.name for a in arrays]
    ps = [_vec(d, f"A{k}") for k, d in enumerate(dtypes)]
    out = kd.compute(ps[0].shape, lambda i: fn(*[p[i] for p in ps]), name="B")
    f = kd.build(ps, [out])
    got = f(*arrays)
    ref = kd.evaluate([out], dict(zip(ps, arrays)))[0]
    return got, ref


# --- inputs in each function's domain, with the special values that matter -----------------

SPECIAL = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0])


def _domain(name, dtype, seed=0):
    r = rng(seed)
    if name in ("log", "sqrt", "rsqrt"):
        x = np.concatenate([r.uniform(1e-3, 100, N), [1e-30, 1.0, 4.0]])
    elif name == "log1p":
        x = np.concatenate([r.uniform(-0.99, 100, N), [1e-9, -1e-9]])
    elif name in ("exp", "expm1"):
        x = np.concatenate([r.uniform(-20, 20, N), [1e-9, -1e-9]])
    elif name in ("sin", "cos"):
        x = r.uniform(-10, 10, N)
    else:  # tanh sigmoid erf abs floor ceil: the whole line
        x = np.concatenate([r.uniform(-8, 8, N), [-50.0, 50.0, 2.5, -2.5, 0.5, -0.5]])
    return x.astype(dtype)


def _sigmoid(x):
    return (1 / (1 + np.exp(-x.astype(np.float64)))).astype(x.dtype)


def _erf(x):
    import math
    return np.array([math.erf(v) for v in x.astype(np.float64)], dtype=np.float64).astype(x.dtype)


UNARY = {
    "exp": np.exp, "log": np.log, "log1p": np.log1p, "expm1": np.expm1, "tanh": np.tanh,
    "sigmoid": _sigmoid, "erf": _erf, "sqrt": np.sqrt, "rsqrt": lambda x: (1 / np.sqrt(x)).astype(x.dtype),
    "abs": np.abs, "sin": np.sin, "cos": np.cos, "floor": np.floor, "ceil": np.ceil,
}
EXACT_UNARY = ("abs", "floor", "ceil", "sqrt")


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_intrinsic_matches_numpy(name, dtype):
    x = _domain(name, dtype)
    got, ref = _elementwise(getattr(kd, name), x)
    want = UNARY[name](x)
    tol = EXACT if name in EXACT_UNARY else TOL[dtype]
    # sigmoid's numpy formula here is a different one from the kernel's: allow a few ulp more
    if name in ("sigmoid", "tanh", "erf", "rsqrt") and dtype == "float32":
        tol = dict(rtol=2e-6, atol=1e-7)
    assert_same(got, want, **tol, what=f"{name} {dtype} vs numpy")
    assert_same(got, ref, **tol, what=f"{name} {dtype} vs reference")


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_intrinsic_special_values(name, dtype):
    x = SPECIAL.astype(dtype)
    got, ref = _elementwise(getattr(kd, name), x)
    with np.errstate(all="ignore"):
        want = UNARY[name](x)
    # both must agree exactly on NaN-ness, infinities and the signs of the results
    assert_same(np.isnan(got), np.isnan(want), what=f"{name}: NaN positions")
    finite = ~np.isnan(want)
    assert_same(got[finite], want[finite], **TOL[dtype], what=f"{name}: special values vs numpy")
    assert_same(got, ref, **TOL[dtype], what=f"{name}: special values vs reference")


@pytest.mark.parametrize("name", ["abs", "floor", "ceil"])
@pytest.mark.parametrize("dtype", INTS)
def test_integer_preserving_intrinsics_on_ints(name, dtype):
    info = np.iinfo(dtype)
    x = np.concatenate([rng(1).integers(-1000, 1000, N), [0, 1, -1, info.max, info.min + 1]]).astype(dtype)
    got, ref = _elementwise(getattr(kd, name), x)
    assert_same(got, UNARY[name](x), what=name)
    assert_same(got, ref, what=name)


def test_abs_of_int_min_wraps_as_numpy():
    x = np.array([np.iinfo(np.int32).min, -5, 5], dtype=np.int32)
    got, ref = _elementwise(kd.abs, x)
    assert_same(got, np.abs(x))
    assert_same(ref, np.abs(x))


@pytest.mark.parametrize("dtype", INTS + ("bool",))
def test_float_intrinsic_of_int_gives_float64(dtype):
    x = np.array([0, 1, 4, 9, 2], dtype=dtype) if dtype != "bool" else np.array([True, False])
    got, ref = _elementwise(kd.sqrt, x)
    assert got.dtype == np.float64  # documented: numpy would give float16 for bool
    assert_same(got, np.sqrt(x.astype(np.float64)), **EXACT)
    assert_same(got, ref, **EXACT)


# --- minimum / maximum, NaN and infinities ------------------------------------------------

@pytest.mark.parametrize("dtype", FLOATS + INTS)
@pytest.mark.parametrize("name", ["minimum", "maximum"])
def test_minimum_maximum(name, dtype):
    r = rng(2)
    a = r.integers(-50, 50, N).astype(dtype)
    b = r.integers(-50, 50, N).astype(dtype)
    got, ref = _elementwise(getattr(kd, name), a, b)
    assert_same(got, getattr(np, name)(a, b), **EXACT)
    assert_same(got, ref, **EXACT)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", ["minimum", "maximum"])
def test_minimum_maximum_propagate_nan_and_inf(name, dtype):
    vals = np.array([np.nan, np.inf, -np.inf, 1.0, -1.0])
    a, b = (x.ravel().astype(dtype) for x in np.meshgrid(vals, vals))
    got, ref = _elementwise(getattr(kd, name), a, b)
    assert_same(got, getattr(np, name)(a, b), **EXACT)
    assert np.isnan(got[np.isnan(a) | np.isnan(b)]).all()
    assert_same(got, ref, **EXACT)


def test_minimum_maximum_on_bools():
    a = np.array([True, True, False, False])
    b = np.array([True, False, True, False])
    for name in ("minimum", "maximum"):
        got, ref = _elementwise(getattr(kd, name), a, b)
        assert_same(got, getattr(np, name)(a, b))
        assert_same(ref, getattr(np, name)(a, b))


@pytest.mark.parametrize("dtype", FLOATS)
def test_max_min_reduction_propagates_nan(dtype):
    n, m = kd.sizes("n m")
    A = kd.placeholder((n, m), dtype, name="A")
    r = kd.reduce_axis(m, "r")
    mx = kd.compute((n,), lambda i: kd.max(A[i, r], axis=r), name="mx")
    mn = kd.compute((n,), lambda i: kd.min(A[i, r], axis=r), name="mn")
    a = rng(3).standard_normal((6, 5)).astype(dtype)
    a[1, 0] = np.nan  # first
    a[2, 4] = np.nan  # last
    a[3, 2] = np.inf
    a[4, :] = -np.inf
    a[5, 1] = np.nan
    a[5, 3] = np.inf
    check([mx, mn], {A: a}, expected=[a.max(axis=1), a.min(axis=1)], **EXACT)


@pytest.mark.parametrize("dtype", FLOATS)
def test_argmax_argmin_first_nan_wins(dtype):
    n, m = kd.sizes("n m")
    A = kd.placeholder((n, m), dtype, name="A")
    r = kd.reduce_axis(m, "r")
    am = kd.compute((n,), lambda i: kd.argmax(A[i, r], axis=r), name="am")
    an = kd.compute((n,), lambda i: kd.argmin(A[i, r], axis=r), name="an")
    a = rng(4).standard_normal((5, 6)).astype(dtype)
    a[0, 3] = np.nan
    a[0, 5] = np.nan
    a[1, :] = -np.inf
    a[2, :] = np.inf
    a[3, 2:4] = a[3].max() + 1  # ties: first wins
    check([am, an], {A: a}, expected=[a.argmax(axis=1), a.argmin(axis=1)])


# --- binary arithmetic -------------------------------------------------------------------

def _operands(dtype, seed=5, nonzero=False):
    r = rng(seed)
    if dtype in FLOATS:
        a = r.uniform(-10, 10, N)
        b = r.uniform(-10, 10, N)
        b[np.abs(b) < 0.1] = 0.5
    else:
        a = r.integers(-100, 100, N)
        b = r.integers(-12, 12, N)
        if nonzero:
            b[b == 0] = 3
    return a.astype(dtype), b.astype(dtype)


ARITH = {
    "add": (lambda x, y: x + y, np.add), "sub": (lambda x, y: x - y, np.subtract),
    "mul": (lambda x, y: x * y, np.multiply), "div": (lambda x, y: x / y, np.true_divide),
    "floordiv": (lambda x, y: x // y, np.floor_divide), "mod": (lambda x, y: x % y, np.remainder),
}


@pytest.mark.parametrize("dtype", FLOATS + INTS)
@pytest.mark.parametrize("op", sorted(ARITH))
def test_binary_arithmetic(op, dtype):
    a, b = _operands(dtype, nonzero=True)
    got, ref = _elementwise(ARITH[op][0], a, b)
    want = ARITH[op][1](a, b)
    tol = EXACT if dtype in INTS or op != "div" else dict(rtol=0, atol=0)
    assert_same(got, want, **tol, what=f"{op} {dtype}")
    assert_same(got, ref, **tol, what=f"{op} {dtype}")


@pytest.mark.parametrize("dtype", INTS)
def test_int_floordiv_mod_negative_operands_and_zero_divisors(dtype):
    info = np.iinfo(dtype)
    vals = np.array([0, 1, -1, 2, -2, 7, -7, 13, -13, info.max, info.min, info.min + 1], dtype=dtype)
    a, b = (x.ravel() for x in np.meshgrid(vals, vals))
    for op in ("floordiv", "mod"):
        got, ref = _elementwise(ARITH[op][0], a, b)
        with np.errstate(all="ignore"):
            want = ARITH[op][1](a, b)  # numpy: x // 0 == 0, x % 0 == 0, MIN // -1 == MIN
        assert_same(got, want, what=f"{op} {dtype}")
        assert_same(ref, want, what=f"reference {op} {dtype}")


@pytest.mark.parametrize("dtype", FLOATS)
def test_float_floordiv_mod_div_special_operands(dtype):
    vals = np.array([0.0, -0.0, 1.0, -1.0, 2.5, -2.5, 7.0, -7.0, 1e30, np.inf, -np.inf, np.nan])
    a, b = (x.ravel().astype(dtype) for x in np.meshgrid(vals, vals))
    for op in ("floordiv", "mod", "div"):
        got, ref = _elementwise(ARITH[op][0], a, b)
        with np.errstate(all="ignore"):
            want = ARITH[op][1](a, b)
        assert_same(got, want, **EXACT, what=f"{op} {dtype}")
        assert_same(np.signbit(got[~np.isnan(got)]), np.signbit(want[~np.isnan(want)]), what=f"{op} sign")
        assert_same(ref, want, **EXACT, what=f"reference {op} {dtype}")


def test_int_add_mul_sub_wrap_around():
    for dtype in INTS:
        info = np.iinfo(dtype)
        a = np.array([info.max, info.min, info.max, 3], dtype=dtype)
        b = np.array([1, -1, info.max, info.min], dtype=dtype)
        for op in ("add", "sub", "mul"):
            got, ref = _elementwise(ARITH[op][0], a, b)
            with np.errstate(all="ignore"):
                want = ARITH[op][1](a, b)
            assert_same(got, want, what=f"{op} {dtype}")
            assert_same(ref, want, what=f"{op} {dtype}")


def test_int_true_division_gives_float64():
    a, b = _operands("int32", nonzero=True)
    got, ref = _elementwise(lambda x, y: x / y, a, b)
    assert_same(got, a / b, **EXACT)
    assert_same(ref, a / b, **EXACT)


@pytest.mark.parametrize("dtype", FLOATS)
def test_float_pow(dtype):
    r = rng(6)
    a = np.concatenate([r.uniform(0.01, 5, N), [-2.0, -2.0, 0.0, 0.0, np.inf]]).astype(dtype)
    b = np.concatenate([r.uniform(-3, 3, N), [3.0, 0.5, -1.0, 0.0, -1.0]]).astype(dtype)
    for fn in (lambda x, y: x ** y, kd.pow):
        got, ref = _elementwise(fn, a, b)
        with np.errstate(all="ignore"):
            want = np.power(a, b)
        assert_same(got, want, **TOL[dtype])
        assert_same(got, ref, **TOL[dtype])


@pytest.mark.parametrize("dtype", INTS)
def test_int_pow(dtype):
    r = rng(7)
    a = r.integers(-9, 10, N).astype(dtype)
    b = r.integers(0, 8, N).astype(dtype)
    got, ref = _elementwise(lambda x, y: x ** y, a, b)
    assert_same(got, np.power(a, b))
    assert_same(ref, np.power(a, b))
    # overflow wraps as numpy's
    a = np.array([3, -3, 7, 2], dtype=dtype)
    b = np.array([45, 45, 50, 70], dtype=dtype)
    got, _ = _elementwise(lambda x, y: x ** y, a, b)
    assert_same(got, np.power(a, b))


def test_int_pow_negative_exponent_is_documented_not_an_error():
    # numpy raises for integers to negative powers; kerneldsl gives 0 unless |a| == 1
    a = np.array([1, -1, -1, 2, -3, 0, 5], dtype=np.int64)
    b = np.array([-3, -3, -2, -1, -2, -1, 0], dtype=np.int64)
    got, ref = _elementwise(lambda x, y: x ** y, a, b)
    assert_same(got, np.array([1, -1, 1, 0, 0, 0, 1]))
    assert_same(ref, got)


def test_pow_with_python_scalar_exponent():
    x = rng(8).uniform(0.1, 3, N).astype(np.float32)
    got, ref = _elementwise(lambda a: a ** 2 + 2 ** a, x)
    assert got.dtype == np.float32
    assert_same(got, x ** 2 + np.float32(2) ** x, **TOL["float32"])
    assert_same(got, ref, **TOL["float32"])
    xi = np.arange(-5, 6, dtype=np.int32)
    got, ref = _elementwise(lambda a: a ** 3, xi)
    assert_same(got, xi ** 3)
    assert_same(ref, xi ** 3)


@pytest.mark.parametrize("dtype", FLOATS + INTS)
def test_unary_negation(dtype):
    a, _ = _operands(dtype)
    got, ref = _elementwise(lambda x: -x, a)
    assert_same(got, -a)
    assert_same(ref, -a)


def test_negation_of_float_zero_keeps_sign():
    a = np.array([0.0, -0.0, np.inf, np.nan], dtype=np.float32)
    got, _ = _elementwise(lambda x: -x, a)
    assert_same(np.signbit(got), np.signbit(-a))


# --- comparisons and logic ---------------------------------------------------------------

CMP = {"lt": (lambda x, y: x < y, np.less), "le": (lambda x, y: x <= y, np.less_equal),
       "gt": (lambda x, y: x > y, np.greater), "ge": (lambda x, y: x >= y, np.greater_equal),
       "eq": (lambda x, y: x == y, np.equal), "ne": (lambda x, y: x != y, np.not_equal)}


@pytest.mark.parametrize("dtype", FLOATS + INTS + ("bool",))
@pytest.mark.parametrize("op", sorted(CMP))
def test_comparisons(op, dtype):
    r = rng(9)
    a = r.integers(-3, 3, N).astype(dtype)
    b = r.integers(-3, 3, N).astype(dtype)
    if dtype in FLOATS:
        a[:3] = [np.nan, np.inf, 1.0]
        b[:3] = [1.0, np.inf, np.nan]
    got, ref = _elementwise(CMP[op][0], a, b)
    assert_same(got, CMP[op][1](a, b))
    assert_same(ref, CMP[op][1](a, b))


LOGIC = {"and": (lambda x, y: x & y, np.bitwise_and), "or": (lambda x, y: x | y, np.bitwise_or),
         "xor": (lambda x, y: x ^ y, np.bitwise_xor)}


@pytest.mark.parametrize("dtype", ("bool",) + INTS)
@pytest.mark.parametrize("op", sorted(LOGIC))
def test_bitwise_and_logical_operators(op, dtype):
    r = rng(10)
    if dtype == "bool":
        a, b = (x.ravel() for x in np.meshgrid([True, False], [True, False]))
    else:
        info = np.iinfo(dtype)
        a = np.concatenate([r.integers(-1000, 1000, N), [info.min, info.max, -1]]).astype(dtype)
        b = np.concatenate([r.integers(-1000, 1000, N), [-1, info.min, info.max]]).astype(dtype)
    got, ref = _elementwise(LOGIC[op][0], a, b)
    assert_same(got, LOGIC[op][1](a, b))
    assert_same(ref, LOGIC[op][1](a, b))


@pytest.mark.parametrize("dtype", ("bool",) + INTS)
def test_invert(dtype):
    a = np.array([True, False]) if dtype == "bool" else np.array([0, 1, -1, 77, -78], dtype=dtype)
    got, ref = _elementwise(lambda x: ~x, a)
    assert_same(got, ~a)
    assert_same(ref, ~a)


def test_logic_combines_comparisons():
    a, b = _operands("float64")
    got, ref = _elementwise(lambda x, y: ((x > 0) & (y < 0)) | ~(x > y) ^ (x == y), a, b)
    want = ((a > 0) & (b < 0)) | ~(a > b) ^ (a == b)
    assert_same(got, want)
    assert_same(ref, want)


# --- where and cast -----------------------------------------------------------------------

@pytest.mark.parametrize("dtype", FLOATS + INTS + ("bool",))
def test_where(dtype):
    r = rng(11)
    c = r.random(N) > 0.5
    a = r.integers(-9, 9, N).astype(dtype)
    b = r.integers(-9, 9, N).astype(dtype)
    got, ref = _elementwise(kd.where, c, a, b)
    assert_same(got, np.where(c, a, b))
    assert_same(ref, np.where(c, a, b))


def test_where_promotes_mixed_branches_as_numpy():
    c = np.array([True, False, True])
    a = np.array([1, 2, 3], dtype=np.int32)
    b = np.array([0.5, 1.5, 2.5], dtype=np.float32)
    got, ref = _elementwise(kd.where, c, a, b)
    assert_same(got, np.where(c, a, b))  # int32 with float32 -> float64
    assert_same(ref, got)
    got, _ = _elementwise(lambda cc, x: kd.where(cc, x, 0.25), c, b)
    assert_same(got, np.where(c, b, np.float32(0.25)))


CASTS = [(s, d) for s in ("bool",) + INTS + FLOATS for d in ("bool",) + INTS + FLOATS if s != d]


@pytest.mark.parametrize("src,dst", CASTS)
def test_cast(src, dst):
    if src in FLOATS:
        x = np.array([0.0, -0.0, 1.5, -1.5, 2.7, -2.7, 100.99, -100.99, 3e4, 1e-40], dtype=src)
        if dst in FLOATS:
            x = np.concatenate([x, np.array([np.nan, np.inf, -np.inf, 1e300 if src == "float64" else 3e38],
                                            dtype=src)])
    elif src == "bool":
        x = np.array([True, False])
    else:
        info = np.iinfo(src)
        x = np.array([0, 1, -1, 255, -256, 70000, info.max, info.min], dtype=src)
    got, ref = _elementwise(lambda a: kd.cast(a, dst), x)
    with np.errstate(all="ignore"):
        want = x.astype(dst)
    assert_same(got, want, **EXACT)
    assert_same(ref, want, **EXACT)


def test_cast_via_compute_dtype():
    x = rng(12).uniform(-5, 5, N)
    ps = _vec("float64")
    out = kd.compute(ps.shape, lambda i: ps[i] * 2, dtype="int32", name="B")
    check(out, {ps: x}, expected=(x * 2).astype(np.int32))


# --- dtype promotion ----------------------------------------------------------------------

PROMOTE_PAIRS = [(a, b) for a in ("bool",) + INTS + FLOATS for b in ("bool",) + INTS + FLOATS]


@pytest.mark.parametrize("a,b", PROMOTE_PAIRS)
def test_promotion_of_two_inputs_matches_numpy(a, b):
    x = np.array([1, 0, 1], dtype=a)
    y = np.array([1, 1, 0], dtype=b)
    pa, pb = _vec(a, "X"), _vec(b, "Y")
    e = pa[0] * pb[0]
    want = np.result_type(x, y).name
    if a == b == "bool":
        want = "int64"  # documented: arithmetic on two bools is int64
    assert e.dtype == want
    assert (pa[0] < pb[0]).dtype == "bool"


@pytest.mark.parametrize("dtype", ("bool",) + INTS + FLOATS)
@pytest.mark.parametrize("scalar", [2, 2.5, True])
def test_python_scalars_are_weak(dtype, scalar):
    p = _vec(dtype)
    e = p[0] + scalar
    want = (np.zeros(1, dtype) + scalar).dtype.name
    if dtype == "bool" and isinstance(scalar, bool):
        want = "int64"  # documented
    assert e.dtype == want


def test_mixed_dtype_expression_compiles_and_matches():
    r = rng(13)
    a = r.integers(-5, 5, N).astype(np.int32)
    b = r.uniform(-1, 1, N).astype(np.float32)
    c = r.integers(-5, 5, N).astype(np.int64)
    d = r.random(N) > 0.5
    got, ref = _elementwise(lambda w, x, y, z: w * x + y * 0.5 - z, a, b, c, d)
    want = a * b + c * 0.5 - d
    assert_same(got, want, **TOL["float64"])
    assert_same(ref, want, **TOL["float64"])


def test_bool_arithmetic_is_int64_documented_difference():
    a = np.array([True, True, False])
    got, ref = _elementwise(lambda x, y: x + y, a, a)
    assert_same(got, np.array([2, 2, 0]))
    assert_same(ref, got)


# --- reductions over dtypes -----------------------------------------------------------------

@pytest.mark.parametrize("dtype", FLOATS + INTS + ("bool",))
@pytest.mark.parametrize("combiner", ["sum", "prod", "max", "min"])
def test_reduction_combiners(combiner, dtype):
    n, m = kd.sizes("n m")
    A = kd.placeholder((n, m), dtype, name="A")
    r = kd.reduce_axis(m, "r")
    out = kd.compute((n,), lambda i: getattr(kd, combiner)(A[i, r], axis=r), name="out")
    a = rng(14).integers(-3, 4, (5, 7)).astype(dtype)
    want = getattr(a, combiner)(axis=1)
    if combiner in ("sum", "prod"):
        want = want.astype("int64" if dtype == "bool" else dtype)  # documented: keeps the body dtype
    check(out, {A: a}, expected=want, **(TOL[dtype] if dtype in FLOATS else {}))


@pytest.mark.parametrize("combiner", ["sum", "prod", "max", "min", "argmax", "argmin"])
def test_reduction_over_empty_axis_gives_identity(combiner):
    n, m = kd.sizes("n m")
    A = kd.placeholder((n, m), "float32", name="A")
    r = kd.reduce_axis(m, "r")
    out = kd.compute((n,), lambda i: getattr(kd, combiner)(A[i, r], axis=r), name="out")
    a = np.zeros((3, 0), np.float32)
    want = {"sum": 0.0, "prod": 1.0, "max": -np.inf, "min": np.inf, "argmax": 0, "argmin": 0}[combiner]
    check(out, {A: a}, expected=np.full(3, want, dtype=out.dtype))


@pytest.mark.parametrize("dtype", FLOATS)
def test_multiply_add_rounds_each_operation_as_numpy(dtype):
    # no contraction into a fused multiply-add: x*y + (-(x*y)) is exactly 0, as in numpy
    r = rng(15)
    x, y = r.random(64).astype(dtype), r.random(64).astype(dtype)
    w = -(x * y)
    got, ref = _elementwise(lambda a, b, c: a * b + c, x, y, w)
    assert_same(got, x * y + w, **EXACT)
    assert (got == 0).all()
    got, _ = _elementwise(lambda a, b: a * b - a * b, x, y)
    assert (got == 0).all()
