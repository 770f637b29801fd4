"""`kd.export.torch_module`: a layer with parameters as an nn.Module over an exported op.

    n, k, m = kd.sizes("n k m")
    X = kd.placeholder((n, k), name="X"); Wt = kd.placeholder((k, m), name="W"); b = kd.placeholder((m,), name="b")
    r = kd.reduce_axis(k, "r")
    Y = kd.compute((n, m), lambda i, j: kd.maximum(kd.sum(X[i, r] * Wt[r, j], axis=r) + b[j], 0.0), name="Y")
    dense = kd.export.torch_module([X, Wt, b], [Y], params={Wt: w0, b: b0})
    y = dense(x)                     # forward(X): W and b are the module's Parameters
    list(dense.parameters())         # [W, b]: an optimizer trains them through kd.grad's kernels

The graph may also come from a function that builds it (a layer of kerneldsl.nn, or any
builder): `torch_module(build, params=...)` calls `build()` for (inputs, outputs). Parameters
keep their placeholders' names (`dense.W`); the remaining inputs are forward's arguments, in order.
"""

from __future__ import annotations

import functools
import itertools

from .. import dtypes as dt
from ..ir.tensor import Placeholder
from .torch_custom_op import import_torch, torch_dtype, torch_op

_count = itertools.count()


@functools.cache
def _module_class():
    torch = import_torch()

    class ExportedModule(torch.nn.Module):
        """An nn.Module whose forward is a kerneldsl export (`self.op`); `kerneldsl` describes it."""

        def __init__(self, op, order, params: dict):
            super().__init__()
            self.op, self._order = op, tuple(order)  # per input: ("param", name) or ("arg", position)
            self._nargs = sum(1 for kind, _ in self._order if kind == "arg")
            for name, value in params.items():
                try:
                    self.register_parameter(name, torch.nn.Parameter(value))
                except KeyError as e:
                    raise ValueError(f"torch_module: parameter {name!r} clashes with an nn.Module attribute; "
                                     f"rename its placeholder") from e

        @property
        def kerneldsl(self):
            return self.op.kerneldsl

        def forward(self, *args):
            if len(args) != self._nargs:
                names = [p.name for p, (kind, _) in zip(self.kerneldsl.spec.inputs, self._order) if kind == "arg"]
                raise TypeError(f"{self.kerneldsl.qualname}: forward takes {self._nargs} input(s) "
                                f"({', '.join(names)}), got {len(args)}")
            full = [getattr(self, key) if kind == "param" else args[key] for kind, key in self._order]
            return self.op(*full)

        def extra_repr(self) -> str:
            spec = self.kerneldsl.spec
            return f"{self.kerneldsl.qualname}: ({', '.join(p.name for p in spec.inputs)}) -> " \
                   f"({', '.join(t.name for t in spec.outputs)})"

    return ExportedModule


def torch_module(inputs, outputs=None, *, params: dict, name: str | None = None, backward: bool = True):
    """An nn.Module computing `outputs` from `inputs`, the placeholders in `params` (placeholder or
    its name -> initial value, a numpy array or tensor) held as its Parameters. `inputs` may be a
    function returning (inputs, outputs). `name`: the custom op's ("ns::op"; default a fresh
    "kerneldsl_module::<output>_<n>")."""
    torch = import_torch()
    if outputs is None:
        if not callable(inputs):
            raise TypeError("torch_module: give (inputs, outputs), or a function returning them")
        built = inputs()
        if not (isinstance(built, tuple) and len(built) == 2):
            raise TypeError("torch_module: the builder must return (inputs, outputs)")
        inputs, outputs = built
    inputs = [inputs] if isinstance(inputs, Placeholder) else list(inputs)
    outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    by_name = {p.name: p for p in inputs}
    chosen = {}
    for key, value in dict(params).items():
        p = key if isinstance(key, Placeholder) else by_name.get(key)
        if p is None or p not in inputs:
            raise ValueError(f"torch_module: parameter {getattr(key, 'name', key)!r} is not among the inputs "
                             f"({', '.join(by_name)})")
        if p.dtype not in dt.FLOATS:
            raise TypeError(f"torch_module: parameter {p.name} is {p.dtype}; parameters are float tensors "
                            f"(pass integer inputs to forward)")
        t = torch.as_tensor(value, dtype=torch_dtype(p.dtype)).detach().clone()
        if t.dim() != p.ndim:
            raise ValueError(f"torch_module: the initial value of {p.name} has shape {tuple(t.shape)}, but "
                             f"{p.name} has {p.ndim} dimension(s) {p.shape}")
        chosen[p] = t
    if not chosen:
        raise ValueError("torch_module: give at least one parameter (else use kd.export.torch_op)")
    qualname = name or f"kerneldsl_module::{outputs[0].name}_{next(_count)}"
    op = torch_op(inputs, outputs, qualname, backward=backward)
    order, arg = [], 0
    for p in inputs:
        if p in chosen:
            order.append(("param", p.name))
        else:
            order.append(("arg", arg))
            arg += 1
    return _module_class()(op, order, {p.name: t for p, t in chosen.items()})


__all__ = ["torch_module"]
