"""MetaAugment's figures: the learned sampler distribution (Fig. 2) and the highest- and
lowest-weighted augmented samples (Figs. 3-4)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from metaaugment.infra.files import pyplot, save_figure, show_image


def sampler_heatmap(probabilities: Tensor, ops: Sequence[str], path: Path) -> None:
    """The K x K distribution of op pairs (row: first op j, column: second op k), as the
    paper's Fig. 2; probabilities (K, K) summing to 1."""
    plt = pyplot()

    k = len(ops)
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    ratio = probabilities.numpy() * k * k
    # a ratio to uniform: a diverging map centred on 1 (white), below 1 blue, above 1 red, the
    # same colour for the same distance either side
    reach = max(float(abs(ratio - 1).max()), 1e-3)
    image = ax.imshow(ratio, cmap="RdBu_r", vmin=1 - reach, vmax=1 + reach)
    ax.set_xticks(range(k), ops, rotation=90)
    ax.set_yticks(range(k), ops)
    ax.set_xlabel("second op k")
    ax.set_ylabel("first op j")
    ax.set_title("transformation sampler: p_jk x K^2 (1 = uniform; red: drawn more often)")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    save_figure(fig, path)


def weighted_samples_grid(images: Tensor, weights: Tensor, losses: Tensor, labels: Tensor, captions: Sequence[str],
                          path: Path, per_row: int = 4) -> None:
    """Augmented samples with their op pair, magnitudes, weight and loss: the highest-weighted
    first half, then the lowest (paper Figs. 3-4). images (N, C, H, W) in [0, 1]."""
    plt = pyplot()

    n = images.shape[0]
    rows = (n + per_row - 1) // per_row
    # large enough to read at the default size: four samples a row, captions at 8 pt
    fig, axes = plt.subplots(rows, per_row, figsize=(2.7 * per_row, 3.0 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    half = n // 2
    for i in range(n):
        ax = axes.flat[i]
        show_image(ax, images[i])
        rank = f"highest #{i + 1}" if i < half else f"lowest #{n - i}"
        ax.set_title(f"{rank}: {captions[i]}\nlabel {int(labels[i])}, weight {float(weights[i]):.3f}, "
                     f"loss {float(losses[i]):.2f}", fontsize=8)
    fig.suptitle("MetaAugment's highest-weighted augmented samples (top rows) and lowest-weighted (bottom rows)",
                 fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def select_extremes(weights: Tensor, count: int) -> Tensor:
    """Indices of the `count` highest then the `count` lowest weights."""
    count = min(count, weights.numel() // 2) or 1
    order = torch.argsort(weights, descending=True)
    return torch.cat([order[:count], order[-count:]])
