"""Summary statistics over seeds and over tasks."""
from __future__ import annotations

import math
from typing import Sequence


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def ci95_of_sums(total: float, squares: float, count: int) -> float:
    """`mean_and_ci95`'s half-width from the sum, the sum of squares and the count of the
    values (what ranks reduce instead of their lists): 1.96 * std / sqrt(n), nan for n < 2."""
    if count < 2:
        return float("nan")
    variance = max(0.0, (squares - total * total / count) / (count - 1))
    return 1.96 * math.sqrt(variance) / math.sqrt(count)


def mean_and_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its normal 95% confidence interval, 1.96 * std / sqrt(n)
    (the few-shot convention over test tasks; nan for a single value)."""
    mean, std = mean_std(values)
    if len(values) < 2:
        return mean, float("nan")
    return mean, 1.96 * std / math.sqrt(len(values))
