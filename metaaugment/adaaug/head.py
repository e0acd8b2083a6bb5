"""The adaptive policy head of AdaAug and MADAug, and the batched ops it drives.

Per sample, from the task network's pooled features (B, D), the head (a linear layer, or an
MLP with `hidden_layers` layers of 128, the papers' projection) gives 2K numbers for K ops:
    magnitudes  m = sigmoid(first K)             (B, K) in (0, 1)
    probabilities p = softmax(last K / T)        (B, K), temperature T
Exploit (training images): k ops per sample drawn from p without replacement (Gumbel top-k),
each at its magnitude, perturbed by a uniform amount up to delta (AdaAug's exploit), applied
one after another. Explore (learning the head): every op applied to every sample at its
magnitude and the K results mixed by p (MADAug mixes the images, AdaAug the task network's
features of them), with the magnitudes' gradient passed straight
through (`straight_through`: the augmented image's value, d image / d m = 1 per pixel), as
both papers' code does. Ops run batched on the device through the op table the baselines
and MetaAugment share (`metaaugment.imageops`); a magnitude m in (0, 1) is that table's 10 m.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from metaaugment.sample_aware.ops import MAX_MAGNITUDE, OPS, apply_ops

# the papers' 17 ops, as our table has them: the 14 shared with MetaAugment and Invert;
# their Cutout and Flip are not in the head's table (docs/madaug.md, deviations)
HEAD_OPS = OPS + ("Invert",)
HIDDEN_WIDTH = 128


class AugmentationHead(nn.Module):
    """(B, D) features -> (B, 2K) raw outputs: K magnitude logits, then K op logits.

    hidden_layers: 0 (the default of both papers' scripts: one linear layer) or more layers
    of HIDDEN_WIDTH with ReLU."""

    def __init__(self, in_features: int, num_ops: int, hidden_layers: int = 0):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for _ in range(hidden_layers):
            layers += [nn.Linear(width, HIDDEN_WIDTH), nn.ReLU()]
            width = HIDDEN_WIDTH
        layers.append(nn.Linear(width, 2 * num_ops))
        self.projection = nn.Sequential(*layers)
        self.num_ops = num_ops

    def forward(self, features: Tensor) -> Tensor:
        return self.projection(features)


def head_parameters(outputs: Tensor, temperature: float = 1.0) -> tuple[Tensor, Tensor]:
    """(B, 2K) head outputs -> probabilities (B, K) = softmax(op logits / T) and magnitudes
    (B, K) = sigmoid(magnitude logits), in (0, 1)."""
    magnitude_logits, op_logits = outputs.chunk(2, dim=1)
    return torch.softmax(op_logits / temperature, dim=1), torch.sigmoid(magnitude_logits)


def straight_through(augmented: Tensor, magnitude: Tensor) -> Tensor:
    """augmented (B, C, H, W) with magnitude (B,) attached: its value is `augmented`'s, and its
    gradient with respect to the magnitude is 1 at every pixel (the papers' estimator: the ops
    themselves are not differentiable in their magnitude)."""
    shift = magnitude - magnitude.detach()
    return augmented.detach() + shift.view(-1, *([1] * (augmented.dim() - 1)))


def explored_images(images: Tensor, magnitudes: Tensor, signs: Tensor, pool: tuple[str, ...] = HEAD_OPS) -> Tensor:
    """Every op of `pool` applied to every sample at its magnitude (one batched call per op),
    magnitudes' gradient straight through. images (B, C, H, W) in [0, 1]; magnitudes (B, K)
    attached to the head; signs (B, K) of +-1 -> (K, B, C, H, W), op-major."""
    count, num_ops = magnitudes.shape
    ops = torch.arange(num_ops).repeat_interleave(count)  # op-major: K slices of the batch
    tiled = images.detach().repeat(num_ops, *([1] * (images.dim() - 1)))
    flat_magnitudes = magnitudes.t().reshape(-1)
    augmented = apply_ops(tiled, ops, MAX_MAGNITUDE * flat_magnitudes.detach().cpu(), signs.t().reshape(-1).cpu(), pool)
    return straight_through(augmented, flat_magnitudes).view(num_ops, count, *images.shape[1:])


def mix(values: Tensor, probabilities: Tensor) -> Tensor:
    """sum_k p_k * values_k per sample: values (K, B, ...) op-major, probabilities (B, K)
    -> (B, ...)."""
    num_ops, count = values.shape[:2]
    weights = probabilities.t().reshape(num_ops, count, *([1] * (values.dim() - 2)))
    return (weights * values).sum(0)


def explore_mixture(images: Tensor, probabilities: Tensor, magnitudes: Tensor, signs: Tensor,
                    pool: tuple[str, ...] = HEAD_OPS) -> Tensor:
    """MADAug's explore images: sum_k p_k * op_k(x, m_k) per sample (`explored_images` mixed
    by the head's probabilities). images (B, C, H, W) in [0, 1]; probabilities, magnitudes
    (B, K) attached to the head; signs (B, K) of +-1 -> (B, C, H, W), differentiable in the
    probabilities and magnitudes."""
    return mix(explored_images(images, magnitudes, signs, pool), probabilities)


def explore_features(images: Tensor, probabilities: Tensor, magnitudes: Tensor, signs: Tensor,
                     features: Callable[[Tensor], Tensor], pool: tuple[str, ...] = HEAD_OPS) -> Tensor:
    """AdaAug's explore: the features of every op's image mixed by the head's probabilities,
    sum_k p_k * f(op_k(x, m_k)) per sample. images (B, C, H, W); probabilities, magnitudes,
    signs (B, K); `features` maps (N, C, H, W) -> (N, D) -> (B, D), differentiable in the
    probabilities and (straight through the images) the magnitudes."""
    explored = explored_images(images, magnitudes, signs, pool)
    num_ops, count = explored.shape[:2]
    return mix(features(explored.flatten(0, 1)).view(num_ops, count, -1), probabilities)


def draw_ops(probabilities: Tensor, gumbel: Tensor, k: int) -> Tensor:
    """k ops per sample drawn from `probabilities` (B, K) without replacement, by the Gumbel
    top-k trick with noise `gumbel` (B, K) (drawn for the global batch) -> (B, k) indices."""
    scores = torch.log(probabilities.clamp_min(1e-30)) + gumbel.to(probabilities)
    return scores.topk(k, dim=1).indices


def exploit_images(images: Tensor, ops: Tensor, magnitudes: Tensor, signs: Tensor,
                   pool: tuple[str, ...] = HEAD_OPS) -> Tensor:
    """The training images: op ops[:, j] at magnitude magnitudes[:, j] in (0, 1) with sign
    signs[:, j], for j = 0, 1, ... in turn. images (B, C, H, W); ops, magnitudes, signs
    (B, k) -> (B, C, H, W)."""
    out = images
    for j in range(ops.shape[1]):
        out = apply_ops(out, ops[:, j].cpu(), MAX_MAGNITUDE * magnitudes[:, j].detach().cpu(), signs[:, j].cpu(),
                        pool)
    return out


def perturb_magnitudes(magnitudes: Tensor, uniforms: Tensor, directions: Tensor, delta: float) -> Tensor:
    """AdaAug's exploit perturbation: m +- u * delta, u ~ U(0, 1), a random direction, clipped
    to [0, 1]. magnitudes, uniforms (B, k); directions (B, k) of +-1 -> (B, k)."""
    return (magnitudes + directions * uniforms * delta).clamp(0.0, 1.0)
