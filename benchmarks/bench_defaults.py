"""The default schedule before and after the heuristics folded in from tuning, side by side in one run.

Run: python benchmarks/bench_defaults.py [--rounds 5] [--only dense,conv_fwd,conv_bwd,matmul1024,exp]

"before" builds with the knobs that switch the heuristics off (fit_gemm=False: the target's fixed
GEMM tiles; simd_block=0: a loop both parallel and SIMD as one loop), "after" with the defaults.
The shapes are those of kerneldsl.nn layers: the batch symbolic, the weights' extents known, so
the GEMM fit sees N, K (a dense layer) or M, K (a convolution's output channels). Records are off.
Each library is timed in interleaved rounds (idle 0.4 s, warm-up, median of repeats, each sample
at least 2 ms of calls); the table gives each one's median over rounds.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import bench_tune as bt
from harness import machine, table

import kerneldsl as kd


def rng(seed):
    return np.random.default_rng(seed)


def dense():
    n = kd.size("n")
    X, W, b = kd.placeholder((n, 784), name="X"), kd.placeholder((784, 100), name="W"), kd.placeholder((100,), name="b")
    r = kd.reduce_axis(784, name="r")
    Y = kd.compute((n, 100), lambda i, j: kd.tanh(kd.sum(X[i, r] * W[r, j], axis=r) + b[j]), name="Y")
    x = rng(1).standard_normal((128, 784), dtype=np.float32)
    w = rng(2).standard_normal((784, 100), dtype=np.float32) * np.float32(0.05)
    bb = rng(3).standard_normal(100, dtype=np.float32)
    want = np.tanh(x.astype(np.float64) @ w + bb).astype(np.float32)
    return "dense 128x784 @ 784x100 + bias, tanh", [X, W, b], [Y], (x, w, bb), [want], \
        {"numpy": lambda: np.tanh(x @ w + bb)}


def conv_fwd():
    n = kd.size("n")
    X, Wt = kd.placeholder((n, 32, 32, 32), name="X"), kd.placeholder((64, 32, 3, 3), name="W")
    rc, rh, rw = kd.reduce_axis(32, "rc"), kd.reduce_axis(3, "rh"), kd.reduce_axis(3, "rw")

    def xin(b, c, y, z):
        y, z = y + rh - 1, z + rw - 1
        return kd.where((y >= 0) & (y < 32) & (z >= 0) & (z < 32), X[b, c, y, z], 0)
    Y = kd.compute((n, 64, 32, 32), lambda b, c, y, z: kd.sum(xin(b, rc, y, z) * Wt[c, rc, rh, rw],
                                                              axis=(rc, rh, rw)), name="Y")
    w = bt.conv_forward()
    return w.name, [X, Wt], [Y], w.args, w.want, w.peers


def conv_bwd():
    w = bt.conv_backward()
    return w.name, w.inputs, w.outputs, w.args, w.want, w.peers


def matmul1024():
    A, B = kd.placeholder((1024, 1024), name="A"), kd.placeholder((1024, 1024), name="B")
    r = kd.reduce_axis(1024, name="r")
    C = kd.compute((1024, 1024), lambda i, j: kd.sum(A[i, r] * B[r, j], axis=r), name="C")
    w = bt.matmul(1024)
    return w.name, [A, B], [C], w.args, w.want, w.peers


def exp22():
    w = bt.exp22()
    return w.name, w.inputs, w.outputs, w.args, w.want, w.peers


WORKLOADS = {"dense": dense, "conv_fwd": conv_fwd, "conv_bwd": conv_bwd, "matmul1024": matmul1024, "exp": exp22}
BEFORE = {"fit_gemm": False, "simd_block": 0}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--only", default=",".join(WORKLOADS))
    args = ap.parse_args()
    print(f"# bench_defaults on {machine()}, target {kd.Target.detect()}; median over {args.rounds} rounds")
    rows = []
    for key in args.only.split(","):
        name, ins, outs, arrays, want, peers = WORKLOADS[key]()
        fns = dict(peers)
        with kd.settings.override(use_records=False):
            for label, knobs in (("kd before", BEFORE), ("kd after", {})):
                with kd.knobs(**knobs):
                    f = kd.build(ins, outs)
                bt.check(name, f(*arrays), want)
                changed = [f"{k.name}: " + ", ".join(f"{x}={k.knobs[x]}" for x in ("mr", "nr", "kc", "simd_block")
                                                     if x in k.knobs) for k in f.module.kernels]
                print(f"  {name}, {label}: {'; '.join(changed)}", flush=True)
                fns[label] = (lambda f=f: f(*arrays))
        res = bt.measure(fns, args.rounds, args.repeat)
        rows.append((name, res))
        print(f"  {name}: " + ", ".join(f"{lib} {1e3 * t:.3f} ms" for lib, t in res.items())
              + f"; after vs before {res['kd before'] / res['kd after']:.3f}x", flush=True)
    print()
    for name, res in rows:
        print(table("float32, " + name, [(name, res)], base="kd after"))
        print()


if __name__ == "__main__":
    main()
