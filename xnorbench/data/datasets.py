"""Datasets through torchvision's own classes, decoded once to uint8 tensors.

Layouts read from a data directory (``--data-dir`` / ``XNORBENCH_DATA`` / ``./data``):

* MNIST, Fashion-MNIST, KMNIST (``mnist``, ``fashion-mnist``, ``kmnist``): torchvision's
  raw layout, ``<dir>/<ClassName>/raw/{train,t10k}-*-idx?-ubyte`` (ClassName: MNIST,
  FashionMNIST, KMNIST), gzipped (``.gz``) or not.
* CIFAR-10: torchvision's ``<dir>/cifar-10-batches-py``, or an ImageFolder tree
  ``<dir>/cifar10-jpeg/{train,test}/<class>/*.{jpg,png}``.
* Any ImageFolder tree (``imagefolder``): ``<dir>/train/<class>/*`` and ``<dir>/test/``
  (or ``<dir>/val/``); channels (1 if every image is grey, else 3), image size and class
  count come from the data, and so do the per-channel mean and std (of the train split).

Image trees are decoded once and cached (:mod:`.folders`); gzipped IDX files are
unpacked into the same cache (``XNORBENCH_CACHE``, :mod:`.files`), and the data folder is
never written.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..paths import path_problem
from .files import (
    DatasetError,
    cache_dir,
    content_fingerprint,
    data_dir,
    file_key,
    torchvision_splits,
)
from .folders import list_image_folder, load_cifar, load_image_folder
from .imagenet import MEAN, STD
from .splits import DataBundle, Split

DATASETS = ("mnist", "fashion-mnist", "kmnist", "cifar10", "imagefolder")
NORMALIZATION = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "kmnist": ((0.1918,), (0.3483,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}
"""Per-channel mean and std of the train split (of 0..1 pixels); ImageFolder computes its."""

MNIST_FAMILY = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "kmnist": "KMNIST"}
"""``--dataset`` name -> torchvision class (and folder) of the IDX datasets."""

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _subset(split: Any, limit: int | None, seed: int = 0) -> Any:
    """A seeded random subset (ImageFolder order is by class, so never 'the first N')."""
    if limit is None or limit >= len(split):
        return split
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(split), generator=g)[:limit].sort().values
    if hasattr(split, "subset"):
        return split.subset(idx)
    return Split(split.images[idx], split.labels[idx])


def read_idx(path: Path) -> Tensor:
    """An IDX file of bytes (the MNIST family's format: two zero bytes, the type 0x08,
    the number of dimensions, each size as a big-endian 32-bit integer, then the data)
    as a uint8 tensor; ``ValueError`` naming what is wrong if it is not one or is cut
    short. Read here: the format needs no torchvision (only a download does)."""
    data = path.read_bytes()
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise ValueError(f"{path.name} is not an IDX file of bytes")
    header = 4 + 4 * data[3]
    if len(data) < header:
        raise ValueError(f"{path.name} is cut short in its header")
    dims = struct.unpack(f">{data[3]}I", data[4:header])
    if len(data) - header != math.prod(dims):
        raise ValueError(f"{path.name} holds {len(data) - header} bytes of data, not the "
                         f"{math.prod(dims)} its header announces")
    return torch.frombuffer(bytearray(data[header:]), dtype=torch.uint8).reshape(dims)


def _idx_root(root: Path, cls: str) -> tuple[Path, list[str]]:
    """The root whose ``<cls>/raw`` holds the IDX files to read, and those files.

    Plain files under ``<root>/<cls>/raw`` are read in place; where only ``.gz`` files
    are, they are unpacked once into the cache (keyed by their identity)."""
    import gzip
    import shutil

    raw = root / cls / "raw"
    if all((raw / n).is_file() for n in IDX_FILES):
        return root, [str(raw / n) for n in IDX_FILES]
    gz = [raw / f"{n}.gz" for n in IDX_FILES]
    if not all(p.is_file() or (raw / p.stem).is_file() for p in gz):
        missing = [str(raw / n) for n in IDX_FILES
                   if not (raw / n).is_file() and not (raw / f"{n}.gz").is_file()]
        raise DatasetError(
            f"{cls} not found: looked for {', '.join(missing)} (or the same with .gz). Point "
            f"--data-dir (or XNORBENCH_DATA) at the folder that contains {cls}/raw/"
            + (", or pass --download." if cls == "MNIST" else "."))
    files = [raw / n if (raw / n).is_file() else raw / f"{n}.gz" for n in IDX_FILES]
    key = file_key([(str(f), 0) for f in files])
    cached = cache_dir() / f"idx-{cls}-{key}"
    out = cached / cls / "raw"
    if not all((out / n).is_file() for n in IDX_FILES):
        out.mkdir(parents=True, exist_ok=True)
        for name, src in zip(IDX_FILES, files, strict=True):
            tmp = out / f"{name}.tmp"
            try:
                with (gzip.open(src, "rb") if src.suffix == ".gz" else open(src, "rb")) as f, \
                        open(tmp, "wb") as g:
                    shutil.copyfileobj(f, g)
            except (OSError, EOFError) as exc:
                tmp.unlink(missing_ok=True)
                raise DatasetError(f"{src}: cannot be unpacked ({exc})") from exc
            tmp.replace(out / name)
    return cached, [str(f) for f in files]


def _load_mnist_family(name: str, root: Path, download: bool
                       ) -> tuple[Split, Split, dict[str, Any]]:
    cls = MNIST_FAMILY[name]
    raw = root / cls / "raw"
    if download:  # torchvision fetches the files; they are read like any others
        import torchvision.datasets as tvd

        torchvision_splits(getattr(tvd, cls), root, True, f"{cls} under {raw} could not be "
                           "downloaded")
    read_root, files = _idx_root(root, cls)
    arrays = []
    for name_ in IDX_FILES:
        try:
            arrays.append(read_idx(read_root / cls / "raw" / name_))
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{cls} under {raw} could not be read: {exc}. The IDX files "
                               f"may be truncated or not {cls}; replace them.") from None
    splits = []
    for imgs, labels in (arrays[:2], arrays[2:]):
        if imgs.dim() != 3 or labels.dim() != 1 or imgs.shape[0] != labels.shape[0]:
            raise DatasetError(f"{cls} under {raw}: images and labels disagree in count")
        splits.append(Split(imgs.unsqueeze(1).contiguous(), labels.long()))
    prov = {"format": "idx", "class": cls, "files": files,
            "fingerprint": content_fingerprint(files)}
    return splits[0], splits[1], prov


def _labels_in_range(labels: Tensor, classes: int, where: str) -> None:
    """``DatasetError`` for a label outside 0..classes-1 (a damaged or foreign label
    file), found before training rather than after an epoch."""
    if len(labels) == 0:
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= classes:
        bad = sorted({int(v) for v in labels[(labels < 0) | (labels >= classes)][:1000]})
        raise DatasetError(f"{where}: labels {', '.join(map(str, bad[:5]))} are outside "
                           f"0..{classes - 1} ({classes} classes); the label file is not "
                           "this dataset's or is damaged")


def load_dataset(name: str, root: str | os.PathLike | None = None, *, download: bool = False,
                 limit_train: int | None = None, limit_test: int | None = None,
                 progress: Callable[..., Any] | None = None, files: bool = False
                 ) -> DataBundle:
    """Load one of :data:`DATASETS` as uint8 tensors, with optional seeded subsets.

    ``files``: an ImageFolder tree is listed, not decoded (the ImageNet path, see
    :mod:`.imagenet`: images of any size, cropped per batch)."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    base = data_dir(root)
    problem = path_problem(base)
    if problem:
        raise DatasetError(f"--data-dir {str(base)[:60]}...: {problem}")
    num_classes = 10
    label = name
    if name in MNIST_FAMILY:
        train, test, prov = _load_mnist_family(name, base, download)
        mean, std = NORMALIZATION[name]
    elif name == "imagefolder":
        if download:
            raise DatasetError("--download: an ImageFolder tree cannot be downloaded")
        if files:
            train, test, prov = list_image_folder(base)
            mean, std, num_classes = MEAN, STD, len(train.classes)
        else:
            train, test, prov, folder = load_image_folder(base, progress)
            mean, std, num_classes = folder.mean, folder.std, len(folder.classes)
        label = f"imagefolder:{base.resolve().name}"[:32]  # two trees never share cells
    else:
        if download:
            from torchvision.datasets import CIFAR10
            try:
                CIFAR10(str(base), train=True, download=True)
                CIFAR10(str(base), train=False, download=True)
            except Exception as exc:
                raise DatasetError(f"CIFAR-10 download to {base} failed: {exc}") from exc
        train, test, prov = load_cifar(base, progress)
        mean, std = NORMALIZATION[name]
    for split_name, split in (("train", train), ("test", test)):
        _labels_in_range(split.labels, num_classes, f"{prov['files'][0]} ({split_name})")
    full = {"train_full": len(train), "test_full": len(test)}
    train, test = _subset(train, limit_train), _subset(test, limit_test)
    prov.update(full, train_size=len(train), test_size=len(test),
                data_dir=str(base.resolve()),
                subset_seed=0, mean=list(mean), std=list(std))
    channels = train.in_channels if files and name == "imagefolder" else train.images.shape[1]
    return DataBundle(label, train, test, num_classes=num_classes, in_channels=channels,
                      mean=tuple(mean), std=tuple(std), provenance=prov)
