"""The few-shot benchmarks' `--benchmark-set` options: fewer meta-training classes (the regime
where meta-training tasks are few, MLTI's), the same classes for every policy and --seed."""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch

from metaaugment.data.episodes import FewShotData, FewShotSplit
from metaaugment.data.subsets import SUBSET_SEED, capped_classes, check_subset_options
from metaaugment.data.value_options import ValueOptions
from metaaugment.infra.errors import UserError


class FewShotOptions(ValueOptions):
    """A few-shot benchmark's options (`--benchmark-set`).

    Options:
        meta_train_classes: meta-train on this many of the meta-training classes only (tasks are
            drawn from them alone), drawn by subset_seed; 0: all of them. Meta-validation and
            meta-test classes are unchanged
        subset_seed: the seed that draws the kept classes: the same classes for every policy and
            every --seed
    """

    def __init__(self, *, meta_train_classes: int = 0, subset_seed: int = SUBSET_SEED):
        check_subset_options(meta_train_classes, subset_seed, "meta_train_classes")
        self.meta_train_classes, self.subset_seed = meta_train_classes, subset_seed

    def apply(self, data: FewShotData, benchmark: str) -> FewShotData:
        """`data` with its meta-training split cut to `meta_train_classes` classes (all when 0);
        a UserError when the split has fewer."""
        if not self.meta_train_classes:
            return data
        train = data.train
        try:
            kept = capped_classes(train.classes, self.meta_train_classes, self.subset_seed)
        except ValueError:
            raise UserError(f"{benchmark}: meta_train_classes={self.meta_train_classes} is more than the "
                            f"{len(train.classes)} meta-training classes it has") from None
        members = torch.isin(train.labels, torch.tensor(kept))
        capped = FewShotSplit(train.images[members], train.labels[members], train.class_names)
        return dataclasses.replace(data, train=capped)


def with_fewshot_options(load: Callable[..., FewShotData], benchmark: str) -> Callable[..., FewShotData]:
    """`load` taking the benchmark's FewShotOptions as its `options` keyword."""
    def load_with_options(root: Any, options: FewShotOptions | None = None, **keywords: Any) -> FewShotData:
        return (options or FewShotOptions()).apply(load(root, **keywords), benchmark)
    return load_with_options
