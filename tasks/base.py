"""Benchmark: a named dataset with its splits and the defaults of a sensible run."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from metaaugment.data import ClassificationData, ImageSplit
from metaaugment.registry import Registry

BENCHMARKS: Registry["Benchmark"] = Registry("benchmark")


@dataclass(frozen=True)
class Benchmark:
    """A dataset plus run defaults; `load(data_root)` returns its splits.

    load: data_root -> ClassificationData; raises UserError naming the missing files.
    needs_data: False for embedded benchmarks that ship with their dependencies.
    """

    name: str
    load: Callable[[Path], ClassificationData]
    default_model: str
    default_epochs: int
    default_batch_size: int
    default_learner: str = "supervised"
    default_learner_options: dict[str, Any] = field(default_factory=dict)
    needs_data: bool = True


def split_off(images: torch.Tensor, labels: torch.Tensor, count: int, seed: int = 0) -> tuple[ImageSplit, ImageSplit]:
    """Split (N, C, H, W) uint8 images into (N - count, count) parts by a fixed permutation.

    The seed is fixed per benchmark, not per run, so every run and every policy sees the same
    validation split.
    """
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    keep, held = order[count:], order[:count]
    return ImageSplit(images[keep], labels[keep]), ImageSplit(images[held], labels[held])
