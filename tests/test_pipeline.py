"""The middle end: one pipeline of named passes, a Target, one Config per build, templates as
schedule steps with their knobs, and printing that shows what runs."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from conftest import assert_same, cuda_targets, matmul, rng

import kerneldsl as kd
from kerneldsl.pipeline import PASSES


def softmax():
    n, m = kd.sizes("rows cols")
    X = kd.placeholder((n, m), name="X")
    r = kd.reduce_axis(m, name="c")
    mx = kd.compute((n,), lambda i: kd.max(X[i, r], axis=r), name="mx")
    den = kd.compute((n,), lambda i: kd.sum(kd.exp(X[i, r] - mx[i]), axis=r), name="den")
    return X, kd.compute((n, m), lambda i, j: kd.exp(X[i, j] - mx[i]) / den[i], name="sm")


# --- a user schedule on a contraction: the template is kept, or a clear error ---------------------

def test_loop_primitive_on_a_gemm_kernel_is_refused_with_the_way_out():
    A, B, C = matmul()
    s = kd.schedule(C)
    assert s.kernel("C").template == "gemm"
    i = s.loops(C)[0]
    with pytest.raises(kd.ScheduleError, match=r"runs the gemm template.*s.knobs\('C'.*s.template\('C', 'loops'\)"):
        s.parallel(i)
    assert s.kernel("C").template == "gemm"  # nothing changed: the template still runs


def test_template_and_knobs_are_schedule_steps():
    A, B, C = matmul()
    s = kd.schedule(C)
    s.knobs(C, kc=64, mc=s.kernel("C").knobs["mr"] * 3)
    f = kd.build([A, B], [C], schedule=s)
    assert "KC=64" in f.source and f.kernels[0].knobs["kc"] == 64
    s.template(C, "loops")
    i, j, r = s.loops(C)
    s.split(j, 8)
    f = kd.build([A, B], [C], schedule=s)
    assert "GEMM template" not in f.source and f.kernels[0].template == "loops"
    a, b = rng(0).standard_normal((9, 7), dtype=np.float32), rng(1).standard_normal((7, 13), dtype=np.float32)
    assert_same(f(a, b), a @ b, rtol=1e-5, atol=1e-5)
    with pytest.raises(kd.ScheduleError, match="has no knob"):
        s.knobs(C, kc=64)  # the loops template has no GEMM knobs
    with pytest.raises(kd.ScheduleError, match="nr=.*multiple of the vector lanes"):
        s.template(C, "gemm", nr=3)


def test_a_template_that_cannot_run_the_kernel_says_why():
    X, sm = softmax()
    s = kd.schedule(sm)
    with pytest.raises(kd.ScheduleError, match="not a contraction"):
        s.template(sm, "gemm")
    with pytest.raises(kd.ScheduleError, match="no template 'row_reduce' for target c"):
        s.template(sm, "row_reduce")


# --- printing shows what runs -------------------------------------------------------------------

def test_printing_a_gemm_kernel_shows_the_gemm_that_runs():
    A, B, C = matmul()
    s = kd.schedule(C)
    text = str(s)
    assert "# template gemm: mr=" in text and "pack B[pc:pc+" in text and "register tile" in text
    assert "below M*N*K = 4096, or M or N below 4, the loop nest" in text  # the fallback for small work
    f = kd.build([A, B], [C])
    assert str(f.module) == text
    (k,) = f.kernels
    assert k.summary().startswith("C: gemm (mr=") and len(repr(k)) < 400
    assert str(k).startswith("# C: gemm") and "pack A" in str(k)


def test_printing_a_loop_kernel_shows_its_marks_and_threads():
    X, sm = softmax()
    f = kd.build([X], [sm])
    (k,) = f.kernels
    assert k.template == "loops" and k.fused == ("den", "mx")
    assert "loop i over" in k.summary() and "when rows * (6 * cols + 2) >= 32768" in k.summary()
    assert "for i in range(rows):  # parallel" in str(k)
    assert "if ((s_rows * ((INT64_C(6) * s_cols) + INT64_C(2))) >= 32768)" in f.source  # the same estimate


@pytest.mark.parametrize("target", cuda_targets())
def test_cuda_kernels_print_their_template(target):
    X, sm = softmax()
    A, B, C = matmul()
    f = kd.build([X, A, B], [sm, C], target=target)
    rows, gemm = f.kernels
    assert rows.template == "row_reduce" and "a block of 256 threads per row" in str(rows)
    assert gemm.template == "gemm" and "shared-memory stage" in str(gemm)
    assert "launch kd_kernel_sm: 256 threads per block" in rows.summary()


# --- one Config ---------------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["c", *cuda_targets()])
def test_config_round_trips_through_json_to_the_same_source(target):
    X, sm = softmax()
    A, B, C = matmul()
    s = kd.schedule([sm, C], [X, A, B], target=target)
    text = s.config.to_json()
    again = kd.Config.from_json(text)
    assert again.to_json() == text and again.target == s.target
    f1 = kd.build([X, A, B], [sm, C], schedule=s)
    f2 = kd.build([X, A, B], [sm, C], config=text)
    assert f1.source == f2.source and f2.config.to_json() == text
    steps = json.loads(text)["steps"]
    assert {st["template"] for st in steps if st["primitive"] == "template"} <= {"loops", "gemm", "row_reduce",
                                                                                 "grid_stride"}


def test_config_is_part_of_the_cache_key():
    A, B, C = matmul()
    s = kd.schedule(C)
    f1 = kd.build([A, B], [C], schedule=s)
    s.knobs(C, threads=1)
    f2 = kd.build([A, B], [C], schedule=s)
    assert f1.source != f2.source and f1.config.digest() in f1.source and f2.config.digest() in f2.source


def test_f_config_is_what_the_build_used():
    A, B, C = matmul()
    with kd.knobs(kc=96):
        f = kd.build([A, B], [C])
    assert f.config.template_of("C")["knobs"]["kc"] == 96
    assert kd.schedule(C).config.template_of("C")["knobs"]["kc"] != 96  # the block is over


def test_a_trace_without_template_steps_gets_the_defaults():
    A, B, C = matmul()
    X, sm = softmax()
    s = kd.schedule(sm, trace=kd.Trace([{"primitive": "split", "kernel": "sm", "loop": "j", "factor": 4}]))
    assert [st["primitive"] for st in s.trace.steps][:1] == ["template"] and "j_o" in str(s)
    with pytest.raises(kd.ScheduleError, match="runs the gemm template"):
        kd.schedule(C, trace=kd.Trace([{"primitive": "split", "kernel": "C", "loop": "i", "factor": 4}]))


def test_bad_configs_are_clear_errors():
    with pytest.raises(kd.ScheduleError, match="must be JSON"):
        kd.Config.from_json("{not json")
    with pytest.raises(kd.ScheduleError, match="'target' and 'steps'"):
        kd.Config.from_json("{}")
    A, B, C = matmul()
    cfg = kd.schedule(C).config.to_dict()
    cfg["steps"][0]["knobs"]["kc"] = -1
    with pytest.raises(kd.ScheduleError, match=r"kc must be an integer in \[1, 65536\]"):
        kd.build([A, B], [C], config=json.dumps(cfg))
    cfg["steps"][0] = {"primitive": "warp_speed", "kernel": "C"}
    with pytest.raises(kd.ScheduleError, match="unknown schedule primitive 'warp_speed'"):
        kd.build([A, B], [C], config=json.dumps(cfg))


# --- the target -----------------------------------------------------------------------------------

def test_target_is_detected_once_and_passed_down():
    t = kd.Target.detect("c")
    assert t.kind == "c" and t.isa in ("avx512", "avx2", "generic") and t.vector_bytes in (16, 32, 64)
    assert t.cores >= 1 and t.cflags and "-fno-trapping-math" not in t.cflags
    assert kd.Target.detect("c") is t  # asked once per settings
    A, B, C = matmul()
    f = kd.build([A, B], [C], target=t)
    assert f.config.target is t
    narrow = kd.Target("c", "avx2", 32, 1, None, t.cc, t.cflags)
    g = kd.build([A, B], [C], target=narrow)  # the schedule follows the target it is given
    assert g.kernels[0].knobs["nr"] % 8 == 0 and g.config.target.isa == "avx2"
    assert kd.Target.from_dict(json.loads(json.dumps(t.to_dict()))) == t
    with pytest.raises(ValueError, match="unknown target 'tpu'"):
        kd.build([A, B], [C], target="tpu")


# --- the pass log ---------------------------------------------------------------------------------

def test_debug_level_1_logs_pass_names_and_times_only(monkeypatch, caplog):
    monkeypatch.setenv("KERNELDSL_DEBUG", "1")
    A, B, C = matmul()
    with caplog.at_level(logging.DEBUG, logger="kerneldsl"):
        kd.build([A, B], [C])
    lines = [r.getMessage() for r in caplog.records]
    assert [ln.split(":")[0] for ln in lines] == [f"pass {p}" for p in PASSES]
    assert all(ln.endswith(" ms") for ln in lines)


# --- settings and knobs ---------------------------------------------------------------------------

def test_settings_read_the_environment_and_say_what_is_wrong(monkeypatch):
    monkeypatch.setenv("KERNELDSL_DEBUG", "loud")
    with pytest.raises(ValueError, match="KERNELDSL_DEBUG='loud' is not valid: it takes 0, 1 or 2"):
        kd.settings.debug
    monkeypatch.delenv("KERNELDSL_DEBUG")
    monkeypatch.setenv("KERNELDSL_CACHE_MAX", "3G")
    assert kd.settings.cache_max == 3 << 30
    with kd.settings.override(gemm=False):
        assert kd.settings.gemm is False
        A, B, C = matmul()
        assert kd.build([A, B], [C]).kernels[0].template == "loops"
    with pytest.raises(AttributeError, match="no setting 'colour'"):
        kd.settings.colour
    table = kd.settings.describe()
    for var in ("KERNELDSL_CACHE", "KERNELDSL_CC", "KERNELDSL_DEBUG", "KERNELDSL_GEMM", "KERNELDSL_CUDA_ARCH"):
        assert f"`{var}`" in table


def test_knobs_blocks_are_checked_when_entered():
    with pytest.raises(kd.ScheduleError, match="unknown knob"):
        with kd.knobs(kcc=4):
            pass
    with pytest.raises(kd.ScheduleError, match="on or off"):
        with kd.knobs(gemm=3):
            pass


# --- parallel_reduce and SIMD legality --------------------------------------------------------------

def test_parallel_reduce_is_the_default_for_a_scalar_sum_and_refuses_max():
    n, m = kd.sizes("n m")
    x = kd.placeholder((n, m), name="x")
    r, s_ = kd.reduce_axis(n, name="r"), kd.reduce_axis(m, name="s")
    t = kd.compute((), lambda: kd.sum(x[r, s_], axis=[r, s_]), name="t")
    s = kd.schedule(t)
    assert {"primitive": "parallel_reduce", "kernel": "t", "loop": "r"} in s.trace.steps
    u = kd.compute((), lambda: kd.max(x[r, s_], axis=[r, s_]), name="u")
    su = kd.schedule(u)
    with pytest.raises(kd.ScheduleError, match="other than by a plain sum or product"):
        su.parallel_reduce(su.loops(u)[0])
    a = np.ones((300, 300), np.float32)
    assert kd.build([x], [t])(a) == 90000.0


def test_vectorize_refuses_an_argmax_loop():
    n = kd.size("n")
    x = kd.placeholder((n,), name="x")
    r = kd.reduce_axis(n, name="r")
    y = kd.compute((), lambda: kd.argmax(x[r], axis=r), name="y")
    s = kd.schedule(y)
    with pytest.raises(kd.ScheduleError, match="SIMD lanes cannot combine"):
        s.vectorize(s.loops(y)[0])


def test_the_readme_lists_every_variable():
    from pathlib import Path

    from kerneldsl.settings import SETTINGS
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert [s.env for s in SETTINGS if f"`{s.env}`" not in readme] == []
