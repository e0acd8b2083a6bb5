"""The run loop: trains any registered model with any learner and policy on any benchmark.

One loop for every benchmark kind. It validates every `eval_every` epochs, keeps the best
validation score (and, where the kind tests it, the best model), tests at the end,
checkpoints atomically every N steps and at every epoch end, resumes bit-for-bit from a
checkpoint (model, learner, policy, data position and every RNG), and writes config.json,
metrics.jsonl and results.json. What differs between mini-batch and episodic runs is a
strategy (`strategies.py`); which metric is reported and whether higher is better comes
from the kinds table (`metaaugment.spec.KINDS`).
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from metaaugment.infra.downloads import offline_options
from metaaugment.infra.errors import UserError
from metaaugment.infra.machine import machine_memory_bytes
from metaaugment.infra.schema import clip
from metaaugment.parallel.comm import Communicator
from metaaugment.parallel.process_group import communicator, launched_by_torchrun
from metaaugment.parallel.sync_batchnorm import synchronize_batchnorm
from metaaugment.policy import BatchPolicy, StepContext, TaskPolicy
from metaaugment.registry import (
    BENCHMARKS,
    LEARNERS,
    POLICIES,
    create_benchmark,
    create_learner,
    create_model,
    create_policy,
)
from metaaugment.run import sinks
from metaaugment.run.checkpoint import load_checkpoint, read_finished_run, save_checkpoint
from metaaugment.run.config import RunConfig
from metaaugment.run.curves import CURVES_FILE, plot_curves
from metaaugment.run.device_fit import cpu_fit_warning, estimate_training
from metaaugment.run.devices import resolve_device
from metaaugment.run.environment import describe_environment
from metaaugment.run.folder import RunDirectory
from metaaugment.run.progress import format_metrics, training_progress
from metaaugment.run.seeding import capture_rng_state, restore_rng_state, seed_everything
from metaaugment.run.strategies import KindStrategy, strategy_for
from metaaugment.spec import BenchmarkKind, benchmark_kind
from metaaugment.steptools.precision import grad_scaler, precision_note


def run_kind(config: RunConfig) -> BenchmarkKind:
    """The kind of the run's benchmark (the row of metaaugment.spec.KINDS)."""
    return benchmark_kind(create_benchmark(config.benchmark).kind)


def policy_and_learner(config: RunConfig, kind: BenchmarkKind | None = None) -> tuple[Any, Any]:
    """The run's policy and learner built from a resolved config, checked to apply to its
    benchmark's kind (a UserError otherwise); reads no data, so `compare` checks every run
    this way before it trains any."""
    kind = kind or run_kind(config)
    policy = create_policy(config.policy, **config.policy_options)
    policy_type = TaskPolicy if kind.episodic else BatchPolicy
    if not isinstance(policy, policy_type) or kind.name not in policy.benchmark_kinds:
        raise UserError(f"policy '{config.policy}' does not apply to {kind.name} benchmark "
                        f"'{config.benchmark}' (it applies to: {', '.join(policy.benchmark_kinds) or 'none'})")
    learner = create_learner(config.learner, **config.learner_options)
    if kind.name not in learner.benchmark_kinds:
        takers = [name for name in LEARNERS.names() if kind.name in getattr(LEARNERS.get(name).factory,
                                                                          "benchmark_kinds", ())]
        needed = "a meta-learner" if kind.episodic else "a mini-batch learner"
        raise UserError(f"learner '{config.learner}' does not train {kind.name} benchmark "
                        f"'{config.benchmark}': it needs {needed} ({', '.join(takers)})")
    if config.policy_from is not None and not policy.transferable:
        takers = [name for name in POLICIES.names() if getattr(POLICIES.get(name).factory, "transferable", False)]
        raise UserError(f"--policy-from applies to policies that can be transferred ({', '.join(takers)}), "
                        f"not '{config.policy}'")
    return policy, learner


def check_global_batch(config: RunConfig, processes: int, kind: BenchmarkKind | None = None) -> None:
    """A UserError unless a mini-batch run's global batch divides by the number of processes
    (each trains on an equal share) and a few-shot meta-batch gives each process a task."""
    episodic = (kind or run_kind(config)).episodic
    if processes > 1 and not episodic and config.batch_size % processes:
        raise UserError(f"--batch-size {config.batch_size} is the global batch: it must divide by the "
                        f"{processes} processes (each trains on an equal share)")
    if processes > 1 and episodic and config.batch_size < processes:
        raise UserError(f"--batch-size {config.batch_size} tasks per meta-batch leaves some of the {processes} "
                        f"processes without a task; use at least {processes}")


class TrainingDiverged(UserError):
    """The loss or the weights stopped being finite; the last good checkpoint is kept."""


@dataclass
class TrainingState:
    """Where training is; saved in the checkpoint.

    epoch_sums: per-step metrics summed over the current epoch; last_train: their epoch means;
    best_val / best_step: the best validation score of the kind's metric so far and its step;
    last_val: the latest validation scores.
    """

    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    epoch_sums: dict[str, float] = field(default_factory=dict)
    best_val: float | None = None
    best_step: int | None = None
    last_val: dict[str, float] = field(default_factory=dict)
    last_train: dict[str, float] = field(default_factory=dict)
    artifacts: list[str] | None = None  # the policy's figures, once written after the last epoch


class Trainer:
    """Builds the parts of a run from a resolved RunConfig and trains them."""

    def __init__(self, config: RunConfig, run_dir: RunDirectory, *, console: Console | None = None,
                 show_progress: bool = True, trust_code: bool = False, comm: Communicator | None = None,
                 weights_from_file: bool = False):
        self.config, self.run_dir = config, run_dir
        self.trust_code = trust_code  # --policy-from: import a model its folder names by module:Name
        self.console = console or Console(stderr=True)
        self.show_progress = show_progress
        bench = create_benchmark(config.benchmark)
        self.kind = benchmark_kind(bench.kind)
        strategy_class = strategy_for(self.kind)
        self.device = resolve_device(config.device)
        # the run's ranks: the torchrun group under torchrun (joined here), else one process;
        # policies and learners see it as ctx.comm, and know no ranks otherwise
        self.comm = comm or communicator(self.device)
        if self.device.type == "cuda" and self.device.index is not None:
            torch.cuda.set_device(self.device)
        self.writes = self.comm.is_main  # rank 0 alone writes the run folder
        sinks.check_available(config.tensorboard and self.writes, config.wandb and self.writes)
        self.sinks: sinks.Sinks | None = None
        self.show_progress = show_progress and self.writes
        check_global_batch(config, self.comm.world_size, self.kind)
        seed_everything(config.seed)  # the same seed on every rank: same initialization and draws
        load_options = {name: getattr(config, name) for name in ("image_size", "val_size") if getattr(config, name)}
        if bench.options is not None:  # the benchmark's own options (streamed: crop and flip)
            load_options["options"] = BENCHMARKS.create_options(config.benchmark, bench.options,
                                                                      config.benchmark_options)
        data = bench.load(Path(config.data_root), **load_options)
        strategy_class.check_data(data, config.benchmark)
        self.spec = spec = strategy_class.model_spec(data, config)
        # weights a checkpoint will give (resume, eval, export) are never downloaded first
        model_options = offline_options(config.model_options) if weights_from_file else config.model_options
        self.model = create_model(config.model, spec, **model_options).to(self.device)
        if not self.kind.episodic:  # a task's forward stays on one rank: its BatchNorm is already the one process's
            self.model = synchronize_batchnorm(self.model, self.device, self.comm)
        self.comm.broadcast_module(self.model)
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if config.compile:
            compile_model(self.model)
        self.grad_scaler = grad_scaler(self.device, config.precision)
        note = precision_note(self.device, config.precision)
        if note and self.writes and self.show_progress:
            self.console.print(note, markup=False, highlight=False)
        self.policy, self.learner = policy_and_learner(config, self.kind)
        self.strategy: KindStrategy = strategy_class(config, self.kind, data, self.model, self.learner, self.policy,
                                                     self.device, self.comm)
        self.total_steps = self.strategy.steps_per_epoch * config.epochs
        if self.writes and self.device.type == "cpu" and not self.kind.episodic and not config.compile:
            self._warn_if_sized_for_a_gpu(bench)
        self.learner.setup(self.model, spec, self.total_steps)
        self.ctx = StepContext(model=self.model, spec=spec, steps_per_epoch=self.strategy.steps_per_epoch,
                               epochs=config.epochs, batch_size=config.batch_size, optimizer=self.learner.optimizer,
                               precision=config.precision, grad_scaler=self.grad_scaler, comm=self.comm,
                               **self.strategy.context_services())
        self.policy.setup(self.ctx)
        self.policy.to(self.device)
        if not self.kind.episodic:
            synchronize_batchnorm(self.policy, self.device, self.comm)
        self.transfer_source: dict[str, Any] | None = None  # the network a transferred policy reads
        if config.policy_from is not None:
            self._transfer_policy(Path(config.policy_from))
        self.strategy.prepare()
        self.state = TrainingState()
        self.best_model: dict[str, Any] | None = None

    def _warn_if_sized_for_a_gpu(self, bench: Any) -> None:
        """One line before the first step when the settings would fill a CPU machine's memory
        or take hours (`device_fit`)."""
        from metaaugment.data.streaming import Preprocessing

        cfg = self.config
        estimate = estimate_training(self.model, self.spec.input_shape, cfg.batch_size, self.total_steps, self.device)
        takes_crop = isinstance(bench.options, type) and issubclass(bench.options, Preprocessing)
        warning = cpu_fit_warning(estimate, model=cfg.model, image_size=self.spec.input_shape[-1],
                                  batch_size=cfg.batch_size, epochs=cfg.epochs,
                                  takes_image_size=bench.accepts_image_size, takes_crop=takes_crop,
                                  machine_bytes=machine_memory_bytes())
        if warning:
            self.console.print(warning, markup=False, highlight=False, soft_wrap=True)

    def _transfer_policy(self, source: Path) -> None:
        """--policy-from: give the policy the trained state of a finished run of the same policy,
        with that run's task network (loaded, on this run's spec) as its feature source."""
        config, checkpoint = read_finished_run(source, trust_code=self.trust_code, imported=("model",))
        if config.get("policy") != self.config.policy:
            raise UserError(f"--policy-from {source}: that run used policy '{config.get('policy')}', "
                            f"not '{self.config.policy}'")
        misfit = (f"--policy-from {source}: its task network ({config.get('model')} on {config.get('benchmark')}) "
                  f"does not fit benchmark '{self.config.benchmark}'")
        try:
            model = create_model(config["model"], self.spec, **offline_options(config.get("model_options", {})))
            model.load_state_dict(checkpoint["model"])
        except (UserError, RuntimeError, KeyError) as error:
            raise UserError(f"{misfit} ({' '.join(str(error).split())[:200]})") from None
        self.policy.load_transferred(checkpoint["policy"], model)
        # what an export needs to rebuild the frozen network beside this run's own
        self.transfer_source = {"model": config["model"], "model_options": dict(config.get("model_options", {}))}

    # -- checkpoints -----------------------------------------------------------------------
    def _save_state(self) -> None:
        """Atomically write everything needed to continue exactly from here; never from
        non-finite weights (the last good checkpoint is kept and the run stops)."""
        if not all_finite(self.model):
            raise TrainingDiverged(f"training diverged by step {self.state.step}: the task network's weights are no "
                                   f"longer finite; {self._kept()}")
        if not self.writes:
            return
        save_checkpoint(self.run_dir.checkpoint_path, {
            "training": dataclasses.asdict(self.state),
            "model": self.model.state_dict(),
            "best_model": self.best_model,
            "learner": self.learner.state_dict(),
            "policy": self.policy.state_dict(),
            "data": self.strategy.state_dict(),
            "rng": capture_rng_state(),
            "grad_scaler": self.grad_scaler.state_dict() if self.grad_scaler is not None else None,
            "transfer_source": self.transfer_source,
        })

    def _restore_state(self) -> bool:
        """Restore from the run folder's checkpoint; False when there is none."""
        path = self.run_dir.checkpoint_path
        if not path.is_file():
            if self.writes:
                self.run_dir.truncate_metrics(0)  # records of a start killed before its first checkpoint
            return False
        state = load_checkpoint(path)
        try:
            self.state = TrainingState(**state["training"])
            self.model.load_state_dict(state["model"])
            self.best_model = state["best_model"]
            self.learner.load_state_dict(state["learner"])
            self.policy.load_state_dict(state["policy"])
            self.strategy.load_state_dict(state["data"])
            restore_rng_state(state["rng"])
            if self.grad_scaler is not None and state.get("grad_scaler"):
                self.grad_scaler.load_state_dict(state["grad_scaler"])
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as error:
            # a checkpoint of the right format whose contents do not fit this run: damaged or crafted
            raise UserError(f"{path} cannot be restored into this run ({type(error).__name__}: "
                            f"{clip(str(error), 160)}); it is damaged, or not this run's: rerun "
                            f"with --overwrite") from None
        if self.writes:
            self.run_dir.truncate_metrics(self.state.step)
        return True

    # -- the loop --------------------------------------------------------------------------
    def _progress_metrics(self, metrics: dict[str, float]) -> str:
        shown = dict(metrics)
        if self.kind.metric in self.state.last_val:
            shown[self.kind.validation_curve] = self.state.last_val[self.kind.metric]
        return format_metrics(shown)

    def _step(self, inputs: Any) -> dict[str, float]:
        """One training step on a batch or meta-batch; returns its metrics."""
        p = self.state
        self.ctx.step, self.ctx.epoch, self.ctx.step_in_epoch = p.step, p.epoch, p.step_in_epoch
        return self.learner.train_step(self.model, inputs, self.policy, self.ctx)

    def _train_epoch(self, bar: Any, task: Any) -> None:
        cfg, p = self.config, self.state
        for inputs in self.strategy.epoch_inputs(p.epoch, p.step_in_epoch):
            metrics = self._step(inputs)
            objective = metrics.get("loss", metrics.get("mse"))
            if objective is not None and not math.isfinite(objective):
                raise TrainingDiverged(f"training diverged at step {p.step + 1}: the loss is {objective}; "
                                       f"{self._kept()}")
            p.step += 1
            p.step_in_epoch += 1
            for key, value in metrics.items():
                p.epoch_sums[key] = p.epoch_sums.get(key, 0.0) + float(value)
            if p.step % cfg.log_every == 0 and self.writes:
                self._log({"kind": "step", "step": p.step, "epoch": p.epoch + 1, **metrics})
            bar.update(task, completed=p.step, metrics=self._progress_metrics(metrics))
            if p.step % cfg.checkpoint_every == 0 and p.step_in_epoch < self.strategy.steps_per_epoch:
                self._save_state()

    def _finish_epoch(self) -> None:
        cfg, p = self.config, self.state
        p.last_train = {k: v / max(p.step_in_epoch, 1) for k, v in p.epoch_sums.items()}
        record: dict[str, Any] = {"kind": "epoch", "step": p.step, "epoch": p.epoch + 1}
        record.update({f"train_{k}": v for k, v in p.last_train.items()})
        record.update({f"policy_{k}": v for k, v in self.policy.on_epoch_end(self.ctx).items()})
        if (p.epoch + 1) % cfg.eval_every == 0 or p.epoch + 1 == cfg.epochs:
            p.last_val = {k: float(v) for k, v in self.strategy.evaluate("val").items()}
            record.update({f"val_{k}": v for k, v in p.last_val.items()})
            if self.kind.better(p.last_val[self.kind.metric], p.best_val):
                p.best_val, p.best_step = p.last_val[self.kind.metric], p.step
                if self.strategy.tests_best_model:
                    self.best_model = copy.deepcopy(self.model.state_dict())
        if self.writes:
            self._log(record)
        p.epoch, p.step_in_epoch, p.epoch_sums = p.epoch + 1, 0, {}
        self._save_state()

    def _log(self, record: dict[str, Any]) -> None:
        """Append a record to metrics.jsonl and hand it to the other sinks (rank 0)."""
        self.run_dir.append_metrics(record)
        if self.sinks is not None:
            self.sinks.record(record)

    def run(self) -> dict[str, Any]:
        """Train to the end (continuing from a checkpoint if the folder has one), test, and
        return the results also written to results.json."""
        cfg = self.config
        resumed_at = self.state.step if self._restore_state() else None
        if self.writes:
            self.sinks = sinks.Sinks(self.run_dir, cfg.to_dict(), self.state.step, tensorboard=cfg.tensorboard,
                                     wandb=cfg.wandb)
        try:
            return self._train_and_test(resumed_at)
        finally:
            if self.sinks is not None:
                self.sinks.close()

    def _train_and_test(self, resumed_at: int | None) -> dict[str, Any]:
        cfg = self.config
        started = time.perf_counter()
        description = f"{cfg.benchmark} · {cfg.policy} · {cfg.learner} · seed {cfg.seed}"
        with training_progress(self.console, disable=not self.show_progress, every=cfg.log_every) as bar:
            task = bar.add_task(description, total=self.total_steps, completed=self.state.step, metrics="")
            while self.state.epoch < cfg.epochs:
                self._train_epoch(bar, task)
                self._finish_epoch()
                bar.update(task, metrics=self._progress_metrics(self.state.last_train), epoch=self.state.epoch)
            if self.state.artifacts is None:  # figures first: a crash during the test keeps them
                names = [p.name for p in self.policy.write_artifacts(self.run_dir.path)] if self.writes else []
                if self.writes:  # and the run's own learning curves
                    plot_curves(self.run_dir.read_metrics(), self.kind, self.run_dir.path / CURVES_FILE, description)
                    names.append(CURVES_FILE)
                self.state.artifacts = self.comm.broadcast_object(names)
                if self.writes:
                    self.run_dir.record(*self.state.artifacts)
                self._save_state()
            if self.sinks is not None:
                self.sinks.figures(self.state.artifacts, self.state.step)
            test_task = bar.add_task(self.strategy.test_label, total=self.strategy.evaluation_size("test"), metrics="")
            tested = self.best_model if self.strategy.tests_best_model else None
            test = self.strategy.evaluate("test", tested, on_item=lambda: bar.advance(test_task))
        results = {"kind": self.kind.name, "metrics": self.strategy.result_metrics(test, self.state),
                   "wall_time_s": time.perf_counter() - started, "resumed_at_step": resumed_at,
                   "config": cfg.to_dict(), "policy": self.policy.describe(), "learner": self.learner.describe(),
                   "environment": describe_environment(self.device)}
        results["artifacts"] = self.state.artifacts
        results["environment"]["processes"] = self.comm.world_size
        if self.writes:
            self.run_dir.write_results(results)
        if self.sinks is not None:
            self.sinks.test_metrics(results["metrics"], self.state.step)
        return results

    def _kept(self) -> str:
        if self.run_dir.checkpoint_path.is_file():
            return (f"the last good checkpoint ({self.run_dir.checkpoint_path}) is kept; "
                    f"lower --lr, or rerun with --overwrite")
        return "no checkpoint was written yet; lower --lr and rerun with --overwrite"


def all_finite(model: torch.nn.Module) -> bool:
    """Whether every parameter and buffer of `model` is finite (one device sync)."""
    tensors = [t for t in list(model.parameters()) + list(model.buffers()) if t.is_floating_point()]
    if not tensors:
        return True
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


def compile_model(model: torch.nn.Module) -> None:
    """torch.compile the model in place, keeping its parameter names (checkpoints load either
    way): a model with a `body` (every registered classifier) compiles its body, which the
    learners call through forward_features; other models compile their forward."""
    body = getattr(model, "body", None)
    (body if isinstance(body, torch.nn.Module) else model).compile()


def train(config: RunConfig, out: Path | str, *, resume: bool = False, overwrite: bool = False,
          console: Console | None = None, show_progress: bool = True, trust_code: bool = False,
          comm: Communicator | None = None) -> dict[str, Any]:
    """Run `config` into the folder `out` and return its results.

    A finished folder with `resume=True` returns its stored results without training; an
    unfinished one continues from its checkpoint. See RunDirectory.check for the rules.
    On many ranks (under torchrun, or `comm` given, e.g. parallel.lockstep's ranks) every
    rank calls this; rank 0 checks, locks and prepares the folder.
    `trust_code`: a `--policy-from` folder may name its task network by module:Name
    (metaaugment.infra.trust); the config's own names are the caller's, trusted.
    """
    config = config.resolve()
    run_dir = RunDirectory(Path(out))
    if launched_by_torchrun() or (comm is not None and comm.distributed):
        return _train_ranks(config, run_dir, resume=resume, overwrite=overwrite, console=console,
                            show_progress=show_progress, trust_code=trust_code, comm=comm)
    reuse = run_dir.check(config.to_dict(), resume=resume, overwrite=overwrite)
    if reuse and run_dir.finished:
        return run_dir.read_results()
    trainer = Trainer(config, run_dir, console=console, show_progress=show_progress,
                      trust_code=trust_code, weights_from_file=bool(reuse))  # may raise UserError
    with run_dir.locked():
        # again under the lock: another process may have started or finished a run here meanwhile
        reuse = run_dir.check(config.to_dict(), resume=resume, overwrite=overwrite)
        if reuse and run_dir.finished:
            return run_dir.read_results()
        run_dir.prepare(config.to_dict(), overwrite=overwrite)
        return trainer.run()


def _train_ranks(config: RunConfig, run_dir: RunDirectory, *, resume: bool, overwrite: bool,
                 console: Console | None, show_progress: bool, trust_code: bool,
                 comm: Communicator | None) -> dict[str, Any]:
    """`train` on every rank of a multi-rank run: rank 0 locks and prepares the folder and tells
    the others the outcome (an error ends every rank with the same message)."""
    trainer = Trainer(config, run_dir, console=console, show_progress=show_progress,
                      trust_code=trust_code, comm=comm)  # the same on every rank
    with contextlib.ExitStack() as stack:
        status: tuple[str, str] = ("train", "")
        if trainer.comm.is_main:
            try:
                stack.enter_context(run_dir.locked())
                reuse = run_dir.check(config.to_dict(), resume=resume, overwrite=overwrite)
                if reuse and run_dir.finished:
                    status = ("finished", "")
                else:
                    run_dir.prepare(config.to_dict(), overwrite=overwrite)
            except UserError as error:
                status = ("error", str(error))
        status = trainer.comm.broadcast_object(status)
        if status[0] == "error":
            raise UserError(status[1])
        if status[0] == "finished":
            return trainer.comm.broadcast_object(run_dir.read_results() if trainer.comm.is_main else None)
        return trainer.run()
