"""One training recipe for float and XNOR alike, with per-epoch rows and checkpoints.

XNOR models train through the fused layers (:class:`~xnorbench.xnor.FusedXNOR`: weights
binarized in forward, the gradient rule applied in backward, bits kept for backward) or,
with ``xnor_path="binop"``, through :class:`~xnorbench.xnor.BinOp` (the reference port's
workflow: center, clamp, binarize, backward, restore, corrected gradient); the two train
identically. Float models train through plain autograd; everything else (data,
optimizer, schedule, epochs) is shared, so the two variants differ only in their
binarized layers. Every row carries the recipe key
and the seed, so tables pair and pool only like with like. A trained XNOR network is
then packed to bits, reloaded and run through the C++ kernel (:mod:`.packed_eval`).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..data.imagenet import FileSplit
from ..data.loader import BatchLoader
from ..data.splits import DataBundle
from ..db import Row
from ..distributed import World, all_sum, gather_to_main, world
from ..errors import InputError, XnorbenchError
from ..progress import Progress
from ..xnor import BinOp
from ..xnor.layers.step import XNORStep, autocast, clamp_bn_scales, train_step
from ..xnor.networks import models
from .checkpoints import load_checkpoint, save_checkpoint
from .optim import make_scheduler
from .packed_eval import float_weights_row, packed_rows
from .recipes import Recipe
from .setup import TrainingJob, TrainingSetup, build_setup, make_xnor_step, setup_of

__all__ = ["NonFiniteLoss", "TrainingJob", "evaluate", "measure_step_seconds", "restore",
           "train"]


class NonFiniteLoss(XnorbenchError, FloatingPointError):
    """The training loss became NaN or infinite; the message names the epoch (exit 2:
    the recipe, not the program, needs changing)."""

    exit_code = 2


@torch.no_grad()
def evaluate(model: nn.Module, loader: BatchLoader, amp: bool, step: XNORStep | None = None,
             predictions: list[torch.Tensor] | None = None, top5: list[float] | None = None
             ) -> tuple[float, float]:
    """(accuracy %, mean loss) on ``loader``, over every process's share; XNOR weights
    binarized for the pass.

    ``predictions``, if given, receives the predicted class of every test image, in
    split order, on the CPU (gathered to rank 0 when several processes evaluate; empty
    on the others). ``top5``, if given, receives the top-5 accuracy %.
    """
    model.eval()
    correct: float = 0
    correct5: float = 0
    total: float = 0
    loss_sum = 0.0
    local: list[torch.Tensor] = []
    with step.evaluating() if step is not None else nullcontext():
        for x, y in loader:
            with autocast(loader.device, amp):
                out = model(x)
            loss_sum += nn.functional.cross_entropy(out.float(), y, reduction="sum").item()
            pred = out.argmax(1)
            correct += int((pred == y).sum())
            if top5 is not None:
                k = min(5, out.shape[1])
                correct5 += int((out.topk(k, 1).indices == y[:, None]).any(1).sum())
            total += int(y.numel())
            if predictions is not None:
                local.append(pred.cpu())
    correct, correct5, total, loss_sum = all_sum(correct, correct5, total, loss_sum,
                                                 device=loader.device)
    if predictions is not None:
        mine = torch.cat(local) if local else torch.empty(0, dtype=torch.long)
        parts = gather_to_main((loader.indices(), mine))
        if parts is not None:
            full = torch.empty(len(loader.labels), dtype=torch.long)
            for idx, pred in parts:
                full[idx] = pred
            predictions.append(full)
    if top5 is not None:
        top5.append(100.0 * correct5 / max(total, 1))
    return 100.0 * correct / max(total, 1), loss_sum / max(total, 1)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def distribute(net: nn.Module, recipe: Recipe, device: str, w: World) -> nn.Module:
    """``net`` wrapped for several processes (DistributedDataParallel; BatchNorm
    synchronized when the recipe says so), or ``net`` itself for one.

    The binary layers' gradient rule runs inside backward, on each process's gradient,
    before DDP averages them; the rule is linear in the upstream gradient for given
    weights, and every process holds the same weights, so averaging after the rule
    equals applying it to the average (tested against one process on the same global
    batch). BinOp applies it after backward, to the averaged gradient: the same."""
    if not w.active:
        if recipe.sync_bn:
            raise InputError("--sync-bn synchronizes BatchNorm across processes: launch "
                             "with torchrun --nproc-per-node N (N > 1)")
        return net
    if recipe.sync_bn:
        if not device.startswith("cuda"):
            raise InputError("--sync-bn needs CUDA (torch's SyncBatchNorm runs on GPUs)")
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    ids = [torch.cuda.current_device()] if device.startswith("cuda") else None
    return nn.parallel.DistributedDataParallel(net, device_ids=ids)


@dataclass
class _Standing:
    """Where a training stands: the epoch it starts at, the best and the last test
    accuracy, the last evaluation's predicted classes (what the packed network is
    compared with), the last top-5 accuracy (ImageNet-sized networks)."""

    start_epoch: int = 0
    best: float = 0.0
    test_acc: float = 0.0
    predicted: list[torch.Tensor] = field(default_factory=list)
    top5: list[float] | None = None


def restore(job: TrainingJob) -> dict[str, Any] | None:
    """The state of ``job``'s checkpoint, if one was written (``CheckpointError`` if it
    belongs to another run or training): what a resumed training continues from."""
    if job.checkpoint is None or not job.checkpoint.is_file():
        return None
    return load_checkpoint(job.checkpoint, job.device, job.bound)


def train(job: TrainingJob, progress: Progress | None = None,
          state: dict[str, Any] | None = None) -> Iterator[Row]:
    """Train ``job``; yield rows per epoch and final summary rows.

    ``state``: a checkpoint's state (:func:`restore`) to continue from, at the epoch after
    it; whether to continue is the caller's decision (a resumed run's), and so is what
    happens to rows of epochs after the checkpoint. An epoch's rows are yielded before its
    checkpoint is written, so the rows up to a checkpoint's epoch are complete. With
    ``job.packed_path`` an XNOR network is packed there after training and evaluated
    through the C++ kernel. ``best_test_accuracy`` is the last row, so a resume can tell
    a finished training."""
    progress = progress or Progress(enabled=False)
    w = world()
    setup = setup_of(job, w)
    if setup.train_loader.shard_size() < 2:
        raise InputError(f"{len(job.bundle.train)} training image(s) give each of {w.size} "
                         f"process(es) {setup.train_loader.shard_size()}: BatchNorm needs at "
                         "least 2 images per batch; train on more images (--limit-train)")
    sched = make_scheduler(setup.optimizer, job.recipe, len(setup.train_loader))
    at = _Standing(top5=[] if job.model_name in models.IMAGENET_MODELS else None)
    if state is not None:
        _continue_from(state, setup, sched, at)
    warm_up(setup.model, job.bundle, job.variant, job.recipe, job.device)  # builds stay
    trained = distribute(setup.model, job.recipe, job.device, w)  # out of epoch 1's time
    if job.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    base = _row_fields(job)
    params = _row_params(job, setup, w)
    recipe = job.recipe
    for epoch in progress.track(range(at.start_epoch, recipe.epochs),
                                f"{job.name} seed {recipe.seed} epochs",
                                total=recipe.epochs - at.start_epoch):
        yield from _epoch(job, setup, trained, sched, epoch, at, progress,
                          {"params": params, "epoch": epoch + 1, **base})
        if job.checkpoint is not None and w.main:  # rank 0 writes; every rank resumes from it
            save_checkpoint(job.checkpoint, {
                "model": setup.model.state_dict(), "optimizer": setup.optimizer.state_dict(),
                "scheduler": sched.state_dict(), "loader": setup.train_loader.state(),
                "epoch": epoch + 1, "best": at.best, "binding": job.bound})
    if at.start_epoch >= recipe.epochs:  # resumed after the last epoch: evaluate once more
        at.predicted = []
        at.test_acc, _ = evaluate(setup.model, setup.test_loader, recipe.amp, setup.step,
                                  predictions=at.predicted, top5=at.top5)
    yield from _summary_rows(job, setup.model, at, progress,
                             {"epoch": recipe.epochs, "params": params, **base})


def _continue_from(state: dict[str, Any], setup: TrainingSetup, sched: Any,
                   at: _Standing) -> None:
    """Load a checkpoint's network, optimizer, schedule and loader position."""
    setup.model.load_state_dict(state["model"])
    setup.optimizer.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    setup.train_loader.load_state(state["loader"])
    at.start_epoch, at.best = state["epoch"], state["best"]
    if isinstance(setup.step, BinOp):
        setup.step.save_params()


def _row_fields(job: TrainingJob) -> dict[str, Any]:
    """The columns every row of the training carries."""
    return {"dataset": job.bundle.name, "model": job.model_name, "variant": job.name,
            "seed": job.recipe.seed, "recipe_key": job.recipe_key}


def _row_params(job: TrainingJob, setup: TrainingSetup, w: World) -> dict[str, Any]:
    """The params every row of the training carries: the resolved recipe, the
    augmentation actually applied, the data sizes and whether they are a subset."""
    bundle, recipe = job.bundle, job.recipe
    full = (bundle.provenance.get("train_full", len(bundle.train)),
            bundle.provenance.get("test_full", len(bundle.test)))
    augment = recipe.augmentation(bundle.name)
    if isinstance(bundle.train, FileSplit):  # the ImageNet path's own crops
        augment = "none" if recipe.augment == "none" else "random-resized-crop+flip"
    params = {**recipe.as_params(), "augment": augment,
              "train_size": len(bundle.train), "test_size": len(bundle.test),
              "subset": (len(bundle.train), len(bundle.test)) != full,
              "device": job.device, **job.extra}
    if setup.train_loader.merged:  # said in every row of the training, so no table hides it
        params["last_batch"] = "1 image merged into the previous batch (BatchNorm)"
    if w.active:
        params.update(w.describe())
    return params


def _epoch(job: TrainingJob, setup: TrainingSetup, trained: nn.Module, sched: Any,
           epoch: int, at: _Standing, progress: Progress, row: dict[str, Any]
           ) -> Iterator[Row]:
    """Train one epoch, evaluate, and yield its rows (``row``: their common fields)."""
    recipe, device, loader = job.recipe, job.device, setup.train_loader
    setup.model.train()
    _sync(device)
    t0 = time.perf_counter()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    for x, y in progress.track(loader, f"epoch {epoch + 1}/{recipe.epochs}"):
        out, loss = train_step(trained, x, y, setup.optimizer, setup.step, recipe.amp,
                               recipe.bn_gamma_min, recipe.label_smoothing)
        sched.step()
        loss_sum += loss.detach() * y.numel()
        correct += (out.argmax(1) == y).sum()
    _sync(device)
    seconds = time.perf_counter() - t0
    # every process's share (a padded epoch counts its repeats, as DDP trains them)
    loss_total, correct_total, images = all_sum(loss_sum, correct, loader.shard_size(),
                                                device=device)
    train_loss = loss_total / images
    name = f"{job.name} seed {recipe.seed} {job.model_name}"
    if not math.isfinite(train_loss):
        raise NonFiniteLoss(f"non-finite training loss ({train_loss}) in epoch {epoch + 1}"
                            f" of {name}; lower --lr")
    clamp_bn_scales(setup.model, recipe.bn_gamma_min)
    at.predicted = []
    at.test_acc, test_loss = evaluate(setup.model, setup.test_loader, recipe.amp, setup.step,
                                      predictions=at.predicted, top5=at.top5)
    at.best = max(at.best, at.test_acc)
    progress.log(f"{name} epoch {epoch + 1}: loss {train_loss:.4f}, "
                 f"test {at.test_acc:.2f}% ({seconds:.1f}s)")
    yield from (
        Row("train_loss", train_loss, "", **row),
        Row("train_accuracy", 100.0 * correct_total / images, "%", **row),
        Row("test_loss", test_loss, "", **row),
        Row("test_accuracy", at.test_acc, "%", **row),
        Row("epoch_seconds", seconds, "s", **row),
        Row("train_images_per_second", len(job.bundle.train) / seconds, "img/s", **row),
    )
    if at.top5:
        yield Row("test_top5_accuracy", at.top5[-1], "%", **row)


def _summary_rows(job: TrainingJob, model: nn.Module, at: _Standing, progress: Progress,
                  end: dict[str, Any]) -> Iterator[Row]:
    """The rows a training yields once, after its last epoch (``best_test_accuracy``
    last): final accuracy, peak CUDA memory, and the packed network's rows."""
    main = world().main
    yield Row("final_test_accuracy", at.test_acc, "%", **end)
    if at.top5:
        yield Row("final_test_top5_accuracy", at.top5[-1], "%", **end)
    if job.device.startswith("cuda"):
        yield Row("train_cuda_max_allocated_mib", torch.cuda.max_memory_allocated() / 2**20,
                  "MiB", **end)
    if job.variant == "xnor" and job.packed_path is not None and main:
        yield from packed_rows(model, job.model_name, job.bundle, torch.cat(at.predicted),
                               job.packed_path, progress=progress, row=end)
    if job.variant == "float" and job.packed_path is not None and main:
        yield from float_weights_row(model, job.bundle, job.packed_path.with_suffix(".weights"),
                                     end)
    yield Row("best_test_accuracy", at.best, "%", **end)


def warm_up(model: nn.Module, bundle: DataBundle, variant: str, recipe: Recipe,
            device: str) -> None:
    """Run one training step and one evaluation on a throw-away copy of ``model``, so
    that what a first step builds (the C++ kernels on a first use, the compiled graphs
    of the GPU path, cuDNN's algorithm choice) is built before any epoch is timed.

    The copy trains under lr 0 on random images drawn from a generator of its own: the
    model, its BatchNorm statistics, the optimizer and every loader's random state are
    untouched, so a run is the same with or without it."""
    probe = copy.deepcopy(model).train()
    opt = torch.optim.SGD(probe.parameters(), lr=0.0)
    xnor_step = make_xnor_step(probe, variant, recipe)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, bundle.in_channels, *bundle.image_size, generator=gen).to(device)
    if recipe.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.zeros(2, dtype=torch.long, device=device)
    cuda = [torch.device(device).index or 0] if device.startswith("cuda") else []
    with torch.random.fork_rng(devices=cuda):  # dropout's draws leave no trace
        train_step(probe, x, y, opt, xnor_step, recipe.amp, None, recipe.label_smoothing)
        probe.eval()
        with torch.no_grad(), autocast(device, recipe.amp):
            probe(x)
    _sync(device)


def measure_step_seconds(bundle: DataBundle, model_name: str, variant: str, recipe: Recipe,
                         device: str = "cpu", steps: int = 20, warmup: int = 5) -> float:
    """Seconds per training step of this recipe on this device (to size a time-boxed run).

    Runs the real step (the recipe's XNOR path, autocast, channels_last as the recipe
    says) on throw-away weights; the caller decides epochs from it and records them.
    """
    setup = build_setup(bundle, model_name, variant, recipe, device)
    setup.model.train()
    it = iter(setup.train_loader)
    t0 = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            t0 = time.perf_counter()
        try:
            x, y = next(it)
        except StopIteration:
            it = iter(setup.train_loader)
            x, y = next(it)
        train_step(setup.model, x, y, setup.optimizer, setup.step, recipe.amp,
                   recipe.bn_gamma_min, recipe.label_smoothing)
    _sync(device)
    return (time.perf_counter() - t0) / steps
