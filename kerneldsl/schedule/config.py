"""A `Config`: everything that decides the kernels of a build, as one JSON-serialisable value.

    cfg = kd.schedule(C).config          # the default schedule, every choice written out
    cfg.to_json()                        # {"target": {...}, "fuse": true, "steps": [...]}
    f = kd.build([A, B], [C], config=kd.Config.from_json(text))   # the same kernels again

The steps are the schedule's trace: per kernel a `template` step (which template runs it and
every knob) and the loop primitives applied after it (split, reorder, parallel, ...). Users
edit a Config through `kd.schedule` and its primitives; the tuner searches the same steps; a
build hashes it into its cache key, and `f.config` is the one a function was built from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..errors import ScheduleError

STEP_KEYS = ("primitive", "kernel", "loop", "loops", "factor", "factors", "axis", "tensor", "template", "knobs")


@dataclass
class Trace:
    """The steps of a schedule, in the order they were applied (a mutable list, replayable)."""
    steps: list = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(self.steps, indent=None)

    @staticmethod
    def from_json(text: str) -> Trace:
        steps = json.loads(text)
        if not isinstance(steps, list) or not all(isinstance(s, dict) and "primitive" in s for s in steps):
            raise ScheduleError("a trace is a JSON list of steps, each an object with a 'primitive'")
        return Trace(steps)

    def __str__(self) -> str:
        return "\n".join(step_str(s) for s in self.steps)


def step_str(s: dict) -> str:
    return f"{s['primitive']}(" + ", ".join(f"{k}={v!r}" for k, v in s.items() if k != "primitive") + ")"


@dataclass(frozen=True)
class Config:
    target: object  # a kerneldsl.Target
    steps: tuple = ()
    fuse: bool = True

    @property
    def trace(self) -> Trace:
        return Trace([dict(s) for s in self.steps])

    def to_dict(self) -> dict:
        return {"target": self.target.to_dict(), "fuse": self.fuse, "steps": [dict(s) for s in self.steps]}

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    @staticmethod
    def from_dict(d: dict) -> Config:
        from ..target import Target
        if not isinstance(d, dict) or "target" not in d or "steps" not in d:
            raise ScheduleError("a config is an object with 'target' and 'steps' (and 'fuse')")
        steps = d["steps"]
        if not isinstance(steps, list) or not all(isinstance(s, dict) and "primitive" in s for s in steps):
            raise ScheduleError("a config's steps are a list of objects, each with a 'primitive'")
        return Config(Target.from_dict(d["target"]), tuple(steps), bool(d.get("fuse", True)))

    @staticmethod
    def from_json(text: str) -> Config:
        try:
            d = json.loads(text)
        except ValueError as e:
            raise ScheduleError(f"a config must be JSON: {e}") from None
        return Config.from_dict(d)

    def digest(self) -> str:
        """A short hash of the whole config: generated source carries it, so the cache keys on it."""
        import hashlib
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def template_of(self, kernel: str) -> dict | None:
        """The last template step of a kernel: {"template": ..., "knobs": {...}}."""
        for s in reversed(self.steps):
            if s["primitive"] == "template" and s.get("kernel") == kernel:
                return s
        return None

    def __str__(self) -> str:
        lines = [f"target {self.target}", f"fuse {self.fuse}"]
        return "\n".join(lines + [step_str(s) for s in self.steps])
