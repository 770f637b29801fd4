"""kerneldsl.nn.updates, objectives, init and nonlinearities: each update rule against its
formula for a few steps (one compiled function runs all of them on fed gradients), the
objectives against numpy, Lasagne's initialisers' statistics."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

import kerneldsl as kd
import kerneldsl.numpy as knp
from kerneldsl.nn import init, nonlinearities, objectives, updates


@pytest.fixture
def f64():
    kd.config.floatX = "float64"
    yield
    kd.config.reset()


def _np_rules():
    """Each rule as numpy: (state, p, g) -> new p, from its formula."""
    def sgd(s, p, g):
        return p - 0.1 * g

    def momentum(s, p, g):
        s["v"] = 0.9 * s.get("v", 0) - 0.1 * g
        return p + s["v"]

    def nesterov(s, p, g):
        s["v"] = 0.9 * s.get("v", 0) - 0.1 * g
        return p + 0.9 * s["v"] - 0.1 * g

    def adagrad(s, p, g):
        s["a"] = s.get("a", 0) + g * g
        return p - 0.1 * g / np.sqrt(s["a"] + 1e-6)

    def rmsprop(s, p, g):
        s["a"] = 0.9 * s.get("a", 0) + 0.1 * g * g
        return p - 0.1 * g / np.sqrt(s["a"] + 1e-6)

    def adam(s, p, g):
        t = s["t"] = s.get("t", 0) + 1
        s["m"] = 0.9 * s.get("m", 0) + 0.1 * g
        s["v"] = 0.999 * s.get("v", 0) + 0.001 * g * g
        a = 0.01 * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
        return p - a * s["m"] / (np.sqrt(s["v"]) + 1e-8)

    def adadelta(s, p, g):
        s["a"] = 0.95 * s.get("a", 0) + 0.05 * g * g
        step = g * np.sqrt(s.get("d", 0) + 1e-6) / np.sqrt(s["a"] + 1e-6)
        s["d"] = 0.95 * s.get("d", 0) + 0.05 * step * step
        return p - 1.0 * step

    def adamax(s, p, g):
        t = s["t"] = s.get("t", 0) + 1
        s["m"] = 0.9 * s.get("m", 0) + 0.1 * g
        s["u"] = np.maximum(0.999 * s.get("u", 0), np.abs(g))
        return p - 0.002 / (1 - 0.9 ** t) * s["m"] / (s["u"] + 1e-8)
    return {"sgd": (sgd, lambda g, p: updates.sgd(g, p, 0.1)),
            "momentum": (momentum, lambda g, p: updates.momentum(g, p, 0.1, 0.9)),
            "nesterov_momentum": (nesterov, lambda g, p: updates.nesterov_momentum(g, p, 0.1, 0.9)),
            "adagrad": (adagrad, lambda g, p: updates.adagrad(g, p, 0.1)),
            "rmsprop": (rmsprop, lambda g, p: updates.rmsprop(g, p, 0.1)),
            "adam": (adam, lambda g, p: updates.adam(g, p, 0.01)),
            "adadelta": (adadelta, lambda g, p: updates.adadelta(g, p)),
            "adamax": (adamax, lambda g, p: updates.adamax(g, p))}


def test_update_rules_follow_their_formulas(f64):
    rng = np.random.default_rng(0)
    rules = _np_rules()
    g = kd.vector("g")
    params, start, all_updates = {}, {}, OrderedDict()
    for name, (_, rule) in rules.items():
        start[name] = rng.standard_normal(5)
        params[name] = kd.shared(start[name], name=f"p_{name}")
        all_updates.update(rule([g * 1.0], [params[name]]))
    step = kd.function([g], [], updates=all_updates, mode="FAST_COMPILE")
    state = {name: {} for name in rules}
    want = dict(start)
    for _ in range(4):
        grad = rng.standard_normal(5)
        step(grad)
        for name, (np_rule, _) in rules.items():
            want[name] = np_rule(state[name], want[name], grad)
    for name in rules:
        np.testing.assert_allclose(params[name].get_value(), want[name], rtol=1e-10, err_msg=name)


def test_update_rules_take_a_loss_and_shared_hyperparameters(f64):
    w = kd.shared(np.array([3.0, -2.0]), name="w")
    lr = kd.shared(np.array(0.25), name="lr")
    loss = knp.sum(w * w)  # gradient 2w
    step = kd.function([], [loss], updates=updates.sgd(loss, [w], learning_rate=lr), mode="FAST_COMPILE")
    step()
    np.testing.assert_allclose(w.get_value(), [1.5, -1.0])
    lr.set_value(np.array(0.5))
    step()
    np.testing.assert_allclose(w.get_value(), [0.0, 0.0])


def test_update_rules_check_their_arguments():
    w = kd.shared(np.zeros(3, "float32"), name="w")
    with pytest.raises(TypeError, match="not a shared variable"):
        updates.sgd([kd.vector("g")], [kd.vector("p")])
    with pytest.raises(ValueError, match="2 gradients for 1 parameters"):
        updates.adam([kd.vector("g"), kd.vector("h")], [w])
    with pytest.raises(ValueError, match="scalar"):
        updates.sgd(w * 2, [w])


def test_update_keeps_the_parameter_dtype():
    w = kd.shared(np.zeros(3, "float32"), name="w32")
    ups = updates.nesterov_momentum([kd.vector("g", "float32")], [w], learning_rate=0.1)
    assert all(v.dtype == "float32" for v in ups.values())


def test_objectives_match_numpy(f64):
    rng = np.random.default_rng(1)
    p, t, y = kd.matrix("p"), kd.matrix("t"), kd.ivector("y")
    w = kd.vector("w")
    outs = [objectives.categorical_crossentropy(p, y), objectives.categorical_crossentropy(p, t),
            objectives.binary_crossentropy(p, t), objectives.squared_error(p, t),
            objectives.aggregate(objectives.squared_error(p, t)),
            objectives.aggregate(objectives.categorical_crossentropy(p, y), w, mode="sum"),
            objectives.aggregate(objectives.categorical_crossentropy(p, y), w, mode="normalized_sum"),
            objectives.categorical_accuracy(p, y), objectives.categorical_accuracy(p, y, top_k=2),
            objectives.categorical_accuracy(p, t)]
    f = kd.function([p, t, y, w], outs, mode="FAST_COMPILE")
    P = rng.uniform(0.05, 0.95, (6, 4))
    P /= P.sum(1, keepdims=True)
    Y = rng.integers(0, 4, 6).astype("int32")
    T = np.eye(4)[rng.integers(0, 4, 6)]
    W = rng.uniform(0, 1, 6)
    got = f(P, T, Y, W)
    ce = -np.log(P[np.arange(6), Y])
    top2 = np.argsort(-P, 1)[:, :2]
    want = [ce, -(T * np.log(P)).sum(1), -(T * np.log(P) + (1 - T) * np.log(1 - P)), (P - T) ** 2,
            ((P - T) ** 2).mean(), (ce * W).sum(), (ce * W).sum() / W.sum(), (P.argmax(1) == Y).astype(float),
            (top2 == Y[:, None]).any(1).astype(float), (P.argmax(1) == T.argmax(1)).astype(float)]
    for k, (g, w_) in enumerate(zip(got, want)):
        np.testing.assert_allclose(g, w_, rtol=1e-10, err_msg=str(k))
    with pytest.raises(ValueError, match="normalized_sum"):
        objectives.aggregate(objectives.squared_error(p, t), mode="normalized_sum")
    with pytest.raises(ValueError, match="mode"):
        objectives.aggregate(objectives.squared_error(p, t), mode="median")


def test_nonlinearities_match_numpy(f64):
    x = kd.vector("x")
    fns = [nonlinearities.rectify, nonlinearities.tanh, nonlinearities.sigmoid, nonlinearities.leaky_rectify,
           nonlinearities.LeakyRectify(0.2), nonlinearities.ScaledTanH(2.0, 3.0), nonlinearities.softplus,
           nonlinearities.elu]
    f = kd.function([x], [fn(x) for fn in fns] + [nonlinearities.softmax(knp.expand_dims(x, 0))],
                    mode="FAST_COMPILE")
    X = np.linspace(-3, 3, 7)
    got = f(X)
    want = [np.maximum(X, 0), np.tanh(X), 1 / (1 + np.exp(-X)), np.where(X > 0, X, 0.01 * X),
            np.where(X > 0, X, 0.2 * X), 3 * np.tanh(2 * X), np.log1p(np.exp(X)), np.where(X > 0, X, np.expm1(X)),
            (np.exp(X) / np.exp(X).sum())[None]]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-15)
    assert nonlinearities.linear(x) is x


# --- initialisers (numpy only) -------------------------------------------------------------------------------

def test_initialisers_have_lasagnes_statistics():
    init.set_rng(np.random.RandomState(0))
    w = init.GlorotUniform()((400, 600))
    bound = np.sqrt(6 / 1000)
    assert w.dtype == np.float32 and w.shape == (400, 600)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.99 * bound
    conv = init.GlorotUniform()((32, 16, 3, 3))
    assert np.abs(conv).max() <= np.sqrt(6 / ((32 + 16) * 9))
    assert init.GlorotNormal(gain="relu")((300, 500)).std() == pytest.approx(np.sqrt(2) * np.sqrt(2 / 800), rel=0.02)
    assert init.HeNormal()((64, 16, 3, 3)).std() == pytest.approx(np.sqrt(1 / (16 * 9)), rel=0.02)
    assert init.HeUniform()((1000, 300)).std() == pytest.approx(np.sqrt(1 / 1000), rel=0.02)
    assert init.Normal(0.5, mean=1.0)((200, 200)).mean() == pytest.approx(1.0, abs=0.01)
    assert np.all(init.Constant(0.25)((3, 2)) == 0.25)
    assert init.Uniform((2, 3))(1000).min() >= 2
    q = init.Orthogonal()((20, 20)).astype(np.float64)
    np.testing.assert_allclose(q @ q.T, np.eye(20), atol=1e-5)


def test_initialisers_follow_floatx_and_the_rng():
    kd.config.floatX = "float64"
    try:
        assert init.Normal()((2, 2)).dtype == np.float64
    finally:
        kd.config.reset()
    init.set_rng(7)
    a = init.GlorotUniform()((3, 4))
    init.set_rng(7)
    np.testing.assert_array_equal(a, init.GlorotUniform()((3, 4)))


def test_initialisers_reject_bad_shapes():
    with pytest.raises(ValueError, match="2 or more"):
        init.GlorotUniform()((5,))
    with pytest.raises(ValueError, match="non-negative ints"):
        init.Constant()((2, -1))
    with pytest.raises(ValueError, match=r"shape \(2, 2\), the layer needs \(3,\)"):
        init.make_param(np.zeros((2, 2)), (3,), "b")
