"""kd.export.jax_op against JAX's own ops: values and gradients under jit, grad and vmap, odd
shapes, empty batches, integer inputs, float64, and bad inputs giving clear errors."""

from __future__ import annotations

import numpy as np
import pytest
from test_export_ops import embedding, layer_norm_gelu, several_outputs, softmax_xent

import kerneldsl as kd

jax = pytest.importorskip("jax")
jnp = jax.numpy


def ln_gelu_ref(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return jax.nn.gelu((x - mu) / jnp.sqrt(var + eps) * w + b, approximate=False)


@pytest.fixture(scope="module")
def ln_jop():
    ins, Y = layer_norm_gelu("float32")
    return kd.export.jax_op(list(ins), [Y], name="ln_gelu")


def data(shape, seed=0):
    rng = np.random.default_rng(seed)
    return (jnp.asarray(rng.standard_normal(shape, dtype=np.float32)),
            jnp.asarray(rng.standard_normal(shape[-1], dtype=np.float32)),
            jnp.asarray(rng.standard_normal(shape[-1], dtype=np.float32)))


def close(a, b, tol=2e-5):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


@pytest.mark.parametrize("shape", [(1, 1), (9, 33), (40, 7)])
def test_values_and_gradients_match_jax_under_jit(ln_jop, shape):
    x, w, b = data(shape, sum(shape))
    close(ln_jop(x, w, b), ln_gelu_ref(x, w, b))
    close(jax.jit(ln_jop)(x, w, b), ln_gelu_ref(x, w, b))

    def loss(f):
        return lambda x, w, b: (f(x, w, b) * jnp.cos(x)).sum()
    got = jax.jit(jax.grad(loss(ln_jop), argnums=(0, 1, 2)))(x, w, b)
    want = jax.grad(loss(ln_gelu_ref), argnums=(0, 1, 2))(x, w, b)
    for g, r in zip(got, want):
        close(g, r, 1e-4)


def test_vmap_loops_over_the_batch_and_composes_with_grad(ln_jop):
    x, w, b = data((5, 12), 1)
    xs = jnp.stack([x, 2 * x, x - 1])
    close(jax.vmap(ln_jop, in_axes=(0, None, None))(xs, w, b), jax.vmap(ln_gelu_ref, in_axes=(0, None, None))(xs, w, b))
    g = jax.jit(jax.vmap(jax.grad(lambda x, w: ln_jop(x, w, b).sum(), argnums=1), in_axes=(0, None)))(xs, w)
    r = jax.vmap(jax.grad(lambda x, w: ln_gelu_ref(x, w, b).sum(), argnums=1), in_axes=(0, None))(xs, w)
    close(g, r, 1e-4)


def test_an_empty_batch(ln_jop):
    x, w, b = data((0, 6))
    assert ln_jop(x, w, b).shape == (0, 6)
    g = jax.grad(lambda w: ln_jop(x, w, b).sum())(w)
    close(g, jnp.zeros(6))


def test_float64_gradients_agree_with_finite_differences():
    from jax.test_util import check_grads
    with jax.enable_x64(True):
        ins, Y = layer_norm_gelu("float64")
        jop = kd.export.jax_op(list(ins), [Y], name="ln_gelu64")
        rng = np.random.default_rng(2)
        x, w, b = (jnp.asarray(rng.standard_normal(s)) for s in ((4, 6), (6,), (6,)))
        check_grads(jop, (x, w, b), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)


def test_integer_inputs_and_several_outputs():
    ins, loss = softmax_xent("float32", "int32")  # int32 labels: JAX's default integer
    jop = kd.export.jax_op(list(ins), [loss], name="xent")
    rng = np.random.default_rng(3)
    logits = jnp.asarray(rng.standard_normal((11, 5), dtype=np.float32))
    labels = jnp.asarray(rng.integers(0, 5, 11).astype(np.int32))

    def ref(lg):
        return -jnp.take_along_axis(jax.nn.log_softmax(lg), labels[:, None], 1).mean()
    close(jop(logits, labels), ref(logits))
    close(jax.jit(jax.grad(jop))(logits, labels), jax.grad(ref)(logits), 1e-5)
    ins, outs = several_outputs("float32")
    three = kd.export.jax_op(list(ins), list(outs), name="three")
    x = jnp.asarray(rng.standard_normal((4, 6), dtype=np.float32))
    y, _, idx = jax.jit(three)(x)
    close(y, 2 * x + 1)
    assert idx.dtype == jnp.int64 or idx.dtype == jnp.int32  # int64 where x64 is on
    g = jax.grad(lambda x: three(x)[0].sum() + 3 * three(x)[1].sum())(x)
    want = np.full((4, 6), 2.0, np.float32)
    want[np.arange(4), np.asarray(x).argmax(1)] += 3
    close(g, want)


def test_bad_inputs_give_clear_errors_never_a_crash(ln_jop):
    x, w, b = data((3, 4))
    with pytest.raises(kd.DTypeError, match="input X must be float32, got int32"):
        ln_jop(x.astype(jnp.int32), w, b)
    with pytest.raises(kd.ShapeError, match="size m is 4 .* W is 5"):
        jax.jit(ln_jop)(x, jnp.ones(5), b)
    with pytest.raises(kd.ShapeError, match="2 dimension"):
        ln_jop(x[None], w, b)
    with pytest.raises(TypeError, match="takes 3 input"):
        ln_jop(x, w)
    with jax.enable_x64(False):
        ins, Y = layer_norm_gelu("float64")
        with pytest.raises(kd.DTypeError, match="jax_enable_x64"):
            kd.export.jax_op(list(ins), [Y], name="needs_x64")(x, w, b)


def test_an_index_out_of_range_is_a_runtime_error_with_the_kernels_message():
    ins, Y = embedding("float32", "int32")
    jop = kd.export.jax_op(list(ins), [Y], name="embed")
    table = jnp.arange(12.0, dtype=jnp.float32).reshape(4, 3)
    close(jax.jit(jop)(table, jnp.asarray([3, 0], jnp.int32)), np.asarray(table)[[3, 0]])
    with pytest.raises(Exception, match="out of range .* bad index 9"):
        jax.block_until_ready(jax.jit(jop)(table, jnp.asarray([1, 9], jnp.int32)))
    close(jop(table, jnp.asarray([1], jnp.int32)), np.asarray(table)[[1]])  # still alive
