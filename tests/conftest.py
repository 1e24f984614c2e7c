"""Shared fixtures: the memorised examples, the tiny real model, a real vLLM."""

from __future__ import annotations

import os
import secrets
import subprocess
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from bench.lsp import GhostClient, start_session
from bench.vllm_process import (
    VllmServer,
    private_registry,
    start_vllm,
    stop_vllm,
)

ROOT = Path(__file__).resolve().parent.parent
# The shared-vLLM registry of this test run alone.
private_registry()
# External mode's cache_salt secret (langserver/backend/salt.py): this run's, never the developer's.
os.environ["XDG_STATE_HOME"] = tempfile.mkdtemp(prefix="vllm-ghost-tests-state-")


@pytest.fixture(scope="session")
def test_model() -> Path:
    path = os.environ.get("VLLM_GHOST_TEST_MODEL", "")
    if not path or not (Path(path) / "config.json").is_file():
        pytest.fail("VLLM_GHOST_TEST_MODEL is not set to a built test model: run the tests through scripts/test")
    return Path(path)


ReadyServer = Callable[..., Awaitable[GhostClient]]


@pytest_asyncio.fixture
async def ready_server() -> AsyncIterator[ReadyServer]:
    """Starts a language server with the given initializationOptions (and start_session's other
    arguments), asserts that it became ready, and closes every one it started after the test."""
    started: list[GhostClient] = []

    async def start(options: dict[str, Any], **kwargs: Any) -> GhostClient:
        client = await start_session(options, **kwargs)
        started.append(client)
        status = await client.wait_status("ready", "error")  # the one start_session waited for
        assert status["state"] == "ready", status
        return client

    yield start
    for client in started:
        await client.close_session()


@pytest.fixture(scope="session")
def external_vllm(test_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    """A vLLM the test starts itself, for external mode (with an API key)."""
    server = start_vllm(test_model, secrets.token_urlsafe(16), tmp_path_factory.mktemp("vllm") / "vllm.log")
    yield server
    stop_vllm(server.process)


@dataclass(frozen=True)
class Release:
    dist: Path
    log: str  # scripts/build-release's stderr (its check report among it)


@pytest.fixture(scope="session")
def release() -> Release:
    """dist/ as scripts/build-release makes it (wheel, sdist, the VSIX carrying the wheel): once a run."""
    built = subprocess.run([str(ROOT / "scripts" / "build-release")], capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stderr[-4000:]
    return Release(Path(built.stdout.strip().splitlines()[-1]), built.stderr)
