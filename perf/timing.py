"""Timing helpers shared by the benchmark scripts (imported from the scripts' own folder)."""
from __future__ import annotations

import time
from typing import Callable

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
