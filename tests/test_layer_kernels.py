"""What a training layer's forward and backward become: no copy kernels, bias and gamma gradients as
vectorized column sums (sizes that a check equates are one size), parameters of the wrong length
refused, and the values still the reference's."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_same, rng

import kerneldsl as kd
import kerneldsl.numpy as knp


def _layer_norm_step():
    x, g, b = kd.matrix("x"), kd.vector("g"), kd.vector("b")
    y = kd.nn.layer_norm(x, g, b)
    dy = kd.placeholder(y.shape, name="dy")
    grads = kd.grad(knp.sum(y * dy), [x, g, b])
    return [x, g, b, dy], [y, *grads]


def test_layer_norm_backward_matches_the_reference():
    ins, outs = _layer_norm_step()
    f = kd.build(ins, outs)
    r = rng()
    feed = [r.standard_normal((9, 13)).astype(np.float32), r.standard_normal(13).astype(np.float32),
            r.standard_normal(13).astype(np.float32), r.standard_normal((9, 13)).astype(np.float32)]
    got = f(*feed)
    want = kd.evaluate(outs, dict(zip(ins, feed)))
    for g, w, what in zip(got, want, ("y", "dx", "dg", "db")):
        assert_same(g, w, rtol=2e-4, atol=2e-5, what=what)


def test_a_gradient_seed_is_read_in_place_not_copied():
    ins, outs = _layer_norm_step()
    m = kd.build(ins, outs).module
    copies = [k.name for k in m.kernels if isinstance(k.op.body, kd.ir.expr.Load)]
    assert not copies, copies


def test_bias_and_gamma_gradients_are_unguarded_vectorized_column_sums():
    ins, outs = _layer_norm_step()
    m = kd.build(ins, outs).module
    for k in m.kernels:
        if k.name in ("dg", "db"):
            text = str(k)
            assert "if " not in text and "# vectorized" in text, text


def test_a_bias_gradient_of_a_broadcast_add_needs_no_guard():
    x, b = kd.matrix("x"), kd.vector("b")
    y = kd.nn.gelu(x + b)
    dy = kd.placeholder(y.shape, name="dy")
    _, gb = kd.grad(knp.sum(y * dy), [x, b])
    f = kd.build([x, b, dy], [gb])
    assert "if " not in str(f.module.kernels[-1])
    r = rng(1)
    xa, ba, da = (r.standard_normal((6, 5)).astype(np.float32), r.standard_normal(5).astype(np.float32),
                  r.standard_normal((6, 5)).astype(np.float32))
    (want,) = kd.evaluate([gb], {x: xa, b: ba, dy: da})
    assert_same(f(xa, ba, da), want, rtol=1e-5, atol=1e-6, what="db")
    with pytest.raises(kd.ShapeError):  # the sizes are still checked equal before any kernel runs
        f(xa, np.zeros(6, np.float32), da)


@pytest.mark.parametrize("which", ["gamma", "beta"])
def test_a_normalisation_parameter_of_the_wrong_length_is_refused(which):
    x, p = kd.matrix("x"), kd.vector("p")
    y = kd.nn.layer_norm(x, **{which: p})
    f = kd.function([x, p], y)
    f(np.ones((2, 4), np.float32), np.ones(4, np.float32))
    with pytest.raises(kd.ShapeError, match="layer_norm"):
        f(np.ones((2, 4), np.float32), np.ones(5, np.float32))  # longer: it would be read in part


def test_a_batch_norm_parameter_of_the_wrong_length_is_refused():
    x, g = kd.tensor4("x"), kd.vector("g")
    f = kd.function([x, g], kd.nn.batch_norm(x, g))
    f(np.ones((2, 3, 2, 2), np.float32), np.ones(3, np.float32))
    with pytest.raises(kd.ShapeError, match="batch_norm"):
        f(np.ones((2, 3, 2, 2), np.float32), np.ones(4, np.float32))


def test_relu_keeps_nan_and_its_gradient_at_zero_is_zero():
    x = kd.vector("x")
    y = kd.nn.relu(x)
    (g,) = kd.grad(knp.sum(y), [x])
    f = kd.function([x], [y, g])
    got_y, got_g = f(np.array([np.nan, -1.0, 0.0, 2.0], np.float32))
    np.testing.assert_array_equal(got_y, [np.nan, 0.0, 0.0, 2.0])
    np.testing.assert_array_equal(got_g[1:], [0.0, 0.0, 1.0])


def test_a_conv_relu_backward_reads_the_forward_output_instead_of_recomputing_the_conv():
    x, w, b = kd.tensor4("x"), kd.tensor4("w"), kd.vector("b")
    y = kd.nn.relu(kd.nn.conv2d(x, w, bias=b))
    dy = kd.placeholder(y.shape, name="dy")
    grads = kd.grad(knp.sum(y * dy), [x, w, b])
    f = kd.build([x, w, b, dy], [y, *grads])
    gemms = [k.name for k in f.module.kernels if k.template == "gemm"]
    assert len(gemms) == 3, gemms  # the forward, dx and dw: the relu mask reads y
    r = rng(2)
    feed = [r.standard_normal((2, 3, 6, 6)).astype(np.float32), r.standard_normal((4, 3, 3, 3)).astype(np.float32),
            r.standard_normal(4).astype(np.float32), r.standard_normal((2, 4, 4, 4)).astype(np.float32)]
    want = kd.evaluate([y, *grads], dict(zip([x, w, b, dy], feed)))
    for got, ref, what in zip(f(*feed), want, ("y", "dx", "dw", "db")):
        assert_same(got, ref, rtol=1e-4, atol=1e-5, what=what)


def _chain(n: int):
    """n elementwise ops, each using its input twice, with a mean subtracted every 10th."""
    x = kd.vector("x")
    e = x
    for k in range(n):
        e = knp.tanh(e) * 0.5 + e if k % 3 else e * 1.01 + 0.1
        if k % 10 == 9:
            e = e - e.mean()
    return x, e


def test_source_size_grows_linearly_with_the_graph():
    sizes = {}
    for n in (20, 80):
        x, e = _chain(n)
        f = kd.build([x], [e])
        sizes[n] = len(f.source if isinstance(f.source, str) else str(f.source)) + len(str(f.module))
    assert sizes[80] < 6 * sizes[20], sizes  # 4x the ops; a path-by-path expansion doubles every 3


def test_a_long_shared_chain_computes_what_the_reference_does():
    x, e = _chain(23)
    f = kd.build([x], [e])
    a = rng(4).standard_normal(37).astype(np.float32)
    (want,) = kd.evaluate([e], {x: a})
    assert_same(f(a), want, rtol=1e-4, atol=1e-5, what="chain")


def test_a_select_of_computed_values_runs_as_simd_lanes():
    """C's `c ? a : b` evaluates one side only, so with trapping math GCC does not vectorize a
    select whose side divides; both sides are computed, then one is picked."""
    x, y = kd.matrix("x"), kd.ivector("y")
    loss = -knp.mean(knp.log(kd.nn.softmax(x))[knp.arange(x.shape[0]), y])
    (g,) = kd.grad(loss, [x])
    f = kd.build([x, y], [g])
    src = f.source if isinstance(f.source, str) else str(f.source)
    assert "kd_select_f32(" in src
    a = rng(5).standard_normal((6, 9)).astype(np.float32)
    labels = np.array([0, 8, 3, 3, -1, 5], np.int32)  # -1: numpy's wrap-around
    (want,) = kd.evaluate([g], {x: a, y: labels})
    assert_same(f(a, labels), want, rtol=1e-5, atol=1e-7, what="dx")


def test_a_batch_norm_step_computes_each_reduction_once():
    x, g, b = kd.tensor4("x"), kd.vector("g"), kd.vector("b")
    y = kd.nn.batch_norm(x, g, b, eps=1e-5)
    dy = kd.placeholder(y.shape, name="dy")
    grads = kd.grad(knp.sum(y * dy), [x, g, b])
    f = kd.build([x, g, b, dy], [y, *grads])
    bodies = [str(k.op.body) for k in f.module.kernels]
    assert len(bodies) == len(set(bodies)), [k.name for k in f.module.kernels]
    r = rng(6)
    feed = [r.standard_normal((3, 4, 5, 2)).astype(np.float32), r.standard_normal(4).astype(np.float32),
            r.standard_normal(4).astype(np.float32), r.standard_normal((3, 4, 5, 2)).astype(np.float32)]
    want = kd.evaluate([y, *grads], dict(zip([x, g, b, dy], feed)))
    for got, ref, what in zip(f(*feed), want, ("y", "dx", "dg", "db")):
        assert_same(got, ref, rtol=2e-4, atol=2e-5, what=what)


def _conv_step(stride, padding, dilation):
    x, w, b = kd.tensor4("x"), kd.tensor4("w"), kd.vector("b")
    y = kd.nn.conv2d(x, w, stride=stride, padding=padding, dilation=dilation, bias=b)
    dy = kd.placeholder(y.shape, name="dy")
    return [x, w, b, dy], [y, *kd.grad(knp.sum(y * dy), [x, w, b])]


@pytest.mark.parametrize("shape, stride, padding, dilation", [
    ((2, 3, 5, 9, 11, 3, 3), 1, 1, 1),          # padded: the packing splits each run at the border
    ((3, 4, 6, 10, 7, 3, 2), 2, (2, 1), 1),
    ((2, 2, 3, 12, 12, 3, 3), 1, 2, 2),
    ((2, 1, 6, 9, 9, 3, 3), 1, 1, 1),            # one input channel: dx is thin, the loop nest runs
    ((2, 32, 35, 7, 40, 3, 3), 2, 1, 1),
    ((4, 3, 8, 20, 20, 3, 3), 1, 1, 1),          # dw: M, N small against K: the threads split K
])
def test_convolution_forward_and_backward_match_the_reference(shape, stride, padding, dilation):
    n, ci, co, h, w, kh, kw = shape
    ins, outs = _conv_step(stride, padding, dilation)
    f = kd.build(ins, outs)
    r = rng(3)
    xa = r.standard_normal((n, ci, h, w)).astype(np.float32)
    wa = r.standard_normal((co, ci, kh, kw)).astype(np.float32)
    ba = r.standard_normal(co).astype(np.float32)
    y_shape = kd.evaluate(outs[:1], {ins[0]: xa, ins[1]: wa, ins[2]: ba})[0].shape
    feed = [xa, wa, ba, r.standard_normal(y_shape).astype(np.float32)]
    want = kd.evaluate(outs, dict(zip(ins, feed)))
    for g, wv, what in zip(f(*feed), want, ("y", "dx", "dw", "db")):
        assert_same(g, wv, rtol=2e-4, atol=2e-4, what=what)


def test_a_padded_read_in_a_vectorized_loop_is_partitioned_and_keeps_nan():
    """`partition` splits the loop at the padding's border: no test per lane, and a term outside
    the border is still 0 * w (an infinite weight still gives NaN, as the reference does)."""
    n, h = kd.sizes("n h")
    X = kd.placeholder((n, h), name="X")
    Wt = kd.placeholder((3,), name="Wt")
    r = kd.reduce_axis(3, "r")
    Y = kd.compute((n, h), lambda i, j: kd.sum(
        kd.where((j + r - 1 >= 0) & (j + r - 1 < h), X[i, j + r - 1], 0) * Wt[r], axis=r), name="Y")
    f = kd.build([X, Wt], [Y])
    text = str(f.module.kernels[0])
    assert "_lo in range" in text and "_in in range" in text and "_hi in range" in text, text
    g = rng(4)
    xa = g.standard_normal((5, 37)).astype(np.float32)
    for wa in (g.standard_normal(3).astype(np.float32), np.array([np.inf, 1, 2], np.float32)):
        want = kd.evaluate([Y], {X: xa, Wt: wa})[0]
        assert_same(f(xa, wa), want, what="Y")
    assert np.isnan(f(xa, np.array([np.inf, 1, 2], np.float32))[:, 0]).all()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("m, n, k", [(8, 6, 5000), (13, 40, 3001), (64, 288, 2100)])
def test_a_contraction_with_a_deep_k_split_over_threads_matches_the_reference(dtype, m, n, k):
    """Small M x N, deep K (a weight gradient): each thread sums a slice of K into a partial C,
    then the partials are added and the epilogue applied."""
    A = kd.placeholder((m, k), dtype, name="A")
    B = kd.placeholder((k, n), dtype, name="B")
    bias = kd.placeholder((n,), dtype, name="bias")
    r = kd.reduce_axis(k, "r")
    C = kd.compute((m, n), lambda i, j: kd.tanh(kd.sum(A[i, r] * B[r, j], axis=r) + bias[j]), name="C")
    with kd.knobs(threads=2):
        f = kd.build([A, B, bias], [C])
    assert f.kernels[0].template == "gemm"
    g = rng(5)
    a, b, c = (g.standard_normal(s).astype(dtype) for s in ((m, k), (k, n), (n,)))
    want = np.tanh((a.astype(np.float64) @ b.astype(np.float64)) / 30 + c)
    got = f(a / np.asarray(30, dtype), b, c)
    np.testing.assert_allclose(got, want, rtol=1e-4 if dtype == "float32" else 1e-10, atol=1e-5)


def test_a_large_module_compiles_in_parts_and_runs_as_one_library():
    from kerneldsl.runtime.build import split_units
    ins, outs = _conv_step(1, 1, 1)
    f = kd.build(ins, outs)
    units = split_units(f.source, 2)
    assert units is not None and len(units[0]) == 2  # two parts for two cores, then the entry
    assert all(u.count("#ifndef KD_MICRO_") >= 1 for u in units[0])  # each part defines the micro-kernel it calls
    assert "KD_KERNEL int kd_kernel" in units[0][0] and "int kd_entry(" in units[1]
    r = rng(4)
    feed = [r.standard_normal((2, 3, 9, 9)).astype(np.float32), r.standard_normal((8, 3, 3, 3)).astype(np.float32),
            r.standard_normal(8).astype(np.float32), r.standard_normal((2, 8, 9, 9)).astype(np.float32)]
    for g, w in zip(f(*feed), kd.evaluate(outs, dict(zip(ins, feed)))):
        assert_same(g, w, rtol=2e-4, atol=2e-4)


def test_a_contraction_with_strided_operands_and_outputs_matches_numpy():
    # the GEMM runs on unit innermost strides only: other layouts are copied, in and out
    a, b = kd.matrix("a"), kd.matrix("b")
    f = kd.build([a, b], [knp.tanh(a @ b)])
    r = rng(5)
    big_a, big_b = r.standard_normal((70, 90)).astype(np.float32), r.standard_normal((90, 60)).astype(np.float32)
    for x, y in [(big_a[:, ::2], big_b[::2]), (big_a.T[::2, :70].T, big_b[:45]), (big_a[:, :45], big_b[:45].T.copy().T)]:
        want = np.tanh(x.astype(np.float64) @ y).astype(np.float32)
        assert_same(f(x, y), want, rtol=1e-4, atol=1e-4)
        out = np.zeros((want.shape[1], want.shape[0]), np.float32).T  # a transposed out=
        f(x, y, out=out)
        assert_same(out, want, rtol=1e-4, atol=1e-4)
