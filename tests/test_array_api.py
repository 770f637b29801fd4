"""The array level: symbolic arrays with numpy semantics (kerneldsl.numpy), against numpy."""

import numpy as np
import pytest

import kerneldsl as kd
import kerneldsl.numpy as knp

rng = np.random.default_rng(5)


def run(inputs, outputs, *values):
    f = kd.function(inputs, outputs)
    return f(*values)


def close(got, want, rtol=1e-5, atol=1e-6):
    got = np.asarray(got)
    want = np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def test_operators_and_promotion_follow_numpy():
    x = kd.matrix("x")
    v = kd.vector("v")
    i = kd.ivector("i")
    a = rng.standard_normal((3, 4)).astype("float32")
    b = rng.standard_normal(4).astype("float32")
    n = np.array([1, -2, 3, 4], "int32")
    outs = [x + v, x - 1, 2 * x, x / v, x // 0.5, x % 0.7, abs(x) ** 1.5, -x, x @ x.T, v * i, i // 2, i % 3,
            x / 3, (x > 0) & (v < 0), (x > 0) | ~(v < 0), (x > 0) ^ (v > 0), x <= v, x >= 0.1]
    got = run([x, v, i], outs, a, b, n)
    want = [a + b, a - 1, 2 * a, a / b, a // 0.5, a % np.float32(0.7), abs(a) ** 1.5, -a, a @ a.T, b * n, n // 2,
            n % 3, a / 3, (a > 0) & (b < 0), (a > 0) | ~(b < 0), (a > 0) ^ (b > 0), a <= b, a >= 0.1]
    for g, w in zip(got, want):
        assert g.dtype == w.dtype, (g.dtype, w.dtype)
        close(g, w, rtol=1e-5, atol=1e-5)


def test_equality_is_identity_elementwise_equality_is_knp_equal():
    v = kd.vector("v")
    assert (v == v) is True and hash(v) == hash(v)
    assert {v: 1}[v] == 1
    b = np.array([1, 2, 2], "float32")
    eq, ne = run([v], [knp.equal(v, 2), knp.not_equal(v, 2)], b)
    np.testing.assert_array_equal(eq, b == 2)
    np.testing.assert_array_equal(ne, b != 2)


def test_broadcasting_only_where_a_dimension_is_known_to_be_one():
    x = kd.matrix("x")
    y = kd.matrix("y")
    with pytest.raises(kd.ShapeError):  # sizes not known equal: checked when called
        run([x, y], x + y, np.ones((2, 3), "float32"), np.ones((1, 3), "float32"))
    row = kd.tensor("row", shape=(1, kd.size("m")))  # a dimension known to be 1 broadcasts
    close(run([x, row], x + row, np.ones((2, 3), "float32"), np.arange(3, dtype="float32")[None]),
          1 + np.arange(3, dtype="float32")[None].repeat(2, 0))
    with pytest.raises(kd.ShapeError):  # a slice of length 1 is not known to be 1: as Theano, no broadcast
        run([x], x + x[0:1, :], np.ones((2, 3), "float32"))


@pytest.mark.parametrize("axis", [None, 0, 1, (0, 1), -1])
@pytest.mark.parametrize("keepdims", [False, True])
def test_reduction_methods(axis, keepdims):
    x = kd.matrix("x")
    a = rng.standard_normal((3, 5)).astype("float32")
    names = ["sum", "mean", "max", "min", "prod", "var", "std"]
    got = run([x], [getattr(x, m)(axis=axis, keepdims=keepdims) for m in names], a)
    for m, g in zip(names, got):
        close(g, getattr(a, m)(axis=axis, keepdims=keepdims), rtol=1e-4, atol=1e-5)
    if not isinstance(axis, tuple) and not keepdims:
        am, an = run([x], [x.argmax(axis=axis), x.argmin(axis=axis)], a)
        np.testing.assert_array_equal(am, a.argmax(axis=axis))
        np.testing.assert_array_equal(an, a.argmin(axis=axis))


def test_shape_methods_and_slicing():
    x = kd.tensor3("x")
    a = rng.standard_normal((2, 3, 4)).astype("float32")
    outs = [x.T, x.transpose(1, 0, 2), x.reshape((3, -1)), x.flatten(), x.dimshuffle(2, "x", 0, 1),
            x[:, ::-1, 1:], x[1, -1], x[..., ::2], x[:, 1:3, -3:-1], x.astype("int32"), knp.squeeze(knp.expand_dims(x, 1)),
            knp.expand_dims(x, 1)]
    want = [a.T, a.transpose(1, 0, 2), a.reshape(3, -1), a.ravel(), a.transpose(2, 0, 1)[:, None],
            a[:, ::-1, 1:], a[1, -1], a[..., ::2], a[:, 1:3, -3:-1], a.astype("int32"), a,
            a[:, None]]
    for g, w in zip(run([x], outs, a), want):
        close(g, w)
    assert x.ndim == 3 and x.dtype == "float32" and len(x.shape) == 3


def test_integer_array_indexing_theano_nll_idiom():
    p = kd.matrix("p")
    y = kd.ivector("y")
    logp = knp.log(p)
    picked = logp[knp.arange(y.shape[0]), y]
    probs = rng.uniform(0.1, 1, (4, 3)).astype("float32")
    labels = np.array([2, 0, 1, 2], "int32")
    got, nll = run([p, y], [picked, -picked.mean()], probs, labels)
    close(got, np.log(probs)[np.arange(4), labels])
    close(nll, -np.log(probs)[np.arange(4), labels].mean())
    with pytest.raises(IndexError):
        run([p, y], picked, probs, np.array([0, 3, 1, 2], "int32"))


def test_knp_functions_against_numpy():
    x = kd.matrix("x")
    v = kd.vector("v")
    a = rng.uniform(0.1, 2, (3, 4)).astype("float32")
    b = rng.uniform(0.1, 2, 4).astype("float32")
    outs = [knp.exp(x), knp.log(x), knp.sqrt(x), knp.tanh(x), knp.where(x > 1, x, v), knp.clip(x, 0.5, 1.5),
            knp.maximum(x, v), knp.minimum(x, 1.0), knp.dot(x, v), knp.matmul(x, x.T), knp.tensordot(x, x, axes=([1], [1])),
            knp.einsum("ij,j->i", x, v), knp.einsum("ij,kj->ik", x, x), knp.outer(v, v),
            knp.concatenate([x, x * 2], axis=0), knp.stack([v, v + 1], axis=1), knp.tile(v, 2), knp.repeat(v, 2),
            knp.logsumexp(x, axis=1), knp.zeros_like(x), knp.ones_like(v), knp.arange(5)]
    want = [np.exp(a), np.log(a), np.sqrt(a), np.tanh(a), np.where(a > 1, a, b), np.clip(a, 0.5, 1.5),
            np.maximum(a, b), np.minimum(a, 1.0), a @ b, a @ a.T, np.tensordot(a, a, axes=([1], [1])),
            np.einsum("ij,j->i", a, b), np.einsum("ij,kj->ik", a, a), np.outer(b, b),
            np.concatenate([a, a * 2], 0), np.stack([b, b + 1], 1), np.tile(b, 2), np.repeat(b, 2),
            np.log(np.exp(a).sum(1)), np.zeros_like(a), np.ones_like(b), np.arange(5)]
    for k, (g, w) in enumerate(zip(run([x, v], outs, a, b), want)):
        assert g.shape == w.shape, k
        close(g, w, rtol=1e-5, atol=1e-5)


def test_nn_functional_forward_against_numpy():
    x = kd.matrix("x")
    a = rng.standard_normal((4, 6)).astype("float32")
    nn = kd.nn
    outs = [nn.relu(x), nn.leaky_relu(x, 0.1), nn.elu(x), nn.sigmoid(x), nn.tanh(x), nn.softplus(x),
            nn.softmax(x), nn.log_softmax(x)]
    sm = np.exp(a - a.max(1, keepdims=True))
    sm /= sm.sum(1, keepdims=True)
    want = [np.maximum(a, 0), np.where(a > 0, a, 0.1 * a), np.where(a > 0, a, np.expm1(a)), 1 / (1 + np.exp(-a)),
            np.tanh(a), np.logaddexp(0, a), sm, np.log(sm)]
    for g, w in zip(run([x], outs, a), want):
        close(g, w, rtol=1e-5, atol=1e-6)


def test_conv2d_stride_padding_dilation_and_pooling():
    x = kd.tensor4("x")
    w = kd.tensor("w", shape=(4, 3, 3, 3))  # constant filter sizes: padding="same" needs them
    a = rng.standard_normal((2, 3, 7, 7)).astype("float32")
    k = rng.standard_normal((4, 3, 3, 3)).astype("float32")
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    ta, tk = torch.from_numpy(a), torch.from_numpy(k)
    cases = [(dict(), dict()), (dict(stride=2), dict(stride=2)), (dict(padding="same"), dict(padding="same")),
             (dict(padding=1, dilation=2), dict(padding=1, dilation=2)), (dict(padding=(2, 1)), dict(padding=(2, 1)))]
    got = run([x, w], [kd.nn.conv2d(x, w, **c) for c, _ in cases] +
              [kd.nn.max_pool2d(x, 2), kd.nn.avg_pool2d(x, 2), kd.nn.max_pool2d(x, 3, stride=2)], a, k)
    want = [F.conv2d(ta, tk, **t).numpy() for _, t in cases] + \
        [F.max_pool2d(ta, 2).numpy(), F.avg_pool2d(ta, 2).numpy(), F.max_pool2d(ta, 3, stride=2).numpy()]
    for g, w_ in zip(got, want):
        close(g, w_, rtol=1e-4, atol=1e-4)


def test_dropout_is_reproducible_and_scaled():
    x = kd.matrix("x")
    a = np.ones((64, 64), "float32")
    d1, d2, d3 = run([x], [kd.nn.dropout(x, 0.25, seed=3), kd.nn.dropout(x, 0.25, seed=3),
                           kd.nn.dropout(x, 0.25, seed=4)], a)
    np.testing.assert_array_equal(d1, d2)
    assert not np.array_equal(d1, d3)
    kept = d1 != 0
    assert abs(kept.mean() - 0.75) < 0.03
    close(d1[kept], np.full(kept.sum(), 1 / 0.75, "float32"))


def test_dropout_masks_agree_on_cpu_and_cuda_emulator():
    import shutil
    if shutil.which("g++") is None:
        pytest.skip("the CUDA emulator needs g++")
    x = kd.matrix("x")
    a = np.ones((8, 16), "float32")
    cpu, emu = (kd.function([x], kd.nn.dropout(x, 0.5, seed=7), device=d)(a) for d in ("cpu", "cuda-emu"))
    np.testing.assert_array_equal(cpu, emu)


def test_norms_against_numpy():
    x = kd.matrix("x")
    g = kd.vector("g")
    b = kd.vector("b")
    a = rng.standard_normal((5, 8)).astype("float32")
    gg, bb = rng.standard_normal(8).astype("float32"), rng.standard_normal(8).astype("float32")
    ln = kd.nn.layer_norm(x, g, b)
    got = run([x, g, b], ln, a, gg, bb)
    mu, var = a.mean(1, keepdims=True), a.var(1, keepdims=True)
    close(got, (a - mu) / np.sqrt(var + 1e-5) * gg + bb, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "softplus", "gelu", "elu", "layer_norm"])
def test_nn_gradients_against_finite_differences(name):
    x = kd.matrix("x", dtype="float64")
    c = kd.matrix("c", dtype="float64")
    if name == "layer_norm":
        y = kd.nn.layer_norm(x, knp.ones_like(x[0]), knp.zeros_like(x[0]))
    else:
        y = getattr(kd.nn, name)(x)
    loss = (y * c).sum()
    (gx,) = kd.grad(loss, [x])
    f = kd.function([x, c], [loss, gx])
    a = rng.standard_normal((3, 5))
    cc = rng.standard_normal((3, 5))
    _, g = f(a, cc)
    eps = 1e-6
    num = np.zeros_like(a)
    for idx in np.ndindex(a.shape):
        p, m = a.copy(), a.copy()
        p[idx] += eps
        m[idx] -= eps
        num[idx] = (f(p, cc)[0] - f(m, cc)[0]) / (2 * eps)
    close(g, num, rtol=1e-5, atol=1e-7)


def test_crossentropy_of_softmax_is_one_stable_kernel_family():
    x = kd.matrix("x")
    t = kd.ivector("t")
    loss = kd.nn.categorical_crossentropy(kd.nn.softmax(x), t).mean()
    (gx,) = kd.grad(loss, [x])
    f = kd.function([x, t], [loss, gx])
    a = np.array([[1000.0, 0.0, -1000.0], [0.5, 0.1, 0.2]], "float32")
    lab = np.array([2, 0], "int32")
    l, g = f(a, lab)
    assert np.isfinite(l) and np.isfinite(g).all()
    close(l, np.mean([2000.0, -(0.5 - np.log(np.exp([0.5, 0.1, 0.2]).sum()))]), rtol=1e-5)
    assert "log(" not in str(kd.debugprint(f)).split("kernel")[0] or f.rewrites["crossentropy_to_crossentropy_with_softmax"] >= 1


def test_argmax_of_a_monotone_function_is_pushed_down():
    x = kd.matrix("x")
    f = kd.function([x], [knp.argmax(kd.nn.softmax(x), axis=1), knp.argmax(knp.exp(x), axis=1)])
    assert f.rewrites["local_argmax_pushdown"] >= 2
    a = rng.standard_normal((4, 5)).astype("float32")
    for g in f(a):
        np.testing.assert_array_equal(g, a.argmax(1))


def test_bad_array_calls_give_clear_errors():
    x = kd.matrix("x")
    with pytest.raises((kd.ShapeError, ValueError), match="-1"):
        x.reshape((-1, -1))
    with pytest.raises((ValueError, IndexError, kd.ShapeError)):
        x.sum(axis=2)
    with pytest.raises((IndexError, ValueError)):
        x[0, 0, 0]
    with pytest.raises(TypeError):
        knp.exp("a")
    with pytest.raises((kd.ShapeError, ValueError)):
        knp.einsum("ij,jk->ik", x, kd.vector("v"))


def test_a_softmax_written_stable_with_knp_is_left_as_written():
    """x - max(x) held in an op of its own is already shifted: no second max pass."""
    x = kd.matrix("x")
    e = knp.exp(x - x.max(axis=1, keepdims=True))
    f = kd.function([x], e / e.sum(axis=1, keepdims=True))
    assert f.rewrites["local_softmax_stabilize"] == 0 and len(f.kernels) == 1
    assert str(f.kernels[0]).count("if (v") == 1  # one max loop
    a = rng.standard_normal((3, 7)).astype("float32") * 30
    want = np.exp(a - a.max(1, keepdims=True))
    close(f(a), want / want.sum(1, keepdims=True))
