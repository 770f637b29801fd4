"""The build cache: memory and disk hits, keys, concurrency, corruption recovery, compile errors."""

import ctypes
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from kerneldsl.errors import CompileError
from kerneldsl.runtime import build
from kerneldsl.runtime.build import clear_memory_cache, compile_c, stats

ADD = "int kd_add(int a, int b){return a+b;}\n"
REPO = Path(build.__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("KERNELDSL_CACHE", str(root))
    monkeypatch.delenv("KERNELDSL_CC", raising=False)
    monkeypatch.delenv("KERNELDSL_CFLAGS", raising=False)
    clear_memory_cache()
    yield root
    clear_memory_cache()


def unique_add() -> str:
    # A source no other test (or earlier run in this process) has built: fresh key, fresh dlopen path.
    return f"/* {uuid.uuid4().hex} */\n{ADD}"


def add(entry, a=2, b=3) -> int:
    fn = entry.lib.kd_add
    fn.argtypes, fn.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return fn(a, b)


def planted_entry(src, tmp_path, monkeypatch):
    """Build ``src``, copy its entry into a fresh cache and switch to it; return (key, .so, .json).

    The copy's path was never dlopened here, so glibc cannot hand back the earlier mapping, and
    damaging it does not touch pages this process has mapped (which would SIGBUS).
    """
    key = compile_c(src).key
    old = build.cache_dir()
    monkeypatch.setenv("KERNELDSL_CACHE", str(tmp_path / f"planted-{uuid.uuid4().hex}"))
    clear_memory_cache()
    new = build.cache_dir()
    new.mkdir(parents=True)
    for ext in ("so", "json", "c"):
        shutil.copyfile(old / f"{key}.{ext}", new / f"{key}.{ext}")
    return key, new / f"{key}.so", new / f"{key}.json"


def child_env(cache_root: Path) -> dict:
    env = dict(os.environ, KERNELDSL_CACHE=str(cache_root))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return env


def test_cold_then_memory_then_disk(cache):
    src = unique_add()
    c0 = stats.compiles
    cold = compile_c(src)
    assert add(cold) == 5 and not cold.from_cache
    assert stats.compiles == c0 + 1
    assert Path(cold.path).parent == build.cache_dir() and Path(cold.source_path).read_text() == src

    m0 = stats.memory_hits
    assert compile_c(src) is cold
    assert stats.memory_hits == m0 + 1

    clear_memory_cache()
    d0 = stats.disk_hits
    warm = compile_c(src)
    assert warm.from_cache and warm.key == cold.key and add(warm, 40, 2) == 42
    assert stats.disk_hits == d0 + 1 and stats.compiles == c0 + 1

    shutil.rmtree(cache)  # memory hits never look at the disk
    assert compile_c(src) is warm


def test_new_process_warm_build_runs_no_subprocess(cache):
    src = unique_add()
    compile_c(src)
    script = (
        "import subprocess, sys\n"
        "def boom(*a, **k): raise AssertionError('compiler ran')\n"
        "subprocess.run = subprocess.Popen = boom\n"
        "from kerneldsl.runtime.build import compile_c, stats\n"
        "import ctypes\n"
        f"e = compile_c({src!r})\n"
        "print(e.lib.kd_add(20, 22), stats.compiles, e.from_cache)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], env=child_env(cache),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["42", "0", "True"]


def test_flags_and_source_change_the_key(monkeypatch):
    src = unique_add()
    base = compile_c(src, flags=("-O1",))
    c0 = stats.compiles
    other_flags = compile_c(src, flags=("-O2",))
    other_src = compile_c(src + "\n", flags=("-O1",))
    assert len({base.key, other_flags.key, other_src.key}) == 3
    assert stats.compiles == c0 + 2
    monkeypatch.setenv("KERNELDSL_CFLAGS", "-O1")  # env flags equal to explicit ones: same key
    assert compile_c(src).key == base.key
    monkeypatch.setenv("KERNELDSL_CFLAGS", "-O0 -g")
    assert compile_c(src).key != base.key
    assert all(add(e) == 5 for e in (base, other_flags, other_src))


def test_compiler_with_extra_words(monkeypatch):
    monkeypatch.setenv("KERNELDSL_CC", "env cc")
    assert add(compile_c(unique_add(), flags=("-O1",))) == 5


def test_concurrent_builders_agree(cache, tmp_path):
    src = unique_add()
    go = tmp_path / "go"
    script = (
        "import pathlib, sys, time\n"
        "from kerneldsl.runtime.build import compile_c, stats\n"
        "pathlib.Path(sys.argv[1]).touch()\n"
        f"while not pathlib.Path({str(go)!r}).exists(): time.sleep(0.002)\n"
        f"e = compile_c({src!r})\n"
        "print(e.lib.kd_add(2, 3), stats.compiles, e.key)\n"
    )
    ready = [tmp_path / f"ready{i}" for i in range(4)]
    procs = [subprocess.Popen([sys.executable, "-c", script, str(r)], env=child_env(cache),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in ready]
    deadline = time.monotonic() + 30
    while not all(r.exists() for r in ready) and time.monotonic() < deadline:
        time.sleep(0.005)
    go.touch()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        results.append(out.split())
    assert {r[0] for r in results} == {"5"}
    assert sum(int(r[1]) for r in results) == 1  # the lock lets exactly one of them compile
    assert len({r[2] for r in results}) == 1
    d = build.cache_dir()
    assert len(list(d.glob("*.json"))) == 1 and len(list(d.glob("*.so"))) == 1
    assert not list(d.glob("*.tmp"))
    entry = compile_c(src)
    assert entry.from_cache and add(entry) == 5


@pytest.mark.parametrize("damage", ["truncate_so", "garbage_json", "missing_so", "missing_json", "not_elf"])
def test_corrupt_entry_is_rebuilt(damage, tmp_path, monkeypatch):
    key, so, meta = planted_entry(unique_add(), tmp_path, monkeypatch)
    if damage == "truncate_so":
        so.write_bytes(so.read_bytes()[:100])
    elif damage == "garbage_json":
        meta.write_text("{not json")
    elif damage == "missing_so":
        so.unlink()
    elif damage == "missing_json":
        meta.unlink()
    else:  # hash matches, but dlopen fails
        so.write_bytes(b"not an ELF file at all")
        meta.write_text(json.dumps({"so_sha256": build._sha256_file(so)}))
    c0, d0 = stats.compiles, stats.disk_hits
    src = (so.parent / f"{key}.c").read_text()
    again = compile_c(src)
    assert again.key == key and Path(again.path) == so and not again.from_cache
    assert stats.compiles == c0 + 1 and stats.disk_hits == d0 and add(again) == 5
    assert json.loads(meta.read_text())["so_sha256"] == build._sha256_file(so)


def test_planted_copy_is_a_disk_hit(tmp_path, monkeypatch):
    key, so, _ = planted_entry(unique_add(), tmp_path, monkeypatch)
    c0 = stats.compiles
    entry = compile_c((so.parent / f"{key}.c").read_text())
    assert entry.from_cache and Path(entry.path) == so and stats.compiles == c0 and add(entry) == 5


def test_version_and_format_select_the_folder(monkeypatch):
    src = unique_add()
    old = compile_c(src)
    old_dir = build.cache_dir()
    monkeypatch.setattr(build, "kerneldsl_version", lambda: "99.0")
    assert build.cache_dir() != old_dir and build.cache_dir().name.endswith("99.0")
    c0 = stats.compiles
    new = compile_c(src)
    assert new.key != old.key and Path(new.path).parent == build.cache_dir() and stats.compiles == c0 + 1
    monkeypatch.setattr(build, "CACHE_FORMAT", build.CACHE_FORMAT + 1)
    assert build.cache_dir().name.startswith(f"v{build.CACHE_FORMAT}-")
    assert compile_c(src).key not in {old.key, new.key}


def test_syntax_error_raises_compile_error():
    with pytest.raises(CompileError) as info:
        compile_c("int kd_bad(int a){ return a + ; }\n", name="bad")
    err = info.value
    assert "expected expression" in str(err) and "expected expression" in err.compiler_output
    assert err.source_path and err.source_path in str(err) and "'bad'" in str(err)
    assert Path(err.source_path).read_text().startswith("int kd_bad")
    assert not list(Path(err.source_path).parent.glob("*.json"))  # no entry was committed


def test_missing_compiler(tmp_path, monkeypatch):
    monkeypatch.setenv("KERNELDSL_CC", str(tmp_path / "no-such-cc"))
    with pytest.raises(CompileError, match="KERNELDSL_CC"):
        compile_c(unique_add())
