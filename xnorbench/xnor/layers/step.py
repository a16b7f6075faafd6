"""One training step of an XNOR network, the paper's Algorithm 1, for any model.

The step is the same for a float network (plain autograd) and for the two XNOR training
paths: :class:`~xnorbench.xnor.FusedXNOR` (weights binarized inside the layers' forward,
the gradient rule applied in their backward) and :class:`~xnorbench.xnor.BinOp` (the
reference port's workflow: binarize the latent weights in place, forward and backward on
the binary weights, restore the latent weights, correct their gradient). It lives beside
the layers so that training loops and the memory probes run one and the same step.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol

import torch
from torch import nn

from ...variants import Variant
from .binop import BinOp
from .fused import FusedXNOR


class XNORStep(Protocol):
    """What a training step calls around forward and backward for an XNOR model, on
    either training path (``xnor_path``): :class:`FusedXNOR` (``fused``) or
    :class:`BinOp` (``binop``)."""

    def before_forward(self) -> None:
        """Make the latent weights ready for a forward pass."""

    def after_backward(self) -> None:
        """Leave dC/dW on the latent weights (before the optimizer steps)."""

    def evaluating(self) -> AbstractContextManager[None]:
        """A context in which the model evaluates as the binary network it trains."""
        ...

    def release(self) -> None:
        """Stop managing the model, its latent weights in place."""


def clamp_bn_scales(model: nn.Module, minimum: float | None) -> None:
    """The port's guard: every affine BatchNorm scale clamped to >= ``minimum``."""
    if minimum is None:
        return
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None:
                m.weight.clamp_(min=minimum)


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
               opt: torch.optim.Optimizer, step: XNORStep | None = None, amp: bool = False,
               bn_gamma_min: float | None = None, label_smoothing: float = 0.0
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step; XNOR models go through ``step``. Returns (out, loss).

    BinOp: binarize the latent weights in place, forward/backward on the binarized
    weights, restore the latent weights, turn dC/dWt into dC/dW, then step.
    FusedXNOR: center and clamp the latent weights; the layers do the rest.
    """
    clamp_bn_scales(model, bn_gamma_min)
    if step is not None:
        step.before_forward()
    with autocast(x.device.type, amp):
        out = model(x)
        loss = nn.functional.cross_entropy(out.float(), y, label_smoothing=label_smoothing)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if step is not None:
        step.after_backward()
    opt.step()
    return out, loss


def autocast(device: str, amp: bool) -> Any:
    if not amp:
        return nullcontext()
    return torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu",
                          dtype=torch.bfloat16)


def step_for(model: nn.Module, variant: str, grad_rule: str | None = None
             ) -> BinOp | FusedXNOR | None:
    """The training path a variant names for ``model`` (:mod:`xnorbench.variants`):
    ``xnor_fused`` or ``xnor_binop``; None for ``float`` (plain autograd). ``grad_rule``:
    the rule BinOp applies (the fused layers carry their own; it is checked against
    them); None: the default, corrected."""
    if variant == Variant.XNOR_FUSED:
        return FusedXNOR(model, grad_rule)
    if variant == Variant.XNOR_BINOP:
        return BinOp(model, grad_rule or "corrected")
    if variant != Variant.FLOAT:
        raise ValueError(f"{variant!r} names no training step; choose one of "
                         "float, xnor_fused, xnor_binop")
    return None
