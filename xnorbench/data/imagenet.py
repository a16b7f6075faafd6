"""The ImageNet-shaped data path: an ImageFolder tree read from its files every epoch.

ImageNet's 1.28 M images differ in size and do not fit in memory as tensors, so for
the ImageNet models (``--model resnet18-imagenet``) ``--dataset imagefolder`` lists the
files instead of decoding them once, and a loader decodes each batch in worker
processes (``XNORBENCH_LOADER_WORKERS``, default: the CPU count, at most 8) with the
standard transforms: a random-resized 224x224 crop and a horizontal flip to train, a
resize to 256 and a 224x224 center crop to evaluate, normalized with ImageNet's
per-channel mean and std. Each process of a torchrun launch reads its share of every
epoch (:func:`xnorbench.distributed.shard`), as the in-memory loader does.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..distributed import SINGLE, World
from ..errors import InputError
from .loader import ShardedLoader

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
"""ImageNet's per-channel statistics (of 0..1 pixels), the usual ones for these crops."""
CROP, RESIZE = 224, 256


@dataclass
class FileSplit:
    """Image files and their labels (decoded per batch, never all at once)."""

    paths: list[str]
    labels: Tensor
    classes: list[str]
    image_size: tuple[int, int] = (CROP, CROP)
    in_channels: int = 3

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, idx: Tensor) -> FileSplit:
        return FileSplit([self.paths[i] for i in idx.tolist()], self.labels[idx],
                         self.classes)


def list_files(folder: Path) -> FileSplit:
    """The files of an ImageFolder tree (one folder per class)."""
    from torchvision.datasets import ImageFolder

    try:
        found = ImageFolder(str(folder))
    except (FileNotFoundError, RuntimeError) as exc:
        raise InputError(f"{folder}: not an ImageFolder tree ({exc})") from exc
    labels = torch.tensor([c for _, c in found.samples], dtype=torch.long)
    return FileSplit([p for p, _ in found.samples], labels, list(found.classes))


def transform(train: bool) -> Any:
    from torchvision.transforms import v2

    steps = ([v2.RandomResizedCrop(CROP, antialias=True), v2.RandomHorizontalFlip()] if train
             else [v2.Resize(RESIZE, antialias=True), v2.CenterCrop(CROP)])
    return v2.Compose([*steps, v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize(list(MEAN), list(STD))])


class _Images(torch.utils.data.Dataset):
    """The files at ``order`` (this process's share), decoded and transformed."""

    def __init__(self, split: FileSplit, order: Tensor, train: bool) -> None:
        self.split, self.order, self.transform = split, order.tolist(), transform(train)

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        from torchvision.io import ImageReadMode, decode_image, read_file

        path = self.split.paths[self.order[i]]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torchvision.io deprecation
            try:
                img = decode_image(read_file(path), mode=ImageReadMode.RGB)
            except Exception as exc:
                raise InputError(f"{path}: not a readable image ({exc})") from exc
        return self.transform(img), int(self.split.labels[self.order[i]])


def workers() -> int:
    raw = os.environ.get("XNORBENCH_LOADER_WORKERS")
    if raw is not None:
        try:
            count = int(raw)
        except ValueError:
            count = -1
        if not 0 <= count <= 256:
            raise InputError(f"XNORBENCH_LOADER_WORKERS={raw!r}: give a whole number of "
                             "worker processes from 0 to 256")
        return count
    return min(8, os.cpu_count() or 1)


class _Batches:
    """Each batch's image indices, made when the loader asks for them (a list of lists for
    a whole ImageNet epoch would hold a million Python ints)."""

    def __init__(self, spans: list[tuple[int, int]]) -> None:
        self.spans = spans

    def __len__(self) -> int:
        return len(self.spans)

    def __iter__(self) -> Iterator[list[int]]:
        return (list(range(start, stop)) for start, stop in self.spans)


class FileBatchLoader(ShardedLoader):
    """Batches of transformed crops on ``device``: the same interface as
    :class:`.loader.BatchLoader` (per-process share, resumable epoch order)."""

    def __init__(self, split: FileSplit, batch_size: int, *, device: str = "cpu",
                 train: bool = False, seed: int = 0, channels_last: bool = False,
                 world: World | None = None) -> None:
        self.split, self.batch_size, self.device = split, batch_size, device
        self.train = self.shuffle = train
        self.channels_last = channels_last
        self.world = world or SINGLE
        self.labels = split.labels
        self.epoch_generator = torch.Generator().manual_seed(seed)
        self.generator = torch.Generator().manual_seed(seed + 1_000_003 * self.world.rank)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        order = self.order()
        count = workers()
        batches = _Batches(self.spans())
        loader = torch.utils.data.DataLoader(
            _Images(self.split, order, self.train), batch_sampler=batches,
            num_workers=count, generator=self.generator,
            pin_memory=self.device.startswith("cuda"), persistent_workers=False)
        for x, y in loader:
            x = x.to(self.device, non_blocking=True)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y.to(self.device, non_blocking=True)
