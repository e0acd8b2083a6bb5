"""Apply a random torchvision transform independently to every sample of a batch."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


def apply_per_sample(transform: Callable[[Tensor], Tensor], images: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, C, H, W), calling `transform` on each (C, H, W) image.

    torchvision's automatic-augmentation transforms draw one op and magnitude per call, so
    calling them on a whole batch would augment every sample identically; a loop restores
    the per-sample randomness a data loader gives. The input tensor is not modified.
    """
    return torch.stack([transform(image) for image in images])
