"""The `metaaug` command line: one clear line and exit code 2 for bad input, --help everywhere."""
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import run_in_process, write_cifar_fixture

from metaaugment.cli.main import main


def assert_one_line_error(args, expected, tmp_path, monkeypatch, capsys):
    """`metaaug ARGS` in-process through the console-script entry point (a subprocess per case
    is slow): exit 2, one line on stderr containing `expected`, no traceback, no run folder."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    assert not (tmp_path / "runs").exists()


# Option values a constructor rejects: one line naming the option, exit 2, no run folder.
BAD_OPTION_VALUES = [
    (["digits", "--policy", "metaaugment", "--set", "window=0"],
     "policy 'metaaugment': window must be at least 1 (got 0)"),
    (["digits", "--policy", "metaaugment", "--set", "refresh=0"], "refresh must be at least 1 (got 0)"),
    (["digits", "--policy", "metaaugment", "--set", "epsilon=2"], "epsilon must be in [0, 1] (got 2.0)"),
    (["digits", "--policy", "metaaugment", "--set", "policy_lr=0"], "policy_lr must be a positive number (got 0.0)"),
    (["digits", "--policy", "metaaugment", "--set", "engine=exact"],
     "engine must be one of fast, fast-jvp, higher, last-layer (got 'exact')"),
    (["digits", "--policy", "metaaugment", "--set", "copies=0"], "copies must be at least 1 (got 0)"),
    (["digits", "--policy", "metaaugment", "--set", "lookahead_steps=2"],
     "lookahead_steps must be 1 unless engine=higher"),
    (["digits", "--policy", "metaaugment", "--set", "extra_ops=Blur"],
     "extra_ops must be among Rotate180, Flip (got ('Blur',))"),
    (["digits", "--policy", "randaugment", "--set", "num_ops=-1"],
     "policy 'randaugment': num_ops must be a non-negative integer (got -1)"),
    (["digits", "--policy", "randaugment", "--set", "magnitude=40"], "magnitude must be in [0, 30] (got 40)"),
    (["digits", "--policy", "trivialaugment", "--set", "num_magnitude_bins=0"],
     "num_magnitude_bins must be at least 2 (bins span each op's range) (got 0)"),
    (["digits", "--policy", "autoaugment", "--set", "policy=mnist"],
     "policy must be one of cifar10, imagenet, svhn (got 'mnist')"),
    (["digits", "--policy", "mixup", "--set", "alpha=nan"],
     "policy 'mixup': alpha must be a positive number (got nan)"),
    (["digits", "--policy", "cutmix", "--set", "alpha=-1"], "alpha must be a positive number (got -1.0)"),
    (["digits", "--policy", "cutout", "--set", "size=0"], "size must be a positive number of pixels (got 0)"),
    (["digits", "--policy", "saliency-mixup", "--set", "q=150"], "q must be a percentile in [0, 100] (got 150.0)"),
    (["digits", "--policy", "rl-mixup", "--set", "reward_every=0"], "reward_every must be at least 1 (got 0)"),
    (["digits", "--policy", "rl-mixup", "--set", "val_fraction=0"], "val_fraction must be in (0, 1] (got 0.0)"),
    (["digits", "--learner-set", "momentum=-1"],
     "learner 'supervised': momentum must be a non-negative number (got -1.0)"),
    (["digits", "--learner-set", "weight_decay=-0.1"], "weight_decay must be a non-negative number (got -0.1)"),
    (["digits", "--learner-set", "schedule=linear"], "schedule must be cosine, constant or onecycle (got 'linear')"),
    (["digits", "--learner-set", "lr=inf"], "lr must be a positive number (got inf)"),
    (["digits", "--lr", "nan"], "lr must be a positive number (got nan)"),
    (["digits", "--model-set", "width=0"], "model 'small-cnn': width must be at least 1 (got 0)"),
    (["digits", "--model", "wrn-40-2", "--model-set", "dropout=1.5"], "dropout must be in [0, 1) (got 1.5)"),
    (["sinusoid", "--learner-set", "inner_lr=0"], "learner 'maml': inner_lr must be a positive number (got 0.0)"),
    (["sinusoid", "--learner-set", "inner_steps=0"], "inner_steps must be at least 1 (got 0)"),
    (["sinusoid", "--policy", "target-noise", "--set", "amplitude=-1"],
     "amplitude must be a non-negative number (got -1.0)"),
    (["sinusoid", "--policy", "discrete-noise", "--set", "values=1,1"], "values must be distinct numbers"),
    (["sinusoid", "--policy", "target-noise", "--set", "wrap=3,1"],
     "wrap must be LOW,HIGH with LOW < HIGH (got (3.0, 1.0))"),
    (["sinusoid", "--model-set", "hidden=0"], "hidden must be one or more positive widths (got (0,))"),
    (["sinusoid", "--model", "conv4"], "conv4 takes images"),
    (["glyphs", "--model-set", "hidden_size=0"], "hidden_size must be at least 1 (got 0)"),
]


@pytest.mark.parametrize("args, expected", BAD_OPTION_VALUES)
def test_rejected_option_values_print_one_line_naming_the_option(tmp_path, monkeypatch, capsys, args, expected):
    assert_one_line_error(["run", *args, "--epochs", "1", "--device", "cpu"], expected, tmp_path, monkeypatch, capsys)


def test_cifar_without_data_says_where_to_put_it(tmp_path, monkeypatch, capsys):
    assert_one_line_error(["run", "cifar10", "--data-root", str(tmp_path / "data")], "cifar-10-batches-py",
                          tmp_path, monkeypatch, capsys)


def test_cifar_fixture_runs_through_the_cli(tmp_path, monkeypatch, capsys):
    write_cifar_fixture(tmp_path / "data", per_file=16)
    code, out, err = run_in_process(["run", "cifar10", "--data-root", str(tmp_path / "data"), "--model", "small-cnn",
                                     "--model-set", "width=4", "--epochs", "1", "--batch-size", "16", "--policy",
                                     "cutout", "--quiet", "--out", str(tmp_path / "run")], tmp_path, monkeypatch,
                                    capsys)
    assert code == 0, err
    assert (tmp_path / "run" / "results.json").exists() and "test accuracy" in out


def test_list_names_every_registered_component(monkeypatch, capsys, tmp_path):
    from metaaugment.learners import LEARNERS
    from metaaugment.registry import MODELS, POLICIES
    from metaaugment.tasks import BENCHMARKS

    monkeypatch.setenv("COLUMNS", "250")
    code, out, _ = run_in_process(["list"], tmp_path, monkeypatch, capsys)
    assert code == 0
    lines = " ".join(out.split())
    for registry in (BENCHMARKS, POLICIES, LEARNERS, MODELS):
        for entry in registry:
            assert f"{entry.name} {entry.summary}" in lines  # whole: a summary is never cut
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run_in_process(["list"], tmp_path, monkeypatch, capsys)
    assert code == 0 and "…" not in out and max(map(len, out.splitlines())) <= 80  # wrapped, not cut


def test_the_static_listing_of_the_built_ins_is_what_importing_them_registers():
    """`metaaug list` reads the built-ins' names and summaries from their sources (no torch
    import); a registration the source scan would miss or misread shows up here."""
    from metaaugment import registry

    for symbol in ("POLICIES", "LEARNERS", "MODELS", "BENCHMARKS"):
        loaded = getattr(registry, symbol)
        unloaded = registry.Registry(loaded.kind, builtins=loaded._builtins, symbol=symbol)
        built_in = [registry.Listed(e.name, e.summary, e.origin) for e in loaded if e.origin == "built-in"]
        assert unloaded.listing() == built_in  # (a module:Name typed in another test is remembered too)
        assert not unloaded._loaded  # listed from the sources alone


def _help_of(command, flag, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, flag])
    assert exit_info.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("command", [[], ["run"], ["compare"], ["list"], ["eval"], ["export"]])
def test_help_on_every_command_keeps_every_bracketed_word(command, capsys):
    import re

    import typer

    from metaaugment.cli.main import app

    text = _help_of(command, "--help", capsys)
    assert text.startswith("Usage: metaaug") and _help_of(command, "-h", capsys) == text
    group = typer.main.get_command(app)
    node = group.commands[command[0]] if command else group
    helps = [node.help or "", *(getattr(param, "help", None) or "" for param in node.params)]
    bracketed = {word for help_text in helps for word in re.findall(r"\S*\[[^\]\s]*\]\S*", help_text)}
    flat = " ".join(text.split())
    assert all(word in flat for word in bracketed), sorted(w for w in bracketed if w not in flat)
    if command == ["run"]:
        assert "pip install 'metaaugment[tensorboard]'" in flat  # rich markup would eat [tensorboard]


def test_version(capsys):
    from metaaugment import __version__

    assert _help_of([], "--version", capsys) == f"metaaug {__version__}\n"


@pytest.mark.multiprocess
def test_help_and_list_start_without_importing_torch_or_any_policy():
    """`metaaug --help`, `run --help` and `list` answer from the CLI's own text and the
    registries' static listing; torch (a second or more) is imported only by real work."""
    code = (
        "import sys\n"
        "from metaaugment.cli.main import main\n"
        "for argv in (['--help'], ['run', '--help'], ['compare', '--help'], ['list'], ['--version']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as exit_info:\n"
        "        assert exit_info.code == 0, argv\n"
        "heavy = ('torch', 'torchvision', 'numpy', 'stable_baselines3', 'metaaugment.baselines', 'metaaugment.tasks')\n"
        "print('imported:', [name for name in heavy if name in sys.modules], file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and "imported: []" in result.stderr, result.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_the_installed_metaaug_command_runs_and_keeps_a_finished_run(tmp_path):
    """The one test of the installed entry point as a shell user starts it: a real process."""
    command = Path(sys.executable).parent / "metaaug"
    result = subprocess.run([str(command), "run", "digits", "--epochs", "1", "--quiet"], capture_output=True,
                            text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "test accuracy" in result.stdout
    assert (tmp_path / "runs" / "digits" / "none" / "seed0" / "results.json").exists()
    again = subprocess.run([str(command), "run", "digits", "--epochs", "1", "--quiet"], capture_output=True,
                           text=True, cwd=tmp_path)
    assert again.returncode == 2 and "--resume" in again.stderr and len(again.stderr.strip().splitlines()) == 1


def test_a_new_run_config_field_is_an_option_of_run_and_compare_with_no_other_edit():
    """The options of `run` and `compare` are generated from RunConfig's fields: a field added
    to a RunConfig is in both commands' help and reaches the command as given."""
    import dataclasses

    import typer
    from typer.testing import CliRunner

    from metaaugment.cli.settings_options import with_run_settings
    from metaaugment.run.config import RunConfig, setting

    @dataclasses.dataclass
    class Extended(RunConfig):
        warmup_steps: int = setting(0, "Steps of learning-rate warm-up.")

    seen = {}
    for command in ("run", "compare"):
        app = typer.Typer()

        @app.command()
        @with_run_settings(command, Extended)
        def body(ctx: typer.Context, settings) -> None:
            seen[command] = settings

        @app.command()
        def other() -> None:  # two commands: typer then takes the command's name
            pass

        runner = CliRunner()
        help_text = runner.invoke(app, ["body", "--help"], env={"COLUMNS": "200"}).output
        assert "--warmup-steps" in help_text and "Steps of learning-rate warm-up." in help_text, help_text
        result = runner.invoke(app, ["body", "digits", "--warmup-steps", "5", "--epochs", "2"])
        assert result.exit_code == 0, result.output
        assert seen[command].given == {"benchmark": "digits", "warmup_steps": 5, "epochs": 2}
    def parameters(command):
        return with_run_settings(command)(lambda ctx, settings: None).__signature__.parameters

    assert {"policy", "seed", "policy_from"} <= set(parameters("run"))
    assert not {"policy", "seed", "policy_from"} & set(parameters("compare"))  # --policies, --seeds instead


def test_every_run_setting_the_command_line_takes_is_in_the_help_of_its_commands(capsys):
    import dataclasses

    from metaaugment.run.config import RunConfig, cli_metadata

    for command in ("run", "compare"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        for config_field in dataclasses.fields(RunConfig):
            meta = cli_metadata(config_field)
            if command in meta["commands"] and not meta["argument"]:
                flag = meta["flag"] or "--" + config_field.name.replace("_", "-")
                assert flag in text, (command, flag)


def test_one_run_resolves_its_config_once(tmp_path, monkeypatch, capsys):
    from metaaugment.run.config import RunConfig

    calls = []
    validate = RunConfig.validate
    monkeypatch.setattr(RunConfig, "validate", lambda self: calls.append(1) or validate(self))
    code, _, err = run_in_process(["run", "digits", "--epochs", "1", "--batch-size", "512", "--device", "cpu",
                                   "-q", "--out", str(tmp_path / "run")], tmp_path, monkeypatch, capsys)
    assert code == 0, err
    assert len(calls) == 1


def test_resume_on_a_folder_with_no_run_is_one_line_and_starts_nothing(tmp_path, monkeypatch, capsys):
    for out in (tmp_path / "never", tmp_path / "empty"):
        if out.name == "empty":
            out.mkdir()
        code, _, err = run_in_process(["run", "digits", "--device", "cpu", "-q", "--resume", "--out", str(out)],
                                      tmp_path, monkeypatch, capsys)
        assert code == 2 and "holds no run, nothing to resume; run without --resume" in err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        assert not out.exists() or not any(out.iterdir())


@pytest.mark.multiprocess
@pytest.mark.parametrize("args, near", [
    (["run", "digit"], "did you mean digits"),
    (["run", "cifar-10"], "did you mean cifar10 or cifar100"),
    (["run", "digits", "--policy", "randaug"], "did you mean randaugment"),
    (["run", "digits", "--learner", "supervise"], "did you mean supervised"),
    (["run", "digits", "--model", "resnt18"], "did you mean resnet18"),
    (["compare", "digits", "--policies", "none,trivialaugmnt"], "did you mean trivialaugment"),
])
def test_a_misspelt_name_is_refused_with_the_nearest_names_before_torch_is_imported(args, near):
    code = ("import sys\nfrom metaaugment.cli.main import main\ntry:\n    main(sys.argv[1:])\n"
            "except SystemExit as done:\n    print(done.code, 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert result.stdout.split() == ["2", "False"], result.stdout + result.stderr
    assert near in result.stderr and len(result.stderr.strip().splitlines()) == 1
