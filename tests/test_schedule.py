"""Schedule primitives: each keeps the result (loop-IR interpreter and compiled C), traces replay."""

import json

import numpy as np
import pytest
from conftest import loop_schedule, matmul

import kerneldsl as kd
from kerneldsl.ir.loop_interp import run_module

rng = np.random.default_rng(7)


def inputs(shapes=((7, 5), (5, 11))):
    return [rng.standard_normal(s).astype(np.float32) for s in shapes]


def check_same(s, A, B, C, shapes=((7, 5), (5, 11))):
    a, b = inputs(shapes)
    expect = a @ b
    np.testing.assert_allclose(run_module(s.module, [a, b])[0], expect, rtol=1e-5, atol=1e-5)
    f = kd.build([A, B], [C], schedule=s)
    np.testing.assert_allclose(f(a, b), expect, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("factor", [1, 2, 3, 4, 16])
def test_split_keeps_result_for_dividing_and_non_dividing_factors(factor):
    A, B, C = matmul()
    s = loop_schedule(C)
    i, j, r = s.loops(C)
    s.split(i, factor)
    s.split(j, factor)
    s.split(r, factor)
    check_same(s, A, B, C)
    check_same(s, A, B, C, shapes=((1, 1), (1, 1)))


def test_tile_reorder_fuse_unroll_vectorize_parallel_keep_result():
    A, B, C = matmul()
    s = loop_schedule(C)
    i, j, r = s.loops(C)
    io, jo, ii, ji = s.tile(i, j, 4, 3)
    ij = s.fuse(io, jo)
    s.parallel(ij)
    s.unroll(ii)
    s.vectorize(r)
    text = str(s)
    assert "for i_o_j_o in range(" in text and "# parallel" in text and "# unrolled" in text
    check_same(s, A, B, C)
    check_same(s, A, B, C, shapes=((13, 2), (2, 1)))


def test_reorder_moves_reduction_loop_inside_guards():
    A, B, C = matmul()
    s = loop_schedule(C)
    i, j, r = s.loops(C)
    s.serial(i)
    s.reorder(j, i)
    assert str(s).index("for j") < str(s).index("for i")
    check_same(s, A, B, C)


def test_trace_round_trips_through_json():
    A, B, C = matmul()
    s = loop_schedule(C)
    i, j, r = s.loops(C)
    io, ii = s.split(i, 8)
    s.vectorize(s.loops(C)[-1])
    text = s.trace.to_json()
    steps = json.loads(text)
    assert steps[0] == {"primitive": "template", "kernel": "C", "template": "loops",
                        "knobs": {"parallel_min_work": 32768, "simd_block": kd.Target.detect().vector_bytes}}
    # the kernel runs its loop nest (simd_block: 4 vectors of float32)
    assert {"primitive": "split", "kernel": "C", "loop": "i", "factor": 8} in steps
    again = loop_schedule(C, trace=kd.Trace.from_json(text))
    assert str(again) == str(s)
    f1 = kd.build([A, B], [C], schedule=s)
    f2 = kd.build([A, B], [C], schedule=again)
    assert f1.source == f2.source  # same trace -> same kernel -> same cache entry


def test_schedule_replays_on_another_input_order():
    A, B, C = matmul()
    s = loop_schedule(C)
    s.split(s.loops(C)[1], 4)
    f = kd.build([B, A], [C], schedule=s)
    a, b = inputs()
    np.testing.assert_allclose(f(b, a), a @ b, rtol=1e-5, atol=1e-5)


def test_compute_inline_removes_the_intermediate_kernel():
    n = kd.size("n")
    x = kd.placeholder((n,), name="x")
    t = kd.compute((n,), lambda i: kd.exp(x[i]) * 2, name="t")
    y = kd.compute((n,), lambda i: t[i] + 1, name="y")
    z = kd.compute((n,), lambda i: t[i] - 1, name="z")
    s = loop_schedule([y, z])
    assert len(s.module.kernels) == 3  # t (not cheap) has two consumers: by default it is stored once
    s.compute_inline(t)
    assert len(s.module.kernels) == 2
    f = kd.build([x], [y, z], schedule=s)
    a = rng.standard_normal(9).astype(np.float32)
    yy, zz = f(a)
    np.testing.assert_allclose(yy, np.exp(a) * 2 + 1, rtol=1e-6)
    np.testing.assert_allclose(zz, np.exp(a) * 2 - 1, rtol=1e-6)


@pytest.mark.parametrize("action, message", [
    (lambda s, i, j, r: s.parallel(r), "reduction loop"),
    (lambda s, i, j, r: s.vectorize(i), "not innermost"),
    (lambda s, i, j, r: s.split(i, 0), "positive int"),
    (lambda s, i, j, r: s.reorder(i, r), "not perfectly nested"),
    (lambda s, i, j, r: s.bind(i, "warp.x"), "unknown GPU axis"),
    (lambda s, i, j, r: s.split(kd.LoopRef("C", "q"), 2), "no loop named 'q'"),
    (lambda s, i, j, r: s.compute_inline("C"), "output"),
])
def test_illegal_primitives_raise_schedule_error(action, message):
    A, B, C = matmul()
    s = loop_schedule(C)
    with pytest.raises(kd.ScheduleError, match=message):
        action(s, *s.loops(C))


def test_gpu_binding_is_refused_for_the_c_target():
    A, B, C = matmul()
    s = loop_schedule(C)
    with pytest.raises(kd.ScheduleError, match="GPU axis.*target c"):
        s.bind(s.loops(C)[0], "blockIdx.x")
    gpu = loop_schedule(C, target="cuda-emu")
    gpu.bind(gpu.loops(C)[0], "blockIdx.x")
    with pytest.raises(ValueError, match="for target cuda-emu, not c"):
        kd.build([A, B], [C], schedule=gpu, target="c")


def test_schedule_for_other_outputs_is_rejected():
    A, B, C = matmul()
    D = kd.compute(C.shape, lambda i, j: C[i, j] * 2, name="D")
    with pytest.raises(ValueError, match="other outputs"):
        kd.build([A, B], [D], schedule=loop_schedule(C))


def test_decompose_reduction_then_reorder_keeps_result_with_epilogue():
    n, m, k = kd.sizes("n m k")
    A = kd.placeholder((n, k), name="A")
    B = kd.placeholder((k, m), name="B")
    r = kd.reduce_axis(k, name="r")
    C = kd.compute((n, m), lambda i, j: kd.tanh(kd.sum(A[i, r] * B[r, j], axis=r)), name="C")
    s = loop_schedule(C)
    i, j, _ = s.loops(C)
    s.decompose_reduction(j)
    i, j_init, j, r_, j_epi = s.loops(C)
    s.reorder(r_, j)
    s.vectorize(j)
    text = str(s)
    assert text.index("for r in") < text.index("for j in") and "C[i, j] = C[i, j] + " in text
    a, b = inputs()
    expect = np.tanh(a @ b)
    np.testing.assert_allclose(run_module(s.module, [a, b])[0], expect, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(kd.build([A, B], [C], schedule=s)(a, b), expect, rtol=1e-5, atol=1e-6)
    again = loop_schedule(C, trace=kd.Trace.from_json(s.trace.to_json()))
    assert str(again) == text


def test_decompose_reduction_refuses_max():
    n = kd.size("n")
    x = kd.placeholder((n, n), name="x")
    r = kd.reduce_axis(n, name="r")
    y = kd.compute((n,), lambda i: kd.max(x[i, r], axis=r), name="y")
    s = loop_schedule(y)
    with pytest.raises(kd.ScheduleError, match="not a plain sum"):
        s.decompose_reduction(s.loops(y)[0])


# --- GEMM knobs fitted to the extents known at the build ------------------------------------------

def test_gemm_knobs_are_fitted_to_known_extents():
    from kerneldsl.schedule.templates import fit_gemm_knobs
    t = kd.Target("c", "avx512", 64, 2)
    # N = 100: 16 columns pad to 112, 32 columns to 128; K = 784 fits one block (2 x 512)
    assert fit_gemm_knobs(None, 100, 784, t, "float32") == {"mr": 12, "nr": 16, "mc": 96, "nc": 4096, "kc": 784}
    # M = 64 output channels: 8 rows a tile, not 12 (72 rows computed)
    assert fit_gemm_knobs(64, None, 288, t, "float32") == {"mr": 8, "nr": 32, "mc": 96, "nc": 4096}
    assert fit_gemm_knobs(None, None, None, t, "float32") == {}  # nothing known: the target's defaults
    assert fit_gemm_knobs(1200, 1024, 4096, t, "float32") == {}  # little padding, K in several blocks
    narrow = kd.Target("c", "avx2", 32, 2)
    assert fit_gemm_knobs(20, 100, 784, narrow, "float32") == {"kc": 784}  # 16 registers: the tiles stay


def test_a_dense_layer_of_known_width_gets_fitted_knobs_and_a_knobs_block_wins():
    from kerneldsl.schedule.templates import fit_gemm_knobs, template
    n = kd.size("n")
    X, W = kd.placeholder((n, 40), name="X"), kd.placeholder((40, 20), name="W")
    r = kd.reduce_axis(40, name="r")
    Y = kd.compute((n, 20), lambda i, j: kd.tanh(kd.sum(X[i, r] * W[r, j], axis=r)), name="Y")
    x = np.random.default_rng(0).standard_normal((37, 40)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((40, 20)).astype(np.float32)
    target = kd.Target.detect()

    def knobs(**block):
        with kd.settings.override(use_records=False), kd.knobs(min_work=0, **block):
            f = kd.build([X, W], [Y])
        np.testing.assert_allclose(f(x, w), np.tanh(x.astype(np.float64) @ w), rtol=1e-4, atol=1e-5)
        return next(s["knobs"] for s in f.config.steps if s.get("template") == "gemm")
    plain = template("gemm", target).defaults(target, "float32")
    assert knobs() == {**plain, "min_work": 0, **fit_gemm_knobs(None, 20, 40, target, "float32")}
    assert knobs(fit_gemm=False) == {**plain, "min_work": 0}
    assert knobs(nr=plain["nr"])["nr"] == plain["nr"]  # a knobs block is never overridden


def test_a_loop_both_parallel_and_simd_runs_in_blocks_of_the_knob():
    n = kd.size("n")
    x = kd.placeholder((n,), name="x")
    y = kd.compute((n,), lambda i: kd.exp(x[i]) * 2 + 1, name="y")
    r = kd.reduce_axis(n, "r")
    total = kd.compute((), lambda: kd.sum(x[r], axis=r), name="total")
    for block in (0, 16, 64):
        with kd.settings.override(use_records=False), kd.knobs(simd_block=block, parallel_min_work=0):
            f = kd.build([x], [y])
            g = kd.build([x], [total])
        assert ("kd_blk_" in f.source) == (block > 0)
        assert "kd_blk_" not in g.source  # a reduction keeps its one `parallel for simd reduction` loop
        assert (f"in SIMD blocks of {block}" in str(f.kernels[0])) == (block > 0)
        for size in (1, 15, 16, 17, 64, 1000):
            v = np.linspace(-3, 3, size, dtype=np.float32)
            want = np.exp(v.astype(np.float64)) * 2 + 1
            np.testing.assert_allclose(f(v), want, rtol=1e-5)
            np.testing.assert_allclose(f(v[::-1]), want[::-1], rtol=1e-5)  # strided: the other copy of the nest
            np.testing.assert_allclose(g(v), v.astype(np.float64).sum(), rtol=1e-4, atol=1e-4)


def test_partition_by_hand_replays_from_its_trace_and_refuses_a_loop_without_a_range_test():
    n = kd.size("n")
    X = kd.placeholder((n,), name="X")
    Y = kd.compute((n,), lambda i: kd.where((i - 2 >= 0) & (i + 1 < n), X[i - 2] + X[i + 1], 0.5), name="Y")
    s = kd.schedule(Y, [X])
    s.template(Y, "loops")
    (i,) = s.loops(Y)
    s.partition(i)
    text = str(s)
    assert "i_lo in range" in text and "i_in in range" in text and "i_hi in range" in text, text
    f = kd.build([X], [Y], schedule=s)
    again = kd.build([X], [Y], schedule=kd.schedule(Y, [X], trace=kd.Trace.from_json(s.trace.to_json())))
    for size in (0, 1, 3, 4, 11):
        x = np.arange(size, dtype=np.float32)
        want = kd.evaluate([Y], {X: x})[0]
        np.testing.assert_array_equal(f(x), want)
        np.testing.assert_array_equal(again(x), want)
    Z = kd.compute((n,), lambda i: X[i] * 2, name="Z")
    s2 = kd.schedule(Z, [X])
    s2.template(Z, "loops")
    with pytest.raises(kd.ScheduleError, match="selects on no range"):
        s2.partition(s2.loops(Z)[0])
