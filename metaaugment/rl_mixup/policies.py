"""RL-Mixup's policies (Luu, Huang, Wang): saliency-guided patch mixup with a random or fixed
percentile (the paper's control, section 5.5), and with the percentile per sample chosen by a
PPO agent rewarded by validation accuracy, inside one training run.

RL-Mixup through the policy hooks (Algorithm 1):
- augment: saliency maps of the batch (the observation), one action per sample from the
  agent, q = the action's percentile, patch mixup (Eqs. 1-4);
- after_step: every t_reward steps of an epoch, v = accuracy on a random 10% of the
  validation split and r = (k / K)(v - V) (Eq. 5), then V = v; otherwise r = 0; the step
  (observation, action, reward) goes into the agent's rollout buffer;
- on_epoch_end: an epoch is an episode; once the buffer holds two episodes the agent makes
  one PPO-Clip update. The epoch's action histogram, rewards and PPO losses are returned
  as metrics (the trainer writes them to metrics.jsonl as policy_*).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from metaaugment.batch import Batch, Params, per_sample
from metaaugment.infra.errors import UserError, check_option, representable
from metaaugment.policy import BatchPolicy, StepContext, StepResult
from metaaugment.registry import POLICIES
from metaaugment.rl_mixup.figures import action_histogram_figure, mixup_examples_figure
from metaaugment.rl_mixup.saliency import (
    ACTION_PERCENTILES,
    action_to_percentile,
    input_saliency,
    one_hot,
    patch_mixup,
    patch_saliency,
    percentile_masks,
)
from metaaugment.steptools.scratch import scratch_buffers

DEFAULT_PATCHES = 16
EXAMPLES = 4  # samples of the last batch kept for the Appendix B figure


@dataclass
class MixupParams(Params):
    """What saliency mixup drew for a global batch of B rows of p x p patches.

    Shared by the batch: order (B,) the partner permutation (every rank's all-to-all needs it
    whole), saliency (B, p, p) the patch saliency maps, masks (B, p, p) bool the patches above
    each row's percentile (a partner's mask is read wherever it lives). Per row: row (B,) its
    place in the global batch, partner (B,) its partner's place, q (B,) its percentile,
    lambdas (B, 2) the Dirichlet weights of its own and its partner's image."""

    order: torch.Tensor
    saliency: torch.Tensor
    masks: torch.Tensor
    row: torch.Tensor = per_sample()
    partner: torch.Tensor = per_sample()
    q: torch.Tensor = per_sample()
    lambdas: torch.Tensor = per_sample()


@POLICIES.register("saliency-mixup")
class SaliencyMixup(BatchPolicy):
    """Saliency-guided patch mixup (RL-Mixup Eqs. 1-4) with q drawn uniformly from the agent's 10 values, or fixed.

    Options:
        q: saliency percentile in [0, 100] for every sample; default: drawn per sample from the agent's 10
            values
        patches: patches per image side (default: 16, or the image side when smaller)
        alpha: Dirichlet(alpha, alpha) concentration of the two images' mixing weights
    """

    def __init__(self, *, q: float | None = None, patches: int | None = None, alpha: float = 0.5):
        super().__init__()
        check_option(q is None or 0 <= q <= 100, "q", q, "a percentile in [0, 100]")
        check_option(patches is None or patches >= 1, "patches", patches, "at least 1")
        check_option(representable(alpha) and alpha > 0, "alpha", alpha, "a positive number")
        self.q, self.requested_patches, self.alpha = q, patches, alpha
        self.patches = patches or DEFAULT_PATCHES
        self.last_mix: dict[str, torch.Tensor] = {}

    def setup(self, ctx: StepContext) -> None:
        super().setup(ctx)
        spec = ctx.spec
        # the paper's 16 x 16 grid, or one patch per pixel on smaller images (digits: 8 x 8)
        self.patches = self.requested_patches or min(DEFAULT_PATCHES, *spec.input_shape[1:])
        if self.patches > min(spec.input_shape[1:]):
            raise UserError(f"{self.name} patches={self.patches} exceeds the image side "
                            f"{min(spec.input_shape[1:])}; use --set patches=N with N <= the side")

    def percentiles(self, saliency: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """(B,) q per sample for the global batch's patch saliency maps (B, p, p): fixed, or
        uniform over the agent's action values (the random control)."""
        if self.q is not None:
            return torch.full((saliency.shape[0],), float(self.q))
        return ACTION_PERCENTILES[torch.randint(len(ACTION_PERCENTILES), (saliency.shape[0],))]

    def saliency(self, batch: Batch, ctx: StepContext) -> torch.Tensor:
        """The batch's patch saliency maps (b, p, p), each summing to 1."""
        with scratch_buffers(ctx.model):  # the saliency pass must not move BatchNorm statistics
            return patch_saliency(input_saliency(ctx.model, batch.inputs, batch.targets, ctx.loss_fn), self.patches)

    def make_params(self, batch: Batch, ctx: StepContext) -> MixupParams:
        """Saliency of this batch's rows, gathered into the global batch's (the agent sees the
        global batch's maps: p x p values per sample); then for every row of the global batch
        its q, its partner in a random permutation and the Dirichlet mixing weights."""
        saliency = self.saliency(batch, ctx)
        if ctx.comm.distributed:
            saliency = ctx.comm.gather_rows(saliency)
        q = self.percentiles(saliency, ctx)
        total = batch.global_size
        partner = torch.randperm(total)
        masks = percentile_masks(saliency, q.to(saliency.device))
        weights = torch.distributions.Dirichlet(torch.tensor([self.alpha, self.alpha])).sample((total,))
        return MixupParams(order=partner, saliency=saliency, masks=masks, row=torch.arange(total), partner=partner,
                           q=q, lambdas=weights)

    def apply(self, batch: Batch, params: Params | None, ctx: StepContext) -> Batch:
        """Mix each row with its partner at its percentile of the patch saliency maps; on many
        ranks each rank receives its rows' partners' images and labels (one all-to-all of at
        most b images per rank)."""
        assert isinstance(params, MixupParams)
        spec = self.require_spec()
        comm, total = ctx.comm, batch.global_size
        if batch.share is not None and not torch.equal(batch.share.index, torch.arange(total)[comm.local_rows(total)]):
            raise ValueError("saliency mixup needs the batch's rows to be this rank's contiguous share of the global "
                             "batch (Batch.share)")
        partner_inputs = comm.select_rows(batch.inputs, params.order)  # (b, C, H, W): this rank's rows' partners
        labels = one_hot(batch.targets, spec.num_classes)
        partner_labels = comm.select_rows(labels, params.order)
        index, row = params.partner.to(batch.inputs.device), params.row.to(batch.inputs.device)
        masks, lam = params.masks, params.lambdas.to(batch.inputs.device)
        mixed, soft = patch_mixup(batch.inputs, labels, partner_inputs, partner_labels, masks[row], masks[index],
                                  lam[:, 0], lam[:, 1])
        # the first samples, for the Appendix B figure: kept as views on the device (no copy
        # or host sync on the training path), moved to the CPU only when the figure is drawn
        first = row[:EXAMPLES]
        self.last_mix = {"inputs": batch.inputs[:EXAMPLES], "partners": partner_inputs[:EXAMPLES],
                         "saliency": params.saliency[first], "masks": masks[first],
                         "partner_masks": masks[index[:EXAMPLES]], "q": params.q[:EXAMPLES],
                         "lambdas": params.lambdas[:EXAMPLES], "mixed": mixed[:EXAMPLES], "labels": soft[:EXAMPLES],
                         "targets": labels[:EXAMPLES].argmax(1), "partner_targets": partner_labels[:EXAMPLES].argmax(1)}
        return Batch(mixed.detach(), soft.detach(), batch.weights, dict(batch.info), batch.share)

    def write_artifacts(self, folder: Path) -> list[Path]:
        """mixup_examples.png: the last batch's first samples, their saliency, selected
        patches, mixed/unmixed regions and the mixed image with its soft label (Appendix B)."""
        if not self.last_mix:
            return []
        path = Path(folder) / "mixup_examples.png"
        mixup_examples_figure({key: value.detach().cpu() for key, value in self.last_mix.items()}, path)
        return [path]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "q": self.q, "patches": self.patches, "alpha": self.alpha}


@POLICIES.register("rl-mixup")
class RLMixup(SaliencyMixup):
    """RL-Mixup: saliency patch mixup, q per sample chosen by a PPO agent rewarded by validation accuracy.

    Options:
        patches: patches per image side (default: 16, or the image side when smaller)
        alpha: Dirichlet(alpha, alpha) concentration of the two images' mixing weights
        reward_every: training steps between validation rewards (one agent step each)
        val_fraction: fraction of the validation split scored for a reward
        episodes_per_update: episodes (epochs) of rollouts per PPO update
        agent_lr: the PPO agent's Adam learning rate
        ppo_epochs: passes over the rollout per PPO update
        agent_batch_size: PPO mini-batch size
        gamma: PPO's discount factor (the paper's 1.001)
        features_dim: width of the agent's feature extractor output
        extractor_channels: conv channels of the agent's feature extractor (comma-separated)
    """

    relative_cost = 3.7  # fonts, 16 x 16 grid: 126.7 s a run against none's 34.4 s (docs/results.md)

    def __init__(self, *, patches: int | None = None, alpha: float = 0.5, reward_every: int = 50,
                 val_fraction: float = 0.1, episodes_per_update: int = 2, agent_lr: float = 3e-4,
                 ppo_epochs: int = 20, agent_batch_size: int = 100, gamma: float = 1.001,
                 features_dim: int = 512, extractor_channels: tuple[int, ...] = (200, 300, 400)):
        super().__init__(q=None, patches=patches, alpha=alpha)
        check_option(reward_every >= 1, "reward_every", reward_every, "at least 1")
        check_option(0 < val_fraction <= 1, "val_fraction", val_fraction, "in (0, 1]")
        check_option(episodes_per_update >= 1, "episodes_per_update", episodes_per_update, "at least 1")
        check_option(representable(agent_lr) and agent_lr > 0, "agent_lr", agent_lr, "a positive number")
        check_option(ppo_epochs >= 1, "ppo_epochs", ppo_epochs, "at least 1")
        check_option(agent_batch_size >= 2, "agent_batch_size", agent_batch_size, "at least 2")
        check_option(representable(gamma) and gamma > 0, "gamma", gamma, "a positive number")
        check_option(features_dim >= 1, "features_dim", features_dim, "at least 1")
        check_option(len(extractor_channels) > 0 and all(c >= 1 for c in extractor_channels), "extractor_channels",
                     extractor_channels, "one or more positive channel counts")
        self.reward_every, self.val_fraction, self.episodes_per_update = reward_every, val_fraction, episodes_per_update
        self.agent_options = dict(learning_rate=agent_lr, n_epochs=ppo_epochs, minibatch_size=agent_batch_size,
                                  gamma=gamma, features_dim=features_dim, extractor_channels=tuple(extractor_channels))
        self.agent: Any = None  # a PercentileAgent, built by setup (its action space is the batch size)
        self.previous_accuracy = 0.0  # V in Eq. 5; Algorithm 1 starts from V = 0
        self.epoch_counts = torch.zeros(len(ACTION_PERCENTILES), dtype=torch.long)
        self.epoch_rewards: list[float] = []
        self.history: list[list[int]] = []  # action counts of every finished epoch

    def setup(self, ctx: StepContext) -> None:
        """Build the PPO agent: one action per sample of a batch of ctx.batch_size, a rollout
        buffer of `episodes_per_update` epochs of ctx.steps_per_epoch steps, on ctx.device."""
        super().setup(ctx)
        from metaaugment.rl_mixup.agent import PercentileAgent  # imports Stable-Baselines3

        steps_per_epoch = ctx.require("steps_per_epoch", self.name)
        if steps_per_epoch * self.episodes_per_update < 2:
            raise UserError(f"{self.name} needs at least 2 training steps per PPO update; this run has "
                            f"{steps_per_epoch} per epoch: use a smaller --batch-size or --set episodes_per_update=2")
        self.agent = PercentileAgent(ctx.require("batch_size", self.name), self.patches,
                                     steps_per_epoch * self.episodes_per_update, device=ctx.device,
                                     **self.agent_options)

    def percentiles(self, saliency: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """The agent's q per sample (B,) for the batch's patch saliency maps (B, p, p)."""
        if self.agent is None:
            self.require_spec()  # setup was not called
        if saliency.shape[0] != self.agent.batch_size:
            raise UserError(f"rl-mixup acts on batches of a fixed size ({self.agent.batch_size}); "
                            f"got {saliency.shape[0]}")
        actions = self.agent.act(saliency)
        self.epoch_counts += torch.bincount(actions, minlength=len(ACTION_PERCENTILES))
        return action_to_percentile(actions)

    def reward_period(self, ctx: StepContext) -> int:
        """t_reward for this run: `reward_every`, capped at a quarter of an epoch (see rl_agent.reward_steps)."""
        from metaaugment.rl_mixup.agent import reward_steps

        return reward_steps(ctx.require("steps_per_epoch", self.name), self.reward_every)

    def after_step(self, result: StepResult, ctx: StepContext) -> dict[str, float]:
        from metaaugment.rl_mixup.agent import scaled_reward

        reward = 0.0
        if (ctx.step_in_epoch + 1) % self.reward_period(ctx) == 0:
            accuracy = ctx.require("evaluate", self.name)(self.val_fraction)["accuracy"]
            reward = scaled_reward(accuracy, self.previous_accuracy, ctx.epoch + 1, ctx.require("epochs", self.name))
            self.previous_accuracy = accuracy
            self.epoch_rewards.append(reward)
        self.agent.record(reward, episode_start=ctx.step_in_epoch == 0)
        return {"q_mean": float(result.batch.params.q.float().mean())}

    def on_epoch_end(self, ctx: StepContext) -> dict[str, float]:
        counts = self.epoch_counts
        shares = counts.float() / counts.sum().clamp_min(1)
        metrics = {f"action_q{q:.0f}": float(share) for q, share in zip(ACTION_PERCENTILES.tolist(), shares)}
        metrics.update(reward_sum=float(sum(self.epoch_rewards)), reward_count=float(len(self.epoch_rewards)),
                       validation_subset_accuracy=self.previous_accuracy)
        self.history.append(counts.tolist())
        self.epoch_counts = torch.zeros_like(counts)
        self.epoch_rewards = []
        if self.agent is not None and self.agent.ready:
            metrics.update({f"ppo_{key}": value for key, value in self.agent.update().items()})
        return metrics

    # -- state ----------------------------------------------------------------------------
    def get_extra_state(self) -> dict[str, Any]:
        agent = self.agent.state_dict() if self.agent is not None else None
        return {"agent": agent, "previous_accuracy": self.previous_accuracy, "epoch_counts": self.epoch_counts.clone(),
                "epoch_rewards": list(self.epoch_rewards), "history": [list(h) for h in self.history]}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.previous_accuracy = float(state["previous_accuracy"])
        self.epoch_counts = state["epoch_counts"].clone()
        self.epoch_rewards = list(state["epoch_rewards"])
        self.history = [list(h) for h in state["history"]]
        if state["agent"] is not None:
            if self.agent is None:
                raise RuntimeError("call RLMixup.setup(ctx) before load_state_dict")
            self.agent.load_state_dict(state["agent"])

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "reward_every": self.reward_every, "val_fraction": self.val_fraction,
                "episodes_per_update": self.episodes_per_update, **self.agent_options}

    def write_artifacts(self, folder: Path) -> list[Path]:
        """mixup_examples.png (Appendix B) and action_histogram.png (the agent's choices per epoch)."""
        paths = super().write_artifacts(folder)
        if self.history:
            path = Path(folder) / "action_histogram.png"
            action_histogram_figure(torch.tensor(self.history), ACTION_PERCENTILES.tolist(), path)
            paths.append(path)
        return paths
