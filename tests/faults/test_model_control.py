"""The GPU is the user's (issue 27, item 1): Stop Model and Start Model, vllm.autoStart at the
first completion, and the idle unload, with the shared vLLM's rules holding: a stop in one window
stops it for every window and says so there, and a completion never undoes the user's stop.

Real language server processes over stdio; the managed "vLLM" is the scripted server
(tests/scripted_server.py) as in tests/test_shared.py: what is under test is who starts and stops
the process, and a real vLLM would add 30 s or more per start on this machine.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from bench.lsp import GhostClient
from bench.vllm_process import group_alive
from tests.fault_tools import own_scripted_options, received, states, wait_new_status, window

pytestmark = pytest.mark.faults


async def complete(client: GhostClient) -> list[str]:
    uri = client.open(f"# {uuid.uuid4().hex}\ndef f():\n    return ")
    return [str(item.insert_text) for item in await client.complete(uri, 2, 11)]


async def gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while group_alive(pid) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return not group_alive(pid)


async def test_stop_model_in_one_window_stops_it_for_all_and_start_model_brings_it_back(
        clients: list[GhostClient]) -> None:
    settings = own_scripted_options()
    first = await window(clients, settings)
    second = await window(clients, settings)
    assert first.statuses[-1]["state"] == second.statuses[-1]["state"] == "ready"
    pid = first.statuses[-1]["detail"]["pid"]
    mark = len(second.statuses)

    stopped = await first.command("vllmGhost.stopModel")
    assert stopped["state"] == "stopped" and "2 windows" in stopped["message"], stopped
    assert await gone(pid, 10), "Stop Model left vLLM running"
    elsewhere = await wait_new_status(second, mark, "stopped", "error", timeout=20)
    assert elsewhere["state"] == "stopped" and "another window" in elsewhere["message"], elsewhere
    await asyncio.sleep(2)  # the other window must not rejoin or restart it
    assert states(second)[-1] == "stopped", states(second)

    # Completions answer nothing, quietly: "stopped" stays, no error, no pop-up, no new vLLM.
    assert await complete(first) == [] and await complete(second) == []
    await asyncio.sleep(1)
    assert states(first)[-1] == states(second)[-1] == "stopped"
    assert not [m for m in first.messages + second.messages if "stopped" in m.message.lower()]
    assert (await second.command("vllmGhost.status"))["state"] == "stopped"

    started = await second.command("vllmGhost.startModel")
    assert started["state"] == "ready", started
    assert await complete(second) == ["0"]
    # The first window's next completion joins the vLLM the second one started.
    mark = len(first.statuses)
    await complete(first)
    assert (await wait_new_status(first, mark, "ready", "error"))["state"] == "ready"
    assert first.statuses[-1]["detail"]["pid"] == started["detail"]["pid"]
    assert await complete(first) == ["0"]


async def test_auto_start_at_the_first_completion_loads_nothing_before(clients: list[GhostClient]) -> None:
    client = await window(clients, own_scripted_options(autoStart="firstCompletion"), wait_for=("stopped",))
    assert "first completion" in client.statuses[-1]["message"]
    await asyncio.sleep(1)
    assert states(client) == ["stopped"], "the model started before any completion"
    mark = len(client.statuses)
    assert await complete(client) == []  # this one only starts it
    assert (await wait_new_status(client, mark, "ready", "error"))["state"] == "ready"
    assert await complete(client) == ["0"]


async def test_idle_unload_lets_go_and_the_next_completion_loads_it_again(clients: list[GhostClient]) -> None:
    client = await window(clients, own_scripted_options(idleUnloadMinutes=0.05))  # 3 s
    assert client.statuses[-1]["state"] == "ready"
    pid = client.statuses[-1]["detail"]["pid"]
    assert await complete(client) == ["0"]
    mark = len(client.statuses)
    unloaded = await wait_new_status(client, mark, "stopped", timeout=20)
    assert "without completions" in unloaded["message"], unloaded
    assert await gone(pid, 10), "the idle unload left vLLM running"
    mark = len(client.statuses)
    assert await complete(client) == []
    assert (await wait_new_status(client, mark, "ready", "error"))["state"] == "ready"
    assert await complete(client) == ["0"]


async def test_a_started_model_has_answered_once_with_log_probabilities_before_it_is_ready(
        clients: list[GhostClient]) -> None:
    # vLLM-CPU compiles its log-probability kernel on the first request that asks for it (4.9 s with
    # the tiny model): that request is the server's, before "ready", not the user's first ghost text.
    first = await window(clients, own_scripted_options())
    ready = first.statuses[-1]
    assert ready["state"] == "ready", ready
    assert states(first)[-2:] == ["loading", "ready"] and "Warming up" in first.statuses[-2]["message"]
    assert isinstance(ready["detail"]["warmupSeconds"], float | int)
    asked = [request["body"] for request in await received(ready["detail"]["url"].removesuffix("/v1"))
             if request["path"] == "/v1/chat/completions"]
    assert len(asked) == 1 and asked[0]["max_tokens"] == 1 and asked[0]["logprobs"] is True, asked
