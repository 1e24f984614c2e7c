"""End to end against a vLLM the test starts itself (backend.mode = external):
completions, cancellation down to vLLM, and bad input that must not hurt."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from lsprotocol import types

from bench.lsp import GhostClient, position_of
from bench.vllm_process import RAMBLE, VllmServer, example, external_options
from tests.conftest import StartServer, start_ready

pytestmark = pytest.mark.vllm
# Close to the tiny model's 4096-token context: the ramble prompt then runs for seconds.
MAX_TOKENS = 3900


@pytest_asyncio.fixture(scope="module")
async def client(external_vllm: VllmServer) -> AsyncIterator[GhostClient]:
    client = await start_ready(external_options(external_vllm, maxTokens=MAX_TOKENS))
    yield client
    await client.close_session()


async def test_external_mode_completes_and_starts_no_process(client: GhostClient) -> None:
    case = example("py_class_method")
    text = case["prefix"] + case["suffix"]
    uri = client.open(text)
    items = await client.complete(uri, *position_of(text, len(case["prefix"])))
    assert [item.insert_text for item in items] == [case["middle"]]
    status = await client.command("vllmGhost.status")
    assert status["detail"]["mode"] == "external"
    assert status["detail"].get("pid") is None


async def test_wrong_api_key_gives_empty_result_and_one_message(external_vllm: VllmServer,
                                                                 lsp_server: StartServer) -> None:
    options = external_options(external_vllm)
    options["backend"]["apiKey"] = "not-the-key"
    other = await lsp_server(options, timeout=60)
    status = await other.wait_status("ready", "error")  # the one start_session waited for
    assert status["state"] == "error" and "rejected the API key" in status["message"]
    case = example("py_single_line")
    uri = other.open(case["prefix"] + case["suffix"])
    for _ in range(2):
        assert await other.complete(uri, *position_of(case["prefix"] + case["suffix"], len(case["prefix"]))) == []
    shown = [m.message for m in other.messages if "API key" in m.message]
    assert len(shown) == 1, shown
    assert "not-the-key" not in "".join(other.logs) + "".join(other.stderr)


async def test_cancel_returns_promptly_and_vllm_stops_generating(client: GhostClient,
                                                                 external_vllm: VllmServer) -> None:
    # The ramble prompt runs up to maxTokens: about 4 s of generation on this machine.
    text = RAMBLE["prefix"] + RAMBLE["suffix"]
    uri = client.open(text)
    before = await _metrics(external_vllm)
    params = client.completion_params(uri, *position_of(text, len(RAMBLE["prefix"])))
    request_id = "cancel-me"
    future = client.protocol.send_request_async(types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id=request_id)
    await asyncio.sleep(0.5)  # vLLM's counters move only when a request ends: cancel blind, mid-generation
    cancelled_at = time.monotonic()
    client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=request_id))
    with pytest.raises(Exception, match="cancel"):
        await asyncio.wait_for(future, 5)
    answered_s = time.monotonic() - cancelled_at
    assert answered_s < 1.0, f"cancelled request took {answered_s:.2f} s to answer"
    # vLLM got the request (its prompt was counted) and stopped far short of maxTokens.
    await asyncio.sleep(1.0)
    after = await _metrics(external_vllm)
    assert after["running"] == 0
    assert after["prompt"] > before["prompt"], "the request never reached vLLM"
    generated = after["generated"] - before["generated"]
    assert generated < MAX_TOKENS / 2, f"vLLM generated {generated:.0f} tokens: the abort did not reach it"
    await asyncio.sleep(1.0)
    assert (await _metrics(external_vllm))["generated"] == after["generated"]


async def _metrics(server: VllmServer) -> dict[str, float]:
    """Off the event loop: a blocking scrape would also hold back the LSP client's messages."""
    names = {"running": "vllm:num_requests_running", "prompt": "vllm:prompt_tokens_total",
             "generated": "vllm:generation_tokens_total"}
    return {key: await asyncio.to_thread(server.metric, name) for key, name in names.items()}


async def test_positions_past_the_end_are_clamped(client: GhostClient) -> None:
    case = example("py_single_line")
    text = case["prefix"] + case["suffix"]
    uri = client.open(text)
    line, character = position_of(text, len(case["prefix"]))
    # Past the end of the cursor line: the same as its end, which is where the example's cursor is.
    assert [i.insert_text for i in await client.complete(uri, line, character + 500)] == [case["middle"]]
    # Past the end of the document: no error, the server stays up.
    last_line = text.count("\n")
    items = await client.complete(uri, last_line + 50, 3)
    for item in items:
        assert item.range is not None and item.range.start.line == last_line
    assert (await client.command("vllmGhost.status"))["state"] == "ready"


async def test_unknown_document_gives_empty_list(client: GhostClient) -> None:
    assert await client.complete("file:///never/opened.py", 0, 0) == []


async def test_crlf_and_astral_characters(client: GhostClient) -> None:
    for name in ("py_crlf", "py_unicode"):
        case = example(name)
        text = case["prefix"] + case["suffix"]
        uri = client.open(text)
        line, character = position_of(text, len(case["prefix"]))
        items = await client.complete(uri, line, character)
        assert [item.insert_text for item in items] == [case["middle"]], name
        assert items[0].range is not None
        assert items[0].range.start == types.Position(line=line, character=character)


async def test_edits_after_astral_characters_land_in_utf16_units(client: GhostClient) -> None:
    case = example("py_unicode")
    full = case["prefix"] + case["suffix"]
    cursor_line, cursor_character = position_of(full, len(case["prefix"]))
    # Open without the cursor line's last character, then type it as VS Code would (UTF-16 columns).
    typed = case["prefix"][-1]
    uri = client.open(case["prefix"][:-1] + case["suffix"])
    client.edit(uri, (cursor_line, cursor_character - 1), (cursor_line, cursor_character - 1), typed)
    items = await client.complete(uri, cursor_line, cursor_character)
    assert [item.insert_text for item in items] == [case["middle"]]


async def test_five_megabyte_document_is_cut_to_the_model_context(client: GhostClient) -> None:
    case = example("py_single_line")
    filler = "".join(f"value_{i} = {i} * 2  # padding line\n" for i in range(140_000))
    text = filler + case["prefix"] + case["suffix"]
    assert len(text) > 5_000_000
    uri = client.open(text)
    started = time.monotonic()
    items = await client.complete(uri, *position_of(text, len(filler) + len(case["prefix"])))
    elapsed = time.monotonic() - started
    # The prompt fits the 4096-token model (a too-long prompt would be a 400 and an error message).
    assert not [m for m in client.messages if "400" in m.message]
    assert len(items) <= 1
    print(f"\n5 MB document: completion in {elapsed:.2f} s")
    assert (await client.command("vllmGhost.status"))["state"] == "ready"
