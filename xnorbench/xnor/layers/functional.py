"""The fused XNOR training path: one autograd node per binary layer, bits saved for backward.

``binary_conv2d(x, W, ...)`` is BinActive -> [dropout] -> conv(sign(x), alpha * sign(W))
as a single :class:`torch.autograd.Function`:

* the weight is binarized inside forward and its gradient rule applied inside backward,
  so a training step needs no save / copy / restore of every weight (``BinOp``'s
  workflow) and no Python loop over layers after backward;
* backward keeps two bits per input element (sign(x) rebuilds the conv's input for the
  weight gradient; |x| < 1 is BinActive's straight-through mask) and one more under
  dropout, instead of the float activations plain autograd would keep; alpha * sign(W)
  is recomputed in backward (one pass over the weight) rather than kept;
* the conv runs with zero padding plus a border term, which is exactly the +1 padding
  of the layer convention (see ``layers.py``) without copying a padded input: +1
  padding adds, at each output, the sum of the weights whose taps fall on padding. That
  sum is a tiny conv of a padding indicator with the channel-summed weight.

``rule=None`` uses the weight as given and returns dC/dWt for it: that is what the
``BinOp`` path feeds (weights binarized in place beforehand, the rule applied after).
Both paths therefore run this same code, which is why they train identically.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..sign import bitops, compiled


def _cast(t: Tensor, dtype: torch.dtype) -> Tensor:
    """``t`` in ``dtype``, without dispatching anything when it already is."""
    return t if t.dtype == dtype else t.to(dtype)


def _as_layout(t: Tensor, like: bitops.Layout) -> Tensor:
    """``t`` with the strides ``like`` (a copy only if they differ)."""
    if t.stride() == like[1]:
        return t
    return torch.empty_strided(*like, dtype=t.dtype, device=t.device).copy_(t)


class _BinaryConv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None,
                stride: tuple[int, int], padding: tuple[int, int], rule: str | None,
                dropout: float, owns_input: bool) -> Tensor:
        x = bitops.dense(x)
        if _compiled_path(x, weight, dropout):
            w = weight.detach()
            s, wb, wsum, neg, ste = compiled.compiled_forward_operands(compiled.flat(x), w,
                                                                       rule, True)
            ctx.save_for_backward(neg, ste, w)
            ctx.meta = (bitops.layout(x), x.dtype, stride, padding, rule, bias is not None)
            ctx.compiled = True
            return _plus_one_padded_conv(s.as_strided(*bitops.layout(x)), wb, wsum, bias,
                                         stride, padding)
        ctx.compiled = False
        s, neg, ste = bitops.sign_bits_(x) if owns_input else bitops.sign_bits(x)
        keep = None
        if dropout > 0:
            s = F.dropout(s, dropout, True)
            keep = bitops.kept_bits(s)
        wb = weight if rule is None else bitops.binarize_weight(weight)
        out = F.conv2d(_cast(s, wb.dtype), wb, bias, stride, padding)
        hw = (x.shape[2], x.shape[3])
        if padding != (0, 0):
            out = bitops.border_add_(out, wb, hw, stride, padding)
        ctx.save_for_backward(neg, ste, keep, weight)
        ctx.meta = (bitops.layout(x), x.dtype, s.dtype, hw, stride, padding, rule, dropout,
                    bias is not None)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        if ctx.compiled:
            return (*_compiled_backward(ctx, bitops.dense(grad)), None, None, None, None, None)
        neg, ste, keep, weight = ctx.saved_tensors
        x_layout, x_dtype, s_dtype, hw, stride, padding, rule, dropout, has_bias = ctx.meta
        wb = weight if rule is None else bitops.binarize_weight(weight)  # not kept: recomputed
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        scale = 1.0 / (1.0 - dropout)
        s = _cast(bitops.signs_from_bits(neg, x_layout, s_dtype, keep, scale), grad.dtype)
        wc = _cast(wb, grad.dtype)
        gx, gwb, gb = torch.ops.aten.convolution_backward(
            grad, s, wc, [wb.shape[0]] if has_bias else None, stride, padding,
            (1, 1), False, (0, 0), 1, (need_x, need_w, need_b and has_bias))
        gw = None
        if need_w:
            if padding != (0, 0):
                gwb = bitops.border_grad_add_(gwb, grad, hw, stride, padding)
            gwb = _cast(gwb, wb.dtype)
            gw = gwb if rule is None else bitops.weight_grad_(gwb, weight, rule)
        if need_x:
            gx = _as_layout(_cast(gx, x_dtype), x_layout)
            gx = bitops.grad_through_bits_(gx, ste, keep, scale)
        return gx, gw, gb if need_b else None, None, None, None, None, None


class _BinaryLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None,
                rule: str | None, dropout: float) -> Tensor:
        x = x.contiguous()
        s, neg, ste = bitops.sign_bits(x)
        keep = None
        if dropout > 0:
            s = F.dropout(s, dropout, True)
            keep = bitops.kept_bits(s)
        wb = weight if rule is None else bitops.binarize_weight(weight)
        out = F.linear(_cast(s, wb.dtype), wb, bias)
        ctx.save_for_backward(neg, ste, keep, weight)
        ctx.meta = (bitops.layout(x), x.dtype, s.dtype, rule, dropout)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        neg, ste, keep, weight = ctx.saved_tensors
        x_layout, x_dtype, s_dtype, rule, dropout = ctx.meta
        wb = weight if rule is None else bitops.binarize_weight(weight)  # not kept: recomputed
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        scale = 1.0 / (1.0 - dropout)
        gx = gw = gb = None
        if need_w:
            s = _cast(bitops.signs_from_bits(neg, x_layout, s_dtype, keep, scale), grad.dtype)
            gwb = _cast(grad.t() @ s, wb.dtype)
            gw = gwb if rule is None else bitops.weight_grad_(gwb, weight, rule)
        if need_x:
            gx = _cast(grad @ _cast(wb, grad.dtype), x_dtype)
            gx = bitops.grad_through_bits_(gx, ste, keep, scale)
        if need_b:
            gb = grad.sum(0)
        return gx, gw, gb, None, None


def _compiled_path(x: Tensor, weight: Tensor, dropout: float) -> bool:
    """Whether the conv runs as :mod:`.compiled` graphs: tensors the C++ operators do
    not take (CUDA, bfloat16), a 4-D input, no dropout (dropout stays on the eager path)."""
    return not bitops.uses_native(x, weight) and dropout == 0 and x.dim() == 4


def _plus_one_padded_conv(s: Tensor, wb: Tensor, wsum: Tensor, bias: Tensor | None,
                          stride: tuple[int, int], padding: tuple[int, int]) -> Tensor:
    """conv(s padded with +1, wb) [+ b]: the zero-padded conv plus the border term, a
    conv of the padding ring with the channel-summed weight ``wsum``."""
    out = F.conv2d(s, wb, None if bias is None else _cast(bias, s.dtype), stride, padding)
    if padding != (0, 0):
        ring = bitops.padding_ring(s.shape[2], s.shape[3], *padding, wsum.dtype, wsum.device)
        out = out.add_(F.conv2d(ring, wsum, None, stride))
    return out


def _compiled_backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None,
                                                        Tensor | None]:
    """(dC/dx, dC/dW, dC/db) of the compiled path's forward (:mod:`.compiled`)."""
    neg, ste, w = ctx.saved_tensors
    x_layout, x_dtype, stride, padding, rule, has_bias = ctx.meta
    shape = x_layout[0]
    need_x, need_w, need_b = ctx.needs_input_grad[:3]
    border = need_w and padding != (0, 0)
    s, wb, grad_sum = compiled.compiled_backward_operands(
        neg, w, compiled.flat(grad), shape.numel(), shape[0], rule, border)
    gs, gwb, gb = torch.ops.aten.convolution_backward(
        grad, s.as_strided(*x_layout), wb, [wb.shape[0]] if has_bias else None, stride,
        padding, (1, 1), False, (0, 0), 1, (need_x, need_w, need_b and has_bias))
    g_border = None
    if border:  # the border term's weight gradient (the same for every input channel)
        ring = bitops.padding_ring(shape[2], shape[3], padding[0], padding[1], grad.dtype,
                                  grad.device)
        grad_sum = grad_sum.as_strided((1, *grad.shape[1:]), grad.stride())  # one sample
        g_border = torch.ops.aten.convolution_backward(
            grad_sum, ring, wb.new_empty(wb.shape[0], 1, *wb.shape[2:]), None, stride,
            (0, 0), (1, 1), False, (0, 0), 1, (False, True, False))[1]
    gs_flat = compiled.flat(_as_layout(gs, x_layout)) if need_x else None
    gx, gw = compiled.compiled_backward_results(gs_flat, ste, gwb if need_w else None,
                                                g_border, w, x_dtype, rule)
    if gx is not None:
        gx = gx.as_strided(*x_layout)
    return gx, gw, _cast(gb, w.dtype) if need_b and has_bias else None


def _signs(x: Tensor, dropout: float, owns_input: bool = False) -> Tensor:
    s = (bitops.sign_bits_(x) if owns_input else bitops.sign_bits(x))[0]
    return F.dropout(s, dropout) if dropout > 0 else s


def _tracks_grad(*tensors: Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def binary_conv2d(x: Tensor, weight: Tensor, bias: Tensor | None, stride: tuple[int, int],
                  padding: tuple[int, int], rule: str | None, dropout: float = 0.0,
                  owns_input: bool = False) -> Tensor:
    """conv(dropout(sign(x)) padded with +1, alpha * sign(W)) [+ bias], one autograd node.

    ``rule=None``: ``weight`` is used as given (already binarized) and gets dC/dWt.
    ``dropout`` is the probability in training (0 in eval). ``owns_input``: ``x`` is a
    temporary nothing else reads (the layer's BatchNorm output), so its signs may be
    written over it. Without autograd (eval, ``no_grad``) it computes the same output
    and keeps nothing.
    """
    if _tracks_grad(x, weight, bias):
        return _BinaryConv2d.apply(x, weight, bias, stride, padding, rule, dropout, owns_input)
    if _compiled_path(x, weight, dropout):
        x = bitops.dense(x)
        s, wb, wsum, _, _ = compiled.compiled_forward_operands(compiled.flat(x),
                                                               weight.detach(), rule, False)
        return _plus_one_padded_conv(s.as_strided(*bitops.layout(x)), wb, wsum, bias, stride,
                                     padding)
    wb = weight if rule is None else bitops.binarize_weight(weight)
    out = F.conv2d(_cast(_signs(x, dropout, owns_input), wb.dtype), wb, bias, stride, padding)
    if padding != (0, 0):
        out = bitops.border_add_(out, wb, (x.shape[2], x.shape[3]), stride, padding)
    return out


def binary_linear(x: Tensor, weight: Tensor, bias: Tensor | None, rule: str | None,
                  dropout: float = 0.0) -> Tensor:
    """linear(dropout(sign(x)), alpha * sign(W)) [+ bias], one autograd node."""
    if _tracks_grad(x, weight, bias):
        return _BinaryLinear.apply(x, weight, bias, rule, dropout)
    wb = weight if rule is None else bitops.binarize_weight(weight)
    return F.linear(_cast(_signs(x, dropout), wb.dtype), wb, bias)
