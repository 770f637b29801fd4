"""Array-level results are right or refused with a clear error: concurrent updates, values that
do not fit their dtype, symbolic arrays in Python control flow, disconnected gradients, set_value."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import kerneldsl as kd
import kerneldsl.numpy as knp


@pytest.mark.parametrize("size", [4, 100_000])
def test_updates_from_several_threads_are_neither_lost_nor_torn(size):
    w = kd.shared(np.zeros(size, np.float32), name="w")
    f = kd.function([], [], updates=[(w, w + 1)])
    read = kd.function([], knp.max(w) - knp.min(w))  # a reader racing the writers sees one value
    spreads = []

    def run():
        for _ in range(100):
            f()
            spreads.append(float(read()))
    threads = [threading.Thread(target=run) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    v = w.get_value()
    assert v.min() == v.max() == 600
    assert max(spreads) == 0  # never a torn array


def test_two_shared_variables_locked_in_one_order_do_not_deadlock():
    a, b = kd.shared(np.zeros(3, np.float32), name="a"), kd.shared(np.zeros(3, np.float32), name="b")
    f = kd.function([], [], updates=[(a, b + 1), (b, a + 1)])
    g = kd.function([], [], updates=[(b, a + 2)])
    threads = [threading.Thread(target=lambda fn=fn: [fn() for _ in range(200)]) for fn in (f, g, f, g)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)


@pytest.mark.parametrize("value, dtype", [([2 ** 40, 3], "int32"), ([-2 ** 31 - 1], "int32"),
                                          (2 ** 40, "int32"), (2 ** 70, "int64"), ([1e300], "float32")])
def test_python_values_that_do_not_fit_raise_overflow_error(value, dtype):
    shape = np.shape(value)
    x = kd.placeholder(tuple(kd.sizes("n")[:len(shape)]) if shape else (), dtype, name="x")
    f = kd.function([x], x + 1)
    with pytest.raises(OverflowError, match="input x"):
        f(value)


def test_python_values_that_fit_are_converted():
    x = kd.ivector("x")
    np.testing.assert_array_equal(kd.function([x], x + 1)([2 ** 31 - 2, -2 ** 31]), [2 ** 31 - 1, -2 ** 31 + 1])
    v = kd.vector("v")
    np.testing.assert_allclose(kd.function([v], v * 2)([1.5, 3e38 / 4]), [3.0, 1.5e38], rtol=1e-6)


@pytest.mark.parametrize("use, says", [
    (lambda x: bool(x > 0), "knp.where"),
    (lambda x: len(x), r"x.shape\[0\]"),
    (lambda x: sum(x), r"knp.sum\(x, axis=0\)"),
    (lambda x: [r for r in x], "cannot be iterated"),
    (lambda x: np.exp(x), r"knp.exp"),
    (lambda x: np.asarray(x), "no values until"),
])
def test_symbolic_arrays_in_python_control_flow_are_type_errors(use, says):
    x = kd.vector("x")
    with pytest.raises(TypeError, match=says):
        use(x)


def test_numpy_operators_with_a_symbolic_operand_build_the_symbolic_result_or_refuse():
    x = kd.vector("x")
    y = np.float32(2) * x  # a numpy scalar: a constant of the graph
    np.testing.assert_allclose(kd.function([x], y)(np.array([1, 2], np.float32)), [2, 4])
    with pytest.raises(TypeError, match="not graph values"):
        np.ones(2, np.float32) + x  # an array: an input or a shared variable, never an object array


def test_grad_of_a_disconnected_input_raises_unless_told():
    x, y = kd.vector("x"), kd.vector("y")
    cost = knp.sum(knp.exp(x))
    with pytest.raises(kd.DisconnectedInputError, match="does not depend on y"):
        kd.grad(cost, [x, y])
    gx, gy = kd.grad(cost, [x, y], disconnected_inputs="ignore")
    f = kd.function([x, y], [gx, gy], on_unused_input="ignore")  # gy does not read y
    a = np.array([0.0, 1.0], np.float32)
    got = f(a, a)
    np.testing.assert_allclose(got[0], np.exp(a), rtol=1e-6)
    np.testing.assert_array_equal(got[1], 0)
    gf = kd.grad(knp.sum(knp.floor(x)), x)  # connected, derivative zero: no error
    np.testing.assert_array_equal(kd.function([x], gf, on_unused_input="ignore")(a), 0)


def test_set_value_follows_the_call_rules_and_functions_take_a_new_shape():
    w = kd.shared(np.zeros(3, np.float32), name="w")
    with pytest.raises(kd.DTypeError, match=r"float64 array.*astype\(np.float32\)"):
        w.set_value(np.ones(3))  # as Theano: no silent loss of precision
    w.set_value([1, 2, 3.5])  # Python values take the variable's dtype
    assert w.get_value().dtype == np.float32
    with pytest.raises(OverflowError):
        w.set_value([1e300])
    f = kd.function([], knp.sum(w))
    assert float(f()) == 6.5
    w.set_value(np.arange(5, dtype=np.float32))  # dimensions are symbolic: the next call takes them
    assert float(f()) == 10
    fixed = kd.shared(np.zeros(3, np.float32), name="fixed", fixed_shape=True)
    with pytest.raises(kd.ShapeError, match="fixed shape"):
        fixed.set_value(np.zeros(4, np.float32))


def test_debug_mode_checks_a_training_step_with_its_updates():
    """The Theano paper's logistic regression: DEBUG compares every kernel (updates included) with the
    reference on each call, and the step computes what FAST_RUN's does."""
    rng = np.random.default_rng(0)
    data = rng.standard_normal((40, 7)).astype(np.float32), rng.integers(0, 2, 40).astype(np.float32)
    steps = {}
    for mode in ("DEBUG", "FAST_RUN"):
        x, y = kd.matrix("x"), kd.vector("y")
        w = kd.shared(np.linspace(-1, 1, 7).astype(np.float32), name="w")
        b = kd.shared(np.float32(0.0), name="b")
        p = 1 / (1 + knp.exp(-knp.dot(x, w) - b))
        xent = -y * knp.log(p) - (1 - y) * knp.log(1 - p)
        gw, gb = kd.grad(xent.mean() + 0.01 * (w ** 2).sum(), [w, b])
        train = kd.function([x, y], xent.mean(), updates=[(w, w - 0.1 * gw), (b, b - 0.1 * gb)], mode=mode)
        steps[mode] = [float(train(*data)) for _ in range(3)] + list(w.get_value())
    np.testing.assert_allclose(steps["DEBUG"], steps["FAST_RUN"], rtol=1e-6)


def test_errors_name_the_users_values_not_internal_nodes():
    y, p = kd.vector("y"), kd.vector("p")
    f = kd.function([y, p], -y * knp.log(p))
    with pytest.raises(kd.ShapeError, match=r"broadcast: \(-y\)\.shape\[0\] = 7 and log\(p\)\.shape\[0\] = 8"):
        f(np.ones(7, np.float32), np.ones(8, np.float32))
    g = kd.function([p], knp.log(p) - 1, nan_guard=True)
    with pytest.raises(FloatingPointError, match=r"log\(p\) - 1\.0 holds NaN"):
        g(np.array([-1.0], np.float32))
    with pytest.raises(ValueError, match=r"grad: output exp\(p\) \* 2\.0 has shape"):
        kd.grad(knp.exp(p) * 2, p)


# --- persistence: functions, built modules and fitted nets pickle (as Theano's and nolearn's do) ---
def _step():
    x, y = kd.matrix("x"), kd.vector("y")
    w = kd.shared(np.full(3, 0.5, np.float32), name="w")
    cost = knp.mean((knp.tanh(x @ w) - y) ** 2)
    gw, = kd.grad(cost, [w])
    return w, kd.function([x, y], cost, updates=[(w, w - 0.5 * gw)])


def test_a_pickled_function_keeps_its_graph_and_shared_values_and_trains_on():
    import pickle
    rng = np.random.default_rng(0)
    X, Y = rng.random((6, 3), np.float32), rng.random(6, np.float32)
    w, f = _step()
    f(X, Y)
    g = pickle.loads(pickle.dumps(f))
    (w2,) = g.shared
    assert w2 is not w and w2.name == "w" and np.array_equal(w2.get_value(), w.get_value())
    assert g(X, Y) == f(X, Y)  # one more step each, from the same value
    assert np.array_equal(w2.get_value(), w.get_value())
    g(X, Y)
    assert not np.array_equal(w2.get_value(), w.get_value())  # the copy has its own value
    threads = [threading.Thread(target=lambda: [g(X, Y) for _ in range(20)]) for _ in range(3)]
    for t in threads:  # its lock is a new one, and works
        t.start()
    for t in threads:
        t.join()
    assert g.mode == f.mode and len(g.kernels) == len(f.kernels)


def test_a_function_unpickled_in_a_new_process_is_built_from_the_disk_cache(tmp_path):
    import os
    import pickle
    import subprocess
    import sys
    w, f = _step()
    path = tmp_path / "step.pkl"
    path.write_bytes(pickle.dumps(f))
    script = ("import pickle, sys, numpy as np\n"
              "from kerneldsl.runtime import cache\n"
              "g = pickle.loads(open(sys.argv[1], 'rb').read())\n"
              "g(np.ones((2, 3), np.float32), np.ones(2, np.float32))\n"
              "print(cache.stats.compiles, g.shared[0].get_value().tolist())\n")
    out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True,
                         env=dict(os.environ), timeout=300)
    assert out.returncode == 0, out.stderr
    compiles, value = out.stdout.split(" ", 1)
    assert compiles == "0" and value.strip() != str([0.5, 0.5, 0.5])


def test_a_built_module_pickles_and_refuses_another_vector_width(monkeypatch):
    import pickle
    from dataclasses import replace

    from kerneldsl.target import Target
    a = kd.placeholder((4, 3), name="a")
    f = kd.build([a], [knp.exp(a) + 1])
    data = np.arange(12, dtype=np.float32).reshape(4, 3)
    text = pickle.dumps(f)
    assert np.array_equal(pickle.loads(text)(data), f(data))
    here = Target.detect("c")
    other = replace(here, isa="avx2" if here.isa != "avx2" else "avx512",
                    vector_bytes=32 if here.vector_bytes != 32 else 64)
    monkeypatch.setattr(Target, "detect", staticmethod(lambda kind="c": other))
    with pytest.raises(RuntimeError, match="compiled for .* build it again"):
        pickle.loads(text)


def test_a_fitted_net_pickles_predicts_the_same_and_fits_on():
    import pickle

    from kerneldsl.nn import NeuralNet
    from kerneldsl.nn import layers as L
    from kerneldsl.nn import nonlinearities as N
    rng = np.random.default_rng(1)
    X = rng.random((40, 5), np.float32)
    y = (X[:, 0] > 0.5).astype(np.int32)
    net = NeuralNet([(L.InputLayer, {"shape": (None, 5)}), (L.DenseLayer, {"num_units": 4}),
                     (L.DenseLayer, {"num_units": 2, "nonlinearity": N.softmax})],
                    update_learning_rate=0.1, max_epochs=2)
    net.fit(X, y)
    copy = pickle.loads(pickle.dumps(net))
    assert np.array_equal(copy.predict_proba(X), net.predict_proba(X))
    assert len(copy.train_history_) == 2
    copy.fit(X, y, epochs=1)  # its functions update its own parameters, with the momentum it had
    net.fit(X, y, epochs=1)
    np.testing.assert_allclose(copy.predict_proba(X), net.predict_proba(X), rtol=1e-5)
    assert copy.get_all_params()[0] is not net.get_all_params()[0]
