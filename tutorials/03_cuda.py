"""Tutorial 3: the same op on the CPU, on the CUDA emulator, and on a GPU.

Run: python tutorials/03_cuda.py

A row softmax goes through three targets: "c" (the CPU), "cuda-emu" (the generated CUDA
run on kerneldsl's CPU emulator of a GPU: fibers for threads, real __syncthreads and warp
shuffles) and "cuda" (a real GPU through PyCUDA or CuPy, only where one exists). We print
the generated CUDA (each kernel in an int32 and an int64 index variant) and what ptxas says
about each kernel (registers, spills, shared memory, blocks per SM).
A dense layer then shows the GEMM template (shared-memory tiles, register tiles) and, on a
GPU, arrays that stay on the device.
"""

import shutil

import numpy as np

import kerneldsl as kd

rows, cols = kd.sizes("rows cols")
X = kd.placeholder((rows, cols), "float32", name="X")
c1, c2 = kd.reduce_axis(cols, "c1"), kd.reduce_axis(cols, "c2")
mx = kd.compute((rows,), lambda i: kd.max(X[i, c1], axis=c1), name="mx")
e = kd.compute((rows, cols), lambda i, j: kd.exp(X[i, j] - mx[i]), name="e")
s = kd.compute((rows,), lambda i: kd.sum(e[i, c2], axis=c2), name="s")
Y = kd.compute((rows, cols), lambda i, j: e[i, j] / s[i], name="Y")

x = np.random.default_rng(0).standard_normal((64, 1000), dtype=np.float32)
want = np.exp(x - x.max(1, keepdims=True))
want /= want.sum(1, keepdims=True)

# --- 1. the CPU --------------------------------------------------------------------------
f_cpu = kd.build([X], [Y], target="c")
print("CPU:       max |Y - numpy| =", float(np.abs(f_cpu(x) - want).max()))

# --- 2. the emulator: the very .cu text a GPU would get, run on the CPU ----------------------
if shutil.which("g++"):
    f_emu = kd.build([X], [Y], target="cuda-emu")
    print("emulator:  max |Y - numpy| =", float(np.abs(f_emu(x) - want).max()))
    print("\nHow each kernel is launched (schedule, threads per block, work items):")
    for L in f_emu.launches:
        print(f"  {L.kernel:16s} {L.schedule:12s} {L.threads:4d} threads   work = {L.work}")
    print("\nThe generated CUDA (kernels only):")
    text = f_emu.source
    print(text[text.rindex("\n/*", 0, text.index("template <typename kd_idx>")):text.index("#ifdef KD_CUDA_EMU")])
    if shutil.which("nvcc"):
        # each kernel with ptxas's report (nvcc -cubin, cached) and the occupancy it allows;
        # spills or less than one resident block per SM would show as WARNING lines
        print("The kernels, as f.kernels reports them:")
        for kern in f_emu.kernels:
            print(" ", kern.summary())
else:
    print("emulator:  skipped (needs g++)")

# --- 3. a real GPU ------------------------------------------------------------------------
from kerneldsl.runtime.cuda import gpu_available

if gpu_available():
    f_gpu = kd.build([X], [Y], target="cuda")
    print("GPU:       max |Y - numpy| =", float(np.abs(f_gpu(x) - want).max()))
else:
    print("GPU:       skipped (no CUDA GPU with PyCUDA or CuPy here)")

# --- 4. a contraction: the tiled GEMM template -----------------------------------------------
# tanh(A @ W + b) is recognised as a contraction with an epilogue: one block per 64 x 64 tile
# of the output, K in slices of 16 through double-buffered shared memory, 4 x 4 per thread.
n, k, m = kd.sizes("n k m")
A, W, b = kd.placeholder((n, k), name="A"), kd.placeholder((k, m), name="W"), kd.placeholder((m,), name="b")
r = kd.reduce_axis(k, "r")
H = kd.compute((n, m), lambda i, j: kd.tanh(kd.sum(A[i, r] * W[r, j], axis=r) + b[j]), name="H")
g = np.random.default_rng(1)
a, w, bias = (g.standard_normal(s, dtype=np.float32) for s in ((70, 30), (30, 50), (50,)))
if shutil.which("g++"):
    f_dense = kd.build([A, W, b], [H], target="cuda-emu")
    print("\ndense:     schedule", f_dense.launches[0].schedule, "| max |H - numpy| =",
          float(np.abs(f_dense(a, w, bias) - np.tanh(a @ w + bias)).max()))
if gpu_available():
    f_dense = kd.build([A, W, b], [H], target="cuda")
    try:  # GPU arrays in (CuPy here; PyTorch CUDA tensors and PyCUDA arrays work alike), GPU arrays out
        import cupy
        h = f_dense(cupy.asarray(a), cupy.asarray(w), cupy.asarray(bias))
        print("dense on the GPU, device arrays in and out:", type(h).__name__, h.shape)
    except ImportError:
        print("dense on the GPU:", f_dense(a, w, bias).shape)
