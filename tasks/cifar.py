"""CIFAR-10 / CIFAR-100 read from the standard 'python version' pickle files on disk
(`--download` fetches them with torchvision's URLs and checksums).

We read the pickles ourselves instead of through torchvision.datasets.CIFAR10 because that
class insists on the MD5 sums of the official files, which rejects the small fixtures the
tests build in the same format (and any subset a user prepares).
"""
from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from metaaugment.data.splits import ClassificationData, ImageSplit, split_off
from metaaugment.data.subsets import SUBSET_SEED, TooFewSamples, balanced_subset, check_subset_options
from metaaugment.data.train_crops import PadCropFlip
from metaaugment.infra.downloads import fetch_dataset
from metaaugment.infra.errors import UserError
from metaaugment.infra.files import load_data_pickle, open_regular
from metaaugment.registry import BENCHMARKS
from metaaugment.spec import TaskSpec
from metaaugment.tasks.base import Benchmark

VALIDATION_SIZE = 5000
CIFAR10_FILES = ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels")
CIFAR100_FILES = ("cifar-100-python", ["train"], ["test"], b"fine_labels")
ARCHIVES = {"cifar-10-batches-py": "cifar-10-python.tar.gz", "cifar-100-python": "cifar-100-python.tar.gz"}
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


class CifarOptions(PadCropFlip):
    """CIFAR's `--benchmark-set` options: the training preprocessing (zero-pad, random crop back
    to 32 x 32, flip: PadCropFlip's options, documented there) and the reduced-data regime of
    the literature.

    Options:
        train_per_class: train on this many images of each class (AutoAugment's reduced CIFAR-10:
            400, 4,000 images), drawn by subset_seed from what --val-size leaves; 0: all of them
        subset_seed: the seed that draws the reduced subset: the same images for every policy
            and every --seed
    """

    def __init__(self, *, padding: int = 4, flip: bool = True, train_per_class: int = 0,
                 subset_seed: int = SUBSET_SEED):
        super().__init__(padding=padding, flip=flip)
        check_subset_options(train_per_class, subset_seed, "train_per_class")
        self.train_per_class, self.subset_seed = train_per_class, subset_seed


def read_cifar_pickle(path: Path, label_key: bytes, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One CIFAR pickle -> (N, 3, 32, 32) uint8 images and (N,) int64 labels.

    The file holds a dict with b'data', an (N, 3072) uint8 array of rows laid out as
    1024 red, 1024 green, 1024 blue values in row-major 32x32 order, and N labels in
    [0, num_classes). Anything else (a damaged file, float pixels, an (N, 32, 32, 3) array,
    a label count that differs from the image count) is a UserError naming the file and
    what is wrong. The file is unpickled without running code (files.load_data_pickle).
    """
    def bad(problem: str) -> UserError:
        return UserError(f"{path} is not a CIFAR batch of the python version: {problem}")

    try:
        with os.fdopen(open_regular(path, "CIFAR batch"), "rb") as handle:  # never a FIFO or a link
            entry = load_data_pickle(handle, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError) as error:
        raise bad(f"it cannot be unpickled ({' '.join(str(error).split())[:200] or type(error).__name__})") from None
    if not isinstance(entry, dict):
        raise bad(f"it holds a {type(entry).__name__}, not a dict")
    missing = [key.decode() for key in (b"data", label_key) if key not in entry]
    if missing:
        raise bad(f"its dict has no {', '.join(missing)} entry")
    data = entry[b"data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise bad(f"'data' must be a uint8 (N, 3072) array of rows (1024 red, 1024 green, 1024 blue), got {found}")
    try:
        labels = np.asarray(entry[label_key], dtype=np.int64)
    except (TypeError, ValueError):
        raise bad(f"'{label_key.decode()}' must be a list of integers") from None
    if labels.shape != (len(data),):
        raise bad(f"{len(data)} images but {labels.size} labels in '{label_key.decode()}'")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise bad(f"labels must lie in [0, {num_classes}), found {labels.min()}..{labels.max()}")
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels)


def _require_files(root: Path, folder: str, names: list[str], benchmark: str) -> Path:
    directory = root / folder
    missing = [n for n in names if not os.path.lexists(directory / n)]  # a FIFO or link: named when read
    if missing:
        raise UserError(
            f"{benchmark} data not found: put the '{folder}' folder (files {', '.join(names)}) in "
            f"{root.resolve()}/ — e.g. 'tar xzf {ARCHIVES[folder]} -C {root}' with the python version from "
            f"https://www.cs.toronto.edu/~kriz/cifar.html, or run with --download, or pass --data-root DIR")
    return directory


def load_cifar(root: Path, files: tuple, num_classes: int, benchmark: str,
               val_size: int | None = None, options: PadCropFlip | None = None) -> ClassificationData:
    """Train (minus a fixed validation split of `val_size` images, default VALIDATION_SIZE;
    MetaAugment's paper holds out 1,000) and test splits. Training batches are zero-padded by
    4, randomly cropped back to 32 x 32 and flipped (`options`, CifarOptions' defaults:
    the papers' standard baseline); validation and test images are not. `train_per_class`
    keeps a balanced subset of the training images left once validation is held out."""
    folder, train_names, test_names, label_key = files
    directory = _require_files(Path(root), folder, train_names + test_names, benchmark)

    def read_all(names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [read_cifar_pickle(directory / n, label_key, num_classes) for n in names]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    images, labels = read_all(train_names)
    if val_size is None:
        val_size = min(VALIDATION_SIZE, len(labels) // 10)  # proportionate on small fixtures
    elif not 0 < val_size < len(labels):
        raise UserError(f"--val-size must be between 1 and {len(labels) - 1} for {benchmark} (got {val_size})")
    train, val = split_off(images, labels, val_size)
    options = options or CifarOptions()
    if getattr(options, "train_per_class", 0):
        try:
            keep = balanced_subset(train.labels, options.train_per_class, options.subset_seed)
        except TooFewSamples as error:
            raise UserError(f"{benchmark}: train_per_class={error.wanted} asks for more images than class "
                            f"{error.label} has for training ({error.count}, once --val-size {val_size} is held "
                            f"out)") from None
        train = ImageSplit(train.images[keep], train.labels[keep])
    train = dataclasses.replace(train, train_transform=options)
    test = ImageSplit(*read_all(test_names))
    spec = TaskSpec(num_classes=num_classes, input_shape=(3, 32, 32), mean=MEAN, std=STD)
    return ClassificationData(train, val, test, spec)


def download_cifar(root: Path, hundred: bool = False) -> list[str]:
    """Fetch CIFAR-10 (or -100) into `root` with torchvision's own URL, archive checksum and
    extraction, then check each batch file against torchvision's checksums; returns the
    entries fetched ([] when the folder is there already). A UserError line when it fails,
    with nothing left behind (`downloads.fetch_dataset`)."""
    from torchvision.datasets import CIFAR10, CIFAR100
    from torchvision.datasets.utils import check_integrity, download_and_extract_archive

    source = CIFAR100 if hundred else CIFAR10

    def fetch(staging: Path) -> None:
        download_and_extract_archive(source.url, staging, filename=source.filename, md5=source.tgz_md5)
        for name, md5 in [*source.train_list, *source.test_list]:
            if not check_integrity(str(staging / source.base_folder / name), md5):
                raise RuntimeError(f"{source.base_folder}/{name} does not match torchvision's checksum")

    return fetch_dataset(Path(root), [source.base_folder], fetch, "CIFAR-100" if hundred else "CIFAR-10")


def _cifar_benchmark(name: str, files: tuple, num_classes: int, title: str) -> Benchmark:
    return Benchmark(
        name=name,
        load=lambda root, val_size=None, options=None: load_cifar(root, files, num_classes, title, val_size,
                                                                        options),
        default_model="resnet18", default_epochs=200, default_batch_size=128,
        default_learner_options={"lr": 0.1}, accepts_val_size=True, options=CifarOptions,
        # MetaAugment's CIFAR pipeline: pad, crop and flip, its op pair, then Cutout 16 (§5.1)
        default_policy_options={"metaaugment": {"cutout": 16}},
        download=lambda root: download_cifar(root, hundred=num_classes == 100),
    )


@BENCHMARKS.register("cifar10")
def cifar10() -> Benchmark:
    """CIFAR-10 from <data-root>/cifar-10-batches-py (45k train / 5k val / 10k test); ResNet-18."""
    return _cifar_benchmark("cifar10", CIFAR10_FILES, 10, "CIFAR-10")


@BENCHMARKS.register("cifar100")
def cifar100() -> Benchmark:
    """CIFAR-100 from <data-root>/cifar-100-python (45k train / 5k val / 10k test); ResNet-18."""
    return _cifar_benchmark("cifar100", CIFAR100_FILES, 100, "CIFAR-100")
