"""The `metaaug` command line: one clear line and exit code 2 for bad input, --help everywhere."""
import subprocess
import sys

import pytest
from conftest import write_cifar_fixture

from metaaugment.cli.main import main


def metaaug(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "metaaugment.cli.main", *args],
                          capture_output=True, text=True, cwd=cwd)


@pytest.mark.parametrize("args, expected", [
    (["run", "nosuch"], "unknown benchmark 'nosuch'; choose from: cifar10, cifar100, digits"),
    (["run", "digits", "--policy", "nosuch"], "unknown policy 'nosuch'; choose from: autoaugment,"),
    (["run", "digits", "--epochs", "-1"], "--epochs must be a positive integer (got -1)"),
    (["run", "digits", "--epochs", "0"], "--epochs must be a positive integer (got 0)"),
    (["run", "digits", "--device", "cuda:7"], "device"),
    (["run", "digits", "--bogus"], "No such option: --bogus"),
    (["compare", "digits", "--policies", "none,nosuch"], "unknown policy 'nosuch'"),
    (["compare", "digits", "--policies", "none", "--seeds", "0,x"], "--seeds must be"),
    (["run", "digits", "--set", "alpha=1"], "policy 'none' has no option alpha"),
])
def test_bad_input_prints_one_line_and_exits_2(tmp_path, monkeypatch, capsys, args, expected):
    # In-process through the console-script entry point (a subprocess per case is slow).
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    assert not (tmp_path / "runs").exists()


def test_cifar_without_data_says_where_to_put_it(tmp_path):
    # A real process: exit code and stderr as a shell user sees them.
    result = metaaug("run", "cifar10", "--data-root", str(tmp_path / "data"), cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "cifar-10-batches-py" in result.stderr and str(tmp_path / "data") in result.stderr


def test_cifar_fixture_runs_through_the_cli(tmp_path):
    write_cifar_fixture(tmp_path / "data", per_file=16)
    result = metaaug("run", "cifar10", "--data-root", str(tmp_path / "data"), "--model", "small-cnn",
                     "--model-set", "width=4", "--epochs", "1", "--batch-size", "16", "--policy", "cutout",
                     "--quiet", "--out", str(tmp_path / "run"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "run" / "results.json").exists()


def test_list_names_every_registered_component():
    from metaaugment.learners import LEARNERS
    from metaaugment.registry import MODELS, POLICIES
    from metaaugment.tasks import BENCHMARKS

    result = metaaug("list")
    assert result.returncode == 0
    for registry in (BENCHMARKS, POLICIES, LEARNERS, MODELS):
        for entry in registry:
            assert entry.name in result.stdout and entry.summary.split()[0] in result.stdout


@pytest.mark.parametrize("command", [[], ["run"], ["compare"], ["list"]])
def test_help_on_every_command(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0 and "Usage" in capsys.readouterr().out


def test_run_prints_results_and_default_folder(tmp_path):
    result = metaaug("run", "digits", "--epochs", "1", "--quiet", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "test accuracy" in result.stdout
    assert (tmp_path / "runs" / "digits" / "none" / "seed0" / "results.json").exists()
    again = metaaug("run", "digits", "--epochs", "1", "--quiet", cwd=tmp_path)
    assert again.returncode == 2 and "--resume" in again.stderr
