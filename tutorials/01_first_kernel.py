"""Tutorial 1: your first kernels.

Run: python tutorials/01_first_kernel.py

We write a matrix multiplication, a fused elementwise op and a row reduction in
kerneldsl's DSL, check each against numpy, and look at the IR, the loop nest
and the generated C along the way.
"""

import time

import numpy as np

import kerneldsl as kd

rng = np.random.default_rng(0)

# --- 1. A matrix multiplication -----------------------------------------------------
# Sizes are symbolic: one compiled kernel serves every n, m, k.
n, m, k = kd.sizes("n m k")
A = kd.placeholder((n, k), "float32", name="A")
B = kd.placeholder((k, m), "float32", name="B")
r = kd.reduce_axis(k, name="r")
C = kd.compute((n, m), lambda i, j: kd.sum(A[i, r] * B[r, j], axis=r), name="C")

print("The tensor IR of C:")
print(C)

f = kd.build([A, B], [C])
a = rng.standard_normal((64, 32), dtype=np.float32)
b = rng.standard_normal((32, 48), dtype=np.float32)
c = f(a, b)
print("\nmax |C - a @ b| =", float(np.abs(c - a @ b).max()))

# The numpy reference interpreter evaluates the same IR: the oracle of every test.
(ref,) = kd.evaluate([C], {A: a, B: b})
print("max |C - reference| =", float(np.abs(c - ref).max()))

# The same kernel, another shape: no recompilation (sizes are run-time parameters).
c2 = f(a[:5, :7].copy(), b[:7, :3].copy())
print("5x7 @ 7x3 works too:", np.allclose(c2, a[:5, :7] @ b[:7, :3], atol=1e-5))

print("\nThe loop nest (the default schedule: outer loop parallel, contiguous loop innermost):")
print(f.module)

# --- 2. A fused elementwise op ------------------------------------------------------
# tanh(x * w + b) * sigmoid(y) + log1p(|z|): one loop, no temporary arrays.
N = kd.size("N")
x, y, z = (kd.placeholder((N,), name=s) for s in "xyz")
w = kd.placeholder((), name="w")
out = kd.compute((N,), lambda i: kd.tanh(x[i] * w[()] + 0.5) * kd.sigmoid(y[i]) + kd.log1p(kd.abs(z[i])),
                 name="out")
g = kd.build([x, y, z, w], [out])
xs, ys, zs = (rng.standard_normal(1 << 20, dtype=np.float32) for _ in range(3))
ws = np.array(1.5, dtype=np.float32)
expect = np.tanh(xs * ws + 0.5) * (1 / (1 + np.exp(-ys))) + np.log1p(np.abs(zs))
got = g(xs, ys, zs, ws)
print("\nfused elementwise: max error", float(np.abs(got - expect).max()))
for label, fn in (("kerneldsl", lambda: g(xs, ys, zs, ws)),
                  ("numpy", lambda: np.tanh(xs * ws + 0.5) * (1 / (1 + np.exp(-ys))) + np.log1p(np.abs(zs)))):
    fn()
    t0 = time.perf_counter()
    for _ in range(10):
        fn()
    print(f"  {label:9s} {1e3 * (time.perf_counter() - t0) / 10:7.2f} ms per call (2^20 elements)")

# --- 3. A reduction: numerically stable row softmax ---------------------------------
rows, cols = kd.sizes("rows cols")
X = kd.placeholder((rows, cols), name="X")
rc = kd.reduce_axis(cols, name="c")
mx = kd.compute((rows,), lambda i: kd.max(X[i, rc], axis=rc), name="rowmax")
den = kd.compute((rows,), lambda i: kd.sum(kd.exp(X[i, rc] - mx[i]), axis=rc), name="denom")
sm = kd.compute((rows, cols), lambda i, j: kd.exp(X[i, j] - mx[i]) / den[i], name="softmax")
h = kd.build([X], [sm])
xm = rng.standard_normal((8, 10), dtype=np.float32) * 10
e = np.exp(xm - xm.max(1, keepdims=True))
print("\nsoftmax: max error", float(np.abs(h(xm) - e / e.sum(1, keepdims=True)).max()))
# Fusion put the row max and the row sum inside the row loop of the output: one kernel,
# one pass over each row per reduction, no temporary arrays.
print(h.module)
print("rows sum to one:", np.allclose(h(xm).sum(1), 1, atol=1e-6))

# --- 4. Gathers are checked: a bad index is an error, never a wild read --------------
V, D, T = kd.sizes("V D T")
table = kd.placeholder((V, D), name="table")
ids = kd.placeholder((T,), "int64", name="ids")
emb = kd.compute((T, D), lambda t, d: table[ids[t], d], name="emb")
lookup = kd.build([table, ids], [emb])
tab = rng.standard_normal((10, 4), dtype=np.float32)
print("\nembedding lookup ok:", np.array_equal(lookup(tab, np.array([3, 1, 9])), tab[[3, 1, 9]]))
try:
    lookup(tab, np.array([3, 10]))
except IndexError as err:
    print("out-of-range id caught:", err)

# --- 5. The generated C ----------------------------------------------------------------
print("\nThe C of the softmax build (the kernel function):")
src = h.source
print(src[src.index("/* softmax"):])
