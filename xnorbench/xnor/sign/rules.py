"""Binarization primitives: sign with sign(0)=+1, BinActive, and the scaled sign.

The scaled sign ``alpha * sign(W)`` (alpha = mean |W| per output filter) carries three
selectable weight-gradient rules (derived in docs/GRADIENT.md):

* ``"corrected"`` (default) -- the exact chain rule through alpha with a
  straight-through estimator for sign:
  ``dC/dW_i = (1/n) sign(W_i) sum_j g_j sign(W_j) + g_i alpha 1[|W_i| <= 1]``
* ``"paper"`` -- the rule printed in Rastegari et al. (2016):
  ``dC/dW_i = g_i (1/n + alpha 1[|W_i| <= 1])``
* ``"reference"`` -- the public PyTorch port's rule: corrected x ``(1 - 1/C_in) n``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...variants import GRAD_RULES


def sign(x: Tensor) -> Tensor:
    """Sign with ``sign(0) = +1``: every value becomes exactly +1 or -1.

    ``torch.sign(0) == 0`` would create a weight that is neither +1 nor -1 and
    break the equality between the simulated layer and the bit-packed one.
    """
    return torch.where(x < 0, x.new_full((), -1.0), x.new_full((), 1.0))


def check_grad_rule(rule: str) -> str:
    """Return ``rule`` if it is a known gradient rule, else raise ``ValueError``."""
    if rule not in GRAD_RULES:
        raise ValueError(f"unknown grad_rule {rule!r}; choose one of {', '.join(GRAD_RULES)}")
    return rule


def filter_alpha(weight: Tensor) -> Tensor:
    """alpha = mean |W| per output filter, shaped to broadcast against ``weight``."""
    dims = tuple(range(1, weight.dim()))
    return weight.abs().mean(dim=dims, keepdim=True)


def scaled_sign_grad(weight: Tensor, grad_wt: Tensor, rule: str = "corrected") -> Tensor:
    """Weight gradient of ``alpha(W) * sign(W)`` given ``grad_wt = dC/dWt``.

    ``weight`` is the real-valued (latent) weight, first dim = output filters.
    This one function serves both the autograd path and ``BinOp``, so the two can
    never disagree for the same rule.
    """
    check_grad_rule(rule)
    dims = tuple(range(1, weight.dim()))
    n = weight[0].numel()
    s = sign(weight)
    alpha = filter_alpha(weight)
    ste = (weight.abs() <= 1).to(weight.dtype)
    if rule == "paper":
        return grad_wt * (1.0 / n + alpha * ste)
    grad = s * (grad_wt * s).sum(dim=dims, keepdim=True) / n + grad_wt * alpha * ste
    if rule == "reference":
        c_in = weight.shape[1]
        grad = grad * (1.0 - 1.0 / c_in) * n
    return grad


class _ScaledSign(torch.autograd.Function):
    """Forward ``alpha * sign(W)``; backward by the selected rule."""

    @staticmethod
    def forward(ctx, weight: Tensor, rule: str) -> Tensor:
        ctx.save_for_backward(weight)
        ctx.rule = rule
        return filter_alpha(weight) * sign(weight)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        (weight,) = ctx.saved_tensors
        return scaled_sign_grad(weight, grad_out, ctx.rule), None


def scaled_sign(weight: Tensor, grad_rule: str = "corrected") -> Tensor:
    """Differentiable ``alpha * sign(W)`` with alpha over every dim but the first."""
    check_grad_rule(grad_rule)
    return _ScaledSign.apply(weight, grad_rule)


class _BinActive(torch.autograd.Function):
    """Forward ``sign(x)``; backward straight-through ``g * 1[|x| < 1]``."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return sign(x)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        (x,) = ctx.saved_tensors
        return grad_out * (x.abs() < 1).to(grad_out.dtype)


def bin_active(x: Tensor) -> Tensor:
    """Binarize activations to +-1 with the straight-through gradient."""
    return _BinActive.apply(x)


class BinActive(torch.nn.Module):
    """Module form of :func:`bin_active`."""

    def forward(self, x: Tensor) -> Tensor:
        return bin_active(x)
