"""Model-guided (evolutionary) search against random search, same trials, on the GEMM and conv spaces.

Run: python benchmarks/tune_convergence.py [--trials 64] [--seeds 2] [--out benchmarks]

Each strategy tunes the same workload from scratch with its own records file (no run sees another's
records). Writes convergence_<workload>.png (the best time so far against the trial number, one
line per strategy and seed) and prints each run's best and the trial at which it came within 5%
of its final best. Timings are the tuner's own (minimum of the repeats after a warm-up).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import kerneldsl as kd
from kerneldsl.tuning import Database
from kerneldsl.tuning.plot import convergence


def gemm(s=512):
    n, m, k = kd.sizes("n m k")
    A = kd.placeholder((n, k), name="A")
    B = kd.placeholder((k, m), name="B")
    r = kd.reduce_axis(k, name="r")
    C = kd.compute((n, m), lambda i, j: kd.sum(A[i, r] * B[r, j], axis=r), name="C")
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((s, s), dtype=np.float32) for _ in range(2))
    return f"matmul {s}^3", [A, B], [C], (a, b), [(a.astype(np.float64) @ b).astype(np.float32)]


def dense(batch=128, k=784, m=100):
    """A dense layer's GEMM (N = 100 and K = 784 pad the default tile and K block)."""
    name, ins, outs, _, _ = gemm(2)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((batch, k), dtype=np.float32)
    b = rng.standard_normal((k, m), dtype=np.float32)
    return f"matmul {batch}x{k} @ {k}x{m}", ins, outs, (a, b), [(a.astype(np.float64) @ b).astype(np.float32)]


def conv_bwd(batch=16, ci=32, co=64, hw=32):
    """A convolution's two gradients (dX, dW): two GEMM kernels, so a point must pick both well."""
    H = hw + 2
    X = kd.placeholder((batch, ci, H, H), name="X")
    W = kd.placeholder((co, ci, 3, 3), name="W")
    c, ry, rx = kd.reduce_axis(ci, "c"), kd.reduce_axis(3, "ry"), kd.reduce_axis(3, "rx")
    Y = kd.compute((batch, co, hw, hw), lambda n, o, y, x: kd.sum(X[n, c, y + ry, x + rx] * W[o, c, ry, rx],
                                                                  axis=[c, ry, rx]), name="Y")
    dY = kd.placeholder(Y.shape, name="dY")
    dX, dW = kd.grad(Y, [X, W], dy=dY)
    rng = np.random.default_rng(2)
    x, w, dy = (rng.standard_normal(s, dtype=np.float32)
                for s in ((batch, ci, H, H), (co, ci, 3, 3), (batch, co, hw, hw)))
    x64, w64, dy64 = (a.astype(np.float64) for a in (x, w, dy))
    cols = np.lib.stride_tricks.sliding_window_view(x64, (3, 3), axis=(2, 3))
    want_dw = np.einsum("noyx,ncyxij->ocij", dy64, cols)
    want_dx = np.zeros_like(x64)
    for i in range(3):
        for j in range(3):
            want_dx[:, :, i:i + hw, j:j + hw] += np.einsum("noyx,oc->ncyx", dy64, w64[:, :, i, j])
    want = [want_dx.astype(np.float32), want_dw.astype(np.float32)]
    return f"conv2d backward b{batch} {ci}->{co} {hw}x{hw} 3x3 (dX, dW)", [X, W, dY], [dX, dW], (x, w, dy), want


def conv(batch=16, ci=32, co=64, hw=32):
    n, cin, cout, h, w = kd.sizes("n ci co h w")
    X = kd.placeholder((n, cin, h, w), name="X")
    W = kd.placeholder((cout, cin, 3, 3), name="W")
    rc, rh, rw = kd.reduce_axis(cin, "rc"), kd.reduce_axis(3, "rh"), kd.reduce_axis(3, "rw")

    def xin(b, c, y, z):
        y, z = y + rh - 1, z + rw - 1
        return kd.where((y >= 0) & (y < h) & (z >= 0) & (z < w), X[b, c, y, z], 0)
    Y = kd.compute((n, cout, h, w), lambda b, c, y, z: kd.sum(xin(b, rc, y, z) * W[c, rc, rh, rw],
                                                              axis=(rc, rh, rw)), name="Y")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((batch, ci, hw, hw), dtype=np.float32)
    wt = rng.standard_normal((co, ci, 3, 3), dtype=np.float32)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    cols = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))
    want = np.tensordot(cols, wt, axes=([1, 4, 5], [1, 2, 3])).transpose(0, 3, 1, 2).astype(np.float32)
    return f"conv2d b{batch} {ci}->{co} {hw}x{hw} 3x3", [X, W], [Y], (x, wt), [want]


def within(res, frac=0.05) -> int | None:
    best = res.best.seconds
    for t in sorted(res.history, key=lambda t: t.index):
        if t.ok and t.seconds <= best * (1 + frac):
            return t.index + 1
    return None


def best_by(res, trials: int) -> float:
    """The best time among the first `trials` trials."""
    return min((t.seconds for t in res.history if t.ok and t.index < trials), default=float("inf"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=64)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--only", default="gemm,conv", help="gemm, dense, conv, conv_bwd")
    args = ap.parse_args()
    for key in args.only.split(","):
        name, ins, outs, arrays, want = {"gemm": gemm, "dense": dense, "conv": conv, "conv_bwd": conv_bwd}[key]()
        with kd.settings.override(use_records=False):
            f = kd.build(ins, outs)
        runs = []
        for seed in range(args.seeds):
            for strategy in ("random", "evolutionary"):
                db = Database(os.path.join(tempfile.mkdtemp(), "records.sqlite"))
                res = kd.tune(f, arrays, trials=args.trials, time_budget_s=3600, strategy=strategy, seed=seed,
                              database=db, reference=want, progress=False)
                runs.append((f"{strategy} (seed {seed})", res))
                print(f"{name}: {strategy:12} seed {seed}: best {1e3 * res.best.seconds:.3f} ms "
                      f"(default {1e3 * res.default.seconds:.3f} ms), within 5% of its best at trial "
                      f"{within(res)}, {len(res.failures)} failed, {res.rejected} refused by the primitives, "
                      f"{res.wall_seconds:.0f} s  [{res.best.choices}]", flush=True)
        for strategy in ("random", "evolutionary"):  # the mean over seeds of the best so far
            mine = [res for label, res in runs if label.startswith(strategy)]
            marks = sorted({min(m, args.trials) for m in (8, 16, 32, args.trials)})
            means = [sum(best_by(res, m) for res in mine) / len(mine) for m in marks]
            print(f"{name}: {strategy:12} mean best over {len(mine)} seeds after "
                  + ", ".join(f"{m} trials {1e3 * v:.3f} ms" for m, v in zip(marks, means)), flush=True)
        path = os.path.join(args.out, f"convergence_{key}.png")
        convergence(runs, path, title=f"{name}: best so far, random vs model-guided evolutionary ({args.trials} trials)")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
