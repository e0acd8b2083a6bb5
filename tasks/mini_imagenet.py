"""mini-ImageNet (Vinyals et al. 2016; Ravi & Larochelle splits) from learn2learn's pickle cache.

Expected under --data-root, as learn2learn.vision.datasets.MiniImagenet stores them:

    mini-imagenet-cache-train.pkl       64 classes
    mini-imagenet-cache-validation.pkl  16 classes
    mini-imagenet-cache-test.pkl        20 classes

each a pickled dict {"image_data": uint8 array (N, 84, 84, 3), "class_dict": {class name:
[indices into image_data]}}. We read them ourselves because learn2learn's class converts a
whole split to float32 (4x the memory, 3.3 GB for the train split); we keep uint8.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch

from metaaugment.data.episodes import FewShotData, FewShotSplit
from metaaugment.infra.errors import UserError
from metaaugment.infra.files import load_data_pickle, open_regular
from metaaugment.registry import BENCHMARKS
from metaaugment.spec import TaskSpec
from metaaugment.tasks.base import Benchmark
from metaaugment.tasks.fewshot_options import FewShotOptions, with_fewshot_options

SPLIT_FILES = {"train": "mini-imagenet-cache-train.pkl", "val": "mini-imagenet-cache-validation.pkl",
               "test": "mini-imagenet-cache-test.pkl"}
MEAN = (0.4707, 0.4495, 0.4026)
STD = (0.2843, 0.2752, 0.2903)


def read_cache(path: Path) -> FewShotSplit:
    """One learn2learn mini-ImageNet pickle -> FewShotSplit of (N, 3, 84, 84) uint8 images.
    The file is unpickled without running code (files.load_data_pickle); anything but the
    expected dict is a UserError naming the file and what is wrong."""
    def bad(problem: str) -> UserError:
        return UserError(f"{path} is not a mini-ImageNet cache pickle (a dict with 'image_data' uint8 "
                         f"(N, H, W, 3) and 'class_dict' name -> indices): {problem}")

    try:
        with os.fdopen(open_regular(path, "mini-ImageNet pickle"), "rb") as handle:  # never a FIFO or a link
            entry = load_data_pickle(handle)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError) as error:
        raise bad(f"it cannot be unpickled ({' '.join(str(error).split())[:200] or type(error).__name__})") from None
    if not isinstance(entry, dict) or "image_data" not in entry or "class_dict" not in entry:
        raise bad("the keys are missing")
    data, class_dict = entry["image_data"], entry["class_dict"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 4 or data.shape[3] != 3:
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise bad(f"image_data is {found}")
    if not isinstance(class_dict, dict) or not class_dict:
        raise bad("class_dict is empty")
    labels = np.full(len(data), -1, dtype=np.int64)
    names = sorted(class_dict)
    for label, name in enumerate(names):
        try:
            indices = np.asarray(class_dict[name], dtype=np.int64).reshape(-1)
        except (TypeError, ValueError):
            raise bad(f"the indices of class {name!r} are not integers") from None
        if indices.size == 0:
            raise bad(f"class {name!r} has no images")
        if indices.min() < 0 or indices.max() >= len(data):
            raise bad(f"class {name!r} indexes image {indices.max() if indices.max() >= len(data) else indices.min()}"
                      f" of {len(data)}")
        labels[indices] = label
    keep = labels >= 0
    images = torch.from_numpy(np.ascontiguousarray(data[keep].transpose(0, 3, 1, 2)))
    return FewShotSplit(images, torch.from_numpy(labels[keep]), names)


def load_mini_imagenet(root: Path) -> FewShotData:
    """The three splits (64 / 16 / 20 classes of 600 images), uint8 in memory."""
    root = Path(root)
    missing = [f for f in SPLIT_FILES.values() if not os.path.lexists(root / f)]  # a FIFO or link: named when read
    if missing:
        raise UserError(
            f"mini-imagenet data not found: put {', '.join(SPLIT_FILES.values())} in {root.resolve()}/ "
            f"(missing {', '.join(missing)}; learn2learn's MiniImagenet(root, download=True) fetches them; each is "
            f"a pickled dict with 'image_data' uint8 (N, 84, 84, 3) and 'class_dict' name -> indices), "
            f"or pass --data-root DIR")
    train, val, test = (read_cache(root / SPLIT_FILES[s]) for s in ("train", "val", "test"))
    size = train.images.shape[-1]
    spec = TaskSpec(num_classes=None, input_shape=(3, size, size), mean=MEAN, std=STD)
    return FewShotData(train, val, test, spec)


@BENCHMARKS.register("mini-imagenet")
def mini_imagenet() -> Benchmark:
    """mini-ImageNet few-shot (64/16/20 classes, 84x84) from learn2learn's pickles in <data-root>; MAML."""
    return Benchmark(name="mini-imagenet", load=with_fewshot_options(load_mini_imagenet, "mini-imagenet"),
                     kind="few-shot", default_model="conv4",
                     default_model_options={"hidden_size": 32},
                     default_epochs=60, default_batch_size=4, default_learner="maml",
                     default_learner_options={"inner_lr": 0.01, "inner_steps": 5, "eval_inner_steps": 10},
                     default_ways=5, default_shots=1, default_query_shots=15, default_steps_per_epoch=1000,
                     options=FewShotOptions,
                     download_instead="mini-ImageNet has no official download: learn2learn's MiniImagenet(root, "
                     "download=True) fetches the three pickles (pip install 'metaaugment[learn2learn]'); then pass "
                     "--data-root root")
