"""kerneldsl.nn: neural-network functions on symbolic arrays (kd.nn.softmax, kd.nn.conv2d, ...),
and Lasagne/nolearn-style layers and training:

    from kerneldsl.nn import layers, NeuralNet, BatchIterator, TrainSplit
    from kerneldsl.nn import init, objectives, updates, nonlinearities
"""

from .functional import (
    avg_pool2d,
    batch_norm,
    binary_crossentropy,
    categorical_crossentropy,
    conv2d,
    dropout,
    elu,
    gelu,
    layer_norm,
    leaky_relu,
    log_softmax,
    max_pool2d,
    relu,
    sigmoid,
    softmax,
    softplus,
    squared_error,
    tanh,
)

__all__ = ["avg_pool2d", "batch_norm", "binary_crossentropy", "categorical_crossentropy", "conv2d", "dropout",
           "elu", "gelu", "layer_norm", "leaky_relu", "log_softmax", "max_pool2d", "relu", "sigmoid", "softmax",
           "softplus", "squared_error", "tanh"]

from . import init, layers, nonlinearities, objectives, updates
from .neuralnet import BatchIterator, EarlyStopping, NeuralNet, PrintLayerInfo, PrintLog, TrainSplit

__all__ += ["BatchIterator", "EarlyStopping", "NeuralNet", "PrintLayerInfo", "PrintLog", "TrainSplit", "init",
            "layers", "nonlinearities", "objectives", "updates"]
