"""The managed vLLM process: command line, port, key, health, logs, stop.

vLLM runs under our guardian (see guardian.py), in its own process group,
bound to 127.0.0.1 with a random key passed by environment, never argv.
"""

from __future__ import annotations

import asyncio
import contextlib
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

import httpx

from langserver.backend.client import Endpoint
from langserver.backend.status import Status
from langserver.settings import Settings

TAIL_LINES = 60
STOP_TIMEOUT_S = 20.0
_GUARDIAN_PID = re.compile(r"^vllm-ghost-guardian: pid (\d+)$")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")

StatusCallback = Callable[[Status], None]
LogCallback = Callable[[str], None]


@dataclass(frozen=True)
class Launch:
    argv: list[str]
    env: dict[str, str]
    host: str
    port: int
    api_key: str

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def build_launch(settings: Settings, api_key: str | None = None) -> Launch:
    """The vLLM command line: command + model + our fixed flags + the user's args."""
    vllm = settings.vllm
    port = vllm.port or free_port(vllm.host)
    key = api_key or secrets.token_urlsafe(32)
    argv = [
        *vllm.command,
        # --model, not the positional tag: `python -m vllm.entrypoints.openai.api_server`
        # ignores the positional and would fetch its default model from the hub.
        "--model", settings.model.path,
        "--served-model-name", settings.model.name,
        "--host", vllm.host,
        "--port", str(port),
        *vllm.args,
    ]
    env = {**os.environ, **vllm.env, "VLLM_API_KEY": key}
    return Launch(argv=argv, env=env, host=vllm.host, port=port, api_key=key)


def diagnose(lines: list[str]) -> str:
    """One sentence for the commonest start-up failures, from vLLM's last output lines."""
    text = "\n".join(lines)
    rules: list[tuple[str, str]] = [
        (r"cannot start .*: No such file|No such file or directory: '(vllm|python)",
         "The vLLM command was not found: install vLLM (pip install 'vllm-ghost[gpu]') "
         "or set vllmGhost.vllm.command."),
        (r"No module named 'vllm'",
         "vLLM is not installed for that Python: pip install 'vllm-ghost[gpu]', "
         "or point vllmGhost.vllm.command at the right interpreter."),
        (r"(?i)address already in use",
         "The port is already in use: set vllmGhost.vllm.port to 0 (pick a free one) or stop the other server."),
        (r"(?i)(CUDA out of memory|OutOfMemoryError|No available memory for the cache blocks"
         r"|insufficient memory|larger than the available KV cache)",
         "Not enough GPU memory: lower --max-model-len or raise --gpu-memory-utilization in vllmGhost.vllm.args."),
        (r"(?i)(no CUDA GPUs are available|Failed to infer device type|CUDA driver|NVIDIA driver)",
         "No usable GPU was found: check nvidia-smi, or install the CPU build (pip install 'vllm-ghost[cpu]')."),
        (r"(?i)(gated repo|401 Client Error|Access to model .* is restricted)",
         "The model is gated on the hub: log in with huggingface-cli or set vllmGhost.model.path to a local copy."),
        (r"(?i)(Repo id must be|does not appear to have a file named|is not a local folder and is not a valid model"
         r"|Invalid repository ID|HFValidationError|not a valid model identifier|LocalEntryNotFoundError"
         r"|We couldn't connect to|OSError: .* does not exist)",
         "The model was not found: set vllmGhost.model.path to a local model directory or a hub id."),
        (r"(?i)(unrecognized arguments|error: argument)",
         "vLLM rejected an argument (perhaps removed in this vLLM version): check vllmGhost.vllm.args."),
    ]
    for pattern, advice in rules:
        if re.search(pattern, text):
            return advice
    return "vLLM exited during start-up; see the log for its last lines."


class ManagedVllm:
    """One vLLM process under a guardian; `start` returns once it serves or has failed."""

    def __init__(self, settings: Settings, on_status: StatusCallback, on_log: LogCallback) -> None:
        self.settings = settings
        self._on_status = on_status
        self._on_log = on_log
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.launch: Launch | None = None
        self.process: asyncio.subprocess.Process | None = None
        self.vllm_pid: int | None = None
        self._reader: asyncio.Task[None] | None = None
        self._stopping = False
        self.started_at = 0.0
        self.ready_after_s: float | None = None

    @property
    def endpoint(self) -> Endpoint | None:
        if self.launch is None:
            return None
        return Endpoint(base_url=self.launch.base_url + "/v1", api_key=self.launch.api_key,
                        model=self.settings.model.name)

    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self) -> bool:
        """Start vLLM and wait until /health answers; False (with status error) on failure."""
        self._stopping = False
        self.tail.clear()
        self.ready_after_s = None
        vllm = self.settings.vllm
        if vllm.port and port_in_use(vllm.host, vllm.port):
            return self._fail(f"Port {vllm.port} on {vllm.host} is already in use: set vllmGhost.vllm.port "
                              "to 0 (pick a free one) or stop the other server.")
        if shutil.which(vllm.command[0]) is None:
            return self._fail(f"The vLLM command {vllm.command[0]!r} was not found: install vLLM "
                              "(pip install 'vllm-ghost[gpu]') or set vllmGhost.vllm.command.")
        self.launch = build_launch(self.settings)
        self.started_at = time.monotonic()
        self._status("starting", f"Starting vLLM for {self.settings.model.name}")
        self._on_log(f"starting vLLM: {' '.join(self.launch.argv)}")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "langserver.backend.guardian", *self.launch.argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=self.launch.env,
        )
        self._reader = asyncio.create_task(self._read_output(self.process))
        return await self._wait_ready(self.process, self.launch)

    async def _wait_ready(self, process: asyncio.subprocess.Process, launch: Launch) -> bool:
        deadline = self.started_at + self.settings.vllm.startup_timeout_s
        async with httpx.AsyncClient(timeout=2.0) as http:
            while time.monotonic() < deadline:
                if process.returncode is not None:
                    if self._reader is not None:
                        await asyncio.wait([self._reader], timeout=2.0)
                    if self._stopping:
                        return False
                    return self._fail(diagnose(list(self.tail)), exited=process.returncode)
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(launch.base_url + "/health")).status_code == 200:
                        self.ready_after_s = time.monotonic() - self.started_at
                        return True
                await asyncio.sleep(0.5)
        await self.stop()
        return self._fail(f"vLLM did not become ready within {self.settings.vllm.startup_timeout_s:g} s "
                          "(vllmGhost.vllm.startupTimeoutS).")

    async def _read_output(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        async for raw in process.stdout:
            line = _ANSI.sub("", raw.decode("utf-8", "replace").rstrip())
            if not line:
                continue
            match = _GUARDIAN_PID.match(line)
            if match:
                self.vllm_pid = int(match.group(1))
                continue
            self.tail.append(line)
            self._on_log(line)
            if self.ready_after_s is None and not self._stopping:
                elapsed = time.monotonic() - self.started_at
                self._status("loading", f"Loading {self.settings.model.name} ({elapsed:.0f} s)",
                             line=line[-200:])

    async def stop(self) -> None:
        """Stop vLLM and every process it started; idempotent."""
        self._stopping = True
        process = self.process
        if process is not None and process.returncode is None:
            assert process.stdin is not None
            # EOF tells the guardian to clear vLLM's process group.
            process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
            except TimeoutError:
                self._kill_group_directly()
                process.kill()
                await process.wait()
        if self._reader is not None:
            await asyncio.wait([self._reader], timeout=2.0)
        self._status("stopped", "vLLM stopped")

    def _kill_group_directly(self) -> None:
        if self.vllm_pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.vllm_pid, signal.SIGKILL)

    def _fail(self, message: str, exited: int | None = None) -> bool:
        detail: dict[str, object] = {"lastLines": list(self.tail)[-20:]}
        if exited is not None:
            detail["exitCode"] = exited
        self._status("error", message, **detail)
        return False

    def _status(self, state: str, message: str, **detail: object) -> None:
        self._on_status(Status(state=state, message=message, detail=dict(detail)))  # type: ignore[arg-type]
