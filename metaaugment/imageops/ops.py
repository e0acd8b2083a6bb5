"""Image operations on a batch with a different op and argument per sample, shared by
MetaAugment and the batched baselines (RandAugment, TrivialAugment, AutoAugment).

torchvision applies one op with one magnitude to a whole batch; AutoAugment-style policies
then loop image by image. Here every sample of a batch gets its own op and argument in one
call: samples are gathered once in op order and each op transforms its contiguous group in
place with per-sample parameters, through torchvision's public kernels where they take a
batch (autocontrast), torch's grid_sample with torchvision's documented affine matrix
formula for the geometric ops, and torchvision's formulas with a per-sample factor
elsewhere (colour blending, the sharpness blur, posterize's levels, equalize's lookup
table), so each sample equals torchvision's single-image result for the same op and
magnitude: the geometric ops, posterize, solarize and equalize to the bit, the blends up to
float rounding (tests/test_image_ops.py checks this). Only public torch and torchvision
functions are used.

Arguments are torchvision's: degrees (Rotate), shear factors, whole pixels (translations),
colour factors, posterize bits, solarize thresholds. Images are float (B, C, H, W) in [0, 1].
"""
from __future__ import annotations

import array
import functools
import math
from collections import OrderedDict

import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

# every op a kernel here applies (torchvision's names), and those that take no argument
OP_NAMES = ("AutoContrast", "Equalize", "Rotate", "Posterize", "Solarize", "Color", "Contrast", "Brightness",
            "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY", "Identity", "Rotate180", "Invert", "Flip")
MAGNITUDE_FREE = frozenset({"AutoContrast", "Equalize", "Identity", "Rotate180", "Invert", "Flip"})


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


@functools.lru_cache(maxsize=4096)
def _inverse_affine_of_op(name: str, value: float, size: tuple[int, int]) -> tuple[float, ...]:
    """The inverse affine matrix of op `name` as torchvision's AutoAugment calls it: F.rotate
    (about the centre; its matrix uses the negated angle), F.affine with a shear about the
    top-left corner (center=[0, 0]), F.affine with a whole-pixel translation. Cached: a
    policy draws few distinct arguments."""
    height, width = size
    if name == "Rotate":
        return tuple(inverse_affine_matrix((0.0, 0.0), -value, (0.0, 0.0), (0.0, 0.0)))
    if name in ("ShearX", "ShearY"):
        corner = (-width * 0.5, -height * 0.5)  # the top-left corner relative to the centre
        degrees = math.degrees(math.atan(value))
        shear = (degrees, 0.0) if name == "ShearX" else (0.0, degrees)
        return tuple(inverse_affine_matrix(corner, 0.0, (0.0, 0.0), shear))
    translate = (value, 0.0) if name == "TranslateX" else (0.0, value)
    return tuple(inverse_affine_matrix((0.0, 0.0), 0.0, translate, (0.0, 0.0)))


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


# Grids of small images, by (op, argument, height, width, dtype, device): at 32 px building a
# grid costs more than sampling with it, and a policy draws few distinct arguments
# (RandAugment: two per op). Large grids are rebuilt: there the sampling dominates, and a
# cache of 224 px grids would hold hundreds of MB.
_GRID_CACHE: OrderedDict[tuple, Tensor] = OrderedDict()
_GRID_CACHE_ENTRIES = 512
_GRID_CACHE_MAX_PIXELS = 64 * 64


def _grids_of_ops(keys: list[tuple[str, float]], height: int, width: int, dtype: torch.dtype,
                  device: torch.device) -> Tensor:
    """The grid_sample grids (D, H, W, 2) of distinct (op, argument) `keys`."""
    cached = height * width <= _GRID_CACHE_MAX_PIXELS
    full_keys = [(name, value, height, width, dtype, device) for name, value in keys]
    missing = [key for key in full_keys if key not in _GRID_CACHE] if cached else full_keys
    if missing:
        rows = [_inverse_affine_of_op(name, value, (height, width)) for name, value, *_ in missing]
        fresh = _sampling_grid(torch.tensor(rows, dtype=dtype, device=device).view(-1, 2, 3), height, width)
        if not cached:
            return fresh
        for key, grid in zip(missing, fresh.split(1)):
            _GRID_CACHE[key] = grid
    grids = []
    for key in full_keys:
        _GRID_CACHE.move_to_end(key)
        grids.append(_GRID_CACHE[key])
    while len(_GRID_CACHE) > _GRID_CACHE_ENTRIES:
        _GRID_CACHE.popitem(last=False)
    return torch.cat(grids)


def _geometric(names: list[str], images: Tensor, values: list[float]) -> Tensor:
    """All affine ops of a batch in one grid-sample call (nearest neighbour, zero fill):
    names[i] with argument values[i]."""
    height, width = images.shape[-2:]
    # a grid depends only on the op and its argument: build each distinct one once
    distinct: dict[tuple[str, float], int] = {}
    which = [distinct.setdefault((n, v), len(distinct)) for n, v in zip(names, values)]
    grid = _grids_of_ops(list(distinct), height, width, images.dtype, images.device)
    if len(distinct) < len(names):
        grid = grid.index_select(0, torch.tensor(which, device=images.device))
    return torch.nn.functional.grid_sample(images, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def _blend_(images: Tensor, other: Tensor, ratio: Tensor) -> Tensor:
    """torchvision's _blend in place, ratio * images + (1 - ratio) * other clamped to [0, 1],
    with a per-sample ratio (G, 1, 1, 1): one lerp (equal up to float rounding)."""
    return images.lerp_(other, 1.0 - ratio).clamp_(0.0, 1.0)


def _sharpen_(images: Tensor, factor: Tensor) -> Tensor:
    """torchvision's adjust_sharpness in place with a per-sample factor (G, 1, 1, 1): the
    interior pixels blend with the 3x3 smoothed image (weights 1 around a centre of 5, over
    13) by `factor`, the one-pixel border is kept; then clamped to [0, 1]."""
    height, width = images.shape[-2:]
    if height <= 2 or width <= 2:
        return images
    # The 3x3 box sum as two separable passes of shifted slices: a depthwise conv2d of a
    # small group costs several times more on the CPU (the result differs by float rounding).
    rows = images[..., :, :-2] + images[..., :, 1:-1] + images[..., :, 2:]
    box = rows[..., :-2, :] + rows[..., 1:-1, :] + rows[..., 2:, :]
    interior = images[..., 1:-1, 1:-1]
    blurred = box.add_(interior, alpha=4.0).div_(13.0)
    _blend_(interior, blurred, factor)
    return images.clamp_(0.0, 1.0)


def _equalize(images: Tensor) -> Tensor:
    """torchvision's equalize of float images (G, C, H, W) in [0, 1] -> (G, C, H, W), to the
    bit: the same uint8 levels, histogram and PIL lookup table per plane, with the table
    converted to float before the lookup instead of every pixel after it, and a plane that
    cannot be equalized given the identity table instead of a where() over the image (a
    third fewer passes over the pixels)."""
    shape = images.shape
    # to_dtype(uint8, scale=True) truncates x * (256 - 1e-3); the levels index the histogram
    levels = images.mul(255.0 + 1.0 - 1e-3).view(-1, shape[-2] * shape[-1]).long()
    planes, pixels = levels.shape
    hist = torch.zeros(planes, 256, dtype=torch.int32, device=images.device)
    hist.scatter_add_(1, levels, torch.ones((), dtype=torch.int32, device=images.device).expand(planes, pixels))
    cumulative = hist.cumsum(1, dtype=torch.int32)
    # PIL's step: the pixels below the brightest level present, over 255
    step = (pixels - hist.gather(1, cumulative.argmax(1, keepdim=True))).div_(255, rounding_mode="floor")
    table = (cumulative - hist).add_(step // 2).div_(step.clamp(min=1), rounding_mode="floor").clamp_(0, 255)
    table = torch.where(step > 0, table, torch.arange(256, dtype=table.dtype, device=images.device))
    return table.to(images.dtype).mul_(1.0 / 255).gather(1, levels).view(shape)


def _grayscale(images: Tensor) -> Tensor:
    return TF.rgb_to_grayscale_image(images) if images.shape[1] == 3 else images


def _mean_luminance(images: Tensor) -> Tensor:
    """adjust_contrast's degenerate, the mean of the grayscale image, (G, C, H, W) -> (G, 1, 1, 1):
    the grayscale weights applied to the channel means (equal up to float rounding, without
    building the grayscale images)."""
    if images.shape[1] == 1:
        return images.mean(dim=(-3, -2, -1), keepdim=True)
    weights = torch.tensor([0.2989, 0.587, 0.114], dtype=images.dtype, device=images.device)
    return (images.mean(dim=(-2, -1)) @ weights).view(-1, 1, 1, 1)


def apply_op_(name: str, images: Tensor, values: Tensor) -> Tensor:
    """Op `name` on a group of images (G, C, H, W) in [0, 1], in place, with per-sample
    torchvision arguments `values` (G,) from `op_parameter`; returns `images`."""
    # In place: `apply_named_ops` hands each op its group's slice of one gathered copy, so
    # an op writes its result where it will be read, with no concatenation afterwards.
    if name == "Identity":
        return images
    if name == "Rotate180":  # what F.rotate(image, 180) returns
        return images.copy_(torch.rot90(images, k=2, dims=(-2, -1)))
    if name == "Flip":  # what F.horizontal_flip returns (AdaAug's and MADAug's Flip)
        return images.copy_(images.flip(-1))
    if name == "Invert":  # AutoAugment's op: F.invert of a float image, 1 - x
        return images.neg_().add_(1.0)
    if name == "AutoContrast":
        return images.copy_(TF.autocontrast_image(images))
    if name == "Equalize":
        return images.copy_(_equalize(images))
    if name in GEOMETRIC:
        return images.copy_(_geometric([name] * len(values), images, values.tolist()))
    ratio = values.to(device=images.device, dtype=images.dtype).view(-1, 1, 1, 1)
    if name == "Brightness":  # a blend with black: ratio * image, clamped
        return images.mul_(ratio).clamp_(0.0, 1.0)
    if name == "Color":
        if images.shape[1] == 1:  # saturation of a grayscale image is the image itself
            return images
        return _blend_(images, _grayscale(images), ratio)
    if name == "Contrast":
        return _blend_(images, _mean_luminance(images), ratio)
    if name == "Sharpness":
        return _sharpen_(images, ratio)
    if name == "Solarize":
        # torch.where(images >= ratio, 1 - images, images); lerp with weights 0 and 1 returns
        # either end exactly, and a CPU where() on a broadcast mask is several times slower
        return images.lerp_(1.0 - images, images.ge(ratio).to(images.dtype))
    if name == "Posterize":
        # torchvision's float posterize with per-sample levels 2**bits; powers of two keep
        # every product exact, so the result is bit-identical
        levels = torch.exp2(ratio)
        images.mul_(levels).floor_().clamp_(min=0)
        return torch.minimum(images, levels - 1, out=images).mul_(levels.reciprocal())
    raise ValueError(f"unknown op {name!r}; choose from {', '.join(OP_NAMES)}")


def _host_tensor(typecode: str, values: list, device: torch.device) -> Tensor:
    """A 1-d int64 ("q") or float64 ("d") tensor of `values` on `device`: through a typed
    array, which skips torch.tensor's per-element type inference (5 of 7 us at 128 items)."""
    dtype = torch.int64 if typecode == "q" else torch.float64
    if not values:  # frombuffer refuses an empty buffer
        return torch.empty(0, dtype=dtype, device=device)
    return torch.frombuffer(array.array(typecode, values), dtype=dtype).to(device)


def apply_named_ops(images: Tensor, names: list[str], values: list[float]) -> Tensor:
    """Per-sample ops given by name and torchvision argument (`op_parameter`'s units: degrees,
    shear factor, whole pixels, colour factor, posterize bits, solarize threshold): images
    (B, C, H, W) in [0, 1], names and values of length B -> (B, C, H, W), in one call per
    group of samples that share an op (the affine ops share one). The input is not modified."""
    # Samples are reordered so that each op's group is one contiguous slice: one gather in and
    # one gather out for the whole batch, not a gather and a scatter per group (at 32 px
    # those fixed costs dominated).
    groups: dict[str, list[int]] = {}
    for index, name in enumerate(names):
        groups.setdefault("~geometric" if name in GEOMETRIC else name, []).append(index)
    order = [i for members in groups.values() for i in members]
    device = images.device
    # a fresh copy in group order: each op transforms its slice of it in place
    grouped = images.index_select(0, _host_tensor("q", order, device))
    arguments = _host_tensor("d", [values[i] for i in order], device).to(images.dtype)
    start = 0
    for key, members in groups.items():
        end = start + len(members)
        chunk = grouped[start:end]
        if key == "~geometric":
            chunk.copy_(_geometric([names[i] for i in members], chunk, [values[i] for i in members]))
        else:
            apply_op_(key, chunk, arguments[start:end])
        start = end
    inverse = [0] * len(order)
    for position, index in enumerate(order):
        inverse[index] = position
    return grouped.index_select(0, _host_tensor("q", inverse, device))


