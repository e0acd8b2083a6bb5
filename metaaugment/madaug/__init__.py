"""MADAug (Hou et al., ICCV 2023): AdaAug's per-sample policy head trained online by a
one-step lookahead of the task network, with a curriculum of how much of each batch to augment."""
from metaaugment.madaug.policy import MADAug, augmented_fraction

__all__ = ["MADAug", "augmented_fraction"]
