"""TeachAugment's figure: what the augmenter does to a few training images as training goes."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from torch import Tensor

from metaaugment.infra.files import pyplot, save_figure

MAX_SNAPSHOTS = 8


def spread(count: int, wanted: int) -> list[int]:
    """`wanted` indices spread evenly over range(count), the last one included (all when fewer)."""
    if count <= wanted:
        return list(range(count))
    return sorted({round(i * (count - 1) / (wanted - 1)) for i in range(wanted)})


def augmenter_progress(originals: Tensor, snapshots: Sequence[tuple[int, Tensor]], path: Path) -> None:
    """A grid: the original images (N, C, H, W) uint8 in the first row, then one row per
    snapshot (epoch, (N, C, H, W) uint8), at most MAX_SNAPSHOTS spread over the run."""
    plt = pyplot()
    chosen = [snapshots[i] for i in spread(len(snapshots), MAX_SNAPSHOTS)]
    rows = [("original", originals), *((f"epoch {epoch}", images) for epoch, images in chosen)]
    columns = len(originals)
    fig, axes = plt.subplots(len(rows), columns, figsize=(1.2 * columns + 1, 1.2 * len(rows) + 0.4), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(columns):
            ax = axes[r][c]
            image = images[c].permute(1, 2, 0).numpy()
            ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray" if image.shape[-1] == 1 else None,
                      vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(label, fontsize=8)
    fig.suptitle("teachaugment: the same images and noise through the augmenter as training goes", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
