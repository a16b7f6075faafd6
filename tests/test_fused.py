"""The fused XNOR training path: same math as plain autograd, identical to BinOp, lighter.

* the fused layers' outputs and gradients equal the plain-autograd composition
  (``simulated``) to float rounding, for every gradient rule, stride, padding, dropout;
* the fused path and the port's BinOp workflow give bit-identical gradients and
  bit-identical training rows for a fixed seed;
* the C++ operators equal their torch fallbacks, on the native and the portable build;
* a training step keeps bits, not floats, for backward, and dispatches at most 1.3x the
  operators of the float step.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest
import torch

from tests.conftest import kernels_of
from xnorbench.data.datasets import load_dataset
from xnorbench.measure.saved import saved_bytes_by_unit
from xnorbench.measure.timing import dispatched_ops
from xnorbench.training.loop import TrainingJob, train
from xnorbench.training.recipes import Recipe
from xnorbench.xnor import GRAD_RULES, BinOp, FusedXNOR, binary_layers
from xnorbench.xnor.kernels import train_ops
from xnorbench.xnor.layers.modules import XNORConv2d, XNORLinear
from xnorbench.xnor.layers.step import train_step
from xnorbench.xnor.networks import models
from xnorbench.xnor.sign import bitops
from xnorbench.xnor.sign.rules import filter_alpha, scaled_sign_grad, sign

from .helpers import close_grads, layer_grads


@pytest.mark.parametrize("rule", GRAD_RULES)
@pytest.mark.parametrize("k,stride,pad,dropout", [(3, 1, 1, 0.0), (3, 2, 1, 0.0),
                                                  (1, 1, 0, 0.0), (5, 2, 2, 0.0),
                                                  (3, 1, 1, 0.5)])
def test_fused_conv_equals_plain_autograd(rule, k, stride, pad, dropout):
    torch.manual_seed(0)
    layer = XNORConv2d(6, 5, k, stride=stride, padding=pad, bias=True, dropout=dropout,
                       grad_rule=rule).train()
    x = torch.randn(3, 6, 9, 9)
    out_f, gx_f, gp_f, g = layer_grads(layer, x, layer, None, seed=5)
    out_s, gx_s, gp_s, _ = layer_grads(layer, x, layer.simulated, g, seed=5)
    torch.testing.assert_close(out_f, out_s, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx_f, gx_s, rtol=1e-5, atol=1e-5)
    close_grads(gp_f, gp_s)


@pytest.mark.parametrize("rule", GRAD_RULES)
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_fused_linear_equals_plain_autograd(rule, dropout):
    torch.manual_seed(1)
    layer = XNORLinear(20, 7, dropout=dropout, grad_rule=rule).train()
    x = torch.randn(5, 20)
    out_f, gx_f, gp_f, g = layer_grads(layer, x, layer, None, seed=2)
    out_s, gx_s, gp_s, _ = layer_grads(layer, x, layer.simulated, g, seed=2)
    torch.testing.assert_close(out_f, out_s, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx_f, gx_s, rtol=1e-5, atol=1e-5)
    close_grads(gp_f, gp_s)


def test_fused_conv_channels_last_equals_contiguous():
    torch.manual_seed(2)
    layer = XNORConv2d(8, 6, 3, padding=1).train()
    x = torch.randn(2, 8, 7, 7)
    out_a, gx_a, gp_a, g = layer_grads(layer, x, layer, None, seed=0)
    xc = x.contiguous(memory_format=torch.channels_last)
    out_b, gx_b, gp_b, _ = layer_grads(layer, xc, layer, g, seed=0)
    torch.testing.assert_close(out_b, out_a, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx_b, gx_a, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gp_b["weight"], gp_a["weight"], rtol=1e-4, atol=1e-5)


def test_fused_conv_under_bf16_autocast_trains():
    torch.manual_seed(3)
    layer = XNORConv2d(8, 6, 3, padding=1, bias=True).train()
    x = torch.randn(2, 8, 7, 7, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    out.float().sum().backward()
    assert out.dtype == torch.bfloat16
    assert layer.weight.grad.dtype == torch.float32 and x.grad.dtype == torch.float32
    ref = XNORConv2d(8, 6, 3, padding=1, bias=True).train()
    ref.load_state_dict(layer.state_dict())
    ref(x.detach()).sum().backward()
    torch.testing.assert_close(layer.weight.grad, ref.weight.grad, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("name,batch", [("lenet5", 8), ("nin", 4), ("resnet18", 4)])
def test_fused_and_binop_paths_give_identical_gradients(name, batch):
    """Same seed, same data: every gradient and every weight equal, bit for bit."""
    torch.manual_seed(0)
    a = models.build(name, binary=True).train()
    b = copy.deepcopy(a)
    opt_a = torch.optim.SGD(a.parameters(), lr=0.05, momentum=0.9)
    opt_b = torch.optim.SGD(b.parameters(), lr=0.05, momentum=0.9)
    step_a, step_b = BinOp(a), FusedXNOR(b)
    g = torch.Generator().manual_seed(1)
    for step in range(2):
        x = torch.randn(batch, *models.INPUT_SHAPE[name], generator=g)
        y = torch.randint(0, 10, (batch,), generator=g)
        torch.manual_seed(step)  # dropout draws alike
        _, loss_a = train_step(a, x, y, opt_a, step_a)
        torch.manual_seed(step)
        _, loss_b = train_step(b, x, y, opt_b, step_b)
        assert torch.equal(loss_a, loss_b)
        for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
            assert torch.equal(pa.grad, pb.grad), n
            assert torch.equal(pa, pb), n


def test_fused_and_binop_paths_give_identical_training_rows(mnist_dir: Path, tmp_path: Path):
    bundle = load_dataset("mnist", mnist_dir)
    recipe = Recipe(epochs=2, batch_size=16, optimizer="sgd", lr=0.05, seed=3)
    rows = {}
    for path in ("binop", "fused"):
        job = TrainingJob(bundle, "lenet5", "xnor", replace(recipe, xnor_path=path),
                          recipe_key="k", packed_path=tmp_path / f"{path}.xnb")
        rows[path] = [r for r in train(job)
                      if r.metric not in ("epoch_seconds", "train_images_per_second")
                      and not r.metric.endswith("latency_ms")]
    assert [(r.metric, r.epoch) for r in rows["binop"]] == \
        [(r.metric, r.epoch) for r in rows["fused"]]
    for a, b in zip(rows["binop"], rows["fused"]):
        assert a.value == b.value, (a.metric, a.epoch, a.value, b.value)
    assert (tmp_path / "binop.xnb").read_bytes() != b""
    assert any(r.metric == "train_loss" for r in rows["fused"])


# ----------------------------------------------------------------- operators vs torch
@pytest.mark.parametrize("build", ["native", "avx2", "portable"])
def test_cpp_operators_equal_torch_fallbacks(build):
    kernels_of(build)
    ops = train_ops(build=build)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, 5, 7, 11, generator=g) * 1.5
    x[0, 0, 0, :3] = torch.tensor([0.0, -0.0, 1.0])
    s, neg, ste = ops.sign_bits(x)
    assert torch.equal(s, sign(x))
    assert torch.equal(neg, bitops.pack_bool(x < 0))
    assert torch.equal(ste, bitops.pack_bool(x.abs() < 1))
    lay = bitops.layout(x)
    assert torch.equal(ops.signs_from_bits(neg, x.numel(), None, 1.0).view_as(x), sign(x))
    keep = bitops.pack_bool(torch.rand(x.shape, generator=g) < 0.6)
    kept = bitops.unpack_bool(keep, lay).float()
    assert torch.equal(ops.signs_from_bits(neg, x.numel(), keep, 2.5).view_as(x),
                       sign(x) * kept * 2.5)
    grad = torch.randn(x.shape, generator=g)
    mask = (x.abs() < 1).float()
    assert torch.equal(ops.grad_through_bits(grad, ste, None, 1.0), grad * mask)
    assert torch.equal(ops.grad_through_bits(grad, ste, keep, 2.5), grad * mask * kept * 2.5)
    drop = torch.randn(x.shape, generator=g) * (torch.rand(x.shape, generator=g) < 0.5)
    assert torch.equal(ops.nonzero_bits(drop), bitops.pack_bool(drop != 0))

    w = torch.randn(6, 5, 3, 3, generator=g) * 0.8
    torch.testing.assert_close(ops.binarize_weight(w), filter_alpha(w) * sign(w))
    gw = torch.randn(w.shape, generator=g)
    for i, rule in enumerate(GRAD_RULES):
        torch.testing.assert_close(ops.scaled_sign_grad(w, gw, i),
                                   scaled_sign_grad(w, gw, rule), rtol=1e-5, atol=1e-6)
    a, b = w.clone(), w.clone()
    ops.center_clamp_([a])
    b.sub_(b.mean(1, keepdim=True)).clamp_(-1, 1)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("hw,k,stride,pad", [((9, 9), 3, 1, 1), ((8, 10), 3, 2, 1),
                                             ((7, 7), 5, 1, 2), ((6, 6), 5, 2, 2)])
def test_border_term_equals_plus_one_padding(hw, k, stride, pad):
    """conv(zero pad) + border term == conv(+1 pad), and its weight gradient likewise."""
    g = torch.Generator().manual_seed(5)
    s = torch.where(torch.randn(2, 4, *hw, generator=g) < 0, -1.0, 1.0)
    w = torch.randn(3, 4, k, k, generator=g, requires_grad=True)
    ref = torch.nn.functional.conv2d(torch.nn.functional.pad(s, (pad,) * 4, value=1.0), w,
                                     None, stride)
    grad = torch.randn(ref.shape, generator=g)
    (gw_ref,) = torch.autograd.grad(ref, w, grad)
    with torch.no_grad():
        out = torch.nn.functional.conv2d(s, w, None, stride, pad)
        bitops.border_add_(out, w, hw, (stride, stride), (pad, pad))
        gw = torch.ops.aten.convolution_backward(
            grad, s, w, None, (stride, stride), (pad, pad), (1, 1), False, (0, 0), 1,
            (False, True, False))[1]
        bitops.border_grad_add_(gw, grad, hw, (stride, stride), (pad, pad))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gw, gw_ref, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------- memory, operators
def _unit_saved(name: str, variant: str, batch: int = 8) -> dict[str, int]:
    torch.manual_seed(0)
    model = models.build(name, binary=variant != "float").train()
    units = [n for n, _ in binary_layers(models.build(name, binary=True))]
    xnor_step = {"xnor": FusedXNOR, "xnor_binop": BinOp}.get(variant)
    step = xnor_step(model) if xnor_step else None
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(batch, *models.INPUT_SHAPE[name])
    y = torch.randint(0, 10, (batch,))
    return saved_bytes_by_unit(model, lambda: train_step(model, x, y, opt, step), units)


def test_fused_xnor_keeps_bits_not_floats_for_backward():
    """A binary unit keeps its BN input (float) and 2 bits per element, nothing else big."""
    fl, xn = _unit_saved("resnet18", "float"), _unit_saved("resnet18", "xnor")
    unit = "layers.0.unit1"  # BN -> act -> conv on 64 x 32 x 32 per image
    elems = 8 * 64 * 32 * 32
    assert fl[unit] >= 2 * 4 * elems  # float: BN input + ReLU output, 4 bytes each
    assert xn[unit] <= 4 * elems + 2 * elems // 8 + 4096  # BN input + 2 bit planes (+ BN stats)
    assert sum(xn.values()) < 0.6 * sum(fl.values())
    assert xn["other"] == fl["other"]  # stem and classifier are float in both


@pytest.mark.parametrize("name", ["lenet5", "nin", "resnet18"])
def test_fused_step_dispatches_at_most_1_3x_float_operators(name):
    counts = {}
    for variant in ("float", "xnor"):
        torch.manual_seed(0)
        model = models.build(name, binary=variant == "xnor").train()
        step = FusedXNOR(model) if variant == "xnor" else None
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        x = torch.randn(2, *models.INPUT_SHAPE[name])
        y = torch.randint(0, 10, (2,))
        counts[variant] = dispatched_ops(partial(train_step, model, x, y, opt, step))
    assert counts["xnor"] <= 1.3 * counts["float"], counts


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_torch_fallback_path_equals_plain_autograd(dropout):
    """Tensors the C++ operators do not take (here float64; on a GPU, CUDA tensors) go
    through the torch expressions of ``bitops``: same values, same bit layout."""
    torch.manual_seed(6)
    layer = XNORConv2d(6, 5, 3, padding=1, bias=True, dropout=dropout).double().train()
    x = torch.randn(3, 6, 7, 7, dtype=torch.float64)
    out_f, gx_f, gp_f, g = layer_grads(layer, x, layer, None, seed=4)
    out_s, gx_s, gp_s, _ = layer_grads(layer, x, layer.simulated, g, seed=4)
    torch.testing.assert_close(out_f, out_s)
    torch.testing.assert_close(gx_f, gx_s)
    close_grads(gp_f, gp_s)
    lin = XNORLinear(12, 4, dropout=dropout).double().train()
    xl = torch.randn(5, 12, dtype=torch.float64)
    out_f, gx_f, gp_f, g = layer_grads(lin, xl, lin, None, seed=2)
    out_s, gx_s, gp_s, _ = layer_grads(lin, xl, lin.simulated, g, seed=2)
    torch.testing.assert_close(out_f, out_s)
    torch.testing.assert_close(gx_f, gx_s)
    close_grads(gp_f, gp_s)


def test_fallback_bits_match_the_cpp_bits():
    g = torch.Generator().manual_seed(8)
    x = torch.randn(2, 3, 5, 7, generator=g)
    s, neg, ste = bitops.sign_bits(x)                  # C++ (float32, CPU)
    s64, neg64, ste64 = bitops.sign_bits(x.double())  # torch expressions
    assert torch.equal(neg, neg64) and torch.equal(ste, ste64)
    assert torch.equal(s.double(), s64)
    lay = bitops.layout(x)
    assert torch.equal(bitops.signs_from_bits(neg, lay, torch.float64), s64)
    grad = torch.randn(x.shape, generator=g)
    assert torch.equal(bitops.grad_through_bits(grad.double(), ste),
                       bitops.grad_through_bits(grad, ste).double())


def test_torch_fallback_path_keeps_channels_last_bits_in_order():
    torch.manual_seed(9)
    layer = XNORConv2d(8, 6, 3, padding=1).double().train()
    x = torch.randn(2, 8, 5, 5, dtype=torch.float64)
    xc = x.contiguous(memory_format=torch.channels_last)
    out_a, gx_a, gp_a, g = layer_grads(layer, x, layer, None, seed=3)
    out_b, gx_b, gp_b, _ = layer_grads(layer, xc, layer, g, seed=3)
    torch.testing.assert_close(out_b, out_a)
    torch.testing.assert_close(gx_b, gx_a)
    close_grads(gp_b, gp_a)
    # with dropout (its mask is drawn in memory order): fused == plain autograd, both
    # channels-last
    drop = XNORConv2d(8, 6, 3, padding=1, dropout=0.5).double().train()
    out_f, gx_f, gp_f, g = layer_grads(drop, xc, drop, None, seed=5)
    out_s, gx_s, gp_s, _ = layer_grads(drop, xc, drop.simulated, g, seed=5)
    torch.testing.assert_close(out_f, out_s)
    torch.testing.assert_close(gx_f, gx_s)
    close_grads(gp_f, gp_s)
