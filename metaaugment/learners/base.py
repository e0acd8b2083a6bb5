"""The Learner interface: how a model is trained on a batch (or adapted on a task)."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Iterable

import torch
from torch import nn

from metaaugment.batch import Batch
from metaaugment.parallel.comm import SINGLE_PROCESS, Communicator
from metaaugment.policy import AugmentationPolicy, StepContext
from metaaugment.spec import TaskSpec


class Learner(ABC):
    """Owns the optimization of a task network; the run loop knows nothing else about it.

    Mini-batch learners (`SupervisedLearner`) consume `Batch`es and call a BatchPolicy's
    per-step hooks; episodic learners (`EpisodicLearner`: MAML, Meta-SGD, ProtoNets) consume
    lists of few-shot `Episode`s and call a TaskPolicy's `augment_task`. State (optimizer,
    schedule) is saved with `state_dict` and restored after `setup`.
    """

    name: ClassVar[str] = "learner"  # set by the registry to the CLI name
    rate_option: ClassVar[str] = "lr"  # the option `--lr` sets: the learning rate the user tunes first
    # the benchmark kinds (keys of metaaugment.spec.KINDS) it trains, as a policy declares its own:
    # a run on any other kind stops with one line before it starts (a mini-batch learner by default)
    benchmark_kinds: ClassVar[tuple[str, ...]] = ("classification",)

    @abstractmethod
    def setup(self, model: nn.Module, spec: TaskSpec, total_steps: int) -> None:
        """Build optimizer and schedule for `model` and a run of `total_steps` steps."""

    @abstractmethod
    def train_step(self, model: nn.Module, batch: Batch, policy: AugmentationPolicy,
                   ctx: StepContext) -> dict[str, float]:
        """One optimization step on `batch` through `policy`; returns metrics to log."""

    @abstractmethod
    def evaluate(self, model: nn.Module, batches: Iterable[Batch], comm: Communicator = SINGLE_PROCESS
                 ) -> dict[str, float]:
        """Scores over un-augmented batches (or episodes); on many ranks (`comm`) each rank's
        are its part, and the scores are those of all of them (sums reduced, not means)."""

    @property
    def optimizer(self) -> torch.optim.Optimizer | None:
        """The task network's optimizer, exposed to lookahead policies through the context."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """Checkpointable state."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore state saved by `state_dict` (after `setup`)."""

    def describe(self) -> dict[str, Any]:
        """Hyperparameters recorded in config.json."""
        return {"name": self.name}
