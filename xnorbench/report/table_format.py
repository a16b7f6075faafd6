"""How a table is shown: the :class:`Table` every builder returns, rendered as markdown,
CSV or JSON, and the one formatter per quantity (numbers, shares, ratios, the machine
and commit a row was measured on)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any

from ..db import Run

NOT_RUN = "n/a (not run)"
DATASET_NAMES = {"mnist": "MNIST", "cifar10": "CIFAR-10"}
MODEL_NAMES = {"resnet18": "ResNet-18", "lenet5": "LeNet-5", "nin": "NIN"}
"""How a missing value, a dataset and a network are shown."""


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]
    footnotes: list[str] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)  # machine-readable
    remarks: list[str] = field(default_factory=list)  # told to the user, not rendered


def commit_label(run: Run) -> str:
    """Short commit of a run, ``+dirty`` when its tree had uncommitted changes."""
    if not run.git_commit:
        return "unknown"
    return run.git_commit[:7] + ("+dirty" if run.git_dirty else "")


def machine_label(run: Run) -> str:
    if run.gpu_name:
        return f"{run.gpu_name} (host {run.cpu_model})"
    return f"{run.cpu_model}, {run.threads} thread(s)"


def fmt(v: Any, digits: int = 2) -> str:
    return NOT_RUN if v is None else f"{v:.{digits}f}"


def pct(v: float | None) -> str:
    return NOT_RUN if v is None else f"{v:.0f} %"


def to_markdown(t: Table) -> str:
    out = [f"**{t.title}**", "", "| " + " | ".join(t.columns) + " |",
           "|" + "|".join([":---"] * len(t.columns)) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in t.rows]
    for note in t.footnotes:  # one paragraph each, so markdown keeps them apart
        out += ["", note]
    return "\n".join(out) + "\n"


def render(t: Table, fmt: str) -> str:
    if fmt == "markdown":
        return to_markdown(t)
    if fmt == "json":
        return json.dumps(t.records, indent=2, default=str) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        keys: list[str] = []
        for rec in t.records:
            keys += [k for k in rec if k not in keys]
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        w.writerows(t.records)
        return buf.getvalue()
    raise ValueError(f"unknown format {fmt!r}")


def ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"
