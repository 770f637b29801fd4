"""Reverse mode over the tensor graph: `kd.grad(outputs, wrt, dy)`.

Tensors are visited consumers first. Each compute op `Y` with an adjoint `dY`
is differentiated as a scalar expression (reverse mode over its interned
expression DAG, parents before children); the adjoint reaching each load
`X[g]` becomes, through index solving (adjoint.py), a term of the new compute
op `dX` over X's own index space. All terms for X are summed into one op.

Each adjoint flowing down an expression carries its *domain* (the reduction
axes around the node, which the final contribution sums over) and a *guard*
(the where-conditions above the node, which become `where=` of that sum), so
that a branch not taken is never read and never receives gradient.

Rules with a choice, fixed here and in docs/autodiff.md:
- `where(c, a, b)`: a gets the gradient where c holds, b elsewhere.
- max/min reductions: the whole gradient goes to the first arg-extreme (the
  index argmax/argmin reports), so ties give one element the gradient.
- prod reductions: the exact product of the other factors (correct with zeros).
- integer and bool values, casts to them, floor/ceil, argmax: no gradient.
- intrinsics: the derivative in their table row (abs'(0) = 0, sqrt'(0) = inf,
  maximum/minimum ties to the first argument).
"""

from __future__ import annotations

import warnings

from .. import dtypes as dt
from ..errors import DisconnectedInputError
from ..ir import expr as E
from ..ir import ops
from ..ir.printer import written
from ..ir.rules import forward_for_grad
from ..ir.tensor import ComputeOp, Tensor, new_uid, shape_str, topo_order
from .adjoint import contribution
from .exprs import conj, flat_index, mul, simp, subst, to_float


def grad(outputs, wrt, dy=None, stabilize: bool = True, disconnected_inputs: str = "raise") -> list:
    """Adjoints of `wrt` for `outputs`: `dA, dB = kd.grad(C, [A, B], dy=dC)`.

    `outputs`: a tensor or a list (their adjoints add up). `dy`: a tensor shaped like each
    output (its adjoint); may be left out for a scalar (shape `()`) output, which then
    counts as 1. `wrt`: placeholders or intermediate tensors of the graph; one the outputs
    do not depend on (or only through integers) raises DisconnectedInputError, as
    Theano's grad does; `disconnected_inputs='warn'` warns and `'ignore'` says nothing, both giving
    it a zero tensor. Returns one tensor per entry of `wrt`.

    The graph differentiated is the forward graph after the graph rewrites (ir/rules.py:
    canonicalize, stabilize, specialize), with the tensors of `wrt` held as they are: the
    gradient of `log(sigmoid(x))` is that of `-softplus(-x)`, finite where sigmoid saturates,
    and a crossentropy of a softmax gives softmax - onehot, never 1 / softmax.
    `stabilize=False` differentiates the graph as written.
    """
    single_out = isinstance(outputs, Tensor)
    outputs = [outputs] if single_out else list(outputs)
    wrt_list = [wrt] if isinstance(wrt, Tensor) else list(wrt)
    if dy is None:
        dys = [None] * len(outputs)
    else:
        dys = [dy] if isinstance(dy, Tensor) or (single_out and not isinstance(dy, (list, tuple))) \
            else list(dy)
    if len(dys) != len(outputs):
        raise ValueError(f"grad: {len(outputs)} output(s) but {len(dys)} dy; give one dy per output")
    for t in outputs + wrt_list:
        if not isinstance(t, Tensor):
            raise TypeError(f"grad: expected tensors, got {t!r}")
    seeds = {}
    for y, d in zip(outputs, dys):
        if y.dtype not in dt.FLOATS:
            raise TypeError(f"grad: output {written(y)} is {y.dtype}; only float outputs have gradients")
        if d is None:
            if y.ndim:
                raise ValueError(f"grad: output {written(y)} has shape {shape_str(y.shape)}; give its adjoint "
                                 f"as dy= (a placeholder shaped like it), or reduce it to a scalar first")
            seed = E.const(1.0, y.dtype)
        else:
            if not isinstance(d, Tensor):
                raise TypeError(f"grad: dy for {y.name} must be a tensor shaped like it, got {d!r}")
            if d.ndim != y.ndim or any(simp(a - b) is not E.Const(0, "int64")
                                       for a, b in zip(d.shape, y.shape)):
                raise ValueError(f"grad: dy {d.name}{shape_str(d.shape)} must have the shape of "
                                 f"{y.name}{shape_str(y.shape)}")
            if d.dtype != y.dtype:
                raise TypeError(f"grad: dy {d.name} is {d.dtype} but {y.name} is {y.dtype}")
            seed = d
        seeds.setdefault(y, []).append(seed)
    if disconnected_inputs not in ("raise", "warn", "ignore"):
        raise ValueError(f"grad: disconnected_inputs must be 'raise', 'warn' or 'ignore', got {disconnected_inputs!r}")
    for t in wrt_list:
        if t.dtype not in dt.FLOATS:
            raise TypeError(f"grad: {t.name} is {t.dtype}; integer and bool tensors (indices, masks) "
                            f"have no gradient, leave them out of wrt")
    if not stabilize:
        rev = _Reverse(outputs, wrt_list, seeds)
        grads = rev.run()
    else:
        forward, held, restore = forward_for_grad(outputs, wrt_list)
        seeds = {new: seeds[old] for old, new in zip(outputs, forward) if old in seeds}
        rev = _Reverse(forward, held, seeds)
        grads = restore(rev.run())
    if rev.disconnected and disconnected_inputs != "ignore":
        names = ", ".join(wrt_list[k].name for k in rev.disconnected)
        msg = (f"grad: the cost does not depend on {names} (or only through integers), so its gradient "
               f"is zero by construction; pass disconnected_inputs='ignore' "
               f"(or 'warn') to get zeros")
        if disconnected_inputs == "raise":
            raise DisconnectedInputError(msg)
        warnings.warn(msg, stacklevel=2)
    return grads


class _Reverse:
    def __init__(self, outputs, wrt, seeds):
        self.order = topo_order(outputs)
        self.wrt, self.seeds = wrt, {t: list(v) for t, v in seeds.items()}
        targets = set(wrt)
        self.needed: set = set()
        for t in self.order:  # producers first
            if t.dtype in dt.FLOATS and (t in targets or any(i in self.needed for i in t.inputs())):
                self.needed.add(t)
        self.terms: dict = {}  # tensor -> list of expressions over its adjoint axes
        self.axes: dict = {}  # tensor -> adjoint axes
        self.adjoint: dict = {}  # tensor -> finished adjoint tensor (or None: zero)
        self.hoisted: dict = {}  # Reduce node -> (ComputeOp, its free axes)

    def run(self) -> list:
        for t in reversed(self.order):
            if t in self.needed and isinstance(t, ComputeOp):
                seeds, terms = self.seeds.get(t, []), self.terms.get(t, [])
                if seeds and not terms and not any(isinstance(s, Tensor) for s in seeds):
                    seed = seeds[0]  # a scalar output's implicit 1: no tensor needed
                    for s in seeds[1:]:
                        seed = seed + s
                    self.backprop(t, simp(seed))
                else:
                    dt_ = self.finish(t)
                    if dt_ is None:
                        continue
                    x = _reshaped(t)
                    if x is not None and x in self.needed:
                        # a reshape's adjoint is the reshape back (its div/mod index map cannot be
                        # solved per element, which would scan the whole forward domain)
                        self.seeds.setdefault(x, []).append(_reshape_to(dt_, x, f"d{t.name}"))
                    else:
                        self.backprop(t, dt_[t.axes])
        outputs = set(self.seeds)
        self.disconnected = [k for k, t in enumerate(self.wrt) if not outputs & self._reached_from(t)]
        return [self._or_zero(t) for t in self.wrt]

    def _reached_from(self, t: Tensor) -> set:
        """The float tensors computed from `t` (t included): the outputs among them depend on it."""
        reach = {t}
        for u in self.order:
            if u.dtype in dt.FLOATS and any(i in reach for i in u.inputs()):
                reach.add(u)
        return reach

    def _or_zero(self, t: Tensor) -> Tensor:
        a = self.finish(t) if t in self.needed else None
        if a is None:
            axes = self.axes_of(t)
            a = ComputeOp(f"d{t.name}", t.shape, t.dtype, axes, E.const(0.0, t.dtype), new_uid())
            self.adjoint[t] = a
        return a

    def axes_of(self, t: Tensor, hint: E.Load | None = None) -> tuple:
        """The axes of t's adjoint, named after t's own axes or the first load's bare axes."""
        if t not in self.axes:
            if isinstance(t, ComputeOp):
                names = [a.name for a in t.axes]
            else:
                names = [ix.name if hint is not None and isinstance(ix, E.IndexVar) else f"x{k}"
                         for k, ix in enumerate(hint.indices if hint is not None else [None] * t.ndim)]
            names = [n if names.index(n) == k else f"{n}{k}" for k, n in enumerate(names)]
            self.axes[t] = tuple(E.index_var(n, s) for n, s in zip(names, t.shape))
        return self.axes[t]

    def finish(self, t: Tensor):
        """The adjoint tensor of `t` from its seeds and terms (None when zero), made once."""
        if t in self.adjoint:
            return self.adjoint[t]
        seeds, terms = self.seeds.get(t, []), self.terms.get(t, [])
        if len(seeds) == 1 and not terms and isinstance(seeds[0], Tensor):
            self.adjoint[t] = seeds[0]
            return seeds[0]
        alias = _whole_tensor(terms[0], t, self.axes_of(t)) if len(terms) == 1 and not seeds else None
        if alias is not None:  # the adjoint is a tensor made already (a shared load adjoint)
            self.adjoint[t] = alias
            return alias
        axes = self.axes_of(t)
        parts = [s[axes] if isinstance(s, Tensor) else s for s in seeds] + terms
        if not parts:
            self.adjoint[t] = None
            return None
        body = parts[0]
        for p in parts[1:]:
            body = body + p
        body = simp(E.cast(body, t.dtype))
        op = ComputeOp(f"d{t.name}", t.shape, t.dtype, axes, body, new_uid())
        self.adjoint[t] = op
        return op

    # --- one compute op: scalar reverse mode over its body --------------------------
    def backprop(self, y: ComputeOp, dy: E.Expr) -> None:
        """Scalar reverse mode over y's body, seeded with dy (an expression of y's axes)."""
        self.y = y
        self.value_of_body = {} if isinstance(y.body, (E.Load, E.Const)) else {y.body: y[y.axes]}
        adj: dict = {y.body: {((), None): [dy]}}
        self.pending: list = []
        self.adj = adj
        for n in reversed(E.walk(y.body)):
            groups = adj.pop(n, None)
            if not groups or n.dtype not in dt.FLOATS:
                continue
            for (domain, guard), exprs in groups.items():
                a = exprs[0]
                for e in exprs[1:]:
                    a = a + e
                self.rule(n, a, domain, guard)
        self.flush()

    def push(self, n: E.Expr, a: E.Expr, domain: tuple, guard) -> None:
        if n.dtype not in dt.FLOATS or isinstance(n, E.Const):
            return
        if isinstance(n, E.Load) and n.tensor not in self.needed:
            return
        self.adj.setdefault(n, {}).setdefault((domain, guard), []).append(E.cast(a, n.dtype))

    def partial(self, n: E.Expr, child: E.Expr, a: E.Expr, p, domain, guard) -> None:
        p = to_float(p, n.dtype)
        if p is not None:
            self.push(child, mul(a, p), domain, guard)

    def rule(self, n: E.Expr, a: E.Expr, domain: tuple, guard) -> None:
        if isinstance(n, E.Load):
            self.load(n, a, domain, guard)
        elif isinstance(n, E.Cast):
            self.push(n.x, a, domain, guard)  # a float source (int sources have no gradient)
        elif isinstance(n, (E.Unary, E.Binary, E.Call)):  # the op table row's derivative
            row, args = ops.of(n), n.children()
            if row.vjp is not None:
                for arg, g in zip(args, row.vjp(args, n, a)):
                    if g is not None:
                        self.push(arg, g, domain, guard)
            elif row.derivative is not None:  # none: piecewise constant (floordiv), or a bool result
                for arg, p in zip(args, row.derivative(args, n)):
                    self.partial(n, arg, a, p, domain, guard)
        elif isinstance(n, E.Select):
            self.push(n.a, a, domain, conj(guard, n.cond))
            self.push(n.b, a, domain, conj(guard, ~n.cond))
        elif isinstance(n, E.Reduce):
            self.reduce(n, a, domain, guard)

    def reduce(self, n: E.Reduce, a: E.Expr, domain: tuple, guard) -> None:
        inner = domain + tuple(n.axes)
        guard = conj(guard, n.cond)
        if n.combiner == "sum":
            self.push(n.body, a, inner, guard)
        elif n.combiner == "prod":
            # the product of the other factors, exactly (no division: zeros are fine)
            fresh = {r: E.index_var(r.name + "_", r.extent, reduce=True) for r in n.axes}
            others = conj(None if n.cond is None else subst(n.cond, fresh),
                          flat_index(tuple(fresh.values())) != flat_index(n.axes))
            p = E.Reduce("prod", tuple(fresh.values()), subst(n.body, fresh), others, n.dtype)
            self.push(n.body, mul(a, p), inner, guard)
        elif n.combiner in ("max", "min"):
            arg = E.Reduce("argmax" if n.combiner == "max" else "argmin", n.axes, n.body, n.cond, "int64")
            self.push(n.body, a, inner, conj(guard, flat_index(n.axes) == arg))

    # --- a load: the term it adds to its tensor's adjoint ---------------------------
    def load(self, n: E.Load, a: E.Expr, domain: tuple, guard) -> None:
        a, guard = self.materialise(a), (None if guard is None else self.materialise(guard))
        self.pending.append((n, a, domain, guard))

    def flush(self) -> None:
        """Turn the loads' adjoints into terms; an adjoint shared by several loads is made once.

        In `Y[i, j] = gelu(X[i, j] + b[j])` both loads receive the same adjoint
        `dY * gelu'(...)`; it becomes the tensor `Y_adj[i, j]`, which is dX itself and
        which db sums over i, instead of being derived twice.
        """
        uses: dict = {}
        for n, a, domain, guard in self.pending:
            if not domain:
                uses[a] = uses.get(a, 0) + 1
        shared = {}
        for n, a, domain, guard in self.pending:
            if not domain and uses[a] > 1 and a not in shared and _costly(a):
                op = ComputeOp(f"{self.y.name}_adj", self.y.shape, a.dtype, self.y.axes, a, new_uid())
                shared[a] = op[self.y.axes]
        for n, a, domain, guard in self.pending:
            x = n.tensor
            a = shared.get(a, a) if not domain else a
            term = contribution(n, a, guard, list(self.y.axes) + list(domain), self.axes_of(x, n), x.dtype)
            if term is not None:
                self.terms.setdefault(x, []).append(term)
        self.pending = []

    def materialise(self, e: E.Expr) -> E.Expr:
        """Forward values in a partial: Y's body -> Y[o]; every reduction -> a tensor of its own.

        A reduction left inside an adjoint would be recomputed for every point of the
        sum around it (log-softmax's row sum, once per element of the row); as a tensor
        over its free axes it is computed once.
        """
        e = subst(e, self.value_of_body)
        reduces = [r for r in E.walk(e) if isinstance(r, E.Reduce)]
        inner = {m for r in reduces for c in r.children() for m in E.walk(c) if isinstance(m, E.Reduce)}
        mapping = {r: self.hoist(r) for r in reduces if r not in inner}
        return subst(e, mapping) if mapping else e

    def hoist(self, r: E.Reduce) -> E.Expr:
        if r not in self.hoisted:
            order = list(self.y.axes) + [a for n in E.walk(self.y.body) if isinstance(n, E.Reduce)
                                         for a in n.axes]
            free = sorted(E.free_axes(r), key=lambda a: order.index(a) if a in order else len(order) + a.uid)
            axes = tuple(E.index_var(a.name, a.extent) for a in free)
            body = subst(r, dict(zip(free, axes)))
            op = ComputeOp(f"{self.y.name}_{r.combiner}", tuple(a.extent for a in free), r.dtype, axes,
                           simp(body), new_uid())
            self.hoisted[r] = (op, tuple(free))
        op, free = self.hoisted[r]
        return op[free] if free else op[()]


def _costly(e: E.Expr) -> bool:
    """Worth a tensor of its own: more than a load or two and a multiply."""
    return sum(1 for n in E.walk(e) if not isinstance(n, (E.IndexVar, E.Const))) > 4



def _whole_tensor(term: E.Expr, t: Tensor, axes: tuple):
    """T when `term` is exactly `T[axes]` (t's adjoint axes in order) and T is shaped like t."""
    if not (isinstance(term, E.Load) and isinstance(term.tensor, ComputeOp) and term.dtype == t.dtype
            and len(term.indices) == len(axes) and all(a is b for a, b in zip(term.indices, axes))):
        return None
    same = all(simp(a - b) is E.Const(0, "int64") for a, b in zip(term.tensor.shape, t.shape))
    return term.tensor if same else None


def _row_major(axes, shape, to_shape) -> tuple:
    """The indices into an array of `to_shape` of the point `axes` of an array of `shape` holding
    the same elements in row-major order (a reshape's index map)."""
    flat = E.Const(0, "int64")
    for a, d in zip(axes, shape):
        flat = flat * d + a
    idx = []
    for k, d in enumerate(to_shape):
        stride = E.Const(1, "int64")
        for e in to_shape[k + 1:]:
            stride = stride * e
        q = flat // simp(stride) if k + 1 < len(to_shape) else flat
        idx.append(simp(q if k == 0 else q % d))
    return tuple(idx)


def _reshaped(t: ComputeOp):
    """X when t is exactly a row-major reshape of X (kerneldsl.numpy.reshape), else None."""
    body = t.body
    if t.tag != "reshape" or not isinstance(body, E.Load) or body.tensor.dtype != t.dtype:
        return None
    x = body.tensor
    if len(body.indices) != x.ndim or not x.ndim:
        return None
    want = _row_major(t.axes, t.shape, x.shape)
    return x if all(a is b for a, b in zip(want, body.indices)) else None


def _reshape_to(dy: Tensor, x: Tensor, name: str) -> ComputeOp:
    """dy (shaped like a reshape of x) read back in x's shape."""
    axes = tuple(E.index_var(f"x{k}", d) for k, d in enumerate(x.shape))
    idx = _row_major(axes, x.shape, dy.shape)
    return ComputeOp(name, x.shape, x.dtype, axes, dy[idx] if idx else dy[()], new_uid())
