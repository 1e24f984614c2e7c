"""Acceptance measured locally (issue 27, item 4), over a real LSP session against a real vLLM:
each item carries the command the editor runs on acceptance, and `vllmGhost.status` counts shown,
accepted and retained characters per language. The 30 s retention wait is shortened for the test
(VLLM_GHOST_RETAIN_S)."""

from __future__ import annotations

import asyncio

import pytest
from lsprotocol import types

from bench.lsp import position_of
from bench.vllm_process import VllmServer, example, external_options
from tests.conftest import ReadyServer

pytestmark = pytest.mark.vllm


async def test_an_accepted_item_is_counted_and_its_retained_characters_measured(
        external_vllm: VllmServer, ready_server: ReadyServer) -> None:
    client = await ready_server(external_options(external_vllm), env={"VLLM_GHOST_RETAIN_S": "1"})
    case = example("py_class_method")
    text = case["prefix"] + case["suffix"]
    uri = client.open(text)
    line, character = position_of(text, len(case["prefix"]))
    items = await client.complete(uri, line, character)
    assert [item.insert_text for item in items] == [case["middle"]]
    command = items[0].command
    assert command is not None and command.command == "vllmGhost.accepted" and command.arguments
    # The user accepts: the editor inserts the text, then runs the item's command.
    client.edit(uri, (line, character), (line, character), case["middle"])
    result = await client.workspace_execute_command_async(types.ExecuteCommandParams(
        command=command.command, arguments=command.arguments))
    assert result is not None
    python = result["detail"]["acceptance"]["byLanguage"]["python"]
    assert (python["shown"], python["accepted"], python["acceptedChars"]) == (1, 1, len(case["middle"]))
    assert python["latencyMs"]["n"] == 1
    await asyncio.sleep(2)
    python = (await client.command("vllmGhost.status"))["detail"]["acceptance"]["byLanguage"]["python"]
    assert python["retainedChars"] == python["checkedChars"] == len(case["middle"])
    # A second run of the same command (an editor that runs it twice) does not count again.
    again = await client.workspace_execute_command_async(types.ExecuteCommandParams(
        command=command.command, arguments=command.arguments))
    assert again is not None and again["detail"]["acceptance"]["byLanguage"]["python"]["accepted"] == 1


async def test_an_explicit_request_is_answered_at_once_with_distinct_alternatives(
        external_vllm: VllmServer, ready_server: ReadyServer) -> None:
    """Invoked (Alt+\\ in VS Code): no debounce (a long one is set), no confidence gate (one no
    answer passes is set), up to completion.alternatives items, each with its acceptance command."""
    options = external_options(external_vllm, debounceMs=5000, minConfidence=1.0, alternatives=3)
    client = await ready_server(options)
    case = example("py_single_line")
    text = case["prefix"] + case["suffix"]
    uri = client.open(text)
    line, character = position_of(text, len(case["prefix"]))
    assert await client.complete(uri, line, character) == [], "the gate passes nothing typed"
    params = client.completion_params(uri, line, character)
    params.context.trigger_kind = types.InlineCompletionTriggerKind.Invoked
    started = asyncio.get_running_loop().time()
    result = await client.text_document_inline_completion_async(params)
    took = asyncio.get_running_loop().time() - started
    assert isinstance(result, types.InlineCompletionList)
    texts = [item.insert_text for item in result.items]
    assert texts and len(texts) <= 3, f"alternatives is 3: {texts}"
    assert len(set(texts)) == len(texts), f"duplicates after the clean-up: {texts}"
    assert texts[0] == case["middle"], texts  # the likeliest first
    assert all(item.command is not None and item.command.command == "vllmGhost.accepted" for item in result.items)
    assert took < 5.0, "the explicit request waited out the 5 s debounce"
    last = (await client.command("vllmGhost.status"))["detail"]["last"]
    assert last["explicit"] is True and last["alternatives"] == len(texts)
