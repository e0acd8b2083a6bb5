"""Run configurations and comparison sweeps read from JSON or YAML files.

A run file holds RunConfig's fields (config.json of a finished run is one, so a run can be
replayed from its own folder). A sweep file holds the settings every run shares, the seeds,
and named variants, each a policy with its options and, optionally, its own learner, model
and their options:

    benchmark: digits
    epochs: 3
    seeds: [0, 1]
    variants:
      mixup-0.2: {policy: mixup, policy_options: {alpha: 0.2}}
      mixup-1.0: {policy: mixup, policy_options: {alpha: 1.0}}
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metaaugment.errors import UserError
from metaaugment.run.config import RunConfig

RUN_FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig))
OPTION_FIELDS = ("policy_options", "learner_options", "model_options")
VARIANT_FIELDS = ("policy", "policy_options", "learner", "learner_options", "model", "model_options")
VARIANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]*$")


@dataclass(frozen=True)
class Variant:
    """One row of a comparison: a name (its folder and table row), a policy with its options,
    and optionally a learner and model with their options (None: the benchmark's)."""

    name: str
    policy: str
    policy_options: dict[str, Any] = field(default_factory=dict)
    learner: str | None = None
    learner_options: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    model_options: dict[str, Any] = field(default_factory=dict)

    def apply(self, base: RunConfig, seed: int) -> RunConfig:
        """`base` with this variant's settings and `seed`; a variant's learner or model
        replaces the base's options for it."""
        learner_options = dict(self.learner_options if self.learner else {**base.learner_options,
                                                                          **self.learner_options})
        model_options = dict(self.model_options if self.model else {**base.model_options, **self.model_options})
        return dataclasses.replace(base, policy=self.policy, policy_options=dict(self.policy_options), seed=seed,
                                   learner=self.learner or base.learner, learner_options=learner_options,
                                   model=self.model or base.model, model_options=model_options)


def read_mapping(path: Path, what: str) -> dict[str, Any]:
    """The top-level mapping of a JSON (.json) or YAML (.yaml, .yml; anything else is tried
    as JSON, then YAML) file; a UserError naming the file when it cannot be read."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{what} {path} cannot be read: {' '.join(str(error).split())}") from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            data = json.loads(text)
        else:
            try:
                data = json.loads(text)
            except json.JSONDecodeError:
                import yaml

                data = yaml.safe_load(text)  # safe_load: plain data only, no Python objects
    except Exception as error:  # json.JSONDecodeError, yaml.YAMLError
        raise UserError(f"{what} {path} is not valid {'JSON' if suffix == '.json' else 'JSON or YAML'}: "
                        f"{' '.join(str(error).split())}") from None
    if not isinstance(data, dict):
        raise UserError(f"{what} {path} must hold a mapping of settings (key: value), not {type(data).__name__}")
    return data


def _check_keys(data: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise UserError(f"{where} has unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                        f"valid: {', '.join(allowed)}")
    for key in OPTION_FIELDS:
        if key in data and not isinstance(data[key], dict):
            raise UserError(f"{where}: {key} must be a mapping of option: value")


def run_settings(path: Path) -> dict[str, Any]:
    """The RunConfig fields a run file sets (checked names; option mappings copied)."""
    data = read_mapping(path, "config file")
    _check_keys(data, RUN_FIELDS, f"config file {path}")
    return {key: dict(value) if key in OPTION_FIELDS else value for key, value in data.items()}


@dataclass(frozen=True)
class Sweep:
    """A sweep file: the settings every run shares, the seeds (None: not given) and the variants."""

    settings: dict[str, Any]
    seeds: list[int] | None
    variants: list[Variant]


def read_sweep(path: Path) -> Sweep:
    """Read and check a sweep file (module docstring); every variant needs a policy."""
    data = read_mapping(path, "sweep file")
    where = f"sweep file {path}"
    shared = tuple(name for name in RUN_FIELDS if name not in ("seed", "policy", "policy_options"))
    _check_keys(data, shared + ("seeds", "variants"), where)
    variants_data = data.pop("variants", None)
    if not isinstance(variants_data, dict) or not variants_data:
        raise UserError(f"{where} needs 'variants': a mapping of name -> {{policy: ..., policy_options: ...}}")
    variants = []
    for name, settings in variants_data.items():
        name = str(name)
        if not VARIANT_NAME.match(name):
            raise UserError(f"{where}: variant name {name!r} must be letters, digits and . _ = + - (it names a "
                            f"folder)")
        if not isinstance(settings, dict):
            raise UserError(f"{where}: variant {name} must be a mapping with at least a policy")
        _check_keys(settings, VARIANT_FIELDS, f"{where}, variant {name}")
        if "policy" not in settings:
            raise UserError(f"{where}: variant {name} names no policy")
        variants.append(Variant(name=name, **{k: dict(v) if k in OPTION_FIELDS else v for k, v in settings.items()}))
    seeds = data.pop("seeds", None)
    if seeds is not None and (not isinstance(seeds, list) or not all(isinstance(s, int) for s in seeds)):
        raise UserError(f"{where}: seeds must be a list of integers, e.g. [0, 1, 2]")
    return Sweep(settings=data, seeds=seeds, variants=variants)
