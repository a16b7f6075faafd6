"""The packed XNOR + popcount kernels against float references, on many shapes."""

import itertools
import os

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import binary_layer, kernels_of
from tests.rounding import away_from_thresholds
from xnorbench.xnor import XNORConv2d, XNORLinear
from xnorbench.xnor.inference.packed_layers import (
    PackedXNORConv2d,
    PackedXNORLinear,
    binary_conv,
    pack_model,
)
from xnorbench.xnor.kernels import kernel_isa, load_kernels
from xnorbench.xnor.networks import models


def _reference(x, w, stride, pad):
    xs = torch.where(x < 0, -1.0, 1.0)
    ws = torch.where(w < 0, -1.0, 1.0)
    return F.conv2d(F.pad(xs, (pad,) * 4, value=1.0), ws, stride=stride)


SHAPES = [  # (batch, C, H, W, OC, k, stride, pad)
    (1, 1, 5, 5, 1, 1, 1, 0),
    (2, 3, 9, 7, 5, 3, 2, 1),
    (3, 63, 8, 8, 9, 5, 1, 2),
    (1, 64, 6, 6, 8, 3, 1, 1),
    (2, 65, 7, 5, 17, 2, 1, 0),
    (1, 130, 11, 11, 33, 11, 1, 5),
    (4, 200, 6, 6, 30, 4, 2, 1),
    (1, 257, 14, 14, 12, 7, 2, 3),
    (2, 16, 12, 12, 24, 6, 1, 2),
    (1, 9, 10, 10, 7, 9, 1, 4),
    (1, 32, 10, 10, 16, 8, 3, 3),
    (5, 7, 4, 4, 3, 10, 1, 3),
    (1, 1024, 9, 9, 40, 9, 1, 4),  # > 64512 bits per dot product: 16-bit partials fold
]


@pytest.mark.parametrize("shape", SHAPES)
def test_integer_dot_products_exact(shape):
    n, c, h, w_, oc, k, s, p = shape
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(n, c, h, w_, generator=g)
    x.view(-1)[::7] = 0.0  # zeros must count as +1
    w = torch.randn(oc, c, k, k, generator=g)
    got = binary_conv(x, w, s, p, integer=True)
    ref = _reference(x, w, s, p)
    assert got.dtype == torch.int32
    assert torch.equal(got.double(), ref.double())
    # channels_last input goes through the other packing path, same answer
    got_cl = binary_conv(x.contiguous(memory_format=torch.channels_last), w, s, p,
                         integer=True)
    assert torch.equal(got_cl, got)


def test_every_kernel_size_1_to_11():
    g = torch.Generator().manual_seed(11)
    for k in range(1, 12):
        x = torch.randn(2, 37, 12, 12, generator=g)
        w = torch.randn(6, 37, k, k, generator=g)
        for stride, pad in itertools.product((1, 2), (0, k // 2)):
            got = binary_conv(x, w, stride, pad, integer=True)
            assert torch.equal(got.double(), _reference(x, w, stride, pad).double()), (k, stride)


def test_packed_input_op_equals_full_op():
    k = load_kernels()
    x = torch.randn(2, 70, 9, 9)
    w = torch.randn(10, 70, 3, 3)
    wp = k.pack_weight(w)
    alpha = torch.rand(10)
    layer = binary_layer(k, wp, alpha, 70, 10, 3, 1, 1)
    full = k.xnor_conv2d(layer, x, None, False)
    pre = k.xnor_conv2d_packed(layer, k.pack_input(x, 1, 1), None, False)
    assert torch.equal(full, pre)


def test_kernel_rejects_mismatched_weight():
    k = load_kernels()
    wp = k.pack_weight(torch.randn(4, 70, 3, 3))
    with pytest.raises(RuntimeError, match="does not match"):
        k.xnor_conv2d(binary_layer(k, wp, torch.ones(4), 200, 4, 3, 1, 1),
                      torch.randn(1, 200, 8, 8), None, False)


@pytest.mark.parametrize("scale_input", [False, True])
@pytest.mark.parametrize("stride,pad,k", [(1, 1, 3), (2, 1, 3), (1, 0, 1), (2, 2, 5)])
def test_packed_layer_equals_simulated_layer(scale_input, stride, pad, k):
    torch.manual_seed(stride * 10 + pad + k)
    layer = XNORConv2d(45, 19, k, stride=stride, padding=pad, bias=True,
                       scale_input=scale_input)
    layer.bias.data.normal_()
    layer.bn.running_mean.normal_()
    layer.bn.running_var.uniform_(0.5, 2)
    layer.bn.weight.data.normal_()
    layer.eval()
    packed = PackedXNORConv2d.from_layer(layer)
    x = torch.randn(3, 45, 10, 10)
    with torch.no_grad():
        torch.testing.assert_close(packed(x), layer(x), rtol=1e-5, atol=1e-5)


def test_packed_linear_equals_simulated():
    torch.manual_seed(5)
    layer = XNORLinear(100, 13).eval()
    layer.bn.running_mean.normal_()
    x = torch.randn(4, 100)
    with torch.no_grad():
        torch.testing.assert_close(PackedXNORLinear.from_layer(layer)(x), layer(x),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,shape", [("resnet18", (2, 3, 32, 32)), ("lenet5", (3, 1, 28, 28)),
                                        ("nin", (2, 3, 32, 32))])
def test_pack_model_layers_equal_simulated_layers(name, shape):
    """Inside a whole model, each packed layer reproduces its simulated layer.

    Layer by layer, on the inputs the simulated model really feeds them: chained
    end to end, a float-rounding difference (the packed layer sums exact integers, the
    float conv sums in another order) can flip the sign of a pre-activation that sits
    within ~1e-7 of zero in the next layer, so end-to-end outputs are compared per layer.
    """
    torch.manual_seed(7)
    model = models.build(name, binary=True)
    model.train()
    with torch.no_grad():
        model(torch.randn(shape))  # non-trivial BN statistics
    model.eval()
    packed = pack_model(model)
    assert not any(isinstance(m, (XNORConv2d, XNORLinear)) for m in packed.modules())
    seen = {}
    sim = dict(model.named_modules())
    hooks = [m.register_forward_hook(lambda mod, a, out, n=n: seen.__setitem__(n, a[0].clone()))
             for n, m in sim.items() if isinstance(m, (XNORConv2d, XNORLinear))]
    with torch.no_grad():
        model(torch.randn(shape))
    for h in hooks:
        h.remove()
    assert seen
    pmods = dict(packed.named_modules())
    with torch.no_grad():
        for n, inp in seen.items():  # no value within rounding of its threshold (rounding.py)
            inp, moved = away_from_thresholds(sim[n], inp)
            assert moved <= inp.numel() // 100, (n, moved)
            torch.testing.assert_close(pmods[n](inp), sim[n](inp), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("build,isa", [("portable", "scalar-popcnt"),
                                       ("avx2", "avx2-pshufb")])
def test_every_build_agrees_with_native(build, isa):
    """The portable (scalar popcount) and AVX2 (VPSHUFB) builds give the native integers.

    The shapes reach every AVX2 tile: fewer than four blocks of 32 filters (6-row tiles
    only), full groups of four (the 3-row wide tile) followed by a tail of two blocks and
    a partial one, 98 and 49 output rows (the wide tile's last 2 and 1 rows), and a row
    of more than 1024 words (7300 channels, 3x3) whose every input and weight sign
    differ, so its counts (65700) outgrow 16 bits and must be folded into 32-bit
    totals."""
    other = kernels_of(build)
    native = load_kernels(build="native")
    assert kernel_isa(build=build) == isa
    g = torch.Generator().manual_seed(3)
    for c, oc, size, n in ((100, 11, 9, 2), (64, 40, 9, 2), (200, 33, 9, 2), (70, 300, 7, 2),
                           (70, 256, 7, 1), (7300, 130, 3, 2)):
        x = torch.randn(n, c, size, size, generator=g)
        w = torch.randn(oc, c, 3, 3, generator=g)
        if c > 7000:
            x, w = x.abs(), -w.abs()
        outs = [k.xnor_conv2d(binary_layer(k, k.pack_weight(w), torch.ones(oc), c, oc, 3, 1, 1),
                              x, None, True) for k in (other, native)]
        assert torch.equal(outs[0], outs[1])
        assert torch.equal(outs[0].double(), _reference(x, w, 1, 1).double())


def test_portable_build_is_the_old_spelling():
    assert load_kernels(portable=True) is load_kernels(build="portable")
    assert load_kernels(portable=False) is load_kernels(build="native")
    with pytest.raises(ValueError, match="unknown kernel build"):
        load_kernels(build="avx9")


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two CPUs")
def test_kernels_use_the_threads_torch_is_given():
    """The extension shares torch's OpenMP pool: 2 threads set means 2 threads used."""
    k = load_kernels()
    prev = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert k.threads_used() == 2
        torch.set_num_threads(1)
        assert k.threads_used() == 1
    finally:
        torch.set_num_threads(prev)
