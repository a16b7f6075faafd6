"""Image folders and CIFAR-10, decoded once to uint8 tensors and cached.

An ImageFolder tree (``<dir>/train/<class>/*``, ``<dir>/test/`` or ``val/``) is decoded
in threads and cached by file identity (:func:`~.files.file_key`), with its classes and
per-channel statistics, so the 60,000 CIFAR JPEGs are decoded once per machine. The
ImageNet path lists the files instead (:mod:`.imagenet` decodes them per batch).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .files import (
    DatasetError,
    cache_dir,
    content_fingerprint,
    file_key,
    listing_fingerprint,
    torchvision_splits,
)
from .imagenet import list_files
from .splits import Split


def load_cifar_batches(root: Path) -> tuple[Split, Split, dict[str, Any]]:
    from torchvision.datasets import CIFAR10

    train, test = torchvision_splits(
        CIFAR10, root, False,
        f"CIFAR-10 batches under {root / 'cifar-10-batches-py'} could not be read")
    out = []
    for ds in (train, test):
        imgs = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        out.append(Split(imgs, torch.tensor(ds.targets, dtype=torch.long)))
    folder = str(root / "cifar-10-batches-py")
    return out[0], out[1], {"format": "cifar-10-batches-py", "files": [folder],
                            "fingerprint": content_fingerprint([folder])}


def _decode_files(paths: list[str], progress: Callable[..., Any] | None, label: str,
                  rgb: bool = True) -> list[Tensor]:
    """Decode image files to uint8 tensors (RGB, or as stored), in threads (the decoder
    releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    from torchvision.io import ImageReadMode, decode_image, read_file

    mode = ImageReadMode.RGB if rgb else ImageReadMode.UNCHANGED

    def decode(chunk: list[str]) -> list[Tensor]:
        out = []
        for path in chunk:
            try:
                out.append(decode_image(read_file(path), mode=mode))
            except Exception as exc:
                raise DatasetError(f"{path}: not a readable image ({exc})") from exc
        return out

    size = 500
    chunks = [paths[i:i + size] for i in range(0, len(paths), size)]
    workers = max(1, min(len(chunks), os.cpu_count() or 1))
    images: list[Tensor] = []
    # the filter list is process-global, so it is set here, around the worker threads
    with warnings.catch_warnings(), ThreadPoolExecutor(workers) as pool:
        warnings.simplefilter("ignore", DeprecationWarning)  # torchvision.io -> torchcodec
        results = pool.map(decode, chunks)
        each = (image for part in results for image in part)  # progress counts images
        images.extend(progress(each, label, total=len(paths)) if progress else each)
    return images


def _same_channels(images: list[Tensor]) -> list[Tensor]:
    """Grey (+alpha) images stay one channel if all are grey; otherwise every image
    becomes RGB (grey repeated, alpha dropped)."""
    if all(i.shape[0] in (1, 2) for i in images):
        return [i[:1] for i in images]
    return [i[:1].expand(3, -1, -1) if i.shape[0] in (1, 2) else i[:3] for i in images]


def channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images, as 0..1 pixels (float64 sums)."""
    x = images.transpose(0, 1).reshape(images.shape[1], -1).double() / 255.0
    return tuple(x.mean(1).tolist()), tuple(x.std(1).tolist())


@dataclass
class FolderData:
    """A decoded ImageFolder split: images, labels, class names, per-channel stats."""

    split: Split
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    fingerprint: str = ""  # of the tree's listing (see listing_fingerprint)


def read_image_folder(folder: Path, progress: Callable[..., Any] | None = None,
                      rgb: bool = True) -> FolderData:
    """Decode an ImageFolder tree (RGB, or channels from the data) with its classes and
    per-channel statistics; cached by file identity."""
    from torchvision.datasets import ImageFolder

    try:
        found = ImageFolder(str(folder))
    except (FileNotFoundError, RuntimeError) as exc:
        raise DatasetError(f"{folder}: not an ImageFolder tree ({exc})") from exc
    samples = found.samples
    key = file_key(samples)
    listing = listing_fingerprint(folder, samples)
    cache = cache_dir() / f"imagefolder-{key}{'' if rgb else '-auto'}.pt"
    if cache.is_file():
        try:
            data = torch.load(cache, weights_only=True)
            split = Split(data["images"], data["labels"])
            if "mean" in data:
                return FolderData(split, list(data["classes"]), tuple(data["mean"]),
                                  tuple(data["std"]), listing)
            mean, std = channel_stats(split.images)
            return FolderData(split, list(found.classes), mean, std, listing)
        except Exception:
            cache.unlink(missing_ok=True)
    images = _decode_files([path for path, _ in samples], progress,
                           f"decode {folder.name} images", rgb)
    if not rgb:
        images = _same_channels(images)
    shapes = {tuple(i.shape) for i in images}
    if len(shapes) != 1:
        raise DatasetError(f"{folder}: images differ in size ({sorted(shapes)[:3]} ...); "
                           "resize them to one size first")
    split = Split(torch.stack(images), torch.tensor([c for _, c in samples], dtype=torch.long))
    mean, std = channel_stats(split.images)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        torch.save({"images": split.images, "labels": split.labels,
                    "classes": list(found.classes), "mean": list(mean), "std": list(std)}, tmp)
        tmp.replace(cache)
    except OSError:
        pass  # a read-only cache only costs a second decode
    return FolderData(split, list(found.classes), mean, std, listing)


def _split_dirs(root: Path) -> tuple[Path, Path]:
    """``<root>/train`` and ``<root>/test`` (or ``val``); a wrong layout named in one line."""
    train_dir = root / "train"
    test_dir = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
    missing = [str(p) for p, ok in ((train_dir, train_dir.is_dir()),
                                    (root / "test", test_dir is not None)) if not ok]
    if missing:
        raise DatasetError(f"ImageFolder tree {root}: missing {' and '.join(missing)}"
                           f"{' (or val/)' if test_dir is None else ''}; it needs train/ and "
                           "test/ (or val/), each with one folder of images per class")
    assert test_dir is not None
    return train_dir, test_dir


def list_image_folder(root: Path) -> tuple[Any, Any, dict[str, Any]]:
    """The ImageNet path: the tree's files, listed (decoded per batch by the loader)."""
    train_dir, test_dir = _split_dirs(root)
    train, test = list_files(train_dir), list_files(test_dir)
    if test.classes != train.classes:
        raise DatasetError(f"ImageFolder tree {root}: {test_dir.name}/ has classes "
                           f"{test.classes[:5]}..., train/ has {train.classes[:5]}...; they "
                           "must be the same folders")
    prov = {"format": "imagefolder-files", "files": [str(train_dir), str(test_dir)],
            "classes": train.classes,
            "fingerprint": "|".join(
                listing_fingerprint(d, list(zip(s.paths, s.labels.tolist(), strict=True)),
                                    sizes=False)
                for d, s in ((train_dir, train), (test_dir, test)))}
    return train, test, prov


def load_image_folder(root: Path, progress: Callable[..., Any] | None
                       ) -> tuple[Split, Split, dict[str, Any], FolderData]:
    """``--dataset imagefolder``: ``<root>/train`` and ``<root>/test`` (or ``val``)."""
    train_dir, test_dir = _split_dirs(root)
    train = read_image_folder(train_dir, progress, rgb=False)
    test = read_image_folder(test_dir, progress, rgb=False)
    if test.classes != train.classes:
        raise DatasetError(f"ImageFolder tree {root}: {test_dir.name}/ has classes "
                           f"{test.classes[:5]}..., train/ has {train.classes[:5]}...; they "
                           "must be the same folders")
    if test.split.images.shape[1:] != train.split.images.shape[1:]:
        raise DatasetError(f"ImageFolder tree {root}: {test_dir.name}/ images are "
                           f"{tuple(test.split.images.shape[1:])}, train/ images "
                           f"{tuple(train.split.images.shape[1:])}")
    prov = {"format": "imagefolder", "files": [str(train_dir), str(test_dir)],
            "classes": train.classes, "fingerprint": f"{train.fingerprint}|{test.fingerprint}"}
    return train.split, test.split, prov, train


def load_cifar(root: Path, progress: Callable[..., Any] | None
                ) -> tuple[Split, Split, dict[str, Any]]:
    batches = root / "cifar-10-batches-py"
    tree = root / "cifar10-jpeg"
    if batches.is_dir():
        return load_cifar_batches(root)
    if (tree / "train").is_dir() and (tree / "test").is_dir():
        train = read_image_folder(tree / "train", progress)
        test = read_image_folder(tree / "test", progress)
        return train.split, test.split, {
            "format": "imagefolder", "files": [str(tree / "train"), str(tree / "test")],
            "fingerprint": f"{train.fingerprint}|{test.fingerprint}"}
    raise DatasetError(
        f"CIFAR-10 not found: looked for {batches} and {tree}/{{train,test}}/<class>/. Point "
        "--data-dir (or XNORBENCH_DATA) at the folder that contains one of them.")
