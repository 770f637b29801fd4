"""Tutorial 7: Lasagne's functional API on kerneldsl: an MLP and a CNN on Fashion-MNIST.

The same script as Lasagne's mnist.py with its imports changed: layers build a symbolic graph,
`get_output` gives the prediction, `get_all_params` the parameters, an update rule the new values,
and `kd.function` compiles forward, backward and update into one module of fused kernels. We
print the kernels of one training step and the time each takes (mode="PROFILE": `f.profile`).

    python tutorials/07_lasagne_mlp_cnn.py          # TUTORIAL_BATCHES=40 by default
"""

from __future__ import annotations

import os
import time

import numpy as np

import kerneldsl as kd
import kerneldsl.numpy as knp
from kerneldsl import datasets
from kerneldsl.nn import layers, objectives, updates
from kerneldsl.nn.nonlinearities import rectify, softmax, tanh

BATCHES = int(os.environ.get("TUTORIAL_BATCHES", "40"))


def build_mlp(input_var=None):
    l_in = layers.InputLayer((None, 1, 28, 28), input_var=input_var)
    l_hid = layers.DenseLayer(l_in, num_units=100, nonlinearity=tanh)
    return layers.DenseLayer(l_hid, num_units=10, nonlinearity=softmax)


def build_cnn(input_var=None):
    net = layers.InputLayer((None, 1, 28, 28), input_var=input_var)
    for filters, size in ((16, 3), (32, 2), (64, 2)):
        net = layers.Conv2DLayer(net, num_filters=filters, filter_size=(size, size), nonlinearity=rectify)
        net = layers.MaxPool2DLayer(net, pool_size=(2, 2))
    net = layers.DenseLayer(net, num_units=200, nonlinearity=rectify)
    return layers.DenseLayer(net, num_units=10, nonlinearity=softmax)


def iterate_minibatches(X, y, batch_size, shuffle=True, seed=0):
    order = np.random.default_rng(seed).permutation(len(X)) if shuffle else np.arange(len(X))
    for i in range(0, len(X), batch_size):
        idx = np.sort(order[i:i + batch_size])
        yield X[idx], y[idx]


def train(name, build, X, y, Xt, yt, learning_rate):
    # Lasagne's script passes input_var=T.tensor4('inputs'); the InputLayer's own variable has the
    # layer's constant sizes (all but the batch), and kernels built for constant sizes are faster
    network = build()
    input_var, target_var = layers.get_all_layers(network)[0].input_var, kd.ivector("targets")
    prediction = layers.get_output(network)
    loss = objectives.aggregate(objectives.categorical_crossentropy(prediction, target_var))
    params = layers.get_all_params(network, trainable=True)
    step = updates.nesterov_momentum(loss, params, learning_rate=learning_rate, momentum=0.9)
    test_prediction = layers.get_output(network, deterministic=True)
    test_acc = knp.mean(objectives.categorical_accuracy(test_prediction, target_var))

    t0 = time.perf_counter()
    train_fn = kd.function([input_var, target_var], loss, updates=step, mode="PROFILE")
    val_fn = kd.function([input_var, target_var], test_acc, mode="FAST_COMPILE")
    print(f"\n=== {name}: {layers.count_params(network)} parameters, built in {time.perf_counter() - t0:.1f} s")
    print("the kernels of one training step (forward, backward and update, fused):")
    for k in train_fn.kernels:
        print("   ", str(k).splitlines()[0].lstrip("# ")[:110])

    t0 = time.perf_counter()
    losses = [float(train_fn(Xb, yb)) for _, (Xb, yb) in zip(range(BATCHES), iterate_minibatches(X, y, 128))]
    seconds = time.perf_counter() - t0
    accs = [float(val_fn(Xb, yb)) * len(Xb) for Xb, yb in iterate_minibatches(Xt, yt, 500, shuffle=False)]
    print(f"{len(losses)} batches in {seconds:.2f} s ({1e3 * seconds / len(losses):.1f} ms each); loss "
          f"{np.mean(losses[:10]):.3f} -> {np.mean(losses[-10:]):.3f}; test accuracy {100 * sum(accs) / len(Xt):.2f}%")
    print("time per kernel (f.profile), slowest first:")
    print("\n".join(train_fn.profile.splitlines()[:9]))


def main():
    try:
        X, y, Xt, yt = datasets.fashion_mnist()
    except datasets.DatasetError as e:
        print(f"skipped: {e}")
        return
    X, Xt = X - 0.5, Xt - 0.5
    train("MLP 784-100(tanh)-10", build_mlp, X, y, Xt, yt, learning_rate=0.01)
    train("CNN", build_cnn, X, y, Xt, yt, learning_rate=0.015)


if __name__ == "__main__":
    main()
