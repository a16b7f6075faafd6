"""Suite ``accuracy``: train and evaluate a model as float and as XNOR under one recipe."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..db import Row
from ..harness.registry import SuiteContext, register
from ..harness.training import Recipe, train
from .common import begin, forget_after, variants

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


@register("accuracy", "Train + test a model as float and XNOR under one recipe.", DEFAULTS)
def run_accuracy(ctx: SuiteContext, params: dict[str, Any]) -> Iterator[Row]:
    p = {**DEFAULTS, **params}
    bundle, done, first = begin(ctx, p)
    yield from first
    recipe = recipe_from(p)
    for variant in variants(p["variant"]):
        if variant in done:
            continue
        yield from train(bundle, p["model"], variant, recipe, device=ctx.device,
                         progress=ctx.progress, checkpoint=ctx.checkpoint_path(variant),
                         resume=ctx.resume, on_resume=forget_after(ctx, variant))
