"""The GPU path of the fused binary conv, run on the CPU: each layer's forward and
backward as compiled graphs (``xnor/compiled.py``), forced with ``bitops.torch_ops()``.

* it computes what plain autograd computes (``simulated``) and what the C++ path
  computes: outputs, input and weight gradients, for each gradient rule, stride,
  padding, bias, memory layout, and the BinOp workflow;
* the compiled graphs equal the same functions run eagerly (bits and all), and a
  failing compiler falls back to eager with one line, the same values;
* a ResNet-18 training step on this path launches at most 1.3x the kernels of the float
  step (the GPU was launch-bound with the eager operators: 0.21x float's images/s).
"""

from __future__ import annotations

import copy
from functools import partial

import pytest
import torch

from xnorbench.measure.timing import launched_ops
from xnorbench.xnor import BinOp, FusedXNOR
from xnorbench.xnor.layers.modules import XNORConv2d
from xnorbench.xnor.layers.step import train_step
from xnorbench.xnor.networks import models
from xnorbench.xnor.sign import bitops, compiled

from .helpers import close_grads, layer_grads


@pytest.fixture(autouse=True)
def _compiled(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled graphs, which every other test file turns off (``conftest.py``)."""
    monkeypatch.setenv("XNORBENCH_COMPILE", "1")


@pytest.mark.parametrize("rule,k,stride,pad,bias", [("corrected", 3, 1, 1, False),
                                                    ("paper", 3, 2, 1, True),
                                                    ("reference", 1, 2, 0, False)])
def test_compiled_conv_equals_plain_autograd(rule, k, stride, pad, bias):
    """Every rule once and every geometry once (each case is a compile of its own): the
    rule acts on the weight gradient whatever the conv's stride, padding or bias, and
    each geometry's forward and input gradient are the same under every rule."""
    torch.manual_seed(0)
    layer = XNORConv2d(8, 6, k, stride=stride, padding=pad, bias=bias, grad_rule=rule).train()
    x = torch.randn(3, 8, 9, 9)
    with bitops.torch_ops():
        out_c, gx_c, gp_c, g = layer_grads(layer, x, layer, None, seed=5)
    out_s, gx_s, gp_s, _ = layer_grads(layer, x, layer.simulated, g, seed=5)
    out_n, gx_n, gp_n, _ = layer_grads(layer, x, layer, g, seed=5)  # the C++ path
    for got in ((out_c, gx_c, gp_c), (out_n, gx_n, gp_n)):
        torch.testing.assert_close(got[0], out_s, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got[1], gx_s, rtol=1e-5, atol=1e-5)
        close_grads(got[2], gp_s)
    assert compiled.mode() == "compiled"


def test_compiled_conv_keeps_channels_last_and_bits_in_memory_order():
    torch.manual_seed(9)
    layer = XNORConv2d(16, 8, 3, padding=1).train()
    x = torch.randn(2, 16, 6, 5)
    xc = x.contiguous(memory_format=torch.channels_last)
    with bitops.torch_ops():
        out_a, gx_a, gp_a, g = layer_grads(layer, x, layer, None, seed=3)
        out_b, gx_b, gp_b, _ = layer_grads(layer, xc, layer, g, seed=3)
    assert gx_b.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out_b, out_a)
    torch.testing.assert_close(gx_b, gx_a)
    close_grads(gp_b, gp_a)
    # the bit planes are the C++ operators' bits of the same memory
    for t in (x, xc):
        _, neg, ste = bitops.sign_bits(t)
        s, wb, wsum, neg_c, ste_c = compiled.compiled_forward_operands(
            compiled.flat(t), layer.weight.detach(), "corrected", True)
        assert torch.equal(neg_c, neg) and torch.equal(ste_c, ste)
        assert torch.equal(s.as_strided(t.shape, t.stride()), bitops.sign_bits(t)[0])


def test_compiled_graphs_equal_the_same_functions_run_eagerly():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(4, 8, 7, 7, generator=g).contiguous(memory_format=torch.channels_last)
    w = torch.randn(6, 8, 3, 3, generator=g)
    args = (compiled.flat(x), w, "corrected", True)
    got, want = compiled.compiled_forward_operands(*args), compiled.forward_operands(*args)
    for i in (0, 3, 4):  # signs and bits: exactly
        assert torch.equal(got[i], want[i])
    for i in (1, 2):  # alpha: summed in another order
        torch.testing.assert_close(got[i], want[i], rtol=1e-6, atol=1e-6)
    neg, grad = want[3], torch.randn(4, 6, 7, 7, generator=g)
    got = compiled.compiled_backward_operands(neg, w, grad.view(-1), x.numel(), 4, "paper",
                                              True)
    want = compiled.backward_operands(neg, w, grad.view(-1), x.numel(), 4, "paper", True)
    torch.testing.assert_close(want[2], grad.sum(0).view(-1))
    assert torch.equal(got[0], want[0]) and torch.equal(got[0], compiled.forward_operands(
        *args)[0])  # the signs rebuilt from bits are the forward's
    for i in (1, 2):
        torch.testing.assert_close(got[i], want[i], rtol=1e-6, atol=1e-6)


def test_a_failing_compiler_falls_back_to_eager_with_one_line(monkeypatch, caplog):
    fn = compiled._Compiled(compiled.forward_operands)

    def broken(*args, **kwargs):
        def run(*a):
            raise RuntimeError("no compiler here")
        return run

    monkeypatch.setattr(torch, "compile", broken)
    x, w = torch.randn(2, 4, 5, 5), torch.randn(3, 4, 3, 3)
    args = (compiled.flat(x), w, "corrected", True)
    for _ in range(2):
        for got, want in zip(fn(*args), compiled.forward_operands(*args)):
            assert torch.equal(got, want)
    err = caplog.text  # a warning of logger xnorbench.xnor.sign.compiled
    assert err.count("torch.compile of forward_operands failed") == 1, err
    assert "no compiler here" in fn.failed
    with pytest.raises(IndexError):  # wrong inputs still fail, eagerly
        fn(compiled.flat(x), torch.randn(3), "corrected", True)


def test_compiled_path_under_bf16_autocast_matches_eager_bf16():
    torch.manual_seed(2)
    layer = XNORConv2d(8, 8, 3, padding=1).train()
    x = torch.randn(2, 8, 6, 6)
    outs = []
    for env in ("1", "0"):
        with pytest.MonkeyPatch.context() as mp, bitops.torch_ops():
            mp.setenv("XNORBENCH_COMPILE", env)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = layer(x)
            out.float().sum().backward()
            outs.append((out.detach().float(), layer.weight.grad.clone()))
            layer.zero_grad()
    assert outs[0][0].dtype == torch.float32
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(outs[0][1], outs[1][1], rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("rule", ["corrected", "reference"])
def test_binop_and_fused_give_the_same_gradients_on_the_compiled_path(rule):
    """One step each way from the same weights (BinOp hands the layer alpha * sign(W)
    and applies the rule after backward; the fused layer does both inside): the same
    loss and gradients, to float rounding. One layer: in a deep binary net a rounding
    difference flips the sign of an activation near 0 and the two drift apart, as any
    two implementations would (the C++ path and this one differ so in ResNet-18)."""
    torch.manual_seed(3)
    a = torch.nn.Sequential(XNORConv2d(8, 6, 3, stride=2, padding=1, grad_rule=rule),
                            torch.nn.Flatten(), torch.nn.Linear(6 * 4 * 4, 10)).train()
    b = copy.deepcopy(a)
    step_a, step_b = FusedXNOR(a, rule), BinOp(b, rule)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(4, 8, 8, 8, generator=g), torch.randint(0, 10, (4,), generator=g)
    with bitops.torch_ops():
        _, loss_a = train_step(a, x, y, torch.optim.SGD(a.parameters(), lr=0.0), step_a)
        _, loss_b = train_step(b, x, y, torch.optim.SGD(b.parameters(), lr=0.0), step_b)
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-5, atol=1e-6)
    close_grads({n: p.grad for n, p in a.named_parameters()},
                 {n: p.grad for n, p in b.named_parameters()})


def _step_launches(variant: str) -> int:
    torch.manual_seed(0)
    model = models.build("resnet18", binary=variant == "xnor").train()
    step = FusedXNOR(model) if variant == "xnor" else None
    # Adam over every tensor at once, as it steps on CUDA (foreach) and as the GPU
    # recipes train; per-tensor Adam (its CPU default) would add ~8 operators per tensor
    # to both sides
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, foreach=True)
    x, y = torch.randn(2, 3, 16, 16), torch.randint(0, 10, (2,))
    with bitops.torch_ops():
        return launched_ops(partial(train_step, model, x, y, opt, step))


def test_gpu_path_step_launches_at_most_1_3x_float_kernels(monkeypatch):
    counts = {v: _step_launches(v) for v in ("float", "xnor")}
    assert counts["xnor"] <= 1.3 * counts["float"], counts
    monkeypatch.setenv("XNORBENCH_COMPILE", "0")  # the eager operators: what it replaced
    eager = _step_launches("xnor")
    assert eager > 2 * counts["xnor"], (eager, counts)
