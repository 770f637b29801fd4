"""kd.tune: the workload key, the search space, isolated measurement, records, and builds that
use them. Small shapes and a handful of trials: these tests check behaviour, never speed."""

from __future__ import annotations

import json
import multiprocessing
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
from conftest import matmul

import kerneldsl as kd
from kerneldsl.tuning import Database, MeasureOptions, ShapeDispatch, TunedConfig, serialize
from kerneldsl.tuning.runner import IsolatedRunner
from kerneldsl.tuning.search import make_strategy
from kerneldsl.tuning.space import SearchSpace
from kerneldsl.tuning.workload import RecordKey, Workload, structural_hash

QUICK = MeasureOptions(warmup=1, repeat=2, idle_s=0.0, timeout_s=60.0)


@pytest.fixture
def db(tmp_path, monkeypatch):
    """A records file of this test's own (builds of other tests must not see its records)."""
    path = tmp_path / "tuning.sqlite"
    monkeypatch.setenv("KERNELDSL_TUNING_DB", str(path))
    monkeypatch.setenv("KERNELDSL_USE_RECORDS", "1")  # the suite turns records off elsewhere (conftest)
    return Database(path)


def exp_graph():
    n = kd.size("n")
    x = kd.placeholder((n,), name="x")
    return [x], [kd.compute((n,), lambda i: kd.exp(x[i]) * 2.0, name="y")]


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


# --- the workload key ----------------------------------------------------------------------------

def test_structural_hash_ignores_names_but_not_structure():
    A, B, C = matmul()
    n, m, k = kd.sizes("p q s")
    X = kd.placeholder((n, k), name="X")
    W = kd.placeholder((k, m), name="W")
    r = kd.reduce_axis(k, name="red")
    Y = kd.compute((n, m), lambda a, b: kd.sum(X[a, r] * W[r, b], axis=r), name="Y")
    assert structural_hash([A, B], [C]) == structural_hash([X, W], [Y])
    assert structural_hash([A, B], [C]) != structural_hash([B, A], [C])  # the input order is part of it
    Z = kd.compute((n, m), lambda a, b: kd.sum(X[a, r] + W[r, b], axis=r), name="Y")
    assert structural_hash([X, W], [Y]) != structural_hash([X, W], [Z])
    assert structural_hash([X, W], [Y], fuse=False) != structural_hash([X, W], [Y])


def test_record_key_separates_shapes_and_targets():
    ins, outs = exp_graph()
    w = Workload.of(ins, outs)
    t = kd.Target.detect("c")
    a, b = RecordKey.of(w, ((8,),), t), RecordKey.of(w, ((9,),), t)
    assert a.digest != b.digest and a.environment == b.environment
    other = RecordKey.of(w, ((8,),), t.with_kind("cuda-emu"))
    assert other.digest != a.digest and other.environment != a.environment


def test_a_graph_travels_as_bytes_and_builds_the_same_kernel():
    A, B, C = matmul()
    ins, outs = serialize.loads(serialize.dumps(([A, B], [C])))
    assert structural_hash(ins, outs) == structural_hash([A, B], [C])
    assert kd.build(ins, outs).source == kd.build([A, B], [C]).source
    # in a fresh process too: the same source, so a tuner's build is the worker's cache hit
    code = ("import sys, kerneldsl as kd; from kerneldsl.tuning import serialize; "
            "ins, outs = serialize.loads(sys.stdin.buffer.read()); print(kd.build(ins, outs).config.digest())")
    out = subprocess.run([sys.executable, "-c", code], input=serialize.dumps(([A, B], [C])), capture_output=True,
                         check=True).stdout.decode().strip()
    assert out == kd.build([A, B], [C]).config.digest()


# --- the search space ------------------------------------------------------------------------------

def test_gemm_space_has_the_template_knobs_and_every_point_is_legal_or_refused():
    A, B, C = matmul()
    f = kd.build([A, B], [C])
    space = SearchSpace.of(f.inputs, f.outputs, f.config)
    names = {d.name for d in space.dims}
    assert {"tile", "kc", "mc", "nc", "threads"} <= names
    assert space.config(space.default_point()).to_json() == f.config.to_json()
    s = make_strategy("random", space, seed=1)
    for point, cfg in s.propose(12):
        replayed = kd.schedule([C], [A, B], trace=cfg.trace)  # the steps replay through the primitives
        assert replayed.config.to_json() == cfg.to_json()


def test_loop_nest_space_mutates_the_default_trace():
    ins, outs = exp_graph()
    f = kd.build(ins, outs)
    space = SearchSpace.of(ins, outs, f.config)
    names = {d.name for d in space.dims}
    assert {"loop.split", "parallel_min_work"} <= names
    split = next(k for k, d in enumerate(space.dims) if d.name == "loop.split")
    p = list(space.default_point())
    p[split] = space.dims[split].values.index(16)
    steps = [s["primitive"] for s in space.config(tuple(p)).steps]
    assert steps.count("split") == 1 and "vectorize" in steps
    g = kd.build(ins, outs, config=space.config(tuple(p)))
    x = rand(1000)
    np.testing.assert_allclose(g(x), np.exp(x) * 2, rtol=1e-6)


# --- isolated measurement --------------------------------------------------------------------------

def test_the_runner_survives_a_crash_and_a_hang():
    r = IsolatedRunner()
    try:
        crash = r.request(("crash",), timeout=60)
        assert crash["isolation"] == "crash" and "SIGABRT" in crash["error"]
        hang = r.request(("hang",), timeout=1.0)
        assert hang["isolation"] == "timeout" and "timed out" in hang["error"]
        assert r.restarts == 2
    finally:
        r.close()


# --- a whole run -------------------------------------------------------------------------------------

def test_tune_records_every_trial_and_builds_then_use_the_best(db):
    ins, outs = exp_graph()
    f = kd.build(ins, outs)
    x = rand(5000)
    res = kd.tune(f, (x,), trials=5, strategy="evolutionary", measure=QUICK, progress=False)
    assert len(res.history) == 5 and res.history[0].choices == "default"
    assert res.best is not None and res.best.seconds > 0
    assert res.best.config.to_json() == min((t for t in res.history if t.ok), key=lambda t: t.seconds).config.to_json()
    assert len(db.trials(res.key)) == 5
    # a later build asks the records: symbolic sizes dispatch on the call's shapes
    g = kd.build(ins, outs)
    assert isinstance(g, ShapeDispatch)
    np.testing.assert_allclose(g(x), np.exp(x) * 2, rtol=1e-6)
    assert isinstance(g.config, TunedConfig) and g.config.record == db.best(res.key).id
    assert f"record {g.config.record}" in str(g.config)
    y = rand(77)
    np.testing.assert_allclose(g(y), np.exp(y) * 2, rtol=1e-6)
    assert not isinstance(g.config, TunedConfig) and g.record is None  # no record for these shapes
    with kd.settings.override(use_records=False):
        assert not isinstance(kd.build(ins, outs), ShapeDispatch)


def test_concrete_shapes_build_the_record_directly(db):
    x = kd.placeholder((64, 48), name="x")
    y = kd.compute((64, 48), lambda i, j: kd.exp(x[i, j]), name="y")
    f = kd.build([x], [y])
    res = kd.tune(f, (rand(64, 48),), trials=3, strategy="random", measure=QUICK, progress=False)
    g = kd.build([x], [y])
    assert isinstance(g.config, TunedConfig) and g.config.steps == res.best.config.steps


NEW_PROCESS = """
import sys, time
import kerneldsl as kd
x = kd.placeholder((64, 48), name="x")
y = kd.compute((64, 48), lambda i, j: kd.exp(x[i, j]), name="y")
t0 = time.perf_counter()
g = kd.build([x], [y])
print(type(g.config).__name__, getattr(g.config, "record", None), "kerneldsl.tuning.tuner" in sys.modules,
      "kerneldsl.tuning" in sys.modules, time.perf_counter() - t0)
"""


def _in_new_process(db_path) -> list:
    import os
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "KERNELDSL_TUNING_DB": str(db_path), "KERNELDSL_USE_RECORDS": "1", "PYTHONPATH": str(root)}
    out = subprocess.run([sys.executable, "-c", NEW_PROCESS], capture_output=True, text=True, env=env, cwd=root,
                         check=True).stdout
    return out.split()


def test_a_new_process_builds_from_the_records_without_loading_the_tuner(db):
    x = kd.placeholder((64, 48), name="x")
    y = kd.compute((64, 48), lambda i, j: kd.exp(x[i, j]), name="y")
    res = kd.tune(kd.build([x], [y]), (rand(64, 48),), trials=2, strategy="random", measure=QUICK, progress=False)
    kind, record, tuner_loaded, _, _ = _in_new_process(db.path)
    assert (kind, int(record), tuner_loaded) == ("TunedConfig", db.best(res.key).id, "False")


def test_without_a_records_file_builds_never_load_the_tuning_package(tmp_path):
    kind, _, _, tuning_loaded, _ = _in_new_process(tmp_path / "none.sqlite")
    assert (kind, tuning_loaded) == ("Config", "False")


def test_a_wrong_result_is_a_failed_trial(db):
    ins, outs = exp_graph()
    f = kd.build(ins, outs)
    x = rand(100)
    with pytest.warns(UserWarning, match="every trial failed"):
        res = kd.tune(f, (x,), trials=2, measure=QUICK, progress=False, reference=[np.zeros(100, np.float32)])
    assert res.best is None and all("wrong result" in t.error for t in res.history)
    assert not isinstance(kd.build(ins, outs), ShapeDispatch)  # failed trials are never used


def test_a_hanging_kernel_is_killed_and_recorded(db):
    n = kd.size("n")
    x = kd.placeholder((n,), name="x")
    r = kd.reduce_axis(n * n * n, name="r")
    y = kd.compute((n,), lambda i: kd.sum(x[r % n] * 1.0001, axis=r), name="y")  # n^4 steps: hangs at n=4000
    f = kd.build([x], [y])
    opts = MeasureOptions(warmup=0, repeat=1, idle_s=0.0, timeout_s=1.0)
    with pytest.warns(UserWarning, match="every trial failed"):
        res = kd.tune(f, (rand(4000),), trials=2, measure=opts, progress=False,
                      reference=[np.zeros(4000, np.float32)])
    assert [t.error for t in res.history] == ["timed out after 1 s (killed)"] * 2
    assert len(db.trials(res.key)) == 2


def test_any_concurrent_futures_executor(db):
    from concurrent.futures import ProcessPoolExecutor
    ins, outs = exp_graph()
    f = kd.build(ins, outs)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as ex:
        res = kd.tune(f, (rand(3000),), trials=4, executor=ex, measure=QUICK, progress=False)
    assert len(res.history) == 4 and res.best is not None
    assert len(db.trials(res.key)) == 4


def test_concurrent_writers_lose_no_record(tmp_path):
    path = tmp_path / "shared.sqlite"
    procs = [multiprocessing.get_context("spawn").Process(target=_write_records, args=(str(path), w))
             for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert len(Database(path).all()) == 3 * 20


def _write_records(path: str, worker: int) -> None:
    from kerneldsl.tuning.records import Record
    ins, outs = exp_graph()
    key = RecordKey.of(Workload.of(ins, outs), ((worker,),), kd.Target.detect("c"))
    db = Database(path)
    for k in range(20):
        db.add([Record(key, "y", "{}", 1e-3 * (k + 1))])


# --- the command line, the plot ------------------------------------------------------------------------

def test_command_line_lists_shows_exports_imports_and_prunes(db, tmp_path):
    ins, outs = exp_graph()
    res = kd.tune(kd.build(ins, outs), (rand(2000),), trials=3, strategy="random", measure=QUICK, progress=False)
    env = {"KERNELDSL_TUNING_DB": str(db.path)}

    def cli(*args):
        import os
        r = subprocess.run([sys.executable, "-m", "kerneldsl", "tune", *args], capture_output=True, text=True,
                           env={**os.environ, **env}, check=False)
        assert r.returncode == 0, r.stderr
        return r.stdout

    assert res.key.digest[:12] in cli("list")
    best = db.best(res.key)
    assert json.loads(cli("show", str(best.id)).split("\n", 1)[1])["seconds"] == best.seconds
    out = tmp_path / "records.jsonl"
    cli("export", str(out), "--best")
    assert len(out.read_text().splitlines()) == 1
    assert "removed 2 record(s)" in cli("prune")
    cli("import", str(out))
    assert len(db.trials(res.key)) == 2


def test_convergence_plot(db, tmp_path):
    pytest.importorskip("matplotlib")
    ins, outs = exp_graph()
    res = kd.tune(kd.build(ins, outs), (rand(2000),), trials=3, measure=QUICK, progress=False)
    png = tmp_path / "tune.png"
    res.plot(png)
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.skipif(shutil.which("g++") is None, reason="the CUDA emulator needs g++")
def test_emulator_tuning_runs_end_to_end_and_says_timings_are_meaningless(db):
    ins, outs = exp_graph()
    f = kd.build(ins, outs, target="cuda-emu")
    x = rand(3000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = kd.tune(f, (x,), trials=3, strategy="random", measure=QUICK, progress=False)
    assert any("say nothing about a GPU" in str(w.message) for w in caught)
    assert res.meaningful is False and res.best is not None
    assert {d.name for d in SearchSpace.of(ins, outs, f.config).dims} >= {"threads_per_block", "max_blocks"}
    assert all(not r.meaningful for r in db.trials(res.key))
    g = kd.build(ins, outs, target="cuda-emu")  # emulator builds use emulator records
    np.testing.assert_allclose(g(x), np.exp(x) * 2, rtol=1e-5)
    assert isinstance(g.config, TunedConfig)
    assert not isinstance(kd.build(ins, outs), ShapeDispatch)  # C builds do not


def test_kd_function_uses_the_records_too(db):
    import kerneldsl.numpy as knp
    x = kd.vector("x")
    y = knp.exp(x) * 2.0
    f = kd.build([x], [y])
    v = rand(3000)
    res = kd.tune(f, (v,), trials=3, strategy="random", measure=QUICK, progress=False)
    fn = kd.function([x], y)
    np.testing.assert_allclose(fn(v), np.exp(v) * 2, rtol=1e-6)
    assert isinstance(fn.config, TunedConfig) and fn.config.record == db.best(res.key).id


def test_the_busy_count_leaves_out_this_process_s_own_running_threads():
    """An OpenMP team still spinning after a kernel is this process's, not another's load."""
    import sys
    import threading

    from kerneldsl.tuning import worker
    if not sys.platform.startswith("linux"):
        pytest.skip("/proc is Linux's")
    stop = threading.Event()
    a = np.ones(1 << 20)

    def work():  # numpy's loops run without the GIL: this thread stays runnable beside the reader
        while not stop.is_set():
            np.sqrt(a, out=a)
    spin = threading.Thread(target=work)
    spin.start()
    try:
        seen = max(worker._own_running() for _ in range(200))
    finally:
        stop.set()
        spin.join()
    assert seen >= 2  # the reading thread and the spinning one


def test_an_exhausted_space_stops_the_evolutionary_search_instead_of_crashing():
    pytest.importorskip("lightgbm")  # the cost model: the guided path breeds from the model's elite
    import itertools
    import random
    ins, outs = exp_graph()
    space = SearchSpace.of(ins, outs, kd.build(ins, outs).config)
    s = make_strategy("evolutionary", space, seed=0)
    points = list(itertools.product(*[range(len(d.values)) for d in space.dims]))
    rng = random.Random(0)
    s.seen.update(points)
    s.update([(p, 1e-3 * (1 + rng.random())) for p in points])  # every point measured
    assert s.model is not None and s.model.model is not None
    assert s.propose(12) == []  # nothing left: tune's loop stops with what it measured
