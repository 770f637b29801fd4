"""The stabilize phase: rewrites to forms that neither overflow nor lose precision.

Theano's and PyTensor's stability rewrites (names as theirs), as rules of the rewrite engine
(rewrite.py). Each rule's pattern matches THROUGH COMPUTE OPS: `through(p)` matches `p` at a
node, or at the body of the compute op a load reads (with the load's indices), following loads
through data movement (transpose, reshape, dimshuffle, getitem) to the op that computes. So
`knp.log(1 - p)`, with p = `1 / (1 + knp.exp(-z))` three ops away, is matched in the log op's
body, and the replacement reads z directly:

    log(sub1[i])  where  sub1[i] = 1 - div0[i],  div0[i] = 1 / add0[i],  add0[i] = 1 + exp0[i],
                         exp0[i] = exp(z[i])
    -> -softplus(z[i])     (local_reciprocal_1_plus_exp in div0, local_1msigmoid in sub1,
                            logsigm_to_softplus in the log op)

Rules (x, y: any expression; c: a constant; s: a sum over axes r; m: max over r, held by
stop_gradient):

  local_log1p                  log(1 + x) -> log1p(x);  log(1 - x) -> log1p(-x)
  local_expm1                  exp(x) - 1, exp(x) + -1 -> expm1(x)
  local_log1p_plusminus_exp    log1p(exp(x)), log(1 + exp(x)) -> softplus(x);
                               log1p(-exp(x)) -> log1mexp(x) (local_log1p_neg_exp)
  logmexpm1_to_log1mexp        log(-expm1(x)) -> log1mexp(x)
  logdiffexp_to_log1mexpdiff   log(exp(x) - exp(y)) -> where(y == -inf, x, x + log1mexp(y - x))
  logsigm_to_softplus          log(sigmoid(x)) -> -softplus(-x)
  log1msigm_to_softplus        log(1 - sigmoid(x)) -> -softplus(x)
  log1p_neg_sigmoid            log1p(-sigmoid(x)) -> -softplus(x)
  local_1msigmoid              1 - sigmoid(x) -> sigmoid(-x)
  local_exp_over_1_plus_exp    exp(x) / (1 + exp(x)) -> sigmoid(x);  a / (1 + exp(x)) -> a * sigmoid(-x)
                               (local_exp_over_1_plus_exp_scaled)
  local_reciprocal_1_plus_exp  1 / (1 + exp(x)) -> sigmoid(-x)  (so 1 / (1 + exp(-x)) -> sigmoid(x))
  local_sigm_times_exp         exp(x) * sigmoid(-x) -> sigmoid(x)
  local_sigmoid_logit          sigmoid(log(x / (1 - x))) -> x
  local_odds_sigmoid           sigmoid(x) / (1 - sigmoid(x)) -> exp(x)
  local_inv_odds_sigmoid       (1 - sigmoid(x)) / sigmoid(x) -> exp(-x)
  local_one_plus_erf ...       1 + erf(x) -> erfc(-x); 1 - erf(x) -> erfc(x); erf(x) - 1 -> -erfc(x);
                               1 - erfc(x) -> erf(x); erfc(-x) - 1 -> erf(x)
  local_log_erfc               log(erfc(x)) -> its asymptotic series where erfc underflows
  local_grad_log_erfc_neg      exp(-x*x) / erfc(x) (the gradient of log(erfc(x))) -> the series
  local_exp_log                log(exp(x)) -> x; log1p(expm1(x)) -> x; exp(softplus(x)) -> 1 + exp(x)
  local_exp_log_nan_switch     exp(log(x)) -> where(x >= 0, x, nan); exp(log1p(x)),
                               expm1(log(x)), expm1(log1p(x)) alike
  local_sqrt_sqr               sqrt(x * x) -> abs(x);  sqrt(x) * sqrt(x) -> where(x >= 0, x, nan)
  local_log_sqrt               log(sqrt(x)) -> 0.5 * log(x)
  local_log_div                log(1 / x) -> -log(x);  log(c / x), log(x / c), log(c * x) split
                               for a constant c > 0 (local_log_div_const, local_log_mul_const)
  local_div_exp_to_mul_exp     a / exp(b) -> a * exp(-b)
  local_mul_exp_to_exp_add     exp(x) * exp(y) -> exp(x + y)
  local_softmax_stabilize      exp(x) / sum_r(exp(x)) -> exp(x - m) / sum_r(exp(x - m))
  local_logsoftmax             log(softmax) -> x - m - log(s) (kd.nn.softmax, through any
                               transpose, reshape or getitem in between)
  local_log_exp_div            log(exp(x) / y) -> x - log(y) (a softmax written by hand)
  local_exp_log_softmax        exp(log_softmax) -> exp(x - m) / s
  local_log_sum_exp            log(sum_r(exp(x))) -> m + log(sum_r(exp(x - m)))
  local_log_add_exp            log(exp(x) + exp(y) + ...) -> m + log(exp(x - m) + ...), m = max
  local_argmax_pushdown        argmax_r(f(x)) -> argmax_r(x) for increasing f defined everywhere
                               (exp, expm1, sigmoid, tanh, softplus, softmax, log_softmax; terms
                               constant over the row); where f saturates (exp overflows, tanh
                               rounds to 1) the argument's argmax is the true one
  crossentropy_to_crossentropy_with_softmax   (CROSSENTROPY, for ops tagged "crossentropy")
                               -log(softmax(x)[i, t[i]]) -> log(s) - (x[i, t[i]] - m): log-softmax
                               at the target, whose gradient is softmax - onehot

Not here: `local_log_kv`/`local_log_iv` (Bessel functions are no intrinsics). A shifted
maximum of ±inf (a row of -inf) uses a shift of 0, so log-sum-exp of -inf is -inf, not nan.
"""

from __future__ import annotations

import math

from . import expr as E
from .rewrite import Pat, Rule, RuleSet, inlined

FLOATS = ("float32", "float64")


# --- patterns through compute ops ------------------------------------------------------------------

class Through(Pat):
    """`inner` at the node, or at the body of the compute op a load reads, through a chain of
    loads (at most `depth` ops). With `tags`, only at the body of an op with one of those tags."""

    __slots__ = ("depth", "inner", "tags")

    def __init__(self, inner: Pat, tags=None, depth: int = 8, name: str | None = None):
        super().__init__(name)
        self.inner, self.depth = inner, depth
        self.tags = None if tags is None else frozenset((tags,) if isinstance(tags, str) else tags)

    def match(self, n, caps):
        node, tag = n, None
        for _ in range(self.depth + 1):
            if self.tags is None or tag in self.tags:
                trial = dict(caps)
                if self.inner.match(node, trial):
                    caps.update(trial)
                    return self.name is None or _bind(caps, self.name, n)
            if type(node) is not E.Load:
                return False
            body = inlined(node)
            if body is None:
                return False
            node, tag = body, node.tensor.tag
        return False

    def keys(self):
        k = self.inner.keys()
        return {None} if None in k else k | {(E.Load, None)}


def _bind(caps: dict, name: str, n) -> bool:
    old = caps.setdefault(name, n)
    return old is n


class ReducePat(Pat):
    """A `Reduce` with one of `combiners` whose body matches `body` (the node captured as `name`)."""

    __slots__ = ("body", "combiners")

    def __init__(self, combiners, body: Pat | None = None, name: str | None = None):
        super().__init__(name)
        self.combiners = frozenset((combiners,) if isinstance(combiners, str) else combiners)
        self.body = body

    def match(self, n, caps):
        if type(n) is not E.Reduce or n.combiner not in self.combiners:
            return False
        if self.body is not None and not self.body.match(n.body, caps):
            return False
        return self.name is None or _bind(caps, self.name, n)

    def keys(self):
        return {(E.Reduce, c) for c in self.combiners}


def T(p: Pat, tags=None) -> Pat:
    """`p`, here or in a producer: the operand patterns of every stability rule."""
    return Through(p, tags)


def call(fn, *args, **kw) -> Pat:
    return Pat.call(fn, *args, **kw)


def one(name=None) -> Pat:
    return T(Pat.const(1, name=name))


x, y, a = Pat.var("x"), Pat.var("y"), Pat.var("a")
F = {"dtype": FLOATS}


# --- building replacements -------------------------------------------------------------------------

def neg(e: E.Expr) -> E.Expr:
    """-e, without a double negation (also of a negation computed by another op: knp's `-x`)."""
    if isinstance(e, E.Unary) and e.op == "neg":
        return e.x
    if isinstance(e, E.Const) and e.dtype in FLOATS:
        return E.Const(-e.value, e.dtype)
    body = inlined(e) if type(e) is E.Load else None
    if isinstance(body, E.Unary) and body.op == "neg":
        return body.x
    return E.Unary("neg", e, e.dtype)


def c(value, like: E.Expr) -> E.Const:
    """A constant of `like`'s dtype."""
    return E.const(value, like.dtype)


def fn(name: str, *args: E.Expr) -> E.Expr:
    return E.call(name, *args)


def is_neg_of(a: E.Expr, b: E.Expr) -> bool:
    """a is -b (either way round, or constants of opposite value)."""
    return neg(b) is a or neg(a) is b


def nan_unless(cond: E.Expr, value: E.Expr) -> E.Expr:
    return E.Select(cond, value, c(math.nan, value), value.dtype)


def _shifted(m: E.Expr) -> E.Expr:
    """The shift of a log-sum-exp: the maximum, or 0 where it is ±inf (a row of -inf keeps its
    log-sum-exp -inf; an inf keeps inf), held out of the gradient (its contribution cancels)."""
    inf = E.Binary("eq", fn("abs", m), c(math.inf, m), "bool")
    return fn("stop_gradient", E.Select(inf, c(0.0, m), m, m.dtype))


def _fresh_axes(axes) -> dict:
    return {r: E.index_var(r.name, r.extent, reduce=True) for r in axes}


def row_max(s: E.Reduce, v: E.Expr) -> E.Expr:
    """max over the axes (and condition) of the reduction `s`, of `v` (an expression of them), on
    fresh axes: an expression of the row only."""
    fresh = _fresh_axes(s.axes)
    cond = None if s.cond is None else E.substitute(s.cond, fresh)
    return E.Reduce("max", tuple(fresh.values()), E.substitute(v, fresh), cond, v.dtype)


ROW_MAX = T(ReducePat("max"))


def shifted_already(v: E.Expr) -> bool:
    """v is `u - stop_gradient(...)` or `u - max(...)`: a stabilized form (kd.nn.softmax's, one
    written by hand, or one made here), also through the ops that hold it (knp's x - max)."""
    for _ in range(8):
        if type(v) is not E.Load or inlined(v) is None:
            break
        v = inlined(v)
    if not (isinstance(v, E.Binary) and v.op == "sub"):
        return False
    b = v.b
    return isinstance(b, E.Call) and b.fn == "stop_gradient" or ROW_MAX.match(b, {})


def unify(pattern: E.Expr, target: E.Expr, holes: frozenset, binding: dict) -> bool:
    """Whether `pattern` with each of its `holes` (axes) replaced by one expression is `target`;
    `binding` collects hole -> expression."""
    if pattern in holes:
        return binding.setdefault(pattern, target) is target
    if pattern is target:
        return not any(h in holes for h in E.walk(pattern))
    if type(pattern) is not type(target) or pattern.dtype != target.dtype:
        return False
    kp, kt = pattern.children(), target.children()
    if len(kp) != len(kt) or pattern.rebuild(kt) is not target:  # same node kind, op and fields
        return False
    return all(unify(p, t, holes, binding) for p, t in zip(kp, kt))


# --- log1p, expm1, softplus, log1mexp --------------------------------------------------------------

def _log1p(x=None, y=None):
    """log(1 + x) -> log1p(x), log(1 - y) -> log1p(-y)."""
    return fn("log1p", x) if x is not None else fn("log1p", neg(y))


LOG1P = [
    Rule("local_log1p_plusminus_exp",
         call("log1p", T(call("exp", x)), **F)
         | call("log", T(Pat.binary("add", one(), T(call("exp", x)), commutative=True)), **F),
         lambda x: fn("softplus", x)),
    Rule("local_log1p_neg_exp", call("log1p", T(Pat.unary("neg", T(call("exp", x)))), **F),
         lambda x: fn("log1mexp", x)),
    Rule("logmexpm1_to_log1mexp", call("log", T(Pat.unary("neg", T(call("expm1", x)))), **F),
         lambda x: fn("log1mexp", x)),
    # log(1 - sigmoid(x)): local_1msigmoid rewrites its operand first (children before parents),
    # so it is met as log(sigmoid(-x))
    Rule("log1msigm_to_softplus",
         call("log", T(Pat.binary("sub", one(), T(call("sigmoid", x)))), **F)
         | call("log", T(call("sigmoid", Pat.unary("neg", x))), **F),
         lambda x: neg(fn("softplus", x))),
    Rule("logsigm_to_softplus", call("log", T(call("sigmoid", x)), **F),
         lambda x: neg(fn("softplus", neg(x)))),
    Rule("log1p_neg_sigmoid", call("log1p", T(Pat.unary("neg", T(call("sigmoid", x)))), **F),
         lambda x: neg(fn("softplus", x))),
    Rule("logdiffexp_to_log1mexpdiff",
         call("log", T(Pat.binary("sub", T(call("exp", x)), T(call("exp", y)))), **F),
         lambda x, y: E.Select(E.Binary("eq", y, c(-math.inf, y), "bool"), x,
                               x + fn("log1mexp", y - x), x.dtype)),
    Rule("local_log1p",
         call("log", T(Pat.binary("add", one(), x, commutative=True)), **F)
         | call("log", T(Pat.binary("sub", one(), y)), **F),
         _log1p),
    Rule("local_expm1",
         Pat.binary("sub", T(call("exp", x)), one(), **F)
         | Pat.binary("add", T(call("exp", x)), T(Pat.const(-1)), commutative=True, **F),
         lambda x: fn("expm1", x)),
]


# --- sigmoid ---------------------------------------------------------------------------------------

def _one_plus_exp(name="e") -> Pat:
    return T(Pat.binary("add", one(), T(call("exp", Pat.var(name))), commutative=True))


def _negated(e: E.Expr) -> bool:
    return isinstance(e, E.Unary) and e.op == "neg" or isinstance(e, E.Const) and e.value < 0


# sigmoid(x) / (1 - sigmoid(x)): its `1 - sigmoid(x)` is met as sigmoid(-x) (local_1msigmoid
# rewrites operands first): the odds exp(x), or their inverse exp(-x) when x is a negation
SIG_OVER_SIG = Pat.binary("div", T(call("sigmoid", x)), T(call("sigmoid", y)), **F)

SIGMOID = [
    Rule("local_1msigmoid", Pat.binary("sub", one(), T(call("sigmoid", x)), **F), lambda x: fn("sigmoid", neg(x))),
    Rule("local_exp_over_1_plus_exp", Pat.binary("div", T(call("exp", x)), _one_plus_exp("x"), **F),
         lambda x: fn("sigmoid", x)),
    Rule("local_reciprocal_1_plus_exp", Pat.binary("div", one(), _one_plus_exp(), **F),
         lambda e: fn("sigmoid", neg(e))),
    Rule("local_exp_over_1_plus_exp_scaled", Pat.binary("div", a, _one_plus_exp(), **F),
         lambda a, e: a * fn("sigmoid", neg(e))),
    Rule("local_sigm_times_exp", Pat.binary("mul", T(call("exp", x)), T(call("sigmoid", y)), commutative=True, **F),
         lambda x, y: fn("sigmoid", x) if is_neg_of(x, y) else None),
    Rule("local_sigmoid_logit",
         call("sigmoid", T(call("log", T(Pat.binary("div", x, T(Pat.binary("sub", one(), x)))))), **F),
         lambda x: x),
    Rule("local_odds_sigmoid", SIG_OVER_SIG, lambda x, y: fn("exp", x),
         guard=lambda x, y: is_neg_of(x, y) and not _negated(x)),
    Rule("local_inv_odds_sigmoid", SIG_OVER_SIG, lambda x, y: fn("exp", x),
         guard=lambda x, y: is_neg_of(x, y) and _negated(x)),
]


# --- erf, erfc -------------------------------------------------------------------------------------

# log(erfc(x)) for x where erfc(x) underflows: -x^2 - log(x) - log(pi)/2 + log(1 - 1/(2x^2) + 3/(4x^4)
# - 15/(8x^6)); the next term is below 1e-13 (float64, x >= 26) and 2e-7 (float32, x >= 9)
# relative to the value. Below the threshold erfc itself is accurate.
ERFC_SERIES_FROM = {"float32": 9.0, "float64": 26.0}


def _erfc_series_factor(x: E.Expr) -> E.Expr:
    """1 - 1/(2x^2) + 3/(4x^4) - 15/(8x^6): erfc(x) * x * sqrt(pi) * exp(x^2) for large x."""
    u = 1 / fn("sqr", x)
    return 1 - u * 0.5 + fn("sqr", u) * 0.75 - u * fn("sqr", u) * 1.875


def _clamps(x: E.Expr) -> tuple:
    """(x > threshold, x clamped to >= threshold for the series, x clamped to <= it for erfc):
    each branch reads only values it is accurate for."""
    thr = c(ERFC_SERIES_FROM[x.dtype], x)
    far = E.Binary("gt", x, thr, "bool")
    return far, E.Select(far, x, thr, x.dtype), E.Select(far, thr, x, x.dtype)


def _clamped(x: E.Expr) -> bool:
    """x is the near branch's clamp made below: the rule has been applied here."""
    return isinstance(x, E.Select) and isinstance(x.a, E.Const) and x.a.value == ERFC_SERIES_FROM.get(x.dtype)


def _log_erfc(x):
    if _clamped(x):
        return None
    far, xs, xn = _clamps(x)
    series = neg(fn("sqr", xs)) - fn("log", xs) - 0.5 * math.log(math.pi) + fn("log", _erfc_series_factor(xs))
    return E.Select(far, series, fn("log", fn("erfc", xn)), x.dtype)


def _grad_log_erfc(x):
    """exp(-x^2) / erfc(x) = x sqrt(pi) / (1 - 1/(2x^2) + ...) where erfc(x) underflows."""
    if _clamped(x):
        return None
    far, xs, xn = _clamps(x)
    series = xs * math.sqrt(math.pi) / _erfc_series_factor(xs)
    return E.Select(far, series, fn("exp", neg(xn * xn)) / fn("erfc", xn), x.dtype)


MINUS_SQUARE = (T(Pat.unary("neg", T(Pat.binary("mul", Pat.var("x"), Pat.var("x")) | call("sqr", Pat.var("x")))))
                | T(Pat.binary("mul", T(Pat.unary("neg", Pat.var("x"))), Pat.var("x"), commutative=True)))


def _is_minus_square(e: E.Expr, x: E.Expr) -> bool:
    """e is -(x * x), as one expression or through the ops that compute it."""
    return MINUS_SQUARE.match(e, {"x": x})


ERF = [
    Rule("local_one_plus_erf", Pat.binary("add", one(), T(call("erf", x)), commutative=True, **F),
         lambda x: fn("erfc", neg(x))),
    Rule("local_one_minus_erf", Pat.binary("sub", one(), T(call("erf", x)), **F), lambda x: fn("erfc", x)),
    Rule("local_erf_minus_one",
         Pat.binary("sub", T(call("erf", x)), one(), **F)
         | Pat.binary("add", T(call("erf", x)), T(Pat.const(-1)), commutative=True, **F),
         lambda x: neg(fn("erfc", x))),
    Rule("local_one_minus_erfc", Pat.binary("sub", one(), T(call("erfc", x)), **F), lambda x: fn("erf", x)),
    Rule("local_erf_neg_minus_one",
         Pat.binary("sub", T(call("erfc", x)), one(), **F)
         | Pat.binary("add", T(call("erfc", x)), T(Pat.const(-1)), commutative=True, **F),
         lambda x: fn("erf", neg(x))),
    Rule("local_log_erfc", call("log", T(call("erfc", x)), **F), _log_erfc),
    Rule("local_grad_log_erfc_neg", Pat.binary("div", T(call("exp", y)), T(call("erfc", x)), **F),
         lambda x, y: _grad_log_erfc(x) if _is_minus_square(y, x) else None),
]


# --- exp and log of each other, sqrt, division ------------------------------------------------------

def _positive(k: E.Expr) -> bool:
    return isinstance(k, E.Const) and k.value > 0 and math.isfinite(k.value)


def _log_div_const(n, a, y):
    """log(c / x) -> log(c) - log(x), log(x / c) -> log(x) - log(c), c > 0 a finite constant."""
    if _positive(a):
        return c(math.log(a.value), n) - fn("log", y)
    if _positive(y):
        return fn("log", a) - c(math.log(y.value), n)
    return None


def _log_mul_const(n, a, y):
    """log(c * x) -> log(c) + log(x), c > 0 a finite constant."""
    k, other = (a, y) if _positive(a) else (y, a)
    return c(math.log(k.value), n) + fn("log", other) if _positive(k) else None


EXP_LOG = [
    Rule("local_exp_log", call("log", T(call("exp", x)), **F) | call("log1p", T(call("expm1", x)), **F),
         lambda x: x),
    Rule("local_exp_softplus", call("exp", T(call("softplus", x)), **F), lambda x: 1 + fn("exp", x)),
    Rule("local_exp_log_nan_switch", call("exp", T(call("log", x)), **F),
         lambda x: nan_unless(x >= 0, x)),
    Rule("local_exp_log1p_nan_switch", call("exp", T(call("log1p", x)), **F),
         lambda x: nan_unless(x >= -1, x + 1)),
    Rule("local_expm1_log_nan_switch", call("expm1", T(call("log", x)), **F),
         lambda x: nan_unless(x >= 0, x - 1)),
    Rule("local_expm1_log1p_nan_switch", call("expm1", T(call("log1p", x)), **F),
         lambda x: nan_unless(x >= -1, x)),
    Rule("local_sqrt_sqr", call("sqrt", T(Pat.binary("mul", x, x) | call("sqr", x)), **F),
         lambda x: fn("abs", x)),
    Rule("local_sqr_sqrt", Pat.binary("mul", T(call("sqrt", x)), T(call("sqrt", x)), **F)
         | call("sqr", T(call("sqrt", x)), **F),
         lambda x: nan_unless(x >= 0, x)),
    Rule("local_log_sqrt", call("log", T(call("sqrt", x)), **F), lambda x: 0.5 * fn("log", x)),
    Rule("local_log_div", call("log", T(Pat.binary("div", one(), x)), **F), lambda x: neg(fn("log", x))),
    Rule("local_log_div_const", call("log", T(Pat.binary("div", a, y, name="n")), **F), _log_div_const),
    Rule("local_log_mul_const", call("log", T(Pat.binary("mul", a, y, name="n")), **F), _log_mul_const),
    Rule("local_mul_exp_to_exp_add", Pat.binary("mul", T(call("exp", x)), T(call("exp", y)), **F),
         lambda x, y: fn("exp", x + y)),
    Rule("local_div_exp_to_mul_exp", Pat.binary("div", a, T(call("exp", y)), **F),
         lambda a, y: a * fn("exp", neg(y))),
]


# --- softmax, log-softmax, log-sum-exp -------------------------------------------------------------

def _softmax_stabilize(u, s, v):
    """exp(u) / sum_r(exp(v)) where u is v at one point of the row: the max-subtracted form."""
    if shifted_already(u) or shifted_already(v):
        return None
    binding: dict = {}
    if not unify(v, u, frozenset(s.axes), binding) or len(binding) != len(s.axes):
        return None
    m = fn("stop_gradient", row_max(s, v))
    return fn("exp", u - m) / E.Reduce("sum", s.axes, fn("exp", v - m), s.cond, s.dtype)


def _log_sum_exp(s, v):
    if shifted_already(v):
        return None
    shift = _shifted(row_max(s, v))
    return shift + fn("log", E.Reduce("sum", s.axes, fn("exp", v - shift), s.cond, s.dtype))


def add_terms(e: E.Expr, depth: int = 16) -> list:
    """The terms of a sum (through the compute ops that hold its parts)."""
    seen = e
    while type(seen) is E.Load and depth:
        body = inlined(seen)
        if body is None or not (isinstance(body, E.Load) or isinstance(body, E.Binary) and body.op == "add"):
            break
        seen, depth = body, depth - 1
    if isinstance(seen, E.Binary) and seen.op == "add" and depth:
        return add_terms(seen.a, depth - 1) + add_terms(seen.b, depth - 1)
    return [e]


EXP_OF = T(call("exp", Pat.var("v")))


def _log_add_exp(s):
    # a +0.0 term (Python's sum() starts with 0) adds nothing to a sum of exps, which is >= +0
    terms = [t for t in add_terms(s) if not (isinstance(t, E.Const) and t.value == 0)]
    if len(terms) < 2:
        return None
    args = []
    for t in terms:
        caps: dict = {}
        if not EXP_OF.match(t, caps):
            return None
        args.append(caps["v"])
    if any(shifted_already(v) for v in args):
        return None
    m = args[0]
    for v in args[1:]:
        m = fn("maximum", m, v)
    shift = _shifted(m)
    total = fn("exp", args[0] - shift)
    for v in args[1:]:
        total = total + fn("exp", v - shift)
    return shift + fn("log", total)


def _log_softmax(u, s):
    return u - fn("log", s)


SOFTMAX_DIV = Pat.binary("div", T(call("exp", Pat.var("u"))), Pat.var("s"))

SOFTMAX = [
    Rule("local_softmax_stabilize",
         Pat.binary("div", T(call("exp", Pat.var("u"))), T(ReducePat("sum", T(call("exp", Pat.var("v"))), name="s")),
                    **F),
         _softmax_stabilize),
    Rule("local_logsoftmax", call("log", T(SOFTMAX_DIV, tags="softmax"), **F), _log_softmax),
    Rule("local_log_exp_div", call("log", T(SOFTMAX_DIV), **F), _log_softmax),
    Rule("local_exp_log_softmax",
         call("exp", T(Pat.binary("sub", Pat.var("u"), T(call("log", Pat.var("s")))), tags="log_softmax"), **F),
         lambda u, s: fn("exp", u) / s),
    Rule("local_log_sum_exp", call("log", T(ReducePat("sum", T(call("exp", Pat.var("v"))), name="s")), **F),
         _log_sum_exp),
    Rule("local_log_add_exp", call("log", Pat.var("s"), **F), _log_add_exp),
]


# --- argmax of an increasing function ------------------------------------------------------------

# increasing and defined on every real: log and log1p are increasing too, but their NaN below
# their domain would be the argmax (numpy's argmax picks a NaN), which x itself does not hold
INCREASING = ("exp", "expm1", "sigmoid", "tanh", "softplus", "stop_gradient")


def _row_invariant(e: E.Expr, axes) -> bool:
    return not (E.free_axes(e) & set(axes))


def _positive_row_sum(s: E.Expr, axes) -> bool:
    """s does not depend on the reduced axes and is a sum of exponentials (> 0)."""
    if not _row_invariant(s, axes):
        return False
    return T(ReducePat("sum", T(call("exp", Pat.any())))).match(s, {})


def pushdown(body: E.Expr, axes) -> E.Expr:
    """The expression whose argmax over `axes` is the argmax of `body`: increasing functions,
    terms constant over the row, and a softmax's positive row sum peeled off."""
    for _ in range(64):
        node = body
        while type(node) is E.Load:  # into the op that computes it
            inner = inlined(node)
            if inner is None:
                break
            node = inner
        if isinstance(node, E.Call) and node.fn in INCREASING and node.dtype in FLOATS:
            body = node.args[0]
        elif isinstance(node, E.Binary) and node.op in ("add", "sub") and node.dtype in FLOATS \
                and _row_invariant(node.b, axes):
            body = node.a
        elif isinstance(node, E.Binary) and node.op == "add" and node.dtype in FLOATS \
                and _row_invariant(node.a, axes):
            body = node.b
        elif isinstance(node, E.Binary) and node.op == "div" and _positive_row_sum(node.b, axes):
            body = node.a  # a softmax: exp(x) / (its positive row sum)
        else:
            return body
    return body


def _argmax_pushdown(n):
    body = pushdown(n.body, n.axes)
    return None if body is n.body else E.Reduce(n.combiner, n.axes, body, n.cond, n.dtype)


ARGMAX = [
    Rule("local_argmax_pushdown", ReducePat(("argmax",), name="n"), _argmax_pushdown),
]


STABILITY = RuleSet("stabilize", LOG1P + SIGMOID + ERF + EXP_LOG + SOFTMAX + ARGMAX)


# --- crossentropy of a softmax (ops tagged "crossentropy") ----------------------------------------

CROSSENTROPY = RuleSet("crossentropy", [
    # -log(softmax(x)[i, t[i]]) -> log(s) - (x[i, t[i]] - m): the log-softmax at the target only
    Rule("crossentropy_to_crossentropy_with_softmax",
         Pat.unary("neg", call("log", T(SOFTMAX_DIV, tags="softmax"), **F)),
         lambda u, s: fn("log", s) - u),
])

del x, y, a
