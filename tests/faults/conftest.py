"""The fault tests' windows: every language server a test starts through fault_tools.window."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest_asyncio

from bench.lsp import GhostClient


@pytest_asyncio.fixture
async def clients() -> AsyncIterator[list[GhostClient]]:
    """The servers a test started (fault_tools.window adds them), closed after it; a short
    timeout: a server a fault left hanging is killed, not waited on for a minute."""
    started: list[GhostClient] = []
    yield started
    for client in started:
        await client.close_session(timeout=10)
