"""The confidence gate end to end: small-coder-v2 on vLLM-CPU, a real LSP session. With the
gate off the ghost text shows; with a threshold above the model's confidence nothing
shows and `vllmGhost.status` says why (the confidence, and that it was not shown)."""

from __future__ import annotations

from typing import Any

import pytest
from lsprotocol import types

from bench.lsp import position_of
from bench.vllm_process import VllmServer
from tests.conftest import SMALL_CODER, ReadyServer
from tests.conftest import SMALL_CODER_NAME as NAME

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
PREFIX = "def average(values):\n    if not values:\n        return 0\n    "
SUFFIX = "\n\n\nprint(average([1, 2, 3]))\n"


def options(server: VllmServer, min_confidence: float) -> dict[str, Any]:
    return {"backend": {"mode": "external", "url": server.url + "/v1", "apiKey": server.api_key},
            "model": {"name": NAME, "path": str(SMALL_CODER)},
            "completion": {"timeoutMs": 120000, "debounceMs": 0, "multiline": "never",
                           "minConfidence": min_confidence}}


async def test_a_threshold_above_the_models_confidence_shows_nothing_and_status_says_why(
        small_coder: VllmServer, ready_server: ReadyServer) -> None:
    # A threshold nothing real falls below: the gate is on, so the server asks for logprobs
    # (at 0 it asks for none and has no confidence to report), and the answer shows.
    client = await ready_server(options(small_coder, 1e-12), timeout=60)
    text = PREFIX + SUFFIX
    uri = client.open(text)
    items = await client.complete(uri, *position_of(text, len(PREFIX)))
    assert len(items) == 1 and str(items[0].insert_text).strip(), items
    last = (await client.command("vllmGhost.status"))["detail"]["last"]
    assert last["shown"] is True and 0 < last["confidence"] < 1 and last["tokens"] >= 1
    # Just above what the model had: the same completion is now hidden.
    above = min(1.0, last["confidence"] + 0.01)
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings=options(small_coder, above)))
    other = client.open(text)  # another document: the typing-through cache does not answer
    assert await client.complete(other, *position_of(text, len(PREFIX))) == []
    hidden = (await client.command("vllmGhost.status"))["detail"]["last"]
    assert hidden["shown"] is False and hidden["minConfidence"] == above
    assert hidden["confidence"] == pytest.approx(last["confidence"], abs=1e-3)
