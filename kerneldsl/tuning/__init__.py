"""Autotuning: `kd.tune` searches a workload's Configs, measures them in isolated processes,
stores every trial in SQLite, and every later build uses the best record (dispatch.py).

    res = kd.tune(f, (a, b), trials=200, time_budget_s=600, strategy="evolutionary", executor=None)

The modules, in the order a run uses them: workload.py (what a record is keyed by), space.py
(the dimensions, from the default Config), search.py + cost_model.py + features.py (what to
measure next), payload.py + serialize.py (the workload for the workers), executors.py (threads,
any Executor, Dask), measure.py + machine_lock.py + runner.py + worker.py (build, then time in
isolation), records.py (SQLite), tuner.py (the loop and its result), progress.py, plot.py,
cli.py (`python -m kerneldsl tune ...`). This package is not named `tune`: a submodule
`kerneldsl.tune` would replace the function `kd.tune` once imported.
"""

import importlib

# Loaded on first use (PEP 562): a build that only reads records imports dispatch.py and what it
# needs, not the tuner's search, measurement and executors.
_LAZY = {"ShapeDispatch": "dispatch", "TunedConfig": "dispatch", "lookup": "dispatch", "MeasureOptions": "measure",
         "Database": "records", "Record": "records", "Trial": "tuner", "TuneResult": "tuner", "tune": "tuner"}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'kerneldsl.tuning' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["Database", "MeasureOptions", "Record", "ShapeDispatch", "Trial", "TuneResult", "TunedConfig", "tune"]
