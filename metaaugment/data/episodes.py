"""Few-shot data: class-labelled image splits, task sampling, episodes.

A split is held once as uint8 images; task transforms (`metaaugment.data.task_sampling`:
`NWays`, `KShots`, `LoadData`, `RemapLabels`, ..., learn2learn's protocol, without
learn2learn) decide which samples form a task and which task-local label each gets.
`EpisodeSampler` turns a sampled task into an `Episode` (support and query sets, float
images on the target device).

The transforms draw their randomness from Python's global `random` module. The trainer
seeds each task's draws (`isolated_random(seed)`, one seed per task), so every evaluation
sees the same tasks and training randomness is left untouched.
"""
from __future__ import annotations

import contextlib
import dataclasses
import random
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from metaaugment.batch import Episode
from metaaugment.data.task_sampling import ClassIndex, TaskSampler, standard_task_transforms
from metaaugment.infra.errors import UserError
from metaaugment.spec import TaskSpec


class FewShotSplit(Dataset):
    """One split of a few-shot benchmark: uint8 images (N, C, H, W), int64 labels (N,).

    Labels are dataset-wide class indices; `class_names[label]` names them. Indexing returns
    (uint8 image (C, H, W), label, index): `LoadData` collates all three, so an episode knows
    which dataset samples it holds.
    """

    def __init__(self, images: Tensor, labels: Tensor, class_names: Sequence[str] | None = None):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError("labels must be (N,) and match the number of images")
        self.images, self.labels = images, labels.long()
        classes = sorted(set(self.labels.tolist()))
        self.class_names = list(class_names) if class_names is not None else [str(c) for c in classes]
        self._index: ClassIndex | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, int, int]:
        return self.images[index], int(self.labels[index]), int(index)

    @property
    def classes(self) -> list[int]:
        """Sorted distinct class labels present in the split."""
        return sorted(set(self.labels.tolist()))

    def samples_per_class(self) -> int:
        """The size of the smallest class (tasks can draw at most this many per class)."""
        counts = torch.bincount(self.labels)
        return int(counts[counts > 0].min())

    def class_index(self) -> ClassIndex:
        """This split as the task transforms see it (class bookkeeping from the labels, no
        image reads); built once."""
        if self._index is None:
            self._index = ClassIndex(self, self.labels.tolist())
        return self._index


@dataclass
class FewShotData:
    """Meta-train / meta-validation / meta-test splits with disjoint classes, and their spec."""

    train: FewShotSplit
    val: FewShotSplit
    test: FewShotSplit
    spec: TaskSpec

    def task_spec(self, ways: int) -> TaskSpec:
        """The spec of an N-way task: what a model's head is sized for (num_classes = ways)."""
        return dataclasses.replace(self.spec, num_classes=ways)

    def sampler(self, split: str, ways: int, shots: int, query_shots: int, policy: Any = None) -> "EpisodeSampler":
        """Episodes of `split` ("train", "val" or "test"): N-way, K-shot, Q query samples per
        class. On "train", a TaskPolicy's `task_transforms` build the tasks (nme, intrashuffle,
        intershuffle); evaluation splits always use the standard protocol, as `metaaug` does."""
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be train, val or test (got {split!r})")
        chosen = getattr(self, split)
        transforms = None
        if policy is not None and split == "train":
            transforms = policy.task_transforms(chosen.class_index(), ways, shots + query_shots)
        return EpisodeSampler(chosen, ways, shots, query_shots, transforms)


@contextlib.contextmanager
def isolated_random(seed: int) -> Iterator[None]:
    """Run a block with Python's `random` seeded to `seed`, then restore the outer state."""
    outer = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(outer)


def split_support_query(items: Tensor, labels: Tensor, shots: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Split a collated task into support (the first `shots` samples of each label) and query
    (the rest). items: (M, ...) samples (or their positions), labels: (M,) task-local labels
    -> support items, support labels, query items, query labels, grouped by label."""
    support, query = [], []
    for label in labels.unique(sorted=True).tolist():
        members = (labels == label).nonzero().flatten()
        support.append(members[:shots])
        query.append(members[shots:])
    s, q = torch.cat(support), torch.cat(query)
    return items[s], labels[s], items[q], labels[q]


class EpisodeSampler:
    """Draws few-shot episodes from one split with a list of task transforms.

    ways / shots / query_shots: N, K and the number of query samples per class.
    transforms: task transforms for `split.class_index()` (`task_sampling`'s, or
    learn2learn's) that keep shots + query_shots samples of each of `ways` classes and load
    them with task-local labels; None means `standard_task_transforms`.
    """

    def __init__(self, split: FewShotSplit, ways: int, shots: int, query_shots: int,
                 transforms: Sequence[Any] | None = None):
        available = split.samples_per_class()
        if ways > len(split.classes):
            raise UserError(f"--ways {ways} exceeds the {len(split.classes)} classes of this split")
        if shots + query_shots > available:
            raise UserError(f"--shots {shots} plus {query_shots} query samples per class exceed the "
                            f"{available} samples of the smallest class")
        self.split, self.ways, self.shots, self.query_shots = split, ways, shots, query_shots
        dataset = split.class_index()
        if transforms is None:
            transforms = standard_task_transforms(dataset, ways, shots + query_shots)
        self.tasks = TaskSampler(dataset, transforms)

    def sample(self, device: torch.device | str = "cpu") -> Episode:
        """One episode: (N*K, C, H, W) support and (N*Q, C, H, W) query float images in [0, 1]
        with labels in [0, N). info["support_indices"] / info["query_indices"] are the
        dataset indices of the samples, in the same order."""
        images, labels, indices = self.tasks.sample()
        labels = torch.as_tensor(labels)
        order = torch.arange(len(labels))
        s, s_y, q, q_y = split_support_query(order, labels, self.shots)
        to_float = lambda x: x.to(device, non_blocking=True).float().div_(255.0)  # noqa: E731
        indices = torch.as_tensor(indices)
        return Episode(to_float(images[s]), s_y.to(device), to_float(images[q]), q_y.to(device),
                       info={"support_indices": indices[s], "query_indices": indices[q]})
