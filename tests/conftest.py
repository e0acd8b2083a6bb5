"""Shared fixtures (the functions they use are in helpers.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
from helpers import write_cifar_fixture


@pytest.fixture
def cifar10_root(tmp_path: Path) -> Path:
    write_cifar_fixture(tmp_path)
    return tmp_path


@pytest.fixture
def crash_at(monkeypatch):
    """Arm a crash for the next run: `crash_at(step, error)` makes the run loop raise `error`
    (KeyboardInterrupt by default) as it starts training step `step` (0-based), before that
    step changes anything, as a kill would; the loop is restored after the crash."""
    from metaaugment.run.loop import Trainer

    original = Trainer._step

    def arm(step: int, error: BaseException | type[BaseException] = KeyboardInterrupt) -> None:
        def crashing(self, inputs):
            if self.state.step == step:
                monkeypatch.setattr(Trainer, "_step", original)
                raise error
            return original(self, inputs)

        monkeypatch.setattr(Trainer, "_step", crashing)

    return arm
