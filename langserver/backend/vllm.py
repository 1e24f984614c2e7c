"""The managed vLLM process: command line, port, key, health, logs, stop.

vLLM runs under our guardian (see guardian.py), in its own process group,
bound to 127.0.0.1 with a random key passed by environment, never argv.
One ManagedVllm is one launch; the supervisor (supervisor.py) makes a new one
for every restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import re
import secrets
import shutil
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from langserver.backend.client import Endpoint
from langserver.backend.guardian import PARENT_ENV, STOP_REQUEST, group_alive
from langserver.backend.status import Status
from langserver.settings import Settings

TAIL_LINES = 100  # Tabby keeps the last 100 lines of llama-server's output
# The root cause of a failed start can sit above a long traceback: diagnose from more lines.
DIAGNOSIS_LINES = 400
STOP_TIMEOUT_S = 20.0
_GUARDIAN_PID = re.compile(r"^vllm-ghost-guardian: pid (\d+)$")
_GUARDIAN_EXIT = re.compile(r"^vllm-ghost-guardian: exited (-?\d+)$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Flags whose value is a secret: never on vLLM's command line (ps shows it to every user).
SECRET_FLAGS = ("--api-key",)

StatusCallback = Callable[[Status], None]
LogCallback = Callable[[str], None]
WarningCallback = Callable[[str], None]


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


@dataclass(frozen=True)
class Failure:
    """Why a launch did not serve. `permanent`: retrying the same settings cannot help."""

    message: str
    permanent: bool = False
    exit_code: int | None = None


@dataclass(frozen=True)
class Diagnosis:
    advice: str
    permanent: bool


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


def persisted_key() -> str:
    """The persisted key, created on first use; the file is readable by its owner only."""
    path = key_file()
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


def build_launch(settings: Settings, api_key: str | None = None) -> Launch:
    """The vLLM command line: command + model + our fixed flags + the user's args."""
    vllm = settings.vllm
    port = vllm.port or free_port(vllm.host)
    # A fixed port is for sharing (Continue's config.yaml points at it): keep the key
    # too, so that config stays valid across restarts. Otherwise a new key per launch.
    key = api_key or (persisted_key() if vllm.port else secrets.token_urlsafe(32))
    args, _ = strip_secret_flags(vllm.args)
    argv = [
        *vllm.command,
        # --model, not the positional tag: `python -m vllm.entrypoints.openai.api_server`
        # ignores the positional and would fetch its default model from the hub.
        "--model", settings.model.path,
        "--served-model-name", settings.model.name,
        "--host", vllm.host,
        "--port", str(port),
        *args,
    ]
    env = {**os.environ, **vllm.env, "VLLM_API_KEY": key}
    return Launch(argv=argv, env=env, host=vllm.host, port=port, api_key=key)


# (pattern over vLLM's last lines, advice in one sentence, permanent?)
# Patterns come from real vLLM output: tests/test_backend_diagnose.py holds the lines.
_RULES: list[tuple[str, str, bool]] = [
    (r"cannot start .*: No such file|No such file or directory: '(vllm|python)",
     "The vLLM command was not found: install vLLM (pip install 'vllm-ghost[gpu]') "
     "or set vllmGhost.vllm.command.", True),
    (r"No module named '?vllm'?($|[\s.'])",
     "vLLM is not installed for that Python: pip install 'vllm-ghost[gpu]', "
     "or point vllmGhost.vllm.command at the right interpreter.", True),
    (r"(?i)address already in use",
     "The port is already in use: set vllmGhost.vllm.port to 0 (pick a free one) or stop the other server.", True),
    (r"(?i)(fp8e4nv not supported|fp8e4nv data type is not supported|type fp8e4nv not supported"
     r"|FP8 .*not supported on .*(GPU|device|capability))",
     "This GPU cannot run FP8 (it needs compute capability 8.9, Ada or newer): use a non-FP8 model or remove "
     "--kv-cache-dtype fp8 from vllmGhost.vllm.args.", True),
    (r"(?i)(larger than the available KV cache|estimated maximum model length is"
     r"|max_num_batched_tokens .* smaller than max_model_len)",
     "The KV cache does not fit the context length: lower --max-model-len or raise --gpu-memory-utilization "
     "in vllmGhost.vllm.args.", True),
    (r"(?i)(CUDA out of memory|OutOfMemoryError|No available memory for the cache blocks"
     r"|insufficient memory|Free memory on device .* is less than desired GPU memory utilization)",
     "Not enough GPU memory: lower --gpu-memory-utilization or --max-model-len in vllmGhost.vllm.args, "
     "or stop what else is using the GPU.", True),
    (r"(?i)(no CUDA GPUs are available|Failed to infer device type|Found no NVIDIA driver"
     r"|CUDA driver version is insufficient|NVIDIA driver on your system is too old"
     r"|cudaGetDeviceCount|Torch not compiled with CUDA enabled)",
     "No usable GPU was found: check nvidia-smi, or install the CPU build (pip install 'vllm-ghost[cpu]').", True),
    (r"(?i)(gated repo|GatedRepoError|Access to model .* is restricted|401 Client Error)",
     "The model is gated on the hub: accept its licence and log in (hf auth login), "
     "or set vllmGhost.model.path to a local copy.", True),
    (r"(?i)(Repo id must be|does not appear to have a file named|is not a local folder and is not a valid model"
     r"|Invalid repository ID|HFValidationError|not a valid model identifier|LocalEntryNotFoundError"
     r"|RepositoryNotFoundError|Repository Not Found|We couldn't connect to|OSError: .* does not exist)",
     "The model was not found: set vllmGhost.model.path to a local model directory or a hub id "
     "(and allow downloads, or download it first).", True),
    (r"(?i)(unrecognized arguments|error: argument|invalid choice)",
     "vLLM rejected an argument (perhaps removed in this vLLM version): check vllmGhost.vllm.args.", True),
]


def classify(lines: list[str]) -> Diagnosis:
    """The commonest start-up failures, from vLLM's last output lines: advice and whether retrying can help."""
    text = "\n".join(lines)
    for pattern, advice, permanent in _RULES:
        if re.search(pattern, text):
            return Diagnosis(advice, permanent)
    return Diagnosis("vLLM exited during start-up; see the log (vLLM Ghost output) for its last lines.", False)


def diagnose(lines: list[str]) -> str:
    """One sentence for the commonest start-up failures, from vLLM's last output lines."""
    return classify(lines).advice


async def _returncode(process: asyncio.subprocess.Process) -> int:
    """The guardian's exit code. Not `process.wait()`: before Python 3.12 that also waits for
    every holder of its stdout pipe to close it, and vLLM's processes inherit the pipe, so it
    would wait for the very processes we want to clean up after the guardian."""
    while process.returncode is None:
        await asyncio.sleep(0.05)
    return process.returncode


def _looks_local(path: str) -> bool:
    """A filesystem path rather than a hub id (`org/name`)."""
    return path.startswith(("/", "./", "../", "~")) or (len(path) > 2 and path[1] == ":" and path[2] in "\\/")


class ManagedVllm:
    """One vLLM process under a guardian; `start` returns once it serves or has failed."""

    def __init__(self, settings: Settings, on_status: StatusCallback, on_log: LogCallback,
                 on_warning: WarningCallback | None = None, detail: dict[str, object] | None = None) -> None:
        self.settings = settings
        self._on_status = on_status
        self._on_log = on_log
        self._on_warning = on_warning or (lambda message: on_log(f"warning: {message}"))
        self.detail = dict(detail or {})  # added to every status this launch reports
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.diagnosis_lines: deque[str] = deque(maxlen=DIAGNOSIS_LINES)
        self.launch: Launch | None = None
        self.process: asyncio.subprocess.Process | None = None
        self.vllm_pid: int | None = None
        self.exit_code: int | None = None
        self.failure: Failure | None = None
        # Set the moment vLLM's API server is known to be gone (before its group is cleared).
        self.exited = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._waiter: asyncio.Task[None] | None = None
        self._stopping = False
        self.started_at = 0.0
        self.ready_after_s: float | None = None

    @property
    def endpoint(self) -> Endpoint | None:
        if self.launch is None:
            return None
        return Endpoint(base_url=self.launch.base_url + "/v1", api_key=self.launch.api_key,
                        model=self.settings.model.name)

    @property
    def stopping(self) -> bool:
        return self._stopping

    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None and not self.exited.is_set()

    def _preflight(self) -> Failure | None:
        """Failures we can name before spending minutes on a launch."""
        vllm = self.settings.vllm
        if vllm.port and port_in_use(vllm.host, vllm.port):
            return Failure(f"Port {vllm.port} on {vllm.host} is already in use: set vllmGhost.vllm.port "
                           "to 0 (pick a free one) or stop the other server.", permanent=True)
        if shutil.which(vllm.command[0]) is None:
            return Failure(f"The vLLM command {vllm.command[0]!r} was not found: install vLLM "
                           "(pip install 'vllm-ghost[gpu]') or set vllmGhost.vllm.command.", permanent=True)
        path = self.settings.model.path
        if _looks_local(path) and not Path(path).expanduser().exists():
            # Not a failure yet: vllm.command may run vLLM elsewhere (a container, ssh),
            # where the path can exist. vLLM's own error is diagnosed if it does not.
            self._on_log(f"note: the model path {path!r} does not exist on this machine")
        return None

    def _security_warnings(self) -> None:
        vllm = self.settings.vllm
        if not is_loopback(vllm.host):
            self._on_warning(f"vLLM listens on {vllm.host}, not only this machine (vllmGhost.vllm.host): "
                             "anyone who can reach the port can use the model; the API key is its only guard.")
        _, removed = strip_secret_flags(vllm.args)
        if removed:
            self._on_warning(f"{', '.join(sorted(set(removed)))} removed from vllmGhost.vllm.args: it would show "
                             "the key to every user (ps); vLLM Ghost passes its own key by environment.")

    async def start(self) -> bool:
        """Start vLLM and wait until /health answers; False (and `failure` says why) otherwise."""
        self._stopping = False
        self.tail.clear()
        self.diagnosis_lines.clear()
        self.ready_after_s = None
        self.failure = self._preflight()
        if self.failure is not None:
            return False
        self._security_warnings()
        self.launch = build_launch(self.settings)
        self.started_at = time.monotonic()
        self._status("starting", f"Starting vLLM for {self.settings.model.name}")
        self._on_log(f"starting vLLM: {' '.join(self.launch.argv)}")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "langserver.backend.guardian", *self.launch.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**self.launch.env, PARENT_ENV: str(os.getpid())},
        )
        self._reader = asyncio.create_task(self._read_output(self.process))
        self._waiter = asyncio.create_task(self._wait_exit(self.process))
        ok = await self._wait_ready(self.launch)
        if not ok and not self._stopping:
            await self.stop(report=False)
        return ok

    async def _wait_ready(self, launch: Launch) -> bool:
        deadline = self.started_at + self.settings.vllm.startup_timeout_s
        async with httpx.AsyncClient(timeout=2.0) as http:
            while time.monotonic() < deadline:
                if self.exited.is_set():
                    if self._reader is not None:
                        await asyncio.wait([self._reader], timeout=2.0)
                    if self._stopping:
                        return False
                    diagnosis = classify(list(self.diagnosis_lines))
                    # A port we picked ourselves can be taken in between: that one is worth a retry.
                    permanent = diagnosis.permanent and not (
                        "port" in diagnosis.advice and not self.settings.vllm.port)
                    self.failure = Failure(diagnosis.advice, permanent=permanent, exit_code=self.exit_code)
                    return False
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(launch.base_url + "/health")).status_code == 200:
                        self.ready_after_s = time.monotonic() - self.started_at
                        return True
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.exited.wait(), 0.5)
        self.failure = Failure(f"vLLM did not become ready within {self.settings.vllm.startup_timeout_s:g} s "
                               "(vllmGhost.vllm.startupTimeoutS).", permanent=False)
        return False

    async def _read_output(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while True:
            try:
                raw = await process.stdout.readline()
            except ValueError:  # a line longer than the stream limit: skip it
                continue
            if not raw:
                return
            line = _ANSI.sub("", raw.decode("utf-8", "replace").rstrip())
            if not line:
                continue
            match = _GUARDIAN_PID.match(line)
            if match:
                self.vllm_pid = int(match.group(1))
                continue
            match = _GUARDIAN_EXIT.match(line)
            if match:
                self._mark_exited(int(match.group(1)))
                continue
            self.tail.append(line)
            self.diagnosis_lines.append(line)
            self._on_log(line)
            if self.ready_after_s is None and not self._stopping and not self.exited.is_set():
                elapsed = time.monotonic() - self.started_at
                self._status("loading", f"Loading {self.settings.model.name} ({elapsed:.0f} s)",
                             line=line[-200:])

    async def _wait_exit(self, process: asyncio.subprocess.Process) -> None:
        code = await _returncode(process)
        if self.exit_code is None:
            self._mark_exited(code if code < 128 else 128 - code)
        # The guardian is gone; if its group-clearing was cut short (someone killed
        # the guardian itself), finish the job here.
        if self.vllm_pid is not None and group_alive(self.vllm_pid):
            self._kill_group_directly(signal.SIGKILL)

    def _mark_exited(self, code: int) -> None:
        if self.exit_code is None:
            self.exit_code = code
        self.exited.set()

    async def wait_exited(self) -> int | None:
        await self.exited.wait()
        return self.exit_code

    async def stop(self, report: bool = True, graceful: bool = True) -> None:
        """Stop vLLM and every process it started; idempotent. `graceful`: give vLLM the
        guardian's grace to shut down cleanly, rather than the short one for an exiting server."""
        self._stopping = True
        process = self.process
        if process is not None and process.returncode is None:
            assert process.stdin is not None
            # ("stop" and) EOF: the guardian clears vLLM's process group.
            if graceful:
                with contextlib.suppress(OSError, RuntimeError):
                    process.stdin.write(STOP_REQUEST + b"\n")
            process.stdin.close()
            try:
                await asyncio.wait_for(_returncode(process), STOP_TIMEOUT_S)
            except TimeoutError:
                self._kill_group_directly(signal.SIGKILL)
                process.kill()
                await _returncode(process)
        for task in (self._reader, self._waiter):
            if task is not None:
                await asyncio.wait([task], timeout=2.0)
        if report:
            self._status("stopped", "vLLM stopped")

    def _kill_group_directly(self, signum: int) -> None:
        if self.vllm_pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.vllm_pid, signum)

    def _status(self, state: str, message: str, **detail: object) -> None:
        self._on_status(Status(state=state, message=message, detail={**self.detail, **detail}))  # type: ignore[arg-type]
