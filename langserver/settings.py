"""Typed settings: one schema for initializationOptions, didChangeConfiguration and the CLI.

The wire format is the nested camelCase object VS Code sends
(`{"backend": {...}, "model": {...}, "vllm": {...}, "completion": {...}, "log": {...}}`).
A bad value never stops the server: it falls back to the default and the
key is reported, so the user can fix exactly that setting.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

BackendMode = Literal["managed", "external"]
PromptFormat = Literal["chat-fim", "raw-fim"]
Multiline = Literal["auto", "always", "never"]
LogLevel = Literal["error", "warning", "info", "debug"]
# The models `model.preset` picks from (langserver/backend/fit.py has their sizes), largest first.
ModelPreset = Literal["auto", "qwen3-coder-30b-fp8", "qwen2.5-coder-14b", "qwen2.5-coder-7b", "qwen2.5-coder-3b",
                      "qwen2.5-coder-1.5b"]
SchedulingPolicy = Literal["fcfs", "priority"]
AutoStart = Literal["startup", "firstCompletion"]


@dataclass(frozen=True)
class BackendSettings:
    mode: BackendMode = "managed"
    url: str = "http://127.0.0.1:30000/v1"
    api_key: str = ""
    # Name of an environment variable holding the external key (teams keep keys out of settings).
    api_key_env: str = ""
    ca_bundle: str = ""
    verify_tls: bool = True
    # vLLM's per-request `priority` on every completion request (lower runs first; Continue's chat
    # and agent send none, which is 0): ghost text goes ahead of their long prefills and answers on
    # a vLLM scheduling by priority. 0 = send none. Managed mode sends it when vllm.schedulingPolicy
    # is "priority"; external mode when a one-token probe with it is accepted (backend/priority.py).
    priority: int = -10
    # External mode: a `cache_salt` private to this user on every request, so that on a shared
    # vLLM no one else's request can hit (and time) the prefix-cache blocks of this user's code.
    # Derived from a random value kept in the user's state directory (backend/salt.py), never the key.
    cache_salt: bool = True


@dataclass(frozen=True)
class ModelSettings:
    # Empty: the preset picks the model and its prompt format; a path or hub id always wins.
    path: str = ""
    name: str = "qwen3-coder-flash"
    prompt_format: PromptFormat = "chat-fim"
    preset: ModelPreset = "auto"  # "auto": the largest preset that fits the GPU's free memory


# The seed's command line, modernised: `--max-seq-len-to-capture` is gone from vLLM
# and VLLM_ATTENTION_BACKEND is ignored; tool calling stays so Continue's agent works.
DEFAULT_VLLM_ARGS: tuple[str, ...] = (
    "--enable-auto-tool-choice",
    "--tool-call-parser",
    "qwen3_coder",
)


# Resolved at launch (backend/vllm.py resolve_command): on PATH, beside this Python, or its module.
DEFAULT_COMMAND: tuple[str, ...] = ("vllm", "serve")


@dataclass(frozen=True)
class VllmSettings:
    command: tuple[str, ...] = DEFAULT_COMMAND
    args: tuple[str, ...] = DEFAULT_VLLM_ARGS
    env: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int = 0
    startup_timeout_s: float = 1800.0
    # Sharing (one vLLM for every window with these settings): how long it outlives the last
    # window (a window reload finds it still loaded), or never stop it (keep_alive).
    idle_grace_s: float = 10.0
    keep_alive: bool = False
    # Supervision: restarts in a row (each launch failed to start or died within
    # restart_window_s of becoming ready) before giving up; 0 = never restart.
    max_restarts: int = 5
    restart_window_s: float = 60.0
    health_interval_s: float = 5.0  # how often /health is checked while serving
    # `--scheduling-policy`: "priority" lets the server's requests (backend.priority) run before
    # Continue's; "fcfs" is vLLM's own default. A --scheduling-policy in vllm.args wins.
    scheduling_policy: SchedulingPolicy = "priority"
    # `--max-num-batched-tokens` (the chunked-prefill chunk: how long one engine step may take
    # with a long prompt in it); 0 = vLLM's default. A --max-num-batched-tokens in vllm.args wins.
    max_num_batched_tokens: int = 0
    # `--long-prefill-token-threshold`: the most of one engine step a single request's prefill may
    # take, so a completion runs in the same step as an agent's long prompt instead of after it
    # (H100, 30B-A3B FP8, two agents reading 30-100K tokens: ghost text 14 s p50 against 27 s
    # uncapped); 0 = no cap (vLLM's default). A --long-prefill-token-threshold in vllm.args wins.
    long_prefill_token_threshold: int = 2048
    # The GPU is the user's: load the model when the server starts, or only at the first
    # completion; and let go of it after this many minutes without a completion (0 = never).
    auto_start: AutoStart = "startup"
    idle_unload_minutes: float = 0.0


# vllm.* knobs that steer the supervisor and the keeper, not the vLLM process: a change
# applies to the running vLLM instead of starting a new one (minutes of model loading).
SUPERVISION_FIELDS = ("idle_grace_s", "keep_alive", "max_restarts", "restart_window_s", "health_interval_s",
                      "auto_start", "idle_unload_minutes")


def process_settings(vllm: VllmSettings) -> VllmSettings:
    """`vllm` with the supervision knobs at their defaults: what the process is made of."""
    return dataclasses.replace(vllm, **{name: getattr(VllmSettings(), name) for name in SUPERVISION_FIELDS})


CROSS_FILE_SOURCES = ("open", "edits", "imports")


@dataclass(frozen=True)
class CrossFileSettings:
    """Code from other files of the workspace ahead of the current one (langserver/workspace)."""
    enabled: bool = True
    # Qwen's own repository-level harness gives cross-file code 2,048 tokens; it never takes the
    # current file's share: what the model's context leaves after it is the most it gets.
    max_tokens: int = 2048
    sources: tuple[str, ...] = CROSS_FILE_SOURCES


@dataclass(frozen=True)
class CompletionSettings:
    enabled: bool = True
    max_tokens: int = 128
    temperature: float = 0.0
    multiline: Multiline = "auto"
    debounce_ms: int = -1  # -1 = adaptive to the typing rate
    # While a debounce waits in a place vLLM has not prefilled, prefill its head (warmup.py).
    warm_prefix_cache: bool = True
    context_tokens: int = 2048
    context_chars: int = 0  # 0 = derive from context_tokens
    timeout_ms: int = 10000
    # Below this confidence (completion/confidence.py, 0-1) nothing is shown; 0 = show everything.
    min_confidence: float = 0.005
    # A multi-line answer ends before the first statement after its first line (or the first line
    # inside that line's own brackets or string) that the model gave a lower probability than this
    # (multiline.keep_sure_lines; inside code at least goes_on.GOES_ON_CONFIDENCE); 0 = keep the block.
    # Chosen on HumanEval single-line after the indentation, both formats, small-coder-v2 on an H100:
    # the highest share of right lines among 0.005-0.5 (docs/benchmarks.md, issue 24).
    line_confidence: float = 0.03
    disabled_languages: tuple[str, ...] = ()
    # An explicit request (Alt+\ in VS Code) gets up to this many different completions to cycle
    # through, from one request; 1 = only the likeliest.
    alternatives: int = 3
    cross_file: CrossFileSettings = field(default_factory=CrossFileSettings)


@dataclass(frozen=True)
class LogSettings:
    # What reaches the server's stderr (VS Code's output channel); "debug" adds one line of
    # stage timings per completion.
    level: LogLevel = "warning"


@dataclass(frozen=True)
class Settings:
    backend: BackendSettings = field(default_factory=BackendSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    vllm: VllmSettings = field(default_factory=VllmSettings)
    completion: CompletionSettings = field(default_factory=CompletionSettings)
    log: LogSettings = field(default_factory=LogSettings)


class SettingsError(ValueError):
    pass


_RANGES: dict[str, tuple[float, float]] = {
    "vllm.port": (0, 65535),
    "vllm.startupTimeoutS": (1, 86400),
    "vllm.idleGraceS": (0, 86400),
    "vllm.maxRestarts": (0, 100),
    "vllm.restartWindowS": (1, 86400),
    "vllm.healthIntervalS": (0.1, 3600),
    "vllm.maxNumBatchedTokens": (0, 10_000_000),
    "vllm.longPrefillTokenThreshold": (0, 10_000_000),
    "backend.priority": (-(2**31), 2**31 - 1),
    "vllm.idleUnloadMinutes": (0, 10080),
    "completion.maxTokens": (1, 8192),
    "completion.temperature": (0, 2),
    "completion.debounceMs": (-1, 5000),
    "completion.contextTokens": (64, 1_000_000),
    "completion.contextChars": (0, 10_000_000),
    "completion.timeoutMs": (100, 600_000),
    "completion.minConfidence": (0, 1),
    "completion.alternatives": (1, 8),
    "completion.lineConfidence": (0, 1),
    "completion.crossFile.maxTokens": (0, 1_000_000),
}
# Lists whose items come from a fixed set.
_ITEMS: dict[str, tuple[str, ...]] = {"completion.crossFile.sources": CROSS_FILE_SOURCES}


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def snake(name: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)


def parse_settings(raw: object, base: Settings | None = None) -> tuple[Settings, list[str]]:
    """Merge `raw` (camelCase nested dict) over `base`; return settings and one message per bad key."""
    base = base or Settings()
    problems: list[str] = []
    if raw is None:
        return base, problems
    if not isinstance(raw, dict):
        return base, [f"vllmGhost settings: expected an object, got {type(raw).__name__}; using defaults"]
    # VS Code sends the section's content; accept the section wrapped too.
    if set(raw) == {"vllmGhost"} and isinstance(raw["vllmGhost"], dict):
        raw = raw["vllmGhost"]
    sections: dict[str, Any] = {}
    for section in fields(Settings):
        current = getattr(base, section.name)
        value = raw.get(section.name)
        if value is None:
            sections[section.name] = current
        elif not isinstance(value, dict):
            problems.append(f"vllmGhost.{section.name}: expected an object; using defaults")
            sections[section.name] = current
        else:
            sections[section.name] = _merge_section(section.name, current, value, problems)
    for key in raw:
        if key not in sections:
            problems.append(f"vllmGhost.{key}: unknown setting, ignored")
    return Settings(**sections), problems


def _merge_section(section: str, current: Any, raw: dict[str, Any], problems: list[str]) -> Any:
    hints = get_type_hints(type(current))
    known = {camel(f.name): f.name for f in fields(current)}
    changes: dict[str, Any] = {}
    for key, value in raw.items():
        path = f"{section}.{key}"
        if key not in known:
            problems.append(f"vllmGhost.{path}: unknown setting, ignored")
            continue
        attr = known[key]
        if dataclasses.is_dataclass(hints[attr]):  # a nested object (completion.crossFile)
            if isinstance(value, dict):
                changes[attr] = _merge_section(path, getattr(current, attr), value, problems)
            else:
                problems.append(f"vllmGhost.{path}: expected an object; using defaults")
            continue
        try:
            changes[attr] = _coerce(path, hints[attr], value)
        except SettingsError as err:
            default = getattr(current, attr)
            problems.append(f"vllmGhost.{path}: {err}; using {default!r}")
    return dataclasses.replace(current, **changes)


def _coerce(path: str, hint: Any, value: Any) -> Any:
    origin = get_origin(hint)
    if origin is Literal:
        choices = get_args(hint)
        if value not in choices:
            raise SettingsError(f"must be one of {', '.join(map(repr, choices))}, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise SettingsError(f"must be true or false, got {value!r}")
        return value
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SettingsError(f"must be a number, got {value!r}")
        if hint is int and value != int(value):
            raise SettingsError(f"must be a whole number, got {value!r}")
        low, high = _RANGES.get(path, (-sys.float_info.max, sys.float_info.max))
        if not low <= value <= high:
            raise SettingsError(f"must be between {low:g} and {high:g}, got {value!r}")
        return hint(value)
    if hint is str:
        if not isinstance(value, str):
            raise SettingsError(f"must be a string, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SettingsError(f"must be a list of strings, got {value!r}")
        if path == "vllm.command" and not value:
            raise SettingsError("must not be empty")
        unknown = [item for item in value if path in _ITEMS and item not in _ITEMS[path]]
        if unknown:
            raise SettingsError(f"items must be among {', '.join(map(repr, _ITEMS[path]))}, got {unknown!r}")
        return tuple(value)
    if origin is dict:
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise SettingsError(f"must be an object of strings, got {value!r}")
        return dict(value)
    raise SettingsError(f"unsupported type {hint!r}")  # pragma: no cover - schema bug


def to_wire(settings: Settings) -> dict[str, Any]:
    """The camelCase nested dict (for `vllmGhost.status` and the CLI's --print-settings)."""

    def convert(obj: Any) -> Any:
        if dataclasses.is_dataclass(obj):
            return {camel(f.name): convert(getattr(obj, f.name)) for f in fields(obj)}
        if isinstance(obj, tuple):
            return list(obj)
        return obj

    result: dict[str, Any] = convert(settings)
    return result


def redacted(settings: Settings) -> dict[str, Any]:
    """Settings safe to log or show: secrets replaced."""
    wire = to_wire(settings)
    if wire["backend"]["apiKey"]:
        wire["backend"]["apiKey"] = "***"
    # vllm.env may carry tokens (HF_TOKEN, ...); show which are set, not their values.
    wire["vllm"]["env"] = {key: ("***" if _SECRET_NAME.search(key) else value)
                           for key, value in wire["vllm"]["env"].items()}
    return wire


_SECRET_NAME = re.compile(r"(?i)(key|token|secret|passw|auth|credential)")


def settings_from_args(settings_arg: str | None, sets: list[str]) -> tuple[Settings, list[str]]:
    """--settings (JSON text or a file) and --set SECTION.KEY=VALUE (JSON if it parses), as the CLI takes them."""
    raw: dict[str, Any] = {}
    if settings_arg:
        path = Path(settings_arg)
        raw = json.loads(path.read_text() if path.is_file() else settings_arg)
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            return Settings(), [f"--set {item!r}: expected SECTION.KEY=VALUE"]
        section, name = key.split(".", 1)
        try:
            parsed: Any = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        raw.setdefault(section, {})[name] = parsed
    return parse_settings(raw)
