"""Distributed tuning: the same build-bound trials on a Dask LocalCluster of one worker, then two.

Run: python benchmarks/bench_tune_dask.py [--trials 24] [--size 128]

A small matmul (its GEMM template compiles in ~1 s; a run takes microseconds) is tuned with the
random strategy and a fixed seed, so both runs measure the same candidates. Each run gets an empty
kernel cache of its own (set before its cluster starts: the workers inherit it), so every trial
really compiles, and an empty records file. Prints each run's wall time, and whether every trial
came back to the caller's database (no lost record).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import kerneldsl as kd
from kerneldsl.tuning import Database, MeasureOptions


def run(workers: int, trials: int, size: int) -> tuple[float, int, int]:
    from distributed import Client, LocalCluster
    root = tempfile.mkdtemp(prefix=f"kd-dask{workers}-")
    os.environ["KERNELDSL_CACHE"] = os.path.join(root, "cache")
    db = Database(os.path.join(root, "records.sqlite"))
    n, m, k = kd.sizes("n m k")
    A = kd.placeholder((n, k), name="A")
    B = kd.placeholder((k, m), name="B")
    r = kd.reduce_axis(k, name="r")
    C = kd.compute((n, m), lambda i, j: kd.sum(A[i, r] * B[r, j], axis=r), name="C")
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((size, size), dtype=np.float32) for _ in range(2))
    with kd.settings.override(use_records=False):
        f = kd.build([A, B], [C])
    with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None, silence_logs=40) as cluster, \
            Client(cluster) as client:
        t0 = time.perf_counter()
        res = kd.tune(f, (a, b), trials=trials, strategy="random", seed=0, executor=client, database=db,
                      measure=MeasureOptions(repeat=3, idle_s=0.05), progress=False, batch=2 * workers)
        wall = time.perf_counter() - t0
    return wall, len(res.history), len(db.trials(res.key))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--size", type=int, default=128)
    args = ap.parse_args()
    print(f"matmul {args.size}^3, {args.trials} random trials (seed 0), each with an empty cache; "
          f"{os.cpu_count()} cores")
    rows = {}
    for workers in (1, 2):
        wall, trials, stored = run(workers, args.trials, args.size)
        rows[workers] = wall
        print(f"  {workers} worker(s): {wall:.1f} s wall, {trials} trials, {stored} records stored "
              f"({'none lost' if stored == trials == args.trials else 'LOST RECORDS'})", flush=True)
    print(f"two workers vs one: {rows[1] / rows[2]:.2f}x faster")


if __name__ == "__main__":
    main()
