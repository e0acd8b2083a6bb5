"""The run loop: trains any registered model with any learner and policy on a benchmark.

It knows only the Benchmark, Learner and AugmentationPolicy interfaces. It validates
periodically, evaluates on the test split at the end, checkpoints atomically every N steps
and at every epoch end, resumes bit-for-bit from a checkpoint (model, learner, policy,
data position and every RNG), and writes config.json, metrics.jsonl and results.json.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from metaaugment.data.batches import BatchStream, evaluation_batches, steps_per_epoch, training_batches
from metaaugment.data.splits import ClassificationData
from metaaugment.errors import UserError
from metaaugment.files import save_torch
from metaaugment.learners import create_learner
from metaaugment.policy import StepContext
from metaaugment.registry import create_model, create_policy
from metaaugment.run.devices import resolve_device
from metaaugment.run.environment import describe_environment
from metaaugment.run.folder import RunDirectory
from metaaugment.run.progress import format_metrics, training_progress
from metaaugment.run.seeding import capture_rng_state, restore_rng_state, seed_everything

EVAL_BATCH_SIZE = 512
DEFAULT_VAL_TASKS = 100
DEFAULT_TEST_TASKS = 600  # the usual few-shot protocol: mean and 95% CI over 600 test tasks
EPISODIC_FIELDS = ("ways", "shots", "query_shots", "steps_per_epoch", "val_tasks", "test_tasks")


@dataclass
class RunConfig:
    """Everything that defines a run. None fields take the benchmark's defaults (`resolve`)."""

    benchmark: str = "digits"
    policy: str = "none"
    policy_options: dict[str, Any] = field(default_factory=dict)
    learner: str | None = None
    learner_options: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    model_options: dict[str, Any] = field(default_factory=dict)
    epochs: int | None = None
    batch_size: int | None = None
    seed: int = 0
    device: str = "auto"
    data_root: str = "data"
    eval_every: int = 1
    checkpoint_every: int = 100
    log_every: int = 10
    # Episodic (few-shot) benchmarks only: N-way K-shot with Q query samples per class,
    # meta-steps per epoch, and the number of tasks for validation and the final test.
    ways: int | None = None
    shots: int | None = None
    query_shots: int | None = None
    steps_per_epoch: int | None = None
    val_tasks: int | None = None
    test_tasks: int | None = None
    image_size: int | None = None  # benchmarks that resize images (image-folder)
    val_size: int | None = None  # benchmarks that hold validation images out of train (CIFAR)

    def validate(self) -> None:
        """Raise UserError for values no run can use."""
        for name in ("epochs", "batch_size", "eval_every", "checkpoint_every", "log_every", "ways", "shots",
                     "query_shots", "steps_per_epoch", "val_tasks", "test_tasks", "image_size", "val_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise UserError(f"--{name.replace('_', '-')} must be a positive integer (got {value})")
        if self.seed < 0:
            raise UserError(f"--seed must be a non-negative integer (got {self.seed})")

    def resolve(self) -> "RunConfig":
        """A copy with the benchmark's defaults filled in (benchmark name checked here)."""
        from metaaugment.tasks import create_benchmark

        self.validate()
        bench = create_benchmark(self.benchmark)
        episodic: dict[str, Any] = {}
        if bench.episodic:
            episodic = dict(ways=self.ways or bench.default_ways, shots=self.shots or bench.default_shots,
                            query_shots=self.query_shots or bench.default_query_shots,
                            steps_per_epoch=self.steps_per_epoch or bench.default_steps_per_epoch,
                            val_tasks=self.val_tasks or DEFAULT_VAL_TASKS, test_tasks=self.test_tasks or DEFAULT_TEST_TASKS)
        else:
            given = [n for n in EPISODIC_FIELDS if getattr(self, n) is not None]
            if given:
                raise UserError(f"--{given[0].replace('_', '-')} applies to few-shot benchmarks; "
                                f"'{self.benchmark}' trains on mini-batches")
        if self.image_size is not None and not bench.accepts_image_size:
            raise UserError(f"--image-size applies to benchmarks that resize images (image-folder), not '{self.benchmark}'")
        if self.val_size is not None and not bench.accepts_val_size:
            raise UserError(f"--val-size applies to benchmarks that split validation off train (cifar10, cifar100), "
                            f"not '{self.benchmark}'")
        same_defaults = self.learner in (None, bench.default_learner)
        same_model = self.model in (None, bench.default_model)
        return dataclasses.replace(
            self,
            learner=self.learner or bench.default_learner,
            # a benchmark's learner defaults (e.g. MAML's inner lr) only suit its default learner
            learner_options={**(bench.default_learner_options if same_defaults else {}), **self.learner_options},
            model=self.model or bench.default_model,
            model_options={**(bench.default_model_options if same_model else {}), **self.model_options},
            epochs=self.epochs or bench.default_epochs,
            batch_size=self.batch_size or bench.default_batch_size,
            **episodic,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (what config.json holds)."""
        return dataclasses.asdict(self)


@dataclass
class TrainingState:
    """Where training is; saved in the checkpoint."""

    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    epoch_sums: dict[str, float] = field(default_factory=dict)
    best_val_accuracy: float | None = None
    last_val: dict[str, float] = field(default_factory=dict)


class Trainer:
    """Builds the parts of a run from a resolved RunConfig and trains them."""

    def __init__(self, config: RunConfig, run_dir: RunDirectory, *, console: Console | None = None,
                 show_progress: bool = True):
        from metaaugment.tasks import create_benchmark

        self.config, self.run_dir = config, run_dir
        self.console = console or Console(stderr=True)
        self.show_progress = show_progress
        self.device = resolve_device(config.device)
        seed_everything(config.seed)
        load_options = {"val_size": config.val_size} if config.val_size else {}
        self.data: ClassificationData = create_benchmark(config.benchmark).load(Path(config.data_root), **load_options)
        spec = self.data.spec
        self.model = create_model(config.model, spec, **config.model_options).to(self.device)
        self.policy = create_policy(config.policy, **config.policy_options)
        self.policy.setup(spec)
        self.policy.to(self.device)
        self.learner = create_learner(config.learner, **config.learner_options)
        if self.learner.level != "batch":
            raise UserError(f"learner '{config.learner}' trains on few-shot tasks; benchmark "
                            f"'{config.benchmark}' provides mini-batches")
        if self.policy.level == "task":
            raise UserError(f"policy '{config.policy}' augments few-shot tasks; benchmark "
                            f"'{config.benchmark}' trains on mini-batches")
        self.steps_per_epoch = steps_per_epoch(len(self.data.train), config.batch_size)
        self.total_steps = self.steps_per_epoch * config.epochs
        self.learner.setup(self.model, spec, self.total_steps)
        self.val_stream = BatchStream(self.data.val, config.batch_size, config.seed, self.device)
        self.subset_generator = torch.Generator().manual_seed(config.seed + 104_729)
        self.state = TrainingState()
        self.ctx = StepContext(model=self.model, spec=spec, steps_per_epoch=self.steps_per_epoch, epochs=config.epochs,
                               optimizer=self.learner.optimizer, validation_batch=self.val_stream.next,
                               evaluate=self.evaluate_validation_subset)

    # -- services offered to policies ------------------------------------------------------
    def evaluate_validation_subset(self, fraction: float = 1.0) -> dict[str, float]:
        """Loss and accuracy on a random `fraction` of the validation split (model mode kept)."""
        count = max(1, math.ceil(fraction * len(self.data.val)))
        indices = torch.randperm(len(self.data.val), generator=self.subset_generator)[:count]
        was_training = self.model.training
        metrics = self.learner.evaluate(self.model, evaluation_batches(self.data.val, EVAL_BATCH_SIZE, self.device, indices))
        self.model.train(was_training)
        return metrics

    # -- checkpoints -----------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        """Atomically write everything needed to continue exactly from here."""
        save_torch(self.run_dir.checkpoint_path, {
            "training": dataclasses.asdict(self.state),
            "model": self.model.state_dict(),
            "learner": self.learner.state_dict(),
            "policy": self.policy.state_dict(),
            "val_stream": self.val_stream.state_dict(),
            "subset_generator": self.subset_generator.get_state(),
            "rng": capture_rng_state(),
        })

    def load_checkpoint(self) -> bool:
        """Restore from the run folder's checkpoint; False when there is none."""
        path = self.run_dir.checkpoint_path
        if not path.is_file():
            return False
        # Load on the CPU: load_state_dict copies tensors onto the model's and policy's device,
        # the optimizer casts its state to its parameters' device, and RNG states must be CPU
        # byte tensors (CUDA generator states included).
        state = torch.load(path, map_location="cpu", weights_only=False)
        self.state = TrainingState(**state["training"])
        self.model.load_state_dict(state["model"])
        self.learner.load_state_dict(state["learner"])
        self.policy.load_state_dict(state["policy"])
        self.val_stream.load_state_dict(state["val_stream"])
        self.subset_generator.set_state(state["subset_generator"])
        restore_rng_state(state["rng"])
        self.run_dir.truncate_metrics(self.state.step)
        return True

    # -- the loop --------------------------------------------------------------------------
    def _log(self, record: dict[str, Any]) -> None:
        self.run_dir.append_metrics(record)

    def _train_epoch(self, progress_bar: Any, task: Any) -> None:
        cfg, p = self.config, self.state
        batches = training_batches(self.data.train, cfg.batch_size, cfg.seed, p.epoch,
                                   start=p.step_in_epoch, device=self.device)
        for batch in batches:
            self.ctx.step, self.ctx.epoch, self.ctx.step_in_epoch = p.step, p.epoch, p.step_in_epoch
            metrics = self.learner.train_step(self.model, batch, self.policy, self.ctx)
            p.step += 1
            p.step_in_epoch += 1
            for key, value in metrics.items():
                p.epoch_sums[key] = p.epoch_sums.get(key, 0.0) + float(value)
            if p.step % cfg.log_every == 0:
                self._log({"kind": "step", "step": p.step, "epoch": p.epoch + 1, **metrics})
            progress_bar.update(task, completed=p.step,
                                metrics=format_metrics({**metrics, **{f"val_{k}": v for k, v in p.last_val.items()}}))
            if p.step % cfg.checkpoint_every == 0 and p.step_in_epoch < self.steps_per_epoch:
                self.save_checkpoint()

    def _finish_epoch(self) -> None:
        cfg, p = self.config, self.state
        record: dict[str, Any] = {"kind": "epoch", "step": p.step, "epoch": p.epoch + 1}
        record.update({f"train_{k}": v / max(p.step_in_epoch, 1) for k, v in p.epoch_sums.items()})
        record.update({f"policy_{k}": v for k, v in self.policy.on_epoch_end(self.ctx).items()})
        if (p.epoch + 1) % cfg.eval_every == 0 or p.epoch + 1 == cfg.epochs:
            p.last_val = self.learner.evaluate(
                self.model, evaluation_batches(self.data.val, EVAL_BATCH_SIZE, self.device))
            record.update({f"val_{k}": v for k, v in p.last_val.items()})
            if p.best_val_accuracy is None or p.last_val["accuracy"] > p.best_val_accuracy:
                p.best_val_accuracy = p.last_val["accuracy"]
        self._log(record)
        p.epoch, p.step_in_epoch, p.epoch_sums = p.epoch + 1, 0, {}
        self.save_checkpoint()

    def run(self) -> dict[str, Any]:
        """Train to the end (continuing from a checkpoint if the folder has one) and return
        the results that are also written to results.json."""
        cfg = self.config
        resumed_at = self.state.step if self.load_checkpoint() else None
        started = time.perf_counter()
        description = f"{cfg.benchmark} · {cfg.policy} · seed {cfg.seed}"
        with training_progress(self.console, disable=not self.show_progress) as bar:
            task = bar.add_task(description, total=self.total_steps, completed=self.state.step, metrics="")
            while self.state.epoch < cfg.epochs:
                self._train_epoch(bar, task)
                self._finish_epoch()
        test = self.learner.evaluate(self.model, evaluation_batches(self.data.test, EVAL_BATCH_SIZE, self.device))
        p = self.state
        results = {
            "kind": "classification",
            "metrics": {
                "test_accuracy": test["accuracy"],
                "test_loss": test["loss"],
                "best_val_accuracy": p.best_val_accuracy,
                "final_val_accuracy": p.last_val.get("accuracy"),
                "final_val_loss": p.last_val.get("loss"),
                "epochs": cfg.epochs,
                "steps": p.step,
            },
            "wall_time_s": time.perf_counter() - started,
            "resumed_at_step": resumed_at,
            "config": cfg.to_dict(),
            "policy": self.policy.describe(),
            "learner": self.learner.describe(),
            "environment": describe_environment(self.device),
        }
        results["artifacts"] = [p.name for p in self.policy.write_artifacts(self.run_dir.path)]
        self.save_checkpoint()
        self.run_dir.write_results(results)
        return results


def train(config: RunConfig, out: Path | str, *, resume: bool = False, overwrite: bool = False,
          console: Console | None = None, show_progress: bool = True) -> dict[str, Any]:
    """Run `config` into the folder `out` and return its results.

    A finished folder with `resume=True` returns its stored results without training; an
    unfinished one continues from its checkpoint. See RunDirectory.check for the rules.
    """
    from metaaugment.tasks import create_benchmark

    config = config.resolve()
    run_dir = RunDirectory(Path(out))
    reuse = run_dir.check(config.to_dict(), resume=resume, overwrite=overwrite)
    if reuse and run_dir.finished:
        return run_dir.read_results()
    trainer: Any
    if create_benchmark(config.benchmark).episodic:
        from metaaugment.run.episodic_trainer import EpisodicTrainer

        trainer = EpisodicTrainer(config, run_dir, console=console, show_progress=show_progress)
    else:
        trainer = Trainer(config, run_dir, console=console, show_progress=show_progress)  # may raise UserError
    run_dir.prepare(config.to_dict(), overwrite=overwrite)
    return trainer.run()
