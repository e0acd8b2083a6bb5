"""MetaAugment's transformations T_{j,k}^{m1,m2}: their 28-dim embedding and the learned sampler.

A transformation is an ordered pair of the K = 14 ops of `image_ops` (j then k) with
magnitudes m1, m2 in [0, 10]. The embedding (paper, Implementation) is a 2K-dim vector with
m1 + 1 at position 2j - 1, m2 + 1 at position 2k (1-based), 11 instead for the
magnitude-free ops (AutoContrast, Equalize, Identity), and 0 elsewhere.

The sampler (Eq. 5) draws pair (j, k) with probability
    p_jk = (1 - eps) * v_jk / sum_lm v_lm + eps / K^2,
where v_jk is the mean policy-network output for pair (j, k) over the last r iterations,
refreshed every s iterations; magnitudes are uniform on [0, 10].
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from metaaugment.infra.errors import check_option
from metaaugment.sample_aware.ops import MAGNITUDE_FREE, MAX_MAGNITUDE, NUM_OPS, OPS

EMBEDDING_DIM = 2 * NUM_OPS


def embed_transformations(pairs: Tensor, magnitudes: Tensor, pool: tuple[str, ...] = OPS) -> Tensor:
    """pairs (B, 2) op indices (0-based) into `pool`, magnitudes (B, 2) in [0, 10] ->
    (B, 2 * len(pool)) embeddings (28-dim for the paper's pool): m1 + 1 at 0-based index 2j,
    m2 + 1 at 2k + 1, 11 for magnitude-free ops, 0 elsewhere."""
    free = torch.tensor([name in MAGNITUDE_FREE for name in pool], device=pairs.device)[pairs]  # (B, 2)
    values = torch.where(free, torch.full_like(magnitudes, MAX_MAGNITUDE + 1), magnitudes + 1)
    out = torch.zeros(pairs.shape[0], 2 * len(pool), dtype=magnitudes.dtype, device=magnitudes.device)
    rows = torch.arange(pairs.shape[0], device=pairs.device)
    out[rows, 2 * pairs[:, 0]] = values[:, 0]
    out[rows, 2 * pairs[:, 1] + 1] = values[:, 1]
    return out


def sampler_distribution(mean_outputs: Tensor, epsilon: float) -> Tensor:
    """Eq. 5: (K, K) mean policy outputs v -> (K, K) probabilities (1 - eps) v / sum v + eps / K^2."""
    k2 = mean_outputs.numel()
    return (1 - epsilon) * mean_outputs / mean_outputs.sum() + epsilon / k2


class TransformationSampler(nn.Module):
    """Draws (j, k, m1, m2, signs) per sample from the Eq. 5 distribution and learns it.

    window (r): iterations whose policy outputs define v; refresh (s): iterations between
    updates of p; epsilon: the uniform share. Pairs not seen in the window take the mean of
    the seen ones, so they are neither favoured nor excluded. All state is in buffers.
    """

    def __init__(self, window: int = 100, refresh: int = 10, epsilon: float = 0.1, num_ops: int = NUM_OPS):
        super().__init__()
        check_option(window >= 1, "window", window, "at least 1")
        check_option(refresh >= 1, "refresh", refresh, "at least 1")
        check_option(0.0 <= epsilon <= 1.0, "epsilon", epsilon, "in [0, 1]")
        self.window, self.refresh, self.epsilon, self.num_ops = window, refresh, epsilon, num_ops
        self.register_buffer("probabilities", torch.full((num_ops, num_ops), 1.0 / num_ops**2))
        self.register_buffer("output_sums", torch.zeros(window, num_ops, num_ops, dtype=torch.float64))
        self.register_buffer("output_counts", torch.zeros(window, num_ops, num_ops, dtype=torch.float64))
        self.register_buffer("iteration", torch.zeros((), dtype=torch.long))

    def sample(self, count: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """(count, 2) op pairs, (count, 2) magnitudes in [0, 10], (count, 2) signs +-1 (CPU)."""
        flat = torch.multinomial(self.probabilities.flatten().cpu(), count, replacement=True, generator=generator)
        pairs = torch.stack([flat // self.num_ops, flat % self.num_ops], dim=1)
        magnitudes = torch.rand(count, 2, generator=generator) * MAX_MAGNITUDE
        signs = torch.where(torch.rand(count, 2, generator=generator) < 0.5, -1.0, 1.0)
        return pairs, magnitudes, signs

    def record(self, pairs: Tensor, outputs: Tensor) -> None:
        """Store one iteration's policy outputs (B,) for its pairs (B, 2); refresh p every s
        iterations. Outputs that are not finite numbers in [0, 1] (a diverged policy network)
        are left out, so the distribution never holds a negative or NaN probability."""
        slot = int(self.iteration) % self.window
        index = (pairs[:, 0] * self.num_ops + pairs[:, 1]).cpu()
        values = outputs.detach().double().cpu()
        valid = torch.isfinite(values) & (values >= 0) & (values <= 1)
        index, values = index[valid], values[valid]
        sums = torch.zeros(self.num_ops**2, dtype=torch.float64).index_add_(0, index, values)
        ones = torch.ones(len(index), dtype=torch.float64)
        counts = torch.zeros(self.num_ops**2, dtype=torch.float64).index_add_(0, index, ones)
        self.output_sums[slot] = sums.view(self.num_ops, self.num_ops)
        self.output_counts[slot] = counts.view(self.num_ops, self.num_ops)
        self.iteration += 1
        if int(self.iteration) % self.refresh == 0:
            self.probabilities.copy_(self.estimate().to(self.probabilities.dtype))

    def mean_outputs(self) -> Tensor:
        """v: (K, K) mean output per pair over the last min(t, r) iterations."""
        sums, counts = self.output_sums.sum(0), self.output_counts.sum(0)
        seen = counts > 0
        v = torch.zeros_like(sums)
        v[seen] = sums[seen] / counts[seen]
        v[~seen] = v[seen].mean() if seen.any() else 1.0
        return v

    def estimate(self) -> Tensor:
        """The Eq. 5 distribution from the current window."""
        return sampler_distribution(self.mean_outputs(), self.epsilon)
