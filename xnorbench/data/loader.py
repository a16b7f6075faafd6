"""Batches from uint8 tensors kept on the training device, augmented there in bulk.

The whole split lives on the device as uint8 (CIFAR-10 train: 150 MB), so a batch is
an index, a cast and a normalisation: no worker processes, no per-image Python. The
standard CIFAR augmentation (random crop with 4-pixel zero padding, horizontal flip)
is done per batch with tensor ops, on the GPU when training there.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from ..distributed import World, shard
from .splits import Split


def random_crop_flip(x: Tensor, pad: int, generator: torch.Generator, flip: bool = True
                     ) -> Tensor:
    """Per-sample random crop (zero padding ``pad``) and, with ``flip``, horizontal flip
    of a batch."""
    b, c, h, w = x.shape
    dev = x.device
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev)
    rows = (oy[:, None] + torch.arange(h, device=dev))[:, None, :, None]
    cols = (ox[:, None] + torch.arange(w, device=dev))[:, None, None, :]
    bi = torch.arange(b, device=dev)[:, None, None, None]
    ci = torch.arange(c, device=dev)[None, :, None, None]
    out = padded[bi, ci, rows, cols]
    if not flip:
        return out
    flips = torch.rand(b, generator=generator, device=dev) < 0.5
    return torch.where(flips[:, None, None, None], out.flip(3), out)


class ShardedLoader:
    """What every loader shares: this process's share of each epoch (one seeded order for
    all processes, padded when ``shuffle``), its batches, and a resumable state.
    Subclasses set ``labels``, ``batch_size``, ``shuffle``, ``world``, ``generator`` (per
    process draws) and ``epoch_generator`` (the epoch order), and iterate ``order()``."""

    labels: Tensor
    batch_size: int
    shuffle: bool
    world: World
    generator: torch.Generator
    epoch_generator: torch.Generator

    def order(self) -> Tensor:
        """This epoch's positions for this process, in iteration order."""
        n = len(self.labels)
        order = torch.randperm(n, generator=self.epoch_generator) if self.shuffle \
            else torch.arange(n)
        return shard(order, self.world, pad=self.shuffle)

    def shard_size(self) -> int:
        """How many samples this process iterates per epoch."""
        n, size = len(self.labels), self.world.size
        if self.shuffle:
            return (n + size - 1) // size
        return len(range(self.world.rank, n, size))

    def indices(self) -> Tensor:
        """The positions in the split this process evaluates, in iteration order (no
        shuffling; for gathering predictions)."""
        return shard(torch.arange(len(self.labels)), self.world, pad=False)

    def spans(self) -> list[tuple[int, int]]:
        """(start, stop) of each batch within this process's share. When training
        (``shuffle``), a last batch of one image is merged into the one before it:
        BatchNorm cannot normalize a batch of one (see :attr:`merged`)."""
        n, b = self.shard_size(), self.batch_size
        out = [(i, min(i + b, n)) for i in range(0, n, b)]
        if self.merged:
            out[-2:] = [(out[-2][0], n)]
        return out

    @property
    def merged(self) -> bool:
        """Whether each epoch's last batch of one image trains with the batch before it."""
        n = self.shard_size()
        return self.shuffle and n > self.batch_size and n % self.batch_size == 1

    def __len__(self) -> int:
        return len(self.spans())

    def state(self) -> dict[str, Tensor]:
        return {"device": self.generator.get_state(), "epoch": self.epoch_generator.get_state()}

    def load_state(self, state: dict[str, Tensor]) -> None:
        self.generator.set_state(state["device"])
        self.epoch_generator.set_state(state["epoch"])


class BatchLoader(ShardedLoader):
    """Iterates (images, labels) batches as normalised float tensors on ``device``.

    With a ``world`` of several processes each one iterates its own share of every
    epoch (:func:`xnorbench.distributed.shard`; padded when shuffling for training, exact for
    evaluation) in batches of ``batch_size`` (the per-process batch)."""

    def __init__(self, split: Split, batch_size: int, *, mean: tuple[float, ...],
                 std: tuple[float, ...], device: str = "cpu", shuffle: bool = False,
                 augment: bool = False, flip: bool = True, seed: int = 0,
                 channels_last: bool = False,
                 world: World | None = None) -> None:
        if batch_size < 1:
            raise ValueError("batch size must be at least 1")
        self.images = split.images.to(device)
        self.labels = split.labels.to(device)
        self.batch_size = batch_size
        self.device = device
        self.shuffle = shuffle
        self.augment = augment
        self.flip = flip
        self.channels_last = channels_last
        shape = (1, -1, 1, 1)
        self.mean = torch.tensor(mean, device=device).view(shape) * 255
        self.inv_std = 1.0 / (torch.tensor(std, device=device).view(shape) * 255)
        self.world = world or World()
        # augmentation draws differ per rank; the epoch order is one for all ranks
        self.generator = torch.Generator(device=device).manual_seed(
            seed + 1_000_003 * self.world.rank)
        self.epoch_generator = torch.Generator().manual_seed(seed)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        order = self.order().to(self.device)
        for start, stop in self.spans():
            idx = order[start:stop]
            x = (self.images[idx].float() - self.mean) * self.inv_std
            if self.augment:
                x = random_crop_flip(x, 4, self.generator, self.flip)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels[idx]
