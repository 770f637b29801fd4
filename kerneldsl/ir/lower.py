"""Lowering: each compute op of the tensor graph becomes a loop nest (loop IR).

Lowering makes the plain loop nest only, every loop serial: one loop per output
axis in order (the last, contiguous one innermost); every reduction inside the
body becomes a local accumulator and its own loop nest, placed before the store
(or hoisted out of the loops it does not depend on) and, when it sits under a
`where`, guarded by that condition so that it reads only what the reference
reads. Which loops run in parallel or as SIMD lanes, and which template runs a
kernel, is the schedule's business (kerneldsl/schedule/).

Example: `C[i, j] = sum(r, A[i, r] * B[r, j])` lowers to
    for i in range(n):
      for j in range(m):
        acc: float32 = 0.0
        for r in range(k):
          acc = acc + A[i, r] * B[r, j]
        C[i, j] = acc

Every load is bounds-safe: an affine index gets an entry check (its interval
over the loop ranges must lie inside the tensor), a gathered or guarded index
gets a per-element check that reports an error instead of reading outside.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from .. import dtypes as dt
from . import expr as E
from .bounds import interval
from .loops import (Assert, Assign, Buffer, Checked, Declare, For, IfThenElse, NameScope, Seq, Stmt, Store, exprs,
                    seq, stmt_lines, walk)
from .scatter import scatter_form
from .simplify import simplify
from .tensor import ComputeOp, Placeholder, ShapeCheck, SizeCheck, Tensor, equal_sizes, topo_order



@dataclass(frozen=True)
class BoundsError:
    """What a failed check means, to build the user's message."""
    op: str
    load: str
    tensor: str
    dim: int
    extent: E.Expr
    lo: E.Expr | None = None  # entry checks know the index range
    hi: E.Expr | None = None


@dataclass(frozen=True)
class NegativeShape:
    """A failed shape check of an op fusion inlined: its shape would be negative."""
    tensor: str
    shape: tuple


def shape_checks(op: ComputeOp) -> tuple:
    """`op`'s dimensions are not negative (None when that holds for any sizes)."""
    from .tensor import ShapeCheck
    from .ops import nonneg
    cond = None
    for d in op.shape:
        if nonneg(d):
            continue
        c = simplify(d >= 0)
        if not (isinstance(c, E.Const) and c.value):
            cond = c if cond is None else cond & c
    return () if cond is None else (ShapeCheck(cond, op.name, op.shape),)


@dataclass(frozen=True, eq=False)
class Kernel:
    """One kernel: the op it computes, its loop nest, and the template that runs it.

    Lowering makes the plain nest (every loop serial, `template` None); the schedule then picks
    a template (schedule/templates.py) with its knobs and the `plan` the renderer follows (a
    GEMM plan, a row plan, ...), and may transform `body`. `str(kernel)` describes what runs."""
    name: str
    op: ComputeOp
    body: Stmt
    fused: tuple = ()  # names of the producers inlined into this kernel
    template: str | None = None  # loops | gemm | grid_stride | row_reduce (schedule/templates.py)
    knobs: dict = field(default_factory=dict)  # the template's numeric choices (tile sizes, threads)
    plan: object = None  # what the template's renderer follows; its describe() says what runs
    axis_vars: tuple = ()  # the loop variables of the op's own axes, outermost first

    @property
    def contraction(self):
        """The GEMM plan of a kernel running the gemm template, else None."""
        return self.plan if self.template == "gemm" else None

    @property
    def runs_if(self) -> E.Expr | None:
        """The kernel runs only when its output is not empty: None when that is known, else the
        condition. (Reductions hoisted out of the output loops would otherwise read for points
        that do not exist, as the entry checks assume they do not.)"""
        return _all_positive(self.op.axes)

    def header(self) -> str:
        fused = f"  (fused: {', '.join(self.fused)})" if self.fused else ""
        runs = "" if self.runs_if is None else f"  (runs when {self.runs_if})"
        return f"# kernel {self.name}{fused}{runs}"

    def __str__(self) -> str:
        lines = [self.header()]
        if self.template is not None and self.template != "loops":
            knobs = ", ".join(f"{k}={v}" for k, v in self.knobs.items())
            lines.append(f"# template {self.template}: {knobs}")
        describe = getattr(self.plan, "describe", None)
        lines += describe(self) if describe is not None else stmt_lines(self.body)
        return "\n".join(lines)


@dataclass(frozen=True, eq=False)
class Module:
    """A whole build: buffers, the kernels in order, entry checks and error meanings."""
    inputs: tuple
    outputs: tuple
    temps: tuple
    sizes: tuple
    kernels: tuple
    checks: tuple
    errors: dict = field(default_factory=dict)
    tensors: dict = field(default_factory=dict)  # Buffer -> Tensor
    rewrites: dict = field(default_factory=dict)  # rule name -> times the graph rewrites fired it

    @property
    def buffers(self) -> tuple:
        return self.inputs + self.outputs + self.temps

    def __str__(self) -> str:
        lines = [f"# entry check: {ln}" for c in self.checks for ln in stmt_lines(c)]
        for k in self.kernels:
            lines += str(k).split("\n")
        return "\n".join(lines)


def lower(inputs, outputs, fused: dict | None = None) -> Module:
    order = topo_order(outputs)
    for t in order:
        if isinstance(t, Placeholder) and t not in inputs:
            users = [o.name for o in order if isinstance(o, ComputeOp) and t in o.inputs()]
            raise ValueError(f"{', '.join(users)} read(s) placeholder {t.name}, which is not among the "
                             f"inputs of this build; add it to the inputs")
    names = NameScope()
    bufs: dict[Tensor, Buffer] = {}
    for role, ts in (("input", inputs), ("output", outputs),
                     ("temp", [t for t in order if isinstance(t, ComputeOp) and t not in outputs])):
        for t in ts:
            bufs[t] = Buffer(names.fresh(t.name), t.dtype, t.shape, role)
    from ..shapes import size_vars_of
    sizes = tuple(size_vars_of(inputs))
    ctx = _Context(bufs, equal_sizes(outputs, inputs)[0])
    for t in order:  # sizes that must agree, and the shapes of the ops fused into others: first
        for sc in getattr(t, "checks", ()):
            if isinstance(sc, (ShapeCheck, SizeCheck)):
                ctx.shape_check(sc)
    kernels = [ctx.lower_op(t, (fused or {}).get(t, ())) for t in order if isinstance(t, ComputeOp)]
    for t in order:  # the reads of the ops fused into others, checked over their own domains
        for rc in getattr(t, "checks", ()):
            if not isinstance(rc, (ShapeCheck, SizeCheck)):
                ctx.range_check(rc)
    ins = tuple(bufs[t] for t in inputs)
    outs = tuple(bufs[t] for t in outputs)
    temps = tuple(b for t, b in bufs.items() if b.role == "temp")
    return Module(ins, outs, temps, sizes, tuple(kernels), tuple(ctx.asserts.values()), ctx.errors,
                  {b: t for t, b in bufs.items()})


class _Context:
    def __init__(self, bufs, same_sizes=None):
        self.bufs = bufs
        self.same = same_sizes or {}  # size -> the size a check makes it equal to (ir/tensor.equal_sizes)
        self.asserts: dict = {}  # cond -> Assert
        self.errors: dict = {}  # code -> BoundsError

    def _code(self, info: BoundsError) -> int:
        code = len(self.errors) + 1
        self.errors[code] = info
        return code

    def lower_op(self, op: ComputeOp, fused: tuple = ()) -> Kernel:
        form = scatter_form(op)
        if form is not None:
            return self.lower_scatter(op, form, fused)
        axes = tuple(op.axes)
        self.begin(op, axes)
        stmts, value = self.expr(op.body, None, False, axes)
        shared, value = self.share(value)
        nest = seq(*self.slots[axes], *stmts, *shared,
                   Store(self.bufs[op], tuple(self.vars[a] for a in op.axes), value))
        return Kernel(self.bufs[op].name, op, self.loop_nest(axes, nest), tuple(fused),
                      axis_vars=tuple(self.vars[a] for a in op.axes))

    def loop_nest(self, axes: tuple, inner: Stmt, start: int = 0, stop: int | None = None) -> Stmt:
        """`inner` inside the loops of axes[start:stop] (outermost first), each with what was
        hoisted to just inside the loops around it."""
        stop = len(axes) if stop is None else stop
        for k in reversed(range(start, stop)):
            a = axes[k]
            inner = seq(*self.slots[axes[:k]], For(self.vars[a], a.extent, inner))
        return inner

    def lower_scatter(self, op: ComputeOp, form, fused: tuple) -> Kernel:
        """A sum whose condition picks output points (ir/scatter.py): zero the output, then one
        pass over the domain adds each term at the point picked, where it lies in range."""
        out = self.bufs[op]
        init_vars = tuple(E.Var(f"{a.name}_init", "int64") for a in op.axes)
        init = Store(out, init_vars, E.Const(dt.cast_value(0, op.dtype), op.dtype))
        for v, a in reversed(list(zip(init_vars, op.axes))):
            init = For(v, a.extent, init)
        axes = form.loop_axes
        self.begin(op, axes, reserved=[v.name for v in init_vars])
        for a in form.targets:
            self.vars[a] = E.Var(self.names.fresh(a.name), "int64")
            self.axis_of[self.vars[a]] = a
        guard, steps = None, []  # each link is read only where the links before it hold
        for a, e in form.chain:
            stmts, le = self.expr(e, guard, guard is not None, axes)
            if a is None:
                cond = simplify(le)
            else:
                v = self.vars[a]
                stmts = [*stmts, Declare(v, simplify(E.cast(le, "int64")))]
                cond = simplify((v >= 0) & (v < a.extent))
            steps.append((stmts, cond))
            guard = cond if guard is None else guard & cond
        stmts, value = self.expr(form.reduce.body, guard, True, axes)
        idx = tuple(self.vars[a] for a in op.axes)
        inner = seq(*self.slots[axes], *stmts, Store(out, idx, E.Load(out, idx, op.dtype) + E.cast(value, op.dtype)))
        # the links run inside the loops they read, the rest of the domain inside them (the
        # picked row is found once per t, not once per element of the row)
        used = {x for st, cond in steps for n in (*st, cond) for x in _free_vars(n)}
        depth = max((k + 1 for k, a in enumerate(axes) if self.vars[a] in used), default=0)
        inner = self.loop_nest(axes, inner, start=depth)
        for stmts, cond in reversed(steps):
            inner = seq(*stmts, IfThenElse(cond, inner))
        nest = self.loop_nest(axes, inner, stop=depth)
        return Kernel(out.name, op, seq(init, nest), tuple(fused), axis_vars=init_vars)

    def share(self, value: E.Expr):
        """(declarations, value): every computed subexpression the value uses more than once, where
        it is always evaluated, computed once into a local. The expression is a DAG (nodes are
        interned); printed as a tree, `e = tanh(e) * 0.5 + e` repeated would double the source at
        each step. Select branches and reductions are left alone (read only where they run)."""
        uses: dict = {}
        order: list = []
        seen: set = set()

        def visit(n):  # unconditional children only, each unique node once
            stack = [n]
            while stack:
                m = stack.pop()
                if m in seen:
                    continue
                seen.add(m)
                order.append(m)
                kids = (m.cond,) if isinstance(m, E.Select) else () if isinstance(
                    m, (E.Reduce, E.Load, Checked)) else m.children()
                for k in kids:
                    uses[k] = uses.get(k, 0) + 1
                    stack.append(k)
        visit(value)
        # float values only: index arithmetic stays in the expressions that templates match
        repeated = {m for m in order if uses.get(m, 0) > 1 and m.dtype in dt.FLOATS
                    and isinstance(m, (E.Unary, E.Binary, E.Call, E.Cast))}
        if not repeated:
            return [], value
        decls, mapping = [], {}  # keyed by the node as rewritten so far (bottom-up)
        for m in E.postorder([value], lambda x: [k for k in x.children() if k in seen]):  # producers first
            if m in repeated:
                v = E.Var(self.names.fresh("t"), m.dtype)
                m = E.substitute(m, mapping)
                decls.append(Declare(v, m))
                mapping[m] = v
        return decls, E.substitute(value, mapping)

    def begin(self, op: ComputeOp, axes: tuple, reserved=()) -> None:
        """Fresh lowering state for `op`, whose loops run over `axes` (outermost first)."""
        self.names = NameScope(reserved)
        self.reduced: dict = {}
        self.acc_depth: dict = {}  # accumulator Var -> loop depth where it is declared
        self.op = op
        self.vars = {a: E.Var(self.names.fresh(a.name), "int64") for a in axes}
        self.axis_of = {v: a for a, v in self.vars.items()}
        # statements hoisted to just inside the loops of a prefix of the enclosing axes
        self.slots: dict[tuple, list] = {axes[:k]: [] for k in range(len(axes) + 1)}
        # accumulators are reused only inside the scope that declares them: a reduction lowered
        # again in another branch (a `where`) must not read one declared in a sibling loop body
        self.scope_ids = itertools.count(1)
        self.scopes: list = [0]
        self.slot_scope: dict = {where: 0 for where in self.slots}
        # reduction loops a hoisted reduction was moved above (they may run no iteration), each
        # with a flag: did lowering the hoisted reduction need a range check
        self.skipped: list = []
        self.shadowed = shadowed(op)
        self.inline_accs: set = set()  # accumulators computed where they are used (not hoisted)
        self.lowered: dict = {}  # (node, guard, guarded, enclosing) -> its loop-IR expression

    # --- expressions -> (statements to run first, loop-IR expression) ------------
    def expr(self, e: E.Expr, guard, guarded: bool, enclosing: tuple):
        """Memoized per node and context where lowering made no statements (no reduction below):
        the body is a DAG, and a path-by-path walk would be exponential in a long chain."""
        key = (e, guard, guarded, enclosing)
        hit = self.lowered.get(key)
        if hit is not None:
            return [], hit
        stmts, out = self._expr(e, guard, guarded, enclosing)
        if not stmts:
            self.lowered[key] = out
        return stmts, out

    def _expr(self, e: E.Expr, guard, guarded: bool, enclosing: tuple):
        if isinstance(e, E.IndexVar):
            return [], self.vars[e]
        if isinstance(e, (E.Const, E.SizeVar, E.Var)):
            return [], e
        if isinstance(e, E.Select):
            sc, c = self.expr(e.cond, guard, guarded, enclosing)
            ga = c if guard is None else guard & c
            gb = ~c if guard is None else guard & ~c
            sa, a = self.expr(e.a, ga, True, enclosing)
            sb, b = self.expr(e.b, gb, True, enclosing)
            return sc + sa + sb, E.Select(c, a, b, e.dtype)
        if isinstance(e, E.Load):
            return self.load(e, guard, guarded, enclosing)
        if isinstance(e, E.Bound):
            stmts, lix = self.expr(e.index, guard, guarded, enclosing)
            return stmts, self.checked_index(e.index, lix, e.extent, guarded, enclosing,
                                             f"{e.tensor}[...] (inlined)", e.tensor, e.dim)
        if isinstance(e, E.Reduce):
            return self.reduce(e, guard, guarded, enclosing)
        stmts, kids = [], []
        for c in e.children():
            s, k = self.expr(c, guard, guarded, enclosing)
            stmts += s
            kids.append(k)
        return stmts, E.rebuild(e, tuple(kids))

    def load(self, e: E.Load, guard, guarded, enclosing):
        stmts, idx = [], []
        text = str(e)
        guarded = guarded and e not in self.shadowed  # an unguarded twin's entry check covers it
        for k, (ix, extent) in enumerate(zip(e.indices, e.tensor.shape)):
            s, lix = self.expr(ix, guard, guarded, enclosing)
            stmts += s
            if guarded and _guard_bounds(guard, lix, extent):  # where(0 <= y - r < h, x[y - r], 0)
                idx.append(simplify(lix))
                continue
            idx.append(self.checked_index(ix, lix, extent, guarded, enclosing, text, e.tensor.name, k))
        return stmts, E.Load(self.bufs[e.tensor], tuple(idx), e.dtype)

    def checked_index(self, ix, lix, extent, guarded, enclosing, text, tensor, dim):
        """An index made safe: an entry check of its range when it is affine and always read,
        else a per-element check."""
        gather = any(isinstance(n, (E.Load, E.Reduce)) for n in E.walk(ix))
        rng = None if gather else interval(ix)
        if guarded and rng is not None:  # read only where a guard holds: no entry check, unless the
            if _provable(E.substitute((rng[0] >= 0) & (rng[1] < extent), self.same)):  # index is in range
                return simplify(lix)
            rng = None
        info = BoundsError(self.op.name, text, tensor, dim, extent, *(rng if rng is not None else (None, None)))
        if rng is None:
            self._checked_under_skip()
            return Checked(simplify(lix), extent, self._code(info))
        self.entry_check(rng, extent, enclosing, info)
        return simplify(lix)

    def shape_check(self, sc) -> None:
        cond = simplify(sc.cond)
        if not (isinstance(cond, E.Const) and cond.value) and cond not in self.asserts:
            info = NegativeShape(sc.tensor, sc.shape) if isinstance(sc, ShapeCheck) else sc
            self.asserts[cond] = Assert(cond, self._code(info))

    def range_check(self, rc) -> None:
        cond = simplify(rc.cond)
        if isinstance(cond, E.Const) and cond.value:
            return
        if cond not in self.asserts:
            info = BoundsError(rc.op, rc.load, rc.tensor, rc.dim, rc.extent, rc.lo, rc.hi)
            self.asserts[cond] = Assert(cond, self._code(info))

    def entry_check(self, rng, extent, enclosing, info):
        lo, hi = rng
        ok = (lo >= 0) & (hi < extent)
        empty = None
        self._checked_under_skip()
        # a kernel runs only when its output is not empty (Kernel.runs_if): its own axes count too
        axes = dict.fromkeys((*self.op.axes, *enclosing, *(a for skipped, _ in self.skipped for a in skipped)))
        for a in axes:
            z = a.extent <= 0
            empty = z if empty is None else empty | z
        cond = simplify(ok if empty is None else empty | ok)
        if isinstance(cond, E.Const) and cond.value:
            return
        if cond not in self.asserts:
            self.asserts[cond] = Assert(cond, self._code(info))

    def reduce(self, e: E.Reduce, guard, guarded, enclosing):
        """A reduction is computed at the outermost loop depth where everything it reads is bound
        (loop-invariant code motion): inside a row loop, not inside the column loop of the row.
        Hoisted above loops that may run no iteration, it runs only when they would: the reads
        of a reduction are the reads of the points that use it (an empty output reads nothing)."""
        used, floor = E.free_axes(e), 0
        if guard is not None:  # the guard reads loop variables and accumulators: it pins us inside them
            for v in E.walk(guard):
                if v in self.axis_of:
                    used.add(self.axis_of[v])
                elif v in self.acc_depth:
                    floor = max(floor, self.acc_depth[v])
        depth = max(max((k + 1 for k, a in enumerate(enclosing) if a in used), default=0), floor)
        hoist = depth < len(enclosing) and enclosing[:depth] in self.slots
        where = enclosing[:depth] if hoist else enclosing
        # one accumulator per reduction (up to the names of its axes) and placement: computed once
        key = (E.canonical(e), guard, where)
        # the output's own axes need no guard: an empty output skips the whole kernel (runs_if)
        skipped = [a for a in enclosing[len(where):] if a.reduce]
        hit = self.reduced.get(key)
        # reused only where its declaration is in scope, and where it was surely computed: a copy
        # computed only when some loops run serves only a use inside those same loops
        if hit is not None and hit[1] in self.scopes and (hit[2] is None or hit[2] is _all_positive(skipped)):
            return [], hit[0]
        self.skipped.append((skipped, [False]))
        try:
            stmts, acc = self._reduce(e, guard, guarded, where)
        finally:
            _, checked = self.skipped.pop()
        inside = {x.var for st in stmts for x in walk(st) if isinstance(x, Declare)}
        if hoist and any(v in self.inline_accs and v not in inside and self.acc_depth[v] >= len(where)
                         for st in stmts for v in exprs(st) if isinstance(v, E.Var)):
            hoist = False  # it reads an accumulator computed inline here, after the slot: stay here
        nonempty = _all_positive(skipped) if hoist and checked[0] else None
        self.reduced[key] = (acc, self.slot_scope[where] if hoist else self.scopes[-1], nonempty)
        self.acc_depth[acc] = len(where) if hoist else len(enclosing)
        if not hoist:
            self.inline_accs.add(acc)
        if hoist:
            if nonempty is not None:  # its reads were checked as if the skipped loops ran: make it so
                decls = [st for st in stmts if isinstance(st, Declare)]  # outside: the skipped loops read them
                stmts = [*decls, IfThenElse(nonempty, seq(*[st for st in stmts if not isinstance(st, Declare)]))]
            self.slots[where].extend(stmts)
            return [], acc
        return stmts, acc

    def _checked_under_skip(self) -> None:
        for skipped, checked in self.skipped:
            if skipped:
                checked[0] = True

    def _reduce(self, e: E.Reduce, guard, guarded, enclosing):
        self.lowered = {}  # its axes get fresh variables: nothing lowered before may be reused
        saved = {a: self.vars.get(a) for a in e.axes}
        self.scopes.append(next(self.scope_ids))
        try:
            return self._reduce_scoped(e, guard, guarded, enclosing)
        finally:  # an axis reduced again deeper must not rename the outer loop's variable
            self.lowered = {}
            self.scopes.pop()
            for a, v in saved.items():
                if v is None:
                    self.vars.pop(a, None)
                else:
                    self.vars[a] = v

    def _reduce_scoped(self, e: E.Reduce, guard, guarded, enclosing):
        outer = len(enclosing)
        enclosing = enclosing + tuple(e.axes)
        for a in e.axes:
            self.vars[a] = E.Var(self.names.fresh(a.name), "int64")
            self.axis_of[self.vars[a]] = a
        for k in range(outer + 1, len(enclosing) + 1):
            self.slots[enclosing[:k]] = []
            self.slot_scope[enclosing[:k]] = self.scopes[-1]
        acc = E.Var(self.names.fresh("acc"), e.dtype)
        inner_guarded = guarded or e.cond is not None
        # the condition first: its statements run before the `if`, so the body (inside it) may
        # reuse its accumulators, and what the body computes is guarded by it
        # a reduction nested in this one runs only where this one does (its guard) and, in the
        # body, where the condition holds: hoisted, it must keep both
        cs, c = self.expr(e.cond, guard, guarded, enclosing) if e.cond is not None else ([], None)
        if c is not None:
            self.scopes.append(next(self.scope_ids))  # the body's statements live inside the `if`
        body_guard = c if guard is None else guard if c is None else guard & c
        try:
            body_stmts, body = self.expr(e.body, body_guard, inner_guarded, enclosing)
        finally:
            if c is not None:
                self.scopes.pop()
        shared, body = self.share(body)
        if c is not None and not cs and not body_stmts and not shared and e.combiner in ("sum", "prod") \
                and body.dtype == e.dtype:
            # a term the condition leaves out adds 0 (multiplies by 1): the same sum, as a select
            # (SIMD lanes; a range test on the loop variable is a loop partition); the select
            # evaluates the term only where the condition holds
            unit = E.Const(dt.cast_value(0 if e.combiner == "sum" else 1, e.dtype), e.dtype)
            body, c = E.Select(c, body, unit, e.dtype), None
        decls, update = self._combine(e, acc, body)
        step = seq(*body_stmts, *shared, update)
        if c is not None:
            step = seq(*cs, IfThenElse(c, step))
        nest = seq(*self.slots.pop(enclosing), step)
        for k in reversed(range(outer, len(enclosing))):
            a = enclosing[k]
            nest = For(self.vars[a], a.extent, nest)
            if k > outer:
                nest = seq(*self.slots.pop(enclosing[:k]), nest)
        if guard is not None:
            nest = IfThenElse(guard, nest)
        return [*decls, nest], acc

    def _combine(self, e: E.Reduce, acc: E.Var, body: E.Expr):
        c = e.combiner
        if c == "sum":
            return [Declare(acc, E.Const(dt.cast_value(0, e.dtype), e.dtype))], Assign(acc, acc + body)
        if c == "prod":
            return [Declare(acc, E.Const(dt.cast_value(1, e.dtype), e.dtype))], Assign(acc, acc * body)
        v = E.Var(self.names.fresh("v"), body.dtype)
        is_float = body.dtype in dt.FLOATS
        if c in ("max", "min"):
            init = dt.min_value(e.dtype) if c == "max" else dt.max_value(e.dtype)
            better = v > acc if c == "max" else v < acc
            if is_float:  # NaN propagates, as np.max
                better = better | (v != v)
            return [Declare(acc, E.const(init, e.dtype))], seq(Declare(v, body), IfThenElse(better, Assign(acc, v)))
        # argmax/argmin: first extreme wins; the first NaN wins over numbers
        best = E.Var(self.names.fresh("best"), body.dtype)
        init = dt.min_value(body.dtype) if c == "argmax" else dt.max_value(body.dtype)
        better = v > best if c == "argmax" else v < best
        if is_float:
            better = better | ((v != v) & (best == best))
        flat = None
        for a in e.axes:
            flat = self.vars[a] if flat is None else flat * a.extent + self.vars[a]
        decls = [Declare(acc, E.Const(0, "int64")), Declare(best, E.const(init, body.dtype))]
        update = seq(Declare(v, body), IfThenElse(better, seq(Assign(best, v), Assign(acc, simplify(flat)))))
        return decls, update


def reads(op: ComputeOp):
    """(load, enclosing axes, guarded) for every load of `op`'s body: enclosing are its axes and
    the reduction axes around the load; guarded when it sits in a `where` branch or under a
    reduction's `where=` (read only where that holds)."""
    out = []
    seen: set = set()

    def visit(e, enclosing, guarded):
        key = (e, enclosing, guarded)  # a DAG: each node once per context, not once per path
        if key in seen:
            return
        seen.add(key)
        if isinstance(e, E.Select):
            visit(e.cond, enclosing, guarded)
            if e.a is e.b:  # both branches read it: it is read wherever the select is
                visit(e.a, enclosing, guarded)
            elif isinstance(e.cond, E.Const):  # the branch taken is known
                visit(e.a if e.cond.value else e.b, enclosing, guarded)
            else:
                visit(e.a, enclosing, True)
                visit(e.b, enclosing, True)
            return
        if isinstance(e, E.Reduce):
            inner = enclosing + tuple(e.axes)
            if e.cond is not None:
                visit(e.cond, inner, guarded)
            visit(e.body, inner, guarded or e.cond is not None)
            return
        if isinstance(e, (E.Load, E.Bound)):
            out.append((e, enclosing, guarded))
        for c in e.children():
            visit(c, enclosing, guarded)

    visit(op.body, tuple(op.axes), False)
    return out


def shadowed(op: ComputeOp) -> set:
    """Guarded loads that are also read unguarded at the same point within the same or fewer
    loops (relu's `where(x[i] > 0, x[i], 0)`): the unguarded read's entry check covers them."""
    free = {}
    for ld, enclosing, guarded in reads(op):
        if not guarded:
            free.setdefault(ld, []).append(set(enclosing))
    return {ld for ld, enclosing, guarded in reads(op)
            if guarded and any(f <= set(enclosing) for f in free.get(ld, ()))}


def element_checked(op: ComputeOp) -> bool:
    """Whether some read of `op` is checked element by element where it runs (a gather, or a
    guarded read no unguarded read covers): inlined, it is checked only where the consumer reads."""
    cover = shadowed(op)
    for ld, _, guarded in reads(op):
        ix = ld.indices if isinstance(ld, E.Load) else (ld.index,)
        if (guarded and ld not in cover) or any(isinstance(n, (E.Load, E.Reduce)) for i in ix for n in E.walk(i)):
            return True
    return False


def read_checks(op: ComputeOp) -> tuple:
    """The entry conditions of `op`'s unguarded affine reads over its own domain (its axes and
    the reduction axes around each read), as lowering would check them if `op` were a kernel:
    what fusion keeps when it inlines `op` (tensor.RangeCheck)."""
    from .tensor import RangeCheck
    out = []

    def check(ix, extent, enclosing, text, tensor, dim):
        if any(isinstance(n, (E.Load, E.Reduce)) for n in E.walk(ix)):
            return  # a gather: checked element by element where it is read
        rng = interval(ix)
        if rng is None:
            return
        lo, hi = rng
        cond = (lo >= 0) & (hi < extent)
        for a in enclosing:
            cond = (a.extent <= 0) | cond
        out.append(RangeCheck(simplify(cond), op.name, text, tensor, dim, extent, lo, hi))

    for e, enclosing, guarded in reads(op):
        if guarded:
            continue
        if isinstance(e, E.Load):
            for dim, (ix, extent) in enumerate(zip(e.indices, e.tensor.shape)):
                check(ix, extent, enclosing, str(e), e.tensor.name, dim)
        else:  # a Bound: an inlined read's index
            check(e.index, e.extent, enclosing, f"{e.tensor}[...] (inlined)", e.tensor, e.dim)
    return tuple(out)


def checks_kept(op: ComputeOp, old_body: E.Expr, new_body: E.Expr) -> tuple:
    """`op`'s checks, plus those of the reads of `old_body` when a rewrite of it to `new_body`
    dropped some (`x[0] < x[0]` is False, but x must still have an element 0), and of every op
    a dropped read made unreachable (`where(t[()] > 0, x[i], x[i])` no longer needs t, but t's
    reads and shape are still checked, as the reference computes t)."""
    from .tensor import topo_order
    new = set(E.loads(new_body))
    dropped = [ld for ld in E.loads(old_body) if ld not in new]
    if not dropped:
        return op.checks
    kept = op.checks + read_checks(op.with_body(old_body))
    still = set(topo_order([op.with_body(new_body)]))
    for t in topo_order([ld.tensor for ld in dropped]):
        if isinstance(t, ComputeOp) and t not in still:
            kept += t.checks + shape_checks(t) + read_checks(t)
    return kept


def _guard_bounds(guard, lix: E.Expr, extent: E.Expr) -> bool:
    """The guard a read sits under says `0 <= index < extent` itself (a padded convolution's
    `where((y - r >= 0) & (y - r < h), x[y - r], 0)`): the read needs no check of its own."""
    if guard is None:
        return False
    parts, stack = set(), [guard]
    while stack:
        g = stack.pop()
        if isinstance(g, E.Binary) and g.op == "and" and g.dtype == "bool":
            stack += [g.a, g.b]
        else:
            parts.add(simplify(g))
    return simplify(lix >= 0) in parts and simplify(lix < extent) in parts


def _free_vars(n) -> set:
    """The loop variables a statement or an expression reads."""
    nodes = exprs(n) if isinstance(n, Stmt) else E.walk(n)
    return {v for v in nodes if isinstance(v, E.Var)}


def _provable(cond: E.Expr) -> bool:
    c = simplify(cond)
    return isinstance(c, E.Const) and bool(c.value)


def _all_positive(axes):
    """`extent > 0` for every axis, as one condition; None when that is known to hold."""
    cond = None
    for a in axes:
        c = simplify(a.extent > 0)
        if isinstance(c, E.Const) and c.value:
            continue
        cond = c if cond is None else cond & c
    return cond


def straight_line(body: Stmt) -> bool:
    """A loop body of plain statements without checked (possibly guarded) reads: it can run as
    SIMD lanes."""
    stmts = body.stmts if isinstance(body, Seq) else (body,)
    for s in stmts:
        if not isinstance(s, (Store, Assign, Declare)):
            return False
        if any(isinstance(n, Checked) for x in s.children() for n in E.walk(x)):
            return False
    return True


def extreme_update(loop: For):
    """(acc, v, "max"|"min", nan_aware) when the loop's body is exactly lowering's max/min update
    `v = <expr>; if (v > acc) | (v != v): acc = v` (no checked reads), else None: the form the C
    printer runs as SIMD lanes (`reduction(max:acc)` plus a NaN flag)."""
    body = loop.body.stmts if isinstance(loop.body, Seq) else (loop.body,)
    if len(body) != 2 or not isinstance(body[0], Declare) or not isinstance(body[1], IfThenElse):
        return None
    decl, branch = body
    v = decl.var
    if branch.otherwise is not None or not isinstance(branch.then, Assign) or branch.then.value is not v:
        return None
    acc = branch.then.var
    if acc.dtype != v.dtype or not straight_line(Seq((decl,))):
        return None
    for op, cmp in (("max", v > acc), ("min", v < acc)):
        if branch.cond is cmp and v.dtype in ("int32", "int64"):
            return acc, v, op, False
        if v.dtype in ("float32", "float64") and branch.cond is (cmp | (v != v)):  # noqa: PLR0124
            return acc, v, op, True
    return None
