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

A decoded ImageFolder tree is cached as a uint8 tensor file (``XNORBENCH_CACHE``,
default ``~/.cache/xnorbench``), keyed by the files' names, sizes, inodes and times (to
the nanosecond), with its classes and per-channel statistics, so the 60,000 JPEGs are
decoded once per machine.
Gzipped IDX files are unpacked into the same cache (the data folder is never written).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..paths import path_problem
from .registry import InputError
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


class DatasetError(InputError):
    """The dataset is missing or unreadable; the message says where we looked and why."""


def data_dir(path: str | os.PathLike | None) -> Path:
    """``--data-dir``, else ``XNORBENCH_DATA``, else ``./data``."""
    return Path(path or os.environ.get("XNORBENCH_DATA") or "data").expanduser()


def cache_dir() -> Path:
    return Path(os.environ.get("XNORBENCH_CACHE")
                or Path.home() / ".cache" / "xnorbench").expanduser()


def _subset(split: Any, limit: int | None, seed: int = 0) -> Any:
    """A seeded random subset (ImageFolder order is by class, so never 'the first N')."""
    if limit is None or limit >= len(split):
        return split
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(split), generator=g)[:limit].sort().values
    if hasattr(split, "subset"):
        return split.subset(idx)
    return Split(split.images[idx], split.labels[idx])


def _idx_root(root: Path, cls: str) -> tuple[Path, list[str]]:
    """The root torchvision's class should read, and the IDX files it will find there.

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
    key = _folder_key([(str(f), 0) for f in files])
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
    import torchvision.datasets as tvd

    cls = MNIST_FAMILY[name]
    dataset = getattr(tvd, cls)
    if download:
        files = [str(root / cls / "raw" / n) for n in IDX_FILES]
        read_root = root
    else:
        read_root, files = _idx_root(root, cls)
    raw = root / cls / "raw"
    try:
        train = dataset(str(read_root), train=True, download=download)
        test = dataset(str(read_root), train=False, download=download)
    except Exception as exc:
        raise DatasetError(f"{cls} under {raw} could not be read: {exc}. The IDX files may "
                           f"be truncated or not {cls}; replace them.") from exc
    splits = []
    for ds in (train, test):
        imgs = ds.data
        if imgs.dim() != 3 or imgs.shape[0] != ds.targets.shape[0]:
            raise DatasetError(f"{cls} under {raw}: images and labels disagree in count")
        splits.append(Split(imgs.unsqueeze(1).contiguous(), ds.targets.long()))
    prov = {"format": "idx", "class": cls, "files": files,
            "fingerprint": content_fingerprint(files)}
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
    folder = str(root / "cifar-10-batches-py")
    return out[0], out[1], {"format": "cifar-10-batches-py", "files": [folder],
                            "fingerprint": content_fingerprint([folder])}


def _folder_key(files: list[tuple[str, int]]) -> str:
    """The cache key of decoded files: each file's path, size, inode and modification
    time to the nanosecond (a file rewritten in place, even with its old time put back
    by hand to the second, gets a new key)."""
    h = hashlib.sha256()
    for path, _ in files:
        st = os.stat(path)
        h.update(f"{path}|{st.st_size}|{st.st_ino}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def content_fingerprint(paths: list[str]) -> str:
    """A hash of these files' bytes (IDX files, CIFAR batches: at most a few hundred MB,
    hashed in well under a second): what a resumed run checks it reads again."""
    h = hashlib.sha256()
    for path in paths:
        p = Path(path)
        for f in sorted(p.rglob("*")) if p.is_dir() else [p]:
            if f.is_file():
                with open(f, "rb") as stream:
                    h.update(f"{f.name}|".encode() + hashlib.file_digest(stream, "sha256")
                             .digest())
    return h.hexdigest()[:24]


def listing_fingerprint(root: Path, samples: list[tuple[str, int]], sizes: bool = True
                        ) -> str:
    """A hash of an ImageFolder tree's listing: each file's path under ``root``, its
    class and (``sizes``) its size. Cheap for 60,000 files; the labels of a tree are its
    folder names, so a relabelled tree changes it."""
    h = hashlib.sha256()
    for path, label in samples:
        size = os.stat(path).st_size if sizes else -1
        h.update(f"{os.path.relpath(path, root)}|{label}|{size}\n".encode())
    return h.hexdigest()[:24]


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
    key = _folder_key(samples)
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


def _list_image_folder(root: Path) -> tuple[Any, Any, dict[str, Any]]:
    """The ImageNet path: the tree's files, listed (decoded per batch by the loader)."""
    from .imagenet import list_files

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


def _load_image_folder(root: Path, progress: Callable[..., Any] | None
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


def _load_cifar(root: Path, progress: Callable[..., Any] | None
                ) -> tuple[Split, Split, dict[str, Any]]:
    batches = root / "cifar-10-batches-py"
    tree = root / "cifar10-jpeg"
    if batches.is_dir():
        return _load_cifar_batches(root)
    if (tree / "train").is_dir() and (tree / "test").is_dir():
        train = read_image_folder(tree / "train", progress)
        test = read_image_folder(tree / "test", progress)
        return train.split, test.split, {
            "format": "imagefolder", "files": [str(tree / "train"), str(tree / "test")],
            "fingerprint": f"{train.fingerprint}|{test.fingerprint}"}
    raise DatasetError(
        f"CIFAR-10 not found: looked for {batches} and {tree}/{{train,test}}/<class>/. Point "
        "--data-dir (or XNORBENCH_DATA) at the folder that contains one of them.")


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
            train, test, prov = _list_image_folder(base)
            from .imagenet import MEAN, STD

            mean, std, num_classes = MEAN, STD, len(train.classes)
        else:
            train, test, prov, folder = _load_image_folder(base, progress)
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
        train, test, prov = _load_cifar(base, progress)
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
