"""Intervals for the benchmarks' paired comparisons, one way for every bench."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import TypeVar

Item = TypeVar("Item")


def bootstrap(items: Sequence[Item], statistic: Callable[[Sequence[Item]], float], rng: random.Random,
              resamples: int = 2000) -> tuple[float, float]:
    """The 95% bootstrap interval of `statistic` over `items` resampled with replacement (each item a
    task's paired figures, so the interval is the paired one)."""
    if not items:
        return 0.0, 0.0
    values = sorted(statistic(rng.choices(items, k=len(items))) for _ in range(resamples))
    return values[int(0.025 * resamples)], values[int(0.975 * resamples) - 1]
