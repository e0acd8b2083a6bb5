"""What several test modules share, in one place: tolerances of discrete metrics."""
from __future__ import annotations

from typing import Any

# samples in the evaluation splits of the embedded benchmarks the equality tests train on
SPLIT_SIZES = {"digits": {"test": 360, "val": 180}}


def scored_samples(metric: str, config: dict[str, Any]) -> int:
    """How many predictions an accuracy `metric` of a run with resolved `config` (config.json)
    counts, at the least: a few-shot split's tasks x ways x query shots, a mini-batch split's
    images (the embedded benchmarks'), a training metric's one batch (a pre-update score: one
    task). 1 where it is not known (the metric is then left to its loss)."""
    split = "test" if metric.startswith("test") else "val" if "val" in metric else "train"
    if config.get("ways"):
        tasks = {"test": config.get("test_tasks"), "val": config.get("val_tasks")}.get(split) or 1
        if split == "train" and "pre_" not in metric:
            tasks = config.get("batch_size") or 1
        return tasks * config["ways"] * config["query_shots"]
    if split == "train":
        return config.get("batch_size") or 1
    return SPLIT_SIZES.get(config.get("benchmark", ""), {}).get(split, 1)


def accuracy_tolerance(metric: str, config: dict[str, Any], samples: int = 3) -> float:
    """The absolute tolerance of an accuracy compared between two code paths (ranks against
    one process, another thread count): `samples` predictions of what it counts. A near-tie
    flips with float rounding, so a finer tolerance is a coin toss on another CPU."""
    return samples / scored_samples(metric, config)
