"""One run on two ranks against one process on the same global batch: real two-process gloo
runs (one torchrun session trains every family), and `LockstepRanks`, two ranks as threads of
this process, which must match the real group to the bit."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import KILL_SCRIPT, accuracy_tolerance

from metaaugment.batch import Batch
from metaaugment.cli.main import main
from metaaugment.parallel import SINGLE_PROCESS
from metaaugment.parallel.lockstep import LockstepRanks
from metaaugment.run.config import RunConfig
from metaaugment.run.loop import train

SHORT = dict(benchmark="digits", epochs=1, batch_size=512, seed=3, device="cpu")  # digits: 2 global batches
FAMILIES = {
    "none": dict(SHORT, policy="none"),
    "mixup": dict(SHORT, policy="mixup"),
    "metaaugment-fast": dict(SHORT, policy="metaaugment"),
    "metaaugment-higher": dict(SHORT, policy="metaaugment", policy_options={"engine": "higher"}),
    "metaaugment-fast-jvp": dict(SHORT, policy="metaaugment", policy_options={"engine": "fast-jvp"}),
    "metaaugment-last-layer": dict(SHORT, policy="metaaugment", policy_options={"engine": "last-layer"}),
    "rl-mixup": dict(SHORT, policy="rl-mixup"),
    "madaug": dict(SHORT, policy="madaug"),
    "adaaug": dict(SHORT, policy="adaaug", policy_options={"search_every": 1}),
    "teachaugment": dict(SHORT, policy="teachaugment",
                         policy_options={"update_every": 1, "noise_dim": 8, "hidden": 8, "projections": 8}),
    "maml-intershuffle": dict(benchmark="glyphs", policy="intershuffle", epochs=1, steps_per_epoch=2, batch_size=4,
                              val_tasks=8, test_tasks=12, seed=3, device="cpu"),
    # MLTI: 3 tasks on 2 ranks, so partners cross ranks (parallel.task_exchange) and one rank holds fewer
    **{f"{learner}-mlti": dict(benchmark="glyphs", policy="mlti", learner=learner, epochs=1, steps_per_epoch=2,
                               batch_size=3, val_tasks=8, test_tasks=12, seed=3, device="cpu")
       for learner in ("maml", "metasgd", "protonet")},
    "streamed-randaugment": dict(benchmark="image-classification-folder", data_root="STREAMED", image_size=32,
                                 model="small-cnn", model_options={"width": 8}, policy="randaugment", epochs=1,
                                 batch_size=16, seed=3, device="cpu"),
}
PERF = Path(__file__).resolve().parents[1] / "perf"  # rank_work.py: what a rank's data work is, counted
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")

# Under torchrun: every rank trains every family of the JSON file argv[1] into argv[2]/<name>,
# counting its data work (perf/rank_work.py, on argv[3]) into argv[2]/work/<name>-rank<R>.json.
SESSION = '''
import json, os, sys
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from rank_work import count_work
from metaaugment.run.config import RunConfig
from metaaugment.run.loop import train
for name, settings in json.loads(Path(sys.argv[1]).read_text()).items():
    with count_work() as counts:
        train(RunConfig(**settings), Path(sys.argv[2]) / name, show_progress=False)
    (Path(sys.argv[2]) / "work").mkdir(exist_ok=True)
    (Path(sys.argv[2]) / "work" / f"{name}-rank{os.environ['RANK']}.json").write_text(json.dumps(counts))
'''


def environment(cache: Path) -> dict[str, str]:
    # one thread per process on both sides: the comparison measures the algorithm, not
    # the float rounding of a different thread count
    return {**os.environ, "METAAUG_CACHE": str(cache), "OMP_NUM_THREADS": "1"}


def torchrun(*command: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           *command], capture_output=True, text=True, env=env, timeout=900)


class one_thread:
    """torch on one thread for a block (the gloo runs' OMP_NUM_THREADS=1)."""

    def __enter__(self):
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.threads)


def checkpoint(folder: Path) -> dict:
    return torch.load(folder / "checkpoint.pt", weights_only=True)


def flat(state: dict, skip: tuple[str, ...] = ()) -> torch.Tensor:
    return torch.cat([v.flatten().double() for k, v in sorted(state.items())
                      if torch.is_tensor(v) and v.is_floating_point() and not any(s in k for s in skip)])


def tensors_of(state, path: str = ""):
    """(path, tensor) of every tensor in a nested state (dicts, lists)."""
    if torch.is_tensor(state):
        yield path, state
    elif isinstance(state, dict):
        for key, value in state.items():
            yield from tensors_of(value, f"{path}/{key}")
    elif isinstance(state, (list, tuple)):
        for index, value in enumerate(state):
            yield from tensors_of(value, f"{path}/{index}")


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / a.norm())


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def families(tmp_path_factory) -> dict[str, dict]:
    """FAMILIES with the streamed family's image tree written (PNGs in the on-disk layout)."""
    sys.path.insert(0, str(PERF))
    from rank_work import classification_tree

    tree = classification_tree(tmp_path_factory.mktemp("streamed"), 40, 40)
    return {name: {**settings, **({"data_root": str(tree)} if settings.get("data_root") == "STREAMED" else {})}
            for name, settings in FAMILIES.items()}


@pytest.fixture(scope="module")
def gloo_runs(tmp_path_factory, cache, families) -> Path:
    """Every family trained on two gloo processes, in one torchrun session."""
    folder = tmp_path_factory.mktemp("gloo")
    (folder / "families.json").write_text(json.dumps(families))
    (folder / "session.py").write_text(SESSION)
    session = torchrun(str(folder / "session.py"), str(folder / "families.json"), str(folder), str(PERF),
                       env=environment(cache))
    assert session.returncode == 0, session.stderr[-3000:]
    return folder


@pytest.fixture(scope="module")
def one_process_runs(tmp_path_factory, cache, families) -> Path:
    from rank_work import count_work

    folder = tmp_path_factory.mktemp("one")
    (folder / "work").mkdir()
    with pytest.MonkeyPatch.context() as patch, one_thread():
        patch.setenv("METAAUG_CACHE", str(cache))
        for name, settings in families.items():
            with count_work() as counts:
                train(RunConfig(**settings), folder / name, show_progress=False)
            (folder / "work" / f"{name}-rank0.json").write_text(json.dumps(counts))
    return folder


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize("run", list(FAMILIES))
def test_each_rank_decodes_augments_and_evaluates_only_its_share(run, gloo_runs, one_process_runs):
    """Per rank: images (or tasks) decoded, augmented and evaluated are the one process's
    divided by the ranks (an odd count splits as evenly as it can: an odd meta-batch gives
    rank 0 one more task at every step); together, all of them."""
    one = json.loads((one_process_runs / "work" / f"{run}-rank0.json").read_text())
    ranks = [json.loads((gloo_runs / "work" / f"{run}-rank{rank}.json").read_text()) for rank in (0, 1)]
    assert {"augmented", "evaluated"} <= set(one) and ("decoded" in one or "tasks built" in one)
    settings = FAMILIES[run]
    odd_meta_batches = settings["epochs"] * settings.get("steps_per_epoch", 0) * (settings["batch_size"] % 2)
    for what, count in one.items():
        assert sum(rank.get(what, 0) for rank in ranks) == count, what
        assert max(rank.get(what, 0) for rank in ranks) <= -(-count // 2) + odd_meta_batches, what


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize("run", list(FAMILIES))
def test_two_ranks_train_as_one_process_on_the_global_batch(run, gloo_runs, one_process_runs):
    one, two = checkpoint(one_process_runs / run), checkpoint(gloo_runs / run)
    # meta-learners: each task's forward runs on one rank, so the tasks' BatchNorm running
    # statistics (which their batch-statistics scoring never reads) accumulate in another order; and a
    # conv bias followed by BatchNorm has a zero gradient that Adam turns into steps of the
    # learning rate in the direction of the rounding error
    skip = (*BUFFERS, "conv.bias") if FAMILIES[run].get("benchmark") == "glyphs" else ()
    # ProtoNets: squared distances do not change when every embedding shifts alike, so the last
    # block's BatchNorm shift has a zero gradient wherever its ReLU passes everything (Adam again)
    skip += ("body.3.normalize.bias",) if run.startswith("protonet") else ()
    # RL-Mixup mixes the patches above a saliency percentile: a float-rounding difference in
    # the saliency flips near-ties, so its parameters agree to the rounding of a discontinuity
    tolerance = 1e-3 if run == "rl-mixup" else 1e-5
    assert relative(flat(one["model"], skip), flat(two["model"], skip)) < tolerance
    metrics_one = json.loads((one_process_runs / run / "results.json").read_text())["metrics"]
    metrics_two = json.loads((gloo_runs / run / "results.json").read_text())["metrics"]
    assert metrics_one.keys() == metrics_two.keys()
    config = json.loads((one_process_runs / run / "config.json").read_text())
    for key, value in metrics_one.items():
        if "accuracy" in key:
            # a prediction near a tie flips with another CPU's rounding: a discrete metric (and
            # its confidence interval) agrees to a few samples of the set it counts
            assert metrics_two[key] == pytest.approx(value, abs=accuracy_tolerance(key, config)), key
        else:  # continuous: losses, counts
            assert metrics_two[key] == pytest.approx(value, rel=tolerance, abs=1e-12), key
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


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize("run", ["metaaugment-fast", "rl-mixup", "maml-intershuffle"])
def test_lockstep_ranks_in_one_process_match_the_real_two_process_group(run, gloo_runs, tmp_path, monkeypatch, cache,
                                                                        families):
    """A policy or learner is tested on two ranks in one process (parallel.lockstep), one
    family per paper: every tensor of the checkpoint equals the gloo run's to the bit."""
    monkeypatch.setenv("METAAUG_CACHE", str(cache))
    with one_thread():
        LockstepRanks(2).run(lambda comm: train(RunConfig(**families[run]), tmp_path / "run", comm=comm,
                                                show_progress=False))
    fake, real = checkpoint(tmp_path / "run"), checkpoint(gloo_runs / run)
    for part in ("model", "policy", "learner"):
        expected = dict(tensors_of(real[part]))
        assert dict(tensors_of(fake[part])).keys() == expected.keys() and (expected or part != "model"), part
        assert all(torch.equal(value, expected[key]) for key, value in tensors_of(fake[part])), part
    assert json.loads((tmp_path / "run" / "results.json").read_text())["metrics"] == json.loads(
        (gloo_runs / run / "results.json").read_text())["metrics"]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_comparison_on_two_processes_per_run_gives_the_one_process_table(tmp_path, cache, monkeypatch):
    """`compare --nproc-per-node 2` over a whole short run (one epoch: 3 steps of 512, then the
    test): the table is the one-process table, test loss to 1e-5, test accuracy to three test
    samples, every other column equal (docs/scale.md states this claim, and the drift of
    longer runs)."""
    # mixup: its halo gather is the one collective a comparison adds to the plain step
    args = ["compare", "digits", "--policies", "mixup", "--seeds", "3", "--epochs", "1", "--batch-size", "512",
            "--device", "cpu", "-q"]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("METAAUG_CACHE", str(cache))
    with one_thread(), pytest.raises(SystemExit) as one:
        main([*args, "--out", "one"])
    assert one.value.code == 0
    two = subprocess.run([sys.executable, "-m", "metaaugment.cli", *args, "--out", "two", "--nproc-per-node", "2"],
                         capture_output=True, text=True, env=environment(cache), cwd=tmp_path, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "2 process(es) each" in two.stderr

    def rows(folder):  # comparison.csv without its wall-time column
        table = csv.DictReader((tmp_path / folder / "comparison.csv").open())
        return [dict(row, wall_time_s_mean=None) for row in table]

    config = {"benchmark": "digits", "batch_size": 512}
    for expected, got in zip(rows("one"), rows("two"), strict=True):
        for column, value in expected.items():
            if column.startswith("test_loss") and value:  # one seed: the std is empty in both
                assert float(got[column]) == pytest.approx(float(value), abs=1e-5), column
            elif column.startswith("test_accuracy") and value:  # discrete: to a few of the test set's samples
                assert float(got[column]) == pytest.approx(float(value), abs=accuracy_tolerance("test_accuracy",
                                                                                                config)), column
            else:
                assert got[column] == value, column

# mid-epoch (9 steps an epoch): the one-process kill matrix (test_resume.py) crosses epochs
KILLED_RUN = dict(benchmark="digits", policy="metaaugment", epochs=1, batch_size=128, checkpoint_every=4, seed=1,
                  device="cpu")


@pytest.fixture(scope="module")
def uninterrupted_two_rank_run(tmp_path_factory, cache) -> Path:
    """KILLED_RUN uninterrupted on two ranks: lockstep's, the gloo run's to the bit."""
    folder = tmp_path_factory.mktemp("uninterrupted") / "run"
    with pytest.MonkeyPatch.context() as patch, one_thread():
        patch.setenv("METAAUG_CACHE", str(cache))
        LockstepRanks(2).run(lambda comm: train(RunConfig(**KILLED_RUN), folder, comm=comm, show_progress=False))
    return folder


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize("rank", ["0", "1"])
def test_two_ranks_killed_then_resumed_end_as_the_uninterrupted_run(rank, tmp_path, cache,
                                                                    uninterrupted_two_rank_run):
    args = ["run", "digits", "--policy", "metaaugment", "--epochs", "1", "--batch-size", "128", "--checkpoint-every",
            "4", "--seed", "1", "--device", "cpu", "--quiet", "--out", str(tmp_path / "run")]
    env = environment(cache)
    killer = tmp_path / "killer.py"
    killer.write_text(KILL_SCRIPT)
    # torchrun polls its children every 0.1 s and SIGTERMs the survivor once it sees the killed
    # one; polled every 5 s, the survivor has the time to notice the dead peer and say so itself
    killed = torchrun("--monitor-interval", "5", str(killer), *args,
                      env={**env, "KILL_AT_STEP": "6", "KILL_RANK": rank})
    assert killed.returncode != 0 and not (tmp_path / "run" / "results.json").exists()
    # the surviving rank ends in one line, not a traceback from the collective it was in
    # (torchrun's own report of the killed child follows it)
    assert "another process of this run stopped" in killed.stderr, killed.stderr[-3000:]
    assert "metaaugment/" not in "".join(line for line in killed.stderr.splitlines() if 'File "' in line)
    resumed = torchrun("-m", "metaaugment.cli", *args, "--resume", env=env)
    assert resumed.returncode == 0, resumed.stderr
    reference = uninterrupted_two_rank_run
    expected = json.loads((reference / "results.json").read_text())
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["resumed_at_step"] == 4  # the last checkpoint before the kill
    assert results["metrics"] == expected["metrics"]
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == (reference / "metrics.jsonl").read_text()


def test_a_process_s_rows_partition_the_global_batch():
    for size, count in ((2, 64), (3, 10), (4, 7)):
        parts = LockstepRanks(size).run(lambda comm, count=count: comm.local_rows(count))
        rows = [row for part in parts for row in list(range(count))[part]]
        assert rows == list(range(count))
        assert all(abs((part.stop - part.start) - count / size) < 1 for part in parts)


def test_lockstep_ranks_keep_their_own_random_state_and_sum_in_rank_order():
    """Each rank draws from its own copy of the global generators, as a process would."""
    def body(comm):
        own = torch.rand(3)
        total = comm.sum(torch.full((2,), float(comm.rank + 1)))
        return own, total, comm.gather_rows(torch.tensor([comm.rank])), comm.broadcast_object({"from": comm.rank})

    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    results = LockstepRanks(3).run(body)
    for own, total, gathered, broadcast in results:
        assert torch.equal(own, expected) and torch.equal(total, torch.full((2,), 6.0))
        assert gathered.tolist() == [0, 1, 2] and broadcast == {"from": 0}
    assert torch.equal(torch.rand(3), expected), "the caller's random state is left as it was"


def test_a_batch_s_rows_keep_their_per_sample_annotations():
    batch = Batch(torch.arange(12.0).view(6, 2), torch.arange(6), torch.ones(6),
                  {"pairs": torch.arange(12).view(6, 2), "q": torch.arange(6), "note": "x", "scalar": torch.tensor(1)})
    part = batch.rows(slice(2, 4))
    assert torch.equal(part.inputs, batch.inputs[2:4]) and torch.equal(part.targets, torch.tensor([2, 3]))
    assert torch.equal(part.info["pairs"], batch.info["pairs"][2:4])
    assert torch.equal(part.info["q"], torch.tensor([2, 3]))
    assert part.info["note"] == "x" and part.info["scalar"] is batch.info["scalar"]


def test_outside_torchrun_the_collectives_are_the_identity():
    comm = SINGLE_PROCESS
    assert (comm.rank, comm.world_size, comm.is_main) == (0, 1, True)
    value = torch.tensor([1.0, 2.0], requires_grad=True)
    assert comm.sum_differentiable(value) is value
    assert comm.local_rows(5) == slice(0, 5) and comm.local_items([1, 2, 3]) == [1, 2, 3]
    assert comm.sum_floats({"a": 1.5}) == {"a": 1.5}


@pytest.mark.parametrize("args, message", [
    (["--batch-size", "63", "--nproc-per-node", "2"], "--batch-size 63 is the global batch: it must divide by the 2"),
    (["--nproc-per-node", "0"], "--nproc-per-node must be a positive integer"),
])
def test_a_launch_with_bad_options_fails_before_any_process_starts(args, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "digits", "--device", "cpu", "--out", str(tmp_path / "run"), *args])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
