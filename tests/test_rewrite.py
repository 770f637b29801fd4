"""The rewrite engine (kerneldsl/ir/rewrite.py) and the simplifier's rule sets on it."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import kerneldsl as kd
from kerneldsl.ir import expr as E
from kerneldsl.ir import simplify as S
from kerneldsl.ir.rewrite import Pat, Rewrites, Rule, RuleSet, rewrite, rewrite_graph
from kerneldsl.ir.tensor import ComputeOp, map_graph, topo_order

n = kd.size("n")
X = kd.placeholder((n,), "float32", name="x")
K = kd.placeholder((n,), "int64", name="k")
R = kd.reduce_axis(n, "r")
B = kd.placeholder((n,), "bool", name="b")


def _feed(seed=0, size=7):
    rng = np.random.default_rng(seed)
    return {X: rng.standard_normal(size).astype(np.float32), K: rng.integers(-5, 6, size),
            B: rng.random(size) < 0.5}


def _same_values(before: ComputeOp, body: E.Expr) -> None:
    """The op with its body rewritten computes what it did, on random inputs."""
    after = before.with_body(E.cast(body, before.dtype))
    for seed in range(3):
        feed = _feed(seed)
        (want,), (got,) = kd.evaluate([before], feed), kd.evaluate([after], feed)
        np.testing.assert_array_equal(got, want)


# --- one case per simplifier rule: it fires, and the value does not change --------------------

CASES = {
    "fold_binary": lambda i: X[i] * (E.const(2.0) + E.const(3.0)),
    "fold_unary": lambda i: K[i] + E.unary("neg", E.const(4)),
    "fold_call": lambda i: X[i] + kd.exp(E.const(1.0)),
    "fold_cast": lambda i: K[i] + kd.cast(E.const(2.5, "float64"), "int64"),
    "mul_one": lambda i: X[i] * 1 + 1 * X[i],
    "div_one": lambda i: X[i] / 1,
    "floordiv_one": lambda i: K[i] // 1,
    "sub_zero": lambda i: X[i] - 0,
    "square": lambda i: X[i] ** 2,
    "sqrt_half": lambda i: kd.abs(X[i]) ** 0.5,
    "add_zero": lambda i: (K[i] + 0) * (0 + K[i]),
    "mul_zero": lambda i: K[i] * 0 + 0 * K[i],
    "sub_self": lambda i: K[i] - K[i],
    "and_const": lambda i: (B[i] & True) | (E.const(False) & B[i]),
    "or_const": lambda i: (B[i] | False) & (E.const(True) | B[i]),
    "double_negation": lambda i: -E.unary("neg", X[i]),
    "double_not": lambda i: ~~B[i],
    "double_invert": lambda i: ~~K[i],
    "select_const": lambda i: kd.where(E.const(True), X[i], 2 * X[i]),
    "select_same": lambda i: kd.where(B[i], X[i], X[i]),
    "reduce_where_true": lambda i: X[i] + kd.sum(X[R], axis=R, where=E.const(True)),
    "axis_in_range": lambda i: kd.where((i < n) & (i >= 0), X[i], -X[i]),
    "divmod_const": lambda i: (2 * i + 3) // 2 + (4 * K[i] - 3) % 2 + (6 * i + 4 * n) // 2,
    "compare_linear": lambda i: kd.where(i + 2 > i + 1, X[i], -X[i]),
    "linear": lambda i: 2 * i + K[i] - i - (3 * (n - 1) - 3 * n),
    "max_nonneg_zero": lambda i: K[i] + kd.maximum(n, 0),
    "min_nonneg_zero": lambda i: K[i] + kd.minimum(n, 0),
}


def test_every_simplifier_rule_has_a_case():
    assert set(CASES) == {r.name for rs in S.SIMPLIFY for r in rs.rules}


@pytest.mark.parametrize("name", sorted(CASES))
def test_simplifier_rule_fires_and_keeps_the_value(name):
    ruleset = next(rs for rs in S.SIMPLIFY if name in {r.name for r in rs.rules})
    before = kd.compute((n,), CASES[name], name="t")
    body, fired = rewrite(before.body, [ruleset])
    assert fired[name] >= 1, f"{name} did not fire on {before.body}: {dict(fired)}"
    assert body is not before.body
    _same_values(before, body)
    # and the whole simplifier agrees too
    _same_values(before, S.simplify(before.body))


def test_simplify_results_are_fixed_points():
    i = kd.compute((n,), lambda i: i, name="t").axes[0]
    e = (2 * i + 3) // 2
    out, fired = rewrite(e, S.SIMPLIFY)
    assert out is S.simplify(e) is S.simplify(i + 1)
    assert fired["divmod_const"] == 1 and fired["fold_binary"] == 1  # 3 // 2, made by divmod_const
    again, more = rewrite(out, S.SIMPLIFY)
    assert again is out and not more and more.stopped is None


def test_linear_forms_are_public():
    i = kd.compute((n,), lambda i: i, name="t").axes[0]
    lin = S.linear(2 * i + n - i - 3)
    assert lin == {i: 1, n: 1, None: -3}
    assert S.build_linear(lin) is S.simplify(i + n - 3)
    assert S.linear(X[0]) is None  # not int64


# --- patterns -------------------------------------------------------------------------------

def _fires(pattern, e, guard=None):
    hits = []
    rule = Rule("r", pattern, lambda **caps: hits.append(caps) or None, guard)
    rewrite(e, [RuleSet("t", [rule])])
    return hits


def test_captures_bind_the_same_node_twice():
    a, b = X[0], X[1]
    x_minus_x = Pat.binary("sub", Pat.var("x"), Pat.var("x"))
    assert _fires(x_minus_x, a - a) == [{"x": a}]
    assert _fires(x_minus_x, a - b) == []


def test_constant_patterns():
    one, c = Pat.binary("mul", Pat.var("x"), Pat.const(1)), Pat.const(name="c")
    assert _fires(one, X[0] * 1)  # 1.0 == 1
    assert _fires(one, K[0] * 1)
    assert not _fires(one, X[0] * 2)
    assert not _fires(Pat.binary("and", Pat.var("x"), Pat.const(1)), B[0] & True)  # True is not 1
    assert _fires(Pat.binary("and", Pat.var("x"), Pat.const(True)), B[0] & True)
    assert [h["c"].value for h in _fires(c, X[0] * 2.5)] == [0, 2.5]  # every constant, the index too


def test_op_and_dtype_constraints():
    e = X[0] * 2 + K[1] // 3
    assert len(_fires(Pat.binary(("mul", "floordiv")), e)) == 2
    assert len(_fires(Pat.binary(None, dtype="int64"), e)) == 1
    assert [h["x"] for h in _fires(Pat.call("log", Pat.var("x")), kd.log(X[0]) + kd.exp(X[1]))] == [X[0]]
    assert len(_fires(Pat.call(), kd.log(X[0]) + kd.exp(X[1]))) == 2


def test_guards_and_declining_builds():
    e = X[0] * 1
    never = Rule("never", Pat.binary("mul", Pat.var("x"), Pat.const(1)), lambda x: x, guard=lambda x: False)
    decline = Rule("decline", Pat.binary("mul", Pat.var("x"), Pat.const(1)), lambda x: None)
    out, fired = rewrite(e, [RuleSet("t", [never, decline])])
    assert out is e and not fired
    guarded = Rule("g", Pat.binary("mul", Pat.var("x"), Pat.const(name="c")), lambda x, c: x,
                   guard=lambda x, c: c.value == 1)
    assert rewrite(e, [RuleSet("t", [guarded])])[0] is X[0]
    assert rewrite(X[0] * 2, [RuleSet("t", [guarded])])[0] is X[0] * 2


def test_commutative_matching():
    plus_zero = Pat.binary("add", Pat.var("x"), Pat.const(0), commutative=True)
    assert [h["x"] for h in _fires(plus_zero, 0 + K[0])] == [K[0]]
    assert [h["x"] for h in _fires(plus_zero, K[0] + 0)] == [K[0]]
    assert not _fires(Pat.binary("add", Pat.var("x"), Pat.const(0)), 0 + K[0])
    assert [h["x"] for h in _fires(Pat.binary("eq", Pat.var("x"), Pat.const(1), commutative=True),
                                    E.binary("eq", 1, K[0]))] == [K[0]]
    with pytest.raises(ValueError, match="commutative"):
        Pat.binary("sub", Pat.var("x"), Pat.const(0), commutative=True)


def test_alternatives_and_named_nodes():
    p = (Pat.unary("neg") | Pat.binary("sub")).named("n")
    hits = _fires(p, -X[0] + (X[1] - X[2]))
    assert [h["n"] for h in hits] == [-X[0], X[1] - X[2]]


def test_rule_counts_and_rule_set_order():
    e = X[0] * 1 + X[1] * 1 + X[2] / 1
    out, fired = rewrite(e, S.SIMPLIFY)
    assert out is X[0] + X[1] + X[2]
    assert fired == {"mul_one": 2, "div_one": 1} and isinstance(fired, Rewrites)
    first = RuleSet("a", [Rule("to_two", Pat.binary("mul", Pat.var("x"), Pat.const(1)), lambda x: x + x)])
    second = RuleSet("b", [Rule("to_x", Pat.binary("mul", Pat.var("x"), Pat.const(1)), lambda x: x)])
    assert rewrite(X[0] * 1, [first, second])[0] is X[0] + X[0]  # the first rule set's rule wins
    with pytest.raises(ValueError, match="unique"):
        RuleSet("dup", [Rule("r", Pat.any(), lambda: None), Rule("r", Pat.any(), lambda: None)])


# --- matching across tensor boundaries ----------------------------------------------------------

LOG_SOFTMAX = RuleSet("stabilize", [
    # log(exp(z) / s) -> z - log(s), when the softmax is a compute op of its own
    Rule("log_softmax",
         Pat.call("log", Pat.producer(Pat.binary("div", Pat.call("exp", Pat.var("z")), Pat.var("s")))),
         lambda z, s: z - kd.log(s)),
])


def test_producer_pattern_matches_through_a_compute_op():
    m = kd.size("m")
    x = kd.placeholder((n, m), "float64", name="x")
    r = kd.reduce_axis(m, "r")
    sm = kd.compute((n, m), lambda i, j: kd.exp(x[i, j]) / kd.sum(kd.exp(x[i, r]), axis=r), name="softmax")
    y = kd.compute((n, m), lambda i, j: kd.log(sm[i, j]) * 2, name="y")
    (y2,), fired = rewrite_graph([y], [LOG_SOFTMAX])
    assert fired == {"log_softmax": 1}
    assert sm not in y2.inputs() and x in y2.inputs()  # y reads x directly now
    assert str(y2).splitlines()[-1].startswith("y[i, j] = (x[i, j] - log(sum(r, exp(x[i, r])))) * 2.0")
    v = np.random.default_rng(0).standard_normal((3, 5)) * 30
    (got,) = kd.evaluate([y2], {x: v})
    z = v - v.max(1, keepdims=True)
    want = 2 * (z - np.log(np.exp(z).sum(1, keepdims=True)))
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    # the producer's reduction axis was renamed: the consumer never shares an axis with it
    red = [e for e in E.walk(y2.body) if isinstance(e, E.Reduce)]
    assert red and red[0].axes[0] is not r


def test_rewrite_graph_rebuilds_consumers_producers_first():
    a = kd.compute((n,), lambda i: X[i] * 1, name="a")
    b = kd.compute((n,), lambda i: a[i] + 1, name="b")
    (b2,), fired = rewrite_graph([b], S.SIMPLIFY)
    (a2,) = b2.inputs()
    assert fired == {"mul_one": 1}
    assert a2 is not a and a2.name == "a" and a2.body is X[a2.axes[0]]
    assert b2.name == "b" and [t.name for t in topo_order([b2])] == ["x", "a", "b"]
    assert rewrite_graph([b2], S.SIMPLIFY) == ((b2,), Rewrites())  # nothing to do: the same ops


def test_map_graph_relinks_replaced_tensors():
    a = kd.compute((n,), lambda i: X[i] + 1, name="a")
    b = kd.compute((n,), lambda i: a[i] * 2, name="b")
    a_new = kd.compute((n,), lambda i: X[i] + 2, name="a")
    (b2,), mapping = map_graph([b], replaced={a: a_new})
    assert b2.inputs() == (a_new,) and mapping[a] is a_new and mapping[b] is b2
    (b3,), _ = map_graph([b])
    assert b3 is b


# --- termination: the node-growth budget and the pass limit ----------------------------------------

def test_node_growth_budget_stops_a_growing_rule_set(caplog):
    grow = RuleSet("grow", [Rule("times_one", Pat.load(dtype="float32", name="x"),
                                 lambda x: E.Binary("mul", x, E.Const(1.0, "float32"), "float32"))])
    before = kd.compute((n,), lambda i: X[i] + X[(i + 1) % n], name="t")
    with caplog.at_level(logging.WARNING, logger="kerneldsl.rewrite"):
        body, fired = rewrite(before.body, [grow], budget=30)
    assert fired.stopped is not None and "budget" in fired.stopped
    assert len(E.walk(body)) <= 30 and fired["times_one"] > 2
    assert any("budget" in r.getMessage() for r in caplog.records)
    _same_values(before, body)  # a stop returns a correct, less rewritten, expression


def test_pass_limit_stops_rules_that_never_settle():
    swap = RuleSet("swap", [Rule("swap", Pat.binary("add", Pat.var("a"), Pat.var("b")),
                                 lambda a, b: E.Binary("add", b, a, a.dtype))])
    body, fired = rewrite(X[0] + X[1], [swap], max_passes=5)
    assert fired == {"swap": 5} and "pass limit" in fired.stopped
    assert body is X[1] + X[0]


def test_a_rule_must_keep_the_dtype():
    bad = RuleSet("bad", [Rule("to_int", Pat.load(dtype="float32", name="x"), lambda x: E.const(1))])
    with pytest.raises(TypeError, match="to_int"):
        rewrite(X[0] + 1, [bad])
