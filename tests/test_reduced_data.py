"""The literature's reduced-data regimes (`--benchmark-set train_per_class=N`,
`meta_train_classes=N`): balanced, fixed by their own seed (not the run's), the same images for
every policy, recorded in config.json, and refused in one line when they ask for too much."""
import json

import pytest
import torch
from helpers import write_cifar_fixture, write_omniglot_fixture

from metaaugment.data.subsets import TooFewSamples, balanced_file_subset, balanced_subset, capped_classes
from metaaugment.infra.errors import UserError
from metaaugment.registry import BENCHMARKS
from metaaugment.tasks import create_benchmark


def test_a_balanced_subset_holds_n_of_each_class_fixed_by_its_seed():
    labels = torch.tensor([0] * 7 + [1] * 5 + [2] * 9)[torch.randperm(21, generator=torch.Generator().manual_seed(3))]
    chosen = balanced_subset(labels, 4, seed=11)
    assert torch.bincount(labels[chosen]).tolist() == [4, 4, 4] and len(set(chosen.tolist())) == 12
    assert torch.equal(chosen, balanced_subset(labels, 4, seed=11))  # the same images every time
    assert not torch.equal(chosen, balanced_subset(labels, 4, seed=12))
    torch.manual_seed(99)  # the global (run) seed plays no part
    assert torch.equal(chosen, balanced_subset(labels, 4, seed=11))
    with pytest.raises(TooFewSamples) as refused:
        balanced_subset(labels, 6)
    assert (refused.value.label, refused.value.count) == (1, 5)
    # files per class: the same choice as the flattened labels'
    files = [[f"a{i}" for i in range(7)], [f"b{i}" for i in range(5)]]
    flat = torch.tensor([0] * 7 + [1] * 5)
    picked = balanced_file_subset(files, 3, seed=5)
    expected = [([*files[0], *files[1]])[i] for i in balanced_subset(flat, 3, seed=5).tolist()]
    assert [len(p) for p in picked] == [3, 3] and picked[0] + picked[1] == expected
    assert capped_classes(list(range(10, 30)), 5, seed=2) == capped_classes(list(range(10, 30)), 5, seed=2)
    assert len(set(capped_classes(list(range(10, 30)), 5, seed=2))) == 5


def test_reduced_cifar_trains_on_n_per_class_of_what_validation_leaves(tmp_path):
    write_cifar_fixture(tmp_path, per_file=60)  # 300 training images, ~30 a class
    bench = create_benchmark("cifar10")
    full = bench.load(tmp_path, val_size=50)
    options = BENCHMARKS.create_options("cifar10", bench.options, {"train_per_class": 8})
    reduced = bench.load(tmp_path, val_size=50, options=options)
    assert torch.bincount(reduced.train.labels, minlength=10).tolist() == [8] * 10
    assert torch.equal(reduced.val.images, full.val.images)  # validation is held out first, unchanged
    rows = {tuple(image.flatten().tolist()) for image in full.train.images}
    assert all(tuple(image.flatten().tolist()) in rows for image in reduced.train.images)  # never a val image
    again = bench.load(tmp_path, val_size=50, options=options)
    assert torch.equal(again.train.images, reduced.train.images)
    assert reduced.train.train_transform.padding == 4  # the crop and flip still apply
    with pytest.raises(UserError, match="train_per_class=100 asks for more images than class"):
        bench.load(tmp_path, val_size=50, options=BENCHMARKS.create_options("cifar10", bench.options,
                                                                             {"train_per_class": 100}))


def test_a_reduced_folder_keeps_n_files_of_each_class(tmp_path):
    from test_streaming import write_images

    for label, name in enumerate(("cat", "dog")):
        write_images(tmp_path / "train" / name, 12, label, seed=label, suffix=".png")
        write_images(tmp_path / "test" / name, 2, label, seed=label + 5, suffix=".png")
    bench = create_benchmark("image-classification-folder")
    options = BENCHMARKS.create_options(bench.name, bench.options, {"train_per_class": 4, "crop": "pad"})
    data = bench.load(tmp_path, image_size=16, options=options)
    assert torch.bincount(data.train.labels).tolist() == [4, 4] and len(data.val) == 4  # held out first
    assert not set(data.train.files) & set(data.val.files)
    with pytest.raises(UserError, match="class 'cat' has for training"):
        bench.load(tmp_path, image_size=16, options=BENCHMARKS.create_options(bench.name, bench.options,
                                                                               {"train_per_class": 20}))


def test_capped_meta_training_draws_tasks_from_the_kept_classes_only(tmp_path, monkeypatch):
    monkeypatch.setenv("METAAUG_CACHE", str(tmp_path / "cache"))
    write_omniglot_fixture(tmp_path)
    bench = create_benchmark("omniglot")
    full = bench.load(tmp_path)
    capped = bench.load(tmp_path, options=BENCHMARKS.create_options("omniglot", bench.options,
                                                                    {"meta_train_classes": 6}))
    kept = set(capped.train.classes)
    assert len(kept) == 6 and kept < set(full.train.classes)
    assert capped.train.samples_per_class() == 20
    assert torch.equal(capped.test.labels, full.test.labels) and torch.equal(capped.val.labels, full.val.labels)
    episodes = capped.sampler("train", ways=5, shots=1, query_shots=1)
    for _ in range(10):
        episode = episodes.sample()
        indices = torch.cat([episode.info["support_indices"], episode.info["query_indices"]])
        assert set(capped.train.labels[indices].tolist()) <= kept
    with pytest.raises(UserError, match="meta_train_classes=500 is more than the"):
        bench.load(tmp_path, options=BENCHMARKS.create_options("omniglot", bench.options,
                                                               {"meta_train_classes": 500}))


def test_a_reduced_run_records_its_regime_and_refuses_one_out_of_range(tmp_path, capsys, monkeypatch):
    from test_streaming import metaaug

    monkeypatch.setenv("METAAUG_CACHE", str(tmp_path / "cache"))
    write_cifar_fixture(tmp_path / "data", per_file=40)
    common = ["run", "cifar10", "--data-root", str(tmp_path / "data"), "--model", "small-cnn", "--epochs", "1",
              "--batch-size", "16"]
    code, err = metaaug(capsys, *common, "--benchmark-set", "train_per_class=5", "--out", str(tmp_path / "run"))
    assert code == 0, err
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["benchmark_options"] == {"train_per_class": 5}
    code, err = metaaug(capsys, *common, "--benchmark-set", "train_per_class=-3", "--out", str(tmp_path / "bad"))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "train_per_class must be an integer from 0 (all)" in err and not (tmp_path / "bad").exists()
