"""The workload as the builders and measuring workers see it: the graph, the call's arrays and the
reference outputs, written once per tuning run and read by every worker.

    p = Payload.make(f.inputs, f.outputs, arrays, expected, target)   # in the tuner
    p.path                     # a file on this machine (local workers, isolated runners)
    p.data                     # the same bytes, for executors on other machines
    w = load(p)                # in a worker: a LoadedWorkload, cached per process by digest
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import serialize


@dataclass(frozen=True)
class Payload:
    digest: str
    path: str | None = None  # a file on the tuner's machine
    data: bytes | None = None  # the file's bytes (for workers elsewhere); None when only the path travels

    @staticmethod
    def make(inputs, outputs, arrays, expected, target, fuse: bool = True, folder: str | None = None) -> Payload:
        body = pickle.dumps({"graph": serialize.dumps((tuple(inputs), tuple(outputs))),
                             "arrays": [np.ascontiguousarray(a) for a in arrays],
                             "expected": [np.asarray(e) for e in expected],
                             "target": target.to_dict(), "fuse": fuse}, protocol=pickle.HIGHEST_PROTOCOL)
        digest = hashlib.sha256(body).hexdigest()[:24]
        folder = folder or tempfile.mkdtemp(prefix="kerneldsl-tune-")
        path = os.path.join(folder, f"workload-{digest}.pkl")
        _write(path, body)
        return Payload(digest, path, None)

    def with_data(self) -> Payload:
        """This payload carrying its bytes, for executors whose workers cannot read our files."""
        return Payload(self.digest, self.path, Path(self.path).read_bytes())

    def without_data(self) -> Payload:
        return Payload(self.digest, self.path, None)


def _write(path: str, body: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(body)
    os.replace(tmp, path)


@dataclass(frozen=True)
class LoadedWorkload:
    digest: str
    path: str  # a local file holding it (for the isolated runner this process starts)
    inputs: tuple
    outputs: tuple
    arrays: list
    expected: list
    target: object  # kd.Target
    fuse: bool


_loaded: dict = {}
_lock = threading.Lock()


def discard(p: Payload) -> None:
    """Forget a payload in this process and remove its file (the tuner, when a run is over)."""
    with _lock:
        _loaded.pop(p.path, None)
    if p.path:
        try:
            os.remove(p.path)
            os.rmdir(os.path.dirname(p.path))
        except OSError:
            pass


def local_path(p: Payload) -> str:
    """A file on this machine holding the payload: its own path when readable here, else the bytes
    written once into this machine's temporary folder."""
    if p.path and os.path.exists(p.path):
        return p.path
    if p.data is None:
        raise FileNotFoundError(f"the tuning workload {p.path} is not on this machine and its bytes did not "
                                f"travel with the task; pass executor= a dask Client (it scatters them)")
    path = os.path.join(tempfile.gettempdir(), f"kerneldsl-workload-{p.digest}.pkl")
    if not os.path.exists(path):
        _write(path, p.data)
    return path


def load(p: Payload | str) -> LoadedWorkload:
    """The workload of a payload (or of a payload file), loaded once per process."""
    from ..target import Target
    path = p if isinstance(p, str) else local_path(p)
    with _lock:
        got = _loaded.get(path)
        if got is not None:
            return got
        with open(path, "rb") as f:
            d = pickle.load(f)
        inputs, outputs = serialize.loads(d["graph"])
        digest = os.path.basename(path).rsplit("-", 1)[-1].split(".")[0]
        got = LoadedWorkload(digest, path, inputs, outputs, d["arrays"], d["expected"], Target.from_dict(d["target"]),
                             d["fuse"])
        _loaded[path] = got
        return got


__all__ = ["LoadedWorkload", "Payload", "discard", "load", "local_path"]
