"""The packed network as one plan: the float layers on the extension's own kernels equal
torch's, and a run of binary convs chained into one call computes what the same layers
compute one by one, on every build (native, avx2, portable) this CPU can run.

* ``DirectConv2d`` (the first conv, channels-last out) equals ``F.conv2d`` to float
  rounding, with a BatchNorm folded in equals conv then BatchNorm;
* ``PooledHead`` equals BatchNorm -> ReLU -> global pooling;
* a ``binarize``d torchvision ResNet's blocks become one ``PackedChain`` (a ReLU on a
  shortcut taken in the epilogue) whose output equals its own traced run, bit for bit.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

from tests.conftest import kernels_of
from xnorbench.xnor.inference.chain import PackedChain
from xnorbench.xnor.inference.float_layers import DirectConv2d, PooledHead, runs_direct
from xnorbench.xnor.inference.graph_fusion import PackedPair
from xnorbench.xnor.inference.packed_layers import PackedResNet18, pack_model
from xnorbench.xnor.networks import models

from .helpers import trained_like

BUILDS = ["native", "avx2", "portable"]


def _use(build: str, monkeypatch: pytest.MonkeyPatch) -> None:
    kernels_of(build)  # skips a build this CPU cannot run
    monkeypatch.setenv("XNORBENCH_KERNEL_BUILD", build)


def _close(got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.shape == want.shape
    assert (got - want).abs().max() <= 1e-5 * (1 + want.abs().max())


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("c,oc,k,stride,pad,n,hw", [
    (3, 64, 3, 1, 1, 2, 9), (3, 64, 7, 2, 3, 1, 20), (1, 6, 5, 1, 0, 3, 12),
    (4, 70, 3, 2, 1, 2, 11)])
def test_the_direct_conv_equals_torchs(build, c, oc, k, stride, pad, n, hw, monkeypatch):
    _use(build, monkeypatch)
    torch.manual_seed(0)
    conv = nn.Conv2d(c, oc, k, stride, pad, bias=oc != 64).eval()
    direct = DirectConv2d.from_conv(conv)
    x = torch.randn(n, c, hw, hw)
    with torch.no_grad():
        got, want = direct(x), conv(x)
        assert got.is_contiguous(memory_format=torch.channels_last)
        _close(got, want)
        _close(direct(x.to(memory_format=torch.channels_last)), want)
        _close(direct(x.double()), conv.double()(x.double()).float())  # torch's path
        bn = trained_like(nn.Sequential(nn.BatchNorm2d(oc)))[0]
        _close(direct.folded(bn)(x), bn(conv.float()(x)))


def test_only_plain_convs_with_few_taps_run_direct():
    assert runs_direct(nn.Conv2d(3, 64, 7, 2, 3))
    assert not runs_direct(nn.Conv2d(64, 64, 3))  # 576 taps x channels
    assert not runs_direct(nn.Conv2d(4, 4, 3, groups=2))
    assert not runs_direct(nn.Conv2d(3, 8, 3, dilation=2))
    assert not runs_direct(nn.Conv2d(3, 8, 3, padding="same"))
    assert not runs_direct(nn.Conv2d(3, 8, 3, padding_mode="reflect"))


@pytest.mark.parametrize("build", BUILDS)
@pytest.mark.parametrize("with_bn", [True, False])
def test_the_pooled_head_equals_batchnorm_relu_pool(build, with_bn, monkeypatch):
    _use(build, monkeypatch)
    torch.manual_seed(1)
    bn = trained_like(nn.Sequential(nn.BatchNorm2d(40)))[0]
    head = PooledHead(bn if with_bn else None, relu=True)
    x = torch.randn(3, 40, 5, 5)
    want = F.adaptive_avg_pool2d(torch.relu(bn(x) if with_bn else x), 1)
    with torch.no_grad():
        _close(head(x), want)
        _close(head(x.to(memory_format=torch.channels_last)), want)
        _close(head(x.double()).float(), want)  # torch's path


def _tv_resnet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return trained_like(models.build("torchvision:resnet18:cifar", binary=True))


@pytest.mark.parametrize("build", BUILDS)
def test_a_torchvision_resnet_runs_its_blocks_as_one_chain(build, monkeypatch):
    """Every binary conv of the network in one PackedChain, its eight blocks' ReLU'd
    shortcuts in the epilogue; the chain equals its own traced run bit for bit (the
    same kernel calls), and the network its simulated self to float rounding."""
    _use(build, monkeypatch)
    xnor = _tv_resnet()
    packed = pack_model(xnor)
    assert isinstance(packed, fx.GraphModule)
    calls = {str(n.target): packed.get_submodule(str(n.target))
             for n in packed.graph.nodes if n.op == "call_module"}
    chains = [m for m in calls.values() if isinstance(m, PackedChain)]
    assert len(chains) == 1 and sum(isinstance(m, PooledHead) for m in calls.values()) == 1
    assert any(isinstance(m, DirectConv2d) for m in calls.values())  # BatchNorm folded in
    assert not any(isinstance(m, nn.BatchNorm2d) for m in calls.values())
    chain = chains[0]
    assert sum(isinstance(m, PackedPair) for m in chain.run_graph.modules()) == 8
    assert sum(s.relu_residual for s in chain.steps) == 5  # blocks without a downsample
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        stem = packed.get_submodule("conv1_bn_folded")(x)
        got = chain(stem)
        assert chain._chain  # built and used
        assert torch.equal(got, chain.run_graph(stem))
        out, simulated = packed(x), xnor(x)
    assert (out - simulated).norm() <= 1e-3 * simulated.norm()


def test_a_chain_is_rebuilt_after_a_move_and_survives_a_copy():
    import copy
    import pickle

    packed = pack_model(_tv_resnet(1))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = packed(x)
        chain = next(m for m in packed.modules() if isinstance(m, PackedChain))
        assert chain._chain
        packed.float()
        assert chain._chain is None  # rebuilt from the moved buffers on next use
        assert torch.equal(packed(x), want)
        for other in (copy.deepcopy(packed), pickle.loads(pickle.dumps(packed))):
            assert torch.equal(other(x), want)


def test_the_builtin_resnet_runs_its_head_in_one_pass():
    torch.manual_seed(2)
    xnor = trained_like(models.build("resnet18", binary=True))
    packed = pack_model(xnor)
    assert isinstance(packed, PackedResNet18)
    assert isinstance(packed.conv1, DirectConv2d)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        got, simulated = packed(x), xnor(x)
    assert (got - simulated).norm() <= 1e-3 * simulated.norm()
    plain = pack_model(xnor, fuse_graph=False)  # what the exporter reads: torch's layers
    assert isinstance(plain, models.ResNet18) and isinstance(plain.conv1, nn.Conv2d)
