"""Helpers shared by suites: loading the dataset a run asks for, recording provenance."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from ..db import Row
from ..harness.datasets import DataBundle, load_dataset
from ..harness.recipes import BASE, Recipe, recipe_key
from ..harness.registry import CheckFn, SuiteContext

TRAINING_DEFAULTS: dict[str, Any] = {**BASE, "data_dir": None, "download": False,
                                     "recipe": None, "overridden": []}
"""Options of the training suites (accuracy, compare): the recipe's, plus where data is."""

SUMMARY_METRICS = ("final_test_accuracy", "best_test_accuracy", "train_cuda_max_allocated_mib",
                   "packed_test_accuracy", "packed_agreement", "packed_file_bytes",
                   "float_latency_ms", "xnor_packed_latency_ms")
"""Rows a training yields once, after its last epoch (``best_test_accuracy`` last)."""

EPOCH_METRICS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy",
                 "epoch_seconds", "train_images_per_second")
"""Rows a training yields once per epoch."""

PACKED_METRICS = ("packed_test_accuracy", "packed_agreement", "packed_file_bytes",
                  "float_latency_ms", "xnor_packed_latency_ms")
"""Rows of the trained XNOR network run through the packed kernel (once per training)."""


def training_check(jobs: Callable[[dict[str, Any]], list[tuple[str, str]]]) -> CheckFn:
    """The completeness check of a training suite whose ``jobs(p)`` are the (label,
    variant) trainings of each seed: one ``dataset_size`` row, every epoch's rows and
    every summary row of every training, each exactly once."""

    def check(ctx: SuiteContext, params: dict[str, Any]) -> list[str]:
        p = training_params({"seeds": [0]}, params)
        counts = Counter((r.metric, r.variant, r.seed, r.epoch)
                         for r in ctx.store.results([ctx.run_id]))
        out = []
        n_data = sum(v for (m, *_), v in counts.items() if m == "dataset_size")
        if n_data != 1:
            out.append(f"dataset_size ({n_data} rows, want 1)")
        epochs = int(p["epochs"])
        for seed in p["seeds"]:
            for label, variant in jobs(p):
                want = [(m, e) for e in range(1, epochs + 1) for m in EPOCH_METRICS]
                summary = ["final_test_accuracy", "best_test_accuracy"]
                if variant == "xnor":
                    summary += PACKED_METRICS
                if ctx.device.startswith("cuda"):
                    summary.append("train_cuda_max_allocated_mib")
                want += [(m, epochs) for m in summary]
                for metric, epoch in want:
                    n = counts[(metric, label, seed, epoch)]
                    if n != 1:
                        out.append(f"{metric} epoch {epoch} of {label} seed {seed} "
                                   f"({n} rows, want 1)")
        return out

    return check


def training_params(defaults: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """A suite's ``defaults`` under ``params``; a run stored with one ``seed`` keeps it."""
    p = {**defaults, **params}
    if "seeds" not in params and "seed" in params:
        p["seeds"] = [params["seed"]]
    return p


def load_for_run(ctx: SuiteContext, p: dict[str, Any]) -> tuple[DataBundle, Row]:
    """Load ``p['dataset']`` as the run asks, and a row that records which files and sizes."""
    bundle = load_dataset(p["dataset"], p.get("data_dir"), download=p.get("download", False),
                          limit_train=p.get("limit_train"), limit_test=p.get("limit_test"),
                          progress=ctx.progress.track)
    row = Row("dataset_size", len(bundle.train), "images", dataset=bundle.name,
              params={**bundle.provenance})
    return bundle, row


def begin(ctx: SuiteContext, p: dict[str, Any]
          ) -> tuple[DataBundle, set[tuple[str, int | None]], list[Row]]:
    """Dataset, the (variant, seed) trainings already finished (on --resume), first rows."""
    bundle, data_row = load_for_run(ctx, p)
    if not ctx.resume:
        return bundle, set(), [data_row]
    have = ctx.store.results([ctx.run_id], metric="dataset_size")
    done = {(r.variant, r.seed) for r in ctx.store.results([ctx.run_id],
                                                             metric="best_test_accuracy")
            if r.variant}
    return bundle, done, [] if have else [data_row]


def key_for(recipe: Recipe, p: dict[str, Any], bundle: DataBundle) -> str:
    """The recipe key of a training of ``p['model']`` on ``bundle`` under ``recipe``."""
    return recipe_key(recipe, dataset=bundle.name, model=p["model"],
                      train_size=len(bundle.train), test_size=len(bundle.test))


def forget_after(ctx: SuiteContext, variant: str, seed: int) -> Callable[[int], None]:
    """On resume: drop the training's rows of epochs after its checkpoint, and its summary."""

    def forget(epoch: int) -> None:
        ctx.store.delete_results_after(ctx.run_id, variant, epoch, seed=seed,
                                       metrics=SUMMARY_METRICS)

    return forget


def variants(choice: str) -> list[str]:
    if choice == "both":
        return ["float", "xnor"]
    if choice in ("float", "xnor"):
        return [choice]
    raise ValueError(f"unknown variant {choice!r}; choose float, xnor or both")
