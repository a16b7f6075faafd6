"""The written report: results (3.1), sweeps (3.2) and a discussion (3.3), all from the db.

No number in the report is typed by hand: every figure is read from stored rows, and
each table carries the recipe and machine it came from in its footnotes. The header
names the database by its file name and lists the commits the numbers come from
(marking those run from a tree with uncommitted changes). An optional notes file, a
person's findings that cite run ids, is appended as section 3.4 and labelled as such.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from ..db import Run, Store, shown_url
from .breakdown_tables import breakdown_table
from .memory_tables import memory_table, saved_by_layer_table, train_memory_table
from .plots import plot_sweeps
from .queries import newest_value, sweep_points
from .selection import Cell, Selection, accuracy_pairs, shown_cells
from .speed_tables import (
    ceilings_table,
    sweep_table,
    timing_table,
    train_step_table,
)
from .table_format import DATASET_NAMES, MODEL_NAMES, Table, commit_label, to_markdown
from .tables import accuracy_table as mission_table
from .tables import (
    cells_table,
    compare_table,
    per_seed_table,
    rule_gaps,
    training_time_table,
)
from .tradeoff_tables import tradeoff_table


def _section(t: Table, empty: str) -> str:
    """The table, and in the report (unlike `table`) what it chose not to show."""
    if not t.rows:  # the table's title says which one is empty, and why
        return f"**{t.title}**\n\n*Empty: {empty}.*\n"
    remarks = [f"*{r[0].upper()}{r[1:]}.*" for r in t.remarks]
    return to_markdown(t) + "".join(f"\n{r}\n" for r in remarks)


def _name(ds: str, model: str) -> str:
    return f"{DATASET_NAMES.get(ds, ds)} / {MODEL_NAMES.get(model, model)}"


def _pm(c: Cell, metric: str = "final_test_accuracy") -> str:
    mean, std = c.mean(metric), c.std(metric)
    return f"{mean:.2f}" + (f" ± {std:.2f}" if std is not None else "") + f" % (n={c.n})"


def _seeds(c: Cell) -> str:
    return ",".join(str(s) for s in sorted(x for x in c.seeds if x is not None)) or "?"


def _recipe_words(c: Cell, seeds: bool = True) -> str:
    p = c.params
    data = f"{p.get('train_size')} training images" + ("" if c.full_data else " (a subset)")
    name = f"recipe `{p['recipe']}`" if p.get("recipe") else "a recipe without a preset"
    return f"{name}: {c.recipe.describe()}, {data}" + (f", seed(s) {_seeds(c)}" if seeds
                                                      else "")


def _accuracy_discussion(store: Store, sel: Selection) -> list[str]:
    out = []
    for r in accuracy_pairs(store, sel):
        x, f = r.xnor, r.float
        if x is None or f is None:
            have = x or f
            if have is not None:
                out.append(f"- {_name(r.dataset, r.model)}: only "
                           f"{'float' if f else 'XNOR'} was trained under this recipe "
                           f"({_pm(have)}; {_recipe_words(have)}); no pair to compare.")
            continue
        final_f, final_x = f.mean("final_test_accuracy"), x.mean("final_test_accuracy")
        if final_f is None or final_x is None:  # a cell is one because it has this value
            continue
        gap = final_f - final_x
        runs = sorted({run.id for c in (x, f) for run in c.runs})
        text = (f"- {_name(r.dataset, r.model)}: XNOR ({x.rule} rule) {_pm(x)} vs float "
                f"{_pm(f)}, a gap of {gap:.2f} points in final accuracy (best over epochs: "
                f"{x.mean('best_test_accuracy'):.2f} vs {f.mean('best_test_accuracy'):.2f}); "
                f"runs {', '.join(map(str, runs))}.")
        if r.mismatched:
            text += (f" These two cells come from different recipes, so the gap is not a "
                     f"like-for-like figure: XNOR {_recipe_words(x)}; float "
                     f"{_recipe_words(f)}.")
        else:
            text += (f" Both under {_recipe_words(x, seeds=False)}; seed(s) {_seeds(x)} "
                     f"(XNOR) and {_seeds(f)} (float).")
        out.append(text)
        packed = x.mean("packed_test_accuracy")
        if packed is not None:
            agree = x.mean("packed_agreement")
            sizes = x.values("packed_file_bytes")
            out.append("  - Packed to 1 bit per binary weight "
                       + (f"({sizes[0] / 2**20:.2f} MiB file) " if sizes else "")
                       + f"and run through the C++ XNOR-popcount kernel on the CPU, the "
                       f"same XNOR network scores {packed:.2f} % (simulated: "
                       f"{x.mean('final_test_accuracy'):.2f} %) and predicts the simulated "
                       f"network's class on {agree:.2f} % of the test images.")
    return out or ["- No network has a finished accuracy run yet."]


def _memory_discussion(store: Store, sel: Selection) -> list[str]:
    out = []
    for rec in memory_table(store, sel).records:
        if not rec.get("compression"):
            continue
        name = MODEL_NAMES.get(rec["model"], rec["model"])
        line = (f"- {name} packs to {rec['packed_mib']:.3f} MiB from "
                f"{rec['float32_mib']:.3f} MiB in float32: {rec['compression']:.1f}x, against "
                "a limit of 32x for 1-bit vs 32-bit weights (float first and last layers, "
                "BatchNorm and one alpha per filter stay at 32 bits)")
        if rec.get("binary_mac_share") is not None:
            line += f"; {rec['binary_mac_share']:.2f} % of its multiply-accumulates are binary"
        if rec.get("packed_file_bytes") and rec.get("float32_file_bytes"):
            line += (f". The file written by `save_packed` is "
                     f"{rec['packed_file_bytes'] / 2**20:.3f} MiB vs "
                     f"{rec['float32_file_bytes'] / 2**20:.3f} MiB for the float32 state_dict")
        out.append(line + ".")
    paper_float = newest_value(store, "paper_fig4a_float_mb")
    paper_binary = newest_value(store, "paper_fig4a_binary_mb")
    if out and paper_float and paper_binary:
        out.append(f"- The paper's Fig. 4(a) quotes {paper_float:.0f} MB (double "
                   f"precision, ImageNet ResNet-18) -> {paper_binary:.1f} MB binary "
                   f"({paper_float / paper_binary:.0f}x, whose 64x limit comes from "
                   "64-bit doubles); against float32 the limit is 32x.")
    return out or ["- No memory run yet."]


def _speed_discussion(store: Store, sel: Selection) -> list[str]:
    out = []
    for p in sweep_points(store, sel):
        if p["sweep"] == "channels" and p["kernel"] == 3 and p["channels"] in (256, 1024) \
                and p.get("speedup") is not None:
            against = (f"{p['speedup_vs_fastest']:.1f}x against the fastest float engine "
                       f"here ({p['fastest_engine']}, {p['fastest_float_ms']:.3f} ms), "
                       f"{p['speedup']:.1f}x against torch eager"
                       if p.get("speedup_vs_fastest") is not None else
                       f"{p['speedup']:.1f}x against torch eager (the only float engine "
                       f"run {p['run_id']} timed)")
            out.append(f"- c={p['channels']}, 3x3, {p.get('input_size')}x{p.get('input_size')},"
                       f" {p['threads']} thread(s): measured {against}, the input's packing "
                       f"included ({p['speedup_nopack']:.1f}x against eager on a packed "
                       f"input), vs the theoretical {p['theoretical_speedup']:.1f}x "
                       f"(run {p['run_id']}, {p.get('cpu')}, kernel path "
                       f"{p.get('kernel_isa')})." + _lowp_words(p, "the binary conv"))
    for rec in timing_table(store, sel).records:
        if rec.get("device") == "cuda" and rec.get("float_ms") and rec.get("xnor_simulated_ms"):
            out.append(f"- On the GPU, {MODEL_NAMES.get(rec['model'], rec['model'])} at batch "
                       f"{rec['batch']}: float {rec['float_ms']:.2f} ms, XNOR simulated in "
                       f"float {rec['xnor_simulated_ms']:.2f} ms (there is no GPU bit "
                       "kernel; the packed kernels run on the CPU).")
            continue
        if rec.get("batch") != 1 or not rec.get("speedup") or not rec.get("xnor_packed_ms"):
            continue
        simulated = rec.get("xnor_simulated_ms")
        fastest = (f"{rec['fastest_float_ms']:.2f} ms in float on the fastest engine here "
                   f"({rec['fastest_engine']}: {rec['speedup_vs_fastest']:.2f}x) and "
                   if rec.get("speedup_vs_fastest") else "")
        out.append(f"- End to end, XNOR {MODEL_NAMES.get(rec['model'], rec['model'])} at "
                   f"batch 1, {rec['threads']} thread(s), runs in {rec['xnor_packed_ms']:.2f} "
                   f"ms with packed kernels vs {fastest}{rec['float_ms']:.2f} ms in torch "
                   f"eager ({rec['speedup']:.2f}x)"
                   + ("." if simulated is None else "; the float-simulated XNOR model (what "
                      f"a training port runs) takes {simulated:.2f} ms.")
                   + _lowp_words(rec, "the packed network"))
    for b in breakdown_table(store, sel).records:
        gemm = b["shares"].get("binary GEMM")
        if gemm is None:
            continue
        rest = sorted(((v, k) for k, v in b["parts"].items() if k != "binary GEMM"),
                      reverse=True)
        out.append(f"- Of the packed {MODEL_NAMES.get(b['model'], b['model'])}'s "
                   f"{b['total_ms']:.3f} ms at batch {b['batch']}, {b['threads']} thread(s) "
                   f"(run {b['run_id']}), the binary GEMMs take {gemm:.0f} %; the largest "
                   f"other part is {rest[0][1]} ({rest[0][0]:.3f} ms).")
    out += _ceiling_discussion(store, sel)
    for rec in train_step_table(store, sel).records:
        if rec.get("fused_ratio") is None:
            continue
        where = "on the GPU" if rec.get("device") == "cuda" else f"{rec['threads']} thread(s)"
        out.append(f"- Training step, {MODEL_NAMES.get(rec['model'], rec['model'])} at batch "
                   f"{rec['batch']}, {where}: XNOR (fused layers) takes "
                   f"{rec['fused_ratio']:.2f}x the float step and dispatches "
                   f"{_x(rec.get('fused_ops_ratio'))} its operators; through the port's "
                   f"BinOp workflow {_x(rec.get('binop_ratio'))} (run {rec['run_id']}).")
    return out or ["- No sweep or timing run yet."]


def _lowp_words(rec: dict, what: str) -> str:
    """What a sweep point or timing record says about the int8 and bf16 baselines and
    OpenVINO's binary conv, as sentences (empty where none ran)."""
    out = ""
    for q in ("int8", "bf16"):
        ms, ratio = rec.get(f"fastest_{q}_ms"), rec.get(f"speedup_vs_fastest_{q}")
        if ms is None or ratio is None:
            continue
        engine = rec.get(f"fastest_{q}_engine")
        out += (f" Against the fastest {q} engine ({engine}, {ms:.3f} ms) {what} is "
                + (f"{ratio:.2f}x faster." if ratio >= 1 else
                   f"{1 / ratio:.2f}x slower: {q} wins here."))
    peer = rec.get("speedup_vs_openvino_binaryconv")
    if peer is not None:
        out += (f" OpenVINO's own binary convolution takes {rec['openvino_binaryconv_ms']:.3f}"
                f" ms ({peer:.2f}x ours).")
    if rec.get("xnor_openvino_ms") is not None:
        out += (f" Exported to OpenVINO (BinaryConvolution) it takes "
                f"{rec['xnor_openvino_ms']:.3f} ms.")
    return out


def _tradeoff_discussion(store: Store, sel: Selection) -> list[str]:
    """Which precision wins for each trained network measured by the tradeoff suite."""
    t = tradeoff_table(store, sel)
    return [f"- {n}" for n in t.footnotes if n.startswith("At batch")] or [
        "- No tradeoff run yet (`xnorbench run tradeoff --of-run ID` on a trained run)."]


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _ceiling_discussion(store: Store, sel: Selection) -> list[str]:
    """Measured vs theoretical speedup, explained by this core's two peaks."""
    out = []
    for rec in ceilings_table(store, sel).records:
        ratio, binary = rec.get("peak_ratio"), rec.get("binary_nopack_conv_pct_of_peak")
        if ratio is None:
            continue
        line = (f"- Ceilings, `{rec['build']}` build ({rec.get('binary_isa')}), run "
                f"{rec['run_id']}: {rec['fp32_peak_gflops']:.1f} GFLOP/s fp32 and "
                f"{rec['binary_peak_gmacs']:.0f} G binary MAC/s per core, so a binary conv "
                f"can gain at most {ratio:.1f}x over a perfect float conv on this CPU; the "
                "paper's 64x counts operations (64 bit pairs per XNOR-popcount against one "
                "multiply-add), not the cycles each takes here.")
        if rec.get("disturbed"):
            line += (" Its conv shares of peak were disturbed (" + "; ".join(
                rec["disturbed"].values()) + ") and are not quoted.")
            binary = None
        if binary is not None:
            line += (f" At c={rec.get('channels')}, {rec.get('kernel')}x{rec.get('kernel')}, "
                     f"{rec.get('input_size')}x{rec.get('input_size')} the binary conv "
                     f"reaches {binary:.0f} % of its peak on a packed input")
            if rec.get("float_conv_pct_of_peak") is not None:
                line += (f" and the float conv {rec['float_conv_pct_of_peak']:.0f} % of "
                         f"the fp32 peak, hence the measured {rec['measured_speedup']:.1f}x "
                         f"against a {ratio:.1f}x ceiling")
            line += "."
        out.append(line)
    return out


def _rule_discussion(store: Store, sel: Selection) -> list[str]:
    out = []
    for g in rule_gaps(store, sel):
        out.append(f"- Run {g['run_id']} ({_name(g['dataset'], g['model'])}): `{g['a']}` "
                   f"{g['mean_a']:.2f} % (n={g['n_a']}) vs `{g['b']}` {g['mean_b']:.2f} % "
                   f"(n={g['n_b']}): a gap of {g['gap']:.2f} points, which {g['verdict']}.")
    return out or ["- No `compare` run with two or more gradient rules yet."]


def _runs_shown(store: Store, sel: Selection) -> list[Run]:
    ids = {run.id for c in shown_cells(accuracy_pairs(store, sel)) for run in c.runs}
    ids |= {i for rec in cells_table(store, sel).records for i in rec["run_ids"]}
    ids |= {rec["run_id"] for rec in compare_table(store, sel).records}
    ids |= {p["run_id"] for p in sweep_points(store, sel)}
    ids |= {rec["run_id"] for rec in ceilings_table(store, sel).records}
    for t in (memory_table(store, sel), timing_table(store, sel), train_step_table(store, sel),
              train_memory_table(store, sel)):
        for note in t.footnotes:
            if note.startswith("run "):
                ids.add(int(note.split()[1].rstrip(":")))
    return [r for r in (store.run(i) for i in sorted(ids)) if r is not None]


def provenance(store: Store, sel: Selection) -> list[str]:
    """Lines naming the commits behind the report's numbers; dirty trees marked."""
    by_commit: dict[str, list[int]] = {}
    for run in _runs_shown(store, sel):
        by_commit.setdefault(commit_label(run), []).append(run.id)
    lines = [f"- `{c}`: runs {', '.join(map(str, ids))}" for c, ids in sorted(by_commit.items())]
    if any("+dirty" in c for c in by_commit):
        lines.append("- `+dirty`: run from a tree with uncommitted changes; the commit alone "
                     "does not reproduce it.")
    if "unknown" in by_commit:
        lines.append("- `unknown`: run from a copy without .git whose copier did not set "
                     "XNORBENCH_GIT_COMMIT (see scripts/stamp_commit.sh).")
    return lines or ["- (no runs)"]


def database_name(store: Store) -> str:
    url = store.engine.url
    if url.get_backend_name() == "sqlite" and url.database:
        return Path(url.database).name
    return shown_url(url)


def write_report(store: Store, output: Path, selection: Selection = Selection(),
                 notes: Path | None = None) -> list[Path]:
    """Write the markdown report and its PNG plots (beside it); return the paths written."""
    output.parent.mkdir(parents=True, exist_ok=True)
    sel = selection
    written: list[Path] = []
    pts = sweep_points(store, sel)
    plots = plot_sweeps(pts, output.parent) if pts else []
    written += plots
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    chosen = "" if not sel.forced else f" It shows {sel.describe()} only."
    parts = [
        "# XNOR-Net, measured: results report", "",
        f"Generated by `xnorbench report` on {now} from the database "
        f"`{database_name(store)}`. Every number below is read from that database; each "
        f"table's footnotes give its recipe, machine and runs.{chosen}", "",
        "The numbers come from these commits:", *provenance(store, sel), "",
        "## 3.1 Results", "",
        _section(mission_table(store, sel), "no accuracy run yet"), "",
        _section(per_seed_table(store, sel), "no accuracy run yet"), "",
        _section(cells_table(store, sel), "no accuracy run yet"), "",
        _section(training_time_table(store, sel), "no accuracy run yet"), "",
        _section(memory_table(store, sel), "no memory run yet"), "",
        _section(timing_table(store, sel), "no timing run yet"), "",
        _section(breakdown_table(store, sel), "no profiled timing run yet (`xnorbench run "
                 "timing --profile`)"), "",
        _section(train_step_table(store, sel), "no timing run yet"), "",
        _section(train_memory_table(store, sel), "no memory run yet"), "",
        _section(saved_by_layer_table(store, sel), "no memory run yet"), "",
        _section(compare_table(store, sel), "no compare run yet"), "",
        _section(tradeoff_table(store, sel), "no tradeoff run yet (`xnorbench run tradeoff "
                 "--of-run ID` on a trained run)"), "",
        _section(ceilings_table(store, sel), "no `xnorbench run ceilings` run yet (each "
                 "sweep point measures its own peaks: the sweep table's Ceiling column)"), "",
        "## 3.2 Channels and filter size vs speedup (paper Fig. 4 b-c)", "",
    ]
    for p in plots:
        parts += [f"![{p.stem}]({p.name})", ""]
    parts += [_section(sweep_table(store, sel), "no sweep run yet"), "",
              "## 3.3 Discussion", "", "**Accuracy.**", *_accuracy_discussion(store, sel), "",
              "**Memory.**", *_memory_discussion(store, sel), "",
              "**Speed.**", *_speed_discussion(store, sel), "",
              "**What XNOR buys against what you would deploy instead.**",
              *_tradeoff_discussion(store, sel), "",
              "**Gradient rules.**", *_rule_discussion(store, sel), ""]
    if notes is not None:
        parts += ["## 3.4 Findings (written by hand; every number cites its run)", "",
                  notes.read_text().strip(), ""]
    output.write_text("\n".join(parts))
    written.insert(0, output)
    return written
