"""Tutorial 4: schedules, from a matmul's plain loop nest to the GEMM template, one measured step
at a time.

Run: python tutorials/04_schedules.py

A schedule is data: for each kernel a *template* that runs it (with its knobs) and the loop
primitives applied to its loop nest (split, reorder, vectorize, parallel, ...). Together with the
target it is a `kd.Config`, a JSON value that replays to the same kernels: what an autotuner
searches and stores. Each step below prints what runs and times it (best of a few runs; numpy's
OpenBLAS alongside for scale), and each is faster than the one before.
"""

import time

import numpy as np

import kerneldsl as kd

N = 512
rng = np.random.default_rng(0)
a = rng.standard_normal((N, N), dtype=np.float32)
b = rng.standard_normal((N, N), dtype=np.float32)

n, m, k = kd.sizes("n m k")
A = kd.placeholder((n, k), name="A")
B = kd.placeholder((k, m), name="B")
r = kd.reduce_axis(k, name="r")
C = kd.compute((n, m), lambda i, j: kd.sum(A[i, r] * B[r, j], axis=r), name="C")


def best_ms(fn, repeat=5):
    fn()  # warm up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * min(times)


def step(title, s):
    print(f"\n== {title}\n{s}")
    f = kd.build([A, B], [C], schedule=s)
    np.testing.assert_allclose(f(a, b), a @ b, rtol=1e-3, atol=1e-3)
    ms = best_ms(lambda: f(a, b))
    print(f"  -> {ms:8.2f} ms  {2 * N**3 / ms / 1e6:6.1f} GFLOP/s   (numpy {best_ms(lambda: a @ b):.2f} ms)")
    return ms


print(f"matmul {N}x{N}x{N}, float32, on {kd.Target.detect()}")

# 1. The plain loop nest on one thread: the reduction loop r is innermost and reads B[r, j] down a
#    column, a new cache line for every multiply-add.
s = kd.schedule(C)
s.template(C, "loops")  # run the loop nest, not the GEMM template a contraction gets by default
i, j, rr = s.loops(C)
s.serial(i)  # the default marks parallel and vectorized loops; start from none
s.serial(rr)
t1 = step("1. the plain loop nest, one thread", s)

# 2. Rows of C are independent: run them on every core.
s.parallel(i)
t2 = step("2. parallel(i): rows on every core", s)

# 3. Accumulate into C instead of a scalar, so that r can move outside j: the inner loop then
#    walks rows of B and C contiguously, as SIMD lanes.
s.decompose_reduction(j)
i, j_init, j, rr = s.loops(C)
s.reorder(rr, j)
s.vectorize(j)
t3 = step("3. decompose_reduction + reorder(r, j) + vectorize(j): contiguous SIMD rows", s)

# Loop transforms stop here, around 30 GFLOP/s: every multiply-add still loads and stores its
# element of C. (Blocking j for cache, or a local tile of C with cache_write, measured no faster
# at this size.) Keeping a tile of C in registers across the whole of K is what the template does.

print("\nThe config so far (a tuning record; kd.build(..., config=text) replays it):")
text = s.config.to_json()
print(text)
assert str(kd.build([A, B], [C], config=text).module) == str(s)

# 4. The GEMM template: packed panels of A and B sized for the caches, and a register-blocked
#    micro-kernel of fused multiply-adds (its knobs: s.knobs(C, kc=..., mc=...)). This is the
#    default for a contraction.
s.template(C, "gemm")
t4 = step("4. the GEMM template (the default for a contraction)", s)

print(f"\nspeed-up of each step over the one before: {t1 / t2:.1f}x, {t2 / t3:.1f}x, {t3 / t4:.1f}x")
