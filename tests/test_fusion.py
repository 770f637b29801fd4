"""Fusion decisions: which kernels a graph becomes, and that fused kernels stay correct."""

import numpy as np

import kerneldsl as kd

rng = np.random.default_rng(3)


def kernels(f):
    return [(k.name, k.fused) for k in f.kernels]


def test_elementwise_chain_is_one_kernel():
    n = kd.size("n")
    x, y = kd.placeholder((n,), name="x"), kd.placeholder((n,), name="y")
    a = kd.compute((n,), lambda i: x[i] * 2, name="a")
    b = kd.compute((n,), lambda i: kd.exp(a[i]) + y[i], name="b")
    c = kd.compute((n,), lambda i: kd.tanh(b[i]), name="c")
    f = kd.build([x, y], [c])
    assert kernels(f) == [("c", ("a", "b"))]
    xs, ys = rng.standard_normal((2, 33)).astype(np.float32)
    np.testing.assert_allclose(f(xs, ys), np.tanh(np.exp(xs * 2) + ys), rtol=1e-5, atol=1e-6)


def test_reduction_absorbs_its_elementwise_prologue_and_epilogue():
    """exp joins the sum as its prologue; sqrt joins it as its epilogue: one kernel (a log
    epilogue would make it a log-sum-exp, which the stabilize phase rewrites into one op)."""
    n, m = kd.sizes("n m")
    x = kd.placeholder((n, m), name="x")
    e = kd.compute((n, m), lambda i, j: kd.exp(x[i, j]), name="e")
    r = kd.reduce_axis(m, name="r")
    s = kd.compute((n,), lambda i: kd.sum(e[i, r], axis=r), name="s")
    out = kd.compute((n,), lambda i: kd.sqrt(s[i]), name="lse")
    f = kd.build([x], [out])
    assert kernels(f) == [("lse", ("e", "s"))]
    xs = rng.standard_normal((4, 6)).astype(np.float32)
    np.testing.assert_allclose(f(xs), np.sqrt(np.exp(xs).sum(1)), rtol=1e-5)


def test_shared_producer_stays_one_kernel_computed_once():
    n = kd.size("n")
    x = kd.placeholder((n,), name="x")
    t = kd.compute((n,), lambda i: kd.exp(x[i]), name="t")
    y = kd.compute((n,), lambda i: t[i] + 1, name="y")
    z = kd.compute((n,), lambda i: t[i] * 2, name="z")
    f = kd.build([x], [y, z])
    assert sorted(k.name for k in f.kernels) == ["t", "y", "z"]
    assert all(k.fused == () for k in f.kernels)


def test_outputs_are_never_inlined():
    n = kd.size("n")
    x = kd.placeholder((n,), name="x")
    t = kd.compute((n,), lambda i: x[i] + 1, name="t")
    y = kd.compute((n,), lambda i: t[i] * 3, name="y")
    f = kd.build([x], [t, y])
    assert sorted(k.name for k in f.kernels) == ["t", "y"]


def test_fusion_can_be_turned_off():
    n = kd.size("n")
    x = kd.placeholder((n,), name="x")
    t = kd.compute((n,), lambda i: x[i] + 1, name="t")
    y = kd.compute((n,), lambda i: t[i] * 3, name="y")
    assert len(kd.build([x], [y], fuse=False).kernels) == 2
    assert len(kd.build([x], [y]).kernels) == 1


def test_gather_of_a_fused_producer():
    n, v = kd.sizes("n v")
    table = kd.placeholder((v,), name="table")
    idx = kd.placeholder((n,), "int64", name="idx")
    scaled = kd.compute((v,), lambda i: table[i] * 10, name="scaled")
    g = kd.compute((n,), lambda i: scaled[idx[i]], name="g")
    f = kd.build([table, idx], [g])
    assert kernels(f) == [("g", ("scaled",))]
    tab = rng.standard_normal(5).astype(np.float32)
    ids = np.array([4, 0, 2, 2])
    np.testing.assert_allclose(f(tab, ids), tab[ids] * 10, rtol=1e-6)


def test_row_reduction_joins_the_row_loop_of_its_consumer():
    n, m = kd.sizes("n m")
    x = kd.placeholder((n, m), name="x")
    r = kd.reduce_axis(m, name="r")
    s = kd.compute((n,), lambda i: kd.sum(x[i, r], axis=r), name="s")
    y = kd.compute((n, m), lambda i, j: x[i, j] / s[i], name="y")  # s[i] read at every j
    f = kd.build([x], [y])
    assert kernels(f) == [("y", ("s",))]
    text = str(f.module)  # the sum runs once per row: inside the i loop, before the j loop
    assert text.index("for i in") < text.index("for r in") < text.index("for j in")
    xs = rng.standard_normal((5, 7)).astype(np.float32)
    np.testing.assert_allclose(f(xs), xs / xs.sum(1, keepdims=True), rtol=1e-5)


def test_reduction_read_at_a_shifted_point_is_not_inlined():
    n = kd.size("n")
    x = kd.placeholder((n, n), name="x")
    r = kd.reduce_axis(n, name="r")
    s = kd.compute((n,), lambda i: kd.sum(x[i, r], axis=r), name="s")
    y = kd.compute((n,), lambda i: s[(i + 1) % n], name="y")
    f = kd.build([x], [y])
    assert sorted(k.name for k in f.kernels) == ["s", "y"]


def test_softmax_and_log_softmax_nll_are_one_kernel_each():
    n, c = kd.sizes("n c")
    L = kd.placeholder((n, c), name="L")
    y = kd.placeholder((n,), "int64", name="y")
    r, b = kd.reduce_axis(c, name="r"), kd.reduce_axis(n, name="b")
    mx = kd.compute((n,), lambda i: kd.max(L[i, r], axis=r), name="mx")
    den = kd.compute((n,), lambda i: kd.sum(kd.exp(L[i, r] - mx[i]), axis=r), name="den")
    sm = kd.compute((n, c), lambda i, j: kd.exp(L[i, j] - mx[i]) / den[i], name="sm")
    lse = kd.compute((n,), lambda i: mx[i] + kd.log(den[i]), name="lse")
    nll = kd.compute((), lambda: -kd.sum(L[b, y[b]] - lse[b], axis=b) / kd.cast(n, "float32"), name="nll")
    f = kd.build([L], [sm])
    g = kd.build([L, y], [nll])
    assert len(f.kernels) == 1 and len(g.kernels) == 1
    assert str(g.module).count("for r") == 2  # one max pass and one sum pass per row, no more
    lv = rng.standard_normal((6, 5)).astype(np.float32)
    yv = np.array([0, 1, 2, 3, 4, 0])
    e = np.exp(lv - lv.max(1, keepdims=True))
    np.testing.assert_allclose(f(lv), e / e.sum(1, keepdims=True), rtol=1e-5, atol=1e-7)
    logp = np.log(e / e.sum(1, keepdims=True))
    np.testing.assert_allclose(g(lv, yv), -logp[np.arange(6), yv].mean(), rtol=1e-5)


def test_repeated_reduction_in_one_body_is_computed_once():
    n = kd.size("n")
    x = kd.placeholder((n,), name="x")
    r = kd.reduce_axis(n, name="r")
    total = kd.sum(x[r], axis=r)
    y = kd.compute((), lambda: total * total + total, name="y")
    f = kd.build([x], [y])
    assert str(f.module).count("for r in range") == 1
    xs = rng.standard_normal(10).astype(np.float32)
    t = xs.sum()
    np.testing.assert_allclose(f(xs), t * t + t, rtol=1e-5)


def test_softmax_stores_exp_once_and_rescales():
    rows, cols = kd.sizes("rows cols")
    X = kd.placeholder((rows, cols), name="X")
    r = kd.reduce_axis(cols, name="r")
    mx = kd.compute((rows,), lambda i: kd.max(X[i, r], axis=r), name="mx")
    den = kd.compute((rows,), lambda i: kd.sum(kd.exp(X[i, r] - mx[i]), axis=r), name="den")
    sm = kd.compute((rows, cols), lambda i, j: kd.exp(X[i, j] - mx[i]) / den[i], name="sm")
    f = kd.build([X], [sm])
    text = str(f.module)
    assert text.count("exp(") == 1 and "sm[i, j] = sm[i, j] / " in text
    xs = rng.standard_normal((5, 9)).astype(np.float32) * 5
    e = np.exp(xs - xs.max(1, keepdims=True))
    np.testing.assert_allclose(f(xs), e / e.sum(1, keepdims=True), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(f(xs[:, :1].copy()), np.ones((5, 1), np.float32))
