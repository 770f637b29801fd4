"""NeuralNet (nolearn's API): learns a small synthetic problem, batches and splits, hooks and early
stopping, the epoch table, save/load, regression, visualize.plot_loss, and clear errors for bad
arguments."""

from __future__ import annotations

import numpy as np
import pytest

import kerneldsl as kd
from kerneldsl.nn import BatchIterator, EarlyStopping, NeuralNet, TrainSplit, init, layers
from kerneldsl.nn.nonlinearities import softmax, tanh
from kerneldsl.nn.updates import adam, nesterov_momentum
from kerneldsl.runtime import build as runtime_build


@pytest.fixture(autouse=True, scope="module")
def fast_compile():
    kd.config.mode = "FAST_COMPILE"  # the shortest builds: these tests are about behaviour, not speed
    yield
    kd.config.reset()


def blobs(n=330, d=8, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, d)) * 2.5
    y = rng.integers(0, k, n).astype(np.int32)
    X = (centers[y] + rng.standard_normal((n, d))).astype(np.float32)
    return X, y


def mlp(**kw):
    args = {"layers": [("input", layers.InputLayer), ("hidden", layers.DenseLayer), ("output", layers.DenseLayer)],
            "input_shape": (None, 8), "hidden_num_units": 16, "hidden_nonlinearity": tanh, "output_num_units": 3,
            "output_nonlinearity": softmax, "update": nesterov_momentum, "update_learning_rate": 0.05,
            "update_momentum": 0.9, "max_epochs": 8,
            "batch_iterator_train": BatchIterator(batch_size=50, shuffle=True)}
    args.update(kw)
    return NeuralNet(**args)


@pytest.fixture(scope="module")
def trained():
    X, y = blobs()
    net = mlp()
    net.fit(X, y)
    return net, X, y


def test_neuralnet_learns_a_synthetic_problem(trained):
    net, X, y = trained
    hist = net.train_history_
    assert [h["epoch"] for h in hist] == list(range(1, 9))
    assert hist[-1]["train_loss"] < 0.5 * hist[0]["train_loss"]
    assert hist[-1]["valid_accuracy"] > 0.9  # chance is 1/3
    assert net.score(X, y) > 0.9
    p = net.predict_proba(X[:7])
    assert p.shape == (7, 3) and np.allclose(p.sum(1), 1, atol=1e-5)
    np.testing.assert_array_equal(net.predict(X[:7]), p.argmax(1))
    assert set(hist[0]) >= {"epoch", "train_loss", "valid_loss", "valid_accuracy", "dur", "train_loss_best",
                            "valid_loss_best"}


def test_last_partial_batch_and_more_epochs_do_not_rebuild(trained):
    net, X, y = trained
    before = runtime_build.stats.compiles
    train = net.train_iter_
    net.fit(X[:123], y[:123], epochs=1)  # 98 training rows: batches of 50 and 48
    net.predict(X[:5])
    assert net.train_iter_ is train and runtime_build.stats.compiles == before
    assert len(net.train_history_) == 9


def test_save_and_load_params_round_trip(trained, tmp_path):
    net, X, _y = trained
    path = tmp_path / "params.npz"
    net.save_params_to(path)
    other = mlp(max_epochs=0)
    other.load_params_from(str(path))
    np.testing.assert_array_equal(other.predict_proba(X[:20]), net.predict_proba(X[:20]))
    third = mlp()
    third.load_params_from(net)
    np.testing.assert_array_equal(third.get_all_params_values()["hidden"][0], net.get_all_params_values()["hidden"][0])


def test_params_are_saved_to_the_name_given_and_a_bad_file_is_a_clear_error(trained, tmp_path):
    net, X, _y = trained
    path = tmp_path / "net.pkl"  # nolearn's usual name: written as given, not as net.pkl.npz
    net.save_params_to(str(path))
    assert path.exists() and not (tmp_path / "net.pkl.npz").exists()
    other = mlp(max_epochs=0)
    other.load_params_from(str(path))
    np.testing.assert_array_equal(other.predict_proba(X[:5]), net.predict_proba(X[:5]))
    for content in (b"", path.read_bytes()[:100], b"not a parameter file"):
        bad = tmp_path / "bad.pkl"
        bad.write_bytes(content)
        with pytest.raises(ValueError, match=r"bad.pkl is not a parameter file written by save_params_to"):
            other.load_params_from(str(bad))


def test_load_params_with_another_shape_is_a_clear_error(trained, tmp_path):
    net, _, _ = trained
    path = tmp_path / "params.npz"
    net.save_params_to(path)
    wider = mlp(hidden_num_units=17)
    with pytest.raises(ValueError, match=r"hidden_W of layer 'hidden' has shape \(8, 17\), the source's is \(8, 16\)"):
        wider.load_params_from(path)


def test_verbose_prints_the_epoch_table_without_progress_bar(capsys):
    X, y = blobs(n=120)
    net = mlp(max_epochs=2, verbose=1)
    net.fit(X, y)
    out = capsys.readouterr().out
    assert "learnable parameters" in out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    head = next(k for k, ln in enumerate(lines) if ln.split()[:1] == ["epoch"])
    assert lines[head].split() == ["epoch", "trn", "loss", "val", "loss", "trn/val", "valid", "acc", "dur"]
    assert [ln.split()[0] for ln in lines[head + 2:head + 4]] == ["1", "2"]
    assert "\r" not in out and "\033[" not in out  # no progress bar, no colour when not a terminal


def test_hooks_and_early_stopping():
    X, y = blobs(n=150)
    seen = []
    stopper = EarlyStopping(patience=2, verbose=False)

    def worse(nn, history):  # make every epoch after the second look worse
        if history[-1]["epoch"] > 2:
            history[-1]["valid_loss"] = 10.0 + history[-1]["epoch"]

    net = mlp(max_epochs=20, on_epoch_finished=[worse, stopper, lambda nn, h: seen.append(h[-1]["epoch"])],
              on_training_finished=lambda nn, h: seen.append("done"))
    net.fit(X, y)
    assert len(net.train_history_) == 4 and seen == [1, 2, 3, "done"]
    assert stopper.best_epoch == 2
    np.testing.assert_array_equal(net.get_all_params_values()["output"][0], stopper.best_weights["output"][0])


def test_regression_with_squared_error():
    init.set_rng(np.random.RandomState(3))  # the same initial weights whatever ran before
    rng = np.random.default_rng(2)
    X = rng.standard_normal((200, 4)).astype(np.float32)
    y = (X @ np.array([[1.0], [-2.0], [0.5], [0.0]]) + 0.3).astype(np.float32)
    net = NeuralNet(layers=[("input", layers.InputLayer), ("output", layers.DenseLayer)], input_shape=(None, 4),
                    output_num_units=1, output_nonlinearity=None, regression=True, update=adam,
                    update_learning_rate=0.05, max_epochs=40, train_split=TrainSplit(eval_size=0.1))
    net.fit(X, y)
    assert net.train_history_[-1]["train_loss"] < 0.1 * net.train_history_[0]["train_loss"]
    assert "valid_accuracy" not in net.train_history_[-1]
    assert net.predict(X).shape == (200, 1) and net.score(X, y) < 0.1


def test_train_split_and_batch_iterator():
    X, y = blobs(n=100)
    net = mlp()
    Xt, Xv, _yt, yv = TrainSplit(eval_size=0.2, stratify=True)(X, y, net)
    assert len(Xt) + len(Xv) == 100 and abs(len(Xv) - 20) <= 2
    for c in range(3):  # each class split in proportion
        assert abs((yv == c).sum() - 0.2 * (y == c).sum()) <= 1
    assert not set(map(bytes, Xv)) & set(map(bytes, Xt))
    Xt, Xv, _, _ = TrainSplit(eval_size=None)(X, y, net)
    assert len(Xt) == 100 and len(Xv) == 0
    sizes = [len(xb) for xb, _ in BatchIterator(batch_size=32)(X, y)]
    assert sizes == [32, 32, 32, 4]
    shuffled = np.concatenate([yb for _, yb in BatchIterator(batch_size=32, shuffle=True)(X, y)])
    assert sorted(shuffled) == sorted(y) and (shuffled != y).any()


def test_bad_arguments_give_clear_errors():
    with pytest.raises(TypeError, match="layer 'hidden' .*DenseLayer.* has no parameter 'num_unit'"):
        mlp(hidden_num_unit=3)
    with pytest.raises(TypeError, match="unexpected keyword argument 'learning_rate'"):
        mlp(learning_rate=0.1)
    net = NeuralNet(layers=[("input", layers.InputLayer), ("output", layers.DenseLayer)], input_shape=(None, 8),
                    output_nonlinearity=softmax)
    with pytest.raises(TypeError, match="layer 'output' .*needs num_units: pass output_num_units="):
        net.fit(*blobs(n=20))
    net = mlp()
    X, y = blobs(n=20)
    with pytest.raises(ValueError, match="X has 20 samples but y has 19"):
        net.fit(X, y[:-1])
    with pytest.raises(ValueError, match=r"class labels must be in \[0, 3\)"):
        net.fit(X, y + 3)
    with pytest.raises(ValueError, match=r"X has shape \(20, 7\)"):
        net.fit(X[:, :7], y)


def test_plot_loss(trained, tmp_path):
    pytest.importorskip("matplotlib")
    from kerneldsl.nn import visualize
    net, _, _ = trained
    visualize.plot_loss(net, tmp_path / "loss.png")
    assert (tmp_path / "loss.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="no training history"):
        visualize.plot_loss(mlp())


def test_nan_in_the_inputs_stops_fit_naming_the_step_and_the_parameters():
    X, y = blobs(n=200)
    X[::10, 3] = np.nan  # relu, tanh and softmax all propagate NaN: the loss shows it
    net = mlp(max_epochs=3, hidden_nonlinearity=kd.nn.relu)
    with pytest.raises(FloatingPointError, match=r"epoch 1, batch \d+; non-finite parameters after this step: "
                                                 r".*hidden.*inputs hold NaN"):
        net.fit(X, y)
