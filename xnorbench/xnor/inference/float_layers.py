"""A packed network's first float conv on the extension's direct kernel.

A conv with a handful of input channels (the RGB stem) runs on torch's slow path at
batch 1 (``thnn_conv2d``: im2col + GEMM, about 0.13 ms for ResNet-18 CIFAR's 3 -> 64 at
32x32 on a Zen 4, an eighth of the packed network's time) and writes NCHW that the binary
layers must read through a copy. :class:`DirectConv2d` runs it as rank-one updates of 64
filters held in registers (``csrc/float_conv.cpp``) and writes channels-last. A
BatchNorm on its output (torchvision's ``bn1``) folds into its weights.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from ..kernels import load_kernels
from .fx_graph import (
    Folder,
    added_module,
    called_module,
    fold_batchnorms_into,
    is_inplace_relu,
    relu_input,
)

MAX_TAPS = 160
"""Convs with at most this many taps x input channels (7x7x3 = 147) run on the direct
kernel (``KMAX`` in ``csrc/float_conv.cpp``)."""

_BLOCK = 64  # the kernel's filters per register block: weights are padded to a multiple


def bn_affine(bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """(scale, shift) in float64 with ``bn(x) == scale * x + shift`` per channel (eval)."""
    assert bn.running_mean is not None and bn.running_var is not None
    with torch.no_grad():
        var, mean = bn.running_var.double(), bn.running_mean.double()
        s = (bn.weight.double() if bn.weight is not None else torch.ones_like(var)) \
            / torch.sqrt(var + bn.eps)
        b = bn.bias.double() if bn.bias is not None else torch.zeros_like(s)
    return s, b - s * mean


def runs_direct(conv: nn.Module) -> bool:
    """Whether ``conv`` is a plain float conv the direct kernel computes."""
    return type(conv) is nn.Conv2d and conv.groups == 1 and conv.dilation == (1, 1) \
        and conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1] <= MAX_TAPS \
        and conv.padding_mode == "zeros" and not isinstance(conv.padding, str) \
        and conv.weight.dtype == torch.float32


class DirectConv2d(nn.Module):
    """A float conv (and a BatchNorm after it, folded) on the direct kernel; other
    devices and dtypes run ``F.conv2d`` on the same weights."""

    weight: Tensor
    bias: Tensor
    wt: Tensor
    bias_padded: Tensor

    def __init__(self, weight: Tensor, bias: Tensor, stride: tuple[int, int],
                 padding: tuple[int, int]) -> None:
        super().__init__()
        self.out_channels, self.in_channels, kh, kw = weight.shape
        self.kernel_size = (kh, kw)
        self.stride = stride
        self.padding = padding
        self.register_buffer("weight", weight.detach().float().contiguous())
        self.register_buffer("bias", bias.detach().float().contiguous())
        ocp = -(-self.out_channels // _BLOCK) * _BLOCK
        wt = torch.zeros(kh, kw, self.in_channels, ocp)
        wt[..., :self.out_channels] = self.weight.permute(2, 3, 1, 0)
        self.register_buffer("wt", wt.contiguous())
        self.register_buffer("bias_padded", F.pad(self.bias, (0, ocp - self.out_channels)))

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> DirectConv2d:
        bias = conv.bias if conv.bias is not None else torch.zeros(conv.out_channels)
        return cls(conv.weight, bias, cast(tuple[int, int], conv.stride),
                   cast(tuple[int, int], conv.padding))

    def folded(self, bn: nn.BatchNorm2d) -> DirectConv2d:
        """This conv followed by ``bn`` (eval mode) as one conv, computed in float64."""
        s, shift = bn_affine(bn)
        with torch.no_grad():
            w = self.weight.double() * s[:, None, None, None]
            b = self.bias.double() * s + shift
        return DirectConv2d(w.float(), b.float(), self.stride, self.padding)

    def forward(self, x: Tensor) -> Tensor:
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        if x.dtype == torch.float32 and x.device.type == "cpu" and x.dim() == 4:
            return cast(Tensor, load_kernels().small_conv2d(
                x, self.wt, self.bias_padded, self.out_channels, kh, kw, sh, sw, ph, pw))
        return F.conv2d(x, self.weight.to(x.dtype), self.bias.to(x.dtype), self.stride,
                        self.padding)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, direct kernel")


class PooledHead(nn.Module):
    """A CNN's head after its last conv in one pass: ``[BatchNorm] -> [ReLU] -> global
    average pool`` to ``[N, C, 1, 1]`` (torch runs three operators with an activation
    between each). The BatchNorm is held as its eval scale and shift."""

    scale: Tensor | None
    shift: Tensor | None

    def __init__(self, bn: nn.BatchNorm2d | None, relu: bool) -> None:
        super().__init__()
        self.relu = relu
        scale = shift = None
        if bn is not None:
            scale, shift = (t.float().contiguous() for t in bn_affine(bn))
        self.register_buffer("scale", scale)
        self.register_buffer("shift", shift)

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype == torch.float32 and x.device.type == "cpu" and x.dim() == 4:
            out = load_kernels().pooled_head(x, self.scale, self.shift, self.relu)
            return cast(Tensor, out)[:, :, None, None]
        if self.scale is not None and self.shift is not None:
            x = x * self.scale.to(x.dtype)[:, None, None] + self.shift.to(x.dtype)[:, None, None]
        return (torch.relu(x) if self.relu else x).mean((2, 3), keepdim=True)

    def extra_repr(self) -> str:
        parts = ["BatchNorm"] * (self.scale is not None) + ["ReLU"] * self.relu
        return " -> ".join([*parts, "global average pool"])


def fold_float_batchnorms(gm: fx.GraphModule) -> int:
    """Rewrite 1b: how many BatchNorms were folded into the float conv before them (a
    module offering ``folded(bn)``, :class:`DirectConv2d`)."""

    def folder(src: fx.Node) -> Folder | None:
        conv = called_module(gm, src)
        return conv.folded if isinstance(conv, DirectConv2d) and len(src.args) == 1 \
            and not src.kwargs else None

    return fold_batchnorms_into(gm, folder)


def _pool_to_one(m: nn.Module | None) -> bool:
    return isinstance(m, nn.AdaptiveAvgPool2d) and m.output_size in (1, (1, 1))


def fuse_pooled_heads(gm: fx.GraphModule) -> int:
    """Rewrite 6: how many ``[BatchNorm ->] ReLU -> global average pool`` ends now run as
    one pass (:class:`~.packed_float.PooledHead`), each value in between read by nothing
    else."""
    fused = 0
    for node in list(gm.graph.nodes):
        relu = node.args[0] if _pool_to_one(called_module(gm, node)) and len(node.args) == 1 \
            else None
        if not isinstance(relu, fx.Node) or len(relu.users) != 1 or not (
                relu_input(gm, relu) is not None or is_inplace_relu(gm, relu)):
            continue
        src = relu.args[0]
        bn = called_module(gm, src) if isinstance(src, fx.Node) else None
        if not (isinstance(bn, nn.BatchNorm2d) and bn.running_mean is not None
                and bn.running_var is not None and isinstance(src, fx.Node)
                and len(src.users) == 1 and len(src.args) == 1):
            bn = None
        x = src.args[0] if bn is not None and isinstance(src, fx.Node) else src
        name = added_module(gm, f"pooled_head_{fused}", PooledHead(bn, relu=True))
        with gm.graph.inserting_after(node):
            call = gm.graph.call_module(name, (x,))
        node.replace_all_uses_with(call)
        for dead in (node, relu, src if bn is not None else None):
            if isinstance(dead, fx.Node):
                gm.graph.erase_node(dead)
        fused += 1
    return fused
