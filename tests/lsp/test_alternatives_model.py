"""Alternatives on a real code model (issue 27, item 3): the tiny test model memorises its examples
and samples one answer however often it is asked, so test_lsp_acceptance.py can only see one.
small-coder-v2 is unsure where many answers are right: the next entry of a colour table. An
explicit request (Invoked, Alt+\\ in VS Code) gets several different items after the clean-up,
the likeliest first; typing (Automatic) gets one."""

from __future__ import annotations

from typing import Any

import pytest
from lsprotocol import types

from bench.lsp import position_of
from bench.vllm_process import VllmServer
from tests.conftest import SMALL_CODER, SMALL_CODER_NAME, ReadyServer

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
# Measured with 12 explicit requests on small-coder-v2: 2 or 3 distinct entries every time
# (a colour's name and its hex code vary); the greedy answer alone is one of them.
PREFIX = 'COLORS = {\n    "red": "#ff0000",\n    '
SUFFIX = "\n}\n"


def options(server: VllmServer) -> dict[str, Any]:
    return {"backend": {"mode": "external", "url": server.url + "/v1", "apiKey": server.api_key},
            "model": {"name": SMALL_CODER_NAME, "path": str(SMALL_CODER)},
            "completion": {"timeoutMs": 120000, "debounceMs": 0, "multiline": "never", "minConfidence": 0,
                           "alternatives": 3}}


async def test_an_explicit_request_offers_distinct_alternatives_and_typing_one(
        small_coder: VllmServer, ready_server: ReadyServer) -> None:
    client = await ready_server(options(small_coder), timeout=60)
    text = PREFIX + SUFFIX
    line, character = position_of(text, len(PREFIX))
    uri = client.open(text)
    # Typing first (the explicit request's answer would otherwise be in the typing-through
    # cache, which answers by text): one item, from the model.
    typed = await client.complete(uri, line, character)
    assert len(typed) == 1 and str(typed[0].insert_text).strip(), typed
    assert (await client.command("vllmGhost.status"))["detail"]["last"].get("explicit") is not True
    # Then the user asks at the same place.
    params = client.completion_params(uri, line, character)
    params.context.trigger_kind = types.InlineCompletionTriggerKind.Invoked
    result = await client.text_document_inline_completion_async(params)
    assert isinstance(result, types.InlineCompletionList)
    texts = [item.insert_text for item in result.items]
    assert 2 <= len(texts) <= 3, texts
    assert len(set(texts)) == len(texts), f"duplicates after the clean-up: {texts}"
    assert all(isinstance(text, str) and text.strip() and "\n" not in text for text in texts), texts
    assert all(item.command is not None and item.command.command == "vllmGhost.accepted"
               for item in result.items)
    last = (await client.command("vllmGhost.status"))["detail"]["last"]
    assert last["explicit"] is True and last["alternatives"] == len(texts)
