"""The run loop: determinism, atomic checkpoints, exact resume, and run-folder safety."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import quick_config

from metaaugment import Batch, BatchPolicy, StepContext, train
from metaaugment.errors import UserError
from metaaugment.registry import POLICIES
from metaaugment.run.folder import RunDirectory


def metric_records(path: Path) -> list[dict]:
    return RunDirectory(path).read_metrics()


def test_same_seed_gives_identical_results(tmp_path):
    first = train(quick_config(policy="randaugment", seed=4), tmp_path / "a", show_progress=False)
    second = train(quick_config(policy="randaugment", seed=4), tmp_path / "b", show_progress=False)
    train(quick_config(policy="randaugment", seed=5), tmp_path / "c", show_progress=False)
    assert first["metrics"] == second["metrics"]
    assert metric_records(tmp_path / "a") == metric_records(tmp_path / "b")
    assert metric_records(tmp_path / "a") != metric_records(tmp_path / "c")


def test_run_folder_files(tmp_path):
    results = train(quick_config(), tmp_path / "run", show_progress=False)
    run = RunDirectory(tmp_path / "run")
    config = run.read_config()
    assert config["benchmark"] == "digits" and config["model"] == "small-cnn" and config["epochs"] == 2
    epochs = [r for r in run.read_metrics() if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert {"train_loss", "train_accuracy", "val_accuracy", "val_loss"} <= set(epochs[0])
    stored = json.loads(run.results_path.read_text())
    assert stored["metrics"] == results["metrics"] and stored["metrics"]["steps"] == 2 * (1257 // 64)
    assert {"wall_time_s", "environment", "config"} <= set(stored)
    assert stored["environment"]["packages"]["torch"]


def test_existing_run_folder_is_never_overwritten_silently(tmp_path):
    out = tmp_path / "run"
    first = train(quick_config(epochs=1), out, show_progress=False)
    stamp = RunDirectory(out).results_path.stat().st_mtime_ns
    with pytest.raises(UserError, match="already holds a finished run"):
        train(quick_config(epochs=1), out, show_progress=False)
    assert train(quick_config(epochs=1), out, resume=True, show_progress=False) == first  # reused
    assert RunDirectory(out).results_path.stat().st_mtime_ns == stamp
    with pytest.raises(UserError, match="configuration differs.*epochs: 1 -> 2"):
        train(quick_config(epochs=2), out, resume=True, show_progress=False)
    train(quick_config(epochs=1, seed=1), out, overwrite=True, show_progress=False)
    assert RunDirectory(out).read_config()["seed"] == 1
    stranger = tmp_path / "not-a-run"
    stranger.mkdir()
    (stranger / "precious.txt").write_text("keep me")
    with pytest.raises(UserError, match="metaaugment did not create it"):
        train(quick_config(), stranger, overwrite=True, show_progress=False)
    assert (stranger / "precious.txt").exists()


def test_a_run_that_fails_to_start_leaves_no_folder(tmp_path):
    with pytest.raises(UserError, match="cifar-10-batches-py"):
        train(quick_config(benchmark="cifar10", data_root=str(tmp_path / "none")), tmp_path / "run")
    assert not (tmp_path / "run").exists()


class CountingPolicy(BatchPolicy):
    """Test policy with tensor and non-tensor state that shapes training: it scales inputs by
    a factor that changes with every step it has seen."""

    def __init__(self):
        super().__init__()
        self.register_buffer("seen_labels", torch.zeros(10))
        self.steps = 0

    def augment(self, batch: Batch, ctx: StepContext) -> Batch:
        return batch.replace(inputs=batch.inputs * (0.5 + 0.5 * ((self.steps % 3) / 2)))

    def after_step(self, result, ctx):
        self.steps += 1
        self.seen_labels += torch.bincount(result.batch.targets, minlength=10).float()
        return {"steps_seen": float(self.steps)}

    def get_extra_state(self):
        return {"steps": self.steps}

    def set_extra_state(self, state):
        self.steps = state["steps"]


@pytest.fixture
def counting_policy():
    with POLICIES.scoped():
        POLICIES.register("test-counting")(CountingPolicy)
        yield


def test_policy_state_survives_a_crash_and_resume(tmp_path, counting_policy, crash_at):
    config = quick_config(policy="test-counting", epochs=3, checkpoint_every=10)
    reference = train(config, tmp_path / "ref", show_progress=False)
    crash_at(25)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "crashed", show_progress=False)
    resumed = train(config, tmp_path / "crashed", resume=True, show_progress=False)
    assert resumed["resumed_at_step"] == 20
    assert resumed["metrics"] == reference["metrics"]
    assert metric_records(tmp_path / "crashed") == metric_records(tmp_path / "ref")
    state = torch.load(tmp_path / "crashed" / "checkpoint.pt", weights_only=True)["policy"]
    assert state["_extra_state"]["steps"] == 3 * (1257 // 64)


def cli(*args):
    return [sys.executable, "-m", "metaaugment.cli.main", *args]


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_matches_an_uninterrupted_run(tmp_path):
    args = ["run", "digits", "--policy", "randaugment", "--epochs", "6", "--seed", "7", "--device", "cpu",
            "--checkpoint-every", "5", "--quiet"]
    reference = subprocess.run(cli(*args, "--out", str(tmp_path / "ref")), capture_output=True, text=True)
    assert reference.returncode == 0, reference.stderr

    killed_dir = tmp_path / "killed"
    process = subprocess.Popen(cli(*args, "--out", str(killed_dir)), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    checkpoint = killed_dir / "checkpoint.pt"
    deadline = time.time() + 120
    while not checkpoint.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (killed_dir / "results.json").exists()

    resumed = subprocess.run(cli(*args, "--out", str(killed_dir), "--resume"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    ref_results = json.loads((tmp_path / "ref" / "results.json").read_text())
    new_results = json.loads((killed_dir / "results.json").read_text())
    assert new_results["resumed_at_step"] is not None and new_results["resumed_at_step"] > 0
    assert new_results["metrics"] == ref_results["metrics"]
    assert metric_records(killed_dir) == metric_records(tmp_path / "ref")


@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="POSIX permissions")
def test_atomic_writes_get_the_permissions_of_a_plain_open(tmp_path):
    from metaaugment.files import write_text

    umask = os.umask(0o022)
    try:
        write_text(tmp_path / "results.json", "{}")
    finally:
        os.umask(umask)
    assert (tmp_path / "results.json").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0o600
