"""Progress as a user watches it: rows that keep their counts and ETA at any terminal width,
and a comparison's progress over its runs."""
import io
import os

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
    assert len(row) < width and row.startswith("digits · none")
    assert " 250/7600 " in row and "3%" in row and " eta " in row and METRICS in row
    if width == 120:
        assert row.startswith(DESCRIPTION) and "━" in row  # room for everything but the elapsed time


def test_narrow_rows_lose_elapsed_then_bar_then_description_then_metrics():
    def row(width):
        return fit_progress_line(DESCRIPTION, 250, 7600, 12.0, 353.0, METRICS, width)

    assert row(160).bar == 28 and "0:00:12" in row(160).right  # everything
    assert row(100).bar == 0 and "0:00:12" not in row(100).right and row(100).left == DESCRIPTION
    assert row(80).left == "digits · none · seed 0" and row(80).right == f"250/7600   3% eta 0:05:53 {METRICS}"
    assert row(60).left == "none · seed 0" and row(60).right == "250/7600   3% eta 0:05:53 loss 1.702"
    assert all(len(row(width).plain()) < width for width in (40, 60, 80, 100, 120, 160))


def test_at_80_columns_every_benchmark_keeps_its_policy_seed_counts_eta_and_metrics():
    from metaaugment.registry import BENCHMARKS

    for entry in BENCHMARKS.listing():
        description = f"{entry.name} · intershuffle · supervised · seed 2"
        for completed in (250, 7600):  # at 100% too
            line = fit_progress_line(description, completed, 7600, 1e5, 3e5, METRICS, 80)
            assert len(line.plain()) < 80 and line.left.endswith("· seed 2") and "eta " in line.right
            assert line.right.endswith(METRICS), line.plain()


def test_on_a_pipe_each_update_is_one_row_of_the_terminal_and_in_a_log_file_whole(tmp_path, monkeypatch):
    from metaaugment.run.progress import plain_width

    long = "image-classification-folder · none · supervised · seed 0"
    read, write = os.pipe()
    with os.fdopen(write, "w") as pipe, os.fdopen(read) as reader:
        monkeypatch.setattr("metaaugment.run.progress.os.get_terminal_size", lambda fd: os.terminal_size((80, 24)))
        console = Console(file=pipe, force_terminal=False)
        with training_progress(console, every=5) as progress:
            task = progress.add_task(long, total=100, completed=0, metrics="")
            for step in range(1, 11):
                progress.update(task, completed=step, metrics=METRICS)
            progress.update(task, metrics=METRICS, epoch=1)
        pipe.close()
        lines = reader.read().splitlines()
    assert len(lines) == 3 and all(len(line) < 80 for line in lines)
    assert lines[0].startswith("none · seed 0 step 5/100 (5%)") and lines[0].endswith("loss 1.702 acc 66.7%")
    assert "epoch 1 done, step 10/100" in lines[2]
    with open(tmp_path / "log", "w") as log:
        assert plain_width(log) is None  # a log file keeps whole lines (test_sinks: a real run's)
    monkeypatch.setattr("metaaugment.run.progress.os.get_terminal_size", lambda fd: (_ for _ in ()).throw(OSError))
    monkeypatch.setenv("COLUMNS", "100")
    assert plain_width(io.StringIO()) == 100


def test_a_comparisons_eta_weighs_each_remaining_run_by_its_measured_or_expected_cost(monkeypatch):
    clock = iter([0.0, 100.0, 400.0, 0.0])
    monkeypatch.setattr("metaaugment.comparison.launch.time.monotonic", lambda: next(clock))
    # none and metaaugment, two seeds each; metaaugment expected 2.3x none, 10 epochs each
    overall = OverallProgress({"none/0": ("none", 10.0), "meta/0": ("meta", 23.0), "none/1": ("none", 10.0),
                               "meta/1": ("meta", 23.0)})
    assert overall.summary() == ""
    overall.finished("none/0", 90.0)  # 9 s per unit: metaaugment expected at 23 x 9 s, none measured at 90 s
    assert overall.eta_s() == 90.0 + 2 * 207.0
    assert overall.summary() == " · comparison 1/4 runs done, 0:01:40 elapsed, eta 0:08:24"
    overall.finished("meta/0", 300.0)  # measured now: its own 300 s, not the expected 207 s
    assert overall.eta_s() == 90.0 + 300.0
    overall.finished("none/1", 100.0)
    overall.finished("meta/1", 300.0)
    assert overall.summary() == " · comparison 4/4 runs done, 0:06:40 elapsed"
    parallel = OverallProgress({"a": ("a", 1.0), "b": ("a", 1.0), "c": ("a", 1.0)}, parallel=2)
    parallel.finished("a", 60.0)
    assert parallel.eta_s() == 60.0  # two runs of 60 s, two at a time


def test_a_policy_declares_its_relative_cost_and_the_expected_cost_counts_epochs():
    from metaaugment.comparison.launch import expected_cost
    from metaaugment.run.config import RunConfig

    assert expected_cost(RunConfig(benchmark="fonts", policy="none", epochs=10)) == 10.0
    assert expected_cost(RunConfig(benchmark="fonts", policy="metaaugment", epochs=10)) == 23.0


def test_a_jobs_last_progress_line_is_read_from_the_end_of_its_log(tmp_path):
    log = tmp_path / "job.log"
    assert last_line(log) is None
    log.write_text("x" * 20000 + "\nrun · step 10/40 (25%)\r run · step 20/40 (50%)\n\n")
    assert last_line(log) == "run · step 20/40 (50%)"


def test_result_tables_fold_to_an_80_column_terminal_never_cut():
    from pathlib import Path

    from metaaugment.cli.main import _results_table, comparison_table
    from metaaugment.comparison.compare import RunRecord

    records = [RunRecord(policy, seed, Path("r"), {"kind": "few-shot", "wall_time_s": 10.0, "metrics": {
        "test_accuracy": 0.5, "test_accuracy_ci95": 0.01, "test_pre_accuracy": 0.2, "best_val_accuracy": 0.45,
        "train_pre_accuracy": 0.9}}) for policy in ("intershuffle, alpha=0.5", "nme") for seed in (0, 1)]
    console = Console(file=io.StringIO(), width=80, color_system=None)
    console.print(comparison_table("glyphs", [0, 1], records, "policy"))
    console.print(_results_table("image-classification-folder · intershuffle · seed 0",
                                 [("meta-test accuracy (95% CI)", "55.10% ± 0.81"),
                                  ("run folder", "runs/" + "x" * 90)]))
    text = console.file.getvalue()
    assert "…" not in text and max(map(len, text.splitlines())) <= 80
    first_column = "".join(line.split("│")[1].strip() for line in text.splitlines() if line.count("│") > 2)
    assert "intershuffle,alpha=0.5" in first_column.replace(" ", "")  # folded whole onto more lines
    assert "x" * 90 in "".join(line.split("│")[2].strip() for line in text.splitlines() if line.count("│") == 3)
