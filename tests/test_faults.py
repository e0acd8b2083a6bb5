"""Fault injection: bad command lines and bad data on disk each give one line and exit 2, with
no traceback and nothing left behind; crafted files execute nothing; the run folder belongs
to the run that made it (docs/reliability.md)."""
import codecs
import errno
import hashlib
import io
import itertools
import json
import os
import pickle
import shutil
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import (
    quick_config,
    write_cifar_fixture,
    write_image_folder_fixture,
    write_mini_imagenet_fixture,
)
from PIL import Image

from metaaugment import train
from metaaugment.cli.main import main
from metaaugment.infra.errors import UserError
from metaaugment.run.folder import LOCK, MANIFEST

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
def table_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def finished_glyphs_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("template-glyphs") / "run"
    train(quick_config(benchmark="glyphs", epochs=1, steps_per_epoch=2, batch_size=2, val_tasks=2, test_tasks=2),
          out, show_progress=False)
    return out


def snapshot(root: Path) -> dict[str, str]:
    """Every file under root (but the cache) with a digest of its bytes, lock files included (a
    refused start leaves even the lock's PID as it was); a FIFO, device or link by its kind
    and target; a sparse file by its size (it is not read)."""
    files = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if "cache" in relative.parts or any((root / p).is_symlink() for p in relative.parents if p != Path(".")):
            continue  # what a linked folder holds is listed where it really is
        if path.is_symlink():
            files[str(relative)] = f"link to {os.readlink(path)}"
        elif path.is_fifo():
            files[str(relative)] = "fifo"
        elif path.is_file():
            size = path.stat().st_size
            files[str(relative)] = f"sparse {size}" if size > 1 << 30 else hashlib.sha256(path.read_bytes()).hexdigest()
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


class Reduced:
    """Pickles as `function(*args)`: what a crafted dataset pickle built from allowed globals holds."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return (self.function, self.args)


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
    (tmp / "data" / "train" / "train_class_0" / "0.jpg").write_bytes(b"not a jpeg")
    return ["run", "image-folder", "--data-root", str(tmp / "data"), "--image-size", "16", "--epochs", "1",
            "--device", "cpu"]


def corrupt_later_image(tmp, templates):
    write_image_folder_fixture(tmp / "data")
    (tmp / "data" / "val" / "val_class_1" / "3.jpg").write_bytes(b"\xff\xd8\xff truncated")
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


# -- crafted files: code a file names, and paths a file reaches -----------------------------------
MODULES = itertools.count()
# seven lines of YAML that expand to 10**7 values: a, then b..g each ten aliases of the one before
ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(6))


def code_module(folder: Path, marker: Path) -> str:
    """Write a module whose import writes `marker` (code running) into `folder`; returns its
    name, a new one per call (an imported module would be cached and not run again)."""
    name = f"evil_{next(MODULES)}"
    (folder / f"{name}.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('code ran')\n\n\n"
        "class Policy:\n    pass\n\n\ndef net(spec):\n    return None\n\n\ndef bench():\n    return None\n")
    return name


def config_file(text: str, *extra: str, name: str = "cfg.yaml"):
    """`metaaug run --config NAME` of a file holding `text` (`{code}` becomes a module whose
    import writes the marker)."""
    def setup(tmp, templates):
        (tmp / name).write_text(text.replace("{code}", code_module(tmp, tmp / MARKER)))
        return ["run", "--config", name, "--device", "cpu", "--epochs", "1", *extra]
    return setup


def sweep_file(text: str, *extra: str):
    """`metaaug compare digits --sweep s.yaml` of a file holding `text` (`{code}` as config_file)."""
    def setup(tmp, templates):
        (tmp / "s.yaml").write_text(text.replace("{code}", code_module(tmp, tmp / MARKER)))
        return ["compare", "digits", "--sweep", "s.yaml", "--device", "cpu", "--epochs", "1", *extra]
    return setup


def big_file(name: str, text: str, *command: str):
    def setup(tmp, templates):
        (tmp / name).write_text(text)
        return list(command)
    return setup


def folder_with(change, *command: str, finished: bool = True, source: str = "digits"):
    """A copy of a finished run (`run`), changed by `change(run, tmp)`, then `command` with the
    copy's path in place of RUN."""
    def setup(tmp, templates):
        out = run_copy(templates[source], tmp)
        if not finished:
            (out / "results.json").unlink()
        change(out, tmp)
        return [str(out) if part == "RUN" else part for part in command]
    return setup


def edit_json(name: str, change):
    """A change of a run folder's JSON file `name`: its data replaced by change(data, tmp)."""
    def apply(out, tmp):
        data = json.loads((out / name).read_text())
        (out / name).write_text(json.dumps(change(data, tmp)))
    return apply


def edit_checkpoint(change):
    def apply(out, tmp):
        state = torch.load(out / "checkpoint.pt", weights_only=True)
        torch.save(change(state), out / "checkpoint.pt")
    return apply


def shrunk(state: dict) -> dict:
    """A state dict whose tensors keep only their first row: weights of another shape."""
    return {key: value[:1] if value.dim() else value for key, value in state.items()}


def config_naming_code(key: str, value: str = "{module}:Policy"):
    """A run folder whose config.json names code (a module beside it that writes the marker)."""
    def apply(out, tmp):
        module = code_module(tmp, tmp / MARKER)
        config = json.loads((out / "config.json").read_text())
        config[key] = value.replace("{module}", module)
        (out / "config.json").write_text(json.dumps(config))
    return apply


def replace_lock(make):
    def apply(out, tmp):
        (out / LOCK).unlink()
        make(out / LOCK, tmp)
    return apply


def lock_link(lock, tmp):
    (tmp / "precious.txt").write_text("the user's file")
    lock.symlink_to(tmp / "precious.txt")


def manifest_files(files):
    """A run folder whose manifest lists `files(tmp)`, overwritten: nothing outside it may go."""
    def apply(out, tmp):
        (tmp / "outside.txt").write_text("keep me")
        (tmp / "outside").mkdir()
        (tmp / "outside" / "notes.txt").write_text("keep me too")
        manifest = json.loads((out / MANIFEST).read_text())
        manifest["files"] = files(tmp)
        (out / MANIFEST).write_text(json.dumps(manifest))
    return apply


def comparison_with(change, *extra: str):
    """`compare digits --policies none --seeds 0` into cmp/, after change(cmp, tmp, templates)."""
    def setup(tmp, templates):
        (tmp / "cmp").mkdir()
        change(tmp / "cmp", tmp, templates)
        return ["compare", "digits", "--policies", "none", "--seeds", "0", "--epochs", "1", "--device", "cpu",
                "--out", "cmp", *extra]
    return setup


def jobs_json(text: str):
    return comparison_with(lambda cmp, tmp, templates: (cmp / "jobs.json").write_text(text), "--status")


def finished_in_comparison(change):
    def apply(cmp, tmp, templates):
        (cmp / "none").mkdir()
        shutil.copytree(templates["digits"], cmp / "none" / "seed0")
        change(cmp / "none" / "seed0", tmp)
    return apply


# -- audit 3: links, FIFOs, devices, sparse files, downloads asked for by a file, reserved names --
def fifo(path: Path) -> None:
    path.unlink(missing_ok=True)
    os.mkfifo(path)


def sparse(path: Path, size: int = 1 << 34) -> None:
    """`path` as a 16 GiB sparse file (no disk used): a reader that reads it whole fills memory."""
    with open(path, "wb") as handle:
        handle.truncate(size)


def outside(tmp: Path) -> Path:
    """A folder outside the run or comparison folder, with a file in it, whose checksums the
    snapshot covers: nothing may be written there."""
    folder = tmp / "outside"
    folder.mkdir(exist_ok=True)
    (folder / "precious.txt").write_text("mine\n")
    return folder


def link_in_place(relative: str, target: str = "folder"):
    """A run or comparison folder's `relative` (a folder or file it writes) as a symbolic link to
    something outside it."""
    def change(root: Path, tmp: Path) -> None:
        place = outside(tmp)
        path = root / relative
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(place if target == "folder" else place / "precious.txt")
    return change


def hard_linked_lock(tmp, templates):
    out = run_copy(templates["digits"], tmp)
    (out / LOCK).unlink(missing_ok=True)
    os.link(outside(tmp) / "precious.txt", out / LOCK)
    return [*DIGITS, "--out", str(out), "--overwrite"]


def plugin_file(source: str, *command: str):
    """`command` next to plugin.py holding `source`."""
    def setup(tmp, templates):
        name = f"plugin_{next(MODULES)}"
        (tmp / f"{name}.py").write_text(source)
        return [part.replace("PLUGIN", name) for part in command]
    return setup


def png_header(width: int, height: int) -> bytes:
    """A PNG of (width, height) RGB pixels as far as its header tells (no pixel data): PIL reads
    the size from it before decoding anything."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(
        b"IEND", b"")


def tiny_png() -> bytes:
    """A valid 8x8 RGB PNG."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def image_folder_with(split: str, content: bytes):
    """The few-shot image-folder fixture with one image of `split` replaced by `content`."""
    def setup(tmp, templates):
        write_image_folder_fixture(tmp / "data")
        (tmp / "data" / split / f"{split}_class_1" / "2.jpg").write_bytes(content)
        return ["run", "image-folder", "--data-root", str(tmp / "data"), "--image-size", "16", "--epochs", "1",
                "--device", "cpu"]
    return setup


def classification_folder_with(split: str, content: bytes, *extra: str):
    """A tiny image-classification-folder tree (train/ and test/, two classes) with one file of
    `split` replaced by `content`; the run would stream it."""
    def setup(tmp, templates):
        rng = np.random.default_rng(0)
        for part in ("train", "test"):
            for c in range(2):
                folder = tmp / "data" / part / f"class_{c}"
                folder.mkdir(parents=True)
                for i in range(4):
                    Image.fromarray(rng.integers(0, 256, size=(24, 24, 3), dtype=np.uint8)).save(folder / f"{i}.png")
        (tmp / "data" / split / "class_1" / "3.png").write_bytes(content)
        return ["run", "image-classification-folder", "--data-root", str(tmp / "data"), "--image-size", "16",
                "--model", "small-cnn", "--batch-size", "4", "--epochs", "1", "--device", "cpu", *extra]
    return setup


def cifar_batches(names, change):
    """The CIFAR-10 fixture with the batches `names` rewritten by change(entry)."""
    def setup(tmp, templates):
        write_cifar_fixture(tmp / "data", per_file=20)
        for name in names:
            path = tmp / "data" / "cifar-10-batches-py" / name
            with open(path, "rb") as handle:
                entry = pickle.load(handle, encoding="bytes")
            with open(path, "wb") as handle:
                pickle.dump(change(entry), handle, protocol=2)
        return ["run", "cifar10", "--data-root", str(tmp / "data"), "--model", "small-cnn", "--epochs", "1",
                "--batch-size", "16", "--device", "cpu"]
    return setup


def empty_batch(entry):
    return {**entry, b"data": entry[b"data"][:0], b"labels": []}


def failing_writes(error_number: int):
    """Every write of the run folder fails with `error_number` (a full disk, a read-only file
    system), from the first: nothing may be left behind."""
    def setup(tmp, templates):
        def refuse(*args, **kwargs):
            raise OSError(error_number, os.strerror(error_number))
        templates["monkeypatch"].setattr("metaaugment.infra.files.tempfile.mkstemp", refuse)
        return [*DIGITS, "--out", str(tmp / "run")]
    return setup


def disk_full_at_the_lock(setup):
    """`setup`, on a disk that fills as the lock's PID is written (after the truncation: the
    lock found empty is what a real full disk left behind); putting a lock's old contents
    back still fits."""
    def wrapped(tmp, templates):
        from metaaugment.run import folder as run_folder

        write, calls = run_folder._write_lock, []

        def full(handle, text):
            calls.append(text)
            if len(calls) == 1:  # the PID
                handle.seek(0)
                handle.truncate()
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            write(handle, text)
        templates["monkeypatch"].setattr(run_folder, "_write_lock", full)
        return setup(tmp, templates)
    return wrapped


def with_environment(name: str, value: str, *command: str):
    def setup(tmp, templates):
        templates["monkeypatch"].setenv(name, value)
        return list(command)
    return setup


COMMAND_LINE = [
    ("an empty METAAUG_CACHE", with_environment("METAAUG_CACHE", "", "run", "fonts", "--epochs", "1"),
     "METAAUG_CACHE='' must be an absolute folder"),
    ("a newline in a policy name", args("run", "digits", "--policy", "none\nrm -rf /"), "unknown policy 'none\\nrm"),
    ("a newline in a benchmark name", args("run", "dig\nits"), "unknown benchmark 'dig\\nits'"),
    ("a newline in a device", args("run", "digits", "--device", "cpu\nx"), "cpu\\nx"),
    ("a newline in a config path", args("run", "--config", "a\nb.yaml"), "a\\nb.yaml cannot be read"),
    ("a learning rate that is zero in float32", args(*DIGITS, "--lr", "1e-46"), "rounds this to 0"),
    ("mixup alpha that is zero in float32", args(*DIGITS, "--policy", "mixup", "--set", "alpha=1e-310"),
     "rounds this to 0"),
    ("an image size no batch fits in memory", args("run", "image-classification-folder", "--data-root", "x",
                                                   "--image-size", "100000"), "more than this machine's"),
    ("CIFAR padding of 1e8", args("run", "cifar10", "--data-root", "x", "--benchmark-set", "padding=100000000"),
     "padding must be an integer from 0 to 1024"),
    ("an extreme crop ratio", args("run", "image-classification-folder", "--data-root", "x", "--benchmark-set",
                                   "crop_ratio=1e-308,1e308"), "crop_ratio must be two aspect ratios"),
    ("unknown benchmark", args("run", "nosuch"), "unknown benchmark 'nosuch'; choose from: cifar10, cifar100, digits"),
    ("unknown policy", args("run", "digits", "--policy", "nosuch"),
     "unknown policy 'nosuch'; choose from: adaaug, autoaugment,"),
    ("unknown learner", args("run", "digits", "--learner", "nosuch"), "unknown learner 'nosuch'"),
    ("unknown model", args("run", "digits", "--model", "nosuch"), "unknown model 'nosuch'"),
    ("negative epochs", args("run", "digits", "--epochs", "-1"), "--epochs must be a positive integer (got -1)"),
    ("zero epochs", args("run", "digits", "--epochs", "0"), "--epochs must be a positive integer (got 0)"),
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
     "num_magnitude_bins must be at least 2"),
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
    ("compare with a misspelt policy", args("compare", "digits", "--policies", "none,nosuch"), "unknown policy"),
    ("compare with a bad seed", args("compare", "digits", "--policies", "none", "--seeds", "0,x"), "--seeds must be"),
    ("compare with a repeated seed", args("compare", "digits", "--policies", "none", "--seeds", "1,1"),
     "--seeds must be distinct"),
    ("compare with a policy that does not fit", args("compare", "digits", "--policies", "none,intershuffle",
                                                     "--epochs", "1", "--device", "cpu"), "does not apply"),
    ("compare with a bad option", args("compare", "digits", "--policies", "none,mixup", "--set", "mixup.alpha=-1",
                                       "--epochs", "1"), "alpha must be a positive number"),
    ("compare the same policy twice", args("compare", "digits", "--policies", "mixup,mixup"), "use a --sweep file"),
    ("a benchmark option where there are none", args("run", "digits", "--benchmark-set", "flip=false"),
     "benchmark 'digits' has no options"),
    ("a bad benchmark option value", args("run", "imagenet", "--benchmark-set", "crop_scale=0.5,2"),
     "crop_scale must be two fractions"),
    ("an unknown benchmark option", args("run", "imagenet", "--benchmark-set", "mirror=false"),
     "has no option mirror"),
    ("an infinite crop aspect ratio", args("run", "imagenet", "--benchmark-set", "crop_ratio=1,inf"),
     "crop_ratio must be two aspect ratios"),
    ("progress shown every infinity", args("compare", "digits", "--policies", "none", "--launcher", "local",
                                            "--progress-every", "inf"), "--progress-every must be a positive finite"),
    ("an unknown launcher", args("compare", "digits", "--policies", "none", "--launcher", "cloud"),
     "--launcher must be one of inline, local, slurm"),
    ("a SLURM option without SLURM", args("compare", "digits", "--policies", "none", "--slurm-gpus", "2"),
     "--slurm-gpus applies to --launcher slurm"),
    ("no-wait for local jobs", args("compare", "digits", "--policies", "none", "--launcher", "local", "--no-wait"),
     "--no-wait applies to --launcher slurm"),
    ("a global batch that does not divide by the processes", args("compare", "digits", "--policies", "none",
                                                                    "--nproc-per-node", "2", "--batch-size", "63"),
     "--batch-size 63 is the global batch: it must divide by the 2 processes"),
    ("SLURM launcher off a cluster", args("compare", "digits", "--policies", "none", "--launcher", "slurm",
                                          "--epochs", "1"), "submitit needs srun and sbatch on PATH"),
    ("list an unknown kind", args("list", "gadgets"), "unknown kind 'gadgets'"),
    ("list an unknown entry", args("list", "policies", "nosuch"), "unknown policy 'nosuch'"),
    ("eval of an unknown split", args("eval", "nowhere", "--split", "train"), "--split must be test or val"),
    ("eval of a missing folder", args("eval", "nowhere", "--device", "cpu"), "not a finished run folder"),
    ("export of a missing folder", args("export", "nowhere"), "not a finished run folder"),
    ("local jobs at once zero", args("compare", "digits", "--policies", "none", "--launcher", "local", "--jobs", "0"),
     "--jobs and --nproc-per-node must be positive integers"),
    ("batch larger than the training split", args("run", "digits", "--batch-size", "5000", "--epochs", "1",
                                                  "--device", "cpu"), "exceeds the 1257 training samples"),
    ("randaugment with one magnitude bin", args("run", "digits", "--policy", "randaugment", "--set",
                                                "num_magnitude_bins=1", "--set", "magnitude=0"),
     "num_magnitude_bins must be at least 2"),
    ("learning rate beyond float32", args("run", "digits", "--lr", "1e308"),
     "lr must be a positive number within float32's range"),
    ("meta learning rate beyond float32", args("run", "sinusoid", "--lr", "1e39"),
     "meta_lr must be a positive number within float32's range"),
]


PLUGINS = [
    ("plug-in module missing", args("run", "digits", "--policy", "nomodule:Policy"),
     "policy plug-in 'nomodule:Policy' cannot be imported: No module named 'nomodule'"),
    ("plug-in that fails to import", with_file("failing.py", "raise RuntimeError('boom')\n", "run", "digits",
                                              "--policy", "failing:X"),
     "policy plug-in 'failing:X' failed to import: RuntimeError: boom"),
    ("plug-in name missing", with_file("emptymod.py", "", "run", "digits", "--model", "emptymod:Net"),
     "module 'emptymod' (emptymod.py) has no 'Net'"),
    ("plug-in reference without a name", args("run", "digits", "--policy", "module:"),
     "must look like module.path:Name"),
    ("a function as a policy", args("run", "digits", "--policy", "subprocess:run"),
     "policy 'subprocess:run' is the function subprocess.run, not an AugmentationPolicy subclass"),
    ("a builtin as a model", args("run", "digits", "--model", "os:system"), "not an nn.Module subclass or a function"),
    ("torch.load as a model", args("run", "digits", "--model", "torch:load", "--model-set", "weights_only=false"),
     "is the function torch.serialization.load, not an nn.Module subclass"),
    ("a class that is no learner", args("run", "digits", "--learner", "collections:OrderedDict"),
     "is the class collections.OrderedDict, not a Learner subclass"),
    ("a class that is no policy", args("run", "digits", "--policy", "pathlib:Path"), "not an AugmentationPolicy"),
    ("a class that is no model", args("run", "digits", "--model", "pathlib:Path"), "not an nn.Module subclass"),
    ("a policy instance, not its class", plugin_file(
        "from metaaugment import BatchPolicy\n\nclass P(BatchPolicy):\n    pass\n\n\nINSTANCE = P()\n", "run", "digits",
        "--policy", "PLUGIN:INSTANCE"), "is a P, not an AugmentationPolicy subclass"),
    ("a model factory that builds a string", plugin_file("def net(spec):\n    return 'a network'\n", "run", "digits",
                                                         "--model", "PLUGIN:net", "--epochs", "1", "--device", "cpu"),
     "built a str, not torch.nn.Module"),
    ("a model factory whose first parameter is not spec", plugin_file(
        "import torch\n\ndef net(shape):\n    return torch.nn.Linear(1, 1)\n", "run", "digits", "--model",
        "PLUGIN:net"), "whose first parameter is spec"),
    ("a benchmark factory that builds a dict", plugin_file("def bench():\n    return {'name': 'x'}\n", "run",
                                                           "PLUGIN:bench"),
     "built a dict, not metaaugment.tasks.Benchmark"),
    ("a benchmark factory that needs arguments", plugin_file("def bench(root):\n    return None\n", "run",
                                                             "PLUGIN:bench"), "not a function of no arguments"),
    ("a benchmark whose data is of another kind", plugin_file(
        "from metaaugment.tasks import Benchmark\n\ndef bench():\n    return Benchmark(name='b', load=lambda root: "
        "[1, 2], default_model='small-cnn', default_epochs=1, default_batch_size=4)\n", "run", "PLUGIN:bench",
        "--device", "cpu"), "loaded a list, not ClassificationData"),
    ("a model option of the wrong type", args("run", "digits", "--model-set", "width=4", "--policy", "mixup",
                                              "--set", "alpha=true"), "option alpha='true' is not a valid float"),
]


CONFIG_FILES = [
    ("config file a FIFO", lambda tmp, t: (fifo(tmp / "cfg.yaml"), ["run", "--config", "cfg.yaml"])[1],
     "cfg.yaml is a FIFO: the config file must be a regular file"),
    ("config file /dev/zero", args("run", "--config", "/dev/zero"), "is a character device"),
    ("config file a 16 GiB sparse file", lambda tmp, t: (sparse(tmp / "big.json"), ["run", "--config", "big.json"])[1],
     "is larger than 1 MiB: not a config file"),
    ("config file a link to a settings file", lambda tmp, t: (
        (tmp / "real.yaml").write_text("benchmark: digits\n"), (tmp / "cfg.yaml").symlink_to(tmp / "real.yaml"),
        ["run", "--config", "cfg.yaml"])[2], "cfg.yaml is a symbolic link"),
    ("config file asking for downloaded weights", config_file(
        "benchmark: digits\nmodel: timm/resnet18\nmodel_options: {pretrained: true}\n"),
     "which downloads weights: a file never makes metaaugment reach the network"),
    ("config file missing", args("run", "--config", "nofile.yaml"), "nofile.yaml cannot be read as the config file"),
    ("config file not a mapping", with_file("list.json", "[1, 2]", "run", "--config", "list.json"),
     "must hold a mapping of settings"),
    ("config file with a typo", with_file("typo.yaml", "benchmark: digits\nepoch: 3\n", "run", "--config",
                                          "typo.yaml"), "unknown setting epoch"),
    ("config file broken JSON", with_file("broken.json", "{", "run", "--config", "broken.json"), "is not valid JSON"),
    ("config file without a benchmark", with_file("nobench.yaml", "epochs: 3\n", "run", "--config", "nobench.yaml"),
     "name a benchmark"),
    ("config file with a bad value", with_file("bad.yaml", "benchmark: digits\nepochs: -3\n", "run", "--config",
                                               "bad.yaml"), "--epochs must be a positive integer (got -3)"),
    ("config epochs true", config_file("benchmark: digits\nepochs: true\n", name="c.yaml"),
     "epochs must be an integer or null (got True)"),
    ("config epochs a fraction", big_file("c.yaml", "benchmark: digits\nepochs: 2.5\n", "run", "--config", "c.yaml"),
     "epochs must be an integer or null (got 2.5)"),
    ("config epochs a string", big_file("c.yaml", "benchmark: digits\nepochs: '3'\n", "run", "--config", "c.yaml"),
     "epochs must be an integer or null (got '3')"),
    ("config compile 'no'", config_file("benchmark: digits\ncompile: 'no'\n"),
     "compile must be true or false (got 'no')"),
    ("config tensorboard 'false'", config_file("benchmark: digits\ntensorboard: 'false'\n"),
     "tensorboard must be true or false"),
    ("config channels_last 1", config_file("benchmark: digits\nchannels_last: 1\n"),
     "channels_last must be true or false"),
    ("config wandb null", config_file("benchmark: digits\nwandb: null\n"), "wandb must be true or false (got None)"),
    ("config device null", big_file("c.yaml", "benchmark: digits\ndevice: null\n", "run", "--config", "c.yaml"),
     "device must be a string (got None)"),
    ("config device a number", big_file("c.yaml", "benchmark: digits\ndevice: 5\n", "run", "--config", "c.yaml"),
     "device must be a string (got 5)"),
    ("config benchmark a number", big_file("c.yaml", "benchmark: 5\n", "run", "--config", "c.yaml"),
     "benchmark must be a string (got 5)"),
    ("config policy a number", config_file("benchmark: digits\npolicy: 5\n"), "policy must be a string (got 5)"),
    ("config policy a list", config_file("benchmark: digits\npolicy: [mixup]\n"), "policy must be a string"),
    ("config learner a mapping", config_file("benchmark: digits\nlearner: {a: 1}\n"),
     "learner must be a string or null"),
    ("config seed a fraction", config_file("benchmark: digits\nseed: 1.5\n"), "seed must be an integer (got 1.5)"),
    ("config seed negative", config_file("benchmark: digits\nseed: -1\n"), "--seed must be an integer in [0, 2**32)"),
    ("config data_root a number", config_file("benchmark: digits\ndata_root: 7\n"), "data_root must be a string"),
    ("config precision a number", config_file("benchmark: digits\nprecision: 16\n"), "precision must be a string"),
    ("config workers negative", config_file("benchmark: digits\nworkers: -1\n"), "--workers must be a non-negative"),
    ("config policy options a list", config_file("benchmark: digits\npolicy_options: [1]\n"),
     "policy_options must be a mapping of string: any value"),
    ("config integer option keys", config_file("benchmark: digits\npolicy: mixup\npolicy_options: {1: 2}\n"),
     "policy_options must be a mapping of string: any value (got {1: 2})"),
    ("config option a string for a number", config_file("benchmark: digits\npolicy: mixup\npolicy_options: "
                                                        "{alpha: '0.4'}\n"),
     "policy 'mixup': option alpha must be a number (got '0.4')"),
    ("config option a boolean for a number", config_file("benchmark: digits\npolicy: mixup\npolicy_options: "
                                                         "{alpha: true}\n"),
     "option alpha must be a number (got True)"),
    ("config model option a fraction", config_file("benchmark: digits\nmodel_options: {width: 2.5}\n"),
     "model 'small-cnn': option width must be an integer (got 2.5)"),
    ("config learner option 'yes'", config_file("benchmark: digits\nlearner_options: {nesterov: 'yes'}\n"),
     "learner 'supervised': option nesterov must be true or false (got 'yes')"),
    ("config learning rate 1e308", config_file('{"benchmark": "digits", "learner_options": {"lr": 1e308}}',
                                               name="c.json"), "lr must be a positive number within float32's range"),
    ("config learning rate NaN", config_file("benchmark: digits\nlearner_options: {lr: .nan}\n"),
     "lr must be a positive number (got nan)"),
    ("config unknown option", config_file("benchmark: digits\npolicy: mixup\npolicy_options: {alhpa: 1.0}\n"),
     "policy 'mixup' has no option alhpa"),
    ("config duplicate YAML keys", big_file("c.yaml", "benchmark: digits\nepochs: 1\nepochs: 2\n", "run", "--config",
                                            "c.yaml"), "gives the key 'epochs' twice"),
    ("config duplicate JSON keys", big_file("c.json", '{"benchmark": "digits", "seed": 1, "seed": 2}', "run",
                                            "--config", "c.json"), "gives the key 'seed' twice"),
    ("config duplicate nested keys", config_file("benchmark: digits\npolicy: mixup\npolicy_options: {alpha: 1.0, "
                                                 "alpha: 2.0}\n"), "gives the key 'alpha' twice"),
    ("config YAML alias bomb", big_file("c.yaml", ALIAS_BOMB + "benchmark: *g\n", "run", "--config", "c.yaml"),
     "holds more than 100000 values once its aliases are expanded"),
    ("config YAML alias that contains itself", big_file("c.yaml", "benchmark: &a [*a]\n", "run", "--config", "c.yaml"),
     "config file c.yaml"),
    ("config JSON nested too deeply", big_file("c.json", "[" * 100_000 + "]" * 100_000, "run", "--config", "c.json"),
     "nested too deeply"),
    ("config file too large", big_file("c.yaml", "benchmark: digits\n" + "# padding\n" * 120_000, "run", "--config",
                                       "c.yaml"), "is larger than 1 MiB: not a config file"),
    ("config not UTF-8", lambda tmp, t: ((tmp / "c.yaml").write_bytes(b"benchmark: \xff\xfe\n"), ["run", "--config",
                                                                                                   "c.yaml"])[1],
     "c.yaml cannot be read as the config file (not UTF-8"),
    ("config YAML python tag", big_file("c.yaml", "benchmark: !!python/object/apply:os.system ['touch pwned.txt']\n",
                                        "run", "--config", "c.yaml"), "is not valid JSON or YAML"),
    ("config empty file", big_file("c.yaml", "", "run", "--config", "c.yaml"), "must hold a mapping of settings"),
    ("config a non-string key", big_file("c.yaml", "benchmark: digits\n1: 2\n", "run", "--config", "c.yaml"),
     "unknown setting 1"),
    ("config a sweep's variants", config_file("benchmark: digits\nvariants: {a: {policy: none}}\n"),
     "unknown setting variants"),
    ("config naming a policy module", config_file("benchmark: digits\npolicy: '{code}:Policy'\n"),
     "names code (policy 'evil_"),
    ("config naming subprocess.run", config_file("benchmark: digits\npolicy: subprocess:run\npolicy_options: "
                                                 "{args: [touch, pwned.txt]}\n"),
     "names code (policy 'subprocess:run')"),
    ("config naming torch.load", config_file("benchmark: digits\nmodel: torch:load\nmodel_options: {f: x.pt, "
                                             "weights_only: false}\n"), "names code (model 'torch:load')"),
    ("config naming a benchmark module", big_file("c.yaml", "benchmark: os:getcwd\n", "run", "--config", "c.yaml"),
     "names code (benchmark 'os:getcwd')"),
    ("config naming a learner module", config_file("benchmark: digits\nlearner: '{code}:Policy'\n"),
     "names code (learner 'evil_"),
]


SWEEP_FILES = [
    ("sweep file a FIFO", lambda tmp, t: (fifo(tmp / "s.yaml"), ["compare", "digits", "--sweep", "s.yaml"])[1],
     "s.yaml is a FIFO"),
    ("sweep file /dev/zero", args("compare", "digits", "--sweep", "/dev/zero"), "is a character device"),
    ("sweep variant named like the table", sweep_file("variants: {comparison.csv: {policy: none}}\n"),
     "variant name 'comparison.csv' is the name of a file the comparison writes"),
    ("sweep variant named jobs.json", sweep_file("variants: {jobs.json: {policy: none}}\n"),
     "variant name 'jobs.json' is the name of a file"),
    ("sweep variant name of 300 characters", sweep_file("variants: {" + "v" * 300 + ": {policy: none}}\n"),
     "is 300 bytes long"),
    ("sweep variant asking for downloaded weights", sweep_file(
        "variants: {a: {policy: none, model: timm/resnet18, model_options: {pretrained: true}}}\n"),
     "which downloads weights"),
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
    ("sweep variants a list", sweep_file("variants: [none, mixup]\n"), "needs 'variants': a mapping"),
    ("sweep variant a string", sweep_file("variants: {a: none}\n"), "variant a must be a mapping"),
    ("sweep variant policy a number", sweep_file("variants: {a: {policy: 5}}\n"), "variant a: policy must be a string"),
    ("sweep variant option of the wrong type", sweep_file("variants: {a: {policy: mixup, policy_options: {alpha: "
                                                          "x}}}\n"), "option alpha must be a number (got 'x')"),
    ("sweep variant name with a space", sweep_file("variants: {'a b': {policy: none}}\n"),
     "variant name 'a b' must be letters"),
    ("sweep variant name a boolean", sweep_file("variants: {true: {policy: none}}\n"), "variant name True must be"),
    ("sweep variant unknown key", sweep_file("variants: {a: {policy: none, epochs: 3}}\n"),
     "variant a has unknown setting epochs"),
    ("sweep duplicate variant names", sweep_file("variants: {a: {policy: none}, a: {policy: mixup}}\n"),
     "gives the key 'a' twice"),
    ("sweep seeds with a string", sweep_file("seeds: [0, a]\nvariants: {a: {policy: none}}\n"),
     "seeds must be a list of integers"),
    ("sweep seeds a number", sweep_file("seeds: 3\nvariants: {a: {policy: none}}\n"),
     "seeds must be a list of integers"),
    ("sweep seeds booleans", sweep_file("seeds: [true]\nvariants: {a: {policy: none}}\n"),
     "seeds must be a list of integers"),
    ("sweep shared epochs a string", big_file("s.yaml", "epochs: two\nvariants: {a: {policy: none}}\n", "compare",
                                              "digits", "--sweep", "s.yaml"), "epochs must be an integer or null"),
    ("sweep a shared seed", sweep_file("seed: 3\nvariants: {a: {policy: none}}\n"), "unknown setting seed"),
    ("sweep YAML alias bomb", sweep_file(ALIAS_BOMB + "variants: {v: {policy: none}}\n"),
     "holds more than 100000 values"),
    ("sweep variant naming a policy module", sweep_file("variants: {a: {policy: '{code}:Policy'}}\n"),
     "variant a, names code (policy 'evil_"),
    ("sweep variant naming subprocess.run", sweep_file("variants: {a: {policy: subprocess:run, policy_options: "
                                                       "{args: [touch, pwned.txt]}}}\n"), "names code (policy "),
    ("sweep variant naming a model module", sweep_file("variants: {a: {policy: none, model: '{code}:net'}}\n"),
     "names code (model 'evil_"),
    ("sweep naming a benchmark module", big_file("s.yaml", "benchmark: os:getcwd\nvariants: {a: {policy: none}}\n",
                                                 "compare", "--sweep", "s.yaml"), "names code (benchmark 'os:getcwd')"),
]


RUN_FOLDERS = [
    ("a lock hard-linked to a file outside", hard_linked_lock, "other name(s) (a hard link)"),
    ("config.json a FIFO, with --resume", folder_with(lambda run, tmp: fifo(run / "config.json"), *DIGITS, "--out",
                                                      "RUN", "--resume", finished=False), "config.json is a FIFO"),
    ("config.json a 16 GiB sparse file, with --resume", folder_with(
        lambda run, tmp: sparse(run / "config.json"), *DIGITS, "--out", "RUN", "--resume", finished=False),
     "is larger than 1 MiB"),
    ("checkpoint.pt a FIFO, with --resume", folder_with(lambda run, tmp: fifo(run / "checkpoint.pt"), *DIGITS,
                                                        "--out", "RUN", "--resume", finished=False),
     "checkpoint.pt is a FIFO"),
    ("the manifest a FIFO, with --overwrite", folder_with(lambda run, tmp: fifo(run / MANIFEST), *DIGITS, "--out",
                                                          "RUN", "--overwrite"), "is a FIFO"),
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
    ("crafted checkpoint", crafted_checkpoint, "cannot be read as a checkpoint"),
    ("manifest listing a parent path", folder_with(manifest_files(lambda tmp: ["config.json", "../outside.txt"]),
                                                   *DIGITS, "--out", "RUN", "--overwrite"),
     "'../outside.txt' is not a name inside the run folder"),
    ("manifest listing an absolute path", folder_with(manifest_files(lambda tmp: [str(tmp / "outside.txt")]),
                                                      *DIGITS, "--out", "RUN", "--overwrite"),
     "is not a name inside the run folder"),
    ("manifest listing a folder outside", folder_with(manifest_files(lambda tmp: ["../outside/"]), *DIGITS, "--out",
                                                      "RUN", "--overwrite"), "is not a name inside the run folder"),
    ("manifest listing a tree outside", folder_with(manifest_files(lambda tmp: ["../outside/**"]), *DIGITS, "--out",
                                                    "RUN", "--overwrite"), "is not a name inside the run folder"),
    ("manifest listing a path through ..", folder_with(manifest_files(lambda tmp: ["tensorboard/../../outside.txt"]),
                                                       *DIGITS, "--out", "RUN", "--overwrite"), "is not a name inside"),
    ("manifest listing the folder itself", folder_with(manifest_files(lambda tmp: ["."]), *DIGITS, "--out", "RUN",
                                                       "--overwrite"), "'.' is not a name inside the run folder"),
    ("manifest files a string", folder_with(manifest_files(lambda tmp: "ab"), *DIGITS, "--out", "RUN", "--overwrite"),
     "its files must be a list of names, not 'ab'"),
    ("manifest files numbers", folder_with(manifest_files(lambda tmp: [1, 2]), *DIGITS, "--out", "RUN",
                                           "--overwrite"), "a manifest entry must be a string, not 1"),
    ("manifest a list", folder_with(lambda out, tmp: (out / MANIFEST).write_text("[]"), *DIGITS, "--out", "RUN",
                                    "--overwrite"), "is not a metaaugment run manifest"),
    ("manifest of another format", folder_with(edit_json(MANIFEST, lambda m, tmp: {**m, "format": "x/9"}), *DIGITS,
                                               "--out", "RUN", "--overwrite"), "is not a metaaugment run manifest"),
    ("lock a link to the user's file", folder_with(replace_lock(lock_link), *DIGITS, "--out", "RUN", "--resume",
                                                   finished=False), "is a symbolic link: a run never writes through"),
    ("lock a folder", folder_with(replace_lock(lambda lock, tmp: lock.mkdir()), *DIGITS, "--out", "RUN", "--resume",
                                  finished=False), "is not a regular file"),
    ("lock a FIFO", folder_with(replace_lock(lambda lock, tmp: os.mkfifo(lock)), *DIGITS, "--out", "RUN", "--resume",
                                finished=False), "is not a regular file"),
    ("config.json a list", folder_with(lambda out, tmp: (out / "config.json").write_text("[]"), *DIGITS, "--out",
                                       "RUN", "--resume"), "run configuration"),
    ("config.json of the wrong types", folder_with(edit_json("config.json", lambda c, tmp: {**c, "epochs": "1"}),
                                                   *DIGITS, "--out", "RUN", "--resume"),
     "epochs must be an integer or null (got '1')"),
    ("config.json with an unknown key", folder_with(edit_json("config.json", lambda c, tmp: {**c, "x": 1}), *DIGITS,
                                                    "--out", "RUN", "--resume"), "has unknown setting 'x'"),
    ("checkpoint training not a mapping", folder_with(edit_checkpoint(lambda s: {**s, "training": 5}), *DIGITS,
                                                      "--out", "RUN", "--resume", finished=False),
     "is damaged (training must be a mapping"),
    ("checkpoint without its RNG state", folder_with(edit_checkpoint(lambda s: {k: v for k, v in s.items()
                                                                                if k != "rng"}), *DIGITS, "--out",
                                                     "RUN", "--resume", finished=False), "rng must be a mapping"),
    ("checkpoint model of strings", folder_with(edit_checkpoint(lambda s: {**s, "model": {"w": "x"}}), *DIGITS,
                                                "--out", "RUN", "--resume", finished=False), "model must be a mapping"),
    ("checkpoint training state of another run", folder_with(edit_checkpoint(
        lambda s: {**s, "training": {**s["training"], "extra": 1}}), *DIGITS, "--out", "RUN", "--resume",
        finished=False), "cannot be restored into this run (TypeError"),
    ("checkpoint weights of other shapes", folder_with(edit_checkpoint(
        lambda s: {**s, "model": shrunk(s["model"])}), *DIGITS, "--out", "RUN", "--resume",
        finished=False), "cannot be restored into this run (RuntimeError"),
    ("results.json a list", folder_with(lambda out, tmp: (out / "results.json").write_text("[1]"), *DIGITS, "--out",
                                        "RUN", "--resume"), "the results file is damaged (it holds a list"),
    ("results.json metrics of strings", folder_with(edit_json("results.json", lambda r, tmp: {
        **r, "metrics": {"test_accuracy": "high"}}), *DIGITS, "--out", "RUN", "--resume"), "metrics must be a mapping"),
    ("results.json of an unknown kind", folder_with(edit_json("results.json", lambda r, tmp: {**r, "kind": "magic"}),
                                                    *DIGITS, "--out", "RUN", "--resume"),
     "kind must be one of classification"),
    ("results.json without its wall time", folder_with(edit_json("results.json", lambda r, tmp: {
        k: v for k, v in r.items() if k != "wall_time_s"}), *DIGITS, "--out", "RUN", "--resume"),
     "wall_time_s must be a number"),
    ("wandb.json damaged", folder_with(lambda out, tmp: (out / "wandb.json").write_text('{"id": "../../x"}'), *DIGITS,
                                       "--out", "RUN", "--resume", "--wandb", finished=False),
     "wandb.json is damaged"),
    ("tensorboard a link", folder_with(lambda out, tmp: ((tmp / "elsewhere").mkdir(), (out / "tensorboard").symlink_to(
        tmp / "elsewhere")), *DIGITS, "--out", "RUN", "--resume", "--tensorboard", finished=False),
     "tensorboard is a link or a file"),
]


POLICY_FROM = [
    ("policy-from a missing folder", args("run", "digits", "--policy", "metaaugment", "--policy-from", "/nonexistent"),
     "not a finished run folder"),
    ("policy-from with a fixed policy", args("run", "digits", "--policy", "mixup", "--policy-from", "/nonexistent"),
     "applies to policies that can be transferred"),
    ("policy-from a run of another benchmark", policy_from_other_benchmark, "does not fit benchmark 'digits'"),
    ("policy-from a truncated config", policy_from_truncated_config, "run configuration is damaged"),
    ("crafted policy-from checkpoint", crafted_policy_from, "cannot be read as a checkpoint"),
    ("policy-from a folder naming a model module", folder_with(lambda out, tmp: (
        edit_json("config.json", lambda c, tmp: {**c, "policy": "metaaugment"})(out, tmp),
        config_naming_code("model", "{module}:net")(out, tmp)), "run", "digits", "--policy", "metaaugment", "--epochs",
        "1", "--device", "cpu", "--policy-from", "RUN", "--out", "new"), "its config.json names code (model 'evil_"),
    ("policy-from a folder with a damaged config", folder_with(edit_json("config.json", lambda c, tmp: {
        **c, "policy": "metaaugment", "seed": "x"}), "run", "digits", "--policy", "metaaugment", "--epochs", "1",
        "--device", "cpu", "--policy-from", "RUN", "--out", "new"), "seed must be an integer"),
    ("policy-from a checkpoint without a policy", folder_with(lambda out, tmp: (
        edit_json("config.json", lambda c, tmp: {**c, "policy": "metaaugment"})(out, tmp),
        edit_checkpoint(lambda s: {k: v for k, v in s.items() if k != "policy"})(out, tmp)), "run", "digits",
        "--policy", "metaaugment", "--epochs", "1", "--device", "cpu", "--policy-from", "RUN", "--out", "new"),
     "policy must be a mapping"),
]


DATA = [
    ("CIFAR batch allocating 10 TB from bytearray", cifar_batch(
        lambda e, t: {**e, b"data": Reduced(bytearray, 10**13)}), "refusing bytearray(<count>)"),
    ("CIFAR batch with an unknown codec", cifar_batch(
        lambda e, t: {**e, b"data": Reduced(codecs.encode, "x", "nosuch")}), "refusing _codecs.encode"),
    ("CIFAR batch a FIFO", lambda tmp, t: (cifar_batch(lambda e, t2: e)(tmp, t),
                                           fifo(tmp / "data" / "cifar-10-batches-py" / "data_batch_1"))[0],
     "data_batch_1 is a FIFO"),
    ("missing CIFAR", args("run", "cifar10", "--data-root", "nodata"), "cifar-10-batches-py"),
    ("missing mini-ImageNet", args("run", "mini-imagenet", "--data-root", "nodata"), "mini-imagenet-cache-train.pkl"),
    ("missing Omniglot", args("run", "omniglot", "--data-root", "nodata"), "omniglot data not found"),
    ("missing image folders", args("run", "image-folder", "--data-root", "nodata"), "must hold train/, val/ and test/"),
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
    ("crafted CIFAR batch", cifar_batch(lambda e, t: {b"data": Payload(t / MARKER), b"labels": []}),
     "refusing to load"),
    ("crafted mini-ImageNet cache", mini_imagenet(lambda e, t: {"image_data": Payload(t / MARKER), "class_dict": {}}),
     "refusing to load"),
    ("image-folder decompression bomb", image_folder_with("train", png_header(20_000, 20_000)),
     "cannot read image"),
    ("streamed decompression bomb", classification_folder_with("train", png_header(20_000, 20_000)),
     "cannot read image"),
    ("a bad image in the test split, before training", classification_folder_with("test", b"not an image"),
     "cannot read image"),
    ("streamed batch larger than the training split", classification_folder_with("train", tiny_png(),
                                                                                  "--batch-size", "64"),
     "--batch-size 64 exceeds the 6 training samples of 'image-classification-folder'"),
    ("CIFAR empty test batch", cifar_batches(["test_batch"], empty_batch), "the test split of 'cifar10' holds no"),
    ("CIFAR empty training batches", cifar_batches([f"data_batch_{i}" for i in range(1, 6)], empty_batch),
     "holds no samples"),
]


EVAL_EXPORT = [
    ("export into export/ linked outside", folder_with(link_in_place("export"), "export", "RUN"),
     "export is a symbolic link"),
    ("eval of a folder whose config.json is a FIFO", folder_with(lambda run, tmp: fifo(run / "config.json"), "eval",
                                                                 "RUN", "--device", "cpu"), "config.json is a FIFO"),
    ("eval of a folder whose results.json is /dev/zero", folder_with(
        lambda run, tmp: ((run / "results.json").unlink(), (run / "results.json").symlink_to("/dev/zero")), "eval",
        "RUN", "--device", "cpu"), "results.json is a symbolic link"),
    ("eval of a folder naming a policy module", folder_with(config_naming_code("policy"), "eval", "RUN", "--device",
                                                            "cpu"), "its config.json names code (policy 'evil_"),
    ("eval of a folder naming a model module", folder_with(config_naming_code("model", "{module}:net"), "eval",
                                                           "RUN", "--device", "cpu"), "names code (model 'evil_"),
    ("eval of a folder naming subprocess.run", folder_with(config_naming_code("policy", "subprocess:run"), "eval",
                                                           "RUN", "--device", "cpu"), "names code (policy 'subprocess"),
    ("eval of a folder naming a benchmark module", folder_with(config_naming_code("benchmark", "os:getcwd"), "eval",
                                                               "RUN", "--device", "cpu"), "names code (benchmark"),
    ("export of a folder naming a policy module", folder_with(config_naming_code("policy"), "export", "RUN"),
     "its config.json names code (policy 'evil_"),
    ("export of a folder naming torch.load", folder_with(config_naming_code("model", "torch:load"), "export", "RUN"),
     "names code (model 'torch:load')"),
    ("eval of a crafted checkpoint", folder_with(lambda out, tmp: torch.save({"format": "metaaugment-checkpoint/2",
                                                                              "model": Payload(tmp / MARKER)},
                                                                             out / "checkpoint.pt"), "eval", "RUN",
                                                 "--device", "cpu"), "cannot be read as a checkpoint"),
    ("eval of a damaged config", folder_with(edit_json("config.json", lambda c, tmp: {**c, "device": None}), "eval",
                                             "RUN", "--device", "cpu"), "device must be a string (got None)"),
    ("eval of a damaged training state", folder_with(edit_checkpoint(
        lambda s: {**s, "training": {"nonsense": 1}}), "eval", "RUN", "--device", "cpu"),
     "its checkpoint's training state is damaged"),
    ("export of a checkpoint whose model does not fit", folder_with(edit_checkpoint(
        lambda s: {**s, "model": shrunk(s["model"])}), "export", "RUN"), "does not fit"),
    ("export into a file", folder_with(lambda out, tmp: (tmp / "afile").write_text("x"), "export", "RUN", "--out",
                                       "afile"), "--out afile is a file, not a folder"),
]

COMPARISON_FOLDERS = [
    ("--device cuda without one, through the local launcher", comparison_with(
        lambda cmp, tmp, templates: None, "--device", "cuda", "--launcher", "local"), "CUDA is not available here"),
    ("a variant's folder linked outside", comparison_with(lambda cmp, tmp, templates: link_in_place("none")(cmp, tmp)),
     "none is a symbolic link"),
    ("a run folder of a variant linked outside", comparison_with(
        lambda cmp, tmp, templates: link_in_place("none/seed0")(cmp, tmp)), "seed0 is a symbolic link"),
    ("the job logs' folder linked outside", comparison_with(
        lambda cmp, tmp, templates: link_in_place(".jobs")(cmp, tmp), "--launcher", "local"),
     ".jobs is a symbolic link"),
    ("jobs.json a FIFO, with --status", comparison_with(lambda cmp, tmp, templates: fifo(cmp / "jobs.json"),
                                                       "--status"), "jobs.json is a FIFO"),
    ("jobs.json a 16 GiB sparse file, with --status", comparison_with(
        lambda cmp, tmp, templates: sparse(cmp / "jobs.json"), "--status"), "is larger than 1 MiB"),
    ("jobs.json not JSON", jobs_json("{"), "cannot be read as the record of the comparison's jobs"),
    ("jobs.json a list", jobs_json("[]"), "jobs.json is damaged"),
    ("jobs.json with a shell command for an id", jobs_json('{"none/seed0": {"job_id": "1; touch pwned.txt", '
                                                           '"launcher": "slurm"}}'), "jobs.json is damaged"),
    ("jobs.json with an unknown launcher", jobs_json('{"none/seed0": {"job_id": "1", "launcher": "cloud"}}'),
     "jobs.json is damaged"),
    ("jobs.json with an extra key", jobs_json('{"none/seed0": {"job_id": "1", "launcher": "local", "x": 1}}'),
     "jobs.json is damaged"),
    ("jobs.json with a number for an id", jobs_json('{"none/seed0": {"job_id": 1, "launcher": "local"}}'),
     "jobs.json is damaged"),
    ("a compared run with damaged results", comparison_with(finished_in_comparison(
        lambda run, tmp: (run / "results.json").write_text('{"metrics": 1}'))), "the results file is damaged"),
    ("a compared run with a damaged config", comparison_with(finished_in_comparison(
        edit_json("config.json", lambda c, tmp: {**c, "seed": "0"}))), "seed must be an integer (got '0')"),
    ("a compared run with a truncated config", comparison_with(finished_in_comparison(
        lambda run, tmp: (run / "config.json").write_text('{"bench'))), "the run configuration is damaged"),
    ("the table of 10,000 other variants", comparison_with(lambda cmp, tmp, templates: (
        cmp / "comparison.csv").write_text("policy,x\n" + "".join(f"variant-{i:05d},1\n" for i in range(10_000)))),
     "holds the table of another comparison (variant-00000, variant-00001"),
    ("a table over 1 MiB", comparison_with(lambda cmp, tmp, templates: (cmp / "comparison.csv").write_text(
        "policy,x\n" + "v,1\n" * 300_000)), "is larger than 1 MiB: not a comparison table"),
    ("a table naming a variant with a NUL", comparison_with(lambda cmp, tmp, templates: (
        cmp / "comparison.csv").write_bytes(b"policy,x\nab\x00cd,1\n")), "another comparison ('ab\\x00cd')"),
    ("a folder in the table's place", comparison_with(lambda cmp, tmp, templates: (cmp / "comparison.md").mkdir()),
     "comparison.md is a link or a folder"),
    ("a link in the table's place, with --overwrite", comparison_with(lambda cmp, tmp, templates: (
        (tmp / "mine.csv").write_text("policy,x\nnone,1\n"), (cmp / "comparison.csv").symlink_to(tmp / "mine.csv")),
        "--overwrite"), "comparison.csv is a link or a folder"),
]

ENVIRONMENT = [
    ("a full disk", failing_writes(errno.ENOSPC), "No space left on device"),
    ("a read-only file system", failing_writes(errno.EROFS), "Read-only file system"),
    ("a folder the user may not write", failing_writes(errno.EACCES), "Permission denied"),
    ("a disk that fills as a new run's lock is written",
     disk_full_at_the_lock(lambda tmp, t: [*DIGITS, "--out", str(tmp / "new" / "run")]), "lock: No space left"),
    ("a disk that fills as a resumed run's lock is written", disk_full_at_the_lock(
        folder_with(lambda run, tmp: None, *DIGITS, "--out", "RUN", "--resume", finished=False)),
     "lock: No space left"),
]

SURFACES = {"command line": COMMAND_LINE, "plug-ins": PLUGINS, "config files": CONFIG_FILES,
            "sweep files": SWEEP_FILES, "run folders": RUN_FOLDERS, "--policy-from folders": POLICY_FROM,
            "eval and export": EVAL_EXPORT, "comparison folders": COMPARISON_FOLDERS, "data on disk": DATA,
            "disk and permissions": ENVIRONMENT}
BAD_INPUTS = [(f"{surface}: {name}", setup, expected) for surface, cases in SURFACES.items()
              for name, setup, expected in cases]


@pytest.mark.parametrize("setup, expected", [case[1:] for case in BAD_INPUTS], ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(setup, expected, tmp_path, monkeypatch, capsys,
                                                          finished_run, finished_glyphs_run, table_cache):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("METAAUG_CACHE", str(table_cache))  # rendered glyphs once for the table, not per case
    command = setup(tmp_path, {"digits": finished_run, "glyphs": finished_glyphs_run, "monkeypatch": monkeypatch})
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(command)
    captured = capsys.readouterr()
    assert exit_info.value.code == 2, captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], captured.err
    assert len(lines[0]) < 1000, "one readable line, whatever a file holds"
    assert "Traceback" not in captured.err and captured.out == ""
    assert snapshot(tmp_path) == before, "a failed command must leave nothing behind and change nothing"
    assert not (tmp_path / MARKER).exists(), "a crafted file executed code"


def test_docs_state_the_number_of_cases_per_surface():
    """docs/reliability.md's table of bad inputs counts exactly these tables."""
    import re

    text = (Path(__file__).parents[1] / "docs" / "reliability.md").read_text()
    documented = {m.group(1): int(m.group(2)) for m in re.finditer(r"^\| (.+?) \| (\d+) \|", text, re.MULTILINE)}
    counted = {**{surface: len(cases) for surface, cases in SURFACES.items()}, "exported files": len(BAD_EXPORTS)}
    assert {k: documented.get(k) for k in counted} == counted
    assert documented.get("total") == sum(counted.values())


# -- exported files: read by the Python API (load_exported_model / load_exported_policy) ---------
@pytest.fixture(scope="module")
def exported(finished_run, tmp_path_factory) -> Path:
    from metaaugment.run.export import export_run

    folder = tmp_path_factory.mktemp("export")
    export_run(finished_run, folder)
    return folder


def export_changed(name: str, change):
    """The exported file `name` (model.pt, policy.pt) rewritten as change(contents, tmp)."""
    def setup(tmp, folder):
        contents = torch.load(folder / name, weights_only=True)
        torch.save(change(contents, tmp), tmp / name)
        for other in ("model.pt", "policy.pt"):
            if other != name:
                shutil.copy(folder / other, tmp / other)
    return setup


def export_naming(name: str, key: str, value: str, **options):
    def change(contents, tmp):
        reference = value.replace("{module}", code_module(tmp, tmp / MARKER))
        return {**contents, key: reference, f"{key}_options": options}
    return export_changed(name, change)


def export_bytes(name: str, make):
    def setup(tmp, folder):
        shutil.copy(folder / "model.pt", tmp / "model.pt")
        shutil.copy(folder / "policy.pt", tmp / "policy.pt")
        (tmp / name).write_bytes(make(tmp, (folder / name).read_bytes()))
    return setup


BAD_EXPORTS = [
    ("model naming a module", export_naming("model.pt", "model", "{module}:net"), "names code (model 'evil_"),
    ("model naming torch.load", export_naming("model.pt", "model", "torch:load", f="x.pt", weights_only=False),
     "names code (model 'torch:load')"),
    ("policy naming a module", export_naming("policy.pt", "policy", "{module}:Policy"), "names code (policy 'evil_"),
    ("policy naming subprocess.run", export_naming("policy.pt", "policy", "subprocess:run", args=["touch", MARKER]),
     "names code (policy 'subprocess:run')"),
    ("model a crafted pickle", export_bytes("model.pt", lambda tmp, data: pickle.dumps(Payload(tmp / MARKER))),
     "cannot be read as a metaaugment model export"),
    ("policy a crafted torch file", lambda tmp, folder: (
        export_bytes("policy.pt", lambda t, d: b"")(tmp, folder),
        torch.save({"format": "metaaugment.export/1", "policy": Payload(tmp / MARKER)}, tmp / "policy.pt")),
     "cannot be read as a metaaugment policy export"),
    ("model truncated", export_bytes("model.pt", lambda tmp, data: data[: len(data) // 2]),
     "cannot be read as a metaaugment model export"),
    ("model of another format", export_changed("model.pt", lambda c, tmp: {**c, "format": "x"}),
     "is not a metaaugment model export"),
    ("model spec of the wrong types", export_changed("model.pt", lambda c, tmp: {
        **c, "spec": {**c["spec"], "input_shape": "big"}}), "spec input_shape must be a list of integers"),
    ("model spec with an unknown field", export_changed("model.pt", lambda c, tmp: {
        **c, "spec": {**c["spec"], "loader": "os:system"}}), "spec has unknown fields"),
    ("model weights not tensors", export_changed("model.pt", lambda c, tmp: {**c, "state_dict": {"w": 1}}),
     "state_dict must be a mapping of string: Tensor"),
    ("model weights of other shapes", export_changed("model.pt", lambda c, tmp: {
        **c, "state_dict": shrunk(c["state_dict"])}),
     "its weights do not fit its model"),
    ("model option of the wrong type", export_changed("model.pt", lambda c, tmp: {
        **c, "model_options": {"width": "big"}}), "option width must be an integer (got 'big')"),
    ("model options not a mapping", export_changed("model.pt", lambda c, tmp: {**c, "model_options": [1]}),
     "model_options must be a mapping"),
    ("policy context with an unknown key", export_changed("policy.pt", lambda c, tmp: {
        **c, "context": {**c["context"], "model": 1}}), "context may hold only batch_size"),
    ("policy option of the wrong type", export_changed("policy.pt", lambda c, tmp: {
        **c, "policy": "mixup", "policy_options": {"alpha": "x"}}), "option alpha must be a number (got 'x')"),
    ("policy state of another policy", export_changed("policy.pt", lambda c, tmp: {
        **c, "policy": "metaaugment", "state_dict": {"x": 1}}), "its state does not fit policy 'metaaugment'"),
]


@pytest.mark.parametrize("setup, expected", [case[1:] for case in BAD_EXPORTS], ids=[case[0] for case in BAD_EXPORTS])
def test_a_bad_exported_file_is_one_user_error_and_runs_no_code(setup, expected, exported, tmp_path, monkeypatch):
    from metaaugment.export import load_exported_model, load_exported_policy

    monkeypatch.chdir(tmp_path)
    setup(tmp_path, exported)
    with pytest.raises(UserError) as error:
        load_exported_policy(tmp_path / "policy.pt", load_exported_model(tmp_path / "model.pt"))
    assert expected in str(error.value) and len(str(error.value).splitlines()) == 1
    assert not (tmp_path / MARKER).exists(), "a crafted file executed code"


# -- the trust flag: what it allows, and what it still checks ----------------------------------------
PLUGIN = """from metaaugment import BatchPolicy


class Shift(BatchPolicy):
    \"\"\"Roll images one pixel.\"\"\"

    def augment(self, batch, ctx):
        return batch.replace(inputs=batch.inputs.roll(1, -1))
"""


def test_trust_code_lets_a_file_name_a_plugin_and_typing_it_needs_no_flag(tmp_path, monkeypatch, capsys):
    from metaaugment.registry import POLICIES

    with POLICIES.scoped():  # the plug-in's registration ends with the test
        trust_code_cases(tmp_path, monkeypatch, capsys)
    sys.modules.pop("shift_plugin", None)


def trust_code_cases(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "shift_plugin.py").write_text(PLUGIN)
    (tmp_path / "cfg.yaml").write_text("benchmark: digits\npolicy: shift_plugin:Shift\nepochs: 1\n")
    command = ["run", "--config", "cfg.yaml", "--device", "cpu", "-q", "--out", "run"]
    with pytest.raises(SystemExit) as exit_info:
        main(command)
    assert exit_info.value.code == 2 and "--trust-code" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # the same reference typed on the command line: the user named it
        main([*command, "--policy", "shift_plugin:Shift"])
    assert exit_info.value.code == 0, capsys.readouterr().err
    for extra in (["--trust-code"], []):  # eval reads the folder's config.json: a file
        with pytest.raises(SystemExit) as exit_info:
            main(["eval", "run", "--device", "cpu", *extra])
        assert exit_info.value.code == (0 if extra else 2), capsys.readouterr().err


def test_a_slurm_job_record_with_a_crafted_result_pickle_is_never_unpickled(tmp_path, monkeypatch, capsys):
    """`compare --status` asks SLURM (sacct) for a recorded job's state; the result pickle
    submitit would leave beside it is never loaded."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cmp" / ".submitit" / "42").mkdir(parents=True)
    for name in ("42_0_result.pkl", "42_submitted.pkl"):
        (tmp_path / "cmp" / ".submitit" / "42" / name).write_bytes(pickle.dumps(Payload(tmp_path / MARKER)))
    (tmp_path / "cmp" / "jobs.json").write_text('{"none/seed0": {"job_id": "42", "launcher": "slurm"}}')
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "digits", "--policies", "none", "--seeds", "0", "--out", "cmp", "--status"])
    assert exit_info.value.code == 0
    assert "slurm job 42" in capsys.readouterr().out
    assert not (tmp_path / MARKER).exists(), "a job record's pickle executed code"


# -- run folders --------------------------------------------------------------------------------
def test_overwrite_removes_only_the_files_the_run_created(tmp_path):
    pytest.importorskip("torch.utils.tensorboard")
    out = tmp_path / "run"
    train(quick_config(epochs=1, policy="metaaugment", tensorboard=True), out, show_progress=False)
    (out / "notes.txt").write_text("my notes")
    (out / "sub").mkdir()
    (out / "sub" / "data.csv").write_text("1,2")
    (out / "tensorboard" / "my-note.txt").write_text("a note in the run's tool folder")
    events = [p.name for p in (out / "tensorboard").iterdir() if p.name.startswith("events.")]
    stale = out / ".checkpoint.pt.abc123.metaaug-tmp"
    stale.write_bytes(b"half a checkpoint")
    train(quick_config(epochs=1, seed=1), out, overwrite=True, show_progress=False)
    assert (out / "notes.txt").read_text() == "my notes" and (out / "sub" / "data.csv").exists()
    assert (out / "tensorboard" / "my-note.txt").exists(), "a user's file in the run's sub-folder stays"
    assert not any((out / "tensorboard" / name).exists() for name in events), "the run's own event files go"
    assert not (out / "sampler_heatmap.png").exists(), "the earlier run's figure is its own: removed"
    assert not stale.exists(), "temporary files of killed writes are removed at the next start"
    assert (out / "results.json").exists()


@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_second_process_on_the_same_folder_is_refused(tmp_path, capsys):
    import subprocess
    import time

    out = tmp_path / "run"
    args = ["run", "digits", "--epochs", "30", "--device", "cpu", "--quiet", "--out", str(out)]
    first = subprocess.Popen([sys.executable, "-m", "metaaugment.cli.main", *args], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while not (out / "config.json").exists() and time.time() < deadline:
            time.sleep(0.02)
        capsys.readouterr()
        with pytest.raises(SystemExit) as second:  # the second process: this one
            main([*args, "--resume"])
        err = capsys.readouterr().err
        assert second.value.code == 2, err
        assert f"in use by another metaaugment process (pid {first.pid})" in err
        assert len(err.strip().splitlines()) == 1
    finally:
        first.kill()
        first.wait()
    # that the OS drops a killed process's lock, so --resume continues, is
    # test_resume.py's test_a_sigkilled_process_resumes_to_the_uninterrupted_results


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


def test_a_disk_that_fills_during_a_run_stops_it_in_one_line_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    import metaaugment.infra.files as files

    config = quick_config(epochs=1, checkpoint_every=5)
    reference = train(config, tmp_path / "ref", show_progress=False)
    writes, original = [0], files.os.fsync

    def fill_up(fd):
        writes[0] += 1
        # the manifest, config.json, the empty metrics.jsonl, the manifest again, step 5's checkpoint; then step 10's
        if writes[0] == 6:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return original(fd)

    monkeypatch.setattr(files.os, "fsync", fill_up)
    with pytest.raises(UserError, match=r"cannot write .*No space left on device"):
        train(config, tmp_path / "run", show_progress=False)
    monkeypatch.setattr(files.os, "fsync", original)
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["training"]["step"] == 5
    assert not list((tmp_path / "run").glob("*.metaaug-tmp"))
    resumed = train(config, tmp_path / "run", resume=True, show_progress=False)
    assert resumed["metrics"] == reference["metrics"]


def test_cache_is_rebuilt_when_a_drawing_changes(tmp_path, monkeypatch):
    from helpers import write_omniglot_fixture

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
    from helpers import write_omniglot_fixture

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


def test_no_file_makes_metaaugment_reach_the_network(tmp_path, monkeypatch, capsys):
    """timm's `pretrained` from a config file is one line before anything is built; an exported
    model.pt that says `pretrained: true` is rebuilt from its own weights: neither opens a
    socket (the network is blocked and every attempt recorded)."""
    import socket

    pytest.importorskip("timm")
    from metaaugment import TaskSpec, create_model
    from metaaugment.export import EXPORT_FORMAT, load_exported_model

    attempts = []

    def blocked(self, address, *rest):
        attempts.append(address)
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", blocked)
    monkeypatch.setattr(socket, "create_connection", lambda address, *a, **k: blocked(None, address))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cfg.yaml").write_text("benchmark: digits\nmodel: timm/test_resnet\n"
                                       "model_options: {pretrained: true}\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--config", "cfg.yaml", "--epochs", "1", "--device", "cpu"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(lines) == 1 and "downloads weights" in lines[0]
    spec = TaskSpec(num_classes=10, input_shape=(1, 8, 8), mean=(0.5,), std=(0.25,))
    model = create_model("timm/test_resnet", spec)
    torch.save({"format": EXPORT_FORMAT, "model": "timm/test_resnet", "model_options": {"pretrained": True},
                "spec": {"num_classes": 10, "input_shape": (1, 8, 8), "mean": (0.5,), "std": (0.25,)},
                "state_dict": model.state_dict()}, tmp_path / "model.pt")
    rebuilt = load_exported_model(tmp_path / "model.pt")
    assert all(torch.equal(rebuilt.state_dict()[k], v) for k, v in model.state_dict().items())
    assert attempts == []


def test_ctrl_c_inside_a_checkpoint_write_is_the_interrupt_and_keeps_the_old_file(tmp_path, monkeypatch):
    """torch.save turns an exception raised by the file's write into a RuntimeError of its own;
    a Ctrl-C there is still a KeyboardInterrupt (the interrupt line, exit 130), the previous
    checkpoint stays whole and no temporary file is left."""
    from metaaugment.infra import files

    target = tmp_path / "checkpoint.pt"
    files.save_torch(target, {"step": 1})
    real_fdopen = os.fdopen

    class Interrupting:
        """A file whose second write is interrupted by Ctrl-C."""

        def __init__(self, handle):
            self.handle, self.calls = handle, 0

        def write(self, data):
            self.calls += 1
            if self.calls == 2:
                raise KeyboardInterrupt
            return self.handle.write(data)

        def __getattr__(self, name):
            return getattr(self.handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    monkeypatch.setattr(files.os, "fdopen", lambda fd, mode="r", *a, **k: Interrupting(real_fdopen(fd, mode, *a, **k)))
    with pytest.raises(KeyboardInterrupt):
        files.save_torch(target, {"step": 2, "weights": torch.zeros(100_000)})
    monkeypatch.undo()
    assert torch.load(target, weights_only=True) == {"step": 1}
    assert not list(tmp_path.glob("*.metaaug-tmp"))


@pytest.mark.parametrize("make, command, expected", [
    (lambda tmp: os.mkfifo(tmp / "cfg.yaml"), ["run", "--config", "cfg.yaml"], "is a FIFO"),
    (lambda tmp: None, ["compare", "digits", "--sweep", "/dev/zero"], "is a character device"),
    (lambda tmp: (tmp / "cmp").mkdir() or sparse(tmp / "cmp" / "jobs.json", 1 << 40),
     ["compare", "digits", "--policies", "none", "--seeds", "0", "--out", "cmp", "--status"], "is larger than 1 MiB"),
], ids=["a FIFO as --config", "/dev/zero as --sweep", "a 1 TiB sparse jobs.json"])
def test_no_reader_hangs_or_fills_memory_on_an_odd_file(make, command, expected, tmp_path):
    """A real process, under a 20 s timeout and an 8 GiB address-space limit: the odd file is one
    line and exit 2 (a reader that blocked on the FIFO or read the file whole would fail here)."""
    import resource
    import subprocess

    make(tmp_path)
    limit = 8 << 30  # torch itself maps a few GiB of address space

    def cap_memory():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    code = "import sys\nfrom metaaugment.cli.main import main\nmain(sys.argv[1:])"
    result = subprocess.run([sys.executable, "-c", code, *command], cwd=tmp_path, capture_output=True, text=True,
                            timeout=20, preexec_fn=cap_memory)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr[-2000:]
    assert expected in result.stderr
