"""Reading folders of image files into uint8 tensors (shared by the few-shot loaders)."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from metaaugment.data.streaming import image_errors, unreadable
from metaaugment.infra.errors import UserError
from metaaugment.infra.files import load_torch

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def files_key(paths: Sequence[Path], *extra: object) -> str:
    """A digest of the files' paths, sizes and modification times (and `extra` values): a
    cache keyed by it is rebuilt whenever a file is added, removed, edited or replaced."""
    digest = hashlib.sha256("|".join(map(str, extra)).encode())
    for path in paths:
        info = path.stat()
        digest.update(f"\n{path}:{info.st_size}:{info.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def listing_key(paths: Sequence[str], folders: Sequence[Path], *extra: object) -> str:
    """A digest of a file listing and its folders' modification times (a file added, removed or
    renamed changes its folder's): for what depends on which files exist, checked at every
    start without a stat per file (ImageNet has 1.3 million)."""
    digest = hashlib.sha256("|".join(map(str, extra)).encode())
    digest.update("\n".join(paths).encode())
    for folder in folders:
        digest.update(f"\n{folder}:{folder.stat().st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def load_cache(path: Path) -> Any:
    """A cache file written with save_torch (weights_only: it cannot run code), or None when
    it is missing or unreadable (truncated by a killed write, or not ours): rebuild it then."""
    if not path.is_file():
        return None
    try:
        return load_torch(path)
    except Exception:  # a damaged cache is rebuilt and replaced atomically
        return None


def image_paths(folder: Path) -> list[Path]:
    """Image files directly in `folder`, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_image(path: Path, size: int, mode: str, invert: bool = False) -> np.ndarray:
    """One image file resized to size x size (Lanczos) -> (C, size, size) uint8, C = 1 for
    mode 'L', 3 for 'RGB'. `invert` turns dark ink on white paper into white ink on black."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image = image.convert(mode).resize((size, size), Image.LANCZOS)
            array = np.asarray(image, dtype=np.uint8)
    except image_errors() as error:
        raise unreadable(path, error) from None
    if invert:
        array = 255 - array
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def read_class_folders(folders: Sequence[Path], size: int, mode: str, invert: bool = False,
                       progress: Callable[[int], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image of each class folder -> (N, C, size, size) uint8 and (N,) labels, where
    label i is folders[i]. `progress(n)` is called with the number of images read so far."""
    images: list[np.ndarray] = []
    labels: list[int] = []
    for label, folder in enumerate(folders):
        for path in image_paths(folder):
            images.append(read_image(path, size, mode, invert))
            labels.append(label)
            if progress is not None:
                progress(len(images))
    if not images:
        raise UserError(f"no images found under {', '.join(str(f) for f in folders[:3])} ...")
    return torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.int64)
