#!/usr/bin/env python3
"""Images/s of the input pipeline alone: torchvision's per-image pipeline vs ours.

Before: ImageFolder + RandomCrop/Flip/ToTensor/Normalize + DataLoader (decode and
augment each image in worker processes). After: xnorbench's decoded uint8 tensors with
batched augmentation (data.loader.BatchLoader). Both yield normalised float batches
of CIFAR-10 training images. Usage: python scripts/loader_speed.py DATA_DIR [N_IMAGES]
"""

from __future__ import annotations

import sys
import time

import torch
from torchvision import datasets, transforms

from xnorbench.data.datasets import NORMALIZATION, load_dataset
from xnorbench.data.loader import BatchLoader


def main() -> None:
    root, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 10000
    mean, std = NORMALIZATION["cifar10"]
    tf = transforms.Compose([transforms.RandomCrop(32, padding=4),
                             transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                             transforms.Normalize(mean, std)])
    folder = datasets.ImageFolder(f"{root}/cifar10-jpeg/train", transform=tf)
    subset = torch.utils.data.Subset(folder, torch.randperm(len(folder))[:n].tolist())
    dl = torch.utils.data.DataLoader(subset, batch_size=128, shuffle=True, num_workers=2)
    t0 = time.perf_counter()
    seen = sum(x.shape[0] for x, _ in dl)
    before = seen / (time.perf_counter() - t0)

    bundle = load_dataset("cifar10", root, limit_train=n)  # decoded once (cached)
    loader = BatchLoader(bundle.train, 128, mean=mean, std=std, shuffle=True, augment=True)
    t0 = time.perf_counter()
    seen = sum(x.shape[0] for x, _ in loader)
    after = seen / (time.perf_counter() - t0)
    print(f"threads {torch.get_num_threads()}, {n} images: torchvision DataLoader "
          f"{before:.0f} img/s, xnorbench BatchLoader {after:.0f} img/s "
          f"({after / before:.1f}x)")


if __name__ == "__main__":
    main()
