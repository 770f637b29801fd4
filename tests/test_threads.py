"""Threads per call (templates/c/team.h): each call of a module runs its parallel regions on all
of OpenMP's threads or on one, whichever its recent calls of the same sizes ran faster with. The
controller is driven here with the times a call would take (no timing in the test): idle, where
all threads win; busy, where a 2-thread fork-join waits for a thread that has no core."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

import kerneldsl as kd
import kerneldsl.numpy as knp
from kerneldsl.codegen.c import environment
from kerneldsl.runtime.build import compile_c

DRIVER = """
#include <stdint.h>
#include <string.h>
#define omp_get_max_threads kd_test_max_threads
int kd_test_max_threads(void) { return 2; }
%s
static kd_team_state st;
void kd_sim(int n, const int64_t *ns_one, const int64_t *ns_all, const int64_t *meta, int n_meta, int32_t *teams)
{
    for (int i = 0; i < n; ++i) {
        const int s = kd_team_begin(&st, meta + i * n_meta, n_meta);
        teams[i] = kd_team;
        kd_team_end(&st, s, kd_team == 1 ? ns_one[i] : ns_all[i]);
    }
}
/* all threads cost `cold` on a call after a one-thread call (the pool's threads are asleep) */
void kd_sim_wake(int n, int64_t one, int64_t warm, int64_t cold, int32_t *teams)
{
    const int64_t meta = 0;
    for (int i = 0; i < n; ++i) {
        const int s = kd_team_begin(&st, &meta, 1);
        teams[i] = kd_team;
        kd_team_end(&st, s, kd_team == 1 ? one : i > 0 && teams[i - 1] == 2 ? warm : cold);
    }
}
void kd_reset(void) { memset(&st, 0, sizeof st); }
"""


@pytest.fixture(scope="module")
def sim():
    lib = compile_c(DRIVER % environment().get_template("c/team.h").render(), flags=("-O2",)).lib
    lib.kd_sim.restype = None
    p = ctypes.c_void_p
    lib.kd_sim.argtypes = (ctypes.c_int, p, p, p, ctypes.c_int, p)
    lib.kd_sim_wake.restype = None
    lib.kd_sim_wake.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, p)
    lib.kd_reset.restype = None

    def run(one, all_, sizes=None):
        one, all_ = np.ascontiguousarray(one, np.int64), np.ascontiguousarray(all_, np.int64)
        n = len(one)
        meta = np.ascontiguousarray(np.zeros((n, 1), np.int64) if sizes is None else sizes, np.int64)
        teams = np.zeros(n, np.int32)
        lib.kd_sim(n, one.ctypes.data, all_.ctypes.data, meta.ctypes.data, meta.shape[1], teams.ctypes.data)
        return teams
    yield lib, run


def test_an_idle_machine_runs_on_all_threads_and_tries_one_thread_ever_more_rarely(sim):
    lib, run = sim
    lib.kd_reset()
    teams = run(np.full(4000, 180), np.full(4000, 100))
    assert (teams[10:] == 2).mean() > 0.99
    assert (teams[2000:] == 1).sum() <= 4  # the tries (two calls each) back off to one in 1024 calls


def test_a_busy_machine_runs_on_one_thread(sim):
    lib, run = sim
    lib.kd_reset()
    teams = run(np.full(4000, 180), np.full(4000, 5000))  # a 2-thread call waits for a core
    assert (teams[10:] == 1).mean() > 0.99
    assert (teams[2000:] == 2).sum() <= 4


def test_the_choice_follows_the_machine_when_it_changes(sim):
    lib, run = sim
    lib.kd_reset()
    n = 6000
    one, all_ = np.full(n, 180), np.full(n, 100)
    all_[2000:4000] = 5000  # another process starts at call 2000 and stops at 4000
    teams = run(one, all_)
    assert (teams[2000:2008] == 2).sum() <= 6 and (teams[2008:4000] == 1).mean() > 0.99  # within a few calls
    back = np.flatnonzero(teams[4000:] == 2)
    assert back.size and back[0] <= 1024  # at the next probe, at most 1024 calls later
    assert (teams[4000 + back[0] + 1:] == 2).mean() > 0.99


def test_a_slow_call_now_and_then_does_not_flip_the_choice(sim):
    lib, run = sim
    lib.kd_reset()
    all_ = np.full(4000, 150)
    all_[50::40] = 3000  # every 40th call on all threads waits for a thread woken late
    teams = run(np.full(4000, 280), all_)
    assert (teams[20:] == 2).mean() > 0.99


def test_a_try_is_not_judged_by_the_call_that_wakes_the_threads(sim):
    lib, _ = sim
    lib.kd_reset()
    teams = np.zeros(3000, np.int32)
    lib.kd_sim_wake(3000, 180, 100, 400, teams.ctypes.data)  # waking the pool costs 300 us once
    assert (teams[100:] == 2).mean() > 0.99


def test_each_size_signature_keeps_its_own_choice(sim):
    lib, run = sim
    lib.kd_reset()
    n = 4000
    sizes = np.tile([[64], [4096]], (n // 2, 1))  # small calls lose on threads, big ones win
    one = np.where(sizes[:, 0] == 64, 5, 900)
    all_ = np.where(sizes[:, 0] == 64, 40, 500)
    teams = run(one, all_, sizes)
    small, big = teams[100::2], teams[101::2]
    assert (small == 1).mean() > 0.99 and (big == 2).mean() > 0.99


def test_a_module_reports_its_choices():
    v = kd.vector("v")
    f = kd.function([v], knp.exp(v))
    x = np.ones(1 << 17, np.float32)
    for _ in range(20):
        f(x)
    rows = f.thread_choices()
    import os
    if len(os.sched_getaffinity(0)) < 2:
        assert rows == []  # one core: nothing to choose
        return
    assert len(rows) == 1 and rows[0]["one"] + rows[0]["all"] == 20
    assert rows[0]["us_all"] is not None and rows[0]["us_one"] is not None
    small = kd.function([v], v + 1)  # below the parallel threshold still has a parallel loop
    assert isinstance(small.thread_choices(), list)
    assert kd.function([], knp.asarray(np.float32(1))).thread_choices() == []
