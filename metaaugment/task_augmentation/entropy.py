"""The quantity CE-increasing meta-augmentation increases: the conditional entropy H(Y|X)."""
from __future__ import annotations

import math
from collections import Counter
from typing import Any, Sequence


def conditional_entropy_bits(inputs: Sequence[Any], targets: Sequence[Any]) -> float:
    """Plug-in estimate of H(Y|X) in bits from paired discrete samples (x_i, y_i):
    sum_x p(x) H(Y | X = x) with empirical frequencies. Values must be hashable."""
    by_input: dict[Any, Counter] = {}
    for x, y in zip(inputs, targets):
        by_input.setdefault(x, Counter())[y] += 1
    total = sum(sum(c.values()) for c in by_input.values())
    entropy = 0.0
    for counts in by_input.values():
        n = sum(counts.values())
        entropy += n / total * -sum(k / n * math.log2(k / n) for k in counts.values())
    return entropy
