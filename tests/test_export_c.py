"""kd.export.c_library: the generated library, built with its own build line and called from a
small C program (forward and backward, strided inputs, error codes), and its CUDA twin run on
the CUDA emulator and compiled by nvcc."""

from __future__ import annotations

import ctypes
import json
import re
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest
from test_export_ops import embedding, layer_norm_gelu, layer_norm_gelu_np

import kerneldsl as kd
from kerneldsl.export.cfunction import function_source
from kerneldsl.export.spec import op_spec

CTYPE = {"float32": "float", "float64": "double", "int32": "int32_t", "int64": "int64_t", "bool": "uint8_t"}
needs_cc = pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")


def c_program(fs, arrays, strides=None) -> str:
    """A C program calling `fs` on `arrays` (flat data written into the source), printing the
    return code, the bad index and every output."""
    strides = strides or [None] * len(arrays)
    lines = ["#include <stdio.h>", "#include <stdlib.h>", f'#include "{fs.signature.name.split("_backward")[0]}.h"',
             "int main(void) {", "    int64_t bad = -1, ws = -1;"]
    ins = [a for a in fs.arrays if a.role == "input"]
    outs = [a for a in fs.arrays if a.role == "output"]
    call, shape_args = [], []
    for k, (a, x, st) in enumerate(zip(ins, arrays, strides)):
        data, shape = x
        ct = CTYPE[a.tensor.dtype]
        vals = ", ".join(repr(float(v)) if ct in ("float", "double") else str(int(v)) for v in data.ravel()) or "0"
        lines.append(f"    static {ct} in{k}[] = {{{vals}}};")
        lines.append(f"    int64_t in{k}_shape[] = {{{', '.join(map(str, shape)) or '0'}}};")
        st_name = "NULL"
        if st is not None:
            lines.append(f"    int64_t in{k}_strides[] = {{{', '.join(map(str, st))}}};")
            st_name = f"in{k}_strides"
        call.append(f"in{k}, in{k}_shape, {st_name}")
        shape_args.append(f"in{k}_shape")
    for k, a in enumerate(outs):
        lines.append(f"    int64_t out{k}_shape[{max(a.tensor.ndim, 1)}] = {{0}};")
    lines.append(f"    int rc = {fs.symbol}_shapes({', '.join(shape_args + [f'out{k}_shape' for k in range(len(outs))])}, &ws);")
    lines.append('    printf("shapes %d\\n", rc);')
    for k, a in enumerate(outs):
        count = " * ".join(f"out{k}_shape[{d}]" for d in range(a.tensor.ndim)) or "1"
        lines.append(f"    int64_t out{k}_n = {count};")
        lines.append(f"    {CTYPE[a.tensor.dtype]} *out{k} = malloc(sizeof *out{k} * (out{k}_n ? out{k}_n : 1));")
        call.append(f"out{k}, out{k}_shape, NULL")
    lines.append(f"    rc = {fs.symbol}({', '.join(call)}, NULL, &bad);")
    lines.append('    printf("rc %d %lld %s\\n", rc, (long long)bad, ' + f"{fs.symbol}_error(rc));")
    for k, a in enumerate(outs):
        fmt = "%.9g" if a.tensor.dtype.startswith("float") else "%lld"
        cast = "(double)" if fmt == "%.9g" else "(long long)"
        lines.append(f'    for (int64_t i = 0; i < out{k}_n; ++i) printf("{fmt} ", {cast}out{k}[i]);')
        lines.append('    printf("\\n");')
    lines += ["    return 0;", "}"]
    return "\n".join(lines) + "\n"


def run_program(lib, fs, arrays, strides=None):
    """Build the library with its build line, compile and run the C program: (rc, bad, outputs)."""
    d = lib.directory
    if not (d / f"lib{lib.name}.so").exists():
        subprocess.run(lib.build["cc"], shell=True, cwd=d, check=True, capture_output=True, text=True)
    (d / "main.c").write_text(c_program(fs, arrays, strides))
    exe = d / f"main_{fs.symbol}"
    subprocess.run(["cc", "-O1", "-Wall", "-Werror", "-I", str(d), str(d / "main.c"), "-L", str(d), f"-l{lib.name}",
                    f"-Wl,-rpath,{d}", "-o", str(exe)], check=True, capture_output=True, text=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "shapes 0" or out[0] == f"shapes {out[1].split()[1]}", out[:2]
    head = out[1].split(" ", 3)
    rc, bad = int(head[1]), int(head[2])
    outputs = [np.array([float(v) for v in line.split()]) for line in out[2:] if line.strip()]
    return rc, bad, outputs, out[1]


@pytest.fixture(scope="module")
def ln_library(tmp_path_factory):
    (X, W, B), Y = layer_norm_gelu("float64")
    lib = kd.export.c_library([X, W, B], [Y], tmp_path_factory.mktemp("lib") / "layer_norm")
    return lib, (X, W, B), Y


def test_the_library_is_sources_header_metadata_and_a_build_line(ln_library):
    lib, _, _ = ln_library
    assert [p.name for p in lib.sources] == ["layer_norm.c", "layer_norm_backward.c"]
    header = lib.header.read_text()
    for symbol in ("layer_norm", "layer_norm_shapes", "layer_norm_error", "layer_norm_backward",
                   "layer_norm_backward_shapes"):
        assert re.search(rf"[ *]{symbol}\(", header), symbol
    assert "X  float64  [n, m]" in header and "LAYER_NORM_ERR_SHAPE (-1)" in header
    meta = json.loads(lib.metadata.read_text())
    fwd, bwd = meta["functions"]
    assert fwd["inputs"][0] == {"name": "X", "argument": "X", "dtype": "float64", "shape": ["n", "m"]}
    assert [s["from"] for s in fwd["sizes"]] == ["X.shape[0]", "X.shape[1]"]
    assert bwd["gradients"] == {"dX": "X", "dW": "W", "dB": "B"} and bwd["cotangents"] == ["Y"]
    assert "-o liblayer_norm.so layer_norm.c layer_norm_backward.c" in meta["build"]["cc"]


@needs_cc
def test_a_c_program_computes_forward_and_backward_as_the_reference(ln_library):
    lib, (X, W, B), Y = ln_library
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((5, 7)), rng.standard_normal(7), rng.standard_normal(7)
    rc, _, (y,), _ = run_program(lib, lib.functions[0], [(x, x.shape), (w, w.shape), (b, b.shape)])
    assert rc == 0
    np.testing.assert_allclose(y.reshape(5, 7), layer_norm_gelu_np(x, w, b), rtol=1e-7, atol=1e-8)
    bwd = op_spec([X, W, B], [Y], "layer_norm").backward
    dy = rng.standard_normal((5, 7))
    feed = dict(zip(bwd.inputs, [x, w, b, dy]))
    want = kd.evaluate(list(bwd.outputs), feed)
    rc, _, got, _ = run_program(lib, lib.functions[1], [(a, a.shape) for a in (x, w, b, dy)])
    assert rc == 0
    for g, r in zip(got, want):
        np.testing.assert_allclose(g.reshape(r.shape), r, rtol=1e-7, atol=1e-8)


@needs_cc
def test_strided_inputs_and_empty_batches(ln_library):
    lib, _, _ = ln_library
    rng = np.random.default_rng(1)
    xt, w, b = rng.standard_normal((7, 3)), rng.standard_normal(7), rng.standard_normal(7)
    # X is (3, 7) stored transposed: strides (1, 3)
    rc, _, (y,), _ = run_program(lib, lib.functions[0], [(xt, (3, 7)), (w, w.shape), (b, b.shape)],
                                 strides=[(1, 3), None, None])
    assert rc == 0
    np.testing.assert_allclose(y.reshape(3, 7), layer_norm_gelu_np(xt.T, w, b), rtol=1e-7, atol=1e-8)
    rc, _, outs, _ = run_program(lib, lib.functions[0], [(np.zeros(0), (0, 7)), (w, w.shape), (b, b.shape)])
    assert rc == 0 and outs == []


@needs_cc
def test_error_codes_instead_of_crashes(ln_library, tmp_path):
    lib, _, _ = ln_library
    w = np.ones(7)
    rc, bad, _, text = run_program(lib, lib.functions[0], [(np.zeros((2, 7)), (2, 7)), (np.ones(6), (6,)), (w, (7,))])
    assert (rc, bad) == (-1, 1) and "shape" in text  # W has 6 elements, m is 7
    (E, ids), Yg = embedding("float32")
    glib = kd.export.c_library([E, ids], [Yg], tmp_path / "embed")
    table = np.arange(12, dtype=np.float32)
    rc, bad, _, text = run_program(glib, glib.functions[0], [(table, (4, 3)), (np.array([1, 4, 0]), (3,))])
    assert rc > 0 and bad == 4 and "out of range [0, v)" in text
    rc, _, (y,), _ = run_program(glib, glib.functions[0], [(table, (4, 3)), (np.array([3, 0]), (2,))])
    assert rc == 0 and y.tolist() == [9, 10, 11, 0, 1, 2]


@needs_cc
def test_argument_names_that_meet_the_generated_code_are_renamed(tmp_path):
    """Inputs named like the generated code's own identifiers (b_, s_, kd_ prefixes, C words)."""
    n = kd.size("n")
    ins = [kd.placeholder((n,), "float32", name=nm) for nm in ("b", "s_x", "kd_y", "int")]
    Y = kd.compute((n,), lambda i: ins[0][i] * ins[1][i] + ins[2][i] - ins[3][i], name="Y")
    lib = kd.export.c_library(ins, [Y], tmp_path / "names", backward=False)
    fs = lib.functions[0]
    assert [a.data for a in fs.arrays] == ["b", "s_x", "kd_y", "int", "Y"][:1] + ["arg_s_x", "arg_kd_y", "arg_int", "Y"]
    assert fs.arrays[0].shape == "arg_b_shape"
    xs = [np.arange(3.0) + k for k in range(4)]
    rc, _, (y,), _ = run_program(lib, fs, [(x, x.shape) for x in xs])
    assert rc == 0
    np.testing.assert_allclose(y, xs[0] * xs[1] + xs[2] - xs[3])


def _call(lib, symbol, arrays, n_in, workspace=None, stream=False):
    """Call an entry point through ctypes on numpy arrays (host memory)."""
    args = []
    for k, a in enumerate(arrays):
        args += [ctypes.c_void_p(a.ctypes.data if a.size else None),
                 (ctypes.c_int64 * max(a.ndim, 1))(*a.shape),
                 (ctypes.c_int64 * max(a.ndim, 1))(*(s // a.itemsize for s in a.strides))]
    bad = ctypes.c_int64(-7)
    tail = [ctypes.c_void_p(workspace), ctypes.byref(bad)] + ([ctypes.c_void_p(0)] if stream else [])
    return getattr(lib, symbol)(*args, *tail), bad.value


@pytest.mark.skipif(shutil.which("g++") is None, reason="the CUDA emulator needs g++")
def test_the_cuda_library_runs_forward_and_backward_on_the_emulator():
    from kerneldsl.export.build import emulated_library
    (X, W, B), Y = layer_norm_gelu("float32")
    spec = op_spec([X, W, B], [Y], "ln_emu")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((45, 37)).astype(np.float32)[:, ::2]  # strided rows: 45 x 19
    w, b = rng.standard_normal(19).astype(np.float32), rng.standard_normal(19).astype(np.float32)
    dy = rng.standard_normal((45, 19)).astype(np.float32)
    for sig, ins in ((spec.forward, [x, w, b]), (spec.backward, [x, w, b, dy])):
        fs = function_source(sig, "cuda")
        lib = emulated_library(fs.text, sig.name)
        want = kd.evaluate(list(sig.outputs), dict(zip(sig.inputs, ins)))
        outs = [np.full(r.shape, np.nan, np.float32) for r in want]
        rc, _ = _call(lib, sig.name, ins + outs, len(ins), stream=True)
        assert rc == 0
        for g, r in zip(outs, want):
            np.testing.assert_allclose(g, r, rtol=2e-5, atol=2e-5)
        # the same entry point's checks: an output overlapping an input
        rc, bad = _call(lib, sig.name, ins + [ins[0]] + outs[1:], len(ins), stream=True)
        assert (rc, bad) == (-4, len(ins))


@pytest.mark.skipif(shutil.which("g++") is None, reason="the CUDA emulator needs g++")
def test_a_gather_out_of_range_is_reported_by_the_cuda_library():
    from kerneldsl.export.build import emulated_library
    (E, ids), Y = embedding("float32")
    fs = function_source(op_spec([E, ids], [Y], "embed_emu").forward, "cuda")
    assert fs.needs_sync  # per-element checks: the entry point waits for the kernels' report
    lib = emulated_library(fs.text, "embed_emu")
    table, out = np.arange(12, dtype=np.float32).reshape(4, 3), np.zeros((2, 3), np.float32)
    rc, bad = _call(lib, "embed_emu", [table, np.array([2, -1]), out], 2, stream=True)
    assert rc > 0 and bad == -1
    rc, _ = _call(lib, "embed_emu", [table, np.array([2, 1]), out], 2, stream=True)
    assert rc == 0 and out.tolist() == [[6, 7, 8], [3, 4, 5]]


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc")
def test_nvcc_builds_the_cuda_library_and_without_a_gpu_it_returns_an_error(tmp_path):
    (X, W, B), Y = layer_norm_gelu("float32")
    lib = kd.export.c_library([X, W, B], [Y], tmp_path / "layer_norm", target="cuda")
    cmd = lib.build["nvcc"]
    r = subprocess.run(shlex.split(cmd) + ["-Xcompiler", "-Wall"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "warning" not in r.stderr.lower(), r.stderr[-3000:]
    # in a child process: whatever the machine has, the call returns a code and nothing crashes
    script = f"""
import ctypes, numpy as np
lib = ctypes.CDLL({str(tmp_path / 'liblayer_norm.so')!r})
x, w, y = np.ones((2, 3), np.float32), np.ones(3, np.float32), np.empty((2, 3), np.float32)
sh = lambda a: (ctypes.c_int64 * a.ndim)(*a.shape)
bad = ctypes.c_int64(0)
P = lambda a: ctypes.c_void_p(a.ctypes.data)
rc = lib.layer_norm(P(x), sh(x), None, P(w), sh(w), None, P(w), sh(w), None, P(y), sh(y), None, None,
                    ctypes.byref(bad), None)
print(rc)
"""
    r = subprocess.run(["python", "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    from conftest import gpu_ready
    if not gpu_ready():
        assert int(r.stdout.split()[-1]) in (-5, -6)  # no device: no memory (-5) or a CUDA error (-6)


@needs_cc
def test_a_shape_whose_bytes_overflow_is_an_error_code_not_a_crash(tmp_path):
    n = kd.size("n")
    X = kd.placeholder((n,), "float32", name="X")
    Y = kd.compute((n,), lambda i: X[i] * 2, name="Y")
    lib = kd.export.c_library([X], [Y], tmp_path / "twice", backward=False)
    subprocess.run(lib.build["cc"], shell=True, cwd=lib.directory, check=True, capture_output=True, text=True)
    # in a child process: before the check, the kernel ran over 2**62 elements of a 5-element buffer
    script = f"""
import ctypes, numpy as np
lib = ctypes.CDLL({str(lib.directory / 'libtwice.so')!r})
x, y = np.ones(5, np.float32), np.zeros(5, np.float32)
P = lambda a: ctypes.c_void_p(a.ctypes.data)
for shape, stride in (((1 << 62,), None), ((3,), (1 << 62,))):
    sh = (ctypes.c_int64 * 1)(*shape)
    st = (ctypes.c_int64 * 1)(*stride) if stride else None
    bad = ctypes.c_int64(-9)
    rc = lib.twice(P(x), sh, st, P(y), sh, None, None, ctypes.byref(bad))
    print(rc, bad.value)
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split("\n")[:2] == ["-7 0", "-7 0"], r.stdout
    assert "TWICE_ERR_SIZE (-7)" in lib.header.read_text()
