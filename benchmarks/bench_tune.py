"""Tuned against untuned against the peers, side by side in one run (the autotuning issue's aims).

Run: python benchmarks/bench_tune.py [--trials 200] [--budget 600] [--only matmul1024,dense] [--skip-tune]

For each workload: the untuned default build (records ignored), `kd.tune` with the given trials
and time budget (records into $KERNELDSL_TUNING_DB), then a second process that builds the same
graph: it must get the tuned record with no measurement, from a warm cache (its build time is
printed). Then every library is timed in interleaved rounds (idle 0.4 s, warm-up, median of
repeats; the table gives each one's median over rounds) and the ratios are printed. All float32.

The candidates of the big contractions are checked against numpy in float64 (`reference=`)
rather than the reference interpreter, whose broadcasting evaluation of a 2048^3 matmul or a
conv takes minutes; every other workload is checked against the reference interpreter.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from harness import machine, table, timeit

import kerneldsl as kd
from kerneldsl.tuning import ShapeDispatch, TunedConfig

try:
    import torch
    torch.set_num_threads(os.cpu_count() or 1)
except ImportError:  # optional peer
    torch = None
try:
    import jax
    import jax.numpy as jnp
except ImportError:
    jax = None

F32 = "float32"


@dataclass
class Work:
    name: str
    inputs: list
    outputs: list
    args: tuple
    want: list  # the expected outputs (numpy, float64 where it matters)
    peers: dict = field(default_factory=dict)
    reference: list | None = None  # passed to kd.tune (None: the reference interpreter)


def rng(seed=0):
    return np.random.default_rng(seed)


def matmul(s: int) -> Work:
    n, m, k = kd.sizes("n m k")
    A = kd.placeholder((n, k), name="A")
    B = kd.placeholder((k, m), name="B")
    r = kd.reduce_axis(k, name="r")
    C = kd.compute((n, m), lambda i, j: kd.sum(A[i, r] * B[r, j], axis=r), name="C")
    a, b = (rng(s + i).standard_normal((s, s), dtype=np.float32) for i in range(2))
    want = (a.astype(np.float64) @ b).astype(np.float32)
    peers = {"numpy": lambda: a @ b}
    if torch is not None:
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        peers["torch"] = lambda: ta @ tb
    return Work(f"matmul {s}^3", [A, B], [C], (a, b), [want], peers, [want])


def dense() -> Work:
    n, m, k = kd.sizes("n m k")
    X = kd.placeholder((n, k), name="X")
    W = kd.placeholder((k, m), name="W")
    bias = kd.placeholder((m,), name="bias")
    r = kd.reduce_axis(k, name="r")
    Y = kd.compute((n, m), lambda i, j: kd.tanh(kd.sum(X[i, r] * W[r, j], axis=r) + bias[j]), name="Y")
    x = rng(1).standard_normal((128, 784), dtype=np.float32)
    w = rng(2).standard_normal((784, 100), dtype=np.float32) * np.float32(0.05)
    b = rng(3).standard_normal(100, dtype=np.float32)
    want = np.tanh(x.astype(np.float64) @ w + b).astype(np.float32)
    peers = {"numpy": lambda: np.tanh(x @ w + b)}
    if torch is not None:
        tx, tw, tb = (torch.from_numpy(v) for v in (x, w, b))
        peers["torch"] = lambda: torch.tanh(torch.addmm(tb, tx, tw))
    return Work("dense 128x784 @ 784x100 + bias, tanh", [X, W, bias], [Y], (x, w, b), [want], peers)


def conv_forward() -> Work:
    """NCHW 3x3, stride 1, zero padding 1, as one compute (bench_cpu.py's): an implicit GEMM."""
    n, ci, co, h, w = kd.sizes("n ci co h w")
    X = kd.placeholder((n, ci, h, w), name="X")
    Wt = kd.placeholder((co, ci, 3, 3), name="W")
    rc, rh, rw = kd.reduce_axis(ci, "rc"), kd.reduce_axis(3, "rh"), kd.reduce_axis(3, "rw")

    def xin(b, c, y, z):
        y, z = y + rh - 1, z + rw - 1
        return kd.where((y >= 0) & (y < h) & (z >= 0) & (z < w), X[b, c, y, z], 0)
    Y = kd.compute((n, co, h, w), lambda b, c, y, z: kd.sum(xin(b, rc, y, z) * Wt[c, rc, rh, rw],
                                                            axis=(rc, rh, rw)), name="Y")
    x = rng(4).standard_normal((64, 32, 32, 32), dtype=np.float32)
    wt = rng(5).standard_normal((64, 32, 3, 3), dtype=np.float32)
    peers = {}
    if torch is None:
        raise SystemExit("bench_tune: the conv rows need torch (pip install 'kerneldsl[bench]')")
    tx, tw = torch.from_numpy(x), torch.from_numpy(wt)

    def t_fwd():
        with torch.no_grad():
            return torch.nn.functional.conv2d(tx, tw, padding=1)
    peers["torch"] = t_fwd
    want = torch.nn.functional.conv2d(tx.double(), tw.double(), padding=1).float().numpy()
    return Work("conv2d fwd b64 32->64 32x32 3x3", [X, Wt], [Y], (x, wt), [want], peers, [want])


def conv_backward() -> Work:
    """bench_autodiff.py's: a valid conv of a pre-padded input, gradients for X and W."""
    batch, cin, cout, hw, k = 64, 32, 64, 32, 3
    H = hw + k - 1
    X = kd.placeholder((batch, cin, H, H), F32, name="X")
    W = kd.placeholder((cout, cin, k, k), F32, name="W")
    c, ry, rx = kd.reduce_axis(cin, "c"), kd.reduce_axis(k, "ry"), kd.reduce_axis(k, "rx")
    Y = kd.compute((batch, cout, hw, hw), lambda n, o, y, x: kd.sum(
        X[n, c, y + ry, x + rx] * W[o, c, ry, rx], axis=[c, ry, rx]), name="Y")
    dY = kd.placeholder(Y.shape, F32, name="dY")
    dX, dW = kd.grad(Y, [X, W], dy=dY)
    x = rng(6).standard_normal((batch, cin, H, H), dtype=np.float32)
    w = rng(7).standard_normal((cout, cin, k, k), dtype=np.float32)
    dy = rng(8).standard_normal((batch, cout, hw, hw), dtype=np.float32)
    if torch is None:
        raise SystemExit("bench_tune: the conv rows need torch (pip install 'kerneldsl[bench]')")

    def t_bwd(dtype=torch.float32):
        tx = torch.from_numpy(x).to(dtype).requires_grad_()
        tw = torch.from_numpy(w).to(dtype).requires_grad_()
        torch.nn.functional.conv2d(tx, tw).backward(torch.from_numpy(dy).to(dtype))
        return tx.grad, tw.grad
    want = [g.float().numpy() for g in t_bwd(torch.float64)]
    return Work(f"conv2d bwd b{batch} {cin}->{cout} {hw}x{hw} 3x3 (dX, dW)", [X, W, dY], [dX, dW], (x, w, dy), want,
                {"torch": t_bwd}, want)


def maxpool_backward() -> Work:
    N, Cc, H, W = kd.sizes("N Cc H W")
    X = kd.placeholder((N, Cc, H, W), name="X")
    ry, rx = kd.reduce_axis(2, name="ry"), kd.reduce_axis(2, name="rx")
    P = kd.compute((N, Cc, H // 2, W // 2),
                   lambda b, ch, i, j: kd.max(X[b, ch, 2 * i + ry, 2 * j + rx], axis=[ry, rx]), name="P")
    dP = kd.placeholder((N, Cc, H // 2, W // 2), name="dP")
    (dX,) = kd.grad(P, [X], dy=dP)
    x = rng(9).standard_normal((64, 32, 32, 32), dtype=np.float32)
    dp = rng(10).standard_normal((64, 32, 16, 16), dtype=np.float32)
    tx, tdp = torch.from_numpy(x), torch.from_numpy(dp)

    def t_bwd():
        v = tx.detach().requires_grad_(True)
        out = torch.nn.functional.max_pool2d(v, 2)
        return torch.autograd.grad(out, [v], tdp)
    want = [t_bwd()[0].numpy()]
    return Work("maxpool 2x2 bwd 64x32x32x32", [X, dP], [dX], (x, dp), want, {"torch": t_bwd})


def exp22() -> Work:
    n = kd.size("n")
    x = kd.placeholder((n,), name="x")
    y = kd.compute((n,), lambda i: kd.exp(x[i]), name="y")
    v = rng(11).standard_normal(1 << 22, dtype=np.float32)
    peers = {"numpy": lambda: np.exp(v)}
    if torch is not None:
        tv = torch.from_numpy(v)
        peers["torch"] = lambda: torch.exp(tv)
        try:
            comp = torch.compile(torch.exp)
            comp(tv)
            peers["torch.compile"] = lambda: comp(tv)
        except Exception as e:  # noqa: BLE001 - a peer that cannot compile is left out
            print(f"(torch.compile left out: {type(e).__name__})")
    if jax is not None:
        jf = jax.jit(jnp.exp)
        jv = jnp.asarray(v)
        jf(jv)
        peers["jax.jit"] = lambda: jax.block_until_ready(jf(jv))
    return Work("exp(x), n=2^22", [x], [y], (v,), [np.exp(v)], peers)


WORKLOADS = {"matmul1024": lambda: matmul(1024), "matmul2048": lambda: matmul(2048), "dense": dense,
             "conv_fwd": conv_forward, "conv_bwd": conv_backward, "maxpool_bwd": maxpool_backward, "exp": exp22}


def check(name: str, got, want) -> None:
    got = list(got) if isinstance(got, tuple) else [got]
    for g, w in zip(got, want):
        err = float(np.abs(g - w).max()) / max(1.0, float(np.abs(w).max()))
        assert err < 1e-3, f"{name}: differs from the expected output by {err:.2e} (relative to max)"


def replay(key: str) -> None:
    """The second process: build (warm cache, records), no measurement by a tuner; print JSON."""
    work = WORKLOADS[key]()
    t0 = time.perf_counter()
    g = kd.build(work.inputs, work.outputs)
    if isinstance(g, ShapeDispatch):  # symbolic sizes: the variant of these shapes, built once
        g.variant(tuple(a.shape for a in work.args))
    build_s = time.perf_counter() - t0
    check(work.name, g(*work.args), work.want)
    tuned = isinstance(g.config, TunedConfig)
    ms = 1e3 * timeit(lambda: g(*work.args), repeat=7)
    print(json.dumps({"build_s": build_s, "tuned": tuned, "record": getattr(g.config, "record", None), "ms": ms}))


def measure(fns: dict, rounds: int, repeat: int) -> dict:
    times: dict = {k: [] for k in fns}
    # calls per sample: a sample of a 0.1 ms kernel would be one thread wake-up's noise; >= 2 ms each
    number = {lib: max(1, int(2e-3 / timeit(fn, repeat=1, idle=0.0))) for lib, fn in fns.items()}
    for _ in range(rounds):
        for lib, fn in fns.items():
            times[lib].append(timeit(fn, repeat=repeat, number=number[lib]))
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--budget", type=float, default=600.0, help="seconds of tuning per workload")
    ap.add_argument("--only", default=",".join(WORKLOADS), help="comma-separated: " + ", ".join(WORKLOADS))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--skip-tune", action="store_true", help="use the records already in the database")
    ap.add_argument("--plots", default=None, help="folder for each run's convergence plot")
    ap.add_argument("--replay", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.replay:
        replay(args.replay)
        return
    print(f"# bench_tune on {machine()}, target {kd.Target.detect()}")
    print(f"numpy {np.__version__}" + (f", torch {torch.__version__}" if torch is not None else "")
          + (f", jax {jax.__version__}" if jax is not None else "")
          + f"; trials {args.trials}, budget {args.budget:g} s per workload; tables: median over {args.rounds} "
            f"rounds of (idle 0.4 s, warm-up, median of {args.repeat})")
    rows, notes = [], []
    for key in args.only.split(","):
        work = WORKLOADS[key]()
        with kd.settings.override(use_records=False):
            f = kd.build(work.inputs, work.outputs)
        check(work.name, f(*work.args), work.want)
        if not args.skip_tune:
            res = kd.tune(f, work.args, trials=args.trials, time_budget_s=args.budget, reference=work.reference)
            print(res, flush=True)
            if args.plots:
                os.makedirs(args.plots, exist_ok=True)
                res.plot(os.path.join(args.plots, f"tune_{key}.png"), title=f"{work.name}: {res.strategy}")
            notes.append(f"{work.name}: {len(res.history)} trials ({len(res.failures)} failed) in "
                         f"{res.wall_seconds:.0f} s; best [{res.best.choices if res.best else '-'}]")
        second = subprocess.run([sys.executable, __file__, "--replay", key], capture_output=True, text=True,
                                env=dict(os.environ), check=False)
        if second.returncode:
            raise SystemExit(f"{work.name}: the second process failed:\n{second.stderr[-3000:]}")
        rep = json.loads(second.stdout.strip().splitlines()[-1])
        notes.append(f"{work.name}: second process: warm build {1e3 * rep['build_s']:.1f} ms, tuned record "
                     f"{rep['record'] if rep['tuned'] else 'NONE'}, {rep['ms']:.3f} ms per call")
        g = kd.build(work.inputs, work.outputs)
        check(work.name, g(*work.args), work.want)
        fns = {**work.peers, "kd untuned": lambda f=f, a=work.args: f(*a), "kd tuned": lambda g=g, a=work.args: g(*a)}
        res_t = measure(fns, args.rounds, args.repeat)
        best_peer = min((t, lib) for lib, t in res_t.items() if not lib.startswith("kd"))
        rows.append((work.name, res_t))
        print(f"  {work.name}: " + ", ".join(f"{lib} {1e3 * t:.3f} ms" for lib, t in res_t.items())
              + f"; tuned vs fastest peer ({best_peer[1]}): {best_peer[0] / res_t['kd tuned']:.2f}x", flush=True)
    print()
    for name, res in rows:
        print(table("float32, " + name, [(name, res)], base="kd tuned"))
        print()
    print("\n".join(notes))


if __name__ == "__main__":
    main()
