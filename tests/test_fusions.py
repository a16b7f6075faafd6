"""Each fusion of the packed inference path equals the unfused packed path, bit for bit.

* BatchNorm + sign folded into the packing as thresholds (negative and zero BN scales
  included) == BatchNorm in float, then packing;
* the residual added in the epilogue == the conv's output + the residual;
* the output written over the residual == a fresh output;
* a layer writing its output as the next layer's packed input (bits) == the next layer
  packing that float output itself;
* the packed ResNet blocks chained in place == the unfused composition, and match the
  simulated model layer by layer.
Every build (native, avx2, portable) is checked where the CPU can run it.
"""

from __future__ import annotations

import pytest
import torch

from tests.conftest import binary_layer, kernels_of
from xnorbench.xnor import XNORConv2d
from xnorbench.xnor.inference.packed_layers import (
    PackedBlocks,
    PackedPreActBlock,
    PackedXNORConv2d,
    bn_thresholds,
    pack_model,
)
from xnorbench.xnor.kernels import load_kernels
from xnorbench.xnor.networks import models

BUILDS = ["native", "avx2", "portable"]


def _kernels(build: str):
    return kernels_of(build)


def _layer(c: int, oc: int, k: int, stride: int, seed: int) -> XNORConv2d:
    torch.manual_seed(seed)
    layer = XNORConv2d(c, oc, k, stride=stride, padding=k // 2, bias=True)
    bn = layer.bn
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data.normal_()
    bn.weight.data[:3] = torch.tensor([0.0, -0.7, 0.0])  # zero and negative scales
    bn.bias.data.normal_()
    bn.bias.data[0], bn.bias.data[2] = -0.5, 0.5
    layer.bias.data.normal_()
    return layer.eval()


def _args(layer: XNORConv2d, kern):
    from xnorbench.xnor.inference.packed_layers import _alpha_and_weight

    alpha, wb = _alpha_and_weight(layer)
    th, fl = bn_thresholds(layer.bn)
    return th, fl, kern.pack_weight(wb), alpha, layer.bias.detach()


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("c,oc,k,stride", [(70, 40, 3, 1), (64, 64, 3, 2), (130, 17, 1, 1)])
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
def test_bn_threshold_packing_equals_bn_then_pack(build, c, oc, k, stride, layout):
    kern = _kernels(build)
    layer = _layer(c, oc, k, stride, seed=c + oc)
    th, fl, wp, alpha, bias = _args(layer, kern)
    x = torch.randn(3, c, 9, 9)
    if layout == "nhwc":
        x = x.contiguous(memory_format=torch.channels_last)
    p = k // 2
    with torch.no_grad():
        plain = binary_layer(kern, wp, alpha, c, oc, k, stride, p, bias)
        ref = kern.xnor_conv2d(plain, layer.bn(x), None, False)
    got = kern.run_binary_layer(binary_layer(kern, wp, alpha, c, oc, k, stride, p, bias, th, fl),
                                x)
    assert torch.equal(got, ref)


def test_thresholds_follow_the_bn_sign_on_every_channel():
    layer = _layer(8, 4, 3, 1, seed=1)
    th, fl = bn_thresholds(layer.bn)
    x = torch.linspace(-6, 6, 2001).repeat(8, 1).T.reshape(2001, 8, 1, 1)
    with torch.no_grad():
        want = layer.bn(x) < 0
    got = torch.where(fl.bool().view(1, -1, 1, 1), x > th.view(1, -1, 1, 1),
                      x < th.view(1, -1, 1, 1))
    assert torch.equal(got, want)
    assert fl[1] == 1 and th[0] == float("inf") and th[2] == float("-inf")


@pytest.mark.parametrize("build", BUILDS)
def test_residual_in_place_and_bits_out_equal_the_unfused_path(build):
    kern = _kernels(build)
    first, second = _layer(64, 48, 3, 1, seed=3), _layer(48, 48, 3, 1, seed=4)
    th1, fl1, wp1, a1, b1 = _args(first, kern)
    th2, fl2, wp2, a2, b2 = _args(second, kern)
    x = torch.randn(2, 64, 8, 8)
    res = torch.randn(2, 48, 8, 8).contiguous(memory_format=torch.channels_last)

    one = binary_layer(kern, wp1, a1, 64, 48, 3, 1, 1, b1, th1, fl1)
    two = binary_layer(kern, wp2, a2, 48, 48, 3, 1, 1, b2, th2, fl2)
    run = kern.run_binary_layer

    mid = run(one, x)                                        # float out of layer 1
    plain = run(two, mid)
    with_res = run(two, mid, residual=res)
    assert torch.equal(with_res, plain + res)                # residual in the epilogue
    assert torch.equal(run(two, mid, residual=res, relu_residual=True),
                       plain + torch.relu(res))              # through a ReLU
    bits = run(one, x, next=two)                             # layer 1 writes layer 2's bits
    assert bits.dtype == torch.int64 and bits.shape == (2, 10, 10, 1)
    assert torch.equal(run(two, bits, packed_in=True, residual=res), with_res)
    target = res.clone()
    out = run(two, bits, packed_in=True, residual=target, inplace=True)
    assert out.data_ptr() == target.data_ptr()               # written over the residual
    assert torch.equal(out, with_res)


def test_in_place_needs_a_float_channels_last_residual():
    kern = load_kernels()
    layer = _layer(16, 8, 3, 1, seed=5)
    th, fl, wp, a, b = _args(layer, kern)
    with pytest.raises(RuntimeError, match="in place"):
        kern.run_binary_layer(binary_layer(kern, wp, a, 16, 8, 3, 1, 1, b, th, fl),
                              torch.randn(1, 16, 5, 5), residual=torch.randn(1, 8, 5, 5),
                              inplace=True)


def test_packed_resnet_blocks_equal_the_unfused_composition():
    torch.manual_seed(7)
    model = models.build("resnet18", binary=True).train()
    with torch.no_grad():
        model(torch.randn(8, 3, 32, 32))  # BN statistics away from their defaults
    packed = pack_model(model.eval())
    assert isinstance(packed.layers, PackedBlocks)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        h = packed.conv1(x)
        fused = packed.layers(h.clone())
        ref = h
        for block in packed.layers:
            assert isinstance(block, PackedPreActBlock)
            u1 = block.unit1
            mid = PackedXNORConv2d.forward(u1, ref)              # float, fresh
            ref = block.unit2(mid) + block.shortcut(ref)
        assert torch.equal(fused, ref)
    # that each packed layer equals its simulated layer is tested layer by layer
    # (test_kernels.py): end to end, a pre-activation within float rounding of its
    # threshold may flip on one CPU and not on another


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("spec,shape", [("resnet18", (3, 32, 32)),
                                        ("resnet18-imagenet", (3, 64, 64))])
def test_the_block_chain_computes_what_the_blocks_do_one_by_one(build, spec, shape,
                                                                  monkeypatch):
    """PackedBlocks runs as one call into the extension (BlockChain): the same kernel
    calls with the same arguments as PackedPreActBlock's, so the same bits and floats."""
    kernels_of(build)  # skips a build this CPU cannot run
    monkeypatch.setenv("XNORBENCH_KERNEL_BUILD", build)
    torch.manual_seed(3)
    model = models.build(spec, binary=True).train()
    with torch.no_grad():
        model(torch.randn(8, *shape))  # BN statistics away from their defaults
    packed = pack_model(model.eval())
    chains = [m for m in packed.modules() if isinstance(m, PackedBlocks)]
    assert chains
    x = torch.randn(2, *shape)
    with torch.no_grad():
        got = packed(x)
        assert all(m._chain for m in chains)  # built and used
        for m in chains:
            m._chain = False  # the Python path, block by block
        want = packed(x)
    assert torch.equal(got, want)
