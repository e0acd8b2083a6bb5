"""Random horizontal flips, per sample."""
from __future__ import annotations

import torch
from torch import Tensor


def random_flip(images: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Horizontal flip of each image with probability 1/2: (B, C, H, W) -> a new (B, C, H, W)."""
    flip = torch.rand(images.shape[0], generator=generator) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1).to(images.device), images.flip(-1), images)
