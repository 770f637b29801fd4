"""Every float32 intrinsic: ns per element and max ULP error, kerneldsl against numpy and torch.

Run: python benchmarks/bench_intrinsics.py [--n 4194304] [--rounds 3]

Speed: one elementwise kernel over n floats (2 threads for kerneldsl and torch, numpy's one),
for three input ranges (|x| ~ 0.5, ~ 3, ~ 300: the last puts exp's and erfc's lanes in overflow
and underflow, where a vector routine that leaves special lanes to scalar code slows down), the
median of interleaved rounds, each library idled and warmed up before it is timed.
Accuracy: max ULP against float64 on the inputs of tests/test_intrinsics.py (random bit
patterns over the whole float32 range, a dense sweep, the boundaries).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from harness import machine, timeit  # noqa: E402
from test_intrinsics import INTRINSICS, _inputs, ulp_errors  # noqa: E402

import kerneldsl as kd  # noqa: E402
import kerneldsl.numpy as knp  # noqa: E402

NUMPY = {"exp": np.exp, "log": np.log, "log1p": np.log1p, "expm1": np.expm1, "tanh": np.tanh, "sqrt": np.sqrt,
         "sin": np.sin, "cos": np.cos, "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
         "softplus": lambda x: np.logaddexp(np.float32(0), x)}


def torch_fns():
    import torch
    import torch.nn.functional as F
    return {"exp": torch.exp, "log": torch.log, "log1p": torch.log1p, "expm1": torch.expm1, "tanh": torch.tanh,
            "sigmoid": torch.sigmoid, "softplus": F.softplus, "erf": torch.erf, "erfc": torch.erfc,
            "sqrt": torch.sqrt, "sin": torch.sin, "cos": torch.cos}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1 << 22)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    import torch
    torch.set_num_threads(2)
    tfn = torch_fns()
    x = kd.vector("x")
    kd_fns = {name: kd.function([x], knp.elementwise(fn, x, name=name)) for name, (fn, _, _) in INTRINSICS.items()}
    rng = np.random.default_rng(0)
    base = rng.standard_normal(args.n).astype(np.float32)
    scales = (0.5, 3.0, 300.0)
    acc_in = _inputs()
    with np.errstate(all="ignore"):
        ulps = {}
        for name, (_, ref, _) in INTRINSICS.items():
            want = np.asarray(ref(acc_in.astype(np.float64)), np.float64)
            ulps[name] = {"kd": ulp_errors(kd_fns[name](acc_in), want).max()}
            if name in NUMPY:
                ulps[name]["numpy"] = ulp_errors(NUMPY[name](acc_in).astype(np.float32), want).max()
            if name in tfn:
                ulps[name]["torch"] = ulp_errors(tfn[name](torch.from_numpy(acc_in)).numpy(), want).max()
    times = {(name, s, lib): [] for name in INTRINSICS for s in scales for lib in ("kd", "numpy", "torch")}
    load0 = os.getloadavg()[0]
    with np.errstate(all="ignore"):
        for _ in range(args.rounds):
            for name in INTRINSICS:
                for s in scales:
                    a = base * s
                    if name in ("log", "sqrt"):
                        a = np.abs(a)
                    ta = torch.from_numpy(a)
                    times[(name, s, "kd")].append(timeit(lambda: kd_fns[name](a), repeat=5, idle=0.1))
                    if name in NUMPY:
                        times[(name, s, "numpy")].append(timeit(lambda: NUMPY[name](a), repeat=5, idle=0.1))
                    if name in tfn:
                        times[(name, s, "torch")].append(timeit(lambda: tfn[name](ta), repeat=5, idle=0.1))
    print(f"machine: {machine()}; n = {args.n}; torch {torch.__version__} (2 threads), kd 2 threads, numpy 1; "
          f"load average {load0:.2f} before, {os.getloadavg()[0]:.2f} after; median of {args.rounds} rounds")
    print("| intrinsic | kd ns/el (|x|~0.5, 3, 300) | numpy | torch | max ULP kd | numpy | torch |")
    print("|---|---|---|---|---|---|---|")

    def cell(name, lib):
        ts = [times[(name, s, lib)] for s in scales]
        if not ts[0]:
            return "-"
        return " / ".join(f"{statistics.median(t) / args.n * 1e9:.2f}" for t in ts)

    for name in INTRINSICS:
        u = ulps[name]
        print(f"| {name} | {cell(name, 'kd')} | {cell(name, 'numpy')} | {cell(name, 'torch')} | {u['kd']:.2f} | "
              + " | ".join(f"{u[k]:.2f}" if k in u else "-" for k in ("numpy", "torch")) + " |")


if __name__ == "__main__":
    main()
