"""Task-level policies of "Meta-Learning Requires Meta-Augmentation" (Rajendran et al. 2020).

Classification (how tasks and their labels are built, through task transforms):
  nme           classes partitioned once into fixed groups of N, fixed label order: the
                non-mutually-exclusive setting, where memorizing x -> y solves every task.
  intrashuffle  the same fixed groups, label order permuted per task.
  intershuffle  N classes drawn freely per task, labels permuted (the usual protocol).
Regression (one key per task, shared by support and query):
  target-noise    eps ~ U(-amplitude, amplitude) added to every target.
  discrete-noise  eps drawn uniformly from a finite set (default {0, .25, .5, .75}).
Both noises can wrap targets into a range for angular targets (--set wrap=0,10).
"""
from __future__ import annotations

from typing import Any, ClassVar, Sequence

import torch

from metaaugment.batch import Episode
from metaaugment.data import task_sampling
from metaaugment.infra.errors import UserError, check_option, representable
from metaaugment.policy import TaskPolicy
from metaaugment.registry import POLICIES
from metaaugment.task_augmentation.label_noise import shift_targets
from metaaugment.task_augmentation.transforms import FixedGroups, GroupOrderLabels, partition_classes


class _LabelConstruction(TaskPolicy):
    """Shared code of the three task constructions for few-shot classification.

    Options:
        group_seed: seed of the fixed partition of the classes into groups of N (nme, intrashuffle)
    """

    fixed_groups: ClassVar[bool] = False
    shuffle_labels: ClassVar[bool] = True

    def __init__(self, *, group_seed: int = 0):
        super().__init__()
        self.group_seed = group_seed
        self.groups: list[list[int]] = []

    def task_transforms(self, dataset: Any, ways: int, shots: int) -> Sequence[Any]:
        """Task transforms building tasks of `ways` classes with `shots` samples each (support
        plus query) from the split `dataset` (a ClassIndex)."""
        t = task_sampling
        if not self.fixed_groups:
            return t.standard_task_transforms(dataset, ways, shots)
        self.groups = partition_classes(sorted(dataset.labels), ways, self.group_seed)
        if not self.groups:
            raise UserError(f"{self.name} needs at least --ways {ways} meta-train classes")
        relabel = (t.RemapLabels(dataset, shuffle=True) if self.shuffle_labels
                   else GroupOrderLabels(dataset, self.groups))
        return [FixedGroups(dataset, self.groups), t.KShots(dataset, shots), t.LoadData(dataset),
                relabel, t.ConsecutiveLabels(dataset)]

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"name": self.name}
        if self.fixed_groups:
            info.update(group_seed=self.group_seed, groups=len(self.groups))
        return info


@POLICIES.register("nme")
class NonMutuallyExclusive(_LabelConstruction):
    """Non-mutually-exclusive tasks: fixed class groups with a fixed label order (no meta-augmentation).

    On regression benchmarks whose tasks are non-mutually-exclusive by construction
    (`sinusoid`), it leaves tasks unchanged: the baseline without augmentation.
    """

    benchmark_kinds = ("few-shot", "regression")
    fixed_groups = True
    shuffle_labels = False


@POLICIES.register("intrashuffle")
class IntraShuffle(_LabelConstruction):
    """Fixed class groups, label order shuffled per task (CE-increasing within groups)."""

    fixed_groups = True
    shuffle_labels = True


@POLICIES.register("intershuffle")
class InterShuffle(_LabelConstruction):
    """N classes sampled freely per task with shuffled labels (the standard protocol)."""



class _TargetShift(TaskPolicy):
    """Adds one random shift per task to support and query targets (regression)."""

    benchmark_kinds: ClassVar[tuple[str, ...]] = ("regression",)

    def __init__(self, wrap: tuple[float, ...] | None):
        super().__init__()
        check_option(wrap is None or (len(wrap) == 2 and representable(wrap[0]) and wrap[0] < wrap[1]
                                      and representable(wrap[1])), "wrap", wrap, "LOW,HIGH with LOW < HIGH")
        self.wrap = (float(wrap[0]), float(wrap[1])) if wrap is not None else None

    def draw_epsilon(self, generator: torch.Generator) -> float:
        """One key per task."""
        raise NotImplementedError

    def augment_task(self, episode: Episode, generator: torch.Generator) -> Episode:
        return shift_targets(episode, self.draw_epsilon(generator), self.wrap)


@POLICIES.register("target-noise")
class TargetNoise(_TargetShift):
    """y' = y + eps on support and query, eps ~ U(-amplitude, amplitude) once per task.

    Options:
        amplitude: eps ~ U(-amplitude, amplitude), once per task
        wrap: LOW,HIGH: wrap noisy targets into [LOW, HIGH) (angular targets); none: no wrapping
    """

    def __init__(self, *, amplitude: float = 1.0, wrap: tuple[float, ...] | None = None):
        check_option(representable(amplitude) and amplitude >= 0, "amplitude", amplitude, "a non-negative number")
        self.amplitude = amplitude
        super().__init__(wrap)

    def draw_epsilon(self, generator: torch.Generator) -> float:
        return float((2 * torch.rand((), generator=generator) - 1) * self.amplitude)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "amplitude": self.amplitude, "wrap": self.wrap}


@POLICIES.register("discrete-noise")
class DiscreteNoise(_TargetShift):
    """y' = y + eps on support and query, eps drawn uniformly from `values` once per task.

    Options:
        values: the noise values eps is drawn from, once per task (comma-separated)
        wrap: LOW,HIGH: wrap noisy targets into [LOW, HIGH) (angular targets); none: no wrapping
    """

    def __init__(self, *, values: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75), wrap: tuple[float, ...] | None = None):
        check_option(len(values) > 0 and len(set(values)) == len(values) and all(representable(v) for v in values),
                     "values", values, "distinct numbers, e.g. 0,0.25,0.5,0.75")
        self.values = tuple(float(v) for v in values)
        super().__init__(wrap)

    def draw_epsilon(self, generator: torch.Generator) -> float:
        return self.values[int(torch.randint(len(self.values), (), generator=generator))]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "values": list(self.values), "wrap": self.wrap}
