"""``binarize`` never silently changes a network: in-place operations kept, the model's
mode, dtype and tied weights kept, a Linear on tokens binarized per token, and every
non-negative activation (not only ReLU) taken before, or reported and warned about."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from xnorbench.xnor import FusedXNOR
from xnorbench.xnor.layers.binop import BinOp
from xnorbench.xnor.layers.modules import BINARY_LAYERS, XNORLinear
from xnorbench.xnor.networks.binarize import BinarizeError, BinarizeWarning, binarize, sign_inputs

IN_PLACE = {
    "relu_()": lambda s, h: h.relu_(),
    "F.relu(inplace=True)": lambda s, h: F.relu(h, inplace=True),
    "F.relu_()": lambda s, h: F.relu_(h),
    "ReLU(inplace=True)": lambda s, h: s.relu(h),
    "add_(1)": lambda s, h: h.add_(1),
    "mul_(2)": lambda s, h: h.mul_(2),
    "setitem": lambda s, h: h.__setitem__((slice(None), 0), 0.0),
    "sigmoid_()": lambda s, h: h.sigmoid_(),
}


class Statement(nn.Module):
    """An in-place statement on a conv's output whose result is not assigned again."""

    def __init__(self, statement) -> None:
        super().__init__()
        self.statement = statement
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        h = self.c1(x)
        self.statement(self, h)
        return self.fc(self.c2(h).mean((2, 3)))


@pytest.mark.parametrize("label", list(IN_PLACE))
def test_in_place_operations_are_kept(label):
    """With no layer binarized the copy computes exactly what the network does; before
    the fix every one of these statements was dropped as dead code (up to 0.57 off)."""
    torch.manual_seed(0)
    net = Statement(IN_PLACE[label]).eval()
    same, report = binarize(net, keep_types=(nn.Conv2d, nn.Linear))
    assert report.binarized == []
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(same(x), net(x))


class WritesAfterReLU(nn.Module):
    """A ReLU whose input is written to in place after it, and an in-place ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.c2 = nn.Conv2d(16, 16, 3, padding=1)
        self.c3 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        y = self.bn1(self.c1(x))
        r = F.relu(y)
        y.mul_(-1)  # after the ReLU read it
        out = self.c2(r)
        out.add_(1.0)
        return self.fc(self.c3(torch.relu_(out)).mean((2, 3)))


def test_a_rewired_layer_reads_the_activation_input_as_the_activation_saw_it():
    torch.manual_seed(0)
    net = WritesAfterReLU().eval()
    xnor, report = binarize(net)
    assert report.binarized == ["c2", "c3"] and report.rewired == ["c2", "c3"]
    x = torch.randn(2, 3, 8, 8)
    seen = {}
    for name in ("c2", "c3"):
        xnor.get_submodule(name).register_forward_pre_hook(
            lambda m, a, name=name: seen.__setitem__(name, a[0].clone()))
    with torch.no_grad():
        xnor(x)
        y = net.bn1(net.c1(x))  # what the ReLU read: both signs, not its negation
        assert torch.equal(seen["c2"], y)
        out = xnor.get_submodule("c2")(y) + 1.0  # after add_, before relu_
        assert torch.equal(seen["c3"], out)
    assert (seen["c3"] < 0).any() and (seen["c3"] > 0).any()


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_the_copy_keeps_the_model_mode(mode):
    """binarize(model.eval()) used to return XNOR layers in training mode: 'inference'
    updated their BatchNorm statistics."""
    net = torchvision.models.resnet18(num_classes=10).train(mode == "train")
    xnor, _ = binarize(net)
    assert {m.training for m in xnor.modules()} == {mode == "train"}
    if mode == "eval":
        layer = xnor.get_submodule("layer1.0.conv2")
        before = layer.bn.running_mean.clone()
        with torch.no_grad():
            xnor(torch.randn(2, 3, 32, 32))
        assert torch.equal(before, layer.bn.running_mean)


class Tokens(nn.Module):
    """A Linear on (N, T, C) tokens with a residual: the shape must be kept."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 2, stride=2)
        self.l1 = nn.Linear(8, 8)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        t = self.c1(x).flatten(2).transpose(1, 2)  # N, 16, 8
        t = self.l1(t) + t
        return self.fc(t.mean(1))


def test_a_linear_on_tokens_is_binarized_per_token():
    """It used to flatten each sample into one vector: the residual then broadcast
    across the batch and a sample's output depended on the others (0.34 off)."""
    torch.manual_seed(0)
    net = Tokens().eval()
    xnor, report = binarize(net, first_and_last_float=False, keep=("c1", "fc"))
    assert report.binarized == ["l1"]
    layer = xnor.get_submodule("l1")
    assert isinstance(layer, XNORLinear) and not layer.flatten_input
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        full, one = xnor(x), xnor(x[:1])
        assert full.shape == net(x).shape == (4, 10)
        torch.testing.assert_close(full[:1], one, rtol=0, atol=1e-6)
        tokens = net.c1(x).flatten(2).transpose(1, 2)
        per_token = torch.stack([layer(tokens[:, i]) for i in range(tokens.shape[1])], 1)
        torch.testing.assert_close(layer(tokens), per_token)


class NonNegativeFeeds(nn.Module):
    """Binary layers fed by non-negative activations other than a plain ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 16, 3, padding=1)
        self.c3 = nn.Conv2d(16, 16, 3, padding=1)
        self.c4 = nn.Conv2d(16, 16, 3, padding=1)
        self.c5 = nn.Conv2d(32, 16, 3, padding=1)
        self.c6 = nn.Conv2d(16, 16, 3, padding=1)
        self.ht = nn.Hardtanh(0, 6)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.c1(x).clamp(min=0)
        x = self.ht(self.c2(x))
        x = torch.sigmoid(self.c3(x))
        a = F.relu(self.c4(x))
        x = torch.cat([a, F.relu6(x - 0.5)], 1)              # cat of two activations
        x = self.c5(x.transpose(2, 3).contiguous())          # moved, still >= 0
        return self.fc(self.c6(x).mean((2, 3)))


def test_every_non_negative_activation_is_taken_before():
    """clamp(min=0), Hardtanh(0, 6), sigmoid, and a cat of ReLUs through a transpose fed
    binary layers whose sign was +1 everywhere, reported as binarized (squeezenet1_0: 7
    of 24 layers, shufflenet_v2_x0_5: 16 of 36)."""
    torch.manual_seed(0)
    net = NonNegativeFeeds()
    x = torch.randn(4, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BinarizeWarning)
        xnor, report = binarize(net, calibration=x)
    assert report.binarized == ["c2", "c3", "c4", "c5", "c6"] and report.one_sign == []
    assert set(report.rewired) == {"c2", "c3", "c4", "c5"}
    rewired = {d.name: d.rewired for d in report.layers}
    assert "before cat" not in rewired["c5"] and "cat()" in rewired["c5"]
    assert "transpose()" in rewired["c5"]
    shares = sign_inputs(xnor.train(), x)
    assert all(0 < neg < 1 for neg, _ in shares.values()), shares


@pytest.mark.parametrize("name", ["squeezenet1_0", "shufflenet_v2_x0_5"])
def test_torchvision_networks_with_cat_and_shuffles_see_both_signs(name):
    torch.manual_seed(0)
    net = torchvision.models.get_model(name, weights=None, num_classes=10)
    x = torch.randn(2, 3, 64, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("error", BinarizeWarning)
        xnor, report = binarize(net, calibration=x)
    shares = sign_inputs(xnor.eval(), x)
    assert shares and set(shares) == set(report.binarized)
    assert [n for n, (neg, _) in shares.items() if neg == 0] == []


class AfterSoftmax(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.c3 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        x = self.c2(torch.softmax(self.c1(x), 1))
        return self.fc(self.c3(x.abs() + 1).mean((2, 3)))


def test_a_layer_left_with_an_input_of_one_sign_is_reported_and_warned_about():
    """After softmax (by construction) and after abs() + 1 (only the calibration batch
    can tell): the report says so per layer, and binarize warns."""
    torch.manual_seed(0)
    with pytest.warns(BinarizeWarning, match="c2 has an input of one sign"):
        _, report = binarize(AfterSoftmax())
    assert report.one_sign == ["c2"] and "softmax" in report.layers[1].one_sign
    with pytest.warns(BinarizeWarning) as caught:
        _, report = binarize(AfterSoftmax(), calibration=torch.randn(2, 3, 8, 8))
    assert report.one_sign == ["c2", "c3"]
    assert "calibration batch of 2" in report.layers[2].one_sign
    assert len(caught) == 2 and "WARNING" in str(report)


class Tied(nn.Module):
    def __init__(self, tie_to_last: bool = False) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.l1 = nn.Linear(16, 16)
        self.l2 = nn.Linear(16, 16)
        self.fc = nn.Linear(16, 16)
        self.head = nn.Linear(16, 16)
        if tie_to_last:  # the last layer stays float
            self.head.weight = self.l1.weight
        else:
            self.l2.weight = self.l1.weight

    def forward(self, x):
        x = self.c1(x).mean((2, 3))
        return self.head(self.fc(self.l2(self.l1(x))))


@pytest.mark.parametrize("step", [FusedXNOR, BinOp])
def test_tied_weights_stay_tied_and_train_as_one(step):
    """They used to come out untied (906 -> 1226 parameters) and diverge in training."""
    torch.manual_seed(0)
    net = Tied()
    xnor, report = binarize(net)
    l1, l2 = xnor.get_submodule("l1"), xnor.get_submodule("l2")
    assert l1.weight is l2.weight and "tied to 'l2'" in report.layers[1].why
    bn = sum(p.numel() for n, p in xnor.named_parameters() if ".bn." in n)
    assert sum(p.numel() for p in xnor.parameters()) == sum(
        p.numel() for p in net.parameters()) + bn
    opt = torch.optim.SGD(xnor.parameters(), lr=0.1)
    before = l1.weight.detach().clone()
    xnor.train()
    driver = step(xnor)
    for _ in range(3):
        driver.before_forward()
        opt.zero_grad()
        xnor(torch.randn(4, 3, 8, 8)).sum().backward()
        driver.after_backward()
        opt.step()
    assert l1.weight is l2.weight and not torch.equal(before, l1.weight)


def test_a_weight_tied_to_a_float_layer_keeps_both_float():
    _, report = binarize(Tied(tie_to_last=True), first_and_last_float=True)
    kept = {d.name: d.why for d in report.layers if not d.binarized}
    assert "l1" in kept and "tied to 'head'" in kept["l1"] and "l2" in report.binarized


def test_a_float64_network_stays_float64():
    """XNOR layers used to be made in float32: 'mixed dtype' on the first forward."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10).double()
    xnor, _ = binarize(net)
    assert {p.dtype for p in xnor.parameters()} == {torch.float64}
    out = xnor(torch.randn(2, 3, 32, 32, dtype=torch.float64))
    out.sum().backward()
    assert out.dtype == torch.float64
    assert all(isinstance(m, BINARY_LAYERS) for n, m in xnor.named_modules()
               if n == "layer1.0.conv1")


def test_lazy_modules_are_refused_in_one_line():
    lazy = nn.Sequential(nn.LazyConv2d(8, 3), nn.ReLU(), nn.LazyConv2d(8, 3), nn.Flatten(),
                         nn.LazyLinear(10))
    with pytest.raises(BinarizeError, match="uninitialized .* one forward pass"):
        binarize(lazy)
