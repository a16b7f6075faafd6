"""Other data: the MNIST family through torchvision's classes (plain or gzipped IDX files)
and any ImageFolder tree (channels, size, classes and normalization from the data)."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from xnorbench.cli import app
from xnorbench.data.datasets import load_dataset
from xnorbench.data.files import DatasetError
from xnorbench.data.folders import channel_stats
from xnorbench.db import Store

from .conftest import make_mnist, write_idx

runner = CliRunner()


def make_idx_family(root: Path, cls: str, gz: bool) -> Path:
    """``<root>/<cls>/raw`` IDX files (as torchvision lays out FashionMNIST / KMNIST)."""
    make_mnist(root / "tmp", n_train=128, n_test=32, seed=3)
    raw = root / cls / "raw"
    raw.mkdir(parents=True)
    for f in (root / "tmp" / "MNIST" / "raw").iterdir():
        if gz:
            with open(f, "rb") as src, gzip.open(raw / f"{f.name}.gz", "wb") as dst:
                shutil.copyfileobj(src, dst)
        else:
            shutil.copy(f, raw / f.name)
    shutil.rmtree(root / "tmp")
    return root


def make_image_folder(root: Path, classes: int, size: tuple[int, int], grey: bool,
                      test_name: str = "test", per_class: int = 6) -> Path:
    """``<root>/{train,<test_name>}/<class>/*.png``; the class is a bright stripe."""
    from PIL import Image

    g = torch.Generator().manual_seed(1)
    h, w = size
    for split, n in (("train", per_class), (test_name, 2)):
        for k in range(classes):
            d = root / split / f"c{k}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = torch.randint(0, 60, (h, w) if grey else (h, w, 3), generator=g,
                                    dtype=torch.uint8)
                img[:, 2 * k: 2 * k + 2] = 250
                Image.fromarray(img.numpy()).save(d / f"{i}.png")
    return root


@pytest.mark.parametrize("name,cls", [("fashion-mnist", "FashionMNIST"), ("kmnist", "KMNIST")])
@pytest.mark.parametrize("gz", [False, True])
def test_mnist_family_loads_plain_or_gzipped(tmp_path: Path, name: str, cls: str, gz: bool):
    root = make_idx_family(tmp_path / "data", cls, gz)
    before = sorted(p.name for p in (root / cls / "raw").iterdir())
    bundle = load_dataset(name, root)
    assert bundle.name == name and len(bundle.train) == 128 and len(bundle.test) == 32
    assert bundle.in_channels == 1 and bundle.image_size == (28, 28)
    assert bundle.provenance["class"] == cls
    assert sorted(p.name for p in (root / cls / "raw").iterdir()) == before  # never written


def test_mnist_family_missing_files_named(tmp_path: Path):
    with pytest.raises(DatasetError, match=r"FashionMNIST not found: looked for .*"
                                           r"FashionMNIST/raw/train-images-idx3-ubyte"):
        load_dataset("fashion-mnist", tmp_path)


def test_image_folder_grey_takes_shape_classes_and_stats_from_data(tmp_path: Path):
    root = make_image_folder(tmp_path / "tree", classes=3, size=(20, 24), grey=True,
                             test_name="val")
    bundle = load_dataset("imagefolder", root)
    assert bundle.num_classes == 3 and bundle.in_channels == 1
    assert bundle.image_size == (20, 24) and len(bundle.train) == 18 and len(bundle.test) == 6
    mean, std = channel_stats(bundle.train.images)
    assert bundle.mean == pytest.approx(mean) and len(bundle.mean) == 1
    assert 0.1 < bundle.mean[0] < 0.5 and bundle.std[0] > 0.1
    assert bundle.name == "imagefolder:tree"
    cached = list((tmp_path / "cache").glob("imagefolder-*-auto.pt"))
    assert len(cached) == 2 and "mean" in torch.load(cached[0], weights_only=True)
    again = load_dataset("imagefolder", root)  # from the cache: the same tensors and stats
    assert torch.equal(again.train.images, bundle.train.images) and again.mean == bundle.mean


def test_image_folder_rgb(tmp_path: Path):
    bundle = load_dataset("imagefolder", make_image_folder(tmp_path / "rgb", classes=2,
                                                           size=(16, 16), grey=False))
    assert bundle.in_channels == 3 and len(bundle.mean) == 3 and bundle.num_classes == 2


@pytest.mark.parametrize("layout,message", [
    ("no-test", "missing {root}/test (or val/)"),
    ("no-train", "missing {root}/train"),
    ("other-classes", "test/ has classes"),
])
def test_image_folder_wrong_layout_one_line(tmp_path: Path, layout: str, message: str):
    root = make_image_folder(tmp_path / "bad", classes=2, size=(16, 16), grey=True)
    if layout == "no-test":
        shutil.rmtree(root / "test")
    elif layout == "no-train":
        shutil.rmtree(root / "train")
    else:
        (root / "test" / "c1").rename(root / "test" / "zz")
    res = runner.invoke(app, ["--db", str(tmp_path / "x.db"), "run", "accuracy", "--dataset",
                              "imagefolder", "--data-dir", str(root), "--no-progress"])
    assert res.exit_code == 2, res.output
    assert message.format(root=root) in res.output and "Traceback" not in res.output
    assert not Store.open(str(tmp_path / "x.db")).runs()  # nothing written


def test_train_on_fashion_mnist_and_on_an_image_folder(tmp_path: Path):
    """Both train end to end, float and XNOR, the packed network included; the model
    takes its input channels, size and class count from the data."""
    fashion = make_idx_family(tmp_path / "f", "FashionMNIST", gz=True)
    tree = make_image_folder(tmp_path / "tree", classes=3, size=(20, 20), grey=True)
    db = str(tmp_path / "d.db")
    for dataset, data in (("fashion-mnist", fashion), ("imagefolder", tree)):
        res = runner.invoke(app, ["--db", db, "run", "accuracy", "--dataset", dataset,
                                  "--model", "lenet5", "--epochs", "1", "--batch-size", "16",
                                  "--data-dir", str(data), "--device", "cpu",
                                  "--no-progress"])
        assert res.exit_code == 0, res.output
    store = Store.open(db)
    rows = store.results(metric="packed_agreement")
    assert {r.dataset for r in rows} == {"fashion-mnist", "imagefolder:tree"}
    assert all(r.value is not None for r in rows)
    size = next(r for r in store.results(metric="dataset_size")
                if r.dataset == "imagefolder:tree")
    assert size.params["classes"] == ["c0", "c1", "c2"] and len(size.params["mean"]) == 1


def test_decoding_progress_counts_images_not_chunks(tmp_path, monkeypatch):
    """The decode's progress runs over images (its total is the number of files), so
    its rate is images per second, not 500-image chunks per second."""
    from xnorbench.data.folders import read_image_folder

    from .conftest import make_cifar_folder

    root = make_cifar_folder(tmp_path / "data")
    seen: dict[str, int] = {}

    def progress(items, label, total=None):
        seen["total"] = total
        for item in items:
            seen["n"] = seen.get("n", 0) + 1
            yield item

    monkeypatch.setenv("XNORBENCH_CACHE", str(tmp_path / "cache"))  # decode, not load
    data = read_image_folder(root / "cifar10-jpeg" / "train", progress)
    assert seen["total"] == seen["n"] == len(data.split.labels)


def test_a_file_rewritten_in_place_with_its_time_put_back_is_decoded_again(tmp_path: Path):
    """The decode cache's key holds the inode and the nanosecond time, so a file rewritten
    in place (same size) with its time restored to the second misses the cache."""
    import os

    from xnorbench.data.files import file_key

    f = tmp_path / "img.png"
    f.write_bytes(b"a" * 100)
    os.utime(f, ns=(1_700_000_000_123_456_789, 1_700_000_000_123_456_789))
    before = file_key([(str(f), 0)])
    f.write_bytes(b"b" * 100)
    os.utime(f, (1_700_000_000, 1_700_000_000))  # `touch -d` to the second
    assert file_key([(str(f), 0)]) != before


def test_truncated_idx_file(tmp_path: Path):
    data = make_mnist(tmp_path / "data")
    f = data / "MNIST" / "raw" / "train-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:5000])
    db = tmp_path / "t.db"
    res = runner.invoke(app, ["--db", str(db), "run", "accuracy", "--data-dir", str(data),
                              "--device", "cpu", "--no-progress"])
    assert res.exit_code == 2, res.output
    assert "could not be read" in res.output and "Traceback" not in res.output
    assert Store.open(str(db)).runs() == []  # nothing written


def test_labels_and_images_disagree(tmp_path: Path):
    import torch

    data = make_mnist(tmp_path / "data")
    write_idx(data / "MNIST" / "raw" / "t10k-labels-idx1-ubyte", torch.zeros(5, dtype=torch.uint8))
    res = runner.invoke(app, ["--db", str(tmp_path / "l.db"), "run", "accuracy", "--data-dir",
                              str(data), "--device", "cpu", "--no-progress"])
    assert res.exit_code == 2 and "Traceback" not in res.output
