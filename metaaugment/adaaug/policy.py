"""AdaAug (Cheung & Yeung, ICLR 2022): class- and instance-adaptive augmentation, searched
then exploited.

Search (a run without --policy-from; the official code's search.py, read, not copied):
every training batch is augmented by `search_k` ops per sample drawn from the head at
temperature `search_temperature` (the network trains on them), and after every
`search_every` steps the head learns on a validation batch: each validation image goes
through every op at the head's magnitudes, the task network's features of the K results are
mixed by the head's probabilities, and the task network's classifier reads the mixture; the
head takes an Adam step down that validation loss (magnitudes straight through the ops).
The task network's weights are not trained by this loss.

Exploit (a run with --policy-from a finished search, on a new network): the searched head
and the search's task network, both frozen, give each training image k ops drawn at
temperature `temperature`, at magnitudes perturbed by up to `delta` (AdaAug's exploration
of magnitudes around the learned ones).

The head reads the feature network's pooled features of the clean images in evaluation
mode, so a row's policy does not depend on the other rows; every random draw is made for
the global batch (ranks equal one process).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from metaaugment.adaaug.head import explore_features
from metaaugment.adaaug.head_policy import AdaptiveHeadPolicy, gumbel_noise, random_signs
from metaaugment.batch import Batch, Params, per_sample
from metaaugment.infra.errors import UserError, check_option, representable
from metaaugment.policy import StepContext, StepResult
from metaaugment.registry import POLICIES
from metaaugment.sample_aware.lookahead import share_of_mean
from metaaugment.steptools.features import classifier, pooled_features, transferred_feature_model
from metaaugment.steptools.precision import full_precision
from metaaugment.steptools.scratch import scratch_buffers


@dataclass
class AdaAugDraws(Params):
    """AdaAug's draws for the global batch (B rows, K ops of the pool, k ops applied).

    gumbel: (B, K) noise of the op draws; signs: (B, K) +-1 per op (signed ops); uniforms,
    directions: (B, k) the magnitude perturbation's size (U(0, 1), times delta) and +-1
    direction; explore_signs: (V, K) +-1 for the global validation batch of a search step
    (not per training row), or None."""

    gumbel: Tensor = per_sample()
    signs: Tensor = per_sample()
    uniforms: Tensor = per_sample()
    directions: Tensor = per_sample()
    explore_signs: Tensor | None = None


@POLICIES.register("adaaug")
class AdaAug(AdaptiveHeadPolicy):
    """AdaAug (Cheung & Yeung 2022): a head on the network's features searched on validation
    loss of op-mixed features, then exploited, frozen, on a new network (--policy-from).

    Options:
        k: ops per training image when exploiting a searched policy (--policy-from)
        temperature: softmax temperature of the op probabilities when exploiting
        delta: when exploiting, each magnitude moves by up to delta (uniform, either direction)
        search_k: ops per training image during the search
        search_temperature: softmax temperature of the training images' draws during the search
        search_delta: magnitude perturbation during the search
        search_every: training steps between updates of the head on a validation batch
        head_lr: Adam learning rate of the head
        head_weight_decay: Adam weight decay of the head
        hidden_layers: hidden layers of 128 in the head (0: one linear layer, the paper's default)
        extra_ops: ops beyond the paper's (experiments), e.g. Rotate180, Flip
    """

    transferable = True
    relative_cost = 12.0  # fonts, one comparison on a shared CPU: 760.6 s a search run against none's 57.0 s

    def __init__(self, *, k: int = 2, temperature: float = 3.0, delta: float = 0.3, search_k: int = 1,
                 search_temperature: float = 1.0, search_delta: float = 0.0, search_every: int = 3,
                 head_lr: float = 1e-3, head_weight_decay: float = 1e-3, hidden_layers: int = 0,
                 extra_ops: tuple[str, ...] = ()):
        super().__init__(head_lr=head_lr, head_weight_decay=head_weight_decay, hidden_layers=hidden_layers,
                         extra_ops=extra_ops)
        self.check_k("k", k)
        self.check_k("search_k", search_k)
        for name, value in (("temperature", temperature), ("search_temperature", search_temperature)):
            check_option(representable(value) and value > 0, name, value, "a positive number")
        for name, value in (("delta", delta), ("search_delta", search_delta)):
            check_option(representable(value) and 0 <= value <= 1, name, value, "between 0 and 1")
        check_option(search_every >= 1, "search_every", search_every, "at least 1")
        self.k, self.temperature, self.delta = k, temperature, delta
        self.search_k, self.search_temperature, self.search_delta = search_k, search_temperature, search_delta
        self.search_every = search_every
        self.feature_model: nn.Module | None = None  # the search's task network, once transferred
        self.last: dict[str, float] = {}

    @property
    def searching(self) -> bool:
        """Whether the head learns (a search run), rather than being exploited, frozen."""
        return self.optimizer is not None

    def phase(self) -> tuple[int, float, float]:
        """(k, temperature, delta) of the training images in the current phase."""
        if self.searching:
            return self.search_k, self.search_temperature, self.search_delta
        return self.k, self.temperature, self.delta

    def setup(self, ctx: StepContext) -> None:
        """The head and its optimizer (`AdaptiveHeadPolicy.setup`); the search reads the task
        network's classifier (timm's get_classifier)."""
        super().setup(ctx)
        if classifier(ctx.model) is None:
            raise UserError("adaaug needs a task network with get_classifier() (the timm convention; every "
                            "registered model has one)")

    def feature_source(self, ctx: StepContext) -> nn.Module:
        return self.feature_model if self.feature_model is not None else ctx.model

    def load_transferred(self, policy_state: dict[str, Any], feature_model: nn.Module) -> None:
        """Exploit a searched policy, frozen: its head from `policy_state` (a search run's
        state_dict), reading the features of that run's task network (`feature_model`,
        loaded; or the network the state itself holds, when it was exploited before).
        Called after `setup`; the head then takes no step."""
        extra = policy_state.get("_extra_state") or {}
        if extra.get("pool") is not None and tuple(extra["pool"]) != self.pool:
            raise UserError(f"the transferred policy's op pool {extra['pool']} differs from this run's "
                            f"{list(self.pool)}")
        device = self.class_counts.device
        self.feature_model = transferred_feature_model(policy_state, feature_model).to(device)
        self.head = self.build_head(self.feature_model).to(device)
        self.optimizer = None
        own = {key: value for key, value in policy_state.items() if not key.startswith("feature_model.")}
        own["_extra_state"] = {"optimizer": None, "pool": list(self.pool)}  # the search's Adam moments stay behind
        outcome = self.load_state_dict(own, strict=False)  # the feature model's own weights are loaded already
        missing = [key for key in outcome.missing_keys if not key.startswith("feature_model.")]
        if missing or outcome.unexpected_keys:
            raise ValueError(f"the transferred state is not an AdaAug policy's (missing {missing[:3]}, "
                             f"unexpected {outcome.unexpected_keys[:3]})")

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "transferred": self.feature_model is not None}

    # -- the step ---------------------------------------------------------------------------
    def make_params(self, batch: Batch, ctx: StepContext) -> AdaAugDraws:
        """The op draws, signs and magnitude perturbations of the global batch; on a search
        step, the explore signs of the global validation batch (the run's batch size)."""
        count, ops = batch.global_size, len(self.pool)
        k = self.phase()[0]
        explore_signs = None
        if self.searching and ctx.step % self.search_every == 0:
            explore_signs = random_signs(max(ctx.batch_size or 0, count), ops)
        return AdaAugDraws(gumbel_noise(count, ops), random_signs(count, ops), torch.rand(count, k),
                           random_signs(count, k), explore_signs)

    def apply(self, batch: Batch, params: Params | None, ctx: StepContext) -> Batch:
        """Every row augmented by the phase's k ops drawn from the head (the search's current
        head, or the transferred one), at its magnitudes perturbed by up to delta."""
        assert isinstance(params, AdaAugDraws)
        if self.head is None:
            self.require_spec()
        k, temperature, delta = self.phase()
        features = self.features_of(batch.inputs, self.feature_source(ctx))
        with torch.no_grad():
            probabilities, magnitudes = self.policy_of(features, temperature)
        self.record(probabilities, magnitudes, batch.hard_targets(), ctx)
        perturbation = (params.uniforms, params.directions, delta) if delta > 0 else None
        inputs = self.exploit(batch.inputs, probabilities, magnitudes, params.gumbel, params.signs, k, perturbation)
        return Batch(inputs, batch.targets, batch.weights, dict(batch.info), batch.share)

    def after_step(self, result: StepResult, ctx: StepContext) -> dict[str, float]:
        """On a search step (after the task network's update, as the official search), one
        Adam step of the head on a validation batch's op-mixed features."""
        params = result.batch.params
        if self.searching and isinstance(params, AdaAugDraws) and params.explore_signs is not None:
            self._search(params.explore_signs, ctx)
        metrics, self.last = self.last, {}
        return metrics

    def _search(self, explore_signs: Tensor, ctx: StepContext) -> None:
        """The head's step down the validation loss of the classifier on the mixed features."""
        assert self.head is not None and self.optimizer is not None
        val = ctx.require("validation_batch", "adaaug")()
        if val.global_size > len(explore_signs):
            raise UserError(f"adaaug: the validation batch ({val.global_size} rows) is larger than the training "
                            f"batch ({len(explore_signs)}); give StepContext.batch_size the validation batch's size")
        signs = explore_signs[:val.global_size]
        signs = val.share.take(signs) if val.share is not None else signs
        model = ctx.model
        was_training = model.training
        parameters = list(self.head.parameters())
        try:
            model.eval()  # the official explore reads features in evaluation mode
            with full_precision(ctx.device), scratch_buffers(model):
                features = self.features_of(val.inputs, model)
                probabilities, magnitudes = self.policy_of(features, 1.0)  # explore at temperature 1
                mixed = explore_features(val.inputs, probabilities, magnitudes, signs,
                                         lambda images: pooled_features(model, images), self.pool)
                logits = classifier(model)(mixed)
                loss = share_of_mean(ctx.loss_fn(logits, val.targets), val.global_size, ctx.comm)
                grads = torch.autograd.grad(loss, parameters)
        finally:
            model.train(was_training)
        for parameter, grad in zip(parameters, grads):  # a rank's rows' share of the gradient, summed
            parameter.grad = grad.detach().clone()
        ctx.comm.sum_gradients(parameters)
        self.optimizer.step()
        self.last = {"search_val_loss": float(ctx.comm.sum(loss.detach()))}
