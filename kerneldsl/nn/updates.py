"""Update rules, as Lasagne's (`lasagne.updates`): plain functions from (loss or gradients,
parameters, hyperparameters) to an ordered dict {shared variable: its new value}, for
`kd.function(..., updates=...)`. The state they need (velocities, moments, a step counter) is
new shared variables, zero at first.

    updates = nesterov_momentum(loss, params, learning_rate=0.01, momentum=0.9)
    train = kd.function([x, y], loss, updates=updates)

A hyperparameter may be a Python number or a shared scalar (changed between calls with
`set_value`, as nolearn's learning-rate schedules do).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from .. import numpy as knp
from ..frontend import SharedVariable, shared
from ..ir import expr as E


def get_or_compute_grads(loss_or_grads, params) -> list:
    """`loss_or_grads` as one gradient per parameter: a list is taken as the gradients; a scalar
    loss is differentiated (kd.grad)."""
    params = list(params)
    for p in params:
        if not isinstance(p, SharedVariable):
            raise TypeError(f"updates: parameter {getattr(p, 'name', p)!r} is not a shared variable (kd.shared); "
                            f"only shared variables can be updated")
    if isinstance(loss_or_grads, (list, tuple)):
        if len(loss_or_grads) != len(params):
            raise ValueError(f"updates: {len(loss_or_grads)} gradients for {len(params)} parameters")
        return list(loss_or_grads)
    loss = knp.asarray(loss_or_grads)
    if loss.ndim != 0:
        raise ValueError(f"updates: the loss must be a scalar (aggregate it), got {loss.ndim} dimension(s)")
    from ..autodiff import grad
    return grad(loss, params)


def _zeros_like(p: SharedVariable, name: str) -> SharedVariable:
    v = p.get_value(borrow=True)
    fixed = all(isinstance(d, E.Const) for d in p.shape)
    return shared(np.zeros(v.shape, dtype=v.dtype), name=f"{p.name}_{name}", fixed_shape=fixed)


def _cast(value, p: SharedVariable):
    """A new value in the parameter's dtype (float64 hyperparameters must not widen it)."""
    value = knp.asarray(value)
    return value if value.dtype == p.dtype else knp.astype(value, p.dtype)


def sgd(loss_or_grads, params, learning_rate=1.0) -> OrderedDict:
    """param - learning_rate * grad."""
    grads = get_or_compute_grads(loss_or_grads, params)
    return OrderedDict((p, _cast(p - learning_rate * g, p)) for p, g in zip(params, grads))


def apply_momentum(updates, params=None, momentum=0.9) -> OrderedDict:
    """Classical momentum on top of `updates`: x = momentum * velocity + updates[param];
    velocity <- x - param; param <- x."""
    params = list(updates) if params is None else list(params)
    updates = OrderedDict(updates)
    for p in params:
        velocity = _zeros_like(p, "velocity")
        x = momentum * velocity + updates[p]
        updates[velocity] = _cast(x - p, p)
        updates[p] = _cast(x, p)
    return updates


def momentum(loss_or_grads, params, learning_rate, momentum=0.9) -> OrderedDict:
    """SGD with classical momentum: velocity <- momentum * velocity - learning_rate * grad;
    param <- param + velocity."""
    return apply_momentum(sgd(loss_or_grads, params, learning_rate), params, momentum)


def apply_nesterov_momentum(updates, params=None, momentum=0.9) -> OrderedDict:
    """Nesterov momentum on top of `updates` (Lasagne's formulation):
    x = momentum * velocity + updates[param] - param; velocity <- x;
    param <- momentum * x + updates[param]."""
    params = list(updates) if params is None else list(params)
    updates = OrderedDict(updates)
    for p in params:
        velocity = _zeros_like(p, "velocity")
        x = momentum * velocity + updates[p] - p
        updates[velocity] = _cast(x, p)
        updates[p] = _cast(momentum * x + updates[p], p)
    return updates


def nesterov_momentum(loss_or_grads, params, learning_rate, momentum=0.9) -> OrderedDict:
    """SGD with Nesterov momentum: velocity <- momentum * velocity - learning_rate * grad;
    param <- param + momentum * velocity - learning_rate * grad."""
    return apply_nesterov_momentum(sgd(loss_or_grads, params, learning_rate), params, momentum)


def adagrad(loss_or_grads, params, learning_rate=1.0, epsilon=1e-6) -> OrderedDict:
    """accu <- accu + grad ** 2; param <- param - learning_rate * grad / sqrt(accu + epsilon)."""
    grads = get_or_compute_grads(loss_or_grads, params)
    updates = OrderedDict()
    for p, g in zip(params, grads):
        accu = _zeros_like(p, "accu")
        new = accu + g * g
        updates[accu] = _cast(new, p)
        updates[p] = _cast(p - learning_rate * g / knp.sqrt(new + epsilon), p)
    return updates


def rmsprop(loss_or_grads, params, learning_rate=1.0, rho=0.9, epsilon=1e-6) -> OrderedDict:
    """accu <- rho * accu + (1 - rho) * grad ** 2; param <- param - learning_rate * grad /
    sqrt(accu + epsilon)."""
    grads = get_or_compute_grads(loss_or_grads, params)
    updates = OrderedDict()
    for p, g in zip(params, grads):
        accu = _zeros_like(p, "accu")
        new = rho * accu + (1 - rho) * g * g
        updates[accu] = _cast(new, p)
        updates[p] = _cast(p - learning_rate * g / knp.sqrt(new + epsilon), p)
    return updates


def adadelta(loss_or_grads, params, learning_rate=1.0, rho=0.95, epsilon=1e-6) -> OrderedDict:
    """Zeiler's Adadelta: accu <- rho accu + (1 - rho) g^2; step = g sqrt(delta_accu + eps) /
    sqrt(accu + eps); delta_accu <- rho delta_accu + (1 - rho) step^2; param <- param - lr step."""
    grads = get_or_compute_grads(loss_or_grads, params)
    updates = OrderedDict()
    for p, g in zip(params, grads):
        accu, delta = _zeros_like(p, "accu"), _zeros_like(p, "delta_accu")
        new = rho * accu + (1 - rho) * g * g
        step = g * knp.sqrt(delta + epsilon) / knp.sqrt(new + epsilon)
        updates[accu] = _cast(new, p)
        updates[p] = _cast(p - learning_rate * step, p)
        updates[delta] = _cast(rho * delta + (1 - rho) * step * step, p)
    return updates


def adam(loss_or_grads, params, learning_rate=0.001, beta1=0.9, beta2=0.999, epsilon=1e-8) -> OrderedDict:
    """Kingma and Ba's Adam, as Lasagne's: t <- t + 1; a = lr sqrt(1 - beta2^t) / (1 - beta1^t);
    m <- beta1 m + (1 - beta1) g; v <- beta2 v + (1 - beta2) g^2; param <- param - a m / (sqrt(v) + eps)."""
    grads = get_or_compute_grads(loss_or_grads, params)
    dtype = params[0].dtype if params else "float32"
    t_prev = shared(np.zeros((), dtype=dtype), name="adam_t")
    t = t_prev + 1
    a_t = learning_rate * knp.sqrt(1 - knp.power(beta2, t)) / (1 - knp.power(beta1, t))
    updates = OrderedDict()
    for p, g in zip(params, grads):
        m_prev, v_prev = _zeros_like(p, "m"), _zeros_like(p, "v")
        m = beta1 * m_prev + (1 - beta1) * g
        v = beta2 * v_prev + (1 - beta2) * g * g
        updates[m_prev] = _cast(m, p)
        updates[v_prev] = _cast(v, p)
        updates[p] = _cast(p - a_t * m / (knp.sqrt(v) + epsilon), p)
    updates[t_prev] = _cast(t, t_prev)
    return updates


def adamax(loss_or_grads, params, learning_rate=0.002, beta1=0.9, beta2=0.999, epsilon=1e-8) -> OrderedDict:
    """Adam with the infinity norm: u <- max(beta2 u, |g|); param <- param - a m / (u + eps)."""
    grads = get_or_compute_grads(loss_or_grads, params)
    dtype = params[0].dtype if params else "float32"
    t_prev = shared(np.zeros((), dtype=dtype), name="adamax_t")
    t = t_prev + 1
    a_t = learning_rate / (1 - knp.power(beta1, t))
    updates = OrderedDict()
    for p, g in zip(params, grads):
        m_prev, u_prev = _zeros_like(p, "m"), _zeros_like(p, "u")
        m = beta1 * m_prev + (1 - beta1) * g
        u = knp.maximum(beta2 * u_prev, knp.abs(g))
        updates[m_prev] = _cast(m, p)
        updates[u_prev] = _cast(u, p)
        updates[p] = _cast(p - a_t * m / (u + epsilon), p)
    updates[t_prev] = _cast(t, t_prev)
    return updates


def norm_constraint(tensor_var, max_norm: float, norm_axes=None, epsilon: float = 1e-7):
    """Rescale so that the L2 norm over `norm_axes` (default: all but the first for a matrix's
    columns, as Lasagne: axis 0 of a matrix, axes 1.. of a convolution's filters) is at most max_norm."""
    x = knp.asarray(tensor_var)
    if norm_axes is None:
        if x.ndim == 2:
            norm_axes = (0,)
        elif x.ndim in (3, 4, 5):
            norm_axes = tuple(range(1, x.ndim))
        else:
            raise ValueError(f"norm_constraint: give norm_axes for {x.ndim} dimensions")
    norms = knp.sqrt(knp.sum(x * x, axis=norm_axes, keepdims=True))
    target = knp.clip(norms, 0, max_norm)
    return x * (target / (norms + epsilon))


def total_norm_constraint(tensor_vars, max_norm: float, epsilon: float = 1e-7, return_norm: bool = False):
    """Rescale a list of gradients together so that their joint L2 norm is at most max_norm."""
    tensor_vars = [knp.asarray(t) for t in tensor_vars]
    norm = knp.sqrt(sum(knp.sum(t * t) for t in tensor_vars))
    target = knp.clip(norm, 0, max_norm)
    mult = target / (norm + epsilon)
    scaled = [t * mult for t in tensor_vars]
    return (scaled, norm) if return_norm else scaled


__all__ = ["adadelta", "adagrad", "adam", "adamax", "apply_momentum", "apply_nesterov_momentum",
           "get_or_compute_grads", "momentum", "nesterov_momentum", "norm_constraint", "rmsprop", "sgd",
           "total_norm_constraint"]
