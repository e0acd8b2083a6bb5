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

Both are held to one schema, RunConfig's field types (`RunConfig.check_settings`), the same
types the CLI parses its options into: a wrong type, an unknown or duplicate key, a file
too large or an alias bomb is one line naming the file and the key. Code references
(`module:Name`) in a file are refused unless the user trusts them (`metaaugment.trust`).
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
from metaaugment.schema import SchemaError, check_value, clip, count_values, short
from metaaugment.trust import refuse_code_references

RUN_FIELDS = tuple(f.name for f in dataclasses.fields(RunConfig))
VARIANT_FIELDS = ("policy", "policy_options", "learner", "learner_options", "model", "model_options")
VARIANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]*$")
MAX_FILE_BYTES = 1 << 20  # a settings file is a page of text; anything larger is not one
MAX_VALUES = 100_000  # values once YAML aliases are expanded


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
    as JSON, then YAML) file: plain data only (YAML's safe loader), no duplicate keys, at most
    MAX_FILE_BYTES and MAX_VALUES values with aliases expanded. A UserError naming the file
    when it cannot be read or is none of these."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise UserError(f"{what} {path} is larger than {MAX_FILE_BYTES // 1024} KiB: not a settings file")
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{what} {path} cannot be read: {' '.join(str(error).split())}") from None
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            data = _load_json(text)
        else:
            try:
                data = _load_json(text)
            except json.JSONDecodeError:
                data = _load_yaml(text)
    except SchemaError as error:
        raise UserError(f"{what} {path} {error}") from None
    except RecursionError:
        raise UserError(f"{what} {path} is nested too deeply to be a settings file") from None
    except Exception as error:  # json.JSONDecodeError, yaml.YAMLError
        raise UserError(f"{what} {path} is not valid {'JSON' if suffix == '.json' else 'JSON or YAML'}: "
                        f"{clip(str(error), 200)}") from None
    try:
        count_values(data, MAX_VALUES)
    except SchemaError as error:
        raise UserError(f"{what} {path} {error}") from None
    if not isinstance(data, dict):
        raise UserError(f"{what} {path} must hold a mapping of settings (key: value), not {type(data).__name__}")
    return data


def _repeated(keys: list[Any]) -> Any:
    """The first key that occurs twice in `keys`, or None."""
    seen: set[Any] = set()
    for key in keys:
        try:
            if key in seen:
                return key
            seen.add(key)
        except TypeError:  # an unhashable key (a YAML list): its constructor reports it
            continue
    return None


def _no_duplicates(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    repeated = _repeated([key for key, _ in pairs])
    if repeated is not None:
        raise SchemaError(f"gives the key {short(repeated)} twice; give each setting once")
    return dict(pairs)


def _load_json(text: str) -> Any:
    return json.loads(text, object_pairs_hook=_no_duplicates)


def _load_yaml(text: str) -> Any:
    import yaml

    class Loader(yaml.SafeLoader):  # safe: plain data only, no Python objects
        def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
            repeated = _repeated([self.construct_object(key, deep=deep) for key, _ in node.value])
            if repeated is not None:
                raise SchemaError(f"gives the key {short(repeated)} twice (line {node.start_mark.line + 1}); "
                                  f"give each setting once")
            return super().construct_mapping(node, deep=deep)

    return yaml.load(text, Loader=Loader)  # noqa: S506 (a SafeLoader subclass)


def _check_keys(data: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted((key for key in data if key not in allowed), key=str)
    if unknown:
        names = ", ".join(short(key) if not isinstance(key, str) else key for key in unknown)
        raise UserError(f"{where} has unknown setting{'s' if len(unknown) > 1 else ''} {names[:120]}; "
                        f"valid: {', '.join(allowed)}")


def run_settings(path: Path) -> dict[str, Any]:
    """The RunConfig fields a run file sets: checked names and types (RunConfig's schema),
    option mappings copied. Code references in it are the caller's to refuse or trust."""
    data = read_mapping(path, "config file")
    where = f"config file {path}"
    _check_keys(data, RUN_FIELDS, where)
    return RunConfig.check_settings(data, where)


@dataclass(frozen=True)
class Sweep:
    """A sweep file: the settings every run shares, the seeds (None: not given) and the variants."""

    settings: dict[str, Any]
    seeds: list[int] | None
    variants: list[Variant]


def read_sweep(path: Path, *, trust_code: bool = False) -> Sweep:
    """Read and check a sweep file (module docstring): names and types of the shared settings
    and of every variant (each needs a policy), the seeds; a variant naming code is refused
    unless `trust_code` (the shared settings' references are the caller's to check, as the
    command line may override them)."""
    data = read_mapping(path, "sweep file")
    where = f"sweep file {path}"
    shared = tuple(name for name in RUN_FIELDS if name not in ("seed", "policy", "policy_options"))
    _check_keys(data, shared + ("seeds", "variants"), where)
    variants_data = data.pop("variants", None)
    if not isinstance(variants_data, dict) or not variants_data:
        raise UserError(f"{where} needs 'variants': a mapping of name -> {{policy: ..., policy_options: ...}}")
    variants = []
    for name, settings in variants_data.items():
        if not isinstance(name, (str, int)) or isinstance(name, bool) or not VARIANT_NAME.match(str(name)):
            raise UserError(f"{where}: variant name {short(name)} must be letters, digits and . _ = + - (it names a "
                            f"folder)")
        name = str(name)
        if not isinstance(settings, dict):
            raise UserError(f"{where}: variant {name} must be a mapping with at least a policy (got {short(settings)})")
        _check_keys(settings, VARIANT_FIELDS, f"{where}, variant {name}")
        if "policy" not in settings:
            raise UserError(f"{where}: variant {name} names no policy")
        checked = RunConfig.check_settings(settings, f"{where}, variant {name}")
        refuse_code_references(checked, f"{where}, variant {name},", trust_code=trust_code)
        variants.append(Variant(name=name, **checked))
    seeds = data.pop("seeds", None)
    if seeds is not None:
        try:
            seeds = check_value(seeds, list[int], "seeds")
        except SchemaError as error:
            raise UserError(f"{where}: {error}, e.g. [0, 1, 2]") from None
    return Sweep(settings=RunConfig.check_settings(data, where), seeds=seeds, variants=variants)
