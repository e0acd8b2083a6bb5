"""MetaAugment's augmentation policy network P(feature, embedding; theta)."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from metaaugment.sample_aware.transformations import EMBEDDING_DIM


class PolicyNetwork(nn.Module):
    """Sample weights from the augmented sample's feature and its transformation embedding.

    Each input goes through FC-100 + ReLU; the two are concatenated, then FC-1 and a sigmoid
    (paper, Implementation). `use_embedding=False` drops the embedding branch (the o.TE
    ablation of Table 5). features (B, D), embeddings (B, 28) -> outputs (B,) in (0, 1).
    """

    def __init__(self, feature_dim: int, hidden: int = 100, use_embedding: bool = True,
                 embedding_dim: int = EMBEDDING_DIM):
        super().__init__()
        self.use_embedding = use_embedding
        self.feature_branch = nn.Sequential(nn.Linear(feature_dim, hidden), nn.ReLU())
        self.embedding_branch = nn.Sequential(nn.Linear(embedding_dim, hidden), nn.ReLU()) if use_embedding else None
        self.output = nn.Linear(2 * hidden if use_embedding else hidden, 1)

    def forward(self, features: Tensor, embeddings: Tensor | None = None) -> Tensor:
        hidden = self.feature_branch(features)
        if self.embedding_branch is not None:
            if embeddings is None:
                raise ValueError("this policy network takes transformation embeddings")
            hidden = torch.cat([hidden, self.embedding_branch(embeddings)], dim=1)
        return torch.sigmoid(self.output(hidden)).squeeze(1)


def normalize_weights(outputs: Tensor, total: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """(B,) positive policy outputs -> weights that sum to 1 over the mini-batch. `total` turns
    this rank's sum into the global batch's sum under torchrun (a sum over ranks)."""
    summed = outputs.sum()
    return outputs / (summed if total is None else total(summed))


def reject_below_mean(weights: Tensor, total: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    """(B,) normalized weights with those below the batch's mean weight set to 0 and the rest
    normalized again (MetaAugment's rejection ablation, §5.1). `total` sums over ranks, so the
    mean and the new normalization are the global batch's (two sums over ranks in all)."""
    sums = torch.stack([weights.sum(), weights.new_tensor(float(weights.numel()))])  # weight, count
    weight_sum, count = sums if total is None else total(sums)
    kept = torch.where(weights >= weight_sum / count, weights, torch.zeros_like(weights))
    kept_sum = kept.sum()
    return kept / (kept_sum if total is None else total(kept_sum))
