"""AdaAug (Cheung & Yeung, ICLR 2022): a policy head on the task network's features gives each
sample a probability over the op table and a magnitude per op. Its pure functions
(`head`) are shared with MADAug (`metaaugment.madaug`), which trains the same head online.
AdaAug's own policy (search and exploit phases, `adaaug`) is not built yet: see docs/madaug.md."""
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

__all__ = ["HEAD_OPS", "AugmentationHead", "draw_ops", "exploit_images", "explore_mixture", "head_parameters",
           "perturb_magnitudes", "straight_through"]
