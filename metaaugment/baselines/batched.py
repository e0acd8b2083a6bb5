"""RandAugment, TrivialAugment Wide, AutoAugment and Cutout on a whole batch, each sample with its own draws.

torchvision's automatic augmentations draw one op and magnitude per call, so a batch needs
one call per image (`per_sample.apply_per_sample`), on the host. Here each method's draws
(`*_draws`: every sample's ops, magnitude bins and signs at once, on the host, from torch's
generator) are apart from their application (`apply_sample_ops`: the shared batched ops,
`imageops.apply_named_ops`, one kernel per group of samples sharing an op, on the batch's
device), as torchvision v2's `make_params` and `transform`.

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
# per sample, the (op name, argument) of each round it goes through: what the policies draw
SampleOps = list[list[tuple[str, float]]]


def ops_per_sample(rounds: list[tuple[list[str], list[float]]], count: int) -> SampleOps:
    """Rounds of (names, arguments), each over `count` samples -> per sample, its ops by round."""
    return [[(names[i], values[i]) for names, values in rounds] for i in range(count)]


def apply_sample_ops(images: Tensor, ops: SampleOps) -> Tensor:
    """(b, C, H, W) images, each through its own ops `ops[i]` round by round (every sample
    has the same number of rounds) -> (b, C, H, W), one batched call per round."""
    for position in range(len(ops[0]) if ops else 0):
        images = apply_named_ops(images, [sample[position][0] for sample in ops],
                                 [sample[position][1] for sample in ops])
    return images


def autoaugment_draws(count: int, policies: list[SubPolicy], size: tuple[int, int],
                      generator: torch.Generator | None = None) -> SampleOps:
    """AutoAugment's draws for `count` images of `size` (H, W): each sample draws one of
    `policies` uniformly; each of its two (op, probability, magnitude bin) steps is applied
    with its probability, negated with probability 1/2 where signed (Identity otherwise)."""
    space = autoaugment_space(size)
    grids = {name: (values.tolist() if values.ndim > 0 else [0.0], signed) for name, (values, signed) in space.items()}
    chosen = torch.randint(len(policies), (count,), generator=generator).tolist()
    rounds = []
    for position in (0, 1):
        draws = torch.rand(count, generator=generator).tolist()
        negate = torch.randint(2, (count,), generator=generator).tolist()
        names, values = [], []
        for sub_policy, draw, flip in zip(chosen, draws, negate):
            name, probability, magnitude = policies[sub_policy][position]
            if draw <= probability:  # torchvision applies the step when rand <= p
                names.append(name)
                values.append(torchvision_argument(name, grids[name], magnitude, bool(flip)))
            else:
                names.append("Identity")
                values.append(0.0)
        rounds.append((names, values))
    return ops_per_sample(rounds, count)


def autoaugment(images: Tensor, policies: list[SubPolicy], generator: torch.Generator | None = None) -> Tensor:
    """AutoAugment on (b, C, H, W) images in [0, 1] (`autoaugment_draws`) -> (b, C, H, W)."""
    return apply_sample_ops(images, autoaugment_draws(images.shape[0], policies, tuple(images.shape[-2:]), generator))


@functools.lru_cache(maxsize=64)
def _randaugment_table(num_bins: int, size: tuple[int, int]) -> OpTable:
    return op_table(randaugment_space(num_bins, size))


@functools.lru_cache(maxsize=8)
def _trivialaugment_table(num_bins: int) -> OpTable:
    return op_table(trivialaugment_space(num_bins))


def _check_bins(num_bins: int) -> None:
    if num_bins < 2:
        raise ValueError(f"num_bins must be at least 2 (got {num_bins})")  # the bins span each op's range


def randaugment_draws(count: int, size: tuple[int, int], num_ops: int = 2, magnitude: int = 9, num_bins: int = 31,
                      generator: torch.Generator | None = None) -> SampleOps:
    """RandAugment's draws for `count` images of `size` (H, W): num_ops rounds, each sample
    drawing its own op and sign per round, at the global magnitude bin."""
    _check_bins(num_bins)
    table = _randaugment_table(num_bins, size)
    return ops_per_sample([draw_ops(count, table, magnitude, generator) for _ in range(num_ops)], count)


def randaugment(images: Tensor, num_ops: int = 2, magnitude: int = 9, num_bins: int = 31,
                generator: torch.Generator | None = None) -> Tensor:
    """RandAugment on (b, C, H, W) images in [0, 1] (`randaugment_draws`) -> (b, C, H, W)."""
    ops = randaugment_draws(images.shape[0], tuple(images.shape[-2:]), num_ops, magnitude, num_bins, generator)
    return apply_sample_ops(images, ops)


def trivialaugment_draws(count: int, num_bins: int = 31, generator: torch.Generator | None = None) -> SampleOps:
    """TrivialAugment Wide's draws for `count` images: one op per sample at a uniformly drawn magnitude bin."""
    _check_bins(num_bins)
    return ops_per_sample([draw_ops(count, _trivialaugment_table(num_bins), None, generator)], count)


def trivialaugment_wide(images: Tensor, num_bins: int = 31, generator: torch.Generator | None = None) -> Tensor:
    """TrivialAugment Wide on (b, C, H, W) images in [0, 1] (`trivialaugment_draws`) -> (b, C, H, W)."""
    return apply_sample_ops(images, trivialaugment_draws(images.shape[0], num_bins, generator))


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
