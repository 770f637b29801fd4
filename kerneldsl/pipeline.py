"""kd.build: the compiler as one list of named passes, run in one place and logged.

    rewrite    graph rule sets on every op body (ir/rewrite.py): canonicalize, ...
    fuse       partition the graph into kernels (schedule/fuse.py)
    lower      each kernel's plain loop nest (ir/lower.py)
    schedule   the Config's steps: a template per kernel with its knobs, then loop primitives
               (schedule/schedule.py; defaults from schedule/defaults.py)
    render     C or CUDA source (codegen/c.py, codegen/cuda.py)
    compile    cc / nvcc / the emulator's C++ compiler, through the artifact cache (runtime/)
    load       the checked callable (runtime/callable.py, runtime/cuda.py)

With KERNELDSL_DEBUG=1 the `kerneldsl` logger reports each pass and its time; with 2, also the
IR after each pass and the source (Python's logging: attach your own handler, or let kerneldsl
add one printing to stderr when the variable is set).
"""

from __future__ import annotations

import importlib
import logging
import sys
import time
from pathlib import Path

from .errors import ShapeError
from .ir.tensor import ComputeOp, Placeholder, Tensor
from .settings import settings
from .shapes import check_bindable
from .target import Target

log = logging.getLogger("kerneldsl")
PASSES = ("unify_sizes", "rewrite", "fuse", "lower", "schedule", "render", "compile", "load")


_ours: dict = {}  # the level and handler KERNELDSL_DEBUG made us set, undone when it is unset


def _handler_for_debug() -> None:
    """KERNELDSL_DEBUG sets the logger's level (and prints to stderr when the program configured
    no logging); unset, the logger is left as the program configured it."""
    level = settings.debug
    if level <= 0:
        if _ours:
            log.setLevel(logging.NOTSET)
            if _ours.get("handler") is not None:
                log.removeHandler(_ours["handler"])
            _ours.clear()
        return
    log.setLevel(logging.DEBUG if level >= 2 else logging.INFO)
    _ours["level"] = True
    if "handler" not in _ours:
        h = None
        if not log.handlers and not logging.getLogger().handlers:
            h = logging.StreamHandler(sys.stderr)
            h.setFormatter(logging.Formatter("[%(name)s] %(message)s"))
            log.addHandler(h)
        _ours["handler"] = h


def run_pass(name: str, fn, *args):
    """Run one pass: INFO its name and time, DEBUG the IR it produced."""
    t0 = time.perf_counter()
    result = fn(*args)
    if log.isEnabledFor(logging.INFO):
        log.info("pass %s: %.2f ms", name, 1e3 * (time.perf_counter() - t0))
    if log.isEnabledFor(logging.DEBUG):
        log.debug("after %s:\n%s", name, _text(result))
    return result


def _text(result) -> str:
    if isinstance(result, str):
        return result
    if isinstance(result, (tuple, list)):
        return "\n".join(_text(r) for r in result)
    text = getattr(result, "text", None)  # a CUDA source
    return text if isinstance(text, str) else str(result)


def _check(inputs, outputs):
    inputs = [inputs] if isinstance(inputs, Tensor) else list(inputs)
    outputs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    for t in inputs:
        if not isinstance(t, Placeholder):
            raise TypeError(f"build: inputs must be placeholders, got {t!r}")
    for t in outputs:
        if not isinstance(t, ComputeOp):
            raise TypeError(f"build: outputs must be computed tensors, got {t!r}"
                            + (" (an input cannot also be an output)" if isinstance(t, Placeholder) else ""))
    if len(set(inputs)) != len(inputs) or len(set(outputs)) != len(outputs):
        raise ValueError("build: a tensor is listed twice among the inputs or the outputs")
    if not outputs:
        raise ValueError("build: give at least one output")
    check_bindable(inputs, [t.shape for t in outputs])
    return inputs, outputs


def _config(outputs, target, fuse: bool, schedule, config):
    """The Config to build: given (an object or its JSON), a schedule's, or the default."""
    from .schedule.config import Config
    from .schedule.templates import family
    if schedule is not None and config is not None:
        raise ValueError("build: give a schedule or a config, not both")
    if schedule is not None:
        if tuple(schedule.outputs) != tuple(outputs):
            raise ValueError("build: the schedule was made for other outputs "
                             f"({', '.join(t.name for t in schedule.outputs)})")
        config = schedule.config
    if isinstance(config, str):
        config = Config.from_json(config)
    if config is None:
        return Config(Target.resolve(target), (), fuse)
    if target is not None:
        want = Target.resolve(target)
        if family(want) != family(config.target):
            raise ValueError(f"build: the schedule/config is for target {config.target.kind}, not {want.kind}; "
                             f"make it with kd.schedule(..., target={want.kind!r})")
        config = Config(config.target.with_kind(want.kind), config.steps, config.fuse)
    return config


_record_lookups: list = []  # kerneldsl.tuning's record lookup, registered when it is imported
RECORDS_MODULE = "kerneldsl.tuning.dispatch"  # imported (it registers the lookup) once a records file exists


def register_record_lookup(lookup) -> None:
    """Tuning (a layer above) tells builds how to find records: `lookup(inputs, outputs, target,
    fuse, make)` returns the function to use instead of the default, or None."""
    _record_lookups[:] = [lookup]


def tuning_db_path() -> Path:
    """The tuning records file: $KERNELDSL_TUNING_DB, else tuning.sqlite in the cache's root folder."""
    from .runtime.cache import cache_root
    given = settings.tuning_db
    return Path(given) if given else cache_root() / "tuning.sqlite"


def _record_lookup():
    """The records' lookup for a default build, or None. `import kerneldsl` does not load the
    tuner; the first build that finds a records file loads its lookup (the one edge from here up
    to kerneldsl.tuning, taken by name at run time and only through the registered hook). Without
    a file, or with KERNELDSL_USE_RECORDS=0, this costs a settings read and a stat."""
    if not settings.use_records:
        return None
    if not _record_lookups:
        if not tuning_db_path().is_file():
            return None
        importlib.import_module(RECORDS_MODULE)
    return _record_lookups[0] if _record_lookups else None


def build(inputs, outputs, target=None, name: str | None = None, fuse: bool = True, schedule=None, config=None,
          profile: bool = False):
    """Compile `outputs` as functions of the placeholders `inputs`: `f = kd.build([A, B], [C])`.

    `target`: "c" (default), "cuda", "cuda-emu" or a kd.Target; `schedule`: a kd.schedule(...)
    to build as it stands; `config`: a kd.Config (or its JSON) to replay; `fuse=False` keeps
    every op a kernel of its own; `profile=True` times every kernel (`f.kernel_times()`)."""
    from .schedule.schedule import Schedule, front
    _handler_for_debug()
    inputs, outputs = _check(inputs, outputs)
    lookup = _record_lookup() if schedule is None and config is None else None
    if lookup is not None:  # tuning records (kerneldsl/tuning/dispatch.py)
        def make(cfg):
            return build(inputs, outputs, target, name, fuse, config=cfg or _config(outputs, target, fuse, None, None),
                         profile=profile)
        tuned = lookup(inputs, outputs, target, fuse, make)
        if tuned is not None:
            return tuned
    config = _config(outputs, target, fuse, schedule, config)
    steps = [dict(s) for s in config.steps]
    inline = [s["tensor"] for s in steps if s.get("primitive") == "compute_inline"]
    plain = front(outputs, inputs, config.fuse, inline, run=run_pass)
    sched = run_pass("schedule", lambda: Schedule.on(outputs, inputs, plain, steps, config))
    return _backend(sched.module, sched.config, inputs, outputs, name or outputs[0].name, profile)


def _backend(module, config, inputs, outputs, name: str, profile: bool = False):
    """render -> compile -> load for the config's target."""
    from .runtime.cache import kerneldsl_version
    target = config.target
    version = f"{kerneldsl_version()}; config {config.digest()}"
    if target.is_cuda:
        from .codegen.cuda import render as render_cuda
        source = run_pass("render", render_cuda, module, target, version)
        if target.kind == "cuda-emu":
            from .runtime.emulator import build_emulated, make_emulated_function
            lib = run_pass("compile", lambda: build_emulated(source.text, target, name))
            return run_pass("load", lambda: make_emulated_function(module, source, lib, inputs, outputs, config))
        from .runtime.cuda import compile_cubin, make_gpu_function
        cubin = run_pass("compile", lambda: compile_cubin(source.text, target, name))
        return run_pass("load", lambda: make_gpu_function(module, source, cubin, inputs, outputs, config))
    from .codegen.c import render
    from .runtime.build import compile_c
    from .runtime.callable import Function
    source = run_pass("render", lambda: render(module, target, version, profile=profile))
    lib = run_pass("compile", lambda: compile_c(source, target, name=name))
    return run_pass("load", lambda: Function(module, lib, source, inputs, outputs, config))


__all__ = ["PASSES", "ShapeError", "build", "register_record_lookup", "run_pass", "tuning_db_path"]
