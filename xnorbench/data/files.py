"""Where the data lives and how its files are identified.

The data folder (``--data-dir`` / ``XNORBENCH_DATA`` / ``./data``), the decode cache
(``XNORBENCH_CACHE``, default ``~/.cache/xnorbench``), and the fingerprints a run stores
so that a resume or a table can tell whether it reads the same data again.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from ..errors import InputError


class DatasetError(InputError):
    """The dataset is missing or unreadable; the message says where we looked and why."""


def data_dir(path: str | os.PathLike | None) -> Path:
    """``--data-dir``, else ``XNORBENCH_DATA``, else ``./data``."""
    return Path(path or os.environ.get("XNORBENCH_DATA") or "data").expanduser()


def cache_dir() -> Path:
    return Path(os.environ.get("XNORBENCH_CACHE")
                or Path.home() / ".cache" / "xnorbench").expanduser()


def file_key(files: list[tuple[str, int]]) -> str:
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
                digest = hashlib.sha256()  # hashlib.file_digest is 3.11+
                with open(f, "rb") as stream:
                    for chunk in iter(lambda: stream.read(1 << 20), b""):
                        digest.update(chunk)
                h.update(f"{f.name}|".encode() + digest.digest())
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


def torchvision_splits(dataset: Any, root: Path, download: bool, what: str, hint: str = ""
                       ) -> tuple[Any, Any]:
    """The train and test splits of a torchvision dataset class under ``root``; a file
    it cannot read is one ``DatasetError`` line: ``what``, the reason, then ``hint``."""
    try:
        return (dataset(str(root), train=True, download=download),
                dataset(str(root), train=False, download=download))
    except Exception as exc:
        raise DatasetError(f"{what}: {exc}{hint}") from exc
