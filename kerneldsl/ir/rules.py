"""The graph rewrite phases every build runs (Theano's and PyTensor's databases), in order:

  canonicalize  exact simplifications: the simplifier's rule sets (simplify.py), with constant
                folding that declines to make inf or nan of finite constants
  stabilize     forms that neither overflow nor lose precision (stabilize.py: log1p, softplus,
                log-softmax, log-sum-exp, ...); rule sets for ops of a tag first (a
                crossentropy of a softmax)
  specialize    cheaper equal forms (specialize.py: pow, sqr), and full constant folding
  cse           ops computing the same values (equal bodies up to the names of their axes, same
                shape and dtype) merged into one: before the phases (so that `x * x` is seen where
                x was written twice) and after them

Each phase is a tuple of rule sets of the rewrite engine (rewrite.py), run to its fixed point on
each op body before the next phase starts, producers before consumers, so that a rule matching
through a load sees its producer rewritten already. Folding waits for stabilization: in
`log(1 + exp(1000.))` canonicalize leaves `exp(1000.)` (inf) alone, stabilize makes
`softplus(1000.)`, and specialize folds that to 1000.0 (Theano/Theano#2781).

Each op body has the engine's node-growth budget (4x its size + 64 nodes, or `budget`): a phase
that outgrows it stops and keeps its last expression within it.

`rewrite_graph(outputs, counts)` is the pass (schedule.py runs it at every build, on the
forward and the gradient ops alike); `forward_for_grad(outputs, wrt)` gives kd.grad the
rewritten forward graph to differentiate, so that gradients are taken of the stable forms
(the gradient of softplus is a sigmoid; of log(softmax) at the target, softmax - onehot).
"""

from __future__ import annotations

import collections
import math

from . import expr as E
from .lower import checks_kept
from .rewrite import Pat, Rule, RuleSet, rewrite
from .simplify import FOLD, IDENTITIES, INDEX
from .specialize import SPECIALIZE as SPECIALIZE_RULES
from .stabilize import CROSSENTROPY, STABILITY
from .tensor import ComputeOp, Placeholder, RangeCheck, map_graph, topo_order


def _finite_only(rule: Rule) -> Rule:
    """`rule` (a fold) declining where finite constants would give inf or nan."""
    def build(n, **caps):
        out = rule.build(n=n, **caps)
        if isinstance(out, E.Const) and out.dtype in ("float32", "float64") and not math.isfinite(out.value) \
                and all(not isinstance(k.value, float) or math.isfinite(k.value) for k in n.children()):
            return None
        return out
    return Rule(rule.name, rule.pattern, build, rule.guard)


SAFE_FOLD = RuleSet("fold_finite", [_finite_only(r) for r in FOLD.rules])

# a read of an op whose every element is one constant (kd.grad's seeds, knp.full) is that constant
CONSTANT_OPS = RuleSet("constant_ops", [Rule("constant_op_read", Pat.producer(Pat.const(name="k")), lambda k: k)])

CANONICALIZE = (SAFE_FOLD, CONSTANT_OPS, IDENTITIES, INDEX)
STABILIZE = (STABILITY, SAFE_FOLD, IDENTITIES, INDEX)
SPECIALIZE = (SPECIALIZE_RULES, FOLD, IDENTITIES, INDEX)

PHASES = (("canonicalize", CANONICALIZE), ("stabilize", STABILIZE), ("specialize", SPECIALIZE))

TAGGED = {"crossentropy": (CROSSENTROPY,)}  # op tag -> rule sets run on its body before stabilize


def rewrite_body(op: ComputeOp, body: E.Expr, counts: collections.Counter | None = None,
                 budget: int | None = None) -> E.Expr:
    """`body` (of `op`) rewritten by the phases in order; `counts` adds up the rules fired."""
    new = body
    for name, phase in PHASES:
        if name == "stabilize" and op.tag in TAGGED:
            new, fired = rewrite(new, TAGGED[op.tag], budget)
            if counts is not None:
                counts.update(fired)
        new, fired = rewrite(new, phase, budget)
        if counts is not None:
            counts.update(fired)
    return new


def rewrite_graph(outputs, counts: collections.Counter | None = None, budget: int | None = None) -> tuple:
    """The graph rewrite pass: CSE, every op body by the phases (producers first), CSE again. A
    rewrite that drops a read keeps its range checks (lower.checks_kept)."""
    def fn(op, body):
        new = rewrite_body(op, body, counts, budget)
        return body if new is body else op.with_body(new, checks_kept(op, body, new))
    merged = cse(tuple(outputs), counts)  # first, so that patterns see one op where two were written
    return cse(map_graph(merged, fn)[0], counts)


def _key(op: ComputeOp, body: E.Expr):
    """What an op computes, up to the names of its axes: equal keys, equal values."""
    axes = {a: E.IndexVar(f"_o{k}", a.extent, -(1 << 40) - k) for k, a in enumerate(op.axes)}
    return E.canonical(E.substitute(body, axes)), tuple(op.shape), op.dtype


def _check_key(c):
    """A range check is the check of one read of one op (its condition may be spelled with sizes
    that another copy of the op has unified); other checks are their conditions."""
    return ("read", c.op, c.load, c.tensor, c.dim) if isinstance(c, RangeCheck) else c


def cse(outputs, counts: collections.Counter | None = None) -> tuple:
    """Ops that compute the same values merged (producers first, so consumers of merged ops
    become equal in turn): each reads the first of its kind. An output is never merged away,
    nor an op with checks the first one lacks."""
    outs = set(outputs)
    seen: dict = {}

    def fn(op, body):
        key = _key(op, body)
        first = seen.get(key)
        if first is not None and op not in outs and {_check_key(c) for c in op.checks} <= {
                _check_key(c) for c in first.checks}:
            if counts is not None:
                counts["cse"] += 1
            return first
        new = op if body is op.body else op.with_body(body)
        seen.setdefault(key, new)
        return new
    return map_graph(tuple(outputs), fn)[0]


def forward_for_grad(outputs: list, wrt: list) -> tuple[list, list, object]:
    """The forward graph kd.grad differentiates: `outputs` rewritten by the phases, where the
    compute ops of `wrt` are held: no rewrite of their consumers reads past them (placeholders
    stand in for them while rewriting), so every path through them stays. Returns (outputs,
    wrt, restore): differentiate the first with respect to the second, then `restore(gradients)`
    reads the ops of `wrt` as given (they compute the same values as the rewritten ones)."""
    held_ops = [t for t in topo_order(wrt) if isinstance(t, ComputeOp) and t in set(wrt)]
    if not held_ops:
        return list(rewrite_graph(tuple(outputs))), list(wrt), lambda grads: grads
    stand = {t: Placeholder(t.name, t.shape, t.dtype, t.uid) for t in held_ops}
    roots = list(map_graph(tuple(outputs), replaced=stand)[0])
    for t in held_ops:  # each held op reading the stand-ins of the others
        roots.append(map_graph((t,), replaced={h: p for h, p in stand.items() if h is not t})[0][0])
    rewritten = rewrite_graph(tuple(roots))
    final: dict = {}  # held op -> its rewritten op, reading the others' rewritten ops
    for t, r in zip(held_ops, rewritten[len(outputs):]):
        final[t] = map_graph((r,), replaced={stand[h]: final[h] for h in final})[0][0]
    relink = {stand[h]: final[h] for h in held_ops}
    forward = list(map_graph(rewritten[:len(outputs)], replaced=relink)[0])
    back = {final[h]: h for h in held_ops}
    return forward, [final.get(t, t) for t in wrt], lambda grads: list(map_graph(tuple(grads), replaced=back)[0])
