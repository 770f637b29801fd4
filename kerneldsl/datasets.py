"""Data sets for the examples and the demo, read from local files (nothing is downloaded).

    X_train, y_train, X_test, y_test = kd.datasets.fashion_mnist()   # float32 in [0, 1], (N, 1, 28, 28)
    X_train, y_train, X_test, y_test = kd.datasets.load_cifar10("cifar-10-batches-py")
    X_gray = kd.datasets.grayscale(X_train)                            # (N, 1, 32, 32)

Fashion-MNIST comes from the Debian package `dataset-fashion-mnist` (its IDX files under
/usr/share/datasets/fashion-mnist; `apt-get install dataset-fashion-mnist`, as `make demo`
does) or any directory holding the same four files, gzipped or not. CIFAR-10 is the python
version's pickle batches (`data_batch_1` .. `data_batch_5`, `test_batch`).
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np

from .settings import settings

FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                       "t10k-labels-idx1-ubyte")

# IDX type codes (the third byte of the magic number)
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DatasetError(FileNotFoundError):
    """A data set's files are missing or malformed."""


def read_idx(path) -> np.ndarray:
    """An array from an IDX file (LeCun's MNIST format), gzipped (.gz) or not."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DatasetError(f"{path}: not an IDX file (its magic number is {data[:4].hex() or 'missing'})")
    dtype = _IDX_TYPES.get(data[2])
    if dtype is None:
        raise DatasetError(f"{path}: unknown IDX element type 0x{data[2]:02x}")
    ndim = data[3]
    head = 4 + 4 * ndim
    if len(data) < head:
        raise DatasetError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * k: 8 + 4 * k], "big") for k in range(ndim))
    dt = np.dtype(dtype)
    need = int(np.prod(shape)) * dt.itemsize
    if len(data) - head != need:
        raise DatasetError(f"{path}: the header says {shape} ({need} bytes of data) but the file holds "
                           f"{len(data) - head}")
    return np.frombuffer(data, dtype=dt, offset=head).reshape(shape).astype(dt.newbyteorder("="))


def write_idx(path, array) -> None:
    """Write an array as an IDX file (gzipped when the name ends in .gz): for tests and small sets."""
    a = np.asarray(array)
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B, np.dtype(">i4"): 0x0C,
             np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}
    big = a.astype(a.dtype.newbyteorder(">")) if a.dtype.itemsize > 1 else a
    code = codes.get(big.dtype)
    if code is None:
        raise TypeError(f"write_idx: IDX cannot hold {a.dtype}")
    head = bytes([0, 0, code, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(head + np.ascontiguousarray(big).tobytes())


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        p = directory / name
        if p.is_file():
            return p
    return None


def fashion_mnist(path=None, flatten: bool = False, dtype="float32"):
    """(X_train, y_train, X_test, y_test) of Fashion-MNIST: X in [0, 1] of `dtype`, shape
    (N, 1, 28, 28) (or (N, 784) with flatten=True); y int32 class indices 0..9. `path` is the
    directory of the IDX files (default: $KERNELDSL_FASHION_MNIST, else the Debian package's)."""
    directory = Path(path or settings.fashion_mnist or FASHION_MNIST_DIR)
    files = [_find(directory, stem) for stem in FASHION_MNIST_FILES]
    missing = [s for s, f in zip(FASHION_MNIST_FILES, files) if f is None]
    if missing:
        raise DatasetError(f"Fashion-MNIST: {', '.join(missing)} not found in {directory}. Install the Debian "
                           f"package {FASHION_MNIST_PACKAGE} (sudo apt-get install {FASHION_MNIST_PACKAGE}; "
                           f"`make demo` does it), or pass path= to a directory holding the IDX files")
    x_tr, y_tr, x_te, y_te = (read_idx(f) for f in files)
    for x, y, what in ((x_tr, y_tr, "train"), (x_te, y_te, "test")):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DatasetError(f"Fashion-MNIST {what}: images {x.shape} and labels {y.shape} do not match")

    def images(x):
        x = (x.astype(dtype) / np.asarray(255, dtype)).astype(dtype)
        return x.reshape(len(x), -1) if flatten else x.reshape(len(x), 1, *x.shape[1:])
    return images(x_tr), y_tr.astype(np.int32), images(x_te), y_te.astype(np.int32)


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="bytes")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}


def load_cifar10(directory, dtype="float32"):
    """(X_train, y_train, X_test, y_test) of CIFAR-10 from the python version's pickle batches in
    `directory`: X (N, 3, 32, 32) in [0, 1] of `dtype`, y int32 class indices 0..9."""
    directory = Path(directory)
    names = [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]
    missing = [n for n in names if not (directory / n).is_file()]
    if missing:
        raise DatasetError(f"CIFAR-10: {', '.join(missing)} not found in {directory}; it must hold the batches of "
                           f"the python version (cifar-10-python.tar.gz, extracted)")

    def batch(name):
        d = _unpickle(directory / name)
        if "data" not in d or "labels" not in d:
            raise DatasetError(f"CIFAR-10: {directory / name} has no 'data' and 'labels' entries")
        x = np.asarray(d["data"], dtype=np.uint8)
        y = np.asarray(d["labels"], dtype=np.int32)
        if x.ndim != 2 or x.shape[1] != 3072 or len(x) != len(y):
            raise DatasetError(f"CIFAR-10: {directory / name}: data {x.shape} and labels {y.shape}, expected "
                               f"(N, 3072) and (N,)")
        return x.reshape(-1, 3, 32, 32), y
    train = [batch(n) for n in names[:5]]
    x_te, y_te = batch("test_batch")
    x_tr = np.concatenate([b[0] for b in train])
    y_tr = np.concatenate([b[1] for b in train])
    scale = np.asarray(255, dtype)
    return (x_tr.astype(dtype) / scale).astype(dtype), y_tr, (x_te.astype(dtype) / scale).astype(dtype), y_te


def grayscale(X):
    """RGB images (N, 3, H, W) to luminance (N, 1, H, W): 0.299 R + 0.587 G + 0.114 B (ITU-R 601)."""
    X = np.asarray(X)
    if X.ndim != 4 or X.shape[1] != 3:
        raise ValueError(f"grayscale: images must be (N, 3, height, width), got shape {X.shape}")
    w = np.array([0.299, 0.587, 0.114], dtype=X.dtype if X.dtype.kind == "f" else np.float32)
    return np.einsum("nchw,c->nhw", X, w)[:, None].astype(w.dtype)


__all__ = ["DatasetError", "fashion_mnist", "grayscale", "load_cifar10", "read_idx", "write_idx"]
