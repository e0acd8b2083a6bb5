"""Optional parts (metaaugment.infra.dependencies): hidden from the environment, each feature that
needs one is one line naming its extra, exit 2, nothing written; the default path of every
family needs none of them."""
import importlib.util
import sys
from pathlib import Path

import pytest
from helpers import run_in_process as run

from metaaugment.infra.dependencies import OPTIONAL_PARTS

FAST = ["--epochs", "1", "--quiet", "--device", "cpu"]
FEW_SHOT = [*FAST, "--steps-per-epoch", "2", "--batch-size", "2", "--val-tasks", "2", "--test-tasks", "2"]

# part -> a command line that asks for it
ASKING = {
    "learn2learn": ["run", "glyphs", "--learner-set", "inner_loop=learn2learn", *FEW_SHOT],
    "timm": ["run", "digits", "--model", "timm/resnet18", *FAST],
    "tensorboard": ["run", "digits", "--tensorboard", *FAST],
    "wandb": ["run", "digits", "--wandb", *FAST],
    "cluster": ["compare", "digits", "--policies", "none", "--seeds", "0", "--launcher", "slurm", "--epochs", "1"],
}


def hide(monkeypatch, module: str) -> None:
    """Make `import module` (and its submodules) fail as if it were not installed."""
    for name in [name for name in sys.modules if name == module or name.startswith(module + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, module, None)


def test_every_optional_part_has_a_command_that_asks_for_it_here_or_in_perf():
    extras = {part.extra for part in OPTIONAL_PARTS.values()}
    assert extras == set(ASKING) | {"kornia"}  # kornia: test_kornia_column_of_the_throughput_script_...
    root = Path(__file__).parents[1]
    pyproject, readme = (root / "pyproject.toml").read_text(), (root / "README.md").read_text()
    assert all(f"\n{extra} = [" in pyproject for extra in extras)  # each extra exists to be installed
    assert all(f"`metaaugment[{extra}]`" in readme for extra in extras)  # and says what it brings


@pytest.mark.parametrize("extra", sorted(ASKING))
def test_a_missing_optional_part_is_one_line_naming_its_extra_and_leaves_nothing(extra, tmp_path, monkeypatch,
                                                                                capsys):
    part = next(part for part in OPTIONAL_PARTS.values() if part.extra == extra)
    hide(monkeypatch, part.module)
    code, out, err = run(ASKING[extra], tmp_path, monkeypatch, capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert f"pip install 'metaaugment[{extra}]'" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # no run folder, no comparison folder


@pytest.mark.parametrize("argv", [["run", "glyphs", "--policy", "intershuffle", *FEW_SHOT],
                                  ["run", "sinusoid", "--policy", "target-noise", *FEW_SHOT],
                                  ["run", "glyphs", "--policy", "nme", "--learner", "metasgd", *FEW_SHOT],
                                  ["run", "glyphs", "--policy", "intrashuffle", "--learner", "protonet", *FEW_SHOT]])
def test_few_shot_runs_need_no_learn2learn(argv, tmp_path, monkeypatch, capsys):
    hide(monkeypatch, "learn2learn")
    code, out, err = run(argv, tmp_path, monkeypatch, capsys)
    assert code == 0, err
    assert "meta-test" in out and list(tmp_path.glob("runs/*/*/seed0/results.json"))


def test_kornia_column_of_the_throughput_script_names_its_extra(monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location(
        "augment_throughput", Path(__file__).parents[1] / "perf" / "augment_throughput.py")
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "perf"))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    hide(monkeypatch, "kornia")
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--kornia", "--sizes", "8", "--batches", "2"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert "--kornia needs kornia, which is not installed: pip install 'metaaugment[kornia]'" in err
