"""Tutorial 4: schedules, from the default loop nest of a matmul to a hand-tuned one.

Run: python tutorials/04_schedules.py

A schedule is a list of loop transforms (split, reorder, vectorize, parallel, ...) applied to a
kernel's loop nest. It is recorded as a JSON trace that replays to the same kernel: the trace is
what an autotuner stores. Each step below prints the loop nest and times it against numpy.
"""

import time

import numpy as np

import kerneldsl as kd

N = 384
rng = np.random.default_rng(0)
a = rng.standard_normal((N, N), dtype=np.float32)
b = rng.standard_normal((N, N), dtype=np.float32)

n, m, k = kd.sizes("n m k")
A = kd.placeholder((n, k), name="A")
B = kd.placeholder((k, m), name="B")
r = kd.reduce_axis(k, name="r")
C = kd.compute((n, m), lambda i, j: kd.sum(A[i, r] * B[r, j], axis=r), name="C")


def bench(label, fn, repeat=3):
    fn()
    best = min(_time(fn) for _ in range(repeat))
    gflops = 2 * N**3 / best / 1e9
    print(f"  {label:44s} {1e3 * best:8.2f} ms  {gflops:6.1f} GFLOP/s")
    return best


def _time(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def step(title, s):
    print(f"\n== {title}\n{s}")
    f = kd.build([A, B], [C], schedule=s)
    np.testing.assert_allclose(f(a, b), a @ b, rtol=1e-3, atol=1e-3)
    return bench("kerneldsl", lambda: f(a, b))


print(f"matmul {N}x{N}x{N}, float32")
bench("numpy (OpenBLAS)", lambda: a @ b)

# 1. The default loop nest: the reduction loop r is innermost and reads B[r, j] down a column.
s = kd.schedule(C)
step("1. default loop nest (r innermost, strided reads of B)", s)

# 2. Accumulate into C instead of a scalar, so r can move outside j: the inner loop then walks
#    rows of B and C contiguously and vectorizes.
i, j, rr = s.loops(C)
s.decompose_reduction(j)
i, j_init, j, rr, _ = (*s.loops(C), None)[:5]
s.reorder(rr, j)
s.vectorize(j)
step("2. decompose_reduction + reorder(r, j) + vectorize(j)", s)

# 3. Block j so that a strip of C stays in L1 while r streams over A's row and B's rows.
jo, ji = s.split(j, 128)
s.reorder(jo, rr, ji)
s.vectorize(ji)
step("3. split j by 128, reorder (j_o, r, j_i): C strip stays in cache", s)

# 4. Block r too, so that a panel of B is reused across several rows of i... and unroll.
ro, ri = s.split(rr, 4)
s.unroll(ri)
step("4. split r by 4 and unroll it", s)

print("\nThe trace (a tuning record; kd.schedule(C, trace=kd.Trace.from_json(...)) replays it):")
print(s.trace.to_json())
again = kd.schedule(C, trace=kd.Trace.from_json(s.trace.to_json()))
assert str(again) == str(s)

# 5. Without a schedule, kd.build picks the default for the target: for a contraction that is a
#    packed, register-blocked micro-kernel (when available), far beyond a plain loop nest.
f = kd.build([A, B], [C])
np.testing.assert_allclose(f(a, b), a @ b, rtol=1e-3, atol=1e-3)
print("\n== 5. kd.build default for this contraction")
bench("kerneldsl default", lambda: f(a, b))
