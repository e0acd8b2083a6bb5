"""`metaaug compare`: runs or reuses runs, aggregates mean ± std, writes CSV/Markdown/PNG."""
import csv
import io
import json
import statistics
from pathlib import Path

import pytest

from metaaugment.run.folder import RunDirectory
from metaaugment.steptools.stats import mean_std


def test_mean_std_is_the_sample_standard_deviation():
    values = [0.9, 0.95, 0.97]
    assert mean_std(values) == pytest.approx((statistics.mean(values), statistics.stdev(values)), rel=1e-12)
    assert mean_std([0.5]) == (0.5, 0.0)


def compare(command, capsys):
    from metaaugment.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(command)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def test_compare_writes_table_csv_markdown_and_png(tmp_path, capsys):
    out = tmp_path / "cmp"
    command = ["compare", "digits", "--policies", "none,mixup", "--seeds", "0,1", "--epochs", "1", "--batch-size",
               "256", "--device", "cpu", "--quiet", "--out", str(out)]
    code, stdout, stderr = compare(command, capsys)
    assert code == 0, stderr
    assert "none" in stdout and "mixup" in stdout and "±" in stdout
    rows = list(csv.DictReader((out / "comparison.csv").open()))
    assert [r["policy"] for r in rows] == ["none", "mixup"] and all(r["n_seeds"] == "2" for r in rows)
    # the CSV's statistics are those of the runs' own results.json files
    accs = [RunDirectory(out / "none" / f"seed{s}").read_results()["metrics"]["test_accuracy"] for s in (0, 1)]
    mean, std = mean_std(accs)
    assert abs(float(rows[0]["test_accuracy_mean"]) - mean) < 1e-6
    assert abs(float(rows[0]["test_accuracy_std"]) - std) < 1e-6
    assert "| none | 2 |" in (out / "comparison.md").read_text()
    assert (out / "comparison.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    stamp = (out / "none" / "seed0" / "results.json").stat().st_mtime_ns
    killed_write = out / ".comparison.md.x1y2z3.metaaug-tmp"  # what a table write killed midway leaves
    killed_write.write_text("half a table")
    code, _, stderr = compare(command, capsys)
    assert code == 0 and stderr.count("reusing") == 4
    assert (out / "none" / "seed0" / "results.json").stat().st_mtime_ns == stamp
    assert not killed_write.exists()
    # finished runs are reused before any launcher starts a job: no job, no "starting"
    code, _, stderr = compare([*command, "--launcher", "local"], capsys)
    assert code == 0 and stderr.count("reusing") == 4 and "starting" not in stderr and not (out / ".jobs").exists()
    # runs trained on one process are not what a two-process comparison would train
    code, _, stderr = compare([*command, "--nproc-per-node", "2"], capsys)
    assert code == 2 and len(stderr.strip().splitlines()) == 1
    assert "holds a finished run trained on 1 process(es); this comparison asks for 2" in stderr
    assert (out / "none" / "seed0" / "results.json").stat().st_mtime_ns == stamp


def test_comparison_markdown_gives_each_column_its_own_unit():
    from metaaugment.comparison.compare import RunRecord, comparison_markdown, summarize

    regression = [RunRecord("nme", seed, Path(f"r{seed}"), {"kind": "regression", "wall_time_s": 1.0, "metrics": {
        "test_mse": 0.5 + seed, "test_mse_ci95": 0.1, "test_pre_mse": 2.0, "best_val_mse": 0.4}}) for seed in (0, 1)]
    text = comparison_markdown("sinusoid", summarize(regression), regression)
    assert "| meta-test MSE |" in text and "%" not in text.split("## Runs")[0].replace("95% CI", "")
    single = [RunRecord("none", 0, Path("r"), {"kind": "classification", "wall_time_s": 1.0, "metrics": {
        "test_accuracy": 0.9, "best_val_accuracy": 0.8, "test_loss": 0.3}})]
    text = comparison_markdown("digits", summarize(single), single)
    assert "| test accuracy (%) |" in text and "| none | 1 | 90.00 | 80.00 | 0.3000 |" in text  # one seed: no ± 0
    from metaaugment.comparison.compare import comparison_csv

    row = next(csv.DictReader(io.StringIO(comparison_csv(summarize(single)))))
    assert row["test_accuracy_mean"] == "0.900000" and row["test_accuracy_std"] == ""  # unknown, not 0


def test_a_metric_the_learner_does_not_report_is_a_dash_not_nan():
    """ProtoNets have no pre-update scores: their cells say '-' (md) and are empty (csv)."""
    from metaaugment.comparison.compare import RunRecord, comparison_csv, comparison_markdown, summarize

    runs = [RunRecord("mlti", seed, Path(f"r{seed}"), {"kind": "few-shot", "wall_time_s": 1.0, "metrics": {
        "test_accuracy": 0.8 + seed / 100, "test_accuracy_ci95": 0.01, "best_val_accuracy": 0.8,
        "final_train_accuracy": 0.9}}) for seed in (0, 1)]
    text = comparison_markdown("image-folder", summarize(runs), runs)
    assert "nan" not in text and "| mlti | 2 | 80.50 ± 0.71 |" in text and " - |" in text.split("## Runs")[0]
    row = next(csv.DictReader(io.StringIO(comparison_csv(summarize(runs)))))
    assert row["final_train_pre_accuracy_mean"] == "" and row["test_accuracy_mean"] == "0.805000"


@pytest.mark.parametrize("with_pre_update", [True, False])
def test_the_curve_panel_names_the_dashed_curve_only_when_it_draws_one(tmp_path, with_pre_update):
    """MAML reports a pre-update score (dashed curve), ProtoNets do not: the panel's title must
    not promise a dashed curve that is not there."""
    from metaaugment.comparison.compare import RunRecord, comparison_figure, summarize

    runs = []
    for seed in (0, 1):
        folder = tmp_path / f"seed{seed}"
        folder.mkdir()
        epochs = [{"kind": "epoch", "step": 10 * e, "epoch": e, "val_accuracy": 0.5 + e / 10,
                   **({"train_pre_accuracy": 0.2} if with_pre_update else {})} for e in (1, 2)]
        (folder / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in epochs))
        runs.append(RunRecord("nme", seed, folder, {"kind": "few-shot", "wall_time_s": 1.0, "metrics": {
            "test_accuracy": 0.8, "test_accuracy_ci95": 0.01, "best_val_accuracy": 0.7}}))
    figure = comparison_figure("glyphs", summarize(runs), runs)
    right = figure.axes[1]
    assert ("dashed" in right.get_title()) == with_pre_update
    assert sum(line.get_linestyle() == "--" for line in right.get_lines()) == int(with_pre_update)


def test_the_comparison_plots_y_range_shows_differences_at_their_size():
    from metaaugment.comparison.compare import MIN_PERCENT_SPAN, honest_range

    low, high = honest_range([97.13], percent=True)  # one seed: not zoomed onto one point
    assert high - low >= MIN_PERCENT_SPAN and low <= 97.13 <= high <= 100
    low, high = honest_range([92.75, 93.06, 92.9, 91.8, 94.0], percent=True)
    assert high - low >= MIN_PERCENT_SPAN and low < 91.8 and high > 94.0
    low, high = honest_range([2.0, 99.5], percent=True)  # a wide spread: all of it, within [0, 100]
    assert (low, high) == (0.0, 100.0)
    low, high = honest_range([0.1349, 0.2386], percent=False)  # MSE: from 0, everything inside
    assert low == 0.0 and high > 0.2386
    low, high = honest_range([10.0, 10.2], percent=False)
    assert high - low >= 0.2 * 10.2 and low < 10.0 < 10.2 < high


def test_long_variant_names_wrap_under_their_own_point_without_overlap():
    from metaaugment.comparison.compare import RunRecord, comparison_figure, summarize, wrap_label

    assert wrap_label("metaaugment-engine=last-layer,policy_lr=0.001") == \
        "metaaugment-\nengine=last-\nlayer,policy_lr=\n0.001"
    assert all(len(line) <= 16 for line in wrap_label("x" * 40 + ",short").splitlines())
    names = ["none", "randaugment", "metaaugment-engine=last-layer,policy_lr=0.001",
             "rl-mixup-patches=16,reward_every=50", "trivialaugment,backend=torchvision"]
    records = [RunRecord(name, seed, Path("nowhere"), {"kind": "classification", "wall_time_s": 1.0, "metrics": {
        "test_accuracy": 0.9 + 0.01 * seed, "best_val_accuracy": 0.9, "test_loss": 0.3}})
        for name in names for seed in (0, 1)]
    fig = comparison_figure("fonts", summarize(records), records)
    renderer = fig.canvas.get_renderer()
    left, right = fig.axes
    boxes = [label.get_window_extent(renderer) for label in left.get_xticklabels()]
    assert len(boxes) == len(names)
    for first, second in zip(boxes, boxes[1:]):
        assert first.x1 < second.x0  # side by side, none over its neighbour
    assert max(box.x1 for box in boxes) < right.get_window_extent(renderer).x0  # none under the next panel
    assert min(box.x0 for box in boxes) >= 0 and min(box.y0 for box in boxes) >= 0  # inside the figure
