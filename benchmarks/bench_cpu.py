"""CPU contractions: matmul, a dense layer with its epilogue, conv2d, against numpy and torch (eager).

Run: make bench   (or: python benchmarks/bench_cpu.py [--rounds 3] [--quick])

All float32. Every workload is timed side by side in one process: for each of
`rounds` rounds, each library in turn gets an idle pause, a warm-up and a median
of repeats (harness.timeit); the table shows each library's median over rounds,
so a neighbour's burst of load hits all libraries alike. Results are checked
against numpy before timing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from harness import machine, table, timeit

import kerneldsl as kd

try:
    import torch
    torch.set_num_threads(os.cpu_count() or 1)
except ImportError:  # optional peer
    torch = None


def matmul_kernel():
    n, m, k = kd.sizes("n m k")
    A = kd.placeholder((n, k), name="A")
    B = kd.placeholder((k, m), name="B")
    r = kd.reduce_axis(k, name="r")
    return kd.build([A, B], [kd.compute((n, m), lambda i, j: kd.sum(A[i, r] * B[r, j], axis=r), name="C")])


def dense_kernel():
    n, m, k = kd.sizes("n m k")
    X = kd.placeholder((n, k), name="X")
    W = kd.placeholder((k, m), name="W")
    bias = kd.placeholder((m,), name="bias")
    r = kd.reduce_axis(k, name="r")
    Y = kd.compute((n, m), lambda i, j: kd.tanh(kd.sum(X[i, r] * W[r, j], axis=r) + bias[j]), name="Y")
    return kd.build([X, W, bias], [Y])


def conv_kernel():
    """NCHW 3x3, stride 1, zero padding 1 (same size), as one compute: an implicit GEMM."""
    n, ci, co, h, w = kd.sizes("n ci co h w")
    X = kd.placeholder((n, ci, h, w), name="X")
    W = kd.placeholder((co, ci, 3, 3), name="W")
    rc, rh, rw = kd.reduce_axis(ci, "rc"), kd.reduce_axis(3, "rh"), kd.reduce_axis(3, "rw")

    def x(b, c, y, z):
        y, z = y + rh - 1, z + rw - 1
        return kd.where((y >= 0) & (y < h) & (z >= 0) & (z < w), X[b, c, y, z], 0)
    Y = kd.compute((n, co, h, w), lambda b, c, y, z: kd.sum(x(b, rc, y, z) * W[c, rc, rh, rw],
                                                            axis=(rc, rh, rw)), name="Y")
    return kd.build([X, W], [Y])


def np_conv(x, w):
    """numpy: im2col through a sliding window view, then one tensordot (BLAS)."""
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    cols = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))  # n, ci, h, w, 3, 3
    return np.tensordot(cols, w, axes=([1, 4, 5], [1, 2, 3])).transpose(0, 3, 1, 2)


def measure(fns: dict, rounds: int, repeat: int) -> dict:
    times: dict = {k: [] for k in fns}
    for _ in range(rounds):
        for lib, fn in fns.items():
            times[lib].append(timeit(fn, repeat=repeat))
    return {k: statistics.median(v) for k, v in times.items()}


def workloads(quick: bool):
    rng = np.random.default_rng(0)
    mm = matmul_kernel()
    for s in (512, 1024) if quick else (512, 1024, 2048):
        a, b = (rng.standard_normal((s, s), dtype=np.float32) for _ in range(2))
        fns = {"numpy": lambda a=a, b=b: a @ b, "kerneldsl": lambda a=a, b=b: mm(a, b)}
        if torch is not None:
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            fns["torch"] = lambda ta=ta, tb=tb: ta @ tb
        yield f"matmul {s}^3", 2 * s ** 3, fns, mm(a, b), a.astype(np.float64) @ b

    dense = dense_kernel()
    x, w = rng.standard_normal((128, 784), dtype=np.float32), rng.standard_normal((784, 100), dtype=np.float32)
    w *= 0.05
    b = rng.standard_normal(100, dtype=np.float32)
    fns = {"numpy": lambda: np.tanh(x @ w + b), "kerneldsl": lambda: dense(x, w, b)}
    if torch is not None:
        tx, tw, tb = (torch.from_numpy(v) for v in (x, w, b))
        fns["torch"] = lambda: torch.tanh(torch.addmm(tb, tx, tw))
    yield "dense 128x784 @ 784x100 + bias, tanh", 2 * 128 * 784 * 100, fns, dense(x, w, b), \
        np.tanh(x.astype(np.float64) @ w + b)

    conv = conv_kernel()
    for n, ci, co, hw in ((128, 1, 16, 28), (64, 32, 64, 32)):
        x = rng.standard_normal((n, ci, hw, hw), dtype=np.float32)
        w = rng.standard_normal((co, ci, 3, 3), dtype=np.float32)
        fns = {"numpy": lambda x=x, w=w: np_conv(x, w), "kerneldsl": lambda x=x, w=w: conv(x, w)}
        if torch is not None:
            tx, tw = torch.from_numpy(x), torch.from_numpy(w)

            def fn(tx=tx, tw=tw):
                with torch.no_grad():
                    return torch.nn.functional.conv2d(tx, tw, padding=1)
            fns["torch"] = fn
        yield (f"conv2d NCHW {n}x{ci}x{hw}x{hw} -> {co} ch, 3x3", 2 * n * co * hw * hw * ci * 9, fns,
               conv(x, w), np_conv(x.astype(np.float64), w.astype(np.float64)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="skip 2048^3")
    args = ap.parse_args()
    print(f"# bench_cpu on {machine()}")
    print(f"numpy {np.__version__}" + (f", torch {torch.__version__}" if torch is not None else "")
          + f"; median over {args.rounds} rounds of (idle 0.4 s, warm-up, median of {args.repeat})")
    rows, rates = [], []
    for name, flops, fns, got, want in workloads(args.quick):
        scale = np.abs(want).max()
        err = np.abs(got - want).max() / scale
        assert err < 1e-4, f"{name}: kerneldsl differs from numpy by {err:.2e} (relative to max)"
        res = measure(fns, args.rounds, args.repeat)
        rows.append((name, res))
        rates.append(f"| {name} | " + " | ".join(f"{flops / res[lib] / 1e9:.1f}" for lib in res) + " |")
        print(f"  {name}: " + ", ".join(f"{lib} {1e3 * t:.3f} ms" for lib, t in res.items()), flush=True)
    print()
    print(table("float32, 2 threads", rows))
    print()
    libs = list(rows[0][1])
    print("| GFLOP/s | " + " | ".join(libs) + " |\n|" + "---|" * (1 + len(libs)))
    print("\n".join(rates))


if __name__ == "__main__":
    main()
