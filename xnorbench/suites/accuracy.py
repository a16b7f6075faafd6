"""Suite ``accuracy``: train and evaluate a model as float and as XNOR under one recipe."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from ..db import Row
from ..harness.registry import SuiteContext, register
from ..harness.training import Recipe, train
from .common import load_for_run, variants

DEFAULTS: dict[str, Any] = {
    "dataset": "mnist", "model": "lenet5", "variant": "both", "epochs": 1, "batch_size": 128,
    "lr": None, "optimizer": "sgd", "weight_decay": 5e-4, "grad_rule": "corrected",
    "limit_train": None, "limit_test": None, "seed": 0, "data_dir": None, "download": False,
    "amp": False, "channels_last": False,
}


def recipe_from(p: dict[str, Any]) -> Recipe:
    return Recipe(epochs=p["epochs"], batch_size=p["batch_size"], lr=p["lr"],
                  optimizer=p["optimizer"], weight_decay=p["weight_decay"],
                  grad_rule=p["grad_rule"], seed=p["seed"], amp=p["amp"],
                  channels_last=p["channels_last"])


def forget_after(ctx: SuiteContext, variant: str) -> Callable[[int], None]:
    """On resume: drop the variant's rows of epochs after its checkpoint."""

    def forget(epoch: int) -> None:
        ctx.store.delete_results_after(ctx.run_id, variant, epoch)

    return forget


def finished_variants(ctx: SuiteContext) -> set[str]:
    """Variants of this run that already stored their final row (for --resume)."""
    rows = ctx.store.results([ctx.run_id], metric="final_test_accuracy")
    return {r.variant for r in rows if r.variant}


@register("accuracy", "Train + test a model as float and XNOR under one recipe.", DEFAULTS)
def run_accuracy(ctx: SuiteContext, params: dict[str, Any]) -> Iterator[Row]:
    p = {**DEFAULTS, **params}
    bundle, data_row = load_for_run(ctx, p)
    done = finished_variants(ctx) if ctx.resume else set()
    if not ctx.resume:
        yield data_row
    recipe = recipe_from(p)
    for variant in variants(p["variant"]):
        if variant in done:
            continue
        yield from train(bundle, p["model"], variant, recipe, device=ctx.device,
                         progress=ctx.progress, checkpoint=ctx.checkpoint_path(variant),
                         resume=ctx.resume, on_resume=forget_after(ctx, variant))
