"""Default names of run and comparison folders: what differs from the defaults, readable.

A run folder is named after its policy and whatever else differs from the benchmark's and
the factories' defaults (policy options, model and its options, learner and its options,
the benchmark's own options):
`runs/digits/mixup-alpha=0.4/seed0`, `runs/digits/none-model=resnet18/seed0`, so two
variants of one policy never meet in one folder by default. A label longer than
LABEL_LIMIT, or with characters a folder name should not hold, becomes a short hash of the
same settings (`mixup-h3f9a2c1b`); config.json stays the record of what ran.

A comparison's default folder is named after its sweep file, or after the benchmark and the
set of its variants (`runs/compare/digits/none+mixup`), with the shared deviations (a
`--model` for all) appended; writing a table over another set's asks for --overwrite
(`run.compare.check_table_owner`).
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Sequence

from metaaugment.run.config import RunConfig
from metaaugment.run.folder import folder_name

LABEL_LIMIT = 48
_SAFE = re.compile(r"^[A-Za-z0-9._=+-]+$")  # what a sweep's variant names may hold


def _text(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return "+".join(_text(v) for v in value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _defaults(factory: Any) -> dict[str, Any]:
    """The keyword options' defaults of `factory` (from its signature)."""
    from metaaugment.registry import describe_options

    return {option.name: option.default for option in describe_options(factory)}


def _changed(options: dict[str, Any], defaults: dict[str, Any], prefix: str = "") -> list[str]:
    """'PREFIXkey=value' for each option whose value is not its default (tuples equal lists)."""
    def same(key: str, value: Any) -> bool:
        return key in defaults and json.dumps(defaults[key], default=str) == json.dumps(value, default=str)

    return [f"{prefix}{key}={_text(value)}" for key, value in sorted(options.items()) if not same(key, value)]


def _resolved(config: RunConfig) -> tuple[RunConfig, Any]:
    from metaaugment.registry import create_benchmark

    return config.resolve(), create_benchmark(config.benchmark)


def _policy_deviations(resolved: RunConfig, bench: Any) -> list[str]:
    from metaaugment.registry import POLICIES

    defaults = {**_defaults(POLICIES.get(resolved.policy).factory),
                **bench.default_policy_options.get(resolved.policy, {})}
    return _changed(resolved.policy_options, defaults)


def _shared_deviations(resolved: RunConfig, bench: Any) -> list[str]:
    from metaaugment.registry import LEARNERS, MODELS

    found = []
    if bench.options is not None:
        found += _changed(resolved.benchmark_options, _defaults(bench.options), "benchmark.")
    for role, registry, default_name in (("model", MODELS, bench.default_model),
                                         ("learner", LEARNERS, bench.default_learner)):
        name, options = getattr(resolved, role), getattr(resolved, f"{role}_options")
        if name != default_name:
            found.append(f"{role}={name}")
        defaults = {**_defaults(registry.get(name).factory), **bench.default_options_for(role, name)}
        found += _changed(options, defaults, f"{role}.")
    return found


def policy_deviations(config: RunConfig) -> list[str]:
    """'key=value' for each policy option of `config` that is not the benchmark's or the
    policy's default."""
    return _policy_deviations(*_resolved(config))


def shared_deviations(config: RunConfig) -> list[str]:
    """'model=NAME', 'model.key=value', 'learner=NAME', 'learner.key=value' and
    'benchmark.key=value' for the model, learner and their options and the benchmark's own
    options of `config` that are not the defaults."""
    return _shared_deviations(*_resolved(config))


def label(head: str, deviations: Sequence[str]) -> str:
    """`head` followed by the deviations ('mixup-alpha=0.4'), or by a hash of them when that
    would be longer than LABEL_LIMIT or hold other characters than letters, digits and . _ = + -."""
    head = folder_name(head)
    if not deviations:
        return head
    readable = "-".join([head, *deviations])
    if len(readable) <= LABEL_LIMIT and _SAFE.match(readable):
        return readable
    digest = hashlib.sha256("\n".join(deviations).encode()).hexdigest()[:8]
    return f"{head}-h{digest}"


def run_folder(config: RunConfig) -> Path:
    """The default folder of `metaaug run`: runs/BENCHMARK/LABEL/seedK."""
    resolved, bench = _resolved(config)  # once for both kinds of deviation
    name = label(config.policy, [*_policy_deviations(resolved, bench), *_shared_deviations(resolved, bench)])
    return Path("runs") / folder_name(config.benchmark) / name / f"seed{config.seed}"


def policy_variant_name(config: RunConfig) -> str:
    """A comparison row's name for a policy with its options (`--policies` form)."""
    return label(config.policy, policy_deviations(config))


def comparison_folder(config: RunConfig, variant_names: Sequence[str], sweep: Path | None = None) -> Path:
    """The default folder of `metaaug compare`: runs/compare/BENCHMARK/ then the sweep file's
    name, or the variants joined by '+' (a hash past LABEL_LIMIT), then the model and
    learner deviations shared by every variant."""
    if sweep is not None:
        head = folder_name(Path(sweep).stem)
    else:
        head = "+".join(variant_names)
        if len(head) > LABEL_LIMIT:
            digest = hashlib.sha256(head.encode()).hexdigest()[:8]
            head = f"{variant_names[0]}+{len(variant_names) - 1}-more-h{digest}"
    shared = [] if sweep is not None else shared_deviations(config)
    return Path("runs") / "compare" / folder_name(config.benchmark) / label(head, shared)
