"""Streamed mini-batch benchmarks read from class folders: `imagenet` and `image-classification-folder`.

`imagenet` reads the ImageFolder layout every ImageNet user has after the usual script that
sorts the validation images into class folders:

    <data-root>/imagenet/train/<wnid>/*.JPEG     1.28M training images, 1,000 classes
    <data-root>/imagenet/val/<wnid>/*.JPEG       50,000 validation images: the test split

2% of each training class is held out as the validation split (MetaAugment's protocol,
§5.2), chosen by a fixed seed so that every run holds out the same images.

`image-classification-folder` does the same for a user's own supervised data:

    <data-root>/train/<class>/<images>           training images
    <data-root>/val/<class>/<images>             optional; without it 10% of each class of train
    <data-root>/test/<class>/<images>            test images

Images of any size and of the formats torchvision or PIL decode. The classes are the
sub-folders of train/, sorted by name; val/ and test/ must use the same names. Nothing is
loaded into memory: worker processes (`--workers`) decode and crop each batch
(`metaaugment.data.streaming`), to --image-size (224 by default). How they crop and flip is
the benchmarks' `--benchmark-set` options (`FolderOptions`): ImageNet's random resized crop
(8-100% of the area, aspect 3/4-4/3) and flip by default; `crop=pad` (CIFAR's: the whole
image resized, 4 zero pixels a side, a random crop back; `padding=N`) for small photos;
`crop=none` (a plain resize), `flip=false`, `crop_scale=0.5,1` for data a crop or a mirror
image changes. Evaluation takes an image that already has --image-size as it is.
`train_per_class=N` trains on N images of each class (a balanced subset drawn by a fixed seed).
"""
from __future__ import annotations

import math
from pathlib import Path

import torch

from metaaugment.data.splits import ClassificationData
from metaaugment.data.streaming import (
    CIFAR_PADDING,
    CROP_RATIO,
    CROP_SCALE,
    FileSplit,
    Preprocessing,
    check_image_headers,
    image_files,
)
from metaaugment.data.subsets import SUBSET_SEED, TooFewSamples, balanced_file_subset, check_subset_options
from metaaugment.infra.errors import UserError
from metaaugment.registry import BENCHMARKS
from metaaugment.spec import TaskSpec
from metaaugment.tasks.base import Benchmark
from metaaugment.tasks.glyphs import cache_folder
from metaaugment.tasks.image_files import listing_key

DEFAULT_IMAGE_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HOLDOUT_SEED = 0


class FolderOptions(Preprocessing):
    """The class-folder benchmarks' `--benchmark-set` options: how training images are cropped
    and flipped (`streaming.Preprocessing`'s options, documented there) and the reduced-data
    regime of the literature.

    Options:
        train_per_class: train on this many images of each class (a reduced regime, e.g. 400 of
            CIFAR-10's), drawn by subset_seed from what validation leaves; 0: all of them
        subset_seed: the seed that draws the reduced subset: the same images for every policy
            and every --seed
    """

    def __init__(self, *, crop: str = "random-resized", crop_scale: tuple[float, ...] = CROP_SCALE,
                 crop_ratio: tuple[float, ...] = CROP_RATIO, padding: int = CIFAR_PADDING, flip: bool = True,
                 train_per_class: int = 0, subset_seed: int = SUBSET_SEED):
        super().__init__(crop=crop, crop_scale=crop_scale, crop_ratio=crop_ratio, padding=padding, flip=flip)
        check_subset_options(train_per_class, subset_seed, "train_per_class")
        self.train_per_class, self.subset_seed = train_per_class, subset_seed


def class_files(split_folder: Path, classes: list[str] | None = None) -> tuple[list[str], list[list[Path]]]:
    """The class names (sorted sub-folders, or `classes`) and each class's image files;
    UserError naming what is missing or empty."""
    names = classes if classes is not None else sorted(p.name for p in split_folder.iterdir() if p.is_dir())
    if classes is None and len(names) < 2:
        raise UserError(f"{split_folder} needs at least 2 class sub-folders of images (found {len(names)})")
    files = []
    for name in names:
        folder = split_folder / name
        found = image_files(folder) if folder.is_dir() else []
        if classes is None and not found:
            raise UserError(f"class folder without images: {folder}")
        files.append(found)
    if classes is not None:
        unknown = sorted(set(p.name for p in split_folder.iterdir() if p.is_dir()) - set(classes))
        if unknown:
            raise UserError(f"{split_folder} has class folders that train/ does not: {', '.join(unknown[:5])}; "
                            f"a supervised folder has the same classes in every split (for new classes at test time, "
                            f"a few-shot folder, use the benchmark image-folder)")
    return names, files


def hold_out(files: list[list[Path]], fraction: float, seed: int = HOLDOUT_SEED
             ) -> tuple[list[list[Path]], list[list[Path]]]:
    """Per class, `fraction` of the files (at least one, when the class has two) held out by a
    fixed permutation: (kept, held out)."""
    kept, held = [], []
    for index, paths in enumerate(files):
        count = min(max(1, math.ceil(fraction * len(paths))), len(paths) - 1) if len(paths) > 1 else 0
        order = torch.randperm(len(paths), generator=torch.Generator().manual_seed(seed * 1_000_003 + index)).tolist()
        held.append([paths[i] for i in sorted(order[:count])])
        kept.append([paths[i] for i in sorted(order[count:])])
    return kept, held


def file_split(files: list[list[Path]], image_size: int, train: bool,
               options: Preprocessing | None = None) -> FileSplit:
    """A FileSplit of per-class file lists (label = the class's index)."""
    paths = [str(p) for paths in files for p in paths]
    labels = torch.tensor([label for label, paths in enumerate(files) for _ in paths], dtype=torch.int64)
    return FileSplit(paths, labels, image_size, train, preprocessing=options or Preprocessing())


def load_class_folders(root: Path, *, name: str, image_size: int, val_fraction: float,
                       val_folder: str | None, test_folder: str,
                       options: Preprocessing | None = None) -> ClassificationData:
    """train/, test/ and val/ (or a per-class hold-out of train) as streamed splits."""
    classes, train = class_files(root / "train")
    _, test = class_files(root / test_folder, classes)
    if val_folder is not None and (root / val_folder).is_dir():
        _, val = class_files(root / val_folder, classes)
    else:
        train, val = hold_out(train, val_fraction)
    if getattr(options, "train_per_class", 0):
        try:
            train = balanced_file_subset(train, options.train_per_class, options.subset_seed)
        except TooFewSamples as error:
            raise UserError(f"{name}: train_per_class={error.wanted} asks for more images than class "
                            f"'{classes[error.label]}' has for training ({error.count}, once validation is held "
                            f"out)") from None
    for split, files in (("test", test), ("val", val)):
        if not any(files):
            raise UserError(f"the {split} split of {name} at {root} has no images")
    # every header read before training: a bad test image found after a week of training is a lost week
    paths = [str(p) for split in (train, val, test) for paths in split for p in paths]
    folders = sorted({Path(p).parent for p in paths})
    check_image_headers(paths, cache_folder() / f"headers-{listing_key(paths, folders, Path(root).resolve())}.ok")
    spec = TaskSpec(num_classes=len(classes), input_shape=(3, image_size, image_size), mean=IMAGENET_MEAN,
                    std=IMAGENET_STD)
    return ClassificationData(file_split(train, image_size, True, options),
                              file_split(val, image_size, False, options),
                              file_split(test, image_size, False, options), spec)


def load_imagenet(data_root: Path, image_size: int = DEFAULT_IMAGE_SIZE,
                  options: Preprocessing | None = None) -> ClassificationData:
    """ImageNet from <data-root>/imagenet/{train,val}/<wnid>/ (val is the test split)."""
    root = Path(data_root) / "imagenet"
    missing = [s for s in ("train", "val") if not (root / s).is_dir()]
    if missing:
        raise UserError(f"ImageNet data not found: put the ILSVRC2012 images in {root.resolve()}/train/<wnid>/*.JPEG "
                        f"and {root.resolve()}/val/<wnid>/*.JPEG (the validation images sorted into class folders, "
                        f"e.g. with the valprep.sh script of the PyTorch ImageNet example), or pass --data-root DIR "
                        f"(missing {', '.join(s + '/' for s in missing)})")
    return load_class_folders(root, name="imagenet", image_size=image_size, val_fraction=0.02, val_folder=None,
                              test_folder="val", options=options)


def load_image_classification_folder(data_root: Path, image_size: int = DEFAULT_IMAGE_SIZE,
                                     options: Preprocessing | None = None) -> ClassificationData:
    """The user's supervised data from <data-root>/{train,val,test}/<class>/ (val optional)."""
    root = Path(data_root)
    missing = [s for s in ("train", "test") if not (root / s).is_dir()]
    if missing:
        raise UserError(f"image-classification-folder data not found: {root.resolve()} must hold train/ and test/ "
                        f"(and optionally val/), each with one sub-folder of images per class (missing "
                        f"{', '.join(s + '/' for s in missing)}); pass --data-root DIR")
    return load_class_folders(root, name="image-classification-folder", image_size=image_size, val_fraction=0.1,
                              val_folder="val", test_folder="test", options=options)


@BENCHMARKS.register("imagenet")
def imagenet() -> Benchmark:
    """ImageNet (ILSVRC2012) from <data-root>/imagenet/{train,val}/<wnid>/, streamed; 2% of train held
    out for validation; ResNet-50."""
    return Benchmark(name="imagenet", load=load_imagenet, default_model="resnet50", default_epochs=270,
                     default_batch_size=256, default_learner_options={"lr": 0.1, "weight_decay": 1e-4},
                     # the paper's ImageNet setting: 4 transformations of each sample per step (§5.2)
                     default_policy_options={"metaaugment": {"copies": 4}}, accepts_image_size=True,
                     options=FolderOptions,
                     download_instead="ImageNet is downloaded by hand after signing up at https://image-net.org "
                     "(ILSVRC2012 train and val), then laid out as docs/datasets.md says")


@BENCHMARKS.register("image-classification-folder")
def image_classification_folder() -> Benchmark:
    """Your own supervised data: <data-root>/{train,[val],test}/<class>/<images>, streamed; ResNet-50."""
    return Benchmark(name="image-classification-folder", load=load_image_classification_folder,
                     default_model="resnet50", default_epochs=90, default_batch_size=256,
                     default_learner_options={"lr": 0.1, "weight_decay": 1e-4}, accepts_image_size=True,
                     options=FolderOptions, download_instead="image-classification-folder reads your own folder")
