"""scikit-learn's bundled 8x8 handwritten digits: real data that needs no download."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from metaaugment.data.splits import ClassificationData, ImageSplit
from metaaugment.registry import BENCHMARKS
from metaaugment.spec import TaskSpec
from metaaugment.tasks.base import Benchmark

TEST_FRACTION = 0.2
VAL_FRACTION = 0.1


def load_digits_splits(data_root: Path | None = None) -> ClassificationData:
    """1,797 digits as 1x8x8 uint8 images (0..16 rescaled to 0..255), split stratified and
    fixed: 20% test, 10% validation, the rest (1,257) train."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # (N, 1, 8, 8)
    labels = digits.target.astype(np.int64)
    index = np.arange(len(labels))
    rest, test = train_test_split(index, test_size=TEST_FRACTION, stratify=labels, random_state=0)
    train, val = train_test_split(rest, test_size=VAL_FRACTION / (1 - TEST_FRACTION),
                                  stratify=labels[rest], random_state=0)

    def split(idx: np.ndarray) -> ImageSplit:
        return ImageSplit(torch.from_numpy(images[idx]), torch.from_numpy(labels[idx]))

    mean = float(images[train].mean() / 255.0)
    std = float(images[train].std() / 255.0)
    spec = TaskSpec(num_classes=10, input_shape=(1, 8, 8), mean=(mean,), std=(std,))
    return ClassificationData(split(train), split(val), split(test), spec)


@BENCHMARKS.register("digits")
def digits() -> Benchmark:
    """scikit-learn's 8x8 digits (1,797 images, 10 classes), embedded; small CNN; runs in a minute on CPU."""
    return Benchmark(
        name="digits",
        load=load_digits_splits,
        default_model="small-cnn",
        default_epochs=30,
        default_batch_size=64,
        default_learner_options={"lr": 0.05},
    )
