"""The researcher's workflow: plug-ins by reference and by entry point, options you can see,
config files that replay a run, sweeps of named variants."""
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import metaaug_process, run_in_process

from metaaugment.infra.errors import UserError
from metaaugment.registry import LEARNERS, MODELS, POLICIES, Registry, describe_options

WORKFLOW = Path(__file__).resolve().parents[1] / "docs" / "workflow.md"


def doc_block(marker: str, language: str = "python") -> str:
    """The code block of docs/workflow.md after the comment `<!-- MARKER ... -->`."""
    match = re.search(rf"<!-- {re.escape(marker)}[^>]*-->\s*```{language}\n(.*?)```", WORKFLOW.read_text(), re.S)
    assert match, f"docs/workflow.md lost its {marker} block"
    return match.group(1)


PLUGIN_POLICY = doc_block("plugin-file")


metaaug = metaaug_process


def test_a_policy_file_in_the_working_folder_runs_is_reused_and_compares(tmp_path, monkeypatch, capsys):
    """A `module:Name` in the working folder, typed on the command line: it trains, config.json
    records it, `--resume` with the same command reuses the finished run, compare finds it."""
    (tmp_path / "mypol.py").write_text(PLUGIN_POLICY)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the working folder is added for the plug-in
    args = ["run", "digits", "--policy", "mypol:MyPolicy", "--set", "probability=0.5", "--epochs", "1",
            "--batch-size", "256", "--device", "cpu", "-q"]
    with POLICIES.scoped():
        code, _, err = run_in_process([*args, "--out", "run"], None, None, capsys)
        assert code == 0, err
        config = json.loads((tmp_path / "run" / "config.json").read_text())
        assert config["policy"] == "mypol:MyPolicy" and config["policy_options"] == {"probability": 0.5}
        stamp = (tmp_path / "run" / "results.json").stat().st_mtime_ns
        assert run_in_process([*args, "--out", "run", "--resume"], None, None, capsys)[0] == 0
        assert (tmp_path / "run" / "results.json").stat().st_mtime_ns == stamp  # reused, not trained again
        code, _, err = run_in_process(["compare", "digits", "--policies", "none,mypol:MyPolicy", "--seeds", "0",
                                       "--epochs", "1", "--batch-size", "256", "--device", "cpu", "-q"],
                                      None, None, capsys)
        assert code == 0, err
    sys.modules.pop("mypol", None)
    assert "mypol-MyPolicy" in (tmp_path / "runs" / "compare" / "digits" / "none+mypol-MyPolicy" /
                                "comparison.md").read_text()


@pytest.mark.slow
@pytest.mark.multiprocess
def test_an_installed_plugin_distribution_runs_by_its_registered_name(tmp_path):
    source = tmp_path / "source"
    (source / "flipper_plugin").mkdir(parents=True)
    (source / "flipper_plugin" / "__init__.py").write_text(doc_block("plugin-package"))
    (source / "pyproject.toml").write_text(doc_block("plugin-pyproject", "toml"))
    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                              "--no-build-isolation", "--target", str(site), str(source)],
                             capture_output=True, text=True)
    assert install.returncode == 0, install.stderr
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    work = tmp_path / "work"
    work.mkdir()
    listed = metaaug("list", cwd=work, env=env)
    assert listed.returncode == 0, listed.stderr
    assert "flipper" in listed.stdout and "entry point of flipper-plugin" in listed.stdout
    shown = metaaug("list", "models", "tiny-mlp", cwd=work, env=env)
    assert "width" in shown.stdout and "hidden units" in shown.stdout
    ran = metaaug("run", "digits", "--policy", "flipper", "--model", "tiny-mlp", "--model-set", "width=8",
                  "--epochs", "1", "--device", "cpu", "-q", cwd=work, env=env)
    assert ran.returncode == 0, ran.stderr
    # the default folder names what differs from the defaults: the model and its option
    config = json.loads((work / "runs" / "digits" / "flipper-model=tiny-mlp-model.width=8" / "seed0" / "config.json")
                        .read_text())
    assert (config["policy"], config["model"], config["model_options"]) == ("flipper", "tiny-mlp", {"width": 8})


def test_a_reference_resolves_from_the_working_folder_and_its_errors_are_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "userpol.py").write_text(PLUGIN_POLICY)
    (tmp_path / "brokenpol.py").write_text("import not_a_module_anywhere\n")
    with POLICIES.scoped():
        entry = POLICIES.get("userpol:MyPolicy")
        assert entry.origin == "userpol.py" and entry.factory.name == "userpol:MyPolicy"
        assert POLICIES.create("userpol:MyPolicy", probability=0.25).probability == 0.25
        with pytest.raises(UserError, match=r"^module 'userpol' \(userpol.py\) has no 'Missing'$"):
            POLICIES.get("userpol:Missing")
        with pytest.raises(UserError, match="policy plug-in 'brokenpol:X' cannot be imported: No module named "
                                            "'not_a_module_anywhere'"):
            POLICIES.get("brokenpol:X")
        with pytest.raises(UserError, match="unknown policy 'nosuch'.*or a plug-in, module.path:Name"):
            POLICIES.get("nosuch")


def test_the_docs_options_example_reads_its_docstring():
    namespace: dict = {}
    exec(compile(doc_block("workflow-example: options-docstring"), str(WORKFLOW), "exec"), namespace)
    (option,) = namespace["describe_options"](namespace["Flip"])
    assert (option.name, option.type, option.default, option.meaning) == (
        "probability", "float", 1.0, "chance that an image is flipped")


def test_options_come_from_signatures_and_docstrings_and_every_builtin_one_is_explained(capsys):
    code, out, _ = run_in_process(["list", "policies", "mixup"], None, None, capsys)
    assert code == 0 and "alpha" in out and "1.0" in out and "Beta(alpha, alpha)" in out
    code, out, _ = run_in_process(["list", "benchmarks", "glyphs"], None, None, capsys)
    assert code == 0 and "5 / 1 / 5" in out and "maml" in out and "conv4" in out
    for registry in (POLICIES, LEARNERS, MODELS):
        for entry in registry:
            for option in describe_options(entry.factory):
                assert option.meaning, f"{registry.kind} {entry.name}: option {option.name} has no Options: line"
    things = Registry("thing")

    @things.register("documented")
    def documented(*, size: int = 3, names: tuple[str, ...] = ()):
        """Something.

        Options:
            size: how big,
                on two lines
            names: which ones
        """

    assert [(o.name, o.type, o.default, o.meaning) for o in describe_options(documented)] == [
        ("size", "int", 3, "how big, on two lines"), ("names", "tuple[str, ...]", (), "which ones")]


def test_a_run_s_config_json_replays_it_and_command_line_options_override_the_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_in_process(["run", "digits", "--policy", "mixup", "--set", "alpha=0.4", "--epochs", "2",
                                   "--seed", "3", "--device", "cpu", "-q", "--out", "first"], None, None, capsys)
    assert code == 0, err
    code, _, err = run_in_process(["run", "--config", "first/config.json", "--out", "again", "-q"], None, None, capsys)
    assert code == 0, err
    first = json.loads((tmp_path / "first" / "results.json").read_text())
    again = json.loads((tmp_path / "again" / "results.json").read_text())
    assert again["metrics"] == first["metrics"] and again["config"] == first["config"]
    (tmp_path / "short.yaml").write_text("benchmark: digits\npolicy: mixup\npolicy_options: {alpha: 0.4}\n"
                                         "epochs: 2\nseed: 3\n")
    code, _, err = run_in_process(["run", "--config", "short.yaml", "--epochs", "1", "--set", "alpha=0.2",
                                   "--device", "cpu", "-q"], None, None, capsys)
    assert code == 0, err
    config = json.loads((tmp_path / "runs" / "digits" / "mixup-alpha=0.2" / "seed3" / "config.json").read_text())
    assert (config["epochs"], config["policy_options"]) == (1, {"alpha": 0.2})
    (tmp_path / "bad.json").write_text('{"benchmark": "digits", "epoch": 2}')
    code, _, err = run_in_process(["run", "--config", "bad.json"], None, None, capsys)
    assert code == 2 and err.count("\n") == 1 and "unknown setting epoch; valid: benchmark" in err


def test_a_sweep_puts_variants_of_one_policy_side_by_side(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "alphas.yaml").write_text(textwrap.dedent('''
        benchmark: digits
        epochs: 1
        seeds: [0, 1]
        variants:
          mixup-0.2: {policy: mixup, policy_options: {alpha: 0.2}}
          mixup-1.0: {policy: mixup, policy_options: {alpha: 1.0}}
    '''))
    code, out, err = run_in_process(["compare", "--sweep", "alphas.yaml", "--device", "cpu", "-q"], None, None, capsys)
    assert code == 0, err
    assert "mixup-0.2" in out and "mixup-1.0" in out
    alphas = tmp_path / "runs" / "compare" / "digits" / "alphas"  # named after the sweep file
    table = (alphas / "comparison.md").read_text()
    assert "| mixup-0.2 | 2 |" in table and "| mixup-1.0 | 2 |" in table
    for name, alpha in (("mixup-0.2", 0.2), ("mixup-1.0", 1.0)):
        for seed in (0, 1):
            config = json.loads((alphas / name / f"seed{seed}" / "config.json").read_text())
            assert config["policy_options"] == {"alpha": alpha} and config["seed"] == seed
    code, _, err = run_in_process(["compare", "digits", "--policies", "mixup,mixup"], None, None, capsys)
    assert code == 2 and "use a --sweep file" in err
    # another sweep on the same benchmark keeps the first one's table
    (tmp_path / "boxes.yaml").write_text("benchmark: digits\nepochs: 1\nseeds: [0]\nvariants:\n"
                                         "  small: {policy: cutout, policy_options: {size: 2}}\n")
    assert run_in_process(["compare", "--sweep", "boxes.yaml", "--device", "cpu", "-q"], None, None, capsys)[0] == 0
    assert (alphas / "comparison.md").read_text() == table
    assert "| small | 1 |" in (alphas.parent / "boxes" / "comparison.md").read_text()
    # a --policies set into the folder of another set: one line, unless --overwrite
    into_alphas = ["compare", "digits", "--policies", "none,mixup", "--seeds", "0", "--epochs", "1", "--device", "cpu",
                   "-q", "--out", str(alphas)]
    code, _, err = run_in_process(into_alphas, None, None, capsys)
    assert code == 2 and err.count("\n") == 1 and "holds the table of another comparison (mixup-0.2, mixup-1.0)" in err
    assert (alphas / "comparison.md").read_text() == table
    assert run_in_process([*into_alphas, "--overwrite"], None, None, capsys)[0] == 0
    assert "| none | 1 |" in (alphas / "comparison.md").read_text()


def test_default_run_folders_tell_variants_apart_by_what_differs_from_the_defaults():
    from metaaugment.run.config import RunConfig
    from metaaugment.run.naming import comparison_folder, run_folder

    def named(**settings):
        return str(run_folder(RunConfig(**settings)))

    assert named(benchmark="digits", policy="mixup") == "runs/digits/mixup/seed0"
    assert named(benchmark="digits", policy="mixup", policy_options={"alpha": 1.0}) == "runs/digits/mixup/seed0"
    assert named(benchmark="digits", policy="mixup", policy_options={"alpha": 0.4}, seed=2) == \
        "runs/digits/mixup-alpha=0.4/seed2"
    assert named(benchmark="digits", model="resnet18") == "runs/digits/none-model=resnet18/seed0"
    assert named(benchmark="glyphs", policy="nme", learner_options={"inner_lr": 0.1}) == \
        "runs/glyphs/nme-learner.inner_lr=0.1/seed0"
    long = [named(benchmark="digits", policy="randaugment", policy_options={"num_ops": 3, "magnitude": m,
                                                                            "backend": "torchvision"}) for m in (5, 6)]
    assert long[0] != long[1] and all(name.startswith("runs/digits/randaugment-h") for name in long)
    assert str(comparison_folder(RunConfig(benchmark="digits", model="resnet18"), ["none", "mixup"])) == \
        "runs/compare/digits/none+mixup-model=resnet18"
