"""kd.function against its peers, side by side in one run (issue aims of the array level).

Run: python benchmarks/bench_function.py [--rounds 3] [--quick]

1. Logistic regression (tutorial 05: 400 x 784, float32): build cold (a fresh cache, new process)
   and warm (same cache, new process); one training step against hand-written numpy, jax.jit and
   PyTensor.
2. MLP 784-100(tanh)-10, batch 128, softmax cross-entropy, SGD: one training step against numpy,
   jax.jit and PyTensor.
3. Row softmax 4096 x 1000 and layer norm 4096 x 1024, each written the natural way with the
   array API (knp) and with the loop DSL (kd.compute), against torch eager and jax.jit.
4. Per-call overhead of a tiny kd.function against jax.jit's dispatch of the same tiny function.
5. `import kerneldsl` in a new process (bytecode cached), against `import numpy`.

Rounds interleave the libraries (each idles 0.4 s and warms up before its timing); the table
prints the median over rounds and the ratio to the fastest peer.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from harness import machine, timeit  # noqa: E402

import kerneldsl as kd  # noqa: E402
import kerneldsl.numpy as knp  # noqa: E402

rng = np.random.default_rng(0)


# --- 1. logistic regression ---------------------------------------------------------------------
LOGREG = textwrap.dedent("""
    import time, numpy as np
    t0 = time.perf_counter()
    import kerneldsl as kd, kerneldsl.numpy as knp
    rng = np.random.default_rng(0)
    x = kd.matrix("x"); y = kd.vector("y")
    w = kd.shared(rng.standard_normal(784).astype(np.float32), name="w")
    b = kd.shared(np.float32(0.0), name="b")
    p_1 = 1 / (1 + knp.exp(-knp.dot(x, w) - b))
    xent = -y * knp.log(p_1) - (1 - y) * knp.log(1 - p_1)
    cost = xent.mean() + 0.01 * (w ** 2).sum()
    gw, gb = kd.grad(cost, [w, b])
    t1 = time.perf_counter()
    train = kd.function([x, y], [p_1 > 0.5, xent.mean()], updates=[(w, w - 0.1 * gw), (b, b - 0.1 * gb)])
    print(time.perf_counter() - t1, t1 - t0)
""")


def logreg_builds() -> dict:
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, KERNELDSL_CACHE=cache)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        out = {}
        for label in ("cold", "warm"):
            r = subprocess.run([sys.executable, "-c", LOGREG], env=env, capture_output=True, text=True, check=True)
            out[label] = float(r.stdout.split()[0])
        return out


def logreg_kd(X, Y):
    train = logreg_step()
    return lambda: train(X, Y)


def logreg_step():
    """The Theano paper's logistic-regression training step (tutorials/05) as one kd.function."""
    x, y = kd.matrix("x"), kd.vector("y")
    w = kd.shared(np.zeros(784, np.float32), name="w")
    b = kd.shared(np.float32(0.0), name="b")
    p_1 = 1 / (1 + knp.exp(-knp.dot(x, w) - b))
    xent = -y * knp.log(p_1) - (1 - y) * knp.log(1 - p_1)
    cost = xent.mean() + 0.01 * (w ** 2).sum()
    gw, gb = kd.grad(cost, [w, b])
    return kd.function([x, y], [p_1 > 0.5, xent.mean()], updates=[(w, w - 0.1 * gw), (b, b - 0.1 * gb)])


def logreg_numpy(X, Y):
    state = [np.zeros(784, np.float32), np.float32(0.0)]

    def step():
        w, b = state
        z = X @ w + b
        p = 1 / (1 + np.exp(-z))
        xent = np.logaddexp(0, -z) * Y + np.logaddexp(0, z) * (1 - Y)
        g = (p - Y) / len(Y)
        state[0] = w - np.float32(0.1) * (X.T @ g + np.float32(0.02) * w)
        state[1] = b - np.float32(0.1) * g.sum()
        return p > 0.5, xent.mean()
    return step


def logreg_jax(X, Y):
    import jax
    import jax.numpy as jnp

    def loss(params, x, y):
        w, b = params
        z = x @ w + b
        xent = jax.nn.softplus(-z) * y + jax.nn.softplus(z) * (1 - y)
        return xent.mean() + 0.01 * (w ** 2).sum(), z

    @jax.jit
    def step(params, x, y):
        (c, z), g = jax.value_and_grad(loss, has_aux=True)(params, x, y)
        return [p - 0.1 * gp for p, gp in zip(params, g)], z > 0, c
    state = [[jnp.zeros(784, jnp.float32), jnp.float32(0.0)]]
    xj, yj = jnp.asarray(X), jnp.asarray(Y)

    def run():
        state[0], pred, c = step(state[0], xj, yj)
        c.block_until_ready()
    return run


def logreg_pytensor(X, Y):
    import pytensor
    import pytensor.tensor as pt
    x, y = pt.matrix("x", dtype="float32"), pt.vector("y", dtype="float32")
    w = pytensor.shared(np.zeros(784, np.float32), name="w")
    b = pytensor.shared(np.float32(0.0), name="b")
    p_1 = 1 / (1 + pt.exp(-pt.dot(x, w) - b))
    xent = -y * pt.log(p_1) - (1 - y) * pt.log(1 - p_1)
    cost = xent.mean() + 0.01 * (w ** 2).sum()
    gw, gb = pytensor.grad(cost, [w, b])
    train = pytensor.function([x, y], [p_1 > 0.5, xent.mean()],
                              updates=[(w, w - np.float32(0.1) * gw), (b, b - np.float32(0.1) * gb)])
    return lambda: train(X, Y)


# --- 2. MLP --------------------------------------------------------------------------------------
def mlp_params():
    r = np.random.default_rng(1)
    return [(r.standard_normal((784, 100)) * 0.05).astype(np.float32), np.zeros(100, np.float32),
            (r.standard_normal((100, 10)) * 0.05).astype(np.float32), np.zeros(10, np.float32)]


def mlp_kd(X, T):
    x, t = kd.matrix("x"), kd.ivector("t")
    params = [kd.shared(p, name=n) for p, n in zip(mlp_params(), ("W1", "b1", "W2", "b2"))]
    W1, b1, W2, b2 = params
    h = knp.tanh(x @ W1 + b1)
    loss = kd.nn.categorical_crossentropy(kd.nn.softmax(h @ W2 + b2), t).mean()
    grads = kd.grad(loss, params)
    train = kd.function([x, t], loss, updates=[(p, p - 0.01 * g) for p, g in zip(params, grads)])
    return lambda: train(X, T), train


def mlp_numpy(X, T):
    state = mlp_params()
    onehot = np.eye(10, dtype=np.float32)[T]

    def step():
        W1, b1, W2, b2 = state
        h = np.tanh(X @ W1 + b1)
        z = h @ W2 + b2
        e = np.exp(z - z.max(1, keepdims=True))
        sm = e / e.sum(1, keepdims=True)
        dz = (sm - onehot) / len(X)
        dh = (dz @ W2.T) * (1 - h * h)
        grads = [X.T @ dh, dh.sum(0), h.T @ dz, dz.sum(0)]
        state[:] = [p - np.float32(0.01) * g for p, g in zip(state, grads)]
    return step


def mlp_jax(X, T):
    import jax
    import jax.numpy as jnp

    def loss(params, x, t):
        W1, b1, W2, b2 = params
        z = jnp.tanh(x @ W1 + b1) @ W2 + b2
        return -jnp.take_along_axis(jax.nn.log_softmax(z), t[:, None], axis=1).mean()

    @jax.jit
    def step(params, x, t):
        c, g = jax.value_and_grad(loss)(params, x, t)
        return [p - 0.01 * gp for p, gp in zip(params, g)], c
    state = [[jnp.asarray(p) for p in mlp_params()]]
    xj, tj = jnp.asarray(X), jnp.asarray(T)

    def run():
        state[0], c = step(state[0], xj, tj)
        c.block_until_ready()
    return run


def mlp_pytensor(X, T):
    import pytensor
    import pytensor.tensor as pt
    x, t = pt.matrix("x", dtype="float32"), pt.ivector("t")
    params = [pytensor.shared(p) for p in mlp_params()]
    W1, b1, W2, b2 = params
    sm = pt.special.softmax(pt.tanh(x @ W1 + b1) @ W2 + b2, axis=-1)
    loss = -pt.log(sm[pt.arange(t.shape[0]), t]).mean()
    grads = pytensor.grad(loss, params)
    train = pytensor.function([x, t], loss, updates=[(p, p - np.float32(0.01) * g) for p, g in zip(params, grads)])
    return lambda: train(X, T)


# --- 3. softmax and layer norm ---------------------------------------------------------------------
def softmax_forms(a):
    x = kd.matrix("x")
    e = knp.exp(x - x.max(axis=1, keepdims=True))
    f_knp = kd.function([x], e / e.sum(axis=1, keepdims=True))
    n, m = kd.sizes("n m")
    X = kd.placeholder((n, m), "float32", name="X")
    r = kd.reduce_axis(m, "r")
    mx = kd.compute((n,), lambda i: kd.max(X[i, r], axis=r), name="mx")
    ee = kd.compute((n, m), lambda i, j: kd.exp(X[i, j] - mx[i]), name="e")
    s = kd.compute((n,), lambda i: kd.sum(ee[i, r], axis=r), name="s")
    Y = kd.compute((n, m), lambda i, j: ee[i, j] / s[i], name="Y")
    f_dsl = kd.build([X], [Y])
    return {"kd (knp)": lambda: f_knp(a), "kd (loop DSL)": lambda: f_dsl(a)}


def layernorm_forms(a):
    x = kd.matrix("x")
    mu = x.mean(axis=1, keepdims=True)
    c = x - mu
    f_knp = kd.function([x], c / knp.sqrt((c * c).mean(axis=1, keepdims=True) + 1e-5))
    n, m = kd.sizes("n m")
    X = kd.placeholder((n, m), "float32", name="X")
    r = kd.reduce_axis(m, "r")
    mean = kd.compute((n,), lambda i: kd.sum(X[i, r], axis=r) / m, name="mean")
    cc = kd.compute((n, m), lambda i, j: X[i, j] - mean[i], name="c")
    var = kd.compute((n,), lambda i: kd.sum(cc[i, r] * cc[i, r], axis=r) / m, name="var")
    Y = kd.compute((n, m), lambda i, j: cc[i, j] / kd.sqrt(var[i] + 1e-5), name="Y")
    f_dsl = kd.build([X], [Y])
    return {"kd (knp)": lambda: f_knp(a), "kd (loop DSL)": lambda: f_dsl(a)}


def torch_jax_rows(a, kind):
    import jax
    import jax.numpy as jnp
    import torch
    ta, ja = torch.from_numpy(a), jnp.asarray(a)
    if kind == "softmax":
        jf = jax.jit(lambda v: jax.nn.softmax(v, axis=1))
        return {"torch": lambda: torch.softmax(ta, 1), "jax.jit": lambda: jf(ja).block_until_ready()}
    jf = jax.jit(lambda v: (v - v.mean(1, keepdims=True)) / jnp.sqrt(v.var(1, keepdims=True) + 1e-5))
    return {"torch": lambda: torch.nn.functional.layer_norm(ta, (a.shape[1],)),
            "jax.jit": lambda: jf(ja).block_until_ready()}


# --- 4. per-call overhead ----------------------------------------------------------------------------
def overheads():
    import jax
    v = np.ones(4, np.float32)
    x = kd.vector("x")
    f = kd.function([x], x + 1)
    g = kd.build([x], [knp.add(x, 1)])
    jf = jax.jit(lambda a: a + 1)
    jv = jax.numpy.asarray(v)
    return {"kd.function": lambda: f(v), "kd.build": lambda: g(v),
            "jax.jit (device array)": lambda: jf(jv).block_until_ready(),
            "jax.jit (numpy in)": lambda: jf(v).block_until_ready(), "numpy v + 1": lambda: v + 1}


def import_times(n=5) -> dict:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    code = "import time; t = time.perf_counter(); import {m}; print(time.perf_counter() - t)"
    out = {}
    for mod in ("numpy", "kerneldsl"):
        subprocess.run([sys.executable, "-c", f"import {mod}"], env=env, check=True)  # bytecode cached
        out[mod] = statistics.median(float(subprocess.run([sys.executable, "-c", code.format(m=mod)], env=env,
                                                          capture_output=True, text=True, check=True).stdout)
                                     for _ in range(n))
    return out


def rounds_of(cases: dict, rounds: int, number: int) -> dict:
    times = {k: [] for k in cases}
    for _ in range(rounds):
        for k, fn in cases.items():
            times[k].append(timeit(fn, repeat=5, number=number))
    return {k: statistics.median(v) for k, v in times.items()}


def show(title: str, res: dict, unit: float = 1e3, unit_name: str = "ms", ours=("kd",)) -> None:
    peers = {k: v for k, v in res.items() if not k.startswith(ours)}
    best = min(peers, key=peers.get) if peers else None
    print(f"\n{title}")
    print(f"| | {unit_name} | vs fastest peer ({best}) |\n|---|---|---|")
    for k, v in res.items():
        ratio = f"{peers[best] / v:.2f}x" if best else "-"
        print(f"| {k} | {v * unit:.3f} | {ratio} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="skip PyTensor (its C build takes minutes)")
    args = ap.parse_args()
    print(f"# bench_function: {machine()}")
    print(f"# python benchmarks/bench_function.py --rounds {args.rounds}{' --quick' if args.quick else ''}")

    b = logreg_builds()
    print(f"\nlogistic regression, kd.function build: cold {b['cold']:.2f} s, warm (new process) {b['warm']:.3f} s")

    X = rng.standard_normal((400, 784)).astype(np.float32)
    Y = rng.integers(0, 2, 400).astype(np.float32)
    cases = {"kd.function": logreg_kd(X, Y), "numpy": logreg_numpy(X, Y), "jax.jit": logreg_jax(X, Y)}
    if not args.quick:
        cases["pytensor"] = logreg_pytensor(X, Y)
    show("logistic regression step, 400 x 784 (us)", rounds_of(cases, args.rounds, 50), 1e6, "us")

    Xm = rng.standard_normal((128, 784)).astype(np.float32)
    Tm = rng.integers(0, 10, 128).astype(np.int32)
    step, train = mlp_kd(Xm, Tm)
    cases = {"kd.function": step, "numpy": mlp_numpy(Xm, Tm), "jax.jit": mlp_jax(Xm, Tm)}
    if not args.quick:
        cases["pytensor"] = mlp_pytensor(Xm, Tm)
    show(f"MLP 784-100-10 training step, batch 128 ({len(train.kernels)} kernels) (us)",
         rounds_of(cases, args.rounds, 20), 1e6, "us")

    a = rng.standard_normal((4096, 1000)).astype(np.float32)
    show("row softmax 4096 x 1000 (ms)", rounds_of({**softmax_forms(a), **torch_jax_rows(a, "softmax")}, args.rounds, 5))
    a = rng.standard_normal((4096, 1024)).astype(np.float32)
    show("layer norm 4096 x 1024 (ms)", rounds_of({**layernorm_forms(a), **torch_jax_rows(a, "layernorm")},
                                                 args.rounds, 5))
    show("per-call overhead, 4-element x + 1 (us)", rounds_of(overheads(), args.rounds, 2000), 1e6, "us")
    it = import_times()
    print(f"\nimport time (new process, bytecode cached): numpy {it['numpy']:.3f} s, kerneldsl {it['kerneldsl']:.3f} s")


if __name__ == "__main__":
    main()
