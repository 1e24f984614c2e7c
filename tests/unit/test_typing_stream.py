"""Streaming with early stop and per-stage timings, without a model."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from langserver.backend.client import BackendError
from langserver.backend.manager import BackendManager, BackendUnavailable
from langserver.backend.request import Delta, PromptRequest
from langserver.backend.status import Status
from langserver.completion import pipeline
from langserver.completion.stages.stream import read_until_complete, visible_part
from langserver.completion.stages.timings import Timings, TimingStats, percentile
from langserver.settings import parse_settings


class Deltas:
    """A stream of deltas that records how far it was read and whether it was closed."""

    def __init__(self, parts: list[str]) -> None:
        self.parts = parts
        self.read = 0
        self.closed = False

    def __call__(self, prompt: PromptRequest) -> AsyncIterator[Delta]:
        return self.iterate()

    async def iterate(self) -> AsyncIterator[Delta]:
        try:
            for part in self.parts:
                self.read += 1
                yield Delta(part)
        finally:
            self.closed = True


async def test_stops_and_closes_once_done() -> None:
    deltas = Deltas(["ab", "c\n", "def", "ghi"])
    answer = await read_until_complete(deltas.iterate(), lambda t: "\n" in t)
    assert answer.text == "abc\n" and deltas.read == 2 and deltas.closed
    assert answer.finish_reason == "early"


async def test_reads_to_the_end_when_never_done() -> None:
    deltas = Deltas(["a", "b"])
    answer = await read_until_complete(deltas.iterate(), lambda t: False)
    assert answer.text == "ab" and answer.finish_reason is None
    assert deltas.closed


def test_an_opening_fence_line_is_not_the_end_of_a_line() -> None:
    assert visible_part("``") is None
    assert visible_part("```python") is None
    assert visible_part("```python\nx = 1") == "x = 1"
    assert visible_part("x = 1\n") == "x = 1\n"


SINGLE = parse_settings({"completion": {"multiline": "never"}})[0]
MULTI = parse_settings({"completion": {"multiline": "always"}})[0]


async def test_single_line_mode_stops_at_the_line_break() -> None:
    deltas = Deltas(["json.load", "(handle)", "\n", "    more = 1\n", "never read"])
    request = pipeline.Request(text="def f(handle):\n    return \n", offset=len("def f(handle):\n    return "),
                               language="python")
    timings = Timings()
    completion = await pipeline.complete_streaming(request, SINGLE, deltas, timings=timings)
    assert completion is not None and completion.text == "json.load(handle)"
    assert deltas.read == 3 and deltas.closed
    assert set(timings.stages) == {"prompt", "first_token", "stream", "cleanup"}


async def test_multi_line_mode_stops_at_the_block_end() -> None:
    prefix = "def f(values):\n    "
    suffix = "\n\n\ndef g():\n    pass\n"
    deltas = Deltas(["if not values:\n", "        return 0\n", "    return sum(values)\n",
                     "\n\ndef h():\n", "    return 1\n", "never read\n"])
    request = pipeline.Request(text=prefix + suffix, offset=len(prefix), language="python")
    completion = await pipeline.complete_streaming(request, MULTI, deltas)
    assert completion is not None
    assert completion.text == "if not values:\n        return 0\n    return sum(values)"
    assert deltas.read < len(deltas.parts) and deltas.closed


def test_timings_stages_total_and_overhead() -> None:
    now = [0.0]
    timings = Timings(clock=lambda: now[0])
    for stage, at in (("debounce", 0.1), ("prompt", 0.101), ("first_token", 0.3), ("stream", 0.5),
                      ("cleanup", 0.502)):
        now[0] = at
        timings.mark(stage)
    ms = timings.as_ms()
    assert ms["debounce"] == 100 and ms["prompt"] == 1 and ms["total"] == 502
    assert ms["overhead"] == 3  # prompt + cleanup: the time not spent waiting


def test_timing_stats_percentiles() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile(list(map(float, range(1, 101))), 95) == 95.0
    stats = TimingStats()
    for total in range(1, 11):
        clock = iter([0.0, total / 1000])
        timings = Timings(clock=lambda clock=clock: next(clock))  # type: ignore[misc]
        timings.mark("prompt")
        stats.add(timings)
    summary = stats.summary()
    assert summary["total"]["p50"] == 5.0 and summary["total"]["p95"] == 10.0 and summary["total"]["n"] == 10


class FakeClient:
    """Stands in for BackendClient.stream: yields parts, then fails with `error` if given."""

    def __init__(self, parts: list[str], error: BaseException | None = None) -> None:
        self.parts, self.error = parts, error
        self.closed = False

    async def stream(self, prompt: PromptRequest) -> AsyncIterator[Delta]:
        try:
            for part in self.parts:
                yield Delta(part)
            if self.error is not None:
                raise self.error
        finally:
            self.closed = True


def manager_with(client: FakeClient | None, state: str, mode: str = "managed") -> BackendManager:
    manager = BackendManager(lambda status: None, lambda line: None)
    manager.settings = parse_settings({"backend": {"mode": mode, "url": "http://127.0.0.1:9/v1"}})[0]
    manager.status = Status(state, state)  # type: ignore[arg-type]
    manager.client = client  # type: ignore[assignment]
    return manager


PROMPT = PromptRequest(endpoint="chat", body={})


async def test_manager_stream_refuses_a_backend_that_is_not_ready() -> None:
    for manager in (manager_with(None, "ready"), manager_with(FakeClient(["x"]), "loading")):
        with pytest.raises(BackendUnavailable):
            await read_until_complete(manager.stream(PROMPT), lambda t: False)
    # An external backend is always tried (it may come back at any time).
    external = manager_with(FakeClient(["x"]), "error", mode="external")
    assert (await read_until_complete(external.stream(PROMPT), lambda t: False)).text == "x"


async def test_manager_stream_closes_the_client_stream_on_early_stop() -> None:
    client = FakeClient(["a\n", "b\n", "c"])
    answer = await read_until_complete(manager_with(client, "ready").stream(PROMPT), lambda t: "\n" in t)
    assert answer.text == "a\n"
    assert client.closed


async def test_manager_stream_errors() -> None:
    broken = FakeClient(["a"], ConnectionResetError("reset"))
    with pytest.raises(BackendError, match="connection broke"):
        await read_until_complete(manager_with(broken, "ready").stream(PROMPT), lambda t: False)
    # The managed vLLM went away meanwhile (its client was dropped): quiet, not an error message.
    manager = manager_with(FakeClient(["a"]), "ready")
    client = manager.client
    assert isinstance(client, FakeClient)
    client.error = ConnectionResetError("reset")
    stream = manager.stream(PROMPT)
    assert (await stream.__anext__()).text == "a"
    manager.client = None  # what the manager does when the launch goes down
    with pytest.raises(BackendUnavailable):
        await stream.__anext__()
