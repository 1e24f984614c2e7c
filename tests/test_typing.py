"""The typing-speed engine end to end against a real vLLM (external mode): a burst of
keystrokes as VS Code sends them reaches vLLM as a few requests at most."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from lsprotocol import types

from tests.conftest import VllmServer, example, external_options
from tests.lsp_client import GhostClient, position_of

pytestmark = pytest.mark.vllm

CHAT_HANDLER = 'handler="/v1/chat/completions"'


def backend_requests(server: VllmServer) -> float:
    """HTTP requests vLLM received on the chat endpoint (aborted ones included)."""
    text = httpx.get(server.url + "/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("http_requests_total{") and CHAT_HANDLER in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


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
    client = GhostClient()
    await client.launch()
    await client.open_session(external_options(external_vllm))
    status = await client.wait_status("ready", "error", timeout=60)
    assert status["state"] == "ready", status
    yield client
    await client.close_session()


async def type_burst(client: GhostClient, uri: str, start_text: str, typed: str,
                     interval_s: float) -> list[Any]:
    """Type `typed` at the end of `start_text` one character at a time as VS Code does:
    didChange, an inlineCompletion request, and $/cancelRequest for the previous request."""
    text = start_text
    futures: list[Any] = []
    previous: str | None = None
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
        await asyncio.sleep(interval_s)
    return await asyncio.gather(*futures, return_exceptions=True)


async def test_a_burst_of_twenty_keystrokes_makes_a_few_backend_requests(
        client: GhostClient, external_vllm: VllmServer) -> None:
    case = example("py_class_method")
    typed = case["prefix"][-20:]
    start = case["prefix"][:-20]
    uri = client.open(start + case["suffix"])
    before = await settled_requests(external_vllm)
    results = await type_burst(client, uri, start, typed, interval_s=0.05)
    after = await settled_requests(external_vllm)
    print(f"\n20 keystrokes at 50 ms: {after - before:.0f} backend requests")
    assert after - before <= 4
    # The last request (not cancelled) answers with the memorised middle.
    last = results[-1]
    assert isinstance(last, types.InlineCompletionList), last
    assert [item.insert_text for item in last.items] == [case["middle"]]
    # The earlier ones were cancelled by the client (or answered empty).
    for result in results[:-1]:
        assert isinstance(result, Exception) or not result.items
