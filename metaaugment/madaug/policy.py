"""MADAug (Hou et al., ICCV 2023): model-adaptive data augmentation.

Per step (the official code's `train` of main_higher.py, read, not copied):
1. every `lookahead_every` steps, the policy head learns: the clean batch is augmented by
   *every* op at the head's magnitudes and mixed by its probabilities (`explore_mixture`,
   magnitudes' gradient straight through); one step of the task network on that batch
   (the task optimizer's SGD update at its learning rate), the validation loss at the
   stepped weights, its gradient to the head (`input_lookahead`: exact fast engine or
   `higher`), one Adam step of the head;
2. a fraction min(tanh(epoch / tau) + 0.01, 1) of the batch (the curriculum: few augmented
   images while the network is young) is augmented by k ops drawn per sample from the head's
   probabilities at the head's magnitudes (`draw_ops`, `exploit_images`); the rest stay as
   they are.
The head reads the task network's pooled features of the clean images, in evaluation mode
(running BatchNorm statistics: a row's features do not depend on the other rows, so ranks
agree with one process), detached: the head does not train the task network. Everything
random (which rows are augmented, the Gumbel noise of the op draws, the ops' signs) is drawn
for the global batch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from metaaugment.adaaug import explore_mixture
from metaaugment.adaaug.head_policy import AdaptiveHeadPolicy, gumbel_noise, random_signs
from metaaugment.batch import Batch, Params, per_sample
from metaaugment.infra.errors import check_option, representable
from metaaugment.policy import StepContext, StepResult
from metaaugment.registry import POLICIES
from metaaugment.sample_aware.lookahead import input_lookahead
from metaaugment.steptools.precision import full_precision


def augmented_fraction(epoch: int, tau: float) -> float:
    """MADAug's curriculum: the share of a batch augmented in epoch `epoch` (0-based),
    min(tanh(epoch / tau) + 0.01, 1)."""
    return min(math.tanh(epoch / tau) + 0.01, 1.0)


@dataclass
class HeadDraws(Params):
    """MADAug's draws for the global batch (B rows, K ops of the pool).

    augmented: (B,) bool, the rows the curriculum augments this step; gumbel: (B, K) noise of
    the op draws; signs: (B, K) +-1 per op (signed ops); explore_signs: (B, K) +-1 for the
    explore mixture of a lookahead step."""

    augmented: Tensor = per_sample()
    gumbel: Tensor = per_sample()
    signs: Tensor = per_sample()
    explore_signs: Tensor = per_sample()


@POLICIES.register("madaug")
class MADAug(AdaptiveHeadPolicy):
    """MADAug (Hou et al. 2023): per-sample op probabilities and magnitudes, learned online by a lookahead.

    Options:
        k: ops applied per augmented sample, drawn from the head's probabilities
        tau: curriculum temperature: min(tanh(epoch / tau) + 0.01, 1) of each batch is augmented
        lookahead_every: training steps between lookahead updates of the head
        engine: the lookahead: fast (exact, a double backward; default) or higher (the reference, unrolled)
        head_lr: Adam learning rate of the head
        head_weight_decay: Adam weight decay of the head
        temperature: softmax temperature of the op probabilities
        hidden_layers: hidden layers of 128 in the head (0: one linear layer, the papers' default)
        extra_ops: ops beyond the papers' (experiments), e.g. Rotate180
    """

    relative_cost = 7.0  # fonts: 241.9 s a run against none's 34.4 s (a lookahead with a double backward every step)

    def __init__(self, *, k: int = 2, tau: float = 40.0, lookahead_every: int = 1, engine: str = "fast",
                 head_lr: float = 1e-3, head_weight_decay: float = 1e-3, temperature: float = 1.0,
                 hidden_layers: int = 0, extra_ops: tuple[str, ...] = ()):
        super().__init__(head_lr=head_lr, head_weight_decay=head_weight_decay, hidden_layers=hidden_layers,
                         extra_ops=extra_ops)
        self.check_k("k", k)
        check_option(representable(tau) and tau > 0, "tau", tau, "a positive number")
        check_option(lookahead_every >= 1, "lookahead_every", lookahead_every, "at least 1")
        check_option(engine in ("fast", "higher"), "engine", engine, "fast or higher")
        check_option(representable(temperature) and temperature > 0, "temperature", temperature, "a positive number")
        self.k, self.tau, self.lookahead_every, self.engine = k, float(tau), lookahead_every, engine
        self.temperature = temperature
        self.last: dict[str, float] = {}

    # -- draws and the head ---------------------------------------------------------------
    def make_params(self, batch: Batch, ctx: StepContext) -> HeadDraws:
        """Which rows the curriculum augments (a random subset of round(fraction * B) rows),
        the Gumbel noise of the op draws and the ops' signs, for the global batch."""
        count, ops = batch.global_size, len(self.pool)
        chosen = round(augmented_fraction(ctx.epoch, self.tau) * count)
        augmented = torch.zeros(count, dtype=torch.bool)
        augmented[torch.randperm(count)[:chosen]] = True
        return HeadDraws(augmented, gumbel_noise(count, ops), random_signs(count, ops), random_signs(count, ops))

    # -- the step -------------------------------------------------------------------------
    def apply(self, batch: Batch, params: Params | None, ctx: StepContext) -> Batch:
        """A lookahead update of the head every `lookahead_every` steps (on this batch's clean
        rows), then the curriculum's rows augmented by k ops drawn from the updated head."""
        assert isinstance(params, HeadDraws)
        if self.head is None:
            self.require_spec()
        features = self.features_of(batch.inputs, ctx.model)  # the same before and after the head's update
        if self.optimizer is not None and ctx.step % self.lookahead_every == 0:
            self._learn(batch, features, params, ctx)
        with torch.no_grad():
            probabilities, magnitudes = self.policy_of(features, self.temperature)
        self.record(probabilities, magnitudes, batch.hard_targets(), ctx)
        rows = params.augmented.nonzero().flatten()
        inputs = batch.inputs.clone()
        if len(rows):
            on_device = rows.to(inputs.device)
            inputs[on_device] = self.exploit(batch.inputs[on_device], probabilities[rows], magnitudes[rows],
                                             params.gumbel[rows], params.signs[rows], self.k)
        return Batch(inputs, batch.targets, batch.weights, dict(batch.info), batch.share)

    def _learn(self, batch: Batch, features: Tensor, params: HeadDraws, ctx: StepContext) -> None:
        """One lookahead step of the head on the explore mixture of this batch's clean rows."""
        assert self.head is not None and self.optimizer is not None
        ctx.require("validation_batch", "madaug")
        val = ctx.validation_batch()
        lr = float(ctx.optimizer.param_groups[0]["lr"]) if ctx.optimizer is not None else 0.1
        task_optimizer = ctx.optimizer if isinstance(ctx.optimizer, torch.optim.SGD) else None
        parameters = list(self.head.parameters())
        with full_precision(ctx.device):  # the lookahead's second-order terms in float32
            probabilities, magnitudes = self.policy_of(features, self.temperature)
            mixed = explore_mixture(batch.inputs, probabilities, magnitudes, params.explore_signs, self.pool)
            grads, val_loss = input_lookahead(ctx.model, mixed, batch.targets, val.inputs, val.targets, ctx.loss_fn,
                                              lr, parameters, engine=self.engine, optimizer=task_optimizer,
                                              train_count=batch.global_size, val_count=val.global_size, comm=ctx.comm)
        for parameter, grad in zip(parameters, grads):  # a rank's rows' share of the gradient, summed
            parameter.grad = grad.detach().clone()
        ctx.comm.sum_gradients(parameters)
        self.optimizer.step()
        self.last = {"lookahead_val_loss": val_loss}

    def after_step(self, result: StepResult, ctx: StepContext) -> dict[str, float]:
        metrics = dict(self.last)
        self.last = {}
        metrics["augmented_fraction"] = augmented_fraction(ctx.epoch, self.tau)
        return metrics
