"""TaskSpec: what models and policies need to know about a problem before training."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskSpec:
    """Static description of a benchmark's inputs and outputs.

    num_classes: number of classes (None for regression).
    input_shape: shape of one input, (C, H, W) for images.
    mean, std: per-channel statistics models use to standardize [0, 1] inputs.
    kind: "classification", "few-shot" or "regression".
    """

    num_classes: int | None
    input_shape: tuple[int, ...]
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.25,)
    kind: str = "classification"

    @property
    def channels(self) -> int:
        """Number of input channels (first entry of input_shape)."""
        return self.input_shape[0]
