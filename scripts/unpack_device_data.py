#!/usr/bin/env python3
"""Rebuild the data layout from ``pack_device_data.py``'s folder (byte-identical files)."""

from __future__ import annotations

import hashlib
import json
import lzma
import sys
from pathlib import Path


def unpack(src: Path, dst: Path) -> None:
    raw = dst / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.glob("*.xz")):
        (raw / f.name[:-3]).write_bytes(lzma.decompress(f.read_bytes()))
    header = (src / "cifar10-header.jpg").read_bytes()
    meta = json.loads((src / "cifar10-index.json").read_text())
    first = []
    with open(src / "cifar10-scans.bin", "rb") as scans:
        for rel, n in meta["files"]:
            path = dst / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            data = header + scans.read(n)
            path.write_bytes(data)
            if len(first) < 100:
                first.append(data)
    if hashlib.sha256(b"".join(first)).hexdigest() != meta["sha256_first100"]:
        raise SystemExit("unpacked JPEGs differ from the originals")
    print(f"unpacked MNIST and {len(meta['files'])} CIFAR-10 JPEGs into {dst}")


if __name__ == "__main__":
    unpack(Path(sys.argv[1]), Path(sys.argv[2]))
