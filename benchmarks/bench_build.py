"""Cold and warm builds, each in a new process: one conv layer's forward + backward, and the blog
CNN's training and prediction functions (bench_train.py's build measurement).

Run: python benchmarks/bench_build.py [--skip-cnn]

Cold: an empty kernel cache (the C call path's extension built first, as any earlier build on
the machine would have). Warm: the same cache, filled. Aims (the layers issue): one layer <= 2 s
cold, the CNN <= 5 s cold and <= 0.2 s warm.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

LAYER = """
import time
import numpy as np
import kerneldsl as kd, kerneldsl.numpy as knp, kerneldsl.nn.functional as F
x = kd.tensor4("x")
K = kd.shared(np.random.default_rng(0).random((64, 32, 3, 3), np.float32), name="K", fixed_shape=True)
loss = knp.sum(F.relu(F.conv2d(x, K, padding=1)))
gK, = kd.grad(loss, [K])
t0 = time.perf_counter()
f = kd.function([x], [loss, gK])
print(time.perf_counter() - t0, len(f.source))
"""


def run(script: str, cache: str) -> list:
    env = dict(os.environ, KERNELDSL_CACHE=cache)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1].split()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-cnn", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from harness import machine
    print(f"# {machine()}; load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as cache:
        run("from kerneldsl.runtime import fastcall; fastcall._module(); print(0)", cache)
        cold, size = run(LAYER, cache)
        warm, _ = run(LAYER, cache)
    print(f"conv 3x3 32->64 pad 1, fwd+bwd: cold {float(cold):.2f} s (aim <= 2), warm {float(warm):.2f} s, "
          f"{int(size) // 1024} KB of C")
    if not args.skip_cnn:
        from bench_train import build_times
        cold, warm = build_times()
        print(f"blog CNN training + prediction functions: cold {cold:.2f} s (aim <= 5), warm {warm:.2f} s "
              f"(aim <= 0.2)")


if __name__ == "__main__":
    main()
