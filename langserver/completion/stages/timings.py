"""Per-stage timings of one completion, and their p50/p95 since the server started.

Stages, in order: warmup (deciding on, and building, a prefix warm-up, when the
request waits), debounce (waiting for the user to stop typing), prompt (context
and prompt build), first_token (request sent -> first delta from the backend),
stream (first delta -> stream closed), cleanup (post-processing); total = from
the request's arrival to the answer. `overhead` = total minus the time spent
waiting on the user (debounce) and on the backend (first_token + stream): what
the server itself costs.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

STAGES = ("warmup", "debounce", "prompt", "first_token", "stream", "cleanup")
SUMMARY = (*STAGES, "total", "overhead")
# Enough completions for stable percentiles, bounded so a long session stays small.
WINDOW = 2000

Clock = Callable[[], float]


@dataclass
class Timings:
    """Stopwatch for one completion: `mark(stage)` closes a stage at the current time."""
    clock: Clock = time.monotonic
    started: float = field(default=-1.0)
    stages: dict[str, float] = field(default_factory=dict)
    _last: float = field(default=-1.0, repr=False)

    def __post_init__(self) -> None:
        if self.started < 0:
            self.started = self.clock()
        self._last = self.started

    def mark(self, stage: str) -> None:
        now = self.clock()
        self.stages[stage] = self.stages.get(stage, 0.0) + now - self._last
        self._last = now

    def total(self) -> float:
        return self._last - self.started

    def overhead(self) -> float:
        waiting = sum(self.stages.get(stage, 0.0) for stage in ("debounce", "first_token", "stream"))
        return max(0.0, self.total() - waiting)

    def as_ms(self) -> dict[str, float]:
        values = {stage: self.stages[stage] for stage in STAGES if stage in self.stages}
        values["total"] = self.total()
        values["overhead"] = self.overhead()
        return {stage: round(seconds * 1000, 2) for stage, seconds in values.items()}

    def describe(self) -> str:
        return " ".join(f"{stage}={ms:.1f}ms" for stage, ms in self.as_ms().items())


class TimingStats:
    """Recent completions' stage timings; p50/p95/p99 per stage in milliseconds."""

    def __init__(self, window: int = WINDOW) -> None:
        self._samples: dict[str, deque[float]] = {stage: deque(maxlen=window) for stage in SUMMARY}
        self.count = 0

    def add(self, timings: Timings) -> None:
        self.count += 1
        for stage, ms in timings.as_ms().items():
            self._samples[stage].append(ms)

    def summary(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for stage in SUMMARY:
            values = sorted(self._samples[stage])
            if values:
                out[stage] = {"p50": percentile(values, 50), "p95": percentile(values, 95),
                              "p99": percentile(values, 99), "n": len(values)}
        return out


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, math.ceil(pct / 100 * len(sorted_values)) - 1))
    return sorted_values[rank]
