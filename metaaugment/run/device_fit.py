"""Whether a mini-batch run's settings fit a CPU: an estimate made before the first step.

The ImageNet-sized defaults of the image benchmarks (ResNet-50, 224 px, batch 256) are for
GPUs; on a laptop they fill the memory and take days, with no step done for minutes. Before
training, a run on a CPU measures one forward pass of 16 samples (evaluation mode, no
gradient: it changes no parameter, statistic or random state) and estimates

    memory  ~ 4 x parameter bytes (weights, gradients, two optimizer moments)
              + batch size x the bytes of every leaf module's output for one sample
                (what backpropagation keeps)
    step    ~ 3 x batch size x the forward time per sample (forward and backward)

without the policy's own cost. When the memory is over half the machine's or the run over
`SLOW_RUN_S`, one line says so and names a CPU-sized alternative.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

SLOW_RUN_S = 2 * 3600.0
SLOW_FORWARD_S = 0.2  # a forward slower than this is measured once, not twice
TIMED_SAMPLES = 16
MEMORY_SHARE = 0.5
OPTIMIZER_COPIES = 4  # weights, gradients and two moments (Adam; SGD with momentum keeps fewer)
BACKWARD_COST = 3     # a forward and a backward pass cost about three forwards
LAPTOP_GUIDE = "docs/datasets.md, 'Your own data on a laptop'"


@dataclass(frozen=True)
class TrainingEstimate:
    """Estimated memory (bytes) and time (seconds) of a run's training on its device."""

    memory_bytes: float
    step_s: float
    run_s: float


def forward_footprint(model: nn.Module, input_shape: tuple[int, ...], device: torch.device | str,
                      samples: int = 1) -> tuple[int, float]:
    """`samples` inputs of `input_shape` (C, H, W) through `model`, per sample: (the bytes of
    every leaf module's output, the forward's seconds, the faster of two). The model is left
    in its mode."""
    sizes: list[int] = []

    def record(module: nn.Module, inputs: object, output: object) -> None:
        outputs = output if isinstance(output, (tuple, list)) else (output,)
        sizes.extend(o.numel() * o.element_size() for o in outputs if isinstance(o, torch.Tensor))

    leaves = [m for m in model.modules() if next(m.children(), None) is None]
    hooks = [m.register_forward_hook(record) for m in leaves]
    was_training = model.training
    sample = torch.zeros(samples, *input_shape, device=device)
    seconds = []
    try:
        model.eval()
        with torch.no_grad():
            for _ in range(2):  # the first call pays one-off allocations; a slow one is enough
                sizes.clear()
                started = time.perf_counter()
                model(sample)
                seconds.append(time.perf_counter() - started)
                if seconds[-1] > SLOW_FORWARD_S:
                    break
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return sum(sizes) // samples, min(seconds) / samples


def estimate_training(model: nn.Module, input_shape: tuple[int, ...], batch_size: int, total_steps: int,
                      device: torch.device | str) -> TrainingEstimate:
    """The memory and time of `total_steps` steps of `batch_size` samples (formula above)."""
    # a few samples, not one: a small model's forward costs its per-call overhead whatever the
    # batch, and timing one sample would scale that overhead by the batch size
    activation_bytes, forward_s = forward_footprint(model, input_shape, device, min(batch_size, TIMED_SAMPLES))
    parameter_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    memory = OPTIMIZER_COPIES * parameter_bytes + batch_size * activation_bytes
    step_s = BACKWARD_COST * batch_size * forward_s
    return TrainingEstimate(memory, step_s, step_s * total_steps)


def cpu_fit_warning(estimate: TrainingEstimate, *, model: str, image_size: int, batch_size: int, epochs: int,
                    takes_image_size: bool, takes_crop: bool, machine_bytes: int | None) -> str | None:
    """One line when the run is GPU-sized for this CPU (over half its memory, or over
    SLOW_RUN_S), naming a CPU-sized alternative; None when it fits."""
    too_big = machine_bytes is not None and estimate.memory_bytes > MEMORY_SHARE * machine_bytes
    if not too_big and estimate.run_s <= SLOW_RUN_S:
        return None
    of_machine = f" of this machine's {machine_bytes / 2**30:.0f} GB" if machine_bytes else ""
    alternative = ["--model small-convnet"]
    if takes_image_size and image_size > 64:
        alternative.append("--image-size 32")
    if takes_crop:
        alternative.append("--benchmark-set crop=pad")
    if batch_size > 128:
        alternative.append("--batch-size 128")
    return (f"warning: {model} at {image_size} px, batch {batch_size}, is sized for a GPU: on this CPU about "
            f"{estimate.memory_bytes / 2**30:.1f} GB{of_machine} and {_duration(estimate.step_s)} a step, "
            f"{_duration(estimate.run_s)} for {epochs} epochs (estimated). For small images on a CPU: "
            f"{' '.join(alternative)} ({LAPTOP_GUIDE})")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s" if seconds >= 1 else f"{seconds:.2f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"
