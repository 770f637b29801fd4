"""Training speed: kerneldsl.nn against PyTorch eager, jax.jit and PyTensor on Fashion-MNIST.

The same networks (the MLP 784-100(tanh)-10 and the blog's CNN adapted to 28x28), the same
initial parameters (Lasagne's Glorot-uniform, drawn once in numpy; the CNN's filters flipped for
the peers, since Lasagne's Conv2DLayer convolves), the same batches in the same order, float32,
batch 128, Nesterov momentum written out in each library. Seconds per epoch are the median time
of a training step (interleaved rounds of `--batches` steps per library, so that drift on a
shared machine hits all alike) times 468 batches. `--epochs N` also trains each library N epochs
from the same start and reports the test accuracy. Then the build of the CNN's training
function: cold (a new process and an empty cache) and warm (a new process, the cache filled).

    python benchmarks/bench_train.py                       # timings, both models
    python benchmarks/bench_train.py --model mlp --epochs 5   # and accuracy after 5 epochs
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import machine

BATCH, STEPS_PER_EPOCH = 128, 468


def glorot(rng, shape):
    fan_in, fan_out = (shape[0], shape[1]) if len(shape) == 2 else \
        (shape[1] * int(np.prod(shape[2:])), shape[0] * int(np.prod(shape[2:])))
    a = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-a, a, shape).astype(np.float32)


def init_params(model: str, seed: int = 0) -> list:
    """[(W, b), ...] in Lasagne's layouts: dense W (in, out), conv W (out, in, kh, kw)."""
    rng = np.random.RandomState(seed)
    if model == "mlp":
        shapes = [(784, 100), (100, 10)]
    else:
        shapes = [(16, 1, 3, 3), (32, 16, 2, 2), (64, 32, 2, 2), (256, 200), (200, 10)]
    return [(glorot(rng, s), np.zeros(s[0] if len(s) == 4 else s[1], np.float32)) for s in shapes]


# --- kerneldsl ------------------------------------------------------------------------------------------------

def kerneldsl_step(model, params, lr, mu):
    import kerneldsl as kd
    from kerneldsl.nn import init, layers, objectives, updates
    from kerneldsl.nn.nonlinearities import rectify, softmax, tanh
    y = kd.ivector("y")
    net = layers.InputLayer((None, 1, 28, 28))  # constant sizes but the batch: kernels built for them
    x = net.input_var
    it = iter(params)
    if model == "mlp":
        W, b = next(it)
        net = layers.DenseLayer(net, 100, W=W, b=b, nonlinearity=tanh)
    else:
        for f in (3, 2, 2):
            W, b = next(it)
            net = layers.Conv2DLayer(net, W.shape[0], f, W=W, b=b)
            net = layers.MaxPool2DLayer(net, 2)
        W, b = next(it)
        net = layers.DenseLayer(net, 200, W=W, b=b, nonlinearity=rectify)
    W, b = next(it)
    net = layers.DenseLayer(net, 10, W=W, b=b, nonlinearity=softmax)
    loss = objectives.aggregate(objectives.categorical_crossentropy(layers.get_output(net), y))
    ps = layers.get_all_params(net, trainable=True)
    step = kd.function([x, y], loss, updates=updates.nesterov_momentum(loss, ps, lr, mu))
    pred = kd.function([x], kd.numpy.argmax(layers.get_output(net, deterministic=True), axis=1))
    del init
    return step, lambda X: pred(X)


# --- PyTorch eager --------------------------------------------------------------------------------------------------

def torch_step(model, params, lr, mu):
    import torch
    import torch.nn.functional as F
    ps = []
    for W, b in params:
        W = W[:, :, ::-1, ::-1].copy() if W.ndim == 4 else W  # Lasagne convolves, torch correlates
        ps += [torch.tensor(W, requires_grad=True), torch.tensor(b, requires_grad=True)]
    vs = [torch.zeros_like(p) for p in ps]

    def forward(x):
        if model == "mlp":
            h = torch.tanh(x.flatten(1) @ ps[0] + ps[1])
            return h @ ps[2] + ps[3]
        h = x
        for k in range(3):
            h = F.max_pool2d(F.relu(F.conv2d(h, ps[2 * k], ps[2 * k + 1])), 2)
        h = F.relu(h.flatten(1) @ ps[6] + ps[7])
        return h @ ps[8] + ps[9]

    def step(X, Y):
        loss = F.cross_entropy(forward(torch.from_numpy(X)), torch.from_numpy(Y).long())
        grads = torch.autograd.grad(loss, ps)
        with torch.no_grad():
            for p, v, g in zip(ps, vs, grads):
                v.mul_(mu).sub_(g, alpha=lr)
                p.add_(v, alpha=mu).sub_(g, alpha=lr)
        return float(loss.detach())

    def predict(X):
        with torch.no_grad():
            return forward(torch.from_numpy(X)).argmax(1).numpy()
    return step, predict


# --- jax.jit -------------------------------------------------------------------------------------------------------

def jax_step(model, params, lr, mu):
    import jax
    import jax.numpy as jnp
    ps = []
    for W, b in params:
        ps += [jnp.asarray(W[:, :, ::-1, ::-1].copy() if W.ndim == 4 else W), jnp.asarray(b)]
    vs = [jnp.zeros_like(p) for p in ps]

    def forward(ps, x):
        if model == "mlp":
            h = jnp.tanh(x.reshape(x.shape[0], -1) @ ps[0] + ps[1])
            return h @ ps[2] + ps[3]
        h = x
        for k in range(3):
            h = jax.lax.conv_general_dilated(h, ps[2 * k], (1, 1), "VALID") + ps[2 * k + 1][None, :, None, None]
            h = jax.lax.reduce_window(jax.nn.relu(h), -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
        h = jax.nn.relu(h.reshape(h.shape[0], -1) @ ps[6] + ps[7])
        return h @ ps[8] + ps[9]

    def loss_fn(ps, x, y):
        logp = jax.nn.log_softmax(forward(ps, x))
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], 1))

    @jax.jit
    def update(ps, vs, x, y):
        loss, gs = jax.value_and_grad(loss_fn)(ps, x, y)
        vs = [mu * v - lr * g for v, g in zip(vs, gs)]
        ps = [p + mu * v - lr * g for p, v, g in zip(ps, vs, gs)]
        return ps, vs, loss

    predict_jit = jax.jit(lambda ps, x: jnp.argmax(forward(ps, x), 1))
    state = [ps, vs]

    def step(X, Y):
        state[0], state[1], loss = update(state[0], state[1], X, Y)
        return float(loss)
    return step, lambda X: np.asarray(predict_jit(state[0], X))


# --- PyTensor -------------------------------------------------------------------------------------------------------

def pytensor_step(model, params, lr, mu):
    """PyTensor 3 has no 4-D convolution or pooling op: the convolution is a sum of shifted
    tensordots (one per filter tap) and the pooling a reshape and max, both differentiated by it.
    Compiled with the C backend (mode CVM, Theano's), or $BENCH_PYTENSOR_MODE."""
    import pytensor
    import pytensor.tensor as pt
    ps = []
    for k, (W, b) in enumerate(params):
        ps += [pytensor.shared(W[:, :, ::-1, ::-1].copy() if W.ndim == 4 else W, name=f"W{k}"),
               pytensor.shared(b, name=f"b{k}")]
    x, y = pt.tensor4("x", dtype="float32"), pt.ivector("y")

    def conv(h, W, b, shape):
        _, _, kh, kw = shape
        oh, ow = h.shape[2] - kh + 1, h.shape[3] - kw + 1
        out = 0
        for i in range(kh):
            for j in range(kw):
                patch = h[:, :, i:i + oh, j:j + ow]
                out = out + pt.tensordot(patch, W[:, :, i, j], axes=[[1], [1]]).dimshuffle(0, 3, 1, 2)
        return out + b.dimshuffle("x", 0, "x", "x")

    def pool(h):
        n, c, hh, ww = h.shape
        h = h[:, :, :hh // 2 * 2, :ww // 2 * 2]
        return h.reshape((n, c, hh // 2, 2, ww // 2, 2)).max(axis=(3, 5))

    if model == "mlp":
        logits = pt.tanh(x.flatten(2) @ ps[0] + ps[1]) @ ps[2] + ps[3]
    else:
        h = x
        for k in range(3):
            h = pool(pt.maximum(conv(h, ps[2 * k], ps[2 * k + 1], params[k][0].shape), 0))
        h = pt.maximum(h.flatten(2) @ ps[6] + ps[7], 0)
        logits = h @ ps[8] + ps[9]
    logp = logits - pt.log(pt.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) \
        - logits.max(1, keepdims=True)
    loss = -logp[pt.arange(y.shape[0]), y].mean()
    grads = pytensor.grad(loss, ps)
    updates = []
    for p, g in zip(ps, grads):
        v = pytensor.shared(np.zeros_like(p.get_value()))
        nv = mu * v - lr * g
        updates += [(v, nv.astype("float32")), (p, (p + mu * nv - lr * g).astype("float32"))]
    mode = os.environ.get("BENCH_PYTENSOR_MODE", "CVM")  # Theano's C backend (PyTensor 3's default is numba)
    f = pytensor.function([x, y], loss, updates=updates, mode=mode)
    pred = pytensor.function([x], logits.argmax(1), mode=mode)
    return lambda X, Y: float(f(X, Y)), pred


PEERS = {"kerneldsl": kerneldsl_step, "torch": torch_step, "jax.jit": jax_step, "pytensor": pytensor_step}


def accuracy(predict, Xt, yt) -> float:
    return float(np.mean(np.concatenate([predict(Xt[i:i + 500]) for i in range(0, len(Xt), 500)]) == yt))


def bench_model(model, libs, X, y, Xt, yt, batches, rounds, epochs):
    lr = 0.01 if model == "mlp" else 0.015
    order = np.random.RandomState(1).permutation(len(X))
    batch_list = [np.sort(order[i:i + BATCH]) for i in range(0, STEPS_PER_EPOCH * BATCH, BATCH)]
    steps, builds = {}, {}
    for lib in libs:
        t0 = time.perf_counter()
        try:
            steps[lib] = PEERS[lib](model, init_params(model), lr, 0.9)
        except ImportError as e:
            print(f"  {lib}: not installed ({e})")
            continue
        builds[lib] = time.perf_counter() - t0
        step = steps[lib][0]
        step(X[batch_list[0]], y[batch_list[0]])  # the first call compiles (jax) or warms up
    times = {lib: [] for lib in steps}
    for r in range(rounds):  # interleaved: each round times every library on the same batches
        for lib, (step, _) in steps.items():
            chosen = batch_list[r * batches % STEPS_PER_EPOCH:][:batches]
            data = [(X[b], y[b]) for b in chosen]
            t0 = time.perf_counter()
            for Xb, yb in data:
                step(Xb, yb)
            times[lib].append((time.perf_counter() - t0) / len(data))
    result = {lib: {"epoch_s": statistics.median(t) * STEPS_PER_EPOCH, "build_s": builds[lib]} for lib, t in times.items()}
    if epochs:
        for lib in steps:  # from the same start again: a fresh step function
            step, predict = PEERS[lib](model, init_params(model), lr, 0.9)
            t0 = time.perf_counter()
            for _ in range(epochs):
                for b in batch_list:
                    step(X[b], y[b])
            result[lib]["train_s"] = time.perf_counter() - t0
            result[lib]["accuracy"] = accuracy(predict, Xt, yt)
    return result


BUILD_SCRIPT = """
import sys, time
sys.path.insert(0, {bench!r})
import bench_train
t0 = time.perf_counter()
bench_train.kerneldsl_step("cnn", bench_train.init_params("cnn"), 0.015, 0.9)
print(time.perf_counter() - t0)
"""


def build_times() -> tuple[float, float]:
    """The CNN's training (and prediction) functions built in a new process: cold, then warm."""
    here = os.path.dirname(os.path.abspath(__file__))
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, KERNELDSL_CACHE=cache, PYTHONPATH=os.path.dirname(here))
        out = []
        for _ in range(2):
            r = subprocess.run([sys.executable, "-c", BUILD_SCRIPT.format(bench=here)], env=env, capture_output=True,
                               text=True, check=True)
            out.append(float(r.stdout.strip().splitlines()[-1]))
    return out[0], out[1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=["mlp", "cnn", "both"], default="both")
    ap.add_argument("--libs", default="kerneldsl,torch,jax.jit,pytensor")
    ap.add_argument("--batches", type=int, default=0, help="steps per timed round (default: 40 MLP, 10 CNN)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=0, help="also train this many epochs and report accuracy")
    ap.add_argument("--no-build", action="store_true", help="skip the cold/warm build measurement")
    args = ap.parse_args()
    if os.environ.get("OMP_NUM_THREADS") == "1":  # one thread for every library, XLA's pool included
        os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    from kerneldsl import datasets
    X, y, Xt, yt = datasets.fashion_mnist()
    X, Xt = X - 0.5, Xt - 0.5
    libs = args.libs.split(",")
    print(f"# {machine()}; float32, batch {BATCH}, {STEPS_PER_EPOCH} batches per epoch; "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}")
    print(f"# python {' '.join(sys.argv)}\n")
    for model in (["mlp", "cnn"] if args.model == "both" else [args.model]):
        batches = args.batches or (40 if model == "mlp" else 10)
        res = bench_model(model, libs, X, y, Xt, yt, batches, args.rounds, args.epochs)
        base = res.get("kerneldsl", {}).get("epoch_s")
        print(f"| {model.upper()} | s/epoch | its time / kerneldsl's | build s |" + (f" test acc after {args.epochs} "
                                                                                  f"epoch(s) | train s |" if args.epochs else ""))
        print("|---|---|---|---|" + ("---|---|" if args.epochs else ""))
        for lib, r in res.items():
            ratio = f"{r['epoch_s'] / base:.2f}x" if base else "-"
            row = f"| {lib} | {r['epoch_s']:.2f} | {ratio} | {r['build_s']:.1f} |"
            if args.epochs:
                row += f" {100 * r['accuracy']:.2f}% | {r['train_s']:.1f} |"
            print(row, flush=True)
        print()
    if not args.no_build and "kerneldsl" in libs:
        cold, warm = build_times()
        print(f"CNN training + prediction functions, new process: cold build {cold:.2f} s (aim <= 5), "
              f"warm {warm:.2f} s (aim <= 0.2)")


if __name__ == "__main__":
    main()
