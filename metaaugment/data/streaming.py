"""Splits streamed from image files: decoded and cropped by DataLoader workers, uint8 to the device.

For datasets that do not fit in memory (ImageNet: 1.28M JPEGs). A `FileSplit` holds only
the file paths and labels. Worker processes decode each image and do the per-image
geometric preprocessing, which needs the image's own size: in training a random resized
crop to `image_size` and a horizontal flip (Inception-style, the ImageNet baseline's
preprocessing), in evaluation a resize of the shorter side to image_size / 0.875 and a
centre crop. Each image is decoded by PIL straight into its crop: a JPEG at the smallest
power-of-two reduction that keeps the crop at full resolution, and the crop resized in the
same call. Batches leave the workers as uint8 (a quarter of float32's bytes), become float
[0, 1] on the device, and the policy's batched ops run there.

The geometric preprocessing is the benchmark's options (`Preprocessing`, `--benchmark-set`):
the crop's area and aspect-ratio ranges, the flip on or off, a plain resize of the whole
image (no crop, in training and evaluation) for data where a crop or a mirror image changes
what an image shows (characters, digits, many medical images), or CIFAR's pad-and-crop for
small photos (the whole image resized, zero-padded and cropped back at a random offset). An
evaluation image that already has the requested size is used as it is.

Deterministic whatever the number of workers: the crop and flip of an image are drawn from
a generator seeded by (split seed, pass, index), not from a worker's random state, and the
DataLoader keeps the sampler's order. Resumable mid-epoch: the order of an epoch is a pure
function of (seed, epoch) (`batches.epoch_order`), so a resumed epoch starts at its batch
index.
"""
from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from metaaugment.batch import Batch
from metaaugment.data.value_options import ValueOptions
from metaaugment.infra.errors import UserError

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
CROP_SCALE = (0.08, 1.0)          # Inception-style random resized crop (Szegedy et al. 2015)
CROP_RATIO = (3 / 4, 4 / 3)
CENTRE_CROP_FRACTION = 0.875      # evaluation: resize to size / 0.875, then centre crop (224 of 256)
CIFAR_PADDING = 4                 # crop=pad: 4 zero pixels a side, a random 32 of 40 (He et al. 2016)
MAX_PADDING = 1024
MIN_CROP_RATIO = 0.01  # a crop 100 times wider than high, or higher than wide, at most
UNREADABLE = "cannot read image"
HEADER_THREADS = 8  # the header check reads a few bytes per file: bound by file-system latency, not CPU


def image_errors() -> tuple[type[BaseException], ...]:
    """What PIL raises for a file it cannot decode: unreadable, truncated or not an image
    (OSError and its subclass UnidentifiedImageError, ValueError, SyntaxError), or one whose
    size exceeds its decompression-bomb limit (`Image.MAX_IMAGE_PIXELS`, twice over)."""
    from PIL import Image

    return OSError, ValueError, SyntaxError, Image.DecompressionBombError


def unreadable(path: str | Path, error: BaseException) -> UserError:
    """The one-line error for an image file that cannot be read."""
    return UserError(f"{UNREADABLE} {path}: {' '.join(str(error).split())[:200]}")


def _stamp(path: str) -> str:
    """A file's size and modification time, as a line of the header cache's digest."""
    try:
        status = os.stat(path)
    except OSError:
        return "missing"
    return f"{status.st_size}:{status.st_mtime_ns}"


def check_image_headers(paths: Sequence[str], cache: Path | None = None) -> None:
    """Open every image's header (a few bytes each, on HEADER_THREADS threads) so that a file
    that is not an image, or too large to decode safely, stops the run before it trains, not
    when its split is first read (the test split: after training). `cache`: a marker file
    written once every header has been read, so the check runs once per set of files; its
    name carries a digest of every file's size and modification time, so a file replaced in
    place (its folder's time unchanged) is checked again."""
    import hashlib
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    if cache is not None:
        with ThreadPoolExecutor(HEADER_THREADS) as pool:
            digest = hashlib.sha256("\n".join(pool.map(_stamp, paths, chunksize=1024)).encode()).hexdigest()[:12]
        cache = cache.with_name(f"{cache.stem}-{digest}{cache.suffix}")
        if cache.is_file():
            return
    errors = image_errors()

    def header(path: str) -> BaseException | None:
        try:
            with Image.open(path) as image:
                image.size  # noqa: B018 (parsed with the header)
        except errors as error:
            return error
        return None

    with ThreadPoolExecutor(HEADER_THREADS) as pool:
        for path, error in zip(paths, pool.map(header, paths, chunksize=256)):
            if error is not None:
                raise unreadable(path, error)
    if cache is not None:
        from metaaugment.infra.files import write_bytes

        write_bytes(cache, b"")


Region = tuple[float, float, float, float]  # left, top, right, bottom in the image's pixels


def open_rgb(path: str, size: int, crop: Callable[[int, int], tuple[Region, bool]]) -> Tensor:
    """Decode the region `crop(width, height)` chooses of the image at `path` (with whether to
    flip it horizontally), resized to (size, size), as uint8 (3, size, size), by PIL.

    A JPEG is decoded at the smallest power-of-two reduction (PIL's `draft`, the decoder's
    DCT scaling) that still gives the region at least `size` pixels: a 224 crop of a
    1000x750 photo decodes a quarter of its pixels. Grayscale, palette and alpha images
    become RGB."""
    from PIL import Image
    from torchvision.transforms.v2.functional import pil_to_tensor

    with Image.open(path) as image:  # the header alone: the size is known before decoding
        width, height = image.size
        (left, top, right, bottom), flip = crop(width, height)
        reduction = max(1, int(min(right - left, bottom - top) // size))
        if reduction > 1 and image.format == "JPEG":
            image.draft("RGB", (max(1, width // reduction), max(1, height // reduction)))
        scale_x, scale_y = image.size[0] / width, image.size[1] / height  # what draft chose
        box = (left * scale_x, top * scale_y, right * scale_x, bottom * scale_y)
        resized = image.convert("RGB").resize((size, size), Image.BILINEAR, box=box, reducing_gap=None)
        if flip:
            resized = resized.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return pil_to_tensor(resized)


class Preprocessing(ValueOptions):
    """The per-image geometric preprocessing of a streamed benchmark (its `--benchmark-set`
    options). Defaults: ImageNet's Inception-style training crop and flip, and the centre
    crop of 87.5% in evaluation; `crop="pad"` is CIFAR's, for small photos.

    Options:
        crop: random-resized (a random area and aspect ratio, resized; evaluation: the centre
            crop), none (the whole image resized to the square size, in training and evaluation)
            or pad (CIFAR's, for small photos: the whole image resized, zero-padded by `padding`
            pixels a side and cropped back to the size at a random offset; evaluation: the
            whole image resized)
        crop_scale: the random crop's area as a fraction of the image's (lowest, highest)
        crop_ratio: the random crop's aspect ratio, width / height (lowest, highest)
        padding: zero pixels added on each side before crop=pad's random crop
        flip: flip training images horizontally with probability 1/2
    """

    CROPS = ("random-resized", "none", "pad")

    def __init__(self, *, crop: str = "random-resized", crop_scale: tuple[float, ...] = CROP_SCALE,
                 crop_ratio: tuple[float, ...] = CROP_RATIO, padding: int = CIFAR_PADDING, flip: bool = True):
        if crop not in self.CROPS:
            raise ValueError(f"crop must be {', '.join(self.CROPS[:-1])} or {self.CROPS[-1]} (got {crop!r})")
        if not 0 <= padding <= MAX_PADDING:
            raise ValueError(f"padding must be an integer from 0 to {MAX_PADDING} pixels (got {padding})")
        if len(crop_scale) != 2 or not 0 < crop_scale[0] <= crop_scale[1] <= 1:
            raise ValueError(f"crop_scale must be two fractions 0 < low <= high <= 1 (got {crop_scale})")
        if len(crop_ratio) != 2 or not MIN_CROP_RATIO <= crop_ratio[0] <= crop_ratio[1] <= 1 / MIN_CROP_RATIO:
            raise ValueError(f"crop_ratio must be two aspect ratios {MIN_CROP_RATIO} <= low <= high <= "
                             f"{1 / MIN_CROP_RATIO:g} (got {crop_ratio})")
        self.crop, self.flip, self.padding = crop, flip, int(padding)
        self.crop_scale = (float(crop_scale[0]), float(crop_scale[1]))
        self.crop_ratio = (float(crop_ratio[0]), float(crop_ratio[1]))

    def train_region(self, width: int, height: int, generator_seed: int) -> tuple[Region, bool]:
        """The region of one training image and whether to flip it, drawn from `generator_seed`."""
        if self.crop == "random-resized":
            region, flip = train_region(width, height, generator_seed, self.crop_scale, self.crop_ratio)
        else:  # none and pad: the whole image (pad's offset: `pad_offset`, drawn from its own seed)
            region = (0, 0, width, height)
            flip = random.Random(generator_seed).random() < 0.5
        return region, flip and self.flip

    def pad_offset(self, generator_seed: int) -> tuple[int, int]:
        """crop=pad: the (top, left) of the crop in the padded image, each in [0, 2 * padding]."""
        draws = random.Random(generator_seed * 2 + 1)  # not the flip's stream
        return draws.randint(0, 2 * self.padding), draws.randint(0, 2 * self.padding)

    def eval_region(self, width: int, height: int, size: int) -> Region:
        """The region of one evaluation image resized to `size`: the whole image when it already
        has that size or the crop is none or pad, else the centre crop."""
        if self.crop != "random-resized" or width == height == size:
            return (0, 0, width, height)
        return eval_region(width, height)


def draw_seed(seed: int, draw: int, index: int) -> int:
    """The seed of one image's random crop in one pass: a pure function of its arguments."""
    return (seed * 1_000_003 + draw * 7_919 + index * 104_729) % (2**63 - 1)


def train_region(width: int, height: int, generator_seed: int, scale: tuple[float, float] = CROP_SCALE,
                 aspect: tuple[float, float] = CROP_RATIO) -> tuple[tuple[float, float, float, float], bool]:
    """Inception-style preprocessing drawn from `generator_seed` alone: the region of a random
    resized crop and whether to flip horizontally.

    The crop is RandomResizedCrop's (Szegedy et al. 2015, as torchvision defines it): up to
    10 draws of an area in `scale` (8-100% of the image by default) and a log-uniform aspect
    ratio in `aspect` ([3/4, 4/3]), the first that fits; otherwise the centre crop of the
    nearest allowed aspect ratio. It draws from its own `random.Random`: torch's global
    generator is neither read nor reseeded, and the draw costs microseconds in a worker."""
    draws = random.Random(generator_seed)
    area = width * height
    log_ratio = (math.log(aspect[0]), math.log(aspect[1]))
    for _ in range(10):
        target = area * draws.uniform(*scale)
        ratio = math.exp(draws.uniform(*log_ratio))
        w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            top, left = draws.randint(0, height - h), draws.randint(0, width - w)
            return (left, top, left + w, top + h), draws.random() < 0.5
    ratio = width / height  # fallback: the whole image, cut to the allowed aspect ratios
    if ratio < aspect[0]:
        w, h = width, round(width / aspect[0])
    elif ratio > aspect[1]:
        w, h = round(height * aspect[1]), height
    else:
        w, h = width, height
    top, left = (height - h) // 2, (width - w) // 2
    return (left, top, left + w, top + h), draws.random() < 0.5


def eval_region(width: int, height: int) -> tuple[float, float, float, float]:
    """The centre square that remains after resizing the shorter side to size / 0.875 and
    cropping the centre `size`: 87.5% of the shorter side."""
    side = CENTRE_CROP_FRACTION * min(width, height)
    left, top = (width - side) / 2, (height - side) / 2
    return left, top, left + side, top + side


def pad_crop(image: Tensor, padding: int, top: int, left: int) -> Tensor:
    """(C, H, W) -> (C, H, W): `image` zero-padded by `padding` pixels a side, then the (H, W)
    window at (top, left) of the padded image (CIFAR's random crop; top = left = padding is
    the image itself)."""
    height, width = image.shape[-2:]
    padded = torch.nn.functional.pad(image, (padding, padding, padding, padding))
    return padded[..., top:top + height, left:left + width]


def train_crop(path: str, size: int, generator_seed: int, preprocessing: Preprocessing | None = None) -> Tensor:
    """One training image: its region (the random resized crop by default) resized to
    (3, size, size), flipped or not; crop=pad: then padded and cropped at a random offset."""
    chosen = preprocessing or Preprocessing()
    image = open_rgb(path, size, lambda width, height: chosen.train_region(width, height, generator_seed))
    if chosen.crop == "pad":
        image = pad_crop(image, chosen.padding, *chosen.pad_offset(generator_seed))
    return image


def eval_crop(path: str, size: int, preprocessing: Preprocessing | None = None) -> Tensor:
    """One evaluation image: its region (the centre crop by default; the whole image when it
    already is size x size) resized to (3, size, size)."""
    chosen = preprocessing or Preprocessing()
    return open_rgb(path, size, lambda width, height: (chosen.eval_region(width, height, size), False))


class DecodedImages(Dataset):
    """Dataset over (pass, index) keys: the decoded, preprocessed uint8 image and its label."""

    def __init__(self, files: Sequence[str], labels: Tensor, image_size: int, train: bool, seed: int,
                 preprocessing: Preprocessing | None = None):
        self.files, self.labels, self.image_size, self.train, self.seed = files, labels, image_size, train, seed
        self.preprocessing = preprocessing or Preprocessing()

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, Tensor]:
        draw, index = key
        path = self.files[index]
        try:
            if self.train:
                image = train_crop(path, self.image_size, draw_seed(self.seed, draw, index), self.preprocessing)
            else:
                image = eval_crop(path, self.image_size, self.preprocessing)
        except image_errors() as error:
            raise unreadable(path, error) from None
        return image, self.labels[index]


@dataclass
class FileSplit:
    """One split read from image files: `files` (N paths), `labels` (N,) int64. `train`
    selects the training region and flip, `preprocessing` how they are drawn; `seed` fixes
    their draws (per pass and image)."""

    files: list[str]
    labels: Tensor
    image_size: int
    train: bool
    seed: int = 0
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    dataset: DecodedImages = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.labels.shape != (len(self.files),):
            raise ValueError("labels must be (N,) and match the number of files")
        self.dataset = DecodedImages(self.files, self.labels, self.image_size, self.train, self.seed,
                                     self.preprocessing)

    def __len__(self) -> int:
        return len(self.files)

    def batch(self, indices: Tensor, device: torch.device | str = "cpu", draw: int = 0) -> Batch:
        """The samples at `indices` decoded in this process, as a float Batch on `device`."""
        images, labels = zip(*(self.dataset[(draw, int(i))] for i in indices))
        return to_batch(torch.stack(images), torch.stack(labels), device)

    def batches(self, index_batches: Iterable[Tensor], device: torch.device | str, workers: int,
                draw: int = 0) -> Iterator[Batch]:
        """The batches of `index_batches` in order, decoded by `workers` processes (0: this
        one), as float [0, 1] Batches on `device` (converted there)."""
        pin = torch.device(device).type == "cuda"
        for images, labels in self.uint8_batches(index_batches, workers, draw, pin_memory=pin):
            yield to_batch(images, labels, device)

    def uint8_batches(self, index_batches: Iterable[Tensor], workers: int, draw: int = 0,
                      pin_memory: bool = False) -> Iterator[tuple[Tensor, Tensor]]:
        """What the workers hand over: uint8 (B, 3, S, S) images and (B,) labels on the host."""
        keys = [[(draw, int(i)) for i in batch] for batch in index_batches]
        if not keys:
            return
        # its own generator: creating the iterator must not draw from the global random state,
        # which a resumed run restores at another point of the epoch
        loader = DataLoader(self.dataset, batch_sampler=keys, num_workers=workers, pin_memory=pin_memory,
                            prefetch_factor=4 if workers > 0 else None, generator=torch.Generator())
        try:
            yield from loader
        except UserError as error:  # from a worker: its message is wrapped in the worker's traceback
            lines = [line for line in str(error).splitlines() if UNREADABLE in line]
            raise UserError(lines[-1].split("UserError: ")[-1] if lines else str(error)) from None


def to_batch(images: Tensor, labels: Tensor, device: torch.device | str) -> Batch:
    """uint8 (B, 3, H, W) images and (B,) labels -> a float [0, 1] Batch on `device`."""
    images = images.to(device, non_blocking=True)
    return Batch(images.float().div_(255.0), labels.to(device, non_blocking=True))


def image_files(folder: Path) -> list[Path]:
    """The image files directly in `folder` (by suffix, case-insensitive), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
