"""Exact resume, once: a matrix of run kinds x kill points. A run killed at any point and
resumed ends with the uninterrupted run's results.json metrics, figures and metrics.jsonl,
and leaves no temporary file.

The kills are in-process (a BaseException the run loop does not catch, raised where a kill
would land; a write killed midway leaves half a temporary file, as a real kill does): what
a resume sees is the folder on disk, which is the same. One test kills a real process with
SIGKILL (the OS then drops its lock and runs no cleanup at all) and resumes it.
"""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from helpers import KILL_SCRIPT, quick_config

import metaaugment.infra.files as files
from metaaugment.run.config import RunConfig
from metaaugment.run.folder import RunDirectory
from metaaugment.run.loop import Trainer, train
from metaaugment.run.strategies import EpisodicStrategy, MiniBatchStrategy


class Killed(BaseException):
    """Where a kill lands: nothing in the run loop catches it."""


SMALL_AGENT = {"extractor_channels": (8, 8, 8), "features_dim": 16, "reward_every": 1}
# digits at batch 256: 4 steps an epoch; checkpoints every 5 steps and at each epoch end
DIGITS = dict(batch_size=256, checkpoint_every=5, log_every=1)


def imagenet_tree(root: Path) -> Path:
    """A tiny ImageNet in its on-disk layout: 3 classes, 16 training and 4 test JPEGs each."""
    import numpy as np
    from PIL import Image

    for label, wnid in enumerate(("n01", "n02", "n03")):
        for split, count in (("train", 16), ("val", 4)):
            folder = root / "imagenet" / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng(label + 10 * len(split))
            for index in range(count):
                array = rng.integers(0, 60, (40, 48, 3))
                array[..., label] += 180
                Image.fromarray(array.astype(np.uint8)).save(folder / f"{index}.JPEG")
    return root


KINDS = {
    "plain": lambda data: quick_config(epochs=2, **DIGITS),
    "metaaugment": lambda data: quick_config(policy="metaaugment", epochs=2, **DIGITS),
    "rl-mixup": lambda data: quick_config(policy="rl-mixup", epochs=3, policy_options=SMALL_AGENT, **DIGITS),
    "madaug": lambda data: quick_config(policy="madaug", epochs=2, **DIGITS),
    "adaaug": lambda data: quick_config(policy="adaaug", epochs=2, policy_options={"search_every": 2}, **DIGITS),
    # TeachAugment: an augmenter stored in the replay buffer after each epoch, the EMA teacher
    "teachaugment": lambda data: quick_config(policy="teachaugment", epochs=2, policy_options={
        "update_every": 2, "replay_every": 1, "noise_dim": 8, "hidden": 8, "projections": 8}, **DIGITS),
    # MLTI: the meta-batch's tasks interpolated in pairs (task sampling's and the policy's draws resume)
    "few-shot": lambda data: quick_config(benchmark="glyphs", policy="mlti", epochs=2, steps_per_epoch=4,
                                          batch_size=2, val_tasks=2, test_tasks=4, checkpoint_every=5, log_every=1),
    "streamed": lambda data: RunConfig(benchmark="imagenet", data_root=str(data), image_size=16, model="small-cnn",
                                       model_options={"width": 4}, policy="randaugment", epochs=2, batch_size=8,
                                       device="cpu", checkpoint_every=5, log_every=1, seed=1),
    "float16": lambda data: quick_config(policy="randaugment", epochs=2, precision="16", channels_last=True,
                                         model_options={"width": 4}, **DIGITS),
}
KILL_POINTS = ("start-up", "before-first-checkpoint", "after-a-checkpoint", "checkpoint-write", "final-test",
               "results-write")


def arm(point: str, monkeypatch) -> None:
    """Make the next run die at `point`."""
    if point == "start-up":  # the folder, manifest and config.json exist; no step has run
        prepare = RunDirectory.prepare

        def prepare_then_die(self, *args, **kwargs):
            prepare(self, *args, **kwargs)
            raise Killed

        monkeypatch.setattr(RunDirectory, "prepare", prepare_then_die)
    elif point in ("before-first-checkpoint", "after-a-checkpoint"):
        at, step = (2 if point == "before-first-checkpoint" else 7), Trainer._step

        def step_or_die(self, inputs):
            if self.state.step == at:
                raise Killed
            return step(self, inputs)

        monkeypatch.setattr(Trainer, "_step", step_or_die)
    elif point == "final-test":  # the figures are drawn and checkpointed before the test
        for strategy in (MiniBatchStrategy, EpisodicStrategy):
            evaluate = strategy.evaluate

            def evaluate_or_die(self, split, *args, _evaluate=evaluate, **kwargs):
                if split == "test":
                    raise Killed
                return _evaluate(self, split, *args, **kwargs)

            monkeypatch.setattr(strategy, "evaluate", evaluate_or_die)
    else:  # killed halfway through the 2nd checkpoint's write, or the results': half a temporary file
        target, count = {"checkpoint-write": ("checkpoint.pt", 2), "results-write": ("results.json", 1)}[point]
        write, seen = files._write_atomically, [0]

        def write_or_die(path, produce):
            if path.name == target:
                seen[0] += 1
                if seen[0] == count:
                    buffer = io.BytesIO()
                    produce(buffer)
                    fd, _ = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=files.TEMPORARY_SUFFIX)
                    os.write(fd, buffer.getvalue()[: len(buffer.getvalue()) // 2])
                    os.close(fd)
                    raise Killed
            return write(path, produce)

        monkeypatch.setattr(files, "_write_atomically", write_or_die)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return imagenet_tree(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def references(tmp_path_factory, data_root) -> dict[str, Path]:
    """Each kind's uninterrupted run, trained once."""
    folders = {}
    for kind, make in KINDS.items():
        folders[kind] = tmp_path_factory.mktemp("reference") / kind
        train(make(data_root), folders[kind], show_progress=False)
    return folders


def outcome(folder: Path) -> tuple:
    results = json.loads((folder / "results.json").read_text())
    return results["metrics"], results["artifacts"], (folder / "metrics.jsonl").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("point", KILL_POINTS)
@pytest.mark.parametrize("kind", list(KINDS))
def test_a_run_killed_at_any_point_resumes_to_the_uninterrupted_results(kind, point, references, data_root,
                                                                          tmp_path, monkeypatch):
    config = KINDS[kind](data_root)
    with monkeypatch.context() as patched:
        arm(point, patched)
        with pytest.raises(Killed):
            train(config, tmp_path / "run", show_progress=False)
    assert not (tmp_path / "run" / "results.json").exists()
    train(config, tmp_path / "run", resume=True, show_progress=False)
    assert outcome(tmp_path / "run") == outcome(references[kind])
    assert not list((tmp_path / "run").glob("*.metaaug-tmp")), "a killed write's temporary file was left"


@pytest.mark.slow
def test_what_each_kind_keeps_in_its_checkpoint_and_figures(references):
    """The state the matrix's resumes depend on is there: the float16 loss scaler's, RL-Mixup's
    agent (an update every two epochs, a reward every step) and the figures of each policy."""
    artifacts = {kind: json.loads((folder / "results.json").read_text())["artifacts"]
                 for kind, folder in references.items()}
    assert set(artifacts["metaaugment"]) == {"sampler_heatmap.png", "weighted_samples.png", "curves.png"}
    assert {"mixup_examples.png", "action_histogram.png"} <= set(artifacts["rl-mixup"])
    assert "class_policy.png" in artifacts["madaug"] and "class_policy.png" in artifacts["adaaug"]
    assert "augmenter_progress.png" in artifacts["teachaugment"]
    assert torch.load(references["float16"] / "checkpoint.pt", weights_only=True)["grad_scaler"]["scale"] > 0
    epochs = [r for r in RunDirectory(references["rl-mixup"]).read_metrics() if r["kind"] == "epoch"]
    assert [("policy_ppo_value_loss" in r) for r in epochs] == [False, True, False]  # two episodes per update
    for record in epochs:
        assert sum(v for k, v in record.items() if k.startswith("policy_action_q")) == pytest.approx(1.0)
        assert record["policy_reward_count"] == 4  # a reward at each of the epoch's 4 steps



@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_sigkilled_process_resumes_to_the_uninterrupted_results(references, tmp_path):
    """A real kill -9 mid-epoch: no cleanup runs, the OS drops the lock; the run resumes."""
    args = ["run", "digits", "--epochs", "2", "--batch-size", "256", "--checkpoint-every", "5", "--device", "cpu",
            "--quiet", "--out", str(tmp_path / "run")]
    killed = subprocess.run([sys.executable, "-c", KILL_SCRIPT, *args], capture_output=True, text=True,
                            env={**os.environ, "KILL_AT_STEP": "6"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    config = RunConfig(benchmark="digits", epochs=2, batch_size=256, checkpoint_every=5, device="cpu")  # the CLI's
    reference = train(config, tmp_path / "reference", show_progress=False)
    resumed = train(config, tmp_path / "run", resume=True, show_progress=False)
    assert resumed["resumed_at_step"] == 5 and resumed["metrics"] == reference["metrics"]
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == (tmp_path / "reference" / "metrics.jsonl").read_text()


def test_a_folder_written_before_a_setting_existed_is_still_resumed_and_reused(tmp_path):
    """config.json of an older version lacks settings added since (benchmark_options): they
    had their defaults, so the folder is the same run and its results are reused."""
    config = quick_config(epochs=1, batch_size=256)
    first = train(config, tmp_path / "run", show_progress=False)
    path = tmp_path / "run" / "config.json"
    older = json.loads(path.read_text())
    del older["benchmark_options"]
    path.write_text(json.dumps(older))
    again = train(config, tmp_path / "run", resume=True, show_progress=False)
    assert again["metrics"] == first["metrics"] and again["wall_time_s"] == first["wall_time_s"]  # reused as it was
