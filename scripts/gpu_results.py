#!/usr/bin/env python3
"""The device recipe: full-data ResNet-18 accuracy (float and XNOR, MNIST and CIFAR-10),
the memory suite on CUDA, the sweep on the host CPU, then the db and report under OUT.

Time-boxed: each training job first measures its step time, then takes as many epochs
as fit its share of ``--budget`` seconds (capped); epochs and sizes go into the rows.
Usage: python scripts/gpu_results.py --data-dir DATA --out OUT [--budget 300] [--tiny]
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from xnorbench.db import Store
from xnorbench.harness.datasets import load_dataset
from xnorbench.harness.runner import RunFailed, execute
from xnorbench.harness.training import Recipe, measure_step_seconds
from xnorbench.report.report import write_report
from xnorbench.suites.accuracy import DEFAULTS

# (dataset, variant, share of the budget, max epochs, recipe overrides)
PLAN = [
    ("mnist", "float", 0.14, 8, {"optimizer": "sgd", "lr": 0.1, "batch_size": 256,
                                 "weight_decay": 5e-4}),
    ("mnist", "xnor", 0.18, 12, {"optimizer": "adam", "lr": 2e-3, "batch_size": 256,
                                 "weight_decay": 0.0}),
    ("cifar10", "float", 0.30, 30, {"optimizer": "sgd", "lr": 0.2, "batch_size": 512,
                                    "weight_decay": 5e-4}),
    ("cifar10", "xnor", 0.38, 40, {"optimizer": "adam", "lr": 2e-3, "batch_size": 256,
                                   "weight_decay": 0.0}),
]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget", type=float, default=300.0, help="training seconds in all")
    ap.add_argument("--tiny", action="store_true", help="CPU rehearsal: subsets, 1 epoch")
    ap.add_argument("--sweep", action="store_true", help="also sweep on the host CPU")
    ap.add_argument("--datasets", default="mnist,cifar10", help="which datasets to train")
    ap.add_argument("--shares", default=None,
                    help="budget shares per job, comma-separated, in PLAN order")
    ap.add_argument("--cap-scale", type=float, default=1.0, help="multiply the epoch caps")
    ap.add_argument("--no-memory", action="store_true", help="skip the memory suite")
    ap.add_argument("--db", default=None, help="append to this db (copied into OUT)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    db = str(out / "xnorbench.db")
    if args.db:
        import shutil

        shutil.copy(args.db, db)
    store = Store.open(db)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    log(f"device {device}: {torch.cuda.get_device_name(0) if device == 'cuda' else ''}")

    sweep_proc = None
    if args.sweep:  # host-CPU sweep in the background, its own process and thread count
        env = dict(os.environ, XNORBENCH_DB=db)
        sweep = f"{sys.executable} -m xnorbench.cli sweep --rounds 3 --no-progress --threads"
        cmd = f"{sweep} 1 && {sweep} 2"
        with (out / "sweep.log").open("w") as sweep_log:  # the child keeps its own handle
            sweep_proc = subprocess.Popen(cmd, shell=True, env=env, stdout=sweep_log,
                                          stderr=subprocess.STDOUT, start_new_session=True)

    limits = {"limit_train": 2000, "limit_test": 500} if args.tiny else {}
    bundles = {}
    wanted = args.datasets.split(",")
    for ds in wanted:
        t0 = time.time()
        bundles[ds] = load_dataset(ds, args.data_dir, **limits)
        log(f"loaded {ds}: {len(bundles[ds].train)}/{len(bundles[ds].test)} "
            f"in {time.time() - t0:.1f}s")

    shares = [float(x) for x in args.shares.split(",")] if args.shares else None
    for i, (ds, variant, share, cap, over) in enumerate(PLAN):
        if ds not in wanted:
            continue
        share = shares[i] if shares else share
        cap = int(cap * args.cap_scale)
        params = {**DEFAULTS, **over, "dataset": ds, "model": "resnet18", "variant": variant,
                  "data_dir": args.data_dir, "amp": device == "cuda",
                  "channels_last": device == "cuda", **limits}
        recipe = Recipe(epochs=1, batch_size=params["batch_size"], lr=params["lr"],
                        optimizer=params["optimizer"], weight_decay=params["weight_decay"],
                        amp=params["amp"], channels_last=params["channels_last"])
        step_s = measure_step_seconds(bundles[ds], "resnet18", variant, recipe, device,
                                      steps=3 if args.tiny else 20)
        steps = math.ceil(len(bundles[ds].train) / recipe.batch_size)
        epoch_s = step_s * steps * 1.12  # + evaluation
        epochs = 1 if args.tiny else max(1, min(cap, int(args.budget * share / epoch_s)))
        params["epochs"] = epochs
        log(f"{ds} {variant}: {step_s * 1e3:.1f} ms/step, ~{epoch_s:.1f} s/epoch -> "
            f"{epochs} epochs")
        t0 = time.time()
        try:
            rid = execute(store, "accuracy", params, device=device, seed=0, progress=False,
                          command="scripts/gpu_results.py (time-boxed, see params)",
                          checkpoint_dir=Path("/tmp/xnorbench-checkpoints"))
        except RunFailed as exc:
            log(f"FAILED: {exc}")
            continue
        acc = store.results([rid], metric="final_test_accuracy")[0].value
        log(f"  run {rid}: {acc:.2f} % in {time.time() - t0:.0f}s")

    t0 = time.time()
    if not args.no_memory:
        try:
            execute(store, "memory", {"models": ["resnet18"], "batch": 64, "runtime": True},
                    device=device, progress=False)
            execute(store, "memory", {"models": ["lenet5", "nin"], "batch": 64,
                                      "runtime": False}, device=device, progress=False)
        except RunFailed as exc:
            log(f"memory FAILED: {exc}")
        log(f"memory suite in {time.time() - t0:.0f}s")

    if sweep_proc is not None:
        try:
            sweep_proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(sweep_proc.pid, signal.SIGTERM)  # run ends 'interrupted', rows kept
            sweep_proc.wait(timeout=30)
        log(f"sweep exit {sweep_proc.returncode}")

    try:
        for p in write_report(store, out / "REPORT.md"):
            log(f"wrote {p}")
    finally:
        store.engine.dispose()  # last connection closed: SQLite folds its WAL into the file
    print((out / "REPORT.md").read_text())


if __name__ == "__main__":
    main()
