"""Readable text of the IR: `C[i, j] = sum(r, A[i, r] * B[r, j])`."""

from __future__ import annotations

from . import expr as E
from . import ops


def _p(e: E.Expr, names) -> tuple[str, int]:
    """(text, precedence); atoms have precedence 9. Operators print as their op table row says:
    an infix or prefix symbol with Python's precedence (so the text parses back to the same tree),
    or call syntax."""
    return E.fold(e, lambda n, kids: _node(n, kids, names))


def _node(e: E.Expr, kids: tuple, names) -> tuple[str, int]:
    if isinstance(e, E.Const):
        v = e.value
        if isinstance(v, float):
            return repr(v), 9 if v >= 0 else 6
        return str(v), 9 if not isinstance(v, int) or v >= 0 else 6
    if isinstance(e, (E.SizeVar, E.Var)):
        return e.name, 9
    if isinstance(e, E.IndexVar):
        return names(e), 9
    row = ops.row(e)
    if row is not None:
        if row.symbol is None:
            return f"{row.name}({', '.join(t for t, _ in kids)})", 9
        if row.arity == 1:
            x, px = kids[0]
            return row.symbol + (x if px >= row.prec else f"({x})"), row.prec
        (a, pa), (b, pb) = kids
        prec = row.prec
        left_ok = pa > prec or (pa == prec and row.assoc == "left")
        right_ok = pb > prec or (pb == prec and row.associative and isinstance(e.b, E.Binary)
                                 and e.b.op == e.op)
        return f"{a if left_ok else '(' + a + ')'} {row.symbol} {b if right_ok else '(' + b + ')'}", prec
    if isinstance(e, E.Load):
        name = getattr(e.tensor, "name", "?")
        return f"{name}[{', '.join(t for t, _ in kids)}]", 9
    if isinstance(e, E.Select):
        return "where(" + ", ".join(t for t, _ in kids) + ")", 9
    if isinstance(e, E.Cast):
        return f"{e.dtype}({kids[0][0]})", 9
    if isinstance(e, E.Reduce):
        axes = ", ".join(names(a) for a in e.axes)
        axes = axes if len(e.axes) == 1 else f"[{axes}]"
        where = "" if e.cond is None else f", where={kids[1][0]}"
        return f"{e.combiner}({axes}, {kids[0][0]}{where})", 9
    if isinstance(e, E.Bound) or type(e).__name__ == "Checked":
        return kids[0]  # a range-checked index (fusion's, or the loop IR's run-time check): its index
    return f"<{type(e).__name__}>", 9


def _default_names(v: E.IndexVar) -> str:
    return v.name


SHARED_TEXT = 60  # a subexpression used twice or more and printed longer than this gets a name


def expr_str(e: E.Expr, names=_default_names) -> str:
    """The expression's text. It is a DAG (nodes are interned): a long subexpression used more than
    once prints once, named (`tanh(e1) * 0.5 + e1  where e0 = ..., e1 = tanh(e0) * 0.5 + e0`), so
    the text grows with the graph, not with the number of paths through it."""
    uses: dict = {}
    for n in E.walk(e):
        for k in n.children():
            uses[k] = uses.get(k, 0) + 1
    if not any(v > 1 for v in uses.values()):
        return _p(e, names)[0]
    bound: list = []

    def node(n, kids):
        text, prec = _node(n, kids, names)
        if uses.get(n, 0) > 1 and len(text) > SHARED_TEXT:
            bound.append(f"e{len(bound)} = {text}")
            return f"e{len(bound) - 1}", 9
        return text, prec
    text = E.fold(e, node)[0]
    return text + ("  where " + ", ".join(bound) if bound else "")


def tensor_line(n) -> str:
    """`C[i, j] = sum(r, A[i, r] * B[r, j])`, with the dtype unless float32."""
    idx = ", ".join(a.name for a in n.axes)
    lhs = f"{n.name}[{idx}]" if n.axes else f"{n.name}[]"
    return f"{lhs} = {expr_str(n.body)}" + ("" if n.dtype == "float32" else f"  # {n.dtype}")


def tensor_str(t) -> str:
    """One line per compute op of the graph producing `t`, inputs first."""
    from .tensor import ComputeOp, Placeholder, shape_str, topo_order
    lines = []
    for n in topo_order([t]):
        if isinstance(n, Placeholder) and n is t:
            lines.append(f"{n.name} = placeholder({shape_str(n.shape)}, {n.dtype})")
        elif isinstance(n, ComputeOp):
            lines.append(tensor_line(n))
    return "\n".join(lines)


def written(t, limit: int = 60) -> str:
    """A tensor as its user wrote it, for messages: an input's or a named op's name, and a value
    kerneldsl.numpy computed (named `negative6` inside) as the expression of what it came from,
    numpy-style (`-y * log(p)`), shortened past `limit` characters."""
    import re

    from .tensor import ComputeOp
    memo: dict = {}

    def text(u) -> tuple[str, int]:
        if u in memo:
            return memo[u]
        auto = isinstance(u, ComputeOp) and u.tag and re.fullmatch(re.escape(u.tag) + r"\d+", u.name)
        if not auto:
            out = (u.name, 9)
        else:
            def node(n, kids):
                if isinstance(n, E.Load):
                    return text(n.tensor)
                if isinstance(n, E.Reduce):
                    return f"{n.combiner}({kids[0][0]})", 9
                return _node(n, kids, _default_names)
            out = E.fold(u.body, node)
        memo[u] = out
        return out
    s = text(t)[0]
    return s if len(s) <= limit else s[:limit - 3] + "..."
