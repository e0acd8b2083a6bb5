"""CE-increasing meta-augmentation for few-shot learning (Rajendran et al. 2020, "Meta-Learning
Requires Meta-Augmentation"): augment the labels of whole tasks.

transforms: learn2learn task transforms (fixed class groups, group-order labels);
label_noise: one target shift per regression task; entropy: H(Y|X), the quantity raised;
policies: nme, intrashuffle, intershuffle, target-noise, discrete-noise.
"""
from metaaugment.task_augmentation.policies import (
    DiscreteNoise,
    InterShuffle,
    IntraShuffle,
    NonMutuallyExclusive,
    TargetNoise,
)

__all__ = ["DiscreteNoise", "InterShuffle", "IntraShuffle", "NonMutuallyExclusive", "TargetNoise"]
