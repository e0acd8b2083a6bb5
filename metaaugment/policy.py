"""The augmentation-policy interface, and the context objects its hooks receive.

`AugmentationPolicy` is the one abstract root. `BatchPolicy` augments mini-batches and may
weight their samples; `TaskPolicy` shapes few-shot tasks. Who calls what, for both kinds:

- the learner calls the per-step hooks: `augment`, `loss_weights`, `after_step`
  (`supervised_step`) and `augment_task` (`EpisodicLearner.train_step`);
- the run loop (or a user's own loop) calls the lifecycle hooks: `setup` once before
  training (and before a resume restores the state), `on_epoch_end` after each epoch,
  `task_transforms` when it builds the meta-training task sampler, `write_artifacts` when
  the run ends.

A training step of a batch learner::

    batch  = policy.augment(batch, ctx)                 # x -> x', y -> y' (soft), may set batch.weights:
                                                        #   params = make_params(batch, ctx) for the global
                                                        #   batch; this rank's rows of them; apply(...)
    output = forward_pass(model, batch)                 # logits, per-sample losses (with graph), features
    w      = policy.loss_weights(batch, output, ctx)    # (B,) or None
    loss   = sum(w * output.losses) / sum(w); backward; optimizer step
    policy.after_step(StepResult(...), ctx)             # feedback: rewards

A meta-training step of an episodic learner::

    keys  = one random key per task of the meta-batch, from ctx.task_generator
    tasks = policy.augment_tasks(tasks, keys, ctx)   # the whole meta-batch (this rank's tasks of it);
                                                     #   by default augment_task(episode, generator of its key)

The three families of the papers map onto these hooks:

- MetaAugment: `augment` applies sampled op pairs; `loss_weights` runs the one-step lookahead
  on `ctx.model` against `ctx.validation_batch()` (using the forward pass's per-sample losses
  and features), updates its policy network, records the outputs in the transformation
  sampler (which refreshes its distribution every s records) and returns the new weights
  (Eq. 4 order).
- RL-Mixup: `augment` computes saliency with `ctx.model` and mixes patches; `after_step`
  gives the PPO agent its reward from `ctx.evaluate(0.1)` every t_reward steps;
  `on_epoch_end` closes the episode.
- CE-increasing meta-augmentation: `task_transforms` builds tasks (nme, intrashuffle,
  intershuffle) and `augment_task` adds target noise shared by support and query.

Successors that pair tasks (MLTI) override `augment_tasks`, which sees the meta-batch.

State: a policy is an `nn.Module`, so its networks move with `.to(device)` and are saved with
`state_dict()`. Non-tensor state (sampler statistics, an optimizer's state, counters) goes
through `get_extra_state` / `set_extra_state`, which `state_dict` includes. Every learned
part is built in `setup`, so `load_state_dict` after `setup` restores a policy completely.
"""
from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import torch
from torch import Tensor, nn

from metaaugment.batch import Batch, Episode, Params, Tasks
from metaaugment.infra.errors import UserError
from metaaugment.losses import per_sample_cross_entropy
from metaaugment.parallel.comm import SINGLE_PROCESS, Communicator
from metaaugment.spec import TaskSpec
from metaaugment.steptools.scratch import RandomState


@dataclass
class ForwardOutput:
    """The training forward pass as a policy sees it in `loss_weights`.

    logits:   (B, num_classes) model outputs.
    losses:   (B,) per-sample losses, still attached to the graph of the model's parameters,
              so a lookahead policy can differentiate them without a second forward pass.
    features: (B, D) pooled features, the input of the model's final linear layer, when the
              model follows timm's convention (forward_head(forward_features(x),
              pre_logits=True)); None otherwise.
    random_state: the random generators' state before the pass (`forward_pass` records it), so
              that a policy's extra passes over the batch can draw the same dropout masks.
    """

    logits: Tensor
    losses: Tensor
    features: Tensor | None = None
    random_state: RandomState | None = None


@dataclass
class StepResult:
    """What happened in one training step, handed to `after_step` (all tensors detached).

    batch: the augmented batch trained on; output: its forward pass; weights: (B,) weights
    used, or None; loss: the scalar training loss.
    """

    batch: Batch
    output: ForwardOutput
    weights: Tensor | None
    loss: float


@dataclass
class StepContext:
    """What the training loop tells a policy, at `setup` and at every step.

    Only `model` and `spec` are required, so a user's own training loop can build one in a
    line; the optional services are filled in by the run loop and asked for with `require`.

    model: the task network (in train mode during training).
    spec: the benchmark's TaskSpec.
    step / epoch / step_in_epoch / steps_per_epoch: position in training (0-based).
    epochs: the number of epochs the run trains for (RL-Mixup scales its reward by epoch / epochs).
    batch_size: samples per training batch (tasks per meta-batch on episodic benchmarks).
    optimizer: the task network's optimizer (lookahead policies read its learning rate).
    loss_fn: per-sample loss, (logits, targets) -> (B,).
    validation_batch: (size=None) -> Batch, a fresh held-out mini-batch on the model's device
        (its first `size` rows; on many ranks, this rank's share of them, `Batch.share`).
    evaluate: (fraction) -> {"accuracy", "loss"} on a random fraction of the validation split.
    task_generator: the generator `augment_task` draws each task's key from (checkpointed).
    precision: "32", "bf16" or "16": the task network's forward runs under `autocast()`.
    grad_scaler: the float16 loss scaler (None otherwise).
    comm: the ranks of the run (metaaugment.parallel): one process by default; under torchrun
        each rank holds its rows of the global batch (`Batch.share`) and its tasks of the
        meta-batch (`Tasks`), draws every random number for the global batch, and combines
        what the others hold through `comm`'s collectives.
    """

    model: nn.Module
    spec: TaskSpec
    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    steps_per_epoch: int | None = None
    epochs: int | None = None
    batch_size: int | None = None
    optimizer: torch.optim.Optimizer | None = None
    loss_fn: Callable[[Tensor, Tensor], Tensor] = per_sample_cross_entropy
    validation_batch: Callable[..., Batch] | None = None
    evaluate: Callable[[float], dict[str, float]] | None = None
    task_generator: torch.Generator | None = None
    precision: str = "32"
    grad_scaler: Any = None
    comm: Communicator = SINGLE_PROCESS

    def autocast(self) -> Any:
        """The context of the task network's forward at this run's precision."""
        from metaaugment.steptools.precision import autocast

        return autocast(self.device, self.precision)

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters (CPU for a parameterless model)."""
        first = next(self.model.parameters(), None)
        return first.device if first is not None else torch.device("cpu")

    def require(self, name: str, policy: str = "this policy") -> Any:
        """The service `name`, or a UserError saying the training loop does not provide it."""
        value = getattr(self, name)
        if value is None:
            raise UserError(f"{policy} needs StepContext.{name}, which this training loop does not provide")
        return value


class AugmentationPolicy(nn.Module):
    """The root of every augmentation policy, learned or fixed (use `BatchPolicy` or `TaskPolicy`).

    benchmark_kinds: the benchmark kinds (keys of metaaugment.spec.KINDS) the policy applies
    to; a run on any other kind stops with one clear line before it starts.
    transferable: whether `load_transferred` can reuse what a finished run of this policy
    learned, frozen, to train another network (`--policy-from`; MetaAugment's Table 4).
    relative_cost: a training step's time against no augmentation's (measured on fonts);
    `compare` weighs its ETA by it until a run of the policy has finished.
    """

    name: ClassVar[str] = "policy"  # set by the registry to the CLI name
    benchmark_kinds: ClassVar[tuple[str, ...]] = ()
    transferable: ClassVar[bool] = False
    relative_cost: ClassVar[float] = 1.0

    def __init__(self) -> None:
        super().__init__()
        self.spec: TaskSpec | None = None

    def setup(self, ctx: StepContext) -> None:
        """Prepare for a run: build every learned part (networks sized by `ctx.spec` and
        `ctx.model`, optimizers, agents) on `ctx.device`. Called once, before training and
        before `load_state_dict` on a resume. Subclasses call `super().setup(ctx)` first."""
        if not isinstance(ctx, StepContext):
            raise TypeError(f"{type(self).__name__}.setup takes a StepContext (StepContext(model=..., spec=...)), "
                            f"not {type(ctx).__name__}")
        self.spec = ctx.spec

    def require_spec(self) -> TaskSpec:
        """The spec given to `setup`, or a clear error if setup was not called."""
        if self.spec is None:
            raise RuntimeError(f"call {type(self).__name__}.setup(ctx) before using the policy")
        return self.spec

    def on_epoch_end(self, ctx: StepContext) -> dict[str, float]:
        """Called by the run loop after the last step of each epoch; returns metrics to log."""
        return {}

    def load_transferred(self, policy_state: dict[str, Any], feature_model: nn.Module) -> None:
        """Reuse the learned state of a finished run of this policy (`policy_state`, its
        state_dict), frozen, with that run's task network (`feature_model`, loaded) where the
        policy reads features. Called after `setup`; only where `transferable` is True."""
        raise UserError(f"policy '{self.name}' cannot be transferred to another run")

    def write_artifacts(self, folder: Path) -> list[Path]:
        """Write figures of what the policy learned into the run folder at the end of a run
        (e.g. MetaAugment's sampler heatmap); returns the paths written."""
        return []

    def describe(self) -> dict[str, Any]:
        """Hyperparameters worth recording in results.json: the name and each keyword option of
        the constructor's signature, read from the attribute of the same name where the policy
        keeps one (override to record more, e.g. values resolved in `setup`)."""
        options = {name: getattr(self, name) for name, parameter in inspect.signature(type(self)).parameters.items()
                   if parameter.kind is parameter.KEYWORD_ONLY and hasattr(self, name)}
        return {"name": self.name, **options}


class BatchPolicy(AugmentationPolicy):
    """A policy on mini-batches: transforms inputs and labels, and may weight each sample's loss.

    `augment` is a template (torchvision v2's `Transform`): `make_params(batch, ctx)` draws
    every random number for the whole global batch (the same draws on every rank) into the
    policy's own `Params` dataclass; the base keeps this batch's rows of them once
    (`Params.rows`, by `params_share`); `apply(batch, params, ctx)` transforms this batch's
    rows. The returned batch carries its params (`Batch.params`) to `loss_weights` and
    `after_step`. A policy overrides `make_params` and `apply`, not `augment`.

    Contract (checked for every registered batch policy by tests/test_policy_contract.py):
    `augment` returns a new Batch of the same size with inputs of the same shape, dtype and
    range [0, 1], and targets either (B,) int64 or (B, C) rows summing to 1; it never
    modifies the caller's tensors in place. `loss_weights` returns None or (B,) non-negative
    weights. State survives `state_dict` -> `load_state_dict` into a fresh, set-up instance,
    which then steps exactly as the original would have.
    """

    benchmark_kinds: ClassVar[tuple[str, ...]] = ("classification",)

    def augment(self, batch: Batch, ctx: StepContext) -> Batch:
        """Transform a training mini-batch: inputs, targets (possibly soft) and weights. The
        template: params for the global batch, this batch's rows of them, `apply`."""
        params = self.make_params(batch, ctx)
        if params is not None:
            params = params.rows(self.params_share(batch))
        augmented = self.apply(batch, params, ctx)
        return augmented if params is None else dataclasses.replace(augmented, params=params)

    def make_params(self, batch: Batch, ctx: StepContext) -> Params | None:
        """Every random draw of the step, for all `batch.global_size` rows of the global batch
        (a `Params` dataclass of the policy's), or None when the policy draws nothing."""
        return None

    def params_share(self, batch: Batch) -> Any:
        """Which rows of the drawn params this batch's rows are: `batch.share` (None: all).
        A policy that augments each row several times draws for the copies' global batch and
        says so here."""
        return batch.share

    def apply(self, batch: Batch, params: Params | None, ctx: StepContext) -> Batch:
        """Transform this batch's rows with their `params` (this rank's rows of the draws) ->
        a new Batch of the same rows; never changes the caller's tensors."""
        return batch

    def loss_weights(self, batch: Batch, output: ForwardOutput, ctx: StepContext) -> Tensor | None:
        """(B,) per-sample loss weights after the forward pass; defaults to batch.weights."""
        return batch.weights

    def after_step(self, result: StepResult, ctx: StepContext) -> dict[str, float]:
        """Learn from the finished step (rewards, statistics); returns metrics to log."""
        return {}


class TaskPolicy(AugmentationPolicy):
    """A policy on few-shot tasks: how tasks are built, and a transform of each whole task.

    Contract (checked for every registered task policy by tests/test_policy_contract.py):
    `task_transforms` returns None or task transforms (`metaaugment.data.task_sampling`;
    learn2learn's protocol) that build tasks of `ways`
    classes with `shots` samples each; `augment_task` returns an Episode of the same shapes,
    draws its randomness from the generator only, and never modifies the caller's tensors.
    `augment_tasks` returns Tasks at the same places whose targets have the same shapes (its
    inputs may hold twice the rows, with a `HiddenMix`), draws its randomness from the keys
    only, and on many ranks together returns what one process returns for the meta-batch.
    """

    benchmark_kinds: ClassVar[tuple[str, ...]] = ("few-shot",)

    def task_transforms(self, dataset: Any, ways: int, shots: int) -> Sequence[Any] | None:
        """Task transforms building meta-training tasks of `ways` classes with `shots` samples
        per class (support plus query) from the split `dataset` (a task_sampling.ClassIndex);
        None = the standard protocol (data.task_sampling.standard_task_transforms)."""
        return None

    def augment_task(self, episode: Episode, generator: torch.Generator) -> Episode:
        """Transform one episode; draw its randomness once from `generator` so that support
        and query share the same key (e.g. one noise epsilon per task)."""
        return episode

    def augment_tasks(self, tasks: Tasks, keys: Sequence[int], ctx: StepContext) -> Tasks:
        """Transform a meta-batch of episodes together (a policy that pairs tasks overrides it).

        tasks: this rank's episodes of the meta-batch with their places (`tasks.index` among
               `tasks.total`; the whole meta-batch in one process).
        keys:  one random key per task of the whole meta-batch (`tasks.total` ints), the same on
               every rank: draw task t's randomness from keys[t] alone.
        A task held by another rank is reached through `ctx.comm`
        (metaaugment.parallel.task_exchange). Default: `augment_task` on each episode with a
        generator seeded by its key."""
        return Tasks([self.augment_task(episode, torch.Generator().manual_seed(keys[index]))
                      for index, episode in zip(tasks.index, tasks)], tasks.index, tasks.total)
