"""The training tables read from stored rows only: the mission's accuracy table, its
per-seed values, every trained cell, training time, and the gradient-rule comparison.

A table is a :class:`Table` (title, columns, rows, footnotes) rendered as markdown, CSV
or JSON. Training cells are chosen and paired by :mod:`.selection` (one recipe per line,
seeds pooled); measurement tables come from the latest finished run that has them. A
cell with no finished result reads ``n/a (not run)``.
"""

from __future__ import annotations

from typing import Any

from ..db import Run, Store
from ..training.recipes import show_value
from .queries import run_values
from .selection import (
    Cell,
    PairRow,
    Selection,
    accuracy_pairs,
    collect_cells,
    pooled_difference,
    shown_cells,
)
from .table_format import (
    DATASET_NAMES,
    MODEL_NAMES,
    NOT_RUN,
    Table,
    commit_label,
    fmt,
    machine_label,
)

NOT_TRAINED = "not trained here"


NOT_UNDER = "n/a (not run under this recipe)"






MISSION_ROWS = [("mnist", "resnet18"), ("cifar10", "resnet18")]


MISMATCH = "different recipes"


def _seeds(cell: Cell) -> str:
    return ",".join("?" if s is None else str(s) for s in sorted(
        cell.seeds, key=lambda v: (v is None, v or 0)))


def recipe_note(cells: list[Cell]) -> str:
    """A footnote naming the recipe of ``cells`` (one recipe key) once, with its runs."""
    c = cells[0]
    p = c.params
    runs = sorted({r.id: r for x in cells for r in x.runs}.values(), key=lambda r: r.id)
    name = p.get("recipe")
    head = f"recipe {name}" if name else "recipe (no preset)"
    data = (f"train {p.get('train_size', '?')} / test {p.get('test_size', '?')} images"
            + (" (full data)" if c.full_data else " (SUBSET)"))
    seeds = "; ".join(f"seeds {_seeds(x)} ({_variant_name(x)})" for x in cells)
    machines = sorted({f"{r.device} ({machine_label(r)})" for r in runs})
    commits = sorted({commit_label(r) for r in runs})
    return (f"{head}, key {c.key or '?'}: {c.recipe.describe()}, augmentation "
            f"{p.get('augment', c.recipe.augmentation(c.dataset))}; {data}; {seeds}; "
            f"runs {', '.join(str(r.id) for r in runs)}; device {'; '.join(machines)}; "
            f"commit {', '.join(commits)}")


def _variant_name(c: Cell) -> str:
    return "float" if c.variant == "float" else f"XNOR, {c.rule} rule"


def cell_text(c: Cell, note: int, metric: str = "final_test_accuracy",
              mismatched: bool = False) -> str:
    """'mean +- std % (n=k) [note]', with subset / mismatch labels."""
    mean, std = c.mean(metric), c.std(metric)
    if mean is None:
        return NOT_RUN
    text = f"{mean:.2f}" + (f" ± {std:.2f}" if std is not None else "") + f" % (n={c.n})"
    labels = ([] if c.full_data else ["subset"]) + ([MISMATCH] if mismatched else [])
    return text + (f", {', '.join(labels)}" if labels else "") + f" [{note}]"


def _packed_text(c: Cell | None) -> str:
    if c is None or c.mean("packed_test_accuracy") is None:
        return NOT_RUN
    agree = c.mean("packed_agreement")
    return (f"{c.mean('packed_test_accuracy'):.2f} %"
            + (f" (agrees on {agree:.2f} %)" if agree is not None else ""))


def sorted_pairs(store: Store, selection: Selection = Selection()) -> list[PairRow]:
    """The accuracy table's lines in its order: the mission's rows first."""
    order = {k: i for i, k in enumerate(MISSION_ROWS)}
    return sorted(accuracy_pairs(store, selection),
                  key=lambda r: (order.get((r.dataset, r.model), 99), r.dataset, r.model))


def accuracy_table(store: Store, selection: Selection = Selection()) -> Table:
    """The mission's table: Dataset | Network | Accuracy | Accuracy of floating-point.

    Cells are final test accuracy, mean ± sample std over seeds (n), under one recipe
    per line; the packed column is the same XNOR network stored at 1 bit per weight and
    run through the C++ kernel, with the share of test images on which it predicts the
    class the simulated network predicts.
    """
    pairs = sorted_pairs(store, selection)
    order = {k: i for i, k in enumerate(MISSION_ROWS)}
    lines: list[tuple[tuple, PairRow | tuple[str, str]]] = [
        ((order.get((r.dataset, r.model), 99), r.dataset, r.model), r) for r in pairs]
    have = {(r.dataset, r.model) for r in pairs}
    if not selection.forced:  # the mission's rows are always there, run or not
        lines += [((order[k], *k), k) for k in MISSION_ROWS if k not in have]
    lines.sort(key=lambda kv: kv[0])  # stable: rules stay in their pair order
    rows, records, notes = [], [], []
    note_index: dict[tuple, int] = {}

    def note_for(cells: list[Cell]) -> int:
        ident = tuple(sorted((c.key or "", c.variant, c.rule or "") for c in cells))
        if ident not in note_index:
            notes.append(recipe_note(cells))
            note_index[ident] = len(notes)
        return note_index[ident]

    untrained: list[str] = []
    lines_per_net: dict[tuple[str, str], int] = {}
    for r in pairs:
        lines_per_net[(r.dataset, r.model)] = lines_per_net.get((r.dataset, r.model), 0) + 1
    skipped: dict[tuple[str, str], list[Cell]] = {}
    for _, line in lines:
        if isinstance(line, tuple):
            ds, model = line
            untrained.append(ds)
            rows.append([DATASET_NAMES[ds], MODEL_NAMES[model], NOT_TRAINED, NOT_TRAINED, "-"])
            records += [{"dataset": ds, "network": model, "variant": v, "accuracy": None}
                        for v in ("xnor", "float")]
            continue
        r = line
        net = MODEL_NAMES.get(r.model, r.model)
        if r.xnor is not None and lines_per_net[(r.dataset, r.model)] > 1:
            net += f" ({r.xnor.rule} rule)"
        group = [c for c in (r.xnor, r.float) if c is not None]
        if r.mismatched:
            cells = [cell_text(c, note_for([c]), mismatched=True) if c else NOT_RUN
                     for c in (r.xnor, r.float)]
        else:
            n = note_for(group)
            cells = [cell_text(c, n) if c else NOT_UNDER for c in (r.xnor, r.float)]
        rows.append([DATASET_NAMES.get(r.dataset, r.dataset), net, *cells,
                     _packed_text(r.xnor)])
        records += [_record(c, r.mismatched) for c in group]
        skipped.setdefault((r.dataset, r.model), r.others)
    numbered = [f"[{i + 1}] {n}" for i, n in enumerate(notes)]
    remarks = _not_shown(skipped)
    if untrained:  # told beside the table (stderr; the report's remarks), not a footnote
        remarks.append(f"'{NOT_TRAINED}': a line of the mission's table that no run in this "
                       "database has trained; " + ", ".join(
                           f"`xnorbench run accuracy --recipe resnet18-{ds}-short`"
                           for ds in untrained)
                       + (" fills it" if len(untrained) == 1 else " fill them")
                       + " (ResNet-18 trains at tens of images/s on a CPU: a GPU's work, or "
                       "a CPU run with --limit-train)")
    if any(r.mismatched for r in pairs):
        numbered.append(f"'{MISMATCH}': the two cells of this line were trained under "
                        "different recipes (see their notes); not a like-for-like pair.")
    if selection.forced:
        numbered.append(f"Selection: {selection.describe()}.")
    return Table("Accuracy: XNOR-Net vs the same network in float (final test accuracy)",
                 ["Dataset", "Network", "Accuracy", "Accuracy of floating-point",
                  "XNOR packed 1-bit, C++ kernel"], rows, numbered, records, remarks)


def _record(c: Cell, mismatched: bool) -> dict[str, Any]:
    return {"dataset": c.dataset, "network": c.model, "variant": c.variant,
            "grad_rule": c.rule, "accuracy": c.mean("final_test_accuracy"),
            "std": c.std("final_test_accuracy"), "n": c.n,
            "per_seed": c.values("final_test_accuracy"),
            "best": c.mean("best_test_accuracy"),
            "packed_accuracy": c.mean("packed_test_accuracy"),
            "packed_agreement": c.mean("packed_agreement"),
            "recipe": c.params.get("recipe"), "recipe_key": c.key,
            "full_data": c.full_data, "mismatched_pair": mismatched,
            "run_ids": [r.id for r in c.runs],
            **{k: c.params.get(k) for k in ("epochs", "train_size", "test_size", "device")}}


def _not_shown(skipped: dict[tuple[str, str], list[Cell]]) -> list[str]:
    """One remark per network whose cells of other recipes the accuracy table left out."""
    remarks = []
    for (ds, model), others in skipped.items():
        if others:
            runs = sorted({run.id for c in others for run in c.runs})
            remarks.append(f"not shown for {DATASET_NAMES.get(ds, ds)} / "
                           f"{MODEL_NAMES.get(model, model)}: {len(others)} cell(s) of other "
                           f"recipes (runs {', '.join(map(str, runs))}); `table --suite "
                           "cells` lists them, `--run ID,...` or `--tag NAME` shows them")
    return remarks


def per_seed_table(store: Store, selection: Selection = Selection()) -> Table:
    """Every seed behind the accuracy table: final, best, packed accuracy and agreement;
    the cells it leaves out are named as the accuracy table names them."""
    rows, records = [], []
    pairs = sorted_pairs(store, selection)
    skipped: dict[tuple[str, str], list[Cell]] = {}
    for r in pairs:
        skipped.setdefault((r.dataset, r.model), r.others)
    for c in shown_cells(pairs):
        for seed, sv in sorted(c.seeds.items(), key=lambda kv: (kv[0] is None, kv[0] or 0)):
            v = sv.values
            records.append({"dataset": c.dataset, "network": c.model, "variant": c.variant,
                            "grad_rule": c.rule, "seed": seed, "run_id": sv.run.id, **v})
            rows.append([DATASET_NAMES.get(c.dataset, c.dataset),
                         MODEL_NAMES.get(c.model, c.model), _variant_name(c),
                         "?" if seed is None else str(seed), str(sv.run.id),
                         fmt(v.get("final_test_accuracy")), fmt(v.get("best_test_accuracy")),
                         *_packed_cols(c, v.get("packed_test_accuracy"),
                                       v.get("packed_agreement"))])
    return Table("Per seed: final and best-over-epochs test accuracy, packed accuracy",
                 ["Dataset", "Network", "Variant", "Seed", "Run", "Final %", "Best %",
                  "Packed %", "Packed agrees %"], rows, [], records, _not_shown(skipped))


def _packed_cols(c: Cell, *values: float | None) -> list[str]:
    """Packed-network columns: '-' for float (nothing to pack), else the values."""
    return ["-" if c.variant == "float" else fmt(v) for v in values]


def _preset_and_changes(c: Cell) -> str:
    """'port-lenet5 with lr=0.01, nesterov=True' from the runs' stored overrides."""
    name = c.params.get("recipe")
    if not name:
        return "(no preset)"
    changed: dict[str, Any] = {}
    for run in c.runs:
        for k in (run.params or {}).get("overridden", []):
            changed[k] = (run.params or {}).get(k)
    shown = ", ".join(f"{k}={show_value(v)}" for k, v in sorted(changed.items()) if k != "seeds")
    return name + (f" with {shown}" if shown else "")


def cells_table(store: Store, selection: Selection = Selection()) -> Table:
    """Every trained cell (recipe x variant) of the accuracy runs, not only the chosen ones.

    The accuracy table shows one recipe per network; this one lists all of them, with
    what each run changed from its preset, so that ablations can be read side by side.
    """
    rows, records = [], []
    cells = collect_cells(store, selection.runs(store, "accuracy"))
    cells.sort(key=lambda c: (c.dataset, c.model, min(r.id for r in c.runs), c.variant))
    for c in cells:
        std = c.std("final_test_accuracy")
        rec: dict[str, Any] = {"dataset": c.dataset, "network": c.model,
                               "variant": c.variant,
               "grad_rule": c.rule, "recipe": _preset_and_changes(c), "recipe_key": c.key,
               "epochs": c.params.get("epochs"), "train_size": c.params.get("train_size"),
               "n": c.n, "final": c.mean("final_test_accuracy"), "final_std": std,
               "best": c.mean("best_test_accuracy"),
               "packed": c.mean("packed_test_accuracy"), "run_ids": [r.id for r in c.runs]}
        records.append(rec)
        rows.append([", ".join(map(str, rec["run_ids"])), DATASET_NAMES.get(c.dataset, c.dataset),
                     MODEL_NAMES.get(c.model, c.model), _variant_name(c), rec["recipe"],
                     f"{c.key or '?'}", str(rec["epochs"]),
                     fmt(rec["final"]) + (f" ± {std:.2f}" if std is not None else "")
                     + f" (n={c.n})", fmt(rec["best"]), *_packed_cols(c, rec["packed"])])
    return Table("Every trained cell: recipe, what the run changed, final and best accuracy",
                 ["Run", "Dataset", "Network", "Variant", "Recipe", "Key", "Epochs",
                  "Final %", "Best %", "Packed %"], rows, [], records)


def training_time_table(store: Store, selection: Selection = Selection()) -> Table:
    """Seconds per epoch and images/s of the training runs behind the results table."""
    rows, records = [], []
    for c in shown_cells(sorted_pairs(store, selection)):
        secs: list[float] = []
        ips: list[float] = []
        for sv in c.seeds.values():
            kw = {"variant": c.variant, "model": c.model, "seed": sv.seed}
            secs += run_values(store, sv.run.id, "epoch_seconds", **kw)
            ips += run_values(store, sv.run.id, "train_images_per_second", **kw)
        if not secs:
            continue
        rec: dict[str, Any] = {"dataset": c.dataset, "model": c.model,
                               "variant": c.variant,
               "grad_rule": c.rule, "run_ids": [r.id for r in c.runs],
               "mean_epoch_s": sum(secs) / len(secs), "mean_images_per_s": sum(ips) / len(ips),
               "device": "; ".join(sorted({machine_label(r) for r in c.runs}))}
        records.append(rec)
        rows.append([DATASET_NAMES.get(c.dataset, c.dataset), MODEL_NAMES.get(c.model, c.model),
                     _variant_name(c), f"{rec['mean_epoch_s']:.1f}",
                     f"{rec['mean_images_per_s']:.0f}",
                     f"run(s) {', '.join(map(str, rec['run_ids']))}: {rec['device']}"])
    return Table("Training time per epoch (the runs behind the accuracy table)",
                 ["Dataset", "Network", "Variant", "s / epoch", "images / s", "Machine"],
                 rows, [], records)


def compare_groups(store: Store, selection: Selection = Selection()
                   ) -> list[tuple[Run, list[Cell]]]:
    """Per finished compare run (newest first): its cells (one per variant, seeds pooled)."""
    out = []
    for run in selection.runs(store, "compare"):
        cells = collect_cells(store, [run])
        if cells:
            out.append((run, cells))
    return out


def compare_table(store: Store, selection: Selection = Selection()) -> Table:
    """Float vs XNOR under each gradient rule, per compare run; mean ± std over seeds."""
    rows, records, notes = [], [], []
    for run, cells in compare_groups(store, selection):
        notes.append(f"run {run.id}: {recipe_note(cells)}")
        for c in cells:
            secs = run_values(store, run.id, "epoch_seconds", variant=c.variant)
            rec: dict[str, Any] = {"run_id": run.id, "dataset": c.dataset,
                                   "model": c.model,
                   "variant": c.variant, "n": c.n, "final": c.mean("final_test_accuracy"),
                   "final_std": c.std("final_test_accuracy"),
                   "best": c.mean("best_test_accuracy"),
                   "packed": c.mean("packed_test_accuracy"),
                   "mean_epoch_s": sum(secs) / len(secs) if secs else None}
            records.append(rec)
            std = rec["final_std"]
            rows.append([str(run.id), DATASET_NAMES.get(c.dataset, c.dataset),
                         MODEL_NAMES.get(c.model, c.model), c.variant,
                         fmt(rec["final"]) + (f" ± {std:.2f}" if std is not None else ""),
                         str(c.n), fmt(rec["best"]), *_packed_cols(c, rec["packed"]),
                         fmt(rec["mean_epoch_s"], 1)])
    return Table("Vanilla vs binary training, and the three gradient rules",
                 ["Run", "Dataset", "Network", "Variant", "Final acc %", "Seeds",
                  "Best acc %", "Packed acc %", "s / epoch"], rows, notes, records)


def rule_gaps(store: Store, selection: Selection = Selection()) -> list[dict[str, Any]]:
    """Every pair of XNOR rules within a compare run: gap, pooled std, verdict."""
    out = []
    for run, cells in compare_groups(store, selection):
        xs = sorted((c for c in cells if c.variant.startswith("xnor-")),
                    key=lambda c: -(c.mean("final_test_accuracy") or 0))
        for i, a in enumerate(xs):
            for b in xs[i + 1:]:
                diff, pooled, verdict = pooled_difference(a, b)
                out.append({"run_id": run.id, "dataset": a.dataset, "model": a.model,
                            "a": a.rule, "b": b.rule, "n_a": a.n, "n_b": b.n,
                            "mean_a": a.mean("final_test_accuracy"),
                            "mean_b": b.mean("final_test_accuracy"), "gap": diff,
                            "pooled_std": pooled, "verdict": verdict})
    return out
