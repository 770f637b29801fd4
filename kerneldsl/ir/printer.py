"""Readable text of the IR: `C[i, j] = sum(r, A[i, r] * B[r, j])`."""

from __future__ import annotations

from . import expr as E

_INFIX = {"add": ("+", 4), "sub": ("-", 4), "mul": ("*", 5), "div": ("/", 5), "floordiv": ("//", 5),
          "mod": ("%", 5), "pow": ("**", 7), "lt": ("<", 1), "le": ("<=", 1), "gt": (">", 1),
          "ge": (">=", 1), "eq": ("==", 1), "ne": ("!=", 1), "and": ("&", 3), "or": ("|", 2),
          "xor": ("^", 2.5)}  # Python's precedences: the printed text parses back to the same tree


def _p(e: E.Expr, names) -> tuple[str, int]:
    """(text, precedence); atoms have precedence 9."""
    if isinstance(e, E.Const):
        v = e.value
        if isinstance(v, float):
            return repr(v), 9 if v >= 0 else 6
        return str(v), 9 if not isinstance(v, int) or v >= 0 else 6
    if isinstance(e, (E.SizeVar, E.Var)):
        return e.name, 9
    if isinstance(e, E.IndexVar):
        return names(e), 9
    if isinstance(e, E.Binary):
        sym, prec = _INFIX[e.op]
        a, pa = _p(e.a, names)
        b, pb = _p(e.b, names)
        left_ok = pa > prec or (pa == prec and e.op != "pow" and prec != 1)
        right_ok = pb > prec or (pb == prec and isinstance(e.b, E.Binary) and e.b.op == e.op
                                 and e.op in ("add", "mul", "and", "or", "xor"))
        return f"{a if left_ok else '(' + a + ')'} {sym} {b if right_ok else '(' + b + ')'}", prec
    if isinstance(e, E.Unary):
        x, px = _p(e.x, names)
        sym = {"neg": "-", "not": "~", "invert": "~"}[e.op]
        return sym + (x if px >= 6 else f"({x})"), 6
    if isinstance(e, E.Call):
        return f"{e.fn}({', '.join(_p(a, names)[0] for a in e.args)})", 9
    if isinstance(e, E.Load):
        name = getattr(e.tensor, "name", "?")
        return f"{name}[{', '.join(_p(i, names)[0] for i in e.indices)}]", 9
    if isinstance(e, E.Select):
        return "where(" + ", ".join(_p(x, names)[0] for x in (e.cond, e.a, e.b)) + ")", 9
    if isinstance(e, E.Cast):
        return f"{e.dtype}({_p(e.x, names)[0]})", 9
    if isinstance(e, E.Reduce):
        axes = ", ".join(names(a) for a in e.axes)
        axes = axes if len(e.axes) == 1 else f"[{axes}]"
        where = "" if e.cond is None else f", where={_p(e.cond, names)[0]}"
        return f"{e.combiner}({axes}, {_p(e.body, names)[0]}{where})", 9
    if isinstance(e, E.Bound):  # a range-checked index left by fusion
        return _p(e.index, names)
    if type(e).__name__ == "Checked":  # loop IR: a run-time range-checked index
        return _p(e.index, names)
    return f"<{type(e).__name__}>", 9


def _default_names(v: E.IndexVar) -> str:
    return v.name


def expr_str(e: E.Expr, names=_default_names) -> str:
    return _p(e, names)[0]


def tensor_str(t) -> str:
    """One line per compute op of the graph producing `t`, inputs first."""
    from .tensor import ComputeOp, Placeholder, shape_str, topo_order
    lines = []
    for n in topo_order([t]):
        if isinstance(n, Placeholder) and n is t:
            lines.append(f"{n.name} = placeholder({shape_str(n.shape)}, {n.dtype})")
        elif isinstance(n, ComputeOp):
            idx = ", ".join(a.name for a in n.axes)
            lhs = f"{n.name}[{idx}]" if n.axes else f"{n.name}[]"
            lines.append(f"{lhs} = {expr_str(n.body)}" + ("" if n.dtype == "float32" else f"  # {n.dtype}"))
    return "\n".join(lines)
