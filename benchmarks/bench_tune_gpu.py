"""kd.tune driving the CUDA knobs: SGEMM 4096^3 and the CUDA issue's conv (fwd + bwd), on a real GPU.

Run: python benchmarks/bench_tune_gpu.py [--trials 64] [--budget 600]    (a CUDA GPU, nvcc, CuPy or PyCUDA)
     python benchmarks/bench_tune_gpu.py --emu                          (tiny sizes on the CUDA emulator)

Each workload: the default build (records ignored), then `kd.tune` (records into
$KERNELDSL_TUNING_DB), checked against a float64 reference computed on the CPU. Prints the
tuner's summary (default and best time, measured in the isolated process with the inputs on the
device and a synchronize after each run), TFLOP/s, and the cuBLAS / cuDNN time where PyTorch
sees the GPU (TF32 off). With --emu the machinery runs end to end on small sizes and the tuner
says that its timings mean nothing. Without a GPU (and without --emu) the script says so and
exits 0.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bench_gpu import build_conv, build_sgemm

import kerneldsl as kd


def _torch_gpu():
    try:
        import torch
        return torch if torch.cuda.is_available() else None
    except ImportError:
        return None


def sgemm_case(n: int):
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    want = [(a.astype(np.float64) @ b).astype(np.float32)]
    return f"SGEMM {n}^3", build_sgemm, (a, b), want, 2 * n ** 3


def conv_case(batch: int, ch: int, hw: int):
    """bench_gpu.py's conv: valid 3x3, NCHW, with the gradients of the image and the kernel."""
    rng = np.random.default_rng(1)
    img = rng.standard_normal((batch, ch, hw, hw), dtype=np.float32)
    ker = rng.standard_normal((ch, ch, 3, 3), dtype=np.float32) * np.float32(0.1)
    dout = rng.standard_normal((batch, ch, hw - 2, hw - 2), dtype=np.float32)
    cols = np.lib.stride_tricks.sliding_window_view(img.astype(np.float64), (3, 3), axis=(2, 3))  # n c h w kh kw
    out = np.einsum("nchwij,ocij->nohw", cols, ker.astype(np.float64), optimize=True)
    dker = np.einsum("nchwij,nohw->ocij", cols, dout.astype(np.float64), optimize=True)
    dpad = np.pad(dout.astype(np.float64), ((0, 0), (0, 0), (2, 2), (2, 2)))
    dcols = np.lib.stride_tricks.sliding_window_view(dpad, (3, 3), axis=(2, 3))
    dimg = np.einsum("nohwij,ocij->nchw", dcols, ker.astype(np.float64)[:, :, ::-1, ::-1], optimize=True)
    want = [x.astype(np.float32) for x in (out, dimg, dker)]
    flops = 3 * 2 * batch * ch * ch * 9 * (hw - 2) ** 2
    return f"conv2d fwd+bwd {ch}->{ch} 3x3 b{batch} {hw}x{hw}", build_conv, (img, ker, dout), want, flops


def peer_seconds(torch, name: str, args) -> float | None:
    """cuBLAS / cuDNN (TF32 off), timed with a synchronize: the best of 5 batches of 5 calls."""
    if torch is None:
        return None
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    t = [torch.as_tensor(a, device="cuda") for a in args]
    if name.startswith("SGEMM"):
        def step():
            return t[0] @ t[1]
    else:
        x, k, d = t[0].requires_grad_(), t[1].requires_grad_(), t[2]

        def step():
            y = torch.nn.functional.conv2d(x, k)
            return torch.autograd.grad(y, [x, k], d)
    step()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(5):
            step()
        torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t0) / 5)
    return best


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=64)
    ap.add_argument("--budget", type=float, default=600.0, help="seconds of tuning per workload")
    ap.add_argument("--emu", action="store_true", help="small sizes on target cuda-emu (timings meaningless)")
    args = ap.parse_args()
    if args.emu:
        if shutil.which("g++") is None:
            print("bench_tune_gpu --emu: the CUDA emulator needs g++; skipped")
            return 0
        target, cases = "cuda-emu", [sgemm_case(64), conv_case(2, 8, 10)]
    else:
        if shutil.which("nvcc") is None or _torch_gpu() is None and not _has_driver():
            print("bench_tune_gpu: no CUDA GPU here (needs nvcc and CuPy or PyCUDA); nothing measured")
            return 0
        target, cases = "cuda", [sgemm_case(4096), conv_case(128, 64, 32)]
    torch = None if args.emu else _torch_gpu()
    print(f"# bench_tune_gpu, target {kd.Target.detect(target)}; trials {args.trials}, budget {args.budget:g} s")
    for name, build, arrays, want, flops in cases:
        with kd.settings.override(use_records=False):
            f = build(target)
        res = kd.tune(f, arrays, trials=args.trials, time_budget_s=args.budget, reference=want)
        print(res)
        if res.best is None:
            continue
        line = (f"  {name}: default {1e3 * res.default.seconds:.3f} ms, tuned {1e3 * res.best.seconds:.3f} ms "
                f"({flops / res.best.seconds / 1e12:.2f} TFLOP/s)")
        peer = peer_seconds(torch, name, arrays)
        if peer is not None:
            line += f"; PyTorch {1e3 * peer:.3f} ms: tuned at {100 * peer / res.best.seconds:.0f}% of it"
        print(line, flush=True)
    return 0


def _has_driver() -> bool:
    try:
        import cupy
        if cupy.cuda.runtime.getDeviceCount() > 0:
            return True
    except Exception:  # noqa: BLE001, S110 - no CuPy, or no device: try PyCUDA
        pass
    try:
        import pycuda.driver as drv
        drv.init()
        return drv.Device.count() > 0
    except Exception:  # noqa: BLE001
        return False


if __name__ == "__main__":
    sys.exit(main())
