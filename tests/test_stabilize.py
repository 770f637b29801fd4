"""The graph rewrite phases canonicalize -> stabilize -> specialize (kerneldsl/ir/rules.py).

Each rule: it fires (`f.rewrites`), the built function agrees with the reference interpreter on
the graph as written (`kd.evaluate`, no rewrites) on random inputs in float32 and float64, and
on an input where the graph as written gives inf or nan the built function is finite (where
such an input exists: some rules only save work). Then gradients (finite differences in
float64), the node-growth budget, folding after stabilization, CSE and the logistic
regression of Theano's tutorial.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import pytest

import kerneldsl as kd
import kerneldsl.numpy as knp
from kerneldsl.ir import expr as E
from kerneldsl.ir import rules
from kerneldsl.ir.rewrite import rewrite
from kerneldsl.ir.tensor import ComputeOp, topo_order

DTYPES = ("float32", "float64")
TOL = {"float32": dict(rtol=5e-5, atol=1e-6), "float64": dict(rtol=1e-10, atol=1e-12)}


@dataclass
class Case:
    rule: str
    fn: object  # arrays -> array: the graph as written
    normal: object  # rng -> tuple of float64 arrays, ordinary inputs
    extreme: dict = field(default_factory=dict)  # dtype -> tuple of arrays where the graph as written is not finite
    ndim: int = 1
    ids: str = ""

    def __str__(self):
        return self.ids or self.rule


def U(lo, hi, n=7):
    return lambda g: (g.uniform(lo, hi, n),)


def U2(lo, hi, lo2, hi2, n=7):
    return lambda g: (g.uniform(lo, hi, n), g.uniform(lo2, hi2, n))


def both(*arrays):
    return {d: tuple(np.array(a) for a in arrays) for d in DTYPES}


def per(f32, f64):
    return {"float32": tuple(np.array(a) for a in f32), "float64": tuple(np.array(a) for a in f64)}


TINY = [1e-20, 2e-20, 1e-25]

CASES = [
    # --- log1p, expm1, softplus, log1mexp
    Case("local_log1p", lambda x: x / knp.log(1 + x), U(0.1, 3), both(TINY), ids="log(1+x)"),
    Case("local_log1p", lambda x: x / knp.log(1 - x), U(0.1, 0.9), both(TINY), ids="log(1-x)"),
    Case("local_expm1", lambda x: x / (knp.exp(x) - 1), U(0.1, 3), both(TINY), ids="exp(x)-1"),
    Case("local_expm1", lambda x: x / (-1 + knp.exp(x)), U(-3, -0.1), both(TINY), ids="-1+exp(x)"),
    Case("local_log1p_plusminus_exp", lambda x: knp.log(1 + knp.exp(x)), U(-5, 5), both([1000.0, -3.0]),
         ids="log(1+exp(x))"),
    Case("local_log1p_plusminus_exp", lambda x: knp.log1p(knp.exp(x)), U(-5, 5), both([1000.0, 2.0]),
         ids="log1p(exp(x))"),
    Case("local_log1p_neg_exp", lambda x: knp.log1p(-knp.exp(x)), U(-5, -0.1), both([-1e-20, -2.0])),
    Case("logmexpm1_to_log1mexp", lambda x: 1 / knp.log(-knp.expm1(x)), U(-5, -0.1),
         per([[-20.0, -30.0]], [[-40.0, -50.0]])),
    Case("logdiffexp_to_log1mexpdiff", lambda x, d: knp.log(knp.exp(x + d) - knp.exp(x)), U2(-3, 3, 0.1, 2),
         both([1000.0, 0.0], [1.0, 1.0])),
    # --- sigmoid
    Case("logsigm_to_softplus", lambda x: knp.log(knp.sigmoid(x)), U(-5, 5), both([-1000.0, 1.0])),
    Case("logsigm_to_softplus", lambda x: knp.log(1 / (1 + knp.exp(-x))), U(-5, 5), both([-1000.0, 1.0]),
         ids="log(1/(1+exp(-x)))"),
    Case("log1msigm_to_softplus", lambda x: knp.log(1 - knp.sigmoid(x)), U(-5, 5), both([1000.0, 1.0])),
    Case("log1p_neg_sigmoid", lambda x: knp.log1p(-knp.sigmoid(x)), U(-5, 5), both([1000.0, 1.0])),
    Case("local_1msigmoid", lambda x: 1 / (1 - knp.sigmoid(x)), U(-5, 5), per([[20.0, 1.0]], [[50.0, 1.0]])),
    Case("local_exp_over_1_plus_exp", lambda x: knp.exp(x) / (1 + knp.exp(x)), U(-5, 5), both([1000.0, 1.0])),
    Case("local_reciprocal_1_plus_exp", lambda x: knp.log(1 / (1 + knp.exp(x))), U(-5, 5), both([1000.0, 1.0])),
    Case("local_exp_over_1_plus_exp_scaled", lambda x: knp.log(2 / (1 + knp.exp(x))), U(-5, 5),
         both([1000.0, 1.0])),
    Case("local_sigm_times_exp", lambda x: knp.exp(x) * knp.sigmoid(-x), U(-5, 5), both([1000.0, 1.0])),
    Case("local_sigmoid_logit", lambda x: knp.sigmoid(knp.log(x / (1 - x))), U(0.05, 0.95)),
    Case("local_odds_sigmoid", lambda x: knp.sigmoid(x) / (1 - knp.sigmoid(x)), U(-5, 5),
         per([[20.0, 1.0]], [[50.0, 1.0]])),
    Case("local_inv_odds_sigmoid", lambda x: knp.log((1 - knp.sigmoid(x)) / knp.sigmoid(x)), U(-5, 5),
         per([[20.0, 1.0]], [[40.0, 1.0]])),
    # --- erf, erfc
    Case("local_one_plus_erf", lambda x: knp.log(1 + knp.erf(x)), U(-2, 2), per([[-5.0, 0.5]], [[-7.0, 0.5]])),
    Case("local_one_minus_erf", lambda x: knp.log(1 - knp.erf(x)), U(-2, 2), per([[5.0, 0.5]], [[7.0, 0.5]])),
    Case("local_erf_minus_one", lambda x: 1 / (knp.erf(x) - 1), U(-2, 2), per([[5.0, 0.5]], [[7.0, 0.5]])),
    Case("local_one_minus_erfc", lambda x: 1 / (1 - kd.erfc(x)), U(0.1, 2), both(TINY)),
    Case("local_erf_neg_minus_one", lambda x: 1 / (kd.erfc(x) - 1), U(0.1, 2), both(TINY)),
    Case("local_log_erfc", lambda x: knp.log(kd.erfc(x)), U(-3, 8), per([[12.0, 30.0, 1.0]], [[30.0, 1e10, 1.0]])),
    Case("local_grad_log_erfc_neg", lambda x: knp.exp(-x * x) / kd.erfc(x), U(-3, 8),
         per([[12.0, 30.0, 1.0]], [[30.0, 1e10, 1.0]])),
    # --- exp and log of each other, sqrt, division
    Case("local_exp_log", lambda x: knp.log(knp.exp(x)), U(-5, 5), both([1000.0, 1.0])),
    Case("local_exp_log", lambda x: knp.log1p(knp.expm1(x)), U(-5, 5), both([1000.0, 1.0]),
         ids="log1p(expm1(x))"),
    Case("local_exp_softplus", lambda x: knp.exp(kd.softplus(x)), U(-5, 5)),
    Case("local_exp_log_nan_switch", lambda x: knp.exp(knp.log(x)), U(0.1, 5),
         {"float32": (np.array([3.4028235e38, 1.0]),)}),
    Case("local_exp_log1p_nan_switch", lambda x: knp.exp(knp.log1p(x)), U(-0.9, 5)),
    Case("local_expm1_log_nan_switch", lambda x: knp.expm1(knp.log(x)), U(0.1, 5)),
    Case("local_expm1_log1p_nan_switch", lambda x: knp.expm1(knp.log1p(x)), U(-0.9, 5)),
    Case("local_sqrt_sqr", lambda x: knp.sqrt(x ** 2), U(-5, 5), per([[1e20, -2.0]], [[1e200, -2.0]])),
    Case("local_sqr_sqrt", lambda x: knp.sqrt(x) * knp.sqrt(x), U(0.1, 5)),
    Case("local_log_sqrt", lambda x: knp.log(knp.sqrt(x)), U(0.1, 5)),
    Case("local_log_div", lambda x: knp.log(1 / x), U(0.1, 5), per([[1e-40, 1.0]], [[1e-310, 1.0]])),
    Case("local_log_div_const", lambda x: knp.log(2 / x), U(0.1, 5), per([[1e-40, 1.0]], [[1e-310, 1.0]])),
    Case("local_log_mul_const", lambda x: knp.log(4 * x), U(0.1, 5), per([[3e38, 1.0]], [[1e308, 1.0]])),
    Case("local_div_exp_to_mul_exp", lambda x: knp.exp(x) / knp.exp(x + 1), U(-5, 5), both([1000.0, 1.0])),
    Case("local_mul_exp_to_exp_add", lambda x, y: knp.exp(x) * knp.exp(y), U2(-5, 5, -5, 5),
         both([1000.0, 1.0], [-1000.0, 1.0])),
    # --- softmax, log-softmax, log-sum-exp, log-add-exp
    Case("local_softmax_stabilize", lambda x: knp.exp(x) / knp.sum(knp.exp(x), axis=1, keepdims=True),
         lambda g: (g.normal(0, 3, (3, 5)),), both([[1000.0, 0.0, 1.0], [1.0, 2.0, 3.0]]), ndim=2),
    Case("local_logsoftmax", lambda x: knp.log(kd.nn.softmax(x)), lambda g: (g.normal(0, 3, (3, 5)),),
         both([[1000.0, 0.0, 1.0], [1.0, 2.0, 3.0]]), ndim=2),
    Case("local_logsoftmax", lambda x: knp.log(kd.nn.softmax(x).T), lambda g: (g.normal(0, 3, (3, 5)),),
         both([[1000.0, 0.0, 1.0], [1.0, 2.0, 3.0]]), ndim=2, ids="log(softmax.T)"),
    Case("local_logsoftmax", lambda x: knp.log(kd.nn.softmax(x).reshape(-1)), lambda g: (g.normal(0, 3, (3, 5)),),
         both([[1000.0, 0.0, 1.0], [1.0, 2.0, 3.0]]), ndim=2, ids="log(softmax.reshape)"),
    Case("local_logsoftmax", lambda x: knp.log(kd.nn.softmax(x)[1:, ::2]), lambda g: (g.normal(0, 3, (3, 5)),),
         both([[1.0, 2.0, 3.0], [1000.0, 0.0, 1.0]]), ndim=2, ids="log(softmax[1:, ::2])"),
    Case("local_log_exp_div", lambda x: knp.log(knp.exp(x) / knp.sum(knp.exp(x), axis=1, keepdims=True)),
         lambda g: (g.normal(0, 3, (3, 5)),), both([[1000.0, 0.0, 1.0], [1.0, 2.0, 3.0]]), ndim=2),
    Case("local_exp_log_softmax", lambda x: knp.exp(kd.nn.log_softmax(x)), lambda g: (g.normal(0, 3, (3, 5)),),
         ndim=2),
    Case("local_log_sum_exp", lambda x: knp.log(knp.sum(knp.exp(x), axis=1)), lambda g: (g.normal(0, 3, (3, 5)),),
         both([[1000.0, 0.0, 1.0], [-1000.0, -1001.0, -1000.5]]), ndim=2),
    Case("local_log_sum_exp", lambda x: knp.log(knp.sum(knp.exp(x))), lambda g: (g.normal(0, 3, (3, 5)),),
         both([[1000.0, 0.0, 1.0], [1.0, 2.0, 3.0]]), ndim=2, ids="log(sum(exp(x))) over all"),
    Case("local_log_add_exp", lambda x, y: knp.log(knp.exp(x) + knp.exp(y)), U2(-5, 5, -5, 5),
         both([1000.0, -1000.0], [999.0, -1000.0])),
    Case("local_log_add_exp", lambda x, y: knp.log(knp.exp(x) + knp.exp(y) + knp.exp(x * y)), U2(-2, 2, -2, 2),
         both([1000.0, -1000.0], [1.0, 1.0]), ids="three terms"),
]


CASES += [
    Case("log1msigm_to_softplus", lambda x, t: kd.nn.binary_crossentropy(kd.nn.sigmoid(x), t), U2(-5, 5, 0, 1),
         both([-1000.0, 1000.0], [1.0, 0.0]), ids="binary_crossentropy(sigmoid(x), t)"),
    Case("local_logsoftmax", lambda x: -knp.log(kd.nn.softmax(x))[knp.arange(x.shape[0]), knp.argmin(x, axis=1)],
         lambda g: (g.normal(0, 3, (3, 5)),), both([[1000.0, 0.0, 1.0], [1.0, 2.0, 3.0]]), ndim=2,
         ids="-log(softmax(x))[arange(n), y]"),
    Case("local_logsoftmax", lambda x: -knp.log(kd.nn.softmax(x)[knp.arange(x.shape[0]), knp.argmin(x, axis=1)]),
         lambda g: (g.normal(0, 3, (3, 5)),), both([[1000.0, 0.0, 1.0], [1.0, 2.0, 3.0]]), ndim=2,
         ids="-log(softmax(x)[arange(n), y])"),
]

# The rules are under test, not the C compiler: their kernels are compiled without optimization.
O0 = replace(kd.Target.detect("c"), cflags=tuple("-O0" if f.startswith("-O") else f
                                                   for f in kd.Target.detect("c").cflags))


def _feed(arrays: dict, values: dict) -> dict:
    return {p: values[d][k].astype(d) for d in DTYPES for k, p in enumerate(arrays[d])}


def _build(case: Case):
    arity = len(case.normal(np.random.default_rng(0)))
    arrays = {d: [kd.tensor(f"a{k}_{d[-2:]}", case.ndim, d) for k in range(arity)] for d in DTYPES}
    outs = [case.fn(*arrays[d]) for d in DTYPES]
    f = kd.build([p for d in DTYPES for p in arrays[d]], outs, target=O0)
    return f, arrays, outs


def _run(f, arrays, outs, values: dict):
    feed = _feed(arrays, values)
    got = f(*feed.values())
    with np.errstate(all="ignore"):
        want = kd.evaluate(outs, feed)
    return dict(zip(DTYPES, got)), dict(zip(DTYPES, want))


@pytest.mark.parametrize("case", CASES, ids=str)
def test_rule_fires_agrees_and_stabilizes(case):
    f, arrays, outs = _build(case)
    assert f.rewrites.get(case.rule, 0) >= 1, dict(f.rewrites)
    g = np.random.default_rng(1)
    normal = case.normal(g)
    got, want = _run(f, arrays, outs, {d: normal for d in DTYPES})
    for d in DTYPES:  # ordinary inputs: the same values as the graph as written
        np.testing.assert_allclose(got[d], want[d], **TOL[d], err_msg=f"{case} {d}")
    for d, values in case.extreme.items():  # the graph as written overflows; the rewritten one does not
        full = {k: (values if k == d else normal) for k in DTYPES}
        got, want = _run(f, arrays, outs, full)
        assert not np.isfinite(want[d]).all(), f"{case} {d}: the graph as written is finite: {want[d]}"
        assert np.isfinite(got[d]).all(), f"{case} {d}: {got[d]}"


def test_every_stability_rule_has_a_case():
    from kerneldsl.ir.stabilize import STABILITY
    tested = {c.rule for c in CASES} | {"local_argmax_pushdown"}
    assert {r.name for r in STABILITY.rules} <= tested


# --- argmax of an increasing function -----------------------------------------------------------------

@pytest.mark.parametrize("fn", ["log", "log1p"])
def test_argmax_of_a_function_with_nan_below_its_domain_is_not_pushed_down(fn):
    """Found by the fuzzer: argmax(log1p(x)) is the first NaN where some x < -1, not argmax(x)."""
    x = kd.matrix("x", "float32")
    f = kd.build([x], [knp.argmax(getattr(knp, fn)(x), axis=1)])
    assert f.rewrites["local_argmax_pushdown"] == 0
    v = np.array([[2.5, -1.0, -3.0, 3.0], [-4.0, 1.5, 0.5, 1.0]], "float32")
    with np.errstate(invalid="ignore", divide="ignore"):
        np.testing.assert_array_equal(f(v), getattr(np, fn)(v).argmax(1))


@pytest.mark.parametrize("make", [
    lambda x: kd.nn.softmax(x), lambda x: knp.exp(x), lambda x: knp.sigmoid(x), lambda x: knp.tanh(x),
    lambda x: kd.nn.log_softmax(x), lambda x: knp.exp(x) / knp.sum(knp.exp(x), axis=1, keepdims=True),
], ids=["softmax", "exp", "sigmoid", "tanh", "log_softmax", "exp/sum(exp)"])
def test_argmax_pushdown(make):
    x = kd.matrix("x", "float32")
    am = knp.argmax(make(x), axis=1)
    f = kd.build([x], [am], target=O0)
    assert f.rewrites["local_argmax_pushdown"] >= 1
    (body_reads,) = [t for t in topo_order([rules.rewrite_graph([am])[0]]) if isinstance(t, ComputeOp)]
    assert body_reads.inputs() == (x,)  # argmax reads x itself: the function is gone
    v = np.random.default_rng(2).normal(0, 3, (4, 6)).astype("float32")
    np.testing.assert_array_equal(f(v), kd.evaluate([am], {x: v})[0])
    # where f saturates (exp overflows, sigmoid and tanh round to 1) the graph as written ties
    big = np.array([[60.0, 90.0, 200.0, 100.0], [-5.0, 3.0, 1.0, 2.0]], "float32")
    assert f(big).tolist() == [2, 1]


# --- a crossentropy of a softmax: one stable kernel, gradient softmax - onehot ---------------------------

def _crossentropy(dtype="float64"):
    x = kd.matrix("x", dtype)
    t = kd.lvector("t")
    cost = knp.mean(kd.nn.categorical_crossentropy(kd.nn.softmax(x), t))
    return x, t, cost


def test_crossentropy_of_softmax_is_a_log_softmax_at_the_target():
    x, t, cost = _crossentropy()
    f = kd.build([x, t], [cost])
    assert f.rewrites["crossentropy_to_crossentropy_with_softmax"] == 1
    assert len(f.kernels) == 1  # the row max, the row sum and the crossentropy: one kernel
    (g,) = kd.grad(cost, [x])
    fg = kd.build([x, t], [cost, g])
    ops = [op for op in topo_order(list(rules.rewrite_graph([cost, g]))) if isinstance(op, ComputeOp)]
    assert not any(n.fn == "log" and any(isinstance(ld, E.Load) and ld.tensor.tag == "softmax" for ld in n.args)
                   for op in ops for n in E.walk(op.body) if isinstance(n, E.Call))
    assert not any(op.tag == "softmax" for op in ops)  # no softmax op at all: the gradient is exp(x - m) / s - onehot
    xv = np.random.default_rng(3).normal(0, 3, (4, 5))
    tv = np.array([0, 4, 2, 2])
    c, gv = fg(xv, tv)
    p = np.exp(xv - xv.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(c, -np.log(p[np.arange(4), tv]).mean(), rtol=1e-12)
    onehot = np.eye(5)[tv]
    np.testing.assert_allclose(gv, (p - onehot) / 4, rtol=1e-10, atol=1e-14)
    kd.check_grad(g.__class__ and cost, {x: xv, t: tv}, wrt=[x])  # finite differences, float64
    # logits 1000 apart: the graph as written gives inf (log(0)) and a NaN gradient; this does not
    xv[0] = [0.0, 1000.0, 1.0, 2.0, 3.0]
    c, gv = fg(xv, tv)
    with np.errstate(all="ignore"):
        as_written = kd.evaluate([cost] + kd.grad(cost, [x], stabilize=False), {x: xv, t: tv})
    assert not np.isfinite(as_written[0]) and not np.isfinite(as_written[1]).all()
    assert np.isfinite(c) and np.isfinite(gv).all()
    np.testing.assert_allclose(c * 4 - 1000.0, -np.log(p[1:][np.arange(3), tv[1:]]).sum(), rtol=1e-9)
    np.testing.assert_allclose(gv[0], [-0.25, 0.25, 0, 0, 0], atol=1e-12)


# --- gradients ---------------------------------------------------------------------------------------

def test_gradients_are_taken_of_the_stabilized_forward_graph():
    x = kd.vector("x", "float64")
    cost = knp.sum(knp.log(knp.sigmoid(x)) + knp.log(1 - knp.sigmoid(x)))
    (g,) = kd.grad(cost, [x])
    (g_as_written,) = kd.grad(cost, [x], stabilize=False)
    v = np.array([-1000.0, -3.0, 0.0, 2.0, 1000.0])
    with np.errstate(all="ignore"):
        bad = kd.evaluate([g_as_written], {x: v})[0]
    assert np.isnan(bad).any()  # 1 / sigmoid(x) * sigmoid'(x) at saturation: inf * 0
    got = kd.build([x], [g])(v)
    np.testing.assert_allclose(got, 1 - 2 / (1 + np.exp(-v)), rtol=1e-12, atol=1e-300)
    kd.check_grad(cost, {x: v[1:4]}, wrt=[x])


def test_gradient_graphs_are_rewritten_at_build():
    """A gradient graph made of the graph as written is rewritten by the same phases."""
    x = kd.vector("x", "float64")
    (g,) = kd.grad(knp.sum(knp.log(1 + knp.exp(x))), [x], stabilize=False)  # exp(x) / (1 + exp(x))
    v = np.array([-1000.0, 0.0, 3.0, 1000.0])
    with np.errstate(all="ignore"):
        assert np.isnan(kd.evaluate([g], {x: v})[0]).any()
    f = kd.build([x], [g], target=O0)
    assert f.rewrites["local_sigm_times_exp"] >= 1 or f.rewrites["local_exp_over_1_plus_exp"] >= 1, f.rewrites
    np.testing.assert_allclose(f(v), 1 / (1 + np.exp(-v)), rtol=1e-12)


def test_gradient_of_log_erfc_is_finite_where_erfc_underflows():
    x = kd.vector("x", "float64")
    (g,) = kd.grad(knp.sum(knp.log(kd.erfc(x))), [x])
    f = kd.build([x], [g], target=O0)
    v = np.array([0.5, 3.0, 27.0, 40.0, 1e6])
    got = f(v)
    assert np.isfinite(got).all()
    mills = np.array([-2 / math.sqrt(math.pi) * math.exp(-a * a) / math.erfc(a) for a in v[:2]])
    np.testing.assert_allclose(got[:2], mills, rtol=1e-12)
    np.testing.assert_allclose(got[2:], -2 * v[2:] * (1 + 0.5 / v[2:] ** 2), rtol=1e-3)  # ~ -2x for large x
    kd.check_grad(knp.sum(knp.log(kd.erfc(x))), {x: v[:2]}, wrt=[x])


def test_gradient_with_respect_to_an_intermediate_holds_it():
    """kd.grad holds the tensors of `wrt`: no rewrite reads past them, every path stays."""
    x = kd.vector("x", "float64")
    p = knp.sigmoid(x)
    cost = knp.sum(knp.log(p) * 2 + p)
    gp, gx = kd.grad(cost, [p, x])
    v = np.array([-2.0, 0.5, 3.0])
    gpv, gxv = kd.evaluate([gp, gx], {x: v})
    s = 1 / (1 + np.exp(-v))
    np.testing.assert_allclose(gpv, 2 / s + 1, rtol=1e-12)
    np.testing.assert_allclose(gxv, (2 / s + 1) * s * (1 - s), rtol=1e-12)
    assert p in topo_order([gp])  # the gradient reads the op given


# --- the logistic regression of Theano's tutorial --------------------------------------------------------

def test_logistic_regression_stays_finite_where_p_saturates():
    rng = np.random.default_rng(0)
    x = kd.matrix("x")
    y = kd.vector("y")
    w0 = rng.standard_normal(784).astype("float32")
    w = kd.shared(w0, name="w")
    b = kd.shared(np.float32(0.0), name="b")
    p = 1 / (1 + knp.exp(-knp.dot(x, w) - b))
    cost = knp.mean(-y * knp.log(p) - (1 - y) * knp.log(1 - p)) + 0.01 * (w ** 2).sum()
    gw, gb = kd.grad(cost, [w, b])
    train = kd.function([x, y], [p > 0.5, cost], updates=[(w, w - 0.1 * gw), (b, b - 0.1 * gb)])
    fired = train.rewrites
    assert fired["local_reciprocal_1_plus_exp"] and fired["logsigm_to_softplus"] and fired["log1msigm_to_softplus"]
    assert len(train.kernels) <= 11, [k.name for k in train.kernels]  # 13 as written
    X = rng.standard_normal((400, 784)).astype("float32")
    Y = (rng.random(400) > 0.5).astype("float32")
    z = X.astype(np.float64) @ w0
    assert (np.abs(z) > 100).any()  # exp(-z) overflows float32: p is exactly 0 or 1 there
    pred, c = train(X, Y)
    cost64 = np.mean(Y * np.logaddexp(0, -z) + (1 - Y) * np.logaddexp(0, z)) + 0.01 * (w0.astype(float) ** 2).sum()
    np.testing.assert_allclose(c, cost64, rtol=1e-5)
    np.testing.assert_array_equal(pred, z > 0)
    s = 1 / (1 + np.exp(-z))
    np.testing.assert_allclose(w.get_value(), w0 - 0.1 * (X.T @ (s - Y) / 400 + 0.02 * w0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(b.get_value(), -0.1 * np.mean(s - Y), rtol=1e-4)
    for _ in range(3):
        _, c = train(X, Y)
        assert np.isfinite(c) and np.isfinite(w.get_value()).all() and np.isfinite(b.get_value())


def test_logistic_cost_gradient_against_finite_differences():
    rng = np.random.default_rng(1)
    x, y = kd.matrix("x", "float64"), kd.vector("y", "float64")
    w, b = kd.vector("w", "float64"), kd.scalar("b", "float64")
    p = 1 / (1 + knp.exp(-knp.dot(x, w) - b))
    cost = knp.mean(-y * knp.log(p) - (1 - y) * knp.log(1 - p)) + 0.01 * (w ** 2).sum()
    feed = {x: rng.standard_normal((6, 4)), y: (rng.random(6) > 0.5) * 1.0, w: rng.standard_normal(4),
            b: np.float64(0.3)}
    kd.check_grad(cost, feed, wrt=[w, b])


# --- folding after stabilization, specialization, CSE, the budget --------------------------------------

def test_constant_folding_waits_for_stabilization():
    """log(1 + exp(1000.)): folding exp(1000.) first gives inf (Theano/Theano#2781)."""
    n = kd.size("n")
    x = kd.placeholder((n,), "float32", name="x")
    big = E.const(1000.0, "float32")
    y = kd.compute((n,), lambda i: kd.log(1 + kd.exp(big)) + x[i], name="y")
    f = kd.build([x], [y], target=O0)
    assert f.rewrites["local_log1p_plusminus_exp"] == 1 and f.rewrites["fold_call"] >= 1
    v = np.array([0.0, 1.0], "float32")
    with np.errstate(all="ignore"):
        assert np.isinf(kd.evaluate([y], {x: v})[0]).all()
    np.testing.assert_array_equal(f(v), [1000.0, 1001.0])
    # canonicalize alone: no folding of finite constants into inf
    body, fired = rewrite(y.body, rules.CANONICALIZE)
    assert "fold_call" not in fired and any(isinstance(e, E.Call) and e.fn == "exp" for e in E.walk(body))


@pytest.mark.parametrize("power", [0, 1, 2, 3, 4, -1, -2, -3, 0.5, -0.5])
def test_pow_specialize(power):
    x = kd.vector("x", "float64")
    y = knp.abs(x) ** power + kd.pow(x * 0.5, float(power))  # the operator and the intrinsic
    f = kd.build([x], [y], target=O0)
    assert f.rewrites["local_pow_specialize"] + f.rewrites["square"] + f.rewrites["sqrt_half"] >= 1
    assert "pow(" not in f.source.split("kd_entry")[-1]
    v = np.random.default_rng(4).uniform(0.2, 3, 5)
    np.testing.assert_allclose(f(v), kd.evaluate([y], {x: v})[0], rtol=1e-14)


@pytest.mark.parametrize("power", [float("inf"), float("-inf"), float("nan"), 1e300])
def test_pow_of_a_non_finite_or_huge_constant_is_left_to_pow(power):
    """Found by the fuzzer: an infinite exponent crashed the rule (int(inf))."""
    x = kd.vector("x", "float64")
    y = kd.pow(knp.abs(x), power)
    f = kd.build([x], [y])
    v = np.array([0.5, 1.0, 2.0, 0.0])
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(f(v), kd.evaluate([y], {x: v})[0])


def test_mul_to_sqr_evaluates_the_operand_once():
    x = kd.vector("x", "float32")
    y = knp.square(knp.exp(x) + 1)
    f = kd.build([x], [y], target=O0)
    assert f.rewrites["local_mul_to_sqr"] == 1 and "kd_sqr_f32(" in f.source
    kernel = f.source[f.source.index("KD_KERNEL int kd_kernel"):]
    lines = [ln for ln in kernel.splitlines() if "kd_exp_f32(" in ln]  # one per loop version
    assert lines and all(ln.count("kd_exp_f32(") == 1 and "kd_sqr_f32(" in ln for ln in lines)
    v = np.array([0.5, -1.0, 2.0], "float32")
    np.testing.assert_allclose(f(v), kd.evaluate([y], {x: v})[0], rtol=1e-6)


def test_cse_merges_ops_that_compute_the_same_values():
    x = kd.vector("x", "float32")
    y = knp.exp(x) * knp.exp(x)  # two exp ops, equal
    z = knp.sum(knp.exp(x))  # and a third, its reduction axes named apart
    f = kd.build([x], [y, z], target=O0)
    assert f.rewrites["cse"] >= 2
    merged = rules.rewrite_graph([y, z])
    assert len({t for t in topo_order(list(merged)) if isinstance(t, ComputeOp) and t.tag == "exp"}) <= 1
    v = np.array([0.5, -1.0, 2.0], "float32")
    got = f(v)
    want = kd.evaluate([y, z], {x: v})
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-6)
    two = kd.build([x], [knp.exp(x), knp.exp(x)], target=O0)  # outputs are never merged away
    assert len(two(v)) == 2


def test_budget_stops_a_growing_rewrite():
    """log-add-exp of many terms grows the expression (a max and a shift per term): a small
    budget stops it with a correct, less rewritten, body."""
    n = kd.size("n")
    x = kd.placeholder((n,), "float64", name="x")
    y = kd.compute((n,), lambda i: kd.log(sum(kd.exp(x[(i + k) % n] * k) for k in range(1, 12))), name="y")
    size = len(E.walk(y.body))
    body, fired = rewrite(y.body, rules.STABILIZE, budget=size + 4)
    assert fired.stopped is not None and "budget" in fired.stopped
    assert len(E.walk(body)) <= size + 4 or body is y.body
    full, done = rewrite(y.body, rules.STABILIZE)
    assert done.stopped is None and done["local_log_add_exp"] == 1
    v = np.random.default_rng(5).normal(0, 1, 6)
    want = kd.evaluate([y], {x: v})[0]
    for b in (body, full):
        np.testing.assert_allclose(kd.evaluate([y.with_body(b)], {x: v})[0], want, rtol=1e-12)
    # through the graph pass: its budget applies to every op body
    counts = __import__("collections").Counter()
    (y2,) = rules.rewrite_graph([y], counts, budget=size + 4)
    np.testing.assert_allclose(kd.evaluate([y2], {x: v})[0], want, rtol=1e-12)
