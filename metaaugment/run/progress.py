"""Progress during training: a rich bar on a terminal, plain log lines anywhere else.

On a terminal each run is one row fitted to the terminal's width (`fit_progress_line`): the
step counts, the percentage and the ETA always show; narrower terminals drop the elapsed
time first, then shorten and drop the bar, then shorten the description (each of its parts
keeps its start), then drop metrics from the end. Elsewhere a bar prints nothing until it
ends, so the progress is a line every few steps and at the end of each epoch, flushed: whole
in a regular file (nohup, a log, a cluster job's output), fitted to the terminal's width on
a pipe (`| tee`), so that each update stays one row.
"""
from __future__ import annotations

import os
import re
import stat
import time
from typing import Any, Mapping, NamedTuple

from rich.console import Console
from rich.progress import Progress, ProgressColumn, Task
from rich.text import Text

BAR_WIDTH, MIN_BAR, MIN_TEXT = 28, 8, 14


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:max(0, width - 1)] + "…"


class FittedLine(NamedTuple):
    """One progress row: `left` (the description), a bar of `bar` columns (0: none) of which
    `filled` are done, and `right` (counts, percentage, ETA, elapsed, metrics)."""

    left: str
    bar: int
    filled: int
    right: str

    def plain(self) -> str:
        """The row as text, the bar drawn with '━' (done) and '─' (to do)."""
        bar = "━" * self.filled + "─" * (self.bar - self.filled)
        return " ".join(part for part in (self.left, bar, self.right) if part)


# a run's description is "benchmark · policy · learner · seed K": the learner goes first (a
# comparison's runs share it), then the benchmark (the same all run long); then the policy; the seed stays
RUN_PART_STEPS = (("shrink", 2), ("drop", 2), ("shrink", 0), ("drop", 0), ("shrink", 1))


def shorten_description(description: str, width: int) -> str:
    """`description` in at most `width` columns (at least MIN_TEXT). A run's description
    (4 parts, ' · ' between them) loses the learner, then shortens the benchmark name and the
    policy, never below 4 characters ('ima…'); the seed stays. Any other is cut longest part
    first; last, the whole is cut with '…'."""
    width = max(MIN_TEXT, width)
    parts = description.split(" · ")

    def fits() -> bool:
        return len(" · ".join(p for p in parts if p is not None)) <= width

    steps = RUN_PART_STEPS if len(parts) == 4 else [("shrink", i) for i in
                                                     sorted(range(len(parts)), key=lambda i: -len(parts[i]))]
    for action, index in steps:
        if fits():
            break
        if action == "drop":
            parts[index] = None
            continue
        part = parts[index]
        while part is not None and len(part) > 4 and not fits():
            part = part[:len(part) - 2] + "…"
            parts[index] = part
    return _cut(" · ".join(p for p in parts if p is not None), width)


def fit_metrics(metrics: str, width: int) -> str:
    """The leading metrics of `metrics` ('loss 0.123 acc 95.1% val 96.0%') that fit in `width`
    columns, whole ('' when not even the first does)."""
    items = re.findall(r"[a-z][a-z ]* [-+0-9.eEinfa]+%?", metrics)
    if " ".join(items) != metrics:  # not the usual form: cut as text
        return _cut(metrics, width) if width >= MIN_TEXT else ""
    kept: list[str] = []
    for item in items:
        if len(" ".join([*kept, item])) > width:
            break
        kept.append(item)
    return " ".join(kept)


def fit_progress_line(description: str, completed: float, total: float | None, elapsed: float | None,
                      remaining: float | None, metrics: str, width: int) -> FittedLine:
    """One progress row within `width` columns: the counts, percentage and ETA always; then
    the elapsed time and the bar (shortened first) as far as they fit, then the description
    shortened (`shorten_description`) so that the metrics stay whole; last, the metrics lose
    items from the end."""
    count = f"{int(completed)}/{int(total)}" if total else f"{int(completed)}"
    percent = f"{100 * completed / total:3.0f}%" if total else ""
    eta = f"eta {duration(remaining) if remaining is not None else '-:--:--'}"
    core = " ".join(part for part in (count, percent, eta) if part)
    spent = duration(elapsed or 0.0)
    budget = width - 1  # the last column would wrap on some terminals

    def length(desc: str, bar: int, show_elapsed: bool, shown_metrics: str) -> int:
        parts = [desc, "x" * bar if bar else "", core, spent if show_elapsed else "", shown_metrics]
        return len(" ".join(part for part in parts if part))

    desc, bar, show_elapsed, shown = description, BAR_WIDTH, True, metrics
    if length(desc, bar, show_elapsed, shown) > budget:
        show_elapsed = False
    if length(desc, bar, show_elapsed, shown) > budget:  # the bar repeats the percentage: shorter, then none
        bar = max(MIN_BAR, bar - (length(desc, bar, show_elapsed, shown) - budget))
        if length(desc, bar, show_elapsed, shown) > budget:
            bar = 0
    if length(desc, bar, show_elapsed, shown) > budget:
        desc = shorten_description(desc, len(desc) - (length(desc, bar, show_elapsed, shown) - budget))
    if length(desc, bar, show_elapsed, shown) > budget and shown:
        shown = fit_metrics(shown, len(shown) - (length(desc, bar, show_elapsed, shown) - budget))
    right = " ".join(part for part in (core, spent if show_elapsed else "", shown) if part)
    filled = round(bar * completed / total) if total and bar else 0
    return FittedLine(desc, bar, filled, right)


def fit_plain_line(description: str, core: str, metrics: str, width: int | None) -> str:
    """A plain progress line `description core metrics` in `width` columns (None: whole): the
    description shortened first, then the metrics' last items dropped; `core` (the epoch,
    step counts, times and ETA) stays whole."""
    line = " ".join(part for part in (description, core, metrics) if part)
    budget = None if width is None else width - 1
    if budget is None or len(line) <= budget:
        return line
    description = shorten_description(description, len(description) - (len(line) - budget))
    line = " ".join(part for part in (description, core, metrics) if part)
    if len(line) > budget and metrics:
        metrics = fit_metrics(metrics, len(metrics) - (len(line) - budget))
    return " ".join(part for part in (description, core, metrics) if part)


def plain_width(file: Any) -> int | None:
    """The columns a plain progress line may take on `file`: None (whole lines) for a regular
    file (a log: nohup, a cluster job's output, `> log`); on a pipe (`| tee`, `| less`), the
    width of the terminal this process runs in, else $COLUMNS, else 80."""
    try:
        if stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            return None
    except (AttributeError, OSError, ValueError):  # no file descriptor (a StringIO): as a pipe
        pass
    for fd in (2, 1, 0):
        try:
            return os.get_terminal_size(fd).columns
        except OSError:
            continue
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else 80


class FittedRow(ProgressColumn):
    """The whole row of a task as one column, fitted to the console's width at each refresh
    (`fit_progress_line`): a terminal narrower than the full row loses the least useful parts
    first, never the counts or the ETA."""

    def __init__(self, console: Console):
        super().__init__()
        self.console = console

    def render(self, task: Task) -> Text:
        line = fit_progress_line(task.description, task.completed, task.total, task.elapsed, task.time_remaining,
                                 task.fields.get("metrics", ""), self.console.width)
        text = Text(line.left, style="bold")
        if line.bar:
            text.append(" ")
            text.append("━" * line.filled, style="bar.complete")
            text.append("━" * (line.bar - line.filled), style="bar.back")
        text.append(" " + line.right)
        return text


def training_progress(console: Console | None = None, disable: bool = False, every: int = 10) -> Any:
    """A rich Progress with one row per run (description, bar, step count, percentage, ETA,
    elapsed, metrics, fitted to the terminal's width) on a terminal; elsewhere a PlainProgress
    logging every `every` steps and at each epoch end."""
    if console is not None and not console.is_terminal and not disable:
        return PlainProgress(console, every)
    console = console or Console(stderr=True)
    return Progress(FittedRow(console), console=console, disable=disable)


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


def duration(seconds: float) -> str:
    """'1:02:03' (hours:minutes:seconds)."""
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class PlainProgress:
    """rich.progress.Progress's calls used by the run loop (add_task, update, advance, a
    context manager), printed as whole lines: `description step 40/570 (7%) 0:00:04 eta
    0:00:52 loss 0.31 acc 91.2%`, one every `every` steps, at each epoch end and at the end."""

    def __init__(self, console: Console, every: int = 10):
        self.console, self.every = console, max(1, every)
        self.width = plain_width(console.file)  # one row per line on a pipe to a terminal
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
        core = (f"epoch {fields['epoch']} done, " if epoch_done else "") + f"step {completed}"
        if total:
            done = completed - task["start"]
            eta = elapsed / done * (total - completed) if done > 0 else 0.0
            core += f"/{total} ({100 * completed / total:.0f}%) {duration(elapsed)} eta {duration(eta)}"
        line = fit_plain_line(task["description"], core, task["fields"].get("metrics") or "", self.width)
        print(line, file=self.console.file, flush=True)
