"""Registered learners: `create_learner(name, **options)` and `list_learners()`."""
from __future__ import annotations

from typing import Any

from ..registry import Entry
from . import episodic, supervised  # noqa: F401  (register the learners)
from .base import Learner
from .episodic import EpisodicLearner, MAMLLearner, MetaSGDLearner, ProtoNetLearner
from .registry import LEARNERS
from .supervised import SupervisedLearner, forward_pass, supervised_step


def create_learner(name: str, **options: Any) -> Learner:
    """A new learner by registry name; unknown names or options raise UserError."""
    return LEARNERS.create(name, **options)


def list_learners() -> list[Entry[Learner]]:
    """Every registered learner with its one-line summary."""
    return list(LEARNERS)


__all__ = ["EpisodicLearner", "LEARNERS", "Learner", "MAMLLearner", "MetaSGDLearner", "ProtoNetLearner", "SupervisedLearner", "create_learner", "forward_pass",
           "list_learners", "supervised_step"]
