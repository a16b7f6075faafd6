#!/usr/bin/env python3
"""The device recipe: full-data ResNet-18 accuracy (float and XNOR, MNIST and CIFAR-10),
the memory suite and the timing suite on CUDA (inference float vs simulated XNOR, the
training steps float / XNOR fused / XNOR BinOp), the sweep and the ceilings on the host
CPU, then the db and report under OUT.

One run per dataset trains float and XNOR under one named recipe made for a short
budget (``resnet18-mnist-short``, ``resnet18-cifar10-short``) and the recipe's seeds;
the XNOR networks are then packed and run through the host CPU's kernel. Time-boxed:
the run first measures the step time of both variants, then takes as many epochs (the
same for both) as fit its share of ``--budget`` seconds, capped by the recipe's own
epochs; the override is stored with the run.
The tree travels without .git: ``scripts/stamp_commit.sh`` (run before the copy) leaves
``.xnorbench-commit``, which this script turns into XNORBENCH_GIT_COMMIT / _DIRTY.
Before training, one step of each variant is profiled on CUDA: the kernels it launches
and the XNOR path's compiled-graph mode go to the log and ``launches.txt``.
``--deadline`` (seconds from start) skips the timing and memory suites once passed, so
the call ends inside the device's limit with the accuracy rows and the report.
Usage: python scripts/gpu_results.py --data-dir DATA --out OUT [--budget 300] [--tiny]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

import xnorbench.suites  # noqa: F401  (registers the built-in suites)
from xnorbench.data.datasets import load_dataset
from xnorbench.db import Store
from xnorbench.report.report import write_report
from xnorbench.runs.runner import RunFailed, RunInterrupted, RunSettings, execute
from xnorbench.suites.budget import plan_for_budget
from xnorbench.training.recipes import recipe_from, resolve
from xnorbench.training.setup import build_setup
from xnorbench.xnor.layers.step import train_step
from xnorbench.xnor.sign import compiled

# (dataset, named recipe, share of the budget)
PLAN = [("mnist", "resnet18-mnist-short", 0.2), ("cifar10", "resnet18-cifar10-short", 0.8)]


def stamp_commit() -> None:
    """XNORBENCH_GIT_COMMIT / _DIRTY from ``.xnorbench-commit`` (a tree without .git)."""
    root = Path(__file__).resolve().parent.parent
    stamp = root / ".xnorbench-commit"
    if not stamp.is_file():  # also beside a .git: a copy's .git may be stale
        return
    commit, _, dirty = stamp.read_text().strip().partition(" ")
    os.environ.setdefault("XNORBENCH_GIT_COMMIT", commit)
    os.environ.setdefault("XNORBENCH_GIT_DIRTY", dirty or "1")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def log_launches(bundle, preset: str, path: Path) -> None:
    """Kernels one training step of each variant launches on CUDA (the recipe's batch,
    autocast and layout), counted by the CUDA profiler, and the XNOR path's mode."""
    recipe = recipe_from(resolve(preset, {"amp": True, "channels_last": True}))
    lines = []
    for variant in ("float", "xnor"):
        setup = build_setup(bundle, "resnet18", variant, recipe, "cuda")
        model, opt, step = setup.model.train(), setup.optimizer, setup.step
        x, y = next(iter(setup.train_loader))
        for _ in range(3):  # compile, pick algorithms
            train_step(model, x, y, opt, step, True, None, recipe.label_smoothing)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            train_step(model, x, y, opt, step, True, None, recipe.label_smoothing)
            torch.cuda.synchronize()
        kernels = sum(e.count for e in prof.key_averages()
                      if e.device_type == torch.autograd.DeviceType.CUDA)
        launches = sum(e.count for e in prof.key_averages() if "LaunchKernel" in e.key)
        lines.append(f"{variant}: {kernels} CUDA kernels, {launches} launch calls per step "
                     f"(batch {recipe.batch_size}, bf16 autocast, channels_last)")
    lines.append(f"xnor graphs: {compiled.mode()}")
    path.write_text("\n".join(lines) + "\n")
    for line in lines:
        log(line)


def _arguments() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget", type=float, default=300.0, help="training seconds in all")
    ap.add_argument("--tiny", action="store_true", help="CPU rehearsal: subsets, 1 epoch")
    ap.add_argument("--sweep", action="store_true", help="also sweep on the host CPU")
    ap.add_argument("--datasets", default="mnist,cifar10", help="which datasets to train")
    ap.add_argument("--shares", default=None,
                    help="budget shares per job, comma-separated, in PLAN order")
    ap.add_argument("--seeds", default=None, help="override the recipes' seeds, e.g. 0")
    ap.add_argument("--no-memory", action="store_true", help="skip the memory suite")
    ap.add_argument("--no-timing", action="store_true", help="skip the timing suite")
    ap.add_argument("--db", default=None, help="append to this db (copied into OUT)")
    ap.add_argument("--deadline", type=float, default=None,
                    help="seconds from start after which the memory and timing suites "
                         "are skipped")
    return ap.parse_args()


def _limits(args: argparse.Namespace) -> dict[str, int]:
    """The data subsets of a CPU rehearsal (``--tiny``); none for the real run."""
    return {"limit_train": 2000, "limit_test": 500} if args.tiny else {}


def _start_sweep(db: str, out: Path) -> subprocess.Popen:
    """The host-CPU sweep and ceilings in the background, their own process and threads."""
    env = dict(os.environ, XNORBENCH_DB=db)
    cli = f"{sys.executable} -m xnorbench.cli"
    sweep = f"{cli} sweep --rounds 3 --no-progress --threads"
    cmd = f"{sweep} 1 && {cli} run ceilings --builds native --no-progress && {sweep} 2"
    with (out / "sweep.log").open("w") as sweep_log:  # the child keeps its own handle
        return subprocess.Popen(cmd, shell=True, env=env, stdout=sweep_log,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _train(store: Store, args: argparse.Namespace, bundles: dict, device: str) -> None:
    """One accuracy run per dataset of PLAN, each sized to its share of the budget."""
    limits = _limits(args)
    shares = [float(x) for x in args.shares.split(",")] if args.shares else None
    seeds = tuple(int(x) for x in args.seeds.split(",")) if args.seeds else None
    for i, (ds, preset, share) in enumerate(PLAN):
        if ds not in bundles:
            continue
        given = {"amp": device == "cuda", "channels_last": device == "cuda", "seeds": seeds,
                 "data_dir": args.data_dir, "download": False, **limits}
        plan = plan_for_budget(preset, given, bundles[ds],
                               args.budget * (shares[i] if shares else share), device,
                               steps=3 if args.tiny else 20,
                               epochs=1 if args.tiny else None)
        params = plan.params
        log(f"{ds} {preset}: {plan.line()}")
        t0 = time.time()
        try:
            rid = execute(store, "accuracy", params, RunSettings(
                device=device, seed=params["seeds"][0], progress=False, tags=("gpu", preset),
                command=f"scripts/gpu_results.py: --recipe {preset} --epochs {plan.epochs} "
                        "(time-boxed, see params)",
                checkpoint_dir=Path("/tmp/xnorbench-checkpoints")))
        except RunFailed as exc:
            log(f"FAILED: {exc}")
            continue
        for r in store.results([rid], metric="final_test_accuracy"):
            log(f"  run {rid}: {r.variant} seed {r.seed}: {r.value:.2f} %")
        log(f"  in {time.time() - t0:.0f}s")


def _measure(store: Store, args: argparse.Namespace, device: str, start: float) -> None:
    """The timing suite first (its training-step rows are the ones the GPU table needs),
    then the memory suite (fresh processes, each compiling anew), while the deadline
    leaves room."""

    def in_time(what: str) -> bool:
        if args.deadline is None or time.time() - start <= args.deadline:
            return True
        log(f"past the deadline ({args.deadline:.0f} s): {what} skipped")
        return False

    if not args.no_timing and in_time("timing suite"):
        t0 = time.time()
        try:  # on CUDA: float vs simulated XNOR inference, and the three training steps
            execute(store, "timing", {"models": ["resnet18"], "batches": [1, 64],
                                      "train_batch": 32 if args.tiny else 128,
                                      "per_layer": False, "rounds": 1 if args.tiny else 3,
                                      "threads": 1}, RunSettings(device, progress=False))
        except (RunFailed, RunInterrupted) as exc:
            log(f"timing FAILED: {exc}")
        log(f"timing suite in {time.time() - t0:.0f}s")
    if not args.no_memory and in_time("memory suite"):
        t0 = time.time()
        try:
            quiet = RunSettings(device, progress=False)
            execute(store, "memory", {"models": ["resnet18"], "batch": 64, "runtime": True},
                    quiet)
            execute(store, "memory", {"models": ["lenet5", "nin"], "batch": 64,
                                      "runtime": False}, quiet)
        except (RunFailed, RunInterrupted) as exc:
            log(f"memory FAILED: {exc}")
        log(f"memory suite in {time.time() - t0:.0f}s")


def _stop_sweep(sweep_proc: subprocess.Popen) -> None:
    try:
        sweep_proc.wait(timeout=45)
    except subprocess.TimeoutExpired:
        os.killpg(sweep_proc.pid, signal.SIGTERM)  # run ends 'interrupted', rows kept
        sweep_proc.wait(timeout=30)
    log(f"sweep exit {sweep_proc.returncode}")


def main() -> None:
    args = _arguments()
    start = time.time()
    stamp_commit()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    db = str(out / "xnorbench.db")
    if args.db:
        import shutil

        shutil.copy(args.db, db)
    store = Store.open(db)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    log(f"device {device}: {torch.cuda.get_device_name(0) if device == 'cuda' else ''}")
    sweep_proc = _start_sweep(db, out) if args.sweep else None
    limits = _limits(args)
    bundles = {}
    for ds in args.datasets.split(","):
        t0 = time.time()
        bundles[ds] = load_dataset(ds, args.data_dir, **limits)
        log(f"loaded {ds}: {len(bundles[ds].train)}/{len(bundles[ds].test)} "
            f"in {time.time() - t0:.1f}s")
    if device == "cuda":
        first = next(iter(bundles))
        try:
            log_launches(bundles[first], PLAN[0][1] if first == "mnist" else PLAN[1][1],
                         out / "launches.txt")
        except Exception as exc:  # a count, not a result: the runs go on without it
            log(f"launch count FAILED: {type(exc).__name__}: {exc}")
    _train(store, args, bundles, device)
    _measure(store, args, device, start)
    if sweep_proc is not None:
        _stop_sweep(sweep_proc)
    try:
        for p in write_report(store, out / "REPORT.md"):
            log(f"wrote {p}")
    finally:
        store.engine.dispose()  # last connection closed: SQLite folds its WAL into the file
    print((out / "REPORT.md").read_text())


if __name__ == "__main__":
    main()
