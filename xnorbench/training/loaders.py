"""The loaders a training uses, built from its recipe: the train split shuffled and
augmented as the recipe says, the test split in order; each process of a torchrun launch
gets its share. Decoded tensors go through :class:`~xnorbench.data.loader.BatchLoader`,
an ImageFolder tree of files (the ImageNet path) through
:class:`~xnorbench.data.imagenet.FileBatchLoader`."""

from __future__ import annotations

from typing import Any

from ..data.imagenet import FileBatchLoader, FileSplit
from ..data.loader import BatchLoader
from ..data.splits import DataBundle
from ..distributed import SINGLE, World, local_batch
from .recipes import Recipe


def make_loaders(bundle: DataBundle, recipe: Recipe, device: str, w: World | None = None
                 ) -> tuple[Any, Any]:
    """(train, test) loaders of ``bundle`` as the recipe says (augmentation, batch, seed);
    with several processes each gets its share, the recipe's batch being the global one.
    A file-based split (the ImageNet path) gets loaders that decode and crop per batch."""
    w = w or SINGLE
    batch = local_batch(recipe.batch_size, w)
    if isinstance(bundle.train, FileSplit):
        return (FileBatchLoader(bundle.train, batch, device=device,
                                train=recipe.augment != "none", seed=recipe.seed,
                                channels_last=recipe.channels_last, world=w),
                eval_loader(bundle, max(batch, 64), device, recipe.channels_last, w))
    train_loader = BatchLoader(bundle.train, batch, mean=bundle.mean,
                               std=bundle.std, device=device, shuffle=True,
                               augment=recipe.augmentation(bundle.name) != "none",
                               flip=recipe.augmentation(bundle.name) == "crop-flip",
                               seed=recipe.seed, channels_last=recipe.channels_last, world=w)
    return train_loader, eval_loader(bundle, max(batch, 256), device, recipe.channels_last, w)


def eval_loader(bundle: DataBundle, batch: int, device: str, channels_last: bool = False,
                w: World | None = None) -> Any:
    """The test split in order (each process its share): decoded tensors, or files
    resized and center-cropped on the ImageNet path."""
    if isinstance(bundle.test, FileSplit):
        return FileBatchLoader(bundle.test, batch, device=device, train=False,
                               channels_last=channels_last, world=w)
    return BatchLoader(bundle.test, batch, mean=bundle.mean, std=bundle.std, device=device,
                       channels_last=channels_last, world=w)
