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
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}; {blas_kernel()}"


def blas_kernel() -> str:
    """The kernel numpy's OpenBLAS runs (threadpoolctl), and whether the environment holds it back:
    OPENBLAS_CORETYPE=Haswell keeps an AVX-512 machine on AVX2 kernels; unset it (and
    OPENBLAS_L2_SIZE) in the benchmark's command for numpy's own kernel."""
    held = [v for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if os.environ.get(v)]
    try:
        import numpy  # noqa: F401 - loads OpenBLAS
        from threadpoolctl import threadpool_info
        kernels = [f"{d['internal_api']} {d.get('architecture')}" for d in threadpool_info()
                   if d.get("user_api") == "blas"]
    except ImportError:
        kernels = ["(threadpoolctl not installed)"]
    note = f" (held by {', '.join(held)})" if held else " (its own choice)"
    return f"numpy BLAS: {', '.join(kernels) or 'none found'}{note}"


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
