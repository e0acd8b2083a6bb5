"""Shared fixtures: tiny datasets in the real on-disk formats, and quick run configs."""
from __future__ import annotations

import pickle
from pathlib import Path

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
            folder = root / split / f"class_{c}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                h, w = rng.integers(40, 120, size=2)  # any size
                Image.fromarray(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")


@pytest.fixture
def cifar10_root(tmp_path: Path) -> Path:
    write_cifar_fixture(tmp_path)
    return tmp_path


@pytest.fixture
def crash_at(monkeypatch):
    """Arm a crash for the next run: `crash_at(step, error)` makes the run loop raise `error`
    (KeyboardInterrupt by default) as it starts training step `step` (0-based), before that
    step changes anything, as a kill would; the loop is restored after the crash."""
    from metaaugment.run.loop import Trainer

    original = Trainer._step

    def arm(step: int, error: BaseException | type[BaseException] = KeyboardInterrupt) -> None:
        def crashing(self, inputs):
            if self.state.step == step:
                monkeypatch.setattr(Trainer, "_step", original)
                raise error
            return original(self, inputs)

        monkeypatch.setattr(Trainer, "_step", crashing)

    return arm


def quick_config(**changes) -> RunConfig:
    """A digits run of a couple of seconds on CPU."""
    base = dict(benchmark="digits", epochs=2, batch_size=64, device="cpu", checkpoint_every=7, log_every=5)
    base.update(changes)
    return RunConfig(**base)


def run_in_process(args, cwd, monkeypatch, capsys):
    """`metaaug ARGS` in this process from folder `cwd`: (exit code, stdout, stderr)."""
    from metaaugment.cli.main import main

    monkeypatch.chdir(cwd)
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err
