"""Fixed baseline policies users compare learned ones against (wrapping torchvision):
none, RandAugment, TrivialAugment, AutoAugment, MixUp, CutMix, Cutout."""
from metaaugment.baselines.policies import (
    AutoAugment,
    CutMix,
    Cutout,
    MixUp,
    NoAugmentation,
    RandAugment,
    TrivialAugment,
)

__all__ = ["AutoAugment", "CutMix", "Cutout", "MixUp", "NoAugmentation", "RandAugment", "TrivialAugment"]
