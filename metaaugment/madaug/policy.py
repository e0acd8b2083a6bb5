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
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from metaaugment.adaaug import HEAD_OPS, AugmentationHead, draw_ops, exploit_images, explore_mixture, head_parameters
from metaaugment.adaaug.figures import class_policy_heatmap
from metaaugment.batch import Batch, Params, per_sample
from metaaugment.infra.errors import check_option, representable
from metaaugment.policy import BatchPolicy, StepContext, StepResult
from metaaugment.registry import POLICIES
from metaaugment.sample_aware.lookahead import input_lookahead
from metaaugment.sample_aware.ops import EXTRA_OPS
from metaaugment.steptools.features import feature_width, pooled_features
from metaaugment.steptools.precision import full_precision
from metaaugment.steptools.scratch import scratch_buffers


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


def _signs(rows: int, cols: int) -> Tensor:
    return torch.where(torch.rand(rows, cols) < 0.5, -1.0, 1.0)


@POLICIES.register("madaug")
class MADAug(BatchPolicy):
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
        super().__init__()
        check_option(k >= 1, "k", k, "at least 1")
        check_option(representable(tau) and tau > 0, "tau", tau, "a positive number")
        check_option(lookahead_every >= 1, "lookahead_every", lookahead_every, "at least 1")
        check_option(engine in ("fast", "higher"), "engine", engine, "fast or higher")
        check_option(representable(head_lr) and head_lr > 0, "head_lr", head_lr, "a positive number")
        check_option(representable(head_weight_decay) and head_weight_decay >= 0, "head_weight_decay",
                     head_weight_decay, "a non-negative number")
        check_option(representable(temperature) and temperature > 0, "temperature", temperature, "a positive number")
        check_option(hidden_layers >= 0, "hidden_layers", hidden_layers, "0 or more")
        check_option(all(op in EXTRA_OPS for op in extra_ops), "extra_ops", extra_ops,
                     f"among {', '.join(EXTRA_OPS)}")
        self.pool = HEAD_OPS + tuple(extra_ops)
        check_option(k <= len(self.pool), "k", k, f"at most the {len(self.pool)} ops of the pool")
        self.k, self.tau, self.lookahead_every, self.engine = k, float(tau), lookahead_every, engine
        self.head_lr, self.head_weight_decay = head_lr, head_weight_decay
        self.temperature, self.hidden_layers = temperature, hidden_layers
        self.head: AugmentationHead | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        # per class: summed probabilities and magnitudes of the rows seen (the figure)
        self.register_buffer("class_probability_sums", torch.zeros(0, len(self.pool), dtype=torch.float64))
        self.register_buffer("class_magnitude_sums", torch.zeros(0, len(self.pool), dtype=torch.float64))
        self.register_buffer("class_counts", torch.zeros(0, dtype=torch.float64))
        self.last: dict[str, float] = {}

    def setup(self, ctx: StepContext) -> None:
        """Build the head (sized by the task network's feature width) and its Adam optimizer."""
        super().setup(ctx)
        width = feature_width(ctx.model, ctx.spec, needed_by="madaug")
        self.head = AugmentationHead(width, len(self.pool), self.hidden_layers)
        classes = ctx.spec.num_classes or 0
        self.class_probability_sums = torch.zeros(classes, len(self.pool), dtype=torch.float64)
        self.class_magnitude_sums = torch.zeros(classes, len(self.pool), dtype=torch.float64)
        self.class_counts = torch.zeros(classes, dtype=torch.float64)
        self.to(ctx.device)
        self.optimizer = torch.optim.Adam(self.head.parameters(), lr=self.head_lr, weight_decay=self.head_weight_decay)

    # -- draws and the head ---------------------------------------------------------------
    def make_params(self, batch: Batch, ctx: StepContext) -> HeadDraws:
        """Which rows the curriculum augments (a random subset of round(fraction * B) rows),
        the Gumbel noise of the op draws and the ops' signs, for the global batch."""
        count, ops = batch.global_size, len(self.pool)
        chosen = round(augmented_fraction(ctx.epoch, self.tau) * count)
        augmented = torch.zeros(count, dtype=torch.bool)
        augmented[torch.randperm(count)[:chosen]] = True
        gumbel = -torch.log(-torch.log(torch.rand(count, ops).clamp(1e-20, 1 - 1e-7)))
        return HeadDraws(augmented, gumbel, _signs(count, ops), _signs(count, ops))

    def features_of(self, images: Tensor, model: torch.nn.Module) -> Tensor:
        """What the head reads: the task network's pooled features (B, D) of clean images
        (B, C, H, W), in evaluation mode, detached, its BatchNorm statistics untouched."""
        was_training = model.training
        try:
            model.eval()
            with torch.no_grad(), scratch_buffers(model):
                return pooled_features(model, images).float()
        finally:
            model.train(was_training)

    def policy_of(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """The head's (probabilities, magnitudes), each (B, K), for features (B, D)."""
        assert self.head is not None
        return head_parameters(self.head(features), self.temperature)

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
            probabilities, magnitudes = self.policy_of(features)
        self._record(probabilities, magnitudes, batch.hard_targets(), ctx)
        rows = params.augmented.nonzero().flatten()
        inputs = batch.inputs.clone()
        if len(rows):
            ops = draw_ops(probabilities[rows], params.gumbel[rows], self.k)
            chosen_magnitudes = magnitudes[rows].gather(1, ops)
            chosen_signs = params.signs[rows].gather(1, ops.cpu())
            inputs[rows.to(inputs.device)] = exploit_images(batch.inputs[rows.to(inputs.device)], ops,
                                                            chosen_magnitudes, chosen_signs, self.pool)
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
            probabilities, magnitudes = self.policy_of(features)
            mixed = explore_mixture(batch.inputs, probabilities, magnitudes, params.explore_signs, self.pool)
            grads, val_loss = input_lookahead(ctx.model, mixed, batch.targets, val.inputs, val.targets, ctx.loss_fn,
                                              lr, parameters, engine=self.engine, optimizer=task_optimizer,
                                              train_count=batch.global_size, val_count=val.global_size, comm=ctx.comm)
        for parameter, grad in zip(parameters, grads):  # a rank's rows' share of the gradient, summed
            parameter.grad = grad.detach().clone()
        ctx.comm.sum_gradients(parameters)
        self.optimizer.step()
        self.last = {"lookahead_val_loss": val_loss}

    def _record(self, probabilities: Tensor, magnitudes: Tensor, labels: Tensor, ctx: StepContext) -> None:
        """Per class: the sums of the head's probabilities and magnitudes over the global batch."""
        if not len(self.class_counts):
            return
        comm, device = ctx.comm, self.class_counts.device
        labels = comm.gather_rows(labels.to(probabilities.device)).to(device)
        self.class_probability_sums.index_add_(0, labels, comm.gather_rows(probabilities).double().to(device))
        self.class_magnitude_sums.index_add_(0, labels, comm.gather_rows(magnitudes).double().to(device))
        self.class_counts.index_add_(0, labels, torch.ones(len(labels), dtype=torch.float64, device=device))

    def after_step(self, result: StepResult, ctx: StepContext) -> dict[str, float]:
        metrics = dict(self.last)
        self.last = {}
        metrics["augmented_fraction"] = augmented_fraction(ctx.epoch, self.tau)
        return metrics

    # -- state, description, figures -------------------------------------------------------
    def get_extra_state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
                "pool": list(self.pool)}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if state.get("optimizer") is not None:
            if self.optimizer is None:
                raise RuntimeError("call MADAug.setup(ctx) before load_state_dict")
            self.optimizer.load_state_dict(state["optimizer"])

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "k": self.k, "tau": self.tau, "lookahead_every": self.lookahead_every,
                "engine": self.engine, "head_lr": self.head_lr, "head_weight_decay": self.head_weight_decay,
                "temperature": self.temperature, "hidden_layers": self.hidden_layers, "pool": list(self.pool)}

    def class_policy(self) -> tuple[Tensor, Tensor]:
        """Per class (C, K): the mean op probabilities and mean magnitudes the head gave the
        training rows it saw."""
        counts = self.class_counts.clamp_min(1).unsqueeze(1)
        return (self.class_probability_sums / counts).float().cpu(), (self.class_magnitude_sums / counts).float().cpu()

    def write_artifacts(self, folder: Path) -> list[Path]:
        """class_policy.png: per class, the learned op probabilities and mean magnitudes."""
        if not len(self.class_counts) or not float(self.class_counts.sum()):
            return []
        path = Path(folder) / "class_policy.png"
        probabilities, magnitudes = self.class_policy()
        class_policy_heatmap(probabilities, magnitudes, self.pool, path, title="madaug")
        return [path]
