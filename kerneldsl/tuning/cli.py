"""`python -m kerneldsl tune ...`: the tuning records from the command line.

    python -m kerneldsl tune list [--db FILE]                 one line per workload, shape and target
    python -m kerneldsl tune show ID                          a record: its key, times and Config
    python -m kerneldsl tune export [FILE] [--best] [--workload PREFIX]   JSON lines (stdout without FILE)
    python -m kerneldsl tune import FILE...                   JSON lines into the database
    python -m kerneldsl tune prune [--keep N] [--keep-failed] [--other-versions]
"""

from __future__ import annotations

import argparse
import json
import sys

from ..runtime.cache import kerneldsl_version
from .records import Database, TuningDatabaseError


def _shapes(text: str) -> str:
    return " ".join("x".join(map(str, s)) or "()" for s in json.loads(text))


def cmd_list(db: Database, args) -> int:
    rows = db.summary()
    if not rows:
        print(f"no tuning records in {db.path}")
        return 0
    print(f"{'key':12}  {'best':>12}  {'trials':>6}  {'failed':>6}  {'target':16}  shapes  workload")
    for r in rows:
        t = json.loads(r["target"])
        best = "-" if r["best"] is None else f"{1e3 * r['best']:.4f} ms"
        where = f"{t['kind']}/{t['isa']}x{t['cores']}" + ("" if r["m"] else " (emu)")
        print(f"{r['key'][:12]}  {best:>12}  {r['trials']:>6}  {r['failed']:>6}  {where:16}  "
              f"{_shapes(r['shapes'])}  {r['summary']}")
    return 0


def cmd_show(db: Database, args) -> int:
    rec = db.get(args.id)
    if rec is None:
        print(f"no record {args.id} in {db.path}; `python -m kerneldsl tune list` shows the keys and "
              f"`export` the ids", file=sys.stderr)
        return 1
    print(rec)
    print(json.dumps({**rec.to_dict(), "config": json.loads(rec.config)}, indent=2, sort_keys=True))
    return 0


def cmd_export(db: Database, args) -> int:
    if args.file:
        with open(args.file, "w", encoding="utf-8") as out:
            n = db.export(out, args.workload, args.best)
    else:
        n = db.export(sys.stdout, args.workload, args.best)
    print(f"exported {n} record(s)", file=sys.stderr)
    return 0


def cmd_import(db: Database, args) -> int:
    total = 0
    for name in args.files:
        with open(name, encoding="utf-8") as f:
            total += db.import_lines(f)
    print(f"imported {total} record(s) into {db.path}")
    return 0


def cmd_prune(db: Database, args) -> int:
    n = db.prune(keep=args.keep, failed=not args.keep_failed, older_versions=args.other_versions,
                 current_version=kerneldsl_version())
    print(f"removed {n} record(s) from {db.path}")
    return 0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m kerneldsl tune", description="kerneldsl's tuning records")
    ap.add_argument("--db", help="the records file (default: $KERNELDSL_TUNING_DB, else beside the cache)")
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="one line per workload, shapes and target: trials and the best time")
    p = sub.add_parser("show", help="one record: its key, timings and Config")
    p.add_argument("id", type=int)
    p = sub.add_parser("export", help="records as JSON lines")
    p.add_argument("file", nargs="?", help="output file (default: stdout)")
    p.add_argument("--best", action="store_true", help="only the best record of each key")
    p.add_argument("--workload", help="only workloads whose hash starts with this")
    p = sub.add_parser("import", help="JSON lines (from export) into the database")
    p.add_argument("files", nargs="+")
    p = sub.add_parser("prune", help="keep the best records of each key, drop failed trials")
    p.add_argument("--keep", type=int, default=1, help="successful records kept per key (default 1)")
    p.add_argument("--keep-failed", action="store_true", help="keep the failed trials too")
    p.add_argument("--other-versions", action="store_true", help="drop records of other kerneldsl versions")
    return ap


COMMANDS = {"list": cmd_list, "show": cmd_show, "export": cmd_export, "import": cmd_import, "prune": cmd_prune}


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    db = Database(args.db)
    try:
        return COMMANDS[args.command](db, args)
    except TuningDatabaseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


__all__ = ["main"]
