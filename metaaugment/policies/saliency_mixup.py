"""Saliency-guided patch mixup with a random or fixed percentile: RL-Mixup's control (§5.5)."""
from __future__ import annotations

from typing import Any

import torch

from ..batch import Batch
from ..bilevel import scratch_buffers
from ..errors import UserError
from ..policy import AugmentationPolicy, StepContext
from ..saliency_mixup import (ACTION_PERCENTILES, input_saliency, one_hot, patch_mixup, patch_saliency,
                              percentile_masks)
from ..spec import TaskSpec
from .registry import POLICIES


DEFAULT_PATCHES = 16


@POLICIES.register("saliency-mixup")
class SaliencyMixup(AugmentationPolicy):
    """Saliency-guided patch mixup (RL-Mixup Eqs. 1-4) with q drawn uniformly from the agent's 10 values, or fixed."""

    name = "saliency-mixup"
    needs_model = True
    soft_labels = True

    def __init__(self, *, q: float | None = None, patches: int | None = None, alpha: float = 0.5):
        super().__init__()
        if q is not None and not 0 <= q <= 100:
            raise UserError(f"saliency-mixup q must be a percentile in [0, 100] (got {q})")
        if (patches is not None and patches < 1) or alpha <= 0:
            raise UserError("saliency-mixup needs patches >= 1 and alpha > 0")
        self.q, self.requested_patches, self.alpha = q, patches, alpha
        self.patches = patches or DEFAULT_PATCHES

    def setup(self, spec: TaskSpec) -> None:
        super().setup(spec)
        # the paper's 16 x 16 grid, or one patch per pixel on smaller images (digits: 8 x 8)
        self.patches = self.requested_patches or min(DEFAULT_PATCHES, *spec.input_shape[1:])
        if self.patches > min(spec.input_shape[1:]):
            raise UserError(f"saliency-mixup patches={self.patches} exceeds the image side "
                            f"{min(spec.input_shape[1:])}; use --set patches=N with N <= the side")

    def percentiles(self, batch: Batch, ctx: StepContext) -> torch.Tensor:
        """(B,) q per sample: fixed, or uniform over the agent's action values (the random control)."""
        if self.q is not None:
            return torch.full((len(batch),), float(self.q))
        return ACTION_PERCENTILES[torch.randint(len(ACTION_PERCENTILES), (len(batch),))]

    def mix(self, batch: Batch, ctx: StepContext, q: torch.Tensor) -> Batch:
        """Mix the batch with a random permutation of itself at per-sample percentiles q (B,)."""
        spec = self.require_spec()
        with scratch_buffers(ctx.model):  # the saliency pass must not move BatchNorm statistics
            saliency = patch_saliency(input_saliency(ctx.model, batch.inputs, batch.targets, ctx.loss_fn), self.patches)
        partner = torch.randperm(len(batch))
        masks = percentile_masks(saliency, q.to(saliency.device))
        weights = torch.distributions.Dirichlet(torch.tensor([self.alpha, self.alpha])).sample((len(batch),))
        labels = one_hot(batch.targets, spec.num_classes)
        index = partner.to(batch.inputs.device)
        mixed, soft = patch_mixup(batch.inputs, labels, batch.inputs[index], labels[index], masks, masks[index],
                                  weights[:, 0].to(batch.inputs.device), weights[:, 1].to(batch.inputs.device))
        info = {**batch.info, "saliency": saliency.detach(), "q": q, "partner": partner, "masks": masks}
        return Batch(mixed.detach(), soft.detach(), batch.weights, info)

    def augment(self, batch: Batch, ctx: StepContext) -> Batch:
        return self.mix(batch, ctx, self.percentiles(batch, ctx))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "q": self.q, "patches": self.patches, "alpha": self.alpha}
