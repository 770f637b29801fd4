"""Tutorial 5: Theano's logistic regression, almost verbatim, on kerneldsl's array level.

Run: python tutorials/05_logistic_regression.py

400 samples of 784 random features with random 0/1 labels, weights started from randn (as the
Theano tutorial does), 10000 gradient steps at learning rate 0.1. With that start some samples
saturate p to exactly 0 or 1 in float32, where the cross-entropy as written is log(0): the graph
rewrites turn it into softplus form (logsigm_to_softplus, log1msigm_to_softplus) and the cost
stays finite. One kd.function holds the forward pass, kd.grad's gradient and the updates: one
compiled module, one call into native code per step.
"""

import time

import numpy as np

import kerneldsl as kd
import kerneldsl.numpy as knp

rng = np.random.default_rng(0)
N, feats = 400, 784
D = (rng.standard_normal((N, feats)).astype(np.float32), rng.integers(0, 2, N).astype(np.float32))
training_steps = 10000

x = kd.matrix("x")
y = kd.vector("y")
w = kd.shared(rng.standard_normal(feats).astype(np.float32), name="w")
b = kd.shared(np.float32(0.0), name="b")

p_1 = 1 / (1 + knp.exp(-knp.dot(x, w) - b))  # probability that the target is 1
prediction = p_1 > 0.5
xent = -y * knp.log(p_1) - (1 - y) * knp.log(1 - p_1)
cost = xent.mean() + 0.01 * (w ** 2).sum()
gw, gb = kd.grad(cost, [w, b])

t0 = time.perf_counter()
train = kd.function([x, y], [prediction, xent.mean()], updates=[(w, w - 0.1 * gw), (b, b - 0.1 * gb)])
predict = kd.function([x], prediction)
print(f"built in {time.perf_counter() - t0:.2f} s (a second run of this script finds them in the cache)")

z = D[0] @ w.get_value()
print(f"samples whose p is exactly 0 or 1 in float32 at the start: {int((np.abs(z) > 88).sum())} of {N}")
_, first = train(*D)
print(f"cross-entropy after the first step: {float(first):.3f} (finite: the stable form runs)")

t0 = time.perf_counter()
for _ in range(training_steps - 1):
    pred, err = train(*D)
seconds = time.perf_counter() - t0
print(f"{training_steps} steps: {seconds:.2f} s, {1e6 * seconds / (training_steps - 1):.0f} us per step")
print(f"final cross-entropy {float(err):.4f}; all weights finite: {bool(np.isfinite(w.get_value()).all())}")
print(f"accuracy on the training set: {float((predict(D[0]) == D[1]).mean()):.3f}")

print("\nThe rewrites that fired (rule: times):")
for rule, count in sorted(train.rewrites.items()):
    print(f"  {rule}: {count}")
print(f"\nThe kernels of one training step ({len(train.kernels)}):")
for k in train.kernels:
    print(" ", k)
