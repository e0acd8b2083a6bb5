"""Streamed benchmarks: tiny JPEG trees in the exact on-disk layouts, read by the real code."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_in_process

from metaaugment.data.streaming import FileSplit, eval_crop, train_crop
from metaaugment.infra.errors import UserError
from metaaugment.registry import create_benchmark
from metaaugment.run.config import RunConfig
from metaaugment.run.loop import train

CLASSES = ("n01440764", "n01443537", "n01484850")


def write_images(folder: Path, count: int, channel: int, seed: int, suffix: str = ".JPEG") -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        height, width = rng.integers(36, 60, 2)  # any size: the pipeline crops
        array = rng.integers(0, 60, (height, width, 3))
        array[..., channel] += 180  # the class is the dominant colour: learnable in a few steps
        Image.fromarray(array.clip(0, 255).astype(np.uint8)).save(folder / f"{folder.name}_{index}{suffix}")


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    for label, wnid in enumerate(CLASSES):
        write_images(root / "imagenet" / "train" / wnid, 16, label, seed=label)
        write_images(root / "imagenet" / "val" / wnid, 4, label, seed=10 + label)
    return root


def metaaug(capsys, *args: str) -> tuple[int, str]:
    """`metaaug ARGS --device cpu --quiet` in this process: exit code, stderr."""
    capsys.readouterr()
    code, _, err = run_in_process([*args, "--device", "cpu", "--quiet"], None, None, capsys)
    return code, err


def test_imagenet_holds_out_2_percent_of_each_training_class_and_tests_on_val(imagenet_root):
    data = create_benchmark("imagenet").load(imagenet_root, image_size=32)
    assert isinstance(data.train, FileSplit) and data.spec.num_classes == 3 and data.spec.input_shape == (3, 32, 32)
    assert len(data.val) == 3 and len(data.train) == 45 and len(data.test) == 12  # ceil(2% of 16) = 1 per class
    assert not set(data.train.files) & set(data.val.files)
    assert torch.equal(torch.bincount(data.val.labels), torch.ones(3, dtype=torch.int64))
    assert all(Path(f).parent.name == CLASSES[int(label)] for f, label in zip(data.test.files, data.test.labels))
    again = create_benchmark("imagenet").load(imagenet_root, image_size=32)
    assert again.val.files == data.val.files  # the same held-out images for every run
    batch = data.train.batch(torch.arange(4))
    assert batch.inputs.shape == (4, 3, 32, 32) and batch.inputs.dtype == torch.float32
    assert 0 <= float(batch.inputs.min()) and float(batch.inputs.max()) <= 1


def test_crops_are_a_function_of_the_seed_alone(tmp_path):
    from PIL import Image

    array = np.random.default_rng(0).integers(0, 256, (300, 400, 3)).astype(np.uint8)
    array[:, :200] //= 4  # a dark left half: a flip or another crop shows
    Image.fromarray(array).save(tmp_path / "photo.jpg", quality=95)
    path = str(tmp_path / "photo.jpg")
    torch.manual_seed(0)
    state = torch.get_rng_state()
    first = train_crop(path, 24, 123)
    assert torch.equal(torch.get_rng_state(), state), "the caller's random state is untouched"
    assert first.shape == (3, 24, 24) and first.dtype == torch.uint8 and torch.equal(first, train_crop(path, 24, 123))
    assert not all(torch.equal(first, train_crop(path, 24, seed)) for seed in range(124, 130))
    # evaluation: the centre 87.5% of the shorter side (the 224 of 256), resized; decoding at
    # a reduced JPEG scale stays within JPEG's own error of the full decode
    centre = eval_crop(path, 64).float()
    full = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).float()
    side = int(0.875 * 300)
    top, left = (300 - side) // 2, (400 - side) // 2
    expected = torch.nn.functional.interpolate(full[None, :, top:top + side, left:left + side], size=(64, 64),
                                               mode="bilinear", antialias=True)[0]
    assert (centre - expected).abs().mean() < 8  # 3.6 measured; another crop of this noise: about 60


def test_imagenet_trains_end_to_end_the_same_with_0_and_2_workers(imagenet_root, tmp_path):
    # MetaAugment draws ops, copies and its sampler from the training process's generators while
    # workers decode: equal results show the loader neither consumes nor reorders those draws.
    results = {}
    for workers in (0, 2):
        config = RunConfig(benchmark="imagenet", data_root=str(imagenet_root), image_size=16, model="small-cnn",
                           model_options={"width": 4}, policy="metaaugment", epochs=2, batch_size=8,
                           learner_options={"lr": 0.01}, seed=4, workers=workers, device="cpu")
        results[workers] = train(config, tmp_path / f"workers-{workers}", show_progress=False)
    assert results[0]["metrics"] == results[2]["metrics"]
    assert results[2]["metrics"]["steps"] == 10 and np.isfinite(results[2]["metrics"]["test_loss"])
    assert results[2]["config"]["policy_options"]["copies"] == 4  # the paper's ImageNet setting


def test_imagenet_runs_the_papers_model_by_default():
    config = RunConfig(benchmark="imagenet").resolve()
    assert config.model == "resnet50" and config.policy_options == {}
    assert RunConfig(benchmark="imagenet", policy="metaaugment").resolve().policy_options == {"copies": 4}


def test_image_classification_folder_uses_val_when_present_else_holds_out_10_percent(tmp_path):
    for split, count in (("train", 20), ("test", 3)):
        for label, name in enumerate(("cat", "dog")):
            write_images(tmp_path / split / name, count, label, seed=label, suffix=".png")
    bench = create_benchmark("image-classification-folder")
    data = bench.load(tmp_path, image_size=24)
    assert len(data.val) == 4 and len(data.train) == 36 and data.spec.num_classes == 2
    for label, name in enumerate(("cat", "dog")):
        write_images(tmp_path / "val" / name, 2, label, seed=5)
    data = bench.load(tmp_path, image_size=24)
    assert len(data.val) == 4 and len(data.train) == 40 and all("/val/" in f for f in data.val.files)
    write_images(tmp_path / "test" / "bird", 1, 2, seed=6)
    with pytest.raises(UserError, match="class folders that train/ does not: bird;.*use the benchmark image-folder"):
        bench.load(tmp_path, image_size=24)


def test_missing_or_unreadable_images_say_what_to_fix_in_one_line(imagenet_root, tmp_path, capsys):
    code, err = metaaug(capsys, "run", "imagenet", "--data-root", str(tmp_path), "--out", str(tmp_path / "run"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"{tmp_path.resolve()}/imagenet/train/<wnid>/*.JPEG" in " ".join(err.split())
    assert not (tmp_path / "run").exists()
    broken = tmp_path / "broken"
    for label, wnid in enumerate(CLASSES):
        write_images(broken / "imagenet" / "train" / wnid, 4, label, seed=label)
        write_images(broken / "imagenet" / "val" / wnid, 1, label, seed=label)
    bad = broken / "imagenet" / "train" / CLASSES[1] / "bad.JPEG"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    code, err = metaaug(capsys, "run", "imagenet", "--data-root", str(broken), "--image-size", "32", "--batch-size",
                        "4", "--model", "small-cnn", "--workers", "2", "--out", str(tmp_path / "run2"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"cannot read image {bad}" in " ".join(err.split())


def test_a_validation_stream_of_files_is_decoded_ahead_and_resumes_exactly(imagenet_root, monkeypatch):
    from metaaugment.data import batches
    from metaaugment.data.batches import BatchStream, epoch_order

    data = create_benchmark("imagenet").load(imagenet_root, image_size=16)
    split = FileSplit(data.test.files, data.test.labels, 16, train=False)  # 12 images: passes of 3 batches
    worker_sets = []
    decode = FileSplit.batches
    monkeypatch.setattr(FileSplit, "batches", lambda *a, **k: worker_sets.append(1) or decode(*a, **k))
    monkeypatch.setattr(batches, "FILE_BATCHES_AHEAD", 4)
    stream = BatchStream(split, 4, seed=2, workers=2)
    drawn = [stream.next() for _ in range(7)]  # three passes
    # a set of workers decodes across passes: here 4 batches a set, so 7 batches take 2 sets
    assert len(worker_sets) == 2
    for index, batch in enumerate(drawn):  # what this process decodes alone, batch by batch
        order = epoch_order(len(split), 2 + 7919, index // 3)
        expected = split.batch(order[(index % 3) * 4:(index % 3 + 1) * 4])
        assert torch.equal(batch.inputs, expected.inputs) and torch.equal(batch.targets, expected.targets)
    resumed = BatchStream(split, 4, seed=2, workers=2)
    resumed.load_state_dict(stream.state_dict())
    assert torch.equal(resumed.next().inputs, stream.next().inputs)


def test_flip_off_and_a_plain_resize_train_on_the_images_as_they_are(tmp_path):
    """image-classification-folder with --benchmark-set crop=none flip=false: every training
    image the policy sees is a whole file resized, never cropped or mirrored (the default
    Inception crop and flip would turn a character into another one)."""
    from PIL import Image
    from torchvision.transforms.v2.functional import pil_to_tensor

    from metaaugment import BatchPolicy
    from metaaugment.registry import POLICIES
    from metaaugment.run.loop import train

    rng = np.random.default_rng(0)
    expected = []
    for split, count in (("train", 6), ("test", 2)):
        for name in ("a", "b"):
            for index in range(count):
                # a left-to-right ramp with noise: a mirror image or a crop changes the pixels
                ramp = np.linspace(0, 200, 20)[None, :, None] + rng.integers(0, 55, (12, 20, 3))
                image = Image.fromarray(ramp.astype(np.uint8))
                (tmp_path / split / name).mkdir(parents=True, exist_ok=True)
                image.save(tmp_path / split / name / f"{index}.png")
                if split == "train":
                    expected.append(pil_to_tensor(image.resize((8, 8), Image.BILINEAR, box=(0, 0, 20, 12),
                                                                reducing_gap=None)).float() / 255)
    expected = torch.stack(expected)
    seen = []

    class Recorder(BatchPolicy):
        """Keep every training batch."""

        def augment(self, batch, ctx):
            seen.append(batch.inputs.detach().clone())
            return batch

    with POLICIES.scoped():
        POLICIES.register("recorder")(Recorder)
        config = RunConfig(benchmark="image-classification-folder", policy="recorder", data_root=str(tmp_path),
                           image_size=8, model="small-cnn", epochs=2, batch_size=5, device="cpu",
                           benchmark_options={"crop": "none", "flip": False})
        results = train(config, tmp_path / "run", show_progress=False)
    assert results["config"]["benchmark_options"] == {"crop": "none", "flip": False}  # recorded: a replay has it
    images = torch.cat(seen)
    assert len(images) == 2 * 10  # two epochs of the 10 training images (val holds out 2 of 12)
    distance = (images[:, None] - expected[None]).abs().flatten(2).amax(2)  # (seen, files)
    assert (distance.min(1).values < 1e-6).all()  # each one a whole file, as it is
    default = RunConfig(benchmark="image-classification-folder", policy="recorder", data_root=str(tmp_path),
                        image_size=8).resolve()
    assert default.benchmark_options == {}  # imagenet's crop and flip stay the default


def test_pad_crop_shifts_the_whole_image_over_zeros_and_evaluation_keeps_an_image_of_the_size(tmp_path):
    """crop=pad is CIFAR's: the photo resized whole, 4 zero pixels a side, a random 16 of 24 at
    an offset drawn from the seed; an evaluation image already 16 x 16 is used as it is, under
    pad and under the default centre crop alike."""
    from PIL import Image

    from metaaugment.data.streaming import Preprocessing

    photo = np.random.default_rng(0).integers(1, 256, (16, 16, 3)).astype(np.uint8)  # no zero pixel
    Image.fromarray(photo).save(tmp_path / "photo.png")
    path, image = str(tmp_path / "photo.png"), torch.from_numpy(photo).permute(2, 0, 1)
    pad = Preprocessing(crop="pad", flip=False)
    offsets = set()
    for seed in range(40):
        crop = train_crop(path, 16, seed, pad)
        top, left = pad.pad_offset(seed)
        offsets.add((top, left))
        rows, cols = slice(max(0, 4 - top), 16 - max(0, top - 4)), slice(max(0, 4 - left), 16 - max(0, left - 4))
        source = image[:, max(0, top - 4):16 + min(0, top - 4), max(0, left - 4):16 + min(0, left - 4)]
        assert torch.equal(crop[:, rows, cols], source)
        assert int((crop == 0).all(0).sum()) == 256 - source[0].numel()  # the rest is the zero padding
    assert {t for t, _ in offsets} == set(range(9)) and len(offsets) > 20  # 9 x 9 offsets, uniform
    for preprocessing in (pad, Preprocessing()):
        assert torch.equal(eval_crop(path, 16, preprocessing), image)
    Image.fromarray(photo).resize((20, 20)).save(tmp_path / "larger.png")  # another size: the centre crop
    larger = str(tmp_path / "larger.png")
    assert not torch.equal(eval_crop(larger, 16), eval_crop(larger, 16, pad))
    with pytest.raises(ValueError, match="crop must be random-resized, none or pad"):
        Preprocessing(crop="cifar")


def test_an_image_replaced_in_place_after_its_header_was_cached_is_checked_again(tmp_path):
    """The header check's cache is keyed by each file's size and time: a file overwritten in
    place (its folder's time unchanged) is read again, and a broken one stops the run."""
    import os

    from metaaugment.data.streaming import check_image_headers
    from metaaugment.infra.errors import UserError

    folder = tmp_path / "images"
    write_images(folder, 3, 0, seed=0)
    paths = sorted(str(p) for p in folder.iterdir())
    cache = tmp_path / "cache" / "headers-x.ok"
    cache.parent.mkdir()
    check_image_headers(paths, cache)
    assert len(list(cache.parent.iterdir())) == 1
    folder_time = os.stat(folder).st_mtime_ns
    with open(paths[0], "r+b") as handle:  # in place: the folder's time stays
        handle.write(b"\x00" * 64)
    os.utime(folder, ns=(folder_time, folder_time))
    with pytest.raises(UserError, match="cannot read image"):
        check_image_headers(paths, cache)
