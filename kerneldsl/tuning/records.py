"""Tuning records in SQLite: one row per measured candidate, found by its RecordKey.

    db = Database()                      # $KERNELDSL_TUNING_DB, else <cache root>/tuning.sqlite
    db.add([record, ...])                # one transaction; safe with other processes writing
    db.best(key)                         # the fastest successful record for exactly this key
    db.best_by_shapes(key)               # {shapes: record} for every shape tuned here (dispatch)

A record is plain data (TVM's records): the key's parts, the Config as JSON, the measured
seconds (None for a failed trial, with its error), and where it was measured. Export and
import are JSON lines of `Record.to_dict()`.

Concurrency: the database runs in WAL mode (readers never block the writer) with a busy
timeout, and every write is one short transaction, so several tuners (or a tuner and every
build reading records) share one file. A build never creates the file: no file, no lookup.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..pipeline import tuning_db_path
from .workload import RecordKey

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,            -- RecordKey.digest: workload, shapes, dtypes, target, compiler, version
    environment TEXT NOT NULL,    -- RecordKey.environment: the key without the shapes
    workload TEXT NOT NULL,
    summary TEXT NOT NULL,
    shapes TEXT NOT NULL,
    dtypes TEXT NOT NULL,
    target TEXT NOT NULL,
    compiler TEXT NOT NULL,
    version TEXT NOT NULL,
    config TEXT NOT NULL,
    seconds REAL,                 -- the timed runs' minimum (or median); NULL when the trial failed
    timings TEXT NOT NULL,        -- every timed run, seconds
    error TEXT,                   -- why the trial failed
    meaningful INTEGER NOT NULL,  -- 0: timings that say nothing about speed (the CUDA emulator)
    build_seconds REAL,
    host TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS records_key ON records (key, seconds);
CREATE INDEX IF NOT EXISTS records_env ON records (environment, seconds);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT);
"""
_COLUMNS = ("key", "environment", "workload", "summary", "shapes", "dtypes", "target", "compiler", "version",
            "config", "seconds", "timings", "error", "meaningful", "build_seconds", "host", "created")


class TuningDatabaseError(RuntimeError):
    """The tuning database cannot be read or written; the message names the file and the fix."""


def default_path() -> Path:
    """$KERNELDSL_TUNING_DB, else tuning.sqlite in the kernel cache's root folder."""
    return tuning_db_path()


@dataclass(frozen=True)
class Record:
    key: RecordKey
    summary: str
    config: str  # the Config's JSON
    seconds: float | None  # None: the trial failed (see error)
    timings: tuple = ()
    error: str | None = None
    meaningful: bool = True
    build_seconds: float | None = None
    host: str = field(default_factory=socket.gethostname)
    created: float = field(default_factory=time.time)
    id: int | None = None  # the row, once stored

    @property
    def ok(self) -> bool:
        return self.seconds is not None and self.error is None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["key"] = asdict(self.key)
        d.pop("id")
        return d

    @staticmethod
    def from_dict(d: dict) -> Record:
        k = dict(d["key"])
        key = RecordKey(k["workload"], tuple(tuple(s) for s in k["shapes"]), tuple(k["dtypes"]), dict(k["target"]),
                        k["compiler"], k["version"])
        rest = {n: d[n] for n in ("summary", "config", "seconds", "error", "meaningful", "build_seconds", "host",
                                  "created") if n in d}
        return Record(key=key, timings=tuple(d.get("timings", ())), **rest)

    def row(self) -> tuple:
        k = self.key
        return (k.digest, k.environment, k.workload, self.summary, json.dumps(k.shapes), json.dumps(k.dtypes),
                json.dumps(k.target, sort_keys=True), k.compiler, k.version, self.config, self.seconds,
                json.dumps(list(self.timings)), self.error, int(self.meaningful), self.build_seconds, self.host,
                self.created)

    @staticmethod
    def from_row(row: sqlite3.Row) -> Record:
        key = RecordKey(row["workload"], tuple(tuple(s) for s in json.loads(row["shapes"])),
                        tuple(json.loads(row["dtypes"])), json.loads(row["target"]), row["compiler"], row["version"])
        return Record(key, row["summary"], row["config"], row["seconds"], tuple(json.loads(row["timings"])),
                      row["error"], bool(row["meaningful"]), row["build_seconds"], row["host"], row["created"],
                      row["id"])

    def __str__(self) -> str:
        what = f"{1e3 * self.seconds:.4f} ms" if self.ok else f"failed: {self.error}"
        shapes = " ".join("x".join(map(str, s)) or "()" for s in self.key.shapes)
        return f"record {self.id}: {self.summary} at {shapes} on {self.key.target['kind']}/{self.key.target['isa']}: {what}"


class Database:
    """The records file. Each method opens its own connection: safe across threads and processes."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path) if path is not None else default_path()

    def exists(self) -> bool:
        return self.path.is_file()

    @contextmanager
    def _connect(self, create: bool):
        if not create and not self.exists():
            raise FileNotFoundError(self.path)
        if create:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise TuningDatabaseError(f"cannot create the folder of the tuning database {self.path}: {e}; set "
                                          f"KERNELDSL_TUNING_DB to a writable file") from None
        try:
            con = sqlite3.connect(str(self.path), timeout=60.0, isolation_level=None)
        except sqlite3.Error as e:
            raise TuningDatabaseError(f"cannot open the tuning database {self.path}: {e}; set KERNELDSL_TUNING_DB "
                                      f"to a writable file") from None
        con.row_factory = sqlite3.Row
        with closing(con):
            try:
                con.execute("PRAGMA busy_timeout = 60000")
                if create:
                    con.execute("PRAGMA journal_mode = WAL")
                    con.executescript(_SCHEMA)
                    con.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
                yield con
            except sqlite3.DatabaseError as e:
                raise TuningDatabaseError(f"the tuning database {self.path} failed: {e}; if the file is damaged, "
                                          f"move it away (records can be re-imported from an export)") from None

    # --- writing ---------------------------------------------------------------------
    def add(self, records) -> list[int]:
        """Store records in one transaction; returns their row ids."""
        records = list(records)
        if not records:
            return []
        ids = []
        with self._connect(create=True) as con:
            con.execute("BEGIN IMMEDIATE")
            try:
                for r in records:
                    cur = con.execute(f"INSERT INTO records ({', '.join(_COLUMNS)}) VALUES "
                                      f"({', '.join('?' * len(_COLUMNS))})", r.row())
                    ids.append(cur.lastrowid)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return ids

    def prune(self, keep: int = 1, failed: bool = True, older_versions: bool = False,
              current_version: str | None = None) -> int:
        """Delete all but the `keep` fastest successful records of each key, and (with `failed`)
        every failed trial; `older_versions` also drops records of other kerneldsl versions.
        Returns how many rows went."""
        if not self.exists():
            return 0
        with self._connect(create=False) as con:
            con.execute("BEGIN IMMEDIATE")
            before = con.execute("SELECT COUNT(*) FROM records").fetchone()[0]
            if failed:
                con.execute("DELETE FROM records WHERE seconds IS NULL OR error IS NOT NULL")
            con.execute("""DELETE FROM records WHERE seconds IS NOT NULL AND id NOT IN (
                               SELECT id FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY key, meaningful
                                   ORDER BY seconds, id) AS rank FROM records WHERE seconds IS NOT NULL)
                               WHERE rank <= ?)""", (keep,))
            if older_versions and current_version is not None:
                con.execute("DELETE FROM records WHERE version != ?", (current_version,))
            after = con.execute("SELECT COUNT(*) FROM records").fetchone()[0]
            con.execute("COMMIT")
        return before - after

    # --- reading ---------------------------------------------------------------------
    def _query(self, sql: str, args=()) -> list[Record]:
        if not self.exists():
            return []
        with self._connect(create=False) as con:
            return [Record.from_row(r) for r in con.execute(sql, args).fetchall()]

    def best(self, key: RecordKey, meaningful: bool = True) -> Record | None:
        got = self._query("SELECT * FROM records WHERE key = ? AND seconds IS NOT NULL AND error IS NULL "
                          "AND meaningful = ? ORDER BY seconds, id LIMIT 1", (key.digest, int(meaningful)))
        return got[0] if got else None

    def best_by_shapes(self, key: RecordKey, meaningful: bool = True) -> dict:
        """{input shapes: the fastest record} for every shape tuned in key's environment (with
        `meaningful`, only records whose timings mean something)."""
        rows = self._query("SELECT * FROM records WHERE environment = ? AND seconds IS NOT NULL AND error IS NULL "
                           "AND meaningful >= ? ORDER BY seconds DESC, id DESC", (key.environment, int(meaningful)))
        return {r.key.shapes: r for r in rows}  # ascending speed: the fastest one is written last

    def trials(self, key: RecordKey) -> list[Record]:
        return self._query("SELECT * FROM records WHERE key = ? ORDER BY id", (key.digest,))

    def get(self, record_id: int) -> Record | None:
        got = self._query("SELECT * FROM records WHERE id = ?", (record_id,))
        return got[0] if got else None

    def all(self, workload: str | None = None) -> list[Record]:
        if workload:
            return self._query("SELECT * FROM records WHERE workload LIKE ? ORDER BY id", (workload + "%",))
        return self._query("SELECT * FROM records ORDER BY id")

    def summary(self) -> list[dict]:
        """One row per key: the workload, shapes, target, trials, failures and the best time."""
        if not self.exists():
            return []
        with self._connect(create=False) as con:
            rows = con.execute("""SELECT key, workload, summary, shapes, target, version, COUNT(*) AS trials,
                                         SUM(seconds IS NULL OR error IS NOT NULL) AS failed,
                                         MIN(CASE WHEN error IS NULL THEN seconds END) AS best, MAX(meaningful) AS m
                                  FROM records GROUP BY key ORDER BY MIN(id)""").fetchall()
        return [dict(r) for r in rows]

    # --- JSON lines ------------------------------------------------------------------
    def export(self, out, workload: str | None = None, best_only: bool = False) -> int:
        n = 0
        records = self.all(workload)
        if best_only:
            best: dict = {}
            for r in records:
                if r.ok and (r.key.digest not in best or r.seconds < best[r.key.digest].seconds):
                    best[r.key.digest] = r
            records = list(best.values())
        for r in records:
            out.write(json.dumps(r.to_dict(), sort_keys=True) + "\n")
            n += 1
        return n

    def import_lines(self, lines) -> int:
        records = []
        for k, line in enumerate(lines, 1):
            if line.strip():
                try:
                    records.append(Record.from_dict(json.loads(line)))
                except (ValueError, KeyError, TypeError) as e:
                    raise TuningDatabaseError(f"line {k} is not a tuning record ({e}); records are the JSON "
                                              f"lines that `python -m kerneldsl tune export` writes") from None
        self.add(records)
        return len(records)


__all__ = ["Database", "Record", "TuningDatabaseError", "default_path"]
