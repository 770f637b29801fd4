"""The build cache: memory and disk hits, keys, concurrency, corruption recovery, compile errors,
cache errors, timeouts, litter, size bound, trust, and closing loaded libraries."""

import ctypes
import errno
import gc
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from kerneldsl.errors import CacheError, CompileError
from kerneldsl.runtime import build
from kerneldsl.runtime import cache as C
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
        (new / f"{key}.{ext}").chmod(0o644)  # whatever the umask: the cache refuses g+w files
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
    assert not list(build.cache_dir().glob("*.lock"))  # the build's lock went with the build

    m0 = stats.memory_hits
    assert compile_c(src) is cold
    assert stats.memory_hits == m0 + 1

    clear_memory_cache()
    d0 = stats.disk_hits
    warm = compile_c(src)
    assert warm.from_cache and warm.key == cold.key and add(warm, 40, 2) == 42
    assert not list(build.cache_dir().glob("*.lock"))  # a hit takes no lock
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
                         capture_output=True, text=True, timeout=60, check=False)
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
    assert not list(d.glob("*.tmp")) and not list(d.glob("*.lock"))
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
        meta.write_text(json.dumps({"sha256": C._sha256_file(so)}))
    c0, d0 = stats.compiles, stats.disk_hits
    src = (so.parent / f"{key}.c").read_text()
    again = compile_c(src)
    assert again.key == key and Path(again.path) == so and not again.from_cache
    assert stats.compiles == c0 + 1 and stats.disk_hits == d0 and add(again) == 5
    assert json.loads(meta.read_text())["sha256"] == C._sha256_file(so)


def test_planted_copy_is_a_disk_hit(tmp_path, monkeypatch):
    key, so, _ = planted_entry(unique_add(), tmp_path, monkeypatch)
    c0 = stats.compiles
    entry = compile_c((so.parent / f"{key}.c").read_text())
    assert entry.from_cache and Path(entry.path) == so and stats.compiles == c0 and add(entry) == 5


def test_version_and_format_select_the_folder(monkeypatch):
    src = unique_add()
    old = compile_c(src)
    old_dir = build.cache_dir()
    monkeypatch.setattr(C, "kerneldsl_version", lambda: "99.0")
    assert build.cache_dir() != old_dir and build.cache_dir().name.endswith("99.0")
    c0 = stats.compiles
    new = compile_c(src)
    assert new.key != old.key and Path(new.path).parent == build.cache_dir() and stats.compiles == c0 + 1
    monkeypatch.setattr(C, "CACHE_FORMAT", C.CACHE_FORMAT + 1)
    assert build.cache_dir().name.startswith(f"v{C.CACHE_FORMAT}-")
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


def test_warm_hit_scans_no_folder(cache, monkeypatch):
    src = unique_add()
    compile_c(src)
    clear_memory_cache()

    def boom(*a, **k):
        raise AssertionError("the cache folder was scanned on a hit")

    monkeypatch.setattr(os, "scandir", boom)
    assert compile_c(src).from_cache


# --- errors of the cache folder: each says which folder, and how to fix it ----------------------------

def fresh_key(src, tmp_path, monkeypatch):
    """The key of ``src`` and an empty cache folder (made) that lacks it."""
    key = compile_c(src).key
    monkeypatch.setenv("KERNELDSL_CACHE", str(tmp_path / f"fresh-{uuid.uuid4().hex}"))
    clear_memory_cache()
    d = build.cache_dir()
    d.mkdir(parents=True)
    return key, d


def assert_names_the_cache(err, *words):
    text = str(err)
    assert isinstance(err, CacheError) and str(build.cache_dir()) in text and "KERNELDSL_CACHE" in text, text
    for w in words:
        assert w in text, text


def test_cache_under_a_file(cache, tmp_path, monkeypatch):
    (tmp_path / "plain-file").write_text("")
    monkeypatch.setenv("KERNELDSL_CACHE", str(tmp_path / "plain-file"))
    with pytest.raises(CacheError) as e:
        compile_c(unique_add())
    assert_names_the_cache(e.value, "Not a directory", "remove that file")


def test_cache_folder_is_a_file(cache):
    build.cache_dir().parent.mkdir(parents=True)
    build.cache_dir().write_text("")
    with pytest.raises(CacheError) as e:
        compile_c(unique_add())
    assert_names_the_cache(e.value, "a file stands where")


def test_directory_where_the_library_should_be(tmp_path, monkeypatch):
    src = unique_add()
    key, d = fresh_key(src, tmp_path, monkeypatch)
    (d / f"{key}.so").mkdir()
    with pytest.raises(CacheError) as e:
        compile_c(src)
    assert_names_the_cache(e.value, f"{key}.so", "a directory stands where")
    assert not list(d.glob("*.tmp")) and not list(d.glob("*.lock"))


@pytest.mark.parametrize("code, words", [(errno.EACCES, "a directory you can write"),
                                         (errno.EROFS, "read-only file system")])
def test_unwritable_cache_folder(code, words, cache, monkeypatch):
    d = build.cache_dir()
    d.mkdir(parents=True)
    if os.geteuid() != 0:
        d.chmod(0o555)
    # Root ignores the mode bits and we cannot mount a read-only file system here, so the kernel's
    # answer is simulated where the cache creates its files (lock, temporaries): os.open + O_CREAT.
    real_open = os.open

    def refusing_open(path, flags, *args, **kwargs):
        if flags & os.O_CREAT and str(path).startswith(str(d)):
            raise OSError(code, os.strerror(code), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)
    try:
        with pytest.raises(CacheError) as e:
            compile_c(unique_add())
    finally:
        d.chmod(0o755)
    assert_names_the_cache(e.value, words)


def test_disk_full(cache, monkeypatch):
    d = build.cache_dir()
    real_write = os.write

    def full_disk(fd, data):  # the cache's own writes fail as on a full disk; others go through
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(cache)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(CacheError) as e:
        compile_c(unique_add())
    assert_names_the_cache(e.value, "No space left", "free space")
    assert not list(d.glob("*.tmp")) and not list(d.glob("*.json"))


def test_bad_settings_name_the_variable(monkeypatch):
    monkeypatch.setenv("KERNELDSL_CACHE_MAX", "lots")
    with pytest.raises(CacheError, match="KERNELDSL_CACHE_MAX='lots'"):
        C.max_bytes()
    monkeypatch.setenv("KERNELDSL_COMPILE_TIMEOUT", "-3")
    with pytest.raises(CacheError, match="KERNELDSL_COMPILE_TIMEOUT"):
        C.compile_timeout()


SIZES = [("123", 123), ("64K", 64 << 10), ("500M", 500 << 20), ("2G", 2 << 30), ("1.5g", 3 << 29),
         ("2GiB", 2 << 30), ("", 2 << 30)]


@pytest.mark.parametrize("text, value", SIZES)
def test_cache_max_sizes(text, value, monkeypatch):
    monkeypatch.setenv("KERNELDSL_CACHE_MAX", text)
    assert C.max_bytes() == value


# --- timeouts -------------------------------------------------------------------------------------------

def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie waits only for its reaper
    except FileNotFoundError:
        return False


def test_hanging_compiler_is_killed(cache, tmp_path, monkeypatch):
    pidfile = tmp_path / "child.pid"
    cc = tmp_path / "hanging-cc"
    cc.write_text(f"#!/bin/sh\nsleep 120 &\necho $! > {pidfile}\nwait\n")  # a compiler and its child
    cc.chmod(0o755)
    monkeypatch.setenv("KERNELDSL_CC", str(cc))
    monkeypatch.setenv("KERNELDSL_COMPILE_TIMEOUT", "1")
    t0 = time.monotonic()
    with pytest.raises(CompileError) as e:
        compile_c(unique_add(), name="slow")
    assert time.monotonic() - t0 < 20
    text = str(e.value)
    assert "'slow'" in text and "KERNELDSL_COMPILE_TIMEOUT" in text and "killed" in text
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(pid), "the compiler's child survived the timeout"
    assert not list(build.cache_dir().glob("*.lock")) and not list(build.cache_dir().glob("*.tmp"))


HOLD_LOCK = textwrap.dedent("""
    import fcntl, os, sys, time
    path = sys.argv[1]
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("held", flush=True)
    if sys.argv[2] == "swap":  # after a while, the next holder's lock file replaces ours, then we release
        time.sleep(1.0)
        new = os.open(path + ".next", os.O_RDWR | os.O_CREAT)
        fcntl.flock(new, fcntl.LOCK_EX)
        os.rename(path + ".next", path)
        os.close(fd)
    time.sleep(120)
""")


def hold_lock(path: Path, mode: str = "hold") -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path), mode], stdout=subprocess.PIPE,
                         text=True)
    assert p.stdout.readline().strip() == "held"
    return p


@pytest.mark.parametrize("mode", ["hold", "swap"])
def test_lock_wait_is_bounded(mode, tmp_path, monkeypatch):
    # "swap": we wait on a lock file that is then replaced; winning the old file's lock must not
    # count (its inode is no longer the lock), so we wait on the new one and time out as well.
    src = unique_add()
    key, d = fresh_key(src, tmp_path, monkeypatch)
    monkeypatch.setenv("KERNELDSL_LOCK_TIMEOUT", "3")
    holder = hold_lock(d / f"{key}.lock", mode)
    try:
        c0, t0 = stats.compiles, time.monotonic()
        with pytest.raises(CacheError) as e:
            compile_c(src)
        assert 3 <= time.monotonic() - t0 < 20 and stats.compiles == c0
        assert_names_the_cache(e.value, str(d / f"{key}.lock"), "KERNELDSL_LOCK_TIMEOUT")
    finally:
        holder.kill()
        holder.wait()
    assert add(compile_c(src)) == 5  # the holder died: its lock went with it


# --- litter and size ---------------------------------------------------------------------------------------

def test_stale_temporaries_and_locks_are_swept(tmp_path, monkeypatch):
    key, d = fresh_key(unique_add(), tmp_path, monkeypatch)
    old = time.time() - 2 * C.STALE_AFTER
    stale = [d / f"{key}.abc123.so.tmp", d / f"{'e' * 64}.c.x.tmp", d / f"{'f' * 64}.lock"]
    busy = d / f"{'b' * 64}.q.so.tmp"  # old, but its build lock is held: a slow build still running
    fresh = d / f"{'a' * 64}.r.so.tmp"  # recent: maybe a build that is just starting
    for p in [*stale, busy, fresh]:
        p.write_bytes(b"x" * 100)
        if p is not fresh:
            os.utime(p, (old, old))
    holder = hold_lock(d / f"{'b' * 64}.lock")
    try:
        compile_c(unique_add())  # this process's first build in the folder sweeps it
    finally:
        holder.kill()
        holder.wait()
    assert not any(p.exists() for p in stale) and busy.exists() and fresh.exists()


def entry_files(d: Path, key: str) -> list:
    return list(d.glob(f"{key}.*"))


def test_least_recently_used_entries_are_evicted(cache, monkeypatch):
    monkeypatch.setenv("KERNELDSL_CACHE_LOADED", "1")  # the memory layer holds only the newest entry
    srcs = [unique_add() for _ in range(6)]
    keys = [compile_c(s, flags=("-O0",)).key for s in srcs]
    d = build.cache_dir()
    base = time.time() - 10_000
    for i, key in enumerate(keys):  # built in order, long ago
        for f in entry_files(d, key):
            os.utime(f, (base + i, base + i))
    gc.collect()  # close the libraries nothing holds any more
    assert compile_c(srcs[0], flags=("-O0",)).from_cache  # used again: now the most recent
    held = compile_c(srcs[1], flags=("-O0",))  # old, but this process still holds its library
    size = max(sum(f.stat().st_size for f in entry_files(d, k)) for k in keys)
    monkeypatch.setenv("KERNELDSL_CACHE_MAX", str(int(3.5 * size)))
    monkeypatch.setattr(C, "EVICT_EVERY", 1)
    new = compile_c(unique_add(), flags=("-O0",))  # 7 entries: the 4 oldest that are not held go
    left = {k for k in [*keys, new.key] if (d / f"{k}.json").exists()}
    assert left == {keys[0], keys[1], new.key}
    assert all(not entry_files(d, k) for k in keys[2:])  # whole entries: no .c or .so left behind
    assert sum(f.stat().st_size for f in d.iterdir()) <= int(3.5 * size) and not list(d.glob("*.lock"))
    assert add(held) == 5 and add(new) == 5
    again = compile_c(srcs[2], flags=("-O0",))
    assert not again.from_cache and add(again) == 5


def test_the_folder_stays_within_its_bound_after_every_build_even_when_everything_is_held(cache, monkeypatch):
    monkeypatch.setenv("KERNELDSL_CACHE_LOADED", "64")  # every entry stays in memory
    first = compile_c(unique_add(), flags=("-O0",))
    d = build.cache_dir()
    size = sum(f.stat().st_size for f in entry_files(d, first.key))
    limit = int(3.5 * size)
    monkeypatch.setenv("KERNELDSL_CACHE_MAX", str(limit))
    sources = [unique_add() for _ in range(8)]
    entries = [first]
    for src in sources:
        entries.append(compile_c(src, flags=("-O0",)))
        assert sum(f.stat().st_size for f in d.iterdir()) <= limit
    assert (d / f"{entries[-1].key}.json").exists()  # the newest stays
    assert all(add(e) == 5 for e in entries)  # a held library whose files went stays loaded
    clear_memory_cache()
    assert not compile_c(sources[0], flags=("-O0",)).from_cache  # evicted, so built again


def test_deleted_functions_unload_their_libraries_without_the_garbage_collector(monkeypatch):
    import numpy as np

    import kerneldsl as kd
    import kerneldsl.numpy as knp
    monkeypatch.setenv("KERNELDSL_CACHE_LOADED", "2")
    gc.collect()
    before = len(C._loaded_paths())
    gc.disable()
    try:
        for k in range(6):
            a = kd.placeholder((3,), name="a")
            f = kd.build([a], [knp.exp(a) * (k + 0.25)])
            f(np.ones(3, np.float32))
            f.calls  # noqa: B018 - a profile lookup must not tie the library to itself either
            del f
        assert len(C._loaded_paths()) <= before + 2  # what the memory layer holds, no more
    finally:
        gc.enable()


# --- trust ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("change", ["foreign_so", "foreign_json", "other_writable_so", "group_writable_json"])
def test_entry_not_ours_alone_is_rebuilt(change, tmp_path, monkeypatch):
    key, so, meta = planted_entry(unique_add(), tmp_path, monkeypatch)
    target = so if change.endswith("so") else meta
    if change.startswith("foreign"):
        os.chown(target, 4242, 4242)  # tests run as root, so chown to another user works
    else:
        target.chmod(target.stat().st_mode | (stat.S_IWOTH if change.startswith("other") else stat.S_IWGRP))
    c0 = stats.compiles
    again = compile_c((so.parent / f"{key}.c").read_text())
    assert not again.from_cache and stats.compiles == c0 + 1 and add(again) == 5
    for f in (so, meta):
        st = f.stat()
        assert st.st_uid == os.geteuid() and not st.st_mode & 0o022


@pytest.mark.parametrize("change", ["other_writable", "group_writable", "foreign"])
def test_cache_folder_open_to_others_is_refused(change, cache):
    d = build.cache_dir()
    d.mkdir(parents=True)
    if change == "foreign":
        os.chown(d, 4242, 4242)
    else:
        d.chmod(0o757 if change == "other_writable" else 0o775)
    with pytest.raises(CacheError) as e:
        compile_c(unique_add())
    assert_names_the_cache(e.value, "chmod go-w")


def test_sticky_shared_folder_is_accepted(cache):
    d = build.cache_dir()
    d.mkdir(parents=True)
    d.chmod(0o1777)  # like /tmp: others may add files but not replace ours
    assert add(compile_c(unique_add())) == 5


def test_entries_are_private_under_a_loose_umask(cache):
    src = unique_add()
    old = os.umask(0o002)
    try:
        compile_c(src)
    finally:
        os.umask(old)
    d = build.cache_dir()
    assert not any(f.stat().st_mode & 0o022 for f in [d, *d.iterdir()])
    clear_memory_cache()
    assert compile_c(src).from_cache


# --- loaded libraries --------------------------------------------------------------------------------------

def test_referenced_library_outlives_its_memory_entry(monkeypatch):
    monkeypatch.setenv("KERNELDSL_CACHE_LOADED", "2")
    first = compile_c(unique_add(), flags=("-O0",))
    fn = first.lib.kd_add
    fn.argtypes, fn.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    key, path = first.key, first.path
    del first
    for _ in range(3):
        compile_c(unique_add(), flags=("-O0",))
    gc.collect()
    assert key not in C._memory and path in C._loaded_paths()  # the function keeps its library
    assert fn(40, 2) == 42
    del fn
    gc.collect()
    assert path not in C._loaded_paths()


UNLOAD = textwrap.dedent('''
    import ctypes, gc, sys, uuid
    from kerneldsl.runtime.build import compile_c

    SRC = """
    double kd_run(int n) { /* TAG */
        double s = 0;
        #pragma omp parallel for reduction(+:s)
        for (int i = 0; i < n; ++i) s += i;
        return s;
    }
    """

    def maps():
        with open("/proc/self/maps") as f:
            return f.read()

    def build_and_run():
        lib = compile_c(SRC.replace("TAG", uuid.uuid4().hex), flags=("-O0", "-fopenmp")).lib
        lib.kd_run.restype, lib.kd_run.argtypes = ctypes.c_double, [ctypes.c_int]
        assert lib.kd_run(1000) == 499500.0

    for _ in range(5):  # warm up: libgomp and its threads, the first allocations
        build_and_run()
    gc.collect()
    before = maps().count("\\n")
    for _ in range(int(sys.argv[1])):
        build_and_run()
    gc.collect()
    text = maps()
    print(before, text.count("\\n"), text.count(sys.argv[2]))
''')


def test_unreferenced_libraries_are_closed(cache):
    n = 60
    env = dict(child_env(cache), KERNELDSL_CACHE_LOADED="4")
    out = subprocess.run([sys.executable, "-c", UNLOAD, str(n), str(cache)], env=env, capture_output=True,
                         text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    before, after, ours = map(int, out.stdout.split())
    # a library maps about 5 regions: were the 60 kept open, the process would have ~300 more
    assert after - before < 40, (before, after)
    assert ours <= 4 * 6, ours  # only the 4 libraries of the memory layer are still mapped


def test_the_c_call_path_builds_here():
    # its absence is silent by design (calls take the Python path), so a broken fastcall.c must
    # fail here rather than only slow every call down
    from kerneldsl.runtime import fastcall
    assert fastcall._module() is not None
