"""Omniglot (Lake et al. 2015) for few-shot classification, from torchvision's folder format.

Expected under --data-root (what torchvision.datasets.Omniglot downloads and unpacks):

    omniglot-py/images_background/<Alphabet>/<character>/<drawing>.png   (964 characters)
    omniglot-py/images_evaluation/<Alphabet>/<character>/<drawing>.png   (659 characters)

All 1,623 characters are pooled and split by a fixed shuffle into 1,200 meta-train, 100
meta-val and 323 meta-test classes (Rajendran et al. 2020, Appendix E; the MAML protocol).
Drawings are resized to 28x28 and inverted (white ink on black). Reading 32k PNGs takes a
while, so the result is cached in the cache folder, keyed by the drawings' paths, sizes and
modification times: an edited, added or removed drawing rebuilds it.
"""
from __future__ import annotations

import random
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import Progress

from metaaugment.data.episodes import FewShotData, FewShotSplit
from metaaugment.data.splits import ClassificationData, ImageSplit
from metaaugment.infra.downloads import fetch_dataset
from metaaugment.infra.errors import UserError
from metaaugment.infra.files import save_torch
from metaaugment.registry import BENCHMARKS
from metaaugment.spec import TaskSpec
from metaaugment.tasks.base import Benchmark
from metaaugment.tasks.fewshot_options import FewShotOptions, with_fewshot_options
from metaaugment.tasks.glyphs import cache_folder
from metaaugment.tasks.image_files import files_key, image_paths, load_cache, read_class_folders

FOLDER = "omniglot-py"
BACKGROUND, EVALUATION = "images_background", "images_evaluation"
IMAGE_SIZE = 28
SPLIT_SIZES = (1200, 100)  # train, val; the rest (323 of 1,623) is test
SPLIT_SEED = 1


def character_folders(root: Path) -> list[Path]:
    """Every character folder of both Omniglot sets, sorted; UserError when missing."""
    base = Path(root) / FOLDER
    missing = [s for s in (BACKGROUND, EVALUATION) if not (base / s).is_dir()]
    if missing:
        raise UserError(
            f"omniglot data not found: expected "
            f"{base.resolve()}/{{{BACKGROUND},{EVALUATION}}}/<Alphabet>/<character>/*.png "
            f"(missing {', '.join(missing)}); unpack images_background.zip and images_evaluation.zip from "
            f"https://github.com/brendenlake/omniglot into {base}, or run with --download, or pass --data-root DIR")
    folders = sorted(c for s in (BACKGROUND, EVALUATION) for a in (base / s).iterdir() if a.is_dir()
                     for c in a.iterdir() if c.is_dir())
    if not folders:
        raise UserError(f"omniglot data under {base} holds no <Alphabet>/<character>/ folders")
    return folders


def split_classes(count: int, sizes: tuple[int, int] = SPLIT_SIZES,
                  seed: int = SPLIT_SEED) -> tuple[list[int], list[int], list[int]]:
    """A fixed shuffle of class indices cut into train / val / test; the proportions of
    `sizes` out of 1,623 are kept when there are fewer classes (fixtures, subsets)."""
    order = list(range(count))
    random.Random(seed).shuffle(order)
    total = 1623
    n_train = sizes[0] if count >= total else max(1, round(count * sizes[0] / total))
    n_val = sizes[1] if count >= total else max(1, round(count * sizes[1] / total))
    return order[:n_train], order[n_train:n_train + n_val], order[n_train + n_val:]


def read_omniglot(root: Path) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Every drawing as uint8 (N, 1, 28, 28), its character label (N,), and the character
    names; drawings of a character in file-name order. Cached after the first read."""
    folders = character_folders(root)
    key = files_key([p for f in folders for p in image_paths(f)], Path(root).resolve(), IMAGE_SIZE)
    cache = cache_folder() / f"omniglot-{IMAGE_SIZE}px-{key}.pt"
    cached = load_cache(cache)
    if cached is not None:
        images, labels = cached
    else:
        with Progress(console=Console(stderr=True), transient=True) as progress:
            task = progress.add_task(f"reading Omniglot ({len(folders)} characters, cached afterwards)",
                                     total=len(folders) * 20)
            images, labels = read_class_folders(folders, IMAGE_SIZE, "L", invert=True,
                                                progress=lambda n: progress.update(task, completed=n))
        save_torch(cache, (images, labels))
    return images, labels, [f"{f.parent.name}/{f.name}" for f in folders]


def download_omniglot(root: Path) -> list[str]:
    """Fetch both Omniglot sets into `root`/omniglot-py with torchvision's own URLs, archive
    checksums and extraction; returns the entries fetched ([] when both are there already).
    A UserError line when it fails, with nothing left behind (`downloads.fetch_dataset`)."""
    from torchvision.datasets import Omniglot
    from torchvision.datasets.utils import download_and_extract_archive

    def fetch(staging: Path) -> None:
        for name in (BACKGROUND, EVALUATION):
            download_and_extract_archive(f"{Omniglot.download_url_prefix}/{name}.zip", staging / FOLDER,
                                         filename=f"{name}.zip", md5=Omniglot.zips_md5[name])

    return fetch_dataset(Path(root), [f"{FOLDER}/{BACKGROUND}", f"{FOLDER}/{EVALUATION}"], fetch, "Omniglot")


def _spec(images: torch.Tensor, num_classes: int | None) -> TaskSpec:
    mean = float(images.float().mean() / 255)
    std = float(images.float().std() / 255)
    return TaskSpec(num_classes=num_classes, input_shape=(1, IMAGE_SIZE, IMAGE_SIZE), mean=(mean,), std=(std,))


def load_omniglot(root: Path) -> FewShotData:
    """Omniglot as 1,200 / 100 / 323 disjoint classes of 20 uint8 1x28x28 drawings."""
    images, labels, names = read_omniglot(root)
    members = [torch.isin(labels, torch.tensor(c)) for c in split_classes(len(names))]
    train, val, test = (FewShotSplit(images[m], labels[m], names) for m in members)
    return FewShotData(train, val, test, _spec(train.images, None))


def load_omniglot_classification(root: Path) -> ClassificationData:
    """Omniglot as 1,623-way classification (MetaAugment's protocol): of each character's
    20 drawings (file-name order), the first 15 train, the next 2 validate, the last 3 test."""
    images, labels, names = read_omniglot(root)
    rank = torch.zeros_like(labels)
    for label in labels.unique():
        members = (labels == label).nonzero().flatten()
        rank[members] = torch.arange(len(members))
    per_class = torch.bincount(labels)
    if int(per_class.min()) < 20:
        raise UserError(f"omniglot-classification needs 20 drawings per character; one has {int(per_class.min())}")
    parts = [rank < 15, (rank >= 15) & (rank < 17), rank >= 17]
    train, val, test = (ImageSplit(images[m], labels[m]) for m in parts)
    return ClassificationData(train, val, test, _spec(train.images, len(names)))


@BENCHMARKS.register("omniglot")
def omniglot() -> Benchmark:
    """Omniglot few-shot (1,200/100/323 characters, 28x28) from <data-root>/omniglot-py; MAML."""
    # the MAML code base's Omniglot setting, which the paper's experiments use: K query examples
    # per class (as many as support), 1 inner step at 0.4, 10 at test, 32 tasks, 60,000 steps
    return Benchmark(name="omniglot", load=with_fewshot_options(load_omniglot, "omniglot"),
                     kind="few-shot", default_model="conv4",
                     default_epochs=60, default_batch_size=32, default_learner="maml",
                     default_learner_options={"inner_lr": 0.4, "inner_steps": 1, "eval_inner_steps": 10},
                     default_ways=5, default_shots=1, default_query_shots=1, default_steps_per_epoch=1000,
                     options=FewShotOptions, download=download_omniglot)


@BENCHMARKS.register("omniglot-classification")
def omniglot_classification() -> Benchmark:
    """Omniglot as 1,623-way classification, 15/2/3 drawings per character (MetaAugment's setting); small CNN."""
    return Benchmark(name="omniglot-classification", load=load_omniglot_classification, default_model="small-cnn",
                     default_epochs=100, default_batch_size=128, default_learner_options={"lr": 0.05},
                     download=download_omniglot)
