"""GPU benchmarks of the CUDA backend, side by side with PyTorch / CuPy where present.

Run: python benchmarks/bench_gpu.py   (needs a CUDA GPU, nvcc, and PyCUDA or CuPy)

Workloads (the CUDA issue's list):
  fused elementwise, 2^26 float32     tanh(x*w + b) * sigmoid(y) + log1p(|z|)
  row softmax 8192 x 4096              the row-reduction schedule
  SGEMM 4096^3, strict fp32            (torch with TF32 off); the GEMM template
                                       (templates/cuda/gemm.cu.j2), timed with numpy inputs
                                       and with device-resident inputs/outputs (no copies)
  conv2d fwd + bwd, 64->64 3x3, batch 128, 32x32
  exp of 230400 elements x 1000 calls  GPU vs CPU (per-call overhead dominates)

Times include host<->device copies for kerneldsl (its GPU callable takes numpy arrays),
so the kernel-only numbers of the peers are an upper bound for us; the ratio column says so.
On a machine without a GPU the script says so and exits 0.
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from harness import machine, table, timeit

import kerneldsl as kd
from kerneldsl.runtime.cuda import driver, gpu_available, nvcc_path


def _torch():
    try:
        import torch
        return torch if torch.cuda.is_available() else None
    except ImportError:
        return None


def fused_elementwise(n: int, torch):
    N = kd.size("N")
    x, y, z = (kd.placeholder((N,), name=s) for s in "xyz")
    out = kd.compute((N,), lambda i: kd.tanh(x[i] * 1.5 + 0.25) * kd.sigmoid(y[i]) + kd.log1p(kd.abs(z[i])),
                     name="out")
    f = kd.build([x, y, z], [out], target="cuda")
    a, b, c = (np.random.default_rng(k).standard_normal(n, dtype=np.float32) for k in range(3))
    row = {"kerneldsl": timeit(lambda: f(a, b, c), repeat=5)}
    if torch is not None:
        ta, tb, tc = (torch.from_numpy(v).cuda() for v in (a, b, c))
        row["torch"] = timeit(lambda: (torch.tanh(ta * 1.5 + 0.25) * torch.sigmoid(tb) + torch.log1p(tc.abs()),
                                       torch.cuda.synchronize()), repeat=5)
    return row


def softmax(n: int, m: int, torch):
    R, C = kd.sizes("R C")
    X = kd.placeholder((R, C), name="X")
    c1, c2 = kd.reduce_axis(C, "c1"), kd.reduce_axis(C, "c2")
    mx = kd.compute((R,), lambda i: kd.max(X[i, c1], axis=c1), name="mx")
    e = kd.compute((R, C), lambda i, j: kd.exp(X[i, j] - mx[i]), name="e")
    s = kd.compute((R,), lambda i: kd.sum(e[i, c2], axis=c2), name="s")
    Y = kd.compute((R, C), lambda i, j: e[i, j] / s[i], name="Y")
    f = kd.build([X], [Y], target="cuda")
    x = np.random.default_rng(0).standard_normal((n, m), dtype=np.float32)
    row = {"kerneldsl": timeit(lambda: f(x), repeat=5)}
    if torch is not None:
        tx = torch.from_numpy(x).cuda()
        row["torch"] = timeit(lambda: (torch.softmax(tx, 1), torch.cuda.synchronize()), repeat=5)
    return row


def sgemm(n: int, torch):
    M, N, K = kd.sizes("M N K")
    A, B = kd.placeholder((M, K), name="A"), kd.placeholder((K, N), name="B")
    r = kd.reduce_axis(K, "r")
    C = kd.compute((M, N), lambda i, j: kd.sum(A[i, r] * B[r, j], axis=r), name="C")
    f = kd.build([A, B], [C], target="cuda")
    assert [L.schedule for L in f.launches] == ["gemm"], "SGEMM must take the tiled GEMM template"
    res = f.resources[f.launches[0].kernel]
    print(f"SGEMM kernel: {res['registers']} registers, {res['shared']} B shared, "
          f"{res['spill_stores']} B spill stores")
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    row = {"kerneldsl": timeit(lambda: f(a, a), repeat=3, warmup=1)}
    if torch is not None:
        torch.backends.cuda.matmul.allow_tf32 = False
        ta = torch.from_numpy(a).cuda()
        # GPU arrays in, GPU arrays out: the kernel alone (the callable synchronizes)
        row["kerneldsl-device"] = timeit(lambda: f(ta, ta), repeat=3, warmup=1)
        row["torch"] = timeit(lambda: (ta @ ta, torch.cuda.synchronize()), repeat=5)
    return row


def conv2d_fwd_bwd(batch: int, ch: int, hw: int, torch):
    N, CI, CO, H, W = kd.sizes("N CI CO H W")
    img, ker = kd.placeholder((N, CI, H, W), name="img"), kd.placeholder((CO, CI, 3, 3), name="ker")
    ci, kh, kw = kd.reduce_axis(CI, "ci"), kd.reduce_axis(3, "kh"), kd.reduce_axis(3, "kw")
    out = kd.compute((N, CO, H - 2, W - 2), lambda b, o, h, v: kd.sum(
        img[b, ci, h + kh, v + kw] * ker[o, ci, kh, kw], axis=[ci, kh, kw]), name="out")
    dout = kd.placeholder((N, CO, H - 2, W - 2), name="dout")
    dimg, dker = kd.grad(out, [img, ker], dy=dout)
    f = kd.build([img, ker, dout], [out, dimg, dker], target="cuda")
    g = np.random.default_rng(0)
    x = g.standard_normal((batch, ch, hw, hw), dtype=np.float32)
    k = g.standard_normal((ch, ch, 3, 3), dtype=np.float32)
    d = g.standard_normal((batch, ch, hw - 2, hw - 2), dtype=np.float32)
    row = {"kerneldsl": timeit(lambda: f(x, k, d), repeat=3, warmup=1)}
    if torch is not None:
        tx, tk, td = (torch.from_numpy(v).cuda() for v in (x, k, d))
        tx.requires_grad_(True)
        tk.requires_grad_(True)

        def step():
            y = torch.nn.functional.conv2d(tx, tk)
            y.backward(td)
            torch.cuda.synchronize()
        row["torch"] = timeit(step, repeat=5)
    return row


def many_small_exps(n: int, calls: int):
    L = kd.size("L")
    x = kd.placeholder((L,), name="x")
    y = kd.compute((L,), lambda i: kd.exp(x[i]), name="y")
    fg, fc = kd.build([x], [y], target="cuda"), kd.build([x], [y], target="c")
    a = np.random.default_rng(0).standard_normal(n, dtype=np.float32)
    return {"kerneldsl-gpu": timeit(lambda: [fg(a) for _ in range(calls)], repeat=3, warmup=1),
            "kerneldsl-cpu": timeit(lambda: [fc(a) for _ in range(calls)], repeat=3, warmup=1),
            "numpy": timeit(lambda: [np.exp(a) for _ in range(calls)], repeat=3, warmup=1)}


def main() -> int:
    if not gpu_available():
        why = "nvcc not found" if nvcc_path() is None else "no CUDA GPU with PyCUDA or CuPy on this machine"
        print(f"bench_gpu: skipped ({why}); the CUDA emulator (target='cuda-emu') is for correctness, "
              f"not speed")
        return 0
    torch = _torch()
    print(f"bench_gpu on {machine()}, driver {driver().name}")
    rows = [
        ("fused elementwise 2^26", fused_elementwise(1 << 26, torch)),
        ("row softmax 8192x4096", softmax(8192, 4096, torch)),
        ("SGEMM 4096^3 fp32", sgemm(4096, torch)),
        ("conv2d fwd+bwd 64->64 3x3 b128 32x32", conv2d_fwd_bwd(128, 64, 32, torch)),
    ]
    print(table("GPU (seconds; ratio = torch / kerneldsl, copies included for kerneldsl)", rows, base="torch"))
    print(table("exp of 230400 elements x 1000 calls", [("exp x1000", many_small_exps(230400, 1000))],
                base="numpy"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
