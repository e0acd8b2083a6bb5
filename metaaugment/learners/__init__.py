"""Learners: how a task network is trained on a mini-batch or meta-trained on few-shot tasks."""
from __future__ import annotations

from metaaugment.learners.base import Learner
from metaaugment.learners.episodic import EpisodicLearner, MAMLLearner, MetaSGDLearner, ProtoNetLearner
from metaaugment.learners.supervised import SupervisedLearner, forward_pass, supervised_step
from metaaugment.registry import LEARNERS, create_learner, list_learners

__all__ = ["EpisodicLearner", "LEARNERS", "Learner", "MAMLLearner", "MetaSGDLearner", "ProtoNetLearner",
           "SupervisedLearner", "create_learner", "forward_pass", "list_learners", "supervised_step"]
