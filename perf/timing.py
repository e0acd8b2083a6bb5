"""Timing helpers shared by the benchmark scripts (imported from the scripts' own folder)."""
from __future__ import annotations

import time
from typing import Callable

import torch


def timed(step: Callable[[], object], device: torch.device) -> float:
    """Wall time of one call, synchronized on CUDA."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def round_robin(steps: dict[str, Callable[[], object]], device: torch.device, repeats: int,
                warmup: int = 3) -> dict[str, float]:
    """Median seconds per call of each step. Steps are timed in turn, once per round, so slow
    drifts of the machine (frequency, other load) hit all alike instead of biasing later ones."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            times[name].append(timed(step, device))
    return {name: sorted(t)[len(t) // 2] for name, t in times.items()}
