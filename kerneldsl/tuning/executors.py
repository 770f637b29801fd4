"""Where trials run: this machine's threads, any concurrent.futures.Executor, or a Dask cluster.

    ex = Execution.of(None, target)          # threads on this machine, one per core
    ex = Execution.of(ProcessPoolExecutor())  # any Executor: the workload's bytes travel with each task
    ex = Execution.of(client)                 # a dask.distributed.Client, or "tcp://host:8786"
    futures = [ex.submit(candidate) for candidate in batch]
    for fut, result in ex.results(futures, stall_s=600): ...

Every task is `measure.run_trial`: it builds on the worker (under the machine's shared lock) and
times in an isolated process there (under the machine's exclusive lock), so builds spread over
every worker and timings stay one at a time per machine. With Dask the workload is scattered
to every worker once; a worker that dies takes its running tasks along, which Dask retries on
another worker (its `allowed-failures`); a task that fails for good, or that nothing finishes
for `stall_s` seconds, comes back as a failed trial: the search goes on and nothing hangs.
"""

from __future__ import annotations

import concurrent.futures as cf
import traceback

from .measure import Candidate, MeasureOptions, TrialResult, run_trial
from .payload import Payload


def is_dask_client(x) -> bool:
    return type(x).__module__.split(".")[0] == "distributed" and hasattr(x, "scatter") and hasattr(x, "submit")


class Execution:
    """Submits trials and collects their results, whatever runs them."""

    def __init__(self, payload: Payload, options: MeasureOptions) -> None:
        self.payload, self.options = payload, options
        self.workers = 1
        self.owned = False

    @staticmethod
    def of(executor, payload: Payload, options: MeasureOptions, cores: int) -> Execution:
        if executor is None:
            return LocalThreads(payload, options, cores)
        if isinstance(executor, str):
            return DaskExecution.connect(executor, payload, options)
        if is_dask_client(executor):
            return DaskExecution(executor, payload, options)
        if isinstance(executor, cf.Executor):
            return ExecutorExecution(executor, payload, options)
        raise TypeError(f"executor= takes None (this machine), a concurrent.futures.Executor, a "
                        f"dask.distributed.Client or a scheduler address ('tcp://host:8786'); got "
                        f"{type(executor).__name__}")

    def submit(self, candidate: Candidate):
        raise NotImplementedError

    def results(self, futures: dict, stall_s: float):
        """(candidate, TrialResult) as trials finish; a lost or stuck task gives a failed TrialResult."""
        pending = dict(futures)
        while pending:
            try:
                for fut in self._as_completed(list(pending), stall_s):
                    cand = pending.pop(fut)
                    yield cand, self._result(fut, cand)
            except cf.TimeoutError:
                for fut, cand in list(pending.items()):
                    fut.cancel()
                    yield cand, TrialResult(cand.index, cand.config, error=f"lost: no trial finished for "
                                            f"{stall_s:g} s (workers gone?); cancelled")
                pending.clear()

    def _as_completed(self, futures, timeout):
        return cf.as_completed(futures, timeout=timeout)

    def _result(self, fut, cand: Candidate) -> TrialResult:
        try:
            return fut.result()
        except Exception as e:  # noqa: BLE001 - a task lost with its worker, or killed: a failed trial
            name = type(e).__name__
            return TrialResult(cand.index, cand.config, error=f"lost: {name}: {e}".strip())

    def close(self) -> None:
        pass


class LocalThreads(Execution):
    """Threads of this process, one per core: builds run side by side (the compiler is a process),
    each thread keeps its own isolated measuring process."""

    def __init__(self, payload: Payload, options: MeasureOptions, cores: int) -> None:
        super().__init__(payload.without_data(), options)
        self.workers = max(1, cores)
        self.pool = cf.ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="kerneldsl-tune")
        self.owned = True

    def submit(self, candidate: Candidate):
        return self.pool.submit(run_trial, self.payload, candidate, self.options)

    def close(self) -> None:
        from .runner import close_all
        self.pool.shutdown(wait=True)
        close_all()


class ExecutorExecution(Execution):
    """Any concurrent.futures.Executor; the workload's bytes travel with each task (a worker that
    is not on this machine writes them to its own temporary folder once)."""

    def __init__(self, executor: cf.Executor, payload: Payload, options: MeasureOptions) -> None:
        local = isinstance(executor, cf.ThreadPoolExecutor)
        super().__init__(payload.without_data() if local else payload.with_data(), options)
        self.executor = executor
        self.workers = getattr(executor, "_max_workers", 2)

    def submit(self, candidate: Candidate):
        return self.executor.submit(run_trial, self.payload, candidate, self.options)


class DaskExecution(Execution):
    """A dask.distributed cluster: the workload is scattered to every worker once."""

    def __init__(self, client, payload: Payload, options: MeasureOptions, owned: bool = False) -> None:
        super().__init__(payload, options)
        self.client = client
        self.owned = owned
        self.remote = client.scatter(payload.with_data(), broadcast=True)
        info = client.scheduler_info()
        self.workers = max(1, sum(w.get("nthreads", 1) for w in info.get("workers", {}).values()))

    @staticmethod
    def connect(address: str, payload: Payload, options: MeasureOptions) -> DaskExecution:
        try:
            from distributed import Client
        except ImportError:
            raise ImportError("executor='tcp://...' needs Dask: pip install 'kerneldsl[tune]' "
                              "(dask[distributed])") from None
        return DaskExecution(Client(address), payload, options, owned=True)

    def submit(self, candidate: Candidate):
        return self.client.submit(run_trial, self.remote, candidate, self.options, pure=False,
                                  key=f"kerneldsl-trial-{self.payload.digest}-{candidate.index}-{id(self)}")

    def _as_completed(self, futures, timeout):
        from distributed import as_completed, wait
        done = wait(futures, timeout=timeout, return_when="FIRST_COMPLETED")
        if not done.done:
            raise cf.TimeoutError
        return as_completed(list(done.done))

    def _result(self, fut, cand: Candidate) -> TrialResult:
        try:
            return fut.result()
        except Exception as e:  # noqa: BLE001 - KilledWorker (a worker died with it too often), ...
            msg = "".join(traceback.format_exception_only(type(e), e)).strip()
            return TrialResult(cand.index, cand.config, error=f"lost: {msg}")

    def close(self) -> None:
        if self.owned:
            self.client.close()


__all__ = ["Execution", "is_dask_client"]
