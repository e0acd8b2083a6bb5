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

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from metaaugment.batch import Batch
from metaaugment.errors import UserError, check_option
from metaaugment.models import scratch_buffers
from metaaugment.policy import AugmentationPolicy, ForwardOutput, StepContext, StepResult
from metaaugment.registry import POLICIES
from metaaugment.sample_aware.figures import sampler_heatmap, select_extremes, weighted_samples_grid
from metaaugment.sample_aware.lookahead import (
    LookaheadGradients,
    fast_lookahead,
    higher_lookahead,
    last_layer_lookahead,
)
from metaaugment.sample_aware.ops import ALL_OPS, MAGNITUDE_FREE, OPS, apply_transformations
from metaaugment.sample_aware.policy_network import PolicyNetwork, normalize_weights
from metaaugment.sample_aware.transformations import TransformationSampler, embed_transformations
from metaaugment.spec import TaskSpec

ENGINES = ("fast", "fast-jvp", "higher", "last-layer")


def random_flip(images: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Horizontal flip of each image with probability 1/2. images (B, C, H, W)."""
    flip = torch.rand(images.shape[0], generator=generator) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1).to(images.device), images.flip(-1), images)


def random_cutout(images: Tensor, size: int, generator: torch.Generator | None = None) -> Tensor:
    """Zero one size x size square per image at a uniform center (DeVries & Taylor 2017;
    the square may be clipped by the border). images (B, C, H, W)."""
    b, _, h, w = images.shape
    top = torch.randint(h, (b,), generator=generator).view(-1, 1, 1) - size // 2
    left = torch.randint(w, (b,), generator=generator).view(-1, 1, 1) - size // 2
    ys, xs = torch.arange(h).view(1, -1, 1), torch.arange(w).view(1, 1, -1)
    inside = (ys >= top) & (ys < top + size) & (xs >= left) & (xs < left + size)
    return images * (~inside).unsqueeze(1).to(images.device, images.dtype)


def own_feature_extractor(width: int = 32) -> torch.nn.Module:
    """A small conv net giving the policy network its own features (B, width): two
    conv-BN-ReLU stages and global average pooling; its input channels are sized lazily."""
    return torch.nn.Sequential(torch.nn.LazyConv2d(width, 3, padding=1), torch.nn.BatchNorm2d(width), torch.nn.ReLU(),
                               torch.nn.Conv2d(width, width, 3, padding=1), torch.nn.BatchNorm2d(width), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())


@POLICIES.register("metaaugment")
class MetaAugment(AugmentationPolicy):
    """MetaAugment (Zhou et al. 2021): a policy network meta-learns per-sample loss weights of sampled op pairs."""

    needs_model = True
    needs_validation = True

    def __init__(self, *, engine: str = "fast", policy_lr: float = 1e-3, alpha: float | None = None,
                 window: int = 100, refresh: int = 10, epsilon: float = 0.1, embedding: bool = True,
                 flip: bool = False, cutout: int = 0, copies: int = 1, extra_ops: tuple[str, ...] = (),
                 lookahead_steps: int = 1, transfer_from: str | None = None, extractor: str = "shared",
                 val_batch_size: int | None = None):
        super().__init__()
        check_option(extractor in ("shared", "own"), "extractor", extractor, "shared or own")
        check_option(engine in ENGINES, "engine", engine, f"one of {', '.join(ENGINES)}")
        extra = [op for op in ALL_OPS if op not in OPS]
        check_option(all(op in extra for op in extra_ops), "extra_ops", extra_ops, f"among {', '.join(extra)}")
        check_option(math.isfinite(policy_lr) and policy_lr > 0, "policy_lr", policy_lr, "a positive number")
        check_option(alpha is None or (math.isfinite(alpha) and alpha > 0), "alpha", alpha, "a positive number")
        check_option(window >= 1, "window", window, "at least 1")
        check_option(refresh >= 1, "refresh", refresh, "at least 1")
        check_option(0 <= epsilon <= 1, "epsilon", epsilon, "in [0, 1]")
        check_option(cutout >= 0, "cutout", cutout, "a non-negative number of pixels")
        check_option(copies >= 1, "copies", copies, "at least 1")
        check_option(lookahead_steps >= 1, "lookahead_steps", lookahead_steps, "at least 1")
        check_option(lookahead_steps == 1 or engine == "higher", "lookahead_steps", lookahead_steps,
                     "1 unless engine=higher (the fast engines are exact for one step)")
        check_option(val_batch_size is None or val_batch_size >= 1, "val_batch_size", val_batch_size, "at least 1")
        self.engine, self.policy_lr, self.alpha_init = engine, policy_lr, alpha
        # n_val of Algorithm 1: the validation mini-batch of the lookahead (default: the
        # trainer's validation batch, as large as the training batch)
        self.val_batch_size = val_batch_size
        self.flip, self.cutout, self.copies, self.lookahead_steps = flip, cutout, copies, lookahead_steps
        self.pool = OPS + tuple(extra_ops)
        self.sampler = TransformationSampler(window=window, refresh=refresh, epsilon=epsilon, num_ops=len(self.pool))
        self.network = PolicyNetwork(None, use_embedding=embedding, embedding_dim=2 * len(self.pool))
        # Table 5 ablation: the policy's own feature extractor (part of theta) instead of the
        # task network's features
        self.own_extractor = own_feature_extractor() if extractor == "own" else None
        self.log_alpha = torch.nn.Parameter(torch.zeros(()))
        self.register_buffer("alpha_ready", torch.zeros((), dtype=torch.bool))
        self.optimizer: torch.optim.Optimizer | None = None
        self._pending_optimizer_state: dict[str, Any] | None = None
        self.last: dict[str, Tensor] = {}
        self.transfer_from = transfer_from
        self.feature_model: torch.nn.Module | None = None  # the trained task network, when transferring

    def setup(self, spec: TaskSpec) -> None:
        super().setup(spec)
        if self.transfer_from is not None:
            self._load_transfer(Path(self.transfer_from), spec)

    def _load_transfer(self, run: Path, spec: TaskSpec) -> None:
        """Load a finished MetaAugment run's policy network, sampler distribution and task
        network (the feature extractor the policy network was trained on), all frozen."""
        from metaaugment.registry import create_model
        from metaaugment.run.folder import RunDirectory

        folder = RunDirectory(run)
        if not folder.finished or not folder.checkpoint_path.is_file():
            raise UserError(f"--policy-from {run}: not a finished run folder (no results.json / checkpoint.pt)")
        config = folder.read_config()
        if config.get("policy") != self.name:
            raise UserError(f"--policy-from {run}: that run used policy '{config.get('policy')}', not metaaugment")
        state = torch.load(folder.checkpoint_path, map_location="cpu", weights_only=False)
        model = create_model(config["model"], spec, **config.get("model_options", {}))
        model.load_state_dict(state["model"])
        self.feature_model = model.eval().requires_grad_(False)
        policy_state = {k: v for k, v in state["policy"].items() if not k.startswith("feature_model.")}
        saved_pool = (state["policy"].get("_extra_state") or {}).get("pool")
        if saved_pool is not None and tuple(saved_pool) != self.pool:
            raise UserError(f"--policy-from {run}: its op pool {saved_pool} differs from this run's")
        self.load_state_dict(policy_state, strict=False)

    # -- augmentation ---------------------------------------------------------------------
    def augment(self, batch: Batch, ctx: StepContext) -> Batch:
        inputs, targets = batch.inputs, batch.targets
        if self.copies > 1:  # Multiple Transformations: each sample augmented M times
            inputs = inputs.repeat(self.copies, *([1] * (inputs.dim() - 1)))
            targets = targets.repeat(self.copies, *([1] * (targets.dim() - 1)))
        if self.flip:
            inputs = random_flip(inputs)
        pairs, magnitudes, signs = self.sampler.sample(inputs.shape[0])
        # pairs stay on the CPU: ops are grouped on the host, images indexed on their device
        inputs = apply_transformations(inputs, pairs, magnitudes, signs, self.pool)
        if self.cutout:
            inputs = random_cutout(inputs, self.cutout)
        info = {**batch.info, "pairs": pairs, "magnitudes": magnitudes}
        return Batch(inputs, targets, None, info)

    # -- the bilevel step -----------------------------------------------------------------
    @property
    def alpha(self) -> Tensor:
        """The learnable lookahead learning rate (kept positive through its logarithm)."""
        return self.log_alpha.exp()

    def _ensure_optimizer(self, ctx: StepContext, features: Tensor, embeddings: Tensor) -> None:
        if self.optimizer is not None:
            return
        with torch.no_grad():
            self.network(features[:1], embeddings[:1])  # size the lazy layer
            if not bool(self.alpha_ready):
                start = self.alpha_init if self.alpha_init is not None else (
                    ctx.optimizer.param_groups[0]["lr"] if ctx.optimizer is not None else 0.1)
                self.log_alpha.fill_(float(torch.log(torch.tensor(start))))
                self.alpha_ready.fill_(True)
        theta = list(self.network.parameters()) + (list(self.own_extractor.parameters()) if self.own_extractor else [])
        self.optimizer = torch.optim.Adam(theta + [self.log_alpha], lr=self.policy_lr)
        if self._pending_optimizer_state is not None:
            self.optimizer.load_state_dict(self._pending_optimizer_state)
            self._pending_optimizer_state = None

    def _validation_batch(self, ctx: StepContext) -> Batch:
        val = ctx.validation_batch()
        n = self.val_batch_size
        if n is None or n >= len(val):
            return val
        return val.replace(inputs=val.inputs[:n], targets=val.targets[:n],
                           weights=None if val.weights is None else val.weights[:n])

    def _lookahead(self, ctx: StepContext, batch: Batch, output: ForwardOutput, weights: Tensor) -> LookaheadGradients:
        val = self._validation_batch(ctx)
        model, loss_fn = ctx.model, ctx.loss_fn
        if self.engine == "higher":
            return higher_lookahead(model, weights, self.alpha, batch.inputs, batch.targets, val.inputs, val.targets,
                                    loss_fn, steps=self.lookahead_steps)
        if self.engine == "last-layer":
            with torch.no_grad(), scratch_buffers(model):  # validation data must not move BN statistics
                val_features = model.forward_features(val.inputs)
            head = getattr(model, "head", None)
            if not isinstance(head, torch.nn.Module):
                raise UserError("metaaugment engine=last-layer needs a model with a `head` module (FeatureClassifier)")
            return last_layer_lookahead(head, output.features, weights, self.alpha, batch.targets, val_features,
                                        val.targets, loss_fn)
        return fast_lookahead(model, output.losses, weights, self.alpha, batch.inputs, batch.targets, val.inputs,
                              val.targets, loss_fn, mode="jvp" if self.engine == "fast-jvp" else "fd")

    def _features(self, batch: Batch, output: ForwardOutput | None) -> Tensor:
        """What the policy network sees: its own extractor's features of the augmented images
        (differentiable in theta), or the task network's features detached (P is not
        differentiated with respect to w)."""
        if self.own_extractor is not None:
            return self.own_extractor(batch.inputs)
        if self.feature_model is not None:
            return self.feature_model.forward_features(batch.inputs)
        if output is None or output.features is None:
            raise UserError("metaaugment weighs samples by the task network's features: use a model with "
                            "forward_features / forward_head (every registered model has them), or --set extractor=own")
        return output.features.detach()

    def _transferred_weights(self, batch: Batch) -> Tensor:
        with torch.no_grad():
            features = self._features(batch, None)
            embeddings = embed_transformations(batch.info["pairs"], batch.info["magnitudes"], self.pool).to(features)
            return normalize_weights(self.network(features, embeddings))

    def loss_weights(self, batch: Batch, output: ForwardOutput, ctx: StepContext) -> Tensor:
        if self.feature_model is not None:  # transfer: frozen policy, features of the trained task network
            return self._transferred_weights(batch)
        ctx.require("validation_batch", "metaaugment")
        features = self._features(batch, output)
        embeddings = embed_transformations(batch.info["pairs"], batch.info["magnitudes"], self.pool).to(features)
        self._ensure_optimizer(ctx, features, embeddings)
        assert self.optimizer is not None
        weights = normalize_weights(self.network(features, embeddings))
        grads = self._lookahead(ctx, batch, output, weights)
        self.optimizer.zero_grad(set_to_none=True)
        weights.backward(grads.weights)
        # dL/dlog(alpha) = dL/dalpha * alpha
        self.log_alpha.grad = (grads.alpha * self.alpha.detach()).to(self.log_alpha)
        self.optimizer.step()
        with torch.no_grad():  # Eq. 4 order: the real update uses the updated policy network
            if self.own_extractor is not None:
                features = self._features(batch, output)
            outputs = self.network(features, embeddings)
        self.sampler.record(batch.info["pairs"], outputs)
        final = normalize_weights(outputs).detach()
        # what the weighted-samples figure needs, kept on the device: the extremes are picked
        # and copied to the host only when the figure is drawn, not at every step
        self.last = {"val_loss": grads.val_loss, "outputs": outputs.detach(), "images": batch.inputs.detach(),
                     "weights": final, "losses": output.losses.detach(), "labels": batch.hard_targets(),
                     "pairs": batch.info["pairs"], "magnitudes": batch.info["magnitudes"]}
        return final

    def after_step(self, result: StepResult, ctx: StepContext) -> dict[str, float]:
        if not self.last:
            return {}
        return {"alpha": self.alpha.item(), "lookahead_val_loss": self.last["val_loss"],
                "mean_policy_output": float(self.last["outputs"].mean())}

    # -- state ----------------------------------------------------------------------------
    def get_extra_state(self) -> dict[str, Any]:
        optimizer = self.optimizer.state_dict() if self.optimizer is not None else self._pending_optimizer_state
        return {"optimizer": optimizer, "pool": list(self.pool)}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if self.feature_model is not None:  # transferred policies are frozen: no optimizer
            return
        self._pending_optimizer_state = state.get("optimizer")
        self.optimizer = None  # rebuilt (and loaded) at the next step, once the network is sized

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "engine": self.engine, "policy_lr": self.policy_lr,
                "window": self.sampler.window, "refresh": self.sampler.refresh, "epsilon": self.sampler.epsilon,
                "embedding": self.network.use_embedding, "flip": self.flip, "cutout": self.cutout,
                "copies": self.copies, "pool": list(self.pool), "lookahead_steps": self.lookahead_steps,
                "transfer_from": self.transfer_from, "extractor": "own" if self.own_extractor is not None else "shared",
                "val_batch_size": self.val_batch_size}

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

