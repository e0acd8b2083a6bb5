"""The run loop: determinism, atomic checkpoints, exact resume, and run-folder safety."""
import json
import os
from pathlib import Path

import pytest
from helpers import quick_config

from metaaugment import train
from metaaugment.infra.errors import UserError
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



@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="POSIX permissions")
def test_atomic_writes_get_the_permissions_of_a_plain_open(tmp_path):
    from metaaugment.infra.files import write_text

    umask = os.umask(0o022)
    try:
        write_text(tmp_path / "results.json", "{}")
    finally:
        os.umask(umask)
    assert (tmp_path / "results.json").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0o600
