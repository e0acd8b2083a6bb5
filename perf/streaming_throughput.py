"""Images per second of the streaming pipeline against torchvision's ImageFolder + DataLoader.

    python perf/streaming_throughput.py                          # a synthetic ImageNet-like tree
    python perf/streaming_throughput.py --data-root ~/data/imagenet/train --workers 8

Both sides read the same files with the same workers and batch size and produce the same
thing, a (B, 3, S, S) batch of Inception-style training crops (random resized crop 8-100%,
aspect 3/4-4/3, horizontal flip): torchvision's reference is ImageFolder with
RandomResizedCrop + RandomHorizontalFlip on the PIL image and PILToTensor (uint8, as ours;
ToTensor's float conversion would only slow it; both are measured up to the uint8 batch on the
host, before the copy to the device, where the float conversion happens). The synthetic tree has `--images` JPEGs of
ImageNet's typical size (500x375, quality 90). The two are measured alternately, `--repeats`
times each after one warm-up pass, in this process; the ratio is ours / torchvision's.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def synthetic_tree(root: Path, images: int, classes: int = 10) -> Path:
    """`images` 500x375 JPEGs of smooth random content in `classes` class folders."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for index in range(images):
        folder = root / f"class{index % classes:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, (12, 16, 3)).astype(np.uint8)  # upsampled: photo-like, compressible
        Image.fromarray(small).resize((500, 375), Image.BICUBIC).save(folder / f"{index}.JPEG", quality=90)
    return root


def ours(root: Path, size: int, batch: int, workers: int, epoch: int) -> int:
    from metaaugment.data.batches import epoch_order
    from metaaugment.data.streaming import FileSplit, image_files

    folders = sorted(p for p in root.iterdir() if p.is_dir())
    files = [(str(f), label) for label, folder in enumerate(folders) for f in image_files(folder)]
    split = FileSplit([f for f, _ in files], torch.tensor([label for _, label in files]), size, train=True)
    order = epoch_order(len(split), 0, epoch)
    batches = [order[i:i + batch] for i in range(0, len(split) - batch + 1, batch)]
    return sum(len(images) for images, _ in split.uint8_batches(batches, workers, draw=epoch))


def torchvision_reference(root: Path, size: int, batch: int, workers: int, epoch: int) -> int:
    from torch.utils.data import DataLoader
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

    transform = transforms.Compose([transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(),
                                    transforms.PILToTensor()])
    loader = DataLoader(ImageFolder(str(root), transform=transform), batch_size=batch, shuffle=True,
                        num_workers=workers, drop_last=True, generator=torch.Generator().manual_seed(epoch))
    return sum(len(images) for images, _ in loader)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, help="a folder of class folders (default: a synthetic tree)")
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = args.data_root or synthetic_tree(Path(folder), args.images)
        rates: dict[str, list[float]] = {"metaaugment FileSplit": [], "torchvision ImageFolder": []}
        runs = {"metaaugment FileSplit": ours, "torchvision ImageFolder": torchvision_reference}
        for repeat in range(args.repeats + 1):
            for name, run in runs.items():
                start = time.perf_counter()
                count = run(root, args.image_size, args.batch_size, args.workers, repeat)
                if repeat:  # the first pass warms the page cache
                    rates[name].append(count / (time.perf_counter() - start))
    print(f"{args.image_size}px training crops, batch {args.batch_size}, {args.workers} workers, "
          f"{count} images per pass, median of {args.repeats}")
    for name, values in rates.items():
        print(f"  {name:26} {statistics.median(values):8.1f} images/s")
    ratio = statistics.median(rates["metaaugment FileSplit"]) / statistics.median(rates["torchvision ImageFolder"])
    print(f"  ratio (ours / torchvision): {ratio:.2f}")


if __name__ == "__main__":
    main()
