"""GPU benchmarks of the CUDA backend, side by side in one run with PyTorch (cuBLAS / cuDNN),
CuPy and Triton where present.

Run: python benchmarks/bench_gpu.py   (needs a CUDA GPU, nvcc, and CuPy or PyCUDA)

Workloads and aims (the CUDA issue's list); every input and output stays on the GPU (CuPy or
PyTorch arrays passed in place, outputs left on the device) unless the row says numpy:
  copy 2^26 float32                     device-to-device copy: the bandwidth yardstick
  fused elementwise, 2^26 float32       tanh(x*1.5 + 0.25) * sigmoid(y) + log1p(|z|); aim >= 85% of copy
  row softmax 8192 x 4096               aim: at least torch.softmax's speed
  SGEMM 4096^3, strict fp32             aim: >= 70% of cuBLAS fp32 with TF32 off; a small knob sweep
  conv2d fwd + bwd, 64->64 3x3, batch 128, 32x32   aim: >= 50% of cuDNN (TF32 off)
  exp of 230400 float32 x 1000 calls    GPU (numpy in and out, and device-resident) vs the CPU

A kerneldsl call synchronizes (it reads back the kernels' index-error report), so its times
include that round trip; the peers are timed with a synchronize after the last call.
Results are checked against the peer before they are timed. Without a GPU the script says so
and exits 0.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from harness import machine, table, timeit

import kerneldsl as kd
from kerneldsl import knobs as cuda_knobs
from kerneldsl.runtime.cuda import default_arch, driver, gpu_available, nvcc_path


def _torch():
    try:
        import torch
        return torch if torch.cuda.is_available() else None
    except ImportError:
        return None


def _triton():
    try:
        import triton
        import triton.language as tl
        return triton, tl
    except ImportError:
        return None


# --- the workloads as kerneldsl functions -------------------------------------------------------
def build_elementwise(target):
    N = kd.size("N")
    x, y, z = (kd.placeholder((N,), name=s) for s in "xyz")
    out = kd.compute((N,), lambda i: kd.tanh(x[i] * 1.5 + 0.25) * kd.sigmoid(y[i]) + kd.log1p(kd.abs(z[i])),
                     name="out")
    return kd.build([x, y, z], [out], target=target)


def build_softmax(target):
    """Written with exp inline in both uses: one row kernel, exp stored once in the output row."""
    R, C = kd.sizes("R C")
    X = kd.placeholder((R, C), name="X")
    c1, c2 = kd.reduce_axis(C, "c1"), kd.reduce_axis(C, "c2")
    mx = kd.compute((R,), lambda i: kd.max(X[i, c1], axis=c1), name="mx")
    s = kd.compute((R,), lambda i: kd.sum(kd.exp(X[i, c2] - mx[i]), axis=c2), name="s")
    Y = kd.compute((R, C), lambda i, j: kd.exp(X[i, j] - mx[i]) / s[i], name="Y")
    return kd.build([X], [Y], target=target)


def build_sgemm(target):
    M, N, K = kd.sizes("M N K")
    A, B = kd.placeholder((M, K), name="A"), kd.placeholder((K, N), name="B")
    r = kd.reduce_axis(K, "r")
    C = kd.compute((M, N), lambda i, j: kd.sum(A[i, r] * B[r, j], axis=r), name="C")
    return kd.build([A, B], [C], target=target)


def build_conv(target):
    """conv2d (valid, NCHW) and its gradients for the image and the kernel."""
    N, CI, CO, H, W = kd.sizes("N CI CO H W")
    img, ker = kd.placeholder((N, CI, H, W), name="img"), kd.placeholder((CO, CI, 3, 3), name="ker")
    ci, kh, kw = kd.reduce_axis(CI, "ci"), kd.reduce_axis(3, "kh"), kd.reduce_axis(3, "kw")
    out = kd.compute((N, CO, H - 2, W - 2), lambda b, o, h, v: kd.sum(
        img[b, ci, h + kh, v + kw] * ker[o, ci, kh, kw], axis=[ci, kh, kw]), name="out")
    dout = kd.placeholder((N, CO, H - 2, W - 2), name="dout")
    dimg, dker = kd.grad(out, [img, ker], dy=dout)
    return kd.build([img, ker, dout], [out, dimg, dker], target=target)


def resource_report(target: str) -> None:
    """ptxas's report for every kernel of the workloads, with each GEMM knob set: what can be
    measured without a GPU (registers with int32 and int64 indices, spills, blocks per SM)."""
    print(f"ptxas report ({default_arch()}), kernels as built for the benchmarks:")
    print("| workload | knobs | kernel | schedule | registers (int32 idx) | registers (int64 idx) "
          "| spills (B) | shared (B) | blocks/SM |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, build, sweep in (("elementwise", build_elementwise, [{}]), ("softmax", build_softmax, [{}]),
                               ("SGEMM", build_sgemm, GEMM_SWEEP), ("conv fwd+bwd", build_conv, GEMM_SWEEP)):
        for kn in sweep:
            with cuda_knobs(**kn):
                f = build(target)
            for k in f.kernels:
                r = k.resources
                label = "default" if not kn else f"{kn['gemm_bm']}x{kn['gemm_bn']}x{kn['gemm_bk']} " \
                                                 f"{kn['gemm_tm']}x{kn['gemm_tn']}"
                print(f"| {name} | {label} | {k.launch.kernel} | {k.launch.schedule} | {r['registers']} | "
                      f"{r['int64']['registers']} | {r['spill_stores'] + r['int64']['spill_stores']} | "
                      f"{r['shared']} | {k.blocks_per_sm} |")


def gpu_timeit(fn, sync, repeat=5, number=10, warmup=2):
    """Median seconds per call of `fn` run `number` times back to back, then synchronized."""
    def batch():
        for _ in range(number):
            fn()
        sync()
    return timeit(batch, repeat=repeat, warmup=warmup, idle=0.1) / number


def _close(got, want, what, rtol=2e-3, atol=2e-3):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    err = np.abs(got - want).max() / max(1.0, np.abs(want).max())
    status = "ok" if np.allclose(got, want, rtol=rtol, atol=atol) else "MISMATCH"
    print(f"  check {what}: max rel err {err:.2e} {status}")


def copy_and_elementwise(n, torch, tri):
    sync = torch.cuda.synchronize
    g = torch.Generator(device="cuda").manual_seed(0)
    x, y, z = (torch.randn(n, device="cuda", generator=g) for _ in range(3))
    dst = torch.empty_like(x)
    copy = gpu_timeit(lambda: dst.copy_(x), sync)
    f = build_elementwise("cuda")
    def chain(a, b, c):
        return torch.tanh(a * 1.5 + 0.25) * torch.sigmoid(b) + torch.log1p(c.abs())
    _close(torch.as_tensor(f(x, y, z), device="cuda").cpu(), chain(x, y, z).cpu(), "elementwise")
    row = {"copy": copy, "kerneldsl": gpu_timeit(lambda: f(x, y, z), sync),
           "torch": gpu_timeit(lambda: chain(x, y, z), sync)}
    try:
        compiled = torch.compile(chain)
        row["torch.compile"] = gpu_timeit(lambda: compiled(x, y, z), sync)
    except Exception as e:  # noqa: BLE001 - a peer that fails is reported, not fatal
        print(f"  torch.compile: skipped ({type(e).__name__}: {e})")
    if tri is not None:
        row["triton"] = _triton_elementwise(tri, x, y, z, sync)
    copy_bw = 2 * 4 * n / copy
    kd_bw = 4 * 4 * n / row["kerneldsl"]
    print(f"  copy {copy_bw / 1e9:.0f} GB/s; kerneldsl elementwise moves {kd_bw / 1e9:.0f} GB/s = "
          f"{100 * kd_bw / copy_bw:.0f}% of copy (aim >= 85%)")
    return row


def _triton_elementwise(tri, x, y, z, sync):
    triton, tl = tri

    @triton.jit
    def kernel(x_ptr, y_ptr, z_ptr, o_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = offs < n
        a = tl.load(x_ptr + offs, mask=m) * 1.5 + 0.25
        t = 2.0 / (1.0 + tl.exp(-2.0 * a)) - 1.0  # tanh
        s = 1.0 / (1.0 + tl.exp(-tl.load(y_ptr + offs, mask=m)))
        c = tl.abs(tl.load(z_ptr + offs, mask=m))
        tl.store(o_ptr + offs, t * s + tl.log(1.0 + c), mask=m)
    o = x.new_empty(x.shape)
    n = x.numel()
    return gpu_timeit(lambda: kernel[(triton.cdiv(n, 1024),)](x, y, z, o, n, BLOCK=1024), sync)


def softmax(rows, cols, torch, tri):
    sync = torch.cuda.synchronize
    f = build_softmax("cuda")
    print(f"  softmax kernels: {[(L.kernel, L.schedule) for L in f.launches]}")
    x = torch.randn(rows, cols, device="cuda", generator=torch.Generator(device="cuda").manual_seed(1))
    _close(torch.as_tensor(f(x), device="cuda").cpu(), torch.softmax(x, 1).cpu(), "softmax", atol=1e-6)
    row = {"kerneldsl": gpu_timeit(lambda: f(x), sync), "torch": gpu_timeit(lambda: torch.softmax(x, 1), sync)}
    if tri is not None:
        row["triton"] = _triton_softmax(tri, x, sync)
    print(f"  torch softmax moves {2 * 4 * rows * cols / row['torch'] / 1e9:.0f} GB/s, kerneldsl "
          f"{2 * 4 * rows * cols / row['kerneldsl'] / 1e9:.0f} GB/s (one read, one write)")
    return row


def _triton_softmax(tri, x, sync):
    triton, tl = tri

    @triton.jit
    def kernel(o_ptr, x_ptr, stride, cols, BLOCK: tl.constexpr):
        r = tl.program_id(0)
        offs = tl.arange(0, BLOCK)
        v = tl.load(x_ptr + r * stride + offs, mask=offs < cols, other=-float("inf"))
        e = tl.exp(v - tl.max(v, axis=0))
        tl.store(o_ptr + r * stride + offs, e / tl.sum(e, axis=0), mask=offs < cols)
    o = x.new_empty(x.shape)
    block = triton.next_power_of_2(x.shape[1])
    return gpu_timeit(lambda: kernel[(x.shape[0],)](o, x, x.stride(0), x.shape[1], BLOCK=block, num_warps=16),
                      sync)


# GEMM knob sets tried for the SGEMM and conv rows (a small autotuning sweep)
GEMM_SWEEP = [
    {},  # the defaults: 64 x 64 x 16, 4 x 4 per thread
    {"gemm_bm": 128, "gemm_bn": 128, "gemm_bk": 8, "gemm_tm": 8, "gemm_tn": 8},
    {"gemm_bm": 128, "gemm_bn": 64, "gemm_bk": 16, "gemm_tm": 8, "gemm_tn": 4},
    {"gemm_bm": 64, "gemm_bn": 128, "gemm_bk": 16, "gemm_tm": 4, "gemm_tn": 8},
]


def _sweep(build, run, sync, what):
    """The best (seconds, knobs, function) over GEMM_SWEEP."""
    best = None
    for kn in GEMM_SWEEP:
        with cuda_knobs(**kn):
            f = build()
        t = gpu_timeit(lambda f=f: run(f), sync, repeat=3, number=3, warmup=1)
        res = f.kernels[0].resources
        print(f"  {what} knobs {kn or 'default'}: {1e3 * t:.3f} ms, {res.get('registers')} registers, "
              f"{res.get('spill_stores')} B spills")
        if best is None or t < best[0]:
            best = (t, kn, f)
    return best


def sgemm(n, torch):
    sync = torch.cuda.synchronize
    torch.backends.cuda.matmul.allow_tf32 = False
    g = torch.Generator(device="cuda").manual_seed(2)
    a, b = torch.randn(n, n, device="cuda", generator=g), torch.randn(n, n, device="cuda", generator=g)
    t, kn, f = _sweep(lambda: build_sgemm("cuda"), lambda f: f(a, b), sync, "SGEMM")
    _close(torch.as_tensor(f(a, b), device="cuda").cpu(), (a @ b).cpu(), "SGEMM", rtol=1e-3, atol=1e-2)
    row = {"kerneldsl": t, "torch": gpu_timeit(lambda: a @ b, sync, repeat=5, number=5)}
    try:
        import cupy
        ca, cb = cupy.asarray(a), cupy.asarray(b)
        row["cupy"] = gpu_timeit(lambda: ca @ cb, cupy.cuda.Device().synchronize, repeat=5, number=5)
    except ImportError:
        pass
    flops = 2 * n ** 3
    print(f"  SGEMM best knobs {kn or 'default'}: {flops / t / 1e12:.1f} TFLOP/s; cuBLAS "
          f"{flops / row['torch'] / 1e12:.1f} TFLOP/s; {100 * row['torch'] / t:.0f}% of cuBLAS (aim >= 70%)")
    return row


def conv2d_fwd_bwd(batch, ch, hw, torch):
    sync = torch.cuda.synchronize
    torch.backends.cudnn.allow_tf32 = False
    g = torch.Generator(device="cuda").manual_seed(3)
    x = torch.randn(batch, ch, hw, hw, device="cuda", generator=g)
    k = torch.randn(ch, ch, 3, 3, device="cuda", generator=g) * 0.1
    d = torch.randn(batch, ch, hw - 2, hw - 2, device="cuda", generator=g)
    t, _, f = _sweep(lambda: build_conv("cuda"),
                      lambda f: f(x, k, d), sync, "conv fwd+bwd")
    print(f"  conv kernels: {[(L.kernel, L.schedule) for L in f.launches]}")
    tx, tk = x.clone().requires_grad_(True), k.clone().requires_grad_(True)

    def step():
        y = torch.nn.functional.conv2d(tx, tk)
        y.backward(d)
        return y
    y = step()
    got = f(x, k, d)
    for name, gv, want in zip(("out", "dimg", "dker"), got, (y, tx.grad, tk.grad)):
        _close(torch.as_tensor(gv, device="cuda").cpu(), want.detach().cpu(), f"conv {name}", rtol=1e-3, atol=1e-2)
    return {"kerneldsl": t, "torch": gpu_timeit(step, sync, repeat=5, number=3)}


def many_small_exps(n, calls, torch):
    L = kd.size("L")
    x = kd.placeholder((L,), name="x")
    y = kd.compute((L,), lambda i: kd.exp(x[i]), name="y")
    fg, fc = kd.build([x], [y], target="cuda"), kd.build([x], [y], target="c")
    a = np.random.default_rng(0).standard_normal(n, dtype=np.float32)
    row = {"kerneldsl-gpu (numpy in/out)": timeit(lambda: [fg(a) for _ in range(calls)], repeat=3, warmup=1),
           "kerneldsl-cpu": timeit(lambda: [fc(a) for _ in range(calls)], repeat=3, warmup=1),
           "numpy": timeit(lambda: [np.exp(a) for _ in range(calls)], repeat=3, warmup=1)}
    if torch is not None:
        ta = torch.from_numpy(a).cuda()
        row["kerneldsl-gpu (device)"] = timeit(lambda: [fg(ta) for _ in range(calls)], repeat=3, warmup=1)
        row["torch-gpu (device)"] = timeit(lambda: ([torch.exp(ta) for _ in range(calls)],
                                                    torch.cuda.synchronize()), repeat=3, warmup=1)
    return row


def main() -> int:
    if not gpu_available():
        why = "nvcc not found" if nvcc_path() is None else "no CUDA GPU with PyCUDA or CuPy on this machine"
        print(f"bench_gpu: timings skipped ({why}); the CUDA emulator (target='cuda-emu') is for "
              f"correctness, not speed")
        if nvcc_path() is not None:
            resource_report("cuda-emu")
        return 0
    torch, tri = _torch(), _triton()
    gpu = torch.cuda.get_device_name() if torch is not None else "a CUDA GPU"
    print(f"bench_gpu on {gpu} ({default_arch()}), host {machine()}, driver {driver().name}, "
          f"{time.strftime('%Y-%m-%d')}")
    if torch is None:
        print("PyTorch with CUDA is needed for the peers and the device arrays of this benchmark")
        return 0
    rows = []
    for name, fn in (("elementwise 2^26", lambda: copy_and_elementwise(1 << 26, torch, tri)),
                     ("row softmax 8192x4096", lambda: softmax(8192, 4096, torch, tri)),
                     ("SGEMM 4096^3 fp32", lambda: sgemm(4096, torch)),
                     ("conv2d fwd+bwd 64->64 3x3 b128 32x32", lambda: conv2d_fwd_bwd(128, 64, 32, torch))):
        print(name)
        try:
            rows.append((name, fn()))
        except Exception as e:  # noqa: BLE001 - one failing row must not hide the others
            print(f"  FAILED: {type(e).__name__}: {e}")
    print(table("GPU (ms per call; ratio = torch time / time, higher is faster)", rows, base="torch"))
    print(table("exp of 230400 float32 x 1000 calls", [("exp x1000", many_small_exps(230400, 1000, torch))],
                base="numpy"))
    resource_report("cuda")
    return 0


if __name__ == "__main__":
    sys.exit(main())
