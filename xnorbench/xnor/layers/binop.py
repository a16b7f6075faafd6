"""``BinOp``: the reference port's training workflow, with the corrected gradient.

Usage per training step (the method names are the port's, so its users recognise them)::

    bin_op = BinOp(model)
    bin_op.binarization()          # center, clamp, save latent weights, binarize in place
    loss = criterion(model(x), y)
    loss.backward()                # autograd delivers dC/dWt to the binarized weights
    bin_op.restore()               # put the latent weights back
    bin_op.updateBinaryGradWeight()  # turn dC/dWt into dC/dW by the chosen rule
    optimizer.step()

Between ``binarizeConvParams`` and ``restore`` the layers hold ``alpha * sign(W)`` and are
marked ``weight_is_binarized`` (they use the weight as it is); outside that window they
hold the latent weights and binarize them themselves, so a model a BinOp has managed is
always a complete XNOR model: evaluating it, packing it or saving it gives the same
binary network whichever state it is in. A training loop calls it through
:class:`~.step.XNORStep` (``before_forward``, ``after_backward``, ``evaluating``), the
port's calls in that order.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from ..sign import bitops
from ..sign.rules import check_grad_rule
from .modules import binary_layers


class BinOp:
    """Binarizes exactly the XNOR layers of a model, the reference port's way."""

    def __init__(self, model: nn.Module, grad_rule: str = "corrected") -> None:
        self.grad_rule = check_grad_rule(grad_rule)
        self.target_layers = [m for _, m in binary_layers(model)]
        if not self.target_layers:
            raise ValueError("BinOp: the model has no XNORConv2d/XNORLinear layer")
        # one entry per Parameter: a weight tied between two layers is prepared and its
        # gradient turned once (its two layers' gradients are already summed in it)
        self.target_modules: list[nn.Parameter] = list(
            {id(m.weight): m.weight for m in self.target_layers}.values())
        self.saved_params: list[Tensor] = [p.data.clone() for p in self.target_modules]

    @property
    def num_of_params(self) -> int:
        return len(self.target_modules)

    def binarization(self) -> None:
        """Center, clamp and save the latent weights, then binarize them in place.

        Centering and clamping run as one operator over every layer (the same one the
        fused path runs), which equals ``meancenterConvParams(); clampConvParams()``.
        """
        bitops.center_clamp_([p.data for p in self.target_modules])
        self.save_params()
        self.binarizeConvParams()

    def meancenterConvParams(self) -> None:
        """Subtract each filter's mean over input channels (dim 1)."""
        for p in self.target_modules:
            p.data.sub_(p.data.mean(1, keepdim=True))

    def clampConvParams(self) -> None:
        for p in self.target_modules:
            p.data.clamp_(-1.0, 1.0)

    def save_params(self) -> None:
        for saved, p in zip(self.saved_params, self.target_modules):
            saved.copy_(p.data)

    def binarizeConvParams(self) -> None:
        """W <- alpha * sign(W), alpha = mean |W| per output filter."""
        for p in self.target_modules:
            p.data.copy_(bitops.binarize_weight(p.data))
        self._mark(True)

    def restore(self) -> None:
        """Put the saved latent weights back; the layers binarize themselves again."""
        for saved, p in zip(self.saved_params, self.target_modules):
            p.data.copy_(saved)
        self._mark(False)

    def _mark(self, binarized: bool) -> None:
        for layer in self.target_layers:
            layer.weight_is_binarized = binarized

    @torch.no_grad()
    def updateBinaryGradWeight(self) -> None:
        """Replace dC/dWt by dC/dW (``grad_rule``) on the restored latent weights."""
        for p in self.target_modules:
            if p.grad is not None:
                bitops.weight_grad_(p.grad, p.data, self.grad_rule)

    def before_forward(self) -> None:
        """:class:`~.step.XNORStep`: the port's ``binarization``."""
        self.binarization()

    def after_backward(self) -> None:
        """:class:`~.step.XNORStep`: the port's ``restore``, then
        ``updateBinaryGradWeight``."""
        self.restore()
        self.updateBinaryGradWeight()

    @contextmanager
    def evaluating(self) -> Iterator[None]:
        """The weights binarized in place for an evaluation, the latent ones restored
        after it."""
        self.binarization()
        try:
            yield
        finally:
            self.restore()

    def release(self) -> None:
        """Stop managing the model (restores the latent weights if they are binarized)."""
        if any(layer.weight_is_binarized for layer in self.target_layers):
            self.restore()
