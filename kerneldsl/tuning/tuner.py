"""kd.tune: search a workload's Configs, measure them in isolation, keep the records.

    f = kd.build([A, B], [C])
    res = kd.tune(f, (a, b), trials=200, time_budget_s=600, strategy="evolutionary", executor=None)
    res.best.config, res.best.seconds, res.history, res.plot("tune.png")
    g = kd.build([A, B], [C])            # here or in a new process: runs res.best.config at these shapes

One run: the search space from the default Config (space.py), the reference outputs of the
given arguments (the reference interpreter, once), the workload written once for the workers
(payload.py); then batches of candidates from the strategy (search.py), each built and timed
where the executor runs it (measure.py, executors.py), every trial stored in the database as it
comes back (records.py), until `trials` are done or `time_budget_s` has passed.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..schedule.config import Config
from ..schedule.schedule import Schedule
from ..shapes import as_input_array, bind_sizes
from . import dispatch  # noqa: F401 - registers the records' lookup: builds after kd.tune use them
from .executors import Execution
from .measure import Candidate, MeasureOptions
from .payload import Payload, discard
from .progress import Progress
from .records import Database, Record
from .search import make_strategy
from .space import SearchSpace
from .workload import RecordKey, Workload, shapes_of


class EmulatorTimings(UserWarning):
    """Timings on target cuda-emu measure the CPU emulator, not a GPU."""


class BusyMachine(UserWarning):
    """Many trials were timed while other processes ran: the timings favour fewer threads."""


BUSY_WARNING = 0.25  # the share of busy trials above which the result says so


@dataclass(frozen=True)
class Trial:
    index: int
    config: Config
    seconds: float | None  # from the timed runs (MeasureOptions.statistic); None when the trial failed
    error: str | None = None
    choices: str = ""  # what differs from the default schedule ("C.tile=(8, 32), C.kc=256")
    build_seconds: float | None = None
    elapsed: float = 0.0  # seconds from the start of the run to this trial's result
    host: str = ""
    timings: tuple = ()
    busy: int = 0  # threads of other processes running when it was timed (0: the machine was quiet)

    @property
    def ok(self) -> bool:
        return self.seconds is not None

    def __str__(self) -> str:
        what = f"{1e3 * self.seconds:.4f} ms" if self.ok else f"failed ({self.error})"
        return f"trial {self.index}: {what}  [{self.choices}]"


@dataclass
class TuneResult:
    key: RecordKey
    summary: str
    strategy: str
    history: list = field(default_factory=list)
    meaningful: bool = True  # False on cuda-emu: the times say nothing about a GPU
    database: str = ""
    wall_seconds: float = 0.0
    rejected: int = 0  # points the primitives refused: never built
    space_size: int = 0

    @property
    def best(self) -> Trial | None:
        ok = [t for t in self.history if t.ok]
        return min(ok, key=lambda t: (t.seconds, t.index)) if ok else None

    @property
    def default(self) -> Trial | None:
        """The default schedule's trial (always measured first)."""
        return next((t for t in self.history if t.choices == "default"), None)

    @property
    def failures(self) -> list:
        return [t for t in self.history if not t.ok]

    @property
    def busy(self) -> float:
        """The share of measured trials timed while other processes ran on the machine."""
        ok = [t for t in self.history if t.ok]
        return sum(t.busy > 0 for t in ok) / len(ok) if ok else 0.0

    @property
    def speedup(self) -> float | None:
        d, b = self.default, self.best
        return d.seconds / b.seconds if d is not None and d.ok and b is not None else None

    def plot(self, path, title: str | None = None) -> str:
        """The convergence plot (matplotlib): each trial's time and the best so far."""
        from .plot import convergence
        return convergence([(self.strategy, self)], path, title)

    def __str__(self) -> str:
        b = self.best
        lines = [(f"tuned {self.summary}: {len(self.history)} trials ({len(self.failures)} failed) in "
                  f"{self.wall_seconds:.1f} s, {self.strategy} search of {self.space_size} points")]
        if not self.meaningful:
            lines.append("timings measured on the CUDA emulator: they say nothing about a GPU")
        if self.busy >= BUSY_WARNING:
            lines.append(f"{100 * self.busy:.0f}% of the trials were timed while other processes ran: "
                         f"multi-threaded candidates were penalised")
        if self.default is not None and self.default.ok:
            lines.append(f"default: {1e3 * self.default.seconds:.4f} ms")
        if b is not None:
            sp = f" ({self.speedup:.2f}x the default)" if self.speedup else ""
            lines.append(f"best:    {1e3 * b.seconds:.4f} ms{sp}  [{b.choices}]")
        return "\n".join(lines)


def default_config(f) -> Config:
    """The default schedule of a function's graph on its target (not a tuned record's)."""
    cfg = f.config
    return Schedule(list(f.outputs), list(f.inputs), None, cfg.fuse, cfg.target).config


def _arrays(f, args) -> list:
    if len(args) != len(f.inputs):
        raise TypeError(f"tune: the function takes {len(f.inputs)} input(s) "
                        f"({', '.join(p.name for p in f.inputs)}), got {len(args)} argument(s)")
    arrays = [np.ascontiguousarray(as_input_array(a, p)) for a, p in zip(args, f.inputs)]
    bind_sizes(f.inputs, arrays)  # the ShapeError / DTypeError a call would raise
    return arrays


def tune(f, args, trials: int = 200, time_budget_s: float = 600.0, strategy: str = "evolutionary",
         executor=None, *, database=None, measure: MeasureOptions | None = None, batch: int | None = None,
         seed: int = 0, progress: bool = True, reference=None) -> TuneResult:
    """Tune the kernels of `f` (a kd.build function) for the arguments `args` (numpy arrays).

    trials / time_budget_s: stop after that many trials or seconds (whichever comes first).
    strategy: "evolutionary" (cost-model guided) or "random". executor: None (this machine's
    cores), a concurrent.futures.Executor, a dask.distributed.Client or a scheduler address.
    database: a records file (default KERNELDSL_TUNING_DB). measure: MeasureOptions (repeats,
    idle pause, timeout). reference: the expected outputs (default: the reference interpreter
    on `args`). Every trial is stored as it finishes; later builds use the best."""
    from ..reference import evaluate
    t_start = time.monotonic()
    options = measure or MeasureOptions()
    arrays = _arrays(f, args)
    base = default_config(f)
    target = base.target
    work = Workload.of(f.inputs, f.outputs, base.fuse)
    key = RecordKey.of(work, shapes_of(arrays), target)
    meaningful = target.kind != "cuda-emu"
    if not meaningful:
        warnings.warn(("tuning on target cuda-emu: builds, isolation and records run end to end, but the "
                       "timings are the CPU emulator's and say nothing about a GPU; the records are stored as "
                       "not meaningful (only cuda-emu builds use them). Tune on target 'cuda' with a GPU."),
                      EmulatorTimings, stacklevel=2)
    if reference is None:
        expected = evaluate(list(f.outputs), dict(zip(f.inputs, arrays)))
    else:
        expected = [np.asarray(r) for r in (reference if isinstance(reference, (list, tuple)) else [reference])]
    space = SearchSpace.of(f.inputs, f.outputs, base, bind_sizes(f.inputs, arrays))
    search = make_strategy(strategy, space, seed)
    db = database if isinstance(database, Database) else Database(database)
    payload = Payload.make(f.inputs, f.outputs, arrays, expected, target, base.fuse)
    execution = Execution.of(executor, payload, options, target.cores)
    size = batch or max(2, 2 * execution.workers)
    result = TuneResult(key, work.summary, strategy, meaningful=meaningful, database=str(db.path),
                        space_size=space.size)
    bar = Progress(trials, f"tune {work.summary[:40]}", progress)
    stall = max(120.0, 4 * options.timeout_s)
    index = 0
    try:
        while index < trials and time.monotonic() - t_start < time_budget_s:
            proposals = search.propose(min(size, trials - index))
            if not proposals:
                break  # the space is exhausted
            futures = {}
            for point, cfg in proposals:
                cand = Candidate(index, cfg.to_json(), point)
                futures[execution.submit(cand)] = cand
                index += 1
            records, measured = [], []
            for cand, r in execution.results(futures, stall):
                trial = Trial(cand.index, Config.from_json(cand.config), r.seconds, r.error,
                              space.describe(cand.point), r.build_seconds, time.monotonic() - t_start, r.host,
                              r.timings, getattr(r, "busy", 0))
                result.history.append(trial)
                bar.trial(trial.ok, trial.seconds)
                records.append(Record(key, work.summary, cand.config, r.seconds, r.timings, r.error, meaningful,
                                      r.build_seconds, r.host))
                measured.append((cand.point, r.seconds))
            db.add(records)
            search.update(measured)
    finally:
        execution.close()
        bar.close()
        discard(payload)
    result.history.sort(key=lambda t: t.index)
    result.wall_seconds = time.monotonic() - t_start
    result.rejected = search.rejected
    if result.best is None and result.history:
        warnings.warn(f"tune: every trial failed; the first error: {result.history[0].error}", stacklevel=2)
    elif result.busy >= BUSY_WARNING and meaningful:
        warnings.warn(BusyMachine(f"tune: {100 * result.busy:.0f}% of the trials were timed while other processes "
                                  f"ran on this machine; their threads compete with the candidate's, so the "
                                  f"records favour fewer threads than an idle machine would. Tune on a quiet "
                                  f"machine for records that other runs should use."), stacklevel=2)
    return result


def geometric_mean(xs) -> float:
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


__all__ = ["BusyMachine", "EmulatorTimings", "Trial", "TuneResult", "default_config", "tune"]
