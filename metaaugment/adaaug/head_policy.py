"""What AdaAug and MADAug share as policies: the head on a network's features, its Adam
optimizer, k ops drawn per sample, and the per-class record behind the class-policy figure.

A subclass decides when the head learns and which rows are augmented (`apply`), and what it
draws for the global batch (`make_params`). The features come from `feature_source(ctx)`:
the task network, or a frozen network a policy was transferred with (AdaAug's exploit).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from metaaugment.adaaug.figures import class_policy_heatmap
from metaaugment.adaaug.head import (
    HEAD_OPS,
    AugmentationHead,
    draw_ops,
    exploit_images,
    head_parameters,
    perturb_magnitudes,
)
from metaaugment.infra.errors import check_option, representable
from metaaugment.policy import BatchPolicy, StepContext
from metaaugment.sample_aware.ops import EXTRA_OPS
from metaaugment.steptools.features import feature_width, pooled_features
from metaaugment.steptools.scratch import scratch_buffers


def random_signs(rows: int, cols: int) -> Tensor:
    """(rows, cols) of +-1, each sign with probability 1/2 (the signed ops' direction)."""
    return torch.where(torch.rand(rows, cols) < 0.5, -1.0, 1.0)


def gumbel_noise(rows: int, cols: int) -> Tensor:
    """(rows, cols) standard Gumbel noise (the draws of `draw_ops`)."""
    return -torch.log(-torch.log(torch.rand(rows, cols).clamp(1e-20, 1 - 1e-7)))


class AdaptiveHeadPolicy(BatchPolicy):
    """The base of AdaAug and MADAug: an `AugmentationHead` over the op pool, reading features
    (B, D) of clean images (B, C, H, W), with an Adam optimizer and per-class sums of what it
    gave the training rows (`class_policy`, the figure `class_policy.png`)."""

    def __init__(self, *, head_lr: float, head_weight_decay: float, hidden_layers: int,
                 extra_ops: tuple[str, ...]):
        super().__init__()
        check_option(representable(head_lr) and head_lr > 0, "head_lr", head_lr, "a positive number")
        check_option(representable(head_weight_decay) and head_weight_decay >= 0, "head_weight_decay",
                     head_weight_decay, "a non-negative number")
        check_option(hidden_layers >= 0, "hidden_layers", hidden_layers, "0 or more")
        check_option(all(op in EXTRA_OPS for op in extra_ops), "extra_ops", extra_ops,
                     f"among {', '.join(EXTRA_OPS)}")
        self.extra_ops = tuple(extra_ops)
        self.pool = HEAD_OPS + self.extra_ops
        self.head_lr, self.head_weight_decay, self.hidden_layers = head_lr, head_weight_decay, hidden_layers
        self.head: AugmentationHead | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        # per class: summed probabilities and magnitudes of the rows seen (the figure)
        self.register_buffer("class_probability_sums", torch.zeros(0, len(self.pool), dtype=torch.float64))
        self.register_buffer("class_magnitude_sums", torch.zeros(0, len(self.pool), dtype=torch.float64))
        self.register_buffer("class_counts", torch.zeros(0, dtype=torch.float64))

    def check_k(self, name: str, k: int) -> None:
        """ValueError unless 1 <= k <= the pool's size."""
        check_option(1 <= k <= len(self.pool), name, k, f"between 1 and the {len(self.pool)} ops of the pool")

    def setup(self, ctx: StepContext) -> None:
        """Build the head (sized by the task network's feature width), its Adam optimizer and
        the per-class sums."""
        super().setup(ctx)
        self.head = self.build_head(ctx.model)
        classes = ctx.spec.num_classes or 0
        self.class_probability_sums = torch.zeros(classes, len(self.pool), dtype=torch.float64)
        self.class_magnitude_sums = torch.zeros(classes, len(self.pool), dtype=torch.float64)
        self.class_counts = torch.zeros(classes, dtype=torch.float64)
        self.to(ctx.device)
        self.optimizer = torch.optim.Adam(self.head.parameters(), lr=self.head_lr, weight_decay=self.head_weight_decay)

    def build_head(self, feature_model: nn.Module) -> AugmentationHead:
        """A new head for the features of `feature_model`."""
        width = feature_width(feature_model, self.require_spec(), needed_by=self.name)
        return AugmentationHead(width, len(self.pool), self.hidden_layers)

    def feature_source(self, ctx: StepContext) -> nn.Module:
        """The network whose features the head reads: the task network (override to change)."""
        return ctx.model

    def features_of(self, images: Tensor, model: nn.Module) -> Tensor:
        """What the head reads: `model`'s pooled features (B, D) of clean images (B, C, H, W),
        in evaluation mode (a row's features do not depend on the other rows, so ranks agree
        with one process), detached, its BatchNorm statistics untouched."""
        was_training = model.training
        try:
            model.eval()
            with torch.no_grad(), scratch_buffers(model):
                return pooled_features(model, images).float()
        finally:
            model.train(was_training)

    def policy_of(self, features: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
        """The head's (probabilities, magnitudes), each (B, K), for features (B, D)."""
        assert self.head is not None
        return head_parameters(self.head(features), temperature)

    def exploit(self, images: Tensor, probabilities: Tensor, magnitudes: Tensor, gumbel: Tensor, signs: Tensor,
                k: int, perturbation: tuple[Tensor, Tensor, float] | None = None) -> Tensor:
        """Images (b, C, H, W) augmented by k ops each, drawn from `probabilities` (b, K) with
        the Gumbel noise `gumbel` (b, K), at the head's `magnitudes` (b, K), optionally
        perturbed (AdaAug: `perturbation` = (uniforms, directions) (b, k) and delta), each
        with its op's sign from `signs` (b, K)."""
        ops = draw_ops(probabilities, gumbel, k)
        chosen = magnitudes.gather(1, ops)
        if perturbation is not None:
            uniforms, directions, delta = perturbation
            chosen = perturb_magnitudes(chosen, uniforms.to(chosen), directions.to(chosen), delta)
        return exploit_images(images, ops, chosen, signs.gather(1, ops.cpu()), self.pool)

    def record(self, probabilities: Tensor, magnitudes: Tensor, labels: Tensor, ctx: StepContext) -> None:
        """Per class: add the head's probabilities and magnitudes (b, K) of this rank's rows,
        gathered over the global batch, to the sums behind `class_policy`."""
        if not len(self.class_counts):
            return
        comm, device = ctx.comm, self.class_counts.device
        labels = comm.gather_rows(labels.to(probabilities.device)).to(device)
        self.class_probability_sums.index_add_(0, labels, comm.gather_rows(probabilities).double().to(device))
        self.class_magnitude_sums.index_add_(0, labels, comm.gather_rows(magnitudes).double().to(device))
        self.class_counts.index_add_(0, labels, torch.ones(len(labels), dtype=torch.float64, device=device))

    def class_policy(self) -> tuple[Tensor, Tensor]:
        """Per class (C, K): the mean op probabilities and mean magnitudes the head gave the
        training rows it saw."""
        counts = self.class_counts.clamp_min(1).unsqueeze(1)
        return (self.class_probability_sums / counts).float().cpu(), (self.class_magnitude_sums / counts).float().cpu()

    def write_artifacts(self, folder: Path) -> list[Path]:
        """class_policy.png: per class, the learned op probabilities and mean magnitudes."""
        if not len(self.class_counts) or not float(self.class_counts.sum()):
            return []
        path = Path(folder) / "class_policy.png"
        probabilities, magnitudes = self.class_policy()
        class_policy_heatmap(probabilities, magnitudes, self.pool, path, title=self.name)
        return [path]

    def get_extra_state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
                "pool": list(self.pool)}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if state.get("optimizer") is not None:
            if self.optimizer is None:
                raise RuntimeError(f"call {type(self).__name__}.setup(ctx) before load_state_dict")
            self.optimizer.load_state_dict(state["optimizer"])

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "pool": list(self.pool)}
