"""Glyphs: an embedded few-shot image benchmark rendered from the fonts matplotlib ships.

Omniglot-like and download-free: one class per Unicode code point (letters, digits,
punctuation, symbols) that at least MIN_FONTS of matplotlib's fonts (DejaVu, STIX,
Computer Modern; not the LastResort placeholder font) draw with visible ink. Instances are
the different fonts plus a small random affine jitter (rotation, scale, shift), INSTANCES
per class, 28x28 grayscale (white ink on black, like Omniglot after inversion). Code points
that render alike (Latin A and Greek Alpha, say) are merged so that classes are visually
distinct. Classes are split 70/10/20 into disjoint meta-train / meta-val / meta-test sets.

Rendering takes a few seconds; the result is cached in the cache folder (METAAUG_CACHE or
~/.cache/metaaugment), keyed by the font files, so it happens once per machine.
"""
from __future__ import annotations

import os
import unicodedata
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from metaaugment.data.episodes import FewShotData, FewShotSplit
from metaaugment.infra.errors import UserError
from metaaugment.infra.files import save_torch
from metaaugment.registry import BENCHMARKS
from metaaugment.spec import TaskSpec
from metaaugment.tasks.base import Benchmark
from metaaugment.tasks.fewshot_options import FewShotOptions, with_fewshot_options
from metaaugment.tasks.image_files import files_key, load_cache

CACHE_VERSION = 1
IMAGE_SIZE = 28
GLYPH_BOX = 24        # the largest side a glyph may take inside the 28x28 image
RENDER_PIXELS = 22    # font size in pixels: most glyphs fit the box without rescaling
MIN_FONTS = 8
MIN_INK_PIXELS = 6    # pixels >= 64 needed to count as visible ink
INSTANCES = 20
DUPLICATE_SIMILARITY = 0.97  # cosine similarity of mean renders above which code points merge
SPLIT_FRACTIONS = (0.7, 0.1)  # train, val; the rest is test
KEPT_CATEGORIES = ("L", "N", "P", "S")  # letters, numbers, punctuation, symbols


def font_files() -> list[Path]:
    """matplotlib's bundled TrueType fonts, without the LastResort placeholder font."""
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return sorted(p for p in folder.glob("*.ttf") if "LastResort" not in p.name)


def cache_folder() -> Path:
    """Where generated benchmarks are cached: $METAAUG_CACHE or ~/.cache/metaaugment (an empty
    or relative METAAUG_CACHE is refused: it would scatter caches into the working folder)."""
    value = os.environ.get("METAAUG_CACHE")
    if value is None:
        return Path.home() / ".cache" / "metaaugment"
    if not value.strip() or not Path(value).is_absolute():
        raise UserError(f"METAAUG_CACHE={value!r} must be an absolute folder (unset it for ~/.cache/metaaugment)")
    return Path(value)


def place_glyph(bitmap: np.ndarray, box: int = GLYPH_BOX, size: int = IMAGE_SIZE,
                min_ink: int = MIN_INK_PIXELS) -> np.ndarray | None:
    """Crop a rendered glyph to its ink, shrink it to fit a box x box square if needed, and
    center it in a size x size uint8 square; None when it has fewer than `min_ink` inked
    pixels. bitmap: (H, W) uint8."""
    ink = bitmap >= 64
    if ink.sum() < min_ink:
        return None
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    glyph = bitmap[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    if max(glyph.shape) > box:
        from PIL import Image

        scale = box / max(glyph.shape)
        fitted = (max(1, round(glyph.shape[1] * scale)), max(1, round(glyph.shape[0] * scale)))
        glyph = np.asarray(Image.fromarray(glyph).resize(fitted, Image.BILINEAR))
    canvas = np.zeros((size, size), np.uint8)
    top, left = (size - glyph.shape[0]) // 2, (size - glyph.shape[1]) // 2
    canvas[top:top + glyph.shape[0], left:left + glyph.shape[1]] = glyph
    return canvas


def render(font: object, codepoint: int) -> np.ndarray | None:
    """One code point in one matplotlib FT2Font, placed by `place_glyph` (None: no ink)."""
    font.clear()
    font.set_size(RENDER_PIXELS, 72)  # 72 dpi: the size is in pixels
    font.set_text(chr(codepoint), 0.0)
    font.draw_glyphs_to_bitmap(antialiased=True)
    return place_glyph(np.asarray(font.get_image()))


def _wanted(codepoint: int) -> bool:
    char = chr(codepoint)
    return unicodedata.category(char)[0] in KEPT_CATEGORIES and not char.isspace()


def render_all(fonts: list[Path]) -> dict[int, list[np.ndarray]]:
    """code point -> its 28x28 renders, for every code point that MIN_FONTS fonts draw with ink."""
    from matplotlib.ft2font import FT2Font

    loaded = [FT2Font(str(path)) for path in fonts]
    coverage: dict[int, list[int]] = {}
    for index, font in enumerate(loaded):
        for codepoint in font.get_charmap():
            coverage.setdefault(codepoint, []).append(index)
    renders: dict[int, list[np.ndarray]] = {}
    for codepoint in sorted(coverage):
        if len(coverage[codepoint]) < MIN_FONTS or not _wanted(codepoint):
            continue
        images = [img for i in coverage[codepoint] if (img := render(loaded[i], codepoint)) is not None]
        if len(images) >= MIN_FONTS:
            renders[codepoint] = images
    return renders


def merge_lookalikes(renders: dict[int, list[np.ndarray]]) -> list[int]:
    """Code points kept after dropping each one whose mean render is nearly identical
    (cosine similarity > DUPLICATE_SIMILARITY) to that of an earlier kept code point."""
    codepoints = sorted(renders)
    means = torch.stack([torch.from_numpy(np.mean(renders[c], axis=0)).flatten() for c in codepoints]).float()
    means = F.normalize(means, dim=1)
    similar = (means @ means.T) > DUPLICATE_SIMILARITY
    kept: list[int] = []
    dropped = torch.zeros(len(codepoints), dtype=torch.bool)
    for i, codepoint in enumerate(codepoints):
        if dropped[i]:
            continue
        kept.append(codepoint)
        dropped |= similar[i]
    return kept


def jitter(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random small affine per image, rotation +-10 deg, scale 0.9-1.1, shift +-2 px.
    images: (N, 1, H, W) uint8 -> (N, 1, H, W) uint8."""
    n = images.shape[0]
    angle = (torch.rand(n, generator=generator) * 2 - 1) * torch.pi / 18
    scale = 0.9 + 0.2 * torch.rand(n, generator=generator)
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * (2 * 2 / IMAGE_SIZE)  # 2 px in [-1, 1] units
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8)


def build_glyphs(seed: int = 0) -> dict[str, object]:
    """Render the whole benchmark: images (N, 1, 28, 28) uint8, labels (N,), the code point
    of each class, and each class's split ('train' / 'val' / 'test')."""
    renders = render_all(font_files())
    codepoints = merge_lookalikes(renders)
    generator = torch.Generator().manual_seed(seed)
    base, labels = [], []
    for label, codepoint in enumerate(codepoints):
        variants = renders[codepoint]
        base += [variants[i % len(variants)] for i in range(INSTANCES)]
        labels += [label] * INSTANCES
    images = jitter(torch.from_numpy(np.stack(base)).unsqueeze(1), generator)
    order = torch.randperm(len(codepoints), generator=generator).tolist()
    n_train = round(SPLIT_FRACTIONS[0] * len(order))
    n_val = round(SPLIT_FRACTIONS[1] * len(order))
    split_of = {}
    for rank, label in enumerate(order):
        split_of[label] = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
    return {"images": images, "labels": torch.tensor(labels), "codepoints": codepoints,
            "splits": [split_of[i] for i in range(len(codepoints))]}


def _cache_key(fonts: list[Path]) -> str:
    return f"glyphs-v{CACHE_VERSION}-{files_key(fonts)}.pt"


def load_glyphs(data_root: Path | None = None) -> FewShotData:
    """The glyphs benchmark, rendered on first use and cached (data_root is not used)."""
    path = cache_folder() / _cache_key(font_files())
    data = load_cache(path)
    if data is None:
        from rich.console import Console

        message = "rendering the glyphs benchmark from matplotlib's fonts (once; cached afterwards)"
        with Console(stderr=True).status(message):
            data = build_glyphs()
        save_torch(path, data)
    images, labels = data["images"], data["labels"]
    names = [f"U+{c:04X} {chr(c)}" for c in data["codepoints"]]

    def split(which: str) -> FewShotSplit:
        classes = [i for i, s in enumerate(data["splits"]) if s == which]
        mask = torch.isin(labels, torch.tensor(classes))
        return FewShotSplit(images[mask], labels[mask], class_names=names)

    train = split("train")
    mean = float(train.images.float().mean() / 255)
    std = float(train.images.float().std() / 255)
    spec = TaskSpec(num_classes=None, input_shape=(1, IMAGE_SIZE, IMAGE_SIZE), mean=(mean,), std=(std,))
    return FewShotData(train, split("val"), split("test"), spec)


@BENCHMARKS.register("glyphs")
def glyphs() -> Benchmark:
    """Few-shot glyph classification rendered from matplotlib's fonts (2,537 classes, 28x28), embedded; MAML."""
    return Benchmark(name="glyphs", load=with_fewshot_options(load_glyphs, "glyphs"),
                     kind="few-shot", default_model="conv4",
                     default_model_options={"hidden_size": 32}, default_epochs=10,
                     default_batch_size=8, default_learner="maml",
                     default_learner_options={"inner_lr": 0.4, "inner_steps": 1, "eval_inner_steps": 3},
                     default_ways=5, default_shots=1, default_query_shots=5, default_steps_per_epoch=50,
                     options=FewShotOptions)
