"""The ops the export tests share (written in the loop DSL), and the export spec: what the
backward reads and saves, and the errors of a bad export."""

from __future__ import annotations

import math

import numpy as np
import pytest

import kerneldsl as kd
from kerneldsl.export.spec import op_spec

SQRT1_2 = 1.0 / math.sqrt(2.0)


def layer_norm_gelu(dtype="float32", eps=1e-5):
    """Y = gelu(layer_norm(X) * W + B) over the rows of X (n, m): the tutorial's op."""
    n, m = kd.sizes("n m")
    X = kd.placeholder((n, m), dtype, name="X")
    W = kd.placeholder((m,), dtype, name="W")
    B = kd.placeholder((m,), dtype, name="B")
    r, r2 = kd.reduce_axis(m, "r"), kd.reduce_axis(m, "r2")
    mean = kd.compute((n,), lambda i: kd.sum(X[i, r], axis=r) / m, name="mean")
    var = kd.compute((n,), lambda i: kd.sum((X[i, r2] - mean[i]) ** 2, axis=r2) / m, name="var")

    def body(i, j):
        z = (X[i, j] - mean[i]) * kd.rsqrt(var[i] + eps) * W[j] + B[j]
        return 0.5 * z * (1.0 + kd.erf(z * SQRT1_2))
    return (X, W, B), kd.compute((n, m), body, name="Y")


def bias_gelu(dtype="float32"):
    n, m = kd.sizes("n m")
    X = kd.placeholder((n, m), dtype, name="X")
    b = kd.placeholder((m,), dtype, name="b")

    def body(i, j):
        z = X[i, j] + b[j]
        return 0.5 * z * (1.0 + kd.erf(z * SQRT1_2))
    return (X, b), kd.compute((n, m), body, name="Y")


def softmax_xent(dtype="float32", label_dtype="int64"):
    """The mean over rows of -log softmax(logits)[label]: a scalar; labels get no gradient."""
    n, c = kd.sizes("n c")
    L = kd.placeholder((n, c), dtype, name="logits")
    y = kd.placeholder((n,), label_dtype, name="labels")
    k, k2, b = kd.reduce_axis(c, "k"), kd.reduce_axis(c, "k2"), kd.reduce_axis(n, "b")
    M = kd.compute((n,), lambda i: kd.max(L[i, k], axis=k), name="M")
    S = kd.compute((n,), lambda i: kd.sum(kd.exp(L[i, k2] - M[i]), axis=k2), name="S")
    loss = kd.compute((), lambda: kd.sum(M[b] + kd.log(S[b]) - L[b, y[b]], axis=b) / n, name="loss")
    return (L, y), loss


def several_outputs(dtype="float32"):
    """Y = 2X + 1 (float), the row max (float) and argmax (int64): three outputs."""
    n, m = kd.sizes("n m")
    X = kd.placeholder((n, m), dtype, name="X")
    r, r2 = kd.reduce_axis(m, "r"), kd.reduce_axis(m, "r2")
    Y = kd.compute((n, m), lambda i, j: X[i, j] * 2.0 + 1.0, name="Y")
    M = kd.compute((n,), lambda i: kd.max(X[i, r], axis=r), name="M")
    idx = kd.compute((n,), lambda i: kd.argmax(X[i, r2], axis=r2), name="idx")
    return (X,), (Y, M, idx)


def embedding(dtype="float32", index_dtype="int64"):
    """Y[t, d] = E[ids[t], d]: a gather, whose indices the kernels check one by one."""
    v, d, t = kd.sizes("v d t")
    E = kd.placeholder((v, d), dtype, name="E")
    ids = kd.placeholder((t,), index_dtype, name="ids")
    return (E, ids), kd.compute((t, d), lambda i, j: E[ids[i], j], name="Y")


def gelu_np(z):
    from math import erf
    return 0.5 * z * (1.0 + np.vectorize(erf)(z * SQRT1_2))


def layer_norm_gelu_np(x, w, b, eps=1e-5):
    x = x.astype(np.float64)
    mu = x.mean(1, keepdims=True)
    var = ((x - mu) ** 2).mean(1, keepdims=True)
    return gelu_np((x - mu) / np.sqrt(var + eps) * w + b)


# --- the spec ------------------------------------------------------------------------------

def test_backward_saves_only_what_it_reads():
    (X, b), Y = bias_gelu()
    spec = op_spec([X, b], [Y], "bias_gelu")
    # gelu'(z) needs z = X + b: both inputs, and not the output
    assert spec.saved_inputs == (0, 1) and spec.saved_outputs == ()
    assert [t.name for t in spec.backward.inputs] == ["X", "b", "dY"]
    assert list(spec.backward.output_names) == ["dX", "db"]


def test_backward_reads_the_saved_output_instead_of_recomputing_it():
    n = kd.size("n")
    X = kd.placeholder((n,), name="X")
    Y = kd.compute((n,), lambda i: kd.exp(X[i]), name="Y")
    spec = op_spec([X], [Y], "exp")
    assert spec.saved_inputs == () and spec.saved_outputs == (0,)  # dX = dY * Y


def test_integer_inputs_and_outputs_have_no_gradient():
    (L, y), loss = softmax_xent()
    spec = op_spec([L, y], [loss], "xent")
    assert spec.grad_inputs == (0,) and spec.grad_outputs == (0,)
    (X,), outs = several_outputs()
    spec = op_spec([X], list(outs), "three")
    assert spec.grad_outputs == (0, 1)  # idx is int64: no cotangent
    assert [t.name for t in spec.backward.inputs][-2:] == ["dY", "dM"]


def test_a_size_only_an_unsaved_input_binds_is_bound_by_saving_it():
    n = kd.size("n")
    X = kd.placeholder((n,), name="X")
    Y = kd.compute((n - 2,), lambda i: X[i + 1] * 3.0, name="Y")
    spec = op_spec([X], [Y], "crop")
    assert spec.saved_inputs == (0,)  # dX = 3 dY shifted: X's values are not read, its size is


def test_an_identity_gradient_is_a_compute_of_its_own():
    n = kd.size("n")
    X = kd.placeholder((n,), name="X")
    Y = kd.compute((n,), lambda i: X[i] + 1.0, name="Y")
    spec = op_spec([X], [Y], "shift")
    assert isinstance(spec.backward.outputs[0], kd.ComputeOp)
    f = kd.build(list(spec.backward.inputs), list(spec.backward.outputs))
    dy = np.arange(4, dtype=np.float32)
    np.testing.assert_array_equal(f(dy), dy)


def test_bad_exports_are_refused_with_the_reason():
    (X, b), Y = bias_gelu()
    with pytest.raises(ValueError, match="functional"):
        op_spec([X, b], [X], "inplace")
    with pytest.raises(ValueError, match="not among the inputs"):
        op_spec([X], [Y], "missing")
    with pytest.raises(ValueError, match="identifier"):
        op_spec([X, b], [Y], "not a name")
    with pytest.raises(TypeError, match="placeholders"):
        op_spec([Y], [Y], "y")
