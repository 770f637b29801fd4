"""Tutorial 2: the gradient of a custom op (bias + GELU), derived, printed, compiled and checked.

    python tutorials/02_custom_op_gradient.py

1. Write the forward op in the DSL, as any op.
2. `kd.grad` derives the backward ops: new compute ops in the same IR.
3. Print the backward IR and the generated C; build it like any kernel.
4. `kd.check_grad` compares the symbolic gradient with finite differences (float64).
"""

import math
import os
import tempfile

import numpy as np

import kerneldsl as kd

os.environ.setdefault("KERNELDSL_CACHE", os.path.join(tempfile.gettempdir(), "kerneldsl-tutorial-cache"))

# --- 1. the forward op: Y[i, j] = gelu(X[i, j] + b[j]), gelu(z) = z/2 * (1 + erf(z / sqrt(2)))
n, m = kd.sizes("n m")


def bias_gelu(X, b):
    def body(i, j):
        z = X[i, j] + b[j]
        return 0.5 * z * (1.0 + kd.erf(z * (1.0 / math.sqrt(2.0))))
    return kd.compute(X.shape, body, name="Y")


X = kd.placeholder((n, m), "float32", name="X")
b = kd.placeholder((m,), "float32", name="b")
Y = bias_gelu(X, b)

# --- 2. the backward ops: dY is the adjoint of Y (what the layer above sends down)
dY = kd.placeholder((n, m), "float32", name="dY")
dX, db = kd.grad(Y, [X, b], dy=dY)
print("forward IR:")
print(Y)
print("\nbackward IR: both loads receive the same adjoint, made once as the tensor Y_adj, which")
print("is dX itself; db sums it over the rows (the transpose of broadcasting b over i):")
print(db)  # prints the graph of db: Y_adj, then db
print(f"dX is {dX.name}")

# --- 3. compile the backward kernels and run them
f = kd.build([X, b, dY], [dX, db])
print("\ngenerated C:")
print(f.source)

rng = np.random.default_rng(0)
x = rng.standard_normal((64, 32)).astype(np.float32)
bb = rng.standard_normal(32).astype(np.float32)
dy = rng.standard_normal((64, 32)).astype(np.float32)
gx, gb = f(x, bb, dy)

# the same by hand: gelu'(z) = (1 + erf(z/sqrt2))/2 + z * exp(-z^2/2) / sqrt(2 pi)
z = (x + bb).astype(np.float64)
erf = np.vectorize(math.erf)
dgelu = 0.5 * (1 + erf(z / math.sqrt(2))) + z * np.exp(-z * z / 2) / math.sqrt(2 * math.pi)
np.testing.assert_allclose(gx, dy * dgelu, rtol=1e-4, atol=1e-5)
np.testing.assert_allclose(gb, (dy * dgelu).sum(0), rtol=1e-4, atol=1e-4)
print("compiled backward matches the hand-derived gradient")

# --- 4. a numerical check in float64 (placeholders are made from the arrays' shapes)
report = kd.check_grad(bias_gelu, [rng.standard_normal((3, 4)), rng.standard_normal(4)])
print(report)
