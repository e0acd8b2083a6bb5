"""The user's own few-shot dataset: one folder of images per class, in three split folders.

Expected under --data-root:

    train/<class>/<image files>    meta-training classes
    val/<class>/<image files>      meta-validation classes (model selection)
    test/<class>/<image files>     meta-test classes

Images of any size and format PIL reads (PNG, JPEG, ...) are resized to --image-size
(default 84) square; the split is colour (RGB) unless every sampled image is grayscale.
Reading is cached (keyed by every file's path, size and modification time, and the image size),
so later runs start fast and an edited image rebuilds the cache.
"""
from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from metaaugment.data.episodes import FewShotData, FewShotSplit
from metaaugment.data.streaming import image_errors, unreadable
from metaaugment.infra.errors import UserError
from metaaugment.infra.files import save_torch
from metaaugment.registry import BENCHMARKS
from metaaugment.spec import TaskSpec
from metaaugment.tasks.base import Benchmark
from metaaugment.tasks.fewshot_options import FewShotOptions, with_fewshot_options
from metaaugment.tasks.glyphs import cache_folder
from metaaugment.tasks.image_files import files_key, image_paths, load_cache, read_class_folders

SPLITS = ("train", "val", "test")
DEFAULT_IMAGE_SIZE = 84


def class_folders(root: Path) -> dict[str, list[Path]]:
    """split -> its class folders (sorted); UserError naming what is missing."""
    root = Path(root)
    missing = [s for s in SPLITS if not (root / s).is_dir()]
    if missing:
        raise UserError(f"image-folder data not found: {root.resolve()} must hold train/, val/ and test/, each with "
                        f"one sub-folder of images per class (missing {', '.join(s + '/' for s in missing)}); "
                        f"pass --data-root DIR")
    found = {s: sorted(c for c in (root / s).iterdir() if c.is_dir()) for s in SPLITS}
    for split, folders in found.items():
        if len(folders) < 2:
            raise UserError(f"{root / split} needs at least 2 class sub-folders of images (found {len(folders)})")
        empty = [f.name for f in folders if not image_paths(f)]
        if empty:
            raise UserError(f"class folder(s) without images in {root / split}: {', '.join(empty[:5])}")
    refuse_shared_classes(root, {split: [f.name for f in folders] for split, folders in found.items()})
    return found


def refuse_shared_classes(root: Path, names: dict[str, list[str]]) -> None:
    """UserError when two splits share a class name: few-shot evaluation needs classes never
    seen in meta-training, and the same classes in train/ and test/ is a supervised folder."""
    for first, second in (("train", "val"), ("train", "test"), ("val", "test")):
        shared = sorted(set(names[first]) & set(names[second]))
        if shared:
            more = f" and {len(shared) - 5} more" if len(shared) > 5 else ""
            raise UserError(f"{root}: {first}/ and {second}/ share {len(shared)} class(es) "
                            f"({', '.join(shared[:5])}{more}); the few-shot benchmark image-folder needs disjoint "
                            f"classes per split. For the same classes in every split (a supervised folder) use "
                            f"image-classification-folder")


def _colour_mode(folders: list[Path]) -> str:
    """"RGB" unless the first image of each of the first 20 classes is grayscale."""
    from PIL import Image

    for folder in folders[:20]:
        path = image_paths(folder)[0]
        try:
            with Image.open(path) as image:
                if image.mode not in ("L", "LA", "1", "I", "I;16"):
                    return "RGB"
        except image_errors() as error:
            raise unreadable(path, error) from None
    return "L"


def load_image_folder(root: Path, image_size: int = DEFAULT_IMAGE_SIZE) -> FewShotData:
    """Read (or load from the cache) the three splits as uint8 images of image_size^2."""
    folders = class_folders(root)
    mode = _colour_mode(folders["train"])
    key = files_key([p for s in SPLITS for f in folders[s] for p in image_paths(f)], Path(root).resolve(),
                    image_size, mode)
    cache = cache_folder() / f"image-folder-{key}.pt"
    arrays = load_cache(cache)
    if arrays is None:
        total = sum(len(image_paths(f)) for s in SPLITS for f in folders[s])
        arrays = {}
        with Progress(console=Console(stderr=True), transient=True) as progress:
            task = progress.add_task(f"reading {total} images from {root}", total=total)
            done = 0
            for split in SPLITS:
                arrays[split] = read_class_folders(folders[split], image_size, mode,
                                                   progress=lambda n, base=done: progress.update(
                                                       task, completed=base + n))
                done += len(arrays[split][1])
        save_torch(cache, arrays)
    splits = {s: FewShotSplit(*arrays[s], class_names=[f.name for f in folders[s]]) for s in SPLITS}
    train = splits["train"].images.float() / 255
    channels = train.shape[1]
    mean = tuple(train.mean(dim=(0, 2, 3)).tolist())
    std = tuple(train.std(dim=(0, 2, 3)).clamp_min(1e-3).tolist())
    spec = TaskSpec(num_classes=None, input_shape=(channels, image_size, image_size), mean=mean, std=std)
    return FewShotData(splits["train"], splits["val"], splits["test"], spec)


@BENCHMARKS.register("image-folder")
def image_folder() -> Benchmark:
    """Your own few-shot data: <data-root>/{train,val,test}/<class>/<images>, resized to --image-size; MAML."""
    return Benchmark(name="image-folder", load=with_fewshot_options(load_image_folder, "image-folder"),
                     kind="few-shot", default_model="conv4",
                     default_model_options={"hidden_size": 32},
                     default_epochs=20, default_batch_size=4, default_learner="maml",
                     default_learner_options={"inner_lr": 0.01, "inner_steps": 5, "eval_inner_steps": 10},
                     default_ways=5, default_shots=1, default_query_shots=15, default_steps_per_epoch=500,
                     accepts_image_size=True, options=FewShotOptions,
                     download_instead="image-folder reads your own folder")
