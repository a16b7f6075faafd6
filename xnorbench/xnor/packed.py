"""Packed XNOR layers for inference: float NCHW in, float NCHW out, bits in between.

``PackedXNORConv2d.from_layer(layer)`` freezes an :class:`XNORConv2d` (eval-mode BN,
alpha * sign(W) packed to bits); its forward runs BN, then the C++ op that sign-packs
the input, XNOR-popcounts against the packed filters and scales by alpha (and K). The
output equals the simulated layer in eval mode: exactly before the float scaling, to
float tolerance after it. ``pack_model(model)`` swaps every XNOR layer of a model.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .bitops import alphas, binarize_weight
from .kernels import load_kernels
from .layers import XNORConv2d, XNORLinear


def _alpha_and_weight(layer: XNORConv2d | XNORLinear) -> tuple[Tensor, Tensor]:
    """(alpha per filter, alpha * sign(W)) exactly as the layer uses them in eval mode.

    The same operator the layer's forward runs; alpha * sign is a fixed point of it, so
    the result is the same whether a BinOp left the latent or the binarized weights in
    place.
    """
    with torch.no_grad():
        wbin = binarize_weight(layer.weight.detach().float().cpu())
    return alphas(wbin).contiguous(), wbin


class PackedXNORConv2d(nn.Module):
    """Inference-only binary convolution on bit-packed operands."""

    def __init__(self, bn: nn.BatchNorm2d, wbin: Tensor, alpha: Tensor, bias: Tensor | None,
                 stride: tuple[int, int], padding: tuple[int, int], scale_input: bool) -> None:
        super().__init__()
        self.bn = copy.deepcopy(bn).eval()
        self.out_channels, self.in_channels, kh, kw = wbin.shape
        self.kernel_size = (kh, kw)
        self.stride = stride
        self.padding = padding
        self.scale_input = scale_input
        self.register_buffer("wpacked", load_kernels().pack_weight(wbin))
        self.register_buffer("alpha", alpha.float().contiguous())
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())

    @classmethod
    def from_layer(cls, layer: XNORConv2d) -> PackedXNORConv2d:
        alpha, wb = _alpha_and_weight(layer)
        return cls(layer.bn, wb, alpha, layer.bias, layer.stride, layer.padding,
                   layer.scale_input)

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn(x)
        k = None
        if self.scale_input:
            a = x.abs().mean(dim=1, keepdim=True)
            k = F.avg_pool2d(a, self.kernel_size, self.stride, self.padding,
                             count_include_pad=True)
            k = k.reshape(-1)  # [N*OH*OW], the kernel's row order
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        return load_kernels().xnor_conv2d(x, self.wpacked, self.alpha, self.bias, k,
                                          self.out_channels, kh, kw, sh, sw, ph, pw, False)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding} (pad value +1), packed")


class PackedXNORLinear(nn.Module):
    """Inference-only binary linear layer (a 1x1 binary convolution over N x 1 x 1)."""

    def __init__(self, bn: nn.BatchNorm1d, wbin: Tensor, alpha: Tensor,
                 bias: Tensor | None) -> None:
        super().__init__()
        self.bn = copy.deepcopy(bn).eval()
        self.out_features, self.in_features = wbin.shape
        self.register_buffer("wpacked", load_kernels().pack_weight(
            wbin.reshape(self.out_features, self.in_features, 1, 1)))
        self.register_buffer("alpha", alpha.float().contiguous())
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())

    @classmethod
    def from_layer(cls, layer: XNORLinear) -> PackedXNORLinear:
        alpha, wb = _alpha_and_weight(layer)
        return cls(layer.bn, wb, alpha, layer.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn(torch.flatten(x, 1))
        out = load_kernels().xnor_conv2d(x[:, :, None, None], self.wpacked, self.alpha,
                                         self.bias, None, self.out_features, 1, 1, 1, 1, 0, 0,
                                         False)
        return out.reshape(x.shape[0], self.out_features)


def pack_model(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval mode) whose XNOR layers run on the packed kernels."""
    packed = copy.deepcopy(model).eval()
    for module in list(packed.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, XNORConv2d):
                setattr(module, child_name, PackedXNORConv2d.from_layer(child))
            elif isinstance(child, XNORLinear):
                setattr(module, child_name, PackedXNORLinear.from_layer(child))
    return packed


def binary_conv(x: Tensor, weight: Tensor, stride: int = 1, padding: int = 0,
                alpha: Tensor | None = None, integer: bool = False) -> Tensor:
    """Functional binary conv of sign(x) with sign(weight) (x alpha): packs W each call.

    ``integer=True`` returns the exact +-1 dot products as int32. For repeated calls,
    pack once with :class:`PackedXNORConv2d` instead.
    """
    k = load_kernels()
    oc, _, kh, kw = weight.shape
    wp = k.pack_weight(weight)
    a = torch.ones(oc) if alpha is None else alpha.float()
    return k.xnor_conv2d(x, wp, a, None, None, oc, kh, kw, stride, stride, padding, padding,
                         integer)
