"""Fonts: an embedded benchmark where augmentation matters. Recognize characters in fonts
the network has never seen.

The 36 classes are the digits and the capital letters. Each image is one character rendered
from one of the 22 text fonts matplotlib ships (DejaVu Sans, Sans Mono and Serif, STIX
General, each in 4 styles, and 6 Computer Modern fonts), placed in a 32x32 RGB image with a
small random affine jitter and random ink and paper colours. The fonts are split once, by a
fixed shuffle, into 12 training fonts, 4 validation fonts and 6 test fonts: a test image's
font (its stroke width, serifs, slant, proportions) never appears in training.

Splits: train 12 fonts x 36 characters x 2 renders (864 images), val 4 fonts x 6 renders
(864), test 6 fonts x 10 renders (2,160). The renders are fixed (one seeded generator), so
every run sees the same images; the fonts of each split are listed in the cache file.

Why augmentation matters here: the test asks for invariance to how a character is drawn,
and the training set shows each character in only 12 fonts, 2 renders each. What the image
ops encode (shears and rotations for slanted and upright styles, translations, contrast,
brightness, colour and sharpness changes for rendering and colour differences) is the
difference between a training font and a test font, so augmenting the few training images
covers part of that shift: RandAugment gains about 7 points over no augmentation
(docs/results.md). The classes are balanced and
every class appears in every split.

Rendering takes a few seconds; the result is cached in the cache folder (METAAUG_CACHE or
~/.cache/metaaugment), keyed by the font files.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from metaaugment.data.splits import ClassificationData, ImageSplit
from metaaugment.infra.files import save_torch
from metaaugment.registry import BENCHMARKS
from metaaugment.spec import TaskSpec
from metaaugment.tasks.base import Benchmark
from metaaugment.tasks.glyphs import cache_folder, font_files, place_glyph
from metaaugment.tasks.image_files import files_key, load_cache

CACHE_VERSION = 1
CHARACTERS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
IMAGE_SIZE = 32
GLYPH_BOX = 24          # the largest side a character takes before the jitter
RENDER_PIXELS = 26      # font size in pixels
# matplotlib's text fonts; cmex10 and cmsy10 map these code points to math symbols
SYMBOL_FONTS = ("cmex10", "cmsy10")
SPLIT_FONTS = (12, 4)   # train, val; the other 6 fonts are the test fonts
SPLIT_SEED = 0
RENDERS = {"train": 2, "val": 6, "test": 10}  # renders per (font, character): few to train on


def text_fonts() -> list[Path]:
    """The fonts that draw the 36 characters as characters: matplotlib's TrueType fonts
    without the symbol fonts and the placeholder, sorted by name."""
    from matplotlib.ft2font import FT2Font

    fonts = []
    for path in font_files():
        if path.stem in SYMBOL_FONTS:
            continue
        charmap = FT2Font(str(path)).get_charmap()
        if all(ord(c) in charmap for c in CHARACTERS):
            fonts.append(path)
    return fonts


def font_split(fonts: list[Path]) -> dict[str, list[Path]]:
    """The fixed, disjoint split of the fonts into train / val / test by a seeded shuffle."""
    order = list(fonts)
    random.Random(SPLIT_SEED).shuffle(order)
    n_train, n_val = SPLIT_FONTS
    return {"train": sorted(order[:n_train]), "val": sorted(order[n_train:n_train + n_val]),
            "test": sorted(order[n_train + n_val:])}


def ink_mask(font: object, character: str) -> np.ndarray:
    """The character's ink (32x32 float in [0, 1]), cropped, fitted into GLYPH_BOX and centred."""
    font.clear()
    font.set_size(RENDER_PIXELS, 72)  # 72 dpi: the size is in pixels
    font.set_text(character, 0.0)
    font.draw_glyphs_to_bitmap(antialiased=True)
    placed = place_glyph(np.asarray(font.get_image()), box=GLYPH_BOX, size=IMAGE_SIZE, min_ink=1)
    if placed is None:
        raise ValueError(f"{font.fname} draws no ink for {character!r}")
    return placed.astype(np.float32) / 255.0


def jitter(masks: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random small affine per mask (N, 1, H, W): rotation +-8 deg, scale 0.85-1.05,
    shift +-2 px (bilinear)."""
    n = masks.shape[0]
    angle = (torch.rand(n, generator=generator) * 2 - 1) * (8 * torch.pi / 180)
    scale = 0.85 + 0.2 * torch.rand(n, generator=generator)
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * (2 * 2 / IMAGE_SIZE)  # 2 px in [-1, 1] units
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(masks.shape), align_corners=False)
    return F.grid_sample(masks, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def colourize(masks: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Ink masks (N, 1, H, W) in [0, 1] -> (N, 3, H, W) uint8: random ink and paper colours
    per image, their luminances at least 0.35 apart so the character stays legible."""
    n = masks.shape[0]
    ink, paper = torch.rand(n, 3, generator=generator), torch.rand(n, 3, generator=generator)
    weights = torch.tensor([0.299, 0.587, 0.114])
    for _ in range(100):  # redraw the pairs too close in luminance
        close = ((ink @ weights) - (paper @ weights)).abs() < 0.35
        if not close.any():
            break
        ink[close] = torch.rand(int(close.sum()), 3, generator=generator)
        paper[close] = torch.rand(int(close.sum()), 3, generator=generator)
    images = paper[:, :, None, None] * (1 - masks) + ink[:, :, None, None] * masks
    return (images * 255).round().clamp(0, 255).to(torch.uint8)


def render_split(fonts: list[Path], renders: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Every character of every font, `renders` times: (N, 3, 32, 32) uint8 images, (N,) labels."""
    from matplotlib.ft2font import FT2Font

    masks, labels = [], []
    for path in fonts:
        font = FT2Font(str(path))
        for label, character in enumerate(CHARACTERS):
            mask = torch.from_numpy(ink_mask(font, character))
            masks += [mask] * renders
            labels += [label] * renders
    stacked = jitter(torch.stack(masks).unsqueeze(1), generator)
    return colourize(stacked, generator), torch.tensor(labels, dtype=torch.int64)


def build_fonts(seed: int = 0) -> dict[str, object]:
    """Render the three splits (fixed: the same images for every run)."""
    split = font_split(text_fonts())
    generator = torch.Generator().manual_seed(seed)
    data: dict[str, object] = {"fonts": {name: [p.name for p in paths] for name, paths in split.items()}}
    for name in ("train", "val", "test"):
        images, labels = render_split(split[name], RENDERS[name], generator)
        data[name] = {"images": images, "labels": labels}
    return data


def load_fonts(data_root: Path | None = None) -> ClassificationData:
    """The fonts benchmark, rendered on first use and cached (data_root is not used)."""
    settings = (CACHE_VERSION, CHARACTERS, IMAGE_SIZE, GLYPH_BOX, RENDER_PIXELS, SPLIT_FONTS, SPLIT_SEED,
                sorted(RENDERS.items()))  # a change of any rebuilds the cache
    path = cache_folder() / f"fonts-{files_key(text_fonts(), *settings)}.pt"
    data = load_cache(path)
    if data is None:
        from rich.console import Console

        with Console(stderr=True).status("rendering the fonts benchmark from matplotlib's fonts (once; cached)"):
            data = build_fonts()
        save_torch(path, data)
    splits = {name: ImageSplit(data[name]["images"], data[name]["labels"]) for name in ("train", "val", "test")}
    train = splits["train"].images.float() / 255
    mean = tuple(train.mean(dim=(0, 2, 3)).tolist())
    std = tuple(train.std(dim=(0, 2, 3)).tolist())
    spec = TaskSpec(num_classes=len(CHARACTERS), input_shape=(3, IMAGE_SIZE, IMAGE_SIZE), mean=mean, std=std)
    return ClassificationData(splits["train"], splits["val"], splits["test"], spec)


@BENCHMARKS.register("fonts")
def fonts() -> Benchmark:
    """Characters (0-9, A-Z) in fonts never seen in training: 12/4/6 fonts, 32x32 RGB, embedded; small convnet."""
    # RL-Mixup's 16 x 16 saliency grid makes 2 x 2-pixel mosaics of 32 x 32 characters, and
    # the network stays at chance for ~25 epochs in some seeds; a 4 x 4 grid (8 x 8-pixel
    # patches, a stroke's scale) learns in every seed (docs/rl-mixup.md, deviations)
    mixing = {"patches": 4}
    return Benchmark(name="fonts", load=load_fonts, default_model="small-convnet", default_epochs=60,
                     default_batch_size=64, default_learner_options={"lr": 0.05},
                     default_policy_options={"saliency-mixup": dict(mixing), "rl-mixup": dict(mixing)})
