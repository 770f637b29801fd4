"""Runs candidates in an isolated process (worker.py) with a timeout: a crash or a hang there is
a failed trial here, and the next request gets a fresh process.

    runner = IsolatedRunner()
    reply = runner.request(("measure", path, config_json, options), timeout=20.0)
    # {"timings": [...]} or {"error": "..."}; a dead or stuck process: {"error": "crashed ..."}

The process is started with `python -m kerneldsl.tuning.worker` (subprocess, not
multiprocessing: Dask's worker processes are daemons, which may not fork children of their
own) in a session of its own, so that a kill takes its threads and children with it.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .worker import HEADER, read_message, write_message


def _python_path() -> str:
    """kerneldsl's folder first, so the worker imports this kerneldsl even when it is not installed."""
    here = str(Path(__file__).resolve().parents[2])
    rest = os.environ.get("PYTHONPATH", "")
    return here + (os.pathsep + rest if rest else "")


class WorkerDied(RuntimeError):
    pass


class IsolatedRunner:
    """One measuring process at a time, restarted whenever it dies or is killed."""

    def __init__(self, start_timeout: float = 120.0) -> None:
        self.proc: subprocess.Popen | None = None
        self.start_timeout = start_timeout
        self._stderr = None
        self.restarts = 0

    def _start(self) -> None:
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - kept open for the process's life
        env = dict(os.environ, PYTHONPATH=_python_path())
        self.proc = subprocess.Popen([sys.executable, "-m", "kerneldsl.tuning.worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._stderr, env=env, start_new_session=True)
        hello = self._read(time.monotonic() + self.start_timeout)
        if not (isinstance(hello, tuple) and hello[0] == "ready"):
            raise WorkerDied(f"the measuring process did not start: {self._why()}")

    def _read(self, deadline: float):
        """One reply, or WorkerDied on EOF, TimeoutError past the deadline."""
        fd = self.proc.stdout.fileno()
        buf = b""
        need = HEADER.size
        while len(buf) < need:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, max(need - len(buf), 1 << 16))
            if not chunk:
                raise WorkerDied(self._why())
            buf += chunk
            if need == HEADER.size and len(buf) >= HEADER.size:
                need = HEADER.size + HEADER.unpack(buf[:HEADER.size])[0]
        import io
        return read_message(io.BytesIO(buf))

    def _why(self) -> str:
        """How the process ended (its signal or exit code) and the last lines it wrote to stderr."""
        code = None
        if self.proc is not None:
            try:
                code = self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                code = None
        if code is None:
            how = "stopped answering"
        elif code < 0:
            try:
                how = f"crashed ({signal.Signals(-code).name})"
            except ValueError:
                how = f"crashed (signal {-code})"
        else:
            how = f"exited with code {code}"
        tail = ""
        if self._stderr is not None:
            self._stderr.seek(0)
            text = self._stderr.read().decode(errors="replace").strip().splitlines()
            tail = ("; stderr: " + " | ".join(text[-3:])) if text else ""
        return how + tail

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                self.proc.kill()
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover - a process that ignores SIGKILL
                pass

    def _drop(self) -> None:
        self.kill()
        if self.proc is not None:
            for s in (self.proc.stdin, self.proc.stdout):
                try:
                    s.close()
                except OSError:
                    pass
        if self._stderr is not None:
            self._stderr.close()
        self.proc, self._stderr = None, None
        self.restarts += 1

    def request(self, message, timeout: float) -> dict:
        """Send one request; the reply, or {"error": ...} when the process crashed or timed out."""
        if self.proc is None or self.proc.poll() is not None:
            if self.proc is not None:
                self._drop()
            try:
                self._start()
            except WorkerDied as e:
                self._drop()
                return {"error": str(e), "isolation": "start"}
        try:
            write_message(self.proc.stdin, message)
            return self._read(time.monotonic() + timeout)
        except TimeoutError:
            self.kill()
            self._drop()
            return {"error": f"timed out after {timeout:g} s (killed)", "isolation": "timeout"}
        except (WorkerDied, BrokenPipeError, OSError) as e:
            why = str(e) if isinstance(e, WorkerDied) else self._why()
            self._drop()
            return {"error": f"the measuring process {why}", "isolation": "crash"}

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                write_message(self.proc.stdin, ("exit",))
                self.proc.wait(timeout=5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        if self.proc is not None:
            self._drop()
            self.restarts -= 1


_local = threading.local()


def runner_for_this_thread() -> IsolatedRunner:
    """The measuring process of this thread (each executor thread or process keeps its own)."""
    r = getattr(_local, "runner", None)
    if r is None:
        r = _local.runner = IsolatedRunner()
        _all.append(r)
    return r


_all: list = []


def close_all() -> None:
    """Stop every measuring process this process started (the tuner calls it when done)."""
    while _all:
        _all.pop().close()
    if hasattr(_local, "runner"):
        del _local.runner


__all__ = ["IsolatedRunner", "close_all", "runner_for_this_thread"]
