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
from collections.abc import Callable, Iterator
from pathlib import Path
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
from ..variants import Variant
from ..xnor import BinOp, models
from ..xnor.step import XNORStep, autocast, clamp_bn_scales, step_for, train_step
from .checkpoints import load_checkpoint, save_checkpoint
from .loaders import make_loaders
from .optim import make_optimizer, make_scheduler
from .packed_eval import float_weights_row, packed_rows
from .recipes import Recipe

__all__ = ["NonFiniteLoss", "evaluate", "measure_step_seconds", "train"]


class NonFiniteLoss(XnorbenchError, FloatingPointError):
    """The training loss became NaN or infinite; the message names the epoch (exit 2:
    the recipe, not the program, needs changing)."""

    exit_code = 2


def build_model(model_name: str, variant: str, bundle: DataBundle, grad_rule: str) -> nn.Module:
    return models.build(model_name, binary=(variant == "xnor"), in_channels=bundle.in_channels,
                        num_classes=bundle.num_classes, grad_rule=grad_rule,
                        input_size=bundle.image_size)


def make_xnor_step(model: nn.Module, variant: str, recipe: Recipe) -> XNORStep | None:
    """The recipe's XNOR training path for ``model`` (None for float)."""
    if variant != "xnor":
        return None
    path = {"fused": Variant.XNOR_FUSED, "binop": Variant.XNOR_BINOP}.get(recipe.xnor_path)
    if path is None:
        raise ValueError(f"unknown XNOR training path {recipe.xnor_path!r}; choose fused or "
                         "binop")
    return step_for(model, path, recipe.grad_rule)


@torch.no_grad()
def evaluate(model: nn.Module, loader: BatchLoader, amp: bool, bin_op: XNORStep | None = None,
             predictions: list[torch.Tensor] | None = None, top5: list[float] | None = None
             ) -> tuple[float, float]:
    """(accuracy %, mean loss) on ``loader``, over every process's share; XNOR weights
    binarized for the pass.

    ``predictions``, if given, receives the predicted class of every test image, in
    split order, on the CPU (gathered to rank 0 when several processes evaluate; empty
    on the others). ``top5``, if given, receives the top-5 accuracy %.
    """
    model.eval()
    if bin_op is not None:
        bin_op.binarization()
    correct: float = 0
    correct5: float = 0
    total: float = 0
    loss_sum = 0.0
    local: list[torch.Tensor] = []
    try:
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
    finally:
        if bin_op is not None:
            bin_op.restore()
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


def train(bundle: DataBundle, model_name: str, variant: str, recipe: Recipe, *,
          device: str = "cpu", progress: Progress | None = None,
          checkpoint: Path | None = None, resume: bool = False,
          extra: dict[str, Any] | None = None, label: str | None = None,
          on_resume: Callable[[int], None] | None = None, recipe_key: str | None = None,
          packed_path: Path | None = None, binding: dict[str, Any] | None = None
          ) -> Iterator[Row]:
    """Train one variant under one seed; yield rows per epoch and final summary rows.

    ``variant`` (float/xnor) picks the model; ``label`` (default: the variant) is what
    the rows' variant column says, e.g. ``xnor-paper`` in the gradient-rule comparison.
    Every row carries ``recipe_key`` and ``recipe.seed``. An epoch's rows are yielded
    before its checkpoint is written, so on ``resume`` the rows up to the checkpoint's
    epoch are complete; ``on_resume(epoch)`` is called so the caller can drop any rows
    of later, unfinished epochs before they are recomputed. With ``packed_path`` an XNOR
    model is packed there after training and evaluated through the C++ kernel.
    ``best_test_accuracy`` is the last row, so a resume can tell a finished training.
    Checkpoints carry ``binding`` (database and run) plus the recipe key, the variant
    label and the seed; a resume refuses one that does not match (:func:`load_checkpoint`).
    """
    progress = progress or Progress(enabled=False)
    w = world()
    torch.manual_seed(recipe.seed)
    model = build_model(model_name, variant, bundle, recipe.grad_rule).to(device)
    if recipe.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model, recipe)
    train_loader, test_loader = make_loaders(bundle, recipe, device, w)
    if train_loader.shard_size() < 2:
        raise InputError(f"{len(bundle.train)} training image(s) give each of {w.size} "
                         f"process(es) {train_loader.shard_size()}: BatchNorm needs at least "
                         "2 images per batch; train on more images (--limit-train)")
    sched = make_scheduler(opt, recipe, len(train_loader))
    bin_op = make_xnor_step(model, variant, recipe)
    start_epoch = 0
    best = test_acc = 0.0
    simulated: list[torch.Tensor] = []  # the last evaluation's predicted classes
    bound = {**(binding or {}), "recipe_key": recipe_key, "variant": label or variant,
             "seed": recipe.seed}
    if resume and checkpoint is not None and checkpoint.is_file():
        state = load_checkpoint(checkpoint, device, bound)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        train_loader.load_state(state["loader"])
        start_epoch, best = state["epoch"], state["best"]
        if isinstance(bin_op, BinOp):
            bin_op.save_params()
    if resume and on_resume is not None:
        on_resume(start_epoch)
    warm_up(model, bundle, variant, recipe, device)  # builds stay out of epoch 1's time
    trained = distribute(model, recipe, device, w)  # what the steps run (DDP or the net)
    base: dict[str, Any] = {"dataset": bundle.name, "model": model_name,
                            "variant": label or variant, "seed": recipe.seed,
                            "recipe_key": recipe_key}
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    full = (bundle.provenance.get("train_full", len(bundle.train)),
            bundle.provenance.get("test_full", len(bundle.test)))
    augment = recipe.augmentation(bundle.name)
    if isinstance(bundle.train, FileSplit):  # the ImageNet path's own crops
        augment = "none" if recipe.augment == "none" else "random-resized-crop+flip"
    params = {**recipe.as_params(), "augment": augment,
              "train_size": len(bundle.train), "test_size": len(bundle.test),
              "subset": (len(bundle.train), len(bundle.test)) != full,
              "device": device, **(extra or {})}
    if train_loader.merged:  # said in every row of the training, so no table hides it
        params["last_batch"] = "1 image merged into the previous batch (BatchNorm)"
    if w.active:
        params.update(w.describe())
    name = f"{label or variant} seed {recipe.seed}"
    top5: list[float] | None = [] if model_name in models.IMAGENET_MODELS else None
    for epoch in progress.track(range(start_epoch, recipe.epochs), f"{name} epochs",
                                total=recipe.epochs - start_epoch):
        model.train()
        _sync(device)
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        for x, y in progress.track(train_loader, f"epoch {epoch + 1}/{recipe.epochs}"):
            out, loss = train_step(trained, x, y, opt, bin_op, recipe.amp,
                                   recipe.bn_gamma_min, recipe.label_smoothing)
            sched.step()
            loss_sum += loss.detach() * y.numel()
            correct += (out.argmax(1) == y).sum()
        _sync(device)
        seconds = time.perf_counter() - t0
        # every process's share (a padded epoch counts its repeats, as DDP trains them)
        loss_total, correct_total, images = all_sum(loss_sum, correct,
                                                    train_loader.shard_size(), device=device)
        train_loss = loss_total / images
        if not math.isfinite(train_loss):
            raise NonFiniteLoss(f"non-finite training loss ({train_loss}) in epoch {epoch + 1}"
                                f" of {name} {model_name}; lower --lr")
        clamp_bn_scales(model, recipe.bn_gamma_min)
        simulated = []
        test_acc, test_loss = evaluate(model, test_loader, recipe.amp, bin_op,
                                       predictions=simulated, top5=top5)
        best = max(best, test_acc)
        ep = epoch + 1
        progress.log(f"{name} {model_name} epoch {ep}: loss {train_loss:.4f}, "
                     f"test {test_acc:.2f}% ({seconds:.1f}s)")
        yield from (
            Row("train_loss", train_loss, "", epoch=ep, params=params, **base),
            Row("train_accuracy", 100.0 * correct_total / images, "%", epoch=ep,
                params=params, **base),
            Row("test_loss", test_loss, "", epoch=ep, params=params, **base),
            Row("test_accuracy", test_acc, "%", epoch=ep, params=params, **base),
            Row("epoch_seconds", seconds, "s", epoch=ep, params=params, **base),
            Row("train_images_per_second", len(bundle.train) / seconds, "img/s", epoch=ep,
                params=params, **base),
        )
        if top5:
            yield Row("test_top5_accuracy", top5[-1], "%", epoch=ep, params=params, **base)
        if checkpoint is not None and w.main:  # rank 0 writes; every rank resumes from it
            save_checkpoint(checkpoint, {
                "model": model.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "loader": train_loader.state(),
                "epoch": ep, "best": best, "binding": bound})
    if start_epoch >= recipe.epochs:  # resumed after the last epoch: evaluate once more
        simulated = []
        test_acc, _ = evaluate(model, test_loader, recipe.amp, bin_op, predictions=simulated,
                               top5=top5)
    end: dict[str, Any] = {"epoch": recipe.epochs, "params": params, **base}
    yield Row("final_test_accuracy", test_acc, "%", **end)
    if top5:
        yield Row("final_test_top5_accuracy", top5[-1], "%", **end)
    if device.startswith("cuda"):
        yield Row("train_cuda_max_allocated_mib", torch.cuda.max_memory_allocated() / 2**20,
                  "MiB", **end)
    if variant == "xnor" and packed_path is not None and w.main:
        yield from packed_rows(model, model_name, bundle, torch.cat(simulated), packed_path,
                               progress=progress, row=end)
    if variant == "float" and packed_path is not None and w.main:
        yield from float_weights_row(model, bundle, packed_path.with_suffix(".weights"), end)
    yield Row("best_test_accuracy", best, "%", **end)


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
    step = make_xnor_step(probe, variant, recipe)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, bundle.in_channels, *bundle.image_size, generator=gen).to(device)
    if recipe.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.zeros(2, dtype=torch.long, device=device)
    cuda = [torch.device(device).index or 0] if device.startswith("cuda") else []
    with torch.random.fork_rng(devices=cuda):  # dropout's draws leave no trace
        train_step(probe, x, y, opt, step, recipe.amp, None, recipe.label_smoothing)
        probe.eval()
        with torch.no_grad(), autocast(device, recipe.amp):
            probe(x)
    _sync(device)


def measure_step_seconds(bundle: DataBundle, model_name: str, variant: str, recipe: Recipe,
                         device: str = "cpu", steps: int = 20, warmup: int = 5) -> float:
    """Seconds per training step of this recipe on this device (to size a time-boxed run).

    Runs the real step (BinOp for XNOR, autocast, channels_last as the recipe says) on
    throw-away weights; the caller decides epochs from it and records them.
    """
    torch.manual_seed(recipe.seed)
    model = build_model(model_name, variant, bundle, recipe.grad_rule).to(device).train()
    if recipe.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model, recipe)
    loader, _ = make_loaders(bundle, recipe, device)
    bin_op = make_xnor_step(model, variant, recipe)
    it = iter(loader)
    t0 = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            t0 = time.perf_counter()
        try:
            x, y = next(it)
        except StopIteration:
            it = iter(loader)
            x, y = next(it)
        train_step(model, x, y, opt, bin_op, recipe.amp, recipe.bn_gamma_min,
                   recipe.label_smoothing)
    _sync(device)
    return (time.perf_counter() - t0) / steps
