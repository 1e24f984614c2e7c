"""The scheduler: one per document, latest wins, with a debounce.

VS Code asks for a completion on every keystroke and cancels the previous
request. A request that is still waiting (debounce) or still streaming when the
next one arrives for the same document is superseded: its task is cancelled, so
its HTTP stream closes and vLLM aborts the generation. Clients that never send
`$/cancelRequest` get the same treatment.

Debounce policy (`completion.debounceMs`):
- N >= 0: wait N ms before asking the backend (0 = never wait).
- -1 (adaptive): wait 1.5 x the user's recent median interval between
  requests, at most ADAPTIVE_CAP_S, so that while the user types fast the next
  keystroke usually arrives inside the wait and the superseded request never
  reaches vLLM. No wait at all where the user most likely stops to look: on a
  line that holds only indentation (just after Enter), and with no history yet.
  The first key after a pause waits like any other: it starts a burst (waiting
  at it cut the tokens scripts/bench-typing spends by a third or more).
  The rate is the user's, not the document's: it carries across files.
A request that waits calls `on_wait` at once: the server warms vLLM's prefix cache
where vLLM has not prefilled yet (warmup.py), so the prefill runs during the wait, not after it.

Nothing here knows LSP: the server passes plain values and a job to run.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")

ADAPTIVE = -1
# The most the adaptive policy ever waits. 150 ms (what humans call "instant") let a
# quarter of the keys of a 60-180 ms typist through to vLLM; the wait is only paid
# mid-line (a line start answers at once), so scripts/bench-typing chose 250 ms.
ADAPTIVE_CAP_S = 0.250
# Wait this much longer than the median interval: half the keys come later than the median,
# and a loaded machine (or a human) adds jitter.
ADAPTIVE_FACTOR = 1.5
# A gap this long is a pause, not typing: it is not a typing interval.
PAUSE_S = 1.0
# How many recent intervals the median looks at (a few seconds of typing).
HISTORY = 8

Clock = Callable[[], float]


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """What `run` gives back: the job's value, or superseded (no value) when a newer
    request for the document took over; `debounce_s` = the wait chosen for it."""
    value: T | None
    superseded: bool
    debounce_s: float


class TypingRate:
    """Recent intervals between the user's requests."""

    def __init__(self) -> None:
        self.intervals: deque[float] = deque(maxlen=HISTORY)
        self.last_at: float | None = None

    def observe(self, now: float) -> None:
        """Record a request at `now`: its gap to the previous one, unless that was a pause."""
        if self.last_at is not None and 0 <= now - self.last_at < PAUSE_S:
            self.intervals.append(now - self.last_at)
        self.last_at = now


def adaptive_delay(intervals: deque[float] | list[float], line_start: bool = False) -> float:
    """Seconds to wait: 0 at a line start or with no history, else 1.5 x the median
    interval, capped at ADAPTIVE_CAP_S."""
    if line_start or not intervals:
        return 0.0
    return min(ADAPTIVE_CAP_S, ADAPTIVE_FACTOR * statistics.median(intervals))


def debounce_delay(debounce_ms: int, rate: TypingRate, line_start: bool = False) -> float:
    if debounce_ms == ADAPTIVE or debounce_ms < 0:
        return adaptive_delay(rate.intervals, line_start)
    return debounce_ms / 1000


def at_line_start(text: str, offset: int) -> bool:
    """Only indentation before the cursor on its line (the user just pressed Enter)."""
    start = max(text.rfind("\n", 0, offset), text.rfind("\r", 0, offset)) + 1
    return text[start:offset].strip(" \t") == ""


class DocumentScheduler:
    """Latest wins for one document; `rate` may be shared with other documents."""

    def __init__(self, clock: Clock = time.monotonic, rate: TypingRate | None = None) -> None:
        self._clock = clock
        self.rate = rate if rate is not None else TypingRate()
        self._current: asyncio.Task[Any] | None = None

    def supersede(self) -> bool:
        """Cancel the request in flight, if any (its HTTP stream closes); True if there was one."""
        current, self._current = self._current, None
        if current is None or current.done():
            return False
        current.cancel()
        return True

    def note(self, debounce_ms: int, line_start: bool = False) -> float:
        """A new request arrived: record the typing rate, supersede the previous request,
        and return the debounce to apply (seconds)."""
        self.rate.observe(self._clock())
        self.supersede()
        return debounce_delay(debounce_ms, self.rate, line_start)

    async def run(self, job: Callable[[], Awaitable[T]], debounce_ms: int,
                  line_start: bool = False, on_wait: Callable[[], object] | None = None) -> Outcome[T]:
        """Wait the debounce, then run `job`, unless a newer request supersedes this one
        first (Outcome.superseded). Cancelling the caller cancels the job too.
        `line_start`: the cursor follows only indentation (see at_line_start).
        `on_wait` is called at once when there is a debounce to wait (the prefix warm-up)."""
        delay = self.note(debounce_ms, line_start)
        if delay > 0 and on_wait is not None:
            on_wait()
        task: asyncio.Task[T] = asyncio.ensure_future(_after(delay, job))
        self._current = task
        try:
            # wait() does not raise when `task` is cancelled by a newer request, only when
            # the caller itself is cancelled ($/cancelRequest, time-out).
            await asyncio.wait({task})
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            if self._current is task:
                self._current = None
        if task.cancelled():
            return Outcome(None, True, delay)
        return Outcome(task.result(), False, delay)

    @property
    def busy(self) -> bool:
        return self._current is not None and not self._current.done()


async def _after(delay: float, job: Callable[[], Awaitable[T]]) -> T:
    if delay > 0:
        await asyncio.sleep(delay)
    return await job()


class Scheduler:
    """One DocumentScheduler per document URI, all with the user's one typing rate."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self.rate = TypingRate()
        self._documents: dict[str, DocumentScheduler] = {}

    def document(self, uri: str) -> DocumentScheduler:
        scheduler = self._documents.get(uri)
        if scheduler is None:
            scheduler = self._documents[uri] = DocumentScheduler(self._clock, self.rate)
        return scheduler

    async def run(self, uri: str, job: Callable[[], Awaitable[T]], debounce_ms: int,
                  line_start: bool = False, on_wait: Callable[[], object] | None = None) -> Outcome[T]:
        return await self.document(uri).run(job, debounce_ms, line_start, on_wait)

    def forget(self, uri: str) -> None:
        """The document closed: cancel its request in flight."""
        scheduler = self._documents.pop(uri, None)
        if scheduler is not None:
            scheduler.supersede()
