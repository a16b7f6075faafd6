#!/usr/bin/env python3
"""Pack ../shared/data into one small folder the device machine can carry (< 64 MiB).

MNIST: the four IDX files, xz-compressed (55 MB -> 9 MB). CIFAR-10: every JPEG of the
ImageFolder tree shares one 623-byte header (same encoder, tables and size), so only the
entropy-coded scans are stored (55 MB -> 18 MB) with the header once; unpacking rebuilds
byte-identical files under the same names. Usage:

    python scripts/pack_device_data.py ../shared/data .gpudata
    python scripts/unpack_device_data.py .gpudata data      # on the device
"""

from __future__ import annotations

import hashlib
import json
import lzma
import sys
from pathlib import Path


def jpeg_header_length(data: bytes) -> int:
    """Bytes up to the end of the SOS segment (everything before the scan data)."""
    i = data.index(b"\xff\xda")
    return i + 2 + int.from_bytes(data[i + 2:i + 4], "big")


def pack(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    raw = src / "MNIST" / "raw"
    for f in sorted(raw.iterdir()):
        (dst / f"{f.name}.xz").write_bytes(lzma.compress(f.read_bytes(), preset=9))
    files = sorted((src / "cifar10-jpeg").glob("*/*/*.jpg"))
    header: bytes | None = None
    index = []
    with open(dst / "cifar10-scans.bin", "wb") as out:
        for f in files:
            data = f.read_bytes()
            n = jpeg_header_length(data)
            if header is None:
                header = data[:n]
            if data[:n] != header:
                raise SystemExit(f"{f}: JPEG header differs; this packer needs one header")
            out.write(data[n:])
            index.append([str(f.relative_to(src)), len(data) - n])
    assert header is not None
    (dst / "cifar10-header.jpg").write_bytes(header)
    digest = hashlib.sha256(b"".join(f.read_bytes() for f in files[:100])).hexdigest()
    (dst / "cifar10-index.json").write_text(json.dumps({"files": index,
                                                        "sha256_first100": digest}))
    total = sum(p.stat().st_size for p in dst.iterdir())
    print(f"packed {len(files)} JPEGs and MNIST into {dst}: {total / 2**20:.1f} MiB")


if __name__ == "__main__":
    pack(Path(sys.argv[1]), Path(sys.argv[2]))
