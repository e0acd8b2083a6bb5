"""What differs between a mini-batch run and an episodic (few-shot) run, behind one interface.

The run loop (`loop.Trainer`) checkpoints, resumes, logs, validates, selects the best model
and writes results once for every benchmark kind; a strategy supplies the rest: the inputs
of each training step, the evaluation of a split, the services it offers policies through
the StepContext, its own checkpointed state, and which metrics a finished run reports.

- `MiniBatchStrategy` (classification): shuffled mini-batches, a validation stream and
  validation subsets for policies, the final model tested on the test split.
- `EpisodicStrategy` (few-shot classification and regression, Rajendran et al. 2020,
  Appendix E, itself the MAML codebase's protocol): meta-batches of tasks built by the
  policy's task transforms; validation and test on un-augmented tasks drawn from fixed
  seeds (the same tasks for every run, seed and policy); the best-validation model tested.

On many ranks (`comm`) each rank loads only its share: its rows of every training and
validation batch, its contiguous part of the evaluation splits, its tasks of every
meta-batch and of the evaluation tasks. Every task is drawn from a seed of its own (drawn
for the whole meta-batch on every rank), so a rank builds only its tasks and N ranks use
the tasks one process uses; the learners reduce the evaluation's sums over ranks.
"""
from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from typing import Any, Callable, Iterator

import torch
from torch import nn

from metaaugment.batch import Episode, Tasks
from metaaugment.data.batches import BatchStream, evaluation_batches, steps_per_epoch, training_batches
from metaaugment.data.episodes import FewShotData, isolated_random
from metaaugment.data.regression import RegressionTasks
from metaaugment.data.splits import ClassificationData
from metaaugment.infra.errors import UserError
from metaaugment.parallel.comm import SINGLE_PROCESS, Communicator
from metaaugment.spec import BenchmarkKind, TaskSpec
from metaaugment.steptools.precision import autocast

EVAL_BATCH_SIZE = 512
# Fixed seeds of the evaluation tasks: every run, seed and policy is scored on the same tasks.
VAL_TASK_SEED = 1_000_003
TEST_TASK_SEED = 2_000_029


class KindStrategy(ABC):
    """The part of a run that depends on the benchmark kind.

    steps_per_epoch: training steps in one epoch.
    tests_best_model: the test split scores the best-validation model (else the final one).
    test_label: how the progress bar names the final test.
    """

    steps_per_epoch: int
    tests_best_model: bool = False
    test_label: str = "test"
    data_types: tuple[type, ...] = ()  # what the benchmark's load must return for this kind

    def __init__(self, config: Any, kind: BenchmarkKind, data: Any, model: nn.Module, learner: Any,
                 policy: Any, device: torch.device, comm: Communicator = SINGLE_PROCESS):
        self.config, self.kind, self.data = config, kind, data
        self.model, self.learner, self.policy, self.device, self.comm = model, learner, policy, device, comm

    @classmethod
    def check_data(cls, data: Any, benchmark: str) -> None:
        """A UserError unless the benchmark's `load` returned data of this kind (a plug-in
        benchmark returning something else stops here, not in the middle of a step)."""
        if not isinstance(data, cls.data_types):
            expected = " or ".join(t.__name__ for t in cls.data_types)
            raise UserError(f"benchmark '{benchmark}' loaded a {type(data).__name__}, not {expected}")

    @staticmethod
    def model_spec(data: Any, config: Any) -> TaskSpec:
        """The TaskSpec the task network is built for: the benchmark's own by default."""
        return data.spec

    @abstractmethod
    def epoch_inputs(self, epoch: int, start: int) -> Iterator[Any]:
        """The inputs of the training steps `start`, start + 1, ... of `epoch`, produced lazily
        (a checkpoint between two steps finds the next input not yet drawn)."""

    @abstractmethod
    def evaluate(self, split: str, model_state: dict[str, Any] | None = None,
                 on_item: Callable[[], None] | None = None) -> dict[str, Any]:
        """Scores of the model (or of `model_state`, loaded for the duration) on split "val" or
        "test"; `on_item` is called after each batch or task (progress bars)."""

    @abstractmethod
    def evaluation_size(self, split: str) -> int:
        """How many times `evaluate(split)` calls `on_item`."""

    def prepare(self) -> None:
        """Finish building what needs the policy set up (task samplers); called once, after
        `policy.setup`."""

    def context_services(self) -> dict[str, Any]:
        """StepContext fields this strategy provides to policies and learners."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Checkpointable state (data positions, generators)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict`."""

    @abstractmethod
    def result_metrics(self, test: dict[str, Any], state: Any) -> dict[str, Any]:
        """results.json's metrics from the test scores and the final TrainingState."""

    def _with_model_state(self, model_state: dict[str, Any] | None, evaluate: Callable[[], dict[str, Any]]
                          ) -> dict[str, Any]:
        saved = copy.deepcopy(self.model.state_dict()) if model_state is not None else None
        if model_state is not None:
            self.model.load_state_dict(model_state)
        try:
            return evaluate()
        finally:
            if saved is not None:
                self.model.load_state_dict(saved)


class MiniBatchStrategy(KindStrategy):
    """Classification on shuffled mini-batches of an in-memory ClassificationData."""

    data_types = (ClassificationData,)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        cfg = self.config
        # checked here, not discovered as a NaN loss (an empty batch) or after training (an empty test split)
        for name in ("train", "val", "test"):
            if len(getattr(self.data, name)) == 0:
                raise UserError(f"the {name} split of '{cfg.benchmark}' holds no samples; check its files under "
                                f"--data-root {cfg.data_root}")
        if len(self.data.train) < cfg.batch_size:
            raise UserError(f"--batch-size {cfg.batch_size} exceeds the {len(self.data.train)} training samples of "
                            f"'{cfg.benchmark}'; use a smaller --batch-size")
        self.steps_per_epoch = steps_per_epoch(len(self.data.train), cfg.batch_size)
        comm = self.comm
        self.val_stream = BatchStream(self.data.val, cfg.batch_size, cfg.seed, self.device, cfg.workers,
                                      share=lambda size: comm.local_rows(size) if comm.distributed else None)
        self.subset_generator = torch.Generator().manual_seed(cfg.seed + 104_729)

    def epoch_inputs(self, epoch: int, start: int) -> Iterator[Any]:
        cfg, comm = self.config, self.comm
        return training_batches(self.data.train, cfg.batch_size, cfg.seed, epoch, start=start, device=self.device,
                                workers=cfg.workers, rows=comm.local_rows(cfg.batch_size) if comm.distributed else None)

    def _split(self, split: str) -> Any:
        return {"val": self.data.val, "test": self.data.test}[split]

    def _share(self, indices: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous part of the samples `indices` to evaluate."""
        return indices[self.comm.local_rows(len(indices))]

    def evaluate(self, split: str, model_state: dict[str, Any] | None = None,
                 on_item: Callable[[], None] | None = None) -> dict[str, Any]:
        data = self._split(split)

        def batches() -> Iterator[Any]:
            for batch in evaluation_batches(data, EVAL_BATCH_SIZE, self.device, self._share(torch.arange(len(data))),
                                            workers=self.config.workers):
                yield batch
                if on_item is not None:
                    on_item()

        def evaluate() -> dict[str, Any]:
            with autocast(self.device, self.config.precision):
                return self.learner.evaluate(self.model, batches(), self.comm)

        return self._with_model_state(model_state, evaluate)

    def evaluation_size(self, split: str) -> int:
        return math.ceil(len(self._share(torch.arange(len(self._split(split))))) / EVAL_BATCH_SIZE)

    def evaluate_validation_subset(self, fraction: float = 1.0) -> dict[str, float]:
        """Loss and accuracy on a random `fraction` of the validation split (model mode kept);
        on many ranks each scores its part of the subset and the sums are reduced."""
        count = max(1, math.ceil(fraction * len(self.data.val)))
        indices = torch.randperm(len(self.data.val), generator=self.subset_generator)[:count]
        was_training = self.model.training
        with autocast(self.device, self.config.precision):
            metrics = self.learner.evaluate(self.model, evaluation_batches(self.data.val, EVAL_BATCH_SIZE,
                                                                           self.device, self._share(indices),
                                                                           workers=self.config.workers), self.comm)
        self.model.train(was_training)
        return metrics

    def context_services(self) -> dict[str, Any]:
        return {"validation_batch": self.val_stream.next, "evaluate": self.evaluate_validation_subset}

    def state_dict(self) -> dict[str, Any]:
        return {"val_stream": self.val_stream.state_dict(), "subset_generator": self.subset_generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.val_stream.load_state_dict(state["val_stream"])
        self.subset_generator.set_state(state["subset_generator"])

    def result_metrics(self, test: dict[str, Any], state: Any) -> dict[str, Any]:
        return {"test_accuracy": test["accuracy"], "test_loss": test["loss"],
                "best_val_accuracy": state.best_val, "final_val_accuracy": state.last_val.get("accuracy"),
                "final_val_loss": state.last_val.get("loss"), "epochs": self.config.epochs, "steps": state.step}


class EpisodicStrategy(KindStrategy):
    """Few-shot classification (FewShotData) or regression (RegressionTasks) on episodes."""

    tests_best_model = True
    test_label = "meta-test (best-validation model)"
    data_types = (FewShotData, RegressionTasks)

    @staticmethod
    def model_spec(data: Any, config: Any) -> TaskSpec:
        """Few-shot classifiers predict the task-local labels 0..N-1: N = --ways classes."""
        if isinstance(data, FewShotData):
            return data.task_spec(config.ways)
        return data.spec

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        cfg = self.config
        self.steps_per_epoch = cfg.steps_per_epoch
        self.train_tasks: Any = None
        self.task_generator = torch.Generator().manual_seed(cfg.seed + 7919)
        # the seeds of the meta-training tasks, one per task, drawn for the whole meta-batch
        self.sampling_generator = torch.Generator().manual_seed(cfg.seed + 15_485_863)

    def prepare(self) -> None:
        self.train_tasks, self.val_tasks, self.test_tasks = self._samplers()

    def _samplers(self) -> tuple[Any, Any, Any]:
        """Task samplers of the three splits; meta-training tasks are built by the policy's
        task transforms, evaluation tasks by the standard protocol."""
        cfg, data = self.config, self.data
        if isinstance(data, RegressionTasks):
            return tuple(data.sampler(split, cfg.shots, cfg.query_shots) for split in ("train", "val", "test"))
        assert isinstance(data, FewShotData)
        return tuple(data.sampler(split, cfg.ways, cfg.shots, cfg.query_shots, self.policy)
                     for split in ("train", "val", "test"))

    def epoch_inputs(self, epoch: int, start: int) -> Iterator[Tasks]:
        total = self.config.batch_size
        for _ in range(start, self.steps_per_epoch):
            seeds = torch.randint(2**62, (total,), generator=self.sampling_generator).tolist()
            mine = self.comm.local_items(range(total))
            yield Tasks([sample_seeded(self.train_tasks, seeds[i], self.device) for i in mine], mine, total)

    def context_services(self) -> dict[str, Any]:
        return {"task_generator": self.task_generator}

    def evaluate(self, split: str, model_state: dict[str, Any] | None = None,
                 on_item: Callable[[], None] | None = None) -> dict[str, Any]:
        sampler, seed = {"val": (self.val_tasks, VAL_TASK_SEED), "test": (self.test_tasks, TEST_TASK_SEED)}[split]
        count = self.config.val_tasks if split == "val" else self.config.test_tasks

        def episodes() -> Iterator[Episode]:
            for task in self.comm.local_items(range(count)):  # task t's seed: the same tasks whatever the ranks
                yield sample_seeded(sampler, evaluation_seed(seed, task), self.device)
                if on_item is not None:
                    on_item()

        return self._with_model_state(model_state, lambda: self.learner.evaluate(self.model, episodes(), self.comm))

    def evaluation_size(self, split: str) -> int:
        count = self.config.val_tasks if split == "val" else self.config.test_tasks
        return len(self.comm.local_items(range(count)))

    def state_dict(self) -> dict[str, Any]:
        return {"task_generator": self.task_generator.get_state(), "sampling_generator":
                self.sampling_generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.task_generator.set_state(state["task_generator"])
        self.sampling_generator.set_state(state["sampling_generator"])

    def result_metrics(self, test: dict[str, Any], state: Any) -> dict[str, Any]:
        metrics: dict[str, Any] = {f"test_{k}": v for k, v in test.items()}
        metrics.update({self.kind.best_metric: state.best_val, "best_step": state.best_step,
                        "epochs": self.config.epochs, "steps": state.step})
        metrics.update({f"final_train_{k}": v for k, v in state.last_train.items()})
        metrics.update({f"final_val_{k}": v for k, v in state.last_val.items()})
        return metrics


def sample_seeded(sampler: Any, seed: int, device: torch.device) -> Episode:
    """One episode of `sampler` drawn from `seed` alone (the samplers draw from Python's
    `random`, isolated here): a task is the same on whichever rank builds it."""
    with isolated_random(seed):
        return sampler.sample(device)


def evaluation_seed(split_seed: int, task: int) -> int:
    """The seed of evaluation task `task` of a split: a pure function of both."""
    return (split_seed * 1_000_003 + task * 7_919) % (2**62)


def strategy_for(kind: BenchmarkKind) -> type[KindStrategy]:
    """The strategy class of a benchmark kind."""
    return EpisodicStrategy if kind.episodic else MiniBatchStrategy
