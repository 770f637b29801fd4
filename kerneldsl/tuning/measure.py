"""One trial, where an executor runs it: build the candidate, then time it in isolation.

    result = run_trial(payload, candidate, options)      # a plain function: any executor can run it

1. build: `kd.build(..., config=candidate)` in this process, under the machine's shared lock,
   so builds of several candidates run side by side (the compiler is a process of its own; a
   bad candidate raises here, it cannot crash us);
2. time: under the machine's exclusive lock (one candidate timed per machine, no build running
   beside it), after an idle pause, in this thread's isolated process (runner.py): the build is
   a cache hit there, the outputs are compared with the reference, then warm-up and repeats.
"""

from __future__ import annotations

import socket
import statistics
import time
from dataclasses import dataclass, field

from . import machine_lock, payload
from .runner import runner_for_this_thread


@dataclass(frozen=True)
class MeasureOptions:
    warmup: int = 1  # untimed runs first (caches, page faults, thread pools)
    repeat: int = 5  # timed runs; the trial's time is their median (see statistic)
    idle_s: float = 0.1  # pause before timing: the previous candidate's threads settle
    timeout_s: float = 30.0  # per candidate, its build in the isolated process included
    max_seconds: float = 2.0  # stop repeating a slow candidate after this long (at least 2 runs)
    # keep repeating a fast candidate until its runs add up to this long (at most max_runs runs): on a
    # loaded machine a 0.2 ms kernel can lose every one of 5 runs to a neighbour, rarely all of 50 ms
    min_seconds: float = 0.05
    max_runs: int = 200
    # the trial's time from its runs: "median" (default: what a call costs as the kernel will be
    # used; the fastest of back-to-back runs favours configs that stall beside other work) or "min"
    statistic: str = "median"
    # a pause between timed runs, as a kernel has between its calls in a program: the threads of
    # its pool go back to sleep, so a config pays for waking them as it will in use
    gap_s: float = 0.002

    def as_dict(self) -> dict:
        return {"warmup": self.warmup, "repeat": self.repeat, "max_seconds": self.max_seconds,
                "min_seconds": self.min_seconds, "max_runs": self.max_runs, "gap_s": self.gap_s}


@dataclass(frozen=True)
class Candidate:
    index: int  # its place in the search: trial number
    config: str  # the Config's JSON
    point: tuple = ()  # its coordinates in the search space (for the cost model)


@dataclass(frozen=True)
class TrialResult:
    index: int
    config: str
    timings: tuple = ()
    error: str | None = None
    build_seconds: float | None = None
    host: str = field(default_factory=socket.gethostname)
    isolation: str | None = None  # "crash" / "timeout" / "start" when the isolated process failed
    statistic: str = "median"
    busy: int = 0  # other processes' threads running while it was timed (worker.others_running)

    @property
    def seconds(self) -> float | None:
        if not self.timings or self.error is not None:
            return None
        return min(self.timings) if self.statistic == "min" else statistics.median(self.timings)

    @property
    def ok(self) -> bool:
        return self.seconds is not None


def build_candidate(w: payload.LoadedWorkload, config: str):
    from ..pipeline import build
    return build(list(w.inputs), list(w.outputs), config=config)


def run_trial(p: payload.Payload, candidate: Candidate, options: MeasureOptions) -> TrialResult:
    """Build then time one candidate; every failure is a TrialResult with its error, never an exception."""
    t0 = time.perf_counter()
    try:
        w = payload.load(p)
        with machine_lock.building():
            build_candidate(w, candidate.config)
    except Exception as e:  # noqa: BLE001 - a candidate that does not build is a failed trial
        return TrialResult(candidate.index, candidate.config, error=f"build: {type(e).__name__}: {e}",
                           build_seconds=time.perf_counter() - t0)
    built = time.perf_counter() - t0
    with machine_lock.timing():
        time.sleep(options.idle_s)
        reply = runner_for_this_thread().request(("measure", w.path, candidate.config, options.as_dict()),
                                                 options.timeout_s)
    if "error" in reply:
        return TrialResult(candidate.index, candidate.config, error=reply["error"], build_seconds=built,
                           isolation=reply.get("isolation"))
    return TrialResult(candidate.index, candidate.config, tuple(reply["timings"]), build_seconds=built,
                       statistic=options.statistic, busy=int(reply.get("busy", 0)))


__all__ = ["Candidate", "MeasureOptions", "TrialResult", "run_trial"]
