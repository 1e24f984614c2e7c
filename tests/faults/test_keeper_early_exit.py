"""Issue 27: a launch whose keeper (langserver/backend/keeper.py) dies before vLLM runs ends in an
error status within seconds that says what is known (the keeper, its exit, its last words), never
in "starting" for as long as the restarts last; Restart Model then recovers.

The fault is scripted and named so: a `sitecustomize` on the launch's PYTHONPATH (vllm.env reaches
the keeper, which runs before the guardian and "vLLM") kills the first Python that starts with it,
once. The managed "vLLM" is the scripted server (tests/scripted_server.py): what is under test is
the keeper, not vLLM.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bench.lsp import GhostClient
from tests.fault_tools import managed_scripted_options

pytestmark = pytest.mark.faults

SITECUSTOMIZE = """\
import os, sys
_marker = os.environ.get("VLLM_GHOST_TEST_KEEPER_FAULT", "")
if _marker and os.path.exists(_marker):
    os.unlink(_marker)
    print("scripted fault: this keeper dies before it starts anything", file=sys.stderr, flush=True)
    os._exit(3)
"""


async def test_a_keeper_that_dies_at_once_is_an_error_in_seconds_and_restart_recovers(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    marker = tmp_path / "die-once"
    marker.touch()
    options = managed_scripted_options(maxRestarts=5)
    options["vllm"]["env"] = {"PYTHONPATH": str(tmp_path / "site"), "VLLM_GHOST_TEST_KEEPER_FAULT": str(marker)}
    client = GhostClient()
    await client.launch(env={"XDG_RUNTIME_DIR": str(tmp_path / "run")})
    try:
        started = time.monotonic()
        await client.open_session(options)
        status = await client.wait_status("ready", "error", timeout=60)
        took = time.monotonic() - started
        assert status["state"] == "error", client.statuses
        message = status["message"]
        assert "keeper process" in message and "exited with code 3 before vLLM started" in message, message
        assert "scripted fault: this keeper dies" in message  # its own last words, from the launch's log
        assert "Restart Model" in message
        # Given up at once, not after five restarts and their back-off (1 + 2 + 4 + 8 + 16 s).
        assert [s["state"] for s in client.statuses].count("starting") == 1, client.statuses
        assert took < 30, took
        assert not marker.exists()

        result = await client.command("vllmGhost.restartModel")
        assert result["state"] == "ready", result
    finally:
        await client.close_session()
