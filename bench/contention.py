"""Contention benchmark (issue 22): ghost text while an agent works on the same vLLM.

N typists type through the REAL language server (bench/gpu_typists.py's Typist: one `python -m
langserver` over stdio each, external mode, a seeded typing trace from bench/typing_replay.py) while an
agent-like load runs on the same vLLM through the OpenAI API the way Continue sends it: streaming
/v1/chat/completions with long prompts and long answers, K at a time, no `priority` field. Per
configuration (a vLLM launch: scheduling policy, chunked-prefill size, ...) it measures, side by side:

  typists      the typists alone                 -> pause-to-ghost p50/p95 (the baseline)
  contended    the typists while K agents run    -> pause-to-ghost p50/p95, the agents' output tok/s, TTFT
  agent        the K agents alone, for the same length of time as `contended` -> the agents' own figures

Pause-to-ghost is the client's time from the key that starts a pause to its answer (as in
bench/typing_replay.py). The agent's output tok/s counts the tokens streamed inside the measured window
(from the typists' start to their end; in `agent`, a window of the same length after the same lead).
Each agent request gets a fresh, unique prompt (no prefix-cache hits between requests: every request
is a full prefill, the worst case) and is forced to its answer length with vLLM's `min_tokens` (dummy
weights would otherwise stop at a random end token); Continue sends neither, which changes nothing
about scheduling. The typists' servers find out themselves whether to send `priority` (external mode
probes it); the status detail they report is recorded with the run.

Commands:

  run    one configuration, against a vLLM already running (bench/gpu.py serve's state file
         {url, key, model, args}); the label (policy, chunk size) comes from the state's vLLM args.
         python3 -m bench.contention run --state /tmp/g/vllm.json --out $OUT/contention-fcfs.json
  sweep  several configurations side by side in one run: for each --config NAME=VLLM-FLAGS it starts
         vLLM (bench/gpu.py's start_vllm: own session, 127.0.0.1, key by environment), runs the
         phases, stops it. --vllm-arg gives flags every configuration shares.
         python3 -m bench.contention sweep --model /tmp/g/model --gpu --out $OUT/contention.json \\
           --vllm-arg=--max-model-len=131072 \\
           --config 'fcfs-8k=--scheduling-policy fcfs --max-num-batched-tokens 8192' \\
           --config 'priority-8k=--scheduling-policy priority --max-num-batched-tokens 8192'
  table  the markdown table of one or more result files (runs made in separate device calls).

Every result file carries the model, machine, date and command line; the table goes to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import random
import shlex
import socket
import subprocess
import sys
import sysconfig
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench import gpu as gpu_bench
from bench import gpu_typists
from bench import typing_replay as typing_bench
from bench.options import dotted_options
from bench.report import gpu_reading, markdown_table

CHAT = "/v1/chat/completions"
# Continue's agent puts its instructions first: the same for every request (vLLM caches it).
SYSTEM = ("You are an expert software engineer working in the user's repository. Use the tools when they "
          "help, explain your changes, and answer with complete code.")


# --- the agent load --------------------------------------------------------------------------
@dataclass
class AgentRequest:
    prompt_tokens: int  # asked
    answer_tokens: int  # asked
    sent: float = 0.0
    first: float = 0.0  # monotonic time of the first streamed token (0: none yet)
    token_times: list[float] = field(default_factory=list)  # one per streamed chunk with text
    usage_prompt: int = 0
    usage_completion: int = 0
    finished: bool = False
    error: str = ""


class Corpus:
    """Source text to fill agent prompts: the standard library's .py files, cut at random offsets,
    sized with vLLM's own tokenizer (/tokenize) so a prompt has about the tokens asked."""

    def __init__(self, text: str, chars_per_token: float) -> None:
        self.text = text
        self.chars_per_token = chars_per_token

    @classmethod
    async def load(cls, http: httpx.AsyncClient, url: str, key: str, model: str, need_tokens: int) -> Corpus:
        parts: list[str] = []
        size = 0
        stdlib = Path(sysconfig.get_paths()["stdlib"])
        for path in sorted(stdlib.glob("*.py")):
            text = path.read_text(encoding="utf-8", errors="replace")
            parts.append(f"# file: {path.name}\n{text}")
            size += len(text)
            if size > need_tokens * 6 + 200_000:
                break
        corpus = "\n".join(parts)
        sample = corpus[:60_000]
        response = await http.post(url + "/tokenize", json={"model": model, "prompt": sample},
                                   headers={"Authorization": f"Bearer {key}"})
        response.raise_for_status()
        tokens = int(response.json()["count"])
        return cls(corpus, len(sample) / max(1, tokens))

    def messages(self, tokens: int, rng: random.Random) -> list[dict[str, str]]:
        chars = int(tokens * self.chars_per_token)
        start = rng.randrange(0, max(1, len(self.text) - chars))
        code = self.text[start:start + chars]
        # A unique first line: no request shares cached blocks with another (a full prefill each).
        return [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"Session {uuid.uuid4()}.\n```python\n{code}\n```\n"
                                            "Review this code and rewrite it with full type hints."}]


class AgentLoad:
    """K workers, each sending one streaming chat request after another until stopped."""

    def __init__(self, state: dict[str, Any], args: argparse.Namespace, corpus: Corpus, model: str,
                 max_model_len: int) -> None:
        self.url, self.key = state["url"], state["key"]
        self.args, self.corpus, self.model = args, corpus, model
        self.max_model_len = max_model_len
        self.requests: list[AgentRequest] = []
        self.rng = random.Random(args.seed)

    def _draw(self) -> AgentRequest:
        low, high = self.args.agent_prompt
        answer_low, answer_high = self.args.agent_answer
        answer = self.rng.randint(answer_low, answer_high)
        prompt = min(self.rng.randint(low, high), self.max_model_len - answer - 64)
        return AgentRequest(prompt_tokens=prompt, answer_tokens=answer)

    async def worker(self, http: httpx.AsyncClient) -> None:
        while True:
            request = self._draw()
            self.requests.append(request)
            await self._send(http, request)

    async def _send(self, http: httpx.AsyncClient, request: AgentRequest) -> None:
        body = {"model": self.model, "messages": self.corpus.messages(request.prompt_tokens, self.rng),
                "stream": True, "max_tokens": request.answer_tokens, "temperature": 0.0,
                "stream_options": {"include_usage": True}}
        if self.args.force_length:
            body["min_tokens"] = request.answer_tokens
        request.sent = time.monotonic()
        try:
            async with http.stream("POST", self.url + CHAT, json=body,
                                   headers={"Authorization": f"Bearer {self.key}"}) as response:
                if response.status_code != 200:
                    request.error = f"{response.status_code}: {(await response.aread())[:300]!r}"
                    return
                async for line in response.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    if chunk.get("usage"):
                        request.usage_prompt = int(chunk["usage"].get("prompt_tokens") or 0)
                        request.usage_completion = int(chunk["usage"].get("completion_tokens") or 0)
                    for choice in chunk.get("choices") or []:
                        delta = choice.get("delta") or {}
                        if delta.get("content") or delta.get("reasoning_content") or delta.get("tool_calls"):
                            now = time.monotonic()
                            request.first = request.first or now
                            request.token_times.append(now)
            request.finished = True
        except httpx.HTTPError as err:
            request.error = f"{type(err).__name__}: {err}"

    def figures(self, start: float, end: float) -> dict[str, Any]:
        """The agents' figures inside [start, end]: output tokens/s, and the TTFT of the requests whose
        first token came in it (those sent in the lead too: with 30K-100K-token prompts the lead's requests
        are the ones whose prefill the window holds), and how many sent before its end had none by then."""
        seconds = max(1e-9, end - start)
        tokens = sum(1 for request in self.requests for t in request.token_times if start <= t <= end)
        ttft = [(r.first - r.sent) * 1000 for r in self.requests if r.first and start <= r.first <= end]
        waiting = sum(1 for r in self.requests if r.sent <= end and not (r.first and r.first <= end))
        finished = [r for r in self.requests if r.finished and r.usage_completion]
        decode = [(len(r.token_times) - 1) / (r.token_times[-1] - r.first) for r in finished
                  if len(r.token_times) > 1 and r.token_times[-1] > r.first]
        return {
            "output_tokens_per_s": round(tokens / seconds, 1), "tokens_in_window": tokens,
            "window_s": round(seconds, 1), "requests_sent": len(self.requests),
            "requests_finished": len(finished), "ttft_ms": gpu_typists.percentiles(ttft),
            "requests_without_first_token": waiting,
            "decode_tokens_per_s_per_request": gpu_typists.percentiles(decode),
            "prompt_tokens": gpu_typists.percentiles([float(r.usage_prompt) for r in finished]),
            "completion_tokens": gpu_typists.percentiles([float(r.usage_completion) for r in finished]),
            # Chunks with text against the tokens vLLM counted: 1.0 when a chunk is a token.
            "chunks_per_token": round(sum(len(r.token_times) for r in finished)
                                      / max(1, sum(r.usage_completion for r in finished)), 3),
            "errors": sorted({r.error for r in self.requests if r.error})[:5],
        }


async def run_agents(load: AgentLoad, count: int) -> tuple[list[asyncio.Task[None]], httpx.AsyncClient]:
    http = httpx.AsyncClient(timeout=httpx.Timeout(3600, connect=10), limits=httpx.Limits(max_connections=64))
    return [asyncio.create_task(load.worker(http)) for _ in range(count)], http


async def stop_agents(tasks: list[asyncio.Task[None]], http: httpx.AsyncClient) -> None:
    """Closing the streams makes vLLM abort what is left of those requests."""
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await http.aclose()


# --- the phases --------------------------------------------------------------------------------
async def typists_phase(users: int, agents: int, state: dict[str, Any], args: argparse.Namespace,
                        source: str, load: AgentLoad | None) -> dict[str, Any]:
    root = state["url"]
    typists = [gpu_typists.Typist(index, state, args, source) for index in range(users)]
    await asyncio.gather(*(typist.start() for typist in typists))
    failed = [typist.error for typist in typists if typist.error]
    await typing_bench.reset_prefix_cache(root)
    before = typing_bench.metrics(root, gpu_typists.ENDPOINT)
    tasks: list[asyncio.Task[None]] = []
    http: httpx.AsyncClient | None = None
    if load is not None and agents:
        tasks, http = await run_agents(load, agents)
        await asyncio.sleep(args.agent_lead_s)  # the agents' first prefills are under way when typing starts
    lag: list[float] = []
    stop = asyncio.Event()
    watcher = asyncio.create_task(gpu_typists.loop_lag(lag, stop))
    began = time.monotonic()
    try:
        await asyncio.gather(*(typist.type() for typist in typists))
    finally:
        ended = time.monotonic()
        stop.set()
        await watcher
        if http is not None:
            await stop_agents(tasks, http)
    after = typing_bench.metrics(root, gpu_typists.ENDPOINT)
    detail = [typist.client.statuses[-1].get("detail", {}) for typist in typists if typist.client.statuses]
    await asyncio.gather(*(typist.client.close_session() for typist in typists))
    latencies = [ms for typist in typists for ms in typist.row.latencies_ms]
    shown = "".join(typist.row.shown for typist in typists)
    timings = [timing for typist in typists for timing in typist.timings()]
    result: dict[str, Any] = {
        "phase": "contended" if tasks else "typists", "users": users, "agents": agents if tasks else 0,
        "failed": failed, "seconds": round(ended - began, 1),
        "pause_latency_ms": gpu_typists.percentiles(latencies),
        "shown": f"{shown.count('1')}/{len(shown)}",
        "server_first_token_ms": gpu_typists.percentiles([t["first_token"] for t in timings if "first_token" in t]),
        # /v1/chat/completions requests less the agents' own
        "typist_requests": round(after["started"] - before["started"]) - (len(load.requests) if load else 0),
        "server_status_detail": {k: v for k, v in (detail[0] if detail else {}).items()
                                 if k in ("priority", "cacheSalt", "schedulingPolicy", "mode")},
        "client_loop_lag_ms": gpu_typists.percentiles(lag),
    }
    if tasks and load is not None:
        result["agent"] = load.figures(began, ended)
    print(json.dumps(result), flush=True)
    return result


async def agent_phase(agents: int, seconds: float, args: argparse.Namespace, load: AgentLoad,
                      root: str) -> dict[str, Any]:
    await typing_bench.reset_prefix_cache(root)
    tasks, http = await run_agents(load, agents)
    await asyncio.sleep(args.agent_lead_s)
    began = time.monotonic()
    try:
        await asyncio.sleep(seconds)
    finally:
        ended = time.monotonic()
        await stop_agents(tasks, http)
    result = {"phase": "agent", "users": 0, "agents": agents, "seconds": round(ended - began, 1),
              "agent": load.figures(began, ended)}
    print(json.dumps(result), flush=True)
    return result


def scheduling_label(vllm_args: list[str]) -> dict[str, str]:
    """The configuration as the vLLM command line set it (vLLM's defaults where it did not)."""
    flags: dict[str, str] = {}
    words = [part for arg in vllm_args for part in arg.split("=", 1)] if vllm_args else []
    for index, word in enumerate(words[:-1]):
        if word.startswith("--"):
            flags[word] = words[index + 1]
    return {"policy": flags.get("--scheduling-policy", "fcfs"),
            "chunk": flags.get("--max-num-batched-tokens", "default"),
            "max_num_seqs": flags.get("--max-num-seqs", "default")}


async def wait_idle(root: str, timeout: float = 60.0) -> None:
    """Aborted agent requests leave the engine within a step or two; start the next phase after."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if typing_bench.metrics(root, CHAT)["running"] == 0:
            return
        await asyncio.sleep(0.5)


async def one_configuration(state: dict[str, Any], args: argparse.Namespace, label: str) -> dict[str, Any]:
    root = state["url"]
    model = state.get("name", gpu_bench.SERVED_NAME)
    headers = {"Authorization": f"Bearer {state['key']}"}
    async with httpx.AsyncClient(timeout=60) as http:
        served = (await http.get(root + "/v1/models", headers=headers)).json()["data"]
        max_model_len = int(next(m for m in served if m["id"] == model).get("max_model_len") or 4096)
        corpus = await Corpus.load(http, root, state["key"], model, args.agent_prompt[1])
    if args.agent_prompt[1] + args.agent_answer[1] + 64 > max_model_len:
        print(f"note: prompts capped at {max_model_len} tokens (vLLM's --max-model-len) less the answer",
              flush=True)
    source = args.file.read_text(encoding="utf-8")
    config = {"label": label, **scheduling_label(list(state.get("args", []))), "vllm_args": state.get("args", []),
              "phases": []}
    phases: list[dict[str, Any]] = config["phases"]
    for users in args.users:
        phases.append(await typists_phase(users, 0, state, args, source, None))
        for agents in args.agents:
            await wait_idle(root)
            load = AgentLoad(state, args, corpus, model, max_model_len)
            contended = await typists_phase(users, agents, state, args, source, load)
            phases.append(contended)
            await wait_idle(root)
            alone = AgentLoad(state, args, corpus, model, max_model_len)
            phase = await agent_phase(agents, contended["seconds"], args, alone, root)
            phase["users_beside"] = users  # the window matches the contended phase with this many typists
            phases.append(phase)
            await wait_idle(root)
    return config


# --- commands ----------------------------------------------------------------------------------
def provenance(args: argparse.Namespace, model: str) -> dict[str, Any]:
    gpu = gpu_reading("name,memory.total")
    return {"date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{socket.gethostname()} {platform.machine()} {os.cpu_count()} CPUs"
                       + (f", GPU {gpu}" if gpu else ", no GPU"),
            "model": model, "command": shlex.join(sys.argv),
            "settings": {k: str(v) for k, v in vars(args).items() if k not in ("state", "server_options")}}


def write(out: Path | None, result: dict[str, Any]) -> None:
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))


async def run_command(args: argparse.Namespace) -> int:
    state: dict[str, Any] = json.loads(args.state.read_text())
    os.environ.pop("VLLM_API_KEY", None)  # only the servers get it, by their environment
    config = await one_configuration(state, args, args.label or "")
    label = scheduling_label(list(state.get("args", [])))
    config["label"] = args.label or f"{label['policy']}-{label['chunk']}"
    result = {**provenance(args, state["model"]), "configs": [config]}
    write(args.out, result)
    print(table([result]))
    return 0


async def sweep_command(args: argparse.Namespace) -> int:
    os.environ.pop("VLLM_API_KEY", None)
    result = {**provenance(args, str(args.model)), "configs": []}
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    env = dict(item.split("=", 1) for item in args.env)
    for spec in args.config:
        name, _, flags = spec.partition("=")
        extra = [*args.vllm_arg, *shlex.split(flags)]
        if args.gpu:
            extra = ["--load-format", "dummy", "--attention-backend", "TRITON_ATTN", *extra]
        key = gpu_bench.machine_key()
        log = work / f"vllm-{name}.log"
        started = time.monotonic()
        process, url = gpu_bench.start_vllm(args.model, log, extra, key, env, args.timeout)
        print(f"{name}: vLLM ready after {time.monotonic() - started:.0f} s: {shlex.join(extra)}", flush=True)
        state = {"url": url, "key": key, "model": str(args.model), "args": extra}
        try:
            result["configs"].append(await one_configuration(state, args, name))
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 15)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(60)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 9)
        write(args.out, result)  # after each configuration: a call cut short keeps what it finished
    print(table([result]))
    return 0


def table_command(args: argparse.Namespace) -> int:
    print(table([json.loads(path.read_text()) for path in args.results]))
    return 0


def _pair(values: dict[str, Any]) -> str:
    return f"{values.get('p50', '-')} / {values.get('p95', '-')}" if values.get("n") else "-"


def table(results: list[dict[str, Any]]) -> str:
    """One row per phase, configurations side by side; what the run was comes first."""
    lines: list[str] = []
    for result in results:
        lines.append(f"model {result['model']}; {result['machine']}; {result['date']}")
        lines.append(f"command: `{result['command']}`")
    rows = []
    for result in results:
        for config in result["configs"]:
            for phase in config["phases"]:
                agent = phase.get("agent", {})
                rows.append((
                    config["label"], config["policy"], config["chunk"], phase["phase"],
                    phase.get("users") or phase.get("users_beside", 0), phase["agents"],
                    _pair(phase.get("pause_latency_ms", {})), phase.get("shown", "-"),
                    agent.get("output_tokens_per_s", "-"), _pair(agent.get("ttft_ms", {})),
                    agent.get("decode_tokens_per_s_per_request", {}).get("p50", "-"),
                    f"{agent.get('requests_sent', '-')}/{agent.get('requests_finished', '-')}/"
                    f"{agent.get('requests_without_first_token', '-')}"))
    lines += ["", markdown_table(("config", "policy", "chunk", "phase", "typists", "agents",
                                  "pause-to-ghost p50 / p95 ms", "shown", "agent out tok/s", "agent TTFT p50 / p95 ms",
                                  "agent decode tok/s/req p50", "agent req sent/done/no first token"), rows)]
    return "\n".join(lines)


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, help="JSON results (the table goes to stdout)")
    parser.add_argument("--users", type=int, nargs="+", default=[1, 4], help="typists, one level each")
    parser.add_argument("--agents", type=int, nargs="+", default=[2],
                        help="agent requests at a time (1-4), one contended phase each")
    parser.add_argument("--agent-prompt", type=int, nargs=2, default=[30000, 100000], metavar=("MIN", "MAX"),
                        help="agent prompt tokens, drawn per request (capped by vLLM's max-model-len)")
    parser.add_argument("--agent-answer", type=int, nargs=2, default=[500, 2000], metavar=("MIN", "MAX"),
                        help="agent answer tokens, drawn per request")
    parser.add_argument("--no-force-length", dest="force_length", action="store_false",
                        help="do not send min_tokens (answers may end early at an end token)")
    parser.add_argument("--agent-lead-s", type=float, default=3.0,
                        help="seconds the agents run before typing starts (and before the agent window)")
    gpu_typists.add_typist_arguments(parser)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    run = sub.add_parser("run", help="one configuration against a running vLLM (a state file)")
    run.add_argument("--state", type=Path, required=True, help="bench/gpu.py serve's state file")
    run.add_argument("--label", default="", help="the row's name (default: POLICY-CHUNK from the vLLM args)")
    add_load_arguments(run)
    sweep = sub.add_parser("sweep", help="start vLLM per --config, run, stop it: configurations side by side")
    sweep.add_argument("--model", type=Path, required=True)
    sweep.add_argument("--config", action="append", required=True, metavar="NAME=VLLM-FLAGS",
                       help="one configuration: a name and its vLLM flags (repeat)")
    sweep.add_argument("--vllm-arg", action="append", default=[], help="a vLLM flag every configuration gets")
    sweep.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="vLLM's environment")
    sweep.add_argument("--gpu", action="store_true", help="dummy weights and TRITON_ATTN (the H100/H200 run)")
    sweep.add_argument("--work", type=Path, default=Path("/tmp/bench-contention"), help="vLLM logs")
    sweep.add_argument("--timeout", type=float, default=600.0, help="seconds vLLM may take to start")
    add_load_arguments(sweep)
    show = sub.add_parser("table", help="the markdown table of result files")
    show.add_argument("results", type=Path, nargs="+")
    args = parser.parse_args()
    if args.what == "table":
        return table_command(args)
    args.server_options = dotted_options(args.server_option)
    return asyncio.run(run_command(args) if args.what == "run" else sweep_command(args))


if __name__ == "__main__":
    sys.exit(main())
