"""One MADAug training step with the ops batched on the device (ours) against the same step
applying them image by image in PIL (the official code's way), as a ratio.

    python perf/madaug_step_cost.py                                   # small CNN, 128 x 3x32x32
    python perf/madaug_step_cost.py --channels 1 --image-size 32      # fonts-sized
    python perf/madaug_step_cost.py --device cuda

In one process, round-robin (`timing.round_robin`), on the same model and batch:
  (a) a plain SGD step (`none`), the baseline of the other ratios;
  (b) one MADAug step, ours: a lookahead update of the head (every op applied to the batch
      and mixed, the task network's double backward), then k = 2 ops drawn per sample and
      applied, then the task network's step; every op one batched call;
  (c) the same step, the ops applied image by image as the official code does: each image
      converted to a PIL image, the op applied by torchvision's functional op on the PIL
      image at the same argument, converted back (`pil_apply_ops`, patched in for
      `apply_ops`); the rest of the step is ours.
  (d) the head's ops alone, both ways: the explore mixture (every op on every image) and the
      k = 2 exploit ops per image, without the network.
It prints ms per step and `madaug step, batched vs image-by-image PIL: 12.3x`, and the same
ratio for the ops alone.
"""
from __future__ import annotations

import contextlib
import math
from unittest import mock

import torch
from timing import random_batch, round_robin, step_arguments
from torchvision.transforms import functional as F

from metaaugment import Batch, StepContext, TaskSpec, create_model, create_policy, supervised_step
from metaaugment.sample_aware.ops import op_parameter


def pil_op(name: str, image, value: float):
    """Op `name` on one PIL image at torchvision's argument `value` (`op_parameter`'s units)."""
    if name in ("Identity",):
        return image
    if name == "Invert":
        return F.invert(image)
    if name == "AutoContrast":
        return F.autocontrast(image)
    if name == "Equalize":
        return F.equalize(image)
    if name == "Rotate":
        return F.rotate(image, value)
    if name in ("ShearX", "ShearY"):
        degrees = math.degrees(math.atan(value))
        shear = [degrees, 0.0] if name == "ShearX" else [0.0, degrees]
        return F.affine(image, angle=0.0, translate=[0, 0], scale=1.0, shear=shear, center=[0, 0])
    if name in ("TranslateX", "TranslateY"):
        translate = [int(value), 0] if name == "TranslateX" else [0, int(value)]
        return F.affine(image, angle=0.0, translate=translate, scale=1.0, shear=[0.0, 0.0])
    adjust = {"Brightness": F.adjust_brightness, "Color": F.adjust_saturation, "Contrast": F.adjust_contrast,
              "Sharpness": F.adjust_sharpness}
    if name in adjust:
        return adjust[name](image, value)
    if name == "Posterize":
        return F.posterize(image, int(value))
    if name == "Solarize":
        return F.solarize(image, int(255 * value))
    raise ValueError(name)


def pil_apply_ops(images: torch.Tensor, ops: torch.Tensor, magnitudes: torch.Tensor, signs: torch.Tensor,
                  pool: tuple[str, ...]) -> torch.Tensor:
    """`apply_ops`'s contract, image by image through PIL (the official code's way)."""
    size = tuple(images.shape[-2:])
    out = []
    for image, op, magnitude, sign in zip(images.detach().cpu(), ops.tolist(), magnitudes.tolist(), signs.tolist()):
        name = pool[op]
        pil = F.to_pil_image(image)
        out.append(F.to_tensor(pil_op(name, pil, op_parameter(name, magnitude, sign, size))))
    return torch.stack(out).to(images.device)


def make_step(policy_name: str, spec: TaskSpec, batch: Batch, device: torch.device, model_name: str,
              pil: bool = False):
    """One supervised_step of `policy_name` on `batch`, the head's ops in PIL when `pil`."""
    torch.manual_seed(0)
    model = create_model(model_name, spec).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    ctx = StepContext(model=model, spec=spec, optimizer=optimizer, validation_batch=lambda: batch,
                      batch_size=len(batch), steps_per_epoch=100, epochs=100)
    ctx.epoch = 100  # the curriculum's full fraction: every row augmented, as late in training
    policy = create_policy(policy_name)
    policy.setup(ctx)
    policy.to(device)

    def step() -> None:
        if pil:
            with mock.patch("metaaugment.adaaug.head.apply_ops", pil_apply_ops):
                supervised_step(model, optimizer, batch, policy, ctx)
        else:
            supervised_step(model, optimizer, batch, policy, ctx)
    return step


def ops_only(batch: Batch, pil: bool = False):
    """The head's ops of one MADAug step without the network: the explore mixture and the
    k = 2 exploit ops per image, at random probabilities and magnitudes."""
    from metaaugment.adaaug import HEAD_OPS, draw_ops, exploit_images, explore_mixture

    g = torch.Generator().manual_seed(0)
    count, num_ops = len(batch), len(HEAD_OPS)
    probabilities = torch.softmax(torch.randn(count, num_ops, generator=g), 1).to(batch.inputs.device)
    magnitudes = torch.rand(count, num_ops, generator=g).to(batch.inputs.device)
    signs = torch.where(torch.rand(count, num_ops, generator=g) < 0.5, -1.0, 1.0)
    gumbel = -torch.log(-torch.log(torch.rand(count, num_ops, generator=g)))

    def step() -> None:
        with mock.patch("metaaugment.adaaug.head.apply_ops", pil_apply_ops) if pil else contextlib.nullcontext():
            explore_mixture(batch.inputs, probabilities, magnitudes, signs)
            ops = draw_ops(probabilities, gumbel, 2)
            exploit_images(batch.inputs, ops, magnitudes.gather(1, ops), signs.gather(1, ops.cpu()))
    return step


def main() -> None:
    args = step_arguments(__doc__.splitlines()[0], repeats=7)
    device, spec, batch = random_batch(args)
    steps = {"none": make_step("none", spec, batch, device, args.model),
             "madaug batched": make_step("madaug", spec, batch, device, args.model),
             "madaug PIL": make_step("madaug", spec, batch, device, args.model, pil=True),
             "ops batched": ops_only(batch), "ops PIL": ops_only(batch, pil=True)}
    median = round_robin(steps, device, args.repeats, warmup=2)
    for name, seconds in median.items():
        print(f"{name:16s} {1e3 * seconds:9.1f} ms/step {seconds / median['none']:8.2f}x none")
    print(f"madaug step, batched vs image-by-image PIL: {median['madaug PIL'] / median['madaug batched']:.1f}x")
    print(f"the head's ops alone, batched vs image-by-image PIL: {median['ops PIL'] / median['ops batched']:.1f}x")


if __name__ == "__main__":
    main()
