"""Label noise for few-shot regression: one shift per task, shared by support and query.

For regression the key eps of CE-increasing meta-augmentation (Rajendran et al. 2020) is a
shift added to every target of a task; angular targets may wrap around into a range.
"""
from __future__ import annotations

import torch
from torch import Tensor

from metaaugment.batch import Episode


def wrap_into(values: Tensor, low: float, high: float) -> Tensor:
    """Map values into [low, high) by wrap-around (angular targets): low + (v - low) mod (high - low)."""
    return low + torch.remainder(values - low, high - low)


def shift_targets(episode: Episode, epsilon: float, wrap: tuple[float, float] | None = None) -> Episode:
    """The episode with `epsilon` added to every support and query target (one key per task),
    optionally wrapped into [low, high). The caller's tensors are not modified."""
    def shift(y: Tensor) -> Tensor:
        shifted = y + epsilon
        return wrap_into(shifted, *wrap) if wrap is not None else shifted

    info = {**episode.info, "epsilon": float(epsilon)}
    return episode.replace(support_targets=shift(episode.support_targets),
                           query_targets=shift(episode.query_targets), info=info)
