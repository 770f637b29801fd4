"""The isolated measuring process: `python -m kerneldsl.tuning.worker`, driven by runner.py.

It reads requests from stdin and writes replies on its original stdout (anything the kernels or
libraries print goes to stderr instead), each a length-prefixed pickle. A request is
`("measure", payload_file, config_json, options)`: build the candidate (a cache hit: the tuner
compiled it), run it once and compare every output with the reference outputs, then time it:
warm-up runs, then `repeat` timed runs (more for a fast kernel, until they add up to
`min_seconds`; fewer for a slow one, past `max_seconds`). If the kernel crashes or hangs, this process dies or
is killed, and the runner records a failed trial and starts a new one.
"""

from __future__ import annotations

import os
import pickle
import struct
import sys
import time

import numpy as np

HEADER = struct.Struct("<Q")


def read_message(stream):
    head = stream.read(HEADER.size)
    if len(head) < HEADER.size:
        return None
    (n,) = HEADER.unpack(head)
    return pickle.loads(stream.read(n))


def write_message(stream, obj) -> None:
    body = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(HEADER.pack(len(body)) + body)
    stream.flush()


def compare(got, expected) -> str | None:
    """None when every output matches the reference, else what differs."""
    if len(got) != len(expected):
        return f"{len(got)} outputs, the reference has {len(expected)}"
    for k, (g, e) in enumerate(zip(got, expected)):
        g = np.asarray(g)
        if g.shape != e.shape or g.dtype != e.dtype:
            return f"output {k} is {g.dtype}{g.shape}, the reference {e.dtype}{e.shape}"
        if e.dtype.kind != "f":
            if not np.array_equal(g, e):
                return f"output {k} differs from the reference at {int(np.count_nonzero(g != e))} element(s)"
            continue
        if not np.array_equal(np.isnan(g), np.isnan(e)):
            return f"output {k} has NaNs where the reference has none (or the other way round)"
        finite = np.isfinite(e)
        if not np.array_equal(g[~finite & ~np.isnan(e)], e[~finite & ~np.isnan(e)]):
            return f"output {k} has other infinities than the reference"
        if finite.any():
            scale = max(1.0, float(np.abs(e[finite]).max()))
            err = float(np.abs(g[finite].astype(np.float64) - e[finite]).max())
            tol = (1e-3 if e.dtype == np.float32 else 1e-9) * scale
            if err > tol:
                return f"output {k} differs from the reference by {err:.3g} (allowed {tol:.3g})"
    return None


def on_device(target, arrays):
    """For a real GPU: the inputs on the device and a synchronize, so that the timings are the
    kernels' (outputs stay on the device too), through CuPy or else PyCUDA; on the CPU and the
    emulator: the arrays as they are."""
    if target.kind != "cuda":
        return list(arrays), lambda: None
    try:
        import cupy
        return [cupy.asarray(a) for a in arrays], cupy.cuda.Device().synchronize
    except ImportError:
        pass
    try:
        import pycuda.driver as drv
        from pycuda import gpuarray
        return [gpuarray.to_gpu(a) for a in arrays], drv.Context.synchronize
    except ImportError:  # no driver module: kd.build would have failed before this
        return list(arrays), lambda: None


def others_running() -> int:
    """Threads of other processes running or ready to run now, from /proc/loadavg (0 where there is
    none): the tuner's own are held off by the machine lock, so these are someone else's, and a
    multi-threaded candidate timed beside them is penalised more than a single-threaded one."""
    counts = []
    for _ in range(3):  # this process's threads (the reader, an OpenMP team still spinning) read on both
        before = _own_running()  # sides of the load, which they may enter or leave between the reads
        try:
            with open("/proc/loadavg", encoding="ascii") as f:
                running = int(f.read().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            return 0
        counts.append(max(0, running - max(1, before, _own_running())))
    return min(counts)


def _own_running() -> int:
    """This process's threads running or ready to run (an OpenMP team still spinning after a kernel)."""
    n = 0
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/stat", encoding="ascii", errors="replace") as f:
                n += f.read().rsplit(")", 1)[1].split()[0] == "R"
    except (OSError, IndexError):
        return 1
    return n


def measure(path: str, config_json: str, options: dict) -> dict:
    from ..pipeline import build
    from ..runtime.build import stats
    from . import payload
    w = payload.load(path)
    before = stats.compiles
    f = build(list(w.inputs), list(w.outputs), config=config_json)
    compiled_here = stats.compiles > before
    got = f(*w.arrays)
    got = list(got) if isinstance(got, tuple) else [got]
    wrong = compare(got, w.expected)
    if wrong is not None:
        return {"error": f"wrong result: {wrong}"}
    args, sync = on_device(w.target, w.arrays)
    busy = others_running()
    for _ in range(options.get("warmup", 1)):
        f(*args)
    sync()
    start = time.perf_counter()
    budget_end = start + options.get("max_seconds", 1e9)
    repeat, min_end = options.get("repeat", 5), start + options.get("min_seconds", 0.0)
    max_runs = max(repeat, options.get("max_runs", repeat))
    gap = options.get("gap_s", 0.0)
    timings = []
    while len(timings) < repeat or (time.perf_counter() < min_end and len(timings) < max_runs):
        if gap:
            time.sleep(gap)
        t0 = time.perf_counter()
        f(*args)
        sync()
        timings.append(time.perf_counter() - t0)
        if time.perf_counter() > budget_end and len(timings) >= 2:
            break  # a slow candidate: a few runs say enough
    busy = max(busy, others_running())
    return {"timings": timings, "compiled_here": compiled_here, "busy": busy}


def main() -> None:
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # kernels or libraries printing cannot corrupt the replies
    sys.stdout = sys.stderr
    inp = sys.stdin.buffer
    write_message(out, ("ready", os.getpid()))
    while True:
        msg = read_message(inp)
        if msg is None or msg[0] == "exit":
            return
        if msg[0] == "measure":
            _, path, config_json, options = msg
            try:
                reply = measure(path, config_json, options)
            except Exception as e:  # noqa: BLE001 - any failure of a candidate is a failed trial, reported
                reply = {"error": f"{type(e).__name__}: {e}"}
            write_message(out, reply)
        elif msg[0] == "crash":  # the runner's tests: a process that dies in the middle of a request
            os.abort()
        elif msg[0] == "hang":
            time.sleep(3600)


if __name__ == "__main__":
    main()
