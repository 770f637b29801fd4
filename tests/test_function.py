"""kd.function, kd.shared, kd.config and the modes: Theano's front end on the pipeline."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import kerneldsl as kd
import kerneldsl.numpy as knp
from kerneldsl.frontend import ConfigError

rng = np.random.default_rng(11)


def _logreg(w0, feats=6):
    x = kd.matrix("x")
    y = kd.vector("y")
    w = kd.shared(w0.copy(), name="w")
    b = kd.shared(np.float32(0.0), name="b")
    p = 1 / (1 + knp.exp(-knp.dot(x, w) - b))
    cost = knp.mean(-y * knp.log(p) - (1 - y) * knp.log(1 - p)) + 0.01 * (w ** 2).sum()
    gw, gb = kd.grad(cost, [w, b])
    return x, y, w, b, p, cost, gw, gb


def _numpy_logreg_step(X, Y, w, b):
    z = X @ w + b
    p = 1 / (1 + np.exp(-z))
    cost = np.mean(np.logaddexp(0, -z) * Y + np.logaddexp(0, z) * (1 - Y)) + 0.01 * (w ** 2).sum()
    g = (p - Y) / len(Y)
    return p > 0.5, cost, w - 0.1 * (X.T @ g + 0.02 * w), b - 0.1 * g.sum()


def test_logistic_regression_matches_numpy_and_updates_in_place():
    X = rng.standard_normal((9, 6)).astype("float32")
    Y = rng.integers(0, 2, 9).astype("float32")
    w0 = rng.standard_normal(6).astype("float32")
    x, y, w, b, p, cost, gw, gb = _logreg(w0)
    train = kd.function([x, y], [p > 0.5, cost], updates=[(w, w - 0.1 * gw), (b, b - 0.1 * gb)])
    wn, bn = w0.astype("float64"), 0.0
    for _ in range(3):
        pred, c = train(X, Y)
        want_pred, want_c, wn, bn = _numpy_logreg_step(X.astype("float64"), Y, wn, bn)
        np.testing.assert_array_equal(pred, want_pred)
        np.testing.assert_allclose(c, want_c, rtol=1e-5)
        np.testing.assert_allclose(w.get_value(), wn, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(b.get_value(), bn, rtol=1e-5, atol=1e-6)
    assert c.shape == () and c.dtype == np.float32 and pred.dtype == np.bool_


def test_saturated_logistic_regression_stays_finite():
    """The paper's randn start saturates p to 0 or 1 for some samples: the stabilized cost
    (softplus form) stays finite, and so do the weights."""
    X = rng.standard_normal((40, 784)).astype("float32") * 3
    Y = rng.integers(0, 2, 40).astype("float32")
    x, y, w, b, p, cost, gw, gb = _logreg(rng.standard_normal(784).astype("float32"))
    train = kd.function([x, y], cost, updates=[(w, w - 0.1 * gw), (b, b - 0.1 * gb)])
    assert train.rewrites["logsigm_to_softplus"] + train.rewrites["log1msigm_to_softplus"] >= 1
    c = train(X, Y)
    assert np.isfinite(c) and c > 1  # saturated samples cost |z|, not inf
    assert np.isfinite(w.get_value()).all()
    # the graph as written (no stabilization) is not finite there
    unstable = kd.grad(cost, [w], stabilize=False)[0]
    g = kd.function([x, y], unstable, mode="FAST_COMPILE")(X, Y)
    assert not np.isfinite(g).all()


def test_updates_see_old_values_and_spare_buffers_rotate():
    a = kd.shared(np.arange(4, dtype="float32"), name="a")
    c = kd.shared(np.ones(4, dtype="float32"), name="c")
    f = kd.function([], [a + c], updates=[(a, a + c), (c, a * 2)])  # both read the old a
    for k in range(4):
        old_a, old_c = a.get_value(), c.get_value()
        (out,) = f()
        np.testing.assert_array_equal(out, old_a + old_c)
        np.testing.assert_array_equal(a.get_value(), old_a + old_c)
        np.testing.assert_array_equal(c.get_value(), old_a * 2)
    kept = a.get_value()
    before = kept.copy()
    f()
    np.testing.assert_array_equal(kept, before)  # a value handed out is never written later


def test_shared_set_value_is_checked_and_used():
    s = kd.shared(np.zeros(3, "float32"), name="s")
    f = kd.function([], s * 2)
    s.set_value(np.array([1, 2, 3], "float32"))
    np.testing.assert_array_equal(f(), [2, 4, 6])
    with pytest.raises((TypeError, ValueError, kd.DTypeError, kd.ShapeError), match="s"):
        s.set_value(np.zeros((2, 2), "float32"))


def test_outputs_as_given_single_list_and_keyword_arguments():
    x = kd.vector("x")
    y = kd.vector("y")
    one = kd.function([x, y], x + y)
    two = kd.function([x, y], [x + y, x * y])
    a, b = np.ones(3, "float32"), np.full(3, 2, "float32")
    assert isinstance(one(a, b), np.ndarray)
    out = two(a, b)
    assert isinstance(out, list) and len(out) == 2
    np.testing.assert_array_equal(one(y=b, x=a), a + b)
    with pytest.raises(TypeError, match="no input named"):
        one(a, z=b)
    with pytest.raises(TypeError, match="missing input"):
        one(a)


def test_scalars_are_0d_and_sizes_are_weak_ints():
    x = kd.matrix("x")
    m = knp.sum(x, axis=1) / x.shape[1]  # a size divides a float32 sum: float32, as numpy
    f = kd.function([x], [m, x.sum()])
    v = rng.standard_normal((3, 5)).astype("float32")
    got, total = f(v)
    assert got.dtype == np.float32 and total.shape == ()
    np.testing.assert_allclose(got, v.mean(1), rtol=1e-6)
    s = kd.scalar("s")
    g = kd.function([s, x], x * s)
    np.testing.assert_allclose(g(np.float32(2), v), v * 2, rtol=1e-6)
    np.testing.assert_allclose(g(2.0, v), v * 2, rtol=1e-6)  # a Python float for a float32 scalar


def test_givens_substitute_an_expression():
    x = kd.vector("x")
    z = kd.vector("z")
    f = kd.function([z], x * 2, givens={x: z + 1})
    np.testing.assert_array_equal(f(np.array([1, 2], "float32")), [4, 6])


def test_build_errors_name_what_is_wrong():
    x = kd.vector("x")
    y = kd.vector("y")
    s = kd.shared(np.zeros(3, "float32"), name="s")
    with pytest.raises(ValueError, match=r"need.*y"):
        kd.function([x], x + y)
    with pytest.raises(ValueError, match="not used"):
        kd.function([x, y], x * 2)
    kd.function([x, y], x * 2, on_unused_input="ignore")
    with pytest.raises(TypeError, match="not a shared variable"):
        kd.function([x], x, updates=[(x, x + 1)])
    with pytest.raises(ValueError, match="updated twice"):
        kd.function([x], x, updates=[(s, s + 1), (s, s - 1)])
    with pytest.raises((kd.ShapeError, ValueError), match="s"):
        kd.function([x], x, updates=[(s, kd.matrix("m"))], on_unused_input="ignore")
    with pytest.raises((kd.DTypeError, TypeError), match="s"):
        kd.function([x], x, updates=[(s, knp.astype(s, "float64"))])
    with pytest.raises(ValueError, match="unknown mode"):
        kd.function([x], x * 2, mode="FAST")


def test_call_errors_are_clear_and_do_not_crash():
    x = kd.matrix("x")
    y = kd.matrix("y")
    f = kd.function([x, y], x + y)
    a = np.ones((2, 3), "float32")
    f(a, a)  # the C call path is primed
    with pytest.raises(kd.ShapeError):
        f(a, np.ones((3, 3), "float32"))
    with pytest.raises((kd.DTypeError, TypeError)):
        f(a, a.astype("float64"))
    with pytest.raises((kd.ShapeError, ValueError)):
        f(a, np.ones(3, "float32"))
    np.testing.assert_array_equal(f(a, a), a * 2)  # and still works


def test_gather_out_of_range_raises_on_every_call():
    p = kd.matrix("p")
    t = kd.ivector("t")
    nll = -knp.mean(knp.log(p)[knp.arange(t.shape[0]), t])
    f = kd.function([p, t], nll)
    probs = np.full((3, 4), 0.25, "float32")
    np.testing.assert_allclose(f(probs, np.array([0, 1, 3], "int32")), np.log(4), rtol=1e-6)
    for _ in range(2):  # the Python path, then the C call path
        with pytest.raises(IndexError):
            f(probs, np.array([0, 4, 1], "int32"))


def test_debug_mode_checks_every_kernel():
    x = kd.matrix("x")
    y = knp.log(kd.nn.softmax(x))
    f = kd.function([x], y, mode="DEBUG")
    v = rng.standard_normal((3, 4)).astype("float32")
    np.testing.assert_allclose(f(v), v - np.log(np.exp(v).sum(1, keepdims=True)), rtol=1e-5, atol=1e-6)
    guard = kd.function([x], knp.log(x), mode="DEBUG", nan_guard=True)
    with pytest.raises(FloatingPointError, match="nan"):
        guard(-np.ones((2, 2), "float32"))


def test_debug_mode_reports_a_wrong_kernel(monkeypatch):
    """A kernel that disagrees with the reference is reported by name, with the difference (the
    reference is skewed here: the check cannot tell which side is wrong, only that they differ)."""
    import kerneldsl.reference as reference
    x = kd.vector("x")
    f = kd.function([x], knp.exp(x) * 2, mode="DEBUG")
    v = np.array([0.5, 1.0], "float32")
    f(v)
    real = reference.evaluate
    monkeypatch.setattr(reference, "evaluate", lambda outs, feed, **kw: [o + 1 for o in real(outs, feed, **kw)])
    with pytest.raises(kd.DebugModeError, match=r"kernel .*differ.*largest difference"):
        f(v)


def test_profile_mode_tables_every_kernel():
    x = kd.matrix("x")
    f = kd.function([x], [knp.exp(x).sum(axis=1), knp.tanh(x) @ x.T], mode="PROFILE")
    v = rng.standard_normal((8, 8)).astype("float32")
    for _ in range(3):
        f(v)
    table = f.profile
    assert "calls" in table and "share" in table
    for k in f.kernels:
        assert k.name in table


def test_fast_compile_builds_the_same_values():
    x = kd.matrix("x")
    y = knp.tanh(x) @ x.T + 1
    v = rng.standard_normal((5, 5)).astype("float32")
    np.testing.assert_allclose(kd.function([x], y, mode="FAST_COMPILE")(v), kd.function([x], y)(v), rtol=1e-5)


def test_debugprint_shows_the_rewritten_graph():
    x = kd.vector("x")
    f = kd.function([x], knp.log(1 + knp.exp(x)))
    text = kd.debugprint(f)
    assert "softplus" in text and "kernel" in text.lower()


def test_config_flags_and_errors(monkeypatch, tmp_path):
    assert kd.config.floatX in ("float32", "float64")
    with pytest.raises(ConfigError, match="floatX"):
        kd.config.floatX = "float16"
    with pytest.raises(ConfigError, match="unknown flag 'colour'"):
        kd.config.colour = "red"
    old = kd.config.floatX
    kd.config.floatX = "float64"
    try:
        assert kd.matrix("m").dtype == "float64"
    finally:
        kd.config.floatX = old
    code = "import kerneldsl as kd; print(kd.config.floatX, kd.config.mode, kd.config.device)"
    env = dict(os.environ, KERNELDSL_FLAGS="floatX=float64,mode=FAST_COMPILE")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["float64", "FAST_COMPILE", "cpu"]
    rc = tmp_path / "rc"
    rc.write_text("floatX = float64\n")
    env = dict(os.environ, KERNELDSL_RC=str(rc), KERNELDSL_FLAGS="")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split()[0] == "float64"
    env = dict(os.environ, KERNELDSL_FLAGS="floatx=float64")
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "floatx" in bad.stderr


def test_cuda_emulator_device_gives_the_same_training():
    if shutil.which("g++") is None:
        pytest.skip("the CUDA emulator needs g++")
    X = rng.standard_normal((7, 6)).astype("float32")
    Y = rng.integers(0, 2, 7).astype("float32")
    w0 = rng.standard_normal(6).astype("float32")
    results = []
    for device in ("cpu", "cuda-emu"):
        x, y, w, b, p, cost, gw, gb = _logreg(w0)
        train = kd.function([x, y], cost, updates=[(w, w - 0.1 * gw), (b, b - 0.1 * gb)], device=device)
        results.append([train(X, Y) for _ in range(2)] + [w.get_value()])
    for a, c in zip(*results):
        np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-6)


def test_fast_call_path_matches_the_checked_path(monkeypatch):
    x = kd.matrix("x")
    s = kd.shared(np.zeros(4, "float32"), name="acc")
    f = kd.function([x], knp.sum(x, axis=0), updates=[(s, s + knp.sum(x, axis=0))])
    v = rng.standard_normal((3, 4)).astype("float32")
    for _ in range(3):
        np.testing.assert_allclose(f(v), v.sum(0), rtol=1e-6)
    np.testing.assert_allclose(s.get_value(), 3 * v.sum(0), rtol=1e-5)
    strided = np.asfortranarray(rng.standard_normal((3, 4)).astype("float32"))[:, ::-1]
    np.testing.assert_allclose(f(strided), strided.sum(0), rtol=1e-6)  # other strides: re-checked
