"""Cutout (DeVries & Taylor 2017): one size x size square of each image set to zero."""
from __future__ import annotations

import torch
from torch import Tensor

from metaaugment.batch import Share

PLACEMENTS = ("center", "inside")


def cutout(images: Tensor, size: int, generator: torch.Generator | None = None, placement: str = "center",
           share: Share | None = None) -> Tensor:
    """Zero one size x size square per image of (b, C, H, W) images -> a new (b, C, H, W).

    placement "center": the square's centre is uniform over the image and the square is
    clipped by the border (DeVries & Taylor's code, MetaAugment's pipeline); "inside": the
    square is uniform among the positions where it fits whole (torchvision's RandomErasing
    placement, the `cutout` baseline). `share`: the images are these rows of a global batch,
    whose draws are made."""
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)} (got {placement!r})")
    height, width = images.shape[-2], images.shape[-1]
    count = share.total if share is not None else images.shape[0]
    if placement == "center":
        top = torch.randint(height, (count,), generator=generator) - size // 2
        left = torch.randint(width, (count,), generator=generator) - size // 2
    else:
        top = torch.randint(height - size + 1, (count,), generator=generator)
        left = torch.randint(width - size + 1, (count,), generator=generator)
    if share is not None:
        top, left = share.take(top), share.take(left)
    top, left = top.to(images.device).view(-1, 1, 1), left.to(images.device).view(-1, 1, 1)
    rows = torch.arange(height, device=images.device).view(1, height, 1)
    cols = torch.arange(width, device=images.device).view(1, 1, width)
    inside = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)
    return images.masked_fill(inside.unsqueeze(1), 0.0)
