"""One candidate timed per machine at a time, and no build running while it is timed.

    with machine_lock.building():     # shared: builds run side by side
        compile(...)
    with machine_lock.timing():       # exclusive: waits for running builds, holds off new ones
        measure(...)

Every process on the machine (tuner threads, a process pool, Dask workers) takes the same
lock files in the machine's temporary folder, with flock: a lock dies with its process, so a
killed worker never leaves the machine locked. A timer first takes the turnstile, which new
builders pass through before they take their shared lock, so a stream of builds cannot starve
a waiting timer (the classic readers-writer turnstile).
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no cross-process lock, timings may overlap builds
    fcntl = None  # type: ignore[assignment]


def _folder() -> Path:
    # the machine's own temporary folder (never the cache, which may be shared over NFS by many hosts)
    return Path(tempfile.gettempdir())


def _path(name: str) -> Path:
    return _folder() / f"kerneldsl-tuning-{os.getuid() if hasattr(os, 'getuid') else 0}-{name}.lock"


@contextmanager
def _flock(name: str, mode: int):
    if fcntl is None:
        yield
        return
    fd = os.open(_path(name), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, mode)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@contextmanager
def building():
    """Held while a candidate compiles: shared with other builds, exclusive of timing."""
    ex = fcntl.LOCK_EX if fcntl else 0
    sh = fcntl.LOCK_SH if fcntl else 0
    with _flock("turnstile", ex):
        pass
    with _flock("machine", sh):
        yield


@contextmanager
def timing():
    """Held while a candidate is timed: nothing else of kerneldsl's tuning runs on this machine."""
    ex = fcntl.LOCK_EX if fcntl else 0
    with _flock("turnstile", ex), _flock("machine", ex):
        yield


__all__ = ["building", "timing"]
