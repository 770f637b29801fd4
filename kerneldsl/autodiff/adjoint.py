"""The adjoint of one load: solving its index map for the forward axes (Halide's propagate_adjoints).

A load `X[g(d)]` inside compute `Y`, where `d` is the load's forward domain (Y's
output axes and the reduction axes around the load), receives the adjoint
`a(d)` (dY times the chain of partials, under a guard). Its contribution to
`dX[x]` is

    dX[x] += sum over every d with g(d) == x of a(d).

Instead of scanning the whole domain for each x (a dense Jacobian), the
equations g_k(d) == x_k are solved for axes of d, one dimension at a time:

Worked example, the 1-d convolution `Y[i] = sum(r, X[2*i + r] * W[r])`,
domain d = (i, r), adjoint a = dY[i] * W[r], index g = 2*i + r:

    dimension 0: 2*i + r == x     candidates: i (output axis, coef 2), r (coef 1)
                                  pick i (output axes first: r then stays a short loop)
                 i = (x - r) // 2  guarded by (x - r) % 2 == 0
    ranges:      0 <= (x - r) // 2 < n_out   (dropped when bounds prove it)
    left free:   r  -> a new reduction axis over [0, K)

    dX[x] = sum(r, dY[(x - r) // 2] * W[r], where=(x - r) % 2 == 0 & 0 <= (x - r) // 2 < n_out)

An index read from a tensor that is itself pure index arithmetic (`knp.arange`, a
broadcast of one) is that arithmetic: `log_p[arange(n)[i], y[i]]` is solved as
`log_p[i, y[i]]`, so i = x0 and no sum over the rows remains.

An index that no axis can be solved from (a gather `idx[i]`, `i // m`, `i * n`
with a symbolic n) stays an equation: `where=(g_k == x_k)`, its axes summed.
Lowering runs a sum whose condition equates an output axis with such an index as
a scatter over the forward domain (ir/scatter.py), so its work is the domain's
size, not the domain times the adjoint's size.
"""

from __future__ import annotations

from ..ir import expr as E
from ..ir.bounds import interval
from ..ir.simplify import build_linear, linear
from ..ir.tensor import ComputeOp
from .exprs import conj, simp, subst


def _provable(cond: E.Expr) -> bool:
    c = simp(cond)
    return isinstance(c, E.Const) and bool(c.value)


_FLIP = {"lt": "ge", "le": "gt", "gt": "le", "ge": "lt", "eq": "ne", "ne": "eq"}


def truth(cond: E.Expr):
    """True/False when the bounds of the axes decide an index comparison, else None.

    `x0 < 3` for an axis x0 over [0, 3) is always true; the simplifier alone cannot
    see it, bounds inference can (interval of x0 - 3 is [-3, -1]).
    """
    cond = simp(cond)
    if isinstance(cond, E.Const):
        return bool(cond.value)
    if isinstance(cond, E.Unary) and cond.op == "not":
        t = truth(cond.x)
        return None if t is None else not t
    if not (isinstance(cond, E.Binary) and cond.op in _FLIP and cond.a.dtype == "int64"):
        return None
    rng = interval(simp(cond.a - cond.b))
    if rng is None:
        return None
    lo, hi = rng
    yes = {"lt": hi < 0, "le": hi <= 0, "gt": lo > 0, "ge": lo >= 0, "eq": None, "ne": (lo > 0) | (hi < 0)}
    if yes[cond.op] is not None and _provable(yes[cond.op]):
        return True
    no = yes[_FLIP[cond.op]]
    if no is not None and _provable(no):
        return False
    return None


def conjuncts(cond: E.Expr | None) -> list:
    """The parts of a guard built with `&` or `conj`, in order."""
    if cond is None:
        return []
    if isinstance(cond, E.Binary) and cond.op == "and" and cond.dtype == "bool":
        return conjuncts(cond.a) + conjuncts(cond.b)
    if isinstance(cond, E.Select) and isinstance(cond.b, E.Const) and cond.b.value is False:
        return conjuncts(cond.cond) + conjuncts(cond.a)
    return [cond]


def _in_range(v: E.Expr, extent: E.Expr) -> list:
    """The guards `0 <= v < extent`, less those the bounds of v prove."""
    rng = interval(v)
    out = []
    if rng is None or not _provable(rng[0] >= 0):
        out.append(v >= 0)
    if rng is None or not _provable(rng[1] < extent):
        out.append(v < extent)
    return out


def _rank(v: E.IndexVar, coef: int, position: int):
    """Which axis to solve for first: output axes, then unit coefficients, then long axes."""
    ext = v.extent.value if isinstance(v.extent, E.Const) else float("inf")
    return (v.reduce, abs(coef) != 1, -ext, position)


def _candidates(lin: dict, unknown: list):
    """(axis, coef) pairs of `lin` that can be solved for: linear and nowhere else in `lin`."""
    out = []
    for v in unknown:
        c = lin.get(v)
        if not c:
            continue
        if any(t is not v and t is not None and v in E.free_axes(t) for t in lin):
            continue
        out.append((v, c))
    return out


def _mixed_radix(g: E.Expr, unknown: list):
    """((v, c), u, linear form) when `g` is `c*v + u + rest` with u an axis over [0, c) and
    neither in `rest`: then v = (x - rest) // c and u = (x - rest) % c exactly, with no
    reduction left (a pooling window's adjoint when its stride is its size).

    Worked example, `Y[i] = max(r, X[2*i + r])` over r in [0, 2): dX[x] reads Y at i = x // 2
    with r = x % 2, instead of summing r over [0, 2) under `(x - r) % 2 == 0`.
    """
    lin = linear(g)
    if lin is None:
        return None
    axes = [(t, c) for t, c in lin.items() if t in unknown and c]
    if len(axes) != 2:
        return None
    if any(t is not None and t not in unknown and any(a in E.free_axes(t) for a, _ in axes) for t in lin):
        return None
    (a, ca), (b, cb) = axes
    for (v, c), (u, cu) in (((a, ca), (b, cb)), ((b, cb), (a, ca))):
        if cu == 1 and c > 1 and isinstance(u.extent, E.Const) and u.extent.value == c:
            return (v, c), u, lin
    return None


def solve(indices, domain: list, xs: tuple):
    """Solve `indices == xs` for axes of `domain`.

    Returns (solution {axis: expr of xs and free axes}, free axes (domain order), guards).
    """
    pending = {k: simp(g) for k, g in enumerate(indices)}
    unknown = list(domain)
    solution: dict = {}
    guards: list = []
    for k in sorted(pending):
        pair = _mixed_radix(pending[k], unknown)
        if pair is None:
            continue
        (v, c), u, lin = pair
        numer = simp(xs[k] - build_linear({t: q for t, q in lin.items() if t is not v and t is not u}))
        found = {v: simp(numer // c), u: simp(numer % c)}
        guards.extend(_in_range(found[v], v.extent))
        solution = {a: simp(subst(e, found)) for a, e in solution.items()}
        solution.update(found)
        unknown.remove(v)
        unknown.remove(u)
        del pending[k]
        pending = {j: simp(subst(g, found)) for j, g in pending.items()}
    while True:
        best = None
        for k, g in pending.items():
            lin = linear(g)
            if lin is None:
                continue
            for v, c in _candidates(lin, unknown):
                key = _rank(v, c, domain.index(v))
                if best is None or key < best[0]:
                    best = (key, k, v, c, lin)
        if best is None:
            break
        _, k, v, c, lin = best
        rest = build_linear({t: q for t, q in lin.items() if t is not v})
        numer = xs[k] - rest
        if c < 0:
            numer, c = -numer, -c
        numer = simp(numer)
        if c == 1:
            ve = numer
        else:
            ve = simp(numer // c)
            guards.append(numer % c == 0)
        guards.extend(_in_range(ve, v.extent))
        solution = {a: simp(subst(e, {v: ve})) for a, e in solution.items()}
        solution[v] = ve
        unknown.remove(v)
        del pending[k]
        pending = {j: simp(subst(g, {v: ve})) for j, g in pending.items()}
    # what is left are equations no axis could be solved from
    for k, g in sorted(pending.items()):
        eq = simp(g == xs[k])
        if not _provable(eq):
            guards.append(eq)
    return solution, unknown, guards


def _index_arithmetic(op) -> bool:
    """A compute op whose body reads nothing: a function of its own axes and the sizes."""
    return isinstance(op, ComputeOp) and op.dtype in ("int32", "int64") and not any(
        isinstance(n, (E.Load, E.Reduce)) for n in E.walk(op.body))


def expand_index_ops(e: E.Expr) -> E.Expr:
    """`e` with every read of an index-arithmetic op replaced by that arithmetic (arange(n)[i]
    -> i), so that the solver sees the affine index it stands for."""
    def rule(n):
        if isinstance(n, E.Load) and _index_arithmetic(n.tensor):
            return E.substitute(n.tensor.body, dict(zip(n.tensor.axes, n.indices)))
        return None
    return simp(E.transform(e, rule)) if any(isinstance(n, E.Load) for n in E.walk(e)) else e


def contribution(load: E.Load, adj: E.Expr, guard: E.Expr | None, domain: list, xs: tuple,
                 dtype: str) -> E.Expr:
    """The term `load` adds to the adjoint of its tensor, as an expression of the axes `xs`."""
    solution, free, guards = solve(tuple(expand_index_ops(i) for i in load.indices), domain, xs)
    fresh = {a: E.index_var(a.name, a.extent, reduce=True) for a in free}
    mapping = {a: simp(subst(e, fresh)) for a, e in solution.items()}
    mapping.update(fresh)
    # index guards first (pure index arithmetic), then gathers and the forward's own guards,
    # each read only where the ones before it hold
    cond = None
    parts = [subst(g, mapping) for g in guards] + [subst(g, mapping) for g in conjuncts(guard)]
    for g in parts:
        t = truth(g)
        if t is False:
            return None  # this load never reaches dX here
        if t is None:
            cond = conj(cond, simp(g))
    body = E.cast(simp(subst(adj, mapping)), dtype)
    if fresh:
        return E.Reduce("sum", tuple(fresh.values()), body, cond, dtype)
    return body if cond is None else E.Select(cond, body, E.const(0.0, dtype), dtype)
