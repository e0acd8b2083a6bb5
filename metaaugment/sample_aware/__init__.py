"""MetaAugment (Zhou et al., AAAI 2021), sample-aware augmentation: a policy network weights the
loss of each augmented sample and is meta-learned through a one-step lookahead.

ops: the 14 image ops, batched per sample; transformations: their embedding and the Eq. 5
sampler; policy_network: P(feature, embedding; theta); lookahead: the bilevel engines
(fast, fast-jvp, higher, last-layer); figures; policy: the `metaaugment` policy.
"""
from metaaugment.sample_aware.policy import MetaAugment

__all__ = ["MetaAugment"]
