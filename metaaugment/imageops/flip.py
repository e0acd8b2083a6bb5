"""Random horizontal flips, per sample: the draws, then their application."""
from __future__ import annotations

import torch
from torch import Tensor


def draw_flips(count: int, generator: torch.Generator | None = None) -> Tensor:
    """(count,) bool: which of `count` images to flip, each with probability 1/2."""
    return torch.rand(count, generator=generator) < 0.5


def apply_flips(images: Tensor, flips: Tensor) -> Tensor:
    """(b, C, H, W) images with those of `flips` (b,) bool mirrored left-right -> a new (b, C, H, W)."""
    return torch.where(flips.view(-1, 1, 1, 1).to(images.device), images.flip(-1), images)


def random_flip(images: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Horizontal flip of each image with probability 1/2: (b, C, H, W) -> a new (b, C, H, W)."""
    return apply_flips(images, draw_flips(images.shape[0], generator))
