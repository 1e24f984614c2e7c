"""N concurrent typists against one vLLM, each through its own language server (issue 15).

Each typist is a real LSP session over stdio (`python -m langserver`, bench/lsp.py's
client) in external backend mode, pointed at the vLLM that `bench/gpu.py serve` started
(its state file gives the url and the key, which reaches the servers by environment only). Each
replays its own seeded typing trace, built and typed by bench/typing_replay.py's machinery (didChange
per key, an inlineCompletion request per key, `$/cancelRequest` for the one still pending; pauses
after Enter and at region ends). All typists of one level type at once, each starting within the
first 2 s.

Per level (1, 4, 16, 64 typists by default): pause-to-ghost latency p50/p95 as the client sees it
(a pause-starting key sent -> its answer), the servers' own stage timings pooled over every
completion (log.level debug: debounce, first token, stream, overhead = what the server itself
costs), and what vLLM did (its /metrics before and after: requests, prompt and generated tokens,
prefix-cache hit rate). vLLM's prefix cache is reset before each level. The client event loop's lag
is reported too: one process drives every typist, so a late loop would inflate the latencies.

    python3 -m bench.gpu_typists --state /tmp/g/vllm.json --users 1 4 16 64 --out $OUT/typists.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

from lsprotocol import types

from bench import typing_replay as typing_bench
from bench.lsp import GhostClient
from bench.options import dotted_options, merged, server_options
from bench.report import markdown_table

ROOT = Path(__file__).resolve().parent.parent
ENDPOINT = "/v1/chat/completions"  # chat-fim, the default prompt format
TIMING = re.compile(r"(\w+)=([\d.]+)ms")




def options(state: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    return merged(server_options(state.get("name", "bench"), model=state["model"], url=state["url"],
                                 api_key_env="VLLM_API_KEY", log_level="debug", maxTokens=args.max_tokens,
                                 timeoutMs=30000, debounceMs=args.debounce_ms, contextTokens=args.context_tokens),
                  getattr(args, "server_options", {}))  # bench/contention.py's --server-option


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    return {"p50": round(statistics.median(ordered), 1),
            "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1),
            "max": round(ordered[-1], 1), "n": len(ordered)}


class Typist:
    """One user: a language server of their own, a trace of their own."""

    def __init__(self, index: int, state: dict[str, Any], args: argparse.Namespace, source: str) -> None:
        self.index = index
        self.client = GhostClient()
        self.state, self.args = state, args
        self.trace = typing_bench.build_trace(source, args.regions, args.lines, args.seed * 1000 + index)
        self.row = typing_bench.Row(policy=f"typist {index}")
        self.error = ""

    async def start(self) -> None:
        await self.client.launch(env={"VLLM_API_KEY": self.state["key"]})
        await self.client.open_session(options(self.state, self.args))
        ready = await self.client.wait_status("ready", "error", timeout=120)
        if ready["state"] != "ready":
            self.error = str(ready.get("message"))
            return
        # The tokenizer loads on the first request; the typist's documents live under /typist/N.
        await typing_bench.warm_up(self.client, self.trace[0], Path(f"/typist/{self.index}"))
        await typing_bench.status(self.client, "resetTimings")
        self.client.stderr.clear()

    async def type(self) -> None:
        if self.error:
            return
        await asyncio.sleep(random.Random(self.index).uniform(0, 2))
        for number, segment in enumerate(self.trace):
            uri = self.client.open(segment.text, uri=f"file:///typist/{self.index}/{number}/region.py")
            await typing_bench.type_segment(self.client, uri, segment, self.row)
            self.client.text_document_did_close(types.DidCloseTextDocumentParams(
                text_document=types.TextDocumentIdentifier(uri=uri)))

    def timings(self) -> list[dict[str, float]]:
        """Per completion, the server's stage timings (its debug lines)."""
        return [{stage: float(ms) for stage, ms in TIMING.findall(line)}
                for line in self.client.stderr if "completion timings:" in line]


async def loop_lag(samples: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        asked = time.monotonic()
        await asyncio.sleep(0.05)
        samples.append((time.monotonic() - asked - 0.05) * 1000)


async def level(users: int, state: dict[str, Any], args: argparse.Namespace, source: str) -> dict[str, Any]:
    root = state["url"]
    typists = [Typist(index, state, args, source) for index in range(users)]
    await asyncio.gather(*(typist.start() for typist in typists))
    failed = [typist.error for typist in typists if typist.error]
    await typing_bench.reset_prefix_cache(root)
    before = await typing_bench.settled(root, ENDPOINT)
    lag: list[float] = []
    stop = asyncio.Event()
    watcher = asyncio.create_task(loop_lag(lag, stop))
    began = time.monotonic()
    try:
        await asyncio.gather(*(typist.type() for typist in typists))
    finally:
        stop.set()
        await watcher
    seconds = time.monotonic() - began
    after = await typing_bench.settled(root, ENDPOINT)
    timings = [timing for typist in typists for timing in typist.timings()]
    await asyncio.gather(*(typist.client.close_session() for typist in typists))
    delta = {name: after[name] - before[name] for name in after if name != "running"}
    latencies = [ms for typist in typists for ms in typist.row.latencies_ms]
    shown = "".join(typist.row.shown for typist in typists)
    result = {
        "users": users, "failed": failed, "seconds": round(seconds, 1),
        "keys": sum(typist.row.keys for typist in typists),
        "pause_latency_ms": percentiles(latencies),
        "shown": f"{shown.count('1')}/{len(shown)}",
        "server_ms": {stage: percentiles([t[stage] for t in timings if stage in t])
                      for stage in ("debounce", "warmup", "prompt", "first_token", "stream", "total", "overhead")},
        "vllm": {"requests": round(delta["started"]), "prompt_tokens": round(delta["prompt"]),
                 # computed, not served from the prefix cache: of the tokens looked up, aborted requests
                 # included (vLLM counts a request's prompt tokens only when it finishes: with many
                 # superseded requests, prompt minus hits went negative, -12,545 on 2026-12-06)
                 "prefilled_tokens": round(delta["queries"] - delta["hits"]),
                 "generated_tokens": round(delta["generated"]),
                 "prefix_hit_rate": round(delta["hits"] / delta["queries"], 3) if delta["queries"] else 0.0,
                 "tokens_per_s": round((delta["prompt"] + delta["generated"]) / seconds, 1)},
        "client_loop_lag_ms": percentiles(lag),
    }
    print(json.dumps(result), flush=True)
    return result


async def main_async(args: argparse.Namespace) -> int:
    state: dict[str, Any] = json.loads(args.state.read_text())
    os.environ.pop("VLLM_API_KEY", None)  # only the servers get it, by their environment
    source = args.file.read_text(encoding="utf-8")
    levels: list[dict[str, Any]] = []
    for users in args.users:
        levels.append(await level(users, state, args, source))
        if args.out:  # after each level: a call cut short keeps the levels it finished
            args.out.parent.mkdir(parents=True, exist_ok=True)
            settings = {k: str(v) for k, v in vars(args).items() if k not in ("state", "server_options")}
            args.out.write_text(json.dumps({"settings": settings, "levels": levels}, indent=2))
    print(table(levels))
    return 0


def table(levels: list[dict[str, Any]]) -> str:
    rows = []
    for row in levels:
        pause, first, over = row["pause_latency_ms"], row["server_ms"]["first_token"], row["server_ms"]["overhead"]
        vllm = row["vllm"]
        rows.append((row["users"], pause.get("n", 0), f"{pause.get('p50', 0)} / {pause.get('p95', 0)}",
                     f"{first.get('p50', 0)} / {first.get('p95', 0)}", f"{over.get('p50', 0)} / {over.get('p95', 0)}",
                     vllm["requests"], f"{vllm['prompt_tokens']} ({vllm['prefilled_tokens']})",
                     vllm["generated_tokens"], vllm["tokens_per_s"], f"{vllm['prefix_hit_rate']:.0%}",
                     row["client_loop_lag_ms"].get("p95", 0)))
    return markdown_table(("typists", "pauses", "pause p50/p95 ms", "server first token p50/p95 ms",
                           "server overhead p50/p95 ms", "requests", "prompt tok (prefilled)", "gen tok", "tok/s",
                           "prefix hit", "loop lag p95 ms"), rows)


def add_typist_arguments(parser: argparse.ArgumentParser) -> None:
    """What each typist types and its server's settings (bench/contention.py's typists too)."""
    parser.add_argument("--file", type=Path, default=Path(sysconfig.get_paths()["stdlib"]) / "_pydecimal.py",
                        help="the file the typists type")
    parser.add_argument("--regions", type=int, default=3, help="regions each typist types")
    parser.add_argument("--lines", type=int, default=3, help="lines per region")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=32, help="the typists' completion.maxTokens")
    parser.add_argument("--debounce-ms", type=int, default=-1, help="completion.debounceMs (-1: adaptive)")
    parser.add_argument("--context-tokens", type=int, default=2048, help="completion.contextTokens")
    parser.add_argument("--server-option", action="append", default=[], metavar="PATH=JSON",
                        help="a language-server setting for the typists, e.g. backend.priority=0")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state", type=Path, required=True, help="bench/gpu.py serve's state file")
    parser.add_argument("--users", type=int, nargs="+", default=[1, 4, 16, 64])
    add_typist_arguments(parser)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    args.server_options = dotted_options(args.server_option)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
