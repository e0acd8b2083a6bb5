"""RL-Mixup's agent: a Stable-Baselines3 PPO-Clip agent that picks a mixup percentile per sample.

The environment of RL-Mixup is the training run itself (one time step = one training batch,
one episode = one epoch), so the agent cannot own the loop the way `PPO.learn()` expects.
`PercentileAgent` keeps SB3's PPO, policy, rollout buffer, GAE and PPO-Clip update, and
lets the trainer drive them: `act` at each batch, `record` the step's reward, `update` once
the buffer holds the planned number of episodes.

- observation: the batch's patch saliency maps (B, p, p), read as one B-channel image;
- action: one of 10 percentiles per sample, a MultiDiscrete([10] * B) action;
- features extractor (Appendix A, Table 3): three 3x3 convolutions (200, 300, 400 channels,
  ReLU), global average pooling, a linear layer to 512 and Tanh, shared by the policy
  (64-64, Tanh) and value (256-256, Tanh) heads;
- PPO defaults from Appendix A: n_epochs 20, batch size 100, gamma 1.001; the rest SB3's.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from metaaugment.infra.dependencies import import_quietly

_sb3 = import_quietly("stable_baselines3", "ppo", "common.logger", "common.torch_layers", "common.vec_env")
gym = import_quietly("gymnasium")
from stable_baselines3 import PPO  # noqa: E402  (imported quietly above)
from stable_baselines3.common.logger import Logger  # noqa: E402
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor  # noqa: E402
from stable_baselines3.common.vec_env import DummyVecEnv  # noqa: E402

NUM_ACTIONS = 10
PAPER_EXTRACTOR_CHANNELS = (200, 300, 400)


def scaled_reward(accuracy: float, previous_accuracy: float, epoch: int, epochs: int) -> float:
    """RL-Mixup's reward (Eq. 5): r = (k / K)(v - V), with v the validation accuracy now, V
    the one at the previous reward, k the current epoch (1-based) and K the number of epochs."""
    return epoch / epochs * (accuracy - previous_accuracy)


class SaliencyFeaturesExtractor(BaseFeaturesExtractor):
    """Appendix A's features extractor: (N, B, p, p) saliency maps -> (N, features_dim).

    Convolutions are 3x3, stride 1, unpadded as in the paper when the grid allows it
    (p >= 7); smaller grids are padded so that any p works. The maps sum to 1, so they are
    scaled by p*p (a uniform map becomes all ones) to give the network inputs of order one.
    """

    def __init__(self, observation_space: Any, features_dim: int = 512,
                 channels: tuple[int, ...] = PAPER_EXTRACTOR_CHANNELS):
        super().__init__(observation_space, features_dim)
        maps, height, width = observation_space.shape
        padding = 0 if min(height, width) >= 2 * len(channels) + 1 else 1
        layers: list[nn.Module] = []
        previous = maps
        for width_out in channels:
            layers += [nn.Conv2d(previous, width_out, 3, padding=padding), nn.ReLU()]
            previous = width_out
        self.scale = float(height * width)
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(previous, features_dim),
                                  nn.Tanh())

    def forward(self, observations: Tensor) -> Tensor:
        return self.body(observations * self.scale)


class _SpacesOnly(gym.Env):
    # PPO builds its policy and buffer from an environment's spaces; this one is never stepped
    def __init__(self, observation_space: Any, action_space: Any):
        self.observation_space, self.action_space = observation_space, action_space

    def reset(self, *, seed: int | None = None, options: dict | None = None):  # pragma: no cover
        raise RuntimeError("the RL-Mixup environment is the training run; it is driven by PercentileAgent")

    def step(self, action: Any):  # pragma: no cover
        raise RuntimeError("the RL-Mixup environment is the training run; it is driven by PercentileAgent")


class PercentileAgent:
    """A PPO-Clip agent choosing one of `NUM_ACTIONS` percentiles for each of `batch_size`
    samples from their (batch_size, patches, patches) saliency maps.

    steps_per_update: time steps in the rollout buffer (the paper: two episodes).
    """

    def __init__(self, batch_size: int, patches: int, steps_per_update: int, *, learning_rate: float = 3e-4,
                 n_epochs: int = 20, minibatch_size: int = 100, gamma: float = 1.001, gae_lambda: float = 0.95,
                 clip_range: float = 0.2, ent_coef: float = 0.0, features_dim: int = 512,
                 extractor_channels: tuple[int, ...] = PAPER_EXTRACTOR_CHANNELS,
                 device: torch.device | str = "cpu"):
        if steps_per_update < 2:
            raise ValueError("the agent needs at least 2 time steps per PPO update")
        self.batch_size, self.patches, self.steps_per_update = batch_size, patches, steps_per_update
        observation_space = gym.spaces.Box(0.0, 1.0, (batch_size, patches, patches), np.float32)
        action_space = gym.spaces.MultiDiscrete([NUM_ACTIONS] * batch_size)
        env = DummyVecEnv([lambda: _SpacesOnly(observation_space, action_space)])
        policy_kwargs = dict(features_extractor_class=SaliencyFeaturesExtractor,
                             features_extractor_kwargs=dict(features_dim=features_dim,
                                                            channels=tuple(extractor_channels)),
                             share_features_extractor=True, net_arch=dict(pi=[64, 64], vf=[256, 256]),
                             activation_fn=nn.Tanh)
        self.ppo = PPO("MlpPolicy", env, learning_rate=learning_rate, n_steps=steps_per_update,
                       batch_size=min(minibatch_size, steps_per_update), n_epochs=n_epochs, gamma=gamma,
                       gae_lambda=gae_lambda, clip_range=clip_range, ent_coef=ent_coef, policy_kwargs=policy_kwargs,
                       device=device, verbose=0)
        self.ppo.set_logger(Logger(folder=None, output_formats=[]))
        self.updates = 0
        self._pending: tuple[np.ndarray, np.ndarray, Tensor, Tensor] | None = None

    @property
    def device(self) -> torch.device:
        return self.ppo.device

    @property
    def buffer(self) -> Any:
        return self.ppo.rollout_buffer

    def _observation(self, saliency: Tensor) -> Tensor:
        if saliency.shape != (self.batch_size, self.patches, self.patches):
            raise ValueError(f"expected saliency maps of shape {(self.batch_size, self.patches, self.patches)}, "
                             f"got {tuple(saliency.shape)}")
        return saliency.detach().to(self.device, torch.float32).unsqueeze(0)

    def act(self, saliency: Tensor) -> Tensor:
        """Sample actions (batch_size,) in [0, NUM_ACTIONS) for saliency maps (batch_size, p, p)
        and keep what the rollout buffer needs until `record` gives the step's reward."""
        observation = self._observation(saliency)
        self.ppo.policy.set_training_mode(False)
        with torch.no_grad():
            actions, values, log_probs = self.ppo.policy(observation)
        self._pending = (observation.cpu().numpy(), actions.cpu().numpy(), values, log_probs)
        return actions[0].cpu()

    def record(self, reward: float, episode_start: bool) -> None:
        """Store the last `act` with its reward; episode_start marks the first step of an epoch."""
        if self._pending is None:
            raise RuntimeError("record() must follow act()")
        if self.buffer.full:
            raise RuntimeError("the rollout buffer is full: call update() first")
        observation, actions, values, log_probs = self._pending
        self.buffer.add(observation, actions, np.array([reward], dtype=np.float32),
                        np.array([episode_start], dtype=np.float32), values, log_probs)
        self._pending = None

    @property
    def ready(self) -> bool:
        """Whether the buffer holds `steps_per_update` steps, enough for an update."""
        return bool(self.buffer.full)

    def update(self) -> dict[str, float]:
        """One PPO-Clip update on the buffer (its last step ends an episode), then an empty
        buffer. Returns SB3's training statistics (losses, approx_kl, clip_fraction, ...) and
        `updates`, the number of PPO updates so far (SB3's own `n_updates` counter is private
        state a resumed agent could not restore, so it is left out)."""
        if not self.ready:
            raise RuntimeError(f"update() needs {self.steps_per_update} recorded steps, has {self.buffer.pos}")
        last_values = torch.zeros(1, device=self.device)  # the episode ends: nothing to bootstrap
        self.buffer.compute_returns_and_advantage(last_values=last_values, dones=np.ones(1, dtype=np.float32))
        self.ppo.train()
        logged = {key.split("/", 1)[-1]: float(value) for key, value in self.ppo.logger.name_to_value.items()
                  if key.startswith("train/") and key != "train/n_updates"
                  and isinstance(value, (int, float, np.floating, np.integer))}
        self.ppo.logger.dump()
        self.buffer.reset()
        self.updates += 1
        return {**logged, "updates": float(self.updates)}

    def action_probabilities(self, saliency: Tensor) -> Tensor:
        """The policy's (batch_size, NUM_ACTIONS) action probabilities for saliency maps (batch_size, p, p)."""
        with torch.no_grad():
            distribution = self.ppo.policy.get_distribution(self._observation(saliency))
            return torch.stack([d.probs[0] for d in distribution.distribution]).cpu()

    # -- state, for exact resume ------------------------------------------------------------
    # Only public Stable-Baselines3 API: the policy's and optimizer's state dicts, the rollout
    # buffer's arrays read as they are, and refilled on load through RolloutBuffer.add.
    _BUFFER_FIELDS = ("observations", "actions", "rewards", "episode_starts", "values", "log_probs")

    def state_dict(self) -> dict[str, Any]:
        """Networks, optimizer, the filled part of the rollout buffer and the update count."""
        position = self.buffer.buffer_size if self.buffer.full else self.buffer.pos
        return {"policy": self.ppo.policy.state_dict(), "optimizer": self.ppo.policy.optimizer.state_dict(),
                "buffer": {name: torch.from_numpy(getattr(self.buffer, name)[:position].copy())
                           for name in self._BUFFER_FIELDS},
                "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict`: networks, optimizer, and the buffer step by step."""
        self.ppo.policy.load_state_dict(state["policy"])
        self.ppo.policy.optimizer.load_state_dict(state["optimizer"])
        self.buffer.reset()
        steps = {name: torch.as_tensor(values) for name, values in state["buffer"].items()}
        for i in range(len(steps["rewards"])):
            self.buffer.add(steps["observations"][i].numpy(), steps["actions"][i].numpy(),
                            steps["rewards"][i].numpy(), steps["episode_starts"][i].numpy(), steps["values"][i],
                            steps["log_probs"][i])
        self.updates = int(state["updates"])


def reward_steps(steps_per_epoch: int, every: int) -> int:
    """The reward period actually used: `every` (the paper's t_reward = 50) capped at a
    quarter of an epoch, so that short epochs still give several rewards per episode (§5.6:
    a reward only at the end of each episode collapses the policy)."""
    return max(1, min(every, math.ceil(steps_per_epoch / 4)))
