"""The K = 14 image operations of MetaAugment, batched with a different op and magnitude per sample.

torchvision applies one op with one magnitude to a whole batch; AutoAugment-style policies
then loop image by image. Here every sample of a batch gets its own op and magnitude in one
call: samples are grouped by op and each group is transformed with per-sample parameters,
through torchvision's public kernels where they take a batch (autocontrast, equalize),
torch's grid_sample with torchvision's documented affine matrix formula for the geometric
ops, and torchvision's formulas with a per-sample factor elsewhere (colour
blending, the sharpness blur, posterize's levels), so each sample equals torchvision's
single-image result for the same op and magnitude (tests/test_image_ops.py checks this).
Only public torch and torchvision functions are used.

Magnitudes m lie in [0, 10] and map to the AutoAugment / RandAugment ranges (the maxima of
torchvision's RandAugment): Rotate 30 degrees, ShearX/Y 0.3, TranslateX/Y 150/331 of the
image side, Color/Contrast/Brightness/Sharpness 1 +- 0.9, Posterize 8 -> 4 bits, Solarize
threshold 1 -> 0. Signed ops take a per-sample sign (+1 / -1) as RandAugment does.
Images are float (B, C, H, W) in [0, 1].
"""
from __future__ import annotations

import math

import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

OPS = ("AutoContrast", "Equalize", "Rotate", "Posterize", "Solarize", "Color", "Contrast", "Brightness",
       "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY", "Identity")
NUM_OPS = len(OPS)
# Ops outside the paper's pool, for experiments: Rotate180 destroys labels such as 6 vs 9.
EXTRA_OPS = ("Rotate180",)
ALL_OPS = OPS + EXTRA_OPS
MAGNITUDE_FREE = frozenset({"AutoContrast", "Equalize", "Identity", "Rotate180"})
MAX_MAGNITUDE = 10.0
_MAX = {"Rotate": 30.0, "ShearX": 0.3, "ShearY": 0.3, "TranslateX": 150.0 / 331.0, "TranslateY": 150.0 / 331.0,
        "Color": 0.9, "Contrast": 0.9, "Brightness": 0.9, "Sharpness": 0.9}


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


def _blend(image: Tensor, other: Tensor, ratio: Tensor) -> Tensor:
    # torchvision's _blend with a per-sample ratio (B, 1, 1, 1)
    return (ratio * image + (1.0 - ratio) * other).clamp_(0.0, 1.0)


GEOMETRIC = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")


def inverse_affine_matrix(center: tuple[float, float], angle: float, translate: tuple[float, float],
                          shear: tuple[float, float]) -> list[float]:
    """The 2x3 inverse [a, b, c, d, e, f] of the affine map torchvision's `affine` applies at
    scale 1, in pixel coordinates relative to the image centre (output pixel -> input pixel).

    torchvision documents the forward map as M = T C RSS C^-1: C translates to `center`, T by
    `translate`, and RSS = R(angle) SHy(sy) SHx(sx) rotates and shears (angles in degrees). A
    rotation and a shear have determinant 1, so RSS^-1 is RSS's adjugate and
    M^-1 = C RSS^-1 C^-1 T^-1. The terms are evaluated as torchvision evaluates them, so the
    matrix (and the pixels it samples) are the same to the last bit.
    """
    rot, sx, sy = math.radians(angle), math.radians(shear[0]), math.radians(shear[1])
    rss = (math.cos(rot - sy) / math.cos(sy), -math.cos(rot - sy) * math.tan(sx) / math.cos(sy) - math.sin(rot),
           math.sin(rot - sy) / math.cos(sy), -math.sin(rot - sy) * math.tan(sx) / math.cos(sy) + math.cos(rot))
    a, b, d, e = rss[3], -rss[1], -rss[2], rss[0]  # the adjugate: RSS^-1
    cx, cy = center
    to_x, to_y = -cx - translate[0], -cy - translate[1]  # C^-1 T^-1 moves the origin here
    return [a, b, (a * to_x + b * to_y) + cx, d, e, (d * to_x + e * to_y) + cy]


def _inverse_affine_of_op(name: str, value: float, size: tuple[int, int]) -> list[float]:
    """The inverse affine matrix of op `name` as torchvision's AutoAugment calls it: F.rotate
    (about the centre; its matrix uses the negated angle), F.affine with a shear about the
    top-left corner (center=[0, 0]), F.affine with a whole-pixel translation."""
    height, width = size
    if name == "Rotate":
        return inverse_affine_matrix((0.0, 0.0), -value, (0.0, 0.0), (0.0, 0.0))
    if name in ("ShearX", "ShearY"):
        corner = (-width * 0.5, -height * 0.5)  # the top-left corner relative to the centre
        degrees = math.degrees(math.atan(value))
        return inverse_affine_matrix(corner, 0.0, (0.0, 0.0), (degrees, 0.0) if name == "ShearX" else (0.0, degrees))
    translate = (value, 0.0) if name == "TranslateX" else (0.0, value)
    return inverse_affine_matrix((0.0, 0.0), 0.0, translate, (0.0, 0.0))


def _sampling_grid(theta: Tensor, height: int, width: int) -> Tensor:
    """(G, 2, 3) inverse affine matrices in pixel coordinates relative to the image centre ->
    (G, H, W, 2) grid_sample grid. Each output pixel centre (x, y) maps to theta (x, y, 1),
    divided by the half sizes (W/2, H/2) into grid_sample's [-1, 1] coordinates
    (align_corners=False), in the order torchvision computes it: torch's affine_grid
    normalizes first, which moves 0.4% of the nearest-neighbour samples by one pixel."""
    dtype, device = theta.dtype, theta.device
    xs = torch.linspace((1.0 - width) * 0.5, (width - 1.0) * 0.5, steps=width, dtype=dtype, device=device)
    ys = torch.linspace((1.0 - height) * 0.5, (height - 1.0) * 0.5, steps=height, dtype=dtype, device=device)
    centres = torch.stack([xs.expand(height, width), ys.unsqueeze(1).expand(height, width),
                           torch.ones(height, width, dtype=dtype, device=device)], dim=-1)  # (H, W, 3)
    scaled = theta.transpose(1, 2) / torch.tensor([0.5 * width, 0.5 * height], dtype=dtype, device=device)
    grid = centres.view(1, height * width, 3).expand(theta.shape[0], -1, -1).bmm(scaled)
    return grid.view(theta.shape[0], height, width, 2)


def _geometric(names: list[str], images: Tensor, values: list[float]) -> Tensor:
    """All affine ops of a batch in one grid-sample call (nearest neighbour, zero fill):
    names[i] with argument values[i]."""
    height, width = images.shape[-2:]
    rows = [_inverse_affine_of_op(n, v, (height, width)) for n, v in zip(names, values)]
    theta = torch.tensor(rows, dtype=images.dtype, device=images.device).view(-1, 2, 3)
    grid = _sampling_grid(theta, height, width)
    return torch.nn.functional.grid_sample(images, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def _sharpness(images: Tensor, factor: Tensor) -> Tensor:
    """torchvision's adjust_sharpness with a per-sample factor (G, 1, 1, 1): the interior
    pixels move towards the 3x3 smoothed image (weights 1 around a centre of 5, over 13),
    x + (1 - factor) (blurred - x), the one-pixel border is kept; then clamped to [0, 1]."""
    height, width = images.shape[-2:]
    if height <= 2 or width <= 2:
        return images.clone()
    channels = images.shape[1]
    a, b = 1.0 / 13.0, 5.0 / 13.0
    kernel = torch.tensor([[a, a, a], [a, b, a], [a, a, a]], dtype=images.dtype, device=images.device)
    blurred = torch.nn.functional.conv2d(images, kernel.expand(channels, 1, 3, 3), groups=channels)
    out = images.clone()
    interior = out[..., 1:-1, 1:-1]
    interior.add_(blurred.sub_(interior).mul_(1.0 - factor))
    return out.clamp_(0.0, 1.0)


def _grayscale(images: Tensor) -> Tensor:
    return TF.rgb_to_grayscale(images) if images.shape[1] == 3 else images


def apply_op(name: str, images: Tensor, values: Tensor) -> Tensor:
    """Op `name` on a group of images (G, C, H, W) in [0, 1] with per-sample torchvision
    arguments `values` (G,) from `op_parameter`; returns a new tensor."""
    if name == "Identity":
        return images.clone()
    if name == "Rotate180":  # what F.rotate(image, 180) returns
        return torch.rot90(images, k=2, dims=(-2, -1))
    if name == "Invert":  # AutoAugment's op: F.invert of a float image
        return 1.0 - images
    if name == "AutoContrast":
        return TF.autocontrast(images)
    if name == "Equalize":
        return TF.equalize(images)
    if name in GEOMETRIC:
        return _geometric([name] * len(values), images, values.tolist())
    ratio = values.to(images.dtype).to(images.device).view(-1, 1, 1, 1)
    if name == "Brightness":  # a blend with black: ratio * image, clamped
        return (images * ratio).clamp_(0.0, 1.0)
    if name == "Color":
        if images.shape[1] == 1:  # saturation of a grayscale image is the image itself
            return images.clone()
        return _blend(images, _grayscale(images).expand_as(images), ratio)
    if name == "Contrast":
        mean = _grayscale(images).mean(dim=(-3, -2, -1), keepdim=True)
        return _blend(images, mean, ratio)
    if name == "Sharpness":
        return _sharpness(images, ratio)
    if name == "Solarize":
        return torch.where(images >= ratio, 1.0 - images, images)
    if name == "Posterize":
        # torchvision's float posterize with per-sample levels 2**bits; powers of two keep
        # every product exact, so the result is bit-identical
        levels = torch.exp2(ratio)
        return torch.minimum(images.mul(levels).floor_().clamp_(min=0), levels - 1).mul_(levels.reciprocal())
    raise ValueError(f"unknown op {name!r}; choose from {', '.join(ALL_OPS)}")


def apply_ops(images: Tensor, ops: Tensor, magnitudes: Tensor, signs: Tensor,
              pool: tuple[str, ...] = OPS) -> Tensor:
    """Per-sample ops: images (B, C, H, W) in [0, 1], ops (B,) indices into `pool` (the
    paper's 14 OPS by default), magnitudes (B,) in [0, 10], signs (B,) of +1 / -1
    -> (B, C, H, W). The input is not modified."""
    size = tuple(images.shape[-2:])
    names = [pool[i] for i in ops.tolist()]
    values = [op_parameter(n, m, s, size) for n, m, s in zip(names, magnitudes.tolist(), signs.tolist())]
    return apply_named_ops(images, names, values)


def apply_named_ops(images: Tensor, names: list[str], values: list[float]) -> Tensor:
    """Per-sample ops given by name and torchvision argument (`op_parameter`'s units: degrees,
    shear factor, whole pixels, colour factor, posterize bits, solarize threshold): images
    (B, C, H, W) in [0, 1], names and values of length B -> (B, C, H, W), in one call per
    group of samples that share an op (the affine ops share one). The input is not modified."""
    # One gather and one scatter per group of samples that share an op (the affine ops form
    # one group: they share a grid-sample call): each image is read once and written once,
    # which at 224 px is most of the cost.
    groups: dict[str, list[int]] = {}
    for index, name in enumerate(names):
        groups.setdefault("~geometric" if name in GEOMETRIC else name, []).append(index)
    out = torch.empty_like(images)
    for key, members in groups.items():
        rows = torch.tensor(members, device=images.device)
        chunk = images.index_select(0, rows)
        if key == "~geometric":
            result = _geometric([names[i] for i in members], chunk, [values[i] for i in members])
        elif key == "Identity":
            result = chunk
        else:
            result = apply_op(key, chunk, torch.tensor([values[i] for i in members], dtype=torch.float64))
        out.index_copy_(0, rows, result)
    return out


def apply_transformations(images: Tensor, pairs: Tensor, magnitudes: Tensor, signs: Tensor,
                          pool: tuple[str, ...] = OPS) -> Tensor:
    """MetaAugment's transformation T_{j,k}^{m1,m2}: op j at m1, then op k at m2, per sample.
    pairs (B, 2) op indices into `pool`, magnitudes (B, 2) in [0, 10], signs (B, 2) -> (B, C, H, W)."""
    first = apply_ops(images, pairs[:, 0], magnitudes[:, 0], signs[:, 0], pool)
    return apply_ops(first, pairs[:, 1], magnitudes[:, 1], signs[:, 1], pool)
