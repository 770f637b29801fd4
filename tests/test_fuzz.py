"""The differential fuzzer (tests/fuzz_graphs.py) on fixed seeds, and checks of the fuzzer itself.

Each test runs a chunk of seeds: every graph is compiled for C, and a fixed share of them for the
CUDA emulator as well; graphs are built four to a kd.build, so one compile serves four graphs (a
pack that fails is rerun graph by graph, and that is what a failure reports). A failure prints
each finding with a self-contained reproducer; `python tests/fuzz_graphs.py --minimize SEED`
shrinks it. Longer runs: `make fuzz FUZZ_SECONDS=600`.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fuzz_graphs as F
import kerneldsl as kd

HERE = Path(__file__).resolve().parent
CHUNK = 8  # seeds per test: two packs of four per target
# 304 graphs: the first seeds whose profile is not platform-defined (those run in a test of their own)
SEEDS = [s for s in range(400) if F.profile_of(s).name not in F.PLATFORM_DEFINED][:304]
EMU_SHARE = 0.35  # share of the graphs also run on the emulator (its compiles cost about twice C's)
TARGETS = ("c", "cuda-emu") if shutil.which("g++") else ("c",)
# both sides refuse the inputs, for different reasons (a bad read found before a bad shape)
TOLERATED = {"error-order"}


def _report(findings, limit: int = 3) -> str:
    lines = [f.line() for f in findings]
    shown = set()
    for f in findings:
        if len(shown) >= limit or f.seed in shown or f.target not in ("c", "cuda-emu", "reference", "grad"):
            continue
        shown.add(f.seed)
        p = F.PROFILES[f.profile]
        case = F.Case(f.seed, p)
        target = f.target if f.target in ("c", "cuda-emu") else "c"
        lines += ["", F.reproducer(case, target, f.set_index or 0, f"{f.kind}: {f.message}")]
    return "\n".join(lines)


def _run(seeds, profile=None, emu_share=EMU_SHARE):
    r = F.Runner(targets=TARGETS, pack=4, emu_share=emu_share)
    findings = [f for f in r.run(seeds, profile) if f.kind not in TOLERATED]
    return r, findings


@pytest.mark.parametrize("first", range(0, len(SEEDS), CHUNK))
def test_random_graphs_match_reference(first):
    r, findings = _run(SEEDS[first:first + CHUNK])
    assert r.counts["graphs"] == CHUNK
    assert not findings, _report(findings)


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                    reason="float->int casts of NaN and out-of-range values are defined as on x86 (INT_MIN)")
@pytest.mark.parametrize("start", [10_000, 10_008])
def test_float_to_int_casts_of_any_value_match_numpy(start):
    """Raw float->int casts (NaN, infinities, out of range): numpy's x86 rule, INT_MIN."""
    r, findings = _run(range(start, start + CHUNK), F.PROFILES["f2i-cast"], emu_share=0.25)
    assert r.by_profile["f2i-cast"]["raw float->int"] > 0
    assert not findings, _report(findings)


# --- the fuzzer itself ------------------------------------------------------------------------

def test_a_seed_determines_the_graph_and_the_inputs():
    for seed in (3, 77, 1234):
        a, b = F.Case(seed), F.Case(seed)
        assert a.graph.source() == b.graph.source() and a.profile == b.profile
        for sa, sb in zip(a.sets, b.sets):
            assert sa.arrays == sb.arrays and sa.sizes == sb.sizes and sa.out == sb.out
            for x, y in zip(sa.make_args(), sb.make_args()):
                assert x.strides == y.strides and np.array_equal(F.canonical(x), F.canonical(y), equal_nan=True)


def test_reproducer_is_a_script_that_runs_the_case():
    case = F.Case(5)
    text = F.reproducer(case, "c", 0)
    proc = subprocess.run([sys.executable, "-c", text], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(HERE.parent)})
    assert proc.returncode == 0, proc.stderr
    assert ("equal: True" in proc.stdout) or ("reference:" in proc.stdout and "kernel:" in proc.stdout)
    assert case.graph.source() in text


def test_every_generated_feature_appears_in_the_pytest_seeds():
    """The fixed seeds cover each operator, intrinsic, reduction, cast, layout and profile."""
    text, layouts = [], set()
    for seed in SEEDS:
        graph = F.generate(seed)
        text.append(graph.source())
        arrays = " ".join(src for k in range(F.NSETS) for src in F.make_input_set(graph, k).arrays)
        layouts |= {name for name in F.LAYOUTS + ("bool_bytes",) if name + "(" in arrays}
    text = "\n".join(text)
    wanted = [f"kd.{fn}(" for fn in F.UNARY_FNS + F.BINARY_FNS + F.REDUCERS + ("where", "cast", "grad")]
    wanted += [f" {op} " for op in ("+", "-", "*", "/", "//", "%", "**", "<", "<=", ">", ">=", "==", "!=", "&", "|",
                                    "^")] + ["(-", "(~", "where=", "axis=[", "kd.compute(()"]
    assert [w for w in wanted if w not in text] == []
    assert set(F.LAYOUTS) | {"bool_bytes"} <= layouts
    assert {F.profile_of(s).name for s in SEEDS} == set(F.PROFILES) - set(F.PLATFORM_DEFINED)


def test_comparison_allows_reordered_sums_and_catches_wrong_values():
    terms = np.array([1e30, 1.0, -1e30], np.float32)
    mag = np.float64(np.abs(terms.astype(np.float64)).sum())
    # 1e30 + 1 - 1e30 is 0 in one order and 1 in another: both are right within the sum's bound
    one, zero = np.array(1.0, np.float32), np.array(0.0, np.float32)
    assert F.compare(one, zero, mag, 2 ** -23, 3) is None
    assert F.compare(one, zero, np.float64(1.0), 2 ** -23, 3) is not None
    want = np.array([1.0, np.nan, np.inf, -0.0], np.float32)
    assert F.compare(want.copy(), want, None, 2 ** -23, 0) is None
    for bad in ([1.0, 0.0, np.inf, 0.0], [1.0, np.nan, -np.inf, 0.0], [1.001, np.nan, np.inf, 0.0]):
        assert F.compare(np.array(bad, np.float32), want, np.ones(4), 2 ** -23, 0) is not None
    assert F.compare(np.array([1, 2], np.int64), np.array([1, 3], np.int64), None, 0, 0) is not None
    assert F.compare(np.array([1, 2], np.int32), np.array([1, 2], np.int64), None, 0, 0).startswith("dtype")
    two = np.array([0, 2], np.uint8).view(bool)
    assert "bytes other than 0 and 1" in F.compare(two, np.array([False, True]), None, 0, 0)


def test_runner_reports_a_kernel_that_is_off_by_one(monkeypatch):
    """A planted bug (the first element of every output changed) shows as mismatches."""
    real = kd.build

    def wrong(inputs, outputs, **kw):
        f = real(inputs, outputs, **kw)

        def call(*args, out=None):
            got = f(*args, out=out)
            for g in got if isinstance(got, tuple) else (got,):
                if g.size:
                    g.flat[0] = ~g.flat[0] if g.dtype == bool else g.flat[0] + 1
            return got
        return call

    monkeypatch.setattr(kd, "build", wrong)
    r = F.Runner(targets=("c",), pack=4)
    findings = r.run(range(8), F.PROFILES["elementwise"])
    assert sum(f.kind == "mismatch" for f in findings) >= 4, [f.line() for f in findings]


def test_soak_reports_a_crash_with_its_seed(tmp_path):
    """A segfault in a worker is caught, bisected to its seed, and counted as a crash."""
    env = {**os.environ, "KERNELDSL_FUZZ_CRASH_SEED": "502", "PYTHONPATH": str(HERE.parent)}
    proc = subprocess.run([sys.executable, str(HERE / "fuzz_graphs.py"), "--graphs", "4", "--start", "500",
                           "-j", "1", "--targets", "c", "--profile", "elementwise", "--pack", "2",
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "seed 502 [elementwise] process: crash: killed by SIGSEGV" in proc.stdout
    assert "4 graphs" in proc.stdout
    assert (tmp_path / "findings.jsonl").read_text().count('"crash"') == 1
