"""A binarize()d network's packed graph is fused like the built-in networks: BatchNorm
after a binary conv folded into its epilogue, residuals added there, convs handing bits
to the next conv; and it still computes what the unfused packed network does."""

from __future__ import annotations

import pytest
import torch
from torch import fx, nn

from xnorbench.xnor.inference import graph_fusion as pg
from xnorbench.xnor.inference import packed_layers as packed_module
from xnorbench.xnor.inference.chain import PackedChain
from xnorbench.xnor.inference.packed_layers import PackedXNORConv2d, pack_model
from xnorbench.xnor.networks import models
from xnorbench.xnor.networks.binarize import binarize

from .helpers import trained_like


def _unfused(model: nn.Module, monkeypatch: pytest.MonkeyPatch) -> nn.Module:
    with monkeypatch.context() as m:
        m.setattr(packed_module, "fuse_packed_graph", lambda gm, conv_type: {})
        return pack_model(model)


def _calls(gm: fx.GraphModule) -> list[tuple[nn.Module, fx.Node, fx.GraphModule]]:
    """Every module call of ``gm``'s graph and of the runs it chained (their traced
    graphs), with the graph module it is in."""
    out = []
    for n in gm.graph.nodes:
        if n.op == "call_module":
            m = gm.get_submodule(str(n.target))
            out += _calls(m.run_graph) if isinstance(m, PackedChain) else [(m, n, gm)]
    return out


def test_torchvision_resnet_is_fused_and_computes_what_the_unfused_network_does(
        monkeypatch: pytest.MonkeyPatch):
    torch.manual_seed(0)
    xnor = trained_like(models.build("torchvision:resnet18:cifar", binary=True))
    packed, plain = pack_model(xnor), _unfused(xnor, monkeypatch)
    assert isinstance(packed, fx.GraphModule)
    calls = _calls(packed)
    pairs = [m for m, _, _ in calls if isinstance(m, pg.PackedPair)]
    assert len(pairs) == 8  # every block's two convs
    for m, n, g in calls:  # no BatchNorm reads a binary conv's output any more
        if isinstance(m, nn.BatchNorm2d):
            src = n.args[0]
            assert not (isinstance(src, fx.Node) and src.op == "call_module" and isinstance(
                g.get_submodule(str(src.target)), (PackedXNORConv2d, pg.PackedPair)))
    assert sum("residual" in n.kwargs for _, n, _ in calls) == 8  # every block's addition
    assert not [n for n in packed.graph.nodes if n.target == "clone"]  # no copies left
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        got, want, simulated = packed(x), plain(x), xnor(x)
    assert (got - want).norm() <= 1e-4 * want.norm()
    assert torch.equal(got.argmax(1), want.argmax(1))
    assert torch.equal(got.argmax(1), simulated.argmax(1))


class TwoReaders(nn.Module):
    """A binary conv whose output is read twice (by a BatchNorm and by an addition):
    folding the BatchNorm or moving the addition into the conv would change the other
    reader's input."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.conv = nn.Conv2d(16, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(self.stem(x))
        x = self.conv2(self.bn(y) + y)
        return self.head(x.mean((2, 3)))


def test_a_value_read_twice_is_left_as_it_is(monkeypatch: pytest.MonkeyPatch):
    torch.manual_seed(0)
    xnor = trained_like(binarize(TwoReaders().eval()).model)
    packed, plain = pack_model(xnor), _unfused(xnor, monkeypatch)
    assert pg.fuse_packed_graph(plain, PackedXNORConv2d) == {
        "identities dropped": 0, "copies before a ReLU dropped": 0, "batchnorms folded": 0,
        "batchnorms folded into a float conv": 0, "residuals fused": 0,
        "conv pairs on bits": 0, "runs in one call": 0, "pooled heads": 0}
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(packed(x), plain(x))
