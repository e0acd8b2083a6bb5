"""MLTI, meta-learning with task interpolation (Yao, Zhang and Finn, ICLR 2022): new
meta-training tasks interpolated from pairs of tasks of the meta-batch, at the input or a
hidden layer, for MAML, Meta-SGD and Prototypical Networks.

interpolation: the pure functions (class pairing, interpolated episodes, default layers);
policy: the `mlti` task policy that draws the pairs and lambdas for the meta-batch.
"""
from metaaugment.mlti.policy import MLTI

__all__ = ["MLTI"]
