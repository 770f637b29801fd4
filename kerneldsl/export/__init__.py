"""Export: one op written in the DSL, with the backward kd.grad derives, as a PyTorch custom op,
a JAX FFI call, or a standalone C/CUDA library.

    op = kd.export.torch_op([X, W, B], [Y], name="mylib::layer_norm")   # torch.library custom op
    jop = kd.export.jax_op([X, W, B], [Y])                               # jax.ffi call + custom_vjp
    lib = kd.export.c_library([X, W, B], [Y], "out/layer_norm", target="c")   # .c/.cu, .h, .json
    layer = kd.export.torch_module([X, W, B], [Y], params={W: w0, B: b0})   # an nn.Module

torch and jax are imported when an op is made, never by `import kerneldsl`.

    spec.py        the forward, the derived backward, and what the backward reads (saved)
    cfunction.py   one function as a C/CUDA translation unit with documented entry points
    clib.py        the library on disk: sources, header, metadata JSON, build lines
    build.py       those sources compiled through the artifact cache (for JAX and torch's CUDA path)
    torch_custom_op.py  torch.library registration: CPU/CUDA kernels, fake kernel, autograd
    torch_nn.py    an nn.Module over an exported op
    jax_ffi.py     XLA FFI handlers (C++), custom_vjp, vmap
"""

from __future__ import annotations


def c_library(inputs, outputs, path, target: str = "c", backward: bool = True):
    """The op as a standalone C or CUDA library (sources, header, metadata JSON, build lines):
    see kerneldsl/export/clib.py."""
    from .clib import c_library as make
    return make(inputs, outputs, path, target=target, backward=backward)


def op_spec(inputs, outputs, name: str | None = None, backward: bool = True):
    """The forward, the derived backward and what it saves: see kerneldsl/export/spec.py."""
    from .spec import op_spec as make
    return make(inputs, outputs, name, backward)


def torch_op(inputs, outputs, name: str, **kwargs):
    """A torch.library custom op of the graph: see kerneldsl/export/torch_custom_op.py."""
    from .torch_custom_op import torch_op as make
    return make(inputs, outputs, name, **kwargs)


def torch_module(inputs, outputs=None, *, params, name: str | None = None, **kwargs):
    """An nn.Module whose parameters are `params` and whose forward is the exported op: see
    kerneldsl/export/torch_nn.py."""
    from .torch_nn import torch_module as make
    return make(inputs, outputs, params=params, name=name, **kwargs)


def jax_op(inputs, outputs, name: str | None = None, **kwargs):
    """A jax.ffi call of the graph with a custom_vjp: see kerneldsl/export/jax_ffi.py."""
    from .jax_ffi import jax_op as make
    return make(inputs, outputs, name, **kwargs)


__all__ = ["c_library", "jax_op", "op_spec", "torch_module", "torch_op"]
