"""Fault injection over a real LSP session (stdio), against the scripted
OpenAI-compatible server (tests/scripted_server.py): faults that must happen on
cue. External mode for a misbehaving backend; managed mode (the scripted
server as "vLLM") for deaths, crash loops, the language server's own death,
and where secrets go. Real vLLM gets the same treatment in test_faults_vllm.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio

from bench.lsp import GhostClient
from tests.fault_tools import (
    ScriptedProcess,
    describe,
    everything_seen,
    external_scripted_options,
    info,
    kill_leftovers,
    launch,
    managed_scripted_options,
    received,
    record,
    script,
    states,
    tree,
    wait_new_status,
    wait_no_leftovers,
)

pytestmark = pytest.mark.faults

TIMEOUT_MS = 1500
REPLY = "42"
EXTERNAL_KEY = f"external-secret-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def scripted() -> Iterator[ScriptedProcess]:
    server = ScriptedProcess("--served-model-name", "tiny", key=EXTERNAL_KEY)
    yield server
    server.stop()


@pytest_asyncio.fixture(scope="module")
async def client(scripted: ScriptedProcess) -> AsyncIterator[GhostClient]:
    client = await launch(external_scripted_options(scripted.url, EXTERNAL_KEY, timeoutMs=TIMEOUT_MS))
    assert client.statuses[-1]["state"] == "ready", client.statuses
    yield client
    await client.close_session()


async def complete_fresh(client: GhostClient, suffix: str = "\n\nprint(f())\n") -> tuple[list[Any], float]:
    """A completion in a new document (nothing cached can answer it); returns items and seconds."""
    uri = client.open(f"# {uuid.uuid4().hex}\ndef f():\n    return {suffix}")
    started = time.monotonic()
    items = await client.complete(uri, 2, 11)
    return items, time.monotonic() - started


async def alive_and_well(client: GhostClient, url: str) -> bool:
    """The server process lives, answers a command, and the next completion works."""
    assert client._server is not None and client._server.returncode is None
    assert (await client.command("vllmGhost.status"))["state"] in ("ready", "error")
    await script(url, default={"kind": "ok", "text": REPLY})
    items, _ = await complete_fresh(client)
    return [item.insert_text for item in items] == [REPLY]


# --- a misbehaving backend (external mode) ---------------------------------------------------------
async def test_a_hanging_backend_costs_one_timeout_per_request_not_a_stuck_queue(
        client: GhostClient, scripted: ScriptedProcess) -> None:
    await script(scripted.url, clear=True, faults=[{"kind": "hang"}] * 3)
    started = time.monotonic()
    results = await asyncio.gather(*(complete_fresh(client) for _ in range(3)))
    took = time.monotonic() - started
    # The server closed each hung HTTP request (the backend sees the disconnect).
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        hung = [r for r in await received(scripted.url) if r["kind"] == "hang"]
        if len(hung) == 3 and all(r["outcome"] == "client closed" for r in hung):
            break
        await asyncio.sleep(0.1)
    well = await alive_and_well(client, scripted.url)
    record("backend hangs (3 requests at once)", well and took < TIMEOUT_MS / 1000 + 1.5, took, 0,
           f"all three empty after {took:.2f} s")
    assert all(items == [] for items, _ in results)
    assert took < TIMEOUT_MS / 1000 + 1.5, f"three hung requests took {took:.2f} s together"
    assert [r["outcome"] for r in hung] == ["client closed"] * 3
    assert well


@pytest.mark.parametrize("fault", [
    {"kind": "status", "status": 500, "body": "scripted engine failure"},
    {"kind": "status", "status": 503, "body": "engine dead"},
    {"kind": "garbage"},
    {"kind": "truncated", "text": "return 1\n" * 4, "chunks": 4},
    {"kind": "ok", "text": "1 + 1" * 10, "chunks": 10, "delay": 0.4},  # slower than the time-out
], ids=["500", "503", "garbage JSON", "truncated stream", "slower than timeout"])
async def test_a_bad_answer_is_an_empty_result_and_the_next_request_works(
        client: GhostClient, scripted: ScriptedProcess, fault: dict[str, Any]) -> None:
    await script(scripted.url, clear=True, faults=[fault])
    items, took = await complete_fresh(client)
    well = await alive_and_well(client, scripted.url)
    name = {"status": f"backend answers {fault.get('status')}", "garbage": "backend sends garbage JSON",
            "truncated": "backend truncates the stream"}.get(fault["kind"], "backend slower than the time-out")
    record(name, items == [] and well, took, 0, f"empty after {took:.2f} s")
    assert items == []
    assert took < TIMEOUT_MS / 1000 + 1.0
    assert well
    # One message per cause at most, never a traceback.
    texts = [message.message for message in client.messages]
    assert len(texts) == len(set(texts))
    assert "Traceback" not in "".join(client.stderr), "".join(client.stderr)[-3000:]


async def test_a_multi_line_answer_at_the_end_of_the_document_is_not_an_error(
        client: GhostClient, scripted: ScriptedProcess) -> None:
    await script(scripted.url, clear=True, faults=[{"kind": "ok", "text": "1\n" * 4, "chunks": 4}])
    items, _ = await complete_fresh(client, suffix="")
    assert isinstance(items, list)


# --- the managed process dies, loops, or is told to listen everywhere --------------------------------
async def test_managed_vllm_killed_mid_completion_ends_it_at_once_and_recovers() -> None:
    client = await launch(managed_scripted_options())
    try:
        ready = client.statuses[-1]
        assert ready["state"] == "ready", ready
        url = ready["detail"]["url"].removesuffix("/v1")
        await script(url, faults=[{"kind": "hang"}])
        uri = client.open(f"# {uuid.uuid4().hex}\ndef f():\n    return ")
        request = asyncio.ensure_future(client.complete(uri, 2, 11))
        await asyncio.sleep(0.5)
        mark = len(client.statuses)
        os.kill(ready["detail"]["pid"], signal.SIGKILL)
        killed = time.monotonic()
        items = await asyncio.wait_for(request, 10)
        ended_s = time.monotonic() - killed
        again = await wait_new_status(client, mark, "ready")
        recovered_s = time.monotonic() - killed
        well = await alive_and_well(client, again["detail"]["url"].removesuffix("/v1"))
        record("scripted vLLM SIGKILLed mid-completion (LSP)", items == [] and ended_s < 1 and well, recovered_s, 0,
               f"request empty after {ended_s:.2f} s")
        assert items == [] and ended_s < 1.0, f"in-flight request took {ended_s:.2f} s to end"
        assert states(client)[mark] == "starting"
        assert again["detail"]["pid"] != ready["detail"]["pid"]
        assert well
        assert not [m for m in client.messages if m.type == 1], "a restart is not an error for the user"
    finally:
        await client.close_session()


async def test_crash_loop_gives_up_with_one_clear_error() -> None:
    options = managed_scripted_options(command=[sys.executable, "-c", "import sys; sys.exit(3)"], maxRestarts=2)
    client = await launch(options, wait_for=())
    try:
        final = await client.wait_status("error", timeout=60)
        assert "failed 3 times in a row" in final["message"]
        assert final["detail"]["exitCode"] == 3
        errors = [m.message for m in client.messages if m.type == 1]
        assert len(errors) == 1 and "maxRestarts" in errors[0], errors
        items, took = await complete_fresh(client)
        assert items == [] and took < 1.0
    finally:
        await client.close_session()


async def test_secrets_stay_out_of_argv_logs_and_status(scripted: ScriptedProcess) -> None:
    managed = await launch(managed_scripted_options(host="0.0.0.0"))
    external = await launch(external_scripted_options(scripted.url, EXTERNAL_KEY))
    try:
        ready = managed.statuses[-1]
        assert ready["state"] == "ready", ready
        url = ready["detail"]["url"].removesuffix("/v1")
        served = await info(url)
        assert served["host"] == "0.0.0.0"  # as asked, and...
        managed_key = served["key"]
        assert managed_key
        mark = len(managed.statuses)
        os.kill(ready["detail"]["pid"], signal.SIGKILL)  # ...a restart does not warn twice
        await wait_new_status(managed, mark, "ready")
        await managed.command("vllmGhost.status")
        await external.command("vllmGhost.status")
        processes = list(tree(managed.pid).values()) + list(tree(external.pid).values())
        for key, session in ((managed_key, managed), (EXTERNAL_KEY, external)):
            assert key not in everything_seen(session), "a key leaked into what the client sees"
            for proc in processes:
                assert key not in proc.cmdline, f"a key is on a command line: {proc.pid}"
        # One pop-up, even across the restart.
        warnings = [m.message for m in managed.messages if "listens on 0.0.0.0" in m.message]
        assert len(warnings) == 1, warnings
        record("secrets: key not in argv/logs/status", True)
    finally:
        await managed.close_session()
        await external.close_session()


async def test_plain_http_to_another_machine_warns_once() -> None:
    options = external_scripted_options("http://192.0.2.1:9", timeoutMs=300)  # TEST-NET-1: never answers
    client = await launch(options)
    try:
        assert client.statuses[-1]["state"] == "error"
        await client.command("vllmGhost.restartModel")
        warnings = [m.message for m in client.messages if "plain http" in m.message]
        assert len(warnings) == 1, warnings
    finally:
        await client.close_session()


# --- the language server dies: no process may stay behind -------------------------------------------
async def _end(client: GhostClient, how: str) -> None:
    assert client._server is not None
    if how == "sigkill":
        os.kill(client.pid, signal.SIGKILL)
    elif how == "sigterm":
        os.kill(client.pid, signal.SIGTERM)
    elif how == "stdin closed":
        client._server.stdin.close()  # type: ignore[union-attr]
    elif how == "exit without shutdown":
        client.exit(None)
    elif how == "shutdown and exit":
        await client.shutdown_async(None)
        client.exit(None)
    await asyncio.wait_for(client._server.wait(), 15)


@pytest.mark.parametrize("how", ["sigkill"] * 5 + ["sigterm", "stdin closed", "exit without shutdown",
                                                  "shutdown and exit"])
async def test_no_process_outlives_the_language_server(how: str) -> None:
    marker = f"/nonexistent/vllm-ghost-fault-{uuid.uuid4().hex}"
    client = await launch(managed_scripted_options(model=marker))
    try:
        assert client.statuses[-1]["state"] == "ready"
        snapshot = tree(client.pid)
        assert len(snapshot) >= 4, describe(list(snapshot.values()))  # server, guardian x2, "vLLM"
        ended = time.monotonic()
        await _end(client, how)
        left = await wait_no_leftovers(snapshot, (marker,), timeout=5)
        gone_s = time.monotonic() - ended
        record(f"language server: {how} (scripted vLLM)", not left, gone_s, len(left))
        if left:
            kill_leftovers(left)
        assert not left, f"left behind after {how}: {describe(left)}"
        assert client._server is not None
        if how in ("stdin closed", "shutdown and exit"):
            assert client._server.returncode == 0
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.stop(), 10)
