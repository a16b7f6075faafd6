"""Suite ``accuracy``: train and evaluate a model as float and as XNOR under one recipe.

Each seed of ``seeds`` trains both variants (seed by seed, so a cut-short run still holds
complete pairs); every training row carries the recipe key and its seed. A trained XNOR
network is also packed and evaluated through the C++ kernel.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ..db import Row
from ..runs.options import Opt
from ..runs.registry import SuiteContext, register
from .common import (
    TrainingKind,
    TrainingParams,
    begin,
    job_for,
    prepare_training,
    train_job,
    training_check,
    training_options,
    variants,
)


@dataclass(frozen=True)
class AccuracyParams(TrainingParams):
    """A training run's params, and which variants it trains (float, xnor or both)."""

    variant: str = "both"


def jobs(p: AccuracyParams) -> list[TrainingKind]:
    """The trainings of each seed: float and/or XNOR, labelled by their variant."""
    return [TrainingKind(v, v) for v in variants(p.variant)]


OPTIONS = training_options(Opt("variant", "str", "both", "float, xnor or both.",
                               choices=("float", "xnor", "both")))


@register("accuracy", "Train + test a model as float and XNOR under one recipe.",
          AccuracyParams,
          check=training_check(jobs), options=OPTIONS, prepare=prepare_training,
          checkpoints=True, distributed=True,
          doc="Train and test a model as float and as XNOR under one recipe (per seed).\n\n"
              "The XNOR network is then packed to 1 bit per weight, reloaded, and evaluated "
              "with the C++ XNOR-popcount kernel on the CPU (packed accuracy beside "
              "simulated accuracy).")
def run_accuracy(ctx: SuiteContext, p: AccuracyParams) -> Iterator[Row]:
    bundle, done, first = begin(ctx, p)
    yield from first
    for seed in p.seeds:
        recipe = p.recipe_for(seed)
        for variant in variants(p.variant):
            if (variant, seed) not in done:
                yield from train_job(ctx, job_for(ctx, p, bundle, recipe, variant))
