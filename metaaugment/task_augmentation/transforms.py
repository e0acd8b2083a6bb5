"""Task transforms of CE-increasing meta-augmentation for classification (the task
protocol of `metaaugment.data.task_sampling`, learn2learn's).

Rajendran et al. (2020), "Meta-Learning Requires Meta-Augmentation": an augmentation
(x, y) -> (x, g(eps, y)) with one random key eps per task, shared by support and query,
raises the conditional entropy H(Y'|X) by H(eps) (Theorem 1), so the learner must read the
support set to recover eps. For classification eps is a permutation of the task's labels
(intershuffle / intrashuffle); the non-mutually-exclusive baseline (nme) fixes the classes
of each task and their labels.
"""
from __future__ import annotations

import random
from typing import Any, Sequence

from metaaugment.data.task_sampling import ClassIndex, SampleDescription, TaskDescription, TaskTransform


def partition_classes(classes: Sequence[int], group_size: int, seed: int = 0) -> list[list[int]]:
    """Fixed groups of `group_size` classes: a permutation of `classes` drawn with `seed`, cut
    into consecutive chunks (a remainder smaller than a group is left out). Within a group
    the order is the order of the chunk, and it defines the labels 0..N-1 under `nme`."""
    order = list(classes)
    random.Random(seed).shuffle(order)
    return [order[i:i + group_size] for i in range(0, len(order) - group_size + 1, group_size)]


class FixedGroups(TaskTransform):
    """Start each task from one of the fixed `groups` (chosen uniformly with Python's
    `random`), keeping every sample of its classes. It replaces `NWays` in the
    non-mutually-exclusive and intrashuffle settings."""

    def __init__(self, dataset: ClassIndex, groups: Sequence[Sequence[int]]):
        super().__init__(dataset)
        self.groups = [list(g) for g in groups]

    def __call__(self, description: TaskDescription | None) -> TaskDescription:
        group = random.choice(self.groups)
        return [SampleDescription(index) for label in group for index in self.dataset.labels_to_indices[label]]


class GroupOrderLabels(TaskTransform):
    """Give each class its fixed position within its group as the task-local label: the
    same image gets the same label in every task (`nme`)."""

    def __init__(self, dataset: ClassIndex, groups: Sequence[Sequence[int]]):
        super().__init__(dataset)
        self.position = {label: i for g in groups for i, label in enumerate(g)}

    def __call__(self, description: TaskDescription | None) -> TaskDescription:
        for sample in description or []:
            sample.transforms.append(self._relabel)
        return description or []

    def _relabel(self, sample: Sequence[Any]) -> list[Any]:
        sample = list(sample)
        sample[1] = self.position[sample[1]]
        return sample
