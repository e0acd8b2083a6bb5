"""The optional parts: what each brings, the extra that installs it, and quiet imports.

`pip install metaaugment` gives every policy family and every benchmark; a few features use
a package that is not a dependency. Each is imported only when a feature asks for it, through
`require`, which turns its absence into one UserError line naming the extra to install
(before a run creates anything). The extras are those of pyproject.toml.

learn2learn imports gym and Stable-Baselines3 probes for it; gym then prints a deprecation
banner to stderr. That noise belongs to neither our CLI nor our users' logs, so optional
imports go through `import_quietly`, with stderr and warnings silenced.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import warnings
from dataclasses import dataclass
from types import ModuleType

from metaaugment.infra.errors import UserError


@dataclass(frozen=True)
class OptionalPart:
    """A package a feature needs: its import `module`, the `extra` that installs it, and a
    note on installing it where the extra alone does not (`hint`)."""

    module: str
    extra: str
    brings: str
    hint: str = ""

    def install(self) -> str:
        """The command that installs it."""
        return f"pip install 'metaaugment[{self.extra}]'" + (f" ({self.hint})" if self.hint else "")


OPTIONAL_PARTS = {
    "learn2learn": OptionalPart(
        "learn2learn", "learn2learn", "the learn2learn inner loop of maml and metasgd (--learner-set "
        "inner_loop=learn2learn), a cross-check of the default higher loop",
        "its sdist builds on Python <= 3.10; on 3.11 and later run scripts/install_learn2learn.sh of the source tree"),
    "timm": OptionalPart("timm", "timm", "any timm model as --model timm/NAME"),
    "tensorboard": OptionalPart("torch.utils.tensorboard", "tensorboard", "--tensorboard event files"),
    "wandb": OptionalPart("wandb", "wandb", "--wandb logging to Weights & Biases"),
    "submitit": OptionalPart("submitit", "cluster", "compare --launcher slurm (SLURM job arrays)"),
    "kornia": OptionalPart("kornia", "kornia", "the kornia RandAugment column of perf/augment_throughput.py"),
}


def import_quietly(name: str, *submodules: str) -> ModuleType:
    """Import module `name` (and `name.<submodule>` for each submodule, loaded in the same
    silence) with stderr and warnings suppressed; returns the top module."""
    with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = importlib.import_module(name)
        for submodule in submodules:
            importlib.import_module(f"{name}.{submodule}")
    return module


def require(part: str, feature: str) -> ModuleType:
    """The optional package `part` (a key of OPTIONAL_PARTS), imported quietly, or a
    UserError: "`feature` needs PACKAGE: pip install 'metaaugment[EXTRA]'"."""
    wanted = OPTIONAL_PARTS[part]
    try:
        return import_quietly(wanted.module)
    except ImportError:
        raise UserError(f"{feature} needs {part}, which is not installed: {wanted.install()}") from None


def learn2learn() -> ModuleType:
    """The learn2learn module (an optional part), imported without gym's import-time banner."""
    return require("learn2learn", "inner_loop=learn2learn")
