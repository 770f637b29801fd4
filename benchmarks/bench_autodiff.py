"""Backward kernels from kd.grad beside numpy (and PyTorch CPU when importable).

    python benchmarks/bench_autodiff.py [--quick]

The contractions among the backward ops (matmul dA/dB, conv2d dX/dW) run the
packed GEMM template; the rest are loop nests. Times are medians of repeats after a warm-up, in milliseconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import kerneldsl as kd

os.environ.setdefault("KERNELDSL_CACHE", os.path.join(tempfile.gettempdir(), "kerneldsl-bench-cache"))
try:
    import torch
except ImportError:
    torch = None

F32 = "float32"


def timeit(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


# --- workloads: (kerneldsl callable + args, numpy callable, torch callable or None) -------------

def matmul(n):
    A = kd.placeholder((n, n), F32, name="A")
    B = kd.placeholder((n, n), F32, name="B")
    r = kd.reduce_axis(n, "r")
    C = kd.compute((n, n), lambda i, j: kd.sum(A[i, r] * B[r, j], axis=r), name="C")
    dC = kd.placeholder((n, n), F32, name="dC")
    f = kd.build([A, B, dC], kd.grad(C, [A, B], dy=dC))
    rng = np.random.default_rng(0)
    a, b, dc = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(3))

    def np_fn():
        return dc @ b.T, a.T @ dc

    def torch_fn():
        ta, tb = torch.from_numpy(a).requires_grad_(), torch.from_numpy(b).requires_grad_()
        (ta @ tb).backward(torch.from_numpy(dc))
        return ta.grad, tb.grad

    got = f(a, b, dc)
    want = np_fn()
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=2e-3, atol=2e-2)
    return f"matmul {n}^3 (dA, dB)", (lambda: f(a, b, dc)), np_fn, torch_fn


def conv2d(batch, cin, cout, hw, k):
    H = hw + k - 1  # valid convolution of a pre-padded input: output hw x hw
    X = kd.placeholder((batch, cin, H, H), F32, name="X")
    W = kd.placeholder((cout, cin, k, k), F32, name="W")
    c, ry, rx = kd.reduce_axis(cin, "c"), kd.reduce_axis(k, "ry"), kd.reduce_axis(k, "rx")
    Y = kd.compute((batch, cout, hw, hw), lambda n, o, y, x: kd.sum(
        X[n, c, y + ry, x + rx] * W[o, c, ry, rx], axis=[c, ry, rx]), name="Y")
    dY = kd.placeholder(Y.shape, F32, name="dY")
    f = kd.build([X, W, dY], kd.grad(Y, [X, W], dy=dY))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, cin, H, H), dtype=np.float32)
    w = rng.standard_normal((cout, cin, k, k), dtype=np.float32)
    dy = rng.standard_normal((batch, cout, hw, hw), dtype=np.float32)

    def np_fn():
        win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))  # b, c, y, x, ry, rx
        dw = np.tensordot(dy, win, axes=([0, 2, 3], [0, 2, 3]))  # o, c, ry, rx
        p = np.pad(dy, ((0, 0), (0, 0), (k - 1, k - 1), (k - 1, k - 1)))
        pwin = np.lib.stride_tricks.sliding_window_view(p, (k, k), axis=(2, 3))  # b, o, Y, X, ry, rx
        dx = np.tensordot(pwin, w[:, :, ::-1, ::-1], axes=([1, 4, 5], [0, 2, 3]))  # b, Y, X, c
        return dx.transpose(0, 3, 1, 2), dw

    def torch_fn():
        tx, tw = torch.from_numpy(x).requires_grad_(), torch.from_numpy(w).requires_grad_()
        torch.nn.functional.conv2d(tx, tw).backward(torch.from_numpy(dy))
        return tx.grad, tw.grad

    got = f(x, w, dy)
    want = np_fn()
    for g, wt in zip(got, want):
        np.testing.assert_allclose(g, wt, rtol=2e-3, atol=5e-2)
    return f"conv2d b{batch} {cin}->{cout} {hw}x{hw} {k}x{k} (dX, dW)", (lambda: f(x, w, dy)), np_fn, torch_fn


def log_softmax_nll(n, c):
    X = kd.placeholder((n, c), F32, name="X")
    y = kd.placeholder((n,), "int64", name="y")
    k = kd.reduce_axis(c, "k")
    M = kd.compute((n,), lambda i: kd.max(X[i, k], axis=k), name="M")
    S = kd.compute((n,), lambda i: kd.sum(kd.exp(X[i, k] - M[i]), axis=k), name="S")
    LP = kd.compute((n, c), lambda i, j: X[i, j] - M[i] - kd.log(S[i]), name="LP")
    b = kd.reduce_axis(n, "b")
    L = kd.compute((), lambda: -kd.sum(LP[b, y[b]], axis=b) / n, name="L")
    dX, = kd.grad(L, [X])
    f = kd.build([X, y], [dX])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c), dtype=np.float32)
    lab = rng.integers(0, c, n)

    def np_fn():
        e = np.exp(x - x.max(1, keepdims=True))
        p = e / e.sum(1, keepdims=True)
        p[np.arange(n), lab] -= 1
        return p / n

    def torch_fn():
        tx = torch.from_numpy(x).requires_grad_()
        torch.nn.functional.nll_loss(torch.log_softmax(tx, 1), torch.from_numpy(lab)).backward()
        return tx.grad

    np.testing.assert_allclose(f(x, lab), np_fn(), rtol=1e-3, atol=1e-6)
    return f"log-softmax + NLL {n}x{c} (dX)", (lambda: f(x, lab)), np_fn, torch_fn


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    if args.quick:
        work = [lambda: matmul(128), lambda: conv2d(4, 8, 16, 16, 3), lambda: log_softmax_nll(256, 100)]
    else:
        work = [lambda: matmul(512), lambda: conv2d(64, 32, 64, 32, 3), lambda: log_softmax_nll(4096, 1000)]
    print(f"kerneldsl {kd.__version__}, numpy {np.__version__}, torch {torch.__version__ if torch else '-'}, "
          f"{os.cpu_count()} CPU(s); median of {args.repeats} after a warm-up, ms")
    head = f"{'workload':<44} {'kerneldsl':>10} {'numpy':>10} {'kd/numpy':>9}"
    if torch is not None:
        head += f" {'torch':>10} {'kd/torch':>9}"
    print(head)
    for make in work:
        name, kd_fn, np_fn, torch_fn = make()
        t_kd = timeit(kd_fn, args.repeats)
        time.sleep(0.5)
        t_np = timeit(np_fn, args.repeats)
        line = f"{name:<44} {t_kd:>10.2f} {t_np:>10.2f} {t_kd / t_np:>9.2f}"
        if torch is not None:
            time.sleep(0.5)
            t_th = timeit(torch_fn, args.repeats)
            line += f" {t_th:>10.2f} {t_kd / t_th:>9.2f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
