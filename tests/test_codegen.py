"""Generated C is warning-free; every stage prints readably; the simplifier's rules hold."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
from conftest import assert_same, rng

import kerneldsl as kd
from kerneldsl.ir import expr as E
from kerneldsl.ir.loop_interp import run_module
from kerneldsl.ir.lower import lower
from kerneldsl.ir.simplify import simplify

STRICT = "-O2 -fopenmp -fwrapv -Wall -Wextra -Werror -march=native"


def _matmul():
    n, m, k = kd.sizes("n m k")
    A = kd.placeholder((n, k), "float32", name="A")
    B = kd.placeholder((k, m), "float32", name="B")
    r = kd.reduce_axis(k, name="r")
    C = kd.compute((n, m), lambda i, j: kd.sum(A[i, r] * B[r, j], axis=r), name="C")
    return [A, B], [C]


def _softmax():
    n, m = kd.sizes("n m")
    X = kd.placeholder((n, m), "float64", name="X")
    r = kd.reduce_axis(m, "r")
    mx = kd.compute((n,), lambda i: kd.max(X[i, r], axis=r), name="mx")
    s = kd.compute((n,), lambda i: kd.sum(kd.exp(X[i, r] - mx[i]), axis=r), name="s")
    Y = kd.compute((n, m), lambda i, j: kd.exp(X[i, j] - mx[i]) / s[i], name="Y")
    return [X], [Y]


def _gather_argmax():
    v, d, n = kd.sizes("v d n")
    T = kd.placeholder((v, d), "float32", name="T")
    idx = kd.placeholder((n,), "int32", name="idx")
    r, s = kd.reduce_axis(d, "r"), kd.reduce_axis(d, "s")
    am = kd.compute((n,), lambda i: kd.argmax(T[idx[i], r], axis=r, where=r % 2 == 0), name="am")
    mn = kd.compute((n,), lambda i: kd.min(T[idx[i], s] * 2, axis=s), name="mn")
    return [T, idx], [am, mn]


def _conv_padded():
    n, w = kd.sizes("n w")
    X = kd.placeholder((n,), "float32", name="X")
    W = kd.placeholder((w,), "float32", name="W")
    r = kd.reduce_axis(w, "r")
    Y = kd.compute((n,), lambda i: kd.sum(kd.where(i + r - 1 < n, X[i + r - 1], 0.0) * W[r], axis=r,
                                          where=i + r >= 1), name="Y")
    return [X, W], [Y]


def _every_op(dtype):
    n = kd.size("n")
    X = kd.placeholder((n,), dtype, name="X")
    Z = kd.placeholder((n,), dtype, name="Z")
    outs = []

    def elementwise(fn):
        return lambda i: fn(X[i], Z[i])

    for k, fn in enumerate([
            lambda a, b: a + b, lambda a, b: a - b, lambda a, b: a * b, lambda a, b: a / b,
            lambda a, b: a // b, lambda a, b: a % b, lambda a, b: a ** b, lambda a, b: -a,
            lambda a, b: kd.where(a < b, a, b), lambda a, b: (a <= b) & (a != b) | (a >= b) ^ (a == b),
            lambda a, b: kd.minimum(a, b), lambda a, b: kd.maximum(a, b), lambda a, b: kd.abs(a),
            lambda a, b: kd.cast(a, "int32"), lambda a, b: kd.cast(a, "bool"), lambda a, b: kd.cast(a, "float32"),
            *([lambda a, b, f=f: getattr(kd, f)(a) for f in ("exp", "log", "log1p", "expm1", "tanh", "sigmoid",
                                                             "erf", "sqrt", "rsqrt", "sin", "cos", "floor",
                                                             "ceil")]),
            *([lambda a, b: a & b, lambda a, b: ~a] if dtype in ("int32", "int64") else [])]):
        outs.append(kd.compute((n,), elementwise(fn), name=f"o{k}"))
    r = kd.reduce_axis(n, "r")

    def reduction(reducer):
        return lambda: reducer(X[r], axis=r)

    for c in ("sum", "prod", "max", "min", "argmax", "argmin"):
        outs.append(kd.compute((), reduction(getattr(kd, c)), name=f"red_{c}"))
    return [X, Z], outs


GRAPHS = {"matmul": _matmul, "softmax": _softmax, "gather_argmax": _gather_argmax, "conv_padded": _conv_padded,
          **{f"every_op_{d}": (lambda d=d: _every_op(d)) for d in ("float32", "float64", "int32", "int64")}}


def _feed(inputs):
    """Small positive values; integer inputs (the gather indices) stay in [0, 3)."""
    return {p: (rng(2).integers(0, 3, tuple(3 for _ in p.shape)) + (p.dtype not in ("int32", "int64")))
            .astype(p.dtype) for p in inputs}


@pytest.mark.parametrize("graph", sorted(GRAPHS))
def test_generated_c_compiles_with_wall_werror(graph, fresh_cache, monkeypatch):
    monkeypatch.setenv("KERNELDSL_CFLAGS", STRICT)
    inputs, outputs = GRAPHS[graph]()
    f = kd.build(inputs, outputs)  # CompileError on any warning
    feed = _feed(inputs)
    got = f(*[feed[p] for p in inputs])
    got = [got] if len(outputs) == 1 else list(got)
    for t, g, want in zip(outputs, got, kd.evaluate(outputs, feed)):
        assert_same(g, want, rtol=1e-5, atol=1e-6, what=t.name)


def test_generated_c_compiles_with_wall_werror_bool_graph(fresh_cache, monkeypatch):
    monkeypatch.setenv("KERNELDSL_CFLAGS", STRICT)
    n = kd.size("n")
    X = kd.placeholder((n,), "bool", name="X")
    Z = kd.placeholder((n,), "bool", name="Z")

    def elementwise(fn):
        return lambda i: fn(X[i], Z[i])

    outs = [kd.compute((n,), elementwise(fn), name=f"o{k}") for k, fn in enumerate([
        lambda a, b: a & b, lambda a, b: a | b, lambda a, b: a ^ b, lambda a, b: ~a, lambda a, b: a + b,
        lambda a, b: kd.minimum(a, b), lambda a, b: kd.maximum(a, b), lambda a, b: kd.abs(a),
        lambda a, b: kd.where(a, b, a), lambda a, b: kd.cast(a, "float32"), lambda a, b: a < b])]
    f = kd.build([X, Z], outs)
    x, z = np.array([True, False, True]), np.array([True, True, False])
    for t, g, want in zip(outs, f(x, z), kd.evaluate(outs, {X: x, Z: z})):
        assert_same(g, want, what=t.name)


# --- printing ---------------------------------------------------------------------------------

def test_tensor_prints_as_an_equation():
    _, (C,) = _matmul()
    assert str(C) == "C[i, j] = sum(r, A[i, r] * B[r, j])"


def test_graph_prints_one_line_per_op_with_dtypes():
    _, (Y,) = _softmax()
    text = str(Y).splitlines()
    assert text == ["mx[i] = max(r, X[i, r])  # float64",
                    "s[i] = sum(r, exp(X[i, r] - mx[i]))  # float64",
                    "Y[i, j] = exp(X[i, j] - mx[i]) / s[i]  # float64"]


def test_module_prints_the_loop_nest():
    ins, outs = _matmul()
    with kd.knobs(gemm=False):  # the loop nest runs (a contraction's default is the GEMM template)
        f = kd.build(ins, outs)
    text = re.sub(r"  # (vectorized|unrolled)$", "", str(f.module), flags=re.MULTILINE)  # the schedule's marks
    assert text == "\n".join([
        "# kernel C  (runs when (n > 0) & (m > 0))",
        "for i in range(n):  # parallel",
        "  for j in range(m):",
        "    acc: float32 = 0.0",
        "    for r in range(k):",
        "      acc = acc + A[i, r] * B[r, j]",
        "    C[i, j] = acc"])
    assert "/* C[i, j] = sum(r, A[i, r] * B[r, j]) */" in f.source
    assert "kd_kernel_C" in f.source
    assert repr(f) == "<kerneldsl.Function (A, B) -> (C), 1 kernel(s)>"


def test_entry_checks_print_in_the_module():
    n = kd.size("n")
    X = kd.placeholder((n,), "float32", name="X")
    Y = kd.compute((n - 1,), lambda i: X[i + 1] - X[i], name="Y")
    text = str(kd.build([X], [Y]).module)
    assert "Y[i] = X[i + 1] - X[i]" in text


@pytest.mark.parametrize("build,text", [
    (lambda a, b: (a + b) * a, "(A[i] + B[i]) * A[i]"),
    (lambda a, b: a - (b - a), "A[i] - (B[i] - A[i])"),
    (lambda a, b: a - b - a, "A[i] - B[i] - A[i]"),
    (lambda a, b: -(a + b), "-(A[i] + B[i])"),
    (lambda a, b: a / (b * a), "A[i] / (B[i] * A[i])"),
    (lambda a, b: (a ** b) ** a, "(A[i] ** B[i]) ** A[i]"),
    (lambda a, b: a ** (b ** a), "A[i] ** (B[i] ** A[i])"),  # redundant but unambiguous
    (lambda a, b: kd.where((a < b) & (b < 1.0), kd.exp(a), 2.5), "where((A[i] < B[i]) & (B[i] < 1.0), exp(A[i]), 2.5)"),
    (lambda a, b: kd.cast(a, "int32") // 2, "int32(A[i]) // 2  # int32"),
])
def test_expression_printing_keeps_needed_parentheses(build, text):
    n = kd.size("n")
    A = kd.placeholder((n,), "float32", name="A")
    B = kd.placeholder((n,), "float32", name="B")
    assert str(kd.compute((n,), lambda i: build(A[i], B[i]), name="Y")) == "Y[i] = " + text


def test_debug_level_2_logs_each_pass_and_its_ir(monkeypatch, caplog):
    from kerneldsl.pipeline import PASSES
    monkeypatch.setenv("KERNELDSL_DEBUG", "2")
    ins, outs = _matmul()
    with caplog.at_level(logging.DEBUG, logger="kerneldsl"), kd.knobs(gemm=False):
        kd.build(ins, outs)
    text = caplog.text
    assert [p for p in PASSES if f"pass {p}: " in text] == list(PASSES)
    assert "acc = acc + A[i, r] * B[r, j]" in text and "kd_entry" in text  # the IR and the source
    monkeypatch.setenv("KERNELDSL_DEBUG", "0")
    caplog.clear()
    kd.build(ins, outs)
    assert "pass" not in caplog.text


# --- the simplifier -----------------------------------------------------------------------------

def _axes():
    n = kd.size("n")
    return E.index_var("i", n), E.index_var("k", n), n


def test_index_normalisation_is_structural():
    i, k, n = _axes()
    assert simplify(2 * i + k - i) is simplify(i + k)
    assert simplify(k + i) is simplify(i + k)
    assert simplify((i + 1) * 3 - 3 * i) is E.Const(3, "int64")
    assert simplify(i - i) is E.Const(0, "int64")
    assert simplify(n - (n - i)) is i
    assert simplify(-(-i)) is i


def test_constant_folding():
    assert simplify(E.const(2) + 3) is E.Const(5, "int64")
    assert simplify(E.const(7) // -2) is E.Const(-4, "int64")  # floor, as numpy
    assert simplify(E.const(-7) % 3) is E.Const(2, "int64")
    assert simplify(E.const(7) // 0) is E.Const(0, "int64")
    assert simplify(kd.exp(E.const(0.0, "float64"))) is E.Const(1.0, "float64")
    assert simplify(kd.cast(E.const(2.5, "float64"), "int32")) is E.Const(2, "int32")
    assert simplify(E.const(3, "int32") * 2 < 7) is E.Const(True, "bool")


def test_identities_exact_in_floating_point_only():
    x = kd.placeholder((3,), "float32", name="x")[0]
    assert simplify(x * 1) is x
    assert simplify(1 * x) is x
    assert simplify(x / 1) is x
    assert simplify(x - 0) is x
    assert simplify(-(-x)) is x
    assert simplify(x * 0) is not E.Const(0.0, "float32")  # NaN * 0 is NaN
    assert simplify(x + 0) is not x  # -0.0 + 0 is +0.0
    assert simplify(kd.where(E.const(True), x, 2 * x)) is x


def test_divmod_rules():
    i, k, n = _axes()
    assert simplify((2 * i + 3) // 2) is simplify(i + 1)
    assert simplify((2 * i + 3) % 2) is E.Const(1, "int64")
    assert simplify((4 * i + k) % 4) is simplify(k % 4)
    assert simplify((4 * i + k) // 4) is simplify(i + k // 4)
    assert simplify(i < i + 1) is E.Const(True, "bool")


def test_simplify_preserves_values_of_integer_expressions():
    r = np.random.default_rng(0)
    i, k, n = E.index_var("i", 10), E.index_var("k", 10), kd.size("n")
    leaves = [i, k, n, E.const(0), E.const(1), E.const(-3), E.const(7)]
    for _ in range(300):
        e = leaves[r.integers(len(leaves))]
        for _ in range(r.integers(1, 6)):
            other = leaves[r.integers(len(leaves))]
            op = r.choice(["+", "-", "*", "//", "%"])
            e = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
                 "//": lambda a, b: a // b, "%": lambda a, b: a % b}[op](e, other) if r.random() < 0.5 else \
                {"+": lambda a, b: b + a, "-": lambda a, b: b - a, "*": lambda a, b: b * a,
                 "//": lambda a, b: b // a, "%": lambda a, b: b % a}[op](e, other)
        s = simplify(e)
        for vals in r.integers(-5, 9, (4, 3)):
            m = {i: E.const(int(vals[0])), k: E.const(int(vals[1])), n: E.const(int(vals[2]))}
            a, b = simplify(E.substitute(e, m)), simplify(E.substitute(s, m))
            assert isinstance(a, E.Const) and a is b, (str(e), str(s), vals)


# --- the loop-IR interpreter agrees with the reference (no compiler involved) --------------------

@pytest.mark.parametrize("graph", ["matmul", "softmax", "gather_argmax", "conv_padded"])
def test_loop_interpreter_matches_reference(graph):
    inputs, outputs = GRAPHS[graph]()
    feed = _feed(inputs)
    got = run_module(lower(inputs, outputs), [feed[p] for p in inputs])
    for t, g, want in zip(outputs, got, kd.evaluate(outputs, feed)):
        assert_same(g, want, rtol=1e-6, atol=1e-7, what=t.name)
