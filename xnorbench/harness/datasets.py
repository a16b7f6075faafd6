"""MNIST and CIFAR-10 through torchvision's own classes, decoded once to uint8 tensors.

Layouts read from a data directory (``--data-dir`` / ``XNORBENCH_DATA`` / ``./data``):

* MNIST: torchvision's raw layout, ``<dir>/MNIST/raw/{train,t10k}-*-idx?-ubyte``.
* CIFAR-10: torchvision's ``<dir>/cifar-10-batches-py``, or an ImageFolder tree
  ``<dir>/cifar10-jpeg/{train,test}/<class>/*.{jpg,png}``.

A decoded ImageFolder tree is cached as a uint8 tensor file (``XNORBENCH_CACHE``,
default ``~/.cache/xnorbench``), keyed by the files' names, sizes and times, so the
60,000 JPEGs are decoded once per machine.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..paths import path_problem
from .registry import InputError

DATASETS = ("mnist", "cifar10")
NORMALIZATION = {
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}


class DatasetError(InputError):
    """The dataset is missing or unreadable; the message says where we looked and why."""


@dataclass
class Split:
    images: Tensor   # uint8 [N, C, H, W]
    labels: Tensor   # int64 [N]

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class DataBundle:
    name: str
    train: Split
    test: Split
    num_classes: int
    in_channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    provenance: dict[str, Any] = field(default_factory=dict)


def data_dir(path: str | os.PathLike | None) -> Path:
    """``--data-dir``, else ``XNORBENCH_DATA``, else ``./data``."""
    return Path(path or os.environ.get("XNORBENCH_DATA") or "data").expanduser()


def cache_dir() -> Path:
    return Path(os.environ.get("XNORBENCH_CACHE")
                or Path.home() / ".cache" / "xnorbench").expanduser()


def _subset(split: Split, limit: int | None, seed: int = 0) -> Split:
    """A seeded random subset (ImageFolder order is by class, so never 'the first N')."""
    if limit is None or limit >= len(split):
        return split
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(split), generator=g)[:limit].sort().values
    return Split(split.images[idx], split.labels[idx])


def _load_mnist(root: Path, download: bool) -> tuple[Split, Split, dict[str, Any]]:
    from torchvision.datasets import MNIST

    raw = root / "MNIST" / "raw"
    names = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    if not download and not all((raw / n).is_file() for n in names):
        missing = [str(raw / n) for n in names if not (raw / n).is_file()]
        raise DatasetError(
            f"MNIST not found: looked for {', '.join(missing)}. Point --data-dir (or "
            "XNORBENCH_DATA) at the folder that contains MNIST/raw/, or pass --download.")
    try:
        train = MNIST(str(root), train=True, download=download)
        test = MNIST(str(root), train=False, download=download)
    except Exception as exc:
        raise DatasetError(f"MNIST under {raw} could not be read: {exc}. The IDX files may "
                           "be truncated or not MNIST; replace them.") from exc
    splits = []
    for ds in (train, test):
        imgs = ds.data
        if imgs.dim() != 3 or imgs.shape[0] != ds.targets.shape[0]:
            raise DatasetError(f"MNIST under {raw}: images and labels disagree in count")
        splits.append(Split(imgs.unsqueeze(1).contiguous(), ds.targets.long()))
    prov = {"format": "mnist-idx", "files": [str(raw / n) for n in names]}
    return splits[0], splits[1], prov


def _load_cifar_batches(root: Path) -> tuple[Split, Split, dict[str, Any]]:
    from torchvision.datasets import CIFAR10

    try:
        train = CIFAR10(str(root), train=True, download=False)
        test = CIFAR10(str(root), train=False, download=False)
    except Exception as exc:
        raise DatasetError(f"CIFAR-10 batches under {root / 'cifar-10-batches-py'} could "
                           f"not be read: {exc}") from exc
    out = []
    for ds in (train, test):
        imgs = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        out.append(Split(imgs, torch.tensor(ds.targets, dtype=torch.long)))
    return out[0], out[1], {"format": "cifar-10-batches-py",
                            "files": [str(root / "cifar-10-batches-py")]}


def _folder_key(files: list[tuple[str, int]]) -> str:
    h = hashlib.sha256()
    for path, _ in files:
        st = os.stat(path)
        h.update(f"{path}|{st.st_size}|{int(st.st_mtime)}\n".encode())
    return h.hexdigest()[:24]


def _decode_files(paths: list[str], progress: Callable[..., Any] | None, label: str
                  ) -> list[Tensor]:
    """Decode image files to uint8 RGB tensors, in threads (the decoder releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    from torchvision.io import ImageReadMode, decode_image, read_file

    def decode(chunk: list[str]) -> list[Tensor]:
        out = []
        for path in chunk:
            try:
                out.append(decode_image(read_file(path), mode=ImageReadMode.RGB))
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
        for part in (progress(results, label, total=len(chunks)) if progress else results):
            images.extend(part)
    return images


def decode_image_folder(folder: Path, progress: Callable[..., Any] | None = None) -> Split:
    """Decode an ImageFolder tree to uint8 RGB tensors (cached by file identity)."""
    from torchvision.datasets import ImageFolder

    try:
        samples = ImageFolder(str(folder)).samples
    except (FileNotFoundError, RuntimeError) as exc:
        raise DatasetError(f"{folder}: not an ImageFolder tree ({exc})") from exc
    key = _folder_key(samples)
    cache = cache_dir() / f"imagefolder-{key}.pt"
    if cache.is_file():
        try:
            data = torch.load(cache, weights_only=True)
            return Split(data["images"], data["labels"])
        except Exception:
            cache.unlink(missing_ok=True)
    images = _decode_files([path for path, _ in samples], progress, f"decode {folder.name}")
    shapes = {tuple(i.shape) for i in images}
    if len(shapes) != 1:
        raise DatasetError(f"{folder}: images differ in size ({sorted(shapes)[:3]} ...)")
    split = Split(torch.stack(images), torch.tensor([c for _, c in samples], dtype=torch.long))
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        torch.save({"images": split.images, "labels": split.labels}, tmp)
        tmp.replace(cache)
    except OSError:
        pass  # a read-only cache only costs a second decode
    return split


def _load_cifar(root: Path, progress: Callable[..., Any] | None
                ) -> tuple[Split, Split, dict[str, Any]]:
    batches = root / "cifar-10-batches-py"
    tree = root / "cifar10-jpeg"
    if batches.is_dir():
        return _load_cifar_batches(root)
    if (tree / "train").is_dir() and (tree / "test").is_dir():
        train = decode_image_folder(tree / "train", progress)
        test = decode_image_folder(tree / "test", progress)
        return train, test, {"format": "imagefolder", "files": [str(tree / "train"),
                                                                 str(tree / "test")]}
    raise DatasetError(
        f"CIFAR-10 not found: looked for {batches} and {tree}/{{train,test}}/<class>/. Point "
        "--data-dir (or XNORBENCH_DATA) at the folder that contains one of them.")


def load_dataset(name: str, root: str | os.PathLike | None = None, *, download: bool = False,
                 limit_train: int | None = None, limit_test: int | None = None,
                 progress: Callable[..., Any] | None = None) -> DataBundle:
    """Load ``mnist`` or ``cifar10`` as uint8 tensors, with optional seeded subsets."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    base = data_dir(root)
    problem = path_problem(base)
    if problem:
        raise DatasetError(f"--data-dir {str(base)[:60]}...: {problem}")
    if name == "mnist":
        train, test, prov = _load_mnist(base, download)
    else:
        if download:
            from torchvision.datasets import CIFAR10
            try:
                CIFAR10(str(base), train=True, download=True)
                CIFAR10(str(base), train=False, download=True)
            except Exception as exc:
                raise DatasetError(f"CIFAR-10 download to {base} failed: {exc}") from exc
        train, test, prov = _load_cifar(base, progress)
    full = {"train_full": len(train), "test_full": len(test)}
    train, test = _subset(train, limit_train), _subset(test, limit_test)
    mean, std = NORMALIZATION[name]
    prov.update(full, train_size=len(train), test_size=len(test), data_dir=str(base),
                subset_seed=0)
    return DataBundle(name, train, test, num_classes=10, in_channels=train.images.shape[1],
                      mean=mean, std=std, provenance=prov)
