"""Loss functions and metrics, as Lasagne's (`lasagne.objectives`): elementwise or per-row
losses, reduced to a scalar by `aggregate`.

    loss = aggregate(categorical_crossentropy(prediction, y), mode="mean")

A crossentropy of a softmax is rewritten to log_softmax before differentiation (ir/rules.py),
so its gradient is softmax - onehot, never 1 / softmax.
"""

from __future__ import annotations

from .. import numpy as knp
from . import functional as F


def categorical_crossentropy(predictions, targets):
    """-sum(targets * log(predictions), axis=1): `targets` int class indices (a vector) or a
    one-hot / probability matrix; one loss per row."""
    return F.categorical_crossentropy(predictions, targets)


def binary_crossentropy(predictions, targets):
    """-(t * log(p) + (1 - t) * log(1 - p)), elementwise."""
    return F.binary_crossentropy(predictions, _float(targets, predictions))


def squared_error(a, b):
    """(a - b) ** 2, elementwise."""
    return F.squared_error(a, _float(b, a))


def _float(t, like):
    t = knp.asarray(t)
    like = knp.asarray(like)
    return knp.astype(t, like.dtype) if t.dtype != like.dtype else t


def aggregate(loss, weights=None, mode: str = "mean"):
    """A scalar from elementwise losses: "mean", "sum", or "normalized_sum" (sum(w * loss) /
    sum(w), which needs weights); `weights` broadcast against `loss`."""
    if mode not in ("mean", "sum", "normalized_sum"):
        raise ValueError(f"aggregate: mode must be 'mean', 'sum' or 'normalized_sum', got {mode!r}")
    if weights is not None:
        loss = knp.multiply(loss, weights)
    if mode == "mean":
        return knp.mean(loss)
    if mode == "sum":
        return knp.sum(loss)
    if weights is None:
        raise ValueError("aggregate: mode='normalized_sum' needs weights")
    return knp.divide(knp.sum(loss), knp.sum(weights))


def categorical_accuracy(predictions, targets, top_k: int = 1):
    """1.0 where the row's highest score (top_k=1) is the target class, else 0.0 (floatX);
    `targets` class indices or one-hot rows."""
    p = knp.asarray(predictions)
    t = knp.asarray(targets)
    if t.ndim == p.ndim:
        t = knp.argmax(t, axis=-1)
    if top_k == 1:
        return knp.astype(knp.equal(knp.argmax(p, axis=-1), knp.astype(t, "int64")), p.dtype)
    # the target is in the top k when fewer than k scores exceed its own
    score = p[knp.arange(p.shape[0]), t]
    above = knp.sum(knp.astype(knp.greater(p, knp.expand_dims(score, -1)), "int64"), axis=-1)
    return knp.astype(knp.less(above, top_k), p.dtype)


def binary_accuracy(predictions, targets, threshold: float = 0.5):
    p = knp.asarray(predictions)
    return knp.astype(knp.equal(knp.greater_equal(p, threshold), knp.greater_equal(targets, 0.5)), p.dtype)


def binary_hinge_loss(predictions, targets, delta: float = 1.0, log_odds: bool = True):
    """max(0, delta - t * p) with targets in {0, 1} mapped to {-1, 1}."""
    p = knp.asarray(predictions)
    if not log_odds:
        p = knp.log(p / (1 - p))
    t = knp.subtract(knp.multiply(_float(targets, p), 2), 1)
    return knp.maximum(knp.subtract(delta, knp.multiply(p, t)), 0)


__all__ = ["aggregate", "binary_accuracy", "binary_crossentropy", "binary_hinge_loss", "categorical_accuracy",
           "categorical_crossentropy", "squared_error"]
