"""Binary layers against independently computed references; packing; models."""

import pytest
import torch
import torch.nn.functional as F

from xnorbench.xnor import (
    XNORConv2d,
    XNORLinear,
    bin_active,
    load_packed,
    models,
    pack_signs,
    packed_sizes,
    save_packed,
    scaled_sign,
    sign,
    unpack_signs,
)
from xnorbench.xnor.sign.bitops import binarize_weight


def test_sign_of_zero_is_plus_one_everywhere():
    z = torch.zeros(3, 4)
    assert torch.equal(sign(z), torch.ones(3, 4))
    assert torch.equal(bin_active(z), torch.ones(3, 4))
    w = torch.zeros(2, 3)
    assert torch.equal(scaled_sign(w), torch.zeros(2, 3))  # alpha = 0, sign = +1
    w = torch.tensor([[0.0, -2.0, 2.0]])
    assert torch.equal(scaled_sign(w), torch.tensor([[4 / 3, -4 / 3, 4 / 3]]))
    bits = pack_signs(torch.tensor([[0.0, -0.0, -1.0, 1.0]]))
    assert bits.item() == 0b0100  # only the -1 packs to 1; 0 and -0.0 are +1
    assert torch.equal(unpack_signs(bits, (1, 4)), torch.tensor([[1.0, 1.0, -1.0, 1.0]]))


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (5, 8), (4, 3, 5, 5), (2, 13, 3, 3)])
def test_pack_unpack_round_trip(shape):
    x = torch.randn(shape)
    x.view(-1)[0] = 0.0
    packed = pack_signs(x)
    assert packed.dtype == torch.uint8
    assert packed.shape == (shape[0], (x[0].numel() + 7) // 8)
    assert torch.equal(unpack_signs(packed, tuple(shape)), sign(x))


@pytest.mark.parametrize("stride,padding,k", [(1, 1, 3), (2, 1, 3), (1, 0, 5), (2, 2, 5)])
def test_xnor_conv_eval_equals_float_conv_of_signs(stride, padding, k):
    torch.manual_seed(0)
    layer = XNORConv2d(5, 7, k, stride=stride, padding=padding, bias=True)
    layer.bias.data.normal_()
    layer.bn.running_mean.normal_()
    layer.bn.running_var.uniform_(0.5, 2.0)
    layer.eval()
    x = torch.randn(2, 5, 9, 9)
    with torch.no_grad():
        out = layer(x)
        # independent reference: BN by its formula, sign, pad with sign(0)=+1, conv
        bn = layer.bn
        xn = (x - bn.running_mean.view(1, -1, 1, 1)) / torch.sqrt(
            bn.running_var.view(1, -1, 1, 1) + bn.eps)
        xn = xn * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)
        xs = torch.where(xn >= 0, 1.0, -1.0)
        xs = F.pad(xs, (padding,) * 4, value=1.0)
        w = layer.weight
        alpha = w.abs().reshape(7, -1).mean(1).view(7, 1, 1, 1)
        ws = alpha * torch.where(w >= 0, 1.0, -1.0)
        ref = F.conv2d(xs, ws, layer.bias, stride)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_xnor_conv_input_scaling_k():
    torch.manual_seed(1)
    layer = XNORConv2d(4, 3, 3, padding=1, scale_input=True).eval()
    x = torch.randn(1, 4, 6, 6)
    with torch.no_grad():
        plain = XNORConv2d(4, 3, 3, padding=1).eval()
        plain.load_state_dict(layer.state_dict())
        k = F.avg_pool2d(layer.bn(x).abs().mean(1, keepdim=True), 3, 1, 1)
        torch.testing.assert_close(layer(x), plain(x) * k)


def test_xnor_linear_eval_equals_float_linear_of_signs():
    torch.manual_seed(2)
    layer = XNORLinear(10, 4).eval()
    x = torch.randn(3, 10)
    with torch.no_grad():
        xs = torch.where(layer.bn(x) >= 0, 1.0, -1.0)
        alpha = layer.weight.abs().mean(1, keepdim=True)
        ref = xs @ (alpha * torch.where(layer.weight >= 0, 1.0, -1.0)).T + layer.bias
        torch.testing.assert_close(layer(x), ref)


@pytest.mark.parametrize("name,shape", [("resnet18", (2, 3, 32, 32)), ("lenet5", (2, 1, 28, 28)),
                                        ("nin", (2, 3, 32, 32))])
def test_models_float_and_xnor_share_definition(name, shape):
    fm = models.build(name, binary=False)
    bm = models.build(name, binary=True)
    x = torch.randn(shape)
    assert fm(x).shape == (2, 10) == bm(x).shape
    # same parameter count, first and last layer float in both
    assert sum(p.numel() for p in fm.parameters()) == sum(p.numel() for p in bm.parameters())
    mods = [m for m in bm.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert type(mods[0]) in (torch.nn.Conv2d,) and type(mods[-1]) in (torch.nn.Conv2d,
                                                                     torch.nn.Linear)
    assert any(isinstance(m, (XNORConv2d, XNORLinear)) for m in bm.modules())
    assert not any(isinstance(m, (XNORConv2d, XNORLinear)) for m in fm.modules())


def test_resnet18_takes_mnist_shape():
    m = models.resnet18(binary=True, in_channels=1)
    assert m(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("name,shape", [("resnet18", (2, 3, 32, 32)), ("lenet5", (2, 1, 28, 28)),
                                        ("nin", (2, 3, 32, 32))])
def test_packed_file_round_trip(tmp_path, name, shape):
    torch.manual_seed(3)
    model = models.build(name, binary=True)
    model.train()
    model(torch.randn(shape))  # move BN running stats away from their defaults
    model.eval()
    path = tmp_path / f"{name}.xnb"
    nbytes = save_packed(model, path)
    assert nbytes == path.stat().st_size
    loaded = load_packed(path).eval()
    x = torch.randn(shape)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    # bit-exact: binary weights come back as exactly the alpha * sign(W) forward uses
    for (_, a), (_, b) in zip(
        [(n, m) for n, m in model.named_modules() if isinstance(m, (XNORConv2d, XNORLinear))],
        [(n, m) for n, m in loaded.named_modules() if isinstance(m, (XNORConv2d, XNORLinear))],
    ):
        assert torch.equal(b.weight, binarize_weight(a.weight.detach()))
        torch.testing.assert_close(b.weight, scaled_sign(a.weight).detach())


def test_resnet18_packed_file_at_most_one_25th_of_float32(tmp_path):
    model = models.resnet18(binary=True)
    packed = save_packed(model, tmp_path / "r18.xnb")
    torch.save(model.state_dict(), tmp_path / "r18.pt")
    float_bytes = (tmp_path / "r18.pt").stat().st_size
    assert packed * 25 <= float_bytes, (packed, float_bytes)
    sizes = packed_sizes(model)
    assert 25 <= sizes.float32_bytes / sizes.packed_bytes <= 32


def test_load_packed_rejects_other_files(tmp_path):
    p = tmp_path / "x.pt"
    torch.save({"a": torch.ones(1)}, p)
    with pytest.raises(ValueError, match="not an xnorbench packed"):
        load_packed(p)
