"""Core benchmark: build times, per-call overhead, and a first side-by-side with numpy.

Run: make bench   (or: python benchmarks/bench_core.py)

The kernels here use the plain default schedule (no fusion across ops, no tiling):
these numbers are the baseline the scheduling work is measured against.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from harness import machine, table, timeit

import kerneldsl as kd

try:
    import torch
    torch.set_num_threads(os.cpu_count() or 1)
except ImportError:  # optional peer
    torch = None

BUILD_SNIPPET = """
import time, kerneldsl as kd
n = kd.size("n")
x = kd.placeholder((n,), name="x")
y = kd.compute((n,), lambda i: kd.exp(x[i]) * 2 + {c}, name="y")
t0 = time.perf_counter(); kd.build([x], [y]); print(time.perf_counter() - t0)
"""


def build_times() -> tuple[float, float]:
    """Cold build (compiler runs) and warm build in a new process (disk cache hit)."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, KERNELDSL_CACHE=cache)
        snippet = BUILD_SNIPPET.format(c=time.time_ns() % 1000)
        cold = float(subprocess.check_output([sys.executable, "-c", snippet], env=env))
        warm = float(subprocess.check_output([sys.executable, "-c", snippet], env=env))
    return cold, warm


def call_overhead() -> float:
    n = kd.size("n")
    x = kd.placeholder((n,), name="x")
    y = kd.compute((n,), lambda i: x[i] + 1, name="y")
    f = kd.build([x], [y])
    a = np.ones(8, np.float32)
    return timeit(lambda: f(a), number=20000, repeat=5)


def elementwise(n: int):
    N = kd.size("N")
    x, y, z = (kd.placeholder((N,), name=s) for s in "xyz")
    chains = {
        "exp(x)": (kd.compute((N,), lambda i: kd.exp(x[i]), name="e1"), lambda a, b, c: np.exp(a),
                   lambda a, b, c: torch.exp(a)),
        "exp(x)*y+z": (kd.compute((N,), lambda i: kd.exp(x[i]) * y[i] + z[i], name="e2"),
                       lambda a, b, c: np.exp(a) * b + c, lambda a, b, c: torch.exp(a) * b + c),
        "tanh(x*a+b)*sigmoid(y)+log1p(|z|)": (
            kd.compute((N,), lambda i: kd.tanh(x[i] * 1.5 + 0.5) * kd.sigmoid(y[i]) + kd.log1p(kd.abs(z[i])),
                       name="e3"),
            lambda a, b, c: np.tanh(a * 1.5 + 0.5) * (1 / (1 + np.exp(-b))) + np.log1p(np.abs(c)),
            lambda a, b, c: torch.tanh(a * 1.5 + 0.5) * torch.sigmoid(b) + torch.log1p(torch.abs(c))),
    }
    rng = np.random.default_rng(0)
    a, b, c = (rng.standard_normal(n, dtype=np.float32) for _ in range(3))
    rows = []
    for name, (op, np_fn, torch_fn) in chains.items():
        f = kd.build([x, y, z], [op])
        assert np.allclose(f(a, b, c), np_fn(a, b, c), rtol=1e-5, atol=1e-5)
        res = {"numpy": timeit(lambda: np_fn(a, b, c)), "kerneldsl": timeit(lambda: f(a, b, c))}
        if torch is not None:
            ta, tb, tc = (torch.from_numpy(v) for v in (a, b, c))
            res["torch"] = timeit(lambda: torch_fn(ta, tb, tc))
        rows.append((f"{name}, n={n}", res))
    return rows


def matmul(sizes):
    n, m, k = kd.sizes("n m k")
    A = kd.placeholder((n, k), name="A")
    B = kd.placeholder((k, m), name="B")
    r = kd.reduce_axis(k, name="r")
    C = kd.compute((n, m), lambda i, j: kd.sum(A[i, r] * B[r, j], axis=r), name="C")
    f = kd.build([A, B], [C])
    rows = []
    rng = np.random.default_rng(0)
    for s in sizes:
        a = rng.standard_normal((s, s), dtype=np.float32)
        b = rng.standard_normal((s, s), dtype=np.float32)
        assert np.allclose(f(a, b), a @ b, rtol=1e-3, atol=1e-3)
        res = {"numpy": timeit(lambda: a @ b, repeat=3), "kerneldsl": timeit(lambda: f(a, b), repeat=3, warmup=1)}
        if torch is not None:
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            res["torch"] = timeit(lambda: ta @ tb, repeat=3)
        rows.append((f"matmul {s}^3 ({2 * s**3 / res['kerneldsl'] / 1e9:.1f} GFLOP/s)", res))
    return rows


def main() -> None:
    print(f"# bench_core on {machine()}")
    print(f"numpy {np.__version__}" + (f", torch {torch.__version__}" if torch is not None else ""))
    cold, warm = build_times()
    print(f"\nbuild, small graph: cold {1e3 * cold:.1f} ms (compiler runs), "
          f"warm in a new process {1e3 * warm:.1f} ms (disk cache)")
    print(f"per-call overhead, 8-element kernel: {1e6 * call_overhead():.2f} us")
    print()
    print(table("elementwise (float32)", elementwise(1 << 22) + elementwise(230400)))
    print()
    print(table("matmul (float32)", matmul([256, 512])))


if __name__ == "__main__":
    main()
