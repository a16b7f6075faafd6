"""What a loaded dataset is: uint8 image tensors with their labels, per split, and the
facts a run records about them (classes, channels, normalization, provenance).

Its own module so that the loaders (:mod:`.loader`, :mod:`.imagenet`) and the dataset
readers (:mod:`.datasets`) can all use it without importing one another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor


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

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of every image (the crop size of a file-based split)."""
        if hasattr(self.train, "image_size"):
            return tuple(self.train.image_size)
        return int(self.train.images.shape[2]), int(self.train.images.shape[3])
