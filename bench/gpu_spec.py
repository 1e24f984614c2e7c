"""Draft-free speculative decoding against none (issue 25): the same completions, one at a time as a
typist asks for them, from a fresh vLLM per method, on a real model (small-coder-v2's completions
stop and repeat like a model's, which is what n-gram and suffix drafts feed on).

Prompts are HumanEval-infilling tasks (single-line and multi-line) built by the server's own prompt
stage (chat-fim by default). Per method: latency per completion (p50, p95, min-max), the generated
tokens, and whether the greedy output is identical to the run without speculation, task by task.
Methods whose proposer cannot load here are reported as skipped with vLLM's reason.

    python3 -m bench.gpu_spec --model /tmp/g/small-coder-v2 --data /tmp/g/data --out $OUT/spec.json \\
        --methods none ngram ngram_gpu suffix --vllm-arg=--attention-backend=TRITON_ATTN
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench.gpu import SERVED_NAME, machine_key, start_vllm
from bench.report import markdown_table
from langserver.completion.stages.context import Context
from langserver.completion.stages.prompt import Sampling, build_prompt

ROOT = Path(__file__).resolve().parent.parent

SPLITS = {"single-line": ("HumanEval-SingleLineInfilling.jsonl.gz", 64),
          "multi-line": ("HumanEval-MultiLineInfilling.jsonl.gz", 128)}
DRAFTS = {"ngram": {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 4, "prompt_lookup_min": 2},
          "ngram_gpu": {"method": "ngram_gpu", "num_speculative_tokens": 4, "prompt_lookup_max": 4,
                        "prompt_lookup_min": 2},
          "suffix": {"method": "suffix", "num_speculative_tokens": 8}}


def tasks(data: Path, per_split: int) -> list[dict[str, Any]]:
    chosen: list[dict[str, Any]] = []
    for split, (name, max_tokens) in SPLITS.items():
        with gzip.open(data / name, "rt") as lines:
            records = [json.loads(line) for line in lines]
        step = max(1, len(records) // per_split)  # spread over the problems, not the first few
        for record in records[::step][:per_split]:
            chosen.append({"split": split, "id": record["task_id"], "prefix": record["prompt"],
                           "suffix": record["suffix"], "max_tokens": max_tokens})
    return chosen


def body(task: dict[str, Any], prompt_format: str) -> tuple[str, dict[str, Any]]:
    request = build_prompt(Context(prefix=task["prefix"], suffix=task["suffix"], language="python"),
                           prompt_format, Sampling(max_tokens=task["max_tokens"]))
    path = "/v1/chat/completions" if request.endpoint == "chat" else "/v1/completions"
    return path, {**request.body, "model": SERVED_NAME, "stream": False}


def answer(http: httpx.Client, url: str, task: dict[str, Any], prompt_format: str) -> dict[str, Any]:
    path, payload = body(task, prompt_format)
    asked = time.perf_counter()
    reply = http.post(url + path, json=payload)
    took = 1000 * (time.perf_counter() - asked)
    reply.raise_for_status()
    data = reply.json()
    choice = data["choices"][0]
    text = choice["message"]["content"] if "message" in choice else choice["text"]
    return {"id": task["id"], "split": task["split"], "ms": round(took, 2), "text": text,
            "tokens": data["usage"]["completion_tokens"]}


def spread(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50": round(statistics.median(ordered), 2), "p95": round(ordered[math.ceil(0.95 * len(ordered)) - 1], 2),
            "min": round(ordered[0], 2), "max": round(ordered[-1], 2), "n": len(ordered)}


def run_method(method: str, args: argparse.Namespace, chosen: list[dict[str, Any]]) -> dict[str, Any]:
    extra = ["--dtype", args.dtype, "--max-model-len", str(args.max_model_len), *args.vllm_arg]
    if method != "none":
        extra += ["--speculative-config", json.dumps(DRAFTS[method])]
    key = machine_key()
    log = args.logs / f"vllm-spec-{method}.log"
    started = time.monotonic()
    try:
        process, url = start_vllm(Path(args.model), log, extra, key, {}, args.timeout)
    except SystemExit as failed:
        tail = log.read_text(errors="replace").splitlines()[-15:] if log.exists() else []
        return {"skipped": str(failed), "log_tail": tail}
    startup = time.monotonic() - started
    try:
        with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=120) as http:
            for task in chosen[:3]:  # warm-up: first requests pay for lazy set-up
                answer(http, url, task, args.prompt_format)
            rounds = [[answer(http, url, task, args.prompt_format) for task in chosen] for _ in range(args.repeats)]
    finally:
        os.killpg(process.pid, 15)
        process.wait(60)
    results: dict[str, Any] = {"startup_s": round(startup, 1), "answers": rounds[0]}
    for split in SPLITS:
        times = [a["ms"] for done in rounds for a in done if a["split"] == split]
        tokens = [a["tokens"] for a in rounds[0] if a["split"] == split]
        results[split] = {"latency_ms": spread(times), "mean_tokens": round(statistics.mean(tokens), 1),
                          "ms_per_token": round(sum(times) / max(1, args.repeats * sum(tokens)), 3)}
    return results


def compare(results: dict[str, Any]) -> None:
    base = {a["id"]: a["text"] for a in results["none"]["answers"]}
    for method, result in results.items():
        if method == "none" or "answers" not in result:
            continue
        same = [a["id"] for a in result["answers"] if base.get(a["id"]) == a["text"]]
        result["identical_to_none"] = f"{len(same)}/{len(result['answers'])}"
        result["differs"] = [a["id"] for a in result["answers"] if base.get(a["id"]) != a["text"]][:20]


def table(results: dict[str, Any]) -> str:
    rows: list[tuple[object, ...]] = []
    for method, result in results.items():
        if "skipped" in result:
            rows.append((method, f"skipped: {result['skipped'][:80]}"))
            continue
        for split in SPLITS:
            row = result[split]
            lat = row["latency_ms"]
            rows.append((method, split, lat["p50"], lat["p95"], f"{lat['min']}-{lat['max']}", row["ms_per_token"],
                         result.get("identical_to_none", "baseline")))
    return markdown_table(("method", "split", "p50 ms", "p95 ms", "min-max ms", "ms/token", "identical"), rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "humaneval-infilling")
    parser.add_argument("--methods", nargs="+", default=["none", "ngram", "ngram_gpu", "suffix"])
    parser.add_argument("--per-split", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prompt-format", default="chat-fim")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--vllm-arg", action="append", default=[], help="more vLLM arguments (--vllm-arg=--x=y)")
    parser.add_argument("--timeout", type=float, default=420)
    parser.add_argument("--logs", type=Path, default=Path(os.environ.get("OUT", "/tmp")))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    chosen = tasks(args.data, args.per_split)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a timed-out call keeps the methods it finished
    results: dict[str, Any] = {}
    for method in args.methods:
        print(f"method {method}", flush=True)
        results[method] = run_method(method, args, chosen)
        if "none" in results and "answers" in results["none"]:
            compare(results)
        # After each method: on the device machine (H100, 2026-12-06) a call that ran out of time lost all three.
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
        print(table({method: results[method]}), flush=True)
    print(table(results), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
