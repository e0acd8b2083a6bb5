"""TeachAugment (Suzuki, CVPR 2022, "TeachAugment: Data Augmentation Optimization Using
Teacher Knowledge"): colour and geometric augmenter networks trained to raise the target
network's loss while an EMA teacher must still recognize the result, with a replay of past
augmenters.

ops: the pure functions (relaxed Bernoulli, triangle wave, colour and affine transforms,
sliced Wasserstein distance, non-saturating loss, EMA); augmenters: the networks and their
draws; policy: the `teachaugment` batch policy; figures: what the augmenter does over training.
"""
from metaaugment.teachaugment.policy import TeachAugment

__all__ = ["TeachAugment"]
