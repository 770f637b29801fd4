"""Distributed tuning on a dask.distributed LocalCluster of two workers: builds spread over both,
records flow back to the caller's database, and a worker killed in the middle of the run costs
no record and hangs nothing."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

import kerneldsl as kd
from kerneldsl.tuning import Database, MeasureOptions

distributed = pytest.importorskip("distributed", reason="distributed tuning needs the `tune` extra (dask)")

QUICK = MeasureOptions(warmup=1, repeat=2, idle_s=0.0, timeout_s=60.0)


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    monkeypatch.setenv("KERNELDSL_TUNING_DB", str(tmp_path / "tuning.sqlite"))
    monkeypatch.setenv("KERNELDSL_USE_RECORDS", "1")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=40, worker_dashboard_address=None) as c, distributed.Client(c) as client:
        yield c, client


def graph():
    n = kd.size("n")
    x = kd.placeholder((n,), name="x")
    return [x], [kd.compute((n,), lambda i: kd.tanh(x[i]) + 1.0, name="y")]


def test_two_workers_build_and_measure_and_records_flow_back(cluster):
    _, client = cluster
    ins, outs = graph()
    x = np.random.default_rng(0).standard_normal(4000, dtype=np.float32)
    res = kd.tune(kd.build(ins, outs), (x,), trials=6, executor=client, measure=QUICK, progress=False)
    assert len(res.history) == 6 and res.best is not None, [t.error for t in res.history]
    assert len(Database().trials(res.key)) == 6
    pids = set(client.run(os.getpid).values())
    assert len(pids) == 2


def test_a_worker_killed_during_tuning_loses_no_record(cluster):
    _, client = cluster
    ins, outs = graph()
    x = np.random.default_rng(1).standard_normal(4000, dtype=np.float32)
    db = Database()
    victim = next(iter(client.run(os.getpid).items()))  # (address, pid)

    def kill_when_started():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if db.exists() and db.all():
                break
            time.sleep(0.05)
        os.kill(victim[1], signal.SIGKILL)

    killer = threading.Thread(target=kill_when_started, daemon=True)
    killer.start()
    res = kd.tune(kd.build(ins, outs), (x,), trials=10, executor=client, measure=QUICK, progress=False,
                  batch=4)
    killer.join(10)
    assert len(res.history) == 10
    for t in res.history:  # each trial measured, or recorded as lost with its worker
        assert t.ok or t.error.startswith("lost"), t.error
    assert len(db.trials(res.key)) == 10
    assert res.best is not None
