"""Timing helpers shared by the benchmarks: warm up, idle, median of repeats, ratio tables."""

from __future__ import annotations

import os
import platform
import statistics
import time


def timeit(fn, repeat: int = 7, number: int = 1, warmup: int = 2, idle: float = 0.4) -> float:
    """Median seconds per call. Idles first: BLAS threads of a previous library keep spinning."""
    time.sleep(idle)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - t0) / number)
    return statistics.median(times)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def table(title: str, rows: list[tuple[str, dict]], base: str = "numpy") -> str:
    """rows: (workload, {library: seconds}); ratio column is base_time / time (higher is faster)."""
    libs = []
    for _, res in rows:
        for k in res:
            if k not in libs:
                libs.append(k)
    head = f"| {title} | " + " | ".join(f"{lib} (ms)" for lib in libs) + " | " + " | ".join(
        f"{lib} vs {base}" for lib in libs if lib != base) + " |"
    lines = [head, "|" + "---|" * (1 + len(libs) + len([x for x in libs if x != base]))]
    for name, res in rows:
        cells = [f"{1e3 * res[lib]:.3f}" if lib in res else "-" for lib in libs]
        ratios = [f"{res[base] / res[lib]:.2f}x" if lib in res and base in res else "-"
                  for lib in libs if lib != base]
        lines.append(f"| {name} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    return "\n".join(lines)
