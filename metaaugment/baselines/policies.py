"""Fixed baseline policies, thin wrappers over torchvision.transforms.v2."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torchvision.transforms import v2

from metaaugment.baselines import batched
from metaaugment.baselines.per_sample import apply_per_sample, draw_seeds
from metaaugment.batch import Batch, Params, per_sample
from metaaugment.imageops.cutout import apply_cutout, draw_cutout
from metaaugment.infra.errors import UserError, check_option, representable
from metaaugment.parallel.comm import Communicator
from metaaugment.policy import BatchPolicy, StepContext, TaskPolicy
from metaaugment.registry import POLICIES


@POLICIES.register("none")
class NoAugmentation(BatchPolicy, TaskPolicy):
    """No augmentation: batches as they are; few-shot tasks built by the standard protocol."""

    benchmark_kinds = ("classification", "few-shot", "regression")


@dataclass
class SeedParams(Params):
    """One seed per image of the global batch, for a torchvision transform's draws on it."""

    seeds: Tensor = per_sample()


@dataclass
class SampleOpParams(Params):
    """Per image of the global batch, its (op, argument) of each round (`batched.SampleOps`)."""

    ops: batched.SampleOps = per_sample()


@dataclass
class CutoutParams(Params):
    """Per image of the global batch, the zeroed square's top and left corner."""

    top: Tensor = per_sample()
    left: Tensor = per_sample()


@dataclass
class MixParams(Params):
    """What torchvision's MixUp / CutMix drew for the whole batch: lambda (and the box)."""

    drawn: dict[str, Any]


class _PerSampleTorchvision(BatchPolicy):
    """A torchvision image transform applied with fresh randomness to every sample
    (backend=torchvision); subclasses add their batched backend."""

    backend = "torchvision"

    def __init__(self) -> None:
        super().__init__()
        self.transform: Any = None

    def make_params(self, batch: Batch, ctx: StepContext) -> Params | None:
        if self.backend == "torchvision":
            return SeedParams(draw_seeds(batch.global_size))
        return self.make_batched_params(batch, ctx)

    def make_batched_params(self, batch: Batch, ctx: StepContext) -> Params:
        """The batched backend's draws for the global batch."""
        raise NotImplementedError

    def apply(self, batch: Batch, params: Params | None, ctx: StepContext) -> Batch:
        if isinstance(params, SeedParams):
            return batch.replace(inputs=apply_per_sample(self.transform, batch.inputs, params.seeds))
        if isinstance(params, SampleOpParams):
            return batch.replace(inputs=batched.apply_sample_ops(batch.inputs, params.ops))
        raise TypeError(f"{type(self).__name__} cannot apply {type(params).__name__}")


def previous_rows(tensor: Tensor, batch: Batch, comm: Communicator) -> Tensor:
    """For each row of `tensor` (this batch's rows, contiguous in the global batch), the row
    before it in the global batch, the first row's before it being the last (torchvision's
    roll(1)). On many ranks the rank's first row takes the previous rank's last row: one row
    per rank gathered."""
    if not comm.distributed:
        return tensor.roll(1, 0)
    if batch.share is None or not torch.equal(batch.share.index, torch.arange(int(batch.share.index[0]),
                                                                              int(batch.share.index[0]) + len(batch))):
        raise ValueError("mixing with the previous row needs this rank's contiguous rows of the global batch")
    lasts = comm.gather_rows(tensor[-1:].contiguous())  # (ranks, ...): every rank's last row
    return torch.cat([lasts[(comm.rank - 1) % comm.world_size].unsqueeze(0), tensor[:-1]])


BACKENDS = ("batched", "torchvision")


def check_backend(backend: str) -> str:
    """The `backend` option: batched (one call per batch on its device) or torchvision (image by image)."""
    check_option(backend in BACKENDS, "backend", backend, "batched or torchvision")
    return backend


@POLICIES.register("randaugment")
class RandAugment(_PerSampleTorchvision):
    """RandAugment (Cubuk et al. 2020): num_ops random ops at one global magnitude, per sample.

    backend=batched (default) draws every sample's ops at once and applies them on the
    batch's device (`batched.randaugment`); backend=torchvision calls torchvision's
    transform image by image. Both follow torchvision's definition.

    Options:
        num_ops: ops applied in sequence to each sample
        magnitude: the global magnitude bin, in [0, num_magnitude_bins)
        num_magnitude_bins: bins of each op's range
        backend: batched (every sample's ops at once on the batch's device) or torchvision (image by image)
    """

    def __init__(self, *, num_ops: int = 2, magnitude: int = 9, num_magnitude_bins: int = 31,
                 backend: str = "batched"):
        super().__init__()
        check_option(num_ops >= 0, "num_ops", num_ops, "a non-negative integer")
        check_option(num_magnitude_bins >= 2, "num_magnitude_bins", num_magnitude_bins,
                     "at least 2 (bins span each op's range)")
        check_option(0 <= magnitude < num_magnitude_bins, "magnitude", magnitude, f"in [0, {num_magnitude_bins - 1}]")
        self.num_ops, self.magnitude, self.num_magnitude_bins = num_ops, magnitude, num_magnitude_bins
        self.options = dict(num_ops=num_ops, magnitude=magnitude, num_magnitude_bins=num_magnitude_bins)
        self.backend = check_backend(backend)
        self.transform = v2.RandAugment(**self.options)

    def make_batched_params(self, batch: Batch, ctx: StepContext) -> Params:
        o = self.options
        return SampleOpParams(batched.randaugment_draws(batch.global_size, tuple(batch.inputs.shape[-2:]),
                                                        o["num_ops"], o["magnitude"], o["num_magnitude_bins"]))


@POLICIES.register("trivialaugment")
class TrivialAugment(_PerSampleTorchvision):
    """TrivialAugment Wide (Mueller & Hutter 2021): one random op at a random magnitude per
    sample; backend=batched (default) or torchvision (image by image), as RandAugment.

    Options:
        num_magnitude_bins: bins of each op's (wide) range, one drawn per sample
        backend: batched or torchvision, as randaugment
    """

    def __init__(self, *, num_magnitude_bins: int = 31, backend: str = "batched"):
        super().__init__()
        check_option(num_magnitude_bins >= 2, "num_magnitude_bins", num_magnitude_bins,
                     "at least 2 (bins span each op's range)")
        self.num_magnitude_bins = num_magnitude_bins
        self.backend = check_backend(backend)
        self.transform = v2.TrivialAugmentWide(num_magnitude_bins=num_magnitude_bins)

    def make_batched_params(self, batch: Batch, ctx: StepContext) -> Params:
        return SampleOpParams(batched.trivialaugment_draws(batch.global_size, self.num_magnitude_bins))


@POLICIES.register("autoaugment")
class AutoAugment(_PerSampleTorchvision):
    """AutoAugment (Cubuk et al. 2019) with its searched cifar10, imagenet or svhn policy, per
    sample; backend=batched (default) or torchvision (image by image), as RandAugment.

    Options:
        policy: the searched policy: cifar10, imagenet or svhn
        backend: batched (every sample's ops at once on the batch's device) or torchvision (image by image)
    """

    def __init__(self, *, policy: str = "cifar10", backend: str = "batched"):
        super().__init__()
        from torchvision import transforms as v1

        choices = {p.name.lower(): p for p in v2.AutoAugmentPolicy}
        check_option(policy.lower() in choices, "policy", policy, f"one of {', '.join(sorted(choices))}")
        self.policy = self.policy_name = policy.lower()
        self.backend = check_backend(backend)
        self.transform = v2.AutoAugment(choices[self.policy_name])
        # the searched sub-policies, as torchvision publishes them: ((op, p, bin), (op, p, bin))
        self.sub_policies = v1.AutoAugment(choices[self.policy_name]).policies

    def make_batched_params(self, batch: Batch, ctx: StepContext) -> Params:
        return SampleOpParams(batched.autoaugment_draws(batch.global_size, self.sub_policies,
                                                        tuple(batch.inputs.shape[-2:])))


class _BatchMix(BatchPolicy):
    """A batch-mixing transform (MixUp, CutMix) producing soft labels, as torchvision's: its
    parameters are drawn by torchvision's transform (`make_params`), and each row is mixed
    with the row before it in the global batch (on many ranks, a rank's first row takes the
    last row of the rank before it through ctx.comm: one image per rank per step)."""

    transform_class: Any = None

    def __init__(self, *, alpha: float = 1.0):
        super().__init__()
        check_option(representable(alpha) and alpha > 0, "alpha", alpha, "a positive number")
        self.alpha = alpha
        self.transform: Any = None

    def setup(self, ctx: StepContext) -> None:
        super().setup(ctx)
        spec = ctx.spec
        if spec.num_classes is None:
            raise UserError(f"{self.name} needs a classification benchmark")
        self.transform = self.transform_class(alpha=self.alpha, num_classes=spec.num_classes)

    def make_params(self, batch: Batch, ctx: StepContext) -> Params:
        if self.transform is None:
            self.require_spec()
        return MixParams(self.transform.make_params([batch.inputs]))  # torchvision's draws: lam (and the box)

    def apply(self, batch: Batch, params: Params | None, ctx: StepContext) -> Batch:
        assert isinstance(params, MixParams)
        labels = torch.nn.functional.one_hot(batch.hard_targets(), self.transform.num_classes).float()
        previous_inputs, previous_labels = (previous_rows(t, batch, ctx.comm) for t in (batch.inputs, labels))
        inputs, targets = self.mix(batch.inputs, labels, previous_inputs, previous_labels, params.drawn)
        return batch.replace(inputs=inputs, targets=targets)

    def mix(self, images: Tensor, labels: Tensor, previous_images: Tensor, previous_labels: Tensor,
            params: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """The mixed images and soft labels of the drawn `params`."""
        raise NotImplementedError


@POLICIES.register("mixup")
class MixUp(_BatchMix):
    """MixUp (Zhang et al. 2018): convex combinations of image pairs and their labels.

    Options:
        alpha: Beta(alpha, alpha) concentration of the mixing weight; 1.0 is uniform
    """

    transform_class = v2.MixUp

    def mix(self, images: Tensor, labels: Tensor, previous_images: Tensor, previous_labels: Tensor,
            params: dict[str, Any]) -> tuple[Tensor, Tensor]:
        return batched.mixup(images, labels, previous_images, previous_labels, params["lam"])


@POLICIES.register("cutmix")
class CutMix(_BatchMix):
    """CutMix (Yun et al. 2019): paste a box from a partner image; labels mixed by area.

    Options:
        alpha: Beta(alpha, alpha) concentration of the pasted box's area fraction
    """

    transform_class = v2.CutMix

    def mix(self, images: Tensor, labels: Tensor, previous_images: Tensor, previous_labels: Tensor,
            params: dict[str, Any]) -> tuple[Tensor, Tensor]:
        return batched.cutmix(images, labels, previous_images, previous_labels, params["box"],
                              params["lam_adjusted"])


@POLICIES.register("cutout")
class Cutout(_PerSampleTorchvision):
    """Cutout (DeVries & Taylor 2017): zero one size x size square per image.

    Options:
        size: side of the zeroed square in pixels (default: half the shorter image side, 16 on 32x32)
        backend: batched or torchvision, as randaugment
    """

    def __init__(self, *, size: int | None = None, backend: str = "batched"):
        super().__init__()
        check_option(size is None or size > 0, "size", size, "a positive number of pixels")
        self.size = size
        self.backend = check_backend(backend)

    def setup(self, ctx: StepContext) -> None:
        super().setup(ctx)
        height, width = ctx.spec.input_shape[-2:]
        # Default: half the shorter side, which is the paper's 16 px on 32x32 CIFAR.
        self.size = self.size or max(1, min(height, width) // 2)
        if self.size > min(height, width):
            raise UserError(f"cutout size {self.size} exceeds the image side {min(height, width)}")
        area = self.size * self.size / (height * width)
        self.transform = v2.RandomErasing(p=1.0, scale=(area, area), ratio=(1.0, 1.0), value=0.0)

    def make_params(self, batch: Batch, ctx: StepContext) -> Params | None:
        if self.transform is None or self.size is None:
            self.require_spec()
        return super().make_params(batch, ctx)

    def make_batched_params(self, batch: Batch, ctx: StepContext) -> Params:
        height, width = batch.inputs.shape[-2:]
        return CutoutParams(*draw_cutout(batch.global_size, height, width, self.size, placement="inside"))

    def apply(self, batch: Batch, params: Params | None, ctx: StepContext) -> Batch:
        if isinstance(params, CutoutParams):
            return batch.replace(inputs=apply_cutout(batch.inputs, self.size, params.top, params.left))
        return super().apply(batch, params, ctx)
