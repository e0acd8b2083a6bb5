"""Apply a random torchvision transform independently to every sample of a batch."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor


def draw_seeds(count: int) -> Tensor:
    """(count,) int64: one seed per image, for the transform's draws on that image."""
    return torch.randint(2**62, (count,))


def apply_per_sample(transform: Callable[[Tensor], Tensor], images: Tensor, seeds: Tensor | None = None) -> Tensor:
    """(b, C, H, W) -> (b, C, H, W), calling `transform` on each (C, H, W) image.

    torchvision's automatic-augmentation transforms draw one op and magnitude per call, so
    calling them on a whole batch would augment every sample identically; a loop restores
    the per-sample randomness a data loader gives. Each image's call draws from a seed of its
    own (`seeds` (b,), from `draw_seeds`; drawn here when None), so a rank given its rows'
    seeds transforms only its images and N ranks do what one process does. The input tensor
    is not modified.
    """
    seeds = draw_seeds(images.shape[0]) if seeds is None else seeds
    transformed = []
    for image, seed in zip(images, seeds.tolist()):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            transformed.append(transform(image))
    return torch.stack(transformed)
