"""The rich progress bar shown during training: steps, elapsed time, ETA and live metrics."""
from __future__ import annotations

from typing import Mapping

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def training_progress(console: Console | None = None, disable: bool = False) -> Progress:
    """A Progress with one row per run: description, bar, step count, elapsed, ETA, metrics."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(bar_width=28),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[metrics]}"),
        console=console,
        disable=disable,
    )


def format_metrics(metrics: Mapping[str, float]) -> str:
    """'loss 0.123 acc 95.1% val 96.0%' from whichever of those keys are present (few-shot
    runs add pre-update accuracy 'pre' and, for regression, MSEs)."""
    parts = []
    for key, label, percent in (("loss", "loss", False), ("pre_accuracy", "pre", True), ("accuracy", "acc", True),
                                ("val_accuracy", "val", True), ("pre_mse", "pre mse", False), ("mse", "mse", False),
                                ("val_mse", "val mse", False)):
        if key in metrics:
            value = metrics[key]
            parts.append(f"{label} {100 * value:.1f}%" if percent else f"{label} {value:.3f}")
    return " ".join(parts)
