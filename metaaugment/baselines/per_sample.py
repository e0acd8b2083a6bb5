"""Apply a random torchvision transform independently to every sample of a batch."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from metaaugment.batch import Share


def apply_per_sample(transform: Callable[[Tensor], Tensor], images: Tensor, share: Share | None = None) -> Tensor:
    """(b, C, H, W) -> (b, C, H, W), calling `transform` on each (C, H, W) image.

    torchvision's automatic-augmentation transforms draw one op and magnitude per call, so
    calling them on a whole batch would augment every sample identically; a loop restores
    the per-sample randomness a data loader gives. Each image's call draws from a seed of its
    own, one per row of the global batch drawn on every rank (`share`: the images are those
    rows), so a rank transforms only its images and N ranks do what one process does. The
    input tensor is not modified.
    """
    seeds = torch.randint(2**62, (share.total if share is not None else images.shape[0],))
    if share is not None:
        seeds = share.take(seeds)
    transformed = []
    for image, seed in zip(images, seeds.tolist()):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            transformed.append(transform(image))
    return torch.stack(transformed)
