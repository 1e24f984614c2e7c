"""Scheduler unit tests: latest wins, cancellation reaches the job, debounce policies."""

from __future__ import annotations

import asyncio

import pytest

from langserver.completion.serving.scheduler import (
    ADAPTIVE_CAP_S,
    DocumentScheduler,
    Scheduler,
    TypingRate,
    adaptive_delay,
    at_line_start,
    debounce_delay,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Job:
    """A job that records whether it started and whether it was cancelled."""

    def __init__(self, value: str, hold: asyncio.Event | None = None) -> None:
        self.value = value
        self.hold = hold
        self.started = False
        self.cancelled = False

    async def __call__(self) -> str:
        self.started = True
        try:
            if self.hold is not None:
                await self.hold.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return self.value


async def test_a_newer_request_supersedes_the_one_in_flight_and_cancels_its_job() -> None:
    scheduler = DocumentScheduler()
    first = Job("first", asyncio.Event())
    running = asyncio.create_task(scheduler.run(first, 0))
    await asyncio.sleep(0.01)
    assert first.started and scheduler.busy
    second = Job("second")
    outcome = await scheduler.run(second, 0)
    assert outcome.value == "second" and not outcome.superseded
    old = await running
    assert old.superseded and old.value is None
    assert first.cancelled


async def test_a_superseded_request_inside_its_debounce_never_starts() -> None:
    scheduler = DocumentScheduler()
    jobs = [Job(str(i)) for i in range(5)]
    tasks = []
    for job in jobs:
        tasks.append(asyncio.create_task(scheduler.run(job, 50)))
        await asyncio.sleep(0.005)
    outcomes = await asyncio.gather(*tasks)
    assert [job.started for job in jobs] == [False] * 4 + [True]
    assert [o.superseded for o in outcomes] == [True] * 4 + [False]
    assert outcomes[-1].value == "4"


async def test_documents_do_not_supersede_each_other() -> None:
    scheduler = Scheduler()
    hold = asyncio.Event()
    a = asyncio.create_task(scheduler.run("file:///a", Job("a", hold), 0))
    b = asyncio.create_task(scheduler.run("file:///b", Job("b", hold), 0))
    await asyncio.sleep(0.01)
    hold.set()
    assert [(await a).value, (await b).value] == ["a", "b"]


async def test_cancelling_the_caller_cancels_the_job() -> None:
    scheduler = DocumentScheduler()
    job = Job("x", asyncio.Event())
    caller = asyncio.create_task(scheduler.run(job, 0))
    await asyncio.sleep(0.01)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await asyncio.sleep(0)
    assert job.cancelled and not scheduler.busy


async def test_job_errors_reach_the_caller() -> None:
    async def fail() -> str:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await DocumentScheduler().run(fail, 0)


async def test_forget_cancels_the_document_request() -> None:
    scheduler = Scheduler()
    job = Job("x", asyncio.Event())
    task = asyncio.create_task(scheduler.run("file:///a", job, 0))
    await asyncio.sleep(0.01)
    scheduler.forget("file:///a")
    assert (await task).superseded and job.cancelled


def test_fixed_debounce_is_the_setting() -> None:
    rate = TypingRate()
    assert debounce_delay(150, rate) == pytest.approx(0.150)
    assert debounce_delay(0, rate) == 0


def test_adaptive_waits_nothing_without_history() -> None:
    assert adaptive_delay([]) == 0


def test_adaptive_follows_the_median_interval_and_is_capped() -> None:
    assert adaptive_delay([0.06, 0.06, 0.2]) == pytest.approx(0.09)
    assert adaptive_delay([0.4, 0.5, 0.6]) == ADAPTIVE_CAP_S


def test_a_pause_is_not_a_typing_interval_and_the_key_after_it_waits() -> None:
    clock = FakeClock()
    scheduler = DocumentScheduler(clock)
    delays = []
    for gap in (0.0, 0.1, 0.1, 3.0, 0.1):
        clock.now += gap
        delays.append(scheduler.note(-1))
    assert list(scheduler.rate.intervals) == [pytest.approx(0.1)] * 3
    # first ever: 0 (no history); typing: 1.5 x 100 ms; the first key after the pause starts
    # a burst, so it waits like the others
    assert delays == [0, pytest.approx(0.15), pytest.approx(0.15), pytest.approx(0.15), pytest.approx(0.15)]


def test_the_typing_rate_carries_across_documents() -> None:
    clock = FakeClock()
    scheduler = Scheduler(clock)
    for _ in range(4):
        clock.now += 0.1
        scheduler.document("file:///a.py").note(-1)
    clock.now += 5.0  # the user switches files
    assert scheduler.document("file:///b.py").note(-1) == pytest.approx(0.15)
    scheduler.forget("file:///a.py")
    clock.now += 0.1
    assert scheduler.document("file:///b.py").note(-1) == pytest.approx(0.15)


def test_adaptive_waits_nothing_at_a_line_start() -> None:
    # Just after Enter is where people stop to look: answer at once.
    assert adaptive_delay([0.1, 0.1], line_start=True) == 0
    assert debounce_delay(150, TypingRate(), line_start=True) == pytest.approx(0.150)  # fixed stays fixed


def test_line_start_means_only_indentation_before_the_cursor() -> None:
    text = "def f():\n    \n    x = 1\r\n\tre"
    assert at_line_start(text, 0)
    assert at_line_start(text, text.index("\n    \n") + 5)
    assert not at_line_start(text, text.index("x = 1") + 3)
    assert at_line_start(text, text.index("\t"))
    assert at_line_start(text, text.index("\tre") + 1)
    assert not at_line_start(text, len(text))
