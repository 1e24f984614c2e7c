"""GPU side of scripts/bench-gpu: a model dir with Qwen3-Coder-30B-A3B's shape (dummy weights), and
direct figures from one vLLM: time to first token cold and cached for 2K/8K-token prompts, time per
output token, and N concurrent streams (1, 4, 16, 64). Results go to --out as JSON plus vllm.log.

    python3 scripts/gpu_bench.py model-dir .gpu/model --tokenizer ../shared/models/small-coder
    python3 scripts/gpu_bench.py run --model /tmp/g/model --out "$OUT" [--dtype bfloat16] [--quantization fp8]

Not yet run on a GPU (see the README's "On a GPU"); the pause-to-ghost replay through the language
server (bench-typing) against this vLLM is the next step, not part of this file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

# Qwen3-Coder-30B-A3B-Instruct's config.json (public), vocab cut to the carried tokenizer's.
QWEN3_CODER_30B_A3B: dict[str, Any] = {
    "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "hidden_size": 2048,
    "intermediate_size": 6144, "num_hidden_layers": 48, "num_attention_heads": 32, "num_key_value_heads": 4,
    "head_dim": 128, "num_experts": 128, "num_experts_per_tok": 8, "moe_intermediate_size": 768,
    "decoder_sparse_step": 1, "mlp_only_layers": [], "norm_topk_prob": True, "hidden_act": "silu",
    "max_position_embeddings": 262144, "rope_theta": 10000000.0, "rms_norm_eps": 1e-6, "attention_bias": False,
    "attention_dropout": 0.0, "tie_word_embeddings": False, "use_sliding_window": False, "sliding_window": None,
    "output_router_logits": False, "router_aux_loss_coef": 0.001, "torch_dtype": "bfloat16", "use_cache": True,
    "initializer_range": 0.02,
}
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_vllm(model: Path, out: Path, extra: list[str], key: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "VLLM_API_KEY": key, "VLLM_SERVER_DEV_MODE": "1"}  # key by environment, never argv
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
               "--served-model-name", "bench", "--host", "127.0.0.1", "--port", str(port),
               "--enable-prefix-caching", *extra]
    log = (out / "vllm.log").open("wb")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 480
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"vLLM exited with {process.returncode}; see {out / 'vllm.log'}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise SystemExit("vLLM not ready in 480 s")


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


async def bench(url: str, key: str, vocab: int, repeats: int, sizes: list[int], out: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    async with httpx.AsyncClient(timeout=120) as http:
        await stream(http, url, key, prompt_of(64, 0, vocab), 8)  # warm-up: first-call costs stay out
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
        tpot = [(await stream(http, url, key, prompt_of(2048, 50 + r, vocab), 128))["tpot_ms"] for r in range(repeats)]
        results["tpot_2048_128"] = summary(tpot)
        for users in (1, 4, 16, 64):
            # N users at once, each a 2K-token prompt whose head is cached and 32 new tokens out: a team's pause.
            rounds = []
            for repeat in range(repeats):
                prompts = [prompt_of(2048, 9000 + u, vocab)[:-64] + prompt_of(64, repeat * 100 + u, vocab)
                           for u in range(users)]
                got = await asyncio.gather(*(stream(http, url, key, p, 32) for p in prompts))
                rounds += [g["total_ms"] for g in got]
            results[f"concurrent_{users}_total_ms"] = summary(rounds)
        (out / "gpu_bench.json").write_text(json.dumps(results, indent=2))
    return results


def run(args: argparse.Namespace) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(16)
    gpu = ["--load-format", "dummy", "--attention-backend", "TRITON_ATTN"] if args.gpu else []
    quantization = ["--quantization", args.quantization] if args.quantization else []
    extra = ["--dtype", args.dtype, "--max-model-len", str(args.max_model_len), *gpu, *quantization, *args.vllm_arg]
    started = time.monotonic()
    process, url = start_vllm(args.model, args.out, extra, key)
    startup = time.monotonic() - started
    try:
        vocab = int(json.loads((args.model / "config.json").read_text())["vocab_size"])
        results = asyncio.run(bench(url, key, vocab, args.repeats, args.sizes, args.out))
    finally:
        os.killpg(process.pid, 15)
    results["startup_s"] = startup
    for name, value in results.items():
        print(name, json.dumps(value))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    make = sub.add_parser("model-dir")
    make.add_argument("target", type=Path)
    make.add_argument("--tokenizer", type=Path, required=True)
    go = sub.add_parser("run")
    go.add_argument("--model", type=Path, required=True)
    go.add_argument("--out", type=Path, required=True)
    go.add_argument("--dtype", default="bfloat16")
    go.add_argument("--quantization", default="")
    go.add_argument("--repeats", type=int, default=5)
    go.add_argument("--max-model-len", type=int, default=16384)
    go.add_argument("--sizes", type=int, nargs="+", default=[2048, 8192], help="prompt tokens for the TTFT rows")
    go.add_argument("--vllm-arg", action="append", default=[], help="more vLLM arguments, one per flag")
    go.add_argument("--gpu", action="store_true", help="dummy weights and TRITON_ATTN (the H200 run)")
    args = parser.parse_args()
    if args.what == "model-dir":
        model_dir(args.target, args.tokenizer)
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
