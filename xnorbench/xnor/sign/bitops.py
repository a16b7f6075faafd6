"""The elementwise work of XNOR training, in one pass each, keeping bits instead of floats.

Float32 CPU tensors go to the C++ operators of ``csrc/train_ops.cpp`` (one dispatched
operator per job); anything else (CUDA, bfloat16) to the torch expressions below, which
compute the same values with the same bit layout. Both training paths (``BinOp`` and the
fused layers) call these same functions, so they cannot disagree.

Bit layout: element i of a tensor's memory order is bit ``i % 8`` of byte ``i // 8``.
Memory order, not logical order, so channels-last tensors need no copy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from ...variants import GradRule
from ..kernels import train_ops
from . import compiled
from .rules import filter_alpha, sign
from .rules import scaled_sign_grad as scaled_sign_grad_reference

_TORCH_OPS = [False]


def _native(*tensors: Tensor) -> bool:
    """Whether the C++ operators take these tensors (float32 on the CPU)."""
    return not _TORCH_OPS[0] and all(
        t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)


uses_native = _native


@contextlib.contextmanager
def torch_ops() -> Iterator[None]:
    """Within: every tensor takes the path CUDA tensors take (torch operators, compiled
    per layer where :mod:`.compiled` applies), also float32 CPU tensors. For tests and
    for counting on a CPU the operators a GPU step dispatches."""
    before = _TORCH_OPS[0]
    _TORCH_OPS[0] = True
    try:
        yield
    finally:
        _TORCH_OPS[0] = before


def dense(x: Tensor) -> Tensor:
    """``x`` if it is contiguous or channels-last contiguous, else a contiguous copy."""
    if x.is_contiguous() or (x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)):
        return x
    return x.contiguous()


def pack_bool(mask: Tensor, like: Tensor | None = None) -> Tensor:
    """A dense bool tensor as bits (``ceil(n / 8)`` uint8), in memory order.

    With ``like``, in ``like``'s memory order (the order the bits are unpacked in), even
    if an operator handed ``mask`` back in another layout.
    """
    if like is not None and mask.stride() != like.stride():
        mask = torch.empty_like(like, dtype=torch.bool).copy_(mask)
    return compiled.pack_flat(compiled.flat(mask))


Layout = tuple[torch.Size, tuple[int, ...]]
"""(shape, strides) of a dense tensor: what bits need to become that tensor again."""


def layout(x: Tensor) -> Layout:
    return x.shape, x.stride()


def unpack_bool(bits: Tensor, like: Layout) -> Tensor:
    """The bool tensor ``pack_bool`` packed, with the shape and strides ``like``."""
    shape, stride = like
    return compiled.unpack_flat(bits, shape.numel()).as_strided(shape, stride)


def sign_bits(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(sign(x) as +-1 in x's dtype, bits of x < 0, bits of |x| < 1).

    The signs feed the binary conv; the two bit planes are all its backward needs
    (``x < 0`` rebuilds the conv's input for the weight gradient, ``|x| < 1`` is
    BinActive's straight-through mask): 2 bits per element instead of a float.
    """
    x = dense(x)
    if _native(x):
        return train_ops().sign_bits(x)
    return sign(x), pack_bool(x < 0, x), pack_bool(x.abs() < 1, x)


def sign_bits_(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`sign_bits` with the signs written over ``x`` (dense; a tensor the caller
    owns and nothing else reads, e.g. a BatchNorm output): no new float tensor."""
    if _native(x) and x is dense(x):
        neg, ste = train_ops().sign_bits_(x)
        return x, neg, ste
    return sign_bits(x)


def kept_bits(s: Tensor) -> Tensor:
    """Bits of ``s != 0``: which elements dropout kept."""
    s = dense(s)
    if _native(s):
        return train_ops().nonzero_bits(s)
    return pack_bool(s != 0, s)


def signs_from_bits(bits: Tensor, like: Layout, dtype: torch.dtype, keep: Tensor | None = None,
                    scale: float = 1.0) -> Tensor:
    """+-1 with the shape and strides ``like`` from ``x < 0`` bits; under dropout
    (``keep`` bits, ``scale`` = 1/(1-p)): 0 where dropped, +-scale where kept."""
    if bits.device.type == "cpu" and dtype == torch.float32:
        flat = train_ops().signs_from_bits(bits, like[0].numel(), keep, scale)
        return flat.as_strided(*like)
    neg = unpack_bool(bits, like)
    s = torch.where(neg, torch.tensor(-1.0, dtype=dtype, device=neg.device),
                    torch.tensor(1.0, dtype=dtype, device=neg.device))
    if keep is not None:
        s = s * unpack_bool(keep, like).to(dtype) * scale
    return s


def grad_through_bits(grad: Tensor, bits: Tensor, keep: Tensor | None = None,
                      scale: float = 1.0) -> Tensor:
    """``grad`` where the bit is set, else 0 (``grad`` laid out like the packed tensor);
    under dropout also 0 where dropped, and times ``scale`` where kept."""
    grad = dense(grad)
    if _native(grad):
        return train_ops().grad_through_bits(grad, bits, keep, scale)
    out = grad * unpack_bool(bits, layout(grad)).to(grad.dtype)
    if keep is not None:
        out = out * unpack_bool(keep, layout(grad)).to(grad.dtype) * scale
    return out


def binarize_weight(weight: Tensor) -> Tensor:
    """alpha * sign(W), alpha = mean |W| per output filter (dim 0)."""
    if _native(weight):
        return train_ops().binarize_weight(weight)
    return filter_alpha(weight) * sign(weight)


def weight_grad_(grad_wt: Tensor, weight: Tensor, rule: str) -> Tensor:
    """:func:`weight_grad` written into ``grad_wt`` (a gradient the caller owns)."""
    if _native(weight, grad_wt) and grad_wt.is_contiguous() and weight.is_contiguous():
        train_ops().scaled_sign_grad_(grad_wt, weight, GradRule(rule).code)
        return grad_wt
    return grad_wt.copy_(weight_grad(weight, grad_wt, rule))


def grad_through_bits_(grad: Tensor, bits: Tensor, keep: Tensor | None = None,
                       scale: float = 1.0) -> Tensor:
    """:func:`grad_through_bits` written into ``grad`` (dense; a gradient the caller owns)."""
    if _native(grad) and grad is dense(grad):
        train_ops().grad_through_bits_(grad, bits, keep, scale)
        return grad
    return grad.copy_(grad_through_bits(grad, bits, keep, scale))


def alphas(weight: Tensor) -> Tensor:
    """alpha per output filter (1-D), exactly the one :func:`binarize_weight` multiplies by."""
    wb = binarize_weight(weight)
    return wb.reshape(wb.shape[0], -1)[:, 0].abs()


def weight_grad(weight: Tensor, grad_wt: Tensor, rule: str) -> Tensor:
    """dC/dW from dC/dWt by ``rule``: :func:`binarize.scaled_sign_grad`, in one pass."""
    if _native(weight, grad_wt):
        return train_ops().scaled_sign_grad(weight, grad_wt, GradRule(rule).code)
    return scaled_sign_grad_reference(weight, grad_wt, rule)


def border_add_(out: Tensor, wb: Tensor, hw: tuple[int, int], stride: tuple[int, int],
                padding: tuple[int, int]) -> Tensor:
    """Add to a zero-padded conv's ``out`` what +1 padding adds (see :mod:`.functional`)."""
    if _native(out, wb):
        train_ops().border_add_(out, wb, *hw, *stride, *padding)
        return out
    ring = padding_ring(*hw, *padding, wb.dtype, wb.device)
    return out.add_(F.conv2d(ring, wb.sum(1, keepdim=True), None, stride).to(out.dtype))


def border_grad_add_(gwb: Tensor, grad: Tensor, hw: tuple[int, int], stride: tuple[int, int],
                     padding: tuple[int, int]) -> Tensor:
    """Add the border term's weight gradient to ``gwb`` (the same for every channel)."""
    if _native(gwb, grad) and gwb.is_contiguous():
        train_ops().border_grad_add_(gwb, grad, *hw, *stride, *padding)
        return gwb
    ring = padding_ring(*hw, *padding, grad.dtype, grad.device)
    wshape = torch.empty(gwb.shape[0], 1, *gwb.shape[2:], dtype=grad.dtype, device=grad.device)
    g = torch.ops.aten.convolution_backward(
        grad.sum(0, keepdim=True), ring, wshape, None, stride, (0, 0), (1, 1), False, (0, 0),
        1, (False, True, False))[1]
    return gwb.add_(g.to(gwb.dtype))


_RINGS: dict[tuple, Tensor] = {}


def padding_ring(h: int, w: int, ph: int, pw: int, dtype: torch.dtype,
                 device: torch.device) -> Tensor:
    """(1, 1, h + 2ph, w + 2pw): 1 on the padding ring, 0 inside (cached)."""
    key = (h, w, ph, pw, dtype, device)
    if key not in _RINGS:
        ring = torch.ones(1, 1, h + 2 * ph, w + 2 * pw, dtype=dtype, device=device)
        ring[..., ph:ph + h, pw:pw + w] = 0
        _RINGS[key] = ring
    return _RINGS[key]


@torch.no_grad()
def center_clamp_(weights: list[Tensor]) -> None:
    """The port's per-step latent-weight preparation: W -= mean over dim 1, clamp to +-1."""
    native = [w for w in weights if _native(w) and w.is_contiguous()]
    if native:
        train_ops().center_clamp_(native)
    rest = [w for w in weights if not (_native(w) and w.is_contiguous())]
    if rest:
        compiled.compiled_center_clamp(rest)
