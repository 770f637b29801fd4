"""Tutorial 6: Theano's GPU test, on the CPU, on the CUDA emulator, and on a GPU where one exists.

Run: python tutorials/06_gpu_test.py

`exp` of a shared vector of 230400 float32 values, called 1000 times. The script is the same for
every device: only `device=` changes (or KERNELDSL_FLAGS="device=cuda" for the whole program).
On "cuda" the shared vector lives in GPU memory and the result stays there unless asked for;
"cuda-emu" runs the very CUDA source a GPU would get, on kerneldsl's CPU emulator of a GPU (its
timings say nothing about a GPU: it proves the path, not the speed, so it loops 10 times unless
asked for more: `python tutorials/06_gpu_test.py --emu-iters 1000`).
"""

import argparse
import shutil
import time

import numpy as np

import kerneldsl as kd
import kerneldsl.numpy as knp
from kerneldsl.runtime.cuda import gpu_available

vlen = 10 * 30 * 768  # 10 x #cores x #threads per core, as in Theano's test
parser = argparse.ArgumentParser()
parser.add_argument("--iters", type=int, default=1000)
parser.add_argument("--emu-iters", type=int, default=10)
args = parser.parse_args()
rng = np.random.default_rng(22)
values = rng.random(vlen).astype(np.float32)

devices = ["cpu"]
if shutil.which("g++"):
    devices.append("cuda-emu")
if gpu_available():
    devices.append("cuda")
else:
    print("no GPU here (nvcc and a device are needed for device='cuda'): cpu and cuda-emu only\n")

for device in devices:
    x = kd.shared(values, name="x")  # on the GPU once a device="cuda" function reads it
    f = kd.function([], knp.exp(x), device=device)
    iters = args.emu_iters if device == "cuda-emu" else args.iters
    r = f()  # the first call builds nothing more; it warms the caches
    t0 = time.perf_counter()
    for _ in range(iters):
        r = f()
    seconds = time.perf_counter() - t0
    r = np.asarray(r.get() if hasattr(r, "get") else r)
    ok = np.allclose(r, np.exp(values), rtol=1e-6)
    print(f"device={device}: looping {iters} times took {seconds:.3f} s ({1e6 * seconds / iters:.0f} us per call)")
    print(f"  result {r[:4]} ...; matches numpy: {ok}")
    print(f"  {f}")
    for k in f.kernels:
        print("   ", str(k).splitlines()[0])
