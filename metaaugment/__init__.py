"""metaaugment: learned data augmentation for PyTorch behind one policy interface.

Compose any policy with your own model and loop::

    from metaaugment import Batch, StepContext, TaskSpec, create_policy, supervised_step
"""
from metaaugment.batch import Batch, Episode, Share, Tasks
from metaaugment.errors import UserError
from metaaugment.learners import (
    EpisodicLearner,
    Learner,
    SupervisedLearner,
    create_learner,
    forward_pass,
    list_learners,
    supervised_step,
)
from metaaugment.losses import accuracy, per_sample_cross_entropy, weighted_mean
from metaaugment.policy import AugmentationPolicy, BatchPolicy, ForwardOutput, StepContext, StepResult, TaskPolicy
from metaaugment.registry import create_model, create_policy, list_models, list_policies
from metaaugment.run.config import RunConfig
from metaaugment.run.host_memory import keep_freed_host_memory
from metaaugment.run.loop import Trainer, train
from metaaugment.spec import KINDS, TaskSpec

__version__ = "0.1.0"

__all__ = [
    "AugmentationPolicy", "Batch", "BatchPolicy", "Episode", "EpisodicLearner", "ForwardOutput", "KINDS", "Learner",
    "RunConfig", "Share", "StepContext", "StepResult", "SupervisedLearner", "TaskPolicy", "TaskSpec", "Tasks",
    "Trainer", "UserError",
    "accuracy", "create_learner",
    "create_model", "create_policy", "forward_pass", "keep_freed_host_memory", "list_learners", "list_models",
    "list_policies", "per_sample_cross_entropy", "supervised_step", "train", "weighted_mean",
]
