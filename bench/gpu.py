"""GPU side of scripts/bench-gpu (issue 15): a model dir with Qwen3-Coder-30B-A3B's shape (dummy
weights), one vLLM started in its own process session, and direct figures from it: time to first
token cold and cached for 2K/8K-token prompts, time per output token, N concurrent streams.
bench/gpu_typists.py then replays typing through the language server against the same vLLM.

    python3 -m bench.gpu model-dir .gpu/model --tokenizer ../shared/models/small-coder-v2
    python3 -m bench.gpu serve --model /tmp/g/model --state /tmp/g/vllm.json --log $OUT/vllm.log --gpu
    python3 -m bench.gpu direct --state /tmp/g/vllm.json --out $OUT/direct.json
    python3 -m bench.gpu stop --state /tmp/g/vllm.json

The state file (url, process group, API key; mode 0600) lets a later device call use the vLLM an
earlier one started: the device machine keeps a process that started its own session while warm.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench.report import markdown_table
from langserver.backend.launch import persisted_key

# Qwen3-Coder-30B-A3B-Instruct's config.json (as published), vocab cut to the carried tokenizer's: its
# 151,936-row lm_head would read ~0.55 GB more per decoded token (about 0.1 ms at the H200's bandwidth).
# intermediate_size is unused (every layer is MoE: decoder_sparse_step 1, no mlp_only_layers).
QWEN3_CODER_30B_A3B: dict[str, Any] = {
    "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "hidden_size": 2048,
    "intermediate_size": 5472, "num_hidden_layers": 48, "num_attention_heads": 32, "num_key_value_heads": 4,
    "head_dim": 128, "num_experts": 128, "num_experts_per_tok": 8, "moe_intermediate_size": 768,
    "decoder_sparse_step": 1, "mlp_only_layers": [], "norm_topk_prob": True, "hidden_act": "silu",
    "max_position_embeddings": 262144, "max_window_layers": 28, "rope_theta": 10000000, "rope_scaling": None,
    "rms_norm_eps": 1e-6, "attention_bias": False, "attention_dropout": 0.0, "qkv_bias": False,
    "use_qk_norm": True, "shared_expert_intermediate_size": 0, "tie_word_embeddings": False,
    "use_sliding_window": False, "sliding_window": None, "output_router_logits": False,
    "router_aux_loss_coef": 0.0, "torch_dtype": "bfloat16", "use_cache": True, "initializer_range": 0.02,
}
SERVED_NAME = "bench"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json")


def model_dir(target: Path, tokenizer: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    small = json.loads((tokenizer / "config.json").read_text())
    config = {**QWEN3_CODER_30B_A3B, "vocab_size": small["vocab_size"], "eos_token_id": small["eos_token_id"],
              "bos_token_id": small.get("bos_token_id"), "pad_token_id": small.get("pad_token_id")}
    (target / "config.json").write_text(json.dumps(config, indent=2))
    for name in TOKENIZER_FILES:
        if (tokenizer / name).is_file():
            shutil.copy(tokenizer / name, target / name)


KEY_DIR = Path(tempfile.gettempdir()) / "vllm-ghost-bench"


def machine_key(directory: Path = KEY_DIR) -> str:
    """One API key for every vLLM the GPU benchmarks start on a machine (a 0600 file in a 0700 directory
    that no benchmark returns).
    vLLM 0.26 hashes VLLM_API_KEY into its torch.compile cache key: with a new key per start, every
    start of the 30B-A3B shape compiled again for 70-85 s (H100, 2026-12-06), a quarter of a device call."""
    return persisted_key(directory / "vllm-key")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_vllm(model: Path, log_path: Path, extra: list[str], key: str, env: dict[str, str],
               timeout_s: float, on_spawn: Callable[[subprocess.Popen[bytes], str], None] | None = None,
               ) -> tuple[subprocess.Popen[bytes], str]:
    """vLLM in its own process session: on the device machine it outlives the call that starts it
    (the next call finds it by the state file, which `on_spawn` can write before vLLM is ready: a call
    that runs out while vLLM compiles leaves it usable by the next), and its group can be stopped at once."""
    port = free_port()
    env = {**os.environ, **env, "VLLM_API_KEY": key, "VLLM_SERVER_DEV_MODE": "1"}  # key by environment, never argv
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
               "--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port", str(port),
               "--enable-prefix-caching", *extra]
    print("vllm", " ".join(command[1:]), flush=True)
    log = log_path.open("wb")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    if on_spawn is not None:
        on_spawn(process, url)
    if not healthy(url, lambda: process.poll() is None, timeout_s):
        if process.poll() is not None:
            raise SystemExit(f"vLLM exited with {process.returncode}; see {log_path}")
        os.killpg(process.pid, 15)
        raise SystemExit(f"vLLM not ready in {timeout_s:.0f} s; see {log_path}")
    return process, url


def healthy(url: str, alive: Callable[[], bool], timeout_s: float) -> bool:
    """Whether vLLM at `url` answers /health within `timeout_s`; False at once when it is no longer `alive`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and alive():
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return True
        time.sleep(1)
    return False


async def stream(http: httpx.AsyncClient, url: str, key: str, prompt: list[int], max_tokens: int) -> dict[str, float]:
    """One streamed completion from token ids: time to first token, then per token after it."""
    body = {"model": "bench", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "ignore_eos": True, "stream_options": {"include_usage": True}}
    asked = time.perf_counter()
    first = 0.0
    chunks = 0
    async with http.stream("POST", url + "/v1/completions", json=body,
                           headers={"Authorization": f"Bearer {key}"}) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]" and '"text"' in line:
                chunks += 1
                first = first or time.perf_counter() - asked
    total = time.perf_counter() - asked
    return {"ttft_ms": first * 1000, "total_ms": total * 1000,
            "tpot_ms": (total - first) * 1000 / max(1, max_tokens - 1), "chunks": chunks}


async def reset(http: httpx.AsyncClient, url: str, key: str) -> None:
    await http.post(url + "/reset_prefix_cache", headers={"Authorization": f"Bearer {key}"})


def prompt_of(tokens: int, seed: int, vocab: int) -> list[int]:
    # Distinct per seed so a "cold" request never hits another request's cached blocks.
    return [(seed * 7919 + i * 104729) % (vocab - 300) + 100 for i in range(tokens)]


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50": statistics.median(ordered), "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
            "min": ordered[0], "max": ordered[-1], "n": len(ordered)}


async def bench(url: str, key: str, vocab: int, repeats: int, sizes: list[int], users: list[int],
                tpot_tokens: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    async with httpx.AsyncClient(timeout=300) as http:
        for warm in range(3):  # first-call costs (compiled shapes, allocator growth) stay out of the figures
            await stream(http, url, key, prompt_of(max(sizes), 90 + warm, vocab), 8)
        for size in sizes:
            cold, cached = [], []
            for repeat in range(repeats):
                await reset(http, url, key)
                prompt = prompt_of(size, 1000 * size + repeat, vocab)
                cold.append((await stream(http, url, key, prompt, 1))["ttft_ms"])
                again = prompt[:-8] + prompt_of(8, 7 + repeat, vocab)  # same head, new last tokens
                cached.append((await stream(http, url, key, again, 1))["ttft_ms"])
            results[f"ttft_cold_{size}"] = summary(cold)
            results[f"ttft_cached_{size}"] = summary(cached)
            print(f"ttft {size}: cold {results[f'ttft_cold_{size}']} cached {results[f'ttft_cached_{size}']}",
                  flush=True)
        tpot = [(await stream(http, url, key, prompt_of(2048, 50 + r, vocab), tpot_tokens))["tpot_ms"]
                for r in range(repeats)]
        results[f"tpot_2048_{tpot_tokens}"] = summary(tpot)
        print(f"tpot: {results[f'tpot_2048_{tpot_tokens}']}", flush=True)
        for count in users:
            # N requests at once, each a 2K-token prompt whose head is cached and 32 new tokens out: a team's pause.
            first, total = [], []
            heads = [prompt_of(2048, 9000 + u, vocab)[:-64] for u in range(count)]
            await asyncio.gather(*(stream(http, url, key, head, 1) for head in heads))  # cache the heads
            for repeat in range(repeats):
                prompts = [head + prompt_of(64, repeat * 100 + u, vocab) for u, head in enumerate(heads)]
                got = await asyncio.gather(*(stream(http, url, key, p, 32) for p in prompts))
                first += [g["ttft_ms"] for g in got]
                total += [g["total_ms"] for g in got]
            results[f"concurrent_{count}_ttft_ms"] = summary(first)
            results[f"concurrent_{count}_total_ms"] = summary(total)
            print(f"concurrent {count}: ttft {summary(first)} total {summary(total)}", flush=True)
    return results


# --- commands -------------------------------------------------------------------------------
def serve(args: argparse.Namespace) -> int:
    key = machine_key()
    gpu = ["--load-format", "dummy", "--attention-backend", args.attention_backend] if args.gpu else []
    quantization = ["--quantization", args.quantization] if args.quantization else []
    extra = ["--dtype", args.dtype, "--max-model-len", str(args.max_model_len), *gpu, *quantization,
             *args.vllm_arg]
    env = dict(item.split("=", 1) for item in args.env)
    args.log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    def write_state(process: subprocess.Popen[bytes], url: str, startup_s: float = -1.0) -> None:
        args.state.parent.mkdir(parents=True, exist_ok=True)
        args.state.touch(mode=0o600)
        args.state.write_text(json.dumps({"url": url, "pgid": process.pid, "key": key, "model": str(args.model),
                                          "args": extra, "startup_s": round(startup_s, 1)}))

    process, url = start_vllm(args.model, args.log, extra, key, env, args.timeout, on_spawn=write_state)
    startup = time.monotonic() - started
    write_state(process, url, startup)
    print(f"vLLM ready at {url} after {startup:.1f} s", flush=True)
    return 0


def wait_ready(args: argparse.Namespace) -> int:
    """A vLLM that `serve` started in an earlier call, until it answers /health (or is gone)."""
    state = load_state(args.state)

    def alive() -> bool:
        try:
            os.killpg(int(state["pgid"]), 0)
        except ProcessLookupError:
            return False
        return True

    if not healthy(state["url"], alive, args.timeout):
        raise SystemExit(f"the vLLM of {args.state} " + ("is not ready" if alive() else "has exited"))
    print(f"vLLM at {state['url']} is ready", flush=True)
    return 0


def load_state(path: Path) -> dict[str, Any]:
    state: dict[str, Any] = json.loads(path.read_text())
    return state


def direct(args: argparse.Namespace) -> int:
    state = load_state(args.state)
    vocab = int(json.loads((Path(state["model"]) / "config.json").read_text())["vocab_size"])
    results = asyncio.run(bench(state["url"], state["key"], vocab, args.repeats, args.sizes, args.users,
                                args.tpot_tokens))
    results["vllm_args"] = state["args"]
    results["startup_s"] = state["startup_s"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(table(results))
    return 0


async def first_requests(url: str, key: str, vocab: int, sizes: list[int]) -> list[dict[str, float]]:
    """The first requests a fresh vLLM serves, one after the other, each prompt new (nothing cached):
    which prompt sizes still pay a compilation after the one before (the warm-up question: on the H100 the
    30B-A3B shape's first real completion took 1,138 ms after a 1-token warm-up, 82 ms after)."""
    times: list[dict[str, float]] = []
    async with httpx.AsyncClient(timeout=300) as http:
        for index, size in enumerate(sizes):
            got = await stream(http, url, key, prompt_of(size, 500 + index, vocab), 2)
            times.append({"tokens": size, "ttft_ms": round(got["ttft_ms"], 1)})
            print(f"first requests: {size} tokens -> {got['ttft_ms']:.1f} ms", flush=True)
    return times


def first(args: argparse.Namespace) -> int:
    state = load_state(args.state)
    vocab = int(json.loads((Path(state["model"]) / "config.json").read_text())["vocab_size"])
    times = asyncio.run(first_requests(state["url"], state["key"], vocab, args.sizes))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"vllm_args": state["args"], "first_requests": times}, indent=2))
    return 0


def table(results: dict[str, Any]) -> str:
    """The figures as a markdown table: p50 (min-max) over the repeats, in ms."""
    return markdown_table(("figure", "p50 ms (min-max, n)"), [
        (name, f"{value['p50']:.1f} ({value['min']:.1f}-{value['max']:.1f}, {value['n']})")
        for name, value in results.items() if isinstance(value, dict) and "p50" in value])


def stop(args: argparse.Namespace) -> int:
    state = load_state(args.state)
    try:
        os.killpg(int(state["pgid"]), 15)
    except ProcessLookupError:
        pass
    args.state.unlink()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    make = sub.add_parser("model-dir")
    make.add_argument("target", type=Path)
    make.add_argument("--tokenizer", type=Path, required=True)
    up = sub.add_parser("serve", help="start vLLM in its own session and write the state file")
    up.add_argument("--model", type=Path, required=True)
    up.add_argument("--state", type=Path, required=True)
    up.add_argument("--log", type=Path, required=True, help="vLLM's output")
    up.add_argument("--dtype", default="bfloat16")
    up.add_argument("--quantization", default="")
    up.add_argument("--max-model-len", type=int, default=16384)
    up.add_argument("--attention-backend", default="TRITON_ATTN")
    up.add_argument("--gpu", action="store_true", help="dummy weights and --attention-backend (the H200 run)")
    up.add_argument("--vllm-arg", action="append", default=[], help="more vLLM arguments, one per flag")
    up.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="vLLM's environment")
    up.add_argument("--timeout", type=float, default=480.0)
    go = sub.add_parser("direct", help="TTFT, TPOT and concurrent streams against the served vLLM")
    go.add_argument("--state", type=Path, required=True)
    go.add_argument("--out", type=Path, required=True, help="JSON results")
    go.add_argument("--repeats", type=int, default=5)
    go.add_argument("--sizes", type=int, nargs="+", default=[2048, 8192], help="prompt tokens for the TTFT rows")
    go.add_argument("--users", type=int, nargs="+", default=[1, 4, 16, 64], help="concurrent streams")
    go.add_argument("--tpot-tokens", type=int, default=128)
    ready = sub.add_parser("wait", help="wait until the served vLLM (an earlier call's) answers")
    ready.add_argument("--state", type=Path, required=True)
    ready.add_argument("--timeout", type=float, default=300.0)
    fresh = sub.add_parser("first", help="the first requests of a fresh vLLM: which sizes still compile")
    fresh.add_argument("--state", type=Path, required=True)
    fresh.add_argument("--out", type=Path, required=True, help="JSON results")
    fresh.add_argument("--sizes", type=int, nargs="+", default=[1, 700, 2000, 333, 1111, 4000, 2001],
                       help="prompt tokens, in order")
    end = sub.add_parser("stop", help="stop the served vLLM")
    end.add_argument("--state", type=Path, required=True)
    args = parser.parse_args()
    if args.what == "model-dir":
        model_dir(args.target, args.tokenizer)
        return 0
    return {"serve": serve, "direct": direct, "first": first, "wait": wait_ready, "stop": stop}[args.what](args)


if __name__ == "__main__":
    sys.exit(main())
