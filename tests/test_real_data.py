"""The real datasets in ../shared/data load with their official sizes (skipped if absent)."""

import pytest

from xnorbench.data.datasets import load_dataset

from .conftest import SHARED_DATA


@pytest.mark.skipif(not (SHARED_DATA / "MNIST" / "raw").is_dir(), reason="no ../shared/data")
def test_real_mnist_sizes():
    b = load_dataset("mnist", SHARED_DATA)
    assert (len(b.train), len(b.test)) == (60000, 10000)
    assert tuple(b.train.images.shape[1:]) == (1, 28, 28)
    assert set(b.train.labels.unique().tolist()) == set(range(10))


@pytest.mark.skipif(not (SHARED_DATA / "cifar10-jpeg").is_dir(), reason="no ../shared/data")
def test_real_cifar10_sizes():
    b = load_dataset("cifar10", SHARED_DATA)
    assert (len(b.train), len(b.test)) == (50000, 10000)
    assert tuple(b.train.images.shape[1:]) == (3, 32, 32)
    assert b.train.labels.bincount().tolist() == [5000] * 10
    mean = b.train.images.float().mean(dim=(0, 2, 3)) / 255
    assert mean.tolist() == pytest.approx([0.4913, 0.4821, 0.4465], abs=2e-3)
