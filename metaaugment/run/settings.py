"""A run's settings in layers, resolved once: RunConfig's defaults < a config or sweep file <
the command line.

The command line hands over what it was given (`CommandLine`: the RunConfig fields typed
there, the key=value items of the option mappings, `--lr`); `layer_settings` puts them over
a file's settings and `build_run_config` resolves the result once into the RunConfig that
every later layer receives. Nothing here knows the CLI library.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from metaaugment.infra.downloads import refuse_downloads_from_file
from metaaugment.infra.errors import UserError
from metaaugment.infra.trust import refuse_code_references
from metaaugment.run.config import RunConfig, cli_metadata, options_of

ROLES = ("policy", "learner", "model")  # a name given on the command line drops a file's options for it


@dataclass
class CommandLine:
    """What the command line set of a run.

    given: RunConfig field -> value, for each field typed on the command line (or by its
        environment variable); the others keep the file's or the default.
    option_sets: options-mapping field (policy_options, learner_options, model_options,
        benchmark_options) -> its key=value items, applied after the benchmark's defaults.
    lr: `--lr`, the learning rate the learner names (`Learner.rate_option`), or None.
    """

    given: dict[str, Any] = field(default_factory=dict)
    option_sets: dict[str, list[str]] = field(default_factory=dict)
    lr: float | None = None


def layer_settings(file_settings: dict[str, Any], command_line: CommandLine, source: str = "",
                   trust_code: bool = False) -> dict[str, Any]:
    """RunConfig fields: a file's (--config, --sweep), overridden by the fields given on the
    command line. A policy, learner or model given there drops the file's options for it. A
    code reference that comes from the file (`source`), not from the command line, is
    refused unless `trust_code`."""
    settings = dict(file_settings)
    given = command_line.given
    refuse_code_references({k: v for k, v in file_settings.items() if k not in given}, source, trust_code=trust_code)
    typed = [item.split("=", 1)[0].strip() for item in command_line.option_sets.get("model_options", [])]
    if "model" not in given or given.get("model") == file_settings.get("model"):
        refuse_downloads_from_file(file_settings.get("model_options"), source, typed)
    for name, value in given.items():
        if name in ROLES and settings.get(name) != value:
            settings.pop(f"{name}_options", None)
        settings[name] = value
    return settings


def build_run_config(settings: dict[str, Any], command_line: CommandLine) -> RunConfig:
    """The resolved RunConfig of `settings` with the command line's --lr and key=value
    options applied over the benchmark's defaults, each option checked by its factory."""
    from metaaugment.registry import BENCHMARKS, LEARNERS, MODELS, POLICIES, create_benchmark, parse_options

    if not settings.get("benchmark"):
        raise UserError("name a benchmark (e.g. metaaug run digits) or give a --config file that names one")
    for role, registry in (("benchmark", BENCHMARKS), ("policy", POLICIES), ("learner", LEARNERS),
                           ("model", MODELS)):  # a misspelt name refused before anything is imported
        if isinstance(settings.get(role), str):
            registry.check_name(settings[role])
    config = RunConfig.from_dict(settings).resolve()  # validates values, checks the benchmark, fills defaults
    sets = command_line.option_sets
    config.learner_options.update(parse_options(LEARNERS.get(config.learner).factory, sets.get("learner_options", [])))
    if command_line.lr is not None:  # the option the learner names (the SGD rate; a meta-learner's outer rate)
        config.learner_options[LEARNERS.get(config.learner).factory.rate_option] = command_line.lr
    config.model_options.update(parse_options(MODELS.get(config.model).factory, sets.get("model_options", [])))
    if sets.get("policy_options"):
        config.policy_options.update(parse_options(POLICIES.get(config.policy).factory, sets["policy_options"]))
    if sets.get("benchmark_options"):
        options = options_of(create_benchmark(config.benchmark))
        config.benchmark_options.update(parse_options(options, sets["benchmark_options"]))
        BENCHMARKS.create_options(config.benchmark, options, config.benchmark_options)  # checked before any work
    return config


def command_line_fields(command: str, config_class: type = RunConfig) -> list[dataclasses.Field]:
    """The fields of `config_class` (RunConfig) that `command` ("run" or "compare") takes on
    its command line."""
    return [f for f in dataclasses.fields(config_class) if command in cli_metadata(f)["commands"]]
