"""The float32 intrinsics' accuracy over the whole float32 range: max error in ULP against float64,
on every class of input (random bit patterns: tails, subnormals, +-inf, NaN; a dense sweep of
the usual range; the boundaries where the C prelude switches formula). docs/intrinsics.md lists
the bounds asserted here; benchmarks/bench_intrinsics.py prints the same table with timings."""

from __future__ import annotations

import math

import numpy as np
import pytest

import kerneldsl as kd
import kerneldsl.numpy as knp

_erf = np.frompyfunc(math.erf, 1, 1)
_erfc = np.frompyfunc(math.erfc, 1, 1)


def _sigmoid(x):
    with np.errstate(over="ignore"):
        return np.where(x >= 0, 1 / (1 + np.exp(-x)), np.exp(x) / (1 + np.exp(x)))


# name -> (kd function, float64 reference, bound in ULP)
INTRINSICS = {
    "exp": (kd.exp, np.exp, 2),
    "log": (kd.log, np.log, 2),
    "log1p": (kd.log1p, np.log1p, 3),
    "expm1": (kd.expm1, np.expm1, 2),
    "tanh": (kd.tanh, np.tanh, 4),
    "sigmoid": (kd.sigmoid, _sigmoid, 3),
    "softplus": (kd.softplus, lambda x: np.logaddexp(0.0, x), 3),
    "erf": (kd.erf, lambda x: _erf(x).astype(np.float64), 4),
    "erfc": (kd.erfc, lambda x: _erfc(x).astype(np.float64), 4),
    "sqrt": (kd.sqrt, np.sqrt, 1),
    "sin": (kd.sin, np.sin, 4),
    "cos": (kd.cos, np.cos, 4),
}

BOUNDARIES = [0.0, -0.0, 1e-45, -1e-45, 1.17549435e-38, -1.17549435e-38, 1e-30, 1e-7, 0.5, -0.5, 1.0, -1.0,
              -0.999999, 2.0, 10.0546875, -10.0546875, 10.1, 26.0, 87.0, -87.0, 88.0, 88.72283, 88.72284,
              89.0, -103.97, -104.0, -150.0, 3.4028235e38, -3.4028235e38, np.inf, -np.inf, np.nan]


def _inputs() -> np.ndarray:
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2**32, 1 << 18, dtype=np.uint64).astype(np.uint32).view(np.float32)
    dense = rng.uniform(-30, 30, 1 << 17).astype(np.float32)
    small = (rng.standard_normal(1 << 16) * 0.1).astype(np.float32)
    edges = np.array(BOUNDARIES, np.float32)
    with np.errstate(over="ignore"):
        near = np.concatenate([np.nextafter(edges, np.float32(np.inf)), np.nextafter(edges, np.float32(-np.inf))])
    return np.concatenate([bits, dense, small, edges, near]).astype(np.float32)


def ulp_errors(got: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """|got - ref| in units of the float32 spacing at ref (ref in float64); NaN must match NaN
    and an infinite rounded ref must be matched exactly (inf where the error is undefined)."""
    ref32 = ref.astype(np.float32)
    out = np.zeros(got.shape)
    nan = np.isnan(ref) | np.isnan(got)
    out[nan] = np.where(np.isnan(ref[nan]) & np.isnan(got[nan]), 0.0, np.inf)
    inf = ~nan & (np.isinf(ref32) | np.isinf(got))
    out[inf] = np.where(got[inf] == ref32[inf], 0.0, np.inf)
    rest = ~nan & ~inf
    spacing = np.spacing(np.abs(ref32[rest])).astype(np.float64)
    out[rest] = np.abs(got[rest].astype(np.float64) - ref[rest]) / spacing
    return out


@pytest.fixture(scope="module")
def results():
    x = kd.vector("x")
    outs = [knp.elementwise(fn, x, name=name) for name, (fn, _, _) in INTRINSICS.items()]
    f = kd.function([x], outs)
    a = _inputs()
    got = dict(zip(INTRINSICS, f(a)))
    with np.errstate(all="ignore"):
        ref = {name: np.asarray(r(a.astype(np.float64)), np.float64) for name, (_, r, _) in INTRINSICS.items()}
    return a, got, ref


@pytest.mark.parametrize("name", list(INTRINSICS))
def test_intrinsic_is_within_its_ulp_bound_over_the_float32_range(results, name):
    a, got, ref = results
    err = ulp_errors(got[name], ref[name])
    bound = INTRINSICS[name][2]
    worst = int(np.argmax(err))
    assert err[worst] <= bound, (f"{name}({a[worst]!r}) = {got[name][worst]!r}, float64 says {ref[name][worst]!r}: "
                                 f"{err[worst]:.2f} ULP > {bound}")


def test_special_values_are_numpys():
    """inf, NaN, 0 and the values beyond overflow and underflow, exactly as numpy gives them."""
    specials = np.array([-np.inf, np.inf, np.nan, 0.0, -0.0, -1.0, -2.0, -200.0, 200.0, 1e-45], np.float32)
    x = kd.vector("x")
    f = kd.function([x], [knp.exp(x), knp.log(x), knp.log1p(x), knp.expm1(x), knp.exp(x * 0.5)])
    with np.errstate(all="ignore"):
        want = [np.exp(specials), np.log(specials), np.log1p(specials), np.expm1(specials), np.exp(specials * 0.5)]
    for name, g, r in zip(("exp", "log", "log1p", "expm1", "exp(x / 2)"), f(specials), want):
        exact = ~np.isfinite(r) | (r == 0) | (np.abs(r) == 1)
        np.testing.assert_array_equal(g[exact], r[exact], err_msg=name)
