"""Fault injection: bad command lines and bad data on disk each give one line and exit 2, with
no traceback and nothing left behind; crafted files execute nothing; the run folder belongs
to the run that made it (docs/reliability.md)."""
import hashlib
import os
import pickle
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    quick_config,
    write_cifar_fixture,
    write_image_folder_fixture,
    write_mini_imagenet_fixture,
)
from PIL import Image

from metaaugment import train
from metaaugment.cli.main import main
from metaaugment.errors import UserError
from metaaugment.run.folder import LOCK

MARKER = "pwned.txt"


class Payload:
    """Unpickling this writes the marker file: what a crafted file would do to run code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "code ran"))


DIGITS = ["run", "digits", "--epochs", "1", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished one-epoch digits run folder made by DIGITS, copied by the cases that damage it."""
    out = tmp_path_factory.mktemp("template") / "run"
    with pytest.raises(SystemExit) as exit_info:
        main([*DIGITS, "--out", str(out)])
    assert exit_info.value.code == 0
    return out


@pytest.fixture(scope="module")
def finished_glyphs_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("template-glyphs") / "run"
    train(quick_config(benchmark="glyphs", epochs=1, steps_per_epoch=2, batch_size=2, val_tasks=2, test_tasks=2),
          out, show_progress=False)
    return out


def snapshot(root: Path) -> dict[str, str]:
    """Every file under root (but the cache) with a digest of its bytes; the lock file holds the
    PID of its last holder, so only its presence counts."""
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and "cache" not in path.relative_to(root).parts:
            relative = str(path.relative_to(root))
            files[relative] = "lock" if path.name == LOCK else hashlib.sha256(path.read_bytes()).hexdigest()
    return files


# -- the table of bad inputs --------------------------------------------------------------------
# Each case: (name, setup(tmp) -> command-line arguments, text the one error line contains).
def run_copy(template: Path, tmp: Path) -> Path:
    out = tmp / "run"
    shutil.copytree(template, out)
    return out


def with_checkpoint(content: bytes | None, finished: bool = False):
    def setup(tmp, templates):
        out = run_copy(templates["digits"], tmp)
        if not finished:
            (out / "results.json").unlink()
        if content is not None:
            (out / "checkpoint.pt").write_bytes(content)
        return [*DIGITS, "--out", str(out), "--resume"]
    return setup


def truncated(path_name: str, finished: bool):
    def setup(tmp, templates):
        out = run_copy(templates["digits"], tmp)
        if not finished:
            (out / "results.json").unlink()
        text = (out / path_name).read_bytes()
        (out / path_name).write_bytes(text[: len(text) // 2])
        return [*DIGITS, "--out", str(out), "--resume"]
    return setup


def crafted_checkpoint(tmp, templates):
    out = run_copy(templates["digits"], tmp)
    (out / "results.json").unlink()
    torch.save({"format": "metaaugment-checkpoint/2", "training": Payload(tmp / MARKER)}, out / "checkpoint.pt")
    return [*DIGITS, "--out", str(out), "--resume"]


def crafted_policy_from(tmp, templates):
    source = run_copy(templates["digits"], tmp)
    torch.save({"format": "metaaugment-checkpoint/2", "model": Payload(tmp / MARKER)}, source / "checkpoint.pt")
    config = (source / "config.json").read_text().replace('"policy": "none"', '"policy": "metaaugment"')
    (source / "config.json").write_text(config)
    return ["run", "digits", "--policy", "metaaugment", "--epochs", "1", "--device", "cpu", "--policy-from",
            str(source), "--out", str(tmp / "new")]


def cifar_batch(change):
    """A CIFAR-10 fixture whose first training batch is rewritten by `change(entry)`."""
    def setup(tmp, templates):
        write_cifar_fixture(tmp / "data", per_file=20)
        path = tmp / "data" / "cifar-10-batches-py" / "data_batch_1"
        with open(path, "rb") as handle:
            entry = pickle.load(handle, encoding="bytes")
        replacement = change(entry, tmp)
        with open(path, "wb") as handle:
            if isinstance(replacement, bytes):
                handle.write(replacement)
            else:
                pickle.dump(replacement, handle, protocol=2)
        return ["run", "cifar10", "--data-root", str(tmp / "data"), "--model", "small-cnn", "--epochs", "1",
                "--batch-size", "16", "--device", "cpu"]
    return setup


def mini_imagenet(change):
    def setup(tmp, templates):
        (tmp / "data").mkdir()
        write_mini_imagenet_fixture(tmp / "data", size=16)
        path = tmp / "data" / "mini-imagenet-cache-train.pkl"
        with open(path, "rb") as handle:
            entry = pickle.load(handle)
        replacement = change(entry, tmp)
        with open(path, "wb") as handle:
            if isinstance(replacement, bytes):
                handle.write(replacement)
            else:
                pickle.dump(replacement, handle)
        return ["run", "mini-imagenet", "--data-root", str(tmp / "data"), "--epochs", "1", "--device", "cpu"]
    return setup


def corrupt_first_image(tmp, templates):
    write_image_folder_fixture(tmp / "data")
    (tmp / "data" / "train" / "class_0" / "0.jpg").write_bytes(b"not a jpeg")
    return ["run", "image-folder", "--data-root", str(tmp / "data"), "--image-size", "16", "--epochs", "1",
            "--device", "cpu"]


def corrupt_later_image(tmp, templates):
    write_image_folder_fixture(tmp / "data")
    (tmp / "data" / "val" / "class_1" / "3.jpg").write_bytes(b"\xff\xd8\xff truncated")
    return ["run", "image-folder", "--data-root", str(tmp / "data"), "--image-size", "16", "--epochs", "1",
            "--device", "cpu"]


def out_below_a_file(tmp, templates):
    (tmp / "afile").write_text("x")
    return ["run", "digits", "--epochs", "1", "--out", str(tmp / "afile" / "run")]


def out_unwritable(tmp, templates):
    return ["run", "digits", "--epochs", "1", "--out", "/proc/metaaug-test/run"]


def policy_from_other_benchmark(tmp, templates):
    source = run_copy(templates["glyphs"], tmp)
    config = (source / "config.json").read_text().replace('"policy": "none"', '"policy": "metaaugment"')
    (source / "config.json").write_text(config)
    return ["run", "digits", "--policy", "metaaugment", "--epochs", "1", "--device", "cpu", "--policy-from",
            str(source), "--out", str(tmp / "new")]


def policy_from_truncated_config(tmp, templates):
    source = run_copy(templates["digits"], tmp)
    (source / "config.json").write_text('{"benchmark": "dig')
    return ["run", "digits", "--policy", "metaaugment", "--epochs", "1", "--policy-from", str(source),
            "--out", str(tmp / "new")]


def finished_without_flags(tmp, templates):
    out = run_copy(templates["digits"], tmp)
    return [*DIGITS, "--out", str(out)]


def resume_with_other_settings(tmp, templates):
    out = run_copy(templates["digits"], tmp)
    return [*DIGITS, "--epochs", "2", "--out", str(out), "--resume"]


def overwrite_a_stranger(tmp, templates):
    """The audit's case: a folder with a config.json and the user's notes."""
    (tmp / "proj").mkdir()
    (tmp / "proj" / "config.json").write_text("{}")
    (tmp / "proj" / "notes.txt").write_text("notes")
    return ["run", "digits", "--epochs", "1", "--out", str(tmp / "proj"), "--overwrite"]


def args(*command):
    return lambda tmp, templates: list(command)


def with_file(name, text, *command):
    """A command line run next to a file `name` holding `text` (written by the setup)."""
    def setup(tmp, templates):
        (tmp / name).write_text(text)
        return list(command)
    return setup


BAD_INPUTS = [
    # command lines
    ("unknown benchmark", args("run", "nosuch"), "unknown benchmark 'nosuch'"),
    ("unknown policy", args("run", "digits", "--policy", "nosuch"), "unknown policy 'nosuch'"),
    ("unknown learner", args("run", "digits", "--learner", "nosuch"), "unknown learner 'nosuch'"),
    ("unknown model", args("run", "digits", "--model", "nosuch"), "unknown model 'nosuch'"),
    ("negative epochs", args("run", "digits", "--epochs", "-1"), "--epochs must be a positive integer"),
    ("zero batch size", args("run", "digits", "--batch-size", "0"), "--batch-size must be a positive integer"),
    ("zero eval-every", args("run", "digits", "--eval-every", "0"), "--eval-every must be a positive integer"),
    ("zero checkpoint-every", args("run", "digits", "--checkpoint-every", "0"), "--checkpoint-every must be"),
    ("seed above 2**63", args("run", "digits", "--seed", str(2**64 + 5)), "--seed must be an integer in [0, 2**32)"),
    ("negative seed", args("run", "digits", "--seed", "-3"), "--seed must be an integer in [0, 2**32)"),
    ("absent CUDA device", args("run", "digits", "--device", "cuda:7"), "device 'cuda:7'"),
    ("absent MPS device", args("run", "digits", "--device", "mps"), "MPS (Apple silicon) is not available"),
    ("meta device", args("run", "digits", "--device", "meta"), "unknown device 'meta'"),
    ("made-up device", args("run", "digits", "--device", "tpu"), "unknown device 'tpu'"),
    ("unknown flag", args("run", "digits", "--bogus"), "No such option: --bogus"),
    ("option of another policy", args("run", "digits", "--set", "alpha=1"), "policy 'none' has no option alpha"),
    ("option without a value", args("run", "digits", "--policy", "mixup", "--set", "alpha"),
     "must look like key=value"),
    ("option of the wrong type", args("run", "digits", "--policy", "metaaugment", "--set", "window=many"),
     "option window='many' is not a valid int"),
    ("an option twice", args("run", "digits", "--policy", "mixup", "--set", "alpha=0.2", "--set", "alpha=0.4"),
     "option alpha is given twice"),
    ("trivialaugment without bins",
     args("run", "digits", "--policy", "trivialaugment", "--set", "num_magnitude_bins=0"),
     "num_magnitude_bins must be at least 1"),
    ("mixup alpha nan", args("run", "digits", "--policy", "mixup", "--set", "alpha=nan"), "alpha must be a positive"),
    ("learning rate infinite", args("run", "digits", "--lr", "inf"), "lr must be a positive number (got inf)"),
    ("learning rate nan", args("run", "digits", "--lr", "nan"), "lr must be a positive number (got nan)"),
    ("learning rate negative", args("run", "digits", "--lr", "-0.1"), "lr must be a positive number"),
    ("meta learning rate zero", args("run", "sinusoid", "--lr", "0"), "meta_lr must be a positive number"),
    ("resume and overwrite", args("run", "digits", "--resume", "--overwrite"), "exclude each other"),
    ("few-shot option on digits", args("run", "digits", "--ways", "5"), "--ways applies to few-shot benchmarks"),
    ("image size on digits", args("run", "digits", "--image-size", "32"), "--image-size applies to benchmarks"),
    ("val size on digits", args("run", "digits", "--val-size", "100"), "--val-size applies to benchmarks"),
    ("meta-learner on digits", args("run", "digits", "--learner", "maml"), "learner 'maml' does not train"),
    ("supervised learner on glyphs", args("run", "glyphs", "--learner", "supervised"), "needs a meta-learner"),
    ("task policy on digits", args("run", "digits", "--policy", "intershuffle"), "does not apply to classification"),
    ("image policy on sinusoid", args("run", "sinusoid", "--policy", "randaugment"), "does not apply to regression"),
    ("classifier on sinusoid", args("run", "sinusoid", "--model", "conv4"), "conv4 takes images"),
    ("regressor on digits", args("run", "digits", "--model", "mlp"), "mlp takes flat inputs"),
    ("more ways than classes", args("run", "glyphs", "--ways", "100000"), "exceeds the"),
    ("more shots than samples", args("run", "glyphs", "--shots", "500"), "exceed the"),
    ("rl-mixup with one step per update", args("run", "digits", "--policy", "rl-mixup", "--batch-size", "1000",
                                               "--set", "episodes_per_update=1"), "needs at least 2 training steps"),
    ("policy-from a missing folder", args("run", "digits", "--policy", "metaaugment", "--policy-from", "/nonexistent"),
     "not a finished run folder"),
    ("policy-from with a fixed policy", args("run", "digits", "--policy", "mixup", "--policy-from", "/nonexistent"),
     "applies to policies that can be transferred"),
    ("compare with a misspelt policy", args("compare", "digits", "--policies", "none,nosuch"), "unknown policy"),
    ("compare with a bad seed", args("compare", "digits", "--policies", "none", "--seeds", "0,x"), "--seeds must be"),
    ("compare with a repeated seed", args("compare", "digits", "--policies", "none", "--seeds", "1,1"),
     "--seeds must be distinct"),
    ("compare with a policy that does not fit", args("compare", "digits", "--policies", "none,intershuffle",
                                                     "--epochs", "1", "--device", "cpu"), "does not apply"),
    ("compare with a bad option", args("compare", "digits", "--policies", "none,mixup", "--set", "mixup.alpha=-1",
                                       "--epochs", "1"), "alpha must be a positive number"),
    # plug-ins, config and sweep files
    ("plug-in module missing", args("run", "digits", "--policy", "nomodule:Policy"),
     "policy plug-in 'nomodule:Policy' cannot be imported: No module named 'nomodule'"),
    ("plug-in that fails to import", with_file("failing.py", "raise RuntimeError('boom')\n", "run", "digits",
                                              "--policy", "failing:X"),
     "policy plug-in 'failing:X' failed to import: RuntimeError: boom"),
    ("plug-in name missing", with_file("emptymod.py", "", "run", "digits", "--model", "emptymod:Net"),
     "module 'emptymod' (emptymod.py) has no 'Net'"),
    ("plug-in reference without a name", args("run", "digits", "--policy", "module:"),
     "must look like module.path:Name"),
    ("config file missing", args("run", "--config", "nofile.yaml"), "config file nofile.yaml cannot be read"),
    ("config file not a mapping", with_file("list.json", "[1, 2]", "run", "--config", "list.json"),
     "must hold a mapping of settings"),
    ("config file with a typo", with_file("typo.yaml", "benchmark: digits\nepoch: 3\n", "run", "--config",
                                          "typo.yaml"), "unknown setting epoch"),
    ("config file broken JSON", with_file("broken.json", "{", "run", "--config", "broken.json"), "is not valid JSON"),
    ("config file without a benchmark", with_file("nobench.yaml", "epochs: 3\n", "run", "--config", "nobench.yaml"),
     "name a benchmark"),
    ("config file with a bad value", with_file("bad.yaml", "benchmark: digits\nepochs: -3\n", "run", "--config",
                                               "bad.yaml"), "--epochs must be a positive integer (got -3)"),
    ("sweep without variants", with_file("empty.yaml", "benchmark: digits\n", "compare", "--sweep", "empty.yaml"),
     "needs 'variants'"),
    ("sweep variant without a policy", with_file("nopol.yaml", "variants: {a: {policy_options: {}}}\n", "compare",
                                                 "digits", "--sweep", "nopol.yaml"), "variant a names no policy"),
    ("sweep variant name with a slash", with_file("slash.yaml", "variants: {'a/b': {policy: none}}\n", "compare",
                                                  "digits", "--sweep", "slash.yaml"), "must be letters, digits"),
    ("sweep and policies together", with_file("s.yaml", "variants: {a: {policy: none}}\n", "compare", "digits",
                                              "--sweep", "s.yaml", "--policies", "none"), "one of them"),
    ("sweep variant with a bad option", with_file("opt.yaml", "variants: {a: {policy: mixup, policy_options: "
                                                  "{alpha: -1}}}\n", "compare", "digits", "--sweep", "opt.yaml",
                                                  "--epochs", "1"), "alpha must be a positive number"),
    ("compare the same policy twice", args("compare", "digits", "--policies", "mixup,mixup"), "use a --sweep file"),
    ("an unknown launcher", args("compare", "digits", "--policies", "none", "--launcher", "cloud"),
     "--launcher must be one of inline, local, slurm"),
    ("a SLURM option without SLURM", args("compare", "digits", "--policies", "none", "--slurm-gpus", "2"),
     "--slurm-gpus applies to --launcher slurm"),
    ("no-wait for local jobs", args("compare", "digits", "--policies", "none", "--launcher", "local", "--no-wait"),
     "--no-wait applies to --launcher slurm"),
    ("processes per run inline", args("compare", "digits", "--policies", "none", "--nproc-per-node", "2"),
     "needs --launcher local or slurm"),
    ("SLURM launcher off a cluster", args("compare", "digits", "--policies", "none", "--launcher", "slurm",
                                          "--epochs", "1"), "submitit needs srun and sbatch on PATH"),
    ("list an unknown kind", args("list", "gadgets"), "unknown kind 'gadgets'"),
    ("list an unknown entry", args("list", "policies", "nosuch"), "unknown policy 'nosuch'"),
    ("missing CIFAR", args("run", "cifar10", "--data-root", "nodata"), "cifar-10-batches-py"),
    ("missing mini-ImageNet", args("run", "mini-imagenet", "--data-root", "nodata"), "mini-imagenet-cache-train.pkl"),
    ("missing Omniglot", args("run", "omniglot", "--data-root", "nodata"), "omniglot data not found"),
    ("missing image folders", args("run", "image-folder", "--data-root", "nodata"), "must hold train/, val/ and test/"),
    # run folders
    ("out below a file", out_below_a_file, "is a file"),
    ("out in an unwritable place", out_unwritable, "/proc"),
    ("a finished run without flags", finished_without_flags, "already holds a finished run"),
    ("resume with other settings", resume_with_other_settings, "its configuration differs (epochs: 1 -> 2)"),
    ("overwrite a folder metaaugment did not create", overwrite_a_stranger, "metaaugment did not create it"),
    ("garbage checkpoint", with_checkpoint(b"\x00garbage\xff" * 10), "cannot be read as a checkpoint"),
    ("empty checkpoint", with_checkpoint(b""), "cannot be read as a checkpoint"),
    ("truncated checkpoint", truncated("checkpoint.pt", finished=False), "cannot be read as a checkpoint"),
    ("foreign checkpoint", lambda tmp, t: (torch.save(torch.zeros(3), tmp / "x.pt"),
                                           with_checkpoint((tmp / "x.pt").read_bytes())(tmp, t))[1],
     "not a checkpoint this version of metaaugment can read"),
    ("truncated config.json", truncated("config.json", finished=False), "run configuration is damaged"),
    ("truncated results.json", truncated("results.json", finished=True), "results file is damaged"),
    ("policy-from a run of another benchmark", policy_from_other_benchmark, "does not fit benchmark 'digits'"),
    ("policy-from a truncated config", policy_from_truncated_config, "run configuration is damaged"),
    # data on disk
    ("CIFAR batch truncated", cifar_batch(lambda e, t: pickle.dumps(e, protocol=2)[:500]), "cannot be unpickled"),
    ("CIFAR batch not a dict", cifar_batch(lambda e, t: [1, 2, 3]), "holds a list, not a dict"),
    ("CIFAR batch without labels", cifar_batch(lambda e, t: {b"data": e[b"data"]}), "no labels entry"),
    ("CIFAR labels out of range", cifar_batch(lambda e, t: {**e, b"labels": [12] * len(e[b"labels"])}),
     "labels must lie in [0, 10)"),
    ("CIFAR more images than labels", cifar_batch(lambda e, t: {**e, b"labels": e[b"labels"][:-2]}),
     "20 images but 18 labels"),
    ("CIFAR float pixels", cifar_batch(lambda e, t: {**e, b"data": e[b"data"].astype(np.float32) / 255}),
     "'data' must be a uint8 (N, 3072) array"),
    ("CIFAR HWC arrays", cifar_batch(lambda e, t: {**e, b"data": e[b"data"].reshape(-1, 32, 32, 3)}),
     "got uint8 (20, 32, 32, 3)"),
    ("mini-ImageNet index out of range", mini_imagenet(lambda e, t: {**e, "class_dict": {"n1": [0, 9999]}}),
     "indexes image 9999"),
    ("mini-ImageNet empty class dict", mini_imagenet(lambda e, t: {**e, "class_dict": {}}), "class_dict is empty"),
    ("mini-ImageNet truncated", mini_imagenet(lambda e, t: pickle.dumps(e)[:300]), "cannot be unpickled"),
    ("mini-ImageNet float images", mini_imagenet(lambda e, t: {**e, "image_data": e["image_data"] / 255.0}),
     "image_data is float64"),
    ("image-folder corrupt first image", corrupt_first_image, "cannot read image"),
    ("image-folder corrupt later image", corrupt_later_image, "cannot read image"),
    # crafted files (the marker must not appear)
    ("crafted checkpoint", crafted_checkpoint, "cannot be read as a checkpoint"),
    ("crafted policy-from checkpoint", crafted_policy_from, "cannot be read as a checkpoint"),
    ("crafted CIFAR batch", cifar_batch(lambda e, t: {b"data": Payload(t / MARKER), b"labels": []}),
     "refusing to load"),
    ("crafted mini-ImageNet cache", mini_imagenet(lambda e, t: {"image_data": Payload(t / MARKER), "class_dict": {}}),
     "refusing to load"),
]


@pytest.mark.parametrize("setup, expected", [case[1:] for case in BAD_INPUTS], ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(setup, expected, tmp_path, monkeypatch, capsys,
                                                          finished_run, finished_glyphs_run):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("METAAUG_CACHE", str(tmp_path / "cache"))
    command = setup(tmp_path, {"digits": finished_run, "glyphs": finished_glyphs_run})
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(command)
    captured = capsys.readouterr()
    assert exit_info.value.code == 2, captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    assert snapshot(tmp_path) == before, "a failed command must leave nothing behind and change nothing"
    assert not (tmp_path / MARKER).exists(), "a crafted file executed code"


def test_the_table_holds_at_least_sixty_bad_inputs():
    assert len(BAD_INPUTS) >= 60


# -- run folders --------------------------------------------------------------------------------
def test_overwrite_removes_only_the_files_the_run_created(tmp_path):
    out = tmp_path / "run"
    train(quick_config(epochs=1, policy="metaaugment"), out, show_progress=False)
    (out / "notes.txt").write_text("my notes")
    (out / "sub").mkdir()
    (out / "sub" / "data.csv").write_text("1,2")
    stale = out / ".checkpoint.pt.abc123.metaaug-tmp"
    stale.write_bytes(b"half a checkpoint")
    train(quick_config(epochs=1, seed=1), out, overwrite=True, show_progress=False)
    assert (out / "notes.txt").read_text() == "my notes" and (out / "sub" / "data.csv").exists()
    assert not (out / "sampler_heatmap.png").exists(), "the earlier run's figure is its own: removed"
    assert not stale.exists(), "temporary files of killed writes are removed at the next start"
    assert (out / "results.json").exists()


@pytest.mark.slow
def test_a_second_process_on_the_same_folder_is_refused(tmp_path):
    import subprocess
    import time

    out = tmp_path / "run"
    command = [sys.executable, "-m", "metaaugment.cli.main", "run", "digits", "--epochs", "30", "--device", "cpu",
               "--quiet", "--out", str(out)]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while not (out / "config.json").exists() and time.time() < deadline:
            time.sleep(0.02)
        second = subprocess.run([*command, "--resume"], capture_output=True, text=True)
        assert second.returncode == 2, second.stderr
        assert f"in use by another metaaugment process (pid {first.pid})" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
    finally:
        first.kill()
        first.wait()
    # the OS dropped the killed process's lock: the run resumes
    resumed = subprocess.run([*command, "--resume", "--epochs", "30"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr


def test_divergence_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(UserError, match=r"training diverged (at|by) step (\d+).*the last good checkpoint") as error:
        train(quick_config(epochs=3, learner_options={"lr": 1e6}, checkpoint_every=1), out, show_progress=False)
    diverged_at = int(error.value.args[0].split("step ")[1].split(":")[0])
    assert not (out / "results.json").exists()
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["training"]["step"] < diverged_at  # the last checkpoint before it went wrong
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_divergence_of_metaaugment_is_one_line_too(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "digits", "--policy", "metaaugment", "--lr", "1e6", "--epochs", "1", "--device", "cpu", "--quiet"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "training diverged" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_the_sampler_never_holds_a_nan_or_negative_probability():
    from metaaugment.sample_aware.transformations import TransformationSampler

    sampler = TransformationSampler(window=2, refresh=1, num_ops=2)
    sampler.record(torch.tensor([[0, 0], [1, 1], [0, 1]]), torch.tensor([float("nan"), -3.0, 0.5]))
    assert torch.isfinite(sampler.probabilities).all() and (sampler.probabilities >= 0).all()
    assert sampler.probabilities.sum().item() == pytest.approx(1.0)
    sampler.sample(10)  # a valid multinomial distribution


def test_a_start_killed_before_its_first_checkpoint_leaves_no_duplicate_records(tmp_path, crash_at):
    config = quick_config(epochs=1, checkpoint_every=100, log_every=2)
    reference = train(config, tmp_path / "ref", show_progress=False)
    crash_at(8)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "run", show_progress=False)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
    resumed = train(config, tmp_path / "run", resume=True, show_progress=False)
    assert resumed["metrics"] == reference["metrics"]
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == (tmp_path / "ref" / "metrics.jsonl").read_text()


def test_a_crash_during_the_final_test_keeps_the_figures(tmp_path, monkeypatch):
    from metaaugment.run import strategies

    config = quick_config(epochs=1, policy="metaaugment")
    reference = train(config, tmp_path / "ref", show_progress=False)
    original = strategies.MiniBatchStrategy.evaluate

    def crash_on_test(self, split, *args, **kwargs):
        if split == "test":
            raise KeyboardInterrupt
        return original(self, split, *args, **kwargs)

    monkeypatch.setattr(strategies.MiniBatchStrategy, "evaluate", crash_on_test)
    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "run", show_progress=False)
    monkeypatch.setattr(strategies.MiniBatchStrategy, "evaluate", original)
    resumed = train(config, tmp_path / "run", resume=True, show_progress=False)
    expected = ["sampler_heatmap.png", "weighted_samples.png", "curves.png"]
    assert resumed["artifacts"] == reference["artifacts"] == expected
    assert all((tmp_path / "run" / name).is_file() for name in resumed["artifacts"])
    assert resumed["metrics"] == reference["metrics"]


def test_cache_is_rebuilt_when_a_drawing_changes(tmp_path, monkeypatch):
    from conftest import write_omniglot_fixture

    from metaaugment.tasks.omniglot import read_omniglot

    monkeypatch.setenv("METAAUG_CACHE", str(tmp_path / "cache"))
    write_omniglot_fixture(tmp_path, alphabets=1, characters=3, drawings=20)
    images, _, _ = read_omniglot(tmp_path)
    drawing = sorted((tmp_path / "omniglot-py").rglob("*.png"))[0]
    Image.fromarray(np.zeros((105, 105), np.uint8), mode="L").save(drawing)  # all ink
    os.utime(drawing, ns=(drawing.stat().st_atime_ns, drawing.stat().st_mtime_ns + 10**9))
    again, _, _ = read_omniglot(tmp_path)
    assert not torch.equal(images, again) and int(again[0].min()) == 255  # the edit is read
    assert len(list((tmp_path / "cache").glob("omniglot-*.pt"))) == 2


def test_a_damaged_cache_is_rebuilt_and_a_crafted_one_runs_nothing(tmp_path, monkeypatch):
    from conftest import write_omniglot_fixture

    from metaaugment.tasks.omniglot import read_omniglot

    monkeypatch.setenv("METAAUG_CACHE", str(tmp_path / "cache"))
    write_omniglot_fixture(tmp_path, alphabets=1, characters=3, drawings=20)
    images, _, _ = read_omniglot(tmp_path)
    (cache,) = (tmp_path / "cache").glob("omniglot-*.pt")
    cache.write_bytes(cache.read_bytes()[:100])  # truncated by a killed write
    assert torch.equal(read_omniglot(tmp_path)[0], images)
    torch.save(Payload(tmp_path / MARKER), cache)  # crafted
    assert torch.equal(read_omniglot(tmp_path)[0], images)
    assert not (tmp_path / MARKER).exists()


# -- kill -9 at chosen points, then --resume --------------------------------------------------
KILLER = '''
import io, os, signal, sys, tempfile
point, count, args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
import metaaugment.files as files
from metaaugment.run.folder import RunDirectory
from metaaugment.run.loop import Trainer

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if point == "start-up":  # the folder, manifest and config.json exist; no step has run
    prepare = RunDirectory.prepare
    def prepare_then_die(self, *a, **k):
        prepare(self, *a, **k)
        die()
    RunDirectory.prepare = prepare_then_die
elif point == "mid-epoch":
    step = Trainer._step
    def step_or_die(self, inputs):
        if self.state.step == count:
            die()
        return step(self, inputs)
    Trainer._step = step_or_die
else:  # killed while writing the count-th checkpoint, or results.json: half a temporary file
    target = {"checkpoint-write": "checkpoint.pt", "results-write": "results.json"}[point]
    write = files._write_atomically
    seen = [0]
    def write_or_die(path, produce):
        if path.name == target:
            seen[0] += 1
            if seen[0] == count:
                buffer = io.BytesIO()
                produce(buffer)
                fd, _ = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=files.TEMPORARY_SUFFIX)
                os.write(fd, buffer.getvalue()[: len(buffer.getvalue()) // 2])
                die()
        return write(path, produce)
    files._write_atomically = write_or_die

from metaaugment.cli.main import main
main(args)
'''

RUNS = {
    "mini-batch": ["run", "digits", "--epochs", "3", "--seed", "5", "--checkpoint-every", "7"],
    "metaaugment": ["run", "digits", "--policy", "metaaugment", "--epochs", "2", "--seed", "5",
                    "--checkpoint-every", "7"],
    "few-shot": ["run", "glyphs", "--epochs", "2", "--steps-per-epoch", "6", "--batch-size", "2", "--val-tasks", "4",
                 "--test-tasks", "8", "--checkpoint-every", "4", "--seed", "5"],
}
KILL_POINTS = [("start-up", 0), ("mid-epoch", 9), ("checkpoint-write", 2), ("results-write", 1)]


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def metaaug_process(*args, env, killer=None):
    import subprocess

    command = [sys.executable, "-c", KILLER, *killer] if killer else [sys.executable, "-m", "metaaugment.cli.main"]
    return subprocess.run([*command, *args, "--device", "cpu", "--quiet"], capture_output=True, text=True, env=env)


@pytest.mark.slow
@pytest.mark.parametrize("run", list(RUNS))
def test_kill_9_at_any_point_then_resume_gives_the_uninterrupted_results(run, tmp_path, shared_cache):
    import json

    env = {**os.environ, "METAAUG_CACHE": str(shared_cache)}
    reference = metaaug_process(*RUNS[run], "--out", str(tmp_path / "reference"), env=env)
    assert reference.returncode == 0, reference.stderr
    expected = json.loads((tmp_path / "reference" / "results.json").read_text())
    for point, count in KILL_POINTS:
        out = tmp_path / point
        killed = metaaug_process(*RUNS[run], "--out", str(out), env=env, killer=[point, str(count)])
        assert killed.returncode == -9, f"{point}: {killed.stderr}"
        assert not (out / "results.json").exists()
        resumed = metaaug_process(*RUNS[run], "--out", str(out), "--resume", env=env)
        assert resumed.returncode == 0, f"{point}: {resumed.stderr}"
        results = json.loads((out / "results.json").read_text())
        assert results["metrics"] == expected["metrics"], point
        assert results["artifacts"] == expected["artifacts"], point
        assert (out / "metrics.jsonl").read_text() == (tmp_path / "reference" / "metrics.jsonl").read_text(), point
        assert not list(out.glob("*.metaaug-tmp")), f"{point}: a temporary file was left"
