"""kerneldsl.nn.layers: every layer's output against numpy, and its gradients (for the input and
each parameter) against float64 finite differences; Lasagne's defaults and shapes; against
PyTorch where a layer has a twin (the bench extra)."""

from __future__ import annotations

import numpy as np
import pytest

import kerneldsl as kd
from kerneldsl.nn import init, layers
from kerneldsl.nn.nonlinearities import linear, rectify, softmax, tanh


@pytest.fixture
def f64():
    kd.config.floatX = "float64"
    yield
    kd.config.reset()


def _compile(layer, deterministic=True, extra_inputs=()):
    """f(X, R) -> [output, d(sum(output * R))/d(input), d/d(each trainable param)...]."""
    l_in = [lay for lay in layers.get_all_layers(layer) if isinstance(lay, layers.InputLayer)]
    out = layers.get_output(layer, deterministic=deterministic)
    r = kd.tensor("r", out.ndim, out.dtype)
    loss = kd.numpy.sum(out * r)
    params = layers.get_all_params(layer, trainable=True)
    grads = kd.grad(loss, [lay.input_var for lay in l_in] + params)
    f = kd.function([lay.input_var for lay in l_in] + [r], [out] + grads, mode="FAST_COMPILE",
                    updates=list(layers.get_state_updates(layer).items()) or None)
    return f, params


def _check_grads(f, params, xs, r, eps=1e-6, n=6, seed=0):
    """The compiled gradients against central differences at a few random coordinates."""
    rng = np.random.default_rng(seed)
    res = f(*xs, r)
    grads = res[1:]

    def loss():
        return float(np.sum(f(*xs, r)[0] * r))
    targets = [(x, None) for x in xs] + [(p.get_value(borrow=True), p) for p in params]
    for (arr, p), g in zip(targets, grads):
        assert g.shape == arr.shape
        for _ in range(n):
            k = tuple(rng.integers(0, d) for d in arr.shape)
            old = arr[k]
            arr[k] = old + eps
            if p is not None:
                p.set_value(arr, borrow=True)
            up = loss()
            arr[k] = old - eps
            if p is not None:
                p.set_value(arr, borrow=True)
            down = loss()
            arr[k] = old
            if p is not None:
                p.set_value(arr, borrow=True)
            assert g[k] == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-6), (p, k)
    return res


# --- numpy references --------------------------------------------------------------------------------

def np_conv(x, w, stride=(1, 1), pad=(0, 0), flip=True):
    if flip:
        w = w[:, :, ::-1, ::-1]
    x = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    n, _c, h, wd = x.shape
    o, _, kh, kw = w.shape
    oh, ow = (h - kh) // stride[0] + 1, (wd - kw) // stride[1] + 1
    out = np.zeros((n, o, oh, ow))
    for i in range(oh):
        for j in range(ow):
            patch = x[:, :, i * stride[0]:i * stride[0] + kh, j * stride[1]:j * stride[1] + kw]
            out[:, :, i, j] = np.einsum("nchw,ochw->no", patch, w)
    return out


def np_pool(x, size, stride, pad=(0, 0), mode="max"):
    fill = -np.inf if mode == "max" else 0.0
    x = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])), constant_values=fill)
    n, c, h, w = x.shape
    oh, ow = (h - size[0]) // stride[0] + 1, (w - size[1]) // stride[1] + 1
    out = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            win = x[:, :, i * stride[0]:i * stride[0] + size[0], j * stride[1]:j * stride[1] + size[1]]
            out[:, :, i, j] = win.max(axis=(2, 3)) if mode == "max" else win.mean(axis=(2, 3))
    return out


# --- layers ------------------------------------------------------------------------------------------------

def test_dense_layer_defaults_are_lasagnes(f64):
    l_in = layers.InputLayer((None, 6))
    dense = layers.DenseLayer(l_in, num_units=4)
    assert dense.nonlinearity is rectify
    assert dense.W.get_value().shape == (6, 4) and np.all(dense.b.get_value() == 0)
    bound = np.sqrt(6.0 / (6 + 4))  # Glorot uniform
    assert np.abs(dense.W.get_value()).max() <= bound
    assert dense.output_shape == (None, 4)
    assert layers.get_all_params(dense) == [dense.W, dense.b]
    assert layers.get_all_params(dense, regularizable=True) == [dense.W]
    assert layers.count_params(dense) == 6 * 4 + 4


def test_dense_layer_output_and_gradients(f64):
    rng = np.random.default_rng(1)
    l_in = layers.InputLayer((None, 2, 3))  # flattened to 6 inputs
    dense = layers.DenseLayer(l_in, num_units=5, nonlinearity=tanh, b=init.Normal(0.5))
    f, params = _compile(dense)
    x = rng.standard_normal((4, 2, 3))
    r = rng.standard_normal((4, 5))
    out = _check_grads(f, params, [x], r)[0]
    want = np.tanh(x.reshape(4, 6) @ dense.W.get_value() + dense.b.get_value())
    np.testing.assert_allclose(out, want, rtol=1e-12)


@pytest.mark.parametrize("stride, pad, flip", [((1, 1), 0, True), ((2, 1), "same", False), ((1, 2), "full", True)])
def test_conv2d_layer_output_and_gradients(f64, stride, pad, flip):
    rng = np.random.default_rng(2)
    l_in = layers.InputLayer((None, 2, 7, 6))
    conv = layers.Conv2DLayer(l_in, num_filters=3, filter_size=(3, 3), stride=stride, pad=pad, flip_filters=flip,
                              nonlinearity=linear, b=init.Normal(0.3))
    f, params = _compile(conv)
    x = rng.standard_normal((2, 2, 7, 6))
    r = rng.standard_normal((2, *conv.output_shape[1:]))
    out = _check_grads(f, params, [x], r)[0]
    p = {0: (0, 0), "same": (1, 1), "full": (2, 2)}[pad]
    want = np_conv(x, conv.W.get_value(), stride, p, flip) + conv.b.get_value()[None, :, None, None]
    assert out.shape == want.shape == (2, *conv.output_shape[1:])
    np.testing.assert_allclose(out, want, rtol=1e-10, atol=1e-12)


def test_conv2d_layer_defaults_and_untied_biases(f64):
    l_in = layers.InputLayer((None, 1, 5, 5))
    conv = layers.Conv2DLayer(l_in, 4, 3)
    assert conv.nonlinearity is rectify and conv.stride == (1, 1) and conv.pad == (0, 0) and conv.flip_filters
    assert conv.output_shape == (None, 4, 3, 3) and conv.W.get_value().shape == (4, 1, 3, 3)
    untied = layers.Conv2DLayer(l_in, 2, 3, untie_biases=True, nonlinearity=None, b=init.Normal(1.0))
    x = np.random.default_rng(3).standard_normal((2, 1, 5, 5))
    out = kd.function([l_in.input_var], layers.get_output(untied), mode="FAST_COMPILE")(x)
    np.testing.assert_allclose(out, np_conv(x, untied.W.get_value()) + untied.b.get_value(), rtol=1e-10)


@pytest.mark.parametrize("mode, size, stride, pad", [("max", (2, 2), None, (0, 0)), ("max", (3, 3), (2, 2), (1, 1)),
                                                     ("average_inc_pad", (2, 3), (2, 1), (0, 1))])
def test_pool_layers_output_and_gradients(f64, mode, size, stride, pad):
    rng = np.random.default_rng(4)
    l_in = layers.InputLayer((None, 2, 6, 7))
    pool = layers.Pool2DLayer(l_in, size, stride=stride, pad=pad, mode=mode)
    f, params = _compile(pool)
    x = rng.standard_normal((3, 2, 6, 7))
    r = rng.standard_normal((3, *pool.output_shape[1:]))
    out = _check_grads(f, params, [x], r)[0]
    np.testing.assert_allclose(out, np_pool(x, size, stride or size, pad, "max" if mode == "max" else "avg"),
                               rtol=1e-12)


def test_maxpool_layer_is_pool2d_max():
    l_in = layers.InputLayer((None, 3, 8, 8))
    assert layers.MaxPool2DLayer(l_in, (2, 2)).output_shape == (None, 3, 4, 4)
    with pytest.raises(NotImplementedError, match="ignore_border=False"):
        layers.MaxPool2DLayer(l_in, 2, ignore_border=False)
    with pytest.raises(ValueError, match="mode"):
        layers.Pool2DLayer(l_in, 2, mode="median")


def test_dropout_layer_masks_and_rescales_and_changes_per_step(f64):
    l_in = layers.InputLayer((None, 400))
    drop = layers.DropoutLayer(l_in, p=0.25)
    out = layers.get_output(drop)
    updates = layers.get_state_updates(drop)
    assert list(updates) == [drop.seed]
    f = kd.function([l_in.input_var], out, updates=list(updates.items()), mode="FAST_COMPILE")
    x = np.ones((5, 400))
    a, b = f(x), f(x)
    assert set(np.unique(a)) <= {0.0, 1 / 0.75}
    assert abs((a == 0).mean() - 0.25) < 0.04
    assert (a != b).any()  # a new mask each step
    assert layers.get_output(drop, deterministic=True) is l_in.input_var
    g = kd.function([l_in.input_var], kd.grad(kd.numpy.sum(layers.get_output(drop) * 3.0), l_in.input_var),
                    mode="FAST_COMPILE", on_unused_input="ignore")(x)
    assert set(np.unique(g)) <= {0.0, 3 / 0.75}


def test_batchnorm_layer_train_and_deterministic(f64):
    rng = np.random.default_rng(5)
    l_in = layers.InputLayer((None, 3, 4, 4))
    bn = layers.BatchNormLayer(l_in, beta=init.Normal(1.0), gamma=init.Normal(1.0), alpha=0.5)
    assert layers.get_all_params(bn, trainable=True) == [bn.beta, bn.gamma]
    assert layers.get_all_params(bn, trainable=False) == [bn.mean, bn.inv_std]
    f, params = _compile(bn, deterministic=False)
    x = rng.standard_normal((5, 3, 4, 4)) * 2 + 1
    r = rng.standard_normal(x.shape)
    out = f(x, r)[0]
    m = x.mean(axis=(0, 2, 3))
    inv = 1 / np.sqrt(x.var(axis=(0, 2, 3)) + 1e-4)
    sh = (1, 3, 1, 1)
    want = (x - m.reshape(sh)) * inv.reshape(sh) * bn.gamma.get_value().reshape(sh) + bn.beta.get_value().reshape(sh)
    np.testing.assert_allclose(out, want, rtol=1e-10)
    # the running averages moved halfway (alpha=0.5) towards the batch's
    np.testing.assert_allclose(bn.mean.get_value(), 0.5 * m, rtol=1e-10)
    _check_grads(f, params, [x], r)  # runs it more: only the gradients are compared here
    det = kd.function([l_in.input_var], layers.get_output(bn, deterministic=True), mode="FAST_COMPILE")(x)
    want = (x - bn.mean.get_value().reshape(sh)) * bn.inv_std.get_value().reshape(sh) \
        * bn.gamma.get_value().reshape(sh) + bn.beta.get_value().reshape(sh)
    np.testing.assert_allclose(det, want, rtol=1e-10)


def test_shape_layers(f64):
    rng = np.random.default_rng(6)
    l_in = layers.InputLayer((None, 2, 3, 4))
    flat = layers.FlattenLayer(l_in)
    resh = layers.ReshapeLayer(l_in, ([0], 4, -1))
    dims = layers.DimshuffleLayer(l_in, (0, 3, "x", 1, 2))
    nl = layers.NonlinearityLayer(flat, nonlinearity=tanh)
    assert flat.output_shape == (None, 24) and resh.output_shape == (None, 4, 6)
    assert dims.output_shape == (None, 4, 1, 2, 3)
    x = rng.standard_normal((3, 2, 3, 4))
    outs = [layers.get_output(lay) for lay in (flat, resh, dims, nl)]
    f = kd.function([l_in.input_var], outs, mode="FAST_COMPILE")
    a, b, c, d = f(x)
    np.testing.assert_array_equal(a, x.reshape(3, 24))
    np.testing.assert_array_equal(b, x.reshape(3, 4, 6))
    np.testing.assert_array_equal(c, x.transpose(0, 3, 1, 2)[:, :, None])
    np.testing.assert_allclose(d, np.tanh(x.reshape(3, 24)))
    with pytest.raises(ValueError, match="cannot reshape"):
        layers.ReshapeLayer(l_in, ([0], 5, 5))


def test_merge_layers_output_and_gradients(f64):
    rng = np.random.default_rng(7)
    a = layers.InputLayer((None, 3), name="a")
    b = layers.InputLayer((None, 3), name="b")
    da = layers.DenseLayer(a, 2, nonlinearity=linear)
    cat = layers.ConcatLayer([da, b], axis=1)
    total = layers.ElemwiseSumLayer([a, b], coeffs=[2.0, -1.0])
    both = layers.ConcatLayer([cat, total])
    assert cat.output_shape == (None, 5) and total.output_shape == (None, 3) and both.output_shape == (None, 8)
    f, params = _compile(both)
    xa, xb = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    r = rng.standard_normal((4, 8))
    out = _check_grads(f, params, [xa, xb], r)[0]
    want = np.concatenate([xa @ da.W.get_value() + da.b.get_value(), xb, 2 * xa - xb], axis=1)
    np.testing.assert_allclose(out, want, rtol=1e-12)


def test_get_output_with_inputs_and_get_output_shape():
    l_in = layers.InputLayer((None, 1, 8, 8))
    conv = layers.Conv2DLayer(l_in, 2, 3)
    pool = layers.MaxPool2DLayer(conv, 2)
    out = layers.DenseLayer(pool, 3, nonlinearity=softmax)
    assert layers.get_all_layers(out) == [l_in, conv, pool, out]
    assert layers.get_output_shape(out, (7, 1, 10, 10)) == (7, 3)
    assert layers.get_output_shape(pool, {l_in: (None, 1, 12, 12)}) == (None, 2, 5, 5)
    x = kd.tensor4("x")
    assert layers.get_output(out, x) is not layers.get_output(out)
    assert layers.get_output(pool, {conv: x}).shape[1] is x.shape[1]


def test_param_values_round_trip_and_errors():
    l_in = layers.InputLayer((None, 4))
    out = layers.DenseLayer(layers.DenseLayer(l_in, 3), 2)
    values = layers.get_all_param_values(out)
    assert [v.shape for v in values] == [(4, 3), (3,), (3, 2), (2,)]
    layers.set_all_param_values(out, [v + 1 for v in values])
    np.testing.assert_array_equal(layers.get_all_param_values(out)[0], values[0] + 1)
    with pytest.raises(ValueError, match="4 parameters, 3 values"):
        layers.set_all_param_values(out, values[:3])
    with pytest.raises(ValueError, match=r"has shape \(4, 3\).*\(3, 4\)"):
        layers.set_all_param_values(out, [values[0].T] + values[1:])


def test_bad_layer_arguments_give_clear_errors():
    l_in = layers.InputLayer((None, 3, 5, 5))
    with pytest.raises(ValueError, match="num_units"):
        layers.DenseLayer(l_in, 0)
    with pytest.raises(ValueError, match="4-D"):
        layers.Conv2DLayer(layers.InputLayer((None, 5)), 2, 3)
    with pytest.raises(ValueError, match="filter_size"):
        layers.Conv2DLayer(l_in, 2, "big")
    with pytest.raises(ValueError, match=r"shape \(3, 2\)"):
        layers.DenseLayer(layers.InputLayer((None, 2)), 3, W=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="p must be"):
        layers.DropoutLayer(l_in, p=1.0)
    with pytest.raises(TypeError, match="layer or a shape"):
        layers.DenseLayer("input", 3)


# --- against PyTorch (the bench extra) -----------------------------------------------------------------------

def test_layers_match_torch(f64):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(8)
    l_in = layers.InputLayer((None, 3, 9, 9))
    conv = layers.Conv2DLayer(l_in, 4, (3, 2), stride=(2, 1), pad=1, flip_filters=False)
    pool = layers.MaxPool2DLayer(conv, 2)
    avg = layers.Pool2DLayer(conv, 2, mode="average_inc_pad")
    dense = layers.DenseLayer(pool, 5, nonlinearity=softmax)
    bn = layers.BatchNormLayer(conv)
    f = kd.function([l_in.input_var], layers.get_output([conv, pool, avg, dense, bn]), mode="FAST_COMPILE")
    x = rng.standard_normal((2, 3, 9, 9))
    got = f(x)
    t = torch.from_numpy(x)
    c = F.relu(F.conv2d(t, torch.from_numpy(conv.W.get_value()), torch.from_numpy(conv.b.get_value()),
                        stride=(2, 1), padding=1))
    p = F.max_pool2d(c, 2)
    d = F.softmax(p.flatten(1) @ torch.from_numpy(dense.W.get_value()) + torch.from_numpy(dense.b.get_value()), 1)
    b = F.batch_norm(c, None, None, training=True, eps=1e-4)
    for g, w in zip(got, [c, p, F.avg_pool2d(c, 2), d, b]):
        np.testing.assert_allclose(g, w.numpy(), rtol=1e-9, atol=1e-10)


def test_layer_parameters_have_fixed_shapes():
    """Kernels are built for the layer sizes: a parameter's dimensions are constants, and a value
    of another shape is refused with the parameter's name."""
    dense = layers.DenseLayer(layers.InputLayer((None, 5)), 3)
    assert all(isinstance(d, kd.Expr) and int(d.value) == n for d, n in zip(dense.W.shape, (5, 3)))
    with pytest.raises(kd.ShapeError, match=r"fixed shape \(5, 3\).*\(3, 5\)"):
        dense.W.set_value(np.zeros((3, 5), "float32"))
    free = kd.shared(np.zeros((2, 2), "float32"))  # a plain shared variable may change shape
    free.set_value(np.zeros((4, 1), "float32"))


def test_maxpool_gradient_first_max_or_ties():
    """By default the gradient goes to each window's first maximum (torch's); with
    grad_to_ties=True to every element equal to it (Theano's), with no argmax kept and, for
    windows that tile the input, one window read per element (no sum over window offsets)."""
    l_in = layers.InputLayer((None, 1, 4, 4))
    x = np.zeros((1, 1, 4, 4), "float32")
    x[0, 0, 0, 0] = x[0, 0, 1, 1] = 2.0  # a tie in the first window
    x[0, 0, 2:, 2:] = [[1, 3], [0, 3]]
    want = {False: [[1, 0, 1, 0], [0, 0, 0, 0], [1, 0, 0, 1], [0, 0, 0, 0]],
            True: [[1, 0, 1, 1], [0, 1, 1, 1], [1, 1, 0, 1], [1, 1, 0, 1]]}
    for ties in (False, True):
        pool = layers.MaxPool2DLayer(l_in, 2, grad_to_ties=ties)
        out = layers.get_output(pool)
        (g,) = kd.grad(kd.numpy.sum(out), [l_in.input_var])
        f = kd.function([l_in.input_var], [out, g], mode="FAST_COMPILE")
        y, dx = f(x)
        np.testing.assert_array_equal(y[0, 0], [[2, 0], [0, 3]])
        np.testing.assert_array_equal(dx[0, 0], want[ties])
        if ties:
            text = "\n".join(str(k) for k in f.kernels)
            assert "argmax" not in text and "% 2" not in text


def test_cnn_gradients_match_torch_on_flat_images(f64):
    """Images with constant regions (a background) make equal values in pooling windows: the
    gradients of a conv-pool-conv-pool-dense network still match torch's, parameter by parameter."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(9)
    l_in = layers.InputLayer((None, 1, 12, 12))
    c1 = layers.Conv2DLayer(l_in, 3, 3, W=init.Normal(0.5, mean=-0.3))
    c2 = layers.Conv2DLayer(layers.MaxPool2DLayer(c1, 2), 4, 2)
    out = layers.DenseLayer(layers.MaxPool2DLayer(c2, 2), 3, nonlinearity=softmax)
    y = kd.ivector("y")
    loss = kd.numpy.mean(kd.nn.categorical_crossentropy(layers.get_output(out), y))
    params = layers.get_all_params(out)
    f = kd.function([l_in.input_var, y], kd.grad(loss, params), mode="FAST_COMPILE")
    x = np.full((4, 1, 12, 12), -0.5)  # a flat background (Fashion-MNIST - 0.5): equal positive
    x[:, :, 3:9, 4:8] = rng.uniform(0.2, 1, (4, 1, 6, 4))  # conv outputs fill whole windows
    labels = np.array([0, 1, 2, 1], "int32")
    got = f(x, labels)
    tp = [torch.tensor(p.get_value(), requires_grad=True) for p in params]
    h = F.max_pool2d(F.relu(F.conv2d(torch.tensor(x), tp[0].flip(2, 3), tp[1])), 2)
    h = F.max_pool2d(F.relu(F.conv2d(h, tp[2].flip(2, 3), tp[3])), 2)
    F.cross_entropy(h.flatten(1) @ tp[4] + tp[5], torch.tensor(labels).long()).backward()
    for g, t in zip(got, tp):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-9, atol=1e-12)
