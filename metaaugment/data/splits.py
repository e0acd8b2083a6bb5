"""In-memory image splits of mini-batch benchmarks (train / validation / test)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from metaaugment.batch import Batch
from metaaugment.spec import TaskSpec


@dataclass
class ImageSplit:
    """One split held as uint8 images (N, C, H, W) and int64 labels (N,).

    uint8 keeps a split at a quarter of its float32 size; batches are converted to float
    [0, 1] on the target device only when drawn. `train_transform(images, indices, draw)`,
    when set, preprocesses the training batches of pass `draw` (CIFAR's pad, crop and flip:
    `data.train_crops.PadCropFlip`).
    """

    images: Tensor
    labels: Tensor
    train_transform: Callable[[Tensor, Tensor, int], Tensor] | None = None

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError("labels must be (N,) and match the number of images")

    def __len__(self) -> int:
        return self.images.shape[0]

    def batch(self, indices: Tensor, device: torch.device | str = "cpu", draw: int | None = None) -> Batch:
        """The samples at `indices` as a float Batch on `device`; a training batch of pass
        `draw` (not None) goes through `train_transform` when there is one."""
        images = self.images[indices].to(device, non_blocking=True)
        if draw is not None and self.train_transform is not None:
            images = self.train_transform(images, indices, draw)
        return Batch(images.float().div_(255.0), self.labels[indices].to(device, non_blocking=True))


@dataclass
class ClassificationData:
    """Train / validation / test splits of a classification benchmark and their TaskSpec."""

    train: ImageSplit
    val: ImageSplit
    test: ImageSplit
    spec: TaskSpec


def split_off(images: torch.Tensor, labels: torch.Tensor, count: int, seed: int = 0) -> tuple[ImageSplit, ImageSplit]:
    """Split (N, C, H, W) uint8 images into (N - count, count) parts by a fixed permutation.

    The seed is fixed per benchmark, not per run, so every run and every policy sees the same
    validation split.
    """
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    keep, held = order[count:], order[:count]
    return ImageSplit(images[keep], labels[keep]), ImageSplit(images[held], labels[held])
