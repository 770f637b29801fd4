"""kd.export.torch_op and torch_module against PyTorch's own ops: values and gradients, odd
shapes, strided inputs, empty batches, opcheck, gradcheck, torch.compile without graph breaks,
and bad inputs giving clear errors."""

from __future__ import annotations

import shutil
import uuid

import numpy as np
import pytest
from test_export_ops import bias_gelu, embedding, layer_norm_gelu, several_outputs, softmax_xent

import kerneldsl as kd

torch = pytest.importorskip("torch")
F = torch.nn.functional


def unique(name: str) -> str:
    """Custom ops cannot be unregistered: a fresh namespace per test process."""
    return f"kdtest_{uuid.uuid4().hex[:8]}::{name}"


def ln_gelu_ref(x, w, b):
    return F.gelu(F.layer_norm(x, (x.shape[-1],), w, b, eps=1e-5))


@pytest.fixture(scope="module")
def ln_op():
    ins, Y = layer_norm_gelu("float32")
    return kd.export.torch_op(list(ins), [Y], name=unique("layer_norm_gelu"))


@pytest.fixture(scope="module")
def ln_op64():
    ins, Y = layer_norm_gelu("float64")
    return kd.export.torch_op(list(ins), [Y], name=unique("layer_norm_gelu64"))


def grads(fn, args, dy):
    args = [a.detach().clone().requires_grad_(a.dtype.is_floating_point) for a in args]
    y = fn(*args)
    return y, torch.autograd.grad(y, [a for a in args if a.requires_grad], dy)


@pytest.mark.parametrize("shape", [(1, 1), (7, 33), (64, 5)])
def test_layer_norm_gelu_values_and_gradients_match_torch(ln_op, shape):
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(shape, generator=g)
    w, b = torch.randn(shape[1], generator=g), torch.randn(shape[1], generator=g)
    dy = torch.randn(shape, generator=g)
    y, got = grads(ln_op, (x, w, b), dy)
    y_ref, want = grads(ln_gelu_ref, (x, w, b), dy)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    for a, r in zip(got, want):
        torch.testing.assert_close(a, r, rtol=1e-4, atol=1e-4)


def test_strided_inputs_are_read_in_place(ln_op):
    g = torch.Generator().manual_seed(3)
    base = torch.randn(40, 18, generator=g)
    w = torch.randn(40, generator=g)
    cases = [base.t(),  # transposed
             base[::2, 1:16:3],  # sliced with steps
             torch.randn(1, 18, generator=g).expand(6, 18)]  # a zero stride
    for x in cases:
        ww, bb = w[: x.shape[1]], torch.linspace(-1, 1, 2 * x.shape[1])[::2]  # strided W and B too
        torch.testing.assert_close(ln_op(x, ww, bb), ln_gelu_ref(x, ww, bb), rtol=1e-5, atol=1e-5)
    # the gradient of a strided cotangent (sum's expand) and of strided inputs
    x = base.t().requires_grad_()  # (18, 40)
    ln_op(x, w, w.flip(0)).sum().backward()
    xr = base.t().clone().requires_grad_()
    ln_gelu_ref(xr, w, w.flip(0)).sum().backward()
    torch.testing.assert_close(x.grad, xr.grad, rtol=1e-4, atol=1e-4)


def test_an_empty_batch_gives_empty_outputs_and_gradients(ln_op):
    x = torch.zeros(0, 9, requires_grad=True)
    w, b = torch.ones(9, requires_grad=True), torch.zeros(9, requires_grad=True)
    y = ln_op(x, w, b)
    assert y.shape == (0, 9)
    y.sum().backward()
    assert x.grad.shape == (0, 9) and torch.equal(w.grad, torch.zeros(9))


def test_opcheck_and_gradcheck_pass(ln_op, ln_op64):
    g = torch.Generator().manual_seed(4)
    x, w, b = (torch.randn(s, generator=g) for s in ((5, 8), (8,), (8,)))
    torch.library.opcheck(ln_op, (x, w, b))
    x64, w64, b64 = (t.double().requires_grad_() for t in (x, w, b))
    assert torch.autograd.gradcheck(ln_op64, (x64, w64, b64))
    torch.library.opcheck(ln_op64, (x64, w64, b64))


def test_torch_compile_fullgraph_dynamic_batch_has_no_graph_break(ln_op):
    from torch._dynamo.utils import counters

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(12, 12)
            self.w, self.b = torch.nn.Parameter(torch.ones(12)), torch.nn.Parameter(torch.zeros(12))

        def forward(self, x):
            return ln_op(self.lin(x), self.w, self.b)

    torch.manual_seed(0)
    block = Block()
    torch._dynamo.reset()
    counters.clear()
    compiled = torch.compile(block, fullgraph=True, dynamic=True, backend="aot_eager")
    for n in (3, 17, 40):
        x = torch.randn(n, 12)
        y = compiled(x)
        y.square().sum().backward()
        gw = block.w.grad.clone()
        block.zero_grad()
        block(x).square().sum().backward()
        torch.testing.assert_close(y, block(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(gw, block.w.grad, rtol=1e-4, atol=1e-4)
        block.zero_grad()
    assert not counters["graph_break"]
    assert counters["stats"]["unique_graphs"] == 1  # one graph for every batch size


def test_inductor_compiles_around_the_op():
    ins, Y = bias_gelu("float32")
    op = kd.export.torch_op(list(ins), [Y], name=unique("bias_gelu"))
    torch._dynamo.reset()
    fn = torch.compile(lambda x, b: op(x * 2, b).sum(dim=1), fullgraph=True, dynamic=True)
    x, b = torch.randn(6, 10), torch.randn(10)
    torch.testing.assert_close(fn(x, b), F.gelu(x * 2 + b).sum(dim=1), rtol=1e-5, atol=1e-5)


def test_integer_inputs_get_no_gradient():
    ins, loss = softmax_xent("float32", "int64")
    op = kd.export.torch_op(list(ins), [loss], name=unique("softmax_xent"))
    g = torch.Generator().manual_seed(5)
    logits, labels = torch.randn(13, 7, generator=g, requires_grad=True), torch.randint(0, 7, (13,), generator=g)
    out = op(logits, labels)
    ref = F.cross_entropy(logits, labels)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    (gl,) = torch.autograd.grad(out, logits)
    (gr,) = torch.autograd.grad(ref, logits)
    torch.testing.assert_close(gl, gr, rtol=1e-5, atol=1e-6)
    torch.library.opcheck(op, (logits.detach(), labels))


def test_several_outputs_and_an_integer_output():
    ins, outs = several_outputs("float32")
    op = kd.export.torch_op(list(ins), list(outs), name=unique("three"))
    x = torch.randn(4, 6, requires_grad=True)
    y, m, idx = op(x)
    torch.testing.assert_close(y, x * 2 + 1)
    torch.testing.assert_close(m, x.max(1).values)
    assert idx.dtype == torch.int64 and torch.equal(idx, x.argmax(1)) and not idx.requires_grad
    (y.sum() + 3 * m.sum()).backward()
    want = torch.full((4, 6), 2.0)
    want[torch.arange(4), x.argmax(1)] += 3
    torch.testing.assert_close(x.grad, want)
    (gy,) = torch.autograd.grad(op(x)[0].sum(), x)  # the max's cotangent is zero
    torch.testing.assert_close(gy, torch.full((4, 6), 2.0))
    torch.library.opcheck(op, (x.detach(),))


def test_bad_inputs_give_clear_errors_never_a_crash(ln_op):
    x, w = torch.randn(3, 4), torch.ones(4)
    with pytest.raises(kd.DTypeError, match=r"input X must be torch.float32, got torch.float64.*X.to"):
        ln_op(x.double(), w, w)
    with pytest.raises(kd.ShapeError, match="size m is 4 .* W is 5"):
        ln_op(x, torch.ones(5), w)
    with pytest.raises(kd.ShapeError, match="2 dimension"):
        ln_op(torch.randn(3, 4, 2), w, w)
    with pytest.raises(ValueError, match="one device"):
        ln_op(x, w.to("meta"), w)
    with pytest.raises(NotImplementedError, match="SparseCPU"):  # the dispatcher's: no sparse kernel
        ln_op(x.to_sparse(), w, w)
    with pytest.raises(RuntimeError):  # the schema: three tensors
        ln_op(x, w)
    ins, Y = embedding("float32", "int64")
    op = kd.export.torch_op(list(ins), [Y], name=unique("embed"))
    table = torch.arange(12.0).reshape(4, 3)
    with pytest.raises(IndexError, match="out of range"):
        op(table, torch.tensor([1, 7]))
    torch.testing.assert_close(op(table, torch.tensor([3, 0])), table[[3, 0]])


def test_bad_exports_are_refused():
    ins, Y = bias_gelu("float32")
    with pytest.raises(ValueError, match="namespace::op_name"):
        kd.export.torch_op(list(ins), [Y], name="no_namespace")
    name = unique("twice")
    kd.export.torch_op(list(ins), [Y], name=name)
    with pytest.raises(ValueError, match="already registered"):
        kd.export.torch_op(list(ins), [Y], name=name)
    with pytest.raises(ValueError, match="functional"):
        kd.export.torch_op(list(ins), [ins[0]], name=unique("inplace"))


@pytest.mark.skipif(shutil.which("g++") is None, reason="the CUDA emulator needs g++")
def test_the_cuda_kernel_launches_the_cuda_library_on_the_emulator():
    """The CUDA implementation's argument packing and workspace, on CPU tensors over the
    emulator's build of the same library (a real GPU runs `make test-gpu`)."""
    from kerneldsl.export.build import emulated_library
    from kerneldsl.export.cfunction import function_source
    from kerneldsl.export.torch_custom_op import CudaKernel
    ins, Y = layer_norm_gelu("float32")
    spec = kd.export.op_spec(list(ins), [Y], "ln_cuda_emu")
    fs = function_source(spec.forward, "cuda")
    kernel = CudaKernel(spec.forward, "test::ln", library=(emulated_library(fs.text, "ln_cuda_emu"), fs))
    x, w, b = torch.randn(11, 30)[:, ::3], torch.randn(10), torch.randn(10)
    torch.testing.assert_close(kernel(x, w, b, stream=0), ln_gelu_ref(x, w, b), rtol=1e-5, atol=1e-5)
    with pytest.raises(kd.ShapeError):
        kernel(x, torch.randn(9), b, stream=0)


def test_torch_module_trains_its_parameters():
    n, k, m = kd.sizes("n k m")

    def dense_relu():
        X = kd.placeholder((n, k), name="X")
        Wt = kd.placeholder((k, m), name="W")
        b = kd.placeholder((m,), name="b")
        r = kd.reduce_axis(k, "r")
        Y = kd.compute((n, m), lambda i, j: kd.maximum(kd.sum(X[i, r] * Wt[r, j], axis=r) + b[j], 0.0), name="Y")
        return [X, Wt, b], [Y]

    torch.manual_seed(0)
    w0, b0 = torch.randn(5, 3) * 0.5, torch.zeros(3)
    with kd.settings.override(gemm=False):  # loop nests: this tests the module, not the GEMM (slow to compile)
        layer = kd.export.torch_module(dense_relu, params={"W": w0, "b": b0})
    assert [name for name, _ in layer.named_parameters()] == ["W", "b"]
    x, target = torch.randn(32, 5), torch.randn(32, 3).abs()
    torch.testing.assert_close(layer(x), torch.relu(x @ w0 + b0))
    w_ref, b_ref = w0.clone().requires_grad_(), b0.clone().requires_grad_()
    opt = torch.optim.SGD(layer.parameters(), lr=0.2)
    opt_ref = torch.optim.SGD([w_ref, b_ref], lr=0.2)
    losses, ref_losses = [], []
    for _ in range(15):  # the same steps as the same layer in torch ops
        for o, out, record in ((opt, lambda: layer(x), losses), (opt_ref, lambda: torch.relu(x @ w_ref + b_ref),
                                                                  ref_losses)):
            o.zero_grad()
            loss = ((out() - target) ** 2).mean()
            loss.backward()
            o.step()
            record.append(loss.item())
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-4)
    assert losses[-1] < losses[0]
    assert set(layer.state_dict()) == {"W", "b"}
    with pytest.raises(TypeError, match="forward takes 1 input"):
        layer(x, x)
    with pytest.raises(ValueError, match="not among the inputs"):
        kd.export.torch_module(dense_relu, params={"V": w0})
