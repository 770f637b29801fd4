"""rfactor, cache_write, cache_read and compute_at: each keeps the result (loop-IR interpreter and
compiled C, sizes that do and don't divide the factors), replays from its trace, and refuses
what it does not support with a ScheduleError naming the loop."""

import numpy as np
import pytest
from conftest import loop_schedule, matmul

import kerneldsl as kd
from kerneldsl.ir.loop_interp import run_module

rng = np.random.default_rng(11)


def check(s, ins, outs, arrays, expect, rtol=1e-5, atol=1e-5):
    got = run_module(s.module, arrays)
    for g, e in zip(got, expect):
        np.testing.assert_allclose(g, e, rtol=rtol, atol=atol)
    f = kd.build(ins, outs, schedule=s)
    got = f(*arrays)
    got = got if isinstance(got, (tuple, list)) else [got]
    for g, e in zip(got, expect):
        np.testing.assert_allclose(g, e, rtol=rtol, atol=atol)
    again = loop_schedule(outs, inputs=ins, trace=kd.Trace.from_json(s.trace.to_json()), fuse=s.fuse_enabled)
    assert str(again) == str(s)
    return f


def row_reduce(fn):
    n, k = kd.sizes("n k")
    A = kd.placeholder((n, k), name="A")
    r = kd.reduce_axis(k, name="r")
    C = kd.compute((n,), lambda i: fn(A[i, r], axis=r), name="C")
    return A, C


# --- rfactor -----------------------------------------------------------------------------
@pytest.mark.parametrize("factor", [1, 3, 4, 8])
@pytest.mark.parametrize("shape", [(5, 16), (3, 7), (2, 1), (4, 0)])
def test_rfactor_sum_keeps_result_and_the_partial_loop_can_be_parallel(factor, shape):
    A, C = row_reduce(kd.sum)
    s = loop_schedule(C)
    i, r = s.loops(C)
    ro, ri = s.rfactor(r, factor)
    s.serial(i)
    s.parallel(ro)
    text = str(s)
    assert f"allocate acc_rf: float32[{factor}]  # local" in text and "for r_o in range(" in text
    a = rng.standard_normal(shape).astype(np.float32)
    f = check(s, [A], [C], [a], [a.sum(1)])
    assert f"l_acc_rf[{factor}]" in f.source and "#pragma omp parallel for" in f.source


@pytest.mark.parametrize("fn, ref", [(kd.max, np.max), (kd.min, np.min), (kd.prod, np.prod)])
def test_rfactor_max_min_prod_keep_result(fn, ref):
    A, C = row_reduce(fn)
    s = loop_schedule(C)
    i, r = s.loops(C)
    s.rfactor(r, 3)
    a = rng.uniform(0.5, 1.5, (4, 10)).astype(np.float32)
    check(s, [A], [C], [a], [ref(a, axis=1)])


@pytest.mark.parametrize("fn", [kd.max, kd.min])
def test_rfactor_max_keeps_nan_semantics(fn):
    A, C = row_reduce(fn)
    s = loop_schedule(C)
    i, r = s.loops(C)
    s.rfactor(r, 4)
    a = rng.standard_normal((4, 9)).astype(np.float32)
    a[0, 8] = np.nan  # in the last, short chunk
    a[2, 0] = np.nan  # in the first chunk
    expect = np.max(a, axis=1) if fn is kd.max else np.min(a, axis=1)
    check(s, [A], [C], [a], [expect])


def test_rfactor_of_a_scalar_sum_splits_its_parallel_loop():
    n = kd.size("n")
    x = kd.placeholder((n,), name="x")
    r = kd.reduce_axis(n, name="r")
    y = kd.compute((), lambda: kd.sum(x[r] * x[r], axis=r), name="y")
    s = loop_schedule(y)
    (r_,) = s.loops(y)
    ro, ri = s.rfactor(r_, 8)
    s.parallel(ro)
    assert "for r_o in range(8):  # parallel" in str(s)
    for size in (100, 5, 0):
        a = rng.standard_normal(size).astype(np.float32)
        check(s, [x], [y], [a], [np.sum(a * a)], rtol=1e-4)


def test_rfactor_is_deterministic_run_to_run():
    n = kd.size("n")
    x = kd.placeholder((n,), name="x")
    r = kd.reduce_axis(n, name="r")
    y = kd.compute((), lambda: kd.sum(x[r], axis=r), name="y")
    s = loop_schedule(y)
    s.rfactor(s.loops(y)[0], 16)
    f = kd.build([x], [y], schedule=s)
    a = rng.standard_normal(1 << 17).astype(np.float32)
    first = f(a)
    for _ in range(5):
        assert f(a).tobytes() == first.tobytes()


def test_rfactor_of_the_inner_loop_of_a_two_axis_reduction():
    n, k = kd.sizes("n k")
    A = kd.placeholder((n, k, k), name="A")
    r1, r2 = kd.reduce_axis(k, name="r1"), kd.reduce_axis(k, name="r2")
    C = kd.compute((n,), lambda i: kd.sum(A[i, r1, r2], axis=[r1, r2]), name="C")
    s = loop_schedule(C)
    i, a1, a2 = s.loops(C)
    s.rfactor(a2, 2)
    a = rng.standard_normal((3, 5, 5)).astype(np.float32)
    check(s, [A], [C], [a], [a.sum((1, 2))])


@pytest.mark.parametrize("action, message", [
    (lambda s, i, r: s.rfactor(i, 2), "'i' is not a reduction loop"),
    (lambda s, i, r: s.rfactor(r, 0), "positive int"),
    (lambda s, i, r: s.rfactor(kd.LoopRef("C", "q"), 2), "no loop named 'q'"),
])
def test_rfactor_refuses_what_it_cannot_split(action, message):
    A, C = row_reduce(kd.sum)
    s = loop_schedule(C)
    with pytest.raises(kd.ScheduleError, match=message):
        action(s, *s.loops(C))


def test_rfactor_refuses_argmax():
    A, C = row_reduce(kd.argmax)
    s = loop_schedule(C)
    with pytest.raises(kd.ScheduleError, match="several accumulators"):
        s.rfactor(s.loops(C)[1], 2)


def test_parallel_reduction_loop_still_points_to_rfactor():
    A, C = row_reduce(kd.sum)
    s = loop_schedule(C)
    i, r = s.loops(C)
    s.serial(i)
    with pytest.raises(kd.ScheduleError, match="use rfactor"):
        s.parallel(r)


# --- cache_write / cache_read --------------------------------------------------------------
def blocked(fj=8, fr=4):
    """for i: for j_o: for r_o: for r_i: for j_i: C[i, j] += A[i, r] * B[r, j]"""
    A, B, C = matmul()
    s = loop_schedule(C)
    i, j, r = s.loops(C)
    s.decompose_reduction(j)
    i, j_init, j, r = s.loops(C)
    j_o, j_i = s.split(j, fj)
    r_o, r_i = s.split(r, fr)
    s.reorder(j_o, r_o, r_i, j_i)
    return A, B, C, s, dict(zip(("i", "j_init", "j_o", "r_o", "r_i", "j_i"), s.loops(C)))


SHAPES = [((7, 12), (12, 16)), ((5, 9), (9, 11)), ((1, 1), (1, 1)), ((3, 0), (0, 5))]


@pytest.mark.parametrize("shapes", SHAPES)
def test_cache_write_accumulates_a_row_tile_locally(shapes):
    A, B, C, s, lp = blocked()
    s.cache_write(C, lp["r_o"])
    text = str(s)
    assert "allocate C_local: float32[8]  # local" in text and "C_local[j_i] = C_local[j_i] + " in text
    a, b = (rng.standard_normal(sh).astype(np.float32) for sh in shapes)
    check(s, [A, B], [C], [a, b], [a @ b])


@pytest.mark.parametrize("shapes", SHAPES)
def test_cache_read_packs_one_and_two_dimensional_tiles(shapes):
    A, B, C, s, lp = blocked()
    s.cache_read(B, lp["r_i"])  # a 4 x 8 box of B
    s.cache_read(A, lp["r_i"])  # 4 values of A's row
    text = str(s)
    assert "allocate B_local: float32[4, 8]  # local" in text and "allocate A_local: float32[4]" in text
    assert "B_local[r_i, j_i]" in text and "A_local[r_i]" in text
    a, b = (rng.standard_normal(sh).astype(np.float32) for sh in shapes)
    check(s, [A, B], [C], [a, b], [a @ b])


@pytest.mark.parametrize("shapes", SHAPES)
def test_cache_read_and_cache_write_together_with_vectorized_tile(shapes):
    A, B, C, s, lp = blocked(fj=4, fr=3)
    s.cache_read(B, lp["r_i"])
    s.cache_write(C, lp["r_o"])
    s.vectorize(s.loops(C)[-2])  # j_i, the innermost loop of the update
    a, b = (rng.standard_normal(sh).astype(np.float32) for sh in shapes)
    check(s, [A, B], [C], [a, b], [a @ b])


@pytest.mark.parametrize("action, message", [
    (lambda s, lp: s.cache_write("C", kd.LoopRef("C", "j")), "not a constant bound"),
    (lambda s, lp: s.cache_read("C", kd.LoopRef("C", "r")), "use cache_write"),
    (lambda s, lp: s.cache_write("B", kd.LoopRef("C", "r")), "does not write B"),
    (lambda s, lp: s.cache_read("Z", kd.LoopRef("C", "r")), "does not access a tensor named 'Z'"),
])
def test_cache_primitives_refuse_unsupported_forms(action, message):
    A, B, C = matmul()
    s = loop_schedule(C)
    i, j, r = s.loops(C)
    s.decompose_reduction(j)
    with pytest.raises(kd.ScheduleError, match=message):
        action(s, None)


def test_cache_read_refuses_a_gathered_index():
    n = kd.size("n")
    x = kd.placeholder((n,), name="x")
    idx = kd.placeholder((n,), dtype="int64", name="idx")
    y = kd.compute((n,), lambda i: x[idx[i]], name="y")
    s = loop_schedule(y)
    i_o, i_i = s.split(s.loops(y)[0], 4)
    with pytest.raises(kd.ScheduleError, match="checked"):
        s.cache_read(x, i_i)


def test_cache_write_refuses_a_parallel_loop_inside():
    A, B, C, s, lp = blocked()
    s.serial(lp["i"])
    s.parallel(lp["j_o"])
    with pytest.raises(kd.ScheduleError, match="parallel"):
        s.cache_write(C, lp["j_o"])


# --- compute_at ----------------------------------------------------------------------------
def producer_consumer():
    n, m = kd.sizes("n m")
    x = kd.placeholder((n, m), name="x")
    T = kd.compute((n, m), lambda i, j: kd.exp(x[i, j]) * 2, name="T")
    D = kd.compute((n, m), lambda i, j: T[i, j] - T[i, m - 1 - j], name="D")
    return x, T, D


@pytest.mark.parametrize("shape", [(4, 7), (1, 1), (0, 3), (3, 0)])
def test_compute_at_computes_the_producer_row_inside_the_consumer_loop(shape):
    x, T, D = producer_consumer()
    s = loop_schedule(D, fuse=False)
    assert [k.name for k in s.module.kernels] == ["T", "D"]
    i, j = s.loops(D)
    s.compute_at(T, i)
    assert [k.name for k in s.module.kernels] == ["D"]
    text = str(s)
    assert text.index("T[i, j1] = ") < text.index("D[i, j] = ")
    a = rng.standard_normal(shape).astype(np.float32)
    t = np.exp(a) * 2
    check(s, [x], [D], [a], [t - t[:, ::-1]])


def test_compute_at_of_a_row_reduction_producer():
    n, m = kd.sizes("n m")
    x = kd.placeholder((n, m), name="x")
    r = kd.reduce_axis(m, name="r")
    M = kd.compute((n,), lambda i: kd.max(x[i, r], axis=r), name="M")
    D = kd.compute((n, m), lambda i, j: x[i, j] - M[i], name="D")
    s = loop_schedule(D, fuse=False)
    s.compute_at(M, s.loops(D)[0])
    a = rng.standard_normal((5, 6)).astype(np.float32)
    check(s, [x], [D], [a], [a - a.max(1, keepdims=True)])


def test_compute_at_refuses_reads_of_other_rows_and_outputs():
    n, m = kd.sizes("n m")
    x = kd.placeholder((n, m), name="x")
    T = kd.compute((n, m), lambda i, j: x[i, j] * 2, name="T")
    D = kd.compute((n, m), lambda i, j: T[n - 1 - i, j], name="D")
    s = loop_schedule(D, fuse=False)
    with pytest.raises(kd.ScheduleError, match="only reads of row i"):
        s.compute_at(T, s.loops(D)[0])
    s2 = loop_schedule([T, D], fuse=False)
    with pytest.raises(kd.ScheduleError, match="output"):
        s2.compute_at(T, s2.loops(D)[0])


def test_rfactor_of_a_conditional_sum_keeps_its_condition():
    n, k = kd.sizes("n k")
    A = kd.placeholder((n, k), name="A")
    r = kd.reduce_axis(k, name="r")
    C = kd.compute((n,), lambda i: kd.sum(A[i, r], axis=r, where=A[i, r] > 0), name="C")
    s = loop_schedule(C)
    s.rfactor(s.loops(C)[1], 3)
    a = rng.standard_normal((4, 10)).astype(np.float32)
    check(s, [A], [C], [a], [np.where(a > 0, a, 0).sum(1)])


def test_split_substitutes_inside_checked_indices():
    n = kd.size("n")
    x = kd.placeholder((n,), name="x")
    idx = kd.placeholder((n,), dtype="int64", name="idx")
    y = kd.compute((n,), lambda i: x[idx[i]], name="y")
    s = loop_schedule(y, inputs=[x, idx])
    s.split(s.loops(y)[0], 3)
    assert "x[idx[i_i + 3 * i_o]]" in str(s)  # the loop variable is replaced inside the checked index
    a = rng.standard_normal(7).astype(np.float32)
    p = rng.permutation(7).astype(np.int64)
    check(s, [x, idx], [y], [a, p], [a[p]])


def test_binding_a_gpu_axis_inside_a_local_array_is_refused():
    A, C = row_reduce(kd.sum)
    s = loop_schedule(C, target="cuda-emu")
    ro, ri = s.rfactor(s.loops(C)[1], 4)
    with pytest.raises(kd.ScheduleError, match="inside the local array acc_rf"):
        s.bind(ro, "threadIdx.x")
