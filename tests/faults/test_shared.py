"""One managed vLLM per machine and settings, shared by every language server (every
VS Code window) that asks for the same one: join, leave, the grace after the last
window, Restart Model for everyone, a stale registration, a killed launcher.

Each server is a real language server process over stdio. The managed "vLLM" is the
scripted server (tests/scripted_server.py): what is under test is who starts, joins
and stops the process, and a real vLLM would add 30 s per start. tests/lsp/test_lsp_managed.py
joins a second server to a real vLLM.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from lsprotocol import types

from bench.lsp import GhostClient
from bench.vllm_process import group_alive
from langserver.backend.shared import Member, Registry, SharedState, identity
from langserver.settings import parse_settings
from tests import fault_tools
from tests.fault_tools import leftovers, own_scripted_options, record, states, tree, wait_new_status

pytestmark = pytest.mark.faults


async def window(clients: list[GhostClient], options: dict[str, Any]) -> GhostClient:
    client = await fault_tools.window(clients, options)
    assert client.statuses[-1]["state"] == "ready", client.statuses[-1]
    return client


async def two_windows(clients: list[GhostClient], options: dict[str, Any]) -> tuple[GhostClient, GhostClient, int]:
    """Two windows with the same settings, the second started once the first is ready, and the
    pid of the first's vLLM."""
    first = await window(clients, options)
    second = await window(clients, options)
    return first, second, vllm_pid(first)


def vllm_pid(client: GhostClient) -> int:
    pid: int = client.statuses[-1]["detail"]["pid"]
    return pid


async def completes(client: GhostClient) -> bool:
    uri = client.open(f"# {uuid.uuid4().hex}\ndef f():\n    return ")
    items = await client.complete(uri, 2, 11)
    return [item.insert_text for item in items] == ["0"]


async def gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while group_alive(pid) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return not group_alive(pid)


def registry(options: dict[str, Any]) -> Registry:
    settings, problems = parse_settings(options)
    assert problems == []
    return Registry(identity(settings))


async def test_a_second_window_joins_the_running_vllm_and_the_last_to_leave_stops_it(
        clients: list[GhostClient]) -> None:
    options = own_scripted_options()
    first, second, pid = await two_windows(clients, options)
    assert vllm_pid(second) == pid, "the second window started a vLLM of its own"
    assert "Joining the running vLLM" in second.statuses[0]["message"]
    assert second.statuses[-1]["detail"]["shared"] == {"servers": 2, "joined": True}
    assert await completes(first) and await completes(second)

    await first.close_session()
    assert group_alive(pid), "vLLM stopped while another window still used it"
    assert await completes(second)
    await second.close_session()
    assert await gone(pid, 5), "vLLM outlived the last window"
    assert registry(options).read() is None


async def test_vllm_waits_out_the_grace_after_the_last_window_so_a_reload_finds_it_loaded(
        clients: list[GhostClient]) -> None:
    # The grace leaves room for the reloaded server to start on a loaded 2-core machine
    # (3 s was not always enough for it to get to joining).
    grace = 8
    options = own_scripted_options(idleGraceS=grace)
    first = await window(clients, options)
    pid = vllm_pid(first)
    await first.close_session()
    await asyncio.sleep(1)
    assert group_alive(pid), "vLLM stopped before its grace was over"
    reloaded = await window(clients, options)
    assert vllm_pid(reloaded) == pid and await completes(reloaded)
    left_at = time.monotonic()  # the user closes the window: the grace counts from here, while its server exits
    await reloaded.close_session()
    assert await gone(pid, grace + 7)
    assert time.monotonic() - left_at >= grace - 0.5, "vLLM stopped before its grace was over"


async def test_keep_alive_leaves_it_running_for_the_next_window(clients: list[GhostClient]) -> None:
    options = own_scripted_options(keepAlive=True)
    first = await window(clients, options)
    pid = vllm_pid(first)
    await first.close_session()
    await asyncio.sleep(1)
    assert group_alive(pid)
    later = await window(clients, options)
    assert vllm_pid(later) == pid
    # Restart Model stops it for good even with keepAlive; the window starts a new one.
    result = await later.command("vllmGhost.restartModel")
    assert result["state"] == "ready" and result["detail"]["pid"] != pid
    assert await gone(pid, 5)
    newer = result["detail"]["pid"]
    await later.close_session()
    assert group_alive(newer)
    # `vllm-ghost servers` lists it (never its key); `--stop` stops it.
    listing = await cli("servers")
    registered = registry(options).read()
    assert registered is not None
    assert f"vLLM pid {newer}" in listing and "keepAlive" in listing and registered.api_key not in listing
    assert "stopped 1 of 1" in await cli("servers", "--stop")
    assert await gone(newer, 5)
    assert "no shared vLLM" in await cli("servers")


async def test_a_supervision_knob_applies_to_the_running_vllm(clients: list[GhostClient]) -> None:
    """Turning on keepAlive (or changing maxRestarts) must not reload the model."""
    options = own_scripted_options()
    first = await window(clients, options)
    pid = vllm_pid(first)
    changed = json.loads(json.dumps(options))
    changed["vllm"].update(keepAlive=True, maxRestarts=2)
    mark = len(first.statuses)
    first.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=changed))
    deadline = time.monotonic() + 5
    while not ((state := registry(options).read()) and state.keep_alive) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert state is not None and state.keep_alive, "keepAlive did not reach the running vLLM"
    assert await completes(first)
    assert states(first)[mark:] == [] and vllm_pid(first) == pid, "the settings change restarted vLLM"
    await first.close_session()
    await asyncio.sleep(1)
    assert group_alive(pid), "keepAlive on: vLLM must outlive the last window"
    assert "stopped 1 of 1" in await cli("servers", "--stop")
    assert await gone(pid, 5)


async def cli(*args: str) -> str:
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "langserver", *args,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    output, _ = await process.communicate()
    return output.decode()


async def test_restart_model_in_one_window_restarts_it_for_every_window(clients: list[GhostClient]) -> None:
    options = own_scripted_options()
    first, second, old = await two_windows(clients, options)
    mark = len(second.statuses)
    result = await first.command("vllmGhost.restartModel")
    assert result["state"] == "ready", result
    new = result["detail"]["pid"]
    assert new != old and await gone(old, 5)
    again = await wait_new_status(second, mark, "ready")
    assert again["detail"]["pid"] == new, "the other window did not rejoin the restarted vLLM"
    assert "another window" in " ".join(s["message"] for s in second.statuses[mark:])
    assert "error" not in states(second)
    assert await completes(first) and await completes(second)


async def test_the_launching_window_killed_leaves_vllm_to_the_others_then_nothing(
        clients: list[GhostClient]) -> None:
    options = own_scripted_options()
    first, second, pid = await two_windows(clients, options)
    snapshot = tree(first.pid)
    os.kill(first.pid, signal.SIGKILL)
    await asyncio.sleep(1.5)
    assert group_alive(pid) and await completes(second)
    assert second.statuses[-1]["state"] == "ready"
    os.kill(second.pid, signal.SIGKILL)
    killed = time.monotonic()
    deadline = killed + 5
    while leftovers(snapshot) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    left = leftovers(snapshot)
    record("shared vLLM: launching window SIGKILLed (vLLM stays for the other), then the other",
           not left, time.monotonic() - killed, len(left))
    assert not left, "vLLM or its keeper outlived every window"


async def test_a_stale_registration_from_a_dead_keeper_is_recovered(clients: list[GhostClient]) -> None:
    options = own_scripted_options()
    stale = registry(options)
    dead = await asyncio.create_subprocess_exec("true")
    await dead.wait()
    stale.write(SharedState(launch_id="stale", keeper=Member(dead.pid, 1), host="127.0.0.1", port=9, api_key="k",
                            log=stale.log_name("stale"), model="tiny", started_at=0.0, clients=(Member(dead.pid, 1),),
                            vllm_pid=dead.pid))
    client = await window(clients, options)
    assert await completes(client)
    state = stale.read()
    assert state is not None and state.launch_id != "stale" and state.port != 9
    assert any("stale" in line for line in client.logs)


async def test_other_settings_get_their_own_vllm_and_a_settings_change_frees_the_old_one(
        clients: list[GhostClient]) -> None:
    options = own_scripted_options()
    first = await window(clients, options)
    other = await window(clients, own_scripted_options())
    assert vllm_pid(other) != vllm_pid(first)
    old = vllm_pid(first)
    moved = json.loads(json.dumps(options))
    moved["model"]["path"] = f"scripted-{uuid.uuid4().hex[:12]}"
    mark = len(first.statuses)
    first.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=moved))
    ready = await wait_new_status(first, mark, "ready")
    assert ready["detail"]["pid"] != old
    assert await gone(old, 5), "the old vLLM kept its GPU memory after the window moved on"
    assert group_alive(vllm_pid(other))


def test_the_registry_is_private_to_its_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    place = Registry("abc")
    place.write(SharedState(launch_id="x", keeper=Member.me(), host="127.0.0.1", port=1, api_key="secret",
                            log=place.log_name("x"), model="m", started_at=0.0))
    assert oct(place.root.stat().st_mode & 0o777) == "0o700"
    assert oct(place.state_path.stat().st_mode & 0o777) == "0o600"
    state = place.read()
    assert state is not None and state.api_key == "secret" and state.keeper == Member.me()
