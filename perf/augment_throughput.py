"""Images per second of the baselines: batched per sample (ours) against torchvision and kornia.

    python perf/augment_throughput.py                      # batch 128 and 256, 32 and 224 px, CPU
    python perf/augment_throughput.py --sizes 32 --batches 128 --repeats 21
    python perf/augment_throughput.py --device cuda

For each policy, in one process and round-robin (`timing.round_robin`; each turn times
consecutive calls filling --min-seconds, so that a 1 ms step is not measured just after a
15 ms one), on float images in [0, 1] on the device:
  (a) ours: `randaugment` / `trivialaugment` / `autoaugment` / `cutout` with backend=batched, one call per
      batch, every sample drawing its own ops, magnitudes and signs;
  (b) torchvision image by image (backend=torchvision): the same per-sample semantics;
  (c) torchvision's transform on the whole batch: one op and magnitude shared by every
      sample, the speed ceiling of that weaker semantics;
  (d) kornia's RandAugment (`kornia.augmentation.auto.RandAugment(n=2, m=...)`), when kornia
      is installed (`pip install 'metaaugment[kornia]'`; not a dependency); --kornia
      requires it.
It prints one line per policy and setting, `randaugment batched vs image-by-image: 12.34x`,
and the ratios to (c) and (d).
"""
from __future__ import annotations

import argparse
import importlib
import sys

import torch
from timing import round_robin
from torchvision.transforms import v2

from metaaugment import Batch, StepContext, TaskSpec, UserError, create_policy
from metaaugment.infra.dependencies import require
from metaaugment.run.devices import resolve_device
from metaaugment.run.host_memory import keep_freed_host_memory


def policy_steps(name: str, images: torch.Tensor, spec: TaskSpec, kornia_module: object) -> dict[str, object]:
    """The four ways to augment `images` with policy `name` (kornia only for RandAugment)."""
    batch = Batch(images, torch.zeros(images.shape[0], dtype=torch.int64, device=images.device))
    ctx = StepContext(model=torch.nn.Identity(), spec=spec)
    steps = {}
    for backend in ("batched", "torchvision"):
        policy = create_policy(name, backend=backend)
        policy.setup(ctx)
        steps[backend] = (lambda p=policy: p.augment(batch, ctx))
    whole = {"randaugment": v2.RandAugment(num_ops=2, magnitude=9), "trivialaugment": v2.TrivialAugmentWide(),
             "autoaugment": v2.AutoAugment(), "cutout": create_policy("cutout", backend="torchvision")}[name]
    if name == "cutout":
        whole.setup(ctx)
        steps["whole batch"] = (lambda t=whole.transform: t(images))
    else:
        steps["whole batch"] = (lambda t=whole: t(images))
    if name == "randaugment" and kornia_module is not None:
        kornia = kornia_module.augmentation.auto.RandAugment(n=2, m=9).to(images.device)
        steps["kornia"] = (lambda: kornia(images))
    return steps


def kornia_or_none(required: bool) -> object:
    """kornia with its augmentation.auto module, or None when it is not installed (a UserError
    naming the extra when `required`)."""
    try:
        kornia = require("kornia", "--kornia")
    except UserError:
        if required:
            raise
        print("kornia is not installed: no kornia column (pip install 'metaaugment[kornia]' adds it)")
        return None
    importlib.import_module("kornia.augmentation.auto")
    return kornia


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="32,224")
    parser.add_argument("--batches", default="128,256")
    parser.add_argument("--policies", default="randaugment,trivialaugment,autoaugment,cutout")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--min-seconds", type=float, default=0.02,
                        help="time consecutive calls filling this long per turn (timing.round_robin); 0: one call")
    parser.add_argument("--kornia", action="store_true", help="require kornia's column (else: when installed)")
    args = parser.parse_args(argv)
    try:
        kornia = kornia_or_none(args.kornia)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    keep_freed_host_memory()  # as `metaaug` does: no page faults on every batch's fresh tensors
    device = resolve_device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {device} ({name}), threads {torch.get_num_threads()}, median of {args.repeats} round-robin turns"
          f" of at least {args.min_seconds} s each")
    generator = torch.Generator().manual_seed(0)
    for size in [int(s) for s in args.sizes.split(",")]:
        spec = TaskSpec(num_classes=10, input_shape=(3, size, size))
        for batch_size in [int(b) for b in args.batches.split(",")]:
            images = torch.rand(batch_size, 3, size, size, generator=generator).to(device)
            for policy in args.policies.split(","):
                medians = round_robin(policy_steps(policy, images, spec, kornia), device, args.repeats,
                                      min_seconds=args.min_seconds)
                rate = {k: batch_size / v for k, v in medians.items()}
                line = (f"{policy} batched vs image-by-image: {rate['batched'] / rate['torchvision']:.2f}x  "
                        f"({size}px, batch {batch_size}: {rate['batched']:,.0f} vs {rate['torchvision']:,.0f} "
                        f"images/s; one op per batch {rate['whole batch']:,.0f} images/s, "
                        f"ours at {rate['batched'] / rate['whole batch']:.2f}x of it")
                if "kornia" in rate:
                    line += f"; batched vs kornia RandAugment: {rate['batched'] / rate['kornia']:.2f}x"
                print(line + ")")


if __name__ == "__main__":
    main()
