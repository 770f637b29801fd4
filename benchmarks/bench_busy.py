"""Kernels beside other work: a training step, an elementwise loop, a dense and a conv layer timed
idle, beside busy processes, and beside numpy's OpenBLAS in the same process, with the default
threads against one thread (OMP_NUM_THREADS=1, each in its own process, the two back to back per
condition, rounds interleaved).

Run: python benchmarks/bench_busy.py [--calls 300] [--rounds 2]

The aim (issue: threads under load): no kernel far below its one-thread speed on a busy machine.
Per-call times are printed as median / 90th percentile / worst, in microseconds, with the share of
calls that ran on all threads (each module picks one thread or all per call: templates/c/team.h).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import time

import numpy as np

CONDITIONS = ("idle", "1 busy process", "2 busy processes", "numpy matmul between calls")


def _spin(stop):
    while not stop.is_set():
        pass


def workloads():
    import kerneldsl as kd
    import kerneldsl.numpy as knp
    import kerneldsl.nn.functional  # noqa: F401
    import kerneldsl.nn as nn
    rng = np.random.default_rng(0)
    out = {}
    from bench_function import logreg_step
    step = logreg_step()  # the Theano paper's logistic regression step (tutorials/05): 400 x 784
    X, Y = rng.standard_normal((400, 784)).astype(np.float32), rng.integers(0, 2, 400).astype(np.float32)
    out["logistic regression step"] = (lambda: step(X, Y), step)
    v = kd.vector("v")
    ex = kd.function([v], knp.exp(v))
    V = rng.standard_normal(1 << 18).astype(np.float32)
    out["exp, 262144 elements"] = (lambda: ex(V), ex)
    # a dense layer, forward and backward (as bench_layers: 128x784 @ 784x100 + bias, tanh)
    xd = kd.matrix("xd")
    W = kd.shared(rng.standard_normal((784, 100)).astype(np.float32) * 0.05, name="W", fixed_shape=True)
    bd = kd.shared(np.zeros(100, np.float32), name="bd", fixed_shape=True)
    loss = knp.sum(knp.tanh(knp.dot(xd, W) + bd))
    gW, gbd = kd.grad(loss, [W, bd])
    dense = kd.function([xd], [loss, gW, gbd])
    XD = rng.standard_normal((128, 784)).astype(np.float32)
    out["dense 128x784x100, fwd+bwd"] = (lambda: dense(XD), dense)
    # a conv layer, forward and backward: 3x3, 16 -> 32 channels, batch 16, 16x16
    xc = kd.tensor4("xc")
    K = kd.shared(rng.standard_normal((32, 16, 3, 3)).astype(np.float32) * 0.1, name="K", fixed_shape=True)
    closs = knp.sum(nn.functional.relu(nn.functional.conv2d(xc, K, padding=1)))
    gK, = kd.grad(closs, [K])
    conv = kd.function([xc], [closs, gK])
    XC = rng.standard_normal((16, 16, 16, 16)).astype(np.float32)
    out["conv 3x3 16->32, 16x16x16, fwd+bwd"] = (lambda: conv(XC), conv)
    return out


def measure(fn, calls: int, between=None) -> list:
    for _ in range(10):
        fn()
    times = []
    for _ in range(calls):
        if between is not None:
            between()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def _all_threads(f) -> tuple:
    """Calls so far on one thread and on all (the module's per-call choice, summed over sizes)."""
    rows = f.thread_choices()
    return sum(r["one"] for r in rows), sum(r["all"] for r in rows)


def child(calls: int, cond: str) -> dict:
    results = {}
    loads = workloads()
    a = np.random.default_rng(1).standard_normal((384, 384)).astype(np.float32)
    stop = multiprocessing.Event()
    n_busy = int(cond[0]) if cond[0].isdigit() else 0
    busy = [multiprocessing.Process(target=_spin, args=(stop,)) for _ in range(n_busy)]
    for p in busy:
        p.start()
    time.sleep(2.0 if busy else 0.4)  # let the scheduler see them
    between = (lambda: a @ a) if cond.startswith("numpy") else None
    for name, (fn, f) in loads.items():
        before = _all_threads(f)
        t = np.array(measure(fn, calls, between)) * 1e6
        after = _all_threads(f)
        share = (after[1] - before[1]) / max(1, sum(after) - sum(before))
        results[name] = [float(np.median(t)), float(np.percentile(t, 90)), float(t.max()), share]
    stop.set()
    for p in busy:
        p.join()
    return results


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--child", choices=CONDITIONS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.calls, args.child)))
        return
    sys.path.insert(0, os.path.dirname(__file__))
    from harness import machine
    print(f"# {machine()}; load average at start {os.getloadavg()[0]:.2f}")
    # one thread for kerneldsl only: OpenBLAS would read OMP_NUM_THREADS too, and numpy's matmul
    # beside the kernel must keep its threads in both runs
    cores = str(len(os.sched_getaffinity(0)))
    variants = (("default threads", {}), ("one thread", {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": cores}))
    runs: dict = {}
    for _ in range(args.rounds):  # each condition's two variants back to back, rounds interleaved
        for cond in CONDITIONS:
            for label, env in variants:
                out = subprocess.run([sys.executable, __file__, "--child", cond, "--calls", str(args.calls)],
                                     env={**os.environ, **env}, capture_output=True, text=True, check=True)
                for name, r in json.loads(out.stdout.strip().splitlines()[-1]).items():
                    runs.setdefault(label, {}).setdefault(name, {}).setdefault(cond, []).append(r)
    print(f"# load average at end {os.getloadavg()[0]:.2f}; per call: median / p90 / worst (us), the median "
          f"of {args.rounds} rounds")
    for name in runs["default threads"]:
        print(f"\n{name}")
        print(f"  {'condition':28s} {'default threads':>26s} {'one thread':>26s} {'median ratio':>12s} "
              f"{'calls on all threads':>20s}")
        for cond in CONDITIONS:
            d, o = (np.median(np.array(runs[v][name][cond]), axis=0) for v, _ in variants)
            fmt = lambda r: f"{r[0]:8.0f} {r[1]:8.0f} {r[2]:8.0f}"  # noqa: E731
            print(f"  {cond:28s} {fmt(d):>26s} {fmt(o):>26s} {o[0] / d[0]:11.2f}x {100 * d[3]:19.0f}%")


if __name__ == "__main__":
    main()
