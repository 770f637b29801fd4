"""Adjoints of gathers: an index read from index arithmetic (arange) is solved like an affine
index, and a true gather (embeddings, `table[ids[t], d]`) differentiates into a scatter whose
work is the number of elements gathered, not the table's size times it."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_same, rng

import kerneldsl as kd
import kerneldsl.numpy as knp
from kerneldsl.ir.int_eval import eval_int
from kerneldsl.ir.loops import work


def _work(module, sizes: dict) -> int:
    """Statements the module's kernels run for the given sizes ({SizeVar: int})."""
    return sum(eval_int(work(k.body), sizes) for k in module.kernels)


def _nll():
    x, y = kd.matrix("x"), kd.ivector("y")
    loss = -knp.mean(knp.log(kd.nn.softmax(x))[knp.arange(x.shape[0]), y])
    (gx,) = kd.grad(loss, [x])
    return x, y, loss, gx


def test_the_nll_idiom_differentiates_to_softmax_minus_onehot():
    x, y, loss, gx = _nll()
    f = kd.function([x, y], [loss, gx])
    a = rng().standard_normal((37, 11)).astype(np.float32)
    labels = rng(1).integers(0, 11, 37).astype(np.int32)
    got_loss, got = f(a, labels)
    p = np.exp(a - a.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    want = p.copy()
    want[np.arange(37), labels] -= 1
    np.testing.assert_allclose(got, want / 37, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got_loss, -np.log(p[np.arange(37), labels]).mean(), rtol=1e-5)


def test_the_nll_idiom_gradient_does_linear_work():
    x, y, loss, gx = _nll()
    m = kd.build([x, y], [gx]).module
    (n, c), (ny,) = x.shape, y.shape
    small, big = _work(m, {n: 64, c: 10, ny: 64}), _work(m, {n: 256, c: 10, ny: 256})
    assert big <= 4.5 * small  # rows x4: work x4 (a sum over the rows per row would be x16)


def _embedding():
    V, T, D = kd.sizes("V T D")
    table = kd.placeholder((V, D), name="table")
    ids = kd.placeholder((T,), "int64", name="ids")
    out = kd.compute((T, D), lambda t, d: table[ids[t], d], name="out")
    dy = kd.placeholder((T, D), name="dy")
    (g,) = kd.grad(out, [table], dy=dy)
    return table, ids, dy, g


def _feed(v=40, t=300, d=33, seed=0):
    r = rng(seed)
    return (r.standard_normal((v, d)).astype(np.float32), r.integers(0, v, t),
            r.standard_normal((t, d)).astype(np.float32))


@pytest.mark.parametrize("target", ["c", "cuda-emu"])
def test_an_embedding_gradient_adds_every_gathered_row(target):
    table, ids, dy, g = _embedding()
    if target == "cuda-emu":
        pytest.importorskip("kerneldsl.runtime.emulator")
    f = kd.build([table, ids, dy], [g], target=target)
    ta, ia, da = _feed()  # ids repeat
    want = np.zeros_like(ta)
    np.add.at(want, ia, da)
    (ref,) = kd.evaluate([g], {table: ta, ids: ia, dy: da})
    got = f(ta, ia, da)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert_same(got, ref, rtol=1e-5, atol=1e-5, what="scatter vs reference")


def test_an_embedding_gradient_does_work_linear_in_the_gathered_elements():
    table, ids, dy, g = _embedding()
    f = kd.build([table, ids, dy], [g])
    (v, d), (t,) = table.shape, ids.shape
    base = _work(f.module, {v: 1000, t: 100, d: 8})
    more_rows = _work(f.module, {v: 1000, t: 400, d: 8})
    bigger_table = _work(f.module, {v: 4000, t: 100, d: 8})
    # zeroing the table (V * D) plus one pass over the gathered elements (T * D), no V * T * D term
    assert base <= 2 * (1000 * 8 + 100 * 8)
    assert more_rows - base <= 2 * 300 * 8
    assert bigger_table - base <= 2 * 3000 * 8


def test_an_out_of_range_id_raises_in_the_forward_and_the_scatter_skips_nothing_valid():
    table, ids, dy, g = _embedding()
    out = kd.compute(dy.shape, lambda t, d: table[ids[t], d], name="fwd")
    f = kd.build([table, ids, dy], [out, g])
    ta, ia, da = _feed(v=5, t=7, d=3)
    ia[3] = 5
    with pytest.raises(IndexError):
        f(ta, ia, da)


def test_an_embedding_update_keeps_the_scatter_a_kernel_of_its_own():
    w0 = rng().standard_normal((30, 6)).astype(np.float32)
    W = kd.shared(w0.copy(), name="W")
    ids = kd.ivector("ids")
    loss = knp.sum(knp.tanh(W[ids]))
    (g,) = kd.grad(loss, [W])
    step = kd.function([ids], [loss], updates=[(W, W - 0.5 * g)])
    names = [k.name for k in step.module.kernels]
    assert any(n.startswith("dW") for n in names), names  # not inlined into the update as a scan
    ia = np.array([3, 3, 0, 29, -1, 7], np.int32)
    step(ia)
    want = np.zeros_like(w0)
    np.add.at(want, ia, 1 - np.tanh(w0[ia]) ** 2)
    np.testing.assert_allclose(W.get_value(), w0 - 0.5 * want, rtol=1e-5, atol=1e-6)


def test_a_parallel_scatter_loop_is_refused_as_a_race():
    table, ids, dy, g = _embedding()
    s = kd.schedule(g)
    t_loop = next(lp for lp in s.loops(g) if lp.name == "t")
    with pytest.raises(kd.ScheduleError, match="race"):
        s.parallel(t_loop)


def test_a_sum_moved_outside_its_output_loop_cannot_be_parallel():
    n, k = kd.sizes("n k")
    A = kd.placeholder((n, k), name="A")
    r = kd.reduce_axis(n, "r")
    colsum = kd.compute((k,), lambda j: kd.sum(A[r, j], axis=r), name="colsum")
    s = kd.schedule(colsum)  # the default moves r outside blocks of j (a column sum)
    loops = {lp.name: lp for lp in s.loops(colsum)}
    s.serial(loops["j_o"])
    with pytest.raises(kd.ScheduleError, match="race"):
        s.parallel(loops["r"])


@pytest.mark.parametrize("target", ["c", "cuda-emu"])
def test_a_bag_of_embeddings_under_a_mask_scatters_where_the_mask_holds(target):
    V, B, K, D = kd.sizes("V B K D")
    table = kd.placeholder((V, D), name="table")
    ids = kd.placeholder((B, K), "int32", name="ids")
    dy = kd.placeholder((B, D), name="dy")
    k = kd.reduce_axis(K, "k")
    # id -1 pads a bag: it reads nothing and receives nothing
    bag = kd.compute((B, D), lambda b, d: kd.sum(table[ids[b, k], d] * 2.0, axis=k, where=ids[b, k] >= 0),
                     name="bag")
    (g,) = kd.grad(bag, [table], dy=dy)
    f = kd.build([table, ids, dy], [bag, g], target=target)
    r = rng(3)
    ta = r.standard_normal((13, 5)).astype(np.float32)
    ia = r.integers(-1, 13, (9, 4)).astype(np.int32)
    da = r.standard_normal((9, 5)).astype(np.float32)
    got_bag, got = f(ta, ia, da)
    want = np.zeros_like(ta)
    for b in range(9):
        for kk in range(4):
            if ia[b, kk] >= 0:
                want[ia[b, kk]] += 2 * da[b]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    ref_bag, ref = kd.evaluate([bag, g], {table: ta, ids: ia, dy: da})
    assert_same(got, ref, rtol=1e-5, atol=1e-5, what="scatter vs reference")
    assert_same(got_bag, ref_bag, rtol=1e-5, atol=1e-5, what="forward")
