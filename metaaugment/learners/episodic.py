"""Few-shot meta-learners on episodes: MAML and Meta-SGD (inner loops through `higher`, or
learn2learn's where installed) and Prototypical Networks.

Every learner scores a task the same way: adapt on the support set, then measure loss and
accuracy (or MSE for regression) on the query set. Gradient-based learners also report the
*pre-update* query score, before any adaptation: Figure 4 of Rajendran et al. (2020) tells
memorization overfitting (high pre-update train accuracy: the model ignores the support
set) from learner overfitting by exactly these two curves on meta-train and meta-val tasks.
"""
from __future__ import annotations

from abc import abstractmethod
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metaaugment.batch import Episode, Tasks
from metaaugment.infra.errors import UserError, check_option, representable
from metaaugment.learners.base import Learner
from metaaugment.learners.inner_loops import INNER_LOOPS
from metaaugment.parallel.comm import SINGLE_PROCESS, Communicator
from metaaugment.policy import StepContext, TaskPolicy
from metaaugment.registry import LEARNERS
from metaaugment.spec import TaskSpec
from metaaugment.steptools.features import has_features, pooled_features
from metaaugment.steptools.hidden_mix import mixed_forward, plain_forward
from metaaugment.steptools.stats import ci95_of_sums, mean_and_ci95


def task_loss(spec: TaskSpec) -> Callable[[Tensor, Tensor], Tensor]:
    """Mean loss of a task's predictions: cross-entropy for classification, MSE for regression.
    outputs (M, N) logits or (M, 1) predictions; targets (M,) labels or (M, 1) values."""
    return F.mse_loss if spec.predicts_values else F.cross_entropy


def metric_name(spec: TaskSpec) -> str:
    """'mse' for regression benchmarks, 'accuracy' otherwise."""
    return "mse" if spec.predicts_values else "accuracy"


def task_metric(spec: TaskSpec, outputs: Tensor, targets: Tensor) -> float:
    """Accuracy (classification) or MSE (regression) of one task's query predictions."""
    if spec.predicts_values:
        return float(F.mse_loss(outputs, targets))
    return float((outputs.argmax(dim=1) == targets).float().mean())


class EpisodicLearner(Learner):
    """Base of the meta-learners: an outer Adam optimizer over meta-batches of episodes.

    Subclasses implement `score_task`. `train_step` passes each episode through the policy's
    `augment_tasks` (keys from ctx.task_generator) and averages the post-update query loss over
    the meta-batch (backpropagating task by task, so memory holds one task's graph).
    """

    benchmark_kinds = ("few-shot", "regression")
    has_pre_update = False  # True where score_task reports pre-update scores (pre_loss, ...)
    rate_option = "meta_lr"  # --lr: the outer (meta) rate

    def __init__(self, *, meta_lr: float = 1e-3):
        check_option(representable(meta_lr) and meta_lr > 0, "meta_lr", meta_lr, "a positive number")
        self.meta_lr = meta_lr
        self.spec: TaskSpec | None = None
        self._optimizer: torch.optim.Optimizer | None = None

    # -- setup and state ------------------------------------------------------------------
    def setup(self, model: nn.Module, spec: TaskSpec, total_steps: int) -> None:
        if spec.predicts_values and "regression" not in self.benchmark_kinds:
            raise UserError(f"learner '{self.name}' classifies; use maml or metasgd for regression benchmarks")
        self.spec = spec
        self.loss_fn = task_loss(spec)
        self.wrap(model)
        self._optimizer = torch.optim.Adam(self.meta_parameters(model), lr=self.meta_lr)

    def wrap(self, model: nn.Module) -> None:
        """Build whatever wraps the model (MAML's / Meta-SGD's meta-parameters); default none."""

    def meta_parameters(self, model: nn.Module) -> Iterable[nn.Parameter]:
        """Parameters the outer loop optimizes."""
        return model.parameters()

    @property
    def optimizer(self) -> torch.optim.Optimizer | None:
        return self._optimizer

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self._optimizer.state_dict() if self._optimizer else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self._optimizer is not None and state.get("optimizer") is not None:
            self._optimizer.load_state_dict(state["optimizer"])

    # -- scoring --------------------------------------------------------------------------
    @abstractmethod
    def score_task(self, model: nn.Module, episode: Episode, training: bool,
                   pre_update: bool = True) -> tuple[Tensor, dict[str, float]]:
        """Adapt to the support set and score the query set. Returns the post-update query
        loss (attached to the meta-parameters' graph when `training`) and metrics: loss,
        accuracy or mse, and pre_loss / pre_accuracy (pre_mse) when the learner has a
        pre-update prediction and `pre_update` asks for it (one more query forward)."""

    def train_step(self, model: nn.Module, batch: Sequence[Episode], policy: TaskPolicy,
                   ctx: StepContext) -> dict[str, float]:
        """One outer update on a meta-batch of episodes (a list, or on many ranks this rank's
        `Tasks` of it), augmented by `policy.augment_tasks` first with a key per task (one key
        per task of the meta-batch drawn from ctx.task_generator on every rank); returns the
        mean metrics over the meta-batch."""
        assert self._optimizer is not None, "call setup first"
        generator = ctx.require("task_generator", f"learner '{self.name}'")
        model.train()
        self._optimizer.zero_grad(set_to_none=True)
        # every rank draws the keys of the whole meta-batch and augments and scores its tasks;
        # the summed gradients are the meta-batch's mean gradient
        comm, tasks = ctx.comm, Tasks.of(batch)
        if comm.distributed and not isinstance(batch, Tasks):  # each rank would train on every task
            raise ValueError("on many ranks, pass each rank its tasks of the meta-batch with their places: "
                             "Tasks(episodes, index, total), index = ctx.comm.local_items(range(total))")
        keys = torch.randint(2**62, (tasks.total,), generator=generator).tolist()
        augmented = policy.augment_tasks(tasks, keys, ctx)
        if list(augmented.index) != list(tasks.index) or augmented.total != tasks.total:
            raise ValueError(f"policy '{policy.name}': augment_tasks must return the tasks at the places it was given")
        totals: dict[str, float] = {}
        for index, episode in zip(augmented.index, augmented):
            # the pre-update scores (memorization's signature, Rajendran et al. Fig. 4) from the
            # meta-batch's first task: an unbiased estimate at an eighth of a query forward's cost
            loss, metrics = self.score_task(model, episode, training=True, pre_update=index == 0)
            (loss / tasks.total).backward()
            for key, value in metrics.items():
                totals[key] = totals.get(key, 0.0) + value
                totals["#" + key] = totals.get("#" + key, 0.0) + 1
        if self.has_pre_update:  # every rank reduces the same keys, with or without the first task
            for key in [k for k in totals if not k.startswith(("#", "pre_"))]:
                totals.setdefault("pre_" + key, 0.0)
                totals.setdefault("#pre_" + key, 0.0)
        comm.sum_gradients(self.meta_parameters(model))
        self._optimizer.step()
        comm.broadcast_buffers(model)
        summed = comm.sum_floats(totals)
        return {key: value / summed["#" + key] for key, value in summed.items() if not key.startswith("#")}

    def evaluate(self, model: nn.Module, batches: Iterable[Episode], comm: Communicator = SINGLE_PROCESS
                 ) -> dict[str, Any]:
        """Scores on un-augmented episodes: mean of each metric, the 95% confidence interval
        of the main one (`accuracy_ci95` or `mse_ci95`) and the number of tasks. On many ranks
        each rank scores its tasks, and the sums, sums of squares and counts are reduced."""
        per_task: dict[str, list[float]] = {}
        for episode in batches:
            _, metrics = self.score_task(model, episode, training=False)
            for key, value in metrics.items():
                per_task.setdefault(key, []).append(value)
        assert self.spec is not None
        main = metric_name(self.spec)
        if not comm.distributed:
            result: dict[str, Any] = {key: sum(v) / len(v) for key, v in per_task.items()}
            result[f"{main}_ci95"] = mean_and_ci95(per_task[main])[1]
            result["tasks"] = len(per_task[main])
            return result
        keys = comm.broadcast_object(sorted(per_task))  # rank 0 always scores a task
        sums = comm.sum(torch.tensor([[sum(per_task.get(k, ())), sum(v * v for v in per_task.get(k, ())),
                                       len(per_task.get(k, ()))] for k in keys], dtype=torch.float64,
                                     device=comm.collective_device)).cpu()
        result = {key: float(total / count) for key, (total, _, count) in zip(keys, sums.tolist())}
        total, squares, count = sums[keys.index(main)].tolist()
        result[f"{main}_ci95"] = ci95_of_sums(total, squares, int(count))
        result["tasks"] = int(count)
        return result

    def _scores(self, prefix: str, outputs: Tensor, targets: Tensor, loss: Tensor) -> dict[str, float]:
        assert self.spec is not None
        if self.spec.predicts_values:  # the loss is the MSE: report it once
            return {f"{prefix}mse": float(loss)}
        return {f"{prefix}loss": float(loss), f"{prefix}accuracy": task_metric(self.spec, outputs, targets)}


INNER_OPTIMIZERS = ("sgd", "momentum", "adam")


class _GradientMetaLearner(EpisodicLearner):
    """MAML-style learners: take inner gradient steps on the support set, score the query set.

    inner_loop "higher" (the default): `higher.innerloop_ctx` unrolls a differentiable copy of
    a torch optimizer, so the inner optimizer can be `sgd`, `momentum` (SGD with
    `inner_momentum`) or `adam` (`inner_betas`), each with `inner_weight_decay`. inner_loop
    "learn2learn" (pip install 'metaaugment[learn2learn]'): learn2learn's `clone` / `adapt`,
    plain SGD; with `sgd` both loops compute the same losses and meta-gradients. First order
    (`first_order=true`, and always at evaluation) drops the second-order terms: the inner
    gradients are treated as constants.

    Options:
        inner_lr: the inner (adaptation) learning rate
        inner_steps: inner gradient steps on the support set while meta-training
        eval_inner_steps: inner steps at validation and test; default: inner_steps
        first_order: drop second-order terms while meta-training (FOMAML)
        meta_lr: the outer (meta) Adam learning rate (--lr sets it)
        inner_loop: higher (a differentiable torch optimizer) or learn2learn (clone/adapt, plain SGD)
        inner_optimizer: sgd, momentum or adam (momentum and adam need inner_loop=higher)
        inner_momentum: momentum of inner_optimizer=momentum
        inner_betas: Adam betas of inner_optimizer=adam (comma-separated)
        inner_weight_decay: weight decay of the inner optimizer
    """

    has_pre_update = True

    def __init__(self, *, inner_lr: float = 0.4, inner_steps: int = 1, eval_inner_steps: int | None = None,
                 first_order: bool = False, meta_lr: float = 1e-3, inner_loop: str = "higher",
                 inner_optimizer: str = "sgd", inner_momentum: float = 0.9,
                 inner_betas: tuple[float, ...] = (0.9, 0.999), inner_weight_decay: float = 0.0):
        super().__init__(meta_lr=meta_lr)
        check_option(representable(inner_lr) and inner_lr > 0, "inner_lr", inner_lr, "a positive number")
        check_option(inner_steps >= 1, "inner_steps", inner_steps, "at least 1")
        check_option(eval_inner_steps is None or eval_inner_steps >= 1, "eval_inner_steps", eval_inner_steps,
                     "at least 1")
        check_option(inner_loop in INNER_LOOPS, "inner_loop", inner_loop, " or ".join(INNER_LOOPS))
        check_option(inner_optimizer in INNER_OPTIMIZERS, "inner_optimizer", inner_optimizer,
                     ", ".join(INNER_OPTIMIZERS))
        loop = INNER_LOOPS[inner_loop]()
        check_option(inner_optimizer in loop.optimizers, "inner_optimizer", inner_optimizer,
                     f"{' or '.join(loop.optimizers)} with inner_loop={inner_loop} (its inner loop is plain SGD); "
                     f"use inner_loop=higher")
        check_option(0 <= inner_momentum < 1, "inner_momentum", inner_momentum, "in [0, 1)")
        check_option(len(inner_betas) == 2 and all(0 <= b < 1 for b in inner_betas), "inner_betas", inner_betas,
                     "two numbers in [0, 1), e.g. 0.9,0.999")
        check_option(representable(inner_weight_decay) and inner_weight_decay >= 0, "inner_weight_decay",
                     inner_weight_decay, "a non-negative number")
        self.loop = loop
        self.inner_lr, self.inner_steps, self.first_order = inner_lr, inner_steps, first_order
        self.eval_inner_steps = eval_inner_steps or inner_steps
        self.inner_loop, self.inner_optimizer = inner_loop, inner_optimizer
        self.inner_momentum, self.inner_betas = inner_momentum, tuple(float(b) for b in inner_betas)
        self.inner_weight_decay = inner_weight_decay
        self.wrapper: nn.Module | None = None

    def meta_parameters(self, model: nn.Module) -> Iterable[nn.Parameter]:
        assert self.wrapper is not None
        return self.wrapper.parameters()

    def state_dict(self) -> dict[str, Any]:
        assert self.wrapper is not None
        return {**super().state_dict(), "wrapper": self.wrapper.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        assert self.wrapper is not None
        self.wrapper.load_state_dict(state["wrapper"])
        super().load_state_dict(state)

    def wrap(self, model: nn.Module) -> None:
        self.wrapper = self.loop.wrap(model, self.inner_lr, self.learned_rates, self.first_order)

    def score_task(self, model: nn.Module, episode: Episode, training: bool,
                   pre_update: bool = True) -> tuple[Tensor, dict[str, float]]:
        assert self.wrapper is not None
        forward = mixed_forward(plain_forward, episode.mix)  # interpolating inside the network, if asked
        metrics = self._pre_update_scores(self.loop.initial(self.wrapper), episode, forward) if pre_update else {}
        # evaluation needs gradients for adaptation but never a second-order graph
        with self.loop.adapted(self.wrapper, episode.support_inputs, episode.support_targets,
                               steps=self.inner_steps if training else self.eval_inner_steps, training=training,
                               first_order=self.first_order or not training, loss_fn=self.loss_fn,
                               make_optimizer=self._inner_torch_optimizer, forward=forward) as adapted:
            out = adapted(episode.query_inputs)
            loss = self.loss_fn(out, episode.query_targets)
        metrics.update(self._scores("", out.detach(), episode.query_targets, loss.detach()))
        return loss, metrics

    def _inner_torch_optimizer(self, module: nn.Module, per_parameter_rates: bool) -> torch.optim.Optimizer:
        """The torch optimizer `higher` makes differentiable; one parameter group per parameter
        when the rates are per parameter (higher overrides settings group by group)."""
        params = list(module.parameters())
        groups = [{"params": [p]} for p in params] if per_parameter_rates else [{"params": params}]
        decay = self.inner_weight_decay
        if self.inner_optimizer == "adam":
            return torch.optim.Adam(groups, lr=self.inner_lr, betas=self.inner_betas, weight_decay=decay)
        momentum = self.inner_momentum if self.inner_optimizer == "momentum" else 0.0
        return torch.optim.SGD(groups, lr=self.inner_lr, momentum=momentum, weight_decay=decay)

    def _pre_update_scores(self, module: nn.Module, episode: Episode, forward: Any) -> dict[str, float]:
        """pre_loss and pre_accuracy (pre_mse): the query scores before any adaptation."""
        with torch.no_grad():
            out = forward(module, episode.query_inputs)
            return self._scores("pre_", out, episode.query_targets, self.loss_fn(out, episode.query_targets))

    def describe(self) -> dict[str, Any]:
        info = {"name": self.name, "inner_lr": self.inner_lr, "inner_steps": self.inner_steps,
                "eval_inner_steps": self.eval_inner_steps, "first_order": self.first_order, "meta_lr": self.meta_lr,
                "inner_loop": self.inner_loop, "inner_optimizer": self.inner_optimizer}
        if self.inner_optimizer == "momentum":
            info["inner_momentum"] = self.inner_momentum
        if self.inner_optimizer == "adam":
            info["inner_betas"] = list(self.inner_betas)
        if self.inner_weight_decay:
            info["inner_weight_decay"] = self.inner_weight_decay
        return info


@LEARNERS.register("maml")
class MAMLLearner(_GradientMetaLearner):
    """MAML (Finn et al. 2017): meta-learned initial weights; first_order=true for FOMAML."""

    learned_rates = False


@LEARNERS.register("metasgd")
class MetaSGDLearner(_GradientMetaLearner):
    """Meta-SGD (Li et al. 2017): meta-learned initial weights and per-parameter inner rates."""

    learned_rates = True  # the meta-parameters hold one inner rate per weight (`lrs`)


def embed(model: nn.Module, inputs: Tensor) -> Tensor:
    """(M, ...) -> (M, D) embeddings: the model's pooled features (the input of its final
    linear layer) when it follows timm's convention, else its output."""
    out = pooled_features(model, inputs) if has_features(model) else model(inputs)
    return out.flatten(1)


def prototype_logits(support: Tensor, support_labels: Tensor, query: Tensor, ways: int) -> Tensor:
    """Prototypical-network logits: minus the squared Euclidean distance from each query
    embedding (Q, D) to each class mean of the support embeddings (S, D) -> (Q, ways)."""
    prototypes = torch.zeros(ways, support.shape[1], dtype=support.dtype, device=support.device)
    prototypes.index_add_(0, support_labels, support)
    counts = torch.bincount(support_labels, minlength=ways).clamp_min(1).to(support.dtype)
    prototypes = prototypes / counts.unsqueeze(1)
    return -torch.cdist(query, prototypes).pow(2)


@LEARNERS.register("protonet")
class ProtoNetLearner(EpisodicLearner):
    """Prototypical Networks (Snell et al. 2017): classify queries by the nearest support class mean.

    Options:
        meta_lr: the Adam learning rate (--lr sets it)
    """

    benchmark_kinds = ("few-shot",)

    def score_task(self, model: nn.Module, episode: Episode, training: bool,
                   pre_update: bool = True) -> tuple[Tensor, dict[str, float]]:
        ways = int(episode.support_targets.max()) + 1
        embedding = mixed_forward(embed, episode.mix)  # interpolating inside the network, if asked
        with torch.set_grad_enabled(training):
            logits = prototype_logits(embedding(model, episode.support_inputs), episode.support_targets,
                                      embedding(model, episode.query_inputs), ways)
            loss = self.loss_fn(logits, episode.query_targets)
        return loss, self._scores("", logits.detach(), episode.query_targets, loss.detach())

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "meta_lr": self.meta_lr}
