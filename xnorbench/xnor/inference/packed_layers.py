"""Packed XNOR layers for inference: float NCHW in, float NCHW out, bits in between.

``PackedXNORConv2d.from_layer(layer)`` freezes an :class:`XNORConv2d` (eval-mode BN,
alpha * sign(W) packed to bits). Its forward is one C++ call: the eval BatchNorm followed
by sign is folded into the packing as a per-channel threshold (sign(BN(x)) = -1 exactly
when x < t_c, or x > t_c where the BN scale is negative), then XNOR-popcount against the
packed filters, alpha [+ bias] and, in a ResNet block, the residual added in the same
pass: no BN output, no packed-input allocation, no separate add. The output
equals the simulated layer in eval mode: exactly before the float scaling, to float
tolerance after it. With the paper's K (``scale_input``) BN runs in float first, since K
needs its magnitudes. ``pack_model(model)`` swaps every XNOR layer of a model, and every
pre-activation block for one that hands its shortcut to the second conv.
"""

from __future__ import annotations

import copy
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from ..kernels import load_kernels
from ..layers.modules import XNORConv2d, XNORLinear, linear_rows
from ..sign.bitops import alphas, binarize_weight
from .chain import LazyChain, StepSpec
from .float_layers import DirectConv2d, PooledHead, runs_direct
from .graph_fusion import fuse_packed_graph


def _alpha_and_weight(layer: XNORConv2d | XNORLinear) -> tuple[Tensor, Tensor]:
    """(alpha per filter, alpha * sign(W)) exactly as the layer uses them in eval mode.

    The same operator the layer's forward runs; alpha * sign is a fixed point of it, so
    the result is the same whether a BinOp left the latent or the binarized weights in
    place.
    """
    with torch.no_grad():
        wbin = binarize_weight(layer.weight.detach().float().cpu())
    return alphas(wbin).contiguous(), wbin


def _register_packed(layer: nn.Module, wpacked: Tensor, alpha: Tensor, bias: Tensor | None,
                     ) -> None:
    """What a packed binary layer holds, as buffers (saved and moved with it): the packed
    weights, alpha, the bias, and its BatchNorm (``layer.bn``) folded into the sign's
    thresholds and flips."""
    bn = layer.bn
    assert isinstance(bn, nn.modules.batchnorm._BatchNorm)
    layer.register_buffer("wpacked", wpacked)
    layer.register_buffer("alpha", alpha.float().contiguous())
    layer.register_buffer("bias", None if bias is None else bias.detach().float().clone())
    thresh, flip = bn_thresholds(bn)
    layer.register_buffer("thresh", thresh)
    layer.register_buffer("flip", flip)


class PackedXNORConv2d(nn.Module):
    """Inference-only binary convolution on bit-packed operands."""

    wpacked: Tensor
    alpha: Tensor
    bias: Tensor | None
    thresh: Tensor
    flip: Tensor

    def __init__(self, bn: nn.BatchNorm2d, wbin: Tensor, alpha: Tensor, bias: Tensor | None,
                 stride: tuple[int, int], padding: tuple[int, int], scale_input: bool) -> None:
        super().__init__()
        self.bn = copy.deepcopy(bn).eval()
        self.out_channels, self.in_channels, kh, kw = wbin.shape
        self.kernel_size = (kh, kw)
        self.stride = stride
        self.padding = padding
        self.scale_input = scale_input
        _register_packed(self, load_kernels().pack_weight(wbin), alpha, bias)

    @classmethod
    def from_layer(cls, layer: XNORConv2d) -> PackedXNORConv2d:
        alpha, wb = _alpha_and_weight(layer)
        return cls(layer.bn, wb, alpha, layer.bias, layer.stride, layer.padding,
                   layer.scale_input)

    @property
    def fused(self) -> bool:
        """Whether BN folds into the packing (not with the paper's K, which needs BN)."""
        return not self.scale_input

    def forward(self, x: Tensor, residual: Tensor | None = None, inplace: bool = False
                ) -> Tensor:
        """The layer's output, plus ``residual`` (added in the kernel's epilogue).

        ``inplace``: write the output over ``residual`` (a float32 channels-last tensor the
        caller owns and no longer needs), so no new activation is allocated.
        """
        if self.fused and x.dtype == torch.float32:
            return self._fused(x, False, residual, inplace)
        return self._simulated_bn(x, residual)

    def to_bits(self, x: Tensor, nxt: PackedXNORConv2d) -> Tensor:
        """This layer's output as ``nxt``'s packed input: sign(nxt.bn(out)) as bits, padded
        for ``nxt`` (int64 [N, H + 2 ph, W + 2 pw, ceil(C / 64)]); no float output at all."""
        return self._fused(x, False, None, False, nxt)

    def on_bits(self, bits: Tensor, residual: Tensor | None = None, inplace: bool = False
                ) -> Tensor:
        """``forward`` on an input that :meth:`to_bits` of the previous layer packed."""
        return self._fused(bits, True, residual, inplace)

    def _fused(self, x: Tensor, packed_in: bool, residual: Tensor | None, inplace: bool,
               nxt: PackedXNORConv2d | None = None) -> Tensor:
        kern = load_kernels()
        return cast(Tensor, kern.run_binary_layer(
            self.binary_layer(kern), x, packed_in, residual, False, inplace,
            None if nxt is None else nxt.binary_layer(kern)))

    def _simulated_bn(self, x: Tensor, residual: Tensor | None) -> Tensor:
        """BN in the input's dtype, then pack (the path with the paper's K, and for inputs
        other than float32, whose signs are taken in their own precision)."""
        x = self.bn(x)
        k = None
        if self.scale_input:
            a = x.abs().mean(dim=1, keepdim=True)
            k = F.avg_pool2d(a, self.kernel_size, self.stride, self.padding,
                             count_include_pad=True)
            k = k.reshape(-1)  # [N*OH*OW], the kernel's row order
        kern = load_kernels()
        out = kern.xnor_conv2d(self.binary_layer(kern, thresholds=False), x, k, False)
        out = out.to(x.dtype)
        return out if residual is None else out + residual

    def binary_layer(self, kern: Any, thresholds: bool = True) -> Any:
        """This layer as the extension's ``BinaryLayer`` (sharing its tensors); without
        ``thresholds`` its input's sign is taken as it is (BatchNorm applied before)."""
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        th, fl = (self.thresh, self.flip) if thresholds else (None, None)
        return kern.BinaryLayer(self.wpacked, self.alpha, self.bias, th, fl, [
            self.in_channels, self.out_channels, kh, kw, sh, sw, ph, pw])

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding} (pad value +1), packed")


class PackedXNORLinear(nn.Module):
    """Inference-only binary linear layer (a 1x1 binary convolution over N x 1 x 1), its
    eval BatchNorm folded into per-feature sign thresholds as in the conv."""

    wpacked: Tensor
    alpha: Tensor
    bias: Tensor | None
    thresh: Tensor
    flip: Tensor

    def __init__(self, bn: nn.BatchNorm1d, wbin: Tensor, alpha: Tensor,
                 bias: Tensor | None, flatten_input: bool = True) -> None:
        super().__init__()
        self.flatten_input = flatten_input
        self.bn = copy.deepcopy(bn).eval()
        self.out_features, self.in_features = wbin.shape
        _register_packed(self, load_kernels().pack_weight(
            wbin.reshape(self.out_features, self.in_features, 1, 1)), alpha, bias)

    @classmethod
    def from_layer(cls, layer: XNORLinear) -> PackedXNORLinear:
        alpha, wb = _alpha_and_weight(layer)
        return cls(layer.bn, wb, alpha, layer.bias, layer.flatten_input)

    def forward(self, x: Tensor) -> Tensor:
        """As :meth:`XNORLinear.forward <.layers.XNORLinear.rows>`: per sample flattened,
        or (``flatten_input=False``) per vector along the last dimension."""
        rows, lead = linear_rows(x, self.flatten_input)
        k = load_kernels()
        geometry = [self.in_features, self.out_features, 1, 1, 1, 1, 0, 0]
        if rows.dtype == torch.float32:
            layer = k.BinaryLayer(self.wpacked, self.alpha, self.bias, self.thresh,
                                  self.flip, geometry)
            out = k.run_binary_layer(layer, rows.contiguous()[:, :, None, None])
        else:  # signs taken in the input's own precision
            layer = k.BinaryLayer(self.wpacked, self.alpha, self.bias, None, None, geometry)
            out = k.xnor_conv2d(layer, self.bn(rows)[:, :, None, None])
        return cast(Tensor, out).reshape(*lead, self.out_features).to(x.dtype)


def bn_thresholds(bn: nn.modules.batchnorm._BatchNorm) -> tuple[Tensor, Tensor]:
    """Per channel: the input t at which eval BN crosses 0, and whether its scale is < 0.

    sign(BN(x)) is -1 exactly when x < t (x > t where flipped); a channel whose scale
    is 0 outputs its bias everywhere: t = +inf (always -1) or -inf (never) by its sign.
    Computed in float64, then rounded once.
    """
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("a BatchNorm folded into the packing threshold needs running "
                         "statistics (track_running_stats=True)")
    with torch.no_grad():
        mean = bn.running_mean.double()
        std = torch.sqrt(bn.running_var.double() + bn.eps)
        w = bn.weight.double() if bn.weight is not None else torch.ones_like(mean)
        b = bn.bias.double() if bn.bias is not None else torch.zeros_like(mean)
        t = mean - b * std / torch.where(w == 0, torch.ones_like(w), w)
        t = torch.where(w == 0, torch.where(b < 0, torch.inf, -torch.inf), t)
    return t.float().contiguous().cpu(), (w < 0).to(torch.uint8).contiguous().cpu()


class PackedPreActBlock(nn.Module):
    """A pre-activation block run as two fused binary convs.

    Same children, same names as :class:`~xnorbench.xnor.models.PreActBlock`, and the
    same output, ``unit2(unit1(x)) + shortcut(x)``; but unit1 writes its output straight
    as unit2's packed input (bits), and unit2 adds the shortcut in its epilogue, over the
    shortcut conv's own output (which nothing else reads) or, with ``inplace``, over ``x``.
    """

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.unit1 = cast(nn.Module, block.unit1)
        self.unit2 = cast(nn.Module, block.unit2)
        self.shortcut = cast(nn.Module, block.shortcut)

    def forward(self, x: Tensor, inplace: bool = False) -> Tensor:
        """``inplace``: the caller will not read ``x`` again (see PackedBlocks)."""
        u1, u2 = self.unit1, self.unit2
        if not (isinstance(u1, PackedXNORConv2d) and isinstance(u2, PackedXNORConv2d)
                and u1.fused and u2.fused and x.dtype == torch.float32):
            return u2(u1(x), residual=self.shortcut(x))
        bits = u1.to_bits(x, u2)
        residual = self.shortcut(x)
        own = residual is not x or inplace
        return u2.on_bits(bits, residual=residual, inplace=own and _float_cl(residual))


def _float_cl(t: Tensor) -> bool:
    return t.dtype == torch.float32 and t.dim() == 4 and \
        t.is_contiguous(memory_format=torch.channels_last)


class PackedBlocks(LazyChain, nn.Sequential):
    """A ResNet's chain of packed blocks: every block after the first overwrites its
    input, which only this chain produced and holds (no new activation per block).

    On a float32 CPU input it runs as one call into the extension (a ``LayerChain``, see
    :mod:`.packed_chain`: the same kernel calls with the same arguments, no Python
    between the blocks)."""

    def forward(self, x: Tensor) -> Tensor:
        out = self.chained(x)
        if out is not None:
            return out
        for i, block in enumerate(self):
            x = block(x, inplace=i > 0) if isinstance(block, PackedPreActBlock) else block(x)
        return x

    def chain_steps(self) -> list[StepSpec] | None:
        """Per block: unit1 writing unit2's bits, the shortcut conv (if any), unit2 with
        the shortcut added; None where a block is not two fused packed convs with an
        identity or packed-conv shortcut."""
        steps: list[StepSpec] = []
        x = 0
        for block in self:
            u1, u2, sc = (getattr(block, n, None) for n in ("unit1", "unit2", "shortcut"))
            if not (isinstance(block, PackedPreActBlock)
                    and all(isinstance(u, PackedXNORConv2d) and u.fused for u in (u1, u2))
                    and (isinstance(sc, nn.Identity)
                         or isinstance(sc, PackedXNORConv2d) and sc.fused)):
                return None
            assert u1 is not None and u2 is not None
            steps.append(StepSpec(u1, u2, x))  # bits for unit2
            bits = len(steps)
            residual = x
            if isinstance(sc, PackedXNORConv2d):
                steps.append(StepSpec(sc, None, x))
                residual = len(steps)
            steps.append(StepSpec(u2, None, bits, residual, packed_in=True))
            x = len(steps)
        return steps


class PackedResNet18(nn.Module):
    """The built-in ResNet-18 (:class:`~.models.ResNet18`) packed: the same children but
    its head (BatchNorm, ReLU, global pooling) as one :class:`~.packed_float.PooledHead`."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.conv1 = cast(nn.Module, net.conv1)
        self.layers = cast(nn.Module, net.layers)
        self.head = PooledHead(cast(nn.BatchNorm2d, net.bn), relu=True)
        self.fc = cast(nn.Module, net.fc)

    def forward(self, x: Tensor) -> Tensor:
        return cast(Tensor, self.fc(self.head(self.layers(self.conv1(x))).flatten(1)))


def _packed_head(model: nn.Module) -> nn.Module:
    """``model`` with its head in one pass where it is the built-in ResNet-18."""
    from ..networks.models import ResNet18

    if isinstance(model, ResNet18) and isinstance(model.bn, nn.BatchNorm2d) \
            and model.bn.running_mean is not None and isinstance(model.relu, nn.ReLU) \
            and isinstance(model.pool, nn.AdaptiveAvgPool2d) \
            and model.pool.output_size in (1, (1, 1)):
        return PackedResNet18(model)
    return model


def pack_model(model: nn.Module, fuse_graph: bool = True) -> nn.Module:
    """A copy of ``model`` (eval mode) whose XNOR layers run on the packed kernels.

    ``fuse_graph``: a traced network (what ``binarize`` returns) is fused on its graph
    (:mod:`.packed_graph`), a first conv with few input channels runs on the direct
    kernel and the built-in ResNet-18's head in one pass (:mod:`.packed_float`); off,
    each packed layer runs as its own call and the float layers stay torch's (what an
    exporter that translates layer by layer reads).

    Its other float convolutions hold channels-last weights, so oneDNN computes them
    channels-last whatever the input's layout and hands the binary layers (which read
    and write channels-last) their input without a transposing copy: for ResNet-18 at
    batch 64 the NCHW first conv and the copy into channels-last took about a third of
    the packed network's time."""
    from ..networks.models import PreActBlock

    packed = copy.deepcopy(model).eval()
    for module in list(packed.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, XNORConv2d):
                setattr(module, child_name, PackedXNORConv2d.from_layer(child))
            elif isinstance(child, XNORLinear):
                setattr(module, child_name, PackedXNORLinear.from_layer(child))
    for module in list(packed.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, PreActBlock) and isinstance(child.unit2, PackedXNORConv2d):
                setattr(module, child_name, PackedPreActBlock(child))
    for module in list(packed.modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is nn.Sequential and len(child) and all(
                    isinstance(b, PackedPreActBlock) for b in child):
                setattr(module, child_name, PackedBlocks(*child))
    for module in list(packed.modules()):
        for child_name, child in list(module.named_children()):
            if fuse_graph and runs_direct(child):
                setattr(module, child_name, DirectConv2d.from_conv(cast(nn.Conv2d, child)))
            elif isinstance(child, nn.Conv2d):
                child.to(memory_format=torch.channels_last)
    if fuse_graph and isinstance(packed, fx.GraphModule):  # binarize()d: fuse its graph
        fuse_packed_graph(packed, PackedXNORConv2d)
    return _packed_head(packed) if fuse_graph else packed


def binary_conv(x: Tensor, weight: Tensor, stride: int = 1, padding: int = 0,
                alpha: Tensor | None = None, integer: bool = False) -> Tensor:
    """Functional binary conv of sign(x) with sign(weight) (x alpha): packs W each call.

    ``integer=True`` returns the exact +-1 dot products as int32. For repeated calls,
    pack once with :class:`PackedXNORConv2d` instead.
    """
    k = load_kernels()
    oc, c, kh, kw = weight.shape
    a = torch.ones(oc) if alpha is None else alpha.float()
    layer = k.BinaryLayer(k.pack_weight(weight), a, None, None, None,
                          [c, oc, kh, kw, stride, stride, padding, padding])
    return cast(Tensor, k.xnor_conv2d(layer, x, None, integer))
