"""The learner registry (its own module so learner modules can register without cycles)."""
from ..registry import Registry
from .base import Learner

LEARNERS: Registry[Learner] = Registry("learner")
