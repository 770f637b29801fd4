"""`kd.check_grad`: symbolic gradients against central finite differences, in float64.

The scalar checked is L = sum_k <dy_k, Y_k> for random adjoints dy_k, so every
output element takes part. Both sides run on the numpy reference interpreter:
the symbolic gradient once, the finite differences two forward evaluations per
checked element (every element of small inputs, a seeded random subset of
large ones).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import numpy as np

from .. import dtypes as dt
from ..ir.tensor import Placeholder, Tensor, topo_order
from ..reference import evaluate
from .grad import grad


@dataclass
class GradCheck:
    """What a successful check measured: worst absolute and relative errors, elements checked."""
    max_abs_err: float
    max_rel_err: float
    checked: int
    per_input: dict = field(default_factory=dict)  # name -> (max abs err, elements checked)

    def __str__(self) -> str:
        parts = ", ".join(f"{k}: {v[0]:.2e} over {v[1]}" for k, v in self.per_input.items())
        return (f"gradient check passed: max abs err {self.max_abs_err:.2e}, max rel err "
                f"{self.max_rel_err:.2e}, {self.checked} element(s) ({parts})")


def _placeholders_for(fn, arrays):
    params = [p.name for p in inspect.signature(fn).parameters.values()]
    out = []
    for k, a in enumerate(arrays):
        a = np.asarray(a)
        name = params[k] if k < len(params) and params[k].isidentifier() else f"in{k}"
        dtype = "float64" if a.dtype.kind == "f" else a.dtype.name
        out.append(Placeholder(name, tuple(_const(s) for s in a.shape), dtype, k))
    return out


def _const(n: int):
    from ..ir.expr import Const
    return Const(int(n), "int64")


def check_grad(fn_or_graph, inputs, wrt=None, *, eps: float | None = None, atol: float | None = None,
               rtol: float | None = None, seed: int = 0, max_elements: int = 64) -> GradCheck:
    """Check `kd.grad` numerically; AssertionError with a table of the worst elements on mismatch.

    Two forms:
      kd.check_grad(lambda x, w: kd.compute(...), [x_array, w_array])  # float64 placeholders made here
      kd.check_grad(Y, {X: x_array, W: w_array}, wrt=[X])               # an existing graph
    Float inputs are checked (integer ones, such as gather indices, are held fixed).
    Use float64 graphs for a tight check; float32 graphs get eps=1e-3, tolerances 1e-2.
    """
    if callable(fn_or_graph) and not isinstance(fn_or_graph, Tensor):
        arrays = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
        phs = _placeholders_for(fn_or_graph, arrays)
        outputs = fn_or_graph(*phs)
        feed = {p: np.asarray(a).astype(p.dtype) for p, a in zip(phs, arrays)}
    else:
        outputs = fn_or_graph
        if not isinstance(inputs, dict):
            raise TypeError("check_grad(graph, inputs): inputs must be a dict {placeholder: array}")
        feed = {p: np.asarray(a).astype(p.dtype) for p, a in inputs.items()}
    outputs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    used = [t for t in topo_order(outputs) if isinstance(t, Placeholder)]
    if wrt is None:
        wrt = [p for p in used if p.dtype in dt.FLOATS and p in feed]
    wrt = [wrt] if isinstance(wrt, Tensor) else list(wrt)
    low = any(t.dtype == "float32" for t in outputs + wrt)
    eps = eps if eps is not None else (1e-3 if low else 1e-6)
    atol = atol if atol is not None else (1e-2 if low else 1e-6)
    rtol = rtol if rtol is not None else (1e-2 if low else 1e-5)

    rng = np.random.default_rng(seed)
    dys = [Placeholder(f"d{y.name}", y.shape, y.dtype, -1 - k) for k, y in enumerate(outputs)]
    ys = evaluate(outputs, feed)
    dy_vals = {d: rng.standard_normal(np.shape(y)).astype(d.dtype) for d, y in zip(dys, ys)}
    grads = grad(outputs, wrt, dy=dys, disconnected_inputs="ignore")  # zero: checked against differences
    sym = evaluate(grads, {**feed, **dy_vals})

    def loss(f) -> float:
        vals = evaluate(outputs, f)
        return float(sum(np.sum(np.asarray(v, np.float64) * dy_vals[d].astype(np.float64))
                         for v, d in zip(vals, dys)))

    rows, per_input, worst_abs, worst_rel, checked = [], {}, 0.0, 0.0, 0
    for t, g in zip(wrt, sym):
        x = feed[t]
        flat = np.arange(x.size)
        if x.size > max_elements:
            flat = np.sort(rng.choice(x.size, max_elements, replace=False))
        t_abs = 0.0
        for f in flat:
            ix = np.unravel_index(f, x.shape) if x.ndim else ()
            h = eps * max(1.0, abs(float(x[ix])))
            xp, xm = x.copy(), x.copy()
            xp[ix] += h
            xm[ix] -= h
            num = (loss({**feed, t: xp}) - loss({**feed, t: xm})) / (2 * h)
            s = float(np.asarray(g)[ix])
            err = abs(s - num)
            rel = err / max(abs(num), 1e-12)
            t_abs, worst_abs = max(t_abs, err), max(worst_abs, err)
            worst_rel = max(worst_rel, rel if err > atol else 0.0)
            checked += 1
            if not err <= atol + rtol * abs(num):  # NaN fails too
                rows.append((err, t.name, tuple(int(i) for i in ix), s, num))
        per_input[t.name] = (t_abs, len(flat))
    if rows:
        rows.sort(key=lambda r: -r[0] if r[0] == r[0] else -np.inf)
        lines = [(f"gradient check failed: {len(rows)} of {checked} element(s) differ "
                  f"(atol={atol:g}, rtol={rtol:g}, eps={eps:g})"),
                 f"  {'input':<10} {'index':<16} {'symbolic':>14} {'numeric':>14} {'abs err':>10}"]
        for err, name, ix, s, num in rows[:10]:
            lines.append(f"  {name:<10} {ix!s:<16} {s:>14.6g} {num:>14.6g} {err:>10.2e}")
        if len(rows) > 10:
            lines.append(f"  ... and {len(rows) - 10} more")
        lines.append("backward graph:")
        lines += ["  " + ln for g in grads for ln in str(g).splitlines()]
        raise AssertionError("\n".join(lines))
    return GradCheck(worst_abs, worst_rel, checked, per_input)
