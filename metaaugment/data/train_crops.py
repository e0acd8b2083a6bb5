"""The per-image training preprocessing of in-memory splits: CIFAR's zero-pad, random crop and
flip (the standard baseline of MetaAugment's and AutoAugment's CIFAR experiments).

Each image's crop offset and flip are drawn from a generator seeded by (split seed, pass,
image index) alone, as the streamed splits' crops are (`streaming.draw_seed`): the same
whatever the batch size, the number of ranks or where a resumed epoch starts.
"""
from __future__ import annotations

import random

import torch
from torch import Tensor

from metaaugment.data.streaming import MAX_PADDING, draw_seed
from metaaugment.data.value_options import ValueOptions
from metaaugment.imageops import pad_crop_flip


class PadCropFlip(ValueOptions):
    """Zero-pad each training image by `padding` pixels, crop it back to its size at a random
    offset, and flip it left-right with probability 1/2: the CIFAR benchmarks' options
    (`--benchmark-set`); evaluation images are left as they are.

    Options:
        padding: zero padding on each side before the random crop back to 32 x 32; 0: no crop
        flip: flip training images horizontally with probability 1/2
    """

    def __init__(self, *, padding: int = 4, flip: bool = True):
        if not 0 <= padding <= MAX_PADDING:  # a larger padding is mostly zeros, and memory for each batch
            raise ValueError(f"padding must be an integer from 0 to {MAX_PADDING} pixels (got {padding})")
        self.padding, self.flip = padding, flip

    @property
    def identity(self) -> bool:
        """Whether it leaves every image as it is (padding 0, no flip)."""
        return self.padding == 0 and not self.flip

    def draws(self, indices: Tensor, draw: int, seed: int = 0) -> tuple[Tensor, Tensor]:
        """The (B, 2) crop offsets in [0, 2 * padding] and (B,) flips of the images at `indices`
        in pass `draw`."""
        offsets, flips = [], []
        for index in indices.tolist():
            generator = random.Random(draw_seed(seed, draw, index))
            offsets.append((generator.randint(0, 2 * self.padding), generator.randint(0, 2 * self.padding)))
            flips.append(self.flip and generator.random() < 0.5)
        return torch.tensor(offsets, dtype=torch.int64).view(-1, 2), torch.tensor(flips, dtype=torch.bool)

    def __call__(self, images: Tensor, indices: Tensor, draw: int, seed: int = 0) -> Tensor:
        """(B, C, H, W) images (any dtype) of the samples at `indices`, preprocessed for pass `draw`."""
        if self.identity:
            return images
        offsets, flips = self.draws(indices, draw, seed)
        return pad_crop_flip(images, self.padding, offsets, flips)
