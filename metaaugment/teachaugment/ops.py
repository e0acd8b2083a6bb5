"""TeachAugment's tensor operations as pure functions (Suzuki, CVPR 2022, "TeachAugment: Data
Augmentation Optimization Using Teacher Knowledge", Sec. 3 and 4).

Images are (B, C, H, W) floats in [0, 1]; every random number comes in as an argument.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def relaxed_bernoulli(logits: Tensor, uniform: Tensor, temperature: float) -> Tensor:
    """A relaxed Bernoulli sample in (0, 1) (Concrete / Gumbel-sigmoid): sigmoid((log u -
    log(1 - u) + logits) / temperature). logits and uniform (B, ...), u in (0, 1). The
    augmenters' differentiable "apply or not"."""
    return torch.sigmoid((torch.log(uniform) - torch.log1p(-uniform) + logits) / temperature)


def triangle_wave(values: Tensor) -> Tensor:
    """Fold any real value into [0, 1]: 1 - |(v mod 2) - 1|, so 1.2 -> 0.8 and -0.1 -> 0.1,
    with a gradient of +-1 almost everywhere (clipping would have zero gradient outside
    [0, 1]). The colour augmenter's output map."""
    return 1 - (torch.remainder(values, 2.0) - 1).abs()


def padding_mask(images: Tensor) -> Tensor:
    """(B, 1, H, W) float: 0 on rows and columns that are black across the whole image (the zero
    padding a pad-and-crop left), 1 elsewhere; the colour transform leaves padding black."""
    with torch.no_grad():
        black = (images.sum(1, keepdim=True) == 0).float()
        width, height = images.shape[-1], images.shape[-2]
        return torch.logical_and(black.sum(-1, keepdim=True) < width, black.sum(-2, keepdim=True) < height).float()


def colour_transform(images: Tensor, scale: Tensor, shift: Tensor) -> Tensor:
    """TeachAugment's colour augmentation: triangle_wave((scale * x + shift) * mask), scale
    and shift (B, C or 1, H or 1, W or 1) per pixel and channel."""
    return triangle_wave((scale * images + shift) * padding_mask(images))


def affine_transform(images: Tensor, theta: Tensor) -> Tensor:
    """TeachAugment's geometric augmentation: the images resampled bilinearly through the
    (B, 2, 3) affine matrices `theta` (torch's affine_grid convention: output coordinates in
    [-1, 1] -> input coordinates), zeros outside."""
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def sliced_wasserstein(images: Tensor, augmented: Tensor, projections: Tensor) -> Tensor:
    """(B,) squared sliced Wasserstein distance between each image's colour distribution (its
    H*W pixels as points in C dimensions) and its augmented version's: both projected on the
    unit directions `projections` (C, P), each projection's values sorted, mean squared
    difference. TeachAugment's colour regularization."""
    directions = projections / projections.norm(dim=0, keepdim=True).clamp_min(1e-12)
    a = (images.flatten(2).transpose(1, 2) @ directions).sort(dim=1).values  # (B, H*W, P)
    b = (augmented.flatten(2).transpose(1, 2) @ directions).sort(dim=1).values
    return (a - b).pow(2).mean(dim=(1, 2))


def non_saturating_loss(logits: Tensor, targets: Tensor, smoothing: float = 0.0) -> Tensor:
    """(B,) -sum_k t_k log(1 - p_k): the adversarial loss the augmenter minimizes, so that the
    target network's probability of the label falls (the non-saturating form of maximizing its
    loss). logits (B, K); targets (B,) labels, smoothed by `smoothing` as label smoothing does,
    or (B, K) label distributions."""
    if targets.dim() == 1:
        targets = F.one_hot(targets, logits.shape[1]).to(logits.dtype)
        if smoothing:
            targets = (1 - smoothing) * targets + smoothing / logits.shape[1]
    return -(targets * torch.log1p(-logits.softmax(dim=1) + 1e-12)).sum(dim=1)


def ema_update(averaged: list[Tensor], current: list[Tensor], rate: float) -> None:
    """In place: averaged <- rate * averaged + (1 - rate) * current, tensor by tensor (the EMA
    teacher's weights from the target network's)."""
    with torch.no_grad():
        for mean, value in zip(averaged, current):
            mean.lerp_(value, 1 - rate)


def masked_dropout(values: Tensor, keep: Tensor | None, rate: float) -> Tensor:
    """Dropout with a mask drawn beforehand: values (B, F, ...) * keep (B, F) / (1 - rate),
    the mask broadcast over the trailing dimensions (channel dropout for feature maps); the
    values themselves when `keep` is None or the rate is 0."""
    if keep is None or rate == 0:
        return values
    mask = keep.to(values.dtype).view(*keep.shape, *([1] * (values.dim() - keep.dim())))
    return values * mask / (1 - rate)
