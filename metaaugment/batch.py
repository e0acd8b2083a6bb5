"""The data containers policies and learners exchange: Batch and Episode."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor


@dataclass
class Batch:
    """A mini-batch as policies and learners see it.

    inputs:  (B, C, H, W) float images in [0, 1] (or any (B, ...) float features).
    targets: (B,) int64 class indices, or (B, num_classes) float soft labels whose rows sum to 1.
    weights: optional (B,) non-negative per-sample loss weights; None means uniform. The loss
             is sum_i w_i L_i / sum_i w_i, so only relative weights matter.
    info:    per-sample annotations a policy keeps for logging or figures (e.g. the op pair
             applied to each sample as a (B, 2) tensor). Learners pass it through untouched.
    """

    inputs: Tensor
    targets: Tensor
    weights: Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def replace(self, **changes: Any) -> "Batch":
        """A copy with some fields replaced (the original is left untouched)."""
        return dataclasses.replace(self, **changes)

    def to(self, device: torch.device | str) -> "Batch":
        """The same batch with its tensors on `device`."""
        move = lambda t: t.to(device, non_blocking=True) if isinstance(t, Tensor) else t  # noqa: E731
        return Batch(move(self.inputs), move(self.targets), move(self.weights),
                     {k: move(v) for k, v in self.info.items()})

    def rows(self, index: slice) -> "Batch":
        """The batch's rows `index`: inputs, targets, weights and every per-sample annotation
        (a tensor in `info` whose first dimension is B); other annotations are kept whole."""
        n = len(self)
        take = lambda t: t[index] if isinstance(t, Tensor) and t.dim() > 0 and t.shape[0] == n else t  # noqa: E731
        return Batch(self.inputs[index], self.targets[index], None if self.weights is None else self.weights[index],
                     {k: take(v) for k, v in self.info.items()})

    @property
    def is_soft(self) -> bool:
        """True when targets are (B, num_classes) label distributions."""
        return self.targets.dim() == 2 and self.targets.is_floating_point()

    def hard_targets(self) -> Tensor:
        """(B,) class indices: the targets themselves, or the argmax of soft labels."""
        return self.targets.argmax(dim=1) if self.is_soft else self.targets


@dataclass
class Episode:
    """One few-shot task: adapt on the support set, evaluate on the query set.

    support_inputs: (N*K, C, H, W) or (N*K, D);  support_targets: (N*K,) int64 task-local labels
    in [0, N), or (N*K, D) float regression targets. query_* likewise with the query size.
    info: task-level annotations (e.g. the original class ids, the noise epsilon drawn).
    """

    support_inputs: Tensor
    support_targets: Tensor
    query_inputs: Tensor
    query_targets: Tensor
    info: dict[str, Any] = field(default_factory=dict)

    def replace(self, **changes: Any) -> "Episode":
        """A copy with some fields replaced (the original is left untouched)."""
        return dataclasses.replace(self, **changes)
