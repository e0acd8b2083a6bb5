"""Progress during training: a rich bar on a terminal, plain log lines anywhere else.

Under nohup, in a log file or in a cluster job's output a bar prints nothing until it ends
and cuts lines to 80 columns, so there the progress is a line every few steps and at the
end of each epoch, written whole and flushed.
"""
from __future__ import annotations

import time
from typing import Any, Mapping

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def training_progress(console: Console | None = None, disable: bool = False, every: int = 10) -> Any:
    """A rich Progress with one row per run (description, bar, step count, elapsed, ETA,
    metrics) on a terminal; elsewhere a PlainProgress logging every `every` steps and at
    each epoch end."""
    if console is not None and not console.is_terminal and not disable:
        return PlainProgress(console, every)
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


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class PlainProgress:
    """rich.progress.Progress's calls used by the run loop (add_task, update, advance, a
    context manager), printed as whole lines: `description step 40/570 (7%) 0:00:04 eta
    0:00:52 loss 0.31 acc 91.2%`, one every `every` steps, at each epoch end and at the end."""

    def __init__(self, console: Console, every: int = 10):
        self.console, self.every = console, max(1, every)
        self.tasks: dict[int, dict[str, Any]] = {}

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def add_task(self, description: str, total: int | None = None, completed: int = 0, **fields: Any) -> int:
        task_id = len(self.tasks)
        self.tasks[task_id] = {"description": description, "total": total, "completed": completed,
                               "start": completed, "started": time.perf_counter(), "fields": fields}
        return task_id

    def advance(self, task_id: int, advance: int = 1) -> None:
        self.update(task_id, completed=self.tasks[task_id]["completed"] + advance)

    def update(self, task_id: int, completed: int | None = None, **fields: Any) -> None:
        """Record progress; print a line every `every` steps, at the end, and when the loop
        reports a finished epoch (`epoch=N`, after its validation)."""
        task = self.tasks[task_id]
        epoch_done = "epoch" in fields and fields["epoch"] != task["fields"].get("epoch")
        task["fields"].update(fields)
        moved = completed is not None and completed != task["completed"]
        if moved:
            task["completed"] = completed
        # a training task reports its last step in its epoch line; other tasks (the test) at the end
        finished = task["completed"] == task["total"] and "epoch" not in task["fields"]
        due = moved and (task["completed"] % self.every == 0 or finished)
        if not (due or epoch_done):
            return
        completed, total = task["completed"], task["total"]
        elapsed = time.perf_counter() - task["started"]
        line = task["description"] + (f" epoch {fields['epoch']} done," if epoch_done else "") + f" step {completed}"
        if total:
            done = completed - task["start"]
            eta = elapsed / done * (total - completed) if done > 0 else 0.0
            line += f"/{total} ({100 * completed / total:.0f}%) {_duration(elapsed)} eta {_duration(eta)}"
        metrics = task["fields"].get("metrics")
        if metrics:
            line += f" {metrics}"
        print(line, file=self.console.file, flush=True)
