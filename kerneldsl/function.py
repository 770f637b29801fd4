"""kd.function: Theano's `function(inputs, outputs, updates=...)` on kerneldsl's pipeline.

    train = kd.function([x, y], [p > 0.5, cost], updates=[(w, w - 0.1 * gw), (b, b - 0.1 * gb)])
    pred, c = train(X, Y)              # numpy in, numpy out; w and b updated in place

One build of one module: the outputs and the new values of the updated shared variables are the
outputs of a single `kd.build` whose inputs are the function's inputs and the shared variables
it reads, so all kernels run in one call into native code, with the inputs checked once.
Updates are written after every output is computed (all of them see the old values): each new
value lands in a spare buffer, which then becomes the variable's value, and the old value the
next spare (no copy, no allocation after the first call).

Modes: FAST_RUN (default); FAST_COMPILE (the shortest build: the graph rewrites, default
schedules, -O1); DEBUG (every kernel's output is checked against the reference interpreter on
the same inputs, and the rewritten graph against the graph as written; the first mismatch raises
DebugModeError naming the kernel or the rewrite rules, with the largest difference);
PROFILE (time per kernel: `f.profile`).
"""

from __future__ import annotations

import collections
import time
from dataclasses import replace

import numpy as np

from . import numpy as knp
from .errors import DTypeError, ShapeError
from .frontend import DEVICES, MODES, SharedVariable, config, python_value, to_device
from .ir import expr as E
from .ir.printer import written
from .ir.tensor import ComputeOp, Placeholder, SizeCheck, Tensor, map_graph, substitute_sizes, topo_order


class DebugModeError(AssertionError):
    """DEBUG mode found a kernel (or a rewrite) whose values differ from the reference."""


def _as_output(o) -> ComputeOp:
    """An output as a compute op: arrays as they are, a placeholder copied, a scalar a 0-d array."""
    if isinstance(o, ComputeOp):
        return o
    if isinstance(o, Placeholder):
        return knp.elementwise(lambda v: v, o, name=f"{o.name}_out")
    return knp.asarray(o)


def _pairs(updates) -> list:
    if updates is None:
        return []
    items = list(updates.items()) if hasattr(updates, "items") else list(updates)
    for u in items:
        if not (isinstance(u, (tuple, list)) and len(u) == 2):
            raise TypeError(f"updates must be (shared variable, new value) pairs, got {u!r}")
    return items


class CompiledFunction:
    """What kd.function returns: call it with numpy arrays (positional or by input name)."""

    def __init__(self, inputs, outputs=None, updates=None, givens=None, mode=None, on_unused_input="raise",
                 name=None, device=None, nan_guard: bool = False):
        inputs = [inputs] if isinstance(inputs, Tensor) else list(inputs)
        for p in inputs:
            if not isinstance(p, Placeholder) or isinstance(p, SharedVariable):
                what = "a shared variable (functions read it implicitly)" if isinstance(p, SharedVariable) else repr(p)
                raise TypeError(f"kd.function: inputs must be symbolic arrays (kd.matrix(...), kd.placeholder(...)); "
                                f"got {what}")
        if len(set(inputs)) != len(inputs):
            raise ValueError("kd.function: an input is listed twice")
        self.single = outputs is not None and not isinstance(outputs, (list, tuple))
        outs = [] if outputs is None else ([outputs] if self.single else list(outputs))
        outs = [_as_output(o) for o in outs]
        pairs = _pairs(updates)
        targets, values = [], []
        for var, value in pairs:
            if not isinstance(var, SharedVariable):
                raise TypeError(f"kd.function: update target {getattr(var, 'name', var)!r} is not a shared variable "
                                f"(kd.shared(...)); only shared variables can be updated")
            if var in targets:
                raise ValueError(f"kd.function: shared variable {var.name} is updated twice")
            targets.append(var)
            values.append(self._update_value(var, value))
        self.mode = mode or config.mode
        if self.mode not in MODES:
            raise ValueError(f"kd.function: unknown mode {self.mode!r}; modes: {', '.join(MODES)}")
        self.device = device or config.device
        if self.device not in DEVICES:
            raise ValueError(f"kd.function: unknown device {self.device!r}; devices: {', '.join(DEVICES)}")
        graph = outs + values
        if givens:
            graph = self._substitute(graph, givens)
        self._check_inputs(inputs, graph, on_unused_input)
        self._compile(inputs, graph, len(outs), targets, name, nan_guard)

    def _compile(self, inputs, graph, n_outputs: int, targets, name, nan_guard: bool) -> None:
        """Build the module of `graph` (the outputs, then the updates' new values)."""
        # what a pickle keeps: the graph as built, so that loading renders the same source
        self._state = (tuple(inputs), tuple(graph), n_outputs, tuple(targets), self.single, self.mode,
                       self.device, name, nan_guard)
        order = topo_order(graph)
        shared = [t for t in order if isinstance(t, SharedVariable)]
        shared += [v for v in targets if v not in shared]  # updated, not read: its shape still binds the check
        self.inputs, self.shared, self.updated = tuple(inputs), tuple(shared), tuple(targets)
        self.outputs, self.update_values = tuple(graph[:n_outputs]), tuple(graph[n_outputs:])
        unique = list(dict.fromkeys(graph))  # an array listed twice is built once
        self._where = [unique.index(t) for t in graph]
        from .pipeline import build
        target = DEVICES[self.device]
        from .target import Target
        t = Target.detect(target)
        if self.mode == "FAST_COMPILE":
            t = replace(t, cflags=tuple("-O1" if f == "-O3" else f for f in t.cflags))
        self._fn = build(list(inputs) + list(shared), unique, target=t, name=name,
                         profile=self.mode == "PROFILE")
        self.nan_guard = nan_guard
        if self.mode == "DEBUG":
            self._fn.keep_temps = True
        self._spares: dict = {}
        self._calls = 0
        self._profile = collections.Counter()
        self.unique = tuple(unique)
        # the C call path (runtime/fastcall.py): a plain function (no updates, no checks after
        # the call) calls it straight; one with updates passes the spare buffers to write
        from .runtime import fastcall
        self._direct = self._into = None
        fast = getattr(self._fn, "fast_call", None)  # the C target's; GPU launches have their own path
        if fast is not None and not targets and self.mode in ("FAST_RUN", "FAST_COMPILE") and not nan_guard \
                and len(unique) == len(graph):
            self._direct = fast(fastcall.SINGLE if self.single else fastcall.LIST, None if self.single else _as_list)
        elif fast is not None:
            self._into = fast(fastcall.TUPLE, _as_tuple)
        self._update_slots = [unique.index(t) for t in self.update_values]
        # one lock per shared variable, taken in one order for the whole process (by the lock's
        # address: an unpickled copy of a variable shares its uid), so no two calls wait on each other
        self._locks = tuple(sorted((v.lock for v in self.shared), key=id))
        if self.device == "cuda":  # shared values live in GPU memory: calls read them in place
            for var in self.shared:
                var.box[0] = to_device(var.box[0])

    # --- building -----------------------------------------------------------------------------
    @staticmethod
    def _update_value(var: SharedVariable, value) -> ComputeOp:
        v = knp.asarray(value)
        if v.dtype != var.dtype:
            raise DTypeError(f"kd.function: the update of {var.name} is {v.dtype} but {var.name} is {var.dtype}; "
                             f"cast it (.astype('{var.dtype}')) so that the variable keeps its type")
        if v.ndim != var.ndim:
            raise ShapeError(f"kd.function: the update of {var.name} has {v.ndim} dimension(s), {var.name} has "
                             f"{var.ndim}")
        checks = [SizeCheck(E.binary("eq", a, b), f"the update of {var.name}: dimension {k} is {{a}} but "
                            f"{var.name}'s is {{b}}", a, b) for k, (a, b) in enumerate(zip(v.shape, var.shape))
                  if a is not b]
        copy = knp.elementwise(lambda x: x, v, name=f"{var.name}_next")
        return replace(copy, checks=copy.checks + tuple(checks))

    @staticmethod
    def _substitute(graph, givens) -> list:
        items = list(givens.items()) if hasattr(givens, "items") else list(givens)
        replaced, sizes = {}, {}
        for old, new in items:
            if not isinstance(old, Placeholder):
                raise TypeError(f"givens: {old!r} is not a symbolic array or shared variable")
            new = knp.asarray(new)
            if new.ndim != old.ndim or new.dtype != old.dtype:
                raise TypeError(f"givens: {old.name} is {old.dtype} with {old.ndim} dimension(s) but its replacement "
                                f"is {new.dtype} with {new.ndim}")
            replaced[old] = new
            for d, (a, b) in enumerate(zip(old.shape, new.shape)):
                if isinstance(a, E.SizeVar):
                    sizes.setdefault(a, b)
                elif a != b:
                    raise ShapeError(f"givens: dimension {d} of {old.name} is {a} but its replacement's is {b}")
        return list(substitute_sizes(tuple(graph), sizes, replaced))

    @staticmethod
    def _check_inputs(inputs, graph, on_unused_input) -> None:
        needed = [t for t in topo_order(graph) if isinstance(t, Placeholder)]
        missing = [t for t in needed if t not in inputs and not isinstance(t, SharedVariable)]
        if missing:
            raise ValueError(f"kd.function: the outputs need {', '.join(t.name for t in missing)}, which is neither "
                             f"an input nor a shared variable; add it to the inputs (or replace it with givens=)")
        unused = [p.name for p in inputs if p not in needed]
        if unused and on_unused_input not in ("ignore", "warn"):
            raise ValueError(f"kd.function: input(s) {', '.join(unused)} are not used by the outputs; remove them, or "
                             f"pass on_unused_input='ignore'")
        if unused and on_unused_input == "warn":
            import warnings
            warnings.warn(f"kd.function: input(s) {', '.join(unused)} are not used", stacklevel=3)

    # --- calling ---------------------------------------------------------------------------------
    def _args(self, args, kwargs) -> list:
        if len(args) > len(self.inputs):
            raise TypeError(f"this function takes {len(self.inputs)} input(s) "
                            f"({', '.join(p.name for p in self.inputs)}), got {len(args)}")
        values = list(args) + [None] * (len(self.inputs) - len(args))
        names = {p.name: k for k, p in enumerate(self.inputs)}
        for key, v in kwargs.items():
            k = names.get(key)
            if k is None:
                raise TypeError(f"this function has no input named {key!r}; inputs: {', '.join(names)}")
            if k < len(args):
                raise TypeError(f"input {key!r} given twice")
            values[k] = v
        for k, (p, v) in enumerate(zip(self.inputs, values)):
            if v is None and k >= len(args) and p.name not in kwargs:
                raise TypeError(f"missing input {p.name!r}")
            if not isinstance(v, np.ndarray) and not hasattr(v, "__cuda_array_interface__"):
                values[k] = python_value(v, p)
        return values

    def __call__(self, *args, **kwargs):
        if not self._locks:
            return self._call(args, kwargs)
        for lk in self._locks:
            lk.acquire()
        try:
            return self._call(args, kwargs)
        finally:
            for lk in reversed(self._locks):
                lk.release()

    def _call(self, args, kwargs):
        if self._direct is not None and not kwargs and len(args) == len(self.inputs):
            try:  # arrays as typed: no Python between the checks and the kernels
                result = self._direct(*args, *[s.box[0] for s in self.shared])
                self._calls += 1
                return result
            except DTypeError:  # Python scalars and lists: converted below, or a clear error
                pass
        values = self._args(args, kwargs)
        shared = [s.box[0] for s in self.shared]
        out = [None] * len(self.unique)
        for var, k in zip(self.updated, self._update_slots):  # the spare buffer of each update
            spare = self._spares.get(var)
            if spare is not None and spare.shape == var.box[0].shape and not any(spare is a for a in values):
                out[k] = spare
        t0 = time.perf_counter()
        if self._into is not None:
            result = self._into.into((*values, *shared), tuple(out))
        elif self.device == "cuda":  # outputs and new values stay on the GPU (its inputs are there)
            result = self._fn(*values, *shared)
        else:
            result = self._fn(*values, *shared, out=tuple(out))
        if self.mode == "PROFILE":
            self._record_profile(time.perf_counter() - t0)
        result = list(result) if isinstance(result, tuple) else [result]
        if self.mode == "DEBUG":
            self._debug_check(values, shared, result)
        if self.nan_guard:
            self._guard(result)
        results = [result[k] for k in self._where]
        outs, new = results[:len(self.outputs)], results[len(self.outputs):]
        for var, value in zip(self.updated, new):  # after every output: all updates saw old values
            self._spares[var] = var.box[0]
            var.box[0] = value
        self._calls += 1
        if self.single:
            return outs[0]
        return outs

    def __reduce__(self):
        """Pickles as the graph it was built from (shared variables with their values); loading
        builds it again, from the disk cache when this machine compiled it before."""
        return _restore, self._state

    # --- what it is ------------------------------------------------------------------------------
    @property
    def kernels(self):
        """The kernels, each with what it fused (str() of one shows the code that runs)."""
        return self._fn.kernels

    @property
    def module(self):
        return self._fn.module

    def thread_choices(self) -> list:
        """How its calls chose their threads (kerneldsl.Function.thread_choices); [] on a GPU."""
        return self._fn.thread_choices() if hasattr(self._fn, "thread_choices") else []

    @property
    def config(self):
        return self._fn.config

    @property
    def source(self) -> str:
        return self._fn.source

    @property
    def rewrites(self) -> collections.Counter:
        """How often each graph rewrite rule fired when the function was built."""
        return collections.Counter(self._fn.rewrites)

    @property
    def profile(self) -> str:
        """PROFILE mode: calls, total and mean time and share of each kernel, slowest first."""
        if self.mode != "PROFILE":
            return "not profiled: build the function with mode='PROFILE'"
        times = self._fn.kernel_times()
        total = sum(times.values()) or 1e-30
        calls = self._fn.calls
        rows = [f"{'kernel':24s} {'calls':>7s} {'total ms':>10s} {'mean us':>10s} {'share':>7s}"]
        for name, t in sorted(times.items(), key=lambda kv: -kv[1]):
            rows.append(f"{name:24s} {calls:7d} {1e3 * t:10.3f} {1e6 * t / max(calls, 1):10.2f} {100 * t / total:6.1f}%")
        rows.append(f"{'(whole calls)':24s} {self._calls:7d} {1e3 * self._profile['wall']:10.3f} "
                    f"{1e6 * self._profile['wall'] / max(self._calls, 1):10.2f}")
        return "\n".join(rows)

    def _record_profile(self, seconds: float) -> None:
        self._profile["wall"] += seconds

    def __repr__(self) -> str:
        ins = ", ".join(p.name for p in self.inputs)
        return (f"<kd.function ({ins}) -> {len(self.outputs)} output(s), {len(self.updated)} update(s), "
                f"{len(self.kernels)} kernel(s), {self.mode} on {self.device}>")

    # --- DEBUG and the NaN guard -----------------------------------------------------------------
    def _debug_check(self, values, shared, result) -> None:
        from .reference import evaluate
        feed = dict(zip(list(self.inputs) + list(self.shared), [np.asarray(v) for v in values + shared]))
        m = self._fn.module
        got = dict(zip(m.outputs, result))
        got.update(self._fn.last_temps)
        for buf in m.outputs + m.temps:  # every kernel against the reference, on the same inputs
            op = m.tensors[buf]
            want = evaluate([op], _feed_for(op, feed))[0]
            _compare(got[buf], want, f"kernel {buf.name}", self._fn.source_path)
        as_written = evaluate(list(self.unique), feed)  # the rewritten graph against the one written
        for t, g, w in zip(self.unique, result, as_written):
            _compare(g, w, f"output {t.name} against the graph as written (rewrites applied: "
                           f"{dict(self.rewrites) or 'none'})", self._fn.source_path, remove_inf=True)

    def _guard(self, result) -> None:
        for t, r in zip(self.unique, result):
            a = np.asarray(r)
            if a.dtype.kind == "f" and not np.isfinite(a).all():
                bad = "NaN" if np.isnan(a).any() else "inf"
                kernel = next((k.name for k in self.kernels if k.op.name == t.name), t.name)
                raise FloatingPointError(f"{written(t)} holds {bad} (nan_guard; computed by kernel {kernel})")


def _restore(inputs, graph, n_outputs, targets, single, mode, device, name, nan_guard) -> CompiledFunction:
    f = CompiledFunction.__new__(CompiledFunction)
    f.single, f.mode, f.device = single, mode, device
    f._compile(list(inputs), list(graph), n_outputs, targets, name, nan_guard)
    return f


def _as_list(result) -> list:
    return list(result) if isinstance(result, tuple) else [result]


def _as_tuple(result) -> tuple:
    return result if isinstance(result, tuple) else (result,)


def _feed_for(op, feed: dict) -> dict:
    """The reference's inputs of one fused op: the function's inputs it reads."""
    needed = {t for t in topo_order([op]) if isinstance(t, Placeholder)}
    return {p: v for p, v in feed.items() if p in needed}


def _compare(got, want, what: str, source: str, remove_inf: bool = False) -> None:
    got, want = np.asarray(got), np.asarray(want)
    if got.shape != want.shape or got.dtype != want.dtype:
        raise DebugModeError(f"DEBUG: {what}: shape/dtype {got.shape} {got.dtype}, the reference gives "
                             f"{want.shape} {want.dtype} (source: {source})")
    if got.dtype.kind != "f":
        bad = got != want
        if bad.any():
            raise DebugModeError(f"DEBUG: {what}: {int(bad.sum())} element(s) differ from the reference "
                                 f"(source: {source})")
        return
    tol = 1e-4 if got.dtype == np.float32 else 1e-10
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(want) if remove_inf else np.ones(want.shape, bool)  # a rewrite may make inf finite
        ok = np.isclose(got, want, rtol=tol, atol=tol, equal_nan=True) | ~finite
        if not ok.all():
            diff = np.abs(np.where(ok, 0, got.astype(np.float64) - want.astype(np.float64)))
            k = np.unravel_index(int(np.nanargmax(diff)), diff.shape) if diff.ndim else ()
            raise DebugModeError(f"DEBUG: {what}: {int((~ok).sum())} element(s) differ; the largest difference is "
                                 f"{float(diff[k])} at {k} ({got[k]} vs the reference's {want[k]}); source: {source}")


def function(inputs, outputs=None, updates=None, givens=None, mode=None, on_unused_input: str = "raise",
             name: str | None = None, device: str | None = None, nan_guard: bool = False) -> CompiledFunction:
    """Compile `outputs` (an array or a list) of the symbolic `inputs`, and the `updates` of shared
    variables, into one function: `kd.function([x, y], [cost], updates=[(w, w - 0.1 * gw)])`."""
    return CompiledFunction(inputs, outputs, updates, givens, mode, on_unused_input, name, device, nan_guard)


def debugprint(f) -> str:
    """The graph a function runs (after the graph rewrites), one op per line, and its kernels."""
    from .schedule.schedule import rewrite_graph
    g = rewrite_graph(tuple(f.unique)) if isinstance(f, CompiledFunction) else rewrite_graph(tuple(f))
    lines = []
    for t in topo_order(list(g)):
        if isinstance(t, ComputeOp):
            tag = f"  [{t.tag}]" if t.tag else ""
            lines.append(f"{str(t).splitlines()[-1]}{tag}")
    if isinstance(f, CompiledFunction):
        lines.append("kernels: " + ", ".join(f"{k.name} (fused: {', '.join(k.fused) or '-'})" for k in f.kernels))
    text = "\n".join(lines)
    print(text)
    return text


__all__ = ["CompiledFunction", "DebugModeError", "debugprint", "function"]
