#!/usr/bin/env python3
"""Core latency figures: managed start-up time, a memorised completion through the
server (LSP over stdio) vs. the same request straight to vLLM, median of N.

Run with the venv's python and the tiny model:
    scripts/bench-core "$VLLM_GHOST_TEST_MODEL" [--runs 20]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from lsprotocol import types

from bench.lsp import GhostClient, position_of, start_session
from bench.vllm_process import (
    VllmServer,
    example,
    external_options,
    managed_options,
    private_registry,
    start_vllm,
    stop_vllm,
)
from langserver.completion.stages.context import Context
from langserver.completion.stages.prompt import Sampling, build_prompt

ROOT = Path(__file__).resolve().parent.parent
WARMUP = 2


async def timed_completions(client: GhostClient, options: dict[str, Any], case: dict[str, str],
                            runs: int) -> list[float]:
    """Each request cold: new settings empty the typing-through cache, which would otherwise
    answer a repeated request in microseconds without asking vLLM."""
    text = case["prefix"] + case["suffix"]
    uri = client.open(text, case["language"])
    line, character = position_of(text, len(case["prefix"]))
    times = []
    for run in range(runs + WARMUP):
        fresh = copy.deepcopy(options)
        fresh.setdefault("completion", {})["disabledLanguages"] = [f"bench-{run}"]
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=fresh))
        await client.command("vllmGhost.status")  # the configuration is applied before this answers
        asked = time.perf_counter()
        items = await client.complete(uri, line, character)
        times.append(time.perf_counter() - asked)
        assert [item.insert_text for item in items] == [case["middle"]], items
    return times[WARMUP:]


async def direct_requests(server: VllmServer, case: dict[str, str], stop_ids: list[int], runs: int) -> list[float]:
    """The request the server sends, sent by plain HTTP, streamed to the end."""
    body = build_prompt(Context(case["prefix"], case["suffix"]), "chat-fim", Sampling()).body
    body.update(model="tiny", stream=True, stop_token_ids=stop_ids)
    times = []
    async with httpx.AsyncClient(timeout=60) as http:
        for _ in range(runs + WARMUP):
            asked = time.perf_counter()
            async with http.stream("POST", server.url + "/v1/chat/completions", json=body,
                                   headers={"Authorization": f"Bearer {server.api_key}"}) as response:
                async for _chunk in response.aiter_bytes():
                    pass
            times.append(time.perf_counter() - asked)
    return times[WARMUP:]


async def bench(model: Path, runs: int, name: str) -> None:
    case = example(name)
    # 1. Managed: the server starts vLLM itself.
    options = managed_options(model)
    started = time.monotonic()
    client = await start_session(options, timeout=600, require_ready=True)
    startup = time.monotonic() - started
    managed = await timed_completions(client, options, case, runs)
    timings = (await client.command("vllmGhost.status"))["detail"].get("timings", {})
    await client.close_session()
    # 2. Overhead: the same vLLM answers the server (external mode) and plain HTTP, alternately.
    with tempfile.TemporaryDirectory() as tmp:
        server = start_vllm(model, secrets.token_urlsafe(16), Path(tmp) / "vllm.log")
        try:
            options = external_options(server)
            client = await start_session(options, timeout=60)
            stop_ids = client.statuses[-1]["detail"].get("stopTokenIds", [])
            through: list[float] = []
            direct: list[float] = []
            for _ in range(2):
                through += await timed_completions(client, options, case, runs // 2)
                direct += await direct_requests(server, case, stop_ids, runs // 2)
            await client.close_session()
        finally:
            stop_vllm(server.process)
    median_ms = {key: statistics.median(values) * 1000
                 for key, values in (("managed", managed), ("through", through), ("direct", direct))}
    print(f"example: {name} ({len(case['middle'])} chars of middle), {runs} runs each, medians")
    print(f"{'managed start-up, initialize -> ready':<52} {startup:8.1f} s")
    print(f"{'memorised completion through the server (managed)':<52} {median_ms['managed']:8.1f} ms")
    print(f"{'same, through the server (external mode)':<52} {median_ms['through']:8.1f} ms")
    print(f"{'same request straight to vLLM (HTTP, streamed)':<52} {median_ms['direct']:8.1f} ms")
    difference = median_ms["through"] - median_ms["direct"]
    # Negative when the server's early stop closes the stream before vLLM's own end token.
    print(f"{'difference of the last two (server minus direct)':<52} {difference:8.1f} ms")
    overhead = timings.get("overhead", {})
    if overhead:
        print(f"{'server overhead as the server measures it (p50/p99)':<52} "
              f"{overhead['p50']:8.2f} / {overhead['p99']:.2f} ms  (n={overhead['n']:.0f}; time not spent on vLLM)")


def main() -> int:
    private_registry()  # the servers it starts share no vLLM with a developer's own
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", type=Path)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--example", default="py_demo")
    args = parser.parse_args()
    asyncio.run(bench(args.model, args.runs, args.example))
    return 0


if __name__ == "__main__":
    sys.exit(main())
