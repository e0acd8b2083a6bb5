"""The trust boundary: a file is data, never code.

A `module.path:Name` reference names code: resolving it imports the module, which runs it.
metaaugment imports such a reference only when the user named it themselves, on the command
line or in Python (`create_policy("mypol:MyPolicy")`, `RunConfig(policy=...)`), or when it
comes from an installed distribution's entry point (installing a package is trusting it).

A reference read from a file (a `--config` or `--sweep` file, a run folder's config.json
read by `eval`, `export` or `--policy-from`, an exported `model.pt` / `policy.pt`) is refused
with one line, unless the user passes `--trust-code` (`trust_code=True` in Python), the
ecosystem's convention for this (Hugging Face's `trust_remote_code`). Names of built-in and
installed entries, and `timm/NAME` models, are plain names and need no trust.

Whatever its source, the object a reference resolves to is checked to be what its role needs
(a policy class, a learner class, a model factory, a benchmark factory) before it is called:
`metaaugment.registry.Registry`.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from metaaugment.infra.errors import UserError

TRUST_FLAG = "--trust-code"
# the settings of a run that name a registry entry, and so may name code
CODE_SETTINGS = ("benchmark", "policy", "learner", "model")


def is_code_reference(name: Any) -> bool:
    """Whether `name` is a `module.path:Name` reference (code), not a registered name."""
    return isinstance(name, str) and ":" in name


def refuse_code_references(settings: Mapping[str, Any], source: str, *, trust_code: bool,
                           keys: Iterable[str] = CODE_SETTINGS) -> None:
    """A UserError naming `source` and the setting when any of `keys` in `settings` holds a
    code reference and the user has not passed --trust-code."""
    if trust_code:
        return
    for key in keys:
        value = settings.get(key)
        if is_code_reference(value):
            raise UserError(f"{source} names code ({key} {value!r}); code named in a file is imported only with "
                            f"{TRUST_FLAG} (docs/reliability.md, trust)")
