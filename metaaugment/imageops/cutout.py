"""Cutout (DeVries & Taylor 2017): one size x size square of each image set to zero."""
from __future__ import annotations

import torch
from torch import Tensor

PLACEMENTS = ("center", "inside")


def draw_cutout(count: int, height: int, width: int, size: int, placement: str = "center",
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """(top, left), each (count,) int64: the squares' corners for `count` images of height x width.

    placement "center": the square's centre is uniform over the image and the square is
    clipped by the border (DeVries & Taylor's code, MetaAugment's pipeline); "inside": the
    square is uniform among the positions where it fits whole (torchvision's RandomErasing
    placement, the `cutout` baseline)."""
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)} (got {placement!r})")
    if placement == "center":
        top = torch.randint(height, (count,), generator=generator) - size // 2
        left = torch.randint(width, (count,), generator=generator) - size // 2
    else:
        top = torch.randint(height - size + 1, (count,), generator=generator)
        left = torch.randint(width - size + 1, (count,), generator=generator)
    return top, left


def apply_cutout(images: Tensor, size: int, top: Tensor, left: Tensor) -> Tensor:
    """(b, C, H, W) images with the size x size square at (top, left) (each (b,)) zeroed -> a new (b, C, H, W)."""
    height, width = images.shape[-2], images.shape[-1]
    top, left = top.to(images.device).view(-1, 1, 1), left.to(images.device).view(-1, 1, 1)
    rows = torch.arange(height, device=images.device).view(1, height, 1)
    cols = torch.arange(width, device=images.device).view(1, 1, width)
    inside = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)
    return images.masked_fill(inside.unsqueeze(1), 0.0)


def cutout(images: Tensor, size: int, generator: torch.Generator | None = None, placement: str = "center") -> Tensor:
    """Zero one size x size square per image of (b, C, H, W) images -> a new (b, C, H, W)
    (`draw_cutout`'s placements)."""
    top, left = draw_cutout(images.shape[0], images.shape[-2], images.shape[-1], size, placement, generator)
    return apply_cutout(images, size, top, left)
