"""Fit the polynomials of the C prelude's float32 transcendentals (templates/c/prelude.h) and
print them as #defines: python tools/fit_intrinsics.py > /tmp/coefs.h

Each is a least-squares fit on Chebyshev nodes against mpmath, of the part of the function that
is smooth on the reduced range the C code uses:
  exp    (exp(r) - 1 - r) / r^2                   on |r| <= ln2 / 2    (after x = n ln2 + r)
  log    (log(1 + f) - f + f^2 / 2) / f^3         on f in [sqrt(1/2) - 1, sqrt(2) - 1]
  expm1  (expm1(x) - x - x^2 / 2) / x^3           on |x| <= 1/2
  erfc   (1 + 2a) exp(a^2) erfc(a) in q = (a - 2) / (a + 2), a in [0, 10.1]
  erf    erf(x) / x in t = x^2 on [0, 1/4]: erfc = 1 - erf for |x| <= 1/2, where P(q) cancels
The max relative error of each fit is printed beside it; tests/test_intrinsics.py measures the
ULP error of the C functions themselves.
"""

from __future__ import annotations

import mpmath as mp
import numpy as np

mp.mp.dps = 40


def _g(fn, small):
    """fn, but its Taylor value `small(x)` near 0 where the quotient cancels in any precision."""
    return lambda x: small(mp.mpf(x)) if abs(x) < 1e-6 else fn(mp.mpf(x))


def fit(name: str, fn, lo: float, hi: float, degree: int, n: int = 2000):
    t = np.cos(np.pi * (np.arange(n) + 0.5) / n)
    x = (t + 1) / 2 * (hi - lo) + lo
    y = np.array([float(fn(v)) for v in x])
    cheb = np.polynomial.chebyshev.Chebyshev.fit(x, y, degree, domain=[lo, hi])
    coef = cheb.convert(kind=np.polynomial.Polynomial, domain=[lo, hi], window=[lo, hi]).coef
    check = np.linspace(lo, hi, 3001)
    want = np.array([float(fn(v)) for v in check])
    err = np.max(np.abs(np.polynomial.polynomial.polyval(check, coef) / want - 1))
    print(f"/* {name}: degree {degree} on [{lo:.6g}, {hi:.6g}], max relative error {err:.2e} */")
    for k, c in enumerate(coef):
        print(f"#define KD_{name.upper()}_P{k} {float(c)!r}")


def main() -> None:
    ln2 = float(mp.log(2))
    fit("exp", _g(lambda r: (mp.exp(r) - 1 - r) / r**2, lambda r: 0.5 + r / 6), -ln2 / 2, ln2 / 2, 5)
    fit("log", _g(lambda f: (mp.log(1 + f) - f + f**2 / 2) / f**3, lambda f: mp.mpf(1) / 3 - f / 4),
        float(mp.sqrt(0.5)) - 1, float(mp.sqrt(2)) - 1, 8)
    fit("expm1", _g(lambda x: (mp.expm1(x) - x - x**2 / 2) / x**3, lambda x: mp.mpf(1) / 6 + x / 24),
        -0.5, 0.5, 5)
    a_max = 10.1

    def erfc_part(q):
        a = 2 * (1 + mp.mpf(q)) / (1 - mp.mpf(q))
        return (1 + 2 * a) * mp.exp(a * a) * mp.erfc(a)
    fit("erfc", erfc_part, -1.0, (a_max - 2) / (a_max + 2), 12, n=3000)
    fit("erf", _g(lambda t: mp.erf(mp.sqrt(t)) / mp.sqrt(t), lambda t: 2 / mp.sqrt(mp.pi) * (1 - t / 3)),
        0.0, 0.25, 4)


if __name__ == "__main__":
    main()
