"""A finished run evaluates again to its own results, and exports files that load safely and
rebuild what it learned."""
import pytest
import torch
from helpers import quick_config, write_omniglot_fixture

from metaaugment.export import load_exported_model, load_exported_policy
from metaaugment.infra.errors import UserError
from metaaugment.run.checkpoint import load_checkpoint
from metaaugment.run.config import RunConfig
from metaaugment.run.evaluate import evaluate_run
from metaaugment.run.export import export_run
from metaaugment.run.loop import train


@pytest.fixture(scope="module")
def metaaugment_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runs") / "ma"
    results = train(quick_config(policy="metaaugment", epochs=2), folder, show_progress=False)
    return folder, results


def test_eval_reproduces_the_test_metrics_of_results_json(metaaugment_run):
    folder, results = metaaugment_run
    assert evaluate_run(folder, device="cpu") == results["metrics"]
    val = evaluate_run(folder, "val", device="cpu")
    assert val["val_accuracy"] == pytest.approx(results["metrics"]["final_val_accuracy"])


def test_eval_of_a_few_shot_run_scores_the_best_model_on_the_same_tasks(tmp_path, monkeypatch):
    config = RunConfig(benchmark="glyphs", epochs=2, steps_per_epoch=4, batch_size=2, val_tasks=6, test_tasks=12,
                       device="cpu", checkpoint_every=4)
    results = train(config, tmp_path / "run", show_progress=False)
    again = evaluate_run(tmp_path / "run", device="cpu")
    assert again == results["metrics"] and "test_accuracy_ci95" in again
    # The same 28x28 5-way model scored on another benchmark with the same inputs: Omniglot's
    # own fixed test tasks, the same metrics, and the same figures when asked twice.
    monkeypatch.setenv("METAAUG_CACHE", str(tmp_path / "cache"))
    write_omniglot_fixture(tmp_path / "data", alphabets=2, characters=19, drawings=6)  # 5+ val classes
    elsewhere = [evaluate_run(tmp_path / "run", benchmark="omniglot", data_root=str(tmp_path / "data"), device="cpu")
                 for _ in range(2)]
    assert elsewhere[0] == elsewhere[1] and elsewhere[0].keys() == again.keys()
    assert elsewhere[0]["test_accuracy"] != again["test_accuracy"]


def test_eval_on_a_benchmark_the_model_does_not_fit_is_one_line(metaaugment_run):
    with pytest.raises(UserError, match="does not fit benchmark 'fonts'"):
        evaluate_run(metaaugment_run[0], benchmark="fonts", device="cpu")
    with pytest.raises(UserError, match="eval .*: not a finished run folder"):
        evaluate_run(metaaugment_run[0] / "nothing", device="cpu")


def test_exported_files_load_with_weights_only_and_rebuild_the_model_and_policy(metaaugment_run, tmp_path):
    folder, _ = metaaugment_run
    model_file, policy_file = export_run(folder, tmp_path / "export")
    for path in (model_file, policy_file):
        assert torch.load(path, weights_only=True)["format"] == "metaaugment.export/1"
    checkpoint = load_checkpoint(folder / "checkpoint.pt")
    model = load_exported_model(model_file)
    for key, value in checkpoint["model"].items():
        assert torch.equal(model.state_dict()[key], value), key
    policy, ctx = load_exported_policy(policy_file, model)
    assert torch.equal(policy.sampler.probabilities, checkpoint["policy"]["sampler.probabilities"])
    assert torch.equal(policy.network.output.weight, checkpoint["policy"]["network.output.weight"])
    with pytest.raises(UserError, match="already exist"):
        export_run(folder, tmp_path / "export")


def test_the_documented_loader_applies_an_exported_metaaugment_policy(metaaugment_run, tmp_path, monkeypatch):
    from test_workflow import WORKFLOW, doc_block

    folder, _ = metaaugment_run
    export_run(folder, tmp_path / "runs" / "ma" / "export")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(doc_block("workflow-example: load-export"), str(WORKFLOW), "exec"), namespace)
    weights, augmented, policy = namespace["weights"], namespace["augmented"], namespace["policy"]
    assert weights.shape == (16,) and torch.all(weights > 0) and float(weights.sum()) == pytest.approx(1.0)
    assert augmented.inputs.shape == (16, 1, 8, 8) and augmented.params.pairs.shape == (16, 2)
    # the frozen policy network's weights, from the exported task network's features
    assert torch.equal(weights, policy.loss_weights(augmented, None, namespace["ctx"]))
    assert len(set(weights.tolist())) > 1


def test_an_exported_rl_mixup_agent_loads_and_mixes(tmp_path):
    train(quick_config(policy="rl-mixup", epochs=2), tmp_path / "run", show_progress=False)
    model_file, policy_file = export_run(tmp_path / "run")
    policy, ctx = load_exported_policy(policy_file, load_exported_model(model_file))
    saved = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["policy"]["_extra_state"]
    assert policy.get_extra_state()["history"] == saved["history"]  # the agent's record, restored
    from metaaugment import Batch

    mixed = policy.augment(Batch(torch.rand(64, 1, 8, 8), torch.randint(10, (64,))), ctx)
    assert mixed.targets.shape == (64, 10) and torch.allclose(mixed.targets.sum(1), torch.ones(64))


def test_an_export_that_fills_the_disk_at_its_second_file_leaves_nothing(metaaugment_run, tmp_path, monkeypatch):
    """All or none: the first file is not left behind, nor the folder, and a retry needs no
    --overwrite."""
    import metaaugment.run.export as export_module
    from metaaugment.infra.files import save_torch

    folder, _ = metaaugment_run
    written = []

    def full_disk_at_the_second(path, obj):
        written.append(path)
        if len(written) == 2:
            raise UserError(f"cannot write {path}: No space left on device")
        save_torch(path, obj)

    monkeypatch.setattr(export_module, "save_torch", full_disk_at_the_second)
    with pytest.raises(UserError, match="No space left"):
        export_run(folder, tmp_path / "a" / "export")
    assert not (tmp_path / "a").exists()
    monkeypatch.undo()
    paths = export_run(folder, tmp_path / "a" / "export")
    assert sorted(p.name for p in (tmp_path / "a" / "export").iterdir()) == ["model.pt", "policy.pt"]
    assert not [p for p in (tmp_path / "a").iterdir() if p.name != "export"] and all(p.exists() for p in paths)


def test_an_exported_teachaugment_policy_loads_its_augmenter_teacher_and_replay(tmp_path):
    options = {"noise_dim": 8, "hidden": 8, "projections": 8, "replay_every": 1}
    train(quick_config(policy="teachaugment", policy_options=options, epochs=2), tmp_path / "run",
          show_progress=False)
    model_file, policy_file = export_run(tmp_path / "run")
    policy, ctx = load_exported_policy(policy_file, load_exported_model(model_file))
    saved = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["policy"]
    for key, value in policy.state_dict().items():
        if torch.is_tensor(value):
            assert torch.equal(value, saved[key]), key
    assert len(policy.replay) == 2 and policy.priorities == pytest.approx([0.81, 0.9])
    from metaaugment import Batch

    augmented = policy.augment(Batch(torch.rand(16, 1, 8, 8), torch.randint(10, (16,))), ctx)
    assert augmented.inputs.shape == (16, 1, 8, 8) and 0 <= float(augmented.inputs.min())
    assert float(augmented.inputs.max()) <= 1
