"""Whole computations people write, compiled and compared with numpy and the reference."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_same, check, matmul, rng

import kerneldsl as kd

F32 = dict(rtol=1e-5, atol=1e-5)
F64 = dict(rtol=1e-12, atol=1e-12)


# --- contractions and convolutions ----------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "int64"])
def test_matmul(dtype):
    A, B, C = matmul(dtype)
    r = rng(0)
    a = r.integers(-5, 5, (7, 9)).astype(dtype) if "int" in dtype else r.standard_normal((7, 9)).astype(dtype)
    b = r.integers(-5, 5, (9, 4)).astype(dtype) if "int" in dtype else r.standard_normal((9, 4)).astype(dtype)
    tol = {"float32": F32, "float64": F64}.get(dtype, {})
    check(C, {A: a, B: b}, expected=a @ b, **tol)


def test_one_kernel_serves_different_shapes_of_the_same_rank():
    A, B, C = matmul()
    f = kd.build([A, B], [C])
    r = rng(1)
    for n, k, m in [(1, 1, 1), (3, 5, 2), (64, 33, 17), (2, 0, 3), (0, 4, 5), (130, 70, 9)]:
        a = r.standard_normal((n, k)).astype(np.float32)
        b = r.standard_normal((k, m)).astype(np.float32)
        check(C, {A: a, B: b}, expected=(a @ b), f=f, **F32)


def test_batched_matmul():
    bs, n, m, k = kd.sizes("bs n m k")
    A = kd.placeholder((bs, n, k), "float64", name="A")
    B = kd.placeholder((bs, k, m), "float64", name="B")
    r = kd.reduce_axis(k, "r")
    C = kd.compute((bs, n, m), lambda b, i, j: kd.sum(A[b, i, r] * B[b, r, j], axis=r), name="C")
    a, b = rng(2).standard_normal((3, 4, 5)), rng(3).standard_normal((3, 5, 6))
    check(C, {A: a, B: b}, expected=a @ b, **F64)


def test_matmul_with_bias_and_relu_epilogue():
    A, B, C = matmul()
    m = C.shape[1]
    bias = kd.placeholder((m,), "float32", name="bias")
    Y = kd.compute(C.shape, lambda i, j: kd.maximum(C[i, j] + bias[j], 0.0), name="Y")
    a, b, c = (rng(s).standard_normal(sh).astype(np.float32) for s, sh in ((4, (5, 6)), (5, (6, 7)), (6, (7,))))
    f, (y,) = check(Y, {A: a, B: b, bias: c}, expected=np.maximum(a @ b + c, 0), **F32)
    assert y.dtype == np.float32


def test_strided_conv1d():
    n, w = kd.sizes("n w")
    X = kd.placeholder((n,), "float64", name="X")
    W = kd.placeholder((w,), "float64", name="W")
    stride = 2
    r = kd.reduce_axis(w, "r")
    Y = kd.compute(((n - w) // stride + 1,), lambda i: kd.sum(X[stride * i + r] * W[r], axis=r), name="Y")
    for nn, ww in [(11, 3), (10, 3), (5, 5), (4, 1)]:
        x, wt = rng(nn).standard_normal(nn), rng(ww).standard_normal(ww)
        want = np.array([np.dot(x[stride * i: stride * i + ww], wt) for i in range((nn - ww) // stride + 1)])
        check(Y, {X: x, W: wt}, expected=want, **F64)


def test_conv2d_nchw_with_zero_padding_via_where():
    N, C, H, Wd, K, R = kd.sizes("N C H W K R")
    pad = 1
    X = kd.placeholder((N, C, H, Wd), "float32", name="X")
    Wt = kd.placeholder((K, C, R, R), "float32", name="Wt")
    c, ry, rx = kd.reduce_axis(C, "c"), kd.reduce_axis(R, "ry"), kd.reduce_axis(R, "rx")

    def body(b, k, y, x):
        yy, xx = y + ry - pad, x + rx - pad
        inside = (yy >= 0) & (yy < H) & (xx >= 0) & (xx < Wd)
        return kd.sum(kd.where(inside, X[b, c, yy, xx], 0.0) * Wt[k, c, ry, rx], axis=[c, ry, rx])

    Y = kd.compute((N, K, H + 2 * pad - R + 1, Wd + 2 * pad - R + 1), body, name="Y")
    x = rng(7).standard_normal((2, 3, 6, 5)).astype(np.float32)
    w = rng(8).standard_normal((4, 3, 3, 3)).astype(np.float32)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    want = np.zeros((2, 4, 6, 5), np.float32)
    for i in range(6):
        for j in range(5):
            want[:, :, i, j] = np.einsum("bcyx,kcyx->bk", xp[:, :, i:i + 3, j:j + 3], w)
    check(Y, {X: x, Wt: w}, expected=want, **F32)


# --- row reductions ---------------------------------------------------------------------------

def _rows(dtype="float32"):
    n, m = kd.sizes("n m")
    return kd.placeholder((n, m), dtype, name="X"), kd.reduce_axis(m, "r"), n, m


def _softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softmax(dtype):
    X, r, n, m = _rows(dtype)
    mx = kd.compute((n,), lambda i: kd.max(X[i, r], axis=r), name="mx")
    e = kd.compute((n, m), lambda i, j: kd.exp(X[i, j] - mx[i]), name="e")
    s = kd.compute((n,), lambda i: kd.sum(e[i, r], axis=r), name="s")
    Y = kd.compute((n, m), lambda i, j: e[i, j] / s[i], name="Y")
    x = rng(9).standard_normal((6, 11)).astype(dtype) * 10
    x[0, :] = 1000  # stable
    f, _ = check(Y, {X: x}, expected=_softmax(x), **(F32 if dtype == "float32" else F64))
    # one kernel, one row loop: the max, then exp stored once into Y while it is summed, then
    # Y rescaled in place; every tensor computed once
    assert [(k.name, k.fused) for k in f.kernels] == [("Y", ("mx", "e", "s"))]
    assert "Y[i, r1] = acc1_t" in str(kd.schedule(Y))


def test_log_sum_exp():
    X, r, n, m = _rows("float64")
    mx = kd.compute((n,), lambda i: kd.max(X[i, r], axis=r), name="mx")
    lse = kd.compute((n,), lambda i: mx[i] + kd.log(kd.sum(kd.exp(X[i, r] - mx[i]), axis=r)), name="lse")
    x = rng(10).standard_normal((5, 8)) * 50
    want = x.max(1) + np.log(np.exp(x - x.max(1, keepdims=True)).sum(1))
    check(lse, {X: x}, expected=want, **F64)


def test_layer_norm():
    X, r, n, m = _rows("float32")
    g = kd.placeholder((m,), "float32", name="g")
    b = kd.placeholder((m,), "float32", name="b")
    eps = 1e-5
    mean = kd.compute((n,), lambda i: kd.sum(X[i, r], axis=r) / kd.cast(m, "float32"), name="mean")
    var = kd.compute((n,), lambda i: kd.sum((X[i, r] - mean[i]) ** 2, axis=r) / kd.cast(m, "float32"),
                     name="var")
    Y = kd.compute((n, m), lambda i, j: (X[i, j] - mean[i]) * kd.rsqrt(var[i] + eps) * g[j] + b[j], name="Y")
    x = rng(11).standard_normal((4, 16)).astype(np.float32) * 3 + 1
    gg, bb = rng(12).standard_normal(16).astype(np.float32), rng(13).standard_normal(16).astype(np.float32)
    mu, v = x.mean(1, keepdims=True), x.var(1, keepdims=True)
    check(Y, {X: x, g: gg, b: bb}, expected=(x - mu) / np.sqrt(v + eps) * gg + bb, rtol=1e-4, atol=1e-4,
          ref_rtol=1e-5, ref_atol=1e-5)


def test_sum_with_where_counts_only_selected_points():
    X, r, n, m = _rows("float64")
    pos = kd.compute((n,), lambda i: kd.sum(X[i, r], axis=r, where=X[i, r] > 0), name="pos")
    cnt = kd.compute((n,), lambda i: kd.sum(X[i, r] > 0, axis=r), name="cnt")
    x = rng(14).standard_normal((5, 9))
    check([pos, cnt], {X: x}, expected=[np.where(x > 0, x, 0).sum(1), (x > 0).sum(1)], **F64)


def test_triangular_sum_via_where():
    X, r, n, m = _rows("float64")
    cum = kd.compute((n, m), lambda i, j: kd.sum(X[i, r], axis=r, where=r <= j), name="cum")
    x = rng(15).standard_normal((3, 7))
    check(cum, {X: x}, expected=np.cumsum(x, axis=1), **F64)


def test_sum_over_two_axes_and_nested_reductions():
    n, m, p = kd.sizes("n m p")
    X = kd.placeholder((n, m, p), "float64", name="X")
    r, s = kd.reduce_axis(m, "r"), kd.reduce_axis(p, "s")
    both = kd.compute((n,), lambda i: kd.sum(X[i, r, s], axis=[r, s]), name="both")
    nested = kd.compute((n,), lambda i: kd.max(kd.sum(X[i, r, s], axis=s), axis=r), name="nested")
    x = rng(16).standard_normal((3, 4, 5))
    check([both, nested], {X: x}, expected=[x.sum((1, 2)), x.sum(2).max(1)], **F64)


# --- argmax / argmin ----------------------------------------------------------------------------

def test_argmax_argmin_rows():
    X, r, n, m = _rows("float32")
    am = kd.compute((n,), lambda i: kd.argmax(X[i, r], axis=r), name="am")
    an = kd.compute((n,), lambda i: kd.argmin(X[i, r], axis=r), name="an")
    x = rng(17).integers(0, 4, (8, 6)).astype(np.float32)  # many ties: the first must win
    check([am, an], {X: x}, expected=[x.argmax(1), x.argmin(1)])


def test_argmax_over_two_axes_is_row_major_flat_index():
    n, m, p = kd.sizes("n m p")
    X = kd.placeholder((n, m, p), "int32", name="X")
    r, s = kd.reduce_axis(m, "r"), kd.reduce_axis(p, "s")
    am = kd.compute((n,), lambda i: kd.argmax(X[i, r, s], axis=[r, s]), name="am")
    sa = kd.compute((n,), lambda i: kd.argmin(X[i, r, s], axis=[s, r]), name="sa")  # order given: s, r
    x = rng(18).integers(0, 5, (4, 3, 5)).astype(np.int32)
    want_sa = x.transpose(0, 2, 1).reshape(4, -1).argmin(1)
    check([am, sa], {X: x}, expected=[x.reshape(4, -1).argmax(1), want_sa])


def test_argmax_with_where():
    X, r, n, m = _rows("float64")
    am = kd.compute((n,), lambda i: kd.argmax(X[i, r], axis=r, where=r % 2 == 1), name="am")
    x = rng(19).standard_normal((5, 8))
    want = np.where(np.arange(8) % 2 == 1, x, -np.inf).argmax(1)
    check(am, {X: x}, expected=want)


# --- gathers and rolls -------------------------------------------------------------------------

def test_embedding_lookup():
    v, d, n = kd.sizes("v d n")
    table = kd.placeholder((v, d), "float32", name="table")
    idx = kd.placeholder((n,), "int64", name="idx")
    E = kd.compute((n, d), lambda i, j: table[idx[i], j], name="E")
    t = rng(20).standard_normal((10, 4)).astype(np.float32)
    ix = rng(21).integers(0, 10, 13)
    check(E, {table: t, idx: ix}, expected=t[ix])


def test_gather_with_int32_indices_and_computed_index():
    v, n = kd.sizes("v n")
    table = kd.placeholder((v,), "float64", name="table")
    idx = kd.placeholder((n,), "int32", name="idx")
    G = kd.compute((n,), lambda i: table[(idx[i] * 3 + 1) % v], name="G")
    t, ix = rng(22).standard_normal(7), rng(23).integers(-20, 20, 9).astype(np.int32)
    check(G, {table: t, idx: ix}, expected=t[(ix.astype(np.int64) * 3 + 1) % 7])


@pytest.mark.parametrize("shift", [0, 1, 3, -2, 17])
def test_roll_with_mod(shift):
    n = kd.size("n")
    X = kd.placeholder((n,), "int64", name="X")
    Y = kd.compute((n,), lambda i: X[(i - shift) % n], name="Y")
    x = np.arange(10, dtype=np.int64) * 7
    check(Y, {X: x}, expected=np.roll(x, shift))


def test_roll_2d():
    n, m = kd.sizes("n m")
    X = kd.placeholder((n, m), "float32", name="X")
    Y = kd.compute((n, m), lambda i, j: X[(i + 1) % n, (j + m - 2) % m], name="Y")
    x = rng(24).standard_normal((4, 6)).astype(np.float32)
    check(Y, {X: x}, expected=np.roll(x, (-1, 2), axis=(0, 1)))


# --- shapes -------------------------------------------------------------------------------------

def test_scalar_outputs():
    n = kd.size("n")
    X = kd.placeholder((n,), "float64", name="X")
    r = kd.reduce_axis(n, "r")
    total = kd.compute((), lambda: kd.sum(X[r], axis=r), name="total")
    mean = kd.compute((), lambda: total[()] / kd.cast(n, "float64"), name="mean")
    x = rng(25).standard_normal(11)
    f, (t, mu) = check([total, mean], {X: x}, expected=[x.sum(), x.mean()], **F64)
    assert t.shape == () and mu.shape == ()


def test_scalar_input():
    s = kd.placeholder((), "float32", name="s")
    n = kd.size("n")
    X = kd.placeholder((n,), "float32", name="X")
    Y = kd.compute((n,), lambda i: X[i] * s[()], name="Y")
    x = rng(26).standard_normal(5).astype(np.float32)
    check(Y, {X: x, s: np.float32(3)}, expected=x * np.float32(3))


def test_shape_n_minus_2():
    n, m = kd.sizes("n m")
    X = kd.placeholder((n, m), "float64", name="X")
    D = kd.compute((n - 2, m), lambda i, j: X[i + 2, j] - 2 * X[i + 1, j] + X[i, j], name="D")
    x = rng(27).standard_normal((7, 3))
    check(D, {X: x}, expected=np.diff(x, n=2, axis=0), **F64)
    check(D, {X: x[:2]}, expected=np.zeros((0, 3)), **F64)  # n == 2: empty result


def test_shape_with_floordiv():
    n, w = kd.sizes("n w")
    X = kd.placeholder((n,), "float32", name="X")
    W = kd.placeholder((w,), "float32", name="W")
    Y = kd.compute(((n - w) // 2 + 1,), lambda i: X[2 * i] + W[0], name="Y")
    x, wt = np.arange(9, dtype=np.float32), np.ones(3, np.float32)
    check(Y, {X: x, W: wt}, expected=x[0:7:2] + 1)


def test_placeholder_with_size_expression_shape():
    n = kd.size("n")
    X = kd.placeholder((n,), "float64", name="X")
    Y = kd.placeholder((2 * n + 1,), "float64", name="Y")
    Z = kd.compute((n,), lambda i: X[i] + Y[2 * i + 1] + Y[2 * n], name="Z")
    x, y = rng(28).standard_normal(4), rng(29).standard_normal(9)
    check(Z, {X: x, Y: y}, expected=x + y[1::2] + y[8], **F64)


def test_constant_shapes():
    X = kd.placeholder((3, 4), "float32", name="X")
    Y = kd.compute((4, 3), lambda i, j: X[j, i], name="Y")
    x = rng(30).standard_normal((3, 4)).astype(np.float32)
    check(Y, {X: x}, expected=x.T)


# --- graphs with several outputs -----------------------------------------------------------------

def test_multiple_outputs_share_a_producer_computed_once():
    X, r, n, m = _rows("float64")
    e = kd.compute((n, m), lambda i, j: kd.exp(X[i, j]), name="e")
    s = kd.compute((n,), lambda i: kd.sum(e[i, r], axis=r), name="s")
    mx = kd.compute((n,), lambda i: kd.max(e[i, r], axis=r), name="mx")
    y = kd.compute((n, m), lambda i, j: e[i, j] / s[i], name="y")
    x = rng(31).standard_normal((4, 5))
    ex = np.exp(x)
    f, _ = check([s, mx, y], {X: x}, expected=[ex.sum(1), ex.max(1), ex / ex.sum(1, keepdims=True)], **F64)
    names = [k.name for k in f.kernels]
    assert len(f.kernels) == 4 and names.count("e") == 1, names
    assert len(f.module.temps) == 1  # e


def test_output_that_is_also_an_intermediate():
    X, r, n, m = _rows("float32")
    e = kd.compute((n, m), lambda i, j: X[i, j] * 2, name="e")
    s = kd.compute((n,), lambda i: kd.sum(e[i, r], axis=r), name="s")
    x = rng(32).standard_normal((3, 4)).astype(np.float32)
    f, _ = check([e, s], {X: x}, expected=[x * 2, (x * 2).sum(1)], **F32)
    assert len(f.kernels) == 2 and not f.module.temps


def test_unused_input_is_allowed():
    n = kd.size("n")
    X = kd.placeholder((n,), "float32", name="X")
    U = kd.placeholder((n,), "int32", name="U")
    Y = kd.compute((n,), lambda i: X[i] + 1, name="Y")
    x = np.arange(3, dtype=np.float32)
    check(Y, {X: x, U: np.zeros(3, np.int32)}, expected=x + 1)


# --- unusual arrays ------------------------------------------------------------------------------

def test_zero_size_inputs():
    A, B, C = matmul()
    f = kd.build([A, B], [C])
    for sa, sb in [((0, 3), (3, 4)), ((2, 0), (0, 4)), ((0, 0), (0, 0)), ((3, 2), (2, 0))]:
        a, b = np.ones(sa, np.float32), np.ones(sb, np.float32)
        check(C, {A: a, B: b}, expected=a @ b, f=f)


def test_zero_size_gather_table_and_indices():
    v, d, n = kd.sizes("v d n")
    table = kd.placeholder((v, d), "float32", name="table")
    idx = kd.placeholder((n,), "int64", name="idx")
    E = kd.compute((n, d), lambda i, j: table[idx[i], j], name="E")
    check(E, {table: np.zeros((0, 3), np.float32), idx: np.zeros(0, np.int64)}, expected=np.zeros((0, 3), np.float32))
    check(E, {table: np.zeros((5, 0), np.float32), idx: np.array([1, 4])}, expected=np.zeros((2, 0), np.float32))


def _strided_variants(a):
    yield "fortran", np.asfortranarray(a)
    yield "transposed", a.T.copy().T
    yield "step2", np.repeat(np.repeat(a, 2, 0), 3, 1)[::2, ::3]
    yield "negative", a[::-1, ::-1].copy()[::-1, ::-1]
    yield "negative-step", np.ascontiguousarray(a[::-1])[::-1]
    yield "broadcast", np.broadcast_to(a[:1], a.shape)  # zero strides
    big = np.zeros((a.shape[0] + 3, a.shape[1] + 5), a.dtype)
    big[1:-2, 2:-3] = a
    yield "window", big[1:-2, 2:-3]


def test_non_contiguous_inputs():
    A, B, C = matmul("float64")
    f = kd.build([A, B], [C])
    a, b = rng(33).standard_normal((5, 4)), rng(34).standard_normal((4, 6))
    for (name_a, va), (name_b, vb) in zip(_strided_variants(a), _strided_variants(b)):
        want = va @ vb
        got = f(va, vb)
        assert_same(got, want, **F64, what=f"{name_a} @ {name_b}")
        assert_same(got, kd.evaluate([C], {A: va, B: vb})[0], **F64)


def test_unaligned_input_is_accepted():
    n = kd.size("n")
    X = kd.placeholder((n,), "float64", name="X")
    Y = kd.compute((n,), lambda i: X[i] * 2, name="Y")
    raw = np.zeros(8 * 10 + 1, np.uint8)
    x = raw[1:].view(np.float64)
    x[:] = np.arange(10)
    assert not x.flags.aligned
    check(Y, {X: x}, expected=np.arange(10.0) * 2)


def test_python_lists_and_scalars_as_inputs():
    n = kd.size("n")
    X = kd.placeholder((n,), "int64", name="X")
    Y = kd.compute((n,), lambda i: X[i] * 2, name="Y")
    f = kd.build([X], [Y])
    assert_same(f([1, 2, 3]), np.array([2, 4, 6]))


# --- out= -----------------------------------------------------------------------------------------

def test_out_is_written_and_returned():
    A, B, C = matmul()
    f = kd.build([A, B], [C])
    a, b = rng(35).standard_normal((3, 4)).astype(np.float32), rng(36).standard_normal((4, 2)).astype(np.float32)
    o = np.full((3, 2), np.nan, np.float32)
    res = f(a, b, out=o)
    assert res is o
    assert_same(o, a @ b, **F32)


def test_out_non_contiguous():
    A, B, C = matmul()
    f = kd.build([A, B], [C])
    a, b = rng(37).standard_normal((3, 4)).astype(np.float32), rng(38).standard_normal((4, 5)).astype(np.float32)
    big = np.zeros((9, 6), np.float32)
    o = big[::3, 1:][:, ::-1].T.T
    f(a, b, out=o)
    assert_same(o, a @ b, **F32)
    assert big[1].sum() == 0 and big[:, 0].sum() == 0  # nothing outside the view touched


def test_out_aliasing_an_input():
    n, m = kd.sizes("n m")
    X = kd.placeholder((n, m), "float64", name="X")
    Y = kd.compute((n, m), lambda i, j: X[n - 1 - i, j] + X[i, (j + 1) % m], name="Y")
    x = rng(39).standard_normal((4, 5))
    want = x[::-1] + np.roll(x, -1, axis=1)
    f = kd.build([X], [Y])
    res = f(x, out=x)  # in place, although every element reads others
    assert res is x
    assert_same(x, want, **F64)
    x2 = rng(40).standard_normal((4, 5))
    want2 = x2.T[::-1].T[::-1] + np.roll(x2, -1, axis=1)
    xt = x2.copy()
    f(xt, out=xt)
    assert_same(xt, x2[::-1] + np.roll(x2, -1, axis=1), **F64)
    del want2


def test_out_for_several_outputs():
    X, r, n, m = _rows("float32")
    s = kd.compute((n,), lambda i: kd.sum(X[i, r], axis=r), name="s")
    y = kd.compute((n, m), lambda i, j: X[i, j] * 2, name="y")
    f = kd.build([X], [s, y])
    x = rng(41).standard_normal((3, 4)).astype(np.float32)
    os_, oy = np.empty(3, np.float32), np.empty((3, 4), np.float32)
    rs, ry = f(x, out=(os_, oy))
    assert rs is os_ and ry is oy
    assert_same(os_, x.sum(1), **F32)
    assert_same(oy, x * 2, **F32)


def test_fused_producer_keeps_its_bounds():
    n = kd.size("n")
    X = kd.placeholder((n,), "float32", name="X")
    T = kd.compute((n - 1,), lambda i: X[i] * 2, name="T")
    Y = kd.compute((n,), lambda i: T[i] + 1, name="Y")  # one element too many
    x = np.arange(4, dtype=np.float32)
    with pytest.raises(IndexError):
        kd.evaluate([Y], {X: x})
    with pytest.raises(IndexError):
        kd.build([X], [Y])(x)
