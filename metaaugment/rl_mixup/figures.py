"""RL-Mixup's figures: mixup examples (Appendix B) and the agent's actions per epoch."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor

from metaaugment.infra.files import pyplot, save_figure, show_image


def mixup_examples_figure(last: dict[str, Tensor], path: Path) -> None:
    """RL-Mixup's Appendix B figure, one row per sample: the image (with its label), its patch
    saliency, its selected patches (Eq. 1 at its q), the partner (with its label) and its
    patches, where each pixel of the mixed image comes from (Eq. 2: the image alone, the
    partner alone, or their lambda-blend where both masks agree), and the mixed image with its
    soft label split between the two images' labels (Eqs. 3-4). `last` holds inputs/partners/
    mixed (N, C, H, W), saliency and masks (N, p, p), q (N,), lambdas (N, 2), labels (N, K),
    and targets / partner_targets (N,) when known."""
    plt = pyplot()
    n = last["inputs"].shape[0]
    columns = ("image", "saliency", "selected patches", "partner", "partner patches", "source of each pixel",
               "mixed image")
    # the source panel's colours: blue from the image, orange from the partner, grey blended
    from_image, from_partner, blended = (0.12, 0.47, 0.71), (1.0, 0.5, 0.05), (0.6, 0.6, 0.6)
    fig, axes = plt.subplots(n, len(columns), figsize=(2.0 * len(columns), 2.5 * n), squeeze=False)
    for i in range(n):
        mask, partner_mask = last["masks"][i].bool(), last["partner_masks"][i].bool()
        inter = mask == partner_mask
        source = torch.empty(*mask.shape, 3)
        source[inter] = torch.tensor(blended)
        source[~inter & mask] = torch.tensor(from_image)
        source[~inter & partner_mask] = torch.tensor(from_partner)
        lam = last["lambdas"][i]
        own = int(last["targets"][i]) if "targets" in last else None
        other = int(last["partner_targets"][i]) if "partner_targets" in last else None
        panels = [(last["inputs"][i], None), (last["saliency"][i], "magma"), (last["masks"][i].float(), "gray"),
                  (last["partners"][i], None), (last["partner_masks"][i].float(), "gray"), (source, "rgb"),
                  (last["mixed"][i], None)]
        for j, (panel, cmap) in enumerate(panels):
            ax = axes[i][j]
            ax.axis("off")
            if cmap is None:
                show_image(ax, panel)
            elif cmap == "rgb":
                ax.imshow(panel.numpy(), interpolation="nearest")
            else:
                ax.imshow(panel.numpy(), cmap=cmap, interpolation="nearest")
            if i == 0:
                ax.set_title(columns[j], fontsize=8)
        below = dict(ha="center", va="top", fontsize=7)
        if own is not None:
            axes[i][0].text(0.5, -0.03, f"label {own}", transform=axes[i][0].transAxes, **below)
            axes[i][3].text(0.5, -0.03, f"label {other}", transform=axes[i][3].transAxes, **below)
        axes[i][2].text(0.5, -0.03, f"q = {float(last['q'][i]):.0f}", transform=axes[i][2].transAxes, **below)
        axes[i][5].text(0.5, -0.03, f"blue: image  orange: partner\ngrey: λ blend ({float(lam[0]):.2f} image, "
                        f"{float(lam[1]):.2f} partner)", transform=axes[i][5].transAxes, **below)
        soft = last["labels"][i]
        if own is not None:
            share = f"y' = {float(soft[own]):.2f} × label {own} (image)"
            if other != own:
                share += f"\n   + {float(soft[other]):.2f} × label {other} (partner)"
        else:
            top = torch.topk(soft, 2)
            share = "y' = " + ", ".join(f"{int(c)}: {float(v):.2f}" for v, c in zip(top.values, top.indices))
        axes[i][6].text(0.5, -0.03, share, transform=axes[i][6].transAxes, **below)
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
