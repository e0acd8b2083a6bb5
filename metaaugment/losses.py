"""Pure loss and metric functions shared by learners, policies and user code."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def per_sample_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross entropy per sample, (B,), for (B,) class indices or (B, C) soft labels."""
    return F.cross_entropy(logits, targets, reduction="none")


def weighted_mean(losses: Tensor, weights: Tensor | None = None) -> Tensor:
    """sum_i w_i L_i / sum_i w_i over (B,) losses; the plain mean when weights is None.

    Normalizing by the weight sum is what MetaAugment does with its policy outputs, and it
    makes the contract scale-free: a policy may return weights on any positive scale.
    """
    if weights is None:
        return losses.mean()
    if weights.shape != losses.shape:
        raise ValueError(f"weights {tuple(weights.shape)} must match losses {tuple(losses.shape)}")
    return (weights * losses).sum() / weights.sum().clamp_min(torch.finfo(losses.dtype).tiny)


def accuracy(logits: Tensor, targets: Tensor) -> float:
    """Top-1 accuracy of (B, C) logits against (B,) labels or (B, C) soft labels (argmax)."""
    hard = targets.argmax(dim=1) if targets.dim() == 2 else targets
    return (logits.argmax(dim=1) == hard).sum().item() / max(len(hard), 1)
