"""Property: the gradient of a randomly generated expression graph matches finite differences."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import kerneldsl as kd

F = "float64"
UNARY = [kd.tanh, kd.sigmoid, kd.sin, kd.erf, lambda e: -e, lambda e: kd.log(1.0 + e * e),
         lambda e: kd.sqrt(e * e + 1.0), lambda e: kd.exp(kd.tanh(e)), lambda e: kd.abs(e) * 0.5]
BINARY = [lambda a, b: a + b, lambda a, b: a - b, lambda a, b: a * b, lambda a, b: a / (1.0 + b * b),
          kd.maximum, kd.minimum, lambda a, b: kd.where(a > b, a * 2.0, b)]


def expr(draw, X, V, W, i, j, depth):
    """A random scalar expression at point (i, j) of a (3, 4) output; loads with varied index maps."""
    if depth == 0 or draw(st.integers(0, 3)) == 0:
        leaves = [lambda: X[i, j], lambda: X[i, 3 - j], lambda: X[2 - i, j], lambda: V[i], lambda: W[j],
                  lambda: X[i, (j + 1) % 4], lambda: W[(i + j) % 4], lambda: kd.const(0.7, F)]
        return leaves[draw(st.integers(0, len(leaves) - 1))]()
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return UNARY[draw(st.integers(0, len(UNARY) - 1))](expr(draw, X, V, W, i, j, depth - 1))
    if kind == 1:
        r = kd.reduce_axis(4, "r")
        body = BINARY[draw(st.integers(0, 2))](X[i, r], expr(draw, X, V, W, i, j, depth - 1))
        red = [kd.sum, kd.max, kd.min][draw(st.integers(0, 2))]
        return red(body, axis=r)
    return BINARY[draw(st.integers(0, len(BINARY) - 1))](expr(draw, X, V, W, i, j, depth - 1),
                                                       expr(draw, X, V, W, i, j, depth - 1))


@st.composite
def graphs(draw):
    X = kd.placeholder((3, 4), F, name="X")
    V = kd.placeholder((3,), F, name="V")
    W = kd.placeholder((4,), F, name="W")
    Y = kd.compute((3, 4), lambda i, j: expr(draw, X, V, W, i, j, 3), name="Y")
    outs = [Y]
    if draw(st.booleans()):  # a second stage reading Y through a transpose and a reduction
        s = kd.reduce_axis(3, "s")
        outs = [kd.compute((4,), lambda j: kd.sum(kd.tanh(Y[s, j]) * V[s], axis=s), name="Z")]
    return outs, (X, V, W), draw(st.integers(0, 1000))


@settings(max_examples=50, deadline=None)
@given(graphs())
def test_random_graph_gradient_matches_finite_differences(case):
    outs, (X, V, W), seed = case
    rng = np.random.default_rng(seed)
    feed = {X: rng.standard_normal((3, 4)), V: rng.standard_normal(3), W: rng.standard_normal(4)}
    kd.check_grad(outs, feed, atol=1e-5, rtol=1e-4)
