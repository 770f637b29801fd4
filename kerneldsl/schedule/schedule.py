"""The user-facing schedule: the kernels of a build, their templates and loop nests, changed by
primitives and recorded as steps (a replayable trace; with the target, a `Config`).

    s = kd.schedule(C)                     # the default schedule: every choice is a step
    print(s)                               # what runs, kernel by kernel
    s.knobs(C, kc=128)                     # C runs the GEMM template: tune its knobs
    s.template(C, "loops")                 # ... or run its loop nest, scheduled by hand:
    i, j, r = s.loops(C)
    io, ii = s.split(i, 32); s.parallel(io)
    f = kd.build([A, B], [C], schedule=s)  # or config=s.config, or config=s.config.to_json()

Replaying the steps on the same graph gives the same kernels (`kd.schedule(C, trace=...)`).
A kernel without a `template` step in a given trace gets its default steps first.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, replace

from ..errors import ScheduleError
from ..ir.lower import Kernel, Module, lower
from ..ir.rules import rewrite_graph as graph_rewrites
from ..ir.tensor import ComputeOp, Placeholder, Tensor, topo_order, unify_sizes
from ..target import Target
from . import primitives as P
from .config import Config, Trace
from .defaults import apply_template, default_steps, loop_marks_allowed, steps_for
from .fuse import fuse as fuse_graph
from .fuse import is_injective
from .reuse import reuse_through_output
from .templates import family


@dataclass(frozen=True)
class LoopRef:
    """A handle on one loop of one kernel."""
    kernel: str
    name: str

    def __str__(self) -> str:
        return f"{self.kernel}.{self.name}"


KIND_PRIMITIVES = {"vectorize": "vectorized", "parallel": "parallel", "parallel_reduce": "parallel",
                   "unroll": "unrolled", "serial": "serial"}
GPU_AXES = {"blockIdx.x": "block_x", "blockIdx.y": "block_y", "blockIdx.z": "block_z",
            "threadIdx.x": "thread_x", "threadIdx.y": "thread_y", "threadIdx.z": "thread_z"}
LOOP_PRIMITIVES = ("split", "tile", "reorder", "fuse", "unroll", "vectorize", "parallel", "parallel_reduce", "bind",
                   "serial",
                   "decompose_reduction", "partition", "rfactor", "cache_read", "cache_write", "compute_at", "reuse_output")


def _call(name, fn, *args):
    return fn(*args)


def front(outputs, inputs, fuse: bool, inline=(), run=_call) -> Module:
    """The plain module: the graph rewritten by the graph rule sets, fused (with the tensors named
    in `inline` inlined), every kernel its plain loop nest. `run(name, fn, *args)` runs each
    pass (the pipeline's logs them)."""
    counts = collections.Counter()
    graph = run("unify_sizes", unify_sizes, tuple(outputs), tuple(inputs))
    graph = run("rewrite", rewrite_graph, graph, counts)
    fused = run("fuse", fuse_graph, graph, fuse, tuple(inline))
    module = run("lower", lower, list(inputs), list(fused.outputs), fused.fused)
    return replace(module, rewrites=dict(counts))


def rewrite_graph(outputs, counts: collections.Counter | None = None) -> tuple:
    """The graph rewrite pass: the phases of ir/rules.py (canonicalize, stabilize, specialize)
    on every op body, in order, then CSE of the ops; `counts` adds up which rules fired. A
    rewrite that drops a read keeps its range checks (ir/lower.checks_kept)."""
    return graph_rewrites(outputs, counts)


class Schedule:
    def __init__(self, outputs, inputs=None, trace: Trace | None = None, fuse: bool = True, target=None):
        outputs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
        self.outputs = tuple(outputs)
        order = topo_order(self.outputs)
        self.inputs = tuple(inputs) if inputs is not None else tuple(t for t in order if isinstance(t, Placeholder))
        self.fuse_enabled = fuse
        self.target = Target.resolve(target)
        self._replay(list(trace.steps) if trace is not None else [])

    @staticmethod
    def on(outputs, inputs, plain: Module, steps, config: Config) -> Schedule:
        """The schedule of `config` applied to `plain` (the module front() made for its inlines)."""
        s = Schedule.__new__(Schedule)
        s.outputs, s.inputs = tuple(outputs), tuple(inputs)
        s.fuse_enabled, s.target = config.fuse, config.target
        s._replay(list(steps), plain)
        return s

    # --- state ---------------------------------------------------------------------
    def _replay(self, steps: list, plain: Module | None = None) -> None:
        """Lower the graph afresh and apply `steps`, defaults first for kernels they do not template."""
        inline = [self._inlinable(st["tensor"]).name for st in steps if st.get("primitive") == "compute_inline"]
        self.plain = plain if plain is not None else front(self.outputs, self.inputs, self.fuse_enabled, inline)
        templated = {st.get("kernel") for st in steps if st.get("primitive") == "template"}
        defaults = [st for k in self.plain.kernels if k.name not in templated for st in default_steps(k, self.target)]
        self.module = self.plain
        self.trace = Trace()
        for st in defaults + steps:
            self.apply(st)

    def kernel(self, name: str) -> Kernel:
        """The kernel named `name`, else the kernel computing the tensor named `name` (kernel names
        are unique; tensor names need not be, and a renamed kernel's op keeps its name)."""
        for k in self.module.kernels:
            if k.name == name:
                return k
        for k in self.module.kernels:
            if k.op.name == name:
                return k
        raise ScheduleError(f"no kernel named {name!r}; kernels: {', '.join(k.name for k in self.module.kernels)}")

    def _set(self, kernel: Kernel, new: Kernel) -> None:
        ks = tuple(new if k is kernel else k for k in self.module.kernels)
        m = self.module
        self.module = replace(m, kernels=ks)

    def _set_body(self, kernel: Kernel, body) -> None:
        self._set(kernel, Kernel(kernel.name, kernel.op, body, kernel.fused, kernel.template, kernel.knobs,
                                 kernel.plan, kernel.axis_vars))

    @property
    def config(self) -> Config:
        """This schedule as data: the target, fusion and every step (JSON with .to_json())."""
        return Config(self.target, tuple(dict(st) for st in self.trace.steps), self.fuse_enabled)

    def __str__(self) -> str:
        return str(self.module)

    # --- handles -------------------------------------------------------------------
    def loops(self, tensor) -> tuple[LoopRef, ...]:
        """Handles on the loops of the kernel computing `tensor`, outermost first."""
        k = self.kernel(_name(tensor))
        return tuple(LoopRef(k.name, lp.var.name) for lp in P.loops(k.body))

    @staticmethod
    def _ref(loop) -> LoopRef:
        if not isinstance(loop, LoopRef):
            raise ScheduleError(f"expected a loop handle from s.loops(...), got {loop!r}")
        return loop

    # --- replay ----------------------------------------------------------------------
    def apply(self, step: dict):
        """Apply one recorded step (a dict of a trace); returns what the primitive returns."""
        step = {k: v for k, v in dict(step).items()}
        prim = step.get("primitive")
        if prim == "template":
            return self._template(step)
        if prim == "compute_inline":
            return self._record(step)  # applied when the graph was lowered (see _replay)
        if prim not in LOOP_PRIMITIVES:
            raise ScheduleError(f"unknown schedule primitive {prim!r}")
        k = self.kernel(step["kernel"])
        loop_marks_allowed(k, prim)
        result = getattr(self, "_" + prim)(k, step)
        self._record({**step, "kernel": k.name})
        return result

    def _record(self, step: dict) -> None:
        self.trace.steps.append(step)

    def _template(self, step: dict):
        k = self.kernel(step["kernel"])
        self._set(k, apply_template(k, step["template"], dict(step.get("knobs") or {}), self.target))
        k = self.kernel(step["kernel"])
        self._record({"primitive": "template", "kernel": k.name, "template": k.template, "knobs": dict(k.knobs)})

    # --- templates and knobs ---------------------------------------------------------
    def template(self, tensor, name: str, **knobs) -> None:
        """Run the kernel computing `tensor` with template `name` (see schedule/templates.py),
        from its plain loop nest: the kernel's earlier steps are replaced by the template's
        defaults (for `loops` on the CPU: its parallel and vectorized marks)."""
        k = self.kernel(_name(tensor))
        plain = next(p for p in self.plain.kernels if p.name == k.name)
        rest = [st for st in self.trace.steps if st.get("kernel") != k.name]
        self._replay(rest + steps_for(plain, name, knobs, self.target))

    def knobs(self, tensor, **values) -> None:
        """Change knobs of the template running the kernel of `tensor`: `s.knobs(C, kc=128)`."""
        k = self.kernel(_name(tensor))
        steps = [dict(st) for st in self.trace.steps]
        for st in reversed(steps):
            if st.get("primitive") == "template" and st.get("kernel") == k.name:
                st["knobs"] = {**st.get("knobs", {}), **values}
                break
        self._replay(steps)

    # --- loop primitives (each records a step) ---------------------------------------
    def split(self, loop: LoopRef, factor: int) -> tuple[LoopRef, LoopRef]:
        loop = self._ref(loop)
        return self.apply({"primitive": "split", "kernel": loop.kernel, "loop": loop.name, "factor": factor})

    def _split(self, k: Kernel, st: dict):
        body, o, i = P.split(k.body, st["loop"], st["factor"])
        self._set_body(k, body)
        return LoopRef(k.name, o), LoopRef(k.name, i)

    def tile(self, x: LoopRef, y: LoopRef, fx: int, fy: int):
        """split both loops and bring the two inner loops inside: (xo, yo, xi, yi)."""
        x, y = self._ref(x), self._ref(y)
        return self.apply({"primitive": "tile", "kernel": x.kernel, "loops": [x.name, y.name], "factors": [fx, fy]})

    def _tile(self, k: Kernel, st: dict):
        (x, y), (fx, fy) = st["loops"], st["factors"]
        body, xo, xi = P.split(k.body, x, fx)
        body, yo, yi = P.split(body, y, fy)
        self._set_body(k, P.reorder(body, [xo, yo, xi, yi]))
        return tuple(LoopRef(k.name, n) for n in (xo, yo, xi, yi))

    def reorder(self, *loops: LoopRef) -> None:
        refs = [self._ref(lp) for lp in loops]
        if len({r.kernel for r in refs}) != 1:
            raise ScheduleError("reorder: all loops must belong to the same kernel")
        self.apply({"primitive": "reorder", "kernel": refs[0].kernel, "loops": [r.name for r in refs]})

    def _reorder(self, k: Kernel, st: dict):
        self._set_body(k, P.reorder(k.body, list(st["loops"])))

    def fuse(self, outer: LoopRef, inner: LoopRef) -> LoopRef:
        outer, inner = self._ref(outer), self._ref(inner)
        return self.apply({"primitive": "fuse", "kernel": outer.kernel, "loops": [outer.name, inner.name]})

    def _fuse(self, k: Kernel, st: dict):
        body, name = P.fuse(k.body, *st["loops"])
        self._set_body(k, body)
        return LoopRef(k.name, name)

    def _mark(self, prim: str, loop: LoopRef) -> None:
        loop = self._ref(loop)
        self.apply({"primitive": prim, "kernel": loop.kernel, "loop": loop.name})

    def _kind(self, k: Kernel, st: dict):
        kind = KIND_PRIMITIVES[st["primitive"]]
        if kind in ("parallel", "vectorized") and family(self.target) == "cuda":
            raise ScheduleError(f"{st['primitive']}: a CUDA kernel's loops run on blocks and threads; use "
                                f"bind(loop, 'blockIdx.x' / 'threadIdx.x')")
        self._set_body(k, P.set_kind(k.body, st["loop"], kind, reduction=st["primitive"] == "parallel_reduce"))

    _vectorize = _parallel = _parallel_reduce = _unroll = _serial = _kind

    def vectorize(self, loop: LoopRef) -> None:
        self._mark("vectorize", loop)

    def parallel(self, loop: LoopRef) -> None:
        self._mark("parallel", loop)

    def parallel_reduce(self, loop: LoopRef) -> None:
        """Run a sum/product reduction loop on threads: each sums a share, OpenMP's reduction
        clause combines them (the order of the additions then depends on the thread count)."""
        self._mark("parallel_reduce", loop)

    def unroll(self, loop: LoopRef) -> None:
        self._mark("unroll", loop)

    def serial(self, loop: LoopRef) -> None:
        self._mark("serial", loop)

    def bind(self, loop: LoopRef, axis: str) -> None:
        """Bind a loop to a GPU grid axis ('blockIdx.x', 'threadIdx.x', ...)."""
        loop = self._ref(loop)
        self.apply({"primitive": "bind", "kernel": loop.kernel, "loop": loop.name, "axis": axis})

    def _bind(self, k: Kernel, st: dict):
        if st["axis"] not in GPU_AXES:
            raise ScheduleError(f"bind: unknown GPU axis {st['axis']!r}; use one of {', '.join(GPU_AXES)}")
        if family(self.target) != "cuda":
            raise ScheduleError(f"bind: loop {st['loop']!r} of kernel {k.name} would run on a GPU axis, but this "
                                f"schedule is for target {self.target.kind}; make it with kd.schedule(..., "
                                f"target='cuda') (or 'cuda-emu')")
        self._set_body(k, P.set_kind(k.body, st["loop"], GPU_AXES[st["axis"]]))

    def decompose_reduction(self, loop: LoopRef) -> None:
        """Accumulate the reduction below `loop` in the output array (see primitives.py), so that
        its loops can be reordered with the output loops."""
        self._mark("decompose_reduction", loop)

    def _decompose_reduction(self, k: Kernel, st: dict):
        self._set_body(k, P.decompose_reduction(k.body, st["loop"]))

    def partition(self, loop: LoopRef) -> None:
        """Run `loop` as three loops, below, inside and above the range of its variable that a
        select in its body tests (a padded read), each without the test (see primitives.py)."""
        self._mark("partition", loop)

    def _partition(self, k: Kernel, st: dict):
        self._set_body(k, P.partition(k.body, st["loop"]))

    def rfactor(self, loop: LoopRef, factor: int) -> tuple[LoopRef, LoopRef]:
        """Split the reduction loop `loop` into `factor` partial reductions (loop r_o, each over a
        chunk r_i) combined in order afterwards; r_o can then be made parallel. See rfactor.py."""
        loop = self._ref(loop)
        return self.apply({"primitive": "rfactor", "kernel": loop.kernel, "loop": loop.name, "factor": factor})

    def _rfactor(self, k: Kernel, st: dict):
        from .rfactor import rfactor
        body, o, i = rfactor(k.body, st["loop"], st["factor"])
        self._set_body(k, body)
        return LoopRef(k.name, o), LoopRef(k.name, i)

    def reuse_output(self, tensor) -> None:
        """Store a row reduction's costly term in the output row and read it back (schedule/reuse.py)."""
        self.apply({"primitive": "reuse_output", "kernel": self.kernel(_name(tensor)).name})

    def _reuse_output(self, k: Kernel, st: dict):
        out = next(b for b in self.module.buffers if b.name == k.name)
        new = reuse_through_output(k.body, out)
        if new is k.body:
            raise ScheduleError(f"reuse_output: kernel {k.name} is not a row reduction whose output row can hold "
                                f"a costly term of the reduction")
        self._set_body(k, new)

    def _memory(self, prim: str, tensor, loop: LoopRef) -> None:
        loop = self._ref(loop)
        self.apply({"primitive": prim, "kernel": loop.kernel, "loop": loop.name, "tensor": _name(tensor)})

    def _cache(self, k: Kernel, st: dict):
        from . import memory
        buf = next((b for b, t in self.module.tensors.items() if t.name == st["tensor"]), None)
        body = getattr(memory, st["primitive"])(k.body, buf.name if buf is not None else st["tensor"], st["loop"])
        self._set_body(k, body)

    _cache_read = _cache_write = _cache

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
        self._memory("compute_at", tensor, loop)

    def _compute_at(self, ck: Kernel, st: dict):
        from .memory import accesses, compute_at
        name = st["tensor"]
        pk = next((k for k in self.module.kernels if k.op.name == name or k.name == name), None)
        if pk is None:
            raise ScheduleError(f"compute_at: no kernel computes {name!r} (inlined, or not in this graph)")
        if pk is ck:
            raise ScheduleError(f"compute_at: {name} is computed by kernel {ck.name} itself")
        loop_marks_allowed(pk, "compute_at")
        pbuf = next(b for b in self.module.buffers if b.name == pk.name)
        if pbuf.role == "output":
            raise ScheduleError(f"compute_at: {name} is an output of the build; compute_at handles temporaries "
                                f"read by one consumer")
        readers = [k.name for k in self.module.kernels if k is not pk and accesses(k.body, pbuf)]
        if readers != [ck.name]:
            raise ScheduleError(f"compute_at: {name} is read by kernels {', '.join(readers) or 'none'}; "
                                f"compute_at needs {ck.name} to be its only reader")
        body = compute_at(pk.body, pbuf, ck.body, st["loop"])
        m = self.module
        ks = tuple(Kernel(k.name, k.op, body, k.fused, k.template, k.knobs, k.plan, k.axis_vars) if k is ck else k
                   for k in m.kernels if k is not pk)
        self.module = replace(m, kernels=ks)
        # the producer's own steps (its template) stay in the trace: replay applies them before this one

    # --- the graph ---------------------------------------------------------------------
    def _inlinable(self, name: str) -> ComputeOp:
        matches = [t for t in topo_order(self.outputs) if isinstance(t, ComputeOp) and t.name == name]
        if not matches:
            raise ScheduleError(f"compute_inline: no computed tensor named {name!r} in this graph")
        t = matches[0]
        if t in self.outputs:
            raise ScheduleError(f"compute_inline: {name} is an output of the build; it must be stored")
        if not is_injective(t):
            raise ScheduleError(f"compute_inline: {name} contains a reduction; only elementwise or "
                                f"injective tensors can be inlined")
        return t

    def compute_inline(self, tensor) -> None:
        """Inline an elementwise producer into its consumers (no array for it)."""
        name = _name(tensor)
        self._inlinable(name)
        kernel = next((k.name for k in self.plain.kernels if k.op.name == name), name)
        steps = [st for st in self.trace.steps if st.get("kernel") != kernel]
        self._replay(steps + [{"primitive": "compute_inline", "tensor": name}])


def _name(tensor) -> str:
    return tensor.name if isinstance(tensor, Tensor) else str(tensor)


def schedule(outputs, inputs=None, trace: Trace | None = None, fuse: bool = True, target=None) -> Schedule:
    """The default schedule of the kernels computing `outputs` on `target` (default: this CPU),
    ready to be changed."""
    return Schedule(outputs, inputs, trace, fuse, target)
