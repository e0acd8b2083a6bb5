"""Few-shot loaders read tiny fixtures in the exact on-disk formats; missing data is one clear line."""

import numpy as np
import pytest
import torch
from helpers import write_image_folder_fixture, write_mini_imagenet_fixture, write_omniglot_fixture

from metaaugment.infra.errors import UserError
from metaaugment.tasks import create_benchmark


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("METAAUG_CACHE", str(tmp_path / "cache"))


def test_mini_imagenet_loader_reads_the_pickles_as_uint8(tmp_path):
    written = write_mini_imagenet_fixture(tmp_path)
    data = create_benchmark("mini-imagenet").load(tmp_path)
    assert data.train.images.dtype == torch.uint8 and data.train.images.shape == (48, 3, 84, 84)
    assert len(data.train.classes) == 6 and len(data.val.classes) == 3 and len(data.test.classes) == 3
    images, class_dict = written["train"]
    names = sorted(class_dict)
    for label, name in enumerate(names):  # every image keeps its class, pixels intact (HWC -> CHW)
        for index in class_dict[name]:
            assert data.train.labels[index] == label
            assert torch.equal(data.train.images[index], torch.from_numpy(images[index]).permute(2, 0, 1))
    assert data.spec.input_shape == (3, 84, 84) and data.spec.num_classes is None  # the tasks give the ways


def test_mini_imagenet_missing_file_names_it(tmp_path):
    write_mini_imagenet_fixture(tmp_path)
    (tmp_path / "mini-imagenet-cache-test.pkl").unlink()
    with pytest.raises(UserError, match="mini-imagenet-cache-test.pkl"):
        create_benchmark("mini-imagenet").load(tmp_path)


def test_omniglot_loader_reads_folders_inverts_and_splits_classes(tmp_path):
    write_omniglot_fixture(tmp_path)
    data = create_benchmark("omniglot").load(tmp_path)
    sets = [set(s.classes) for s in (data.train, data.val, data.test)]
    assert sum(len(s) for s in sets) == 40 and not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert data.train.images.shape[1:] == (1, 28, 28) and data.train.images.dtype == torch.uint8
    assert data.train.samples_per_class() == 20
    images = data.train.images.float()
    assert images.mean() < 60 and images.max() > 200  # white ink on black after inversion
    again = create_benchmark("omniglot").load(tmp_path)  # second load comes from the cache
    assert torch.equal(again.train.images, data.train.images)


def test_omniglot_missing_folder_says_what_to_put_where(tmp_path):
    with pytest.raises(UserError, match="images_background"):
        create_benchmark("omniglot").load(tmp_path)


def test_image_folder_resizes_any_jpeg_to_the_requested_size(tmp_path):
    write_image_folder_fixture(tmp_path)
    from metaaugment.tasks.image_folder import load_image_folder

    data = load_image_folder(tmp_path, image_size=32)
    assert data.train.images.shape == (20, 3, 32, 32)
    assert len(data.val.classes) == 3 and data.test.class_names == ["test_class_0", "test_class_1", "test_class_2"]
    assert data.spec.input_shape == (3, 32, 32)


def test_a_supervised_folder_given_to_the_few_shot_benchmark_names_the_shared_classes(tmp_path):
    from metaaugment.tasks.image_folder import load_image_folder

    write_image_folder_fixture(tmp_path)
    (tmp_path / "test" / "test_class_2").rename(tmp_path / "test" / "train_class_3")
    with pytest.raises(UserError, match=r"train/ and test/ share 1 class\(es\) \(train_class_3\).*"
                                        r"use image-classification-folder"):
        load_image_folder(tmp_path, image_size=16)


def test_image_folder_missing_split_is_named(tmp_path):
    write_image_folder_fixture(tmp_path)
    import shutil

    shutil.rmtree(tmp_path / "val")
    from metaaugment.tasks.image_folder import load_image_folder

    with pytest.raises(UserError, match="val/"):
        load_image_folder(tmp_path)


@pytest.mark.parametrize("benchmark", ["mini-imagenet", "omniglot", "image-folder"])
def test_cli_missing_data_is_one_line_and_exit_code_2(tmp_path, capsys, benchmark):
    from metaaugment.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(["run", benchmark, "--data-root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert len(err.strip().splitlines()) == 1 and "not found" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_glyph_rendering_finds_ink_and_centers_it():
    from matplotlib.ft2font import FT2Font

    from metaaugment.tasks.glyphs import IMAGE_SIZE, font_files, place_glyph, render

    font = FT2Font(str(next(p for p in font_files() if p.name == "DejaVuSans.ttf")))
    image = render(font, ord("A"))
    assert image.shape == (IMAGE_SIZE, IMAGE_SIZE) and image.max() > 200
    rows = np.flatnonzero((image >= 64).any(1))
    assert abs((rows[0] + rows[-1]) / 2 - (IMAGE_SIZE - 1) / 2) <= 1  # centered
    assert place_glyph(np.zeros((30, 30), np.uint8)) is None  # no ink, no class


@pytest.mark.slow
def test_glyphs_benchmark_has_over_a_thousand_disjoint_classes_and_is_cached(tmp_path):
    from metaaugment.tasks.glyphs import INSTANCES, MIN_FONTS, load_glyphs

    data = load_glyphs()
    splits = (data.train, data.val, data.test)
    classes = [set(s.classes) for s in splits]
    assert sum(len(c) for c in classes) >= 1000
    assert not (classes[0] & classes[1] or classes[0] & classes[2] or classes[1] & classes[2])
    assert all(s.samples_per_class() == INSTANCES for s in splits) and INSTANCES >= MIN_FONTS
    assert data.train.images.dtype == torch.uint8 and data.train.images.shape[1:] == (1, 28, 28)
    # instances of a class differ (fonts and jitter), and loading again reads the cache
    first = data.train.images[data.train.labels == data.train.classes[0]]
    assert len({bytes(img.numpy()) for img in first}) == INSTANCES
    assert len(list((tmp_path / "cache").glob("glyphs-*.pt"))) == 1
    assert torch.equal(load_glyphs().test.images, data.test.images)


@pytest.mark.parametrize("policy, learner", [("nme", "maml"), ("intershuffle", "protonet")])
def test_cli_runs_a_few_shot_classification_benchmark_end_to_end(tmp_path, capsys, policy, learner):
    from metaaugment.cli.main import main

    write_mini_imagenet_fixture(tmp_path)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "mini-imagenet", "--policy", policy, "--learner", learner, "--ways", "3", "--shots", "1",
              "--query-shots", "2", "--epochs", "2", "--steps-per-epoch", "2", "--batch-size", "2",
              "--val-tasks", "3", "--test-tasks", "7", "--model-set", "hidden_size=4", "--data-root", str(tmp_path),
              "--out", str(out), "--device", "cpu", "--quiet"])
    assert exit_info.value.code == 0
    import json

    results = json.loads((out / "results.json").read_text())
    m = results["metrics"]
    assert results["kind"] == "few-shot" and m["test_tasks"] == 7 and 0 <= m["test_accuracy"] <= 1
    assert ("final_train_pre_accuracy" in m) == (learner == "maml")  # ProtoNets has no pre-update prediction
    assert "meta-test accuracy" in capsys.readouterr().out


def test_omniglot_classification_splits_each_character_15_2_3(tmp_path):
    write_omniglot_fixture(tmp_path)
    data = create_benchmark("omniglot-classification").load(tmp_path)
    assert data.spec.num_classes == 40
    for split, count in ((data.train, 15), (data.val, 2), (data.test, 3)):
        assert torch.bincount(split.labels).tolist() == [count] * 40
