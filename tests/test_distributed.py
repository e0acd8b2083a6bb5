"""One run on two processes (torchrun, gloo on CPU) against one process on the same global batch."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from metaaugment.batch import Batch
from metaaugment.run import distributed

SHORT = ["--epochs", "1", "--batch-size", "512", "--seed", "3"]  # digits: 2 steps of the global batch
RUNS = {
    "none": ["digits", "--policy", "none", *SHORT],
    "mixup": ["digits", "--policy", "mixup", *SHORT],
    "metaaugment-fast": ["digits", "--policy", "metaaugment", *SHORT],
    "metaaugment-higher": ["digits", "--policy", "metaaugment", "--set", "engine=higher", *SHORT],
    "metaaugment-fast-jvp": ["digits", "--policy", "metaaugment", "--set", "engine=fast-jvp", *SHORT],
    "metaaugment-last-layer": ["digits", "--policy", "metaaugment", "--set", "engine=last-layer", *SHORT],
    "rl-mixup": ["digits", "--policy", "rl-mixup", *SHORT],
    "maml-intershuffle": ["glyphs", "--policy", "intershuffle", "--epochs", "1", "--steps-per-epoch", "2",
                          "--batch-size", "4", "--val-tasks", "4", "--test-tasks", "6", "--seed", "3"],
}
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def environment(cache: Path) -> dict[str, str]:
    # one thread per process on both sides: the comparison measures the algorithm, not
    # the float rounding of a different thread count
    return {**os.environ, "METAAUG_CACHE": str(cache), "OMP_NUM_THREADS": "1"}


def one_process(args: list[str], out: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "metaaugment.cli", "run", *args, "--device", "cpu", "--quiet",
                           "--out", str(out), *extra], capture_output=True, text=True, env=env, timeout=600)


def two_ranks(args: list[str], out: Path, env: dict[str, str], *extra: str, script: list[str] | None = None
              ) -> subprocess.CompletedProcess:
    target = script or ["-m", "metaaugment.cli"]
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           *target, "run", *args, "--device", "cpu", "--quiet", "--out", str(out), *extra],
                          capture_output=True, text=True, env=env, timeout=600)


def flat(state: dict, skip: tuple[str, ...] = ()) -> torch.Tensor:
    return torch.cat([v.flatten().double() for k, v in sorted(state.items())
                      if torch.is_tensor(v) and v.is_floating_point() and not any(s in k for s in skip)])


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / a.norm())


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.mark.slow
@pytest.mark.parametrize("run", list(RUNS))
def test_two_ranks_train_as_one_process_on_the_global_batch(run, tmp_path, cache):
    env = environment(cache)
    single = one_process(RUNS[run], tmp_path / "one", env)
    assert single.returncode == 0, single.stderr
    ranks = two_ranks(RUNS[run], tmp_path / "two", env)
    assert ranks.returncode == 0, ranks.stderr
    assert ranks.stdout.count("test accuracy") == 1, "rank 0 alone reports"
    one = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=True)
    two = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=True)
    # MAML: each task's forward runs on one rank, so the tasks' BatchNorm running statistics
    # (which MAML's batch-statistics scoring never reads) accumulate in another order; and a
    # conv bias followed by BatchNorm has a zero gradient that Adam turns into steps of the
    # learning rate in the direction of the rounding error
    skip = (*BUFFERS, "conv.bias") if run.startswith("maml") else ()
    # RL-Mixup mixes the patches above a saliency percentile: a float-rounding difference in
    # the saliency flips near-ties, so its parameters agree to the rounding of a discontinuity
    tolerance = 1e-3 if run == "rl-mixup" else 1e-5
    assert relative(flat(one["model"], skip), flat(two["model"], skip)) < tolerance
    metrics_one = json.loads((tmp_path / "one" / "results.json").read_text())["metrics"]
    metrics_two = json.loads((tmp_path / "two" / "results.json").read_text())["metrics"]
    assert metrics_one.keys() == metrics_two.keys()
    for key, value in metrics_one.items():
        assert metrics_two[key] == pytest.approx(value, rel=tolerance, abs=1e-12 if "loss" in key else 0.01), key
    if run.startswith("metaaugment"):
        # the policy network after two Adam steps: the fast engine's finite difference (a
        # step of norm 1e-3 in float32) scales rounding by about 1e3, and Adam's normalized
        # first steps pass it on at the learning rate; a missing collective moves every
        # weight by the learning rate, 1e-2 here
        network = {k: v for k, v in one["policy"].items() if k.startswith("network.")}
        assert relative(flat(network), flat({k: two["policy"][k] for k in network})) < 1e-3
        assert relative(one["policy"]["sampler.output_sums"], two["policy"]["sampler.output_sums"]) < 1e-4
        assert one["policy"]["log_alpha"].item() == pytest.approx(two["policy"]["log_alpha"].item(), rel=1e-5)
    if run == "rl-mixup":  # one agent state: the same actions and rewards as one process
        agent_one, agent_two = one["policy"]["_extra_state"]["agent"], two["policy"]["_extra_state"]["agent"]
        assert torch.equal(agent_one["buffer"]["actions"], agent_two["buffer"]["actions"])
        assert torch.allclose(agent_one["buffer"]["rewards"], agent_two["buffer"]["rewards"], rtol=1e-6)


KILLER = '''
import os, signal, sys
from metaaugment.run.loop import Trainer
step = Trainer._step
def step_or_die(self, inputs):
    if self.state.step == int(os.environ["KILL_AT_STEP"]) and os.environ["RANK"] == os.environ["KILL_RANK"]:
        os.kill(os.getpid(), signal.SIGKILL)
    return step(self, inputs)
Trainer._step = step_or_die
from metaaugment.cli.main import main
main(sys.argv[1:])
'''


@pytest.mark.slow
@pytest.mark.parametrize("rank", ["0", "1"])
def test_two_ranks_killed_then_resumed_end_as_the_uninterrupted_run(rank, tmp_path, cache):
    args = ["digits", "--policy", "metaaugment", "--epochs", "2", "--batch-size", "128", "--checkpoint-every", "4",
            "--seed", "1"]
    env = environment(cache)
    reference = two_ranks(args, tmp_path / "reference", env)
    assert reference.returncode == 0, reference.stderr
    killer = tmp_path / "killer.py"
    killer.write_text(KILLER)
    killed = two_ranks(args, tmp_path / "run", {**env, "KILL_AT_STEP": "14", "KILL_RANK": rank}, script=[str(killer)])
    assert killed.returncode != 0 and not (tmp_path / "run" / "results.json").exists()
    resumed = two_ranks(args, tmp_path / "run", env, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    expected = json.loads((tmp_path / "reference" / "results.json").read_text())
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["resumed_at_step"] == 12  # the last checkpoint before the kill
    assert results["metrics"] == expected["metrics"]
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == (tmp_path / "reference" / "metrics.jsonl").read_text()


def test_a_process_s_rows_partition_the_global_batch(monkeypatch):
    for size, count in ((2, 64), (3, 10), (4, 7)):
        monkeypatch.setattr(distributed, "world_size", lambda size=size: size)
        rows = []
        for index in range(size):
            monkeypatch.setattr(distributed, "rank", lambda index=index: index)
            part = distributed.local_rows(count)
            rows += list(range(count))[part]
            assert abs((part.stop - part.start) - count / size) < 1
        assert rows == list(range(count))


def test_a_batch_s_rows_keep_their_per_sample_annotations():
    batch = Batch(torch.arange(12.0).view(6, 2), torch.arange(6), torch.ones(6),
                  {"pairs": torch.arange(12).view(6, 2), "q": torch.arange(6), "note": "x", "scalar": torch.tensor(1)})
    part = batch.rows(slice(2, 4))
    assert torch.equal(part.inputs, batch.inputs[2:4]) and torch.equal(part.targets, torch.tensor([2, 3]))
    assert torch.equal(part.info["pairs"], batch.info["pairs"][2:4])
    assert torch.equal(part.info["q"], torch.tensor([2, 3]))
    assert part.info["note"] == "x" and part.info["scalar"] is batch.info["scalar"]


def test_outside_torchrun_the_collectives_are_the_identity():
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    value = torch.tensor([1.0, 2.0], requires_grad=True)
    assert distributed.sum_over_ranks(value) is value
    assert distributed.local_rows(5) == slice(0, 5) and distributed.local_items([1, 2, 3]) == [1, 2, 3]
    assert distributed.sum_floats({"a": 1.5}) == {"a": 1.5}


@pytest.mark.parametrize("args, message", [
    (["--batch-size", "63", "--nproc-per-node", "2"], "--batch-size 63 is the global batch: it must divide by the 2"),
    (["--nproc-per-node", "0"], "--nproc-per-node must be a positive integer"),
])
def test_a_launch_with_bad_options_fails_before_any_process_starts(args, message, tmp_path):
    result = subprocess.run([sys.executable, "-m", "metaaugment.cli", "run", "digits", "--device", "cpu",
                             "--out", str(tmp_path / "run"), *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()
