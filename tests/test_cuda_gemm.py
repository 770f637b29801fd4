"""The CUDA GEMM template (codegen/cuda_gemm.py, templates/cuda/gemm.cu.j2) on the emulator
against the reference at awkward sizes, compiled by nvcc without warnings or spills; and the
pure-Python side of GPU arrays in `target="cuda"` callables (runtime/device_arrays.py).
"""

from __future__ import annotations

import contextlib
import shutil

import numpy as np
import pytest
from conftest import assert_same, cuda_source, cuda_targets, rng

import kerneldsl as kd

needs_cxx = pytest.mark.skipif(shutil.which("g++") is None, reason="the CUDA emulator needs g++")
needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc (CUDA toolkit) not installed")
TOL = {"float32": {"rtol": 3e-5, "atol": 2e-5}, "float64": {}}
SMALL = {"gemm_bm": 16, "gemm_bn": 16, "gemm_bk": 4, "gemm_tm": 2, "gemm_tn": 2}  # 64 threads: quick fibers


@pytest.fixture
def knobs():
    """Set knob defaults until the end of the test (kd.knobs blocks, entered in turn)."""
    stack = contextlib.ExitStack()

    def set_(**values):
        stack.enter_context(kd.knobs(**values))
    yield set_
    stack.close()


def _dense(dtype, transposed=False):
    """tanh(A @ B + bias): A is (n, k), or (k, n) read transposed."""
    n, m, k = kd.sizes("n m k")
    A = kd.placeholder((k, n) if transposed else (n, k), dtype, name="A")
    B = kd.placeholder((k, m), dtype, name="B")
    bias = kd.placeholder((m,), dtype, name="bias")
    r = kd.reduce_axis(k, "r")
    a = (lambda i: A[r, i]) if transposed else (lambda i: A[i, r])
    Y = kd.compute((n, m), lambda i, j: kd.tanh(kd.sum(a(i) * B[r, j], axis=r) + bias[j]), name="Y")
    return [A, B, bias], Y


def _check(f, inputs, out, shapes, dtype, seed=0):
    g = rng(seed)
    feed = {p: g.standard_normal(s).astype(dtype) for p, s in zip(inputs, shapes)}
    got = f(*[feed[p] for p in inputs])
    want = kd.evaluate([out], feed)[0]
    assert_same(got, want, what=f"{out.name} {shapes}", **TOL[dtype])


@pytest.mark.parametrize("target", cuda_targets())
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("nmk", [(70, 50, 30), (1, 1, 1), (13, 67, 5), (64, 64, 16), (3, 2, 0), (97, 1, 33)])
def test_dense_epilogue_matches_reference(target, dtype, nmk):
    inputs, Y = _dense(dtype)
    f = kd.build(inputs, [Y], target=target)
    assert [L.schedule for L in f.launches] == ["gemm"]
    n, m, k = nmk
    _check(f, inputs, Y, [(n, k), (k, m), (m,)], dtype)


@pytest.mark.parametrize("target", cuda_targets())
@pytest.mark.parametrize("stages", [1, 2])
def test_small_tiles_many_k_slices_transposed_operand(target, knobs, stages):
    knobs(gemm_stages=stages, **SMALL)
    inputs, Y = _dense("float32", transposed=True)
    f = kd.build(inputs, [Y], target=target)
    assert f.launches[0].schedule == "gemm" and f.launches[0].threads == 64
    assert f"stages={stages}" in f.source
    for n, m, k in [(37, 23, 41), (17, 16, 3)]:
        _check(f, inputs, Y, [(k, n), (k, m), (m,)], "float32")


@pytest.mark.parametrize("target", cuda_targets())
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_batched_matmul_matches_reference(target, knobs, dtype):
    knobs(**SMALL)
    b, n, m, k = kd.sizes("b n m k")
    A = kd.placeholder((b, n, k), dtype, name="A")
    B = kd.placeholder((b, k, m), dtype, name="B")
    r = kd.reduce_axis(k, "r")
    Y = kd.compute((b, n, m), lambda q, i, j: kd.maximum(kd.sum(A[q, i, r] * B[q, r, j], axis=r), 0.0) * 2,
                   name="Y")
    f = kd.build([A, B], [Y], target=target)
    assert f.launches[0].schedule == "gemm"
    for shape in [(3, 19, 7, 23), (1, 1, 1, 1), (2, 5, 33, 0)]:
        q, n_, m_, k_ = shape
        _check(f, [A, B], Y, [(q, n_, k_), (q, k_, m_)], dtype)


@pytest.mark.parametrize("target", cuda_targets())
def test_one_block_strides_over_every_tile(target, knobs):
    knobs(max_blocks=1, **SMALL)
    inputs, Y = _dense("float32")
    f = kd.build(inputs, [Y], target=target)
    _check(f, inputs, Y, [(40, 9), (9, 35), (35,)], "float32")


@pytest.mark.parametrize("target", cuda_targets())
def test_gemm_knob_off_keeps_the_grid_stride_loop(target, knobs):
    knobs(gemm=False)
    inputs, Y = _dense("float32")
    f = kd.build(inputs, [Y], target=target)
    assert [L.schedule for L in f.launches] == ["grid_stride"]
    _check(f, inputs, Y, [(5, 4), (4, 3), (3,)], "float32")


@pytest.mark.parametrize("bad, message", [
    ({"gemm_bm": 60, "gemm_tm": 8}, "multiple of gemm_tm"),
    ({"gemm_bm": 64, "gemm_bn": 64, "gemm_tm": 1, "gemm_tn": 1}, r"threads per block"),
    ({"gemm_bm": 32, "gemm_bn": 32, "gemm_bk": 1, "gemm_tm": 1, "gemm_tn": 1}, "whole elements"),
    ({"gemm_stages": 3}, r"gemm_stages must be an integer in \[1, 2\]"),
])
def test_gemm_knobs_are_validated(bad, message):
    from kerneldsl.schedule.templates import template
    t = kd.Target.detect("cuda-emu")
    with pytest.raises(ValueError, match=message):
        template("gemm", t).resolve(bad, t, "float32")


@needs_nvcc
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_nvcc_compiles_gemm_without_warnings_or_spills(arch):
    from kerneldsl.runtime.cuda import compile_cubin
    ins, outs = [], []
    for dt in ("float32", "float64"):
        inputs, Y = _dense(dt)
        ins += inputs
        outs.append(kd.compute(Y.shape, lambda i, j, Y=Y: Y[i, j] * 1, name=f"out{dt[-2:]}"))
    src = cuda_source(ins, outs)
    cubin = compile_cubin(src.text, arch=arch)  # -Werror all-warnings
    gemms = [L for L in src.launches if L.schedule == "gemm"]
    assert len(gemms) == 2, [L.schedule for L in src.launches]
    for L in gemms:
        res = cubin.resources[L.variant(32)]
        assert res["spill_stores"] == 0 and res["spill_loads"] == 0 and res["stack"] == 0, (L.kernel, res)
        assert res["shared"] > 0 and res["barriers"] >= 1 and 0 < res["registers"] <= 255, (L.kernel, res)


# --- GPU arrays: the parts that run without a GPU -------------------------------------------------
class FakeCudaArray:
    """An object exposing __cuda_array_interface__, as CuPy, PyTorch and PyCUDA arrays do."""

    def __init__(self, shape, typestr="<f4", strides=None, ptr=0x7000_0000, readonly=False):
        self.__cuda_array_interface__ = {"shape": shape, "typestr": typestr, "data": (ptr, readonly),
                                         "strides": strides, "version": 3}


def test_cuda_array_interface_is_parsed():
    from kerneldsl.runtime.device_arrays import device_array, is_device_array
    x = FakeCudaArray((3, 5))
    assert is_device_array(x) and not is_device_array(np.zeros(3))
    d = device_array(x)
    assert (d.ptr, d.shape, d.strides, d.dtype, d.ndim) == (0x7000_0000, (3, 5), (5, 1), np.float32, 2)
    t = device_array(FakeCudaArray((3, 5), "<f8", strides=(8, 24)))  # a transposed view, bytes
    assert t.strides == (1, 3) and t.dtype == np.float64


def test_cuda_array_interface_errors():
    from kerneldsl.runtime.device_arrays import device_array
    with pytest.raises(TypeError, match="multiples"):
        device_array(FakeCudaArray((3,), strides=(6,)))
    with pytest.raises(kd.DTypeError, match="byte order"):
        device_array(FakeCudaArray((3,), typestr=">f4"))
    with pytest.raises(TypeError, match="malformed"):
        device_array(type("Bad", (), {"__cuda_array_interface__": {"shape": (2,)}})())


def test_dlpack_struct_is_parsed_from_numpy_capsules():
    """numpy exports CPU DLPack tensors: the same structs a CUDA producer fills in."""
    from kerneldsl.runtime.device_arrays import KDL_CPU, from_dlpack
    a = np.arange(12, dtype=np.float64).reshape(3, 4)[:, 1:]
    if not hasattr(a, "__dlpack__"):
        pytest.skip("numpy without DLPack")
    d = from_dlpack(a, devices=(KDL_CPU,))
    assert (d.ptr, d.shape, d.strides, d.dtype, d.device) == (a.ctypes.data, (3, 3), (4, 1), np.float64, "cpu")
    with pytest.raises(TypeError, match="CUDA device"):
        from_dlpack(a)  # a CPU tensor is not a GPU input


@pytest.fixture
def counting(monkeypatch):
    """The emulator driver's uploads and the kernel variants it launches, recorded."""
    from kerneldsl.runtime.emulator import EmulatorDriver
    rec = {"uploads": 0, "launched": []}
    to_device, launch = EmulatorDriver.to_device, EmulatorDriver.launch

    def counted_upload(self, a):
        rec["uploads"] += 1
        return to_device(self, a)

    def recorded_launch(self, fn, grid, block, args):
        rec["launched"].append((fn[1].__name__.removeprefix("kd_emu_launch_"), grid, block))
        return launch(self, fn, grid, block, args)
    monkeypatch.setattr(EmulatorDriver, "to_device", counted_upload)
    monkeypatch.setattr(EmulatorDriver, "launch", recorded_launch)
    return rec


class HostCudaArray:
    """Host memory behind __cuda_array_interface__: the emulator's device arrays, as CuPy's on a GPU."""

    def __init__(self, a: np.ndarray):
        self.a = a
        self.__cuda_array_interface__ = {"shape": a.shape, "typestr": a.dtype.str, "data": (a.ctypes.data, False),
                                         "strides": a.strides, "version": 3}


@needs_cxx
def test_gpu_callable_takes_device_arrays_in_place_and_leaves_outputs_there(counting):
    inputs, Y = _dense("float32")
    f = kd.build(inputs, [Y], target="cuda-emu")
    g = rng(5)
    a = g.standard_normal((7, 5), dtype=np.float32)
    bt = g.standard_normal((3, 5), dtype=np.float32)  # B is read through a transposed view: strides (1, 5)
    bias = g.standard_normal(3, dtype=np.float32)  # numpy and device inputs mix: the numpy one is uploaded
    out = f(HostCudaArray(a), HostCudaArray(bt.T), bias)
    assert isinstance(out, np.ndarray) and out.shape == (7, 3)  # the emulator's device arrays are numpy's
    assert counting["uploads"] == 2  # bias and the error report, not a or b
    assert_same(out, np.tanh(a @ bt.T + bias), what="device arrays in place", **TOL["float32"])
    assert counting["launched"] == [("kd_kernel_Y_i32", 1, 256)]  # one 64 x 64 tile, the default GEMM knobs
    with pytest.raises(kd.DTypeError):
        f(HostCudaArray(a.astype(np.float64)), HostCudaArray(bt.T), bias)
    with pytest.raises(kd.ShapeError):
        f(HostCudaArray(a[:, :4]), HostCudaArray(bt.T), bias)
    host = f(a, bt.T, bias, device_out=False)
    assert_same(host, np.tanh(a @ bt.T + bias), what="numpy in, numpy out", **TOL["float32"])


@needs_cxx
def test_int64_variant_when_indices_do_not_fit_int32(monkeypatch, counting):
    from kerneldsl.runtime import cuda as CU
    n, m = kd.sizes("n m")
    X = kd.placeholder((n, m), name="X")
    Y = kd.compute((n, m), lambda i, j: X[i, j] * 2 + X[i, m - 1 - j], name="Y")
    f = kd.build([X], [Y], target="cuda-emu")
    x = rng(6).standard_normal((5, 7), dtype=np.float32)
    want = x * 2 + x[:, ::-1]
    assert_same(f(x), want, what="int32 indices")
    monkeypatch.setattr(CU, "INT32_LIMIT", 40)  # 35 points + 256 threads no longer fit
    assert_same(f(x), want, what="int64 indices")
    assert [name for name, _, _ in counting["launched"]] == ["kd_kernel_Y_i32", "kd_kernel_Y_i64"]


@pytest.mark.parametrize("target", cuda_targets())
def test_gpu_callable_edge_inputs(target):
    """A 0-d input, an empty gather source (its checks read a stand-in buffer), out= checked as for C."""
    L, k = kd.sizes("L k")
    s = kd.placeholder((), name="s")
    v = kd.placeholder((k,), name="v")
    idx = kd.placeholder((L,), "int64", name="idx")
    Y = kd.compute((L,), lambda i: v[idx[i]] * s[()], name="Y")
    f = kd.build([s, v, idx], [Y], target=target)
    got = f(np.float32(3), np.arange(4, dtype=np.float32), np.array([3, 0, 2]))
    assert_same(got, np.array([9, 0, 6], np.float32))
    with pytest.raises(IndexError, match="out of range"):
        f(np.float32(3), np.zeros(0, np.float32), np.array([0]))
    out = np.empty(3, np.float32)
    assert f(np.float32(1), np.arange(4, dtype=np.float32), np.array([1, 1, 1]), out=out) is out
    assert_same(out, np.ones(3, np.float32))
    with pytest.raises(kd.DTypeError, match="out="):
        f(np.float32(1), np.arange(4, dtype=np.float32), np.array([1, 1, 1]), out=np.empty(3))
    with pytest.raises(ValueError, match="device_out"):
        f(np.float32(1), np.arange(4, dtype=np.float32), np.array([1]), out=out, device_out=True)


@needs_cxx
def test_emulator_launch_errors_are_exceptions():
    """A launch the emulator refuses (here 2048 threads per block) raises; the process lives on."""
    import dataclasses

    from kerneldsl.runtime.emulator import EmulatorError
    inputs, Y = _dense("float32")
    f = kd.build(inputs, [Y], target="cuda-emu")
    f.launches = [dataclasses.replace(L, threads=2048) for L in f.launches]
    with pytest.raises(EmulatorError, match="invalid launch configuration"):
        f(*[np.ones(s, np.float32) for s in ((2, 3), (3, 4), (4,))])


def test_occupancy_estimate():
    from kerneldsl.codegen.cuda import blocks_per_sm
    assert blocks_per_sm("sm_90", 256, 32, 0) == 8  # threads bound: 2048 / 256
    assert blocks_per_sm("sm_90", 256, 128, 16512) == 2  # registers: 65536 / (128 * 256)
    assert blocks_per_sm("sm_90", 256, 255, 0) == 1
    assert blocks_per_sm("sm_80", 1024, 255, 0) == 0  # 255 * 1024 registers do not fit one SM
    assert blocks_per_sm("sm_80", 128, 16, 100 << 10) == 1  # shared memory bound
    assert blocks_per_sm("sm_86", 1024, 16, 0) == 1  # 1536 threads per SM


@needs_cxx
@needs_nvcc
def test_kernel_report_shows_resources_and_warns():
    inputs, Y = _dense("float32")
    f = kd.build(inputs, [Y], target="cuda-emu")
    (rep,) = f.kernels
    assert rep.name == "Y" and rep.launch.schedule == "gemm"  # the lowered kernel's attributes pass through
    assert rep.resources["registers"] > 0 and rep.resources["int64"]["registers"] > 0
    assert rep.blocks_per_sm >= 1 and rep.warnings == []
    assert "registers" in str(rep) and "block(s) per SM" in rep.summary()
    f._cubin = type(f._cubin)(f._cubin.path, "sm_80", "", {"kd_kernel_Y_i32": {
        "registers": 255, "spill_stores": 64, "spill_loads": 64, "shared": 200 << 10}})
    assert len(f.kernels[0].warnings) == 2 and "WARNING: spills" in f.kernels[0].summary()


def test_arch_is_the_gpus_else_the_environment_else_sm_90(monkeypatch):
    from kerneldsl.runtime import cuda as CU
    monkeypatch.setattr(CU, "device_capability", lambda: None)
    monkeypatch.delenv("KERNELDSL_CUDA_ARCH", raising=False)
    assert CU.default_arch() == "sm_90"
    monkeypatch.setenv("KERNELDSL_CUDA_ARCH", "80")
    assert CU.default_arch() == "sm_80"
    monkeypatch.setattr(CU, "device_capability", lambda: (9, 0))
    assert CU.default_arch() == "sm_90"  # a cubin for another major architecture would not load


@needs_cxx
def test_same_kernel_name_with_other_tiles_in_one_process(knobs):
    """Two emulator libraries with a kernel of the same name and different shared tiles, run in
    turn: each keeps its own shared arrays (the kernel bodies have internal linkage)."""
    inputs, Y = _dense("float32")
    knobs(**SMALL)
    small = kd.build(inputs, [Y], target="cuda-emu")
    knobs(gemm_bm=32, gemm_bn=32, gemm_bk=8, gemm_tm=2, gemm_tn=2)
    other = kd.build(inputs, [Y], target="cuda-emu")
    for f in (small, other, small):
        _check(f, inputs, Y, [(40, 9), (9, 35), (35,)], "float32")
