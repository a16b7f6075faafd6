"""The optimizer and the learning-rate schedule a recipe names.

Kept apart from the loop so that the step-time probes and the scripts build exactly the
optimizer a training run would.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .recipes import Recipe


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """SGD or Adam; weight decay on conv/linear weights only, or on every parameter."""
    if recipe.decay_scope == "all":
        groups = [{"params": list(model.parameters()), "weight_decay": recipe.weight_decay}]
    else:
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for name, p in model.named_parameters():
            (no_decay if p.dim() <= 1 or "bn" in name else decay).append(p)
        groups = [{"params": decay, "weight_decay": recipe.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.learning_rate, momentum=recipe.momentum,
                               nesterov=recipe.nesterov and recipe.momentum > 0)
    if recipe.optimizer == "adam":
        return torch.optim.Adam(groups, lr=recipe.learning_rate)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}; choose sgd or adam")


def make_scheduler(opt: torch.optim.Optimizer, recipe: Recipe, steps_per_epoch: int
                   ) -> torch.optim.lr_scheduler.LambdaLR:
    """The recipe's schedule as a per-step multiplier of the base lr."""
    total = max(1, recipe.epochs * steps_per_epoch)
    if recipe.schedule == "cosine":
        def factor(s: int) -> float:
            return 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
    elif recipe.schedule == "step":
        def factor(s: int) -> float:
            return recipe.lr_factor(s // max(1, steps_per_epoch))
    elif recipe.schedule == "constant":
        def factor(s: int) -> float:
            return 1.0
    else:
        raise ValueError(f"unknown schedule {recipe.schedule!r}; choose cosine, step or "
                         "constant")
    return torch.optim.lr_scheduler.LambdaLR(opt, factor)
