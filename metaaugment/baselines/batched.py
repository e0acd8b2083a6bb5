"""RandAugment, TrivialAugment Wide, AutoAugment and Cutout on a whole batch, each sample with its own draws.

torchvision's automatic augmentations draw one op and magnitude per call, so a batch needs
one call per image (`per_sample.apply_per_sample`), on the host. These functions draw every
sample's ops, magnitude bins and signs at once (on the host, from torch's generator) and
apply them with the shared batched ops (`imageops.apply_named_ops`, one kernel
per group of samples sharing an op) on the batch's device.

The op spaces are torchvision's definitions (torchvision.transforms.v2.RandAugment,
TrivialAugmentWide and AutoAugment, after Cubuk et al. 2020, Mueller & Hutter 2021 and
Cubuk et al. 2019): per op, the argument at each magnitude bin and whether its sign is
random; AutoAugment's searched sub-policies come from torchvision itself. The tests
check them against torchvision's own and check the drawn frequencies statistically.
"""
from __future__ import annotations

import functools

import torch
from torch import Tensor

from metaaugment.batch import Share
from metaaugment.imageops.ops import apply_named_ops
from metaaugment.imageops.table import OpSpace, OpTable, draw_ops, op_table, torchvision_argument


def randaugment_space(num_bins: int, size: tuple[int, int]) -> OpSpace:
    """RandAugment's 14 ops (torchvision's order and ranges) for images of `size` (H, W)."""
    height, width = size
    return {
        "Identity": (torch.tensor(0.0), False),
        "ShearX": (torch.linspace(0.0, 0.3, num_bins), True),
        "ShearY": (torch.linspace(0.0, 0.3, num_bins), True),
        "TranslateX": (torch.linspace(0.0, 150.0 / 331.0 * width, num_bins), True),
        "TranslateY": (torch.linspace(0.0, 150.0 / 331.0 * height, num_bins), True),
        "Rotate": (torch.linspace(0.0, 30.0, num_bins), True),
        "Brightness": (torch.linspace(0.0, 0.9, num_bins), True),
        "Color": (torch.linspace(0.0, 0.9, num_bins), True),
        "Contrast": (torch.linspace(0.0, 0.9, num_bins), True),
        "Sharpness": (torch.linspace(0.0, 0.9, num_bins), True),
        "Posterize": ((8 - torch.arange(num_bins) / ((num_bins - 1) / 4)).round().int(), False),
        "Solarize": (torch.linspace(1.0, 0.0, num_bins), False),
        "AutoContrast": (torch.tensor(0.0), False),
        "Equalize": (torch.tensor(0.0), False),
    }


def trivialaugment_space(num_bins: int) -> OpSpace:
    """TrivialAugment Wide's 14 ops (torchvision's order and wide ranges)."""
    return {
        "Identity": (torch.tensor(0.0), False),
        "ShearX": (torch.linspace(0.0, 0.99, num_bins), True),
        "ShearY": (torch.linspace(0.0, 0.99, num_bins), True),
        "TranslateX": (torch.linspace(0.0, 32.0, num_bins), True),
        "TranslateY": (torch.linspace(0.0, 32.0, num_bins), True),
        "Rotate": (torch.linspace(0.0, 135.0, num_bins), True),
        "Brightness": (torch.linspace(0.0, 0.99, num_bins), True),
        "Color": (torch.linspace(0.0, 0.99, num_bins), True),
        "Contrast": (torch.linspace(0.0, 0.99, num_bins), True),
        "Sharpness": (torch.linspace(0.0, 0.99, num_bins), True),
        "Posterize": ((8 - torch.arange(num_bins) / ((num_bins - 1) / 6)).round().int(), False),
        "Solarize": (torch.linspace(1.0, 0.0, num_bins), False),
        "AutoContrast": (torch.tensor(0.0), False),
        "Equalize": (torch.tensor(0.0), False),
    }


def autoaugment_space(size: tuple[int, int]) -> OpSpace:
    """AutoAugment's ops and their 10 magnitude bins (torchvision's definition, float images):
    RandAugment's ranges without Identity, plus Invert."""
    space = {name: value for name, value in randaugment_space(10, size).items() if name != "Identity"}
    space["Invert"] = (torch.tensor(0.0), False)
    return space


SubPolicy = tuple[tuple[str, float, "int | None"], tuple[str, float, "int | None"]]


def autoaugment(images: Tensor, policies: list[SubPolicy], generator: torch.Generator | None = None,
                share: Share | None = None) -> Tensor:
    """AutoAugment on (b, C, H, W) images in [0, 1]: each sample draws one of `policies`
    uniformly; each of its two (op, probability, magnitude bin) steps is applied with its
    probability, negated with probability 1/2 where signed -> (b, C, H, W). `share`: the
    images are these rows of a global batch, whose draws are made (`Share`)."""
    count = share.total if share is not None else images.shape[0]
    local = share.take if share is not None else (lambda values: values)
    space = autoaugment_space(tuple(images.shape[-2:]))
    grids = {name: (values.tolist() if values.ndim > 0 else [0.0], signed) for name, (values, signed) in space.items()}
    chosen = local(torch.randint(len(policies), (count,), generator=generator).tolist())
    for position in (0, 1):
        draws = local(torch.rand(count, generator=generator).tolist())
        negate = local(torch.randint(2, (count,), generator=generator).tolist())
        names, values = [], []
        for sub_policy, draw, flip in zip(chosen, draws, negate):
            name, probability, magnitude = policies[sub_policy][position]
            if draw <= probability:  # torchvision applies the step when rand <= p
                names.append(name)
                values.append(torchvision_argument(name, grids[name], magnitude, bool(flip)))
            else:
                names.append("Identity")
                values.append(0.0)
        images = apply_named_ops(images, names, values)
    return images


@functools.lru_cache(maxsize=64)
def _randaugment_table(num_bins: int, size: tuple[int, int]) -> OpTable:
    return op_table(randaugment_space(num_bins, size))


@functools.lru_cache(maxsize=8)
def _trivialaugment_table(num_bins: int) -> OpTable:
    return op_table(trivialaugment_space(num_bins))


def randaugment(images: Tensor, num_ops: int = 2, magnitude: int = 9, num_bins: int = 31,
                generator: torch.Generator | None = None, share: Share | None = None) -> Tensor:
    """RandAugment on (b, C, H, W) images in [0, 1]: num_ops rounds, each sample drawing its
    own op and sign per round, at the global magnitude bin -> (b, C, H, W). `share`: the
    images are these rows of a global batch, whose draws are made (`Share`)."""
    if num_bins < 2:
        raise ValueError(f"num_bins must be at least 2 (got {num_bins})")  # the bins span each op's range
    table = _randaugment_table(num_bins, tuple(images.shape[-2:]))
    for _ in range(num_ops):
        images = apply_named_ops(images, *_local(draw_ops(_count(images, share), table, magnitude, generator), share))
    return images


def trivialaugment_wide(images: Tensor, num_bins: int = 31, generator: torch.Generator | None = None,
                        share: Share | None = None) -> Tensor:
    """TrivialAugment Wide on (b, C, H, W) images in [0, 1]: one op per sample at a uniformly
    drawn magnitude bin -> (b, C, H, W). `share`: as randaugment's."""
    if num_bins < 2:
        raise ValueError(f"num_bins must be at least 2 (got {num_bins})")  # the bins span each op's range
    draws = draw_ops(_count(images, share), _trivialaugment_table(num_bins), None, generator)
    return apply_named_ops(images, *_local(draws, share))


def _count(images: Tensor, share: Share | None) -> int:
    return share.total if share is not None else images.shape[0]


def _local(draws: tuple[list[str], list[float]], share: Share | None) -> tuple[list[str], list[float]]:
    names, values = draws
    return (names, values) if share is None else (share.take(names), share.take(values))


def mixup(images: Tensor, labels: Tensor, previous_images: Tensor, previous_labels: Tensor,
          lam: float) -> tuple[Tensor, Tensor]:
    """MixUp (Zhang et al. 2018) as torchvision pairs samples: each row mixed with the row
    before it in the global batch, lam * own + (1 - lam) * previous. images (b, C, H, W),
    labels (b, K) one-hot; previous_*: the rows before them -> (mixed images, soft labels)."""
    return (previous_images.mul(1.0 - lam).add_(images.mul(lam)),
            previous_labels.mul(1.0 - lam).add_(labels.mul(lam)))


def cutmix(images: Tensor, labels: Tensor, previous_images: Tensor, previous_labels: Tensor,
           box: tuple[int, int, int, int], lam: float) -> tuple[Tensor, Tensor]:
    """CutMix (Yun et al. 2019) as torchvision pairs samples: the box (x1, y1, x2, y2) of each
    row replaced by the row before it; labels mixed by the area kept, `lam`. Shapes as mixup's."""
    x1, y1, x2, y2 = box
    output = images.clone()
    output[..., y1:y2, x1:x2] = previous_images[..., y1:y2, x1:x2]
    return output, previous_labels.mul(1.0 - lam).add_(labels.mul(lam))
