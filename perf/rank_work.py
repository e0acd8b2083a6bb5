"""Each rank's share of the data work, and what it buys on a decode-bound streamed run.

    python perf/rank_work.py                    # every part, 2 processes (gloo) against 1
    python perf/rank_work.py --part counts      # images decoded / augmented / evaluated per rank and step
    python perf/rank_work.py --part epoch --images 384 --side 1024 --batch-size 64 --repeats 3

`counts`: every family (the baselines, MetaAugment, RL-Mixup, MAML with a task policy, and a
streamed benchmark) trains on 1 process and on `--nproc` gloo processes; each rank counts
the images (or tasks) it decodes, augments and evaluates, per training step. A rank's count
must be the one-process count divided by the ranks (`count_work` says what is counted).

`imagenet`: the training pipeline's CPU time per ImageNet-sized JPEG, projected to an
ImageNet epoch on 8 ranks before (every rank decoded everything) and now.

`epoch`: one training epoch (with its validation pass) of `image-classification-folder` on a
tree of `--images` PNGs of `--side` x `--side` noise (decoding them dominates: a PNG has no
reduced-scale decode), 32 px crops, a small CNN, global batch `--batch-size` (32 rows per
rank on 2: a per-GPU batch of ImageNet training; at 8 rows per rank the per-step collectives
of gloo on CPU, about 0.4 ms each and 15 per step with synchronized BatchNorm, stop being
small beside the decoding), `--workers 0`, timed inside each process on 1 and on `--nproc`
processes (one torch thread each), `--repeats` times interleaved: wall time of the epoch
(the slowest rank's), CPU time of all processes together, the decoding CPU time of the
busiest rank, and the medians' ratios.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

FAMILIES = {
    "none": dict(benchmark="digits", policy="none"),
    "randaugment": dict(benchmark="digits", policy="randaugment"),
    "mixup": dict(benchmark="digits", policy="mixup"),
    "metaaugment": dict(benchmark="digits", policy="metaaugment"),
    "rl-mixup": dict(benchmark="digits", policy="rl-mixup"),
    "maml + intershuffle": dict(benchmark="glyphs", policy="intershuffle", batch_size=4, steps_per_epoch=4,
                                val_tasks=8, test_tasks=8),
    "streamed (randaugment)": dict(benchmark="image-classification-folder", policy="randaugment", image_size=32,
                                   model="small-cnn", model_options={"width": 8}, batch_size=16),
}


@contextlib.contextmanager
def count_work() -> Iterator[Counter]:
    """Count, in this process, while the block runs: `decoded`, images loaded for any split
    (in-memory rows gathered, or files decoded in this process: use `--workers 0`);
    `augmented`, rows (or few-shot tasks) handed to the policy for training; `evaluated`,
    samples (or tasks) scored in evaluations; `tasks built`, few-shot episodes sampled."""
    from metaaugment.data.episodes import EpisodeSampler
    from metaaugment.data.regression import RegressionSampler
    from metaaugment.data.splits import ImageSplit
    from metaaugment.data.streaming import DecodedImages
    from metaaugment.learners import episodic, supervised

    counts: Counter = Counter()
    originals: list[tuple[Any, str, Any]] = []

    def wrap(owner: Any, name: str, make: Any) -> None:
        original = getattr(owner, name)
        originals.append((owner, name, original))
        setattr(owner, name, make(original))

    def loaded(original):
        def batch(self, indices, *args, **kwargs):
            counts["decoded"] += len(indices)
            return original(self, indices, *args, **kwargs)
        return batch

    def decoded(original):
        def getitem(self, key):
            counts["decoded"] += 1
            return original(self, key)
        return getitem

    def built(original):
        def sample(self, *args, **kwargs):
            counts["tasks built"] += 1
            return original(self, *args, **kwargs)
        return sample

    def augmented(original):
        def step(model, optimizer, batch, policy, ctx):
            counts["augmented"] += len(batch)
            return original(model, optimizer, batch, policy, ctx)
        return step

    def meta_step(original):
        def train_step(self, model, batch, policy, ctx):
            counts["augmented"] += len(batch)
            return original(self, model, batch, policy, ctx)
        return train_step

    def scored(original, size=len):
        def evaluate(self, model, batches, *args, **kwargs):
            def counted():
                for item in batches:
                    counts["evaluated"] += size(item)
                    yield item
            return original(self, model, counted(), *args, **kwargs)
        return evaluate

    wrap(ImageSplit, "batch", loaded)
    wrap(DecodedImages, "__getitem__", decoded)
    wrap(EpisodeSampler, "sample", built)
    wrap(RegressionSampler, "sample", built)
    wrap(supervised, "supervised_step", augmented)
    wrap(episodic.EpisodicLearner, "train_step", meta_step)
    wrap(supervised.SupervisedLearner, "evaluate", scored)
    wrap(episodic.EpisodicLearner, "evaluate", lambda original: scored(original, size=lambda episode: 1))
    try:
        yield counts
    finally:
        for owner, name, original in reversed(originals):
            setattr(owner, name, original)


def classification_tree(root: Path, images: int, side: int, classes: int = 4) -> Path:
    """train/ and test/ of `images` and images // 8 PNGs of side x side noise in `classes` class
    folders: PNG decoding at full size is the cost of every step."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", images), ("test", max(classes, images // 8))):
        for index in range(count):
            folder = root / split / f"class{index % classes}"
            folder.mkdir(parents=True, exist_ok=True)
            array = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
            array[..., index % 3] //= 2  # the class is faintly in the colours
            Image.fromarray(array).save(folder / f"{index}.png", compress_level=1)
    return root


# Run by every rank (and by the one process): argv = part, settings JSON, data root, output JSON.
RANK_BODY = '''
import json, os, sys, time
sys.path.insert(0, os.environ["RANK_WORK_DIR"])
from pathlib import Path
from rank_work import count_work
from metaaugment.run.config import RunConfig
from metaaugment.run.folder import RunDirectory
from metaaugment.run.loop import Trainer, train
import torch
torch.set_num_threads(1)
part, settings, data_root, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
rank = int(os.environ.get("RANK", "0"))
report = {}
if part == "counts":
    for name, family in settings.items():
        config = RunConfig(**{"device": "cpu", "epochs": 1, "batch_size": 128, "data_root": data_root, **family})
        with count_work() as counts:
            results = train(config, out.parent / "runs" / name, show_progress=False)
        report[name] = {"steps": results["metrics"]["steps"], **counts}
else:  # one epoch's steps and its validation pass, timed (no files written)
    from metaaugment.data.streaming import DecodedImages
    config = RunConfig(**{"device": "cpu", "epochs": 1, "data_root": data_root, **settings}).resolve()
    trainer = Trainer(config, RunDirectory(out.parent / f"run{rank}"), show_progress=False)
    decoding = {"cpu": 0.0, "images": 0}
    decode = DecodedImages.__getitem__
    def timed_decode(self, key):
        start = time.process_time()
        try:
            return decode(self, key)
        finally:
            decoding["cpu"] += time.process_time() - start
            decoding["images"] += 1
    DecodedImages.__getitem__ = timed_decode
    wall, cpu = time.perf_counter(), time.process_time()
    for inputs in trainer.strategy.epoch_inputs(0, 0):
        trainer._step(inputs)
        trainer.state.step += 1
    trainer.strategy.evaluate("val")
    report = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu, "decode cpu": decoding["cpu"],
              "decoded": decoding["images"]}
(out.parent / f"{out.stem}-rank{rank}.json").write_text(json.dumps(report))
from metaaugment.parallel.process_group import leave
leave()
'''


def run_everywhere(part: str, settings: dict, data_root: Path, folder: Path, nproc: int) -> list[dict]:
    """RANK_BODY on one process, or on `nproc` gloo processes (torchrun); each rank's report."""
    folder.mkdir(parents=True, exist_ok=True)
    body = folder / "body.py"
    body.write_text(RANK_BODY)
    out = folder / "report.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RANK_WORK_DIR": str(Path(__file__).parent)}
    launcher = [] if nproc == 1 else ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    subprocess.run([sys.executable, *launcher, str(body), part, json.dumps(settings), str(data_root), str(out)],
                   check=True, env=env)
    return [json.loads((folder / f"report-rank{rank}.json").read_text()) for rank in range(nproc)]


def counts_part(args: argparse.Namespace, root: Path) -> None:
    data = classification_tree(root / "data", 160, 48)
    one = run_everywhere("counts", FAMILIES, data, root / "one", 1)[0]
    ranks = run_everywhere("counts", FAMILIES, data, root / "many", args.nproc)
    print(f"work per training step: one process, and each of {args.nproc} ranks (gloo), one epoch")
    print(f"{'family':24} {'what':12} {'1 process':>10} " + " ".join(f"{'rank ' + str(r):>8}"
                                                                   for r in range(args.nproc)))
    for name in FAMILIES:
        for what in ("decoded", "augmented", "evaluated", "tasks built"):
            if not one[name].get(what):
                continue
            steps = one[name]["steps"]
            row = [one[name][what] / steps] + [rank[name].get(what, 0) / steps for rank in ranks]
            print(f"{name:24} {what:12} {row[0]:>10.1f} " + " ".join(f"{value:>8.1f}" for value in row[1:]))


def epoch_part(args: argparse.Namespace, root: Path) -> None:
    data = classification_tree(root / "epoch-data", args.images, args.side)
    settings = dict(benchmark="image-classification-folder", image_size=32, model="small-cnn",
                    model_options={"width": 8}, batch_size=args.batch_size, workers=0, policy="none")
    measured: dict[int, list[dict]] = {1: [], args.nproc: []}
    for repeat in range(args.repeats):  # interleaved, so a slow spell of the machine hits both
        for nproc in measured:
            reports = run_everywhere("epoch", settings, data, root / f"epoch-{nproc}-{repeat}", nproc)
            measured[nproc].append({"wall": max(r["wall"] for r in reports), "cpu": sum(r["cpu"] for r in reports),
                                    "decode cpu": max(r["decode cpu"] for r in reports),
                                    "decoded": max(r["decoded"] for r in reports)})
    median = {nproc: {key: statistics.median(run[key] for run in runs) for key in runs[0]}
              for nproc, runs in measured.items()}
    one, many = median[1], median[args.nproc]
    print(f"decode-bound epoch: {args.images} PNGs of {args.side}x{args.side}, 32 px crops, small CNN, "
          f"global batch {args.batch_size}, workers 0; median of {args.repeats}")
    print(f"  {'':13} {'wall':>8} {'cpu (all)':>10} {'decoded (most by a rank)':>25} {'its decode cpu':>15}")
    for label, row in (("1 process", one), (f"{args.nproc} processes", many)):
        print(f"  {label:13} {row['wall']:7.2f}s {row['cpu']:9.2f}s {row['decoded']:>25.0f} {row['decode cpu']:14.2f}s")
    print(f"  decode: {1000 * one['decode cpu'] / one['decoded']:.1f} ms cpu per image")
    repeats = ", ".join(f"{a['wall'] / b['wall']:.2f}x/{b['cpu'] / a['cpu']:.2f}x"
                        for a, b in zip(measured[1], measured[args.nproc]))
    print(f"  speed-up {one['wall'] / many['wall']:.2f}x wall (goal >= 1.6x), cpu ratio "
          f"{many['cpu'] / one['cpu']:.2f}x (goal <= 1.3x); each repeat (wall/cpu): {repeats}")


IMAGENET_TRAIN_IMAGES = 1_281_167


def imagenet_part(args: argparse.Namespace, root: Path) -> None:
    """The measured per-image cost of the streamed training pipeline (decode, random resized
    crop to 224, flip: `train_crop`, one thread) on ImageNet-sized JPEGs, projected to one
    ImageNet epoch on 8 ranks: before (every rank decoded the whole global batch) and now."""
    import time

    import numpy as np
    from PIL import Image

    from metaaugment.data.streaming import draw_seed, train_crop

    rng = np.random.default_rng(0)
    files = []
    for index in range(args.photos):  # 500 x 375, ImageNet's most common size, photo-like texture
        coarse = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((500, 375), Image.BICUBIC)
        grain = rng.normal(0, 12, (375, 500, 3))
        image = Image.fromarray(np.clip(np.asarray(image) + grain, 0, 255).astype(np.uint8))
        files.append(root / f"photo{index}.JPEG")
        image.save(files[-1], quality=90)
    size = sum(f.stat().st_size for f in files) / len(files) / 1024
    for file in files[:8]:  # warm the decoder and the page cache
        train_crop(str(file), 224, 0)
    start = time.process_time()
    for repeat in range(3):
        for index, file in enumerate(files):
            train_crop(str(file), 224, draw_seed(0, repeat, index))
    per_image = (time.process_time() - start) / (3 * len(files))
    hours = IMAGENET_TRAIN_IMAGES * per_image / 3600
    print(f"streamed training pipeline on {len(files)} JPEGs of 500x375 ({size:.0f} KiB each): "
          f"{1000 * per_image:.2f} ms cpu per image (decode, random resized crop to 224, flip)")
    print(f"ImageNet epoch ({IMAGENET_TRAIN_IMAGES:,} images) on 8 ranks, data pipeline CPU time:")
    print(f"  before (every rank decodes the global batch): {8 * hours:6.1f} core-hours, each rank's share "
          f"{hours:.2f} core-hours ({IMAGENET_TRAIN_IMAGES:,} images per rank)")
    print(f"  now (each rank its rows):                      {hours:6.1f} core-hours, each rank's share "
          f"{hours / 8:.2f} core-hours ({IMAGENET_TRAIN_IMAGES // 8:,} images per rank)")
    print(f"  with 8 decoding workers per rank, the epoch's data-bound floor: before {60 * hours / 8:.0f} min, "
          f"now {60 * hours / 64:.1f} min")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("counts", "epoch", "imagenet", "all"), default="all")
    parser.add_argument("--photos", type=int, default=100, help="imagenet: JPEGs timed")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--images", type=int, default=384)
    parser.add_argument("--side", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=64, help="epoch: the global batch")
    parser.add_argument("--repeats", type=int, default=3, help="epoch: timed runs of each, interleaved")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        for name, part in (("counts", counts_part), ("epoch", epoch_part), ("imagenet", imagenet_part)):
            if args.part in (name, "all"):
                part(args, Path(folder))


if __name__ == "__main__":
    main()
