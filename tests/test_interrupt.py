"""Ctrl-C ends a real `metaaug run` process (its whole process group: DataLoader workers
too) within a couple of seconds, with exit code 130 and the line saying how to resume."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

STOP_WITHIN_S = 6.0  # the watchdog's 1.5 s grace, plus a loaded CI machine's slack

# A model whose forward is one matrix product of tens of seconds on two cores: a single C call,
# as one layer of a large model is on a CPU. Python runs its SIGINT handler only when the call
# returns; the watchdog must end the process anyway.
SLOW_MODEL = '''
import pathlib
import torch
from torch import nn


class OneLongCall(nn.Module):
    """A linear classifier behind one long matrix product."""

    def __init__(self, spec):
        super().__init__()
        self.head = nn.Linear(spec.channels * spec.input_shape[1] * spec.input_shape[2], spec.num_classes)
        self.big = torch.randn(9000, 9000)

    def forward(self, x):
        if self.training:  # a training step (the run's estimate before training is in eval mode)
            pathlib.Path("in-forward").touch()
        torch.mm(self.big, self.big)
        return self.head(x.flatten(1))
'''


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    """`metaaug ARGS` as the program, in its own process group (as a terminal's foreground job)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(cwd), *sys.path])}
    with open(cwd / "stderr.txt", "w") as err:  # a file, not a pipe: the workers hold it open a while longer
        return subprocess.Popen([sys.executable, "-m", "metaaugment.cli.main", *args], cwd=cwd, env=env,
                                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)


def wait_for(path: Path, process: subprocess.Popen, cwd: Path, timeout_s: float = 240.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert process.poll() is None, (cwd / "stderr.txt").read_text()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def interrupt(process: subprocess.Popen, cwd: Path) -> tuple[float, str]:
    """Ctrl-C to the process group: seconds until the run's process ended, and its stderr."""
    sent = time.monotonic()
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    return time.monotonic() - sent, (cwd / "stderr.txt").read_text()


def group_ends(pgid: int, timeout_s: float = 15.0) -> bool:
    """Whether every process of the group (the workers) is gone within timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    os.killpg(pgid, signal.SIGKILL)
    return False


def assert_stopped(process: subprocess.Popen, run: Path) -> None:
    seconds, err = interrupt(process, run.parent)
    assert process.returncode == 130, err
    assert seconds < STOP_WITHIN_S, f"{seconds:.1f} s to stop"
    assert err.count("interrupted: rerun the same command (`run`: with --resume)") == 1, err
    assert "Traceback" not in err
    assert group_ends(process.pid), "a worker of the run outlived it"
    assert (run / "config.json").is_file()  # the run folder stays for --resume


def test_ctrl_c_inside_one_long_c_call_of_the_first_step_ends_the_run_in_seconds(tmp_path):
    (tmp_path / "slowmodel.py").write_text(SLOW_MODEL)
    process = start(["run", "digits", "--model", "slowmodel:OneLongCall", "--epochs", "1", "--batch-size", "16",
                     "--device", "cpu", "--out", "run", "--quiet"], tmp_path)
    wait_for(tmp_path / "in-forward", process, tmp_path)
    time.sleep(0.5)  # inside torch.mm
    assert_stopped(process, tmp_path / "run")


def test_ctrl_c_while_workers_decode_large_images_ends_the_run_and_its_workers_in_seconds(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", 24), ("test", 2)):
        for name in ("a", "b"):
            (tmp_path / "data" / split / name).mkdir(parents=True)
            for index in range(count):  # a PNG is decoded whole: ~50 ms each
                pixels = rng.integers(0, 256, (1200, 1200, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / "data" / split / name / f"{index}.png", compress_level=0)
    process = start(["run", "image-classification-folder", "--data-root", "data", "--model", "small-cnn",
                     "--image-size", "32", "--batch-size", "16", "--workers", "2", "--epochs", "50",
                     "--device", "cpu", "--out", "run", "--quiet"], tmp_path)
    wait_for(tmp_path / "run" / "config.json", process, tmp_path)
    time.sleep(3.0)  # the workers are decoding
    assert_stopped(process, tmp_path / "run")



def test_a_ctrl_c_python_could_only_report_as_ignored_still_stops_the_main_thread(capsys, monkeypatch):
    # SIGINT inside the logging module's after-fork hook (a DataLoader starting its workers)
    # was printed as "Exception ignored ... Traceback" and lost; a __del__ is the same path
    from metaaugment.infra.interrupt import redeliver_swallowed_interrupts

    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)
    redeliver_swallowed_interrupts()

    class InterruptedOnDelete:
        def __del__(self):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        InterruptedOnDelete()
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:  # the re-armed interrupt is raised here, within 50 ms
            time.sleep(0.01)
    assert "Exception ignored" not in capsys.readouterr().err
