"""One training step of an XNOR network, the paper's Algorithm 1, for any model.

The step is the same for a float network (plain autograd) and for the two XNOR training
paths: :class:`~xnorbench.xnor.FusedXNOR` (weights binarized inside the layers' forward,
the gradient rule applied in their backward) and :class:`~xnorbench.xnor.BinOp` (the
reference port's workflow: binarize the latent weights in place, forward and backward on
the binary weights, restore the latent weights, correct their gradient). It lives beside
the layers so that training loops and the memory probes run one and the same step.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from ..variants import Variant
from .binop import BinOp
from .fused import FusedXNOR

XNORStep = BinOp | FusedXNOR
"""What a training step calls around forward/backward for an XNOR model (same API)."""


def clamp_bn_scales(model: nn.Module, minimum: float | None) -> None:
    """The port's guard: every affine BatchNorm scale clamped to >= ``minimum``."""
    if minimum is None:
        return
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None:
                m.weight.clamp_(min=minimum)


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
               opt: torch.optim.Optimizer, bin_op: XNORStep | None = None, amp: bool = False,
               bn_gamma_min: float | None = None, label_smoothing: float = 0.0
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step; XNOR models go through ``bin_op``. Returns (out, loss).

    BinOp: binarize the latent weights in place, forward/backward on the binarized
    weights, restore the latent weights, turn dC/dWt into dC/dW, then step.
    FusedXNOR: center and clamp the latent weights; the layers do the rest.
    """
    clamp_bn_scales(model, bn_gamma_min)
    if bin_op is not None:
        bin_op.binarization()
    with autocast(x.device.type, amp):
        out = model(x)
        loss = nn.functional.cross_entropy(out.float(), y, label_smoothing=label_smoothing)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if bin_op is not None:
        bin_op.restore()
        bin_op.updateBinaryGradWeight()
    opt.step()
    return out, loss


def autocast(device: str, amp: bool) -> Any:
    if not amp:
        return nullcontext()
    return torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu",
                          dtype=torch.bfloat16)


def step_for(model: nn.Module, variant: str, grad_rule: str | None = None
             ) -> XNORStep | None:
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
