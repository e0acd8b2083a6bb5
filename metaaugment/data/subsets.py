"""The literature's reduced-data regimes as pure index choices.

- A balanced training subset: `per_class` samples of every class (AutoAugment's "reduced
  CIFAR-10" is 4,000 images, 400 a class), drawn by a fixed seed so that every policy and every
  run seed trains on the same images.
- A cap on the meta-training classes of a few-shot benchmark (MLTI's few-task regime): the
  classes kept are drawn by a fixed seed as well.

The seeds belong to the data, not to the run: `--seed` changes the initialization and the
draws of training, never which images or classes exist.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

SUBSET_SEED = 0
MAX_COUNT = 10**9  # more than any dataset's images or classes


class TooFewSamples(ValueError):
    """A class holds fewer samples than a balanced subset asks for."""

    def __init__(self, label: int, count: int, wanted: int):
        super().__init__(f"class {label} has {count} training samples, fewer than {wanted}")
        self.label, self.count, self.wanted = label, count, wanted


def balanced_subset(labels: Tensor, per_class: int, seed: int = SUBSET_SEED) -> Tensor:
    """Sorted int64 indices into `labels` (N,) holding `per_class` samples of every class present,
    each class's drawn uniformly without replacement by `seed`. TooFewSamples when a class
    has fewer than `per_class` samples."""
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1 (got {per_class})")
    labels = torch.as_tensor(labels).long()
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label in labels.unique(sorted=True).tolist():
        members = (labels == label).nonzero().flatten()
        if len(members) < per_class:
            raise TooFewSamples(label, len(members), per_class)
        chosen.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    return torch.cat(chosen).sort().values if chosen else torch.zeros(0, dtype=torch.int64)


def balanced_file_subset(files: Sequence[Sequence[object]], per_class: int,
                         seed: int = SUBSET_SEED) -> list[list[object]]:
    """`per_class` entries of each class's list (files[c] the files of class c), in their
    original order; the same choice as `balanced_subset` of the flattened labels."""
    labels = torch.tensor([label for label, members in enumerate(files) for _ in members], dtype=torch.int64)
    keep = set(balanced_subset(labels, per_class, seed).tolist())
    out, start = [], 0
    for members in files:
        out.append([item for offset, item in enumerate(members) if start + offset in keep])
        start += len(members)
    return out


def capped_classes(classes: Sequence[int], cap: int, seed: int = SUBSET_SEED) -> list[int]:
    """`cap` of `classes`, drawn uniformly without replacement by `seed`, sorted. ValueError when
    there are fewer than `cap`."""
    if cap < 1:
        raise ValueError(f"cap must be at least 1 (got {cap})")
    if len(classes) < cap:
        raise ValueError(f"there are {len(classes)} classes, fewer than {cap}")
    order = torch.randperm(len(classes), generator=torch.Generator().manual_seed(seed))[:cap]
    return sorted(classes[i] for i in order.tolist())


def check_subset_options(count: int, seed: int, name: str) -> None:
    """ValueError unless `count` (the option `name`; 0: no reduction) and `seed` are in range."""
    if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_COUNT:
        raise ValueError(f"{name} must be an integer from 0 (all) to {MAX_COUNT} (got {count!r})")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValueError(f"subset_seed must be an integer in [0, 2**32) (got {seed!r})")
