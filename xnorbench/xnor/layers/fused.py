"""``FusedXNOR``: the fast training path, one of the two training steps (:class:`~.step.XNORStep`).

With the fused layers (:mod:`.functional`) the weights are binarized inside forward and
their gradient rule applied inside backward, so of ``BinOp``'s per-step workflow only
the port's preparation of the latent weights is left: center each filter over its
input channels and clamp to [-1, 1], one operator for every layer at once
(``before_forward``); after backward nothing is left to do::

    step = FusedXNOR(model) if fused else BinOp(model)
    step.before_forward(); loss.backward(); step.after_backward(); optimizer.step()

Both paths run the same operators on the same values, so on the CPU they train
identically (tested); on the compiled path (CUDA, bfloat16) alpha is summed inside the
layer's graph, so they agree to rounding. ``FusedXNOR`` just does less: no copy of
every weight in, out and back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from ..sign import bitops
from ..sign.rules import check_grad_rule
from .modules import binary_layers


class FusedXNOR:
    """Per-step latent-weight preparation for a model whose XNOR layers binarize themselves.

    Each layer's gradient rule is its own (set when the model was built); ``grad_rule``,
    if given, only checks that every layer carries it, so the rule is set in one place."""

    def __init__(self, model: nn.Module, grad_rule: str | None = None) -> None:
        self.target_layers = [m for _, m in binary_layers(model)]
        if not self.target_layers:
            raise ValueError("FusedXNOR: the model has no XNORConv2d/XNORLinear layer")
        rules = {layer.grad_rule for layer in self.target_layers}
        if grad_rule is not None and rules != {check_grad_rule(grad_rule)}:
            raise ValueError(f"FusedXNOR: the model's layers use {', '.join(sorted(rules))}, "
                             f"not {grad_rule}; build the model with grad_rule={grad_rule!r}")
        self.grad_rule = rules.pop() if len(rules) == 1 else "mixed"
        for layer in self.target_layers:
            layer.weight_is_binarized = False

    def before_forward(self) -> None:
        """Center and clamp the latent weights in place (the layers binarize in forward)."""
        weights = {id(m.weight): m.weight.data for m in self.target_layers}  # tied: once
        bitops.center_clamp_(list(weights.values()))

    def after_backward(self) -> None:
        """Backward already delivered dC/dW by each layer's rule: the step is complete."""

    @contextmanager
    def evaluating(self) -> Iterator[None]:
        """The latent weights prepared as for a step; the layers binarize them in forward."""
        self.before_forward()
        yield

    def release(self) -> None:
        """Nothing held: the latent weights never left their parameters."""
