"""Random horizontal flips, per sample."""
from __future__ import annotations

import torch
from torch import Tensor

from metaaugment.batch import Share


def random_flip(images: Tensor, generator: torch.Generator | None = None, share: Share | None = None) -> Tensor:
    """Horizontal flip of each image with probability 1/2: (b, C, H, W) -> a new (b, C, H, W).
    `share`: the images are these rows of a global batch, whose draws are made."""
    flip = torch.rand(share.total if share is not None else images.shape[0], generator=generator) < 0.5
    if share is not None:
        flip = share.take(flip)
    return torch.where(flip.view(-1, 1, 1, 1).to(images.device), images.flip(-1), images)
