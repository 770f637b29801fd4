"""The CUDA GEMM template (codegen/cuda_gemm.py, templates/cuda/gemm.cu.j2) on the emulator
against the reference at awkward sizes, compiled by nvcc without warnings or spills; and the
pure-Python side of GPU arrays in `target="cuda"` callables (runtime/device_arrays.py).
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from conftest import assert_same, rng

import kerneldsl as kd
from kerneldsl.codegen import cuda as C

needs_cxx = pytest.mark.skipif(shutil.which("g++") is None, reason="the CUDA emulator needs g++")
needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc (CUDA toolkit) not installed")
TOL = {"float32": {"rtol": 3e-5, "atol": 2e-5}, "float64": {}}
SMALL = {"gemm_bm": 16, "gemm_bn": 16, "gemm_bk": 4, "gemm_tm": 2, "gemm_tn": 2}  # 64 threads: quick fibers


@pytest.fixture
def knobs(monkeypatch):
    def set_(**values):
        for k, v in values.items():
            monkeypatch.setitem(C.KNOBS, k, v)
    return set_


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


@needs_cxx
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("nmk", [(70, 50, 30), (1, 1, 1), (13, 67, 5), (64, 64, 16), (3, 2, 0), (97, 1, 33)])
def test_dense_epilogue_matches_reference(dtype, nmk):
    inputs, Y = _dense(dtype)
    f = kd.build(inputs, [Y], target="cuda-emu")
    assert [L.schedule for L in f.launches] == ["gemm"]
    n, m, k = nmk
    _check(f, inputs, Y, [(n, k), (k, m), (m,)], dtype)


@needs_cxx
@pytest.mark.parametrize("stages", [1, 2])
def test_small_tiles_many_k_slices_transposed_operand(knobs, stages):
    knobs(gemm_stages=stages, **SMALL)
    inputs, Y = _dense("float32", transposed=True)
    f = kd.build(inputs, [Y], target="cuda-emu")
    assert f.launches[0].schedule == "gemm" and f.launches[0].threads == 64
    assert f"stages={stages}" in f.source
    for n, m, k in [(37, 23, 41), (17, 16, 3)]:
        _check(f, inputs, Y, [(k, n), (k, m), (m,)], "float32")


@needs_cxx
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_batched_matmul_matches_reference(knobs, dtype):
    knobs(**SMALL)
    b, n, m, k = kd.sizes("b n m k")
    A = kd.placeholder((b, n, k), dtype, name="A")
    B = kd.placeholder((b, k, m), dtype, name="B")
    r = kd.reduce_axis(k, "r")
    Y = kd.compute((b, n, m), lambda q, i, j: kd.maximum(kd.sum(A[q, i, r] * B[q, r, j], axis=r), 0.0) * 2,
                   name="Y")
    f = kd.build([A, B], [Y], target="cuda-emu")
    assert f.launches[0].schedule == "gemm"
    for shape in [(3, 19, 7, 23), (1, 1, 1, 1), (2, 5, 33, 0)]:
        q, n_, m_, k_ = shape
        _check(f, [A, B], Y, [(q, n_, k_), (q, k_, m_)], dtype)


@needs_cxx
def test_one_block_strides_over_every_tile(knobs):
    knobs(max_blocks=1, **SMALL)
    inputs, Y = _dense("float32")
    f = kd.build(inputs, [Y], target="cuda-emu")
    _check(f, inputs, Y, [(40, 9), (9, 35), (35,)], "float32")


@needs_cxx
def test_gemm_knob_off_keeps_the_grid_stride_loop(knobs):
    knobs(gemm=False)
    inputs, Y = _dense("float32")
    f = kd.build(inputs, [Y], target="cuda-emu")
    assert [L.schedule for L in f.launches] == ["grid_stride"]
    _check(f, inputs, Y, [(5, 4), (4, 3), (3,)], "float32")


@pytest.mark.parametrize("bad, message", [
    ({"gemm_bm": 60, "gemm_tm": 8}, "multiple of gemm_tm"),
    ({"gemm_bm": 64, "gemm_bn": 64, "gemm_tm": 1, "gemm_tn": 1}, r"threads per block"),
    ({"gemm_bm": 32, "gemm_bn": 32, "gemm_bk": 1, "gemm_tm": 1, "gemm_tn": 1}, "whole elements"),
    ({"gemm_stages": 3}, r"gemm_stages must be an integer in \[1, 2\]"),
])
def test_gemm_knobs_are_validated(bad, message):
    with pytest.raises(ValueError, match=message):
        C.knobs(bad)


@needs_nvcc
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_nvcc_compiles_gemm_without_warnings_or_spills(arch):
    from kerneldsl.ir.lower import lower
    from kerneldsl.runtime.cuda import compile_cubin
    from kerneldsl.schedule.fuse import fuse
    ins, outs = [], []
    for dt in ("float32", "float64"):
        inputs, Y = _dense(dt)
        ins += inputs
        outs.append(kd.compute(Y.shape, lambda i, j, Y=Y: Y[i, j] * 1, name=f"out{dt[-2:]}"))
    g = fuse(outs, True)
    src = C.render(lower(ins, list(g.outputs), g.fused))
    cubin = compile_cubin(src.text, arch=arch)  # -Werror all-warnings
    gemms = [L for L in src.launches if L.schedule == "gemm"]
    assert len(gemms) == 2, [L.schedule for L in src.launches]
    for L in gemms:
        res = cubin.resources[L.kernel]
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


class _FakeDriver:
    """Records what a GpuFunction asks of the driver: no copies of GPU inputs, pointers passed as is."""
    name = "fake"

    def __init__(self):
        self.uploads, self.launches, self.allocs = 0, [], []

    def load(self, path):
        return None

    def function(self, mod, name):
        return name

    def to_device(self, a):
        self.uploads += 1
        return ("host-copy", a)

    def empty(self, nbytes):
        return ("empty", nbytes)

    def empty_array(self, shape, dtype):
        self.allocs.append((shape, np.dtype(dtype)))
        return FakeCudaArray(shape, np.dtype(dtype).str, ptr=0x9000_0000), 0x9000_0000

    def pointer(self, buf):
        return 0x1000

    def launch(self, fn, grid, block, args):
        self.launches.append((fn, grid, block, args))

    def synchronize(self):
        pass

    def to_host(self, dst, buf):
        dst[...] = 0


def test_gpu_callable_takes_device_arrays_in_place_and_leaves_outputs_there():
    from kerneldsl.ir.lower import lower
    from kerneldsl.runtime.cuda import Cubin, _gpu_function_class
    from kerneldsl.schedule.fuse import fuse
    inputs, Y = _dense("float32")
    g = fuse([Y], True)
    module = lower(inputs, list(g.outputs), g.fused)
    src = C.render(module)
    drv = _FakeDriver()
    f = _gpu_function_class()(module, src, Cubin("fake.cubin", "sm_90", ""), inputs, [Y], drv)
    a, b = FakeCudaArray((7, 5), ptr=0xA000), FakeCudaArray((5, 3), strides=(4, 20), ptr=0xB000)
    bias = np.zeros(3, np.float32)  # numpy and GPU inputs mix: the numpy one is uploaded
    out = f(a, b, bias)
    assert isinstance(out, FakeCudaArray) and drv.allocs == [((7, 3), np.dtype(np.float32))]
    assert drv.uploads == 2  # bias and the error report, not a or b
    (_, grid, block, args), = drv.launches
    assert (grid, block) == (1, 256)  # one 64 x 64 tile, the default GEMM knobs
    ints = [int(x) for x in args]
    assert 0xA000 in ints and 0xB000 in ints and 0x9000_0000 in ints
    assert ints[ints.index(0xB000) + 1:ints.index(0xB000) + 3] == [1, 5]  # b's element strides
    with pytest.raises(kd.DTypeError):
        f(FakeCudaArray((7, 5), "<f8"), b, bias)
    with pytest.raises(kd.ShapeError):
        f(FakeCudaArray((7, 4)), b, bias)
    host = f(np.zeros((7, 5), np.float32), np.zeros((5, 3), np.float32), bias)
    assert isinstance(host, np.ndarray) and host.shape == (7, 3)  # numpy in, numpy out
