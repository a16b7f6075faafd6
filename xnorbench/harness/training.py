"""One training recipe for float and XNOR alike, with per-epoch rows and checkpoints.

XNOR models train through :class:`~xnorbench.xnor.BinOp` (the reference port's workflow:
center, clamp, binarize, backward, restore, corrected gradient), float models through
plain autograd; everything else (data, optimizer, schedule, epochs) is shared, so the
two variants differ only in their binarized layers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..db import Row
from ..xnor import BinOp, models
from .datasets import DataBundle
from .loader import BatchLoader
from .progress import Progress

OPTIMIZERS = ("sgd", "adam")


@dataclass
class Recipe:
    epochs: int = 1
    batch_size: int = 128
    lr: float | None = None        # None: 0.1 for sgd, 1e-3 for adam
    optimizer: str = "sgd"
    weight_decay: float = 5e-4
    grad_rule: str = "corrected"
    seed: int = 0
    amp: bool = False               # bf16 autocast (CUDA)
    channels_last: bool = False

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        return 0.1 if self.optimizer == "sgd" else 1e-3

    def as_params(self) -> dict[str, Any]:
        d = asdict(self)
        d["lr"] = self.learning_rate
        return d


class NonFiniteLoss(FloatingPointError):
    """The training loss became NaN or infinite; the message names the epoch."""


def build_model(model_name: str, variant: str, bundle: DataBundle, grad_rule: str) -> nn.Module:
    return models.build(model_name, binary=(variant == "xnor"), in_channels=bundle.in_channels,
                        num_classes=bundle.num_classes, grad_rule=grad_rule)


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.dim() <= 1 or "bn" in name else decay).append(p)
    groups = [{"params": decay, "weight_decay": recipe.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.learning_rate, momentum=0.9, nesterov=True)
    if recipe.optimizer == "adam":
        return torch.optim.Adam(groups, lr=recipe.learning_rate)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}; choose sgd or adam")


@torch.no_grad()
def evaluate(model: nn.Module, loader: BatchLoader, amp: bool, bin_op: BinOp | None = None
             ) -> tuple[float, float]:
    """(accuracy %, mean loss) on ``loader``; XNOR weights binarized for the pass."""
    model.eval()
    if bin_op is not None:
        bin_op.binarization()
    correct, total, loss_sum = 0, 0, 0.0
    try:
        for x, y in loader:
            with _autocast(loader.device, amp):
                out = model(x)
            loss_sum += nn.functional.cross_entropy(out.float(), y, reduction="sum").item()
            correct += int((out.argmax(1) == y).sum())
            total += int(y.numel())
    finally:
        if bin_op is not None:
            bin_op.restore()
    return 100.0 * correct / max(total, 1), loss_sum / max(total, 1)


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
               opt: torch.optim.Optimizer, bin_op: BinOp | None = None, amp: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step; XNOR models go through the BinOp workflow. Returns (out, loss).

    BinOp: binarize the latent weights in place, forward/backward on the binarized
    weights, restore the latent weights, turn dC/dWt into dC/dW, then step.
    """
    if bin_op is not None:
        bin_op.binarization()
    with _autocast(x.device.type, amp):
        out = model(x)
        loss = nn.functional.cross_entropy(out.float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if bin_op is not None:
        bin_op.restore()
        bin_op.updateBinaryGradWeight()
    opt.step()
    return out, loss


def _autocast(device: str, amp: bool) -> Any:
    if not amp:
        return nullcontext()
    return torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu",
                          dtype=torch.bfloat16)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def train(bundle: DataBundle, model_name: str, variant: str, recipe: Recipe, *,
          device: str = "cpu", progress: Progress | None = None,
          checkpoint: Path | None = None, resume: bool = False,
          extra: dict[str, Any] | None = None, label: str | None = None,
          on_resume: Callable[[int], None] | None = None) -> Iterator[Row]:
    """Train one variant; yield rows per epoch (and a final summary row).

    ``variant`` (float/xnor) picks the model; ``label`` (default: the variant) is what
    the rows' variant column says, e.g. ``xnor-paper`` in the gradient-rule comparison.
    An epoch's rows are yielded before its checkpoint is written, so on ``resume`` the
    rows up to the checkpoint's epoch are complete; ``on_resume(epoch)`` is called so the
    caller can drop any rows of later, unfinished epochs before they are recomputed.
    """
    progress = progress or Progress(enabled=False)
    torch.manual_seed(recipe.seed)
    model = build_model(model_name, variant, bundle, recipe.grad_rule).to(device)
    if recipe.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model, recipe)
    train_loader = BatchLoader(bundle.train, recipe.batch_size, mean=bundle.mean,
                               std=bundle.std, device=device, shuffle=True,
                               augment=bundle.name == "cifar10", seed=recipe.seed,
                               channels_last=recipe.channels_last)
    test_loader = BatchLoader(bundle.test, max(recipe.batch_size, 256), mean=bundle.mean,
                              std=bundle.std, device=device,
                              channels_last=recipe.channels_last)
    steps_per_epoch = len(train_loader)
    total_steps = max(1, recipe.epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total_steps) / total_steps)))
    bin_op = BinOp(model, recipe.grad_rule) if variant == "xnor" else None
    start_epoch = 0
    best = test_acc = 0.0
    if resume and checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        train_loader.load_state(state["loader"])
        start_epoch, best = state["epoch"], state["best"]
        if bin_op is not None:
            bin_op.save_params()
    if resume and on_resume is not None:
        on_resume(start_epoch)
    base = {"dataset": bundle.name, "model": model_name, "variant": label or variant}
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    params = {**recipe.as_params(), "train_size": len(bundle.train),
              "test_size": len(bundle.test), "device": device, **(extra or {})}
    images = len(bundle.train)
    for epoch in progress.track(range(start_epoch, recipe.epochs), f"{variant} epochs",
                                total=recipe.epochs - start_epoch):
        model.train()
        _sync(device)
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        for x, y in progress.track(train_loader, f"epoch {epoch + 1}/{recipe.epochs}"):
            out, loss = train_step(model, x, y, opt, bin_op, recipe.amp)
            sched.step()
            loss_sum += loss.detach() * y.numel()
            correct += (out.argmax(1) == y).sum()
        _sync(device)
        seconds = time.perf_counter() - t0
        train_loss = float(loss_sum) / images
        if not math.isfinite(train_loss):
            raise NonFiniteLoss(f"non-finite training loss ({train_loss}) in epoch {epoch + 1}"
                                f" of {variant} {model_name}; lower --lr")
        test_acc, test_loss = evaluate(model, test_loader, recipe.amp, bin_op)
        best = max(best, test_acc)
        ep = epoch + 1
        progress.log(f"{label or variant} {model_name} epoch {ep}: loss {train_loss:.4f}, "
                     f"test {test_acc:.2f}% ({seconds:.1f}s)")
        yield from (
            Row("train_loss", train_loss, "", epoch=ep, params=params, **base),
            Row("train_accuracy", 100.0 * float(correct) / images, "%", epoch=ep,
                params=params, **base),
            Row("test_loss", test_loss, "", epoch=ep, params=params, **base),
            Row("test_accuracy", test_acc, "%", epoch=ep, params=params, **base),
            Row("epoch_seconds", seconds, "s", epoch=ep, params=params, **base),
            Row("train_images_per_second", images / seconds, "img/s", epoch=ep,
                params=params, **base),
        )
        if checkpoint is not None:
            tmp = checkpoint.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(), "loader": train_loader.state(),
                        "epoch": ep, "best": best}, tmp)
            tmp.replace(checkpoint)
    if start_epoch >= recipe.epochs:  # resumed after the last epoch: evaluate once more
        test_acc, _ = evaluate(model, test_loader, recipe.amp, bin_op)
    yield Row("final_test_accuracy", test_acc, "%", epoch=recipe.epochs, params=params, **base)
    yield Row("best_test_accuracy", best, "%", epoch=recipe.epochs, params=params, **base)
    if device.startswith("cuda"):
        yield Row("train_cuda_max_allocated_mib", torch.cuda.max_memory_allocated() / 2**20,
                  "MiB", epoch=recipe.epochs, params=params, **base)


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
    loader = BatchLoader(bundle.train, recipe.batch_size, mean=bundle.mean, std=bundle.std,
                         device=device, shuffle=True, augment=bundle.name == "cifar10",
                         seed=recipe.seed, channels_last=recipe.channels_last)
    bin_op = BinOp(model, recipe.grad_rule) if variant == "xnor" else None
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
        train_step(model, x, y, opt, bin_op, recipe.amp)
    _sync(device)
    return (time.perf_counter() - t0) / steps
