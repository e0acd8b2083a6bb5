"""metaaugment: learned data augmentation for PyTorch behind one policy interface.

Compose any policy with your own model and loop::

    from metaaugment import Batch, StepContext, TaskSpec, create_policy, supervised_step

The names below are imported on first use (PEP 562), so `import metaaugment` and the
`metaaug` command's help start without loading torch or any policy.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "Batch": "metaaugment.batch", "Episode": "metaaugment.batch", "Params": "metaaugment.batch",
    "Share": "metaaugment.batch", "Tasks": "metaaugment.batch", "per_sample": "metaaugment.batch",
    "UserError": "metaaugment.infra.errors",
    "EpisodicLearner": "metaaugment.learners", "Learner": "metaaugment.learners",
    "SupervisedLearner": "metaaugment.learners", "create_learner": "metaaugment.learners",
    "forward_pass": "metaaugment.learners", "list_learners": "metaaugment.learners",
    "supervised_step": "metaaugment.learners",
    "accuracy": "metaaugment.losses", "per_sample_cross_entropy": "metaaugment.losses",
    "weighted_mean": "metaaugment.losses",
    "AugmentationPolicy": "metaaugment.policy", "BatchPolicy": "metaaugment.policy",
    "ForwardOutput": "metaaugment.policy", "StepContext": "metaaugment.policy", "StepResult": "metaaugment.policy",
    "TaskPolicy": "metaaugment.policy",
    "create_model": "metaaugment.registry", "create_policy": "metaaugment.registry",
    "list_models": "metaaugment.registry", "list_policies": "metaaugment.registry",
    "RunConfig": "metaaugment.run.config",
    "keep_freed_host_memory": "metaaugment.run.host_memory",
    "Trainer": "metaaugment.run.loop", "train": "metaaugment.run.loop",
    "KINDS": "metaaugment.spec", "TaskSpec": "metaaugment.spec",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'metaaugment' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next access is a plain lookup
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


if TYPE_CHECKING:  # what type checkers and IDEs see
    from metaaugment.batch import Batch, Episode, Params, Share, Tasks, per_sample  # noqa: F401
    from metaaugment.infra.errors import UserError  # noqa: F401
    from metaaugment.learners import (  # noqa: F401
        EpisodicLearner,
        Learner,
        SupervisedLearner,
        create_learner,
        forward_pass,
        list_learners,
        supervised_step,
    )
    from metaaugment.losses import accuracy, per_sample_cross_entropy, weighted_mean  # noqa: F401
    from metaaugment.policy import (  # noqa: F401
        AugmentationPolicy,
        BatchPolicy,
        ForwardOutput,
        StepContext,
        StepResult,
        TaskPolicy,
    )
    from metaaugment.registry import create_model, create_policy, list_models, list_policies  # noqa: F401
    from metaaugment.run.config import RunConfig  # noqa: F401
    from metaaugment.run.host_memory import keep_freed_host_memory  # noqa: F401
    from metaaugment.run.loop import Trainer, train  # noqa: F401
    from metaaugment.spec import KINDS, TaskSpec  # noqa: F401
