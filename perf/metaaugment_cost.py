"""MetaAugment's cost, as ratios measured in one process on the same model and batch.

1. Seconds per MetaAugment training step (augmentation + bilevel update + real update) for
   each engine, divided by seconds per plain SGD step (no augmentation, no policy).
   The fast engine's passes are also timed one by one, in rounds with a plain step of their
   own: their sum is the engine's floor (three forwards and three backwards); the rest of a
   step is the policy's own work (augmentation, policy network, sampler, update of theta
   and alpha).
2. Images per second of the batched per-sample ops (a different op pair and magnitude per
   image, `image_ops.apply_transformations`) divided by torchvision's RandAugment applied
   image by image (the way per-sample randomness is usually obtained).

Run by hand (not part of the test suite):

    .venv/bin/python benchmarks/metaaugment_cost.py [--model small-cnn] [--batch-size 128] [--val-batch-size N]
        [--engines higher,fast-jvp,fast,last-layer] [--system-malloc] [--device auto]
"""
from __future__ import annotations

import argparse
from typing import Callable

import torch
from timing import round_robin, timed
from torch.func import functional_call
from torchvision.transforms import v2

from metaaugment import (
    Batch,
    StepContext,
    TaskSpec,
    create_model,
    create_policy,
    forward_pass,
    keep_freed_host_memory,
    per_sample_cross_entropy,
    supervised_step,
)
from metaaugment.baselines.per_sample import apply_per_sample
from metaaugment.run.devices import resolve_device
from metaaugment.sample_aware.ops import NUM_OPS, apply_transformations
from metaaugment.sample_aware.policy import ENGINES


def training_steppers(spec: TaskSpec, batch: Batch, val: Batch, device: torch.device, model_name: str,
                      val_batch_size: int | None, engines: list[str], lookahead_optimizers: list[str],
                      meta_every: list[int]) -> tuple[dict, dict]:
    """The steppers to time, and how many training steps each call makes (meta_every=k:
    one call makes k steps, one of them a meta-update)."""
    def make(policy_name: str, count: int = 1, **options) -> Callable[[], object]:
        torch.manual_seed(0)
        model = create_model(model_name, spec).to(device)
        policy = create_policy(policy_name, **options)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        ctx = StepContext(model=model, spec=spec, optimizer=optimizer, validation_batch=lambda: val)
        policy.setup(ctx)
        policy.to(device)

        def steps() -> None:
            for _ in range(count):
                supervised_step(model, optimizer, batch, policy, ctx)
                ctx.step += 1

        return steps

    steps, counts = {"plain SGD step": make("none")}, {}
    for engine in engines:
        for inner in lookahead_optimizers:
            for k in meta_every:
                name = (f"metaaugment engine={engine}" + ("" if inner == "sgd" else f" lookahead={inner}")
                        + ("" if k == 1 else f" meta_every={k}"))
                steps[name] = make("metaaugment", k, engine=engine, val_batch_size=val_batch_size,
                                   lookahead_optimizer=inner, meta_every=k)
                counts[name] = k
    return steps, counts


def fast_engine_passes(spec: TaskSpec, batch: Batch, val: Batch, device: torch.device, model_name: str,
                       repeats: int, warmup: int = 2) -> dict[str, float]:
    """Median seconds of a plain SGD step and of each pass the fast engine makes in Eq. 4
    order, timed in turn in every round: training forward, backward for sum_i P_i grad L_i
    (graph kept), validation forward and backward at w_hat, forward at w + h grad L_val (no
    graph), real backward and SGD step. Uniform weights stand in for the policy's."""
    torch.manual_seed(0)
    model = create_model(model_name, spec).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    names, params = zip(*model.named_parameters())
    weights = torch.full((len(batch),), 1.0 / len(batch), device=device)
    times: dict[str, list[float]] = {}

    def time_pass(name: str, run: Callable[[], object]) -> object:
        holder: list[object] = []
        times.setdefault(name, []).append(timed(lambda: holder.append(run()), device))
        return holder[0]

    def plain() -> None:
        optimizer.zero_grad(set_to_none=True)
        forward_pass(model, batch).losses.mean().backward()
        optimizer.step()

    def validation(grads: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        lookahead = {n: (p.detach() - 0.1 * g).requires_grad_() for n, p, g in zip(names, params, grads)}
        loss = per_sample_cross_entropy(functional_call(model, lookahead, (val.inputs,)), val.targets).mean()
        return torch.autograd.grad(loss, list(lookahead.values()))

    def shifted_forward(val_grads: tuple[torch.Tensor, ...]) -> torch.Tensor:
        with torch.no_grad():
            shifted = {n: p + 1e-3 * g for n, p, g in zip(names, params, val_grads)}
            return per_sample_cross_entropy(functional_call(model, shifted, (batch.inputs,)), batch.targets)

    def real_update(losses: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        (weights * losses).sum().backward()
        optimizer.step()

    for _ in range(warmup + repeats):
        time_pass("plain SGD step", plain)
        losses = time_pass("training forward", lambda: forward_pass(model, batch).losses)
        grads = time_pass("backward for w_hat", lambda: torch.autograd.grad((weights * losses).sum(), params,
                                                                              retain_graph=True))
        val_grads = time_pass("validation forward+backward", lambda: validation(grads))
        time_pass("forward at w + h grad L_val", lambda: shifted_forward(val_grads))
        time_pass("real backward + SGD step", lambda: real_update(losses))
    return {name: sorted(t[warmup:])[len(t[warmup:]) // 2] for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--model", default="small-cnn")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--val-batch-size", type=int, default=None,
                        help="n_val of Algorithm 1 (default: the training batch size)")
    parser.add_argument("--system-malloc", action="store_true",
                        help="keep glibc's default allocator settings (page faults on every step's activations)")
    parser.add_argument("--engines", default="higher,fast-jvp,fast,last-layer",
                        help="comma-separated engines to time (default: all four)")
    parser.add_argument("--lookahead-optimizers", default="sgd",
                        help="comma-separated lookahead steps to time: sgd (the paper's), task (the task "
                             "network's SGD with momentum 0.9)")
    parser.add_argument("--meta-every", default="1",
                        help="comma-separated meta-intervals k to time (a meta-update every k steps)")
    args = parser.parse_args()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        parser.error(f"unknown engine(s) {', '.join(unknown)}; choose from {', '.join(ENGINES)}")
    # as `metaaug` does: freed host memory is reused, as CUDA's caching allocator does on GPU
    kept = False if args.system_malloc else keep_freed_host_memory()
    device = resolve_device(args.device)
    spec = TaskSpec(num_classes=10, input_shape=(3, args.image_size, args.image_size), mean=(0.5,) * 3, std=(0.25,) * 3)
    g = torch.Generator().manual_seed(0)
    images = lambda n: (torch.rand(n, *spec.input_shape, generator=g) * 255).round() / 255  # noqa: E731
    batch = Batch(images(args.batch_size), torch.randint(0, 10, (args.batch_size,), generator=g)).to(device)
    val = Batch(images(args.batch_size), torch.randint(0, 10, (args.batch_size,), generator=g)).to(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {device} ({name}), threads {torch.get_num_threads()}, model {args.model}, "
          f"batch {args.batch_size}x{spec.input_shape}, validation batch {args.val_batch_size or args.batch_size}, "
          f"host memory {'kept for reuse' if kept else 'glibc defaults'}")

    inners = [o.strip() for o in args.lookahead_optimizers.split(",") if o.strip()]
    steppers, counts = training_steppers(spec, batch, val, device, args.model, args.val_batch_size, engines,
                                         inners, [int(k) for k in args.meta_every.split(",")])
    medians = {name: seconds / counts.get(name, 1)
               for name, seconds in round_robin(steppers, device, args.repeats).items()}
    plain = medians["plain SGD step"]
    print(f"\n{'step':48s} {'ms/step':>9s} {'ratio to plain':>15s}")
    for step, seconds in medians.items():
        print(f"{step:48s} {1e3 * seconds:9.1f} {seconds / plain:15.2f}")

    n_val = args.val_batch_size or args.batch_size
    passes = fast_engine_passes(spec, batch, Batch(val.inputs[:n_val], val.targets[:n_val]), device, args.model,
                                args.repeats)
    plain_passes = passes.pop("plain SGD step")
    print(f"\n{'fast engine, pass by pass':32s} {'ms':>9s} {'ratio to plain':>15s}")
    for step, seconds in passes.items():
        print(f"{step:32s} {1e3 * seconds:9.1f} {seconds / plain_passes:15.3f}")
    floor = sum(passes.values()) / plain_passes
    print(f"{'sum of passes (the floor)':32s} {1e3 * sum(passes.values()):9.1f} {floor:15.3f}")

    pairs = torch.randint(0, NUM_OPS, (args.batch_size, 2), generator=g)
    magnitudes = torch.rand(args.batch_size, 2, generator=g) * 10
    signs = torch.where(torch.rand(args.batch_size, 2, generator=g) < 0.5, -1.0, 1.0)
    randaugment = v2.RandAugment(num_ops=2, magnitude=9)
    ops = round_robin({
        "batched per-sample op pairs": lambda: apply_transformations(batch.inputs, pairs, magnitudes, signs),
        "torchvision RandAugment, image by image": lambda: apply_per_sample(randaugment, batch.inputs),
    }, device, args.repeats)
    reference = ops["torchvision RandAugment, image by image"]
    print(f"\n{'augmentation':40s} {'images/s':>10s} {'ratio':>7s}")
    for step, seconds in ops.items():
        print(f"{step:40s} {args.batch_size / seconds:10.0f} {reference / seconds:7.2f}")


if __name__ == "__main__":
    main()
