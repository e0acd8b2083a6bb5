"""compare's launchers: submitit jobs give the inline table, resume after an interruption, and
write the SLURM submission the options ask for."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from helpers import metaaug_process, run_in_process

pytest.importorskip("submitit")

COMPARE = ["compare", "digits", "--policies", "none,mixup", "--seeds", "0", "--epochs", "2", "--batch-size", "256",
           "--device", "cpu", "-q"]


def metaaug(*args, cwd, env=None):
    return metaaug_process(*args, cwd=cwd, env=env, columns=200)


def in_process(args, cwd, monkeypatch):
    """`metaaug ARGS` in this process (no start-up cost); the exit code."""
    return run_in_process(args, cwd, monkeypatch)[0]


def table(folder):
    """comparison.csv without its wall-time column."""
    return [row[:-1] for row in csv.reader((folder / "comparison.csv").open())]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_local_jobs_give_the_same_table_as_training_inline(tmp_path, monkeypatch, capsys):
    assert in_process([*COMPARE, "--out", "inline"], tmp_path, monkeypatch) == 0
    local = metaaug(*COMPARE, "--out", "local", "--launcher", "local", cwd=tmp_path)
    assert local.returncode == 0, local.stderr
    assert table(tmp_path / "local") == table(tmp_path / "inline")
    jobs = json.loads((tmp_path / "local" / "jobs.json").read_text())
    assert sorted(jobs) == ["mixup/seed0", "none/seed0"]
    assert sorted(p.name for p in (tmp_path / "local" / ".jobs").glob("*.log")) == ["mixup-seed0.log",
                                                                                   "none-seed0.log"]
    capsys.readouterr()
    assert in_process([*COMPARE, "--out", "local", "--status"], tmp_path, monkeypatch) == 0
    status = capsys.readouterr().out  # local jobs end with the command that started them
    assert status.count("finished") == 2 and status.count("ended") == 2
    # finished runs are reused
    assert in_process([*COMPARE, "--out", "local", "--launcher", "local"], tmp_path, monkeypatch) == 0
    assert "starting" not in capsys.readouterr().err and table(tmp_path / "local") == table(tmp_path / "inline")


@pytest.mark.slow
@pytest.mark.multiprocess
def test_an_interrupted_local_comparison_stops_its_jobs_and_resumes_when_launched_again(tmp_path, monkeypatch):
    # 300 epochs of 4 steps: long enough to be interrupted after its first checkpoint on any
    # thread count (100 epochs finished in 19 s with OMP_NUM_THREADS=2, before the Ctrl-C)
    args = ["compare", "digits", "--policies", "none", "--seeds", "0", "--epochs", "300", "--batch-size", "256",
            "--checkpoint-every", "5", "--device", "cpu", "-q", "--out", "cmp"]
    process = subprocess.Popen([sys.executable, "-m", "metaaugment.cli.main", *args, "--launcher", "local",
                                "--progress-every", "0.5"], cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    checkpoint = tmp_path / "cmp" / "none" / "seed0" / "checkpoint.pt"
    job_log = tmp_path / "cmp" / ".jobs" / "none-seed0.log"
    deadline = time.time() + 120
    while not (checkpoint.exists() and job_log.exists() and " step " in job_log.read_text()) and time.time() < deadline:
        time.sleep(0.1)
    assert checkpoint.exists(), "the job never checkpointed"
    time.sleep(1.5)  # three turns of --progress-every 0.5 with a progress line in the log
    process.send_signal(signal.SIGINT)  # Ctrl-C reaches compare; it stops its job, which keeps its checkpoint
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("interrupted")
    # while waiting, the job's last progress line, read from its log (every 0.5 s here, 30 s by default)
    shown = [line for line in err.splitlines() if line.startswith("  none/seed0 (job ")]
    assert shown and " step " in shown[-1] and "eta" in shown[-1], err
    assert not (tmp_path / "cmp" / "none" / "seed0" / "results.json").exists()
    log = (tmp_path / "cmp" / ".jobs" / "none-seed0.log").read_text()
    assert "stopped" in log and "Traceback" not in log  # the job stopped as after Ctrl-C
    other = [*args[:7], "20", *args[8:]]  # the same at 20 epochs: another run, refused
    assert in_process(other, tmp_path, monkeypatch) == 2
    assert in_process(args, tmp_path, monkeypatch) == 0  # launched again: the run continues from its checkpoint
    results = json.loads((tmp_path / "cmp" / "none" / "seed0" / "results.json").read_text())
    assert results["resumed_at_step"] > 0 and results["metrics"]["steps"] == 300 * (1257 // 256)


def test_the_slurm_launcher_writes_the_submission_its_options_ask_for(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {tmp_path}/submission.sh\necho "Submitted batch job 4242"\n')
    for tool in ("srun", "sbatch"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert in_process([*COMPARE, "--out", "cmp", "--launcher", "slurm", "--slurm-partition", "gpu", "--slurm-gpus",
                       "4", "--nproc-per-node", "4", "--slurm-cpus", "8", "--slurm-time", "90", "--slurm-account",
                       "lab", "--slurm-parallelism", "2", "--no-wait"], tmp_path, monkeypatch) == 0
    script = (tmp_path / "submission.sh").read_text()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=4", "#SBATCH --ntasks-per-node=4",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --time=90", "#SBATCH --account=lab", "#SBATCH --array=0-1%2",
                 "#SBATCH --nodes=1"):
        assert line in script, line
    assert "submitit.core._submit" in script
    jobs = json.loads((tmp_path / "cmp" / "jobs.json").read_text())
    assert {entry["job_id"] for entry in jobs.values()} == {"4242_0", "4242_1"}
    assert not (tmp_path / "cmp" / "comparison.csv").exists()  # no table until the jobs are done
