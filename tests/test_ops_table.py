"""The op table (kerneldsl/ir/ops.py): every row evaluates alike in numpy, the compiled C, the
reference and the loop interpreter; the printer's precedences round-trip; a row registered in a
test reaches every pass with no other edit."""

from __future__ import annotations

import random

import numpy as np
import pytest
from conftest import assert_same

import kerneldsl as kd
from kerneldsl.errors import DTypeError
from kerneldsl.ir import expr as E
from kerneldsl.ir import ops
from kerneldsl.ir.int_eval import eval_cond, eval_int, int_source
from kerneldsl.ir.loop_interp import run_module
from kerneldsl.ir.lower import lower

DTYPES = ("bool", "int32", "int64", "float32", "float64")
# a few values per dtype; second operands without 0 for floats (x / 0 is covered elsewhere)
VALUES = {
    "bool": ([True, False, True, False, True, False], [True, True, False, False, True, False]),
    "int32": ([-7, -1, 0, 1, 3, 100], [2, -3, 1, 5, 0, -1]),
    "int64": ([-7, -1, 0, 1, 3, 1 << 40], [2, -3, 1, 5, 0, -1]),
    "float32": ([-2.5, -1.0, 0.0, 0.5, 1.0, 3.0], [2.0, -3.0, 0.5, 5.0, 1.5, -1.0]),
    "float64": ([-2.5, -1.0, 0.0, 0.5, 1.0, 3.0], [2.0, -3.0, 0.5, 5.0, 1.5, -1.0]),
}


def _accepts(row: ops.Op, dtype: str) -> bool:
    args = tuple(E.const(v[0], dtype) for v in VALUES[dtype][:row.arity])
    try:
        row.typing(dtype, args)
    except DTypeError:
        return False
    return dtype not in row.becomes


def _operand(row: ops.Op, dtype: str) -> str:
    """The dtype the row casts operands of `dtype` to (its C spelling is keyed by it)."""
    return row.typing(dtype, tuple(E.const(v[0], dtype) for v in VALUES[dtype][:row.arity]))[0]


def _rows_for(dtype: str) -> list:
    return [r for r in ops.REGISTRY.values() if _accepts(r, dtype)]


def test_every_row_is_complete():
    for (kind, name), row in ops.REGISTRY.items():
        assert row.kind == kind and row.name == name and row.arity == (1 if kind == "unary" else row.arity)
        assert row.kind != "binary" or row.arity == 2
        assert row.kind == "call" or row.symbol is not None, f"{name}: an operator prints with a symbol"
        for d in DTYPES:
            if _accepts(row, d):  # every accepted dtype has a spelling (for the operands' dtype)
                row.spelling("c", _operand(row, d))
                row.spelling("cuda", _operand(row, d))


@pytest.mark.parametrize("dtype", DTYPES)
def test_rows_agree_numpy_c_reference_loop_interpreter(dtype):
    """One output per row: numpy (the row itself) == compiled C == reference == loop interpreter."""
    n = kd.size("n")
    a = kd.placeholder((n,), dtype, name="a")
    b = kd.placeholder((n,), dtype, name="b")
    rows = _rows_for(dtype)
    def apply(row, i):
        build = {"unary": E.unary, "binary": E.binary, "call": E.call}[row.kind]
        return build(row.name, *(a[i], b[i])[:row.arity])
    outs = [kd.compute((n,), lambda i, row=row: apply(row, i), name=f"o{k}_{row.name}")
            for k, row in enumerate(rows)]
    va, vb = (np.array(v, dtype) for v in VALUES[dtype])
    feed = {a: va, b: vb}
    with np.errstate(all="ignore"):
        want = [ops.evaluate(row, [v.astype(_operand(row, dtype)) for v in (va, vb)[:row.arity]], o.dtype)
                for row, o in zip(rows, outs)]
        ref = kd.evaluate(outs, feed)
    got = kd.build([a, b], outs)(va, vb)
    loop = run_module(lower([a, b], outs), [va, vb])
    for row, o, w, r, g, lp in zip(rows, outs, want, ref, got, loop):
        what = f"{row.kind} {row.name} on {dtype}"
        assert_same(r, w, what=what + ": reference vs numpy")
        assert_same(lp, w, what=what + ": loop interpreter vs numpy")
        assert_same(g, w, what=what + ": C vs numpy")


def test_cuda_spellings_override_c():
    row = ops.INTRINSICS["rsqrt"]
    assert row.spelling("c", "float32") == "(1.0f / sqrtf({0}))"
    assert row.spelling("cuda", "float32") == "rsqrtf({0})"
    assert ops.BINARY["add"].spelling("c", "int32") == "((int32_t)({0} + {1}))"  # int32 wraps as numpy
    assert ops.BINARY["add"].spelling("c", "int64", saturate=True) == "kd_sat_add({0}, {1})"
    assert ops.BINARY["floordiv"].spelling("cuda", "int64") == "kd_floordiv_i64({0}, {1})"


def test_operator_methods_come_from_the_table():
    for row in ops.REGISTRY.values():
        for m in (row.method, row.rmethod):
            if m is not None:
                assert m in E.Expr.__dict__, f"{row.name}: Expr.{m} is not installed"
    x = kd.placeholder((3,), "int64", name="x")[0]
    assert (2 - x) is E.binary("sub", 2, x)
    assert (~(x > 1)).op == "not" and (~x).op == "invert"


# --- printing --------------------------------------------------------------------------

def _random_tree(rnd: random.Random, leaves, depth: int, kind: str):
    """An int64 (kind "int") or bool (kind "bool") expression; no associative operator has the same
    operator as its right operand, the one case the printer writes without parentheses. Constants
    appear only beside a non-constant operand (Python would fold `-2 + 3` itself)."""
    if kind == "bool":
        if depth <= 0 or rnd.random() < 0.3:
            cmp = rnd.choice(["lt", "le", "gt", "ge", "eq", "ne"])
            a, b = (_random_tree(rnd, leaves, depth - 1, "int") for _ in range(2))
            return E.binary(cmp, a, b)
        if rnd.random() < 0.2:
            return ~_random_tree(rnd, leaves, depth - 1, "bool")
        op = rnd.choice(["and", "or", "xor"])
        kinds = ("bool", "bool")
    else:
        if depth <= 0 or rnd.random() < 0.2:
            return rnd.choice(leaves)
        if rnd.random() < 0.15:
            return E.unary(rnd.choice(["neg", "invert"]), _random_tree(rnd, leaves, depth - 1, "int"))
        op = rnd.choice(["add", "sub", "mul", "floordiv", "mod", "pow", "and", "or", "xor"])
        kinds = ("int", "int")
    a = _random_tree(rnd, leaves, depth - 1, kinds[0])
    for _ in range(100):
        b = _random_tree(rnd, leaves, depth - 1, kinds[1])
        if not (ops.BINARY[op].associative and isinstance(b, E.Binary) and b.op == op):
            break
    if kind == "int" and rnd.random() < 0.3:
        c = E.const(rnd.choice([3, -2, 0]))
        a, b = (a, c) if rnd.random() < 0.5 or ops.BINARY[op].associative else (c, a)
    return E.binary(op, a, b)


def test_printer_round_trips_precedence():
    x = kd.placeholder((4,), "int64", name="x")
    leaves = [x[0], x[1], x[2]]
    rnd = random.Random(0)
    for k in range(400):
        e = _random_tree(rnd, leaves, 4, "bool" if k % 2 else "int")
        text = str(e)
        back = eval(text, {"x": x})  # the printed DSL, parsed back
        assert back is e, f"{text!r} parses back as {back}"


def test_printer_spells_calls_and_prefixes():
    x = kd.placeholder((3,), "float32", name="x")
    assert str(kd.maximum(x[0], -x[1]) ** (-x[2])) == "maximum(x[0], -x[1]) ** (-x[2])"
    assert str(-(x[0] + 1)) == "-(x[0] + 1.0)"
    assert str((x[0] < 1) & ~(x[1] > 2)) == "(x[0] < 1.0) & ~(x[1] > 2.0)"


# --- size expressions: one evaluator ----------------------------------------------------------

def test_size_expressions_evaluate_from_the_table():
    n, m = kd.sizes("n m")
    e = kd.maximum((n - 2) // 2 + 1, m % 3) * 2 - n // 0
    assert eval_int(e, {n: 9, m: 5}) == 8
    assert eval_int(-n + abs(m - 10), {n: 3, m: 4}) == 3
    assert eval_cond((n > 2) & ~(m == 4), {n: 3, m: 5}) is True
    assert eval_cond((n > 2) & ~(m == 4), {n: 3, m: 4}) is False
    assert int_source(n * 2 + 1, {n: 0}) == "((s[0] * 2) + 1)"
    with pytest.raises(ValueError, match="size expression"):
        eval_int(kd.exp(E.cast(n, "float32")), {n: 1})


# --- a new row reaches every pass --------------------------------------------------------------

@pytest.fixture
def toy_rows():
    """`<<` as a new binary operator and `hypot` as a new intrinsic, registered for one test."""
    def shift_rule(dtype, args):
        if dtype not in ("int32", "int64"):
            raise DTypeError(f"<< needs integer operands, got {dtype}")
        return dtype, dtype
    ops.register(ops.Op("lshift", "binary", 2, shift_rule, lambda a, b, dtype: np.left_shift(a, b),
                        {"*": "({0} << {1})"}, symbol="<<", prec=3.5, py="({0} << {1})",
                        method="__lshift__", rmethod="__rlshift__"))
    def float_rule(dtype, args):
        d = dtype if dtype in ("float32", "float64") else "float64"
        return d, d
    ops.register(ops.Op("hypot", "call", 2, float_rule, lambda a, b, dtype: np.hypot(a, b),
                        {"float32": "hypotf({0}, {1})", "float64": "hypot({0}, {1})"},
                        derivative=lambda a, out: (a[0] / out, a[1] / out)))
    yield
    ops.unregister("binary", "lshift")
    ops.unregister("call", "hypot")


def test_a_registered_operator_reaches_printing_c_reference_and_loops(toy_rows):
    n = kd.size("n")
    x = kd.placeholder((n,), "int64", name="x")
    y = kd.compute((n,), lambda i: (x[i] << 2) + 1, name="y")
    assert str(y) == "y[i] = (x[i] << 2) + 1  # int64"
    v = np.array([1, 2, -3, 5], np.int64)
    (ref,) = kd.evaluate([y], {x: v})
    np.testing.assert_array_equal(ref, (v << 2) + 1)
    f = kd.build([x], [y])
    assert "<< INT64_C(2)" in f.source
    np.testing.assert_array_equal(f(v), ref)
    np.testing.assert_array_equal(run_module(lower([x], [y]), [v])[0], ref)
    assert eval_int(n << 3, {n: 2}) == 16  # and size expressions


def test_a_registered_intrinsic_has_its_gradient(toy_rows):
    n = kd.size("n")
    a = kd.placeholder((n,), "float64", name="a")
    b = kd.placeholder((n,), "float64", name="b")
    y = kd.compute((n,), lambda i: E.call("hypot", a[i], b[i]), name="y")
    assert str(y) == "y[i] = hypot(a[i], b[i])  # float64"
    va, vb = np.array([3.0, -1.0, 0.5]), np.array([4.0, 2.0, -1.5])
    np.testing.assert_allclose(kd.build([a, b], [y])(va, vb), np.hypot(va, vb))
    r = kd.reduce_axis(n, "r")
    s = kd.compute((), lambda: kd.sum(y[r], axis=r), name="s")
    da, db = kd.grad(s, [a, b])
    ga, gb = kd.evaluate([da, db], {a: va, b: vb})
    np.testing.assert_allclose(ga, va / np.hypot(va, vb))
    np.testing.assert_allclose(gb, vb / np.hypot(va, vb))
