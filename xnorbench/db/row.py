"""What a suite yields: one measured value with what it was measured on.

The runner stores each as a result row the moment it arrives (:mod:`.store`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Row:
    """One measured value as a suite yields it."""

    metric: str
    value: float | None
    unit: str = ""
    dataset: str | None = None
    model: str | None = None
    variant: str | None = None
    epoch: int | None = None
    step: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    recipe_key: str | None = None
