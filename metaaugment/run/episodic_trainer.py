"""The run loop of few-shot benchmarks: meta-train on episodes, select by validation, test.

The protocol follows Rajendran et al. (2020, Appendix E), itself the MAML codebase's: train
for a number of meta-steps, validate every so often on held-out classes (or tasks), keep
the model with the best validation score, and report its mean meta-test score with a 95%
confidence interval over `test_tasks` tasks (600 by default). Validation and test tasks are
the same for every run and every policy (drawn from fixed seeds), and they are built by the
standard protocol without augmentation: policies only change how meta-training tasks look.

Like `Trainer`, it checkpoints atomically (every N steps and at each epoch end) and resumes
exactly: model, learner, policy, the best model so far, every RNG.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from rich.console import Console

from metaaugment.batch import Episode
from metaaugment.data.episodes import EpisodeSampler, FewShotData, isolated_random
from metaaugment.data.regression import RegressionTasks
from metaaugment.errors import UserError
from metaaugment.files import save_torch
from metaaugment.learners import create_learner
from metaaugment.learners.episodic import metric_name
from metaaugment.policy import StepContext
from metaaugment.registry import create_model, create_policy
from metaaugment.run.devices import resolve_device
from metaaugment.run.environment import describe_environment
from metaaugment.run.folder import RunDirectory
from metaaugment.run.progress import format_metrics, training_progress
from metaaugment.run.seeding import capture_rng_state, restore_rng_state, seed_everything

# Fixed seeds of the evaluation tasks: every run, seed and policy is scored on the same tasks.
VAL_TASK_SEED = 1_000_003
TEST_TASK_SEED = 2_000_029


@dataclass
class EpisodicState:
    """Where meta-training is; saved in the checkpoint."""

    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    epoch_sums: dict[str, float] = field(default_factory=dict)
    best_val: float | None = None
    best_step: int | None = None
    last_val: dict[str, float] = field(default_factory=dict)
    last_train: dict[str, float] = field(default_factory=dict)


class EpisodicTrainer:
    """Builds a few-shot run from a resolved RunConfig and meta-trains it."""

    def __init__(self, config: Any, run_dir: RunDirectory, *, console: Console | None = None,
                 show_progress: bool = True):
        from metaaugment.tasks import create_benchmark

        self.config, self.run_dir = config, run_dir
        self.console = console or Console(stderr=True)
        self.show_progress = show_progress
        bench = create_benchmark(config.benchmark)
        self.kind = bench.kind
        self.device = resolve_device(config.device)
        seed_everything(config.seed)
        self.policy = create_policy(config.policy, **config.policy_options)
        if self.policy.level == "batch" or bench.kind not in self.policy.task_kinds:
            raise UserError(f"policy '{config.policy}' does not apply to {bench.kind} benchmark "
                            f"'{config.benchmark}' (it applies to: {', '.join(self.policy.task_kinds)})")
        self.learner = create_learner(config.learner, **config.learner_options)
        if self.learner.level != "task":
            raise UserError(f"learner '{config.learner}' trains on mini-batches; few-shot benchmark "
                            f"'{config.benchmark}' needs a meta-learner (maml, metasgd, protonet)")
        load_options = {"image_size": config.image_size} if config.image_size else {}
        data = bench.load(Path(config.data_root), **load_options)
        spec = data.spec
        if isinstance(data, FewShotData):
            spec = dataclasses.replace(spec, num_classes=config.ways)
        self.spec = spec
        self.metric = metric_name(spec)
        self.higher_is_better = self.metric == "accuracy"
        self.model = create_model(config.model, spec, **config.model_options).to(self.device)
        self.policy.setup(spec)
        self.policy.to(self.device)
        self.train_tasks, self.val_tasks, self.test_tasks = self._samplers(data)
        self.total_steps = config.epochs * config.steps_per_epoch
        self.learner.setup(self.model, spec, self.total_steps)
        self.task_generator = torch.Generator().manual_seed(config.seed + 7919)
        self.state = EpisodicState()
        self.best_model: dict[str, Any] | None = None
        self.ctx = StepContext(model=self.model, spec=spec, steps_per_epoch=config.steps_per_epoch, epochs=config.epochs,
                               optimizer=self.learner.optimizer)

    def _samplers(self, data: Any) -> tuple[Any, Any, Any]:
        cfg = self.config
        if isinstance(data, RegressionTasks):
            return tuple(data.sampler(split, cfg.shots, cfg.query_shots) for split in ("train", "val", "test"))
        per_class = cfg.shots + cfg.query_shots
        train_transforms = self.policy.task_transforms(data.train.meta_dataset(), cfg.ways, per_class)
        return (EpisodeSampler(data.train, cfg.ways, cfg.shots, cfg.query_shots, train_transforms),
                EpisodeSampler(data.val, cfg.ways, cfg.shots, cfg.query_shots),
                EpisodeSampler(data.test, cfg.ways, cfg.shots, cfg.query_shots))

    # -- evaluation -----------------------------------------------------------------------
    def _episodes(self, sampler: Any, count: int, on_task: Callable[[], None] | None) -> Iterator[Episode]:
        for _ in range(count):
            yield sampler.sample(self.device)
            if on_task is not None:
                on_task()

    def evaluate(self, sampler: Any, count: int, seed: int, model_state: dict[str, Any] | None = None,
                 on_task: Callable[[], None] | None = None) -> dict[str, Any]:
        """Mean scores over `count` un-augmented tasks drawn with `seed` (the same tasks on every
        call), optionally with other weights loaded for the duration (the best model);
        `on_task` is called after each task (progress bars)."""
        saved = copy.deepcopy(self.model.state_dict()) if model_state is not None else None
        if model_state is not None:
            self.model.load_state_dict(model_state)
        try:
            with isolated_random(seed):
                return self.learner.evaluate(self.model, self._episodes(sampler, count, on_task))
        finally:
            if saved is not None:
                self.model.load_state_dict(saved)

    def _better(self, value: float) -> bool:
        best = self.state.best_val
        return best is None or (value > best if self.higher_is_better else value < best)

    # -- checkpoints ----------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        """Atomically write everything needed to continue exactly from here."""
        save_torch(self.run_dir.checkpoint_path, {
            "training": dataclasses.asdict(self.state),
            "model": self.model.state_dict(),
            "best_model": self.best_model,
            "learner": self.learner.state_dict(),
            "policy": self.policy.state_dict(),
            "task_generator": self.task_generator.get_state(),
            "rng": capture_rng_state(),
        })

    def load_checkpoint(self) -> bool:
        """Restore from the run folder's checkpoint; False when there is none."""
        path = self.run_dir.checkpoint_path
        if not path.is_file():
            return False
        state = torch.load(path, map_location="cpu", weights_only=False)  # see Trainer.load_checkpoint
        self.state = EpisodicState(**state["training"])
        self.model.load_state_dict(state["model"])
        self.best_model = state["best_model"]
        self.learner.load_state_dict(state["learner"])
        self.policy.load_state_dict(state["policy"])
        self.task_generator.set_state(state["task_generator"])
        restore_rng_state(state["rng"])
        self.run_dir.truncate_metrics(self.state.step)
        return True

    # -- the loop -------------------------------------------------------------------------
    def _meta_batch(self) -> list[Episode]:
        return [self.policy.augment_task(self.train_tasks.sample(self.device), self.task_generator)
                for _ in range(self.config.batch_size)]

    def _progress_metrics(self, metrics: dict[str, float]) -> str:
        shown = dict(metrics)
        if self.metric in self.state.last_val:
            shown[f"val_{self.metric}"] = self.state.last_val[self.metric]
        return format_metrics(shown)

    def _train_epoch(self, bar: Any, task: Any) -> None:
        cfg, p = self.config, self.state
        while p.step_in_epoch < cfg.steps_per_epoch:
            self.ctx.step, self.ctx.epoch, self.ctx.step_in_epoch = p.step, p.epoch, p.step_in_epoch
            metrics = self.learner.train_step(self.model, self._meta_batch(), self.policy, self.ctx)
            p.step += 1
            p.step_in_epoch += 1
            for key, value in metrics.items():
                p.epoch_sums[key] = p.epoch_sums.get(key, 0.0) + float(value)
            if p.step % cfg.log_every == 0:
                self.run_dir.append_metrics({"kind": "step", "step": p.step, "epoch": p.epoch + 1, **metrics})
            bar.update(task, completed=p.step, metrics=self._progress_metrics(metrics))
            if p.step % cfg.checkpoint_every == 0 and p.step_in_epoch < cfg.steps_per_epoch:
                self.save_checkpoint()

    def _finish_epoch(self) -> None:
        cfg, p = self.config, self.state
        p.last_train = {k: v / max(p.step_in_epoch, 1) for k, v in p.epoch_sums.items()}
        record: dict[str, Any] = {"kind": "epoch", "step": p.step, "epoch": p.epoch + 1}
        record.update({f"train_{k}": v for k, v in p.last_train.items()})
        if (p.epoch + 1) % cfg.eval_every == 0 or p.epoch + 1 == cfg.epochs:
            val = self.evaluate(self.val_tasks, cfg.val_tasks, VAL_TASK_SEED)
            p.last_val = {k: float(v) for k, v in val.items()}
            record.update({f"val_{k}": v for k, v in p.last_val.items()})
            if self._better(p.last_val[self.metric]):
                p.best_val, p.best_step = p.last_val[self.metric], p.step
                self.best_model = copy.deepcopy(self.model.state_dict())
        self.run_dir.append_metrics(record)
        p.epoch, p.step_in_epoch, p.epoch_sums = p.epoch + 1, 0, {}
        self.save_checkpoint()

    def run(self) -> dict[str, Any]:
        """Meta-train to the end (continuing from a checkpoint if there is one), test the
        best-validation model, and return the results also written to results.json."""
        cfg = self.config
        resumed_at = self.state.step if self.load_checkpoint() else None
        started = time.perf_counter()
        description = f"{cfg.benchmark} · {cfg.policy} · {cfg.learner} · seed {cfg.seed}"
        with training_progress(self.console, disable=not self.show_progress) as bar:
            task = bar.add_task(description, total=self.total_steps, completed=self.state.step, metrics="")
            while self.state.epoch < cfg.epochs:
                self._train_epoch(bar, task)
                self._finish_epoch()
            test_task = bar.add_task("meta-test (best-validation model)", total=cfg.test_tasks, metrics="")
            test = self.evaluate(self.test_tasks, cfg.test_tasks, TEST_TASK_SEED, self.best_model,
                                 on_task=lambda: bar.advance(test_task))
        results = {"kind": self.kind, "metrics": self._result_metrics(test), "wall_time_s": time.perf_counter() - started,
                   "resumed_at_step": resumed_at, "config": cfg.to_dict(), "policy": self.policy.describe(),
                   "learner": self.learner.describe(), "environment": describe_environment(self.device)}
        results["artifacts"] = [p.name for p in self.policy.write_artifacts(self.run_dir.path)]
        self.save_checkpoint()
        self.run_dir.write_results(results)
        return results

    def _result_metrics(self, test: dict[str, Any]) -> dict[str, Any]:
        p, m = self.state, self.metric
        metrics: dict[str, Any] = {f"test_{k}": v for k, v in test.items()}
        metrics.update({f"best_val_{m}": p.best_val, "best_step": p.best_step,
                        "epochs": self.config.epochs, "steps": p.step})
        metrics.update({f"final_train_{k}": v for k, v in p.last_train.items()})
        metrics.update({f"final_val_{k}": v for k, v in p.last_val.items()})
        return metrics
