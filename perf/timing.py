"""Timing helpers shared by the benchmark scripts (imported from the scripts' own folder)."""
from __future__ import annotations

import time
from typing import Any, Callable

import torch


def timed(step: Callable[[], object], device: torch.device, calls: int = 1) -> float:
    """Wall time of `calls` consecutive calls, synchronized on CUDA."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def round_robin(steps: dict[str, Callable[[], object]], device: torch.device, repeats: int,
                warmup: int = 3, min_seconds: float = 0.0) -> dict[str, float]:
    """Median seconds per call of each step. Steps are timed in turn, once per round, so slow
    drifts of the machine (frequency, other load) hit all alike instead of biasing later ones.

    With `min_seconds`, each turn times as many consecutive calls of its step as fill it
    (measured after the warm-up): a call of a millisecond or two right after another step
    runs 20-60% slower on a shared 2-core VM (cold caches, an idle core waking up), which
    would measure the machine's transition rather than the step's steady throughput."""
    calls: dict[str, int] = {}
    for name, step in steps.items():
        for _ in range(warmup):
            step()
        one = timed(step, device)
        calls[name] = max(1, int(min_seconds / one)) if min_seconds > 0 else 1
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            times[name].append(timed(step, device, calls[name]) / calls[name])
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}


def step_arguments(description: str, repeats: int) -> Any:
    """The command line of the scripts that time one training step on a random batch: image
    size, channels, batch size, model, device, repeats."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--model", default="small-cnn")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=repeats)
    return parser.parse_args()


def random_batch(args: Any) -> tuple[torch.device, Any, Any]:
    """(device, spec, batch): a fixed random batch of 10 classes for `step_arguments`' sizes,
    on the device; prints the device, threads, model and batch shape."""
    from metaaugment import Batch, TaskSpec
    from metaaugment.run.devices import resolve_device

    device = resolve_device(args.device)
    spec = TaskSpec(num_classes=10, input_shape=(args.channels, args.image_size, args.image_size),
                    mean=(0.5,) * args.channels, std=(0.25,) * args.channels)
    g = torch.Generator().manual_seed(0)
    batch = Batch(torch.rand(args.batch_size, *spec.input_shape, generator=g),
                  torch.randint(0, 10, (args.batch_size,), generator=g)).to(device)
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
          f"threads {torch.get_num_threads()}, model {args.model}, batch {args.batch_size}x{spec.input_shape}")
    return device, spec, batch
