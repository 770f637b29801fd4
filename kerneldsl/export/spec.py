"""What an exported op is, before any framework sees it: its forward function, the backward
function `kd.grad` derives, and what the backward reads.

    spec = op_spec([X, W, B], [Y], "layer_norm")
    spec.forward          Signature: (X, W, B) -> (Y,)
    spec.backward         Signature: (X, W, [Y], dY) -> (dX, dW, dB); None without float inputs/outputs
    spec.saved_inputs     forward inputs the backward reads (by position): what a framework saves
    spec.saved_outputs    forward outputs the backward reads (their saved values, not a recomputation)

The backward reads a forward output through a placeholder of its own (the saved value), so a
framework keeps the output it has anyway instead of the backward recomputing it; every other
forward intermediate the backward needs is recomputed inside the backward's fused kernels,
which is what "save only what the backward reads" means here. A forward input is saved when
the backward reads it, or when it is the only tensor whose shape binds a size the backward needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import dtypes as dt
from ..errors import ShapeError
from ..ir import expr as E
from ..ir.tensor import ComputeOp, Placeholder, Tensor, is_name, map_graph, new_uid, topo_order
from ..shapes import bind_sizes, check_bindable, concrete_shape


@dataclass(frozen=True)
class Signature:
    """One exported function: placeholders in, computed tensors out (what kd.build takes)."""
    name: str  # a C identifier: the function's symbol in libraries, the op's name in frameworks
    inputs: tuple
    outputs: tuple
    output_names: tuple = ()  # what libraries call the outputs (default: the tensors' names)

    def output_name(self, k: int) -> str:
        return self.output_names[k] if self.output_names else self.outputs[k].name

    def bind(self, shapes) -> tuple[dict, list]:
        """({SizeVar: value}, the outputs' shapes) for inputs of these shapes; ShapeError naming
        the input, dimension and size that disagree, or the output that would be negative."""
        if len(shapes) != len(self.inputs):
            names = ", ".join(p.name for p in self.inputs)
            raise TypeError(f"{self.name} takes {len(self.inputs)} input(s) ({names}), got {len(shapes)}")
        stand_ins = []  # zero-stride arrays: a shape and a dtype, no memory
        for p, s in zip(self.inputs, shapes):
            s = tuple(int(d) for d in s)
            if any(d < 0 for d in s):
                raise ShapeError(f"input {p.name} has a negative dimension: {s}")
            stand_ins.append(np.broadcast_to(np.zeros((), p.dtype), s))
        sizes = bind_sizes(self.inputs, stand_ins)
        return sizes, [concrete_shape(t, sizes) for t in self.outputs]


@dataclass(frozen=True)
class OpSpec:
    name: str
    forward: Signature
    backward: Signature | None
    grad_inputs: tuple  # positions of the forward inputs with a gradient: the backward's outputs
    grad_outputs: tuple  # positions of the forward outputs taking a cotangent: the backward's last inputs
    saved_inputs: tuple  # positions of the forward inputs the backward reads (its first inputs)
    saved_outputs: tuple  # positions of the forward outputs the backward reads (after them)

    @property
    def inputs(self) -> tuple:
        return self.forward.inputs

    @property
    def outputs(self) -> tuple:
        return self.forward.outputs


def check_name(name, what: str = "op") -> str:
    if not is_name(name):
        raise ValueError(f"{what} name {name!r} is not an identifier (ASCII letters, digits and _, not starting "
                         f"with a digit): it names generated C symbols")
    return name


def op_spec(inputs, outputs, name: str | None = None, backward: bool = True) -> OpSpec:
    """The spec of an op exported from the placeholders `inputs` to the computed `outputs`."""
    inputs, outputs = _checked(inputs, outputs)
    name = check_name(name if name is not None else outputs[0].name)
    forward = Signature(name, inputs, outputs)
    grad_in = tuple(k for k, p in enumerate(inputs) if p.dtype in dt.FLOATS)
    grad_out = tuple(j for j, y in enumerate(outputs) if y.dtype in dt.FLOATS)
    if not backward or not grad_in or not grad_out:
        return OpSpec(name, forward, None, (), (), (), ())
    dys = tuple(Placeholder(f"d{outputs[j].name}", outputs[j].shape, outputs[j].dtype, new_uid()) for j in grad_out)
    from ..autodiff import grad
    grads = grad([outputs[j] for j in grad_out], [inputs[k] for k in grad_in], dy=list(dys),
                 disconnected_inputs="ignore")  # an input some outputs ignore: a zero gradient
    # the backward reads each forward output it needs from a placeholder: the saved value
    saved_ph = {y: Placeholder(y.name, y.shape, y.dtype, new_uid()) for y in outputs}
    grads, _ = map_graph(grads, replaced=saved_ph)
    grads = _distinct_computes(grads, [inputs[k] for k in grad_in])
    reads = {t for t in topo_order(grads) if isinstance(t, Placeholder)}
    saved_in = [k for k, p in enumerate(inputs) if p in reads]
    saved_out = [j for j, y in enumerate(outputs) if saved_ph[y] in reads]
    saved_in = _bind_all_sizes(inputs, saved_in, [saved_ph[outputs[j]] for j in saved_out], dys, grads)
    bwd_inputs = tuple(inputs[k] for k in saved_in) + tuple(saved_ph[outputs[j]] for j in saved_out) + dys
    # the gradients keep their tensors (dX may be a shared adjoint Y_adj that dW also sums), but
    # libraries call them after their inputs: dX, dW
    names = tuple(f"d{inputs[k].name}" for k in grad_in)
    backward_sig = Signature(f"{name}_backward", bwd_inputs, tuple(grads), names)
    return OpSpec(name, forward, backward_sig, grad_in, grad_out, tuple(saved_in), tuple(saved_out))


def _checked(inputs, outputs) -> tuple[tuple, tuple]:
    inputs = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
    outputs = (outputs,) if isinstance(outputs, Tensor) else tuple(outputs)
    for t in inputs:
        if not isinstance(t, Placeholder):
            raise TypeError(f"export: inputs must be placeholders (kd.placeholder), got {t!r}")
    for t in outputs:
        if isinstance(t, Placeholder):
            raise ValueError(f"export: {t.name} is an input and cannot also be an output: exported ops are "
                             f"functional (their outputs are new tensors); for an in-place update, assign "
                             f"the result yourself (x.copy_(op(x)) in PyTorch, x = op(x) in JAX)")
        if not isinstance(t, ComputeOp):
            raise TypeError(f"export: outputs must be computed tensors (kd.compute), got {t!r}")
    if not outputs:
        raise ValueError("export: give at least one output")
    if len(set(inputs)) != len(inputs) or len(set(outputs)) != len(outputs):
        raise ValueError("export: a tensor is listed twice among the inputs or the outputs")
    check_bindable(inputs, [t.shape for t in outputs])
    missing = [p.name for t in topo_order(outputs) if isinstance(t, Placeholder) and t not in inputs for p in [t]]
    if missing:
        raise ValueError(f"export: the outputs read placeholder(s) {', '.join(missing)}, which are not among the "
                         f"inputs; add them to the inputs")
    return inputs, outputs


def _distinct_computes(grads, wrt) -> list:
    """Each gradient a compute op of its own: a gradient that is a placeholder (dX = dY) or the
    same tensor as another's becomes a copy, since a build's outputs are distinct computes."""
    out, seen = [], set()
    for g, x in zip(grads, wrt):
        if isinstance(g, Placeholder) or g in seen:
            axes = tuple(E.index_var(f"i{k}", d) for k, d in enumerate(g.shape))
            g = ComputeOp(f"d{x.name}", g.shape, g.dtype, axes, g[axes] if axes else g[()], new_uid())
        seen.add(g)
        out.append(g)
    return out


def _bind_all_sizes(inputs, saved_in: list, saved_outs: list, dys, grads) -> list:
    """Add forward inputs to the saved ones until every size the backward uses is a whole
    dimension of one of its inputs (e.g. Y = X[:n-2]: dX needs n, which only X's shape gives)."""
    saved_in = list(saved_in)

    def bare():
        tensors = [inputs[k] for k in saved_in] + list(saved_outs) + list(dys)
        return {d for t in tensors for d in t.shape if isinstance(d, E.SizeVar)}

    used = set()
    for t in [inputs[k] for k in saved_in] + list(saved_outs) + list(dys) + list(grads):
        for d in t.shape:
            used |= E.size_vars(d)
    for s in sorted(used - bare(), key=lambda v: v.name):
        if s in bare():
            continue
        k = next(k for k, p in enumerate(inputs) if s in p.shape)
        saved_in.append(k)
    return sorted(saved_in)


__all__ = ["OpSpec", "Signature", "check_name", "op_spec"]
