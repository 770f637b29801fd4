"""Training layers, forward + backward, kerneldsl against PyTorch eager (issue: layers at full speed).

Run: python benchmarks/bench_layers.py [--rounds 5] [--only name,name] [--threads 2]

Each layer is one kd.function computing the output and the gradients of sum(y * dy) with respect
to the input and every parameter (what a training step's backward needs), against torch eager
running `y = layer(x); y.backward(dy)` with the same shapes, float32. Rounds interleave the two
(each idles 0.4 s and warms up before its timing); the table prints medians over rounds, the
ratio torch / kerneldsl (above 1: kerneldsl ahead) and their geometric mean, and the machine's
load average before and after.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from harness import machine, timeit  # noqa: E402

import kerneldsl as kd  # noqa: E402
import kerneldsl.numpy as knp  # noqa: E402

rng = np.random.default_rng(0)


def arr(*shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _kd(inputs, params, y, extra=()):
    """kd.function of (inputs, params, dy) -> (y, d inputs, d params); float inputs only get grads."""
    dy = kd.placeholder(y.shape, name="dy") if y.ndim else None
    loss = knp.sum(y * dy) if dy is not None else y
    wrt = [t for t in (*inputs, *params) if t.dtype.startswith("float")]
    grads = kd.grad(loss, wrt)
    ins = [*inputs, *params, *extra] + ([dy] if dy is not None else [])
    return kd.function(ins, [y, *grads]), dy is not None


def _torch_step(fn, tensors, dy):
    import torch

    def step():
        for t in tensors:
            t.grad = None
        y = fn(*tensors)
        if dy is None:
            y.backward()
        else:
            y.backward(dy)
    return step


def _run(kd_parts, np_args, torch_fn, torch_grad_mask):
    """(kd callable, torch callable) from a kd build and a torch function of the same arrays."""
    import torch
    f, has_dy = kd_parts
    tensors = [torch.tensor(a, requires_grad=m) for a, m in zip(np_args[:-1], torch_grad_mask)]
    with torch.no_grad():
        shape = tuple(torch_fn(*tensors).shape)
    dy_np = arr(*shape) if has_dy else None
    kd_args = (*np_args[:-1], dy_np) if has_dy else np_args[:-1]
    got = f(*kd_args)[0]
    assert got.shape == shape, (got.shape, shape)
    step = _torch_step(torch_fn, tensors, torch.tensor(dy_np) if has_dy else None)
    return (lambda: f(*kd_args)), step


# --- the layers ----------------------------------------------------------------------------------

def dense():
    import torch
    x, W, b = kd.matrix("x"), kd.matrix("W"), kd.vector("b")
    y = knp.tanh(knp.dot(x, W) + b)
    return _run(_kd([x], [W, b], y), [arr(128, 784), arr(784, 100, scale=0.05), arr(100), None],
                lambda x, W, b: torch.tanh(x @ W + b), [True, True, True])


def _conv(n, ci, co, hw, k, pad, relu=True):
    import torch
    import torch.nn.functional as F

    def build():
        x, w, b = kd.tensor4("x"), kd.tensor4("w"), kd.vector("b")
        y = kd.nn.conv2d(x, w, padding=pad, bias=b)
        y = kd.nn.relu(y) if relu else y
        return _run(_kd([x], [w, b], y), [arr(n, ci, hw, hw), arr(co, ci, k, k, scale=0.1), arr(co), None],
                    lambda x, w, b: (F.relu if relu else (lambda v: v))(F.conv2d(x, w, b, padding=pad)),
                    [True, True, True])
    return build


def maxpool():
    import torch.nn.functional as F
    x = kd.tensor4("x")
    y = kd.nn.max_pool2d(x, 2)
    return _run(_kd([x], [], y), [arr(128, 32, 13, 13), None], lambda x: F.max_pool2d(x, 2), [True])


def bias_gelu():
    import torch.nn.functional as F
    x, b = kd.matrix("x"), kd.vector("b")
    y = kd.nn.gelu(x + b)
    return _run(_kd([x], [b], y), [arr(4096, 1024), arr(1024), None], lambda x, b: F.gelu(x + b), [True, True])


def layer_norm():
    import torch.nn.functional as F
    x, g, b = kd.matrix("x"), kd.vector("g"), kd.vector("b")
    y = kd.nn.layer_norm(x, g, b)
    return _run(_kd([x], [g, b], y), [arr(4096, 1024), arr(1024), arr(1024), None],
                lambda x, g, b: F.layer_norm(x, (1024,), g, b), [True, True, True])


def nll_idiom():
    import torch
    x, y = kd.matrix("x"), kd.ivector("y")
    loss = -knp.mean(knp.log(kd.nn.softmax(x))[knp.arange(x.shape[0]), y])
    labels = rng.integers(0, 1000, 4096).astype(np.int32)
    kd_parts = _kd([x], [], loss, extra=[y])
    f, _ = kd_parts
    xa = arr(4096, 1000)
    xt = torch.tensor(xa, requires_grad=True)
    yt = torch.tensor(labels.astype(np.int64))
    step = _torch_step(lambda x: -torch.log(torch.softmax(x, 1))[torch.arange(4096), yt].mean(), [xt], None)
    return (lambda: f(xa, labels)), step


def crossentropy():
    import torch
    import torch.nn.functional as F
    x, y = kd.matrix("x"), kd.ivector("y")
    loss = knp.mean(kd.nn.categorical_crossentropy(kd.nn.softmax(x), y))
    labels = rng.integers(0, 1000, 4096).astype(np.int32)
    f, _ = _kd([x], [], loss, extra=[y])
    xa = arr(4096, 1000)
    xt = torch.tensor(xa, requires_grad=True)
    yt = torch.tensor(labels.astype(np.int64))
    step = _torch_step(lambda x: F.cross_entropy(x, yt), [xt], None)
    return (lambda: f(xa, labels)), step


def batch_norm():
    import torch.nn.functional as F
    x, g, b = kd.tensor4("x"), kd.vector("g"), kd.vector("b")
    y = kd.nn.batch_norm(x, g, b, eps=1e-5)
    return _run(_kd([x], [g, b], y), [arr(64, 64, 16, 16), arr(64), arr(64), None],
                lambda x, g, b: F.batch_norm(x, None, None, g, b, training=True, eps=1e-5), [True, True, True])


def softplus():
    import torch.nn.functional as F
    x = kd.matrix("x")
    y = kd.nn.softplus(x)
    return _run(_kd([x], [], y), [arr(4096, 1024), None], F.softplus, [True])


def embedding():
    import torch
    import torch.nn.functional as F
    table, ids = kd.matrix("table"), kd.ivector("ids")
    y = table[ids]
    f, _ = _kd([], [table], y, extra=[ids])
    ta, ia = arr(50_000, 256), rng.integers(0, 50_000, 8192).astype(np.int32)
    dy = arr(8192, 256)
    tt = torch.tensor(ta, requires_grad=True)
    it = torch.tensor(ia.astype(np.int64))
    step = _torch_step(lambda t: F.embedding(it, t), [tt], torch.tensor(dy))
    return (lambda: f(ta, ia, dy)), step


LAYERS = {
    "dense 128x784 @ 784x100 + bias, tanh": dense,
    "conv 3x3 1->16 + relu, b128 28x28": _conv(128, 1, 16, 28, 3, 0),
    "conv 2x2 16->32 + relu, b128 13x13": _conv(128, 16, 32, 13, 2, 0),
    "conv 3x3 32->64 pad 1, b64 32x32": _conv(64, 32, 64, 32, 3, 1, relu=False),
    "max-pool 2x2, 128x32x13x13": maxpool,
    "bias + GELU 4096x1024": bias_gelu,
    "layer norm 4096x1024": layer_norm,
    "-mean(log(softmax(x))[arange(n), y]) 4096x1000": nll_idiom,
    "categorical_crossentropy(softmax) 4096x1000": crossentropy,
    "batch norm (training) 64x64x16x16": batch_norm,
    "softplus 4096x1024": softplus,
    "embedding 50000x256, 8192 ids": embedding,
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only", default="")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    picked = {k: v for k, v in LAYERS.items() if not args.only or any(s in k for s in args.only.split(","))}
    load0 = os.getloadavg()
    built = {}
    for name, make in picked.items():
        built[name] = make()
    times: dict = {name: {"kd": [], "torch": []} for name in built}
    for _ in range(args.rounds):
        for name, (kd_fn, torch_fn) in built.items():
            times[name]["kd"].append(timeit(kd_fn, repeat=5))
            times[name]["torch"].append(timeit(torch_fn, repeat=5))
    print(f"machine: {machine()}; torch {torch.__version__} ({args.threads} threads); load average before "
          f"{load0[0]:.2f}, after {os.getloadavg()[0]:.2f}; median of {args.rounds} interleaved rounds")
    print("| layer (fwd+bwd) | kerneldsl (ms) | torch eager (ms) | torch / kd |")
    print("|---|---|---|---|")
    ratios = []
    for name, t in times.items():
        k, p = statistics.median(t["kd"]), statistics.median(t["torch"])
        ratios.append(p / k)
        print(f"| {name} | {1e3 * k:.3f} | {1e3 * p:.3f} | {p / k:.2f}x |")
    print(f"| geometric mean | | | {math.exp(sum(map(math.log, ratios)) / len(ratios)):.2f}x |")


if __name__ == "__main__":
    main()
