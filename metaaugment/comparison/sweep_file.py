"""Sweep files: the settings every run of a comparison shares, the seeds, and named variants,
each a policy with its options and, optionally, its own learner, model and their options:

    benchmark: digits
    epochs: 3
    seeds: [0, 1]
    variants:
      mixup-0.2: {policy: mixup, policy_options: {alpha: 0.2}}
      mixup-1.0: {policy: mixup, policy_options: {alpha: 1.0}}

Read as run files are (`metaaugment.run.config_file.read_mapping`), held to RunConfig's
schema; code references in a variant are refused unless the user trusts them.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from metaaugment.infra.downloads import refuse_downloads_from_file
from metaaugment.infra.errors import UserError
from metaaugment.infra.schema import SchemaError, check_value, short
from metaaugment.infra.trust import refuse_code_references
from metaaugment.run.config import RunConfig
from metaaugment.run.config_file import RUN_FIELDS, check_keys, read_mapping

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
    check_keys(data, shared + ("seeds", "variants"), where)
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
        check_keys(settings, VARIANT_FIELDS, f"{where}, variant {name}")
        if "policy" not in settings:
            raise UserError(f"{where}: variant {name} names no policy")
        checked = RunConfig.check_settings(settings, f"{where}, variant {name}")
        refuse_code_references(checked, f"{where}, variant {name},", trust_code=trust_code)
        refuse_downloads_from_file(checked.get("model_options"), f"{where}, variant {name},")
        variants.append(Variant(name=name, **checked))
    seeds = data.pop("seeds", None)
    if seeds is not None:
        try:
            seeds = check_value(seeds, list[int], "seeds")
        except SchemaError as error:
            raise UserError(f"{where}: {error}, e.g. [0, 1, 2]") from None
    return Sweep(settings=RunConfig.check_settings(data, where), seeds=seeds, variants=variants)
