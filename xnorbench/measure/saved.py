"""Bytes that autograd keeps for backward, per layer: what training memory is made of.

A training step's peak memory is the weights, their gradients and optimizer state, plus
everything forward saves for backward (activations, masks, bits). The last part grows
with the batch and is where float and XNOR training differ, so it is counted exactly:
every tensor saved for backward passes through ``saved_tensors_hooks`` and is charged,
once per storage, to the module that was running when it was saved. Parameters saved by
an op are not activations and are not counted.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..variants import Variant
from ..xnor import binary_layers
from ..xnor.layers.step import step_for, train_step
from ..xnor.networks import models
from ..xnor.networks.models import input_shape


def saved_bytes_by_module(model: nn.Module, step: Callable[[], object]) -> dict[str, int]:
    """Run ``step`` (one forward + backward of ``model``); bytes saved, by module name.

    A tensor is charged to the innermost module running when it is saved; the model's
    own forward (e.g. residual additions) is charged to ``""``.
    """
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: set[int] = set()
    stack: list[str] = [""]
    out: dict[str, int] = defaultdict(int)

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in params and ptr not in seen:
            seen.add(ptr)
            out[stack[-1]] += storage.nbytes()
        return t

    def enter(name: str) -> Callable[..., None]:
        def hook(*_: object) -> None:
            stack.append(name)
        return hook

    def leave(*_: object) -> None:  # a forward hook that returns nothing keeps the output
        stack.pop()

    hooks = []
    for name, module in model.named_modules():
        if name:
            hooks.append(module.register_forward_pre_hook(enter(name)))
            hooks.append(module.register_forward_hook(leave))
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            step()
    finally:
        for h in hooks:
            h.remove()
    return dict(out)


def saved_bytes_by_unit(model: nn.Module, step: Callable[[], object],
                        units: list[str]) -> dict[str, int]:
    """Like :func:`saved_bytes_by_module`, summed per unit (a module name and its
    children); what belongs to no unit is summed under ``"other"``."""
    by_module = saved_bytes_by_module(model, step)
    totals: dict[str, int] = {u: 0 for u in units}
    totals["other"] = 0
    for name, nbytes in by_module.items():
        unit = next((u for u in units if name == u or name.startswith(u + ".")), "other")
        totals[unit] += nbytes
    return totals


def training_step_saved(model_name: str, variant: str, batch: int,
                        device: str = "cpu") -> dict[str, int]:
    """Bytes saved for backward by one training step, per XNOR unit (+ ``"other"``).

    ``variant``: one of :data:`~xnorbench.variants.TRAINING_STEPS` (float, xnor_fused,
    xnor_binop).
    Units are named as in the XNOR model; the float model's unit of the same name is its
    BN -> ReLU -> conv, so the two compare unit by unit.
    """
    torch.manual_seed(0)
    model = models.build(model_name, binary=variant != Variant.FLOAT).to(device).train()
    units = [n for n, _ in binary_layers(models.build(model_name, binary=True))]
    xnor_step = step_for(model, variant)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(batch, *input_shape(model_name), device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    return saved_bytes_by_unit(model, lambda: train_step(model, x, y, opt, xnor_step), units)
