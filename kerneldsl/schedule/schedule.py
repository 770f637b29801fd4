"""The user-facing schedule: a default loop nest per kernel, changed by primitives, recorded as a trace.

    s = kd.schedule(C)                     # the default schedule, as an (empty) trace
    i, j = s.loops(C)
    io, ii = s.split(i, 32); s.vectorize(ii); s.parallel(io)
    print(s)                               # the loop nest
    f = kd.build([A, B], [C], schedule=s)
    s.trace.to_json()                      # replayable on the same workload

The trace is the tuning record: replaying it on the same graph gives the same
kernels (`kd.schedule(C, trace=Trace.from_json(text))`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..errors import ScheduleError
from ..ir.lower import Kernel, Module, lower
from ..ir.tensor import ComputeOp, Placeholder, Tensor, topo_order
from . import primitives as P
from .fuse import fuse as fuse_graph


@dataclass(frozen=True)
class LoopRef:
    """A handle on one loop of one kernel."""
    kernel: str
    name: str

    def __str__(self) -> str:
        return f"{self.kernel}.{self.name}"


@dataclass
class Trace:
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
        return "\n".join(
            f"{s['primitive']}(" + ", ".join(f"{k}={v!r}" for k, v in s.items() if k != "primitive") + ")"
            for s in self.steps)


LOOP_PRIMITIVES = ("split", "tile", "reorder", "fuse", "unroll", "vectorize", "parallel", "bind", "serial",
                   "decompose_reduction")
GPU_AXES = {"blockIdx.x": "block_x", "blockIdx.y": "block_y", "blockIdx.z": "block_z",
            "threadIdx.x": "thread_x", "threadIdx.y": "thread_y", "threadIdx.z": "thread_z"}


class Schedule:
    def __init__(self, outputs, inputs=None, trace: Trace | None = None, fuse: bool = True):
        outputs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
        self.outputs = tuple(outputs)
        order = topo_order(self.outputs)
        self.inputs = tuple(inputs) if inputs is not None else tuple(t for t in order if isinstance(t, Placeholder))
        self.fuse_enabled = fuse
        self.trace = Trace()
        self._inline: set = set()
        self._relower()
        for step in (trace.steps if trace is not None else []):
            self.apply(step)

    # --- state ---------------------------------------------------------------------
    def _relower(self) -> None:
        graph = fuse_graph(self.outputs, self.fuse_enabled, force=self._inline)
        self.module: Module = lower(list(self.inputs), list(graph.outputs), graph.fused)

    def kernel(self, name: str) -> Kernel:
        for k in self.module.kernels:
            if k.name == name or k.op.name == name:
                return k
        raise ScheduleError(f"no kernel named {name!r}; kernels: {', '.join(k.name for k in self.module.kernels)}")

    def _set_body(self, kernel: Kernel, body) -> None:
        ks = tuple(Kernel(k.name, k.op, body, k.fused) if k is kernel else k for k in self.module.kernels)
        m = self.module
        self.module = Module(m.inputs, m.outputs, m.temps, m.sizes, ks, m.checks, m.errors, m.tensors)

    def __str__(self) -> str:
        return str(self.module)

    # --- handles -------------------------------------------------------------------
    def loops(self, tensor) -> tuple[LoopRef, ...]:
        """Handles on the loops of the kernel computing `tensor`, outermost first."""
        k = self.kernel(tensor.name if isinstance(tensor, Tensor) else str(tensor))
        return tuple(LoopRef(k.name, lp.var.name) for lp in P.loops(k.body))

    @staticmethod
    def _ref(loop) -> LoopRef:
        if not isinstance(loop, LoopRef):
            raise ScheduleError(f"expected a loop handle from s.loops(...), got {loop!r}")
        return loop

    # --- primitives (each records a step) ------------------------------------------
    def apply(self, step: dict):
        step = dict(step)
        prim = step.get("primitive")
        if prim == "compute_inline":
            return self.compute_inline(step["tensor"])
        if prim == "compute_at":
            return self.compute_at(step["tensor"], LoopRef(step["kernel"], step["loop"]))
        if prim in ("cache_read", "cache_write"):
            return getattr(self, prim)(step["tensor"], LoopRef(step["kernel"], step["loop"]))
        if prim == "rfactor":
            return self.rfactor(LoopRef(step["kernel"], step["loop"]), step["factor"])
        if prim not in LOOP_PRIMITIVES:
            raise ScheduleError(f"unknown schedule primitive {prim!r}")
        k = self.kernel(step["kernel"])
        ref = lambda n: LoopRef(k.name, n)
        if prim == "split":
            return self.split(ref(step["loop"]), step["factor"])
        if prim == "tile":
            return self.tile(ref(step["loops"][0]), ref(step["loops"][1]), *step["factors"])
        if prim == "reorder":
            return self.reorder(*[ref(n) for n in step["loops"]])
        if prim == "fuse":
            return self.fuse(ref(step["loops"][0]), ref(step["loops"][1]))
        if prim == "bind":
            return self.bind(ref(step["loop"]), step["axis"])
        return getattr(self, prim)(ref(step["loop"]))

    def _record(self, step: dict) -> None:
        self.trace.steps.append(step)

    def split(self, loop: LoopRef, factor: int) -> tuple[LoopRef, LoopRef]:
        loop = self._ref(loop)
        k = self.kernel(loop.kernel)
        body, o, i = P.split(k.body, loop.name, factor)
        self._set_body(k, body)
        self._record({"primitive": "split", "kernel": k.name, "loop": loop.name, "factor": factor})
        return LoopRef(k.name, o), LoopRef(k.name, i)

    def tile(self, x: LoopRef, y: LoopRef, fx: int, fy: int):
        """split both loops and bring the two inner loops inside: (xo, yo, xi, yi)."""
        n = len(self.trace.steps)
        xo, xi = self.split(x, fx)
        yo, yi = self.split(y, fy)
        self.reorder(xo, yo, xi, yi)
        del self.trace.steps[n:]
        self._record({"primitive": "tile", "kernel": x.kernel, "loops": [x.name, y.name], "factors": [fx, fy]})
        return xo, yo, xi, yi

    def reorder(self, *loops: LoopRef) -> None:
        refs = [self._ref(lp) for lp in loops]
        if len({r.kernel for r in refs}) != 1:
            raise ScheduleError("reorder: all loops must belong to the same kernel")
        k = self.kernel(refs[0].kernel)
        self._set_body(k, P.reorder(k.body, [r.name for r in refs]))
        self._record({"primitive": "reorder", "kernel": k.name, "loops": [r.name for r in refs]})

    def fuse(self, outer: LoopRef, inner: LoopRef) -> LoopRef:
        outer, inner = self._ref(outer), self._ref(inner)
        k = self.kernel(outer.kernel)
        body, name = P.fuse(k.body, outer.name, inner.name)
        self._set_body(k, body)
        self._record({"primitive": "fuse", "kernel": k.name, "loops": [outer.name, inner.name]})
        return LoopRef(k.name, name)

    def _kind(self, prim: str, loop: LoopRef, kind: str) -> None:
        loop = self._ref(loop)
        k = self.kernel(loop.kernel)
        self._set_body(k, P.set_kind(k.body, loop.name, kind))
        self._record({"primitive": prim, "kernel": k.name, "loop": loop.name})

    def vectorize(self, loop: LoopRef) -> None:
        self._kind("vectorize", loop, "vectorized")

    def parallel(self, loop: LoopRef) -> None:
        self._kind("parallel", loop, "parallel")

    def unroll(self, loop: LoopRef) -> None:
        self._kind("unroll", loop, "unrolled")

    def serial(self, loop: LoopRef) -> None:
        self._kind("serial", loop, "serial")

    def bind(self, loop: LoopRef, axis: str) -> None:
        """Bind a loop to a GPU grid axis ('blockIdx.x', 'threadIdx.x', ...)."""
        if axis not in GPU_AXES:
            raise ScheduleError(f"bind: unknown GPU axis {axis!r}; use one of {', '.join(GPU_AXES)}")
        loop = self._ref(loop)
        k = self.kernel(loop.kernel)
        self._set_body(k, P.set_kind(k.body, loop.name, GPU_AXES[axis]))
        self._record({"primitive": "bind", "kernel": k.name, "loop": loop.name, "axis": axis})

    def decompose_reduction(self, loop: LoopRef) -> None:
        """Accumulate the reduction below `loop` in the output array (see primitives.py), so that
        its loops can be reordered with the output loops."""
        loop = self._ref(loop)
        k = self.kernel(loop.kernel)
        self._set_body(k, P.decompose_reduction(k.body, loop.name))
        self._record({"primitive": "decompose_reduction", "kernel": k.name, "loop": loop.name})

    def rfactor(self, loop: LoopRef, factor: int) -> tuple[LoopRef, LoopRef]:
        """Split the reduction loop `loop` into `factor` partial reductions (loop r_o, each over a
        chunk r_i) combined in order afterwards; r_o can then be made parallel. See rfactor.py."""
        from .rfactor import rfactor
        loop = self._ref(loop)
        k = self.kernel(loop.kernel)
        body, o, i = rfactor(k.body, loop.name, factor)
        self._set_body(k, body)
        self._record({"primitive": "rfactor", "kernel": k.name, "loop": loop.name, "factor": factor})
        return LoopRef(k.name, o), LoopRef(k.name, i)

    def _memory(self, prim: str, tensor, loop: LoopRef) -> None:
        from . import memory
        loop = self._ref(loop)
        k = self.kernel(loop.kernel)
        name = tensor.name if isinstance(tensor, Tensor) else str(tensor)
        buf = next((b for b, t in self.module.tensors.items() if t.name == name), None)
        self._set_body(k, getattr(memory, prim)(k.body, buf.name if buf is not None else name, loop.name))
        self._record({"primitive": prim, "kernel": k.name, "loop": loop.name, "tensor": name})

    def cache_write(self, tensor, loop: LoopRef) -> None:
        """Accumulate the tile of `tensor` written inside `loop` in a local array, written back
        once after the loop (see memory.py for the supported form)."""
        self._memory("cache_write", tensor, loop)

    def cache_read(self, tensor, loop: LoopRef) -> None:
        """Copy the tile of `tensor` read inside `loop` into a local array before the loop (packing)."""
        self._memory("cache_read", tensor, loop)

    def compute_at(self, tensor, loop: LoopRef) -> None:
        """Compute the producer `tensor` row by row inside the consumer's `loop` (its kernel is
        removed): the consumer must read it at row `loop` only. See memory.compute_at."""
        from .memory import compute_at
        loop = self._ref(loop)
        name = tensor.name if isinstance(tensor, Tensor) else str(tensor)
        ck = self.kernel(loop.kernel)
        pk = next((k for k in self.module.kernels if k.op.name == name or k.name == name), None)
        if pk is None:
            raise ScheduleError(f"compute_at: no kernel computes {name!r} (inlined, or not in this graph)")
        if pk is ck:
            raise ScheduleError(f"compute_at: {name} is computed by kernel {ck.name} itself")
        pbuf = next(b for b in self.module.buffers if b.name == pk.name)
        if pbuf.role == "output":
            raise ScheduleError(f"compute_at: {name} is an output of the build; compute_at handles temporaries "
                                f"read by one consumer")
        from .memory import _accesses
        readers = [k.name for k in self.module.kernels if k is not pk and _accesses(k.body, pbuf)]
        if readers != [ck.name]:
            raise ScheduleError(f"compute_at: {name} is read by kernels {', '.join(readers) or 'none'}; "
                                f"compute_at needs {ck.name} to be its only reader")
        body = compute_at(pk.body, pbuf, ck.body, loop.name)
        m = self.module
        ks = tuple(Kernel(k.name, k.op, body, k.fused) if k is ck else k for k in m.kernels if k is not pk)
        self.module = Module(m.inputs, m.outputs, m.temps, m.sizes, ks, m.checks, m.errors, m.tensors)
        self._record({"primitive": "compute_at", "kernel": ck.name, "loop": loop.name, "tensor": name})

    def compute_inline(self, tensor) -> None:
        """Inline an elementwise producer into its consumers (no array for it)."""
        name = tensor.name if isinstance(tensor, Tensor) else str(tensor)
        matches = [t for t in topo_order(self.outputs) if isinstance(t, ComputeOp) and t.name == name]
        if not matches:
            raise ScheduleError(f"compute_inline: no computed tensor named {name!r} in this graph")
        t = matches[0]
        if t in self.outputs:
            raise ScheduleError(f"compute_inline: {name} is an output of the build; it must be stored")
        from .fuse import is_injective
        if not is_injective(t):
            raise ScheduleError(f"compute_inline: {name} contains a reduction; only elementwise or "
                                f"injective tensors can be inlined")
        self._inline.add(t)
        steps = list(self.trace.steps)
        self.trace = Trace()
        self._relower()
        for st in steps:  # loop transforms of other kernels still apply
            if st.get("kernel") != name:
                self.apply(st)
        self._record({"primitive": "compute_inline", "tensor": name})


def schedule(outputs, inputs=None, trace: Trace | None = None, fuse: bool = True) -> Schedule:
    """The default schedule of the kernels computing `outputs`, ready to be changed."""
    return Schedule(outputs, inputs, trace, fuse)
