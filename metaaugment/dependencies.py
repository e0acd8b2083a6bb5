"""Quiet access to third-party dependencies that make noise when imported.

learn2learn imports gym and Stable-Baselines3 probes for it; gym then prints a deprecation
banner to stderr. That noise belongs to neither our CLI nor our users' logs, so those
imports go through `import_quietly`, which imports once with stderr and warnings silenced;
every use of learn2learn goes through `learn2learn()`.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import warnings
from types import ModuleType


def import_quietly(name: str, *submodules: str) -> ModuleType:
    """Import module `name` (and `name.<submodule>` for each submodule, loaded in the same
    silence) with stderr and warnings suppressed; returns the top module."""
    with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = importlib.import_module(name)
        for submodule in submodules:
            importlib.import_module(f"{name}.{submodule}")
    return module


def learn2learn() -> ModuleType:
    """The learn2learn module, imported without gym's import-time banner."""
    return import_quietly("learn2learn", "vision.models")
