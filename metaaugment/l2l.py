"""Quiet access to learn2learn.

learn2learn imports gym, which prints a deprecation banner to stderr on import. That noise
belongs to neither our CLI nor our users' logs, so every use of learn2learn goes through
`learn2learn()`, which imports it once with stderr and warnings silenced.
"""
from __future__ import annotations

import contextlib
import io
import warnings
from types import ModuleType

_MODULE: ModuleType | None = None


def learn2learn() -> ModuleType:
    """The learn2learn module, imported without gym's import-time banner."""
    global _MODULE
    if _MODULE is None:
        with contextlib.redirect_stderr(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import learn2learn as module
            import learn2learn.vision.models  # noqa: F401  (loads the same modules, quietly)
        _MODULE = module
    return _MODULE
