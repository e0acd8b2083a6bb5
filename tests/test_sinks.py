"""Metrics beyond metrics.jsonl: metrics.csv, TensorBoard, W&B offline, and progress in a log file."""
import csv
import json
import subprocess
import sys
import time

import pytest
from helpers import quick_config

from metaaugment.run.folder import RunDirectory
from metaaugment.run.loop import train
from metaaugment.run.sinks import scalars


def records(folder):
    return RunDirectory(folder).read_metrics()


def tensorboard_scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}, events


def expected_scalars(folder):
    """metrics.jsonl's values at their steps, and results.json's test metrics at the last step."""
    expected: dict = {}
    for record in records(folder):
        for tag, value in scalars(record).items():
            expected.setdefault(tag, []).append((record["step"], value))
    last = max(record["step"] for record in records(folder))
    for key, value in json.loads((folder / "results.json").read_text())["metrics"].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            expected[f"test/{key}"] = [(last, float(value))]
    return expected


def assert_same_scalars(found, expected):
    assert set(found) == set(expected)
    for tag, points in expected.items():
        assert [step for step, _ in found[tag]] == [step for step, _ in points], tag
        assert [value for _, value in found[tag]] == pytest.approx([value for _, value in points], rel=1e-6), tag


def test_metrics_csv_and_tensorboard_mirror_metrics_jsonl(tmp_path):
    pytest.importorskip("tensorboard")
    train(quick_config(policy="metaaugment", epochs=2, tensorboard=True), tmp_path / "run", show_progress=False)
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    written = records(tmp_path / "run")
    assert len(rows) == len(written)
    for row, record in zip(rows, written):
        assert {k: v for k, v in row.items() if v != ""} == {k: str(v) for k, v in record.items()}
    found, events = tensorboard_scalars(tmp_path / "run")
    assert_same_scalars(found, expected_scalars(tmp_path / "run"))
    # MetaAugment's figures, as images at the last step
    assert {"figures/sampler_heatmap", "figures/weighted_samples"} <= set(events.Tags()["images"])


def test_a_resumed_run_s_tensorboard_events_equal_its_metrics_jsonl(tmp_path, crash_at):
    """The events the killed run wrote past its last checkpoint are purged on resume."""
    pytest.importorskip("tensorboard")
    config = quick_config(epochs=3, batch_size=256, checkpoint_every=5, log_every=1, tensorboard=True)
    crash_at(7)  # after the checkpoint of step 5: steps 6 and 7 were logged and come again
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "run", show_progress=False)
    train(config, tmp_path / "run", resume=True, show_progress=False)
    found, _ = tensorboard_scalars(tmp_path / "run")
    assert_same_scalars(found, expected_scalars(tmp_path / "run"))


def test_wandb_offline_writes_a_run_and_resume_continues_it(tmp_path, crash_at, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    config = quick_config(epochs=2, batch_size=256, checkpoint_every=5, wandb=True)
    crash_at(6)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "run", show_progress=False)
    run_id = json.loads((tmp_path / "run" / "wandb.json").read_text())["id"]
    train(config, tmp_path / "run", resume=True, show_progress=False)
    assert json.loads((tmp_path / "run" / "wandb.json").read_text())["id"] == run_id
    offline_runs = sorted((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 2 and all(f"-{run_id}" in path.name for path in offline_runs)
    assert all(list(path.glob("*.wandb")) for path in offline_runs)  # each holds its logged history


@pytest.mark.multiprocess
def test_progress_reaches_a_log_file_while_the_run_is_going(tmp_path):
    log = tmp_path / "log.txt"
    with open(log, "w") as handle:
        process = subprocess.Popen([sys.executable, "-m", "metaaugment.cli.main", "run", "digits", "--epochs", "400",
                                    "--device", "cpu", "--out", str(tmp_path / "run")],
                                   stdout=handle, stderr=subprocess.STDOUT, cwd=tmp_path)
        try:
            deadline = time.time() + 120
            while time.time() < deadline and "epoch 2 done" not in log.read_text():
                assert process.poll() is None, log.read_text()
                time.sleep(0.2)
            assert process.poll() is None, "the run ended before its progress could be read"
        finally:
            process.kill()
            process.wait()
    lines = log.read_text().splitlines()
    epoch_line = next(line for line in lines if "epoch 1 done" in line)
    assert epoch_line.startswith("digits · none · supervised · seed 0 epoch 1 done, step 19/7600")
    assert "val " in epoch_line and len(epoch_line) > 80  # whole, not cut to the terminal's width
    assert any(" step 10/7600 " in line for line in lines)
