"""Memory-bound CPU workloads side by side: elementwise chains, row softmax, log-softmax + NLL
with its gradient, and 2x2 max-pool forward + backward.

Run: python benchmarks/bench_rows.py   (part of `make bench`)

Peers, where installed: numpy, PyTorch eager and torch.compile, JAX jit, PyTensor. Every
library is warmed up and idles 0.4 s before it is timed; the table gives medians and
numpy_time / time ratios (higher is faster), all from this one run.
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from harness import machine, table, timeit

import kerneldsl as kd

try:
    import torch
except ImportError:
    torch = None
try:
    import jax
    import jax.numpy as jnp
except ImportError:
    jax = None
try:
    import pytensor
    import pytensor.tensor as pt
except ImportError:
    pytensor = None

rng = np.random.default_rng(0)


def _torch_compile(fn):
    try:
        c = torch.compile(fn)
        return c
    except Exception:  # noqa: BLE001 - a peer that cannot compile is just left out
        return None


def peers(res: dict, args, torch_fn=None, jax_fn=None, pytensor_fn=None, check=None) -> None:
    """Time the peers on the same inputs; each is checked against `check` when given."""
    if torch is not None and torch_fn is not None:
        targs = [torch.from_numpy(a) for a in args]
        res["torch"] = timeit(lambda: torch_fn(*targs))
        comp = _torch_compile(torch_fn)
        if comp is not None:
            try:
                comp(*targs)
                res["torch.compile"] = timeit(lambda: comp(*targs))
            except Exception:  # noqa: BLE001
                pass
    if jax is not None and jax_fn is not None:
        jf = jax.jit(jax_fn)
        jargs = [jnp.asarray(a) for a in args]
        jf(*jargs)
        res["jax.jit"] = timeit(lambda: jax.block_until_ready(jf(*jargs)))
    if pytensor is not None and pytensor_fn is not None:
        pf = pytensor_fn()
        if pf is not None:
            res["pytensor"] = timeit(lambda: pf(*args))


def elementwise(n: int, number: int = 1):
    N = kd.size("N")
    x, y, z = (kd.placeholder((N,), name=s) for s in "xyz")
    a, b, c = (rng.standard_normal(n, dtype=np.float32) for _ in range(3))
    rows = []
    cases = [
        ("exp(x)", lambda i: kd.exp(x[i]), lambda p, q, r: np.exp(p), lambda p, q, r: torch.exp(p),
         lambda p, q, r: jnp.exp(p), lambda X, Y, Z: pt.exp(X)),
        ("exp(x)*y+z", lambda i: kd.exp(x[i]) * y[i] + z[i], lambda p, q, r: np.exp(p) * q + r,
         lambda p, q, r: torch.exp(p) * q + r, lambda p, q, r: jnp.exp(p) * q + r,
         lambda X, Y, Z: pt.exp(X) * Y + Z),
        ("tanh(x*a+b)*sigmoid(y)+log1p(|z|)",
         lambda i: kd.tanh(x[i] * 1.5 + 0.5) * kd.sigmoid(y[i]) + kd.log1p(kd.abs(z[i])),
         lambda p, q, r: np.tanh(p * 1.5 + 0.5) * (1 / (1 + np.exp(-q))) + np.log1p(np.abs(r)),
         lambda p, q, r: torch.tanh(p * 1.5 + 0.5) * torch.sigmoid(q) + torch.log1p(torch.abs(r)),
         lambda p, q, r: jnp.tanh(p * 1.5 + 0.5) * jax.nn.sigmoid(q) + jnp.log1p(jnp.abs(r)),
         lambda X, Y, Z: pt.tanh(X * 1.5 + 0.5) * pt.sigmoid(Y) + pt.log1p(pt.abs(Z))),
    ]
    for name, body, np_fn, t_fn, j_fn, p_fn in cases:
        f = kd.build([x, y, z], [kd.compute((N,), body, name="out")])
        np.testing.assert_allclose(f(a, b, c), np_fn(a, b, c), rtol=1e-5, atol=1e-6)
        res = {"numpy": timeit(lambda: np_fn(a, b, c), number=number),
               "kerneldsl": timeit(lambda: f(a, b, c), number=number)}

        def pyt(p_fn=p_fn):
            X, Y, Z = pt.fvector("x"), pt.fvector("y"), pt.fvector("z")
            return pytensor.function([X, Y, Z], p_fn(X, Y, Z), on_unused_input="ignore")
        peers(res, (a, b, c), t_fn, j_fn, pyt)
        rows.append((f"{name}, n={n}" + (f", x{number} calls" if number > 1 else ""), res))
    return rows


def softmax_rows(n: int = 4096, m: int = 1000):
    R, C = kd.sizes("R C")
    X = kd.placeholder((R, C), name="X")
    r = kd.reduce_axis(C, name="r")
    mx = kd.compute((R,), lambda i: kd.max(X[i, r], axis=r), name="mx")
    den = kd.compute((R,), lambda i: kd.sum(kd.exp(X[i, r] - mx[i]), axis=r), name="den")
    sm = kd.compute((R, C), lambda i, j: kd.exp(X[i, j] - mx[i]) / den[i], name="softmax")
    f = kd.build([X], [sm])
    x = rng.standard_normal((n, m), dtype=np.float32)

    def np_fn(v):
        e = np.exp(v - v.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)
    np.testing.assert_allclose(f(x), np_fn(x), rtol=1e-5, atol=1e-7)
    res = {"numpy": timeit(lambda: np_fn(x)), "kerneldsl": timeit(lambda: f(x))}

    def pyt():
        v = pt.fmatrix("x")
        return pytensor.function([v], pt.special.softmax(v, axis=1))
    peers(res, (x,), lambda v: torch.softmax(v, 1), lambda v: jax.nn.softmax(v, axis=1), pyt)
    return [(f"row softmax {n}x{m}", res)]


def logsoftmax_nll_grad(n: int = 4096, m: int = 1000):
    B, C = kd.sizes("B C")
    L = kd.placeholder((B, C), name="L")
    y = kd.placeholder((B,), "int64", name="y")
    r, b = kd.reduce_axis(C, name="r"), kd.reduce_axis(B, name="b")
    # the row max only stabilises; its gradient contribution cancels exactly (jax.nn.log_softmax
    # stops it the same way)
    mx = kd.compute((B,), lambda i: kd.stop_gradient(kd.max(L[i, r], axis=r)), name="mx")
    lse = kd.compute((B,), lambda i: mx[i] + kd.log(kd.sum(kd.exp(L[i, r] - mx[i]), axis=r)), name="lse")
    nll = kd.compute((), lambda: -kd.sum(L[b, y[b]] - lse[b], axis=b) / kd.cast(B, "float32"), name="nll")
    (dL,) = kd.grad(nll, [L])
    f = kd.build([L, y], [nll, dL])
    x = rng.standard_normal((n, m), dtype=np.float32)
    t = rng.integers(0, m, n)

    def np_fn(v, t):
        s = v - v.max(1, keepdims=True)
        e = np.exp(s)
        se = e.sum(1, keepdims=True)
        logp = s - np.log(se)
        loss = -logp[np.arange(len(t)), t].mean()
        g = e / se
        g[np.arange(len(t)), t] -= 1
        return loss, g / len(t)
    loss, grad = f(x, t)
    want_loss, want_grad = np_fn(x, t)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-4)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-8)
    res = {"numpy": timeit(lambda: np_fn(x, t)), "kerneldsl": timeit(lambda: f(x, t))}

    def torch_fn(v, tt):
        v = v.detach().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(v, tt)
        (g,) = torch.autograd.grad(loss, [v])
        return loss, g

    def jax_fn(v, tt):
        def loss(v):
            return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(v, axis=1), tt[:, None], axis=1))
        return jax.value_and_grad(loss)(v)

    def pyt():
        v, tt = pt.fmatrix("v"), pt.lvector("t")
        loss = -pt.mean(pt.special.log_softmax(v, axis=1)[pt.arange(tt.shape[0]), tt])
        return pytensor.function([v, tt], [loss, pytensor.grad(loss, v)])
    peers(res, (x, t), torch_fn, jax_fn, pyt)
    return [(f"log-softmax + NLL + grad {n}x{m}", res)]


def maxpool(n=64, c=32, h=32, w=32):
    N, Cc, H, W = kd.sizes("N Cc H W")
    X = kd.placeholder((N, Cc, H, W), name="X")
    ry, rx = kd.reduce_axis(2, name="ry"), kd.reduce_axis(2, name="rx")
    P = kd.compute((N, Cc, H // 2, W // 2),
                   lambda b, ch, i, j: kd.max(X[b, ch, 2 * i + ry, 2 * j + rx], axis=[ry, rx]), name="P")
    dP = kd.placeholder((N, Cc, H // 2, W // 2), name="dP")
    (dX,) = kd.grad(P, [X], dy=dP)
    fwd = kd.build([X], [P])
    bwd = kd.build([X, dP], [dX])
    x = rng.standard_normal((n, c, h, w), dtype=np.float32)
    dp = rng.standard_normal((n, c, h // 2, w // 2), dtype=np.float32)

    def np_fwd(v):
        return v.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))
    np.testing.assert_allclose(fwd(x), np_fwd(x))
    res_f = {"numpy": timeit(lambda: np_fwd(x)), "kerneldsl": timeit(lambda: fwd(x))}
    peers(res_f, (x,), lambda v: torch.nn.functional.max_pool2d(v, 2),
          lambda v: jax.lax.reduce_window(v, -jnp.inf, jax.lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID"))
    res_b = {"kerneldsl": timeit(lambda: bwd(x, dp))}
    if torch is not None:
        tx, tdp = torch.from_numpy(x), torch.from_numpy(dp)

        def t_bwd():
            v = tx.detach().requires_grad_(True)
            out = torch.nn.functional.max_pool2d(v, 2)
            return torch.autograd.grad(out, [v], tdp)
        res_b["torch"] = timeit(t_bwd)
    return [(f"maxpool 2x2 fwd {n}x{c}x{h}x{w}", res_f), (f"maxpool 2x2 bwd {n}x{c}x{h}x{w}", res_b)]


def main() -> None:
    print(f"# bench_rows on {machine()}")
    versions = [f"numpy {np.__version__}"]
    versions += [f"torch {torch.__version__}"] if torch is not None else []
    versions += [f"jax {jax.__version__}"] if jax is not None else []
    versions += [f"pytensor {pytensor.__version__}"] if pytensor is not None else []
    print(", ".join(versions))
    print()
    print(table("elementwise (float32)", elementwise(1 << 22) + elementwise(230400)))
    print()
    print(table("rows (float32)", softmax_rows() + logsoftmax_nll_grad()))
    print()
    print(table("pooling (float32)", maxpool(), base="kerneldsl"))


if __name__ == "__main__":
    main()
