"""Metrics beyond metrics.jsonl: metrics.csv, TensorBoard, W&B offline, and progress in a log file."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import quick_config

from metaaugment.cli.main import main
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
    expected: dict = {}
    for record in records(folder):
        for tag, value in scalars(record).items():
            expected.setdefault(tag, []).append((record["step"], value))
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


KILL_AT_STEP = '''
import os, signal, sys
from metaaugment.run.loop import Trainer
step = Trainer._step
def step_or_die(self, inputs):
    if self.state.step == int(os.environ["KILL_AT"]):
        os.kill(os.getpid(), signal.SIGKILL)
    return step(self, inputs)
Trainer._step = step_or_die
from metaaugment.cli.main import main
main(sys.argv[1:])
'''


def metaaug_process(*args, cwd, kill_at=None, env=None):
    code = ["-c", KILL_AT_STEP] if kill_at is not None else ["-m", "metaaugment.cli.main"]
    return subprocess.run([sys.executable, *code, *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, **(env or {}), "KILL_AT": str(kill_at)})


@pytest.mark.slow
def test_a_resumed_run_s_tensorboard_events_equal_its_metrics_jsonl(tmp_path):
    pytest.importorskip("tensorboard")
    args = ["run", "digits", "--epochs", "3", "--checkpoint-every", "7", "--device", "cpu", "-q", "--tensorboard",
            "--out", "run"]
    killed = metaaug_process(*args, cwd=tmp_path, kill_at=30)
    assert killed.returncode == -signal.SIGKILL
    resumed = metaaug_process(*args, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    found, _ = tensorboard_scalars(tmp_path / "run")
    assert_same_scalars(found, expected_scalars(tmp_path / "run"))  # step 30 of the killed run, purged


@pytest.mark.slow
def test_wandb_offline_writes_a_run_and_resume_continues_it(tmp_path):
    pytest.importorskip("wandb")
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    args = ["run", "digits", "--epochs", "2", "--checkpoint-every", "7", "--device", "cpu", "-q", "--wandb",
            "--out", "run"]
    killed = metaaug_process(*args, cwd=tmp_path, kill_at=25, env=env)
    assert killed.returncode == -signal.SIGKILL
    run_id = json.loads((tmp_path / "run" / "wandb.json").read_text())["id"]
    resumed = metaaug_process(*args, "--resume", cwd=tmp_path, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((tmp_path / "run" / "wandb.json").read_text())["id"] == run_id
    offline_runs = sorted((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == 2 and all(path.name.endswith(run_id) for path in offline_runs)
    assert all(list(path.glob("*.wandb")) for path in offline_runs)  # each holds its logged history


@pytest.mark.slow
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


def test_a_missing_sink_package_is_one_line_before_the_run_starts(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "digits", "--tensorboard", "--epochs", "1"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert "--tensorboard needs the tensorboard package: pip install 'metaaugment[tensorboard]'" in err
    assert not (tmp_path / "runs").exists()
