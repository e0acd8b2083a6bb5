"""Saliency-guided patch mixup (RL-Mixup, Eqs. 1-4), as pure functions.

For an image x with label y and its partner (a random permutation of the batch):
- saliency: the L2 norm over channels of the gradient of the training loss with respect to
  the input, average-pooled to a p x p patch grid and normalized to sum to 1;
- Eq. 1: m(i) = 1 where the saliency is at least its q-th percentile value;
- Eq. 2: m_inter(i) = 1 where both masks agree (both salient, or neither);
- Eq. 3: x' = m_inter (l1 x1 + l2 x2) + (1 - m_inter)(m1 x1 + m2 x2), (l1, l2) ~ Dirichlet(a, a);
- Eq. 4: y' = c(m_inter)/(WH) (l1 y1 + l2 y2) + c(~m_inter m1)/(WH) y1 + c(~m_inter m2)/(WH) y2,
  reading the paper's "lambda y1 + lambda y2" as l1 y1 + l2 y2 on the shared region.
Nothing is modified in place.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ACTION_PERCENTILES = torch.linspace(0, 99, 10)  # the agent's 10 actions: q = 0, 11, ..., 99


def action_to_percentile(actions: Tensor) -> Tensor:
    """(B,) action indices in [0, 10) -> (B,) percentiles q in [0, 99]."""
    return ACTION_PERCENTILES.to(actions.device)[actions]


def input_saliency(model: nn.Module, inputs: Tensor, targets: Tensor,
                   loss_fn: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """(B, C, H, W) inputs -> (B, H, W): the channel-wise L2 norm of d(sum of per-sample
    losses)/d inputs. Only the input gradient is computed; the model's parameter gradients
    are left alone."""
    x = inputs.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss_fn(model(x), targets).sum(), x)
    return grad.norm(dim=1)


def patch_saliency(saliency: Tensor, patches: int) -> Tensor:
    """(B, H, W) saliency -> (B, p, p) average-pooled patch saliency, each map summing to 1."""
    pooled = F.adaptive_avg_pool2d(saliency.unsqueeze(1), patches).squeeze(1)
    return pooled / pooled.sum(dim=(1, 2), keepdim=True).clamp_min(1e-12)


def percentile_masks(saliency: Tensor, q: Tensor) -> Tensor:
    """Eq. 1: (B, p, p) patch saliency and (B,) percentiles in [0, 100] -> (B, p, p) bool masks,
    True where the saliency is at least the map's q-th percentile (linear interpolation,
    as torch.quantile)."""
    flat = saliency.flatten(1)
    ordered = flat.sort(dim=1).values
    position = q.to(flat.dtype).clamp(0, 100) / 100 * (flat.shape[1] - 1)
    low = position.floor().long()
    high = position.ceil().long()
    frac = position - low.to(flat.dtype)
    threshold = ordered.gather(1, low[:, None]) * (1 - frac[:, None]) + ordered.gather(1, high[:, None]) * frac[:, None]
    return (flat >= threshold).view_as(saliency)


def patch_mixup(x1: Tensor, y1: Tensor, x2: Tensor, y2: Tensor, m1: Tensor, m2: Tensor,
                lam1: Tensor, lam2: Tensor) -> tuple[Tensor, Tensor]:
    """Eqs. 2-4. x (B, C, H, W); y (B, K) label distributions; m (B, p, p) bool patch masks;
    lam (B,) Dirichlet weights -> mixed images (B, C, H, W) and soft labels (B, K)."""
    inter = m1 == m2
    only1, only2 = ~inter & m1, ~inter & m2
    size = x1.shape[-2:]

    def upsample(mask: Tensor) -> Tensor:
        return F.interpolate(mask[:, None].to(x1.dtype), size=size, mode="nearest")

    l1, l2 = lam1.view(-1, 1, 1, 1).to(x1.dtype), lam2.view(-1, 1, 1, 1).to(x1.dtype)
    inter_px, only1_px, only2_px = upsample(inter), upsample(only1), upsample(only2)
    mixed = inter_px * (l1 * x1 + l2 * x2) + only1_px * x1 + only2_px * x2
    # c(m) / (W H), counted on the image's pixels so that labels match the mixed image even
    # when the side is not a multiple of p
    area = lambda m: m.flatten(1).to(y1.dtype).mean(1, keepdim=True)  # noqa: E731
    labels = area(inter_px) * (lam1[:, None] * y1 + lam2[:, None] * y2) + area(only1_px) * y1 + area(only2_px) * y2
    return mixed, labels


def one_hot(targets: Tensor, num_classes: int) -> Tensor:
    """(B,) class indices or (B, K) distributions -> (B, K) float distributions."""
    if targets.dim() == 2:
        return targets.float()
    return F.one_hot(targets, num_classes).float()
