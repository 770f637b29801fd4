"""kerneldsl.datasets: the IDX reader on small generated files, fashion_mnist on a generated
directory and (when the Debian package is installed) on the real files, the CIFAR-10 loader on
small pickles written in its format, and grayscale."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from kerneldsl import datasets


@pytest.mark.parametrize("dtype, gz", [(np.uint8, True), (np.int32, False), (np.float32, True), (np.float64, False)])
def test_idx_round_trip(tmp_path, dtype, gz):
    a = (np.arange(2 * 3 * 4) - 5).reshape(2, 3, 4).astype(dtype) if dtype != np.uint8 else \
        np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / ("a.idx" + (".gz" if gz else ""))
    datasets.write_idx(path, a)
    b = datasets.read_idx(path)
    assert b.dtype == np.dtype(dtype) and b.dtype.isnative
    np.testing.assert_array_equal(a, b)


def test_idx_reader_rejects_malformed_files(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x02ab")
    with pytest.raises(datasets.DatasetError, match="not an IDX file"):
        datasets.read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 5, 1, 2]))
    with pytest.raises(datasets.DatasetError, match=r"header says \(5,\).*holds 2"):
        datasets.read_idx(short)


def _fake_fashion(directory: Path, n_train=12, n_test=5):
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        datasets.write_idx(directory / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        datasets.write_idx(directory / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, n, dtype=np.uint8))


def test_fashion_mnist_reads_a_directory_of_idx_files(tmp_path):
    _fake_fashion(tmp_path)
    X, y, Xt, yt = datasets.fashion_mnist(path=tmp_path)
    assert X.shape == (12, 1, 28, 28) and Xt.shape == (5, 1, 28, 28)
    assert X.dtype == np.float32 and 0 <= X.min() and X.max() <= 1
    assert y.dtype == np.int32 and yt.shape == (5,)
    raw = datasets.read_idx(tmp_path / "train-images-idx3-ubyte.gz")
    np.testing.assert_allclose(X[:, 0] * 255, raw, atol=1e-4)
    flat = datasets.fashion_mnist(path=tmp_path, flatten=True)[0]
    assert flat.shape == (12, 784)


def test_fashion_mnist_missing_files_name_the_package(tmp_path):
    with pytest.raises(datasets.DatasetError, match="apt-get install dataset-fashion-mnist"):
        datasets.fashion_mnist(path=tmp_path)


def test_fashion_mnist_real_files_when_installed():
    try:
        X, y, Xt, yt = datasets.fashion_mnist()
    except datasets.DatasetError:
        pytest.skip("the Debian package dataset-fashion-mnist is not installed")
    assert X.shape == (60000, 1, 28, 28) and Xt.shape == (10000, 1, 28, 28)
    assert np.bincount(y).tolist() == [6000] * 10 and np.bincount(yt).tolist() == [1000] * 10
    assert 0.2 < X.mean() < 0.4


def _fake_cifar(directory: Path, n=4):
    rng = np.random.default_rng(1)
    batches = {}
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        d = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, n)),
             b"batch_label": name.encode()}
        with open(directory / name, "wb") as f:
            pickle.dump(d, f, protocol=2)
        batches[name] = d
    return batches


def test_load_cifar10_reads_the_pickle_batches(tmp_path):
    batches = _fake_cifar(tmp_path)
    X, y, Xt, _yt = datasets.load_cifar10(tmp_path)
    assert X.shape == (20, 3, 32, 32) and Xt.shape == (4, 3, 32, 32) and X.dtype == np.float32
    assert y.dtype == np.int32 and y.tolist()[:4] == batches["data_batch_1"][b"labels"]
    # the rows are channel-major: the first 1024 bytes are the red plane
    np.testing.assert_allclose(X[0, 0].ravel() * 255, batches["data_batch_1"][b"data"][0, :1024], atol=1e-3)
    np.testing.assert_allclose(Xt[3, 2].ravel() * 255, batches["test_batch"][b"data"][3, 2048:], atol=1e-3)


def test_load_cifar10_errors(tmp_path):
    with pytest.raises(datasets.DatasetError, match="data_batch_1.*not found"):
        datasets.load_cifar10(tmp_path)
    _fake_cifar(tmp_path)
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(datasets.DatasetError, match=r"\(2, 100\)"):
        datasets.load_cifar10(tmp_path)


def test_grayscale():
    rng = np.random.default_rng(2)
    X = rng.uniform(0, 1, (3, 3, 4, 5)).astype(np.float32)
    g = datasets.grayscale(X)
    assert g.shape == (3, 1, 4, 5) and g.dtype == np.float32
    np.testing.assert_allclose(g[:, 0], 0.299 * X[:, 0] + 0.587 * X[:, 1] + 0.114 * X[:, 2], rtol=1e-6)
    with pytest.raises(ValueError, match=r"\(N, 3, height, width\)"):
        datasets.grayscale(X[:, :2])
