"""Few-shot regression task families (e.g. sinusoids): the counterpart of FewShotData.

A family draws whole tasks rather than samples of a dataset, so it has no learn2learn
MetaDataset; like learn2learn's transforms it draws from Python's `random` module, which the
trainer seeds, checkpoints and isolates for evaluation (see fewshot.isolated_random).
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from metaaugment.batch import Episode
from metaaugment.spec import TaskSpec

SPLITS = ("train", "val", "test")


class RegressionTasks(ABC):
    """A family of scalar regression tasks split into meta-train / meta-val / meta-test.

    spec: TaskSpec with num_classes None (a real value per input) and input_shape (D,).
    """

    spec: TaskSpec

    @abstractmethod
    def sample(self, split: str, shots: int, query_shots: int) -> Episode:
        """One task of `split`: (shots, D) support and (query_shots, D) query inputs with
        (shots, 1) / (query_shots, 1) float targets, on the CPU."""

    def sampler(self, split: str, shots: int, query_shots: int) -> "RegressionSampler":
        """An episode sampler with the interface of fewshot.EpisodeSampler."""
        return RegressionSampler(self, split, shots, query_shots)


class RegressionSampler:
    """Draws episodes of one split of a RegressionTasks family onto a device."""

    def __init__(self, family: RegressionTasks, split: str, shots: int, query_shots: int):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}")
        self.family, self.split, self.shots, self.query_shots = family, split, shots, query_shots

    def sample(self, device: torch.device | str = "cpu") -> Episode:
        """One episode with its tensors on `device`."""
        e = self.family.sample(self.split, self.shots, self.query_shots)
        return e.replace(support_inputs=e.support_inputs.to(device), support_targets=e.support_targets.to(device),
                         query_inputs=e.query_inputs.to(device), query_targets=e.query_targets.to(device))
