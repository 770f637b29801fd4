"""Contractions: which ops become the GEMM template, and that the template matches the reference at
every size (edges of every block, empty K, strided inputs, both dtypes, both parallel splits)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_same, matmul, rng

import kerneldsl as kd
from kerneldsl import Target
from kerneldsl.schedule import contraction as CT
from kerneldsl.schedule.templates import lanes, template

TOL = {"float32": {"rtol": 2e-5, "atol": 2e-5}, "float64": {"rtol": 1e-12, "atol": 1e-12}}
def gemm_defaults(dtype):
    return template("gemm", Target.detect("c")).defaults(Target.detect("c"), dtype)


def small(dtype):
    """Tiny blocks, so that small sizes cross every block edge: K blocks, MC row blocks, NC panels."""
    mr, nr = gemm_defaults(dtype)["mr"], gemm_defaults(dtype)["nr"]
    return {"min_work": 0, "kc": 5, "mc": 2 * mr, "nc": 2 * nr}


def batched(dtype="float32"):
    b, n, m, k = kd.sizes("b n m k")
    A = kd.placeholder((b, n, k), dtype, name="A")
    B = kd.placeholder((b, k, m), dtype, name="B")
    r = kd.reduce_axis(k, name="r")
    return A, B, kd.compute((b, n, m), lambda q, i, j: kd.sum(A[q, i, r] * B[q, r, j], axis=r), name="C")


def dense(dtype="float32"):
    n, m, k = kd.sizes("n m k")
    X = kd.placeholder((n, k), dtype, name="X")
    W = kd.placeholder((k, m), dtype, name="W")
    bias = kd.placeholder((m,), dtype, name="bias")
    r = kd.reduce_axis(k, name="r")
    mm = kd.compute((n, m), lambda i, j: kd.sum(X[i, r] * W[r, j], axis=r), name="mm")
    return X, W, bias, kd.compute((n, m), lambda i, j: kd.tanh(mm[i, j] + bias[j]), name="Y")


def conv2d(dtype="float32", stride=1, pad=1, nhwc=False):
    """NCHW (or NHWC) 3x3 convolution with zero padding and a per-channel bias."""
    n, ci, co, h, w = kd.sizes("n ci co h w")
    X = kd.placeholder((n, h, w, ci) if nhwc else (n, ci, h, w), dtype, name="X")
    W = kd.placeholder((co, ci, 3, 3), dtype, name="W")
    bias = kd.placeholder((co,), dtype, name="bias")
    oh, ow = (h + 2 * pad - 3) // stride + 1, (w + 2 * pad - 3) // stride + 1
    rc, rh, rw = kd.reduce_axis(ci, "rc"), kd.reduce_axis(3, "rh"), kd.reduce_axis(3, "rw")

    def x(b, c, y, z):
        y, z = y * stride + rh - pad, z * stride + rw - pad
        inside = (y >= 0) & (y < h) & (z >= 0) & (z < w)
        return kd.where(inside, X[b, y, z, c] if nhwc else X[b, c, y, z], 0)
    if nhwc:
        Y = kd.compute((n, oh, ow, co), lambda b, y, z, c: kd.sum(
            x(b, rc, y, z) * W[c, rc, rh, rw], axis=(rc, rh, rw)) + bias[c], name="Y")
    else:
        Y = kd.compute((n, co, oh, ow), lambda b, c, y, z: kd.sum(
            x(b, rc, y, z) * W[c, rc, rh, rw], axis=(rc, rh, rw)) + bias[c], name="Y")
    return X, W, bias, Y


def conv_ref(x, wt, bias, stride, pad):
    """NCHW conv2d in numpy (float64)."""
    x = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    n, _, h, w = x.shape
    oh, ow = (h - 3) // stride + 1, (w - 3) // stride + 1
    out = np.zeros((n, wt.shape[0], oh, ow))
    for kh in range(3):
        for kw in range(3):
            patch = x[:, :, kh:kh + stride * (oh - 1) + 1:stride, kw:kw + stride * (ow - 1) + 1:stride]
            out += np.einsum("nchw,oc->nohw", patch, wt[:, :, kh, kw].astype(np.float64))
    return out + bias.astype(np.float64)[None, :, None, None]


def names(axes):
    return tuple(a.name for a in axes)


# --- what is recognised ---------------------------------------------------------------------

def test_matmul_is_a_contraction():
    c = CT.match(matmul()[2])
    assert (names(c.batch), names(c.m), names(c.n), names(c.k)) == ((), ("i",), ("j",), ("r",))
    assert str(c.a) == "A[i, r]" and str(c.b) == "B[r, j]"


def test_transposed_operands_are_a_contraction():
    c = CT.match(matmul(ta=True, tb=True)[2])
    assert (names(c.m), names(c.n)) == (("i",), ("j",))
    assert str(c.a) == "A[r, i]" and str(c.b) == "B[j, r]"


def test_batched_matmul_has_a_batch_axis():
    c = CT.match(batched()[2])
    assert (names(c.batch), names(c.m), names(c.n)) == (("q",), ("i",), ("j",))


def test_dense_layer_keeps_bias_and_tanh_as_epilogue():
    X, W, bias, Y = dense()
    f = kd.build([X, W, bias], [Y])
    (k,) = f.kernels
    assert k.template == "gemm" and k.fused  # mm fused into Y: one kernel
    c = k.contraction.contraction
    assert str(c.epilogue) == "tanh(acc + bias[j])"


def test_conv2d_is_an_implicit_gemm_over_the_padded_view():
    c = CT.match(conv2d(stride=2)[3])
    # columns: the output's contiguous (n, oh, ow); rows: output channels; K: (ci, kh, kw)
    assert (names(c.m), names(c.n), names(c.k)) == (("c",), ("b", "y", "z"), ("rc", "rh", "rw"))
    assert "where" in str(c.b) and str(c.a) == "W[c, rc, rh, rw]"


@pytest.mark.parametrize("body", ["rowdot", "max", "elementwise", "guarded", "int", "matvec"])
def test_non_contractions_are_left_to_the_loop_nest(body):
    n, k = kd.sizes("n k")
    x = kd.placeholder((n, k), "int32" if body == "int" else "float32", name="x")
    v = kd.placeholder((k,), "float32", name="v")
    r = kd.reduce_axis(k, name="r")
    fn = {
        "rowdot": lambda i, j: kd.sum(x[i, r] * x[j, r] * x[j, r], axis=r) + kd.sum(x[i, r], axis=r),
        "max": lambda i, j: kd.max(x[i, r] * x[r, j], axis=r),
        "elementwise": lambda i, j: x[i, j] * x[j, i],
        "guarded": lambda i, j: kd.where(i < j, kd.sum(x[i, r] * x[r, j], axis=r), 0.0),
        "int": lambda i, j: kd.sum(x[i, r] * x[r, j], axis=r),
        "matvec": lambda i, j: kd.sum(x[i, r] * v[r], axis=r) * v[j],
    }[body]
    y = kd.compute((n, n), fn, name="y")
    assert CT.match(y) is None


def test_knobs_are_on_the_kernel_and_checked():
    A, B, C = matmul()
    with kd.knobs(kc=64):
        (k,) = kd.build([A, B], [C]).kernels
    assert k.knobs["kc"] == 64 and {"mr", "nr", "mc", "nc", "threads"} <= set(k.knobs)
    with pytest.raises(ValueError, match="multiple of the vector lanes"), kd.knobs(nr=lanes(Target.detect("c"), "float32") + 1):
        kd.build([A, B], [C])
    with kd.knobs(gemm=False):
        assert kd.build([A, B], [C]).kernels[0].template == "loops"


# --- results ------------------------------------------------------------------------------

SIZES = [(1, 1, 1), (1, 7, 1), (5, 3, 2), (6, 16, 16), (13, 17, 11), (7, 0, 5), (23, 41, 37), (50, 64, 70)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_matmul_matches_numpy_at_awkward_sizes(dtype):
    A, B, C = matmul(dtype)
    with kd.knobs(**small(dtype)):
        f = kd.build([A, B], [C])
    assert f.kernels[0].template == "gemm"
    r = rng(0)
    for n, k, m in SIZES:
        a, b = r.standard_normal((n, k)).astype(dtype), r.standard_normal((k, m)).astype(dtype)
        assert_same(f(a, b), (a @ b).astype(dtype), **TOL[dtype], what=f"{n}x{k}x{m}")
    # non-contiguous operands and output rows: the general-stride variant
    a = r.standard_normal((30, 2 * 19)).astype(dtype)[:, ::2]
    b = r.standard_normal((23, 19)).astype(dtype).T
    assert_same(f(a, b), (a @ b).astype(dtype), **TOL[dtype], what="strided")


def test_default_knobs_match_numpy_and_the_reference_across_blocks():
    A, B, C = matmul(ta=True)
    f = kd.build([A, B], [C])
    r = rng(1)
    for n, k, m in [(131, 263, 67), (300, 20, 3), (2, 9, 301)]:  # M split, N split, skinny
        a, b = r.standard_normal((k, n)).astype(np.float32), r.standard_normal((k, m)).astype(np.float32)
        got = f(a, b)
        assert_same(got, kd.evaluate([C], {A: a, B: b})[0], rtol=1e-4, atol=1e-4, what=f"{n}x{k}x{m}")
        assert_same(got, (a.T.astype(np.float64) @ b).astype(np.float32), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_parallel_splits_of_rows_and_columns(threads):
    A, B, C = matmul("float64", tb=True)
    with kd.knobs(threads=threads, kc=16, mc=24, nc=32):
        f = kd.build([A, B], [C])
    r = rng(2)
    for n, k, m in [(97, 40, 13), (11, 40, 151), (64, 33, 64)]:
        a, b = r.standard_normal((n, k)), r.standard_normal((m, k))
        assert_same(f(a, b), a @ b.T, **TOL["float64"], what=f"{n}x{k}x{m}")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_batched_matmul(dtype):
    A, B, C = batched(dtype)
    with kd.knobs(**small(dtype)):
        f = kd.build([A, B], [C])
    r = rng(3)
    for q, n, k, m in [(1, 1, 1, 1), (3, 7, 11, 5), (5, 20, 9, 33)]:
        a, b = r.standard_normal((q, n, k)).astype(dtype), r.standard_normal((q, k, m)).astype(dtype)
        assert_same(f(a, b), np.matmul(a, b), **TOL[dtype], what=f"{q}x{n}x{k}x{m}")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dense_bias_tanh(dtype):
    X, W, bias, Y = dense(dtype)
    with kd.knobs(**small(dtype)):
        f = kd.build([X, W, bias], [Y])
    r = rng(4)
    for n, k, m in [(1, 3, 1), (17, 29, 19), (40, 784 // 8, 100)]:
        x, w, b = (r.standard_normal(s).astype(dtype) for s in ((n, k), (k, m), (m,)))
        assert_same(f(x, w, b), np.tanh(x @ w + b).astype(dtype), **TOL[dtype], what=f"{n}x{k}x{m}")


@pytest.mark.parametrize("stride,pad", [(1, 1), (2, 1), (1, 0)])
def test_conv2d_nchw(stride, pad):
    X, W, bias, Y = conv2d(stride=stride, pad=pad)
    with kd.knobs(**small("float32")):
        f = kd.build([X, W, bias], [Y])
    assert f.kernels[0].template == "gemm"
    r = rng(5)
    for n, ci, co, h, w in [(1, 1, 1, 3, 3), (2, 3, 5, 7, 6), (3, 2, 17, 9, 11)]:
        x = r.standard_normal((n, ci, h, w)).astype(np.float32)
        wt = r.standard_normal((co, ci, 3, 3)).astype(np.float32)
        b = r.standard_normal(co).astype(np.float32)
        got = f(x, wt, b)
        assert_same(got, conv_ref(x, wt, b, stride, pad).astype(np.float32), rtol=1e-4, atol=1e-4,
                    what=f"{(n, ci, co, h, w)}")
        assert_same(got, kd.evaluate([Y], {X: x, W: wt, bias: b})[0], rtol=1e-4, atol=1e-4)


def test_conv2d_nhwc_walks_rows_of_several_axes():
    X, W, bias, Y = conv2d(nhwc=True)
    c = CT.match(Y)
    assert (names(c.m), names(c.n)) == (("b", "y", "z"), ("c",))
    with kd.knobs(**small("float64"), threads=2):
        f = kd.build([X, W, bias], [Y])
    r = rng(6)
    for n, ci, co, h, w in [(1, 1, 1, 1, 1), (2, 3, 5, 7, 6), (3, 4, 19, 5, 13)]:
        x = r.standard_normal((n, ci, h, w)).astype(np.float32)
        wt = r.standard_normal((co, ci, 3, 3)).astype(np.float32)
        b = r.standard_normal(co).astype(np.float32)
        got = f(np.ascontiguousarray(x.transpose(0, 2, 3, 1)), wt, b)
        want = conv_ref(x, wt, b, 1, 1).transpose(0, 2, 3, 1).astype(np.float32)
        assert_same(got, want, rtol=1e-4, atol=1e-4, what=f"{(n, ci, co, h, w)}")


def test_bounds_errors_still_come_from_lowering():
    n, k = kd.sizes("n k")
    A = kd.placeholder((n, k), name="A")
    B = kd.placeholder((k, n), name="B")
    r = kd.reduce_axis(k, name="r")
    C = kd.compute((n, n), lambda i, j: kd.sum(A[i, r + 1] * B[r, j], axis=r), name="C")  # reads A[:, k]
    with kd.knobs(min_work=0):
        f = kd.build([A, B], [C])
    assert f.kernels[0].template == "gemm"
    with pytest.raises(IndexError):
        f(np.ones((4, 3), np.float32), np.ones((3, 4), np.float32))


# --- backward kernels from kd.grad --------------------------------------------------------------

def conv_grad_ref(x, wt, dy, stride, pad):
    """dX and dW of conv_ref (no bias) in numpy (float64): the adjoint of each tap's strided patch."""
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dxp, dw = np.zeros_like(xp), np.zeros(wt.shape)
    oh, ow = dy.shape[2:]
    dy = dy.astype(np.float64)
    for kh in range(3):
        for kw in range(3):
            win = (slice(None), slice(None), slice(kh, kh + stride * (oh - 1) + 1, stride),
                   slice(kw, kw + stride * (ow - 1) + 1, stride))
            dw[:, :, kh, kw] = np.einsum("nchw,nohw->oc", xp[win], dy)
            dxp[win] += np.einsum("nohw,oc->nchw", dy, wt[:, :, kh, kw].astype(np.float64))
    return dxp[:, :, pad:pad + x.shape[2], pad:pad + x.shape[3]], dw


def test_conv2d_input_gradient_moves_its_where_onto_the_gradient_operand():
    X, W, _, Y = conv2d(stride=2)
    dY = kd.placeholder(Y.shape, name="dY")
    dX, dW = kd.grad(Y, [X, W], dy=dY)
    c = CT.match(dX)  # dX[b, rc, ...] = sum((c, rh, rw), dY[...] * W[c, rc, rh, rw], where=padding/stride)
    assert c is not None and c.guarded == "b" and str(c.a).startswith("W[")
    assert str(c.b).startswith("where(") and "% 2 == 0" in str(c.b)
    assert names(c.m) == ("rc",) and len(c.n) == 3 and names(c.k) == ("c", "rh", "rw")
    assert CT.match(dW) is not None


def test_a_where_reading_both_operands_stays_a_loop_nest():
    n, k = kd.sizes("n k")
    x = kd.placeholder((n, k), name="x")
    r = kd.reduce_axis(k, name="r")
    y = kd.compute((n, n), lambda i, j: kd.sum(x[i, r] * x[r, j], axis=r, where=i < j), name="y")
    assert CT.match(y) is None


@pytest.mark.parametrize("stride,pad", [(1, 1), (2, 1), (1, 0), (2, 0)])
def test_conv2d_backward_runs_the_gemm_template(stride, pad):
    X, W, _, Y = conv2d(stride=stride, pad=pad)
    dY = kd.placeholder(Y.shape, name="dY")
    dX, dW = kd.grad(Y, [X, W], dy=dY)
    with kd.knobs(**small("float32")):
        f = kd.build([X, W, dY], [dX, dW])
    assert [k.template for k in f.kernels] == ["gemm", "gemm"]
    r = rng(7)
    for n, ci, co, h, w in [(1, 1, 1, 3, 3), (2, 3, 5, 7, 6), (3, 2, 17, 9, 11), (2, 7, 3, 4, 10)]:
        x = r.standard_normal((n, ci, h, w)).astype(np.float32)
        wt = r.standard_normal((co, ci, 3, 3)).astype(np.float32)
        oh, ow = (h + 2 * pad - 3) // stride + 1, (w + 2 * pad - 3) // stride + 1
        dy = r.standard_normal((n, co, oh, ow)).astype(np.float32)
        got = f(x, wt, dy)
        want = conv_grad_ref(x, wt, dy, stride, pad)
        ref = kd.evaluate([dX, dW], {X: x, W: wt, dY: dy})
        for g, w_, e, what in zip(got, want, ref, ("dX", "dW")):
            assert_same(g, w_.astype(np.float32), rtol=1e-4, atol=1e-4, what=f"{what} {(n, ci, co, h, w)}")
            assert_same(g, e, rtol=1e-4, atol=1e-4, what=f"{what} {(n, ci, co, h, w)} vs evaluate")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_matmul_backward_runs_the_gemm_template(dtype):
    A, B, C = matmul(dtype)
    dC = kd.placeholder(C.shape, dtype, name="dC")
    dA, dB = kd.grad(C, [A, B], dy=dC)
    with kd.knobs(**small(dtype)):
        f = kd.build([A, B, dC], [dA, dB])
    assert [k.template for k in f.kernels] == ["gemm", "gemm"]
    r = rng(8)
    for n, k, m in SIZES:
        a, b = r.standard_normal((n, k)).astype(dtype), r.standard_normal((k, m)).astype(dtype)
        dc = r.standard_normal((n, m)).astype(dtype)
        da, db = f(a, b, dc)
        assert_same(da, (dc @ b.T).astype(dtype), **TOL[dtype], what=f"dA {n}x{k}x{m}")
        assert_same(db, (a.T @ dc).astype(dtype), **TOL[dtype], what=f"dB {n}x{k}x{m}")
