"""kd.build: the pipeline from tensors to a callable, as a readable list of named steps."""

from __future__ import annotations

import logging
import os
import time

from .errors import ShapeError
from .ir.lower import lower
from .ir.tensor import ComputeOp, Placeholder, Tensor
from .shapes import check_bindable

log = logging.getLogger("kerneldsl")
TARGETS = ("c", "cuda", "cuda-emu")


def _debug_level() -> int:
    try:
        return int(os.environ.get("KERNELDSL_DEBUG", "0"))
    except ValueError:
        return 0


def _step(name: str, fn, *args):
    t0 = time.perf_counter()
    result = fn(*args) if args else fn()
    level = _debug_level()
    if level >= 1:
        print(f"[kerneldsl] {name}: {1e3 * (time.perf_counter() - t0):.2f} ms")
    if level >= 2:
        print(result if isinstance(result, str) else str(result))
    return result


def build(inputs, outputs, target: str = "c", name: str | None = None, fuse: bool = True, schedule=None):
    """Compile `outputs` as functions of the placeholders `inputs`: `f = kd.build([A, B], [C])`."""
    from .codegen.c import render
    from .runtime.build import compile_c
    from .runtime.callable import Function

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
    if target not in TARGETS:
        raise ValueError(f"build: unknown target {target!r}; available: {', '.join(TARGETS)}")
    check_bindable(inputs, [t.shape for t in outputs])
    if schedule is not None:
        if tuple(schedule.outputs) != tuple(outputs):
            raise ValueError("build: the schedule was made for other outputs "
                             f"({', '.join(t.name for t in schedule.outputs)})")
        from .schedule.schedule import Schedule
        # replaying the trace on this build's input order gives the same kernels
        module = _step("schedule", lambda: Schedule(outputs, inputs, schedule.trace, schedule.fuse_enabled).module)
    else:
        from .schedule.fuse import fuse as fuse_graph
        graph = _step("fuse", fuse_graph, outputs, fuse)
        module = _step("lower", lower, inputs, list(graph.outputs), graph.fused)
    _check_target_kinds(module, target)
    if target in ("cuda", "cuda-emu"):
        return _build_cuda(module, inputs, outputs, target, name or outputs[0].name)
    source = _step("codegen c", render, module)
    lib = _step("compile", lambda s: compile_c(s, name=name or outputs[0].name), source)
    return Function(module, lib.lib, source, inputs, outputs, lib.source_path)


def _check_target_kinds(module, target: str) -> None:
    from .errors import ScheduleError
    from .schedule.primitives import loops
    if target != "c":
        return
    for k in module.kernels:
        for lp in loops(k.body):
            if lp.kind.startswith(("block_", "thread_")):
                raise ScheduleError(f"kernel {k.name}: loop {lp.var.name!r} is bound to a GPU axis "
                                    f"({lp.kind}); build it with target='cuda' or drop the bind")


def _build_cuda(module, inputs, outputs, target: str, name: str):
    from .codegen.cuda import render
    from .runtime.build import kerneldsl_version
    source = _step("codegen cuda", lambda m: render(m, version=kerneldsl_version()), module)
    if target == "cuda-emu":
        from .runtime.emulator import make_emulated_function
        return _step("compile (emulator)", make_emulated_function, module, source, inputs, outputs, name)
    from .runtime.cuda import compile_cubin, make_gpu_function
    cubin = _step("compile (nvcc)", lambda s: compile_cubin(s.text, name=name), source)
    return make_gpu_function(module, source, cubin, inputs, outputs)


__all__ = ["ShapeError", "build"]
