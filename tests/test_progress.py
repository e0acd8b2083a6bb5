"""Progress as a user watches it: rows that keep their counts and ETA at any terminal width,
and a comparison's progress over its runs."""
import io

import pytest
from rich.console import Console

from metaaugment.comparison.launch import OverallProgress, last_line
from metaaugment.run.progress import fit_progress_line, training_progress

DESCRIPTION, METRICS = "digits · none · supervised · seed 0", "loss 1.702 acc 66.7% val 22.8%"


@pytest.mark.parametrize("width", [80, 120])
def test_a_progress_row_keeps_its_counts_percentage_and_eta_at_80_and_120_columns(width):
    console = Console(file=io.StringIO(), width=width, force_terminal=True, color_system=None)
    with training_progress(console) as progress:
        task = progress.add_task(DESCRIPTION, total=7600, completed=0, metrics="")
        progress.update(task, completed=250, metrics=METRICS)
        progress.refresh()
    row = console.file.getvalue().replace("\r", "\n").splitlines()[-2].replace("\x1b[2K", "")
    assert len(row) < width and row.startswith(DESCRIPTION)
    assert " 250/7600 " in row and "3%" in row and " eta " in row and "…" not in row.split(" eta ")[0]
    if width == 120:
        assert METRICS in row and "━" in row  # room for everything but the elapsed time


def test_narrow_rows_lose_elapsed_then_bar_then_metrics_then_description():
    def row(width):
        return fit_progress_line(DESCRIPTION, 250, 7600, 12.0, 353.0, METRICS, width)

    assert row(160).bar == 28 and "0:00:12" in row(160).right  # everything
    assert row(100).bar == 0 and "0:00:12" not in row(100).right and METRICS in row(100).right
    assert row(80).right.startswith("250/7600   3% eta 0:05:53 loss") and row(80).right.endswith("…")
    assert row(60).left.endswith("…") and row(60).right == "250/7600   3% eta 0:05:53"
    assert all(len(row(width).plain()) < width for width in (40, 60, 80, 100, 120, 160))


def test_a_comparisons_progress_counts_runs_and_estimates_from_the_trained_ones(monkeypatch):
    clock = iter([0.0, 100.0, 400.0])
    monkeypatch.setattr("metaaugment.comparison.launch.time.monotonic", lambda: next(clock))
    overall = OverallProgress(4)
    assert overall.summary() == ""
    overall.finished(0.5, trained=False)  # a reused run
    overall.finished(90.0)
    assert overall.summary() == " · comparison 2/4 runs done, 0:01:40 elapsed, eta 0:03:00"
    overall.finished(100.0)
    overall.finished(100.0)
    assert overall.summary() == " · comparison 4/4 runs done, 0:06:40 elapsed"


def test_a_jobs_last_progress_line_is_read_from_the_end_of_its_log(tmp_path):
    log = tmp_path / "job.log"
    assert last_line(log) is None
    log.write_text("x" * 20000 + "\nrun · step 10/40 (25%)\r run · step 20/40 (50%)\n\n")
    assert last_line(log) == "run · step 20/40 (50%)"
