"""Helpers shared by suites: loading the dataset a run asks for, recording provenance."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..db import Row
from ..harness.datasets import DataBundle, load_dataset
from ..harness.registry import SuiteContext


def load_for_run(ctx: SuiteContext, p: dict[str, Any]) -> tuple[DataBundle, Row]:
    """Load ``p['dataset']`` as the run asks, and a row that records which files and sizes."""
    bundle = load_dataset(p["dataset"], p.get("data_dir"), download=p.get("download", False),
                          limit_train=p.get("limit_train"), limit_test=p.get("limit_test"),
                          progress=ctx.progress.track)
    row = Row("dataset_size", len(bundle.train), "images", dataset=bundle.name,
              params={**bundle.provenance})
    return bundle, row


def begin(ctx: SuiteContext, p: dict[str, Any]) -> tuple[DataBundle, set[str], list[Row]]:
    """Dataset, the variants already finished (on --resume), and the rows to yield first."""
    bundle, data_row = load_for_run(ctx, p)
    if not ctx.resume:
        return bundle, set(), [data_row]
    done = {r.variant for r in ctx.store.results([ctx.run_id], metric="final_test_accuracy")
            if r.variant}
    return bundle, done, []


def forget_after(ctx: SuiteContext, variant: str) -> Callable[[int], None]:
    """On resume: drop the variant's rows of epochs after its checkpoint."""

    def forget(epoch: int) -> None:
        ctx.store.delete_results_after(ctx.run_id, variant, epoch)

    return forget


def variants(choice: str) -> list[str]:
    if choice == "both":
        return ["float", "xnor"]
    if choice in ("float", "xnor"):
        return [choice]
    raise ValueError(f"unknown variant {choice!r}; choose float, xnor or both")
