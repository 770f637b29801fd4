"""Shared test setup: a private kernel cache, and `check`, which builds, runs and compares.

Every compiled result is compared twice: with the reference interpreter
(`kd.evaluate`) and with an independent numpy expression written in the test.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import numpy as np
import pytest
from hypothesis import settings

import kerneldsl as kd

# In CI the property tests replay the same examples every run: a red build is reproducible.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

# One cache per test process, made before any kernel is built, unless the caller chose one.
# tests/test_cache.py points KERNELDSL_CACHE elsewhere per test (monkeypatch) and restores it.
if not os.environ.get("KERNELDSL_CACHE"):
    _CACHE = tempfile.mkdtemp(prefix="kerneldsl-test-cache-")
    os.environ["KERNELDSL_CACHE"] = _CACHE
    atexit.register(shutil.rmtree, _CACHE, True)

# Tuning records stay with the test that makes them: a tutorial or test that tunes writes to its
# own file (KERNELDSL_TUNING_DB set per test), and builds elsewhere never see a record.
os.environ["KERNELDSL_USE_RECORDS"] = "0"


def pytest_addoption(parser):
    parser.addoption("--gpu", action="store_true",
                     help="also run the CUDA tests on a real GPU (target='cuda'), not only on the emulator")


def pytest_configure(config):
    if config.getoption("--gpu"):
        os.environ["KERNELDSL_TEST_GPU"] = "1"


def gpu_ready() -> bool:
    """A real GPU was asked for (--gpu or KERNELDSL_TEST_GPU=1) and is there (nvcc, a driver, a device)."""
    if os.environ.get("KERNELDSL_TEST_GPU") != "1":
        return False
    from kerneldsl.runtime.cuda import gpu_available
    return gpu_available()


def cuda_targets() -> list:
    """The CUDA targets a test runs on: the emulator (needs g++), and a real GPU when gpu_ready()."""
    out = [pytest.param("cuda-emu", marks=pytest.mark.skipif(shutil.which("g++") is None,
                                                              reason="the CUDA emulator needs g++"))]
    if gpu_ready():
        out.append(pytest.param("cuda", marks=pytest.mark.gpu))
    return out


# Default tolerances when comparing a kernel with numpy (the reference uses numpy itself, so
# kernel vs reference differs only by summation order and libm vs numpy's own math).
RTOL = {"float32": 2e-5, "float64": 1e-12}
ATOL = {"float32": 1e-6, "float64": 1e-13}


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def assert_same(got, want, rtol=None, atol=None, what="") -> None:
    """Equal dtype and shape; floats close (NaN where NaN, infinities equal), others exact."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype}, expected {want.dtype}"
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    if got.dtype.kind == "f":
        name = got.dtype.name
        np.testing.assert_allclose(got, want, rtol=RTOL[name] if rtol is None else rtol,
                                   atol=ATOL[name] if atol is None else atol, equal_nan=True, err_msg=what)
    else:
        np.testing.assert_array_equal(got, want, err_msg=what)


def check(outputs, feed: dict, inputs=None, expected=None, rtol=None, atol=None, ref_rtol=None,
          ref_atol=None, f=None):
    """Build `outputs` from `inputs` (default: the keys of `feed`, in order), run on the arrays of
    `feed`, and compare with `kd.evaluate` and, if given, with `expected` (numpy arrays, one per
    output). Returns (function, results as a list)."""
    single = isinstance(outputs, kd.Tensor)
    outputs = [outputs] if single else list(outputs)
    inputs = list(feed) if inputs is None else list(inputs)
    f = kd.build(inputs, outputs) if f is None else f
    got = f(*[feed[p] for p in inputs])
    got = [got] if len(outputs) == 1 else list(got)
    ref = kd.evaluate(outputs, feed)
    for t, g, r in zip(outputs, got, ref):
        assert_same(g, r, ref_rtol if ref_rtol is not None else rtol,
                    ref_atol if ref_atol is not None else atol, what=f"{t.name}: kernel vs reference")
    if expected is not None:
        expected = [expected] if not isinstance(expected, (list, tuple)) else list(expected)
        assert len(expected) == len(outputs)
        for t, g, e in zip(outputs, got, expected):
            assert_same(g, np.asarray(e), rtol, atol, what=f"{t.name}: kernel vs numpy")
    return f, got


def matmul(dtype="float32", ta=False, tb=False):
    """C = A @ B over sizes n, m, k (A read transposed with ta, B with tb): (A, B, C)."""
    n, m, k = kd.sizes("n m k")
    A = kd.placeholder((k, n) if ta else (n, k), dtype, name="A")
    B = kd.placeholder((m, k) if tb else (k, m), dtype, name="B")
    r = kd.reduce_axis(k, name="r")
    C = kd.compute((n, m), lambda i, j: kd.sum((A[r, i] if ta else A[i, r]) * (B[j, r] if tb else B[r, j]),
                                               axis=r), name="C")
    return A, B, C


def loop_schedule(outputs, *args, **kwargs):
    """kd.schedule with every kernel running its loop nest (template `loops`), even contractions
    (whose default is the GEMM template): for tests of the loop primitives."""
    s = kd.schedule(outputs, *args, **kwargs)
    for k in s.module.kernels:
        if k.template != "loops":
            s.template(k.name, "loops")
    return s


def cuda_source(inputs, outputs, target="cuda"):
    """The CUDA source (text and launches) kd.build would compile for `outputs` on `target`."""
    from kerneldsl.codegen.cuda import render
    s = kd.schedule(outputs, inputs, target=target)
    return render(s.module, s.target, "test")


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """A brand-new, empty kernel cache (disk and memory) for tests that change compiler settings."""
    from kerneldsl.runtime.build import clear_memory_cache
    monkeypatch.setenv("KERNELDSL_CACHE", str(tmp_path / "cache"))
    clear_memory_cache()
    yield tmp_path / "cache"
    clear_memory_cache()
