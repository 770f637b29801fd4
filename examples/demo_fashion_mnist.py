"""`make demo`: an MLP and a CNN trained on Fashion-MNIST through kerneldsl.nn (nolearn's NeuralNet).

Each network's training step (forward, backward, Nesterov update) is one compiled kd.function of
fused C kernels (or CUDA with KERNELDSL_FLAGS=device=cuda); the table is nolearn's, one row per
epoch. Environment: DEMO_EPOCHS (both nets), DEMO_MLP_EPOCHS, DEMO_CNN_EPOCHS, DEMO_CNN_TRAIN
(training images for the CNN, default all). Defaults: MLP 5 epochs, CNN 2 epochs; the whole
demo takes about 1 minute on 2 cores with a warm cache, 2-3 minutes cold.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

import kerneldsl as kd
from kerneldsl import datasets
from kerneldsl.nn import BatchIterator, NeuralNet, TrainSplit, layers
from kerneldsl.nn.nonlinearities import rectify, softmax, tanh
from kerneldsl.nn.updates import nesterov_momentum


def _int(name: str, default: int) -> int:
    v = os.environ.get(name) or os.environ.get("DEMO_EPOCHS") if name.endswith("EPOCHS") else os.environ.get(name)
    return int(v) if v else default


def mlp(epochs: int) -> NeuralNet:
    return NeuralNet(
        layers=[("input", layers.InputLayer), ("hidden", layers.DenseLayer), ("output", layers.DenseLayer)],
        input_shape=(None, 1, 28, 28), hidden_num_units=100, hidden_nonlinearity=tanh,
        output_num_units=10, output_nonlinearity=softmax,
        update=nesterov_momentum, update_learning_rate=0.01, update_momentum=0.9,
        batch_iterator_train=BatchIterator(batch_size=128, shuffle=True), train_split=TrainSplit(eval_size=0.1),
        max_epochs=epochs, verbose=1)


def cnn(epochs: int) -> NeuralNet:
    """The classic CIFAR-10 blog's CNN, adapted to 28x28: 26 -> 13 -> 12 -> 6 -> 5 -> 2."""
    return NeuralNet(
        layers=[("input", layers.InputLayer),
                ("conv1", layers.Conv2DLayer), ("pool1", layers.MaxPool2DLayer),
                ("conv2", layers.Conv2DLayer), ("pool2", layers.MaxPool2DLayer),
                ("conv3", layers.Conv2DLayer), ("pool3", layers.MaxPool2DLayer),
                ("hidden4", layers.DenseLayer), ("output", layers.DenseLayer)],
        input_shape=(None, 1, 28, 28),
        conv1_num_filters=16, conv1_filter_size=(3, 3), pool1_pool_size=(2, 2),
        conv2_num_filters=32, conv2_filter_size=(2, 2), pool2_pool_size=(2, 2),
        conv3_num_filters=64, conv3_filter_size=(2, 2), pool3_pool_size=(2, 2),
        hidden4_num_units=200, hidden4_nonlinearity=rectify,
        output_num_units=10, output_nonlinearity=softmax,
        update=nesterov_momentum, update_learning_rate=0.015, update_momentum=0.9,
        batch_iterator_train=BatchIterator(batch_size=128, shuffle=True), train_split=TrainSplit(eval_size=0.1),
        max_epochs=epochs, verbose=1)


def run(name: str, net: NeuralNet, X, y, Xt, yt) -> dict:
    print(f"\n=== {name} on {kd.config.device} ({len(X)} training images) ===", flush=True)
    t0 = time.perf_counter()
    net.initialize()
    print(f"built the training and evaluation functions in {time.perf_counter() - t0:.1f} s "
          f"({len(net.train_iter_.kernels)} kernels in the training step)", flush=True)
    net.fit(X - 0.5, y)
    acc = net.score(Xt - 0.5, yt)
    per_epoch = float(np.mean([h["dur"] for h in net.train_history_])) if net.train_history_ else float("nan")
    print(f"{name}: test accuracy {100 * acc:.2f}%, {per_epoch:.2f} s per epoch "
          f"(training and validation)", flush=True)
    return {"name": name, "accuracy": acc, "epoch_s": per_epoch, "epochs": len(net.train_history_)}


def main() -> int:
    try:
        X, y, Xt, yt = datasets.fashion_mnist()
    except datasets.DatasetError as e:
        print(e, file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    results = [run("MLP 784-100(tanh)-10", mlp(_int("DEMO_MLP_EPOCHS", 5)), X, y, Xt, yt)]
    n_cnn = min(len(X), _int("DEMO_CNN_TRAIN", len(X)))
    results.append(run("CNN conv16-pool-conv32-pool-conv64-pool-200-10", cnn(_int("DEMO_CNN_EPOCHS", 2)),
                       X[:n_cnn], y[:n_cnn], Xt, yt))
    print("\nsummary")
    for r in results:
        print(f"  {r['name']:48s} {r['epochs']} epoch(s)  test accuracy {100 * r['accuracy']:6.2f}%  "
              f"{r['epoch_s']:7.2f} s/epoch")
    print(f"  total {time.perf_counter() - t0:.0f} s on {kd.config.device}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
