"""Builds use the records: every default `kd.build` (and so `kd.function`) asks the database.

    g = kd.build([A, B], [C])     # concrete shapes: built from the best record, if there is one
    g(a, b)                       # symbolic sizes: the record matching these shapes, compiled once
    g.config                      # a TunedConfig naming the record the last call used (or the default)

pipeline.build calls `lookup` for builds given neither a schedule nor a config. This module
registers it when imported: by kd.tune, or by the first build of a process that finds a records
file (pipeline._record_lookup), so `import kerneldsl` never loads the tuner. No database file, or
KERNELDSL_USE_RECORDS=0: nothing happens. Otherwise the workload's records in this environment
(target, compiler, kerneldsl version) are read once:

- a graph of concrete shapes has one key: the best record's Config is built instead of the default;
- a graph with symbolic sizes serves every shape: the build returns a `ShapeDispatch`, which
  runs the default function unless a call's input shapes have a record, whose variant is built
  on first use and kept (Triton's autotuner `key=`).

A record's Config is replayed on this machine's target (its steps and fusion flag; the target
it was measured on only has to match the key).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from ..pipeline import register_record_lookup
from ..schedule.config import Config
from ..settings import settings
from ..target import Target
from .records import Database, Record
from .workload import RecordKey, Workload


@dataclass(frozen=True)
class TunedConfig(Config):
    """A Config that came from a tuning record: `record` is its row in `database`."""
    record: int | None = None
    seconds: float | None = None  # what the record measured
    database: str = ""

    @staticmethod
    def of(config: Config, rec: Record, database: str) -> TunedConfig:
        return TunedConfig(config.target, config.steps, config.fuse, rec.id, rec.seconds, database)

    def __str__(self) -> str:
        shown = f"{1e3 * self.seconds:.4f} ms" if self.seconds is not None else "?"
        return f"tuning record {self.record} of {self.database} (measured {shown})\n" + super().__str__()


def _replayed(rec: Record, target: Target) -> Config:
    cfg = Config.from_json(rec.config)
    return Config(target, cfg.steps, cfg.fuse)


def lookup(inputs, outputs, target, fuse: bool, make):
    """The function a default build should return given the records, or None for the default.
    `make(config)` builds a Config (None: the default schedule) without asking again."""
    if not settings.use_records:
        return None
    db = Database()
    if not db.exists():
        return None
    target = Target.resolve(target)
    work = Workload.of(inputs, outputs, fuse)
    key = RecordKey.of(work, (), target)
    records = _best_by_shapes(db, key, target.kind != "cuda-emu")
    if not records:
        return None
    if not work.symbolic:
        rec = next(iter(records.values()))  # concrete shapes: the environment has one shape
        fn = make(_replayed(rec, target))
        fn.config = TunedConfig.of(fn.config, rec, str(db.path))
        return fn
    return ShapeDispatch(records, target, str(db.path), make)


_read: dict = {}  # (file, environment, meaningful) -> (the file's stamp, {shapes: record})


def _stamp(path) -> tuple:
    """What changes when the database does: the file's and its write-ahead log's size and time."""
    out = []
    for p in (str(path), str(path) + "-wal"):
        try:
            st = os.stat(p)
            out.append((st.st_size, st.st_mtime_ns))
        except OSError:
            out.append(None)
    return tuple(out)


def _best_by_shapes(db: Database, key: RecordKey, meaningful: bool) -> dict:
    """db.best_by_shapes, read again only when the file changed (a process building many kernels
    reads each workload's records once, not once per build)."""
    k = (str(db.path), key.environment, meaningful)
    stamp = _stamp(db.path)
    got = _read.get(k)
    if got is None or got[0] != stamp:
        got = _read[k] = (stamp, db.best_by_shapes(key, meaningful=meaningful))
    return got[1]


class ShapeDispatch:
    """A function of symbolic sizes with tuned variants: each call runs the variant tuned for its
    input shapes, else the default function, each built on first use. Attributes other than
    `config` and `record` are the last-called function's (`module`, `source`, `kernels`, ...)."""

    def __init__(self, records: dict, target: Target, database: str, make) -> None:
        self._records, self._target, self._database, self._make = records, target, database, make
        self._variants: dict = {}  # shapes -> function; None -> the default function
        self._lock = threading.Lock()
        self._last = None  # the function the last call ran (before any call: the default)
        self._keep_temps = False
        self.record: Record | None = None  # the record the last call used (None: the default)

    def _build(self, shapes):
        """The function for `shapes` (None: the default), built once (a cache hit after tuning)."""
        fn = self._variants.get(shapes)
        if fn is None:
            with self._lock:
                fn = self._variants.get(shapes)
                if fn is None:
                    if shapes is None:
                        fn = self._make(None)
                    else:
                        rec = self._records[shapes]
                        fn = self._make(_replayed(rec, self._target))
                        fn.config = TunedConfig.of(fn.config, rec, self._database)
                    if self._keep_temps:
                        fn.keep_temps = True
                    self._variants[shapes] = fn
        return fn

    @property
    def keep_temps(self) -> bool:
        """Set: every variant keeps its last call's temporaries (kd.function's DEBUG mode)."""
        return self._keep_temps

    @keep_temps.setter
    def keep_temps(self, value: bool) -> None:
        self._keep_temps = bool(value)
        for fn in list(self._variants.values()):
            fn.keep_temps = self._keep_temps

    def fast_call(self, returns: int, convert=None):
        """The C call path of each variant (Function.fast_call), chosen per call by the input shapes."""
        paths: dict = {}

        def call(*args, out=None):
            try:
                shapes = tuple(a.shape for a in args)
            except AttributeError:
                import numpy as np
                shapes = tuple(np.shape(a) for a in args)
            path = paths.get(shapes)
            if path is None:
                fn, rec = self.variant(shapes)
                fc = fn.fast_call(returns, convert) if hasattr(fn, "fast_call") else None
                if fc is None:
                    def fc(*a, out=None, fn=fn):
                        r = fn(*a, out=out)
                        return convert(r) if convert is not None else r
                path = paths[shapes] = (fc, fn, rec)
            self._last, self.record = path[1], path[2]
            return path[0](*args, out=out)
        return call

    @property
    def _current(self):
        return self._last if self._last is not None else self._build(None)

    @property
    def config(self) -> Config:
        return self._current.config

    @property
    def tuned_shapes(self) -> tuple:
        """The input shapes that have a tuned variant."""
        return tuple(self._records)

    def variant(self, shapes: tuple):
        """The function that runs calls of these input shapes."""
        rec = self._records.get(shapes)
        return self._build(shapes if rec is not None else None), rec

    def __call__(self, *args, **kwargs):
        try:
            shapes = tuple(a.shape for a in args)
        except AttributeError:  # a list or a scalar: its shape as numpy sees it
            import numpy as np
            shapes = tuple(np.shape(a) for a in args)
        fn, rec = self.variant(shapes)
        self._last, self.record = fn, rec
        return fn(*args, **kwargs)

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._current, name)

    def __repr__(self) -> str:
        return f"<tuned {self._current!r}: variants for {len(self._records)} shape(s)>"


register_record_lookup(lookup)  # every default build from now on asks the records

__all__ = ["ShapeDispatch", "TunedConfig", "lookup"]
