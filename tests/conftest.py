"""Tiny datasets in the real on-disk formats, so the real loaders run everywhere."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def write_idx(path: Path, data: torch.Tensor) -> None:
    """Write a uint8 tensor as an IDX file (big-endian header, as MNIST ships)."""
    magic = 0x0800 | data.dim()
    with open(path, "wb") as f:
        f.write(struct.pack(">I", magic))
        for s in data.shape:
            f.write(struct.pack(">I", s))
        f.write(data.to(torch.uint8).numpy().tobytes())


def make_mnist(root: Path, n_train: int = 96, n_test: int = 48, seed: int = 0) -> Path:
    """MNIST/raw IDX files whose digits are learnable (class = bright block position)."""
    g = torch.Generator().manual_seed(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = torch.randint(0, 10, (n,), generator=g)
        imgs = torch.randint(0, 60, (n, 28, 28), generator=g)
        for i, y in enumerate(labels.tolist()):
            r, c = divmod(y, 5)
            imgs[i, 4 + r * 10: 12 + r * 10, 1 + c * 5: 5 + c * 5] = 250
        write_idx(raw / f"{prefix}-images-idx3-ubyte", imgs)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


def make_cifar_folder(root: Path, per_class: int = 4, classes: int = 10, seed: int = 0) -> Path:
    """cifar10-jpeg/{train,test}/<class>/NNNN.png, 32x32 RGB."""
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    for split, n in (("train", per_class), ("test", max(1, per_class // 2))):
        for k in range(classes):
            d = root / "cifar10-jpeg" / split / f"class{k:02d}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = torch.randint(0, 80, (3, 32, 32), generator=g, dtype=torch.uint8)
                img[k % 3, :, 3 * k: 3 * k + 3] = 255
                Image.fromarray(img.permute(1, 2, 0).numpy()).save(d / f"{i:04d}.png")
    return root


@pytest.fixture()
def mnist_dir(tmp_path: Path) -> Path:
    return make_mnist(tmp_path / "data")


@pytest.fixture()
def cifar_dir(tmp_path: Path) -> Path:
    return make_cifar_folder(tmp_path / "data")


@pytest.fixture(autouse=True)
def _test_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the decoded-dataset cache and checkpoints of a test inside its tmp folder.

    The torch expressions that stand in for the C++ operators (float64, bfloat16, CUDA
    tensors) run eagerly (``XNORBENCH_COMPILE=0``) in every test but
    ``tests/test_compiled.py``, which checks that their compiled graphs compute the same:
    each compile costs seconds to a minute on a 2-vCPU CI machine, and a test of the
    gradient maths or of DDP checks the maths, not the compiler, through them."""
    monkeypatch.setenv("XNORBENCH_COMPILE", "0")
    monkeypatch.setenv("XNORBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("XNORBENCH_DB", raising=False)
    monkeypatch.delenv("XNORBENCH_DATA", raising=False)
    monkeypatch.chdir(tmp_path)


def kernels_of(build: str):
    """The kernel extension of ``build`` (native, avx2, portable); skips the test where
    this CPU cannot run that build, and the avx2 build where the native build already
    is the AVX2 path (a CPU without AVX-512: the same code, a minute's compile for no
    check of its own; an AVX-512 CPU compiles and checks it)."""
    from xnorbench.xnor.kernels import cpu_has_avx2, expected_isa, load_kernels

    if build == "avx2" and not cpu_has_avx2():
        pytest.skip("this CPU cannot run the avx2 build")
    if build == "avx2" and expected_isa("native") == expected_isa("avx2"):
        pytest.skip("the native build is the avx2 path on this CPU (checked as native)")
    return load_kernels(build=build)


def binary_layer(k, wpacked, alpha, c: int, oc: int, kernel: int, stride: int = 1,
                 pad: int = 0, bias=None, thresh=None, flip=None):
    """The extension ``k``'s ``BinaryLayer``: square kernel, stride and padding."""
    return k.BinaryLayer(wpacked, alpha, bias, thresh, flip,
                         [c, oc, kernel, kernel, stride, stride, pad, pad])
