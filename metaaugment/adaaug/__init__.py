"""AdaAug (Cheung & Yeung, ICLR 2022): a policy head on the task network's features gives each
sample a probability over the op table and a magnitude per op. Its pure functions
(`head`) are shared with MADAug (`metaaugment.madaug`), which trains the same head online.
AdaAug's own policy (`adaaug`: the search phase, and the exploit phase on a new network with
--policy-from) is in `policy`; the base both policies share in `head_policy`."""
from metaaugment.adaaug.head import (
    HEAD_OPS,
    AugmentationHead,
    draw_ops,
    exploit_images,
    explore_mixture,
    head_parameters,
    perturb_magnitudes,
    straight_through,
)
from metaaugment.adaaug.policy import AdaAug

__all__ = ["HEAD_OPS", "AdaAug", "AugmentationHead", "draw_ops", "exploit_images", "explore_mixture", "head_parameters",
           "perturb_magnitudes", "straight_through"]
