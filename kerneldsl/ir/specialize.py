"""The specialize phase: cheaper forms of the same value (after stabilization).

  local_pow_specialize   x ** c for a constant c: 0 -> 1, 1 -> x, 2 -> x * x, 3 -> x * x * x,
                         4 -> (x * x) * (x * x), 0.5 -> sqrt(x), -0.5 -> rsqrt(x), -1 -> 1 / x,
                         -2, -3, -4 -> 1 / (the positive power); no pow call (`**` and kd.pow)
  local_mul_to_sqr       x * x -> sqr(x) where x is computed (not a constant, an axis or a read
                         of an input): the generated source evaluates x once, also when x is a
                         read of an op that fusion inlines

Float operands only (integer powers keep their exact integer rule). Constant folding runs with
these rules (rules.py): after stabilization, so that `log(1 + exp(1000.))` is folded from
`softplus(1000.)` (1000.0), never from `exp(1000.)` (inf).
"""

from __future__ import annotations

import math

from . import expr as E
from .rewrite import Pat, Rule, RuleSet, inlined

FLOATS = ("float32", "float64")


def _power(x: E.Expr, k: int) -> E.Expr:
    """x ** k for k in 1..4 by multiplication (x * x interned: computed once)."""
    sq = x * x
    return {1: x, 2: sq, 3: sq * x, 4: sq * sq}[k]


def _pow(x, p, n):
    v = p.value
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    if v == 0:
        return E.const(1, n.dtype)
    if v == 0.5:
        return E.call("sqrt", x)
    if v == -0.5:
        return E.call("rsqrt", x)
    if v == int(v) and 1 <= abs(v) <= 4:
        k = int(v)
        return _power(x, k) if k > 0 else 1 / _power(x, -k)
    return None


def _computed(x: E.Expr) -> bool:
    """x is worth evaluating once: not a constant, an axis or a read of an input (a read of a
    compute op may become its body when fusion inlines it)."""
    if isinstance(x, (E.Const, E.IndexVar, E.SizeVar, E.Var)):
        return False
    return not isinstance(x, E.Load) or isinstance(inlined(x), E.Expr)

x = Pat.var("x")

SPECIALIZE = RuleSet("specialize", [
    Rule("local_pow_specialize",
         Pat.binary("pow", x, Pat.const(name="p"), dtype=FLOATS, name="n")
         | Pat.call("pow", x, Pat.const(name="p"), dtype=FLOATS, name="n"),
         _pow),
    Rule("local_mul_to_sqr", Pat.binary("mul", x, x, dtype=FLOATS), lambda x: E.call("sqr", x),
         guard=_computed),
])

del x
