"""The CUDA backend: every kernel kind run on the emulator against the reference, compiled by
nvcc for sm_80 and sm_90 without warnings, the emulator's own error detection, and (marked
`gpu`) the same kernels on a real GPU.

One module ("the zoo") holds all the ops, so that it costs one emulator build and one nvcc
build per architecture; each test then checks one output.
"""

from __future__ import annotations

import ctypes
import shutil

import numpy as np
import pytest
from conftest import assert_same, cuda_source, cuda_targets, gpu_ready, rng

import kerneldsl as kd

needs_cxx = pytest.mark.skipif(shutil.which("g++") is None, reason="the CUDA emulator needs g++")
needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc (CUDA toolkit) not installed")


F32 = {"rtol": 3e-5, "atol": 1e-5}


# --- the zoo -----------------------------------------------------------------------------
def _zoo():
    """(inputs, outputs by name, a feed maker)."""
    n, m, k = kd.sizes("n m k")
    A = kd.placeholder((n, k), name="A")
    B = kd.placeholder((k, m), name="B")
    bias = kd.placeholder((m,), name="bias")
    w = kd.placeholder((), name="w")
    r = kd.reduce_axis(k, "r")
    out = {}
    out["matmul"] = kd.compute((n, m), lambda i, j: kd.sum(A[i, r] * B[r, j], axis=r), name="matmul")
    out["broadcast"] = kd.compute((n, k), lambda i, j: A[i, j] * w[()] + kd.tanh(A[i, j]), name="broadcast")
    out["bias_relu"] = kd.compute((n, m), lambda i, j: kd.maximum(out["matmul"][i, j] + bias[j], 0.0),
                                  name="bias_relu")
    # elementwise with many intrinsics
    L = kd.size("L")
    x = kd.placeholder((L,), name="x")
    out["elementwise"] = kd.compute(
        (L,), lambda i: kd.sigmoid(x[i]) * kd.exp(-kd.abs(x[i])) + kd.log1p(kd.abs(x[i])) - kd.erf(x[i]) / 3
        + kd.sqrt(kd.abs(x[i])) + x[i] % 1.5 + kd.floor(x[i] * 2) + kd.pow(kd.abs(x[i]), 0.5), name="elementwise")
    # gather
    idx = kd.placeholder((L,), "int64", name="idx")
    out["gather"] = kd.compute((n, L), lambda i, j: A[i, idx[j]], name="gather")
    # row softmax (max and sum rows: the row-reduction path) and a mean over float64 rows
    R, C = kd.sizes("R C")
    X = kd.placeholder((R, C), name="X")
    c1, c2 = kd.reduce_axis(C, "c1"), kd.reduce_axis(C, "c2")
    mx = kd.compute((R,), lambda i: kd.max(X[i, c1], axis=c1), name="mx")
    e = kd.compute((R, C), lambda i, j: kd.exp(X[i, j] - mx[i]), name="e")
    s = kd.compute((R,), lambda i: kd.sum(e[i, c2], axis=c2), name="s")
    out["softmax"] = kd.compute((R, C), lambda i, j: e[i, j] / s[i], name="softmax")
    out["rowmin"] = kd.compute((R,), lambda i: kd.min(X[i, c1], axis=c1), name="rowmin")
    Xd = kd.placeholder((R, C), "float64", name="Xd")
    out["mean64"] = kd.compute((R,), lambda i: kd.sum(Xd[i, c1], axis=c1) / kd.cast(C, "float64"), name="mean64")
    Xi = kd.placeholder((R, C), "int32", name="Xi")
    out["rowsum_int"] = kd.compute((R,), lambda i: kd.sum(Xi[i, c1], axis=c1), name="rowsum_int")
    out["argmax"] = kd.compute((R,), lambda i: kd.argmax(X[i, c1], axis=c1), name="argmax")
    # scalar outputs: a whole-array sum (one row) and a 2-D sum
    r2 = kd.reduce_axis(L, "r2")
    out["total"] = kd.compute((), lambda: kd.sum(x[r2], axis=r2), name="total")
    q1, q2 = kd.reduce_axis(R, "q1"), kd.reduce_axis(C, "q2")
    out["total2d"] = kd.compute((), lambda: kd.max(X[q1, q2], axis=[q1, q2]), name="total2d")
    # conv2d (valid, NCHW) and 2x2 max pooling
    N, CI, CO, H, W = kd.sizes("N CI CO H W")
    img = kd.placeholder((N, CI, H, W), name="img")
    ker = kd.placeholder((CO, CI, 3, 3), name="ker")
    ci, kh, kw = kd.reduce_axis(CI, "ci"), kd.reduce_axis(3, "kh"), kd.reduce_axis(3, "kw")
    out["conv2d"] = kd.compute((N, CO, H - 2, W - 2), lambda b, o, h, v: kd.sum(
        img[b, ci, h + kh, v + kw] * ker[o, ci, kh, kw], axis=[ci, kh, kw]), name="conv2d")
    ph, pw = kd.reduce_axis(2, "ph"), kd.reduce_axis(2, "pw")
    out["maxpool"] = kd.compute((N, CI, H // 2, W // 2), lambda b, c, h, v: kd.max(
        img[b, c, 2 * h + ph, 2 * v + pw], axis=[ph, pw]), name="maxpool")
    inputs = [A, B, bias, w, x, idx, X, Xd, Xi, img, ker]

    def feed(seed=0, rows=5, cols=37, length=45, zero=False):
        g = rng(seed)
        nn, mm, kk = (0, 0, 0) if zero else (7, 9, 11)
        length = 0 if zero else length
        rows = 0 if zero else rows
        return {A: g.standard_normal((nn, kk), dtype=np.float32), B: g.standard_normal((kk, mm), dtype=np.float32),
                bias: g.standard_normal(mm, dtype=np.float32), w: np.float32(1.5),
                x: g.uniform(-3, 3, length).astype(np.float32), idx: g.integers(0, max(kk, 1), length) if kk else
                np.zeros(length, np.int64),
                X: g.standard_normal((rows, cols), dtype=np.float32) * 4,
                Xd: g.standard_normal((rows, cols)), Xi: g.integers(-100, 100, (rows, cols)).astype(np.int32),
                img: g.standard_normal((2, 3, 8, 10), dtype=np.float32),
                ker: g.standard_normal((4, 3, 3, 3), dtype=np.float32)}

    return inputs, out, feed


ZOO_OPS = ["matmul", "broadcast", "bias_relu", "elementwise", "gather", "softmax", "rowmin", "mean64",
           "rowsum_int", "argmax", "total", "total2d", "conv2d", "maxpool"]


@pytest.fixture(scope="module")
def zoo():
    inputs, out, feed = _zoo()
    outputs = [out[k] for k in ZOO_OPS]
    return inputs, outputs, feed


@pytest.fixture(scope="module")
def emu(zoo):
    if shutil.which("g++") is None:
        pytest.skip("the CUDA emulator needs g++")
    inputs, outputs, _ = zoo
    return kd.build(inputs, outputs, target="cuda-emu")


@pytest.fixture(scope="module", params=cuda_targets())
def built(request, zoo):
    """The zoo built for each CUDA target (the emulator; a real GPU with --gpu)."""
    inputs, outputs, _ = zoo
    return kd.build(inputs, outputs, target=request.param)


def _run_and_compare(f, zoo, which, **feed_kw):
    inputs, outputs, feed = zoo
    fd = feed(**feed_kw)
    got = f(*[fd[p] for p in inputs])
    ref = kd.evaluate(outputs, fd)
    k = ZOO_OPS.index(which)
    tol = {} if outputs[k].dtype not in ("float32",) else F32
    assert_same(got[k], ref[k], what=f"{which}: emulated CUDA vs reference", **tol)
    return got[k]


@needs_cxx
@pytest.mark.parametrize("which", ZOO_OPS)
def test_emulator_matches_reference(emu, zoo, which):
    _run_and_compare(emu, zoo, which)


@pytest.mark.parametrize("which", ["matmul", "softmax", "total", "gather", "conv2d", "mean64"])
def test_emulator_zero_size(built, zoo, which):
    got = _run_and_compare(built, zoo, which, zero=True)
    if which in ("matmul", "softmax", "gather"):
        assert got.size == 0


@needs_cxx
def test_softmax_takes_the_row_reduction_path(emu):
    schedules = {L.kernel: L.schedule for L in emu.launches}
    rows = [k for k, s in schedules.items() if s == "row_reduce"]
    assert any("softmax" in k or "_s" in k or "_e" in k for k in rows), schedules
    assert schedules["kd_kernel_matmul"] == "gemm", "a contraction takes the tiled GEMM template"
    assert schedules["kd_kernel_total2d"] == "row_reduce", "a reduction over both axes: one loop for the block"
    assert schedules["kd_kernel_maxpool"] == "grid_stride", "a 2x2 window: a thread per output, not a block"
    assert "__shfl_down_sync" in emu.source and "__syncthreads" in emu.source


def test_emulator_gather_out_of_range_raises(built, zoo):
    inputs, _, feed = zoo
    fd = feed()
    bad = fd[inputs[5]].copy()
    bad[3] = 11 + 5  # k == 11
    fd[inputs[5]] = bad
    with pytest.raises(IndexError, match="out of range"):
        built(*[fd[p] for p in inputs])


def test_emulator_checks_inputs_like_c(built, zoo):
    inputs, _, feed = zoo
    fd = feed()
    args = [fd[p] for p in inputs]
    args[0] = args[0].astype(np.float64)
    with pytest.raises(kd.DTypeError):
        built(*args)


@pytest.mark.parametrize("target", cuda_targets())
def test_gradients(target):
    if not hasattr(kd, "grad"):
        pytest.skip("kd.grad not available")
    n, k = kd.sizes("n k")
    A = kd.placeholder((n, k), name="A")
    r = kd.reduce_axis(k, "r")
    y = kd.compute((n,), lambda i: kd.sum(kd.tanh(A[i, r]) * A[i, r], axis=r), name="y")
    dy = kd.placeholder((n,), name="dy")
    (dA,) = kd.grad(y, [A], dy=dy)
    f = kd.build([A, dy], [y, dA], target=target)
    a = rng(3).standard_normal((6, 33), dtype=np.float32)
    g = rng(4).standard_normal(6, dtype=np.float32)
    got = f(a, g)
    for t, v, want in zip(("y", "dA"), got, kd.evaluate([y, dA], {A: a, dy: g})):
        assert_same(v, want, what=t, **F32)


@pytest.mark.parametrize("target", cuda_targets())
def test_knobs_change_the_launch_not_the_result(target, zoo):
    inputs, outputs, _ = zoo
    with kd.knobs(threads_per_block=64, row_threads=96, max_blocks=3):
        f = kd.build(inputs, outputs, target=target)
    assert {L.threads for L in f.launches if L.schedule != "gemm"} <= {64, 96}
    for which in ("softmax", "matmul", "conv2d", "total"):
        _run_and_compare(f, zoo, which)


def test_knobs_are_validated():
    from kerneldsl.schedule.templates import template
    t = kd.Target.detect("cuda-emu")
    rows, grid = template("row_reduce", t), template("grid_stride", t)
    with pytest.raises(ValueError, match="multiple of the warp size"):
        grid.resolve({"threads_per_block": 100}, t, "float32")
    with pytest.raises(ValueError, match="unknown knob"), kd.knobs(tpb=128):
        pass
    with pytest.raises(ValueError, match=r"in \[32, 1024\]"), kd.knobs(row_threads=4096):
        pass
    with kd.knobs(row_threads=64), kd.knobs(threads_per_block=128):  # blocks nest
        assert rows.defaults(t, "float32")["row_threads"] == 64
        assert grid.defaults(t, "float32")["threads_per_block"] == 128
    assert rows.defaults(t, "float32")["row_threads"] == 256


# --- nvcc ------------------------------------------------------------------------------------
@needs_nvcc
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_nvcc_compiles_every_kernel_without_warnings(zoo, arch):
    from kerneldsl.runtime.cuda import compile_cubin
    inputs, outputs, _ = zoo
    src = cuda_source(inputs, outputs)
    cubin = compile_cubin(src.text, arch=arch)  # -Werror all-warnings: a warning fails the build
    assert "warning" not in cubin.report.lower()
    assert set(cubin.resources) == {L.variant(bits) for L in src.launches for bits in (32, 64)}
    for L, bits in ((L, bits) for L in src.launches for bits in (32, 64)):
        res = cubin.resources[L.variant(bits)]
        assert res["registers"] > 0
        if L.schedule in ("row_reduce", "gemm"):
            assert res["shared"] > 0 and res["barriers"] >= 1, (L.kernel, res)
        if L.schedule == "gemm":
            assert res["spill_stores"] == 0 and res["spill_loads"] == 0, (L.kernel, res)


def test_parse_ptxas_report():
    from kerneldsl.runtime.cuda import parse_ptxas
    text = """ptxas info    : Compiling entry function 'kd_kernel_s' for 'sm_90'
ptxas info    : Function properties for kd_kernel_s
    8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 19 registers, used 1 barriers, 128 bytes smem, 400 bytes cmem[0]"""
    r = parse_ptxas(text)["kd_kernel_s"]
    assert r == {"stack": 8, "spill_stores": 4, "spill_loads": 4, "registers": 19, "barriers": 1,
                 "shared": 128, "constant": 400}


# --- the emulator itself ---------------------------------------------------------------------
EMU_KERNELS = r"""
__global__ void k_block_sum(const float *x, float *out, int n) {
    __shared__ float buf[64];
    int t = threadIdx.x;
    buf[t] = t < n ? x[t] : 0.0f;
    __syncthreads();
    for (int s = 32; s > 0; s >>= 1) { if (t < s) buf[t] += buf[t + s]; __syncthreads(); }
    float v = buf[0];
    v = __shfl_xor_sync(0xffffffffu, v, 1);     /* everyone holds the same sum: a no-op */
    if (__all_sync(0xffffffffu, v == buf[0]) && t % 32 == 0) atomicAdd(out, v);
}
__global__ void k_exit_then_barrier(float *out) {
    if (threadIdx.x < 5) return;
    __syncthreads();
    out[threadIdx.x] = 1.0f;
}
__global__ void k_two_barriers(float *out) {
    if (threadIdx.x % 2)
        __syncthreads();
    else
        __syncthreads();
    out[0] = 1.0f;
}
__global__ void k_shfl_vs_barrier(float *out) {
    float v = 1.0f;
    if (threadIdx.x < 16) v = __shfl_down_sync(0xffffffffu, v, 1);  /* lanes 16-31 never come */
    else __syncthreads();
    out[0] = v;
}
__global__ void k_shared_oob(float *out) {
    KD_SHARED_ARRAY(float, tile, 32);
    tile[threadIdx.x] = 1.0f;   /* 64 threads, 32 slots */
    out[0] = tile[0];
}
__global__ void k_shared_is_per_block(float *out) {
    KD_SHARED_ARRAY(float, tile, 1);
    if (threadIdx.x == 0) { out[blockIdx.x] = tile[0]; tile[0] = 7.0f; }
}
extern "C" int run(int which, const float *x, float *out, int n) {
    switch (which) {
    case 0: return kd_emu::launch(k_block_sum, dim3(2), dim3(64), x, out, n);
    case 1: return kd_emu::launch(k_exit_then_barrier, dim3(1), dim3(64), out);
    case 2: return kd_emu::launch(k_two_barriers, dim3(1), dim3(64), out);
    case 3: return kd_emu::launch(k_shfl_vs_barrier, dim3(1), dim3(64), out);
    case 4: return kd_emu::launch(k_shared_oob, dim3(1), dim3(64), out);
    case 5: return kd_emu::launch(k_shared_is_per_block, dim3(3), dim3(32), out);
    }
    return -1;
}
"""


@pytest.fixture(scope="module")
def emu_lib():
    if shutil.which("g++") is None:
        pytest.skip("the CUDA emulator needs g++")
    from kerneldsl.runtime.emulator import compile_emulated
    lib = compile_emulated(EMU_KERNELS, "emulator_tests")
    lib.run.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int)
    return lib


def _emu_run(lib, which, x=None, out_len=64):
    from kerneldsl.runtime.emulator import last_error
    x = np.arange(64, dtype=np.float32) if x is None else x
    out = np.zeros(out_len, np.float32)
    rc = lib.run(which, x.ctypes.data, out.ctypes.data, len(x))
    return rc, out, (last_error(lib) if rc else "")


def test_emulator_shared_memory_shuffles_votes_atomics(emu_lib):
    rc, out, err = _emu_run(emu_lib, 0)
    assert rc == 0, err
    assert out[0] == 2 * 2 * np.arange(64).sum()  # 2 blocks x 2 warps each add the block sum


@pytest.mark.parametrize("which, message", [
    (1, "divergent __syncthreads"),
    (2, "divergent __syncthreads"),
    (3, "deadlock"),
    (4, "out of bounds"),
])
def test_emulator_reports_misuse(emu_lib, which, message):
    rc, _, err = _emu_run(emu_lib, which)
    assert rc != 0 and message in err, err


def test_emulator_shared_memory_is_fresh_per_block(emu_lib):
    rc, out, err = _emu_run(emu_lib, 5)
    assert rc == 0, err
    assert np.isnan(out[:3]).all(), "a block must not see the previous block's shared memory"


# --- a real GPU ---------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ZOO_OPS)
@pytest.mark.gpu
@pytest.mark.skipif(not gpu_ready(), reason="needs a CUDA GPU, PyCUDA or CuPy, and --gpu (or KERNELDSL_TEST_GPU=1)")
def test_gpu_matches_reference(zoo, which):
    inputs, outputs, _ = zoo
    f = kd.build(inputs, outputs, target="cuda")
    got = _run_and_compare(f, zoo, which)
    assert got is not None and f.resources


def _device_module():
    """(to_device, to_numpy) for CuPy or PyTorch CUDA tensors, whichever is installed."""
    try:
        import cupy
        return cupy.asarray, cupy.asnumpy
    except ImportError:
        import torch
        return (lambda a: torch.from_numpy(np.ascontiguousarray(a)).cuda()), (lambda t: t.cpu().numpy())


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_ready(), reason="needs a CUDA GPU, PyCUDA or CuPy, and --gpu (or KERNELDSL_TEST_GPU=1)")
def test_gpu_device_arrays_in_place_and_out():
    to_dev, to_np = _device_module()
    n, m = kd.sizes("n m")
    X = kd.placeholder((n, m), name="X")
    b = kd.placeholder((m,), name="b")
    Y = kd.compute((n, m), lambda i, j: kd.tanh(X[i, j] + b[j]), name="Y")
    f = kd.build([X, b], [Y], target="cuda")
    x = rng(9).standard_normal((33, 20), dtype=np.float32)
    bias = rng(10).standard_normal(20, dtype=np.float32)
    dx = to_dev(x)
    out = f(dx, bias)  # a device input: the output stays on the device
    assert not isinstance(out, np.ndarray)
    assert_same(to_np(out), np.tanh(x + bias), what="device in, device out", **F32)
    assert_same(f(dx.T.T, bias, device_out=False), np.tanh(x + bias), what="device in, numpy out", **F32)
    xt = to_dev(np.ascontiguousarray(x.T))
    assert_same(to_np(f(xt.T, bias)), np.tanh(x + bias), what="a transposed device view, read in place", **F32)


# --- vector (float4) accesses in elementwise kernels --------------------------------------------
def _vector_accesses(f) -> int:
    if f.drv.name != "cuda-emu":
        return 0
    fn = f._mod.kd_emu_vector_accesses
    fn.restype = ctypes.c_ulonglong
    return int(fn())


@pytest.mark.parametrize("target", cuda_targets())
@pytest.mark.parametrize("dtype", ["float32", "float64", "int32"])
def test_vector_path_where_alignment_allows(target, dtype):
    n, m = kd.sizes("n m")
    X = kd.placeholder((n, m), dtype, name="X")
    b = kd.placeholder((m,), dtype, name="b")
    s = kd.placeholder((n,), dtype, name="s")
    # b[j] vectorizes with X; s[i] is per row; X[i, m - 1 - j] is reversed (scalar); where's branch is guarded
    Y = kd.compute((n, m), lambda i, j: X[i, j] * b[j] + s[i] + kd.where(X[i, j] > 0, X[i, m - 1 - j], 1),
                   name="Y")
    f = kd.build([X, b, s], [Y], target=target)
    (L,) = f.launches
    assert L.lanes == 16 // np.dtype(dtype).itemsize
    g = rng(7)

    def run(x, bb, ss, vector: bool):
        before = _vector_accesses(f)
        got = f(x, bb, ss)
        want = x * bb + ss[:, None] + np.where(x > 0, x[:, ::-1], 1)
        assert_same(got, want.astype(dtype), what=f"{dtype} {x.shape} strides {x.strides}")
        if target == "cuda-emu":  # the emulator counts vector accesses
            assert (_vector_accesses(f) > before) == vector, "vector path taken" if not vector else "scalar path taken"

    def data(shape):
        return (g.standard_normal(shape) * 10).astype(dtype)
    run(data((5, 8)), data(8), data(5), vector=True)
    run(data((3, 16)), data(16), data(3), vector=True)
    run(data((5, 7)), data(7), data(5), vector=False)  # the row is not a whole number of vectors
    big = data((5, 9))
    run(big[:, 1:], data(8), data(5), vector=True)  # a view: copied to the device contiguous, then aligned
    run(data((8, 5)).T, data(8), data(5), vector=True)  # transposed: copied contiguous too


@needs_cxx
def test_vector_path_reads_device_arrays_in_place_only_when_aligned():
    from test_cuda_gemm import HostCudaArray
    n = kd.size("n")
    X = kd.placeholder((n,), name="X")
    Y = kd.compute((n,), lambda i: kd.exp(X[i]) * 2, name="Y")
    f = kd.build([X], [Y], target="cuda-emu")
    base = rng(8).standard_normal(13).astype(np.float32)
    for offset, vector in ((0, True), (1, False)):  # a device view 4 bytes past an aligned start
        x = base[offset:offset + 8]
        before = _vector_accesses(f)
        got = f(HostCudaArray(x))
        assert_same(got, np.exp(x) * 2, what=f"offset {offset}", **F32)
        assert (_vector_accesses(f) > before) == (vector and base.ctypes.data % 16 == 0)


@needs_cxx
def test_emulator_reports_misaligned_vector_access():
    from kerneldsl.codegen.c import environment
    from kerneldsl.runtime.emulator import compile_emulated, last_error
    lib = compile_emulated(environment().get_template("cuda/prelude.cuh").render() + r"""
__global__ void k_misaligned(float *x) { kd_vstore(x + 1, make_float4(1, 2, 3, 4)); }
extern "C" int run(float *x) { return kd_emu::launch(k_misaligned, dim3(1), dim3(32), x); }
""", "misaligned")
    x = np.zeros(8, np.float32)
    assert lib.run(ctypes.c_void_p(x.ctypes.data)) != 0
    assert "misaligned 16-byte vector store" in last_error(lib)


@pytest.mark.parametrize("target", cuda_targets())
def test_multi_axis_reductions_share_the_block(target):
    """sum over (c, h, w) per image and max over everything: the reduced axes become one loop."""
    N, Cc, H, W = kd.sizes("N Cc H W")
    X = kd.placeholder((N, Cc, H, W), name="X")
    c, h, w = kd.reduce_axis(Cc, "c"), kd.reduce_axis(H, "h"), kd.reduce_axis(W, "w")
    per_image = kd.compute((N,), lambda n: kd.sum(X[n, c, h, w], axis=[c, h, w]), name="per_image")
    a, b = kd.reduce_axis(N, "a"), kd.reduce_axis(Cc, "b")
    top = kd.compute((H, W), lambda i, j: kd.max(X[a, b, i, j], axis=[a, b]), name="top")
    f = kd.build([X], [per_image, top], target=target)
    schedules = {L.kernel: L.schedule for L in f.launches}
    assert schedules["kd_kernel_per_image"] == "row_reduce"
    assert schedules["kd_kernel_top"] == "grid_stride"  # reduced axes are not the contiguous ones
    x = rng(11).standard_normal((3, 5, 7, 11), dtype=np.float32)
    got = f(x)
    assert_same(got[0], x.sum((1, 2, 3)), what="per_image", rtol=1e-5, atol=1e-4)
    assert_same(got[1], x.max((0, 1)), what="top")
