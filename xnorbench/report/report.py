"""The written report: results (3.1), sweeps (3.2) and a discussion (3.3), all from the db.

No number in the report is typed by hand: every figure is read from stored rows, and
each table carries the recipe and machine it came from in its footnotes.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from ..db import Store
from .plots import plot_sweeps
from .tables import (
    DATASET_NAMES,
    MODEL_NAMES,
    Table,
    accuracy_table,
    compare_table,
    latest_finished,
    memory_table,
    sweep_points,
    sweep_table,
    timing_table,
    to_markdown,
    training_time_table,
)


def _section(t: Table, empty: str) -> str:
    return to_markdown(t) if t.rows else f"*{empty}*\n"


def _accuracy_discussion(store: Store) -> list[str]:
    found = latest_finished(store, "accuracy", "final_test_accuracy")
    out = []
    for (ds, model) in sorted({(k[0], k[1]) for k in found}):
        f, x = found.get((ds, model, "float")), found.get((ds, model, "xnor"))
        if f and x:
            out.append(f"- {DATASET_NAMES.get(ds, ds)} / {MODEL_NAMES.get(model, model)}: "
                       f"XNOR {x[0].value:.2f} % vs float {f[0].value:.2f} %, a gap of "
                       f"{f[0].value - x[0].value:.2f} points (runs {x[1].id} and {f[1].id}, "
                       f"{(x[0].params or {}).get('epochs')} epoch(s) on "
                       f"{(x[0].params or {}).get('train_size')} training images, "
                       f"{x[1].device}).")
    return out or ["- No model has finished both a float and an XNOR accuracy run yet."]


def _memory_discussion(store: Store) -> list[str]:
    recs = {r["model"]: r for r in memory_table(store).records}
    r18 = recs.get("resnet18")
    out = []
    if r18 and r18["compression"]:
        out.append(
            f"- ResNet-18 (CIFAR) packs to {r18['packed_mib']:.2f} MiB from "
            f"{r18['float32_mib']:.2f} MiB in float32: {r18['compression']:.1f}x, against a "
            "limit of 32x for 1-bit vs 32-bit weights (the float first conv, the classifier, "
            "BatchNorm and one alpha per filter stay at 32 bits). The file written by "
            f"`save_packed` is {r18['packed_file_bytes'] / 2**20:.2f} MiB vs "
            f"{r18['float32_file_bytes'] / 2**20:.2f} MiB for the float32 `state_dict` "
            f"({r18['float32_file_bytes'] / r18['packed_file_bytes']:.1f}x).")
        rows = store.results(metric="paper_fig4a_float_mb")
        rowsb = store.results(metric="paper_fig4a_binary_mb")
        if rows and rowsb:
            out.append(f"- The paper's Fig. 4(a) quotes {rows[-1].value:.0f} MB (double "
                       f"precision, ImageNet ResNet-18) -> {rowsb[-1].value:.1f} MB binary "
                       f"({rows[-1].value / rowsb[-1].value:.0f}x, whose 64x limit comes from "
                       "64-bit doubles); against float32 the limit is 32x.")
        if r18.get("binary_mac_share") is not None:
            out.append(f"- {r18['binary_mac_share']:.2f} % of ResNet-18's multiply-accumulates "
                       "are binary.")
    return out or ["- No memory run yet."]


def _speed_discussion(store: Store) -> list[str]:
    out = []
    for p in sweep_points(store):
        if p["sweep"] == "channels" and p["kernel"] == 3 and p["channels"] in (256, 1024) \
                and p.get("speedup") is not None:
            out.append(f"- c={p['channels']}, 3x3, {p.get('input_size')}x{p.get('input_size')},"
                       f" {p['threads']} thread(s): measured {p['speedup']:.1f}x with the "
                       f"input's packing included ({p['speedup_nopack']:.1f}x on a packed "
                       f"input) vs the theoretical {p['theoretical_speedup']:.1f}x "
                       f"(run {p['run_id']}, {p.get('cpu')}, kernel path "
                       f"{p.get('kernel_isa')}).")
    for r18 in timing_table(store).records:
        if r18["model"] != "resnet18" or r18.get("batch") != 1 or not r18.get("speedup"):
            continue
        simulated = r18.get("xnor_simulated_ms")
        out.append(f"- End to end, XNOR ResNet-18 at batch 1, {r18['threads']} thread(s), "
                   f"runs in {r18['xnor_packed_ms']:.2f} ms with packed kernels vs "
                   f"{r18['float_ms']:.2f} ms in float ({r18['speedup']:.2f}x)"
                   + ("." if simulated is None else "; the float-simulated XNOR model (what "
                      f"a training port runs) takes {simulated:.2f} ms."))
    return out or ["- No sweep or timing run yet."]


def _rule_discussion(store: Store) -> list[str]:
    out = []
    by_run: dict[int, list[dict]] = {}
    for rec in compare_table(store).records:
        by_run.setdefault(rec["run_id"], []).append(rec)
    for run_id, recs in sorted(by_run.items()):
        xs = [r for r in recs if r["variant"].startswith("xnor-")]
        if not xs:
            continue
        best = max(xs, key=lambda r: r["final"])
        listing = ", ".join(f"{r['variant'][5:]} {r['final']:.2f} %" for r in xs)
        out.append(f"- Run {run_id} ({DATASET_NAMES.get(recs[0]['dataset'])} / "
                   f"{MODEL_NAMES.get(recs[0]['model'])}): {listing}; the "
                   f"`{best['variant'][5:]}` rule trained best under this recipe.")
    return out or ["- No `compare` run yet."]


def write_report(store: Store, output: Path) -> list[Path]:
    """Write the markdown report and its PNG plots (beside it); return the paths written."""
    output.parent.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    pts = sweep_points(store)
    plots = plot_sweeps(pts, output.parent) if pts else []
    written += plots
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "# XNOR-Net, measured: results report", "",
        f"Generated by `xnorbench report` on {now} from `{store.engine.url}`. Every number "
        "below is read from that database; each table's footnotes give its recipe and "
        "machine.", "",
        "## 3.1 Results", "",
        _section(accuracy_table(store), "no accuracy run yet"), "",
        _section(training_time_table(store), "no accuracy run yet"), "",
        _section(memory_table(store), "no memory run yet"), "",
        _section(timing_table(store), "no timing run yet"), "",
        _section(compare_table(store), "no compare run yet"), "",
        "## 3.2 Channels and filter size vs speedup (paper Fig. 4 b-c)", "",
    ]
    for p in plots:
        parts += [f"![{p.stem}]({p.name})", ""]
    parts += [_section(sweep_table(store), "no sweep run yet"), "",
              "## 3.3 Discussion", "", "**Accuracy.**", *_accuracy_discussion(store), "",
              "**Memory.**", *_memory_discussion(store), "",
              "**Speed.**", *_speed_discussion(store), "",
              "**Gradient rules.**", *_rule_discussion(store), ""]
    output.write_text("\n".join(parts))
    written.insert(0, output)
    return written
