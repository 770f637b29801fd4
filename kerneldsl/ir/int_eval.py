"""Integer evaluation of size expressions on the host: one evaluator, on the op table.

A size expression (constants and sizes under + - * // %, min/max, comparisons, & | ~)
becomes Python source over unbounded ints, each operator spelled by the `py` text of
its op table row: `(n - 2) // 2 + 1` -> `((((s[0] - 2)) // (2) if (2) else 0) + 1)`.
Division and modulo by zero give 0, as in the kernels.

- `int_source(e, slot)`: that source, with size `v` read as `s[slot[v]]`; the callable's
  shape functions are one `lambda s: (...)` of it, called per kernel launch.
- `eval_int(e, sizes)` / `eval_cond(e, sizes)`: the value for sizes given as a dict
  {SizeVar: int}; the source is compiled once per expression (nodes are interned, so the
  same shape is the same key) and cached.
"""

from __future__ import annotations

import functools

from . import expr as E
from . import ops


def int_source(e: E.Expr, slot: dict) -> str:
    """Python source computing an integer size expression from a sequence `s` of size values."""
    return E.fold(e, lambda n, kids: _source(n, kids, slot))


def _source(n: E.Expr, kids: tuple, slot: dict) -> str:
    if isinstance(n, E.Const):
        return str(bool(n.value)) if n.dtype == "bool" else str(int(n.value))
    if isinstance(n, E.SizeVar):
        return f"s[{slot[n]}]"
    if isinstance(n, E.Cast):
        return f"({kids[0]} != 0)" if n.dtype == "bool" else kids[0]
    row = ops.row(n)
    if row is not None and row.py is not None:
        return row.py.format(*kids)
    raise ValueError(f"cannot evaluate the size expression {n}")


@functools.lru_cache(maxsize=4096)
def int_function(e: E.Expr):
    """`e` compiled to a function of a {SizeVar: int} dict."""
    sizes = sorted(E.size_vars(e), key=lambda v: v.name)
    names = {v: f"_v{k}" for k, v in enumerate(sizes)}
    return eval(f"lambda s: {int_source(e, names)}", dict(zip(names.values(), sizes)))


def eval_int(e: E.Expr, sizes: dict) -> int:
    """Value of an integer expression over sizes and constants (floor // and %, as numpy)."""
    return int(int_function(e)(sizes))


def eval_cond(e: E.Expr, sizes: dict) -> bool:
    """Value of a condition on sizes (an entry check: comparisons, & | ~ of size expressions)."""
    return bool(int_function(e)(sizes))
