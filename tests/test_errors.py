"""Every bad input gets its own clear error, raised before or instead of a bad memory access."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_same

import kerneldsl as kd

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def add_rows():
    n, m = kd.sizes("n m")
    A = kd.placeholder((n, m), "float32", name="A")
    B = kd.placeholder((n,), "float32", name="B")
    C = kd.compute((n, m), lambda i, j: A[i, j] + B[i], name="C")
    return kd.build([A, B], [C])


A34 = np.ones((3, 4), np.float32)
B3 = np.ones(3, np.float32)


def gather():
    v, n = kd.sizes("v n")
    table = kd.placeholder((v, 4), "float32", name="table")
    idx = kd.placeholder((n,), "int64", name="idx")
    E = kd.compute((n, 4), lambda i, j: table[idx[i], j], name="E")
    return kd.build([table, idx], [E])


# --- the call -----------------------------------------------------------------------------

@pytest.mark.parametrize("args", [(A34,), (A34, B3, B3), ()])
def test_wrong_argument_count(add_rows, args):
    with pytest.raises(TypeError, match="takes 2 input"):
        add_rows(*args)


def test_wrong_rank(add_rows):
    with pytest.raises(kd.ShapeError, match="input A must have 2 dimension"):
        add_rows(A34[0], B3)
    with pytest.raises(kd.ShapeError, match="input B must have 1 dimension"):
        add_rows(A34, A34)


def test_sizes_disagree_between_inputs(add_rows):
    with pytest.raises(kd.ShapeError, match="size n is 3"):
        add_rows(A34, np.ones(4, np.float32))


def test_constant_dimension_mismatch():
    X = kd.placeholder((3, 2), "float64", name="X")
    Y = kd.compute((3,), lambda i: X[i, 0] + X[i, 1], name="Y")
    f = kd.build([X], [Y])
    with pytest.raises(kd.ShapeError, match="dimension 1 of X must be 2"):
        f(np.ones((3, 3)))


def test_derived_dimension_mismatch():
    n = kd.size("n")
    X = kd.placeholder((n,), "float64", name="X")
    Y = kd.placeholder((2 * n,), "float64", name="Y")
    Z = kd.compute((n,), lambda i: X[i] + Y[2 * i], name="Z")
    f = kd.build([X, Y], [Z])
    with pytest.raises(kd.ShapeError, match="dimension 0 of Y"):
        f(np.ones(3), np.ones(5))


@pytest.mark.parametrize("dtype", ["float64", "int32", ">f4", "float16", "uint8"])
def test_wrong_dtype_is_never_cast_silently(add_rows, dtype):
    with pytest.raises(kd.DTypeError, match="input A must be float32"):
        add_rows(A34.astype(dtype), B3)


def test_wrong_dtype_of_python_list(add_rows):
    with pytest.raises(kd.DTypeError):
        add_rows(A34.tolist(), B3)  # a list of floats is float64


@pytest.mark.parametrize("bad", [None, "abc", object()])
def test_non_array_input(add_rows, bad):
    with pytest.raises(TypeError, match="must be a numpy array"):
        add_rows(bad, B3)


# --- out= -------------------------------------------------------------------------------------

def test_out_wrong_shape(add_rows):
    with pytest.raises(kd.ShapeError, match="out= for C must have shape"):
        add_rows(A34, B3, out=np.empty((4, 3), np.float32))


def test_out_wrong_dtype(add_rows):
    with pytest.raises(kd.DTypeError, match="out= for C must be float32"):
        add_rows(A34, B3, out=np.empty((3, 4), np.float64))


def test_out_read_only(add_rows):
    o = np.empty((3, 4), np.float32)
    o.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        add_rows(A34, B3, out=o)


def test_out_wrong_count_or_type(add_rows):
    with pytest.raises(TypeError, match="out= needs 1"):
        add_rows(A34, B3, out=(np.empty((3, 4), np.float32),) * 2)
    with pytest.raises(TypeError, match="numpy array"):
        add_rows(A34, B3, out=[[0.0]])


def test_failed_call_leaves_out_untouched(add_rows):
    o = np.full((3, 4), 7, np.float32)
    with pytest.raises(kd.ShapeError):
        add_rows(A34, np.ones(4, np.float32), out=o)
    assert (o == 7).all()


# --- indices at run time --------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [5, -1, 2**40, -2**62, np.iinfo(np.int64).max, np.iinfo(np.int64).min])
def test_gather_out_of_range(bad):
    f = gather()
    t = np.arange(20, dtype=np.float32).reshape(5, 4)
    with pytest.raises(IndexError, match=f"index {bad} in dimension 0 is out of range"):
        f(t, np.array([0, bad, 1]))
    assert_same(f(t, np.array([4, 0])), t[[4, 0]])  # still usable afterwards


def test_gather_reference_raises_too():
    v, n = kd.sizes("v n")
    table = kd.placeholder((v,), "float32", name="table")
    idx = kd.placeholder((n,), "int32", name="idx")
    E = kd.compute((n,), lambda i: table[idx[i]], name="E")
    with pytest.raises(IndexError):
        kd.evaluate([E], {table: np.ones(3, np.float32), idx: np.array([3], np.int32)})


def test_gather_under_where_is_checked_only_where_chosen():
    v, n = kd.sizes("v n")
    table = kd.placeholder((v,), "float64", name="table")
    idx = kd.placeholder((n,), "int64", name="idx")
    E = kd.compute((n,), lambda i: kd.where(idx[i] >= 0, table[idx[i]], -1.0), name="E")
    f = kd.build([table, idx], [E])
    t, ix = np.arange(4.0), np.array([2, -5, 3, -1])
    assert_same(f(t, ix), np.array([2.0, -1, 3, -1]))
    assert_same(kd.evaluate([E], {table: t, idx: ix})[0], np.array([2.0, -1, 3, -1]))
    with pytest.raises(IndexError):
        f(t, np.array([4]))


def test_gather_from_empty_table_raises_without_reading():
    # the table has no element 0 to fall back on; the failed check must not read outside it
    f = gather()
    empty = np.zeros((1, 4 * 10**7), np.float32)[:0, ::10**7]  # shape (0, 4), strides of 40 MB
    with pytest.raises(IndexError, match=r"out of range \[0, 0\)"):
        f(empty, np.array([0]))


def test_affine_index_beyond_the_input():
    n = kd.size("n")
    X = kd.placeholder((n,), "float32", name="X")
    W = kd.placeholder((3,), "float32", name="W")
    r = kd.reduce_axis(3, "r")
    Y = kd.compute((n,), lambda i: kd.sum(X[i + r] * W[r], axis=r), name="Y")  # should be n - 2
    f = kd.build([X, W], [Y])
    with pytest.raises(IndexError, match=r"ranges over \[0, 6\] but X has size 5"):
        f(np.ones(5, np.float32), np.ones(3, np.float32))
    with pytest.raises(IndexError):
        kd.evaluate([Y], {X: np.ones(5, np.float32), W: np.ones(3, np.float32)})
    assert f(np.ones(0, np.float32), np.ones(3, np.float32)).shape == (0,)  # nothing read: fine


@pytest.mark.parametrize("coef", [2**61, 2**62, 2**63 - 1, -2**62])
def test_affine_index_whose_bound_overflows_int64(coef):
    # the bound coef * (n - 1) wraps around in int64; the entry check must still fail
    n = kd.size("n")
    X = kd.placeholder((n,), "float32", name="X")
    Y = kd.compute((n,), lambda i: X[i * coef + i], name="Y")
    f = kd.build([X], [Y])
    for size in (3, 5, 9):
        with pytest.raises(IndexError, match="ranges over|out of range"):
            f(np.ones(size, np.float32))
        with pytest.raises(IndexError):
            kd.evaluate([Y], {X: np.ones(size, np.float32)})
    assert_same(f(np.ones(1, np.float32)), np.ones(1, np.float32))  # i == 0 only: in range


def test_inputs_too_small_for_n_minus_2():
    n = kd.size("n")
    X = kd.placeholder((n,), "float64", name="X")
    D = kd.compute((n - 2,), lambda i: X[i + 2] - X[i], name="D")
    f = kd.build([X], [D])
    with pytest.raises(kd.ShapeError, match="negative dimension"):
        f(np.ones(1))
    with pytest.raises(kd.ShapeError, match="negative dimension"):
        kd.evaluate([D], {X: np.ones(1)})
    assert f(np.ones(2)).shape == (0,)


# --- building the graph ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["a b", "1a", "x;y", "", "*/", "a-b", "é"])
def test_bad_names(name):
    with pytest.raises(ValueError, match="not an identifier"):
        kd.placeholder((3,), name=name)
    with pytest.raises(ValueError, match="not an identifier"):
        kd.compute((3,), lambda i: i, name=name)
    with pytest.raises(ValueError, match="not an identifier"):
        kd.size(name)
    with pytest.raises(ValueError, match="not an identifier"):
        kd.reduce_axis(3, name=name)


def test_reduce_axis_outside_a_reduction():
    n = kd.size("n")
    X = kd.placeholder((n,), name="X")
    r = kd.reduce_axis(n, "r")
    with pytest.raises(ValueError, match="reduce axis r is used outside a reduction"):
        kd.compute((n,), lambda i: X[r], name="Q")


def test_axis_of_another_compute():
    n = kd.size("n")
    X = kd.placeholder((n,), name="X")
    leaked = []
    kd.compute((n,), lambda i: leaked.append(i) or X[i], name="P")
    with pytest.raises(ValueError, match="belongs to another compute"):
        kd.compute((n,), lambda i: X[leaked[0]], name="Q")


def test_same_axis_reduced_twice():
    n = kd.size("n")
    X = kd.placeholder((n,), name="X")
    r = kd.reduce_axis(n, "r")
    with pytest.raises(ValueError, match="reduced twice"):
        kd.compute((n,), lambda i: kd.sum(kd.sum(X[r], axis=r), axis=r), name="Q")
    with pytest.raises(ValueError, match="listed twice"):
        kd.sum(X[r], axis=[r, r])


def test_reduction_axis_must_be_a_reduce_axis():
    n = kd.size("n")
    X = kd.placeholder((n,), name="X")
    with pytest.raises(TypeError, match="kd.reduce_axis"):
        kd.sum(X[0], axis=n)
    with pytest.raises(ValueError, match="at least one axis"):
        kd.sum(X[0], axis=[])


def test_bool_condition_errors():
    n = kd.size("n")
    X = kd.placeholder((n,), "float32", name="X")
    r = kd.reduce_axis(n, "r")
    with pytest.raises(kd.DTypeError, match="bool condition"):
        kd.where(X[0], 1, 2)
    with pytest.raises(kd.DTypeError, match="where= needs a bool"):
        kd.sum(X[r], axis=r, where=X[r])
    with pytest.raises(TypeError, match="no truth value"):
        kd.compute((n,), lambda i: 1.0 if X[i] > 0 else 0.0)
    with pytest.raises(TypeError, match="no truth value"):
        kd.compute((n,), lambda i: (X[i] > 0) and (X[i] < 1))
    with pytest.raises(kd.DTypeError, match="negate"):
        -(X[0] > 0)


def test_operator_dtype_errors():
    X = kd.placeholder((3,), "float32", name="X")
    with pytest.raises(kd.DTypeError):
        X[0] & X[1]
    with pytest.raises(kd.DTypeError):
        ~X[0]
    with pytest.raises(kd.DTypeError, match="integer"):
        X[X[0]]
    with pytest.raises(kd.DTypeError, match="does not fit in int32"):
        kd.placeholder((3,), "int32")[0] + 2**40  # numpy: OverflowError for out-of-bounds Python ints


def test_indexing_errors():
    """One integer per dimension reads an element (a load); anything else is numpy's indexing
    (an array): a loop axis must still come with one index per dimension."""
    n, m = kd.sizes("n m")
    A = kd.placeholder((n, m), name="A")
    W = kd.placeholder((3,), name="W")
    with pytest.raises(kd.ShapeError, match="indexed with 1"):
        kd.compute((n,), lambda i: A[i])
    with pytest.raises(kd.ShapeError, match="indexed with 3"):
        A[0, 1, 2]
    assert isinstance(A[0, 1], kd.Expr) and isinstance(A[0], kd.Tensor) and A[0].shape == (m,)
    assert isinstance(W[0:2], kd.Tensor) and W[0:2].shape[0].value == 2
    with pytest.raises(IndexError, match="index 3 is out of range"):
        W[3]
    with pytest.raises(IndexError, match="boolean mask"):
        A[A > 0]


def test_compute_signature_errors():
    n, m = kd.sizes("n m")
    X = kd.placeholder((n,), name="X")
    with pytest.raises(kd.ShapeError, match="takes 1 argument"):
        kd.compute((n, m), lambda i: X[i])
    with pytest.raises(TypeError, match="returned the tensor X"):
        kd.compute((n,), lambda i: X)


@pytest.mark.parametrize("dtype", ["float16", "complex64", "foo", "uint32"])
def test_unsupported_dtypes(dtype):
    with pytest.raises(kd.DTypeError):
        kd.placeholder((3,), dtype)


def test_bad_shapes():
    with pytest.raises(kd.DTypeError, match="integer"):
        kd.placeholder((2.5,))
    with pytest.raises(kd.ShapeError, match="negative"):
        kd.placeholder((-1,))


def test_build_errors():
    n = kd.size("n")
    X = kd.placeholder((n,), name="X")
    Z = kd.placeholder((n,), name="Z")
    Y = kd.compute((n,), lambda i: X[i] + Z[i], name="Y")
    with pytest.raises(TypeError, match="an input cannot also be an output"):
        kd.build([X], [X])
    with pytest.raises(ValueError, match="placeholder Z, which is not among the inputs"):
        kd.build([X], [Y])
    with pytest.raises(TypeError, match="must be placeholders"):
        kd.build([Y], [Y])
    with pytest.raises(ValueError, match="listed twice"):
        kd.build([X, X, Z], [Y])
    with pytest.raises(ValueError, match="at least one output"):
        kd.build([X], [])
    with pytest.raises(ShapeErrorOrValue, match="cannot be bound"):
        P = kd.placeholder((n + 1,), name="P")
        kd.build([P], [kd.compute((3,), lambda i: P[i])])
    with pytest.raises(ValueError, match="unknown target"):
        kd.build([X, Z], [Y], target="fortran")


ShapeErrorOrValue = kd.ShapeError


def test_evaluate_needs_every_placeholder():
    n = kd.size("n")
    X = kd.placeholder((n,), name="X")
    Z = kd.placeholder((n,), name="Z")
    Y = kd.compute((n,), lambda i: X[i] + Z[i], name="Y")
    with pytest.raises(ValueError, match="no value given for placeholder"):
        kd.evaluate([Y], {X: np.ones(3, np.float32)})


# --- the compiler failing --------------------------------------------------------------------

def _tiny():
    n = kd.size("n")
    X = kd.placeholder((n,), "float32", name="X")
    return X, kd.compute((n,), lambda i: X[i] + 1, name="Y")


def test_compile_error_when_the_compiler_fails(fresh_cache, monkeypatch):
    monkeypatch.setenv("KERNELDSL_CC", "false")
    X, Y = _tiny()
    with pytest.raises(kd.CompileError, match="failed to compile") as e:
        kd.build([X], [Y])
    assert e.value.source_path and os.path.exists(e.value.source_path)


def test_compile_error_on_bogus_flags(fresh_cache, monkeypatch):
    monkeypatch.setenv("KERNELDSL_CFLAGS", "-O2 --no-such-flag-kerneldsl")
    X, Y = _tiny()
    with pytest.raises(kd.CompileError) as e:
        kd.build([X], [Y])
    assert "no-such-flag-kerneldsl" in e.value.compiler_output


def test_compile_error_when_the_compiler_is_missing(fresh_cache, monkeypatch):
    monkeypatch.setenv("KERNELDSL_CC", "/nonexistent/kerneldsl-cc")
    X, Y = _tiny()
    with pytest.raises(kd.CompileError, match="not found"):
        kd.build([X], [Y])


# --- the process survives -----------------------------------------------------------------------

SURVIVOR = textwrap.dedent("""
    import numpy as np
    import kerneldsl as kd

    v, n, d = kd.sizes("v n d")
    table = kd.placeholder((v, d), "float32", name="table")
    idx = kd.placeholder((n,), "int64", name="idx")
    E = kd.compute((n, d), lambda i, j: table[idx[i], j], name="E")
    f = kd.build([table, idx], [E])
    X = kd.placeholder((v,), "float32", name="X")
    Y = kd.compute((v - 2,), lambda i: X[i + 3], name="Y")  # one too far
    g = kd.build([X], [Y])
    r = np.random.default_rng(0)
    t = r.standard_normal((100, 64)).astype(np.float32)
    errors = 0
    for k in range(1000):
        ix = r.integers(0, 100, 50)
        ix[r.integers(0, 50)] = r.choice([-1, 1]) * r.integers(100, 2**62)
        try:
            f(t, ix)
        except IndexError:
            errors += 1
        try:
            g(t[0, :r.integers(0, 64) if k % 2 else r.integers(3, 64)])  # < 2: ShapeError
        except (IndexError, kd.ShapeError):
            errors += 1
        else:
            errors += k % 2  # length 2: an empty result, nothing read
    assert errors == 2000, errors
    empty = np.zeros((1, 64 * 10**6), np.float32)[:0, ::10**6]  # strides but no element
    try:
        f(empty, np.array([0, 1]))
    except IndexError:
        errors += 1
    assert errors == 2001
    np.testing.assert_array_equal(f(t, np.array([99, 0])), t[[99, 0]])
    print("survived")
""")


def test_process_survives_bad_indices_in_a_subprocess():
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", SURVIVOR], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert "survived" in r.stdout
