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

pytest.importorskip("submitit")

COMPARE = ["compare", "digits", "--policies", "none,mixup", "--seeds", "0,1", "--epochs", "3", "--device", "cpu",
           "-q"]


def metaaug(*args, cwd, env=None):
    return subprocess.run([sys.executable, "-m", "metaaugment.cli.main", *args], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, "COLUMNS": "200", **(env or {})})


def table(folder):
    """comparison.csv without its wall-time column."""
    return [row[:-1] for row in csv.reader((folder / "comparison.csv").open())]


@pytest.mark.slow
def test_local_jobs_give_the_same_table_as_training_inline(tmp_path):
    inline = metaaug(*COMPARE, "--out", "inline", cwd=tmp_path)
    assert inline.returncode == 0, inline.stderr
    local = metaaug(*COMPARE, "--out", "local", "--launcher", "local", cwd=tmp_path)
    assert local.returncode == 0, local.stderr
    assert table(tmp_path / "local") == table(tmp_path / "inline")
    jobs = json.loads((tmp_path / "local" / "jobs.json").read_text())
    assert sorted(jobs) == ["mixup/seed0", "mixup/seed1", "none/seed0", "none/seed1"]
    status = metaaug(*COMPARE, "--out", "local", "--status", cwd=tmp_path)
    # local jobs end with the command that started them
    assert status.returncode == 0 and status.stdout.count("finished") == 4 and status.stdout.count("ended") == 4
    again = metaaug(*COMPARE, "--out", "local", "--launcher", "local", cwd=tmp_path)  # finished runs are reused
    assert again.returncode == 0 and "starting" not in again.stderr and table(tmp_path / "local") == table(
        tmp_path / "inline")


@pytest.mark.slow
def test_an_interrupted_local_comparison_resumes_when_launched_again(tmp_path):
    # 60 epochs: long enough to be interrupted after its first checkpoint (about 18 s of training)
    args = ["compare", "digits", "--policies", "none", "--seeds", "0", "--epochs", "60", "--checkpoint-every", "5",
            "--device", "cpu", "-q", "--out", "cmp", "--launcher", "local"]
    process = subprocess.Popen([sys.executable, "-m", "metaaugment.cli.main", *args], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoint = tmp_path / "cmp" / "none" / "seed0" / "checkpoint.pt"
    deadline = time.time() + 120
    while not checkpoint.exists() and time.time() < deadline:
        time.sleep(0.2)
    assert checkpoint.exists(), "the job never checkpointed"
    process.send_signal(signal.SIGINT)  # Ctrl-C: the job is cancelled, its run keeps its checkpoint
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert not (tmp_path / "cmp" / "none" / "seed0" / "results.json").exists()
    resumed = metaaug(*args[:7], "20", *args[8:], cwd=tmp_path)  # the same, at 20 epochs: a different run
    assert resumed.returncode == 2 and "configuration differs (epochs: 60 -> 20)" in resumed.stderr
    resumed = metaaug(*args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    results = json.loads((tmp_path / "cmp" / "none" / "seed0" / "results.json").read_text())
    assert results["resumed_at_step"] > 0 and results["metrics"]["steps"] == 60 * (1257 // 64)


def test_the_slurm_launcher_writes_the_submission_its_options_ask_for(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {tmp_path}/submission.sh\necho "Submitted batch job 4242"\n')
    for tool in ("srun", "sbatch"):
        (bin_dir / tool).chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    submitted = metaaug(*COMPARE, "--out", "cmp", "--launcher", "slurm", "--slurm-partition", "gpu", "--slurm-gpus",
                        "4", "--nproc-per-node", "4", "--slurm-cpus", "8", "--slurm-time", "90", "--slurm-account",
                        "lab", "--slurm-parallelism", "2", "--no-wait", cwd=tmp_path, env=env)
    assert submitted.returncode == 0, submitted.stderr
    script = (tmp_path / "submission.sh").read_text()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=4", "#SBATCH --ntasks-per-node=4",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --time=90", "#SBATCH --account=lab", "#SBATCH --array=0-3%2",
                 "#SBATCH --nodes=1"):
        assert line in script, line
    assert "submitit.core._submit" in script
    jobs = json.loads((tmp_path / "cmp" / "jobs.json").read_text())
    assert {entry["job_id"] for entry in jobs.values()} == {"4242_0", "4242_1", "4242_2", "4242_3"}
    assert not (tmp_path / "cmp" / "comparison.csv").exists()  # no table until the jobs are done
