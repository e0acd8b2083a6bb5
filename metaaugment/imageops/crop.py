"""Zero-padded random crops with flips, per sample: the standard CIFAR training pipeline."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def pad_crop_flip(images: Tensor, padding: int, offsets: Tensor, flips: Tensor) -> Tensor:
    """(B, C, H, W) images, each zero-padded by `padding` pixels on every side, cropped back to
    H x W at its (top, left) `offsets` (B, 2) in [0, 2 * padding], and mirrored left-right
    where `flips` (B,) is True. Offsets (padding, padding) without a flip give the image back.
    Any dtype (uint8 too); one gather for the whole batch."""
    batch, channels, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding)) if padding else images
    offsets = offsets.to(images.device)
    rows = offsets[:, 0, None] + torch.arange(height, device=images.device)  # (B, H)
    cols = offsets[:, 1, None] + torch.arange(width, device=images.device)  # (B, W)
    cols = torch.where(flips.to(images.device)[:, None], cols.flip(1), cols)  # a flip reads the columns backwards
    picked = padded[torch.arange(batch, device=images.device)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return picked.permute(0, 3, 1, 2)  # (B, H, W, C) -> (B, C, H, W)
