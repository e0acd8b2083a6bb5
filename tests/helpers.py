"""What several test modules share, in one place (conftest.py keeps only fixtures): tiny
datasets in the real on-disk formats, a quick run config, the one CLI runner in this process
and the one in a new process, the one kill script, and the tolerances of discrete metrics."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from metaaugment.run.config import RunConfig


def write_cifar_fixture(root: Path, hundred: bool = False, per_file: int = 20, seed: int = 0) -> dict:
    """Write a small CIFAR-10 (or -100) in the official 'python version' pickle layout.

    Returns the arrays written so tests can compare what the loader reads back.
    """
    rng = np.random.default_rng(seed)
    folder, train_names, test_names, label_key, classes = (
        ("cifar-100-python", ["train"], ["test"], b"fine_labels", 100) if hundred else
        ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels", 10))
    directory = root / folder
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in train_names + test_names:
        data = rng.integers(0, 256, size=(per_file, 3072), dtype=np.uint8)
        labels = rng.integers(0, classes, size=per_file).tolist()
        entry = {b"batch_label": name.encode(), b"data": data, label_key: labels,
                 b"filenames": [f"{i}.png".encode() for i in range(per_file)]}
        if hundred:
            entry[b"coarse_labels"] = [label // 5 for label in labels]
        with open(directory / name, "wb") as handle:
            pickle.dump(entry, handle, protocol=2)
        written[name] = (data, labels)
    return written


def write_mini_imagenet_fixture(root: Path, classes=(6, 3, 3), per_class=8, size=84, seed=0) -> dict:
    """learn2learn's mini-imagenet-cache-{train,validation,test}.pkl: dict(image_data uint8
    (N, H, W, 3), class_dict name -> indices), classes interleaved to test the index mapping."""
    rng = np.random.default_rng(seed)
    written = {}
    for split, count in zip(("train", "validation", "test"), classes):
        n = count * per_class
        data = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
        class_dict = {f"n{split[:2]}{c:05d}": list(range(c, n, count)) for c in range(count)}
        with open(root / f"mini-imagenet-cache-{split}.pkl", "wb") as handle:
            pickle.dump({"image_data": data, "class_dict": class_dict}, handle)
        written[split] = (data, class_dict)
    return written


def write_omniglot_fixture(root: Path, alphabets=2, characters=10, drawings=20, size=105) -> None:
    """torchvision's layout: omniglot-py/images_{background,evaluation}/<Alphabet>/<character>/*.png,
    black ink on a white background."""
    rng = np.random.default_rng(0)
    for part in ("images_background", "images_evaluation"):
        for a in range(alphabets):
            for c in range(characters):
                folder = root / "omniglot-py" / part / f"Alphabet_{a}" / f"character{c + 1:02d}"
                folder.mkdir(parents=True)
                for d in range(drawings):
                    img = np.full((size, size), 255, np.uint8)
                    y, x = rng.integers(10, size - 30, size=2)
                    img[y:y + 20, x:x + 20] = 0  # a black stroke
                    Image.fromarray(img, mode="L").save(folder / f"{c:04d}_{d + 1:02d}.png")


def write_image_folder_fixture(root: Path, per_split=(4, 3, 3), per_class=5) -> None:
    rng = np.random.default_rng(0)
    for split, classes in zip(("train", "val", "test"), per_split):
        for c in range(classes):
            folder = root / split / f"{split}_class_{c}"  # few-shot: each split its own classes
            folder.mkdir(parents=True)
            for i in range(per_class):
                h, w = rng.integers(40, 120, size=2)  # any size
                Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")


def quick_config(**changes) -> RunConfig:
    """A digits run of a couple of seconds on CPU."""
    base = dict(benchmark="digits", epochs=2, batch_size=64, device="cpu", checkpoint_every=7, log_every=5)
    base.update(changes)
    return RunConfig(**base)


def run_in_process(args, cwd, monkeypatch, capsys=None):
    """`metaaug ARGS` in this process from folder `cwd` (None: where the test is):
    (exit code, stdout, stderr); the output is left uncaptured ("") without `capsys`."""
    from metaaugment.cli.main import main

    if cwd is not None:
        monkeypatch.chdir(cwd)
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr() if capsys is not None else None
    return exit_info.value.code, captured.out if captured else "", captured.err if captured else ""


def metaaug_process(*args: str, cwd: Path, env: dict[str, str] | None = None, code: str | None = None,
                    columns: int = 250) -> subprocess.CompletedProcess:
    """`metaaug ARGS` in a new process in `cwd` (or the script `code` run with ARGS as
    sys.argv[1:]), its output captured at `columns` columns."""
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "metaaugment.cli.main"]
    return subprocess.run([*command, *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": str(columns), **(env or {})})


# `python -c KILL_SCRIPT ARGS`: `metaaug ARGS`, killed by SIGKILL as training step $KILL_AT_STEP
# starts (under torchrun: on rank $KILL_RANK only, when set)
KILL_SCRIPT = '''
import os, signal, sys
from metaaugment.run.loop import Trainer
step = Trainer._step
def step_or_die(self, inputs):
    if self.state.step == int(os.environ["KILL_AT_STEP"]) and os.environ.get("RANK", "0") == os.environ.get(
            "KILL_RANK", os.environ.get("RANK", "0")):
        os.kill(os.getpid(), signal.SIGKILL)
    return step(self, inputs)
Trainer._step = step_or_die
from metaaugment.cli.main import main
main(sys.argv[1:])
'''


# samples in the evaluation splits of the embedded benchmarks the equality tests train on
SPLIT_SIZES = {"digits": {"test": 360, "val": 180}}


def scored_samples(metric: str, config: dict[str, Any]) -> int:
    """How many predictions an accuracy `metric` of a run with resolved `config` (config.json)
    counts, at the least: a few-shot split's tasks x ways x query shots, a mini-batch split's
    images (the embedded benchmarks'), a training metric's one batch (a pre-update score: one
    task). 1 where it is not known (the metric is then left to its loss)."""
    split = "test" if metric.startswith("test") else "val" if "val" in metric else "train"
    if config.get("ways"):
        tasks = {"test": config.get("test_tasks"), "val": config.get("val_tasks")}.get(split) or 1
        if split == "train" and "pre_" not in metric:
            tasks = config.get("batch_size") or 1
        return tasks * config["ways"] * config["query_shots"]
    if split == "train":
        return config.get("batch_size") or 1
    return SPLIT_SIZES.get(config.get("benchmark", ""), {}).get(split, 1)


def accuracy_tolerance(metric: str, config: dict[str, Any], samples: int = 3) -> float:
    """The absolute tolerance of an accuracy compared between two code paths (ranks against
    one process, another thread count): `samples` predictions of what it counts. A near-tie
    flips with float rounding, so a finer tolerance is a coin toss on another CPU."""
    return samples / scored_samples(metric, config)
