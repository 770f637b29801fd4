"""Every environment variable kerneldsl reads, in one typed, documented place.

    from kerneldsl.settings import settings
    settings.cc                  # ['cc'] unless KERNELDSL_CC says otherwise
    with settings.override(debug=2, gemm=False):
        kd.build(...)            # for this block only (this thread or task)

Each setting is read from the environment when it is used (so a test's monkeypatch.setenv
takes effect at once), unless an `override` block gives it a value. A malformed value raises
`SettingsError` naming the variable and what it accepts. `settings.describe()` is the table
the README prints.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class SettingsError(ValueError):
    """An environment variable of kerneldsl holds a value it cannot use."""


def _words(text: str) -> tuple[str, ...]:
    return tuple(shlex.split(text))


def _int(text: str) -> int:
    return int(text)


def _bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("1", "on", "true", "yes"):
        return True
    if t in ("0", "off", "false", "no"):
        return False
    raise ValueError(text)


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?", re.IGNORECASE)


def _bytes(text: str) -> int:
    m = _SIZE.fullmatch(text.strip())
    if not m:
        raise ValueError(text)
    return int(float(m.group(1)) * 1024 ** " kmgt".index(m.group(2).lower() or " "))


def _default_cache() -> str:
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(xdg, "kerneldsl")


@dataclass(frozen=True)
class Setting:
    name: str  # the attribute: settings.<name>
    env: str  # the variable
    parse: Callable[[str], Any]
    default: Any  # a value, or a function of nothing giving it
    doc: str
    accepts: str = ""

    def value(self):
        raw = os.environ.get(self.env, "").strip()
        if not raw:
            return self.default() if callable(self.default) else self.default
        try:
            return self.parse(raw)
        except ValueError:
            raise SettingsError(f"{self.env}={raw!r} is not valid: it takes {self.accepts or self.doc}") from None


SETTINGS = (
    Setting("cache", "KERNELDSL_CACHE", str, _default_cache,
            "the folder of compiled kernels (a versioned subfolder per kerneldsl version)",
            "a directory path"),
    Setting("cache_max", "KERNELDSL_CACHE_MAX", _bytes, 2 << 30,
            "the cache's size bound; least recently used entries are evicted beyond it",
            "a size in bytes, with an optional K, M, G or T suffix (500M, 2G)"),
    Setting("compile_timeout", "KERNELDSL_COMPILE_TIMEOUT", float, 600.0,
            "seconds a compiler may run before it is killed", "a number of seconds"),
    Setting("lock_timeout", "KERNELDSL_LOCK_TIMEOUT", float, None,
            "seconds to wait for another process's build of the same kernel (default: the compile "
            "timeout + 60)", "a number of seconds"),
    Setting("cache_loaded", "KERNELDSL_CACHE_LOADED", _int, 256,
            "compiled libraries kept loaded in memory (least recently used ones are released)",
            "a positive integer"),
    Setting("cc", "KERNELDSL_CC", _words, ("cc",), "the C compiler (a command, may have words: 'ccache gcc')",
            "a command line"),
    Setting("cflags", "KERNELDSL_CFLAGS", _words, None,
            "the C compiler's flags, replacing the defaults (see runtime/build.py DEFAULT_CFLAGS)",
            "compiler flags"),
    Setting("cxx", "KERNELDSL_CXX", _words, ("g++",), "the C++ compiler of the CUDA emulator", "a command line"),
    Setting("nvcc", "KERNELDSL_NVCC", str, "nvcc", "the CUDA compiler", "a command or path"),
    Setting("cuda_arch", "KERNELDSL_CUDA_ARCH", str, None,
            "the GPU architecture to compile for when no GPU is present (default sm_90)", "sm_XY or XY"),
    Setting("cuda_driver", "KERNELDSL_CUDA_DRIVER", str, "",
            "how kernels reach a GPU: pycuda or cupy (default: whichever imports)", "pycuda or cupy"),
    Setting("gemm", "KERNELDSL_GEMM", _bool, True,
            "whether contractions (matmul, conv) take the GEMM template by default", "1/0, on/off"),
    Setting("fastcall", "KERNELDSL_FASTCALL", _bool, True,
            "whether repeated calls with arrays like the last call's take the C call path (no Python "
            "between the checks and the kernels)", "1/0, on/off"),
    Setting("flags", "KERNELDSL_FLAGS", str, "",
            "kd.config defaults, comma-separated: device=cpu|cuda|cuda-emu, floatX=float32|float64, "
            "mode=FAST_RUN|FAST_COMPILE|DEBUG|PROFILE", "flag=value,flag=value"),
    Setting("rc", "KERNELDSL_RC", str, "",
            "an rc file of kd.config defaults (lines `flag = value`; default ~/.kerneldslrc)", "a file path"),
    Setting("tuning_db", "KERNELDSL_TUNING_DB", str, None,
            "the SQLite file of tuning records (default: tuning.sqlite in the cache's root folder)",
            "a file path"),
    Setting("use_records", "KERNELDSL_USE_RECORDS", _bool, True,
            "whether builds use the tuning records (kd.tune) that match their workload", "1/0, on/off"),
    Setting("fashion_mnist", "KERNELDSL_FASHION_MNIST", str, None,
            "the folder of Fashion-MNIST's IDX files for kerneldsl.datasets.fashion_mnist (default: the Debian "
            "package dataset-fashion-mnist's, /usr/share/datasets/fashion-mnist)", "a folder path"),
    Setting("debug", "KERNELDSL_DEBUG", _int, 0,
            "1 logs each pipeline pass with its time; 2 also the IR after each pass and the source",
            "0, 1 or 2"),
)
_BY_NAME = {s.name: s for s in SETTINGS}
_overrides: contextvars.ContextVar = contextvars.ContextVar("kerneldsl_settings", default={})


class Settings:
    """Attribute access reads the variable (or the active override); see SETTINGS."""

    def __getattr__(self, name: str):
        s = _BY_NAME.get(name)
        if s is None:
            raise AttributeError(f"kerneldsl has no setting {name!r}; settings: {', '.join(_BY_NAME)}")
        over = _overrides.get()
        return over[name] if name in over else s.value()

    @staticmethod
    def given(name: str) -> str | None:
        """The variable's text as the environment gives it (None when unset): for messages."""
        return os.environ.get(_BY_NAME[name].env) or None

    @contextlib.contextmanager
    def override(self, **values):
        """Give settings values for the code in this block (this thread or task only)."""
        unknown = set(values) - set(_BY_NAME)
        if unknown:
            raise SettingsError(f"unknown setting(s) {', '.join(sorted(unknown))}; settings: {', '.join(_BY_NAME)}")
        token = _overrides.set({**_overrides.get(), **values})
        try:
            yield self
        finally:
            _overrides.reset(token)

    @staticmethod
    def describe() -> str:
        """The settings as a Markdown table: variable, default, meaning."""
        rows = ["| variable | default | meaning |", "|---|---|---|"]
        for s in SETTINGS:
            d = "(see meaning)" if callable(s.default) else ("" if s.default is None else s.default)
            if isinstance(d, tuple):
                d = " ".join(d)
            rows.append(f"| `{s.env}` | {d} | {s.doc} |")
        return "\n".join(rows)


settings = Settings()
