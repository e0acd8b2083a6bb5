"""MetaAugment's op pool (Zhou et al. 2021, section 4.1): the K = 14 operations, their
magnitude ranges, and the transformation T_{j,k}^{m1,m2} applied per sample with the shared
batched kernels (`metaaugment.imageops`).

Magnitudes m lie in [0, 10] and map to the AutoAugment / RandAugment ranges (the maxima of
torchvision's RandAugment): Rotate 30 degrees, ShearX/Y 0.3, TranslateX/Y 150/331 of the
image side, Color/Contrast/Brightness/Sharpness 1 +- 0.9, Posterize 8 -> 4 bits, Solarize
threshold 1 -> 0. Signed ops take a per-sample sign (+1 / -1) as RandAugment does.
Images are float (B, C, H, W) in [0, 1].
"""
from __future__ import annotations

from torch import Tensor

from metaaugment.imageops.ops import MAGNITUDE_FREE, apply_named_ops

OPS = ("AutoContrast", "Equalize", "Rotate", "Posterize", "Solarize", "Color", "Contrast", "Brightness",
       "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY", "Identity")
NUM_OPS = len(OPS)
# Ops outside the paper's pool, for experiments: Rotate180 destroys labels such as 6 vs 9, and
# a horizontal Flip those of b vs d (AdaAug and MADAug list Flip among their ops).
EXTRA_OPS = ("Rotate180", "Flip")
ALL_OPS = OPS + EXTRA_OPS
MAX_MAGNITUDE = 10.0
_MAX = {"Rotate": 30.0, "ShearX": 0.3, "ShearY": 0.3, "TranslateX": 150.0 / 331.0, "TranslateY": 150.0 / 331.0,
        "Color": 0.9, "Contrast": 0.9, "Brightness": 0.9, "Sharpness": 0.9}

__all__ = ["ALL_OPS", "EXTRA_OPS", "MAGNITUDE_FREE", "MAX_MAGNITUDE", "NUM_OPS", "OPS", "apply_ops",
           "apply_transformations", "op_parameter"]


def op_parameter(name: str, magnitude: float, sign: float, size: tuple[int, int]) -> float:
    """The torchvision argument of op `name` at magnitude m in [0, 10]: degrees for Rotate,
    shear factor, translation in whole pixels (size = (H, W)), colour factor 1 + s * 0.9 m / 10,
    posterize bits, solarize threshold; 0 for magnitude-free ops."""
    fraction = float(magnitude) / MAX_MAGNITUDE
    if name in ("TranslateX", "TranslateY"):
        side = size[1] if name == "TranslateX" else size[0]
        return float(int(sign * _MAX[name] * side * fraction))
    if name in ("Color", "Contrast", "Brightness", "Sharpness"):
        return 1.0 + sign * _MAX[name] * fraction
    if name in _MAX:
        return sign * _MAX[name] * fraction
    if name == "Posterize":
        return float(int(round(8 - 4 * fraction)))
    if name == "Solarize":
        return 1.0 - fraction
    return 0.0


def apply_ops(images: Tensor, ops: Tensor, magnitudes: Tensor, signs: Tensor,
              pool: tuple[str, ...] = OPS) -> Tensor:
    """Per-sample ops: images (B, C, H, W) in [0, 1], ops (B,) indices into `pool` (the
    paper's 14 OPS by default), magnitudes (B,) in [0, 10], signs (B,) of +1 / -1
    -> (B, C, H, W). The input is not modified."""
    size = tuple(images.shape[-2:])
    names = [pool[i] for i in ops.tolist()]
    values = [op_parameter(n, m, s, size) for n, m, s in zip(names, magnitudes.tolist(), signs.tolist())]
    return apply_named_ops(images, names, values)


def apply_transformations(images: Tensor, pairs: Tensor, magnitudes: Tensor, signs: Tensor,
                          pool: tuple[str, ...] = OPS) -> Tensor:
    """MetaAugment's transformation T_{j,k}^{m1,m2}: op j at m1, then op k at m2, per sample.
    pairs (B, 2) op indices into `pool`, magnitudes (B, 2) in [0, 10], signs (B, 2) -> (B, C, H, W)."""
    first = apply_ops(images, pairs[:, 0], magnitudes[:, 0], signs[:, 0], pool)
    return apply_ops(first, pairs[:, 1], magnitudes[:, 1], signs[:, 1], pool)
