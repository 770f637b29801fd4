"""Tutorial 8: autotuning a matmul and a softmax, and using the records from a new process.

Run: python tutorials/08_autotune.py [--trials 16]

`kd.tune(f, args)` searches the Configs of the kernels of `f` (template knobs, mutations of the
default loop nests), measures each candidate in an isolated process (a crash or a hang is a
failed trial, not a crashed tuner), and stores every trial in the tuning database
(KERNELDSL_TUNING_DB; by default beside the kernel cache). Any later `kd.build` of the same graph,
in any process, runs the best record for its input shapes. The timings here are short runs on
whatever machine this is: read the ratios, not the milliseconds.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

import kerneldsl as kd


def matmul_graph():
    n, m, k = kd.sizes("n m k")
    A = kd.placeholder((n, k), name="A")
    B = kd.placeholder((k, m), name="B")
    r = kd.reduce_axis(k, name="r")
    C = kd.compute((n, m), lambda i, j: kd.sum(A[i, r] * B[r, j], axis=r), name="C")
    return [A, B], [C]


def softmax_graph():
    rows, cols = kd.sizes("rows cols")
    X = kd.placeholder((rows, cols), name="X")
    k = kd.reduce_axis(cols, name="k")
    mx = kd.compute((rows,), lambda i: kd.max(X[i, k], axis=k), name="mx")
    den = kd.compute((rows,), lambda i: kd.sum(kd.exp(X[i, k] - mx[i]), axis=k), name="den")
    sm = kd.compute((rows, cols), lambda i, j: kd.exp(X[i, j] - mx[i]) / den[i], name="softmax")
    return [X], [sm]


rng = np.random.default_rng(0)
ARGS = {"matmul": (rng.standard_normal((384, 384), dtype=np.float32),
                   rng.standard_normal((384, 384), dtype=np.float32)),
        "softmax": (rng.standard_normal((2048, 1000), dtype=np.float32),)}
GRAPHS = {"matmul": matmul_graph, "softmax": softmax_graph}


def best_ms(fn, repeat=7):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * min(times)


def tune_here(trials: int) -> None:
    for name, graph in GRAPHS.items():
        inputs, outputs = graph()
        f = kd.build(inputs, outputs)
        print(f"\n== tuning {name}: {f.kernels[0].template} template, default knobs")
        # the progress bar (tqdm) shows trials, failures and the best time so far
        res = kd.tune(f, ARGS[name], trials=trials, time_budget_s=120)
        print(res)
        plot = os.path.join(tempfile.gettempdir(), f"kerneldsl_tune_{name}.png")
        try:
            res.plot(plot)  # the convergence plot: every trial and the best so far
            print(f"convergence plot: {plot}")
        except ImportError as e:  # matplotlib is the `plot` extra
            print(f"(no plot: {e})")
        print("the best record's Config:")
        print(res.best.config)


def use_records_in_a_new_process() -> None:
    """What a fresh process sees: a warm build that picks the record, no measurement."""
    for name, graph in GRAPHS.items():
        inputs, outputs = graph()
        args = ARGS[name]
        t0 = time.perf_counter()
        g = kd.build(inputs, outputs)  # symbolic sizes: dispatches on the call's shapes
        out = g(*args)  # the first call builds the tuned variant of these shapes (a cache hit)
        first = time.perf_counter() - t0
        with kd.settings.override(use_records=False):
            f = kd.build(inputs, outputs)  # the default schedule, records ignored
        np.testing.assert_allclose(out, f(*args), rtol=1e-3, atol=1e-4)
        print(f"\n== {name} in a new process: build + first call {1e3 * first:.0f} ms")
        print(f"   {str(g.config).splitlines()[0]}")
        before = best_ms(lambda f=f, args=args: f(*args))
        after = best_ms(lambda g=g, args=args: g(*args))
        print(f"   default {before:.3f} ms -> tuned {after:.3f} ms ({before / after:.2f}x)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--after", action="store_true", help="only the new-process part")
    opts = ap.parse_args()
    if opts.after:
        use_records_in_a_new_process()
    else:
        print(f"tuning database: {kd.tuning.Database().path}")
        tune_here(opts.trials)
        subprocess.run([sys.executable, os.path.abspath(__file__), "--after"], check=True)
        print("\n`python -m kerneldsl tune list` shows the records.")
