"""MetaAugment (Zhou et al., AAAI 2021): sample-aware augmentation by meta-learned loss weights.

Per step (Algorithm 1): sample an op pair and magnitudes per sample from the Eq. 5 sampler
and augment (optionally flip first and Cutout after, and M transformations per sample);
after the training forward pass, weigh each augmented sample with the policy network
P(feature, embedding; theta), normalized over the batch; take the one-step lookahead
w_hat = w - alpha sum_i w_i grad L_i(w) and update theta and alpha on a validation batch
(Eqs. 2-3); return the weights of the *updated* policy network for the real update of w
(Eq. 4), detached so that w's update never differentiates through P; record the outputs in
the sampler, which refreshes its distribution every s steps.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from metaaugment.batch import Batch, Params, Share, per_sample
from metaaugment.imageops.cutout import apply_cutout, draw_cutout
from metaaugment.imageops.flip import apply_flips, draw_flips
from metaaugment.infra.errors import UserError, check_option, representable
from metaaugment.parallel.comm import Communicator
from metaaugment.policy import BatchPolicy, ForwardOutput, StepContext, StepResult
from metaaugment.registry import POLICIES
from metaaugment.sample_aware.figures import sampler_heatmap, select_extremes, weighted_samples_grid
from metaaugment.sample_aware.lookahead import (
    LookaheadGradients,
    fast_lookahead,
    higher_lookahead,
    last_layer_lookahead,
)
from metaaugment.sample_aware.ops import ALL_OPS, MAGNITUDE_FREE, OPS, apply_transformations
from metaaugment.sample_aware.policy_network import PolicyNetwork, normalize_weights, reject_below_mean
from metaaugment.sample_aware.transformations import TransformationSampler, embed_transformations
from metaaugment.steptools.features import classifier, feature_width, pooled_features, transferred_feature_model
from metaaugment.steptools.precision import full_precision
from metaaugment.steptools.scratch import replayed, scratch_buffers


@dataclass
class TransformationParams(Params):
    """MetaAugment's draws for the copies' global batch (M x B rows, copy-major).

    pairs: (M*B, 2) int64 op indices into the pool; magnitudes, signs: (M*B, 2);
    flips: (M*B,) bool, or None without `flip`; top, left: (M*B,) the cutout squares' corners,
    or None without `cutout`. The loss-weighting step reads pairs and magnitudes back."""

    pairs: Tensor = per_sample()
    magnitudes: Tensor = per_sample()
    signs: Tensor = per_sample()
    flips: Tensor | None = per_sample(default=None)
    top: Tensor | None = per_sample(default=None)
    left: Tensor | None = per_sample(default=None)

ENGINES = ("fast", "fast-jvp", "higher", "last-layer")


OWN_EXTRACTOR_WIDTH = 32


def own_feature_extractor(channels: int, width: int = OWN_EXTRACTOR_WIDTH) -> torch.nn.Module:
    """A small conv net giving the policy network its own features: (B, channels, H, W) images
    -> (B, width), two conv-BN-ReLU stages and global average pooling."""
    return torch.nn.Sequential(torch.nn.Conv2d(channels, width, 3, padding=1), torch.nn.BatchNorm2d(width),
                               torch.nn.ReLU(), torch.nn.Conv2d(width, width, 3, padding=1),
                               torch.nn.BatchNorm2d(width), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten())


def _takes_a_size(function: Any) -> bool:
    """Whether a loop's validation_batch takes the size argument (a user's may take none)."""
    try:
        return any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
                   for p in inspect.signature(function).parameters.values())
    except (TypeError, ValueError):
        return False


def gather_rows(tensor: Tensor, device: torch.device, comm: Communicator) -> Tensor:
    """The global batch's rows of a per-sample tensor kept on the host (the op pairs): gathered
    on `device` (NCCL gathers device tensors), returned on the host."""
    if not comm.distributed:
        return tensor
    return comm.gather_rows(tensor.to(device)).to(tensor.device)


@POLICIES.register("metaaugment")
class MetaAugment(BatchPolicy):
    """MetaAugment (Zhou et al. 2021): a policy network meta-learns per-sample loss weights of sampled op pairs.

    Options:
        engine: the lookahead: fast (exact, default), fast-jvp, higher (the reference) or last-layer
            (approximate, cheaper)
        policy_lr: Adam learning rate of the policy network theta and of alpha
        alpha: initial lookahead step size alpha (learned); default: the task optimizer's learning rate
        window: sampler: steps of losses its op-pair scores average over
        refresh: sampler: steps between updates of its distribution
        epsilon: sampler: probability of drawing an op pair uniformly (exploration)
        embedding: feed the policy network the transformation's embedding beside the features
        flip: random horizontal flips before the op pair (for data whose pipeline does not flip; CIFAR's does)
        cutout: cutout square side in pixels after the op pair; 0: none
        copies: augmented copies of each sample per step (the paper's ImageNet setting: 4)
        extra_ops: ops beyond the paper's 14 (experiments), e.g. Rotate180
        lookahead_steps: task-network steps unrolled in the lookahead (more than 1 only with engine=higher)
        extractor: shared: the policy reads the task network's features; own: its own small extractor (Table 5)
        val_batch_size: n_val, the validation mini-batch of the lookahead; default: the training batch size
        lookahead_optimizer: sgd: the paper's plain step; task: the task optimizer's SGD update (momentum,
            weight decay)
        meta_every: meta-update theta and alpha every k steps; between them samples are weighed by the current
            network
        reject_below_mean: the paper's ablation (§5.1): samples weighted below the batch's mean weight get weight
            0 in the task network's update (the policy still learns from all); the paper found it worse
    """

    relative_cost = 2.3  # fonts, fast engine: 77.6 s a run against none's 34.4 s (docs/results.md)

    def __init__(self, *, engine: str = "fast", policy_lr: float = 1e-3, alpha: float | None = None,
                 window: int = 100, refresh: int = 10, epsilon: float = 0.1, embedding: bool = True,
                 flip: bool = False, cutout: int = 0, copies: int = 1, extra_ops: tuple[str, ...] = (),
                 lookahead_steps: int = 1, extractor: str = "shared", val_batch_size: int | None = None,
                 lookahead_optimizer: str = "sgd", meta_every: int = 1, reject_below_mean: bool = False):
        super().__init__()
        check_option(extractor in ("shared", "own"), "extractor", extractor, "shared or own")
        check_option(engine in ENGINES, "engine", engine, f"one of {', '.join(ENGINES)}")
        extra = [op for op in ALL_OPS if op not in OPS]
        check_option(all(op in extra for op in extra_ops), "extra_ops", extra_ops, f"among {', '.join(extra)}")
        check_option(representable(policy_lr) and policy_lr > 0, "policy_lr", policy_lr, "a positive number")
        check_option(alpha is None or (representable(alpha) and alpha > 0), "alpha", alpha, "a positive number")
        check_option(window >= 1, "window", window, "at least 1")
        check_option(refresh >= 1, "refresh", refresh, "at least 1")
        check_option(0 <= epsilon <= 1, "epsilon", epsilon, "in [0, 1]")
        check_option(cutout >= 0, "cutout", cutout, "a non-negative number of pixels")
        check_option(copies >= 1, "copies", copies, "at least 1")
        check_option(lookahead_steps >= 1, "lookahead_steps", lookahead_steps, "at least 1")
        check_option(lookahead_steps == 1 or engine == "higher", "lookahead_steps", lookahead_steps,
                     "1 unless engine=higher (the fast engines are exact for one step)")
        check_option(val_batch_size is None or val_batch_size >= 1, "val_batch_size", val_batch_size, "at least 1")
        check_option(lookahead_optimizer in ("sgd", "task"), "lookahead_optimizer", lookahead_optimizer, "sgd or task")
        check_option(meta_every >= 1, "meta_every", meta_every, "at least 1")
        # the meta-interval: theta and alpha are meta-updated every meta_every steps (Algorithm
        # 1 is meta_every=1); the steps between weigh samples with the current policy network
        self.meta_every = meta_every
        self.reject_below_mean = reject_below_mean
        # sgd: the paper's plain lookahead step; task: the task network's own SGD update
        # (momentum buffer, Nesterov, weight decay) at rate alpha
        self.lookahead_optimizer = lookahead_optimizer
        self.engine, self.policy_lr, self.alpha_init = engine, policy_lr, alpha
        # n_val of Algorithm 1: the validation mini-batch of the lookahead (default: the
        # trainer's validation batch, as large as the training batch)
        self.val_batch_size = val_batch_size
        self.flip, self.cutout, self.copies, self.lookahead_steps = flip, cutout, copies, lookahead_steps
        self.use_embedding, self.extractor = embedding, extractor
        self.pool = OPS + tuple(extra_ops)
        self.sampler = TransformationSampler(window=window, refresh=refresh, epsilon=epsilon, num_ops=len(self.pool))
        self.log_alpha = torch.nn.Parameter(torch.zeros(()))
        # theta, built by setup: the policy network and, for the Table 5 ablation
        # (extractor=own), its own feature extractor instead of the task network's features
        self.network: PolicyNetwork | None = None
        self.own_extractor: torch.nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.feature_model: torch.nn.Module | None = None  # the trained task network, when transferred
        self.last: dict[str, Tensor] = {}

    def setup(self, ctx: StepContext) -> None:
        """Build theta (sized by the task network's feature width, or the own extractor's),
        alpha (the `alpha` option, else the task optimizer's learning rate) and their Adam
        optimizer, on ctx.device."""
        super().setup(ctx)
        if self.lookahead_optimizer == "task" and not isinstance(ctx.optimizer, torch.optim.SGD):
            raise UserError(f"metaaugment lookahead_optimizer=task follows the task network's torch.optim.SGD; "
                            f"this loop's optimizer is {type(ctx.optimizer).__name__}")
        if self.extractor == "own":
            self.own_extractor = own_feature_extractor(ctx.spec.channels)
            width = OWN_EXTRACTOR_WIDTH
        else:
            width = feature_width(ctx.model, ctx.spec, needed_by="metaaugment (or --set extractor=own)")
        self.network = PolicyNetwork(width, use_embedding=self.use_embedding, embedding_dim=2 * len(self.pool))
        start = self.alpha_init if self.alpha_init is not None else (
            ctx.optimizer.param_groups[0]["lr"] if ctx.optimizer is not None else 0.1)
        with torch.no_grad():
            self.log_alpha.fill_(float(torch.log(torch.tensor(start))))
        self.to(ctx.device)  # before the optimizer takes the parameters
        theta = list(self.network.parameters()) + (list(self.own_extractor.parameters()) if self.own_extractor else [])
        self.optimizer = torch.optim.Adam(theta + [self.log_alpha], lr=self.policy_lr)

    transferable = True

    def load_transferred(self, policy_state: dict[str, Any], feature_model: torch.nn.Module) -> None:
        """Reuse a trained MetaAugment policy, frozen: its policy network, alpha and sampler
        distribution from `policy_state` (its state_dict), with the task network it was
        trained beside (`feature_model`, already loaded) as the source of its features.
        Called after `setup`; the policy then takes no meta-step."""
        spec = self.require_spec()
        saved_pool = (policy_state.get("_extra_state") or {}).get("pool")
        if saved_pool is not None and tuple(saved_pool) != self.pool:
            raise UserError(f"the transferred policy's op pool {saved_pool} differs from this run's {list(self.pool)}")
        device = self.log_alpha.device
        self.feature_model = transferred_feature_model(policy_state, feature_model).to(device)
        if self.own_extractor is None:  # sized for the transferred task network's features
            width = feature_width(self.feature_model, spec, needed_by="metaaugment")
            self.network = PolicyNetwork(width, use_embedding=self.use_embedding,
                                         embedding_dim=2 * len(self.pool)).to(device)
        self.optimizer = None
        own = {key: value for key, value in policy_state.items() if not key.startswith("feature_model.")}
        outcome = self.load_state_dict(own, strict=False)  # the feature model's own weights are loaded already
        missing = [key for key in outcome.missing_keys if not key.startswith("feature_model.")]
        if missing or outcome.unexpected_keys:
            raise ValueError(f"the transferred state is not a MetaAugment policy's (missing {missing[:3]}, "
                             f"unexpected {outcome.unexpected_keys[:3]})")

    # -- augmentation ---------------------------------------------------------------------
    def params_share(self, batch: Batch) -> Share | None:
        """The draws are for the copies' global batch (copy-major: M global batches)."""
        if batch.share is None or self.copies == 1:
            return batch.share
        return batch.share.repeated(self.copies)

    def make_params(self, batch: Batch, ctx: StepContext) -> TransformationParams:
        """For each of the M copies of every row of the global batch: a flip (optionally), a
        sampled op pair with its magnitudes and signs, a cutout square (optionally)."""
        count = self.copies * batch.global_size
        height, width = batch.inputs.shape[-2:]
        flips = draw_flips(count) if self.flip else None
        pairs, magnitudes, signs = self.sampler.sample(count)
        top, left = draw_cutout(count, height, width, self.cutout, "center") if self.cutout else (None, None)
        return TransformationParams(pairs, magnitudes, signs, flips, top, left)

    def apply(self, batch: Batch, params: Params | None, ctx: StepContext) -> Batch:
        """The M copies of each row (copy-major), each flipped (optionally), transformed by its
        op pair and cut out (optionally), with this batch's rows of the draws."""
        assert isinstance(params, TransformationParams)
        inputs, targets = batch.inputs, batch.targets
        if self.copies > 1:  # Multiple Transformations: each sample augmented M times
            inputs = inputs.repeat(self.copies, *([1] * (inputs.dim() - 1)))
            targets = targets.repeat(self.copies, *([1] * (targets.dim() - 1)))
        if params.flips is not None:
            inputs = apply_flips(inputs, params.flips)
        # pairs stay on the CPU: ops are grouped on the host, images indexed on their device
        inputs = apply_transformations(inputs, params.pairs, params.magnitudes, params.signs, self.pool)
        if params.top is not None:
            inputs = apply_cutout(inputs, self.cutout, params.top, params.left)
        return Batch(inputs, targets, None, dict(batch.info), self.params_share(batch))

    # -- the bilevel step -----------------------------------------------------------------
    @property
    def alpha(self) -> Tensor:
        """The learnable lookahead learning rate (kept positive through its logarithm)."""
        return self.log_alpha.exp()

    def _validation_batch(self, ctx: StepContext) -> tuple[Batch, int]:
        """This rank's rows of the lookahead's validation batch (its first n_val rows when
        `val_batch_size` is set), and the global batch's size."""
        n = self.val_batch_size
        val = ctx.validation_batch(n) if n is not None and _takes_a_size(ctx.validation_batch) else \
            ctx.validation_batch()
        if n is not None and val.share is None and n < len(val):  # a loop's own validation_batch of another size
            val = val.rows(slice(0, n))
        return val, val.global_size

    def _lookahead(self, ctx: StepContext, batch: Batch, output: ForwardOutput, weights: Tensor) -> LookaheadGradients:
        # always in float32: the finite difference's parameter step of 1e-3 is below bfloat16's
        # resolution, and the lookahead's gradients are differences of nearby losses
        with full_precision(ctx.device):
            return self._lookahead_float32(ctx, batch, output, weights)

    def _lookahead_float32(self, ctx: StepContext, batch: Batch, output: ForwardOutput,
                           weights: Tensor) -> LookaheadGradients:
        val, val_count = self._validation_batch(ctx)
        model, loss_fn = ctx.model, ctx.loss_fn
        optimizer = ctx.optimizer if self.lookahead_optimizer == "task" else None
        if self.engine == "higher":
            return higher_lookahead(model, weights, self.alpha, batch.inputs, batch.targets, val.inputs, val.targets,
                                    loss_fn, steps=self.lookahead_steps, optimizer=optimizer, val_count=val_count,
                                    comm=ctx.comm, random_state=output.random_state)
        if self.engine == "last-layer":
            head = classifier(model)
            if head is None:
                raise UserError("metaaugment engine=last-layer needs a model with get_classifier() "
                                "(the timm convention)")
            with torch.no_grad(), scratch_buffers(model):  # validation data must not move BN statistics
                val_features = pooled_features(model, val.inputs)
            return last_layer_lookahead(head, output.features.float(), weights, self.alpha, batch.targets, val_features,
                                        val.targets, loss_fn, optimizer=optimizer, val_count=val_count,
                                        comm=ctx.comm)
        train_losses, random_state = output.losses, output.random_state
        if ctx.precision != "32":  # the training forward ran under autocast: again in float32 (one more forward)
            with scratch_buffers(model), replayed(random_state):  # with the training forward's dropout masks
                train_losses = loss_fn(model(batch.inputs), batch.targets)
        return fast_lookahead(model, train_losses, weights, self.alpha, batch.inputs, batch.targets, val.inputs,
                              val.targets, loss_fn, mode="jvp" if self.engine == "fast-jvp" else "fd",
                              optimizer=optimizer, val_count=val_count, comm=ctx.comm,
                              random_state=random_state)

    def _features(self, batch: Batch, output: ForwardOutput | None) -> Tensor:
        """What the policy network sees: its own extractor's features of the augmented images
        (differentiable in theta), or the task network's features detached (P is not
        differentiated with respect to w)."""
        if self.own_extractor is not None:
            return self.own_extractor(batch.inputs)
        if self.feature_model is not None:
            return pooled_features(self.feature_model, batch.inputs)
        if output is None or output.features is None:
            raise UserError("metaaugment weighs samples by the task network's features: use a model with "
                            "forward_features / forward_head (every registered model has them), or --set extractor=own")
        return output.features.detach().float()

    def _transferred_weights(self, batch: Batch) -> Tensor:
        with torch.no_grad():
            features = self._features(batch, None)
            embeddings = embed_transformations(batch.params.pairs, batch.params.magnitudes, self.pool).to(features)
            return normalize_weights(self.network(features, embeddings))

    def loss_weights(self, batch: Batch, output: ForwardOutput, ctx: StepContext) -> Tensor:
        if self.feature_model is not None:  # transfer: frozen policy, features of the trained task network
            return self._transferred_weights(batch)
        ctx.require("validation_batch", "metaaugment")
        if self.network is None or self.optimizer is None:
            self.require_spec()  # setup was not called
        assert self.network is not None and self.optimizer is not None
        features = self._features(batch, output)
        embeddings = embed_transformations(batch.params.pairs, batch.params.magnitudes, self.pool).to(features)
        # under torchrun: normalized over the global batch, so every rank's share of the
        # lookahead and of theta's gradient is that of one process
        if ctx.step % self.meta_every:
            return self._weights_without_lookahead(batch, output, features, embeddings, ctx.comm)
        comm = ctx.comm
        weights = normalize_weights(self.network(features, embeddings), total=comm.sum_differentiable)
        grads = self._lookahead(ctx, batch, output, weights)
        self.optimizer.zero_grad(set_to_none=True)
        weights.backward(grads.weights)
        comm.sum_gradients(self.network.parameters())
        if self.own_extractor is not None:
            comm.sum_gradients(self.own_extractor.parameters())
        # dL/dlog(alpha) = dL/dalpha * alpha
        self.log_alpha.grad = (grads.alpha * self.alpha.detach()).to(self.log_alpha)
        self.optimizer.step()
        with torch.no_grad():  # Eq. 4 order: the real update uses the updated policy network
            if self.own_extractor is not None:
                features = self._features(batch, output)
            outputs = self.network(features, embeddings)
            final = self._update_weights(outputs, comm)
        # the sampler learns from the global batch: every rank records the same statistics
        self.sampler.record(gather_rows(batch.params.pairs, outputs.device, comm), comm.gather_rows(outputs))
        # what the weighted-samples figure needs, kept on the device: the extremes are picked
        # and copied to the host only when the figure is drawn, not at every step
        self.last = {"val_loss": grads.val_loss, "outputs": outputs.detach(), "images": batch.inputs.detach(),
                     "weights": final, "losses": output.losses.detach(), "labels": batch.hard_targets(),
                     "pairs": batch.params.pairs, "magnitudes": batch.params.magnitudes}
        return final

    def _update_weights(self, outputs: Tensor, comm: Communicator) -> Tensor:
        """The weights of the task network's update (B,): the policy's outputs normalized over
        the global batch, those below the mean set to 0 with `reject_below_mean`."""
        weights = normalize_weights(outputs, total=comm.sum).detach()
        return reject_below_mean(weights, total=comm.sum) if self.reject_below_mean else weights

    def _weights_without_lookahead(self, batch: Batch, output: ForwardOutput, features: Tensor,
                                   embeddings: Tensor, comm: Communicator) -> Tensor:
        """A step between meta-updates: the current policy network's weights, recorded by the
        sampler as at a meta-update; no lookahead, theta and alpha unchanged."""
        assert self.network is not None
        with torch.no_grad():
            outputs = self.network(features, embeddings)
            final = self._update_weights(outputs, comm)
        self.sampler.record(gather_rows(batch.params.pairs, outputs.device, comm), comm.gather_rows(outputs))
        self.last = {**self.last, "outputs": outputs.detach(), "images": batch.inputs.detach(), "weights": final,
                     "losses": output.losses.detach(), "labels": batch.hard_targets(),
                     "pairs": batch.params.pairs, "magnitudes": batch.params.magnitudes}
        return final

    def after_step(self, result: StepResult, ctx: StepContext) -> dict[str, float]:
        if not self.last or "val_loss" not in self.last:
            return {}
        return {"alpha": self.alpha.item(), "lookahead_val_loss": self.last["val_loss"],
                "mean_policy_output": float(self.last["outputs"].mean())}

    # -- state ----------------------------------------------------------------------------
    def get_extra_state(self) -> dict[str, Any]:
        optimizer = self.optimizer.state_dict() if self.optimizer is not None else None
        return {"optimizer": optimizer, "pool": list(self.pool)}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if self.feature_model is not None:  # transferred policies are frozen: no optimizer
            return
        if state.get("optimizer") is not None:
            if self.optimizer is None:
                raise RuntimeError("call MetaAugment.setup(ctx) before load_state_dict")
            self.optimizer.load_state_dict(state["optimizer"])

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "engine": self.engine, "policy_lr": self.policy_lr,
                "window": self.sampler.window, "refresh": self.sampler.refresh, "epsilon": self.sampler.epsilon,
                "embedding": self.use_embedding, "flip": self.flip, "cutout": self.cutout,
                "copies": self.copies, "pool": list(self.pool), "lookahead_steps": self.lookahead_steps,
                "extractor": self.extractor, "val_batch_size": self.val_batch_size,
                "lookahead_optimizer": self.lookahead_optimizer, "meta_every": self.meta_every,
                "reject_below_mean": self.reject_below_mean,
                "transferred": self.feature_model is not None}

    def write_artifacts(self, folder: Path) -> list[Path]:
        """sampler_heatmap.png (the learned distribution, paper Fig. 2) and
        weighted_samples.png (last batch's highest- and lowest-weighted samples, Figs. 3-4)."""
        heatmap = Path(folder) / "sampler_heatmap.png"
        sampler_heatmap(self.sampler.probabilities.cpu(), self.pool, heatmap)
        if "images" not in self.last:
            return [heatmap]
        keep = select_extremes(self.last["weights"], 8).cpu()
        last = {key: value.detach().cpu()[keep] for key, value in self.last.items()
                if key in ("images", "weights", "losses", "labels", "pairs", "magnitudes")}

        def op(index: int, magnitude: float) -> str:
            name = self.pool[index]
            return name if name in MAGNITUDE_FREE else f"{name}({magnitude:.1f})"

        captions = [f"{op(int(j), m1)}+{op(int(k), m2)}"
                    for (j, k), (m1, m2) in zip(last["pairs"].tolist(), last["magnitudes"].tolist())]
        grid = Path(folder) / "weighted_samples.png"
        weighted_samples_grid(last["images"], last["weights"], last["losses"], last["labels"], captions, grid)
        return [heatmap, grid]

