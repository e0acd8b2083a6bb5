"""The adaptive head's figure: per class, the learned op probabilities and mean magnitudes
(AdaAug's Fig. 3 and MADAug's per-class policies)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from torch import Tensor

from metaaugment.infra.files import pyplot, save_figure

MAX_CLASSES_SHOWN = 60


def class_policy_heatmap(probabilities: Tensor, magnitudes: Tensor, ops: Sequence[str], path: Path,
                         title: str = "") -> None:
    """Two heatmaps side by side, a row per class (the first MAX_CLASSES_SHOWN) and a column
    per op: the probability as a ratio to uniform (K p; 1 = uniform, red: chosen more often),
    and the mean magnitude in (0, 1). probabilities, magnitudes (C, K)."""
    plt = pyplot()
    classes = min(len(probabilities), MAX_CLASSES_SHOWN)
    k = len(ops)
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 2.5 + 0.22 * classes))
    ratio = probabilities[:classes].numpy() * k
    reach = max(float(abs(ratio - 1).max()), 1e-3)
    image = left.imshow(ratio, cmap="RdBu_r", vmin=max(0.0, 1 - reach), vmax=1 + reach, aspect="auto")
    left.set_title(f"{title} op probability x K (1 = uniform; red: chosen more often)", fontsize=10)
    fig.colorbar(image, ax=left, fraction=0.046)
    shade = right.imshow(magnitudes[:classes].numpy(), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    right.set_title(f"{title} mean magnitude (0-1)", fontsize=10)
    fig.colorbar(shade, ax=right, fraction=0.046)
    for ax in (left, right):
        ax.set_xticks(range(k), ops, rotation=90)
        ax.set_yticks(range(classes), [str(c) for c in range(classes)], fontsize=7)
        ax.set_ylabel("class")
    fig.tight_layout()
    save_figure(fig, path)
