"""Tutorial 9: one fused op, written once, used from PyTorch, JAX and plain C.

    python tutorials/09_export.py          (the PyTorch and JAX parts need torch and jax:
                                             pip install 'kerneldsl[export]'; without them they are skipped)

1. A fused layer norm + GELU in the DSL: one kernel forward, kd.grad's kernels backward.
2. PyTorch: `kd.export.torch_op` registers it with torch.library (CPU kernels on the tensors'
   memory, a fake kernel for torch.compile, autograd from the derived backward); a small torch
   model trains through it, `torch.library.opcheck` checks the registration.
3. JAX: `kd.export.jax_op` makes it an XLA FFI call with a custom_vjp; it runs under jax.jit,
   jax.grad and jax.vmap (a loop over the batch).
4. C: `kd.export.c_library` writes the sources, a documented header, a metadata JSON and the
   build line; a small C program calls the library, no Python involved.
"""

import math
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

import kerneldsl as kd

os.environ.setdefault("KERNELDSL_CACHE", os.path.join(tempfile.gettempdir(), "kerneldsl-tutorial-cache"))


# --- 1. the op: Y = gelu(layer_norm(X) * W + B), row by row ------------------------------
def layer_norm_gelu(dtype="float32", eps=1e-5):
    n, m = kd.sizes("n m")  # symbolic: any batch, any width
    X = kd.placeholder((n, m), dtype, name="X")
    W = kd.placeholder((m,), dtype, name="W")
    B = kd.placeholder((m,), dtype, name="B")
    r, r2 = kd.reduce_axis(m, "r"), kd.reduce_axis(m, "r2")
    mean = kd.compute((n,), lambda i: kd.sum(X[i, r], axis=r) / m, name="mean")
    var = kd.compute((n,), lambda i: kd.sum((X[i, r2] - mean[i]) ** 2, axis=r2) / m, name="var")

    def body(i, j):
        z = (X[i, j] - mean[i]) * kd.rsqrt(var[i] + eps) * W[j] + B[j]
        return 0.5 * z * (1.0 + kd.erf(z * (1.0 / math.sqrt(2.0))))
    return [X, W, B], [kd.compute((n, m), body, name="Y")]


inputs, outputs = layer_norm_gelu()
spec = kd.export.op_spec(inputs, outputs, "layer_norm_gelu")
print("forward: ", ", ".join(p.name for p in spec.forward.inputs), "->", spec.forward.output_name(0))
print("backward:", ", ".join(p.name for p in spec.backward.inputs), "->",
      ", ".join(spec.backward.output_name(k) for k in range(len(spec.backward.outputs))))
print("  the backward reads (and a framework saves) only", [p.name for p in spec.backward.inputs[:-1]])


def reference(x, w, b, eps=1e-5):  # numpy, float64
    x = x.astype(np.float64)
    z = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + eps) * w + b
    return 0.5 * z * (1.0 + np.vectorize(math.erf)(z / math.sqrt(2.0)))


rng = np.random.default_rng(0)

# --- 2. PyTorch ------------------------------------------------------------------------------
try:
    import torch
except ImportError:
    torch = None
    print("\n[PyTorch part skipped: torch is not installed]")

if torch is not None:
    op = kd.export.torch_op(inputs, outputs, name="tutorial::layer_norm_gelu")
    x, w, b = torch.randn(5, 16), torch.ones(16), torch.zeros(16)
    assert np.allclose(op(x, w, b).numpy(), reference(x.numpy(), w.numpy(), b.numpy()), atol=1e-5)

    class Model(torch.nn.Module):
        """Linear -> fused layer norm + GELU (ours) -> Linear."""

        def __init__(self):
            super().__init__()
            self.inp, self.out = torch.nn.Linear(8, 32), torch.nn.Linear(32, 1)
            self.w, self.b = torch.nn.Parameter(torch.ones(32)), torch.nn.Parameter(torch.zeros(32))

        def forward(self, x):
            return self.out(op(self.inp(x), self.w, self.b))

    torch.manual_seed(0)
    model = Model()
    xs = torch.randn(256, 8)
    ys = (xs[:, :1] * xs[:, 1:2]).tanh()  # a target a linear model cannot fit
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    print("\nPyTorch: training a model with the exported op inside")
    for step in range(61):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(xs), ys)
        loss.backward()  # through mylib's backward op: kd.grad's kernels
        opt.step()
        if step % 20 == 0:
            print(f"  step {step:3d}  loss {loss.item():.4f}")
    torch.library.opcheck(op, (x, w, b))  # schema, fake kernel, autograd registration, torch.compile
    print("  opcheck passed")
    compiled = torch.compile(model, fullgraph=True, dynamic=True, backend="aot_eager")
    print("  torch.compile(fullgraph=True, dynamic=True): batch 7 ->", tuple(compiled(torch.randn(7, 8)).shape))

# --- 3. JAX ------------------------------------------------------------------------------------
try:
    import jax
    import jax.numpy as jnp
except ImportError:
    jax = None
    print("\n[JAX part skipped: jax is not installed]")

if jax is not None:
    jop = kd.export.jax_op(inputs, outputs, name="layer_norm_gelu")
    x = jnp.asarray(rng.standard_normal((6, 16), dtype=np.float32))
    w, b = jnp.ones(16, jnp.float32), jnp.zeros(16, jnp.float32)
    y = jax.jit(jop)(x, w, b)
    assert np.allclose(np.asarray(y), reference(np.asarray(x), 1.0, 0.0), atol=1e-5)
    gw = jax.jit(jax.grad(lambda w: jop(x, w, b).sum()))(w)  # the backward: another exported call
    ys = jax.vmap(jop, in_axes=(0, None, None))(jnp.stack([x, 2 * x]), w, b)  # one call per element
    print(f"\nJAX: jit {y.shape}, grad w.r.t. W {gw.shape}, vmap {ys.shape}")

# --- 4. C ------------------------------------------------------------------------------------------
out = Path(tempfile.mkdtemp(prefix="kd-export-")) / "layer_norm_gelu"
lib = kd.export.c_library(inputs, outputs, out, target="c")
print(f"\nC library: {lib}")
header = lib.header.read_text()
print("  from the header:", *[line for line in header.splitlines() if line.startswith("int layer_norm_gelu(")])
cc = shutil.which("cc")
if cc is None:
    print("  [no C compiler: the program is not built]")
else:
    subprocess.run(lib.build["cc"], shell=True, cwd=lib.directory, check=True)
    (lib.directory / "main.c").write_text(r"""
#include <stdio.h>
#include "layer_norm_gelu.h"

int main(void)
{
    float x[2][4] = {{1, 2, 3, 4}, {-1, 0, 1, 8}}, w[4] = {1, 1, 1, 1}, b[4] = {0, 0, 0, 0}, y[2][4];
    int64_t x_shape[2] = {2, 4}, w_shape[1] = {4}, y_shape[2], bad = 0;
    int rc = layer_norm_gelu_shapes(x_shape, w_shape, w_shape, y_shape, NULL);
    if (rc == 0)  /* NULL strides: row-major; NULL workspace: allocated inside */
        rc = layer_norm_gelu(&x[0][0], x_shape, NULL, w, w_shape, NULL, b, w_shape, NULL,
                             &y[0][0], y_shape, NULL, NULL, &bad);
    if (rc) { printf("error %d: %s\n", rc, layer_norm_gelu_error(rc)); return 1; }
    for (int i = 0; i < 2; ++i)
        printf("%.6f %.6f %.6f %.6f\n", y[i][0], y[i][1], y[i][2], y[i][3]);
    int64_t wrong[1] = {3};  /* W of the wrong width: an error code, no crash */
    rc = layer_norm_gelu(&x[0][0], x_shape, NULL, w, wrong, NULL, b, w_shape, NULL, &y[0][0], y_shape, NULL, NULL, &bad);
    printf("%d (argument %lld): %s\n", rc, (long long)bad, layer_norm_gelu_error(rc));
    return 0;
}
""")
    exe = lib.directory / "main"
    subprocess.run([cc, "-O1", "-I", str(lib.directory), str(lib.directory / "main.c"), "-L", str(lib.directory),
                    "-llayer_norm_gelu", f"-Wl,-rpath,{lib.directory}", "-o", str(exe)], check=True)
    printed = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    print("  the C program prints:\n    " + printed.strip().replace("\n", "\n    "))
    got = np.array([[float(v) for v in line.split()] for line in printed.splitlines()[:2]])
    want = reference(np.array([[1, 2, 3, 4], [-1, 0, 1, 8]], np.float32), 1.0, 0.0)
    assert np.allclose(got, want, atol=1e-5), (got, want)
shutil.rmtree(out.parent, ignore_errors=True)
