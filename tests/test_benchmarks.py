"""Benchmark loaders: embedded digits and CIFAR read from the official on-disk format."""
import numpy as np
import pytest
import torch
from helpers import write_cifar_fixture

from metaaugment.infra.errors import UserError
from metaaugment.tasks import create_benchmark, list_benchmarks


def test_digits_splits_are_disjoint_stratified_and_fixed():
    data = create_benchmark("digits").load(None)
    sizes = (len(data.train), len(data.val), len(data.test))
    assert sum(sizes) == 1797 and sizes[2] == 360
    rows = lambda s: {tuple(x.flatten().tolist()) + (int(y),) for x, y in zip(s.images, s.labels)}  # noqa: E731
    assert not rows(data.train) & rows(data.test) and not rows(data.val) & rows(data.test)
    counts = torch.bincount(data.test.labels, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: ~36 per class
    again = create_benchmark("digits").load(None)
    assert torch.equal(data.test.images, again.test.images)
    assert data.train.images.dtype == torch.uint8 and data.spec.input_shape == (1, 8, 8)
    assert data.train.images.max() == 255  # 0..16 rescaled to the full uint8 range


@pytest.mark.parametrize("hundred", [False, True])
def test_cifar_loader_reads_the_official_pickle_layout(tmp_path, hundred):
    written = write_cifar_fixture(tmp_path, hundred=hundred, per_file=20)
    data = create_benchmark("cifar100" if hundred else "cifar10").load(tmp_path)
    n_train = 20 if hundred else 100
    assert len(data.train) + len(data.val) == n_train and len(data.val) == n_train // 10
    assert data.spec.num_classes == (100 if hundred else 10) and data.spec.input_shape == (3, 32, 32)
    # Test split in file order: row layout is 1024 R, 1024 G, 1024 B values, row-major 32x32.
    raw, labels = written["test" if hundred else "test_batch"]
    image = data.test.images[5]
    assert image[0, 0, 0] == raw[5, 0] and image[1, 0, 0] == raw[5, 1024] and image[2, 31, 31] == raw[5, 3071]
    assert image[0, 1, 0] == raw[5, 32]
    assert data.test.labels.tolist() == labels
    # train + val together hold exactly the training files' images
    train_rows = {bytes(x.numpy().tobytes()) for s in (data.train, data.val) for x in s.images}
    names = ["train"] if hundred else [f"data_batch_{i}" for i in range(1, 6)]
    expected = {np.ascontiguousarray(r.reshape(3, 32, 32)).tobytes() for n in names for r in written[n][0]}
    assert train_rows == expected


def test_cifar_missing_data_names_the_folder_and_files(tmp_path):
    with pytest.raises(UserError) as error:
        create_benchmark("cifar10").load(tmp_path)
    message = str(error.value)
    assert "cifar-10-batches-py" in message and "data_batch_1" in message and str(tmp_path) in message
    with pytest.raises(UserError, match="cifar-100-python"):
        create_benchmark("cifar100").load(tmp_path)


def test_every_benchmark_has_a_summary_and_sane_defaults():
    for entry in list_benchmarks():
        bench = entry.factory()
        assert entry.summary and bench.name == entry.name
        assert bench.default_epochs > 0 and bench.default_batch_size > 0


def test_cifar_validation_size_is_configurable(tmp_path):
    """MetaAugment's paper holds out 1,000 CIFAR training images; --val-size sets it."""
    from helpers import write_cifar_fixture

    from metaaugment.infra.errors import UserError
    from metaaugment.tasks import create_benchmark

    write_cifar_fixture(tmp_path, per_file=40)  # 200 training images
    data = create_benchmark("cifar10").load(tmp_path, val_size=30)
    assert len(data.val) == 30 and len(data.train) == 170
    assert len(create_benchmark("cifar10").load(tmp_path).val) == 20  # default: 10% on small sets
    with pytest.raises(UserError, match="--val-size"):
        create_benchmark("cifar10").load(tmp_path, val_size=500)


def test_fonts_splits_have_disjoint_fonts_and_every_class(tmp_path, monkeypatch):
    from metaaugment.tasks.fonts import CHARACTERS, RENDERS, SPLIT_FONTS, font_split, load_fonts, text_fonts

    monkeypatch.setenv("METAAUG_CACHE", str(tmp_path / "cache"))
    fonts = text_fonts()
    assert len(fonts) == 22 and not any(p.stem in ("cmex10", "cmsy10", "LastResortHE-Regular") for p in fonts)
    split = font_split(fonts)
    names = {k: {p.name for p in v} for k, v in split.items()}
    assert not (names["train"] & names["val"]) and not (names["train"] & names["test"])
    assert not (names["val"] & names["test"])
    assert names["train"] | names["val"] | names["test"] == {p.name for p in fonts}
    assert (len(names["train"]), len(names["val"])) == SPLIT_FONTS
    data = load_fonts()
    for name, part in (("train", data.train), ("val", data.val), ("test", data.test)):
        counts = torch.bincount(part.labels, minlength=len(CHARACTERS))
        # every class in every split, once per font and render
        assert torch.equal(counts, torch.full((len(CHARACTERS),), len(split[name]) * RENDERS[name]))
        assert part.images.shape[1:] == (3, 32, 32) and part.images.dtype == torch.uint8
    assert font_split(fonts) == split  # fixed: the same split for every run
    again = load_fonts()  # from the cache, identical
    assert torch.equal(again.test.images, data.test.images)


def test_cifar_trains_on_padded_cropped_flipped_images_and_evaluates_on_the_images_as_they_are(tmp_path):
    """The papers' CIFAR baseline: zero-pad 4, random crop 32, flip; each image's draw a function
    of (pass, index) alone. Evaluation images are untouched; --benchmark-set padding=0
    flip=false turns it off."""
    import torch.nn.functional as F

    from metaaugment.data.batches import epoch_order, evaluation_batches, training_batches
    from metaaugment.data.train_crops import PadCropFlip

    write_cifar_fixture(tmp_path, per_file=40)
    bench = create_benchmark("cifar10")
    data = bench.load(tmp_path)
    originals = data.train.images.float() / 255
    order = epoch_order(len(data.train), 0, 1)
    seen = torch.cat([batch.inputs for batch in training_batches(data.train, 16, seed=0, epoch=1)])
    offsets, flips = PadCropFlip().draws(order[:len(seen)], draw=1)
    padded = F.pad(originals[order[:len(seen)]], (4, 4, 4, 4))
    for image, source, (top, left), flip in zip(seen, padded, offsets.tolist(), flips.tolist()):
        expected = source[:, top:top + 32, left:left + 32]  # the crop of the zero-padded image ...
        torch.testing.assert_close(image, expected.flip(-1) if flip else expected, rtol=0, atol=0)  # ... mirrored
    assert flips.any() and not flips.all() and (offsets != 4).any()  # both flips, and real shifts, occur
    moved = [i for i, (top, left) in enumerate(offsets.tolist()) if top == 0]
    assert moved and (seen[moved][:, :, :4, :] == 0).all()  # the padding shows as zero rows at the top
    tested = torch.cat([batch.inputs for batch in evaluation_batches(data.test, 16)])
    assert torch.equal(tested, data.test.images.float() / 255)
    plain = bench.load(tmp_path, options=PadCropFlip(padding=0, flip=False))
    unchanged = next(training_batches(plain.train, 16, seed=0, epoch=1)).inputs
    assert torch.equal(unchanged, originals[order[:16]])
