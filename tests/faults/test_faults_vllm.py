"""Fault injection against real vLLM (CPU build, tiny memorised model) managed by a
real language server over stdio: vLLM killed mid-completion, the language server
killed at every stage of vLLM's life, a missing model diagnosed from vLLM's own
words. vLLM's EngineCore renames itself (`VLLM::EngineCore`) and outlives a
killed API server, so every orphan check scans /proc by process group, session,
the pids seen before the kill, and markers unique to the test (a model path
through a fresh symlink, the port, an environment tag).

One shared vLLM for the in-session faults (a start costs ~30 s on 2 cores); the
language-server deaths during start-up each start their own and kill it early.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bench.lsp import GhostClient, position_of
from bench.vllm_process import example, managed_options
from tests.fault_tools import (
    Proc,
    describe,
    everything_seen,
    kill_leftovers,
    launch,
    record,
    states,
    tree,
    wait_new_status,
    wait_no_leftovers,
)

pytestmark = [pytest.mark.vllm, pytest.mark.faults]
TAG_ENV = "VLLM_GHOST_FAULT_TAG"


@dataclass
class Marked:
    """Options for one managed vLLM whose processes can be found again, whatever they are called."""

    options: dict[str, Any]
    model: str
    tag: str

    def markers(self, port: int | None = None) -> tuple[str, ...]:
        found = (self.model, self.tag)
        return (*found, f"--port {port}") if port else found


def marked_options(test_model: Path, where: Path, **completion: Any) -> Marked:
    link = where / f"model-{uuid.uuid4().hex[:12]}"
    link.symlink_to(test_model.resolve(), target_is_directory=True)
    tag = f"fault-{uuid.uuid4().hex}"
    options = managed_options(link, **completion)
    options["vllm"]["env"] = {**options["vllm"]["env"], TAG_ENV: tag}
    return Marked(options, str(link), tag)


def engine_procs(procs: dict[int, Proc]) -> list[Proc]:
    return [proc for proc in procs.values() if proc.cmdline.startswith("VLLM::EngineCore")]


def listening_addresses(port: int) -> set[str]:
    """Local addresses listening on `port` (IPv4), from /proc/net/tcp."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        address, hex_port = fields[1].split(":")
        if int(hex_port, 16) == port and fields[3] == "0A":  # LISTEN
            found.add(".".join(str(int(address[i:i + 2], 16)) for i in (6, 4, 2, 0)))
    return found


@dataclass
class Session:
    client: GhostClient
    marked: Marked
    closed: bool = False


@pytest_asyncio.fixture(scope="module")
async def session(test_model: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Session]:
    marked = marked_options(test_model, tmp_path_factory.mktemp("faults-vllm"))
    client = await launch(marked.options, timeout=300)
    state = Session(client, marked)
    yield state
    if not state.closed:
        await client.close_session()


async def complete_example(client: GhostClient, name: str) -> list[Any]:
    case = example(name)
    text = case["prefix"] + case["suffix"]
    uri = client.open(text, case["language"])
    return await client.complete(uri, *position_of(text, len(case["prefix"])))


async def test_vllm_listens_on_loopback_only_and_its_key_is_nowhere_visible(session: Session) -> None:
    client = session.client
    ready = client.statuses[-1]
    assert ready["state"] == "ready", ready
    pid, port = ready["detail"]["pid"], int(ready["detail"]["url"].rsplit(":", 1)[1].split("/")[0])
    assert listening_addresses(port) == {"127.0.0.1"}
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    key = next(item.split(b"=", 1)[1].decode() for item in environ if item.startswith(b"VLLM_API_KEY="))
    assert len(key) >= 32
    await client.command("vllmGhost.status")
    assert key not in everything_seen(client)
    for proc in tree(client.pid).values():
        assert key not in proc.cmdline, f"the key is on the command line of {proc.pid}"
    record("secrets with real vLLM: loopback bind, key only in env", True)


async def test_sigkill_vllm_mid_completion_ends_it_within_a_second_and_recovers(session: Session) -> None:
    client = session.client
    items = await complete_example(client, "py_single_line")
    assert [item.insert_text for item in items] == [example("py_single_line")["middle"]]
    ready = client.statuses[-1]
    pid = ready["detail"]["pid"]
    before = tree(pid)
    engines = engine_procs(before)
    assert engines, describe(list(before.values()))
    # Freeze the engine so the request is certainly in flight when the API server dies.
    for engine in engines:
        os.kill(engine.pid, signal.SIGSTOP)
    case = example("py_multi_line")
    text = case["prefix"] + case["suffix"]
    uri = client.open(text, case["language"])
    request = asyncio.ensure_future(client.complete(uri, *position_of(text, len(case["prefix"]))))
    await asyncio.sleep(1.0)
    assert not request.done(), "the request should be waiting on the frozen engine"
    mark = len(client.statuses)
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    result = await asyncio.wait_for(request, 30)
    ended_s = time.monotonic() - killed
    # The old group only (by pid, group and session): the restart runs the same model, port aside.
    left = await wait_no_leftovers(before, (), timeout=10)
    again = await wait_new_status(client, mark, "ready", timeout=300)
    recovered_s = time.monotonic() - killed
    items = await complete_example(client, "py_demo")
    works = [item.insert_text for item in items] == [example("py_demo")["middle"]]
    record("real vLLM SIGKILLed mid-completion", result == [] and ended_s < 1 and not left and works, recovered_s,
           len(left), f"request empty after {ended_s:.2f} s; old group gone")
    if left:
        kill_leftovers(left)
    assert result == [] and ended_s < 1.0, f"in-flight request ended after {ended_s:.2f} s"
    assert not left, f"the old vLLM's processes survived: {describe(left)}"
    assert states(client)[mark] == "starting" and "killed by signal 9" in client.statuses[mark]["message"]
    assert again["detail"]["pid"] != pid and again["detail"]["restarts"] == 1
    assert works
    print(f"\nrecovered in {recovered_s:.1f} s")


async def test_sigkill_language_server_with_vllm_ready_leaves_nothing(session: Session) -> None:
    """Runs last in this module: it ends the shared session."""
    client = session.client
    ready = await client.command("vllmGhost.status")
    assert ready["state"] == "ready"
    port = int(ready["detail"]["url"].rsplit(":", 1)[1].split("/")[0])
    snapshot = tree(client.pid)
    assert engine_procs(snapshot)
    session.closed = True
    ended = time.monotonic()
    os.kill(client.pid, signal.SIGKILL)
    left = await wait_no_leftovers(snapshot, session.marked.markers(port), timeout=5)
    gone_s = time.monotonic() - ended
    record("language server sigkill while vLLM ready", not left, gone_s, len(left),
           f"{len(snapshot) - 1} processes under it")
    if left:
        kill_leftovers(left)
    assert not left, f"left behind: {describe(left)}"
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.stop(), 10)


async def test_missing_model_is_diagnosed_from_vllms_own_error(test_model: Path) -> None:
    options = managed_options(Path(f"/nonexistent/models/{uuid.uuid4().hex}"))
    client = await launch(options, timeout=120)
    try:
        final = client.statuses[-1]
        record("model path missing (real vLLM)", final["state"] == "error", None, 0)
        assert final["state"] == "error", final
        assert "model was not found" in final["message"] and "model.path" in final["message"]
        assert "restarting" not in " ".join(status["message"] for status in client.statuses)
    finally:
        await client.close_session()


# --- the language server dies while vLLM starts -----------------------------------------------------
async def _reach(client: GhostClient, stage: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs = tree(client.pid)
        if stage == "guardian up" and len(procs) >= 3:
            return
        if stage == "loading" and "loading" in states(client):
            return
        if stage == "engine" and engine_procs(procs):
            return
        if stage == "worker" and any(proc.cmdline.startswith("VLLM::Worker") for proc in procs.values()):
            return
        if "error" in states(client) or "ready" in states(client):
            raise AssertionError(f"vLLM went past {stage!r}: {client.statuses[-1]}")
        await asyncio.sleep(0.05)
    raise AssertionError(f"vLLM did not reach {stage!r} within {timeout} s")


@pytest.mark.parametrize(("how", "stage"), [
    ("sigkill", "guardian up"),
    ("sigkill", "loading"),
    ("sigkill", "engine"),
    ("sigkill", "worker"),
    ("sigterm", "engine"),
    ("stdin closed", "engine"),
])
async def test_no_vllm_process_outlives_the_language_server(test_model: Path, tmp_path: Path, how: str,
                                                            stage: str) -> None:
    marked = marked_options(test_model, tmp_path)
    client = await launch(marked.options, wait_for=())
    try:
        await _reach(client, stage)
        snapshot = tree(client.pid)
        ended = time.monotonic()
        if how == "sigkill":
            os.kill(client.pid, signal.SIGKILL)
        elif how == "sigterm":
            os.kill(client.pid, signal.SIGTERM)
        else:
            assert client._server is not None and client._server.stdin is not None
            client._server.stdin.close()
        left = await wait_no_leftovers(snapshot, marked.markers(), timeout=5)
        gone_s = time.monotonic() - ended
        record(f"language server {how} while vLLM at {stage!r}", not left, gone_s, len(left),
               f"{len(snapshot) - 1} processes under it")
        if left:
            kill_leftovers(left)
        assert not left, f"left behind: {describe(left)}"
        assert client._server is not None
        await asyncio.wait_for(client._server.wait(), 10)
        if how == "stdin closed":
            assert client._server.returncode == 0
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.stop(), 10)
