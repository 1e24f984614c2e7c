#!/usr/bin/env python3
"""Keystroke-replay benchmark of the typing-speed engine (debounce, cancellation,
typing-through cache, streaming early stop) through a real LSP session.

Usage: scripts/bench-typing [--model DIR] [--file PY] [--regions 6] [--lines 3] [--max-tokens 32]
                                   [--seed 1] [--policies none,50,150,350,adaptive,adaptive-cold,adaptive-ungated,
                                              none+xf,adaptive+xf]
                                   [--block-size N] [--repeat N] [--json FILE]

The language server (`python -m langserver` over stdio) starts and manages vLLM
(the CPU build) with the tiny test model (--model, default $VLLM_GHOST_TEST_MODEL).
A seeded trace is built from a real source file (default: the standard
library's _pydecimal.py, 6,400 lines): regions of a few lines are cut out and
"typed" back character by character, as VS Code sends it: didChange per key,
an inlineCompletion request per key, `$/cancelRequest` for the previous
request when it is still pending. Enter is one key that also inserts the next
line's indentation (editor auto-indent). Cadence: 60-180 ms between keys, a
pause of 0.5-2 s after each Enter and 2 s at the end of a region.

Policies: no debounce, fixed 50/150/350 ms, adaptive (the default), and
adaptive-cold (adaptive with completion.warmPrefixCache off), all but the last with
the prefix warm-up on; these run with completion.crossFile.enabled false (the
current file alone). adaptive-ungated is adaptive with the confidence gate off
(completion.minConfidence 0; the others have the server's default). On request,
none+xf and adaptive+xf: none and adaptive with cross-file context, the trace file's
standard-library neighbours (numbers.py, which it imports, fractions.py,
statistics.py) open in the editor and on disk in the workspace folder.
vLLM's --max-model-len is the model's trained context (training.json's seq, else
config.json's max_position_embeddings, at most 4096). Every policy replays the same trace on a fresh document,
with vLLM's prefix cache reset first (VLLM_SERVER_DEV_MODE=1 exposes
/reset_prefix_cache) and the server's timing window reset (`vllmGhost.status`
with "resetTimings").
--repeat N replays it N times per policy, the policies taking turns (one run of
each, then the next round), so that a machine that gets slower or faster over
the minutes of a benchmark does so for every policy alike. The counts are the
run with the median generated tokens; the hit rate, latencies and shown are
pooled over the runs; overhead is the median of the runs' p50 and the largest of
their p99; generated tokens and latency p50 also show their range over the
runs, "(low-high)". On 2 shared cores the same run moves by 10-30% from one
invocation to the next (no debounce's p50 was 88 ms in one and 158 in another
on one machine the same afternoon): compare policies within one invocation.

Columns: keys; requests from the editor; backend requests started (vLLM's
http_requests_total on the endpoint), warm-ups among them (prefix-cache warm-ups of
one token, completion.warmPrefixCache), completed
(their answer reached the editor: editor requests answered minus typing-through
hits), aborted (started - warm-ups - completed: superseded or cancelled while vLLM
worked on them); generated tokens;
prefix-cache hit rate of prompt tokens (vLLM caches whole blocks: 128 tokens on
the CPU by default, 16 on a GPU; --block-size 32 is the nearest the CPU kernel
takes); typing-through cache hits; latency from
a pause-starting key (an Enter, a region end) to its answer, p50/p95, then p50
after Enter and p50 at the mid-line pauses (the region ends) apart, and how
many answers showed ghost text, and how many of those were what the user typed next
(indentation aside; a region's end pause has nothing typed next); server overhead
(time not spent waiting on the user or vLLM) p50/p99.

The tiny model has memorised a handful of examples only: on real code its
suggestions are noise that rarely ends by itself, so typing-through hits are
rare here and every answer would run to max_tokens; --max-tokens (default 32,
about one line of code) stands in for a real model that stops at the line or
block end. The request counts, tokens, cache rates and latencies are what this
measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import sys
import sysconfig
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from lsprotocol import types

from bench.lsp import GhostClient, position_of, start_session
from bench.models import model_len
from bench.options import cpu_vllm, server_options
from bench.report import markdown_table

ROOT = Path(__file__).resolve().parent.parent
# name -> (completion.debounceMs, completion.warmPrefixCache, completion.crossFile.enabled)
POLICIES = {"none": (0, True, False), "50": (50, True, False), "150": (150, True, False), "350": (350, True, False),
            "adaptive": (-1, True, False), "adaptive-cold": (-1, False, False), "adaptive-ungated": (-1, True, False),
            "none+xf": (0, True, True), "adaptive+xf": (-1, True, True)}
# completion.minConfidence where a policy sets it (else the server's default)
GATES = {"adaptive-ungated": 0.0}
# The default run: the single-file policies (the +xf rows on request, --policies).
DEFAULT_POLICIES = "none,50,150,350,adaptive,adaptive-cold,adaptive-ungated"
LABELS = {"none": "none", "adaptive": "adaptive (default)", "adaptive-cold": "adaptive, no warm-up",
          "adaptive-ungated": "adaptive, gate off", "none+xf": "none, cross-file",
          "adaptive+xf": "adaptive, cross-file"}
# Standard-library neighbours of the trace file, open in the editor for the +xf rows; _pydecimal
# imports numbers, so the imports source finds it on disk too.
NEIGHBOURS = ("numbers.py", "fractions.py", "statistics.py")
KEY_GAP_S = (0.06, 0.18)
LINE_PAUSE_S = (0.5, 2.0)
END_PAUSE_S = 2.0


@dataclass(frozen=True)
class Key:
    text: str  # one character, or Enter: "\n" plus the next line's indentation
    gap_s: float  # wait before the key
    pause_after: bool  # a pause follows: the latency sample


@dataclass(frozen=True)
class Segment:
    text: str  # the document with the region cut out
    offset: int  # where typing starts (code points)
    keys: list[Key]


@dataclass
class Row:
    policy: str
    keys: int = 0
    editor_requests: int = 0
    started: int = 0
    warmups: int = 0
    completed: int = 0
    aborted: int = 0
    answered: int = 0  # editor requests answered (not cancelled)
    ran_to_end: int = 0  # vLLM's request_success_total: stop token or max_tokens, not stopped early
    generated_tokens: int = 0
    prefix_hit_rate: float = 0.0
    cache_hits: int = 0
    latency_p50_ms: float = 0.0
    latency_p95_ms: float = 0.0
    shown: str = ""
    matched: int = 0  # shown answers whose text is what the user typed next
    overhead_p50_ms: float = 0.0
    overhead_p99_ms: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    enter_p50_ms: float = 0.0
    midline_p50_ms: float = 0.0
    enter_ms: list[float] = field(default_factory=list)  # latencies_ms split by the pause's kind
    midline_ms: list[float] = field(default_factory=list)
    run_tokens: list[int] = field(default_factory=list)  # generated tokens, latency p50 of each run (--repeat)
    run_latency_p50_ms: list[float] = field(default_factory=list)


# --- the trace ---------------------------------------------------------------------------------
def build_trace(source: str, regions: int, lines_per_region: int, seed: int) -> list[Segment]:
    """Seeded: the same arguments give the same trace."""
    rng = random.Random(seed)
    lines = source.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    segments: list[Segment] = []
    used: set[int] = set()
    while len(segments) < regions:
        first = rng.randrange(20, len(lines) - lines_per_region - 20)
        block = lines[first:first + lines_per_region]
        if first in used or any(not line.strip() or len(line) > 100 for line in block):
            continue
        used.add(first)
        indent = len(block[0]) - len(block[0].lstrip(" \t"))
        begin = starts[first] + indent
        end = starts[first + lines_per_region] - 1  # keep the region's last line break
        segments.append(Segment(source[:begin] + source[end:], begin, keys_for(source[begin:end], rng)))
    return segments


def keys_for(region: str, rng: random.Random) -> list[Key]:
    keys: list[Key] = []
    index = 0
    gap = rng.uniform(*KEY_GAP_S)
    while index < len(region):
        if region[index] == "\n":
            stop = index + 1
            while stop < len(region) and region[stop] in " \t":
                stop += 1
            keys.append(Key(region[index:stop], gap, True))
            index, gap = stop, rng.uniform(*LINE_PAUSE_S)
            continue
        keys.append(Key(region[index], gap, False))
        index, gap = index + 1, rng.uniform(*KEY_GAP_S)
    if keys:
        keys[-1] = Key(keys[-1].text, keys[-1].gap_s, True)
    return keys


# --- vLLM's metrics --------------------------------------------------------------------------
def metrics(root: str, endpoint: str) -> dict[str, float]:
    text = httpx.get(root + "/metrics", timeout=10).text
    names = {
        "vllm:generation_tokens_total": "generated",
        "vllm:prompt_tokens_total": "prompt",
        "vllm:request_success_total": "completed",
        "vllm:prefix_cache_queries_total": "queries",
        "vllm:prefix_cache_hits_total": "hits",
        "vllm:num_requests_running": "running",
    }
    out = dict.fromkeys([*names.values(), "started"], 0.0)
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        value = float(line.rsplit(" ", 1)[1])
        if name in names:
            out[names[name]] += value
        elif name == "http_requests_total" and f'handler="{endpoint}"' in line:
            out["started"] += value
    return out


async def settled(root: str, endpoint: str, timeout: float = 30.0) -> dict[str, float]:
    """Metrics once nothing runs and the counters stop moving."""
    deadline = time.monotonic() + timeout
    last = metrics(root, endpoint)
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        now = metrics(root, endpoint)
        if now == last and now["running"] == 0:
            return now
        last = now
    return last


async def reset_prefix_cache(root: str) -> bool:
    async with httpx.AsyncClient(timeout=10) as http:
        for _ in range(20):
            try:
                response = await http.post(root + "/reset_prefix_cache")
            except httpx.HTTPError:
                return False
            if response.status_code == 404:
                return False
            if response.status_code == 200 and response.json().get("success", True) is not False:
                return True
            await asyncio.sleep(0.5)
    return False


# --- one policy ------------------------------------------------------------------------------
def options(model: Path, debounce_ms: int, max_tokens: int, block_size: int = 0,
            prefix_warm_up: bool = True, cross_file: bool = False,
            min_confidence: float | None = None) -> dict[str, Any]:
    vllm = cpu_vllm(model_len(model), kv_cache_gib=1, startup_timeout_s=600,
                    args=["--block-size", str(block_size)] if block_size else [],
                    env={"VLLM_SERVER_DEV_MODE": "1"})  # its /reset_prefix_cache between policies
    gate: dict[str, Any] = {} if min_confidence is None else {"minConfidence": min_confidence}
    return server_options("tiny", model=model, vllm=vllm, debounceMs=debounce_ms, timeoutMs=30000,
                          maxTokens=max_tokens, warmPrefixCache=prefix_warm_up,
                          crossFile={"enabled": cross_file}, **gate)


async def status(client: GhostClient, *arguments: str) -> dict[str, Any]:
    result = await client.workspace_execute_command_async(
        types.ExecuteCommandParams(command="vllmGhost.status", arguments=list(arguments)))
    return dict(result or {})


async def type_segment(client: GhostClient, uri: str, segment: Segment, row: Row) -> None:
    text, cursor = segment.text, segment.offset
    pending: list[asyncio.Future[Any]] = []
    previous: tuple[str, asyncio.Future[Any]] | None = None
    for number, key in enumerate(segment.keys):
        await asyncio.sleep(key.gap_s)
        start = position_of(text, cursor)
        client.edit(uri, start, start, key.text)
        text, cursor = text[:cursor] + key.text + text[cursor:], cursor + len(key.text)
        if previous is not None and not previous[1].done():
            client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id=previous[0]))
        msg_id = f"{uri}#{number}"
        params = client.completion_params(uri, *position_of(text, cursor))
        sent = time.monotonic()
        future = client.protocol.send_request_async(types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id=msg_id)
        upcoming = "".join(later.text for later in segment.keys[number + 1:]) if key.pause_after else ""
        future.add_done_callback(lambda done, sent=sent, key=key, upcoming=upcoming:
                                 _answered(done, sent, key, row, upcoming))
        pending.append(future)
        previous = (msg_id, future)
        row.keys += 1
        row.editor_requests += 1
    await asyncio.sleep(END_PAUSE_S)
    await asyncio.gather(*pending, return_exceptions=True)


def _answered(future: asyncio.Future[Any], sent: float, key: Key, row: Row, upcoming: str) -> None:
    elapsed_ms = (time.monotonic() - sent) * 1000
    if future.cancelled() or future.exception() is not None:
        return
    row.answered += 1
    if not key.pause_after:
        return
    result = future.result()
    items = result.items if isinstance(result, types.InlineCompletionList) else (result or [])
    row.latencies_ms.append(round(elapsed_ms, 1))
    (row.enter_ms if key.text.startswith("\n") else row.midline_ms).append(round(elapsed_ms, 1))
    row.shown += "1" if items else "0"
    row.matched += bool(items) and typed_next(str(items[0].insert_text), upcoming)


def typed_next(ghost: str, upcoming: str) -> bool:
    """The ghost text is what the user typed next (indentation aside: Enter auto-indents)."""
    shown = [line.strip() for line in ghost.rstrip().split("\n")]
    typed = [line.strip() for line in upcoming.split("\n")[:len(shown)]]
    return bool(shown[0]) and len(typed) == len(shown) and shown[:-1] == typed[:-1] \
        and typed[-1].startswith(shown[-1])


async def run_once(client: GhostClient, args: argparse.Namespace, name: str, repeat: int, trace: list[Segment],
                   root: str, endpoint: str, row: Row, workspace: Path) -> Run:
    """The trace once, on fresh documents after a prefix-cache and timing-window reset; what
    the editor saw goes into `row`, vLLM's counters into the Run."""
    # New settings also give the server a new completion cache: a repeat must not be
    # answered from the run before it.
    debounce_ms, warm, cross_file = POLICIES[name]
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings=options(args.model, debounce_ms, args.max_tokens, args.block_size, warm, cross_file,
                         GATES.get(name))))
    await asyncio.sleep(0.5)
    await status(client, "resetTimings")
    if not await reset_prefix_cache(root):
        print("  (could not reset vLLM's prefix cache: rates include earlier policies)", file=sys.stderr)
    before = await settled(root, endpoint)
    warmups_before = int(((await status(client)).get("detail") or {}).get("warmups", 0))
    answered, latencies = row.answered, len(row.latencies_ms)
    for index, segment in enumerate(trace):
        uri = (workspace / name / str(repeat) / str(index) / "region.py").as_uri()
        client.text_document_did_open(types.DidOpenTextDocumentParams(text_document=types.TextDocumentItem(
            uri=uri, language_id="python", version=1, text=segment.text)))
        client._docs[uri] = 1
        await type_segment(client, uri, segment, row)
        client.text_document_did_close(types.DidCloseTextDocumentParams(
            text_document=types.TextDocumentIdentifier(uri=uri)))
    after = await settled(root, endpoint)
    detail = (await status(client)).get("detail") or {}
    cache_hits = int(detail.get("cache", {}).get("hits", 0))  # this run's (a new cache per run)
    overhead = detail.get("timings", {}).get("overhead", {})
    this_run = row.latencies_ms[latencies:]
    return Run(after, before, row.answered - answered, cache_hits, int(detail.get("warmups", 0)) - warmups_before,
               statistics.median(this_run) if this_run else 0.0,
               float(overhead.get("p50", 0.0)), float(overhead.get("p99", 0.0)))


@dataclass
class Run:
    """One replay of the trace: vLLM's counters around it and what the editor saw."""
    after: dict[str, float]
    before: dict[str, float]
    answered: int
    cache_hits: int
    warmups: int
    latency_p50_ms: float
    overhead_p50_ms: float
    overhead_p99_ms: float

    def delta(self, name: str) -> float:
        return self.after[name] - self.before[name]


def fill_row(row: Row, runs: list[Run]) -> None:
    row.keys //= len(runs)
    row.editor_requests //= len(runs)
    row.run_tokens = [round(run.delta("generated")) for run in runs]
    row.run_latency_p50_ms = [run.latency_p50_ms for run in runs]
    median = sorted(runs, key=lambda run: run.delta("generated"))[len(runs) // 2]
    row.started = round(median.delta("started"))
    row.cache_hits = median.cache_hits
    row.warmups = median.warmups
    row.completed = min(row.started - row.warmups, median.answered - median.cache_hits)
    row.aborted = max(0, row.started - row.warmups - row.completed)
    row.ran_to_end = round(median.delta("completed"))
    row.generated_tokens = round(median.delta("generated"))
    queries = sum(run.delta("queries") for run in runs)
    row.prefix_hit_rate = sum(run.delta("hits") for run in runs) / queries if queries else 0.0
    if row.latencies_ms:
        ordered = sorted(row.latencies_ms)
        row.latency_p50_ms = statistics.median(ordered)
        row.latency_p95_ms = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
        row.enter_p50_ms = statistics.median(row.enter_ms) if row.enter_ms else 0.0
        row.midline_p50_ms = statistics.median(row.midline_ms) if row.midline_ms else 0.0
    row.overhead_p50_ms = statistics.median(run.overhead_p50_ms for run in runs)
    row.overhead_p99_ms = max(run.overhead_p99_ms for run in runs)


async def warm_up(client: GhostClient, segment: Segment, workspace: Path) -> None:
    """One completion before measuring: the tokenizer loads lazily on the first request."""
    uri = (workspace / "warm-up.py").as_uri()
    client.text_document_did_open(types.DidOpenTextDocumentParams(text_document=types.TextDocumentItem(
        uri=uri, language_id="python", version=1, text=segment.text)))
    await client.complete(uri, *position_of(segment.text, segment.offset))
    client.text_document_did_close(types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=uri)))


# --- output ------------------------------------------------------------------------------
HEADER = ("policy", "keys", "editor req", "started", "warm-ups", "aborted", "completed", "gen tokens", "prefix hit",
          "cache hits", "latency p50/p95 ms", "after Enter / mid-line p50 ms", "shown", "typed next",
          "overhead p50/p99 ms")


def spread(values: list[int] | list[float]) -> str:
    """ " (low-high)" over the runs of a --repeat, nothing for one run."""
    return f" ({min(values):.0f}-{max(values):.0f})" if len(values) > 1 else ""


def table(rows: list[Row]) -> str:
    return markdown_table(HEADER, [(
        row.policy, row.keys, row.editor_requests, row.started, row.warmups, row.aborted, row.completed,
        str(row.generated_tokens) + spread(row.run_tokens), f"{row.prefix_hit_rate:.0%}", row.cache_hits,
        f"{row.latency_p50_ms:.0f}{spread(row.run_latency_p50_ms)} / {row.latency_p95_ms:.0f}",
        f"{row.enter_p50_ms:.0f} / {row.midline_p50_ms:.0f}", f"{row.shown.count('1')}/{len(row.shown)}",
        row.matched, f"{row.overhead_p50_ms:.2f} / {row.overhead_p99_ms:.2f}") for row in rows])


async def main_async(args: argparse.Namespace) -> int:
    source = args.file.read_text(encoding="utf-8")
    trace = build_trace(source, args.regions, args.lines, args.seed)
    keys = sum(len(segment.keys) for segment in trace)
    print(f"trace: {args.file.name} ({source.count(chr(10))} lines), {len(trace)} regions, {keys} keys, "
          f"seed {args.seed}, KV block {args.block_size or 'vLLM default'}", file=sys.stderr)
    names = [name.strip() for name in args.policies.split(",") if name.strip()]
    unknown = [name for name in names if name not in POLICIES]
    if unknown:
        print(f"unknown policies {unknown}; choose from {list(POLICIES)}", file=sys.stderr)
        return 2
    # Every document lies in a workspace folder of its own; for the +xf rows the trace file's
    # standard-library neighbours are open documents there too (and on disk).
    workspace = Path(tempfile.mkdtemp(prefix="bench-typing-"))
    for neighbour in NEIGHBOURS:
        shutil.copyfile(args.file.parent / neighbour, workspace / neighbour)
    started = time.monotonic()
    client = await start_session(options(args.model, POLICIES[names[0]][0], args.max_tokens, args.block_size),
                                 timeout=900, root=workspace, require_ready=True)
    print(f"vLLM ready after {time.monotonic() - started:.0f} s", file=sys.stderr)
    for neighbour in NEIGHBOURS:
        client.open((workspace / neighbour).read_text(encoding="utf-8"), uri=(workspace / neighbour).as_uri())
    root = client.vllm_root()
    await warm_up(client, trace[0], workspace)
    endpoint = "/v1/chat/completions"
    rows = {name: Row(policy=LABELS.get(name, f"fixed {name} ms")) for name in names}
    runs: dict[str, list[Run]] = {name: [] for name in names}
    try:
        for repeat in range(args.repeat):
            for name in names:
                run = await run_once(client, args, name, repeat, trace, root, endpoint, rows[name], workspace)
                runs[name].append(run)
                print(f"run {repeat + 1}/{args.repeat} {name}: {run.delta('generated'):.0f} tokens, "
                      f"latency p50 {run.latency_p50_ms:.0f} ms", file=sys.stderr)
    finally:
        await client.close_session()
        shutil.rmtree(workspace, ignore_errors=True)
    for name in names:
        fill_row(rows[name], runs[name])
    print(table(list(rows.values())))
    if args.json:
        args.json.write_text(json.dumps([asdict(row) for row in rows.values()], indent=2))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path(os.environ.get("VLLM_GHOST_TEST_MODEL", "")))
    parser.add_argument("--file", type=Path, default=Path(sysconfig.get_paths()["stdlib"]) / "_pydecimal.py")
    parser.add_argument("--regions", type=int, default=6)
    parser.add_argument("--lines", type=int, default=3, help="lines typed per region")
    parser.add_argument("--max-tokens", type=int, default=32, help="completion.maxTokens (see above)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--policies", default=DEFAULT_POLICIES,
                        help=f"from {', '.join(POLICIES)}; +xf: with cross-file context (neighbours open)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="replay the trace this many times per policy (the spread between runs)")
    parser.add_argument("--block-size", type=int, default=0, help="vLLM's KV cache block (default: vLLM's own)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not (args.model / "config.json").is_file():
        parser.error("--model (or VLLM_GHOST_TEST_MODEL) must be a built test model: run scripts/make-test-model")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
