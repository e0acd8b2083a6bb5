"""RL-Mixup's figures: mixup examples (Appendix B) and the agent's actions per epoch."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from metaaugment.files import pyplot, save_figure, show_image


def mixup_examples_figure(last: dict[str, Tensor], path: Path) -> None:
    """RL-Mixup's Appendix B figure, one row per sample: the image, its patch saliency, its
    selected patches (Eq. 1 at its q), the partner with its patches, the mixed (both masks
    agree) and unmixed regions (Eq. 2), and the mixed image with its two largest soft-label
    entries (Eqs. 3-4). `last` holds inputs/partners/mixed (N, C, H, W), saliency and masks
    (N, p, p), q (N,), lambdas (N, 2) and labels (N, K)."""
    plt = pyplot()
    n = last["inputs"].shape[0]
    columns = ("image", "saliency", "selected patches", "partner", "partner patches", "mixed region (white)",
               "mixed image")
    fig, axes = plt.subplots(n, len(columns), figsize=(1.8 * len(columns), 2.2 * n), squeeze=False)
    for i in range(n):
        inter = (last["masks"][i] == last["partner_masks"][i]).float()
        top = torch.topk(last["labels"][i], 2)
        label = ", ".join(f"{int(c)}: {float(v):.2f}" for v, c in zip(top.values, top.indices))
        lam = last["lambdas"][i]
        panels = [(last["inputs"][i], None), (last["saliency"][i], "magma"), (last["masks"][i].float(), "gray"),
                  (last["partners"][i], None), (last["partner_masks"][i].float(), "gray"), (inter, "gray"),
                  (last["mixed"][i], None)]
        for j, (panel, cmap) in enumerate(panels):
            ax = axes[i][j]
            ax.axis("off")
            if cmap is None:
                show_image(ax, panel)
            else:
                ax.imshow(panel.numpy(), cmap=cmap, interpolation="nearest")
            if i == 0:
                ax.set_title(columns[j], fontsize=7)
        below = dict(ha="center", va="top", fontsize=6)
        axes[i][2].text(0.5, -0.03, f"q = {float(last['q'][i]):.0f}", transform=axes[i][2].transAxes, **below)
        axes[i][6].text(0.5, -0.03, f"y' = {{{label}}}\nλ = ({float(lam[0]):.2f}, {float(lam[1]):.2f})",
                        transform=axes[i][6].transAxes, **below)
    fig.tight_layout()
    save_figure(fig, path)


def action_histogram_figure(counts: Tensor, percentiles: Sequence[float], path: Path) -> None:
    """The agent's choices per epoch: counts (E, A) of each of the A percentiles in epoch e,
    drawn as the share of each percentile (rows: epochs)."""
    plt = pyplot()
    shares = counts.float() / counts.sum(dim=1, keepdim=True).clamp_min(1)
    fig, ax = plt.subplots(figsize=(6, 0.25 * shares.shape[0] + 1.8))
    image = ax.imshow(shares.numpy(), aspect="auto", cmap="viridis", vmin=0)
    ax.set_xticks(range(len(percentiles)), [f"{q:.0f}" for q in percentiles])
    ax.set_xlabel("percentile q chosen by the agent")
    ax.set_ylabel("epoch")
    ax.set_yticks(range(shares.shape[0]), [str(e + 1) for e in range(shares.shape[0])], fontsize=6)
    ax.set_title("RL-Mixup: share of each action per epoch (uniform = 0.1)")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    save_figure(fig, path)
