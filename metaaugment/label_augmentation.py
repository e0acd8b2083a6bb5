"""Pure functions and learn2learn task transforms of CE-increasing meta-augmentation.

Rajendran et al. (2020), "Meta-Learning Requires Meta-Augmentation": an augmentation
(x, y) -> (x, g(eps, y)) with one random key eps per task, shared by support and query,
raises the conditional entropy H(Y'|X) by H(eps) (Theorem 1), so the learner must read the
support set to recover eps. For classification eps is a permutation of the task's labels
(intershuffle / intrashuffle); for regression it is a shift added to every target.
"""
from __future__ import annotations

import math
import random
from collections import Counter
from typing import Any, Sequence

import torch
from torch import Tensor

from .batch import Episode
from .l2l import learn2learn


def partition_classes(classes: Sequence[int], group_size: int, seed: int = 0) -> list[list[int]]:
    """Fixed groups of `group_size` classes: a permutation of `classes` drawn with `seed`, cut
    into consecutive chunks (a remainder smaller than a group is left out). Within a group
    the order is the order of the chunk, and it defines the labels 0..N-1 under `nme`."""
    order = list(classes)
    random.Random(seed).shuffle(order)
    return [order[i:i + group_size] for i in range(0, len(order) - group_size + 1, group_size)]


def _task_transform_base() -> type:
    return learn2learn().data.transforms.TaskTransform


def fixed_group_transform(dataset: Any, groups: Sequence[Sequence[int]]) -> Any:
    """A learn2learn task transform that starts each task from one of the fixed `groups`
    (chosen uniformly with Python's `random`), keeping every sample of its classes. It
    replaces `NWays` in the non-mutually-exclusive and intrashuffle settings."""
    DataDescription = learn2learn().data.task_dataset.DataDescription

    class FixedGroups(_task_transform_base()):  # type: ignore[misc]
        def __init__(self, dataset: Any, groups: Sequence[Sequence[int]]):
            super().__init__(dataset)
            self.groups = [list(g) for g in groups]

        def __call__(self, task_description: Any) -> list[Any]:
            group = random.choice(self.groups)
            return [DataDescription(index) for label in group for index in self.dataset.labels_to_indices[label]]

    return FixedGroups(dataset, groups)


def group_order_labels_transform(dataset: Any, groups: Sequence[Sequence[int]]) -> Any:
    """A learn2learn task transform giving each class its fixed position within its group as
    the task-local label: the same image gets the same label in every task (`nme`)."""

    class GroupOrderLabels(_task_transform_base()):  # type: ignore[misc]
        def __init__(self, dataset: Any, groups: Sequence[Sequence[int]]):
            super().__init__(dataset)
            self.position = {label: i for g in groups for i, label in enumerate(g)}

        def __call__(self, task_description: Any) -> Any:
            for dd in task_description:
                dd.transforms.append(self._relabel)
            return task_description

        def _relabel(self, sample: Sequence[Any]) -> list[Any]:
            sample = list(sample)
            sample[1] = self.position[sample[1]]
            return sample

    return GroupOrderLabels(dataset, groups)


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


def conditional_entropy_bits(inputs: Sequence[Any], targets: Sequence[Any]) -> float:
    """Plug-in estimate of H(Y|X) in bits from paired discrete samples (x_i, y_i):
    sum_x p(x) H(Y | X = x) with empirical frequencies. Values must be hashable."""
    by_input: dict[Any, Counter] = {}
    for x, y in zip(inputs, targets):
        by_input.setdefault(x, Counter())[y] += 1
    total = sum(sum(c.values()) for c in by_input.values())
    entropy = 0.0
    for counts in by_input.values():
        n = sum(counts.values())
        entropy += n / total * -sum(k / n * math.log2(k / n) for k in counts.values())
    return entropy
