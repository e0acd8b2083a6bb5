"""Few-shot task sampling: which samples form a task and which task-local label each gets.

The protocol is learn2learn's (Arnold et al., `learn2learn.data`), so a task transform
written for either works with both, and learn2learn itself is not needed:

- a task description is a list of sample descriptions, each with `index` (the sample's
  position in the split) and `transforms` (functions applied in order to the index when the
  task is loaded); a task transform maps a description (or None: the whole split) to a new
  one;
- `TaskSampler.sample()` runs the transforms, loads every described sample and collates
  them into (images (M, C, H, W) uint8, labels (M,), indices (M,)).

The transforms here (`NWays`, `KShots`, `LoadData`, `RemapLabels`, `ConsecutiveLabels`)
draw from Python's `random` module in the same calls and order as learn2learn 0.2.0's, so
for the same `random` state they build the same tasks (`tests/test_meta_augmentation.py`
compares both where learn2learn is installed). One difference: `NWays` after another
transform samples among the description's classes in sorted order (learn2learn's passes a
set to `random.sample`, which Python 3.11 refuses).
"""
from __future__ import annotations

import random
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset


class ClassIndex(Dataset):
    """A split seen by the task transforms: `labels` (its classes, in first-seen order),
    `labels_to_indices` (class -> sample positions), `indices_to_labels` (position -> class),
    and item access to the split's samples (learn2learn's MetaDataset bookkeeping)."""

    def __init__(self, samples: Dataset, labels: Sequence[int]):
        self.samples = samples
        self.labels_to_indices: dict[int, list[int]] = {}
        for index, label in enumerate(labels):
            self.labels_to_indices.setdefault(int(label), []).append(index)
        self.indices_to_labels = {index: int(label) for index, label in enumerate(labels)}
        self.labels = list(self.labels_to_indices)

    def __len__(self) -> int:
        return len(self.indices_to_labels)

    def __getitem__(self, index: int) -> Any:
        return self.samples[index]


class SampleDescription:
    """One sample of a task: its `index` in the split and the `transforms` that load it."""

    __slots__ = ("index", "transforms")

    def __init__(self, index: int):
        self.index = index
        self.transforms: list[Callable[[Any], Any]] = []


TaskDescription = list  # of SampleDescription


class TaskTransform:
    """A task transform over the split `dataset` (a ClassIndex)."""

    def __init__(self, dataset: ClassIndex):
        self.dataset = dataset

    def new_task(self) -> TaskDescription:
        """Every sample of the split."""
        return [SampleDescription(index) for index in range(len(self.dataset))]

    def __call__(self, description: TaskDescription | None) -> TaskDescription:
        raise NotImplementedError


class NWays(TaskTransform):
    """Keep the samples of `n` random classes (`random.sample` of the split's classes)."""

    def __init__(self, dataset: ClassIndex, n: int = 2):
        super().__init__(dataset)
        self.n = n

    def __call__(self, description: TaskDescription | None) -> TaskDescription:
        if description is None:
            classes = random.sample(self.dataset.labels, k=self.n)
            return [SampleDescription(index) for label in classes for index in self.dataset.labels_to_indices[label]]
        labels = self.dataset.indices_to_labels
        classes = set(random.sample(sorted({labels[d.index] for d in description}), k=self.n))
        return [d for d in description if labels[d.index] in classes]


class KShots(TaskTransform):
    """Keep `k` random samples of each class present, in the order the classes appear
    (`replacement`: drawn with replacement, as copies)."""

    def __init__(self, dataset: ClassIndex, k: int = 1, replacement: bool = False):
        super().__init__(dataset)
        self.k, self.replacement = k, replacement

    def __call__(self, description: TaskDescription | None) -> TaskDescription:
        if description is None:
            description = self.new_task()
        by_class: dict[int, list[SampleDescription]] = {}
        for d in description:
            by_class.setdefault(self.dataset.indices_to_labels[d.index], []).append(d)
        kept: list[SampleDescription] = []
        for members in by_class.values():
            if self.replacement:
                kept += [_copy(d) for d in random.choices(members, k=self.k)]
            else:
                kept += random.sample(members, k=self.k)
        return kept


def _copy(description: SampleDescription) -> SampleDescription:
    copy = SampleDescription(description.index)
    copy.transforms = list(description.transforms)
    return copy


class LoadData(TaskTransform):
    """Load each sample from the split (`dataset[index]`)."""

    def __call__(self, description: TaskDescription | None) -> TaskDescription:
        if description is None:
            description = self.new_task()
        for d in description:
            d.transforms.append(self.dataset.__getitem__)
        return description


class RemapLabels(TaskTransform):
    """Relabel the task's classes 0..N-1: in a random order (`shuffle`, one `random.shuffle`
    per task) or in the order of their first appearance in a set of them."""

    def __init__(self, dataset: ClassIndex, shuffle: bool = True):
        super().__init__(dataset)
        self.shuffle = shuffle

    def __call__(self, description: TaskDescription | None) -> TaskDescription:
        if description is None:
            description = self.new_task()
        classes = list({self.dataset.indices_to_labels[d.index] for d in description})
        if self.shuffle:
            random.shuffle(classes)
        position = {label: i for i, label in enumerate(classes)}
        for d in description:
            d.transforms.append(lambda sample, position=position: _with_label(sample, position[sample[1]]))
        return description


def _with_label(sample: Sequence[Any], label: int) -> list[Any]:
    """(image, label, index, ...) with its label replaced."""
    sample = list(sample)
    sample[1] = label
    return sample


class ConsecutiveLabels(TaskTransform):
    """Order the samples by their class in the split (a stable sort), so each class's samples
    are contiguous."""

    def __call__(self, description: TaskDescription | None) -> TaskDescription:
        if description is None:
            description = self.new_task()
        return sorted(description, key=lambda d: self.dataset.indices_to_labels[d.index])


class TaskSampler:
    """Tasks of the split `dataset` built by `transforms` (callables on task descriptions,
    ours or learn2learn's), each loaded and collated."""

    def __init__(self, dataset: ClassIndex, transforms: Iterable[Callable[[Any], Any]]):
        self.dataset, self.transforms = dataset, list(transforms)

    def sample(self) -> tuple[Tensor, Tensor, Tensor]:
        """One task: (M, C, H, W) images, (M,) task-local labels and (M,) split indices."""
        random.randint(0, 0)  # learn2learn's Taskset draws its task id first; the same stream follows
        description = None
        for transform in self.transforms:
            description = transform(description)
        loaded = []
        for sample in description or []:
            value = sample.index
            for load in sample.transforms:
                value = load(value)
            loaded.append(value)
        if not loaded:
            raise ValueError("the task transforms left no sample in the task")
        images, labels, indices = zip(*(item[:3] for item in loaded))
        return torch.stack(list(images)), torch.as_tensor(labels), torch.as_tensor(indices)


def standard_task_transforms(dataset: ClassIndex, ways: int, samples_per_class: int) -> list[TaskTransform]:
    """The usual protocol (intershuffle): N random classes, K random samples each, labels
    0..N-1 assigned in a random order per task."""
    return [NWays(dataset, ways), KShots(dataset, samples_per_class), LoadData(dataset),
            RemapLabels(dataset, shuffle=True), ConsecutiveLabels(dataset)]
