"""Pattern rewriting of expressions: rules as data, applied bottom-up to a fixed point.

In the spirit of tinygrad's PatternMatcher/UPat. A `Pat` describes a node (its kind,
op, dtype and children) with named captures; a `Rule` pairs a pattern with a `build`
function of the captures that returns the replacement, or None to decline; rules are
grouped in named `RuleSet`s; `rewrite(e, rulesets)` applies them.

    x_times_one = Rule("mul_one", Pat.binary("mul", Pat.var("x"), Pat.const(1), commutative=True),
                       lambda x: x)
    e, fired = rewrite(a * 1 + 0 * b, [RuleSet("mine", [x_times_one, ...])])
    fired                   # Counter({'mul_one': 1, ...})

Patterns:
- `Pat.var("x")`: any node, captured as x (a name used twice must bind the same node:
  `Pat.binary("sub", Pat.var("x"), Pat.var("x"))` is `x - x`); `Pat.any()` captures nothing.
- `Pat.const()`, `Pat.const(1)`, `Pat.const(name="c")`: a constant (any, or equal to a value:
  1 matches 1 and 1.0, never True; `Pat.const(True)` matches the bool constant).
- `Pat.unary(op, x)`, `Pat.binary(op, a, b)`, `Pat.call(fn, *args)`, `Pat.cast(x)`,
  `Pat.select(c, a, b)`, `Pat.load(*indices)`: nodes of a kind; `op`/`fn` is a name, a tuple of
  names, or None (any); children None are not looked at. Every constructor takes `dtype=` (a
  dtype or a tuple of them) and `name=` (capture the node itself); `p.named("n")` too.
  `commutative=True` on a binary pattern also tries the operands swapped (add, mul, and, or,
  xor, eq, ne: the rows of the op table marked commutative).
- `p | q`: either pattern (the first that matches).
- `Pat.producer(inner)`: matches ACROSS TENSOR BOUNDARIES: a `Load` of a compute op whose body,
  with the op's axes replaced by the load's indices, matches `inner`. `log(softmax(x)[i, j])`
  is matched by `Pat.call("log", Pat.producer(Pat.binary("div", Pat.var("e"), Pat.var("s"))))`
  when softmax is its own compute op; the captures are nodes of that inlined body.

Rules: `Rule(name, pattern, build, guard=None)`: `guard(**captures)` must hold, then
`build(**captures)` gives the replacement (None, or the node itself: the rule declines); a
replacement of another dtype is a bug in the rule and raises TypeError.

`rewrite(e, rulesets, budget=None, max_passes=64)` runs passes over `e`: each pass visits
every node once, children first, and replaces it by the first rule (in rule-set order, then
rule order) that fires; passes repeat until one changes nothing (the fixed point). It
returns the expression and a `Rewrites` counter of the rules that fired, by name.

The node-growth budget: a rule set that keeps growing the expression must not blow it up.
Before each pass the expression's size (distinct nodes) is compared with `budget` (default:
4 times the input's size plus 64); beyond it, or after `max_passes` passes, rewriting STOPS:
the last expression within the budget is returned (every rewrite preserves the value, so it
is a correct, less rewritten, result), the stop is logged as a warning on the
`kerneldsl.rewrite` logger, and `Rewrites.stopped` says why. It never raises.

`rewrite_graph(outputs, rulesets)` rewrites every compute op's body of a tensor graph,
producers first, and rebuilds the consumers to read the new ops (`tensor.map_graph`).
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from . import expr as E
from . import ops

log = logging.getLogger("kerneldsl.rewrite")

_OPNAME = {E.Unary: "op", E.Binary: "op", E.Call: "fn", E.Reduce: "combiner"}
_ANY = object()


def _names(x) -> frozenset | None:
    if x is None:
        return None
    return frozenset((x,) if isinstance(x, str) else x)


def _capture(caps: dict, name: str | None, n: E.Expr) -> bool:
    if name is None:
        return True
    old = caps.get(name)
    if old is None:
        caps[name] = n
        return True
    return old is n


class Pat:
    """A pattern over expression nodes; build one with the static constructors."""

    __slots__ = ("dtype", "name")

    def __init__(self, name: str | None = None, dtype=None):
        self.name = name
        self.dtype = _names(dtype)

    def match(self, n: E.Expr, caps: dict) -> bool:
        """Whether `n` matches, adding the captures to `caps` (left partial on failure)."""
        raise NotImplementedError

    def keys(self) -> set:
        """(node class, op name or None) pairs a matching node can have; None: any node."""
        return {None}

    def named(self, name: str) -> Pat:
        """This pattern, also capturing the matched node as `name`."""
        import copy
        p = copy.copy(self)
        p.name = name
        return p

    def __or__(self, other: Pat) -> Pat:
        return _Alt((self, other))

    # --- constructors -------------------------------------------------------------------
    @staticmethod
    def var(name: str | None = None, dtype=None) -> Pat:
        return _Var(name, dtype)

    @staticmethod
    def any(dtype=None) -> Pat:
        return _Var(None, dtype)

    @staticmethod
    def const(value=_ANY, name: str | None = None, dtype=None) -> Pat:
        return _Const(value, name, dtype)

    @staticmethod
    def unary(op=None, x: Pat | None = None, name: str | None = None, dtype=None) -> Pat:
        return _Node(E.Unary, op, None if x is None else (x,), name, dtype)

    @staticmethod
    def binary(op=None, a: Pat | None = None, b: Pat | None = None, name: str | None = None, dtype=None,
               commutative: bool = False) -> Pat:
        src = None if a is None and b is None else (a or Pat.any(), b or Pat.any())
        if commutative:
            bad = [o for o in (_names(op) or ()) if not ops.BINARY[o].commutative]
            if op is None or bad:
                raise ValueError(f"commutative matching needs commutative operators, got {op!r}")
        return _Node(E.Binary, op, src, name, dtype, commutative)

    @staticmethod
    def reduce(name: str | None = None, dtype=None) -> Pat:
        return _Node(E.Reduce, None, None, name, dtype)

    @staticmethod
    def call(fn=None, *args: Pat, name: str | None = None, dtype=None) -> Pat:
        return _Node(E.Call, fn, args or None, name, dtype)

    @staticmethod
    def cast(x: Pat | None = None, name: str | None = None, dtype=None) -> Pat:
        return _Node(E.Cast, None, None if x is None else (x,), name, dtype)

    @staticmethod
    def select(cond: Pat | None = None, a: Pat | None = None, b: Pat | None = None, name: str | None = None,
               dtype=None) -> Pat:
        src = (cond, a, b)
        src = None if src == (None, None, None) else tuple(p or Pat.any() for p in src)
        return _Node(E.Select, None, src, name, dtype)

    @staticmethod
    def load(*indices: Pat, name: str | None = None, dtype=None) -> Pat:
        return _Node(E.Load, None, indices or None, name, dtype)

    @staticmethod
    def producer(inner: Pat, name: str | None = None, dtype=None) -> Pat:
        return _Producer(inner, name, dtype)


class _Var(Pat):
    __slots__ = ()

    def match(self, n, caps):
        return (self.dtype is None or n.dtype in self.dtype) and _capture(caps, self.name, n)


class _Const(Pat):
    __slots__ = ("value",)

    def __init__(self, value, name, dtype):
        super().__init__(name, dtype)
        self.value = value

    def match(self, n, caps):
        if type(n) is not E.Const or (self.dtype is not None and n.dtype not in self.dtype):
            return False
        v = self.value
        if v is not _ANY:
            if isinstance(v, bool):
                if n.value is not v:
                    return False
            elif isinstance(n.value, bool) or n.value != v:
                return False
        return _capture(caps, self.name, n)

    def keys(self):
        return {(E.Const, None)}


class _Node(Pat):
    __slots__ = ("cls", "commutative", "ops", "src")

    def __init__(self, cls, op, src, name, dtype, commutative=False):
        super().__init__(name, dtype)
        self.cls, self.ops, self.src, self.commutative = cls, _names(op), src, commutative

    def match(self, n, caps):
        if type(n) is not self.cls or (self.dtype is not None and n.dtype not in self.dtype):
            return False
        if self.ops is not None and getattr(n, _OPNAME[self.cls]) not in self.ops:
            return False
        src = self.src
        if src is not None:
            kids = n.children()
            if len(kids) != len(src):
                return False
            if self.commutative:
                trial = dict(caps)
                if not (src[0].match(kids[0], trial) and src[1].match(kids[1], trial)):
                    trial = dict(caps)
                    if not (src[0].match(kids[1], trial) and src[1].match(kids[0], trial)):
                        return False
                caps.update(trial)
            else:
                for p, k in zip(src, kids):
                    if not p.match(k, caps):
                        return False
        return _capture(caps, self.name, n)

    def keys(self):
        return {(self.cls, None)} if self.ops is None else {(self.cls, o) for o in self.ops}


class _Alt(Pat):
    __slots__ = ("alts",)

    def __init__(self, alts):
        super().__init__()
        self.alts = alts

    def match(self, n, caps):
        for p in self.alts:
            trial = dict(caps)
            if p.match(n, trial) and _capture(trial, self.name, n):
                caps.update(trial)
                return True
        return False

    def keys(self):
        return set().union(*(p.keys() for p in self.alts))

    def __or__(self, other):
        return _Alt((*self.alts, other))


class _Producer(Pat):
    __slots__ = ("inner",)

    def __init__(self, inner, name, dtype):
        super().__init__(name, dtype)
        self.inner = inner

    def match(self, n, caps):
        if type(n) is not E.Load or (self.dtype is not None and n.dtype not in self.dtype):
            return False
        body = inlined(n)
        return body is not None and self.inner.match(body, caps) and _capture(caps, self.name, n)

    def keys(self):
        return {(E.Load, None)}


@functools.lru_cache(maxsize=1024)
def inlined(load: E.Load) -> E.Expr | None:
    """The body of the compute op `load` reads, at the load's indices (None: not a compute op).
    The op's reduction axes are renamed to fresh ones (once per op), so that a replacement that
    takes a reduction out of the producer never shares an axis with one of the consumer's."""
    from .tensor import ComputeOp
    op = load.tensor
    if not isinstance(op, ComputeOp):
        return None
    body = _fresh_body(op)
    at = {}
    for k, (a, ix) in enumerate(zip(op.axes, load.indices)):
        if _within(ix, a.extent):
            at[a] = ix
        elif a in E.free_axes(body):  # the read's range check stays with the index (as fusion's)
            at[a] = ix.index if isinstance(ix, E.Bound) else ix
            at[a] = E.Bound(at[a], a.extent, op.name, k)
        else:  # nothing would carry the check of this dimension: no reading through
            return None
    return E.substitute(body, at)


def _within(ix: E.Expr, extent: E.Expr) -> bool:
    """`ix` is known to lie in [0, extent): an axis over that extent, or a constant inside it."""
    if isinstance(ix, E.IndexVar):
        return ix.extent is extent or ix.extent == extent
    return isinstance(ix, E.Const) and isinstance(extent, E.Const) and 0 <= ix.value < extent.value


@functools.lru_cache(maxsize=256)
def _fresh_body(op) -> E.Expr:
    axes = {a for n in E.walk(op.body) if isinstance(n, E.Reduce) for a in n.axes}
    if not axes:
        return op.body
    fresh = {a: E.index_var(a.name, a.extent, reduce=True) for a in sorted(axes, key=lambda a: a.uid)}

    def rule(n):
        if isinstance(n, E.Reduce):
            return E.Reduce(n.combiner, tuple(fresh.get(a, a) for a in n.axes), n.body, n.cond, n.dtype)
        return fresh.get(n)
    return E.transform(op.body, rule)


# --- rules ---------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Rule:
    """`pattern` -> `build(**captures)` (None: decline), where `guard(**captures)` holds."""

    name: str
    pattern: Pat
    build: Callable[..., E.Expr | None]
    guard: Callable[..., bool] | None = None


@dataclass(frozen=True, eq=False)
class RuleSet:
    """Named, ordered rules: the first that fires at a node wins."""

    name: str
    rules: tuple

    def __init__(self, name: str, rules: Iterable[Rule]):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "rules", tuple(rules))
        dup = {r.name for r in self.rules if sum(q.name == r.name for q in self.rules) > 1}
        if dup:
            raise ValueError(f"rule set {name}: rule names must be unique, got {sorted(dup)} twice")


class Rewrites(Counter):
    """How many times each rule fired, by name; `stopped` says why rewriting stopped early
    (the node-growth budget, or the pass limit), None when it reached its fixed point."""

    stopped: str | None = None


class _Matcher:
    """The rules of some rule sets, indexed by the (node class, op) their patterns can match."""

    def __init__(self, rulesets: tuple):
        self.rules = [(r, r.pattern.keys()) for rs in rulesets for r in rs.rules]
        self.table: dict = {}

    def candidates(self, key: tuple) -> tuple:
        hit = self.table.get(key)
        if hit is None:
            any_op = (key[0], None)
            hit = tuple(r for r, keys in self.rules if None in keys or key in keys or any_op in keys)
            self.table[key] = hit
        return hit

    def apply(self, n: E.Expr, counts: Counter) -> E.Expr | None:
        cls = type(n)
        attr = _OPNAME.get(cls)
        for rule in self.candidates((cls, None if attr is None else getattr(n, attr))):
            caps: dict = {}
            if rule.pattern.match(n, caps) and (rule.guard is None or rule.guard(**caps)):
                r = rule.build(**caps)
                if r is not None and r is not n:
                    if r.dtype != n.dtype:
                        raise TypeError(f"rule {rule.name} rewrote {n} ({n.dtype}) as {r} ({r.dtype}): "
                                        f"a rewrite must keep the dtype")
                    counts[rule.name] += 1
                    return r
        return None


@functools.lru_cache(maxsize=64)
def _matcher(rulesets: tuple) -> _Matcher:
    return _Matcher(rulesets)


def rewrite(e: E.Expr, rulesets, budget: int | None = None, max_passes: int = 64) -> tuple[E.Expr, Rewrites]:
    """`e` rewritten by the rule sets to a fixed point: (expression, Rewrites counter)."""
    rulesets = (rulesets,) if isinstance(rulesets, RuleSet) else tuple(rulesets)
    m = _matcher(rulesets)
    counts = Rewrites()
    prev = None
    limit = budget
    for _ in range(max_passes):
        order = E.walk(e)
        if limit is None:
            limit = 4 * len(order) + 64
        elif len(order) > limit:
            counts.stopped = (f"node-growth budget: {len(order)} nodes > {limit} "
                              f"(rule sets {', '.join(rs.name for rs in rulesets)})")
            log.warning("rewrite stopped by the %s; returning the last expression within it", counts.stopped)
            return prev, counts
        memo: dict = {}
        for n in order:
            kids = n.children()
            if kids:
                new = tuple(memo[k] for k in kids)
                if any(a is not b for a, b in zip(kids, new)):
                    n2 = n.rebuild(new)
                    r = m.apply(n2, counts)
                    memo[n] = n2 if r is None else r
                    continue
            r = m.apply(n, counts)
            memo[n] = n if r is None else r
        new = memo[e]
        if new is e:
            return e, counts
        prev, e = e, new
    counts.stopped = f"pass limit: no fixed point after {max_passes} passes"
    return e, counts


def rewrite_graph(outputs, rulesets, budget: int | None = None) -> tuple[tuple, Rewrites]:
    """Every compute op's body of the graph of `outputs` rewritten (producers first, so that
    producer patterns see rewritten producers), consumers rebuilt to read the new ops:
    (new outputs in order, Rewrites summed over the ops)."""
    from .tensor import map_graph
    total = Rewrites()

    def body(op, b):
        new, counts = rewrite(b, rulesets, budget)
        total.update(counts)
        if counts.stopped is not None:
            total.stopped = f"{op.name}: {counts.stopped}"
        return new
    new_outputs, _ = map_graph(outputs, body)
    return new_outputs, total
