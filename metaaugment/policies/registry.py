"""The policy registry (its own module so policy modules can register without cycles)."""
from ..policy import AugmentationPolicy
from ..registry import Registry

POLICIES: Registry[AugmentationPolicy] = Registry("policy")
