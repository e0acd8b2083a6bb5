"""RL-Mixup (Luu, Huang, Wang): saliency-guided patch mixup whose percentile q per sample is
chosen by a PPO agent rewarded by validation accuracy.

saliency: saliency and patch-mixup functions (Eqs. 1-4); agent: the PPO agent
(Stable-Baselines3, imported only when an agent is built); figures; policies:
`saliency-mixup` (random or fixed q, the paper's control) and `rl-mixup`.
"""
from metaaugment.rl_mixup.policies import RLMixup, SaliencyMixup

__all__ = ["RLMixup", "SaliencyMixup"]
