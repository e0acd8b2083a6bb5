"""Plain supervised learning: SGD on (optionally weighted) per-sample losses."""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import torch
from torch import Tensor, nn

from metaaugment.batch import Batch
from metaaugment.infra.errors import check_option, representable
from metaaugment.learners.base import Learner
from metaaugment.losses import accuracy, per_sample_cross_entropy, weighted_mean
from metaaugment.parallel.comm import SINGLE_PROCESS, Communicator
from metaaugment.policy import BatchPolicy, ForwardOutput, StepContext, StepResult
from metaaugment.registry import LEARNERS
from metaaugment.spec import TaskSpec
from metaaugment.steptools.features import classifier, has_features
from metaaugment.steptools.scratch import RandomState


def forward_pass(model: nn.Module, batch: Batch,
                 loss_fn: Callable[[Tensor, Tensor], Tensor] = per_sample_cross_entropy) -> ForwardOutput:
    """Run `model` on batch.inputs; returns logits (B, C), per-sample losses (B,) with their
    graph, and the pooled (B, D) features when the model follows timm's convention
    (forward_features / forward_head(pre_logits=True) / get_classifier), in one pass, and
    the random generators' state it started from (its dropout masks can be drawn again)."""
    random_state = RandomState.capture(batch.inputs.device)
    if has_features(model):
        maps = model.forward_features(batch.inputs)
        features = model.forward_head(maps, pre_logits=True)
        head = classifier(model)
        logits = head(features) if head is not None else model.forward_head(maps)
    else:
        features, logits = None, model(batch.inputs)
    return ForwardOutput(logits=logits, losses=loss_fn(logits, batch.targets), features=features,
                         random_state=random_state)


def supervised_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch,
                    policy: BatchPolicy, ctx: StepContext) -> tuple[StepResult, dict[str, float]]:
    """One policy-aware SGD step: augment, forward, weigh, backward, update, feed back.

    This is the whole batch-level policy contract in one function; a user's own training
    loop can call it, or copy its lines to interleave its own logic. On many ranks
    (`ctx.comm`), `batch` is this rank's rows of the global batch (`batch.share`): the policy
    draws its randomness for the global batch, the same on every rank, and augments these
    rows; each rank trains on them, and the summed gradients make the update the one-process
    update (`metaaugment.parallel`). BatchNorm layers must use the global batch's statistics
    (`parallel.sync_batchnorm`, which the run loop applies) for the running statistics to stay
    equal on every rank.
    """
    comm = ctx.comm
    if comm.distributed and batch.share is None:  # every rank would train on the whole batch: N times the step
        raise ValueError("on many ranks, pass each rank its rows of the global batch with their places: "
                         "batch.rows(ctx.comm.local_rows(len(batch))), or Batch(..., share=Share.rows(rows, B))")
    batch = policy.augment(batch, ctx)
    with ctx.autocast():
        output = forward_pass(model, batch, ctx.loss_fn)
    weights = policy.loss_weights(batch, output, ctx)
    loss = global_weighted_mean(output.losses.float(), weights, batch.global_size, comm)
    optimizer.zero_grad(set_to_none=True)
    scaler = ctx.grad_scaler
    (scaler.scale(loss) if scaler is not None else loss).backward()
    comm.sum_gradients(model.parameters())
    if scaler is not None:  # the same scale on every rank: the summed gradients unscale alike
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    detached = ForwardOutput(output.logits.detach(), output.losses.detach(),
                             None if output.features is None else output.features.detach(), output.random_state)
    global_loss = float(comm.sum(loss.detach().clone()))
    result = StepResult(batch, detached, None if weights is None else weights.detach(), global_loss)
    metrics = {"accuracy": accuracy(detached.logits, batch.targets), **policy.after_step(result, ctx)}
    if comm.distributed:  # equal shares (checked at start): the mean of the ranks' means
        metrics = {k: v / comm.world_size for k, v in comm.sum_floats(metrics).items()}
    return result, {"loss": global_loss, **metrics}


def global_weighted_mean(losses: Tensor, weights: Tensor | None, global_count: int, comm: Communicator) -> Tensor:
    """This rank's share of the global batch's weighted mean loss (`weighted_mean` in one
    process): sum_local w_i L_i / sum_global w_j, whose sum over ranks is the global loss.
    losses, weights: (b,) this rank's rows; global_count: B, the global batch size."""
    if not comm.distributed:
        return weighted_mean(losses, weights)
    if weights is None:
        return losses.sum() / global_count
    if weights.shape != losses.shape:
        raise ValueError(f"weights {tuple(weights.shape)} must match losses {tuple(losses.shape)}")
    total = comm.sum_differentiable(weights.sum())
    return (weights * losses).sum() / total.clamp_min(torch.finfo(losses.dtype).tiny)


@LEARNERS.register("supervised")
class SupervisedLearner(Learner):
    """Mini-batch SGD with Nesterov momentum, weight decay and a cosine, constant or one-cycle learning-rate schedule.

    schedule="onecycle" is torch's OneCycleLR with cosine annealing and fixed momentum: the
    rate starts at lr * initial_lr_ratio, rises to lr over the first warmup_fraction of the
    steps, then falls to lr * final_lr_ratio (RL-Mixup's setting: lr 0.2, from 0.004 up over
    the first third, down to 0.002).

    Options:
        lr: peak SGD learning rate (--lr sets it)
        momentum: SGD momentum
        weight_decay: L2 weight decay
        nesterov: Nesterov momentum
        schedule: learning-rate schedule: cosine, constant or onecycle
        warmup_fraction: onecycle: fraction of the steps rising to lr
        initial_lr_ratio: onecycle: the starting rate over lr
        final_lr_ratio: onecycle: the final rate over lr
    """

    benchmark_kinds = ("classification",)


    def __init__(self, *, lr: float = 0.05, momentum: float = 0.9, weight_decay: float = 5e-4,
                 nesterov: bool = True, schedule: str = "cosine", warmup_fraction: float = 1 / 3,
                 initial_lr_ratio: float = 0.02, final_lr_ratio: float = 0.01):
        check_option(representable(lr) and lr > 0, "lr", lr, "a positive number")
        check_option(representable(momentum) and momentum >= 0, "momentum", momentum, "a non-negative number")
        check_option(representable(weight_decay) and weight_decay >= 0, "weight_decay", weight_decay,
                     "a non-negative number")
        check_option(schedule in ("cosine", "constant", "onecycle"), "schedule", schedule,
                     "cosine, constant or onecycle")
        check_option(0 < warmup_fraction < 1, "warmup_fraction", warmup_fraction, "in (0, 1)")
        check_option(0 < initial_lr_ratio <= 1, "initial_lr_ratio", initial_lr_ratio, "in (0, 1]")
        check_option(0 < final_lr_ratio <= initial_lr_ratio, "final_lr_ratio", final_lr_ratio,
                     f"in (0, initial_lr_ratio = {initial_lr_ratio}]")
        self.hyper = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov, schedule=schedule)
        if schedule == "onecycle":
            self.hyper.update(warmup_fraction=warmup_fraction, initial_lr_ratio=initial_lr_ratio,
                              final_lr_ratio=final_lr_ratio)
        self._optimizer: torch.optim.Optimizer | None = None
        self._scheduler: torch.optim.lr_scheduler.LRScheduler | None = None

    def setup(self, model: nn.Module, spec: TaskSpec, total_steps: int) -> None:
        h = self.hyper
        self._optimizer = torch.optim.SGD(model.parameters(), lr=h["lr"], momentum=h["momentum"],
                                          weight_decay=h["weight_decay"],
                                          nesterov=h["nesterov"] and h["momentum"] > 0)
        total = max(1, total_steps)
        if h["schedule"] == "onecycle":
            # total + 1: the trainer also steps the schedule after the last batch
            self._scheduler = torch.optim.lr_scheduler.OneCycleLR(
                self._optimizer, max_lr=h["lr"], total_steps=total + 1, pct_start=h["warmup_fraction"],
                anneal_strategy="cos", cycle_momentum=False, div_factor=1 / h["initial_lr_ratio"],
                final_div_factor=h["initial_lr_ratio"] / h["final_lr_ratio"])
            return
        factor = (lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total))) \
            if h["schedule"] == "cosine" else (lambda s: 1.0)
        self._scheduler = torch.optim.lr_scheduler.LambdaLR(self._optimizer, factor)

    @property
    def optimizer(self) -> torch.optim.Optimizer | None:
        return self._optimizer

    def train_step(self, model: nn.Module, batch: Batch, policy: BatchPolicy,
                   ctx: StepContext) -> dict[str, float]:
        if self._optimizer is None or self._scheduler is None:
            raise RuntimeError("call setup() before train_step()")
        model.train()
        _, metrics = supervised_step(model, self._optimizer, batch, policy, ctx)
        metrics["lr"] = self._optimizer.param_groups[0]["lr"]
        self._scheduler.step()
        return metrics

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Iterable[Batch], comm: Communicator = SINGLE_PROCESS
                 ) -> dict[str, float]:
        """Mean loss and accuracy over every sample of `batches`; on many ranks, each rank's
        batches are its part of the samples and the sums and counts are reduced exactly."""
        model.eval()
        total_loss, correct, count = 0.0, 0, 0
        for batch in batches:
            logits = model(batch.inputs)
            total_loss += per_sample_cross_entropy(logits, batch.targets).double().sum().item()
            correct += int((logits.argmax(dim=1) == batch.hard_targets()).sum().item())
            count += len(batch)
        if comm.distributed:
            totals = comm.sum(torch.tensor([total_loss, correct, count], dtype=torch.float64,
                                           device=comm.collective_device))
            total_loss, correct, count = totals[0].item(), int(totals[1].item()), int(totals[2].item())
        return {"loss": total_loss / max(count, 1), "accuracy": correct / max(count, 1)}

    def state_dict(self) -> dict[str, Any]:
        if self._optimizer is None or self._scheduler is None:
            return {}
        return {"optimizer": self._optimizer.state_dict(), "scheduler": self._scheduler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self._optimizer is None or self._scheduler is None:
            raise RuntimeError("call setup() before load_state_dict()")
        self._optimizer.load_state_dict(state["optimizer"])
        self._scheduler.load_state_dict(state["scheduler"])

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, **self.hyper}
