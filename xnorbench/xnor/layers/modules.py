"""XNOR layers in the paper's block order: BatchNorm -> BinActive -> binary conv/linear.

``forward`` runs the fused path of :mod:`.functional` (one autograd node, bits kept for
backward); ``simulated`` is the same layer composed of plain autograd ops, kept as the
reference the fused path is tested against (and used for the paper's input scaling K).

Padding convention (shared with the packed kernels): a binarized convolution pads its
*binarized* input with +1, i.e. the value ``sign(0) = +1`` that a zero-padded input
binarizes to. Every operand of the binary convolution is then exactly +-1, which is
what a bit-packed XNOR + popcount kernel computes; the packed layer uses the same
convention, so simulated and packed outputs agree.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..sign.rules import bin_active, check_grad_rule, scaled_sign
from .functional import binary_conv2d, binary_linear


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class _XNORBase(nn.Module):
    """Shared state: gradient rule and whether the weight is already binarized.

    ``weight_is_binarized`` is set by :class:`BinOp` while it holds alpha * sign(W) in
    place of the latent weights (from ``binarizeConvParams`` to ``restore``, as the
    reference port does) and by ``load_packed`` (whose weights are stored as alpha *
    sign). The layer then uses its weight as-is instead of binarizing it a second time.
    """

    weight: nn.Parameter

    def __init__(self, grad_rule: str) -> None:
        super().__init__()
        self.grad_rule = check_grad_rule(grad_rule)
        self.weight_is_binarized = False

    def binary_weight(self) -> Tensor:
        """alpha * sign(W) with the layer's gradient rule (or W if already binarized)."""
        if self.weight_is_binarized:
            return self.weight
        return scaled_sign(self.weight, self.grad_rule)

    @property
    def weight_rule(self) -> str | None:
        """The rule the fused forward applies to the weight; None: use it as it is."""
        return None if self.weight_is_binarized else self.grad_rule

    @property
    def dropout_p(self) -> float:
        return float(getattr(self.dropout, "p", 0.0)) if self.training else 0.0


class XNORConv2d(_XNORBase):
    """BatchNorm2d -> BinActive -> [dropout] -> conv(sign(x), alpha*sign(W)) [* K] [+ b].

    ``scale_input=True`` enables the paper's K: the channel mean of |x| (after BN),
    box-filtered by the kernel, multiplied into the output. Off by default, as in both
    public implementations.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        bias: bool = False,
        scale_input: bool = False,
        dropout: float = 0.0,
        grad_rule: str = "corrected",
        bn_eps: float = 1e-4,
    ) -> None:
        super().__init__(grad_rule)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.scale_input = scale_input
        self.bn = nn.BatchNorm2d(in_channels, eps=bn_eps)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *self.kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")

    def input_scale(self, x_bn: Tensor) -> Tensor:
        """The paper's K: mean_c |x| box-filtered by the kernel (zero padded)."""
        a = x_bn.abs().mean(dim=1, keepdim=True)
        return F.avg_pool2d(a, self.kernel_size, self.stride, self.padding,
                            count_include_pad=True)

    def forward(self, x: Tensor) -> Tensor:
        """The fused path (:mod:`.functional`); with the paper's K, :meth:`simulated`."""
        if self.scale_input:
            return self.simulated(x)
        return binary_conv2d(self.bn(x), self.weight, self.bias, self.stride, self.padding,
                             self.weight_rule, self.dropout_p, owns_input=True)

    def simulated(self, x: Tensor) -> Tensor:
        """The layer as plain autograd composes it: BinActive, pad +1, conv (reference)."""
        x = self.bn(x)
        xb = self.dropout(bin_active(x))
        ph, pw = self.padding
        if ph or pw:
            xb = F.pad(xb, (pw, pw, ph, ph), value=1.0)
        out = F.conv2d(xb, self.binary_weight(), None, self.stride)
        if self.scale_input:
            out = out * self.input_scale(x)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1, 1)
        return out

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding} (pad value +1), "
                f"bias={self.bias is not None}, scale_input={self.scale_input}, "
                f"grad_rule={self.grad_rule}")


class XNORLinear(_XNORBase):
    """BatchNorm1d -> BinActive -> [dropout] -> linear(sign(x), alpha*sign(W)) [+ b].

    ``flatten_input=True`` (the built-in networks) flattens each sample to one vector, so
    a conv's 4-D output feeds it directly. ``False`` (what ``binarize`` makes of an
    ``nn.Linear``) works as ``nn.Linear`` does, along the last dimension: an input
    (..., in_features) is that many vectors (tokens), each normalized by the same
    per-feature BatchNorm, binarized and multiplied on its own, and the output keeps the
    leading dimensions. On a 2-D input the two are the same.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        dropout: float = 0.0,
        grad_rule: str = "corrected",
        bn_eps: float = 1e-4,
        flatten_input: bool = True,
    ) -> None:
        super().__init__(grad_rule)
        self.flatten_input = flatten_input
        self.in_features = in_features
        self.out_features = out_features
        self.bn = nn.BatchNorm1d(in_features, eps=bn_eps)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)

    def forward(self, x: Tensor) -> Tensor:
        """The fused path (:mod:`.functional`)."""
        rows, lead = linear_rows(x, self.flatten_input)
        out = binary_linear(self.bn(rows), self.weight, self.bias, self.weight_rule,
                            self.dropout_p)
        return out.reshape(*lead, self.out_features)

    def simulated(self, x: Tensor) -> Tensor:
        """The layer as plain autograd composes it (reference for tests)."""
        rows, lead = linear_rows(x, self.flatten_input)
        xb = self.dropout(bin_active(self.bn(rows)))
        return F.linear(xb, self.binary_weight(), self.bias).reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return (f"{self.in_features}, {self.out_features}, bias={self.bias is not None}, "
                f"grad_rule={self.grad_rule}" + (
                    "" if self.flatten_input else ", along the last dimension"))


def linear_rows(x: Tensor, flatten_input: bool) -> tuple[Tensor, tuple[int, ...]]:
    """``x`` as the matrix of vectors a binary linear layer multiplies, and the leading
    shape its output takes back (see :class:`XNORLinear`; its packed form does the same)."""
    if flatten_input or x.dim() == 2:
        return torch.flatten(x, 1), (x.shape[0],)
    return x.reshape(-1, x.shape[-1]), tuple(x.shape[:-1])


BINARY_LAYERS = (XNORConv2d, XNORLinear)


def binary_layers(model: nn.Module) -> list[tuple[str, _XNORBase]]:
    """Every XNOR layer of ``model`` with its qualified name, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, BINARY_LAYERS)]
