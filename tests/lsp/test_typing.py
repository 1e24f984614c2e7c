"""The typing-speed engine end to end against a real vLLM (external mode): a burst of
keystrokes as VS Code sends them reaches vLLM as a few requests at most, the stream
stops at the line end in single-line mode, and typing through a shown completion asks
vLLM nothing."""

from __future__ import annotations

import asyncio
import itertools
import secrets
import sysconfig
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from lsprotocol import types

from bench.lsp import GhostClient, position_of
from bench.metrics import read_metric
from bench.vllm_process import VllmServer, example, external_options
from tests.conftest import start_ready

pytestmark = pytest.mark.vllm

CHAT_HANDLER = 'handler="/v1/chat/completions"'


def backend_requests(server: VllmServer) -> float:
    """HTTP requests vLLM received on the chat endpoint (aborted ones included)."""
    return read_metric(server.url, "http_requests_total", having=CHAT_HANDLER, timeout=5)


async def settled_requests(server: VllmServer, timeout: float = 10.0) -> float:
    """The count once it stops moving (the instrumentator counts a request when it ends)."""
    deadline = time.monotonic() + timeout
    last = backend_requests(server)
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        now = backend_requests(server)
        if now == last and server.metric("vllm:num_requests_running") == 0:
            return now
        last = now
    return last


@pytest_asyncio.fixture(scope="module")
async def client(external_vllm: VllmServer) -> AsyncIterator[GhostClient]:
    client = await start_ready(external_options(external_vllm))
    yield client
    await client.close_session()


async def type_burst(client: GhostClient, uri: str, start_text: str, typed: str,
                     interval_s: float) -> tuple[list[Any], list[float]]:
    """Type `typed` at the end of `start_text` one character at a time as VS Code does:
    didChange, an inlineCompletion request, and $/cancelRequest for the previous request.
    The answers, and the seconds between one key and the next as the client sent them."""
    text = start_text
    futures: list[Any] = []
    previous: str | None = None
    sent: list[float] = []
    for index, char in enumerate(typed):
        position = position_of(text, len(text))
        client.edit(uri, position, position, char)
        text += char
        if previous is not None:
            client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=previous))
        previous = f"burst-{uri[-12:]}-{index}"
        params = client.completion_params(uri, *position_of(text, len(text)))
        futures.append(client.protocol.send_request_async(types.TEXT_DOCUMENT_INLINE_COMPLETION, params,
                                                          msg_id=previous))
        sent.append(time.monotonic())
        await asyncio.sleep(interval_s)
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    print("\nclient gaps ms:", [round(gap * 1000) for gap in gaps])
    return await asyncio.gather(*futures, return_exceptions=True), gaps


async def test_a_burst_of_twenty_keystrokes_makes_a_few_backend_requests(
        client: GhostClient, external_vllm: VllmServer) -> None:
    case = example("py_class_method")
    typed = case["prefix"][-20:]
    start = case["prefix"][:-20]
    uri = client.open(start + case["suffix"])
    before = await settled_requests(external_vllm)
    # 10 keys a second, as the issue puts it; the adaptive wait becomes 150 ms.
    results, gaps = await type_burst(client, uri, start, typed, interval_s=0.1)
    after = await settled_requests(external_vllm)
    print(f"\n20 keystrokes at 100 ms: {after - before:.0f} backend requests")
    assert after - before <= 5
    # The last request (not cancelled) answers with the memorised middle.
    last = results[-1]
    assert isinstance(last, types.InlineCompletionList), last
    assert [item.insert_text for item in last.items] == [case["middle"]]
    # The earlier ones were cancelled by the client, answered empty, or answered without vLLM:
    # - the first key has no typing history, so the scheduler does not hold it back (scheduler.py),
    #   and where vLLM has the prompt cached (other tests asked it the same) it answers within the
    #   100 ms before the next key;
    # - a key that types what is shown is answered from the typing-through cache (cache.py), at once:
    #   the rest of the completion shown for the key before;
    # - any other key is held 1.5 x the typing interval (150 ms), so the next key supersedes it,
    #   unless the client itself stalled that long on a loaded machine.
    answered = {index: [item.insert_text for item in result.items] for index, result in enumerate(results[:-1])
                if not isinstance(result, Exception) and result.items}
    print("keys answered before the last:", sorted(answered))
    for index, texts in answered.items():
        shown = answered.get(index - 1, [])
        typed_through = len(shown) == len(texts) == 1 and len(texts[0]) < len(shown[0]) \
            and shown[0].endswith(texts[0])
        assert index == 0 or typed_through or gaps[index] >= 0.15, (index, texts, answered, gaps)


async def test_status_reports_stage_timings(client: GhostClient) -> None:
    case = example("py_single_line")
    text = case["prefix"] + case["suffix"]
    uri = client.open(text)
    assert [i.insert_text for i in await client.complete(uri, *position_of(text, len(case["prefix"])))] \
        == [case["middle"]]
    timings = (await client.command("vllmGhost.status"))["detail"]["timings"]
    for stage in ("prompt", "first_token", "cleanup", "total", "overhead"):
        assert set(timings[stage]) == {"p50", "p95", "p99", "n"}, stage
    assert timings["total"]["p50"] >= timings["overhead"]["p50"]
    print(f"\nstage timings: {timings}")


async def test_log_level_debug_puts_each_completions_stage_timings_in_the_log(
        client: GhostClient, external_vllm: VllmServer) -> None:
    case = example("py_single_line")
    text = case["prefix"] + case["suffix"]
    position = position_of(text, len(case["prefix"]))

    def timing_lines() -> list[str]:
        return [line for line in client.stderr if "completion timings:" in line]

    async def complete_with(level: str) -> None:
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
            settings={**external_options(external_vllm), "log": {"level": level}}))
        assert [i.insert_text for i in await client.complete(client.open(text), *position)] == [case["middle"]]
        await asyncio.sleep(0.3)  # stderr is read by a task of its own

    before = len(timing_lines())
    await complete_with("debug")
    lines = timing_lines()[before:]
    assert len(lines) == 1, client.stderr[-5:]
    for stage in ("debounce", "prompt", "first_token", "stream", "cleanup", "total"):
        assert f"{stage}=" in lines[0], lines[0]
    await complete_with("warning")
    assert len(timing_lines()) == before + 1
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings=external_options(external_vllm)))


async def _generated_for(client: GhostClient, server: VllmServer, multiline: str, name: str) -> tuple[str, float]:
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings=external_options(server, multiline=multiline)))
    case = example(name)
    text = case["prefix"] + case["suffix"]
    uri = client.open(text)
    before = server.metric("vllm:generation_tokens_total")
    items = await client.complete(uri, *position_of(text, len(case["prefix"])))
    await asyncio.sleep(0.5)  # let the abort land before reading the counter
    return str(items[0].insert_text) if items else "", server.metric("vllm:generation_tokens_total") - before


async def test_single_line_mode_stops_the_stream_at_the_line_end(client: GhostClient,
                                                                 external_vllm: VllmServer) -> None:
    case = example("py_long_middle")
    first_line = case["middle"].split("\n", 1)[0]
    try:
        whole, whole_tokens = await _generated_for(client, external_vllm, "always", "py_long_middle")
        line, line_tokens = await _generated_for(client, external_vllm, "never", "py_long_middle")
    finally:
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
            settings=external_options(external_vllm)))
    print(f"\ngenerated tokens: whole block {whole_tokens:.0f}, single line {line_tokens:.0f}")
    assert line == first_line and whole.startswith(first_line + "\n")
    # The tiny model writes the whole 42-token block in a few ms on a quiet machine, before the
    # abort lands: fewer tokens is likely, not certain (the unit tests check the early close).
    assert line_tokens <= whole_tokens


async def test_typing_through_a_shown_completion_makes_no_backend_request(
        client: GhostClient, external_vllm: VllmServer) -> None:
    case = example("py_single_line")
    text = case["prefix"] + case["suffix"]
    uri = client.open(text)
    shown = await client.complete(uri, *position_of(text, len(case["prefix"])))
    assert [item.insert_text for item in shown] == [case["middle"]]
    before = await settled_requests(external_vllm)
    typed = ""
    for char in case["middle"][:8]:
        position = position_of(case["prefix"] + typed, len(case["prefix"] + typed))
        client.edit(uri, position, position, char)
        typed += char
        cursor = position_of(case["prefix"] + typed, len(case["prefix"] + typed))
        items = await client.complete(uri, *cursor)
        assert [item.insert_text for item in items] == [case["middle"][len(typed):]], typed
        assert items[0].range is not None and items[0].range.start == types.Position(*cursor)
    assert await settled_requests(external_vllm) == before
    cache = (await client.command("vllmGhost.status"))["detail"]["cache"]
    assert cache["hits"] >= 8
    # A keystroke off the shown text goes to the model again.
    position = position_of(case["prefix"] + typed, len(case["prefix"] + typed))
    client.edit(uri, position, position, "#")
    await client.complete(uri, position[0], position[1] + 1)
    assert await settled_requests(external_vllm) == before + 1


# A real module's worth of code (the standard library's), long enough that its prompt spans
# several of vLLM's 128-token cache blocks and short enough to fit one prompt window whole.
MODULE = "".join((Path(sysconfig.get_paths()["stdlib"]) / "_pydecimal.py").read_text()
                 .splitlines(keepends=True)[600:680])


async def _one_key_after_opening(client: GhostClient, server: VllmServer, warm: bool) -> dict[str, float]:
    """Open a file vLLM has never seen (a fresh salt on its first line), type one key
    mid-line under a 1 s debounce, and count what vLLM did for it."""
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings=external_options(server, debounceMs=1000, warmPrefixCache=warm)))
    text = f"# {secrets.token_hex(8)}\n{MODULE}"
    offset = text.rindex("\n", 0, len(text) - 200) + 9  # a few characters into a late line
    uri = client.open(text)
    requests, hits = await settled_requests(server), server.metric("vllm:prefix_cache_hits_total")
    detail = (await client.command("vllmGhost.status"))["detail"]
    position = position_of(text, offset)
    client.edit(uri, position, position, "x")
    await client.complete(uri, position[0], position[1] + 1)
    after = (await client.command("vllmGhost.status"))["detail"]
    return {"requests": await settled_requests(server) - requests,
            "cached tokens": server.metric("vllm:prefix_cache_hits_total") - hits,
            "warm-ups": after["warmups"] - detail["warmups"],
            # the answer's stage timings count the warm-up's own cost (as overhead)
            "timed warm-ups": _timed(after, "warmup") - _timed(detail, "warmup")}


def _timed(detail: dict[str, Any], stage: str) -> int:
    return int(detail.get("timings", {}).get(stage, {}).get("n", 0))


async def test_a_debounce_in_a_new_place_prefills_it_so_the_answer_finds_its_prompt_cached(
        client: GhostClient, external_vllm: VllmServer) -> None:
    try:
        warm = await _one_key_after_opening(client, external_vllm, warm=True)
        cold = await _one_key_after_opening(client, external_vllm, warm=False)
    finally:
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
            settings=external_options(external_vllm)))
    print(f"\nwith warm-up {warm}, without {cold}")
    # The warm-up went out while the debounce waited, and the answer read its head from cache.
    assert warm["warm-ups"] == 1 and warm["requests"] == 2 and warm["timed warm-ups"] == 1
    assert warm["cached tokens"] >= 256  # two whole blocks at least
    # Without it, the one request vLLM saw found nothing of this file cached.
    assert cold["warm-ups"] == 0 and cold["requests"] == 1
    assert cold["cached tokens"] < 128
