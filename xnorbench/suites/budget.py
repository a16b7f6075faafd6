"""A time-boxed accuracy run: as many epochs (the same for float and XNOR) as fit a budget
of seconds, from both variants' measured step times, capped by the recipe's own epochs.

The device recipe (``scripts/gpu_results.py``) trains under a fixed time; the epochs it
picks are an override the run stores like any other (``--epochs``), resolved through the
same :func:`~.common.prepare_training` as the command line's options."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..data.splits import DataBundle
from ..training.loop import measure_step_seconds
from ..training.recipes import recipe_from, resolve
from .common import prepare_training

EVALUATION_OVERHEAD = 1.12
"""An epoch's time over its training steps' (the test pass after each epoch)."""

_RECIPE_KEYS = frozenset(("amp", "channels_last", "seeds", "limit_train", "limit_test"))
"""The given options that change the timed step (the rest only say where data is)."""


@dataclass(frozen=True)
class BudgetPlan:
    """What a budget buys: the accuracy suite's params (epochs overridden) and why."""

    params: dict[str, Any]
    epochs: int
    recipe_epochs: int
    step_s: dict[str, float]
    epoch_s: float

    def line(self) -> str:
        """The plan in one line for a log."""
        seeds = len(self.params["seeds"])
        return (f"float {self.step_s['float'] * 1e3:.1f} / xnor {self.step_s['xnor'] * 1e3:.1f}"
                f" ms/step, ~{self.epoch_s:.1f} s/epoch for both variants and {seeds} "
                f"seed(s) -> {self.epochs} of the recipe's {self.recipe_epochs} epochs")


def plan_for_budget(recipe: str, given: dict[str, Any], bundle: DataBundle, budget_s: float,
                    device: str, model: str = "resnet18", steps: int = 20,
                    epochs: int | None = None) -> BudgetPlan:
    """Params for ``recipe`` with ``given`` (command-line style options: seeds, amp, data
    dir, limits, ...) whose epochs fit ``budget_s`` seconds of training both variants on
    ``device``, timed over ``steps`` steps each; ``epochs`` fixes them instead."""
    resolved = resolve(recipe, {k: v for k, v in given.items() if k in _RECIPE_KEYS})
    step_s = {v: measure_step_seconds(bundle, model, v, recipe_from(resolved), device,
                                      steps=steps) for v in ("float", "xnor")}
    per_epoch = math.ceil(len(bundle.train) / resolved["batch_size"])
    epoch_s = sum(step_s.values()) * per_epoch * EVALUATION_OVERHEAD * len(resolved["seeds"])
    if epochs is None:
        epochs = max(1, min(resolved["epochs"], int(budget_s / epoch_s)))
    params = prepare_training({**given, "recipe": recipe, "epochs": epochs,
                               "variant": "both"})
    return BudgetPlan(params, epochs, resolved["epochs"], step_s, epoch_s)

